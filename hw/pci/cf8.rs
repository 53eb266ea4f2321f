//! PCI configuration space through the x86 configuration mechanism #1
//! (ports 0xcf8 address, 0xcfc-0xcff data). Port 0xcf9 inside that range is
//! the reset control register.

use std::sync::Arc;

use super::PciRoot;
use crate::bus::BusDevice;
use crate::control::{GuestExit, VmControl};

pub const PCI_CONFIG_PORT: u64 = 0xcf8;
pub const PCI_CONFIG_LEN: u64 = 8;

const ENABLE: u32 = 1 << 31;
const RESET_CONTROL: u64 = 1;
const RESET_CPU: u8 = 1 << 2;

pub struct PciConfigIo {
    address: u32,
    root: Arc<PciRoot>,
    ctl: Arc<VmControl>,
}

impl PciConfigIo {
    pub fn new(root: Arc<PciRoot>, ctl: Arc<VmControl>) -> Self {
        PciConfigIo {
            address: 0,
            root,
            ctl,
        }
    }

    /// Bus, device, function and register the address register selects.
    fn target(&self) -> Option<(u8, u8, u8, usize)> {
        if self.address & ENABLE == 0 {
            return None;
        }
        Some((
            (self.address >> 16) as u8,
            ((self.address >> 11) & 0x1f) as u8,
            ((self.address >> 8) & 0x7) as u8,
            (self.address & 0xfc) as usize,
        ))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (offset, data.len()) {
            (0, 4) => data.copy_from_slice(&self.address.to_le_bytes()),
            (4..=7, _) => match self.target() {
                Some((bus, dev, func, reg)) => {
                    self.root
                        .config_read(bus, dev, func, reg + (offset as usize - 4), data)
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
                if let Some((bus, dev, func, reg)) = self.target() {
                    self.root
                        .config_write(bus, dev, func, reg + (offset as usize - 4), data);
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
        (PciConfigIo::new(Arc::new(PciRoot::new()), ctl.clone()), ctl)
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
