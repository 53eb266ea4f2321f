//! An MSI-X table on its own: table and PBA accesses of any size and
//! offset, the enable and function-mask bits, vectors fired while masked
//! (held pending) and unmasked, with and without irqfd routes.
//!
//! Input: `vectors u8`, `mode u8` (bit 0 irqfd routes, bit 1 requester
//! ids), then operations `op u8`: 0 table read, 1 table write, 2 PBA read
//! (each `offset u16` mod 4 KiB, `size u8` 1/2/4/8, and for a write 8
//! value bytes), 3 `control u16` written, 4 `vector u16` fired.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lkvm::virtio::msix::Msix;
use lkvm_fuzz::input::Input;
use lkvm_fuzz::regs::Sink;

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let (Some(vectors), Some(mode)) = (inp.u8(), inp.u8()) else {
        return;
    };
    let sink = Sink::new(mode & 1 != 0, mode & 2 != 0);
    let mut m = Msix::new(u16::from(vectors), 0x18, sink.0.as_ref());
    while let Some(op) = inp.u8() {
        match op % 5 {
            0..=2 => {
                let (Some(off), Some(size)) = (inp.u16(), inp.u8()) else {
                    break;
                };
                let off = u64::from(off) % 0x1000;
                let len = 1usize << (size & 3);
                match op % 5 {
                    0 => m.table_read(off, &mut vec![0u8; len]),
                    1 => {
                        let Some(v) = inp.u64() else { break };
                        m.table_write(off, &v.to_le_bytes()[..len], &sink);
                    }
                    _ => m.pba_read(off, &mut vec![0u8; len]),
                }
            }
            3 => {
                let Some(c) = inp.u16() else { break };
                m.set_control(c, &sink);
            }
            _ => {
                let Some(v) = inp.u16() else { break };
                m.fire(v, &sink);
            }
        }
    }
    let _ = (m.control(), m.enabled(), m.vectors());
});
