//! The modern virtio-pci transport (virtio 1.2, 4.1): one 32-bit memory
//! BAR holding the common configuration, ISR, device configuration,
//! notification and MSI-X regions, described to the driver by vendor
//! capabilities; INTx with an ISR, or MSI-X where the platform can deliver
//! MSIs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use virtio_queue::QueueT;

use super::common::VirtioState;
use super::device::{Interrupt, IoEvents};
use super::msix::{Msix, NO_VECTOR};
use crate::bus::lock;
use crate::hw::pci::config::{self, ConfigSpace};
use crate::hw::pci::PciDevice;
use crate::irq::{IrqLine, MsiSink};
use crate::kvm::IoAddr;

const VENDOR: u16 = 0x1af4;
const DEVICE_BASE: u16 = 0x1040;

pub const BAR_SIZE: u64 = 0x8000;
const COMMON: u64 = 0x0000;
const COMMON_LEN: u32 = 0x40;
const ISR: u64 = 0x1000;
const DEVICE_CFG: u64 = 0x2000;
const DEVICE_CFG_LEN: u32 = 0x1000;
const NOTIFY: u64 = 0x3000;
const NOTIFY_MULTIPLIER: u32 = 4;
const MSIX_TABLE: u64 = 0x4000;
const MSIX_PBA: u64 = 0x5000;
const REGION: u64 = 0x1000;

const CAP_VENDOR: u8 = 0x09;
const CAP_MSIX: u8 = 0x11;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;
const CFG_PCI: u8 = 5;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Config(&'static str, #[source] config::Error),
}

/// A device's PCI class code (base, sub, interface).
fn class_of(device_type: u32) -> u32 {
    match device_type {
        super::ids::NET => 0x02_00_00,
        super::ids::BLOCK => 0x01_80_00,
        super::ids::CONSOLE => 0x07_80_00,
        _ => 0xff_00_00,
    }
}

struct IrqState {
    isr: u8,
    msix: Option<Msix>,
    config_vector: u16,
    queue_vectors: Vec<u16>,
}

/// The function's interrupt: an MSI-X vector when the driver enabled
/// MSI-X, else the ISR and INTA#.
pub struct PciInterrupt {
    state: Mutex<IrqState>,
    intx: IrqLine,
    msi: Option<Arc<dyn MsiSink>>,
    name: &'static str,
    /// DEVICE_NEEDS_RESET, set by the device's thread.
    broken: AtomicBool,
}

impl PciInterrupt {
    fn signal(&self, isr_bit: u8, vector: impl Fn(&IrqState) -> u16) {
        let mut s = lock(&self.state);
        let v = vector(&s);
        if let (Some(msix), Some(sink)) = (s.msix.as_mut(), &self.msi) {
            if msix.enabled() {
                if v != NO_VECTOR && !msix.fire(v, sink.as_ref()) {
                    log::debug!("{}: vector {v} does not exist", self.name);
                }
                return;
            }
        }
        s.isr |= isr_bit;
        if let Err(e) = self.intx.raise() {
            log::warn!("{}: {e}", self.name);
        }
    }

    /// Reading the ISR returns and clears it, and deasserts INTA#.
    fn read_isr(&self) -> u8 {
        let mut s = lock(&self.state);
        let v = std::mem::take(&mut s.isr);
        if let Err(e) = self.intx.lower() {
            log::warn!("{}: {e}", self.name);
        }
        v
    }
}

impl Interrupt for PciInterrupt {
    fn queue(&self, index: u16) {
        self.signal(1, |s| {
            s.queue_vectors
                .get(usize::from(index))
                .copied()
                .unwrap_or(NO_VECTOR)
        });
    }

    fn config(&self) {
        self.signal(2, |s| s.config_vector);
    }

    fn needs_reset(&self) {
        self.broken.store(true, Ordering::SeqCst);
        self.config();
    }
}

/// A virtio device as a PCI function.
pub struct VirtioPci {
    cfg: ConfigSpace,
    state: VirtioState,
    irq: Arc<PciInterrupt>,
    irq_dyn: Arc<dyn Interrupt>,
    msix_cap: Option<usize>,
    pci_cfg_cap: usize,
    ioevents: Option<Arc<dyn IoEvents>>,
    /// Where the notify region's ioeventfds are registered now.
    notify_at: Option<u64>,
}

impl VirtioPci {
    /// `devid` is the function's requester id (bus/device/function), which
    /// a GICv3 ITS needs with every MSI. Without `msi` the function offers
    /// no MSI-X and the driver uses INTA#.
    pub fn new(
        state: VirtioState,
        intx: IrqLine,
        intx_line_register: u8,
        msi: Option<Arc<dyn MsiSink>>,
        devid: u32,
        ioevents: Option<Arc<dyn IoEvents>>,
    ) -> Result<Self, Error> {
        let name = state.name();
        let err = |e| Error::Config(name, e);
        let ty = state.device_type();
        let queues = state.num_queues();
        let mut cfg = ConfigSpace::new(VENDOR, DEVICE_BASE + ty as u16, class_of(ty), 1);
        cfg.set_subsystem(VENDOR, 0x40);
        cfg.set_intx(intx_line_register);
        cfg.add_mem_bar(0, BAR_SIZE, false).map_err(err)?;
        let vendor_cap = |cfg_type: u8, offset: u64, length: u32, extra: &[u8]| {
            let mut b = vec![16 + extra.len() as u8, cfg_type, 0, 0, 0, 0];
            b.extend_from_slice(&(offset as u32).to_le_bytes());
            b.extend_from_slice(&length.to_le_bytes());
            b.extend_from_slice(extra);
            b
        };
        cfg.add_capability(CAP_VENDOR, &vendor_cap(CFG_COMMON, COMMON, COMMON_LEN, &[]))
            .map_err(err)?;
        cfg.add_capability(
            CAP_VENDOR,
            &vendor_cap(
                CFG_NOTIFY,
                NOTIFY,
                NOTIFY_MULTIPLIER * u32::from(queues.max(1)),
                &NOTIFY_MULTIPLIER.to_le_bytes(),
            ),
        )
        .map_err(err)?;
        cfg.add_capability(CAP_VENDOR, &vendor_cap(CFG_ISR, ISR, 1, &[]))
            .map_err(err)?;
        cfg.add_capability(
            CAP_VENDOR,
            &vendor_cap(CFG_DEVICE, DEVICE_CFG, DEVICE_CFG_LEN, &[]),
        )
        .map_err(err)?;
        // The PCI configuration access capability: bar, offset and length
        // are the driver's, then 4 bytes of data window.
        let pci_cfg_cap = cfg
            .add_capability(CAP_VENDOR, &vendor_cap(CFG_PCI, 0, 0, &[0; 4]))
            .map_err(err)?;
        cfg.set_writable(pci_cfg_cap + 4, &[0xff]);
        cfg.set_writable(pci_cfg_cap + 8, &[0xff; 12]);
        let vectors = queues + 1;
        let (msix, msix_cap) = match &msi {
            Some(sink) => {
                let m = Msix::new(vectors, devid, sink.router().as_ref());
                let mut body = m.control().to_le_bytes().to_vec();
                body.extend_from_slice(&(MSIX_TABLE as u32).to_le_bytes());
                body.extend_from_slice(&(MSIX_PBA as u32).to_le_bytes());
                let at = cfg.add_capability(CAP_MSIX, &body).map_err(err)?;
                cfg.set_writable(at + 3, &[0xc0]);
                (Some(m), Some(at))
            }
            None => (None, None),
        };
        let irq = Arc::new(PciInterrupt {
            state: Mutex::new(IrqState {
                isr: 0,
                msix,
                config_vector: NO_VECTOR,
                queue_vectors: vec![NO_VECTOR; usize::from(queues)],
            }),
            intx,
            msi,
            name,
            broken: AtomicBool::new(false),
        });
        Ok(VirtioPci {
            cfg,
            state,
            irq_dyn: irq.clone(),
            irq,
            msix_cap,
            pci_cfg_cap,
            ioevents,
            notify_at: None,
        })
    }

    pub fn state(&self) -> &VirtioState {
        &self.state
    }

    /// Moves the queues' ioeventfds to wherever BAR 0 decodes now.
    fn follow_bar(&mut self) {
        let now = self.cfg.bar_address(0);
        if now == self.notify_at {
            return;
        }
        let Some(io) = self.ioevents.clone() else {
            self.notify_at = now;
            return;
        };
        for q in 0..self.state.num_queues() {
            let Some(kick) = self.state.kick(q) else {
                continue;
            };
            let off = NOTIFY + u64::from(NOTIFY_MULTIPLIER) * u64::from(q);
            if let Some(old) = self.notify_at {
                if let Err(e) = io.unregister(kick, IoAddr::Mmio(old + off), None) {
                    log::warn!("{}: {e}", self.state.name());
                }
            }
            if let Some(new) = now {
                if let Err(e) = io.register(kick, IoAddr::Mmio(new + off), None) {
                    // The notify write still reaches bar_write, just slower.
                    log::warn!("{}: {e}", self.state.name());
                }
            }
        }
        self.notify_at = now;
    }

    fn common_read(&self, offset: u64, data: &mut [u8]) {
        let s = &self.state;
        let irq = lock(&self.irq.state);
        let q = s.queue();
        let sel = usize::from(s.queue_sel());
        let v: u64 = match offset {
            0x00 => u64::from(s.device_features_sel()),
            0x04 => u64::from(s.device_features_word()),
            0x08 => u64::from(s.driver_features_sel()),
            0x0c => u64::from(s.driver_features_word()),
            0x10 => u64::from(irq.config_vector),
            0x12 => u64::from(s.num_queues()),
            0x14 => u64::from(s.status() | super::mmio::needs_reset_bit(&self.irq.broken)),
            0x15 => u64::from(s.config_generation() as u8),
            0x16 => u64::from(s.queue_sel()),
            0x18 => q.map_or(0, |q| u64::from(q.size())),
            0x1a => u64::from(irq.queue_vectors.get(sel).copied().unwrap_or(NO_VECTOR)),
            0x1c => q.map_or(0, |q| u64::from(q.ready())),
            0x1e => u64::from(s.queue_sel()),
            0x20 | 0x24 => q.map_or(0, |q| q.desc_table()) >> ((offset & 4) * 8),
            0x28 | 0x2c => q.map_or(0, |q| q.avail_ring()) >> ((offset & 4) * 8),
            0x30 | 0x34 => q.map_or(0, |q| q.used_ring()) >> ((offset & 4) * 8),
            _ => {
                log::debug!("{}: common config read at {offset:#x} ignored", s.name());
                0
            }
        };
        let b = v.to_le_bytes();
        let n = data.len().min(8);
        data[..n].copy_from_slice(&b[..n]);
    }

    fn common_write(&mut self, offset: u64, data: &[u8]) {
        let mut raw = [0u8; 8];
        let n = data.len().min(8);
        raw[..n].copy_from_slice(&data[..n]);
        let v = u64::from_le_bytes(raw);
        let name = self.state.name();
        let vectors = lock(&self.irq.state).msix.as_ref().map_or(0, Msix::vectors);
        let valid_vector = |v: u16| if v < vectors { v } else { NO_VECTOR };
        match offset {
            0x00 => self.state.set_device_features_sel(v as u32),
            0x08 => self.state.set_driver_features_sel(v as u32),
            0x0c => self.state.set_driver_features_word(v as u32),
            0x10 => lock(&self.irq.state).config_vector = valid_vector(v as u16),
            0x14 => {
                if self.state.set_status(v as u8, &self.irq_dyn) {
                    self.irq.broken.store(false, Ordering::SeqCst);
                    let mut irq = lock(&self.irq.state);
                    irq.isr = 0;
                    irq.config_vector = NO_VECTOR;
                    irq.queue_vectors.fill(NO_VECTOR);
                    drop(irq);
                    if let Err(e) = self.irq.intx.lower() {
                        log::warn!("{name}: {e}");
                    }
                }
            }
            0x16 => self.state.set_queue_sel(v as u16),
            0x18 => {
                if let Some(q) = self.state.queue_mut() {
                    q.set_size(v as u16);
                }
            }
            0x1a => {
                let sel = usize::from(self.state.queue_sel());
                if let Some(slot) = lock(&self.irq.state).queue_vectors.get_mut(sel) {
                    *slot = valid_vector(v as u16);
                }
            }
            0x1c => {
                if let Some(q) = self.state.queue_mut() {
                    q.set_ready(v == 1);
                }
            }
            0x20..=0x37 => {
                let Some(q) = self.state.queue_mut() else {
                    return;
                };
                let (lo, hi) = match (offset & 4, data.len()) {
                    (0, 8) => (Some(v as u32), Some((v >> 32) as u32)),
                    (0, _) => (Some(v as u32), None),
                    _ => (None, Some(v as u32)),
                };
                match offset & !7 {
                    0x20 => q.set_desc_table_address(lo, hi),
                    0x28 => q.set_avail_ring_address(lo, hi),
                    _ => q.set_used_ring_address(lo, hi),
                }
            }
            _ => log::debug!("{name}: common config write at {offset:#x} ignored"),
        }
    }
}

impl PciDevice for VirtioPci {
    fn name(&self) -> &str {
        self.state.name()
    }

    fn config(&self) -> &ConfigSpace {
        &self.cfg
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.cfg
    }

    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        let window = self.pci_cfg_cap + 16;
        if offset >= window && offset < window + 4 {
            let bar = self.cfg.bytes_mut()[self.pci_cfg_cap + 4];
            let at = u64::from(self.cfg.read32(self.pci_cfg_cap + 8));
            let len = (self.cfg.read32(self.pci_cfg_cap + 12) as usize).min(4);
            data.fill(0);
            if bar == 0 && offset == window && data.len() >= len {
                self.bar_read(0, at, &mut data[..len]);
            }
            return;
        }
        self.cfg.read(offset, data);
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) {
        let window = self.pci_cfg_cap + 16;
        if offset >= window && offset < window + 4 {
            let bar = self.cfg.bytes_mut()[self.pci_cfg_cap + 4];
            let at = u64::from(self.cfg.read32(self.pci_cfg_cap + 8));
            let len = (self.cfg.read32(self.pci_cfg_cap + 12) as usize).min(4);
            if bar == 0 && offset == window && data.len() >= len {
                self.bar_write(0, at, &data[..len]);
            }
            return;
        }
        self.cfg.write(offset, data);
        if let Some(cap) = self.msix_cap {
            if offset < cap + 4 && offset + data.len() > cap + 2 {
                let control = self.cfg.read16(cap + 2);
                let mut irq = lock(&self.irq.state);
                if let (Some(m), Some(sink)) = (irq.msix.as_mut(), &self.irq.msi) {
                    m.set_control(control, sink.as_ref());
                }
            }
        }
        self.follow_bar();
    }

    fn bar_read(&mut self, _bar: usize, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let (region, off) = (offset & !(REGION - 1), offset & (REGION - 1));
        match region {
            COMMON => self.common_read(off, data),
            ISR if off == 0 && !data.is_empty() => data[0] = self.irq.read_isr(),
            DEVICE_CFG => self.state.read_config(off, data),
            MSIX_TABLE => {
                if let Some(m) = &lock(&self.irq.state).msix {
                    m.table_read(off, data);
                }
            }
            MSIX_PBA => {
                if let Some(m) = &lock(&self.irq.state).msix {
                    m.pba_read(off, data);
                }
            }
            _ => log::debug!("{}: BAR read at {offset:#x} ignored", self.state.name()),
        }
    }

    fn bar_write(&mut self, _bar: usize, offset: u64, data: &[u8]) {
        let (region, off) = (offset & !(REGION - 1), offset & (REGION - 1));
        match region {
            COMMON => self.common_write(off, data),
            DEVICE_CFG => self.state.write_config(off, data),
            NOTIFY => {
                let q = (off / u64::from(NOTIFY_MULTIPLIER)) as u16;
                match self.state.kick(q) {
                    Some(k) => {
                        if let Err(e) = k.write(1) {
                            log::warn!("{}: kick: {e}", self.state.name());
                        }
                    }
                    None => log::debug!("{}: notify of missing queue {q}", self.state.name()),
                }
            }
            MSIX_TABLE => {
                let mut irq = lock(&self.irq.state);
                if let (Some(m), Some(sink)) = (irq.msix.as_mut(), &self.irq.msi) {
                    m.table_write(off, data, sink.as_ref());
                }
            }
            _ => log::debug!("{}: BAR write at {offset:#x} ignored", self.state.name()),
        }
    }
}

#[cfg(test)]
#[path = "pci_tests.rs"]
mod tests;
