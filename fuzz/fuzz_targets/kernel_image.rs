//! The arm64 and RISC-V `Image` headers (text offset, image size, flags,
//! both RISC-V magics) and where each architecture places the kernel,
//! device tree and initrd in guest RAM of several sizes, then writes them.
//!
//! Input: `setup u8` (`lkvm_fuzz::kernels::Setup`), then the image.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lkvm_fuzz::kernels::{arm64, riscv, Setup};

fuzz_target!(|data: &[u8]| {
    let Some((&b, image)) = data.split_first() else {
        return;
    };
    let s = Setup::from_byte(b);
    arm64(image, &s);
    riscv(image, &s);
});
