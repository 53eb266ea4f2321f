//! The virtio-mmio transport, version 2 (virtio 1.2, 4.2.2): a 0x200-byte
//! register window per device and one interrupt line with an ISR.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use virtio_queue::QueueT;

use super::common::VirtioState;
use super::device::Interrupt;
use crate::bus::{lock, BusDevice};
use crate::irq::IrqLine;

/// Size of one device's window: registers, then its config space.
pub const WINDOW: u64 = 0x200;
/// The offset of QueueNotify, where ioeventfds are registered.
pub const NOTIFY: u64 = 0x50;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
/// "LKVM", as kvmtool reports it.
const VENDOR: u32 = 0x4d56_4b4c;
const CONFIG: u64 = 0x100;

/// The status bit a device's thread reports through its interrupt.
pub(super) fn needs_reset_bit(broken: &AtomicBool) -> u8 {
    if broken.load(Ordering::SeqCst) {
        super::status::NEEDS_RESET
    } else {
        0
    }
}

const ISR_QUEUE: u32 = 1;
const ISR_CONFIG: u32 = 2;

/// The ISR plus the line it drives: the line is up while any ISR bit is.
pub struct MmioInterrupt {
    isr: Mutex<u32>,
    line: IrqLine,
    name: &'static str,
    /// DEVICE_NEEDS_RESET, set by the device's thread.
    broken: AtomicBool,
}

impl MmioInterrupt {
    fn set(&self, bit: u32) {
        let mut isr = lock(&self.isr);
        *isr |= bit;
        if let Err(e) = self.line.raise() {
            log::warn!("{}: {e}", self.name);
        }
    }

    fn ack(&self, bits: u32) {
        let mut isr = lock(&self.isr);
        *isr &= !bits;
        if *isr == 0 {
            if let Err(e) = self.line.lower() {
                log::warn!("{}: {e}", self.name);
            }
        }
    }

    fn status(&self) -> u32 {
        *lock(&self.isr)
    }
}

impl Interrupt for MmioInterrupt {
    fn queue(&self, _index: u16) {
        self.set(ISR_QUEUE);
    }

    fn config(&self) {
        self.set(ISR_CONFIG);
    }

    fn needs_reset(&self) {
        self.broken.store(true, Ordering::SeqCst);
        self.set(ISR_CONFIG);
    }
}

/// One device behind a virtio-mmio window.
pub struct MmioTransport {
    state: VirtioState,
    irq: Arc<MmioInterrupt>,
    irq_dyn: Arc<dyn Interrupt>,
}

impl MmioTransport {
    pub fn new(state: VirtioState, line: IrqLine) -> Self {
        let irq = Arc::new(MmioInterrupt {
            isr: Mutex::new(0),
            line,
            name: state.name(),
            broken: AtomicBool::new(false),
        });
        MmioTransport {
            state,
            irq_dyn: irq.clone(),
            irq,
        }
    }

    pub fn state(&self) -> &VirtioState {
        &self.state
    }

    fn read_reg(&self, offset: u64) -> u32 {
        let s = &self.state;
        let q = s.queue();
        match offset {
            0x00 => MAGIC,
            0x04 => VERSION,
            0x08 => s.device_type(),
            0x0c => VENDOR,
            0x10 => s.device_features_word(),
            0x34 => q.map_or(0, |q| u32::from(q.max_size())),
            0x44 => q.map_or(0, |q| u32::from(q.ready())),
            0x60 => self.irq.status(),
            0x70 => u32::from(s.status() | needs_reset_bit(&self.irq.broken)),
            // No shared memory regions: their length reads as all ones.
            0xb0 | 0xb4 | 0xb8 | 0xbc => u32::MAX,
            0xfc => s.config_generation(),
            _ => {
                log::debug!("{}: read of register {offset:#x} ignored", s.name());
                0
            }
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        let s = &mut self.state;
        match offset {
            0x14 => s.set_device_features_sel(v),
            0x20 => s.set_driver_features_word(v),
            0x24 => s.set_driver_features_sel(v),
            0x30 => s.set_queue_sel(v as u16),
            0x38 => {
                if let Some(q) = s.queue_mut() {
                    q.set_size(v as u16);
                }
            }
            0x44 => {
                if let Some(q) = s.queue_mut() {
                    q.set_ready(v == 1);
                }
            }
            0x50 => match s.kick(v as u16) {
                Some(k) => {
                    if let Err(e) = k.write(1) {
                        log::warn!("{}: kick: {e}", s.name());
                    }
                }
                None => log::debug!("{}: notify of missing queue {v}", s.name()),
            },
            0x64 => self.irq.ack(v),
            0x70 => {
                if s.set_status(v as u8, &self.irq_dyn) {
                    self.irq.broken.store(false, Ordering::SeqCst);
                    self.irq.ack(u32::MAX);
                }
            }
            0x80 | 0x84 | 0x90 | 0x94 | 0xa0 | 0xa4 => {
                let Some(q) = s.queue_mut() else { return };
                let (lo, hi) = if offset & 4 == 0 {
                    (Some(v), None)
                } else {
                    (None, Some(v))
                };
                match offset & !4 {
                    0x80 => q.set_desc_table_address(lo, hi),
                    0x90 => q.set_avail_ring_address(lo, hi),
                    _ => q.set_used_ring_address(lo, hi),
                }
            }
            _ => log::debug!(
                "{}: write of {v:#x} to register {offset:#x} ignored",
                s.name()
            ),
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG {
            self.state.read_config(offset - CONFIG, data);
            return;
        }
        data.fill(0);
        if data.len() == 4 && offset % 4 == 0 {
            data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
        } else {
            log::debug!(
                "{}: {}-byte register read at {offset:#x} ignored",
                self.state.name(),
                data.len()
            );
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG {
            self.state.write_config(offset - CONFIG, data);
            return;
        }
        match <[u8; 4]>::try_from(data) {
            Ok(b) if offset % 4 == 0 => self.write_reg(offset, u32::from_le_bytes(b)),
            _ => log::debug!(
                "{}: {}-byte register write at {offset:#x} ignored",
                self.state.name(),
                data.len()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use vm_memory::{Bytes, GuestAddress};

    use super::super::chain::testing::{memory, AVAIL, DESC, USED};
    use super::super::common::testing::Probe;
    use super::*;
    use crate::irq::{IrqChip, Trigger};

    #[derive(Default)]
    struct Levels(Mutex<Vec<bool>>);
    impl IrqChip for Levels {
        fn set_level(&self, _line: u32, level: bool) -> Result<(), crate::irq::Error> {
            self.0.lock().unwrap().push(level);
            Ok(())
        }
    }

    fn r(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn w(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    fn transport(
        queues: &[u16],
    ) -> (
        MmioTransport,
        Arc<Mutex<super::super::common::testing::Log>>,
        Arc<Levels>,
    ) {
        let (probe, log) = Probe::new(queues);
        let levels = Arc::new(Levels::default());
        let line = IrqLine::new(levels.clone(), 5, Trigger::Level);
        let state = VirtioState::new(Box::new(probe), memory()).unwrap();
        (MmioTransport::new(state, line), log, levels)
    }

    /// The Linux driver's sequence up to DRIVER_OK, for queue 0 only.
    fn bring_up(t: &mut MmioTransport, features_hi: u32) {
        w(t, 0x70, 1);
        w(t, 0x70, 3);
        w(t, 0x24, 0);
        w(t, 0x20, 1 << 5);
        w(t, 0x24, 1);
        w(t, 0x20, features_hi);
        w(t, 0x70, 3 | 8);
        w(t, 0x30, 0);
        w(t, 0x38, 16);
        w(t, 0x80, DESC as u32);
        w(t, 0x84, 0);
        w(t, 0x90, AVAIL as u32);
        w(t, 0x94, 0);
        w(t, 0xa0, USED as u32);
        w(t, 0xa4, 0);
        w(t, 0x44, 1);
        w(t, 0x70, 3 | 8 | 4);
    }

    #[test]
    fn identification_and_features() {
        let (mut t, _, _) = transport(&[256, 128]);
        assert_eq!(r(&mut t, 0x00), 0x7472_6976);
        assert_eq!(r(&mut t, 0x04), 2);
        assert_eq!(r(&mut t, 0x08), 4);
        assert_eq!(r(&mut t, 0x10), 1 << 5);
        w(&mut t, 0x14, 1);
        assert_eq!(r(&mut t, 0x10), 1, "VERSION_1 in the high word");
        w(&mut t, 0x30, 1);
        assert_eq!(r(&mut t, 0x34), 128);
        w(&mut t, 0x30, 7);
        assert_eq!(r(&mut t, 0x34), 0, "a missing queue has size 0");
        let mut cfg = [0u8; 2];
        t.read(0x102, &mut cfg);
        assert_eq!(cfg, [0x33, 0x44]);
    }

    #[test]
    fn driver_ok_activates_with_the_enabled_queues() {
        let (mut t, log, _) = transport(&[16, 16]);
        bring_up(&mut t, 1);
        assert_eq!(r(&mut t, 0x70), 15);
        let log = log.lock().unwrap();
        assert_eq!(log.activations, vec![(vec![0], (1 << 32) | (1 << 5))]);
    }

    #[test]
    fn features_without_version_1_are_refused() {
        let (mut t, log, _) = transport(&[16]);
        bring_up(&mut t, 0);
        assert_eq!(r(&mut t, 0x70) & 8, 0, "FEATURES_OK not kept");
        assert!(log.lock().unwrap().activations.is_empty());
    }

    #[test]
    fn unoffered_features_are_refused() {
        let (mut t, log, _) = transport(&[16]);
        w(&mut t, 0x24, 0);
        w(&mut t, 0x20, 1 << 7);
        w(&mut t, 0x24, 1);
        w(&mut t, 0x20, 1);
        w(&mut t, 0x70, 11);
        assert_eq!(r(&mut t, 0x70), 3);
        assert!(log.lock().unwrap().activations.is_empty());
    }

    #[test]
    fn a_ring_outside_ram_is_not_started() {
        let (mut t, log, _) = transport(&[16]);
        w(&mut t, 0x24, 1);
        w(&mut t, 0x20, 1);
        w(&mut t, 0x70, 11);
        w(&mut t, 0x38, 16);
        w(&mut t, 0x80, 0);
        w(&mut t, 0x84, 0x10); // 64 GiB up: no RAM there
        w(&mut t, 0x44, 1);
        w(&mut t, 0x70, 15);
        assert!(log.lock().unwrap().activations.is_empty());
        assert_ne!(r(&mut t, 0x70) & 64, 0, "NEEDS_RESET");
    }

    #[test]
    fn interrupt_status_and_ack_drive_the_line() {
        let (mut t, _, levels) = transport(&[16]);
        bring_up(&mut t, 1);
        t.irq.queue(0);
        t.irq.config();
        assert_eq!(r(&mut t, 0x60), 3);
        w(&mut t, 0x64, 1);
        assert_eq!(r(&mut t, 0x60), 2);
        w(&mut t, 0x64, 2);
        assert_eq!(r(&mut t, 0x60), 0);
        assert_eq!(*levels.0.lock().unwrap(), vec![true, true, false]);
    }

    /// A device thread that found its queue broken: the driver sees
    /// DEVICE_NEEDS_RESET and a configuration interrupt until it resets.
    #[test]
    fn a_device_needing_a_reset_says_so_until_reset() {
        let (mut t, _, levels) = transport(&[16]);
        bring_up(&mut t, 1);
        t.irq_dyn.needs_reset();
        assert_eq!(r(&mut t, 0x70), 15 | 64);
        assert_eq!(r(&mut t, 0x60), 2, "configuration change");
        assert_eq!(*levels.0.lock().unwrap(), vec![true]);
        w(&mut t, 0x70, 0);
        assert_eq!(r(&mut t, 0x70), 0);
        bring_up(&mut t, 1);
        assert_eq!(r(&mut t, 0x70), 15);
    }

    #[test]
    fn notify_signals_the_kick_and_reset_clears_everything() {
        let (mut t, log, _) = transport(&[16]);
        bring_up(&mut t, 1);
        w(&mut t, 0x50, 0);
        assert_eq!(t.state().kick(0).unwrap().read().unwrap(), 1);
        w(&mut t, 0x50, 9); // no such queue: ignored
                            // queue registers are frozen while running
        w(&mut t, 0x38, 8);
        w(&mut t, 0x70, 0);
        assert_eq!(r(&mut t, 0x70), 0);
        assert_eq!(r(&mut t, 0x44), 0);
        assert_eq!(log.lock().unwrap().resets, 1);
        // a second bring-up works after reset
        bring_up(&mut t, 1);
        assert_eq!(log.lock().unwrap().activations.len(), 2);
        let mem = memory();
        let _ = mem.read_obj::<u16>(GuestAddress(USED)).unwrap();
    }

    #[test]
    fn odd_sized_register_accesses_are_ignored() {
        let (mut t, _, _) = transport(&[16]);
        let mut b = [0xffu8; 2];
        t.read(0, &mut b);
        assert_eq!(b, [0, 0]);
        t.write(0x70, &[1, 0]);
        assert_eq!(r(&mut t, 0x70), 0);
        t.write(0x71, &1u32.to_le_bytes());
        assert_eq!(r(&mut t, 0x70), 0);
    }
}
