//! The bzImage setup header and the zero page (`struct boot_params`) of the
//! x86 Linux boot protocol, used through its 64-bit entry point: no real-mode
//! setup code runs, lkvm fills the zero page itself.
//! Field offsets are those of `Documentation/arch/x86/boot.rst`.

use super::layout::E820Entry;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("bzImage is truncated (shorter than its setup header says)")]
    Truncated,
    #[error("bzImage boot protocol {major}.{minor:02} is too old: lkvm needs 2.12 or later (Linux 3.8+)")]
    TooOld { major: u8, minor: u8 },
    #[error("bzImage has no 64-bit entry point (XLF_KERNEL_64 is clear): only x86_64 kernels are supported")]
    No64BitEntry,
    #[error("bzImage must be loadable high (LOADED_HIGH flag is clear)")]
    NotLoadedHigh,
    #[error("the zero page has room for {max} e820 entries, not {count}")]
    TooManyE820 { count: usize, max: usize },
}

const SETUP_SECTS: usize = 0x1f1;
const HEADER_MAGIC: usize = 0x202;
const VERSION: usize = 0x206;
const LOADFLAGS: usize = 0x211;
const INITRD_ADDR_MAX: usize = 0x22c;
const KERNEL_ALIGNMENT: usize = 0x230;
const RELOCATABLE: usize = 0x234;
const XLOADFLAGS: usize = 0x236;
const CMDLINE_SIZE: usize = 0x238;
const PREF_ADDRESS: usize = 0x258;
const INIT_SIZE: usize = 0x260;

// boot_params fields
const EXT_RAMDISK_IMAGE: usize = 0x0c0;
const EXT_RAMDISK_SIZE: usize = 0x0c4;
const EXT_CMD_LINE_PTR: usize = 0x0c8;
const E820_ENTRIES: usize = 0x1e8;
const VID_MODE: usize = 0x1fa;
const TYPE_OF_LOADER: usize = 0x210;
const RAMDISK_IMAGE: usize = 0x218;
const RAMDISK_SIZE: usize = 0x21c;
const HEAP_END_PTR: usize = 0x224;
const CMD_LINE_PTR: usize = 0x228;
const E820_TABLE: usize = 0x2d0;
const E820_MAX: usize = 128;

const LOADED_HIGH: u8 = 1 << 0;
const CAN_USE_HEAP: u8 = 1 << 7;
const XLF_KERNEL_64: u16 = 1 << 0;

pub const ZERO_PAGE_SIZE: usize = 4096;
/// Offset of the 64-bit entry point from the start of the protected-mode code.
pub const STARTUP_64_OFFSET: u64 = 0x200;

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from(u32_at(b, off)) | (u64::from(u32_at(b, off + 4)) << 32)
}

/// A parsed bzImage.
#[derive(Debug)]
pub struct BzImage<'a> {
    image: &'a [u8],
    header_end: usize,
    setup_len: usize,
    pub version: u16,
    pub initrd_addr_max: u32,
    pub kernel_alignment: u32,
    pub relocatable: bool,
    pub cmdline_size: u32,
    pub pref_address: u64,
    /// Memory the kernel needs from its load address while decompressing.
    pub init_size: u32,
}

impl<'a> BzImage<'a> {
    /// True when the image carries the "HdrS" setup-header magic.
    pub fn is_bzimage(image: &[u8]) -> bool {
        image.get(HEADER_MAGIC..HEADER_MAGIC + 4) == Some(b"HdrS")
    }

    pub fn parse(image: &'a [u8]) -> Result<Self, Error> {
        if image.len() < INIT_SIZE + 4 || !Self::is_bzimage(image) {
            return Err(Error::Truncated);
        }
        let version = u16_at(image, VERSION);
        if version < 0x020c {
            return Err(Error::TooOld {
                major: (version >> 8) as u8,
                minor: version as u8,
            });
        }
        if image[LOADFLAGS] & LOADED_HIGH == 0 {
            return Err(Error::NotLoadedHigh);
        }
        if u16_at(image, XLOADFLAGS) & XLF_KERNEL_64 == 0 {
            return Err(Error::No64BitEntry);
        }
        let setup_sects = match image[SETUP_SECTS] {
            0 => 4,
            n => usize::from(n),
        };
        let setup_len = (setup_sects + 1) * 512;
        // The header ends at 0x202 plus the jump offset stored at 0x201.
        let header_end = 0x202 + usize::from(image[0x201]);
        if image.len() <= setup_len + STARTUP_64_OFFSET as usize || header_end > setup_len {
            return Err(Error::Truncated);
        }
        Ok(BzImage {
            image,
            header_end,
            setup_len,
            version,
            initrd_addr_max: u32_at(image, INITRD_ADDR_MAX),
            kernel_alignment: u32_at(image, KERNEL_ALIGNMENT),
            relocatable: image[RELOCATABLE] != 0,
            cmdline_size: u32_at(image, CMDLINE_SIZE),
            pref_address: u64_at(image, PREF_ADDRESS),
            init_size: u32_at(image, INIT_SIZE),
        })
    }

    /// The protected-mode kernel, loaded at 1 MiB.
    pub fn kernel(&self) -> &'a [u8] {
        &self.image[self.setup_len..]
    }

    /// Where the kernel's memory footprint ends when it was loaded at
    /// `load_addr`: it decompresses to at least its preferred address.
    /// Saturates: a preferred address near the top of the address space
    /// is a footprint no RAM holds, not one that wraps to a small end.
    pub fn footprint_end(&self, load_addr: u64) -> u64 {
        load_addr
            .max(self.pref_address)
            .saturating_add(u64::from(self.init_size))
    }

    /// Builds the zero page for this kernel.
    pub fn zero_page(&self, boot: &ZeroPageInputs) -> Result<Vec<u8>, Error> {
        let mut zp = vec![0u8; ZERO_PAGE_SIZE];
        zp[SETUP_SECTS..self.header_end].copy_from_slice(&self.image[SETUP_SECTS..self.header_end]);
        put16(&mut zp, VID_MODE, 0xffff);
        zp[TYPE_OF_LOADER] = 0xff; // undefined loader id
        zp[LOADFLAGS] |= CAN_USE_HEAP;
        put16(&mut zp, HEAP_END_PTR, 0xfe00);
        put32(&mut zp, CMD_LINE_PTR, boot.cmdline_addr as u32);
        put32(&mut zp, EXT_CMD_LINE_PTR, (boot.cmdline_addr >> 32) as u32);
        put32(&mut zp, RAMDISK_IMAGE, boot.initrd_addr as u32);
        put32(&mut zp, EXT_RAMDISK_IMAGE, (boot.initrd_addr >> 32) as u32);
        put32(&mut zp, RAMDISK_SIZE, boot.initrd_size as u32);
        put32(&mut zp, EXT_RAMDISK_SIZE, (boot.initrd_size >> 32) as u32);
        if boot.e820.len() > E820_MAX {
            return Err(Error::TooManyE820 {
                count: boot.e820.len(),
                max: E820_MAX,
            });
        }
        zp[E820_ENTRIES] = boot.e820.len() as u8;
        for (i, e) in boot.e820.iter().enumerate() {
            let at = E820_TABLE + i * 20;
            zp[at..at + 8].copy_from_slice(&e.addr.to_le_bytes());
            zp[at + 8..at + 16].copy_from_slice(&e.size.to_le_bytes());
            put32(&mut zp, at + 16, e.kind);
        }
        Ok(zp)
    }
}

/// What lkvm tells the kernel through the zero page.
#[derive(Debug, Default)]
pub struct ZeroPageInputs {
    pub cmdline_addr: u64,
    pub initrd_addr: u64,
    pub initrd_size: u64,
    pub e820: Vec<E820Entry>,
}

fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Builds a minimal bzImage for tests: protocol `version`, `xloadflags`, a
/// protected-mode part of `payload` bytes.
#[cfg(test)]
pub fn test_image(version: u16, xloadflags: u16, payload: usize) -> Vec<u8> {
    let setup_sects = 4usize;
    let mut img = vec![0u8; (setup_sects + 1) * 512 + payload];
    img[SETUP_SECTS] = setup_sects as u8;
    img[0x1fe] = 0x55;
    img[0x1ff] = 0xaa;
    img[0x200] = 0xeb;
    img[0x201] = 0x6a; // header runs to 0x26c
    img[HEADER_MAGIC..HEADER_MAGIC + 4].copy_from_slice(b"HdrS");
    put16(&mut img, VERSION, version);
    img[LOADFLAGS] = LOADED_HIGH;
    put32(&mut img, INITRD_ADDR_MAX, 0x7fff_ffff);
    put32(&mut img, KERNEL_ALIGNMENT, 0x20_0000);
    img[RELOCATABLE] = 1;
    put16(&mut img, XLOADFLAGS, xloadflags);
    put32(&mut img, CMDLINE_SIZE, 2047);
    img[PREF_ADDRESS..PREF_ADDRESS + 8].copy_from_slice(&0x100_0000u64.to_le_bytes());
    put32(&mut img, INIT_SIZE, 0x80_0000);
    for (i, b) in img[(setup_sects + 1) * 512..].iter_mut().enumerate() {
        *b = i as u8;
    }
    img
}

#[cfg(test)]
mod tests {
    use super::super::layout::e820_map;
    use super::*;

    #[test]
    fn header_fields_are_read() {
        let img = test_image(0x020f, 0x7f, 4096);
        let bz = BzImage::parse(&img).unwrap();
        assert_eq!(bz.version, 0x020f);
        assert_eq!(bz.cmdline_size, 2047);
        assert_eq!(bz.pref_address, 0x100_0000);
        assert_eq!(bz.kernel().len(), 4096);
        assert_eq!(bz.kernel()[1], 1);
        assert_eq!(bz.footprint_end(0x10_0000), 0x180_0000);
    }

    /// Found by the kernel_bzimage fuzz target: a preferred address near
    /// the top of the address space made the footprint's end overflow (a
    /// panic in debug builds; in release builds a small end that let the
    /// kernel load with its decompression area unaccounted for).
    #[test]
    fn a_preferred_address_at_the_top_does_not_wrap() {
        let mut img = test_image(0x020f, 1, 4096);
        img[PREF_ADDRESS..PREF_ADDRESS + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        img[INIT_SIZE..INIT_SIZE + 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        let bz = BzImage::parse(&img).unwrap();
        assert_eq!(bz.footprint_end(0x10_0000), u64::MAX);
    }

    #[test]
    fn old_32bit_and_truncated_images_are_refused() {
        assert_eq!(
            BzImage::parse(&test_image(0x0206, 1, 4096)).unwrap_err(),
            Error::TooOld { major: 2, minor: 6 }
        );
        assert_eq!(
            BzImage::parse(&test_image(0x020f, 0, 4096)).unwrap_err(),
            Error::No64BitEntry
        );
        assert_eq!(
            BzImage::parse(&test_image(0x020f, 1, 16)).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(BzImage::parse(b"HdrS").unwrap_err(), Error::Truncated);
        let mut img = test_image(0x020f, 1, 4096);
        img[LOADFLAGS] = 0;
        assert_eq!(BzImage::parse(&img).unwrap_err(), Error::NotLoadedHigh);
    }

    #[test]
    fn zero_page_carries_header_cmdline_initrd_and_e820() {
        let img = test_image(0x020f, 1, 4096);
        let bz = BzImage::parse(&img).unwrap();
        let e820 = e820_map(256 << 20);
        let zp = bz
            .zero_page(&ZeroPageInputs {
                cmdline_addr: 0x20000,
                initrd_addr: 0x1_2345_6000,
                initrd_size: 0x40_0000,
                e820: e820.clone(),
            })
            .unwrap();
        assert_eq!(&zp[HEADER_MAGIC..HEADER_MAGIC + 4], b"HdrS");
        assert_eq!(u16_at(&zp, VERSION), 0x020f);
        assert_eq!(zp[TYPE_OF_LOADER], 0xff);
        assert_eq!(zp[LOADFLAGS], LOADED_HIGH | CAN_USE_HEAP);
        assert_eq!(u32_at(&zp, CMD_LINE_PTR), 0x20000);
        assert_eq!(u32_at(&zp, EXT_CMD_LINE_PTR), 0);
        assert_eq!(u32_at(&zp, RAMDISK_IMAGE), 0x2345_6000);
        assert_eq!(u32_at(&zp, EXT_RAMDISK_IMAGE), 1);
        assert_eq!(u32_at(&zp, RAMDISK_SIZE), 0x40_0000);
        assert_eq!(zp[E820_ENTRIES] as usize, e820.len());
        let second = E820_TABLE + 20;
        assert_eq!(u64_at(&zp, second), 0x9fc00);
        assert_eq!(u64_at(&zp, second + 8), 0x60400);
        assert_eq!(u32_at(&zp, second + 16), 2);
        // nothing past the header was copied from the image
        assert!(zp[0x26c..E820_TABLE].iter().all(|b| *b == 0));
    }

    #[test]
    fn too_many_e820_entries_are_refused() {
        let img = test_image(0x020f, 1, 4096);
        let bz = BzImage::parse(&img).unwrap();
        let inputs = ZeroPageInputs {
            e820: vec![
                E820Entry {
                    addr: 0,
                    size: 1,
                    kind: 1
                };
                129
            ],
            ..Default::default()
        };
        assert!(matches!(
            bz.zero_page(&inputs),
            Err(Error::TooManyE820 { count: 129, .. })
        ));
    }
}
