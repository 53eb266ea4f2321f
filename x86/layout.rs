//! The x86_64 guest physical memory map and its e820 description.
//!
//! ```text
//! 0x0000_0500  GDT                     0x0000_6000  PVH start info + memmap
//! 0x0000_7000  zero page (boot_params) 0x0000_8ff0  boot stack top
//! 0x0000_9000  PML4, PDPT, 4 x PD      0x0002_0000  kernel command line
//! 0x0009_fc00  MP table (EBDA)         0x000a_0000 - 0x0010_0000  reserved
//! 0x0010_0000  kernel                  ... RAM ...
//! 0xc000_0000 - 0x1_0000_0000  MMIO hole (IOAPIC, LAPIC, PCI)
//! 0x1_0000_0000  RAM above 4 GiB
//! ```

use crate::memory::RamRange;

pub const GDT_ADDR: u64 = 0x500;
pub const PVH_INFO_ADDR: u64 = 0x6000;
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
pub const BOOT_STACK_TOP: u64 = 0x8ff0;
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xa000;
pub const PD_ADDR: u64 = 0xb000;
/// Page directories map the first 4 GiB with 2 MiB pages.
pub const PD_PAGES: u64 = 4;
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Room for the command line before the EBDA.
pub const CMDLINE_MAX: usize = 0x7fc00;
pub const EBDA_START: u64 = 0x9fc00;
pub const MPTABLE_ADDR: u64 = EBDA_START;
pub const HIMEM_START: u64 = 0x10_0000;
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// KVM needs three pages for the TSS of real-mode emulation on Intel.
pub const TSS_ADDR: u64 = 0xfffb_d000;

/// The smallest RAM lkvm accepts on x86: the boot structures and a little
/// room above 1 MiB.
pub const MIN_RAM: u64 = 4 << 20;

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// One e820 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// Splits `ram_size` bytes around the MMIO hole below 4 GiB.
pub fn ram_ranges(ram_size: u64) -> Vec<RamRange> {
    let low = ram_size.min(MMIO_HOLE_START);
    let mut ranges = vec![RamRange { base: 0, size: low }];
    if ram_size > low {
        ranges.push(RamRange {
            base: MMIO_HOLE_END,
            size: ram_size - low,
        });
    }
    ranges
}

/// The top of RAM below 4 GiB.
pub fn low_ram_end(ram_size: u64) -> u64 {
    ram_size.min(MMIO_HOLE_START)
}

/// The map the guest sees: RAM below the EBDA, the EBDA/VGA/BIOS area
/// reserved, RAM from 1 MiB, RAM above 4 GiB.
pub fn e820_map(ram_size: u64) -> Vec<E820Entry> {
    let low_end = low_ram_end(ram_size);
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        E820Entry {
            addr: EBDA_START,
            size: HIMEM_START - EBDA_START,
            kind: E820_RESERVED,
        },
    ];
    if low_end > HIMEM_START {
        map.push(E820Entry {
            addr: HIMEM_START,
            size: low_end - HIMEM_START,
            kind: E820_RAM,
        });
    }
    if ram_size > low_end {
        map.push(E820Entry {
            addr: MMIO_HOLE_END,
            size: ram_size - low_end,
            kind: E820_RAM,
        });
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_ram_is_one_range_and_large_ram_skips_the_hole() {
        assert_eq!(
            ram_ranges(256 << 20),
            vec![RamRange {
                base: 0,
                size: 256 << 20
            }]
        );
        assert_eq!(
            ram_ranges(4 << 30),
            vec![
                RamRange {
                    base: 0,
                    size: 3 << 30
                },
                RamRange {
                    base: 4 << 30,
                    size: 1 << 30
                }
            ]
        );
    }

    #[test]
    fn e820_reserves_the_legacy_area_and_describes_all_ram() {
        let map = e820_map(256 << 20);
        assert_eq!(
            map,
            vec![
                E820Entry {
                    addr: 0,
                    size: 0x9fc00,
                    kind: E820_RAM
                },
                E820Entry {
                    addr: 0x9fc00,
                    size: 0x60400,
                    kind: E820_RESERVED
                },
                E820Entry {
                    addr: 0x100000,
                    size: (256 << 20) - 0x100000,
                    kind: E820_RAM
                },
            ]
        );
        let big = e820_map(5 << 30);
        assert_eq!(big.len(), 4);
        assert_eq!(big[2].addr + big[2].size, MMIO_HOLE_START);
        assert_eq!(
            big[3],
            E820Entry {
                addr: 4 << 30,
                size: 2 << 30,
                kind: E820_RAM
            }
        );
        let usable: u64 = big
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        assert_eq!(usable, (5 << 30) - (HIMEM_START - EBDA_START));
    }
}
