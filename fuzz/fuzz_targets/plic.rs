//! The userspace PLIC: priorities, pending bits, per-context enables and
//! thresholds, claim and complete, through MMIO accesses of any size and
//! offset in its 64 MiB window, interleaved with device lines rising and
//! falling (edge and level sources) and harts attached late.
//!
//! Input: `harts u8` (1 to 8), `late u8` (bit 0: the harts' lines are
//! attached only at the first operation 2), then operations `op u8`:
//! `op % 3` 0 an access (`kind u8` as in `lkvm_fuzz::regs::access`,
//! 4-byte offset), 1 `source u8, level u8` a device line, 2 attach.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use lkvm::bus::BusDevice;
use lkvm::irq::IrqChip;
use lkvm::riscv::layout::{NR_SOURCES, PLIC_SIZE};
use lkvm::riscv::plic::{HartLines, Plic, PlicMmio};
use lkvm_fuzz::input::Input;
use lkvm_fuzz::regs::{access, Access};

struct Harts;

impl HartLines for Harts {
    fn set_external(&self, _hart: u32, _level: bool) {}
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let (Some(harts), Some(late)) = (inp.u8(), inp.u8()) else {
        return;
    };
    let plic = Plic::new(NR_SOURCES, u32::from(harts % 8) + 1);
    if late & 1 == 0 {
        plic.attach(Arc::new(Harts));
    }
    let mut mmio = PlicMmio(plic.clone());
    while let Some(op) = inp.u8() {
        match op % 3 {
            0 => {
                let Some(kind) = inp.u8() else { break };
                match access(&mut inp, kind, 4, PLIC_SIZE) {
                    Some(Access::Read { offset, len }) => mmio.read(offset, &mut vec![0u8; len]),
                    Some(Access::Write { offset, data }) => mmio.write(offset, &data),
                    None => break,
                }
            }
            1 => {
                let (Some(src), Some(level)) = (inp.u8(), inp.u8()) else {
                    break;
                };
                let _ = plic.set_level(u32::from(src), level & 1 != 0);
            }
            _ => plic.attach(Arc::new(Harts)),
        }
    }
});
