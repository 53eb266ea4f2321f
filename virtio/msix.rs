//! MSI-X for virtio-pci: the vector table and pending-bit array a function
//! exposes in a BAR, the enable and function-mask bits of its capability,
//! and delivery of a vector as an MSI (held as pending while masked).

use std::sync::Arc;

use crate::irq::MsiSink;
use crate::kvm::MsiMessage;
use crate::msi::{MsiIrqfd, MsiRouter};

/// "No vector" in virtio's vector registers.
pub const NO_VECTOR: u16 = 0xffff;
/// Bytes per table entry: address low, address high, data, control.
pub const ENTRY_SIZE: u64 = 16;
const CTRL_MASKED: u32 = 1;
/// Message-control bits of the capability.
pub const CONTROL_ENABLE: u16 = 1 << 15;
pub const CONTROL_FUNCTION_MASK: u16 = 1 << 14;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Entry {
    addr_lo: u32,
    addr_hi: u32,
    data: u32,
    ctrl: u32,
}

pub struct Msix {
    entries: Vec<Entry>,
    pending: Vec<bool>,
    enabled: bool,
    function_masked: bool,
    /// The requester id interrupt controllers that need one (ITS) get.
    devid: u32,
    /// Each vector's irqfd, where the platform routes MSIs through them;
    /// a vector without one is sent with `MsiSink::send`.
    irqfds: Vec<Option<MsiIrqfd>>,
}

impl std::fmt::Debug for Msix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Msix")
            .field("vectors", &self.entries.len())
            .field("enabled", &self.enabled)
            .finish()
    }
}

impl Msix {
    /// A table of `vectors` entries, each masked, as after reset. With a
    /// router, every vector gets an irqfd.
    pub fn new(vectors: u16, devid: u32, router: Option<&Arc<MsiRouter>>) -> Self {
        let irqfds = (0..vectors)
            .map(|v| {
                router.and_then(|r| match r.vector() {
                    Ok(fd) => Some(fd),
                    Err(e) => {
                        log::warn!("msi-x vector {v}: no irqfd ({e}); sending it instead");
                        None
                    }
                })
            })
            .collect();
        Msix {
            irqfds,
            entries: vec![
                Entry {
                    ctrl: CTRL_MASKED,
                    ..Default::default()
                };
                usize::from(vectors)
            ],
            pending: vec![false; usize::from(vectors)],
            enabled: false,
            function_masked: false,
            devid,
        }
    }

    pub fn vectors(&self) -> u16 {
        self.entries.len() as u16
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The capability's Message Control value (table size is N-1).
    pub fn control(&self) -> u16 {
        let mut c = self.vectors().saturating_sub(1) & 0x7ff;
        if self.enabled {
            c |= CONTROL_ENABLE;
        }
        if self.function_masked {
            c |= CONTROL_FUNCTION_MASK;
        }
        c
    }

    /// The guest wrote Message Control.
    pub fn set_control(&mut self, control: u16, sink: &dyn MsiSink) {
        self.enabled = control & CONTROL_ENABLE != 0;
        self.function_masked = control & CONTROL_FUNCTION_MASK != 0;
        self.flush_pending(sink);
    }

    fn masked(&self, v: usize) -> bool {
        self.function_masked
            || self
                .entries
                .get(v)
                .is_none_or(|e| e.ctrl & CTRL_MASKED != 0)
    }

    /// Sends vector `v`, or marks it pending while it is masked. False
    /// when `v` does not exist.
    pub fn fire(&mut self, v: u16, sink: &dyn MsiSink) -> bool {
        let v = usize::from(v);
        if v >= self.entries.len() {
            return false;
        }
        if self.masked(v) {
            self.pending[v] = true;
        } else {
            self.deliver(v, sink);
        }
        true
    }

    fn deliver(&mut self, v: usize, sink: &dyn MsiSink) {
        let Some(e) = self.entries.get(v) else { return };
        let msg = MsiMessage {
            addr: u64::from(e.addr_lo) | (u64::from(e.addr_hi) << 32),
            data: e.data,
            devid: Some(self.devid),
        };
        // Through the vector's irqfd, routed to this message on first use
        // after the guest (re)programmed it.
        if let Some(fd) = self.irqfds.get_mut(v).and_then(Option::as_mut) {
            match fd.route(msg) {
                Ok(()) if fd.trigger() => return,
                Ok(()) => log::debug!("msi-x vector {v}: irqfd write failed; sending it"),
                Err(e) => {
                    log::warn!("msi-x vector {v}: {e}; sending it instead");
                    self.irqfds[v] = None;
                }
            }
        }
        if let Err(e) = sink.send(msg) {
            log::warn!("msi-x vector {v}: {e}");
        }
    }

    fn flush_pending(&mut self, sink: &dyn MsiSink) {
        if !self.enabled {
            return;
        }
        for v in 0..self.entries.len() {
            if self.pending[v] && !self.masked(v) {
                self.pending[v] = false;
                self.deliver(v, sink);
            }
        }
    }

    /// A read of the table (4-byte accesses, or 8 for the address).
    pub fn table_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let (idx, field) = ((offset / ENTRY_SIZE) as usize, offset % ENTRY_SIZE);
        let Some(e) = self.entries.get(idx) else {
            return;
        };
        let words = [e.addr_lo, e.addr_hi, e.data, e.ctrl];
        match (data.len(), field) {
            (4, f) if f % 4 == 0 => data.copy_from_slice(&words[(f / 4) as usize].to_le_bytes()),
            (8, 0) | (8, 8) => {
                let f = (field / 4) as usize;
                data[..4].copy_from_slice(&words[f].to_le_bytes());
                data[4..].copy_from_slice(&words[f + 1].to_le_bytes());
            }
            _ => log::debug!(
                "msi-x: {}-byte table read at {offset:#x} ignored",
                data.len()
            ),
        }
    }

    pub fn table_write(&mut self, offset: u64, data: &[u8], sink: &dyn MsiSink) {
        let (idx, field) = ((offset / ENTRY_SIZE) as usize, offset % ENTRY_SIZE);
        if idx >= self.entries.len() {
            return;
        }
        let mut put = |f: u64, v: u32| {
            let e = &mut self.entries[idx];
            match f {
                0 => e.addr_lo = v,
                4 => e.addr_hi = v,
                8 => e.data = v,
                _ => e.ctrl = v & CTRL_MASKED,
            }
        };
        match (data.len(), field) {
            (4, f) if f % 4 == 0 => put(f, le32(data, 0)),
            (8, 0) | (8, 8) => {
                put(field, le32(data, 0));
                put(field + 4, le32(data, 4));
            }
            _ => {
                log::debug!(
                    "msi-x: {}-byte table write at {offset:#x} ignored",
                    data.len()
                );
                return;
            }
        }
        self.flush_pending(sink);
    }

    /// A read of the pending-bit array.
    pub fn pba_read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let first = (offset as usize + i) * 8;
            *b = (0..8)
                .filter(|bit| self.pending.get(first + bit).copied().unwrap_or(false))
                .fold(0u8, |acc, bit| acc | (1 << bit));
        }
    }
}

fn le32(d: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&d[at..at + 4]);
    u32::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::testing::RecordingMsi;

    fn program(m: &mut Msix, v: u64, addr: u64, data: u32, sink: &RecordingMsi) {
        m.table_write(v * 16, &addr.to_le_bytes(), sink);
        m.table_write(v * 16 + 8, &data.to_le_bytes(), sink);
    }

    #[test]
    fn vectors_deliver_when_enabled_and_unmasked() {
        let sink = RecordingMsi::default();
        let mut m = Msix::new(3, 0x18, None);
        assert_eq!(m.control(), 2);
        program(&mut m, 1, 0xfee0_0000, 0x41, &sink);
        assert!(m.fire(1, &sink));
        assert!(sink.take().is_empty(), "masked and disabled");
        m.set_control(CONTROL_ENABLE, &sink);
        assert!(sink.take().is_empty(), "still masked");
        let mut pba = [0u8; 1];
        m.pba_read(0, &mut pba);
        assert_eq!(pba, [0b010]);
        m.table_write(16 + 12, &0u32.to_le_bytes(), &sink); // unmask
        let sent = sink.take();
        assert_eq!(sent.len(), 1, "pending vector delivered on unmask");
        assert_eq!(sent[0].addr, 0xfee0_0000);
        assert_eq!(sent[0].data, 0x41);
        assert_eq!(sent[0].devid, Some(0x18));
        m.fire(1, &sink);
        assert_eq!(sink.take().len(), 1);
        m.set_control(CONTROL_ENABLE | CONTROL_FUNCTION_MASK, &sink);
        m.fire(1, &sink);
        assert!(sink.take().is_empty(), "function mask holds it");
        m.set_control(CONTROL_ENABLE, &sink);
        assert_eq!(sink.take().len(), 1);
        assert!(!m.fire(3, &sink), "no such vector");
    }

    #[test]
    fn table_reads_back_and_odd_accesses_are_ignored() {
        let sink = RecordingMsi::default();
        let mut m = Msix::new(2, 0, None);
        program(&mut m, 0, 0x1234_5678_9abc_def0, 7, &sink);
        let mut d = [0u8; 4];
        m.table_read(4, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x1234_5678);
        m.table_read(12, &mut d);
        assert_eq!(u32::from_le_bytes(d), 1, "masked after reset");
        m.table_write(2, &[1, 2], &sink);
        m.table_read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x9abc_def0);
        m.table_write(5 * 16, &[0; 4], &sink); // past the table
        m.table_read(5 * 16, &mut d);
        assert_eq!(d, [0; 4]);
    }

    #[test]
    fn vectors_with_irqfds_are_routed_then_triggered() {
        use crate::kvm::GsiRoute;
        use crate::msi::testing::FakeTable;
        let table = Arc::new(FakeTable::default());
        let router = MsiRouter::new(table.clone(), Vec::new(), false);
        let sink = RecordingMsi::default();
        let mut m = Msix::new(2, 0x10, Some(&router));
        program(&mut m, 1, 0xfee0_1000, 0x55, &sink);
        m.table_write(16 + 12, &0u32.to_le_bytes(), &sink);
        m.set_control(CONTROL_ENABLE, &sink);
        m.fire(1, &sink);
        m.fire(1, &sink);
        assert!(
            sink.take().is_empty(),
            "delivered by irqfd, not KVM_SIGNAL_MSI"
        );
        let tables = table.tables.lock().unwrap();
        assert_eq!(tables.len(), 1, "routed once");
        assert_eq!(
            tables[0],
            vec![(
                257,
                GsiRoute::Msi(MsiMessage {
                    addr: 0xfee0_1000,
                    data: 0x55,
                    devid: None
                })
            )]
        );
    }
}
