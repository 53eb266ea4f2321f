//! The arm64 `Image` header (Documentation/arch/arm64/booting.rst) and where
//! the kernel, device tree and initrd go in guest RAM.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("kernel image is not an arm64 Image (no \"ARM\\x64\" magic at offset 0x38)")]
    NotImage,
    #[error("arm64 Image is big-endian; only little-endian kernels are supported")]
    BigEndian,
    #[error(
        "kernel needs {needed} MiB of RAM from its load address, guest has {ram} MiB; raise -m"
    )]
    KernelTooBig { needed: u64, ram: u64 },
    #[error("initrd of {size} bytes does not fit in guest RAM above the kernel and device tree; raise -m")]
    InitrdDoesNotFit { size: u64 },
}

const MAGIC_OFFSET: usize = 0x38;
const MAGIC: &[u8; 4] = b"ARM\x64";
const SZ_2M: u64 = 2 << 20;
/// Room reserved for the device tree (booting.rst: at most 2 MiB).
pub const FDT_MAX_SIZE: u64 = SZ_2M;
/// The device tree and initrd stay in the first 256 MiB of RAM when they can.
const LOW_LIMIT: u64 = 256 << 20;

/// The fields of the header lkvm needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Image {
    pub text_offset: u64,
    /// Memory the kernel occupies from its load address, bss included.
    pub image_size: u64,
}

fn le64(b: &[u8], off: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(raw)
}

impl Image {
    pub fn parse(data: &[u8]) -> Result<Image, Error> {
        if data.len() < 64 || &data[MAGIC_OFFSET..MAGIC_OFFSET + 4] != MAGIC {
            return Err(Error::NotImage);
        }
        let image_size = le64(data, 16);
        let flags = le64(data, 24);
        if image_size != 0 && flags & 1 != 0 {
            return Err(Error::BigEndian);
        }
        Ok(if image_size == 0 {
            // Kernels before 3.17: text_offset is unreliable, 0x80000 is right.
            Image {
                text_offset: 0x8_0000,
                image_size: data.len() as u64,
            }
        } else {
            Image {
                text_offset: le64(data, 8),
                image_size: image_size.max(data.len() as u64),
            }
        })
    }
}

/// Where everything goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub kernel: u64,
    pub kernel_end: u64,
    pub fdt: u64,
    pub initrd: Option<(u64, u64)>,
}

/// The kernel at `ram_base + text_offset` (ram_base is 2 MiB aligned); the
/// device tree at the top of the first 256 MiB of RAM (2 MiB aligned); the
/// initrd just below the device tree, or at the top of RAM if it is too big
/// for that.
pub fn place(
    ram_base: u64,
    ram_size: u64,
    image: &Image,
    initrd_size: Option<u64>,
) -> Result<Placement, Error> {
    let kernel = ram_base + image.text_offset;
    let kernel_end = kernel + image.image_size;
    let ram_end = ram_base + ram_size;
    let too_big = Error::KernelTooBig {
        needed: (kernel_end + FDT_MAX_SIZE - ram_base).div_ceil(1 << 20),
        ram: ram_size >> 20,
    };
    let top = ram_end.min(ram_base + LOW_LIMIT);
    let fdt = top
        .checked_sub(FDT_MAX_SIZE)
        .map(|a| a & !(SZ_2M - 1))
        .filter(|a| *a >= kernel_end)
        .ok_or(too_big)?;
    let initrd = match initrd_size {
        None => None,
        Some(size) => {
            let below_fdt = fdt.checked_sub(size).map(|a| a & !0xfff);
            let at_top = ram_end.checked_sub(size).map(|a| a & !0xfff);
            let start = below_fdt
                .filter(|a| *a >= kernel_end)
                .or(at_top.filter(|a| *a >= fdt + FDT_MAX_SIZE))
                .ok_or(Error::InitrdDoesNotFit { size })?;
            Some((start, size))
        }
    };
    Ok(Placement {
        kernel,
        kernel_end,
        fdt,
        initrd,
    })
}

#[cfg(test)]
pub fn test_image(text_offset: u64, image_size: u64, len: usize) -> Vec<u8> {
    let mut img = vec![0u8; len.max(64)];
    img[8..16].copy_from_slice(&text_offset.to_le_bytes());
    img[16..24].copy_from_slice(&image_size.to_le_bytes());
    img[24..32].copy_from_slice(&2u64.to_le_bytes()); // 4K pages, LE
    img[MAGIC_OFFSET..MAGIC_OFFSET + 4].copy_from_slice(MAGIC);
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: u64 = 0x8000_0000;

    #[test]
    fn header_is_read_and_validated() {
        let img = Image::parse(&test_image(0, 0x200_0000, 4096)).unwrap();
        assert_eq!(
            img,
            Image {
                text_offset: 0,
                image_size: 0x200_0000
            }
        );
        let old = Image::parse(&test_image(0x1234, 0, 4096)).unwrap();
        assert_eq!(old.text_offset, 0x8_0000);
        assert_eq!(Image::parse(&[0u8; 100]).unwrap_err(), Error::NotImage);
        assert_eq!(Image::parse(b"ARM\x64").unwrap_err(), Error::NotImage);
        let mut be = test_image(0, 0x10000, 4096);
        be[24] = 1;
        assert_eq!(Image::parse(&be).unwrap_err(), Error::BigEndian);
    }

    #[test]
    fn kernel_fdt_and_initrd_do_not_overlap() {
        let img = Image {
            text_offset: 0,
            image_size: 40 << 20,
        };
        let p = place(RAM, 256 << 20, &img, Some(10 << 20)).unwrap();
        assert_eq!(p.kernel, RAM);
        assert_eq!(p.fdt, RAM + (254 << 20));
        let (start, size) = p.initrd.unwrap();
        assert_eq!(start + size, p.fdt);
        assert!(start >= p.kernel_end);
        // 1 GiB of RAM: still below 256 MiB
        let p = place(RAM, 1 << 30, &img, None).unwrap();
        assert_eq!(p.fdt, RAM + (254 << 20));
        assert_eq!(p.initrd, None);
    }

    #[test]
    fn big_initrds_go_to_the_top_of_ram() {
        let img = Image {
            text_offset: 0,
            image_size: 40 << 20,
        };
        let p = place(RAM, 1 << 30, &img, Some(300 << 20)).unwrap();
        let (start, size) = p.initrd.unwrap();
        assert_eq!(start + size, RAM + (1 << 30));
        assert!(start >= p.fdt + FDT_MAX_SIZE);
        assert_eq!(
            place(RAM, 256 << 20, &img, Some(300 << 20)).unwrap_err(),
            Error::InitrdDoesNotFit { size: 300 << 20 }
        );
    }

    #[test]
    fn small_ram_is_refused_with_the_needed_size() {
        let img = Image {
            text_offset: 0x8_0000,
            image_size: 40 << 20,
        };
        assert_eq!(
            place(RAM, 32 << 20, &img, None).unwrap_err(),
            Error::KernelTooBig {
                needed: 43,
                ram: 32
            }
        );
    }
}
