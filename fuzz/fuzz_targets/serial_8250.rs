//! The 8250/16550A UART the guest drives through its eight registers
//! (divisor latch, FIFO control, interrupt enable and identification,
//! line and modem control, loopback, scratch), with host input arriving
//! at any time (64 KiB bound), SysRq breaks, and the second console
//! (RISC-V SBI getchar) taking input bytes.
//!
//! Input: operations `op u8`: `op % 4` 0 a register access (`kind u8` as
//! in `lkvm_fuzz::regs::access`, 1-byte offset in 8 registers), 1 host
//! input `n u16, bytes`, 2 `key u8` SysRq, 3 one byte taken for SBI.
#![no_main]

use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use lkvm::bus::BusDevice;
use lkvm::hw::serial::{Serial8250, SerialConsole, UART_LEN};
use lkvm::irq::{IrqLine, Trigger};
use lkvm::term::ConsoleSink;
use lkvm_fuzz::input::Input;
use lkvm_fuzz::regs::{access, Access, NoIrq};

fn lock(m: &Mutex<Serial8250>) -> std::sync::MutexGuard<'_, Serial8250> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let uart = Arc::new(Mutex::new(Serial8250::new(
        IrqLine::new(Arc::new(NoIrq), 4, Trigger::Edge),
        Box::new(std::io::sink()),
    )));
    let console = SerialConsole(uart.clone());
    while let Some(op) = inp.u8() {
        match op % 4 {
            0 => {
                let Some(kind) = inp.u8() else { break };
                match access(&mut inp, kind, 1, UART_LEN) {
                    Some(Access::Read { offset, len }) => {
                        lock(&uart).read(offset, &mut vec![0u8; len])
                    }
                    Some(Access::Write { offset, data }) => lock(&uart).write(offset, &data),
                    None => break,
                }
            }
            1 => {
                let Some(n) = inp.u16() else { break };
                console.queue_input(inp.up_to(usize::from(n)));
            }
            2 => {
                let Some(key) = inp.u8() else { break };
                console.sysrq(key);
            }
            _ => {
                let _ = lock(&uart).read_input_byte();
            }
        }
    }
});
