//! The RISC-V `Image` header (Documentation/arch/riscv/boot-image-header.rst).
//! A file without the header is a flat binary, loaded where an Image goes
//! (RAM + 2 MiB), as kvmtool loads it (kvm-unit-tests' `.flat` images).

use crate::loader::flat::{self, Foreign};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("kernel image is {}, not a RISC-V Image or flat binary", .0.describe())]
    Foreign(Foreign),
}

/// How the file was recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Image,
    Flat,
}

const MAGIC2_OFFSET: usize = 0x38;
const MAGIC2: &[u8; 4] = b"RSC\x05";
/// The deprecated first magic, "RISCV\0\0\0" at 0x30, still accepted.
const MAGIC_OFFSET: usize = 0x30;
const MAGIC: &[u8; 8] = b"RISCV\0\0\0";

/// The format, and the memory the kernel occupies from its load address
/// (bss included; a flat binary's is its file size).
pub fn parse(data: &[u8]) -> Result<(Format, u64), Error> {
    let new = data.get(MAGIC2_OFFSET..MAGIC2_OFFSET + 4) == Some(MAGIC2);
    let old = data.get(MAGIC_OFFSET..MAGIC_OFFSET + 8) == Some(MAGIC);
    if !new && !old {
        if let Some(foreign) = flat::recognise(data) {
            return Err(Error::Foreign(foreign));
        }
        return Ok((Format::Flat, data.len() as u64));
    }
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&data[16..24]);
    Ok((
        Format::Image,
        u64::from_le_bytes(raw).max(data.len() as u64),
    ))
}

#[cfg(test)]
pub fn test_image(image_size: u64, len: usize) -> Vec<u8> {
    let mut img = vec![0u8; len.max(64)];
    img[8..16].copy_from_slice(&0x20_0000u64.to_le_bytes());
    img[16..24].copy_from_slice(&image_size.to_le_bytes());
    img[MAGIC_OFFSET..MAGIC_OFFSET + 8].copy_from_slice(MAGIC);
    img[MAGIC2_OFFSET..MAGIC2_OFFSET + 4].copy_from_slice(MAGIC2);
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_gives_the_memory_footprint() {
        let image = |size| Ok((Format::Image, size));
        assert_eq!(parse(&test_image(0x180_0000, 4096)), image(0x180_0000));
        // a header smaller than the file means the file size
        assert_eq!(parse(&test_image(16, 4096)), image(4096));
        let mut only_old = test_image(0x1000, 4096);
        only_old[MAGIC2_OFFSET..MAGIC2_OFFSET + 4].fill(0);
        assert_eq!(parse(&only_old), image(0x1000));
        // an arm64 Image is not a RISC-V one
        assert_eq!(
            parse(&crate::aarch64::image::test_image(0, 0x1000, 4096)),
            Err(Error::Foreign(Foreign::Arm64Image))
        );
    }

    #[test]
    fn headerless_files_are_flat_binaries_of_their_file_size() {
        assert_eq!(parse(&[0u8; 4096]), Ok((Format::Flat, 4096)));
        assert_eq!(parse(b"RSC\x05"), Ok((Format::Flat, 4)));
        assert_eq!(
            parse(b"\x7fELF\x02\x01\x01"),
            Err(Error::Foreign(Foreign::Elf))
        );
    }
}
