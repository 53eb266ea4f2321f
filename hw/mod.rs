//! Platform devices shared by the architectures.

pub mod acpi_pm;
pub mod i8042;
pub mod legacy;
pub mod pci;
pub mod rtc;
pub mod serial;

use crate::bus::BusDevice;

/// Ports that only exist to be poked (the POST/delay ports 0x80 and 0xed):
/// accepted silently so they do not show up as unhandled accesses.
#[derive(Debug, Default)]
pub struct IgnoredPorts;

impl BusDevice for IgnoredPorts {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}
