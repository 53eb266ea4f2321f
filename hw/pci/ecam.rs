//! PCI configuration through ECAM, the memory-mapped mechanism of the
//! `pci-host-ecam-generic` device-tree binding (arm64, RISC-V): 4 KiB of
//! registers per function, `bus << 20 | device << 15 | function << 12`.

use std::sync::Arc;

use super::PciRoot;
use crate::bus::BusDevice;

/// One bus's worth of ECAM (32 devices x 8 functions x 4 KiB).
pub const BUS_SIZE: u64 = 1 << 20;

pub struct PciEcam(pub Arc<PciRoot>);

fn decode(offset: u64) -> (u8, u8, u8, usize) {
    (
        (offset >> 20) as u8,
        ((offset >> 15) & 0x1f) as u8,
        ((offset >> 12) & 0x7) as u8,
        (offset & 0xfff) as usize,
    )
}

impl BusDevice for PciEcam {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let (bus, dev, func, reg) = decode(offset);
        self.0.config_read(bus, dev, func, reg, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (bus, dev, func, reg) = decode(offset);
        self.0.config_write(bus, dev, func, reg, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecam_offsets_select_bus_device_function_register() {
        assert_eq!(decode(0x0001_8ffc), (0, 3, 0, 0xffc));
        assert_eq!(decode(0x0010_0000), (1, 0, 0, 0));
        assert_eq!(decode(0x0000_7008), (0, 0, 7, 8));
        let mut e = PciEcam(Arc::new(PciRoot::new()));
        let mut d = [0u8; 2];
        e.read(0, &mut d);
        assert_eq!(u16::from_le_bytes(d), 0x1b36);
        e.read(3 << 15, &mut d);
        assert_eq!(d, [0xff, 0xff]);
        // extended configuration space is empty
        let mut x = [0u8; 4];
        e.read(0x100, &mut x);
        assert_eq!(x, [0xff; 4]);
    }
}
