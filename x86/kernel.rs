//! Placing an x86_64 kernel, its initrd, command line and boot tables in
//! guest memory. A bzImage through the 64-bit boot protocol, an ELF (64- or
//! 32-bit) with a PVH entry note, or, as kvmtool does for any other file, a
//! flat real-mode binary at 1000:0000.

use vm_memory::{Bytes, GuestAddress};

use super::bzimage::{self, BzImage, ZeroPageInputs, STARTUP_64_OFFSET};
use super::layout::{
    e820_map, low_ram_end, CMDLINE_ADDR, CMDLINE_MAX, HIMEM_START, MIN_RAM, MPTABLE_ADDR,
    PVH_INFO_ADDR, ZERO_PAGE_ADDR,
};
use super::{mptable, pvh, regs};
use crate::loader::elf::{self, Elf, EM_386, EM_X86_64};
use crate::loader::flat::{self, Foreign};
use crate::memory::GuestMemory;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kernel image is {}, not a bzImage, ELF vmlinux or flat binary", .0.describe())]
    Foreign(Foreign),
    #[error(
        "flat binary of {size} bytes does not fit between {start:#x} and the EBDA at {end:#x}"
    )]
    FlatTooBig { size: u64, start: u64, end: u64 },
    #[error(
        "--initrd cannot be used with a flat binary kernel (only bzImage and PVH kernels take one)"
    )]
    FlatWithInitrd,
    #[error("bzImage: {0}")]
    BzImage(#[from] bzimage::Error),
    #[error("ELF kernel: {0}")]
    Elf(#[from] elf::Error),
    #[error("ELF kernel has no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY); build it with CONFIG_PVH=y or boot the bzImage")]
    NoPvhEntry,
    #[error("ELF segment at {addr:#x}+{size:#x} is outside guest RAM below 4 GiB ({low_end:#x}); raise -m or check the kernel")]
    SegmentOutsideRam { addr: u64, size: u64, low_end: u64 },
    #[error("guest RAM of {ram} MiB is too small for x86 (minimum {min} MiB)")]
    RamTooSmall { ram: u64, min: u64 },
    #[error("kernel needs RAM up to {needed} MiB while it decompresses, guest has {low_end} MiB below 4 GiB; raise -m")]
    KernelTooBig { needed: u64, low_end: u64 },
    #[error("initrd of {size} bytes does not fit in guest RAM above the kernel (which ends at {kernel_end:#x}); raise -m")]
    InitrdDoesNotFit { size: u64, kernel_end: u64 },
    #[error("kernel command line is {len} bytes, the kernel accepts at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
    #[error(transparent)]
    MpTable(#[from] mptable::Error),
    #[error(transparent)]
    Regs(#[from] regs::Error),
    #[error("cannot write {what} into guest memory: {source}")]
    Write {
        what: &'static str,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// How the boot vCPU enters the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// 64-bit boot protocol: long mode, `rsi` = zero page.
    Linux64 { rip: u64, zero_page: u64 },
    /// PVH: 32-bit protected mode, `rbx` = start info.
    Pvh { rip: u64, start_info: u64 },
    /// A flat binary: real mode at `cs:ip`, every data segment and the
    /// stack segment equal to `cs`.
    RealMode { cs: u16, ip: u16, sp: u16 },
}

/// kvmtool's real-mode layout for flat binaries: loaded at 1000:0000 with
/// the stack at 1000:8000.
pub const FLAT_SEGMENT: u16 = 0x1000;
pub const FLAT_SP: u16 = 0x8000;
pub const FLAT_ADDR: u64 = (FLAT_SEGMENT as u64) << 4;

/// Where things ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootPlan {
    pub entry: Entry,
    pub kernel_start: u64,
    pub kernel_end: u64,
    pub initrd: Option<(u64, u64)>,
}

fn write(mem: &GuestMemory, what: &'static str, addr: u64, bytes: &[u8]) -> Result<(), Error> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|source| Error::Write { what, source })
}

/// The highest page-aligned address at which `size` bytes fit below `limit`,
/// not below `floor`.
fn place_high(size: u64, limit: u64, floor: u64) -> Option<u64> {
    let start = limit.checked_sub(size)? & !0xfff;
    (start >= floor).then_some(start)
}

/// Loads everything the boot vCPU needs and returns where it starts.
pub fn load(
    mem: &GuestMemory,
    ram_size: u64,
    cpus: u32,
    kernel: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
    pci_irqs: &[mptable::PciIrq],
) -> Result<BootPlan, Error> {
    if ram_size < MIN_RAM {
        return Err(Error::RamTooSmall {
            ram: ram_size >> 20,
            min: MIN_RAM >> 20,
        });
    }
    let low_end = low_ram_end(ram_size);
    let e820 = e820_map(ram_size);

    let bz = if BzImage::is_bzimage(kernel) {
        log::debug!("x86_64: kernel format bzImage");
        Some(BzImage::parse(kernel)?)
    } else if Elf::is_elf(kernel) {
        None
    } else {
        return load_flat(mem, cpus, kernel, initrd, pci_irqs);
    };

    let max_cmdline = match &bz {
        Some(b) => (b.cmdline_size as usize).min(CMDLINE_MAX - 1),
        None => CMDLINE_MAX - 1,
    };
    if cmdline.len() > max_cmdline {
        return Err(Error::CmdlineTooLong {
            len: cmdline.len(),
            max: max_cmdline,
        });
    }
    if cmdline.contains('\0') {
        return Err(Error::CmdlineNul);
    }
    let mut cmd = cmdline.as_bytes().to_vec();
    cmd.push(0);
    write(mem, "command line", CMDLINE_ADDR, &cmd)?;

    let (kernel_start, kernel_end, pvh_entry) = match &bz {
        Some(b) => {
            let end = b.footprint_end(HIMEM_START);
            if end > low_end || HIMEM_START + b.kernel().len() as u64 > low_end {
                return Err(Error::KernelTooBig {
                    needed: end.div_ceil(1 << 20),
                    low_end: low_end >> 20,
                });
            }
            write(mem, "kernel", HIMEM_START, b.kernel())?;
            (HIMEM_START, end, None)
        }
        None => {
            let elf = Elf::parse(kernel)?;
            let machine = if elf.class64 { EM_X86_64 } else { EM_386 };
            if elf.machine != machine {
                return Err(elf::Error::WrongMachine {
                    found: elf.machine,
                    expected: machine,
                }
                .into());
            }
            log::debug!(
                "x86_64: kernel format ELF{} with a PVH entry note",
                if elf.class64 { 64 } else { 32 }
            );
            let entry = pvh::entry_point(&elf).ok_or(Error::NoPvhEntry)?;
            for seg in &elf.segments {
                if seg.paddr < HIMEM_START || seg.paddr + seg.memsz > low_end {
                    return Err(Error::SegmentOutsideRam {
                        addr: seg.paddr,
                        size: seg.memsz,
                        low_end,
                    });
                }
                write(mem, "kernel segment", seg.paddr, elf.segment_data(seg))?;
            }
            let start = elf
                .segments
                .iter()
                .map(|s| s.paddr)
                .min()
                .unwrap_or(HIMEM_START);
            (start, elf.phys_end(), Some(entry))
        }
    };

    let initrd_at = match initrd {
        Some(data) => {
            let size = data.len() as u64;
            let limit = match &bz {
                Some(b) => low_end.min(u64::from(b.initrd_addr_max) + 1),
                None => low_end,
            };
            let addr = place_high(size, limit, kernel_end)
                .ok_or(Error::InitrdDoesNotFit { size, kernel_end })?;
            write(mem, "initrd", addr, data)?;
            Some((addr, size))
        }
        None => None,
    };

    write(
        mem,
        "MP table",
        MPTABLE_ADDR,
        &mptable::build(cpus, MPTABLE_ADDR, pci_irqs)?,
    )?;

    let entry = match (&bz, pvh_entry) {
        (Some(b), _) => {
            let zp = b.zero_page(&ZeroPageInputs {
                cmdline_addr: CMDLINE_ADDR,
                initrd_addr: initrd_at.map_or(0, |i| i.0),
                initrd_size: initrd_at.map_or(0, |i| i.1),
                e820,
            })?;
            write(mem, "zero page", ZERO_PAGE_ADDR, &zp)?;
            regs::write_gdt(mem, &regs::GDT_LONG)?;
            regs::write_identity_page_tables(mem)?;
            Entry::Linux64 {
                rip: HIMEM_START + STARTUP_64_OFFSET,
                zero_page: ZERO_PAGE_ADDR,
            }
        }
        (None, Some(rip)) => {
            let info = pvh::start_info(
                PVH_INFO_ADDR,
                &pvh::StartInfoInputs {
                    cmdline_addr: CMDLINE_ADDR,
                    initrd: initrd_at,
                    memmap: e820,
                },
            );
            write(mem, "PVH start info", PVH_INFO_ADDR, &info)?;
            regs::write_gdt(mem, &regs::GDT_PROTECTED)?;
            Entry::Pvh {
                rip,
                start_info: PVH_INFO_ADDR,
            }
        }
        (None, None) => return Err(Error::NoPvhEntry),
    };

    Ok(BootPlan {
        entry,
        kernel_start,
        kernel_end,
        initrd: initrd_at,
    })
}

/// A flat binary: no boot protocol, so no command line, initrd or zero
/// page; the MP table still describes the CPUs and interrupt routing.
fn load_flat(
    mem: &GuestMemory,
    cpus: u32,
    kernel: &[u8],
    initrd: Option<&[u8]>,
    pci_irqs: &[mptable::PciIrq],
) -> Result<BootPlan, Error> {
    if let Some(foreign) = flat::recognise(kernel) {
        return Err(Error::Foreign(foreign));
    }
    if initrd.is_some() {
        return Err(Error::FlatWithInitrd);
    }
    let size = kernel.len() as u64;
    let end = FLAT_ADDR + size;
    if end > MPTABLE_ADDR {
        return Err(Error::FlatTooBig {
            size,
            start: FLAT_ADDR,
            end: MPTABLE_ADDR,
        });
    }
    log::debug!("x86_64: kernel format flat binary, {size} bytes at {FLAT_SEGMENT:#x}:0000");
    write(mem, "kernel", FLAT_ADDR, kernel)?;
    write(
        mem,
        "MP table",
        MPTABLE_ADDR,
        &mptable::build(cpus, MPTABLE_ADDR, pci_irqs)?,
    )?;
    Ok(BootPlan {
        entry: Entry::RealMode {
            cs: FLAT_SEGMENT,
            ip: 0,
            sp: FLAT_SP,
        },
        kernel_start: FLAT_ADDR,
        kernel_end: end,
        initrd: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::elf::testing::build;
    use crate::x86::bzimage::test_image;
    use crate::x86::layout::ram_ranges;

    fn guest(size: u64) -> GuestMemory {
        let ranges: Vec<_> = ram_ranges(size)
            .iter()
            .map(|r| (GuestAddress(r.base), r.size as usize))
            .collect();
        GuestMemory::from_ranges(&ranges).unwrap()
    }

    fn read(mem: &GuestMemory, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    #[test]
    fn bzimage_is_loaded_at_1mib_with_initrd_high_and_cmdline() {
        let mem = guest(64 << 20);
        let img = test_image(0x020f, 1, 8192);
        let initrd = vec![0xab; 10_000];
        let plan = load(&mem, 64 << 20, 2, &img, Some(&initrd), "console=ttyS0", &[]).unwrap();
        assert_eq!(
            plan.entry,
            Entry::Linux64 {
                rip: 0x10_0200,
                zero_page: ZERO_PAGE_ADDR
            }
        );
        assert_eq!(read(&mem, HIMEM_START, 16), img[5 * 512..5 * 512 + 16]);
        let (addr, size) = plan.initrd.unwrap();
        assert_eq!(size, 10_000);
        assert_eq!(addr % 4096, 0);
        assert!(addr + size <= 64 << 20 && addr >= plan.kernel_end);
        assert_eq!(read(&mem, addr, 4), [0xab; 4]);
        assert_eq!(read(&mem, CMDLINE_ADDR, 14), b"console=ttyS0\0");
        assert_eq!(read(&mem, MPTABLE_ADDR, 4), b"_MP_");
        let ramdisk = u32::from_le_bytes(read(&mem, ZERO_PAGE_ADDR + 0x218, 4).try_into().unwrap());
        assert_eq!(u64::from(ramdisk), addr);
    }

    #[test]
    fn pvh_elf_enters_at_its_note_with_start_info() {
        let mem = guest(16 << 20);
        let elf = build(
            EM_X86_64,
            true,
            0xffff_ffff_8100_0000,
            &[(0x10_0000, b"\xf4\xf4", 0x2000)],
            &[("Xen", 18, &0x10_0000u32.to_le_bytes())],
        );
        let plan = load(&mem, 16 << 20, 1, &elf, None, "", &[]).unwrap();
        assert_eq!(
            plan.entry,
            Entry::Pvh {
                rip: 0x10_0000,
                start_info: PVH_INFO_ADDR
            }
        );
        assert_eq!(plan.kernel_end, 0x10_2000);
        assert_eq!(read(&mem, 0x10_0000, 2), b"\xf4\xf4");
        assert_eq!(read(&mem, PVH_INFO_ADDR, 4), 0x336e_c578u32.to_le_bytes());
    }

    #[test]
    fn pvh_elf32_enters_at_its_note() {
        use crate::loader::elf::testing::build32;
        let mem = guest(16 << 20);
        let elf = build32(
            EM_386,
            0x10_0000,
            &[(0x10_0000, b"\xf4", 0x1000)],
            &[("Xen", 18, &0x10_0000u32.to_le_bytes())],
        );
        let plan = load(&mem, 16 << 20, 1, &elf, None, "x", &[]).unwrap();
        assert_eq!(
            plan.entry,
            Entry::Pvh {
                rip: 0x10_0000,
                start_info: PVH_INFO_ADDR
            }
        );
        // An ELF32 must be i386, an ELF64 x86-64.
        let wrong = build32(
            EM_X86_64,
            0,
            &[(0x10_0000, b"\xf4", 1)],
            &[("Xen", 18, &[0; 4])],
        );
        assert!(matches!(
            load(&mem, 16 << 20, 1, &wrong, None, "", &[]),
            Err(Error::Elf(elf::Error::WrongMachine { expected: 3, .. }))
        ));
    }

    #[test]
    fn other_files_are_flat_real_mode_binaries_at_1000_0000() {
        let mem = guest(16 << 20);
        let code = [0xb0, 0x41, 0xe6, 0x80, 0xf4];
        let plan = load(&mem, 16 << 20, 2, &code, None, "ignored", &[]).unwrap();
        assert_eq!(
            plan.entry,
            Entry::RealMode {
                cs: 0x1000,
                ip: 0,
                sp: 0x8000
            }
        );
        assert_eq!((plan.kernel_start, plan.kernel_end), (0x10000, 0x10005));
        assert_eq!(read(&mem, 0x10000, 5), code);
        assert_eq!(read(&mem, MPTABLE_ADDR, 4), b"_MP_");
        // No boot protocol: the command line is not written.
        assert_eq!(read(&mem, CMDLINE_ADDR, 4), [0; 4]);
    }

    #[test]
    fn unusable_kernels_and_layouts_are_refused() {
        let mem = guest(16 << 20);
        let bad = |k: &[u8], rd: Option<&[u8]>, cmd: &str| {
            load(&mem, 16 << 20, 1, k, rd, cmd, &[]).unwrap_err()
        };
        assert!(matches!(
            bad(b"\x1f\x8b\x08\0", None, ""),
            Error::Foreign(Foreign::Gzip)
        ));
        assert!(matches!(
            bad(&[0x90; 16], Some(b"rd"), ""),
            Error::FlatWithInitrd
        ));
        assert!(matches!(
            bad(&vec![0x90; 0x9_0000], None, ""),
            Error::FlatTooBig { size: 0x9_0000, .. }
        ));
        let no_note = build(EM_X86_64, true, 0, &[(0x10_0000, b"x", 1)], &[]);
        assert!(matches!(bad(&no_note, None, ""), Error::NoPvhEntry));
        let arm = build(
            183,
            true,
            0,
            &[(0x10_0000, b"x", 1)],
            &[("Xen", 18, &[0; 4])],
        );
        assert!(matches!(
            bad(&arm, None, ""),
            Error::Elf(elf::Error::WrongMachine { .. })
        ));
        let low = build(
            EM_X86_64,
            true,
            0,
            &[(0x1000, b"x", 1)],
            &[("Xen", 18, &[0; 4])],
        );
        assert!(matches!(
            bad(&low, None, ""),
            Error::SegmentOutsideRam { .. }
        ));
        // decompression footprint (16 MiB + 8 MiB) exceeds 16 MiB of RAM
        let img = test_image(0x020f, 1, 4096);
        assert!(matches!(
            bad(&img, None, ""),
            Error::KernelTooBig {
                needed: 24,
                low_end: 16
            }
        ));
        let ok_elf = build(
            EM_X86_64,
            true,
            0,
            &[(0x10_0000, b"x", 0x1000)],
            &[("Xen", 18, &[0, 0, 0x10, 0])],
        );
        let huge = vec![0u8; 16 << 20];
        assert!(matches!(
            bad(&ok_elf, Some(&huge), ""),
            Error::InitrdDoesNotFit { .. }
        ));
        let long = "x".repeat(3000);
        assert!(matches!(
            load(
                &guest(64 << 20),
                64 << 20,
                1,
                &test_image(0x020f, 1, 4096),
                None,
                &long,
                &[]
            ),
            Err(Error::CmdlineTooLong {
                len: 3000,
                max: 2047
            })
        ));
        assert!(matches!(bad(&ok_elf, None, "a\0b"), Error::CmdlineNul));
        assert!(matches!(
            load(&guest(2 << 20), 2 << 20, 1, &ok_elf, None, "", &[]),
            Err(Error::RamTooSmall { .. })
        ));
    }

    #[test]
    fn place_high_respects_floor_and_alignment() {
        assert_eq!(place_high(0x1800, 0x10_0000, 0), Some(0xfe000));
        assert_eq!(place_high(0x1000, 0x10_0000, 0xff001), None);
        assert_eq!(place_high(0x20_0000, 0x10_0000, 0), None);
    }
}
