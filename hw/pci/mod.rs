//! PCI: one root bus (bus 0) of functions with type-0 configuration
//! spaces, reached through the platform's configuration mechanism (x86 ports
//! 0xcf8/0xcfc in [`cf8`], memory-mapped ECAM in [`ecam`], PowerPC RTAS
//! calls), and a memory window in which the functions' BARs decode wherever
//! the guest (or lkvm, acting as firmware) placed them.

pub mod cf8;
pub mod config;
pub mod ecam;

use std::sync::{Arc, Mutex, RwLock};

pub use cf8::{PciConfigIo, PCI_CONFIG_LEN, PCI_CONFIG_PORT};
pub use config::ConfigSpace;

use crate::bus::{lock, BusDevice};

/// Slots on the root bus.
pub const SLOTS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no free PCI slot for {0} (bus 0 holds {SLOTS})")]
    Full(String),
    #[error("PCI memory window {base:#x}+{size:#x} has no room for {name} BAR {bar} ({bar_size:#x} bytes)")]
    NoSpace {
        name: String,
        bar: usize,
        bar_size: u64,
        base: u64,
        size: u64,
    },
}

/// A PCI function as the root bus sees it.
pub trait PciDevice: Send {
    fn name(&self) -> &str;
    fn config(&self) -> &ConfigSpace;
    fn config_mut(&mut self) -> &mut ConfigSpace;
    /// A guest read of configuration space; by default straight from it.
    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        self.config().read(offset, data);
    }
    /// A guest write of configuration space; devices with side effects
    /// (MSI-X enable, BAR moves) override it and call the default part.
    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.config_mut().write(offset, data);
    }
    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]);
    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]);
}

pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

/// lkvm's host bridge: Red Hat's vendor id for virtual hardware with the
/// generic "PCIe host bridge" device id, class 06/00/00.
pub struct HostBridge(ConfigSpace);

impl Default for HostBridge {
    fn default() -> Self {
        HostBridge(ConfigSpace::new(0x1b36, 0x0008, 0x06_00_00, 0))
    }
}

impl PciDevice for HostBridge {
    fn name(&self) -> &str {
        "host-bridge"
    }
    fn config(&self) -> &ConfigSpace {
        &self.0
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.0
    }
    fn bar_read(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn bar_write(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    base: u64,
    size: u64,
    slot: usize,
    bar: usize,
}

/// The root bus: its functions and where their BARs decode.
pub struct PciRoot {
    slots: Vec<Option<SharedPciDevice>>,
    windows: RwLock<Vec<Window>>,
}

impl Default for PciRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl PciRoot {
    /// A bus with the host bridge at 00:00.0.
    pub fn new() -> Self {
        let mut slots: Vec<Option<SharedPciDevice>> = (0..SLOTS).map(|_| None).collect();
        slots[0] = Some(Arc::new(Mutex::new(HostBridge::default())));
        PciRoot {
            slots,
            windows: RwLock::new(Vec::new()),
        }
    }

    /// The next free slot number (a device's INTx routing depends on it,
    /// so callers learn it before building the device).
    pub fn next_slot(&self) -> Option<usize> {
        self.slots.iter().position(Option::is_none)
    }

    /// Plugs `dev` into the next free slot and returns the slot.
    pub fn add(&mut self, dev: SharedPciDevice) -> Result<usize, Error> {
        let slot = self
            .next_slot()
            .ok_or_else(|| Error::Full(lock(&dev).name().to_string()))?;
        self.slots[slot] = Some(dev);
        self.refresh(slot);
        Ok(slot)
    }

    /// Acts as firmware: places every BAR in `base..base+size`, naturally
    /// aligned, and turns memory decoding on.
    pub fn assign_bars(&self, base: u64, size: u64) -> Result<(), Error> {
        let mut next = base;
        for (slot, dev) in self.slots.iter().enumerate() {
            let Some(dev) = dev else { continue };
            {
                let mut d = lock(dev);
                let bars = d.config().bars().to_vec();
                for bar in bars {
                    let at = next.next_multiple_of(bar.size);
                    if at + bar.size > base + size {
                        return Err(Error::NoSpace {
                            name: d.name().to_string(),
                            bar: bar.index,
                            bar_size: bar.size,
                            base,
                            size,
                        });
                    }
                    d.config_mut().set_bar_address(bar.index, at);
                    next = at + bar.size;
                }
                let cmd = d.config().read16(config::COMMAND) | config::COMMAND_MEMORY;
                d.config_write(config::COMMAND, &cmd.to_le_bytes());
            }
            self.refresh(slot);
        }
        Ok(())
    }

    fn device(&self, bus: u8, dev: u8, func: u8) -> Option<(usize, &SharedPciDevice)> {
        if bus != 0 || func != 0 {
            return None;
        }
        let slot = usize::from(dev);
        self.slots.get(slot)?.as_ref().map(|d| (slot, d))
    }

    /// A configuration read; absent functions read as all ones.
    pub fn config_read(&self, bus: u8, dev: u8, func: u8, offset: usize, data: &mut [u8]) {
        match self.device(bus, dev, func) {
            Some((_, d)) => lock(d).config_read(offset, data),
            None => data.fill(0xff),
        }
    }

    pub fn config_write(&self, bus: u8, dev: u8, func: u8, offset: usize, data: &[u8]) {
        if let Some((slot, d)) = self.device(bus, dev, func) {
            lock(d).config_write(offset, data);
            self.refresh(slot);
        }
    }

    /// Re-reads where `slot`'s BARs decode.
    fn refresh(&self, slot: usize) {
        let Some(Some(dev)) = self.slots.get(slot) else {
            return;
        };
        let mapped: Vec<Window> = {
            let d = lock(dev);
            let c = d.config();
            c.bars()
                .iter()
                .filter_map(|b| {
                    c.bar_address(b.index).map(|base| Window {
                        base,
                        size: b.size,
                        slot,
                        bar: b.index,
                    })
                })
                .collect()
        };
        let mut w = self.windows.write().unwrap_or_else(|p| p.into_inner());
        w.retain(|x| x.slot != slot);
        w.extend(mapped);
    }

    fn find(&self, addr: u64) -> Option<(SharedPciDevice, usize, u64)> {
        let w = self.windows.read().unwrap_or_else(|p| p.into_inner());
        let hit = w
            .iter()
            .find(|x| addr >= x.base && addr - x.base < x.size)?;
        let dev = self.slots.get(hit.slot)?.as_ref()?.clone();
        Some((dev, hit.bar, addr - hit.base))
    }

    /// A guest access inside the PCI memory window.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        match self.find(addr) {
            Some((dev, bar, off)) => lock(&dev).bar_read(bar, off, data),
            None => {
                log::debug!("pci: read of {addr:#x}: no BAR decodes there");
                data.fill(0xff);
            }
        }
    }

    pub fn mmio_write(&self, addr: u64, data: &[u8]) {
        match self.find(addr) {
            Some((dev, bar, off)) => lock(&dev).bar_write(bar, off, data),
            None => log::debug!("pci: write to {addr:#x}: no BAR decodes there"),
        }
    }
}

/// A function as firmware describes it (PowerPC lists every function in
/// the device tree).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionInfo {
    pub slot: u8,
    pub vendor: u16,
    pub device: u16,
    pub revision: u8,
    /// Base class, subclass, programming interface.
    pub class: u32,
    pub subsystem_vendor: u16,
    pub subsystem: u16,
    /// 0 for none, 1 for INTA#.
    pub pin: u8,
    /// (BAR index, PCI address, size) of the memory BARs.
    pub bars: Vec<(usize, u64, u64)>,
}

impl PciRoot {
    /// Every function but the host bridge, as currently programmed.
    pub fn describe(&self) -> Vec<FunctionInfo> {
        let mut out = Vec::new();
        for (slot, dev) in self.slots.iter().enumerate().skip(1) {
            let Some(dev) = dev else { continue };
            let d = lock(dev);
            let c = d.config();
            out.push(FunctionInfo {
                slot: slot as u8,
                vendor: c.read16(config::VENDOR_ID),
                device: c.read16(config::VENDOR_ID + 2),
                revision: c.read32(0x08) as u8,
                class: c.read32(0x08) >> 8,
                subsystem_vendor: c.read16(config::SUBSYSTEM_VENDOR_ID),
                subsystem: c.read16(config::SUBSYSTEM_VENDOR_ID + 2),
                pin: (c.read16(config::INTERRUPT_LINE) >> 8) as u8,
                bars: c
                    .bars()
                    .iter()
                    .map(|b| (b.index, c.bar_address(b.index).unwrap_or(0), b.size))
                    .collect(),
            });
        }
        out
    }
}

/// The PCI memory window on the MMIO bus.
pub struct PciMmioWindow {
    pub root: Arc<PciRoot>,
    /// The PCI address of the window's first byte.
    pub base: u64,
}

impl BusDevice for PciMmioWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.root.mmio_read(self.base + offset, data);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.root.mmio_write(self.base + offset, data);
    }
}

// Test code (also built for the fuzz targets, which clippy does not take
// for tests): unwrap is fine here.
#[cfg(any(test, fuzzing))]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub mod testing {
    use super::*;

    /// A function with one 32-bit memory BAR that records accesses.
    pub struct Scratch {
        pub cfg: ConfigSpace,
        pub mem: Vec<u8>,
    }

    impl Scratch {
        pub fn new(bar_size: u64) -> Self {
            let mut cfg = ConfigSpace::new(0x1234, 0x5678, 0xff_00_00, 0);
            cfg.add_mem_bar(0, bar_size, false).unwrap();
            Scratch {
                cfg,
                mem: vec![0; bar_size as usize],
            }
        }
    }

    impl PciDevice for Scratch {
        fn name(&self) -> &str {
            "scratch"
        }
        fn config(&self) -> &ConfigSpace {
            &self.cfg
        }
        fn config_mut(&mut self) -> &mut ConfigSpace {
            &mut self.cfg
        }
        // An access may start inside the BAR and run past its end (the
        // bus only checks where it starts): the part outside reads as ones
        // and is not written.
        fn bar_read(&mut self, _bar: usize, offset: u64, data: &mut [u8]) {
            let o = offset as usize;
            for (i, b) in data.iter_mut().enumerate() {
                *b = self.mem.get(o + i).copied().unwrap_or(0xff);
            }
        }
        fn bar_write(&mut self, _bar: usize, offset: u64, data: &[u8]) {
            let o = offset as usize;
            for (i, b) in data.iter().enumerate() {
                if let Some(m) = self.mem.get_mut(o + i) {
                    *m = *b;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Scratch;
    use super::*;

    #[test]
    fn bars_decode_where_assigned_and_follow_the_guest() {
        let mut root = PciRoot::new();
        let a = root
            .add(Arc::new(Mutex::new(Scratch::new(0x1000))))
            .unwrap();
        let b = root
            .add(Arc::new(Mutex::new(Scratch::new(0x4000))))
            .unwrap();
        assert_eq!((a, b), (1, 2));
        root.assign_bars(0x4000_0000, 0x10_0000).unwrap();
        root.mmio_write(0x4000_0010, &[1, 2, 3, 4]);
        root.mmio_write(0x4000_4004, &[9]);
        let mut d = [0u8; 4];
        root.mmio_read(0x4000_0010, &mut d);
        assert_eq!(d, [1, 2, 3, 4]);
        // the guest moves slot 2's BAR
        root.config_write(0, 2, 0, config::BAR0, &0x5000_0000u32.to_le_bytes());
        let mut one = [0u8; 1];
        root.mmio_read(0x5000_0004, &mut one);
        assert_eq!(one, [9]);
        root.mmio_read(0x4000_4004, &mut one);
        assert_eq!(one, [0xff], "old address no longer decodes");
        // memory decoding off: nothing decodes
        root.config_write(0, 2, 0, config::COMMAND, &[0, 0]);
        root.mmio_read(0x5000_0004, &mut one);
        assert_eq!(one, [0xff]);
    }

    #[test]
    fn absent_functions_read_all_ones() {
        let root = PciRoot::new();
        let mut d = [0u8; 4];
        root.config_read(0, 0, 0, 0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x0008_1b36);
        for (bus, dev, func) in [(0, 5, 0), (1, 0, 0), (0, 0, 1), (0, 31, 0)] {
            root.config_read(bus, dev, func, 0, &mut d);
            assert_eq!(d, [0xff; 4]);
        }
    }

    #[test]
    fn functions_describe_themselves_for_firmware() {
        let mut root = PciRoot::new();
        let mut dev = Scratch::new(0x1000);
        dev.cfg.set_intx(9);
        dev.cfg.set_subsystem(0x1af4, 0x40);
        root.add(Arc::new(Mutex::new(dev))).unwrap();
        root.assign_bars(0x8000_0000, 0x10_0000).unwrap();
        assert_eq!(
            root.describe(),
            vec![FunctionInfo {
                slot: 1,
                vendor: 0x1234,
                device: 0x5678,
                revision: 0,
                class: 0xff_00_00,
                subsystem_vendor: 0x1af4,
                subsystem: 0x40,
                pin: 1,
                bars: vec![(0, 0x8000_0000, 0x1000)],
            }]
        );
    }

    #[test]
    fn a_full_window_is_an_error() {
        let mut root = PciRoot::new();
        root.add(Arc::new(Mutex::new(Scratch::new(0x10_0000))))
            .unwrap();
        assert!(matches!(
            root.assign_bars(0x4000_0000, 0x8_0000),
            Err(Error::NoSpace { bar: 0, .. })
        ));
    }
}
