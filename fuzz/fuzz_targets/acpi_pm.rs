//! The ACPI PM1 registers: status (write one to clear), enable, control
//! with SLP_TYP/SLP_EN (S5 powers the VM off), accesses of any size at
//! any offset.
//!
//! Input: accesses (`kind u8` as in `lkvm_fuzz::regs::access`, 1-byte
//! offset in the 8 ports).
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use lkvm::bus::BusDevice;
use lkvm::control::VmControl;
use lkvm::hw::acpi_pm::{AcpiPm, ACPI_PM_LEN};
use lkvm_fuzz::input::Input;
use lkvm_fuzz::regs::{access, Access};

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let Ok(ctl) = VmControl::new() else { return };
    let mut pm = AcpiPm::new(Arc::new(ctl));
    while let Some(kind) = inp.u8() {
        match access(&mut inp, kind, 1, ACPI_PM_LEN) {
            Some(Access::Read { offset, len }) => pm.read(offset, &mut vec![0u8; len]),
            Some(Access::Write { offset, data }) => pm.write(offset, &data),
            None => break,
        }
    }
});
