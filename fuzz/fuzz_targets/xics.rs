//! The userspace XICS: the ICP hypercalls (H_CPPR, H_IPI, H_XIRR, H_EOI,
//! H_IPOLL) from any server, the ICS RTAS calls (set-xive, get-xive,
//! int-off, int-on) on any source number, device lines rising and falling
//! on message and level-sensitive sources, servers attached late.
//!
//! Input: `servers u8` (1 to 8), `lsi u8` (sources 0x1000 + 4k for the
//! bits k set are level-sensitive), `late u8` (bit 0 attach at operation
//! 10), then operations `op u8, server u8` and fields: `op % 11` 0 `cppr
//! u8`, 1 `mfrr u8` (IPI to `server`), 2 XIRR, 3 `xirr u32` EOI, 4 IPOLL,
//! 5 `irq u32, prio u8` set-xive, 6 `irq u32` get-xive, 7 `irq u32`
//! int-off, 8 `irq u32` int-on, 9 `irq u16, level u8` a line (irq + 0x1000
//! - 0x10 so that numbers just below the sources are reached too), 10
//! attach.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use lkvm::irq::IrqChip;
use lkvm::powerpc::hcall::XicsHcalls;
use lkvm::powerpc::rtas::XicsRtas;
use lkvm::powerpc::xics::{ServerLines, Xics, IRQ_BASE};
use lkvm_fuzz::input::Input;

struct Lines;

impl ServerLines for Lines {
    fn set(&self, _server: u32, _level: bool) {}
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let (Some(servers), Some(lsi), Some(late)) = (inp.u8(), inp.u8(), inp.u8()) else {
        return;
    };
    let x = Xics::new(u32::from(servers % 8) + 1);
    for k in 0..8 {
        if lsi & (1 << k) != 0 {
            x.set_level_sensitive(IRQ_BASE + 4 * k);
        }
    }
    if late & 1 == 0 {
        x.attach(Arc::new(Lines));
    }
    while let (Some(op), Some(server)) = (inp.u8(), inp.u8()) {
        let s = u32::from(server);
        match op % 11 {
            0 => {
                let Some(c) = inp.u8() else { break };
                x.cppr(s, c);
            }
            1 => {
                let Some(m) = inp.u8() else { break };
                x.ipi(s, m);
            }
            2 => {
                x.xirr(s);
            }
            3 => {
                let Some(v) = inp.u32() else { break };
                x.eoi(s, v);
            }
            4 => {
                let _ = x.ipoll(s);
            }
            5 => {
                let (Some(irq), Some(p)) = (inp.u32(), inp.u8()) else {
                    break;
                };
                x.set_xive(irq, s, p);
            }
            6 => {
                let Some(irq) = inp.u32() else { break };
                let _ = x.get_xive(irq);
            }
            7 => {
                let Some(irq) = inp.u32() else { break };
                x.int_off(irq);
            }
            8 => {
                let Some(irq) = inp.u32() else { break };
                x.int_on(irq);
            }
            9 => {
                let (Some(irq), Some(level)) = (inp.u16(), inp.u8()) else {
                    break;
                };
                let _ = x.set_level(u32::from(irq) + IRQ_BASE - 0x10, level & 1 != 0);
            }
            _ => x.attach(Arc::new(Lines)),
        }
    }
});
