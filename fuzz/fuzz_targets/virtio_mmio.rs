//! The virtio-mmio register file (version 2): any access of any size at
//! any offset of the window and its config space, with feature
//! negotiation, queue setup, DRIVER_OK (queues checked against guest
//! RAM), reset, and the device raising queue, config and needs-reset
//! interrupts at any time.
//!
//! Input: a device (`lkvm_fuzz::regs::Dev::from_input`), then operations:
//! `kind u8`; kind 0xff is `what u8, q u16`: the device raises an
//! interrupt; otherwise an access (`lkvm_fuzz::regs::access`, 2-byte
//! offset in the 0x200-byte window).
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use lkvm::bus::BusDevice;
use lkvm::irq::{IrqLine, Trigger};
use lkvm::virtio::common::VirtioState;
use lkvm::virtio::mmio::{MmioTransport, WINDOW};
use lkvm_fuzz::driver::memory;
use lkvm_fuzz::input::Input;
use lkvm_fuzz::regs::{access, Access, Dev, NoIrq};

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let Some((dev, irq)) = Dev::from_input(&mut inp) else {
        return;
    };
    let Ok(state) = VirtioState::new(Box::new(dev), memory()) else {
        return;
    };
    let mut t = MmioTransport::new(state, IrqLine::new(Arc::new(NoIrq), 5, Trigger::Level));
    while let Some(kind) = inp.u8() {
        if kind == 0xff {
            let (Some(what), Some(q)) = (inp.u8(), inp.u16()) else {
                break;
            };
            Dev::raise(&irq, what, q);
            continue;
        }
        match access(&mut inp, kind, 2, WINDOW) {
            Some(Access::Read { offset, len }) => {
                let mut b = vec![0u8; len];
                t.read(offset, &mut b);
            }
            Some(Access::Write { offset, data }) => t.write(offset, &data),
            None => break,
        }
    }
});
