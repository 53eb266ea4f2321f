//! The PVH boot protocol: a 32-bit protected-mode entry found in an ELF note,
//! described by `struct hvm_start_info` (Xen's public start_info.h, version 1).

use super::layout::E820Entry;
use crate::loader::elf::Elf;

/// `XEN_ELFNOTE_PHYS32_ENTRY`.
const NOTE_PHYS32_ENTRY: u32 = 18;
const START_INFO_MAGIC: u32 = 0x336e_c578;
pub const START_INFO_SIZE: usize = 56;
const MODLIST_ENTRY_SIZE: usize = 32;
const MEMMAP_ENTRY_SIZE: usize = 24;

/// The PVH entry point of an ELF kernel, if it has one.
pub fn entry_point(elf: &Elf<'_>) -> Option<u64> {
    elf.notes()
        .iter()
        .find(|n| n.name == b"Xen" && n.kind == NOTE_PHYS32_ENTRY)
        .and_then(|n| elf.desc_value(n.desc))
        .map(|v| v & 0xffff_ffff)
}

/// Inputs of the start-info block.
#[derive(Debug, Default)]
pub struct StartInfoInputs {
    pub cmdline_addr: u64,
    /// (address, size) of the initrd, passed as module 0.
    pub initrd: Option<(u64, u64)>,
    pub memmap: Vec<E820Entry>,
}

/// Builds start info, module list and memory map as one block to be placed
/// at guest physical `base`.
pub fn start_info(base: u64, inputs: &StartInfoInputs) -> Vec<u8> {
    let nr_modules = u32::from(inputs.initrd.is_some());
    let modlist_addr = base + START_INFO_SIZE as u64;
    let memmap_addr = modlist_addr + (nr_modules as usize * MODLIST_ENTRY_SIZE) as u64;
    let mut b = Vec::new();
    b.extend(START_INFO_MAGIC.to_le_bytes());
    b.extend(1u32.to_le_bytes()); // version
    b.extend(0u32.to_le_bytes()); // flags
    b.extend(nr_modules.to_le_bytes());
    b.extend(if nr_modules > 0 { modlist_addr } else { 0 }.to_le_bytes());
    b.extend(inputs.cmdline_addr.to_le_bytes());
    b.extend(0u64.to_le_bytes()); // no ACPI RSDP
    b.extend(memmap_addr.to_le_bytes());
    b.extend((inputs.memmap.len() as u32).to_le_bytes());
    b.extend(0u32.to_le_bytes());
    if let Some((addr, size)) = inputs.initrd {
        b.extend(addr.to_le_bytes());
        b.extend(size.to_le_bytes());
        b.extend(0u64.to_le_bytes()); // module command line
        b.extend(0u64.to_le_bytes());
    }
    for e in &inputs.memmap {
        b.extend(e.addr.to_le_bytes());
        b.extend(e.size.to_le_bytes());
        b.extend(e.kind.to_le_bytes());
        b.extend(0u32.to_le_bytes());
    }
    debug_assert_eq!(
        b.len(),
        START_INFO_SIZE
            + nr_modules as usize * MODLIST_ENTRY_SIZE
            + inputs.memmap.len() * MEMMAP_ENTRY_SIZE
    );
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::elf::{testing::build, EM_X86_64};

    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    #[test]
    fn entry_comes_from_the_xen_phys32_note_of_either_width() {
        let four = build(
            EM_X86_64,
            true,
            0,
            &[(0x100000, b"x", 1)],
            &[("Xen", 18, &0x100040u32.to_le_bytes())],
        );
        assert_eq!(entry_point(&Elf::parse(&four).unwrap()), Some(0x100040));
        let eight = build(
            EM_X86_64,
            true,
            0,
            &[(0x100000, b"x", 1)],
            &[
                ("GNU", 3, b"abcd"),
                ("Xen", 18, &0x1000000u64.to_le_bytes()),
            ],
        );
        assert_eq!(entry_point(&Elf::parse(&eight).unwrap()), Some(0x1000000));
        let none = build(
            EM_X86_64,
            true,
            0,
            &[(0x100000, b"x", 1)],
            &[("Xen", 17, &[0; 4])],
        );
        assert_eq!(entry_point(&Elf::parse(&none).unwrap()), None);
    }

    #[test]
    fn start_info_links_modules_and_memmap() {
        let memmap = vec![
            E820Entry {
                addr: 0,
                size: 0x9fc00,
                kind: 1,
            },
            E820Entry {
                addr: 0x100000,
                size: 0x100000,
                kind: 1,
            },
        ];
        let b = start_info(
            0x6000,
            &StartInfoInputs {
                cmdline_addr: 0x20000,
                initrd: Some((0x800000, 0x1234)),
                memmap,
            },
        );
        assert_eq!(u32_at(&b, 0), START_INFO_MAGIC);
        assert_eq!(u32_at(&b, 4), 1);
        assert_eq!(u32_at(&b, 12), 1);
        assert_eq!(u64_at(&b, 16), 0x6038);
        assert_eq!(u64_at(&b, 24), 0x20000);
        assert_eq!(u64_at(&b, 40), 0x6058);
        assert_eq!(u32_at(&b, 48), 2);
        assert_eq!(u64_at(&b, 56), 0x800000);
        assert_eq!(u64_at(&b, 64), 0x1234);
        assert_eq!(u64_at(&b, 88 + 24), 0x100000);
        assert_eq!(b.len(), 56 + 32 + 48);
        let bare = start_info(0x6000, &StartInfoInputs::default());
        assert_eq!(u32_at(&bare, 12), 0);
        assert_eq!(u64_at(&bare, 16), 0);
    }
}
