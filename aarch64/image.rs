//! The arm64 `Image` header (Documentation/arch/arm64/booting.rst) and where
//! the kernel, device tree and initrd go in guest RAM. A file without the
//! header is a flat binary loaded at RAM + 0x80000, as kvmtool loads it
//! (kvm-unit-tests' `.flat` images).

use crate::loader::flat::{self, Foreign};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("kernel image is {}, not an arm64 Image or flat binary", .0.describe())]
    Foreign(Foreign),
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
pub use crate::loader::place::Placement;

/// Where a headerless image goes, from the start of RAM (the text offset
/// of kernels before 3.17, and kvmtool's choice for flat binaries).
pub const FLAT_TEXT_OFFSET: u64 = 0x8_0000;

/// How the file was recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Image,
    Flat,
}

/// The fields of the header lkvm needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Image {
    pub text_offset: u64,
    /// Memory the kernel occupies from its load address, bss included.
    pub image_size: u64,
    pub format: Format,
}

fn le64(b: &[u8], off: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(raw)
}

impl Image {
    pub fn parse(data: &[u8]) -> Result<Image, Error> {
        if data.get(MAGIC_OFFSET..MAGIC_OFFSET + 4) != Some(MAGIC) || data.len() < 64 {
            if let Some(foreign) = flat::recognise(data) {
                return Err(Error::Foreign(foreign));
            }
            return Ok(Image {
                text_offset: FLAT_TEXT_OFFSET,
                image_size: data.len() as u64,
                format: Format::Flat,
            });
        }
        let image_size = le64(data, 16);
        let flags = le64(data, 24);
        if image_size != 0 && flags & 1 != 0 {
            return Err(Error::BigEndian);
        }
        Ok(if image_size == 0 {
            // Kernels before 3.17: text_offset is unreliable, 0x80000 is right.
            Image {
                text_offset: FLAT_TEXT_OFFSET,
                image_size: data.len() as u64,
                format: Format::Image,
            }
        } else {
            Image {
                text_offset: le64(data, 8),
                image_size: image_size.max(data.len() as u64),
                format: Format::Image,
            }
        })
    }
}

/// Where everything goes: the kernel at RAM + `text_offset`.
pub fn place(
    ram_base: u64,
    ram_size: u64,
    image: &Image,
    initrd_size: Option<u64>,
) -> Result<Placement, crate::loader::place::Error> {
    crate::loader::place::place(
        ram_base,
        ram_size,
        image.text_offset,
        image.image_size,
        initrd_size,
    )
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

    #[test]
    fn header_is_read_and_validated() {
        let img = Image::parse(&test_image(0, 0x200_0000, 4096)).unwrap();
        assert_eq!(
            img,
            Image {
                text_offset: 0,
                image_size: 0x200_0000,
                format: Format::Image,
            }
        );
        let old = Image::parse(&test_image(0x1234, 0, 4096)).unwrap();
        assert_eq!(old.text_offset, 0x8_0000);
        assert_eq!(old.format, Format::Image);
        let mut be = test_image(0, 0x10000, 4096);
        be[24] = 1;
        assert_eq!(Image::parse(&be).unwrap_err(), Error::BigEndian);
    }

    #[test]
    fn headerless_files_are_flat_at_0x80000_unless_recognised() {
        let flat = |data: &[u8]| Image::parse(data);
        for data in [&[0u8; 100][..], b"ARM\x64", &[0x14; 3]] {
            assert_eq!(
                flat(data),
                Ok(Image {
                    text_offset: 0x8_0000,
                    image_size: data.len() as u64,
                    format: Format::Flat,
                })
            );
        }
        assert_eq!(flat(b"\x1f\x8b\x08\0"), Err(Error::Foreign(Foreign::Gzip)));
        let riscv = crate::riscv::image::test_image(0x1000, 4096);
        assert_eq!(flat(&riscv), Err(Error::Foreign(Foreign::RiscvImage)));
        let p = place(0x8000_0000, 256 << 20, &flat(&[0u8; 4096]).unwrap(), None).unwrap();
        assert_eq!((p.kernel, p.kernel_end), (0x8008_0000, 0x8008_1000));
    }
}
