//! The modern virtio-pci function: its configuration space (the vendor
//! capabilities, the PCI configuration access window, the MSI-X
//! capability and its enable and mask bits, BAR moves that move the
//! ioeventfds) and BAR 0 (common configuration, ISR, device
//! configuration, notify, the MSI-X table and PBA), with the device
//! raising queue, config and needs-reset interrupts through INTx or
//! MSI-X (sent directly, or through irqfd routes).
//!
//! Input: `mode u8` (bit 0 MSI-X offered, bit 1 vectors get irqfds, bit 2
//! the controller wants requester ids), a device
//! (`lkvm_fuzz::regs::Dev::from_input`), then operations: `kind u8`;
//! kind 0xff is `what u8, q u16`, the device raising an interrupt; else
//! bit 3 of kind picks configuration space (2-byte offset in 4 KiB) or
//! BAR 0 (2-byte offset in its 32 KiB) for the access
//! (`lkvm_fuzz::regs::access`).
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use lkvm::hw::pci::PciDevice;
use lkvm::irq::{IrqLine, MsiSink, Trigger};
use lkvm::virtio::common::VirtioState;
use lkvm::virtio::device::IoEvents;
use lkvm::virtio::pci::{VirtioPci, BAR_SIZE};
use lkvm_fuzz::driver::memory;
use lkvm_fuzz::input::Input;
use lkvm_fuzz::regs::{access, Access, Dev, NoIo, NoIrq, Sink};

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let Some(mode) = inp.u8() else { return };
    let Some((dev, irq)) = Dev::from_input(&mut inp) else {
        return;
    };
    let Ok(state) = VirtioState::new(Box::new(dev), memory()) else {
        return;
    };
    let sink = (mode & 1 != 0)
        .then(|| Arc::new(Sink::new(mode & 2 != 0, mode & 4 != 0)) as Arc<dyn MsiSink>);
    let Ok(mut d) = VirtioPci::new(
        state,
        IrqLine::new(Arc::new(NoIrq), 40, Trigger::Level),
        40,
        sink,
        0x18,
        Some(Arc::new(NoIo) as Arc<dyn IoEvents>),
    ) else {
        return;
    };
    while let Some(kind) = inp.u8() {
        if kind == 0xff {
            let (Some(what), Some(q)) = (inp.u8(), inp.u16()) else {
                break;
            };
            Dev::raise(&irq, what, q);
            continue;
        }
        let config = kind & 8 != 0;
        let window = if config { 0x1000 } else { BAR_SIZE };
        match (access(&mut inp, kind, 2, window), config) {
            (Some(Access::Read { offset, len }), true) => {
                d.config_read(offset as usize, &mut vec![0u8; len])
            }
            (Some(Access::Write { offset, data }), true) => d.config_write(offset as usize, &data),
            (Some(Access::Read { offset, len }), false) => {
                d.bar_read(0, offset, &mut vec![0u8; len])
            }
            (Some(Access::Write { offset, data }), false) => d.bar_write(0, offset, &data),
            (None, _) => break,
        }
    }
});
