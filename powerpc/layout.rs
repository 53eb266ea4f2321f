//! The sPAPR guest's memory: RAM from 0, the kernel at 0 (ELF `PT_LOAD`
//! physical addresses, or a flat image at 0), the initrd above the kernel's
//! real footprint, and RTAS and the device tree at the top of the first
//! 256 MiB, inside what early boot reaches in real mode.

use crate::loader::elf::{Elf, EM_PPC64};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("ELF kernel: {0}")]
    Elf(#[from] crate::loader::elf::Error),
    #[error("ELF kernel is big-endian; lkvm boots ppc64le kernels")]
    BigEndian,
    #[error("kernel needs RAM up to {needed} MiB (with room for RTAS and the device tree), guest has {ram} MiB; raise -m")]
    KernelTooBig { needed: u64, ram: u64 },
    #[error("initrd of {size} bytes does not fit between the kernel (ends at {kernel_end:#x}) and the device tree; raise -m")]
    InitrdDoesNotFit { size: u64, kernel_end: u64 },
}

/// Room for the device tree and for the RTAS blob (both 64 KiB, as kvmtool).
pub const FDT_MAX_SIZE: u64 = 0x1_0000;
pub const RTAS_MAX_SIZE: u64 = 0x1_0000;
/// Secondary CPUs start in the kernel's hold loop at this offset.
pub const SECONDARY_ENTRY: u64 = 0x60;
const LOW_LIMIT: u64 = 256 << 20;
const MIB: u64 = 1 << 20;
/// A flat image does not say how much bss follows it; assume this much.
const FLAT_BSS_SLACK: u64 = 16 * MIB;

/// A kernel ready to copy into guest RAM.
#[derive(Debug, PartialEq, Eq)]
pub struct Kernel<'a> {
    /// (guest physical address, bytes) to copy.
    pub pieces: Vec<(u64, &'a [u8])>,
    pub entry: u64,
    /// One past the last byte the kernel uses (bss included).
    pub end: u64,
}

/// An ELF vmlinux (loaded by `PT_LOAD` physical address) or a flat image
/// (loaded at 0; `objcopy -O binary vmlinux`).
pub fn parse_kernel(data: &[u8]) -> Result<Kernel<'_>, Error> {
    if !Elf::is_elf(data) {
        return Ok(Kernel {
            pieces: vec![(0, data)],
            entry: 0,
            end: data.len() as u64 + FLAT_BSS_SLACK,
        });
    }
    let elf = Elf::parse(data)?;
    if elf.machine != EM_PPC64 {
        return Err(crate::loader::elf::Error::WrongMachine {
            found: elf.machine,
            expected: EM_PPC64,
        }
        .into());
    }
    if !elf.is_little_endian() {
        return Err(Error::BigEndian);
    }
    Ok(Kernel {
        pieces: elf
            .segments
            .iter()
            .map(|s| (s.paddr, elf.segment_data(s)))
            .collect(),
        // The entry is a kernel virtual address (0xc000...); its physical
        // counterpart is what the CPU starts at in real mode.
        entry: elf.entry & 0x0fff_ffff_ffff_ffff,
        end: elf.phys_end(),
    })
}

/// Where the boot structures go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub fdt: u64,
    pub rtas: u64,
    pub initrd: Option<(u64, u64)>,
}

/// The device tree at the top of the first 256 MiB, RTAS below it, the
/// initrd right above the kernel's footprint (1 MiB aligned).
pub fn place(ram_size: u64, kernel_end: u64, initrd_size: Option<u64>) -> Result<Placement, Error> {
    let top = ram_size.min(LOW_LIMIT);
    let fdt = top.saturating_sub(FDT_MAX_SIZE);
    let rtas = fdt.saturating_sub(RTAS_MAX_SIZE);
    if kernel_end > rtas || top < FDT_MAX_SIZE + RTAS_MAX_SIZE {
        return Err(Error::KernelTooBig {
            needed: kernel_end
                .saturating_add(FDT_MAX_SIZE + RTAS_MAX_SIZE)
                .div_ceil(MIB),
            ram: ram_size / MIB,
        });
    }
    let initrd = match initrd_size {
        None => None,
        Some(size) => {
            let start = kernel_end.next_multiple_of(MIB);
            if start.checked_add(size).is_none_or(|end| end > rtas) {
                return Err(Error::InitrdDoesNotFit { size, kernel_end });
            }
            Some((start, size))
        }
    };
    Ok(Placement { fdt, rtas, initrd })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::elf::testing::build;

    #[test]
    fn elf_kernels_load_by_physical_address_and_enter_in_real_mode() {
        let elf = build(
            EM_PPC64,
            true,
            0xc000_0000_0000_0000,
            &[(0, b"code", 0x28_0000)],
            &[],
        );
        let k = parse_kernel(&elf).unwrap();
        assert_eq!(k.pieces, vec![(0, &b"code"[..])]);
        assert_eq!((k.entry, k.end), (0, 0x28_0000));
        let be = build(EM_PPC64, false, 0, &[(0, b"x", 1)], &[]);
        assert_eq!(parse_kernel(&be).unwrap_err(), Error::BigEndian);
        let x86 = build(62, true, 0, &[(0, b"x", 1)], &[]);
        assert!(matches!(parse_kernel(&x86), Err(Error::Elf(_))));
    }

    #[test]
    fn flat_images_load_at_zero_with_room_for_bss() {
        let k = parse_kernel(&[0x48u8; 1000]).unwrap();
        assert_eq!(k.pieces, vec![(0, &[0x48u8; 1000][..])]);
        assert_eq!(k.end, 1000 + FLAT_BSS_SLACK);
    }

    #[test]
    fn initrd_goes_above_the_real_footprint_and_fdt_rtas_below_256m() {
        // the Debian kernel's image plus zeroed data ends near 40.5 MiB
        let p = place(256 * MIB, 0x287_0000, Some(MIB)).unwrap();
        assert_eq!(p.initrd, Some((41 * MIB, MIB)));
        assert_eq!(p.fdt, 256 * MIB - FDT_MAX_SIZE);
        assert_eq!(p.rtas, p.fdt - RTAS_MAX_SIZE);
        let big = place(2048 * MIB, 0x287_0000, None).unwrap();
        assert_eq!(big.fdt, 256 * MIB - FDT_MAX_SIZE);
        assert!(matches!(
            place(40 * MIB, 0x287_0000, None),
            Err(Error::KernelTooBig { .. })
        ));
        assert!(matches!(
            place(256 * MIB, 0x287_0000, Some(300 * MIB)),
            Err(Error::InitrdDoesNotFit { .. })
        ));
    }

    /// An ELF whose segments end near the top of the address space is too
    /// big, and saying how much RAM it needs must not overflow.
    #[test]
    fn a_kernel_ending_at_the_top_of_the_address_space_is_too_big() {
        assert!(matches!(
            place(256 * MIB, u64::MAX - 1, None),
            Err(Error::KernelTooBig { ram: 256, .. })
        ));
    }
}
