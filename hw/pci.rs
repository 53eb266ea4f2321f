//! PCI configuration space through the x86 configuration mechanism #1
//! (ports 0xcf8 address, 0xcfc-0xcff data), bus 0 only, with a host bridge at
//! 00:00.0. Port 0xcf9 inside that range is the reset control register.

use std::sync::Arc;

use crate::bus::BusDevice;
use crate::control::{GuestExit, VmControl};

pub const PCI_CONFIG_PORT: u64 = 0xcf8;
pub const PCI_CONFIG_LEN: u64 = 8;

const ENABLE: u32 = 1 << 31;
const RESET_CONTROL: u64 = 1;
const RESET_CPU: u8 = 1 << 2;

/// A function's 256-byte configuration space.
pub trait PciFunction: Send {
    fn config_read(&self, offset: usize) -> u8;
    fn config_write(&mut self, offset: usize, value: u8);
}

/// Configuration space with a per-byte write mask.
#[derive(Clone)]
pub struct ConfigSpace {
    bytes: [u8; 256],
    writable: [u8; 256],
}

impl ConfigSpace {
    /// A type-0 header with the given identity.
    pub fn new(vendor: u16, device: u16, class: u32, revision: u8) -> Self {
        let mut c = ConfigSpace {
            bytes: [0; 256],
            writable: [0; 256],
        };
        c.bytes[0..2].copy_from_slice(&vendor.to_le_bytes());
        c.bytes[2..4].copy_from_slice(&device.to_le_bytes());
        c.bytes[8] = revision;
        c.bytes[9..12].copy_from_slice(&class.to_le_bytes()[..3]);
        // Command register: I/O, memory, bus master, INTx disable.
        c.writable[4] = 0x07;
        c.writable[5] = 0x04;
        c.writable[0x0c] = 0xff; // cache line size
        c.writable[0x0d] = 0xff; // latency timer
        c
    }
}

impl PciFunction for ConfigSpace {
    fn config_read(&self, offset: usize) -> u8 {
        self.bytes.get(offset).copied().unwrap_or(0xff)
    }
    fn config_write(&mut self, offset: usize, value: u8) {
        if let (Some(b), Some(m)) = (self.bytes.get_mut(offset), self.writable.get(offset)) {
            *b = (*b & !m) | (value & m);
        }
    }
}

/// lkvm's host bridge: Red Hat's vendor id for virtual hardware with the
/// generic "PCIe host bridge" device id, class 06/00/00.
pub fn host_bridge() -> ConfigSpace {
    ConfigSpace::new(0x1b36, 0x0008, 0x06_00_00, 0)
}

pub struct PciConfigIo {
    address: u32,
    slots: Vec<Option<Box<dyn PciFunction>>>,
    ctl: Arc<VmControl>,
}

impl PciConfigIo {
    pub fn new(ctl: Arc<VmControl>) -> Self {
        let mut slots: Vec<Option<Box<dyn PciFunction>>> = (0..32).map(|_| None).collect();
        slots[0] = Some(Box::new(host_bridge()));
        PciConfigIo {
            address: 0,
            slots,
            ctl,
        }
    }

    /// The function and register the address register selects, if any.
    fn target(&self) -> Option<(usize, usize)> {
        if self.address & ENABLE == 0 {
            return None;
        }
        let bus = (self.address >> 16) & 0xff;
        let device = ((self.address >> 11) & 0x1f) as usize;
        let function = (self.address >> 8) & 0x7;
        let reg = (self.address & 0xfc) as usize;
        (bus == 0 && function == 0 && self.slots[device].is_some()).then_some((device, reg))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (offset, data.len()) {
            (0, 4) => data.copy_from_slice(&self.address.to_le_bytes()),
            (4..=7, _) => match self.target() {
                Some((dev, reg)) => {
                    let base = reg + (offset as usize - 4);
                    if let Some(f) = &self.slots[dev] {
                        for (i, b) in data.iter_mut().enumerate() {
                            *b = f.config_read(base + i);
                        }
                    }
                }
                None => data.fill(0xff),
            },
            (RESET_CONTROL, 1) => data[0] = 0,
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data.len()) {
            (0, 4) => {
                let mut raw = [0u8; 4];
                raw.copy_from_slice(data);
                self.address = u32::from_le_bytes(raw) & 0x80ff_fffc;
            }
            (4..=7, _) => {
                if let Some((dev, reg)) = self.target() {
                    let base = reg + (offset as usize - 4);
                    if let Some(f) = self.slots[dev].as_mut() {
                        for (i, b) in data.iter().enumerate() {
                            f.config_write(base + i, *b);
                        }
                    }
                }
            }
            (RESET_CONTROL, 1) if data[0] & RESET_CPU != 0 => {
                log::debug!("pci: reset through port 0xcf9");
                self.ctl.request_exit(GuestExit::Reset);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io() -> (PciConfigIo, Arc<VmControl>) {
        let ctl = Arc::new(VmControl::new().unwrap());
        (PciConfigIo::new(ctl.clone()), ctl)
    }

    fn read32(p: &mut PciConfigIo, dev: u32, reg: u32) -> u32 {
        p.write(0, &(ENABLE | (dev << 11) | reg).to_le_bytes());
        let mut b = [0u8; 4];
        p.read(4, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn host_bridge_answers_and_empty_slots_float_high() {
        let (mut p, _) = io();
        assert_eq!(read32(&mut p, 0, 0), 0x0008_1b36);
        assert_eq!(read32(&mut p, 0, 8) >> 8, 0x06_00_00);
        assert_eq!(read32(&mut p, 3, 0), 0xffff_ffff);
        // address register reads back (linux's type-1 probe)
        p.write(0, &0x8000_0000u32.to_le_bytes());
        let mut b = [0u8; 4];
        p.read(0, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x8000_0000);
    }

    #[test]
    fn byte_accesses_hit_the_selected_register_and_masks_apply() {
        let (mut p, _) = io();
        p.write(0, &(ENABLE | 4).to_le_bytes());
        p.write(4, &[0xff]);
        p.write(6, &[0xff]); // status is read-only here
        let mut b = [0u8; 1];
        p.read(4, &mut b);
        assert_eq!(b[0], 0x07);
        p.write(0, &ENABLE.to_le_bytes());
        p.write(4, &[0, 0]); // vendor id is read-only
        p.read(5, &mut b);
        assert_eq!(b[0], 0x1b);
    }

    #[test]
    fn disabled_address_and_other_buses_read_all_ones() {
        let (mut p, _) = io();
        p.write(0, &0u32.to_le_bytes());
        let mut b = [0u8; 4];
        p.read(4, &mut b);
        assert_eq!(b, [0xff; 4]);
        p.write(0, &(ENABLE | (1 << 16)).to_le_bytes());
        p.read(4, &mut b);
        assert_eq!(b, [0xff; 4]);
    }

    #[test]
    fn port_cf9_resets() {
        let (mut p, ctl) = io();
        p.write(1, &[0x02]);
        assert!(!ctl.is_stopping());
        p.write(1, &[0x06]);
        assert_eq!(ctl.exit_reason(), Some(GuestExit::Reset));
    }
}
