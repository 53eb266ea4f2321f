//! The PIO and MMIO buses: address ranges mapped to devices, with overlap
//! checks at registration and a binary search on every access.

use std::sync::{Arc, Mutex};

/// A device on a bus. `offset` is relative to the start of the range the
/// device was registered at. Guests may issue any access size at any offset;
/// devices answer what they can and ignore the rest.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("{bus} range {base:#x}+{len:#x} of {name} is empty or wraps around")]
    BadRange {
        bus: &'static str,
        name: String,
        base: u64,
        len: u64,
    },
    #[error("{bus} range {base:#x}+{len:#x} of {name} overlaps {other} at {other_base:#x}+{other_len:#x}")]
    Overlap {
        bus: &'static str,
        name: String,
        base: u64,
        len: u64,
        other: String,
        other_base: u64,
        other_len: u64,
    },
}

struct Entry {
    base: u64,
    len: u64,
    name: String,
    dev: SharedDevice,
}

/// One address space (port I/O or MMIO).
pub struct Bus {
    kind: &'static str,
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut l = f.debug_list();
        for e in &self.entries {
            l.entry(&format_args!("{}@{:#x}+{:#x}", e.name, e.base, e.len));
        }
        l.finish()
    }
}

impl Bus {
    pub fn new(kind: &'static str) -> Self {
        Bus {
            kind,
            entries: Vec::new(),
        }
    }

    /// Maps `dev` at `base..base+len`.
    pub fn insert(
        &mut self,
        name: &str,
        base: u64,
        len: u64,
        dev: SharedDevice,
    ) -> Result<(), Error> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or_else(|| Error::BadRange {
                bus: self.kind,
                name: name.to_string(),
                base,
                len,
            })?;
        if let Some(o) = self
            .entries
            .iter()
            .find(|e| base < e.base + e.len && e.base < end)
        {
            return Err(Error::Overlap {
                bus: self.kind,
                name: name.to_string(),
                base,
                len,
                other: o.name.clone(),
                other_base: o.base,
                other_len: o.len,
            });
        }
        let at = self.entries.partition_point(|e| e.base < base);
        self.entries.insert(
            at,
            Entry {
                base,
                len,
                name: name.to_string(),
                dev,
            },
        );
        Ok(())
    }

    fn lookup(&self, addr: u64) -> Option<(&Entry, u64)> {
        let idx = self
            .entries
            .partition_point(|e| e.base <= addr)
            .checked_sub(1)?;
        let e = &self.entries[idx];
        (addr - e.base < e.len).then_some((e, addr - e.base))
    }

    /// Dispatches a read; returns false when nothing is mapped at `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.lookup(addr) {
            Some((e, off)) => {
                lock(&e.dev).read(off, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a write; returns false when nothing is mapped at `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.lookup(addr) {
            Some((e, off)) => {
                lock(&e.dev).write(off, data);
                true
            }
            None => false,
        }
    }

    /// The name of the device at `addr`, for logs.
    pub fn device_name(&self, addr: u64) -> Option<&str> {
        self.lookup(addr).map(|(e, _)| e.name.as_str())
    }

    /// Registered ranges in address order: (name, base, len).
    pub fn ranges(&self) -> impl Iterator<Item = (&str, u64, u64)> {
        self.entries
            .iter()
            .map(|e| (e.name.as_str(), e.base, e.len))
    }
}

/// Locks a device, recovering from a poisoned lock: a device that panicked
/// mid-access is still better answered than the whole VMM aborting.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn accesses_reach_the_device_at_their_offset() {
        let mut bus = Bus::new("pio");
        let dev = Arc::new(Mutex::new(Recorder::default()));
        bus.insert("uart", 0x3f8, 8, dev.clone()).unwrap();
        let mut buf = [0u8; 1];
        assert!(bus.read(0x3fd, &mut buf));
        assert_eq!(buf, [5]);
        assert!(bus.write(0x3f8, &[0x41]));
        assert!(!bus.write(0x400, &[0]));
        assert!(!bus.read(0x3f7, &mut buf));
        assert_eq!(dev.lock().unwrap().writes, vec![(0, vec![0x41])]);
        assert_eq!(bus.device_name(0x3ff), Some("uart"));
    }

    #[test]
    fn overlapping_and_empty_ranges_are_refused() {
        let mut bus = Bus::new("mmio");
        let dev: SharedDevice = Arc::new(Mutex::new(Recorder::default()));
        bus.insert("a", 0x1000, 0x100, dev.clone()).unwrap();
        bus.insert("b", 0x1100, 0x100, dev.clone()).unwrap();
        bus.insert("c", 0x0f00, 0x100, dev.clone()).unwrap();
        let err = bus.insert("d", 0x10ff, 2, dev.clone()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "mmio range 0x10ff+0x2 of d overlaps a at 0x1000+0x100"
        );
        assert!(matches!(
            bus.insert("e", 0x800, 0x1000, dev.clone()),
            Err(Error::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert("f", 0x9000, 0, dev.clone()),
            Err(Error::BadRange { .. })
        ));
        assert!(matches!(
            bus.insert("g", u64::MAX, 2, dev),
            Err(Error::BadRange { .. })
        ));
        let names: Vec<_> = bus.ranges().map(|r| r.0).collect();
        assert_eq!(names, vec!["c", "a", "b"]);
    }
}
