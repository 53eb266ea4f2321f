use std::sync::{Arc, Mutex};

use super::*;
use crate::hw::pci::config::{BAR0, CAPABILITIES, COMMAND};
use crate::irq::testing::{RecordingChip, RecordingMsi};
use crate::irq::Trigger;
use crate::virtio::chain::testing::{memory, AVAIL, DESC, USED};
use crate::virtio::common::testing::{Log, Probe};
use vmm_sys_util::eventfd::EventFd;

#[derive(Default)]
struct RecordingIo(Mutex<Vec<(bool, u64)>>);

impl IoEvents for RecordingIo {
    fn register(&self, _e: &EventFd, a: IoAddr, _d: Option<u32>) -> Result<(), crate::kvm::Error> {
        if let IoAddr::Mmio(m) = a {
            self.0.lock().unwrap().push((true, m));
        }
        Ok(())
    }
    fn unregister(
        &self,
        _e: &EventFd,
        a: IoAddr,
        _d: Option<u32>,
    ) -> Result<(), crate::kvm::Error> {
        if let IoAddr::Mmio(m) = a {
            self.0.lock().unwrap().push((false, m));
        }
        Ok(())
    }
}

struct Rig {
    dev: VirtioPci,
    log: Arc<Mutex<Log>>,
    chip: Arc<RecordingChip>,
    msi: Arc<RecordingMsi>,
    io: Arc<RecordingIo>,
}

fn rig(with_msi: bool) -> Rig {
    let (probe, log) = Probe::new(&[16, 16]);
    let chip = Arc::new(RecordingChip::default());
    let msi = Arc::new(RecordingMsi::default());
    let io = Arc::new(RecordingIo::default());
    let state = VirtioState::new(Box::new(probe), memory()).unwrap();
    let dev = VirtioPci::new(
        state,
        IrqLine::new(chip.clone(), 40, Trigger::Level),
        40,
        with_msi.then(|| msi.clone() as Arc<dyn MsiSink>),
        0x18,
        Some(io.clone() as Arc<dyn IoEvents>),
    )
    .unwrap();
    Rig {
        dev,
        log,
        chip,
        msi,
        io,
    }
}

fn cfg_r32(d: &mut VirtioPci, off: usize) -> u32 {
    let mut b = [0u8; 4];
    d.config_read(off, &mut b);
    u32::from_le_bytes(b)
}

fn bar_w(d: &mut VirtioPci, off: u64, v: u64, len: usize) {
    d.bar_write(0, off, &v.to_le_bytes()[..len]);
}

fn bar_r(d: &mut VirtioPci, off: u64, len: usize) -> u64 {
    let mut b = [0u8; 8];
    d.bar_read(0, off, &mut b[..len]);
    u64::from_le_bytes(b)
}

/// Walks the capability list: (id, cfg_type or 0, offset).
fn caps(d: &mut VirtioPci) -> Vec<(u8, u8, usize)> {
    let mut out = Vec::new();
    let mut at = (cfg_r32(d, CAPABILITIES) & 0xff) as usize;
    while at != 0 {
        let w = cfg_r32(d, at);
        out.push((w as u8, (w >> 24) as u8, at));
        at = ((w >> 8) & 0xff) as usize;
    }
    out
}

fn bring_up(d: &mut VirtioPci) {
    bar_w(d, 0x14, 1, 1);
    bar_w(d, 0x14, 3, 1);
    bar_w(d, 0x08, 0, 4);
    bar_w(d, 0x0c, 1 << 5, 4);
    bar_w(d, 0x08, 1, 4);
    bar_w(d, 0x0c, 1, 4);
    bar_w(d, 0x14, 11, 1);
    bar_w(d, 0x16, 0, 2);
    bar_w(d, 0x18, 16, 2);
    bar_w(d, 0x20, DESC, 4);
    bar_w(d, 0x24, 0, 4);
    bar_w(d, 0x28, AVAIL, 4);
    bar_w(d, 0x2c, 0, 4);
    bar_w(d, 0x30, USED, 4);
    bar_w(d, 0x34, 0, 4);
    bar_w(d, 0x1c, 1, 2);
    bar_w(d, 0x14, 15, 1);
}

#[test]
fn identity_and_capabilities() {
    let mut r = rig(true);
    let d = &mut r.dev;
    assert_eq!(cfg_r32(d, 0), 0x1044_1af4, "virtio 1.0 id 0x1040 + type 4");
    let found = caps(d);
    let types: Vec<(u8, u8)> = found.iter().map(|c| (c.0, c.1)).collect();
    assert_eq!(
        types,
        vec![(9, 1), (9, 2), (9, 3), (9, 4), (9, 5), (0x11, 0)]
    );
    // notify capability: offset 0x3000 and multiplier 4
    let notify = found[1].2;
    assert_eq!(cfg_r32(d, notify + 8), 0x3000);
    assert_eq!(cfg_r32(d, notify + 16), 4);
    // MSI-X: 3 vectors (2 queues + config), table and PBA in BAR 0
    let msix = found[5].2;
    assert_eq!(cfg_r32(d, msix) >> 16, 2);
    assert_eq!(cfg_r32(d, msix + 4), 0x4000);
    assert_eq!(cfg_r32(d, msix + 8), 0x5000);
    assert_eq!(cfg_r32(d, 0x3c) & 0xffff, 0x0128, "INTA# on line 40");
    let mut no_msi = rig(false);
    assert!(caps(&mut no_msi.dev).iter().all(|c| c.0 != 0x11));
}

#[test]
fn the_driver_sequence_starts_the_device() {
    let mut r = rig(true);
    bring_up(&mut r.dev);
    assert_eq!(bar_r(&mut r.dev, 0x14, 1), 15);
    assert_eq!(bar_r(&mut r.dev, 0x12, 2), 2);
    assert_eq!(bar_r(&mut r.dev, 0x20, 8), DESC);
    assert_eq!(
        r.log.lock().unwrap().activations,
        vec![(vec![0], (1 << 32) | (1 << 5))]
    );
    // device config through the BAR
    assert_eq!(bar_r(&mut r.dev, 0x2000, 2), 0x2211);
    // reset
    bar_w(&mut r.dev, 0x14, 0, 1);
    assert_eq!(bar_r(&mut r.dev, 0x14, 1), 0);
    assert_eq!(r.log.lock().unwrap().resets, 1);
}

/// DEVICE_NEEDS_RESET from the device's thread shows in the status (with
/// INTA# for the configuration change) until the driver resets.
#[test]
fn a_device_needing_a_reset_says_so_until_reset() {
    let mut r = rig(false);
    bring_up(&mut r.dev);
    r.dev.irq_dyn.needs_reset();
    assert_eq!(bar_r(&mut r.dev, 0x14, 1), 15 | 64);
    assert!(r.chip.events.lock().unwrap().contains(&(40, true)));
    bar_w(&mut r.dev, 0x14, 0, 1);
    assert_eq!(bar_r(&mut r.dev, 0x14, 1), 0);
    bring_up(&mut r.dev);
    assert_eq!(bar_r(&mut r.dev, 0x14, 1), 15);
}

#[test]
fn msix_vectors_route_queue_and_config_interrupts() {
    let mut r = rig(true);
    let msix = caps(&mut r.dev)[5].2;
    bring_up(&mut r.dev);
    // program vector 1 and unmask it, enable MSI-X
    bar_w(&mut r.dev, 0x4000 + 16, 0xfee0_0000, 4);
    bar_w(&mut r.dev, 0x4000 + 24, 0x31, 4);
    bar_w(&mut r.dev, 0x4000 + 28, 0, 4);
    r.dev.config_write(msix + 2, &0x8000u16.to_le_bytes());
    bar_w(&mut r.dev, 0x1a, 1, 2); // queue 0 -> vector 1
    assert_eq!(bar_r(&mut r.dev, 0x1a, 2), 1);
    bar_w(&mut r.dev, 0x10, 7, 2); // no such vector
    assert_eq!(bar_r(&mut r.dev, 0x10, 2), u64::from(NO_VECTOR));
    r.dev.irq.queue(0);
    let sent = r.msi.take();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].addr, sent[0].data, sent[0].devid),
        (0xfee0_0000, 0x31, Some(0x18))
    );
    r.dev.irq.config(); // NO_VECTOR: nothing
    assert!(r.msi.take().is_empty());
    assert!(r.chip.take().is_empty(), "INTA# unused with MSI-X");
}

#[test]
fn intx_sets_the_isr_which_a_read_clears() {
    let mut r = rig(false);
    bring_up(&mut r.dev);
    r.dev.irq.queue(0);
    r.dev.irq.config();
    assert_eq!(r.chip.take(), vec![(40, true), (40, true)]);
    assert_eq!(bar_r(&mut r.dev, 0x1000, 1), 3);
    assert_eq!(r.chip.take(), vec![(40, false)]);
    assert_eq!(bar_r(&mut r.dev, 0x1000, 1), 0);
}

#[test]
fn notify_eventfds_follow_bar0() {
    let mut r = rig(false);
    r.dev.config_write(BAR0, &0xd000_0000u32.to_le_bytes());
    assert!(
        r.io.0.lock().unwrap().is_empty(),
        "memory decoding still off"
    );
    r.dev.config_write(COMMAND, &2u16.to_le_bytes());
    assert_eq!(
        *r.io.0.lock().unwrap(),
        vec![(true, 0xd000_3000), (true, 0xd000_3004)]
    );
    r.io.0.lock().unwrap().clear();
    r.dev.config_write(BAR0, &0xe000_0000u32.to_le_bytes());
    assert_eq!(
        *r.io.0.lock().unwrap(),
        vec![
            (false, 0xd000_3000),
            (true, 0xe000_3000),
            (false, 0xd000_3004),
            (true, 0xe000_3004)
        ]
    );
    // a notify that still reaches userspace kicks the queue
    bar_w(&mut r.dev, 0x3004, 1, 2);
    assert_eq!(r.dev.state().kick(1).unwrap().read().unwrap(), 1);
}

#[test]
fn the_pci_cfg_capability_reaches_the_bar() {
    let mut r = rig(false);
    let cap = caps(&mut r.dev)[4].2;
    r.dev.config_write(cap + 4, &[0]); // BAR 0
    r.dev.config_write(cap + 8, &0x2000u32.to_le_bytes());
    r.dev.config_write(cap + 12, &4u32.to_le_bytes());
    assert_eq!(cfg_r32(&mut r.dev, cap + 16), 0x4433_2211);
}
