//! The i8042 keyboard controller: data and command/status ports, every
//! controller command and its data byte, keyboard commands, the reset
//! line, and the 16-byte output bound.
//!
//! Input: accesses (`kind u8` as in `lkvm_fuzz::regs::access`, 1-byte
//! offset in the 5 ports).
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use lkvm::bus::BusDevice;
use lkvm::control::VmControl;
use lkvm::hw::i8042::{I8042, I8042_LEN};
use lkvm::irq::{IrqLine, Trigger};
use lkvm_fuzz::input::Input;
use lkvm_fuzz::regs::{access, Access, NoIrq};

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let Ok(ctl) = VmControl::new() else { return };
    let mut kbd = I8042::new(
        IrqLine::new(Arc::new(NoIrq), 1, Trigger::Edge),
        Arc::new(ctl),
    );
    while let Some(kind) = inp.u8() {
        match access(&mut inp, kind, 1, I8042_LEN) {
            Some(Access::Read { offset, len }) => kbd.read(offset, &mut vec![0u8; len]),
            Some(Access::Write { offset, data }) => kbd.write(offset, &data),
            None => break,
        }
    }
});
