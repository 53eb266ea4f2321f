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
pub use crate::loader::place::Placement;

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
}
