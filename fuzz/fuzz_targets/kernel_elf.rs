//! ELF files, 32- and 64-bit, either byte order: program headers, notes
//! (the PVH entry note), segment data; the x86 PVH load, the PowerPC
//! vmlinux load and placement, and the section lookup lkvm uses on
//! kernel modules (`.modinfo` and its `depends=`).
//!
//! Input: `setup u8` (`lkvm_fuzz::kernels::Setup`), then the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lkvm::loader::elf::Elf;
use lkvm_fuzz::kernels::{powerpc, x86, Setup};

fuzz_target!(|data: &[u8]| {
    let Some((&b, file)) = data.split_first() else {
        return;
    };
    let s = Setup::from_byte(b);
    if let Ok(elf) = Elf::parse(file) {
        for n in elf.notes() {
            let _ = elf.desc_value(n.desc);
        }
        for seg in &elf.segments {
            let _ = elf.segment_data(seg);
        }
        let _ = (elf.phys_end(), elf.is_little_endian());
        let _ = lkvm::x86::pvh::entry_point(&elf);
    }
    x86(file, &s);
    powerpc(file, &s);
    let _ = lkvm::modinit::elf_section(file, b".modinfo");
    let _ = lkvm::modinit::depends(file);
});
