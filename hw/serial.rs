//! The 8250/16550A UART (vm-superio's model) as the guest console: output
//! goes to a writer (lkvm's stdout), input comes from the host terminal
//! through a queue that refills the 64-byte receive FIFO as the guest drains
//! it.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};

use crate::bus::{lock, BusDevice};
use crate::irq::IrqLine;
use crate::term::ConsoleSink;

/// COM1's ISA interrupt.
pub const COM1_IRQ: u32 = 4;
/// Registers of one UART.
pub const UART_LEN: u64 = 8;

/// Input beyond this is dropped: a guest that never reads its UART must not
/// make lkvm buffer without bound.
const MAX_PENDING_INPUT: usize = 64 * 1024;

struct IrqTrigger(IrqLine);

impl Trigger for IrqTrigger {
    type E = crate::irq::Error;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.raise()
    }
}

/// Line status: data ready, break interrupt.
const LSR: u8 = 5;
const LSR_DATA_READY: u8 = 0x01;
const LSR_BREAK: u8 = 0x10;

/// Host input waiting for room in the receive FIFO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Input {
    Byte(u8),
    /// A break condition (for the magic SysRq key): a zero byte the line
    /// status marks as a break.
    Break,
}

pub struct Serial8250 {
    uart: Serial<IrqTrigger, NoEvents, Box<dyn Write + Send>>,
    pending: VecDeque<Input>,
    fifo_size: usize,
    /// The byte at the head of the receive FIFO is a break.
    break_at_head: bool,
}

impl Serial8250 {
    pub fn new(irq: IrqLine, out: Box<dyn Write + Send>) -> Self {
        let uart = Serial::new(IrqTrigger(irq), out);
        Serial8250 {
            fifo_size: uart.fifo_capacity(),
            uart,
            pending: VecDeque::new(),
            break_at_head: false,
        }
    }

    fn refill(&mut self) {
        loop {
            match self.pending.front() {
                None => return,
                Some(Input::Break) => {
                    // Only the FIFO's head can be marked as a break.
                    if self.break_at_head || self.uart.fifo_capacity() < self.fifo_size {
                        return;
                    }
                    if let Err(e) = self.uart.enqueue_raw_bytes(&[0]) {
                        log::debug!("serial: cannot queue a break: {e}");
                        return;
                    }
                    self.break_at_head = true;
                    self.pending.pop_front();
                }
                Some(Input::Byte(_)) => {
                    let room = self.uart.fifo_capacity();
                    let bytes: Vec<u8> = self
                        .pending
                        .iter()
                        .take(room)
                        .map_while(|i| match i {
                            Input::Byte(b) => Some(*b),
                            Input::Break => None,
                        })
                        .collect();
                    if bytes.is_empty() {
                        return;
                    }
                    match self.uart.enqueue_raw_bytes(&bytes) {
                        Ok(done) => {
                            self.pending.drain(..done);
                            if done < bytes.len() {
                                return;
                            }
                        }
                        Err(e) => {
                            log::debug!("serial: cannot queue input: {e}");
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Sends a break followed by `key`: the magic SysRq sequence of a
    /// serial console.
    pub fn sysrq(&mut self, key: u8) {
        self.pending.push_back(Input::Break);
        self.pending.push_back(Input::Byte(key));
        self.refill();
    }

    fn read_reg(&mut self, reg: u8) -> u8 {
        let v = self.uart.read(reg);
        match reg {
            0 if self.break_at_head => {
                self.break_at_head = false;
                v
            }
            LSR if self.break_at_head => v | LSR_BREAK,
            _ => v,
        }
    }

    /// Takes one byte of console input, as a read of the receive buffer
    /// would: for a second console (RISC-V SBI) sharing this input.
    pub fn read_input_byte(&mut self) -> Option<u8> {
        if self.uart.read(LSR) & LSR_DATA_READY == 0 {
            return None;
        }
        let byte = self.read_reg(0);
        self.refill();
        Some(byte)
    }

    fn queue(&mut self, bytes: &[u8]) {
        let room = MAX_PENDING_INPUT.saturating_sub(self.pending.len());
        if bytes.len() > room {
            log::debug!(
                "serial: guest is not reading; dropping {} input bytes",
                bytes.len() - room
            );
        }
        self.pending.extend(
            bytes[..bytes.len().min(room)]
                .iter()
                .map(|b| Input::Byte(*b)),
        );
        self.refill();
    }
}

impl BusDevice for Serial8250 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let Some(first) = data.first_mut() else {
            return;
        };
        *first = match u8::try_from(offset) {
            Ok(reg) if offset < UART_LEN => self.read_reg(reg),
            _ => 0xff,
        };
        self.refill();
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (Some(&value), Ok(reg)) = (data.first(), u8::try_from(offset)) else {
            return;
        };
        if offset >= UART_LEN {
            return;
        }
        if let Err(e) = self.uart.write(reg, value) {
            log::debug!("serial: write of {value:#x} to register {reg}: {e}");
        }
        // Refill after every access, not only RBR reads, so queued input
        // keeps flowing whatever the guest does to the FIFO and line state.
        self.refill();
    }
}

/// Feeds host console input into a UART.
pub struct SerialConsole(pub Arc<Mutex<Serial8250>>);

impl ConsoleSink for SerialConsole {
    fn queue_input(&self, bytes: &[u8]) {
        lock(&self.0).queue(bytes);
    }

    fn sysrq(&self, key: u8) -> bool {
        lock(&self.0).sysrq(key);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::testing::RecordingChip;
    use crate::irq::Trigger as IrqTriggerMode;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn uart() -> (Serial8250, Capture, Arc<RecordingChip>) {
        let chip = Arc::new(RecordingChip::default());
        let out = Capture::default();
        let line = IrqLine::new(chip.clone(), COM1_IRQ, IrqTriggerMode::Edge);
        (Serial8250::new(line, Box::new(out.clone())), out, chip)
    }

    #[test]
    fn transmitted_bytes_reach_the_writer_unchanged() {
        let (mut u, out, _) = uart();
        for b in b"hi\r\n\x00\xff" {
            u.write(0, &[*b]);
        }
        assert_eq!(*out.0.lock().unwrap(), b"hi\r\n\x00\xff");
    }

    #[test]
    fn input_beyond_the_fifo_is_delivered_as_the_guest_reads() {
        let (mut u, _, chip) = uart();
        u.write(1, &[0x01]); // IER: received-data interrupt
        let input: Vec<u8> = (0..200u8).collect();
        u.queue(&input);
        assert!(!chip.take().is_empty(), "RDA interrupt raised");
        let mut got = Vec::new();
        let mut lsr = [0u8];
        for _ in 0..1000 {
            u.read(5, &mut lsr);
            if lsr[0] & 1 == 0 {
                break;
            }
            let mut b = [0u8];
            u.read(0, &mut b);
            got.push(b[0]);
        }
        assert_eq!(got, input);
    }

    #[test]
    fn sysrq_is_a_break_then_the_key() {
        let (mut u, _, _) = uart();
        u.queue(b"ab");
        u.sysrq(b'h');
        let mut seen = Vec::new();
        let mut lsr = [0u8];
        for _ in 0..100 {
            u.read(5, &mut lsr);
            if lsr[0] & 1 == 0 {
                break;
            }
            let mut b = [0u8];
            u.read(0, &mut b);
            seen.push((b[0], lsr[0] & LSR_BREAK != 0));
        }
        assert_eq!(
            seen,
            vec![(b'a', false), (b'b', false), (0, true), (b'h', false)]
        );
    }

    #[test]
    fn queued_input_survives_fifo_control_writes() {
        let (mut u, _, _) = uart();
        let input: Vec<u8> = (0..100u8).collect();
        u.queue(&input);
        u.write(2, &[0x07]); // FCR: enable and clear both FIFOs
        let mut got = Vec::new();
        let mut lsr = [0u8];
        for _ in 0..1000 {
            u.read(5, &mut lsr);
            if lsr[0] & 1 == 0 {
                break;
            }
            let mut b = [0u8];
            u.read(0, &mut b);
            got.push(b[0]);
        }
        // vm-superio's model ignores FCR, so nothing is dropped, and the
        // bytes beyond the 64-byte FIFO follow without further input
        assert_eq!(got, input);
    }

    #[test]
    fn input_can_be_taken_byte_by_byte_by_another_console() {
        let (mut u, _, _) = uart();
        assert_eq!(u.read_input_byte(), None);
        let input: Vec<u8> = (0..70u8).collect();
        u.queue(&input);
        let got: Vec<u8> = std::iter::from_fn(|| u.read_input_byte()).collect();
        assert_eq!(got, input);
    }

    #[test]
    fn odd_offsets_and_sizes_do_not_panic() {
        let (mut u, _, _) = uart();
        let mut buf = [0u8; 4];
        u.read(9, &mut buf);
        assert_eq!(buf[0], 0xff);
        u.read(0, &mut []);
        u.write(0x100, &[1]);
        u.write(3, &[]);
    }
}
