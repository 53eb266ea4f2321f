//! The i8042 keyboard controller, as much as Linux needs from it on a
//! headless VM: controller self-tests, the command byte, a keyboard that
//! acknowledges commands, and the reset line (`reboot=k`), which ends lkvm.
//!
//! Registered at port 0x60 with length 5: offset 0 is the data port, offset 4
//! the status/command port (0x61, the speaker port, belongs to the in-kernel
//! PIT and never reaches userspace).

use std::collections::VecDeque;
use std::sync::Arc;

use crate::bus::BusDevice;
use crate::control::{GuestExit, VmControl};
use crate::irq::IrqLine;

pub const I8042_PORT: u64 = 0x60;
pub const I8042_LEN: u64 = 5;
pub const KBD_IRQ: u32 = 1;

const DATA: u64 = 0;
const COMMAND: u64 = 4;

const STATUS_OBF: u8 = 1 << 0;
const STATUS_SYS: u8 = 1 << 2;
const STATUS_CMD: u8 = 1 << 3;
const STATUS_UNLOCKED: u8 = 1 << 4;

const CTR_KBD_INT: u8 = 1 << 0;
const CTR_SYS: u8 = 1 << 2;
const CTR_KBD_DISABLE: u8 = 1 << 4;
const CTR_AUX_DISABLE: u8 = 1 << 5;
const CTR_XLATE: u8 = 1 << 6;

const ACK: u8 = 0xfa;
/// Bytes waiting for the guest to read them. The real controller holds
/// one; the longest answer here is two (reset: ACK, self-test passed). A
/// guest that writes without reading must not grow lkvm without bound:
/// beyond this, new bytes are dropped.
const OUTPUT_MAX: usize = 16;

/// What the next data-port write means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Keyboard,
    CommandByte,
    OutputPort,
    KbdEcho,
    AuxEcho,
    AuxDevice,
}

pub struct I8042 {
    ctr: u8,
    last_was_command: bool,
    expect: Expect,
    output: VecDeque<u8>,
    irq: IrqLine,
    ctl: Arc<VmControl>,
}

impl I8042 {
    pub fn new(irq: IrqLine, ctl: Arc<VmControl>) -> Self {
        I8042 {
            ctr: CTR_KBD_INT | CTR_SYS | CTR_XLATE | CTR_AUX_DISABLE,
            last_was_command: false,
            expect: Expect::Keyboard,
            output: VecDeque::new(),
            irq,
            ctl,
        }
    }

    fn status(&self) -> u8 {
        let mut s = STATUS_UNLOCKED;
        if !self.output.is_empty() {
            s |= STATUS_OBF;
        }
        if self.ctr & CTR_SYS != 0 {
            s |= STATUS_SYS;
        }
        if self.last_was_command {
            s |= STATUS_CMD;
        }
        s
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = OUTPUT_MAX.saturating_sub(self.output.len());
        if bytes.len() > room {
            log::debug!(
                "i8042: output buffer full; {} bytes dropped",
                bytes.len() - room
            );
        }
        self.output.extend(bytes.iter().take(room));
        if self.ctr & CTR_KBD_INT != 0 {
            if let Err(e) = self.irq.raise() {
                log::debug!("i8042: {e}");
            }
        }
    }

    fn reset(&self) {
        log::debug!("i8042: guest pulsed the reset line");
        self.ctl.request_exit(GuestExit::Reset);
    }

    fn command(&mut self, cmd: u8) {
        self.last_was_command = true;
        match cmd {
            0x20 => {
                let ctr = self.ctr;
                self.push(&[ctr]);
            }
            0x60 => self.expect = Expect::CommandByte,
            0xa7 => self.ctr |= CTR_AUX_DISABLE,
            0xa8 => self.ctr &= !CTR_AUX_DISABLE,
            0xa9 | 0xab => self.push(&[0x00]), // port tests pass
            0xaa => {
                self.ctr |= CTR_SYS;
                self.push(&[0x55]); // controller self-test passed
            }
            0xad => self.ctr |= CTR_KBD_DISABLE,
            0xae => self.ctr &= !CTR_KBD_DISABLE,
            0xd1 => self.expect = Expect::OutputPort,
            0xd2 => self.expect = Expect::KbdEcho,
            0xd3 => self.expect = Expect::AuxEcho,
            0xd4 => self.expect = Expect::AuxDevice,
            // Pulse output lines; bit 0 low pulses the CPU reset line.
            0xf0..=0xff if cmd & 1 == 0 => self.reset(),
            0xf0..=0xff => {}
            other => log::debug!("i8042: unknown controller command {other:#x}"),
        }
    }

    fn data(&mut self, byte: u8) {
        self.last_was_command = false;
        match std::mem::replace(&mut self.expect, Expect::Keyboard) {
            Expect::CommandByte => self.ctr = byte,
            Expect::OutputPort if byte & 1 == 0 => self.reset(),
            Expect::OutputPort => {}
            Expect::KbdEcho => self.push(&[byte]),
            // No mouse is attached: aux traffic gets no answer, as on a
            // machine without a PS/2 mouse.
            Expect::AuxEcho | Expect::AuxDevice => {}
            Expect::Keyboard => match byte {
                0xff => self.push(&[ACK, 0xaa]),       // reset, self-test passed
                0xf2 => self.push(&[ACK, 0xab, 0x83]), // identify: MF2 keyboard
                0xee => self.push(&[0xee]),            // echo
                _ => self.push(&[ACK]),
            },
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            DATA => self.output.pop_front().unwrap_or(0),
            COMMAND => self.status(),
            _ => 0xff,
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&byte) = data.first() else {
            return;
        };
        match offset {
            DATA => self.data(byte),
            COMMAND => self.command(byte),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::testing::RecordingChip;
    use crate::irq::Trigger;

    fn dev() -> (I8042, Arc<VmControl>, Arc<RecordingChip>) {
        let chip = Arc::new(RecordingChip::default());
        let ctl = Arc::new(VmControl::new().unwrap());
        let irq = IrqLine::new(chip.clone(), KBD_IRQ, Trigger::Edge);
        (I8042::new(irq, ctl.clone()), ctl, chip)
    }

    fn read(d: &mut I8042, off: u64) -> u8 {
        let mut b = [0u8];
        d.read(off, &mut b);
        b[0]
    }

    #[test]
    fn self_test_and_command_byte_round_trip() {
        let (mut d, ctl, chip) = dev();
        assert_eq!(read(&mut d, COMMAND) & STATUS_OBF, 0);
        d.write(COMMAND, &[0xaa]);
        assert_ne!(read(&mut d, COMMAND) & STATUS_OBF, 0);
        assert_eq!(read(&mut d, DATA), 0x55);
        assert!(!chip.take().is_empty(), "keyboard interrupt raised");
        d.write(COMMAND, &[0x60]);
        d.write(DATA, &[0x47]);
        d.write(COMMAND, &[0x20]);
        assert_eq!(read(&mut d, DATA), 0x47);
        assert!(!ctl.is_stopping());
    }

    #[test]
    fn keyboard_commands_are_acknowledged() {
        let (mut d, _, _) = dev();
        d.write(DATA, &[0xff]);
        assert_eq!((read(&mut d, DATA), read(&mut d, DATA)), (ACK, 0xaa));
        d.write(DATA, &[0xf4]);
        assert_eq!(read(&mut d, DATA), ACK);
        assert_eq!(read(&mut d, COMMAND) & STATUS_OBF, 0);
    }

    /// A guest writing the data port without reading back grew lkvm by
    /// hundreds of MiB; the output buffer now holds at most OUTPUT_MAX.
    #[test]
    fn the_output_buffer_is_bounded() {
        let (mut d, _, _) = dev();
        for _ in 0..100_000 {
            d.write(DATA, &[0xff]);
        }
        assert_eq!(d.output.len(), OUTPUT_MAX);
        for _ in 0..OUTPUT_MAX {
            read(&mut d, DATA);
        }
        assert_eq!(read(&mut d, COMMAND) & STATUS_OBF, 0);
        // Still answers once read empty.
        d.write(DATA, &[0xf4]);
        assert_eq!(read(&mut d, DATA), ACK);
    }

    #[test]
    fn pulsing_the_reset_line_ends_the_vm_with_reset() {
        let (mut d, ctl, _) = dev();
        d.write(COMMAND, &[0xfe]);
        assert_eq!(ctl.exit_reason(), Some(GuestExit::Reset));
    }

    #[test]
    fn output_port_write_with_bit0_clear_resets() {
        let (mut d, ctl, _) = dev();
        d.write(COMMAND, &[0xd1]);
        d.write(DATA, &[0x01]);
        assert!(!ctl.is_stopping());
        d.write(COMMAND, &[0xd1]);
        d.write(DATA, &[0x00]);
        assert_eq!(ctl.exit_reason(), Some(GuestExit::Reset));
    }

    #[test]
    fn stray_offsets_and_empty_accesses_are_harmless() {
        let (mut d, ctl, _) = dev();
        let mut buf = [0u8; 2];
        d.read(2, &mut buf);
        assert_eq!(buf, [0xff, 0]);
        d.write(3, &[0xfe]);
        d.write(COMMAND, &[]);
        d.write(COMMAND, &[0x99]);
        assert!(!ctl.is_stopping());
    }
}
