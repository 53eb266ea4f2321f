//! x86 bzImages: the setup header (protocol version, load flags,
//! XLF_KERNEL_64, setup sectors, header length, initrd limit, preferred
//! address, init_size), the zero page built from it, and the whole x86
//! load with an initrd and a command line in guest RAM of several sizes;
//! the release string lkvm reads from the header for a 9p root.
//!
//! Input: `setup u8` (`lkvm_fuzz::kernels::Setup`), then the image.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lkvm::x86::bzimage::{BzImage, ZeroPageInputs};
use lkvm_fuzz::kernels::{x86, Setup};

fuzz_target!(|data: &[u8]| {
    let Some((&b, image)) = data.split_first() else {
        return;
    };
    let s = Setup::from_byte(b);
    if let Ok(bz) = BzImage::parse(image) {
        let _ = bz.footprint_end(1 << 20);
        let _ = bz.zero_page(&ZeroPageInputs {
            cmdline_addr: 0x20000,
            initrd_addr: 0x100_0000,
            initrd_size: 4096,
            e820: lkvm::x86::layout::e820_map(s.ram),
        });
    }
    x86(image, &s);
});
