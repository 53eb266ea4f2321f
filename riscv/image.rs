//! The RISC-V `Image` header (Documentation/arch/riscv/boot-image-header.rst).

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("kernel image is not a RISC-V Image (no \"RSC\\x05\" magic at offset 0x38)")]
    NotImage,
}

const MAGIC2_OFFSET: usize = 0x38;
const MAGIC2: &[u8; 4] = b"RSC\x05";
/// The deprecated first magic, "RISCV\0\0\0" at 0x30, still accepted.
const MAGIC_OFFSET: usize = 0x30;
const MAGIC: &[u8; 8] = b"RISCV\0\0\0";

/// Memory the kernel occupies from its load address (bss included).
pub fn parse(data: &[u8]) -> Result<u64, Error> {
    if data.len() < 64 {
        return Err(Error::NotImage);
    }
    let new = &data[MAGIC2_OFFSET..MAGIC2_OFFSET + 4] == MAGIC2;
    let old = &data[MAGIC_OFFSET..MAGIC_OFFSET + 8] == MAGIC;
    if !new && !old {
        return Err(Error::NotImage);
    }
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&data[16..24]);
    Ok(u64::from_le_bytes(raw).max(data.len() as u64))
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
        assert_eq!(parse(&test_image(0x180_0000, 4096)), Ok(0x180_0000));
        // a header smaller than the file means the file size
        assert_eq!(parse(&test_image(16, 4096)), Ok(4096));
        let mut only_old = test_image(0x1000, 4096);
        only_old[MAGIC2_OFFSET..MAGIC2_OFFSET + 4].fill(0);
        assert_eq!(parse(&only_old), Ok(0x1000));
        assert_eq!(parse(&[0u8; 4096]), Err(Error::NotImage));
        assert_eq!(parse(b"RSC\x05"), Err(Error::NotImage));
        // an arm64 Image is not a RISC-V one
        assert_eq!(
            parse(&crate::aarch64::image::test_image(0, 0x1000, 4096)),
            Err(Error::NotImage)
        );
    }
}
