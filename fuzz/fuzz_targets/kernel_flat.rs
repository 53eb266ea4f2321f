//! Flat kernel binaries and the formats lkvm refuses to take as one
//! (compressed files, ELF, EFI zboot, another architecture's image,
//! uImage, QCOW): recognition, then each architecture's load of whatever
//! is left (x86 real mode at 1000:0000, arm64 and RISC-V at their text
//! offsets, PowerPC at 0), and the `Linux version` banner search.
//!
//! Input: `setup u8` (`lkvm_fuzz::kernels::Setup`), then the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lkvm_fuzz::kernels::{arm64, powerpc, riscv, x86, Setup};

fuzz_target!(|data: &[u8]| {
    let Some((&b, file)) = data.split_first() else {
        return;
    };
    let s = Setup::from_byte(b);
    if let Some(f) = lkvm::loader::flat::recognise(file) {
        let _ = f.describe();
    }
    x86(file, &s);
    arm64(file, &s);
    riscv(file, &s);
    powerpc(file, &s);
});
