//! Flat kernel images: files without any header, loaded byte for byte at a
//! fixed address, as kvmtool loads them (kvm-unit-tests' `.flat` images,
//! bare-metal test programs). Before a file is taken as flat, the formats
//! that are certainly not meant that way are recognised and refused, so a
//! compressed kernel or another architecture's image gets one clear error
//! instead of a guest that runs garbage.

/// A recognised format that is not a kernel image this architecture boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Foreign {
    Gzip,
    Xz,
    Zstd,
    Bzip2,
    Lz4,
    Elf,
    EfiZboot,
    X86BzImage,
    Arm64Image,
    RiscvImage,
    UImage,
    Qcow,
}

impl Foreign {
    /// What the file is and what to boot instead.
    pub fn describe(self) -> &'static str {
        match self {
            Foreign::Gzip => "a gzip-compressed file; boot the uncompressed kernel image",
            Foreign::Xz => "an xz-compressed file; boot the uncompressed kernel image",
            Foreign::Zstd => "a zstd-compressed file; boot the uncompressed kernel image",
            Foreign::Bzip2 => "a bzip2-compressed file; boot the uncompressed kernel image",
            Foreign::Lz4 => "an lz4-compressed file; boot the uncompressed kernel image",
            Foreign::Elf => "an ELF file; boot the kernel's Image (arch/*/boot/Image)",
            Foreign::EfiZboot => {
                "an EFI zboot (compressed) kernel; boot the uncompressed Image (arch/*/boot/Image)"
            }
            Foreign::X86BzImage => "an x86 bzImage",
            Foreign::Arm64Image => "an arm64 Image",
            Foreign::RiscvImage => "a RISC-V Image",
            Foreign::UImage => "a U-Boot uImage; boot the kernel image inside it",
            Foreign::Qcow => "a QCOW disk image, not a kernel",
        }
    }
}

fn at(data: &[u8], off: usize, magic: &[u8]) -> bool {
    data.get(off..off + magic.len()) == Some(magic)
}

/// The known format `data` is in, if any.
pub fn recognise(data: &[u8]) -> Option<Foreign> {
    let table: [(usize, &[u8], Foreign); 12] = [
        (0, b"\x1f\x8b", Foreign::Gzip),
        (0, b"\xfd7zXZ\0", Foreign::Xz),
        (0, b"\x28\xb5\x2f\xfd", Foreign::Zstd),
        (0, b"BZh", Foreign::Bzip2),
        (0, b"\x04\x22\x4d\x18", Foreign::Lz4),
        (0, b"\x02\x21\x4c\x18", Foreign::Lz4),
        (0, b"\x7fELF", Foreign::Elf),
        (0, b"\x27\x05\x19\x56", Foreign::UImage),
        (0, b"QFI\xfb", Foreign::Qcow),
        (0x202, b"HdrS", Foreign::X86BzImage),
        (0x38, b"ARM\x64", Foreign::Arm64Image),
        (0x38, b"RSC\x05", Foreign::RiscvImage),
    ];
    if at(data, 0, b"MZ") && at(data, 4, b"zimg") {
        return Some(Foreign::EfiZboot);
    }
    table
        .iter()
        .find(|(off, magic, _)| at(data, *off, magic))
        .map(|(_, _, f)| *f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_formats_are_recognised_and_code_is_not() {
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        let mut zboot = b"MZ\0\0zimg".to_vec();
        zboot.resize(64, 0);
        let cases: [(&[u8], Option<Foreign>); 9] = [
            (b"\x1f\x8b\x08\0", Some(Foreign::Gzip)),
            (b"\xfd7zXZ\0\0", Some(Foreign::Xz)),
            (b"\x28\xb5\x2f\xfd..", Some(Foreign::Zstd)),
            (b"\x7fELF\x02\x01", Some(Foreign::Elf)),
            (b"QFI\xfb\0\0\0\x03", Some(Foreign::Qcow)),
            (&bz, Some(Foreign::X86BzImage)),
            (&zboot, Some(Foreign::EfiZboot)),
            // arm64 code: "b #0x40; nop" is not any known header.
            (b"\x10\0\0\x14\x1f\x20\x03\xd5", None),
            (b"", None),
        ];
        for (data, want) in cases {
            assert_eq!(recognise(data), want, "{data:02x?}");
        }
        assert!(Foreign::EfiZboot.describe().contains("uncompressed"));
    }
}
