//! Boot-time CPU state for the two entry protocols, as plain data: GDT
//! descriptors, the segments KVM must be told, control registers, and the
//! identity-mapped page tables of the 64-bit entry.

use vm_memory::{Bytes, GuestAddress};

use super::layout::{GDT_ADDR, PDPT_ADDR, PD_ADDR, PD_PAGES, PML4_ADDR};
use crate::memory::GuestMemory;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write {what} at {addr:#x} into guest memory: {source}")]
    Write {
        what: &'static str,
        addr: u64,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

pub const CR0_PE: u64 = 1 << 0;
pub const CR0_ET: u64 = 1 << 4;
pub const CR0_PG: u64 = 1 << 31;
pub const CR4_PAE: u64 = 1 << 5;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;

const PTE_PRESENT: u64 = 1 << 0;
const PTE_WRITE: u64 = 1 << 1;
const PTE_HUGE: u64 = 1 << 7;

/// GDT descriptor from base, limit (20 bits) and the flags/access word
/// (`flags << 12 | access`, with the limit's top nibble in between).
pub const fn gdt_entry(flags_access: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((flags_access as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The segment registers' view of a descriptor (KVM's `kvm_segment`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    pub type_: u8,
    pub present: u8,
    pub dpl: u8,
    pub db: u8,
    pub s: u8,
    pub l: u8,
    pub g: u8,
    pub avl: u8,
}

impl Segment {
    /// Decodes GDT entry `index` into what the CPU would load.
    pub fn from_gdt(index: u16, entry: u64) -> Segment {
        let g = ((entry >> 55) & 1) as u8;
        let raw_limit = (((entry >> 32) & 0x000f_0000) | (entry & 0xffff)) as u32;
        Segment {
            base: ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000),
            limit: if g == 1 {
                (raw_limit << 12) | 0xfff
            } else {
                raw_limit
            },
            selector: index * 8,
            type_: ((entry >> 40) & 0xf) as u8,
            present: ((entry >> 47) & 1) as u8,
            dpl: ((entry >> 45) & 3) as u8,
            db: ((entry >> 54) & 1) as u8,
            s: ((entry >> 44) & 1) as u8,
            l: ((entry >> 53) & 1) as u8,
            g,
            avl: ((entry >> 52) & 1) as u8,
        }
    }
}

/// Descriptors of the 64-bit entry: null, code64, data, TSS.
pub const GDT_LONG: [u64; 4] = [
    0,
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

/// Descriptors of the PVH entry: null, flat code32, flat data, TSS.
pub const GDT_PROTECTED: [u64; 4] = [
    0,
    gdt_entry(0xc09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

/// Segment and control-register state for a boot entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootSregs {
    pub code: Segment,
    pub data: Segment,
    pub tss: Segment,
    pub gdt_base: u64,
    pub gdt_limit: u16,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

fn sregs_for(gdt: &[u64; 4], cr0: u64, cr3: u64, cr4: u64, efer: u64) -> BootSregs {
    BootSregs {
        code: Segment::from_gdt(1, gdt[1]),
        data: Segment::from_gdt(2, gdt[2]),
        tss: Segment::from_gdt(3, gdt[3]),
        gdt_base: GDT_ADDR,
        gdt_limit: (gdt.len() * 8 - 1) as u16,
        cr0,
        cr3,
        cr4,
        efer,
    }
}

/// Long mode with paging through the identity map at [`PML4_ADDR`].
pub fn long_mode_sregs() -> BootSregs {
    sregs_for(
        &GDT_LONG,
        CR0_PE | CR0_ET | CR0_PG,
        PML4_ADDR,
        CR4_PAE,
        EFER_LME | EFER_LMA,
    )
}

/// Flat 32-bit protected mode without paging (PVH).
pub fn protected_mode_sregs() -> BootSregs {
    sregs_for(&GDT_PROTECTED, CR0_PE | CR0_ET, 0, 0, 0)
}

fn write(mem: &GuestMemory, what: &'static str, addr: u64, bytes: &[u8]) -> Result<(), Error> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|source| Error::Write { what, addr, source })
}

/// Writes a GDT at [`GDT_ADDR`].
pub fn write_gdt(mem: &GuestMemory, gdt: &[u64; 4]) -> Result<(), Error> {
    let bytes: Vec<u8> = gdt.iter().flat_map(|e| e.to_le_bytes()).collect();
    write(mem, "GDT", GDT_ADDR, &bytes)
}

/// Identity-maps the first 4 GiB with 2 MiB pages: the 64-bit boot protocol
/// needs the kernel, zero page and command line mapped, and the kernel may
/// decompress anywhere in low memory.
pub fn write_identity_page_tables(mem: &GuestMemory) -> Result<(), Error> {
    write(
        mem,
        "PML4",
        PML4_ADDR,
        &(PDPT_ADDR | PTE_PRESENT | PTE_WRITE).to_le_bytes(),
    )?;
    let mut pdpt = Vec::new();
    let mut pds = Vec::new();
    for i in 0..PD_PAGES {
        pdpt.extend(((PD_ADDR + i * 0x1000) | PTE_PRESENT | PTE_WRITE).to_le_bytes());
        for j in 0..512u64 {
            let addr = (i << 30) | (j << 21);
            pds.extend((addr | PTE_PRESENT | PTE_WRITE | PTE_HUGE).to_le_bytes());
        }
    }
    write(mem, "PDPT", PDPT_ADDR, &pdpt)?;
    write(mem, "page directories", PD_ADDR, &pds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_match_the_classic_encodings() {
        assert_eq!(GDT_LONG[1], 0x00af_9b00_0000_ffff);
        assert_eq!(GDT_LONG[2], 0x00cf_9300_0000_ffff);
        assert_eq!(GDT_LONG[3], 0x008f_8b00_0000_ffff);
        assert_eq!(GDT_PROTECTED[1], 0x00cf_9b00_0000_ffff);
    }

    #[test]
    fn segments_decode_from_descriptors() {
        let code = Segment::from_gdt(1, GDT_LONG[1]);
        assert_eq!(
            code,
            Segment {
                base: 0,
                limit: 0xffff_ffff,
                selector: 8,
                type_: 0xb,
                present: 1,
                dpl: 0,
                db: 0,
                s: 1,
                l: 1,
                g: 1,
                avl: 0
            }
        );
        let code32 = Segment::from_gdt(1, GDT_PROTECTED[1]);
        assert_eq!((code32.l, code32.db), (0, 1));
        let tss = Segment::from_gdt(3, GDT_LONG[3]);
        assert_eq!((tss.type_, tss.s, tss.selector), (0xb, 0, 0x18));
        let odd = Segment::from_gdt(5, gdt_entry(0x0093, 0x1234_5678, 0xabcde));
        assert_eq!((odd.base, odd.limit, odd.g), (0x1234_5678, 0xabcde, 0));
    }

    #[test]
    fn boot_modes_set_the_expected_control_registers() {
        let l = long_mode_sregs();
        assert_eq!(l.cr0, 0x8000_0011);
        assert_eq!((l.cr3, l.cr4, l.efer), (PML4_ADDR, CR4_PAE, 0x500));
        assert_eq!(l.gdt_limit, 31);
        let p = protected_mode_sregs();
        assert_eq!((p.cr0, p.cr3, p.cr4, p.efer), (0x11, 0, 0, 0));
    }

    #[test]
    fn page_tables_identity_map_4gib() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        write_identity_page_tables(&mem).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_ADDR)).unwrap();
        assert_eq!(pml4, PDPT_ADDR | 3);
        let pdpt3: u64 = mem.read_obj(GuestAddress(PDPT_ADDR + 24)).unwrap();
        assert_eq!(pdpt3, (PD_ADDR + 0x3000) | 3);
        // last 2 MiB page below 4 GiB
        let last: u64 = mem.read_obj(GuestAddress(PD_ADDR + 4 * 4096 - 8)).unwrap();
        assert_eq!(last, 0xffe0_0000 | 0x83);
        let second: u64 = mem.read_obj(GuestAddress(PD_ADDR + 8)).unwrap();
        assert_eq!(second, 0x20_0000 | 0x83);
    }
}
