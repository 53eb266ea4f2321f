//! The sPAPR PCI host bridge: configuration space through RTAS calls, one
//! 32-bit memory window that the PHB translates to a high CPU address,
//! level-sensitive XICS sources for INTA#, and the device-tree nodes a
//! pSeries guest needs. A partition's Linux does not scan the bus: it
//! creates a device for each function node under the PHB, so every
//! function is listed with its identity, BARs and interrupt.

use vm_fdt::FdtWriter;

use super::xics::IRQ_BASE;
use crate::fdt::{cells64, PCI_SPACE_MEM32};
use crate::hw::pci::{config::BAR0, FunctionInfo, PciRoot};
use crate::virtio::setup::PciHostInfo;

/// The PHB's bus unit id, as kvmtool and QEMU give their first PHB.
pub const BUID: u64 = 0x0800_0000_2000_0001;
/// The memory window: PCI addresses the BARs get, and where the CPU sees
/// them (far above any guest RAM).
pub const MEM_PCI_BASE: u64 = 0x8000_0000;
pub const MEM_SIZE: u64 = 0x2000_0000;
pub const MEM_CPU_BASE: u64 = 0x1000_0000_0000;
/// INTA# of the functions: XICS sources from here, one per slot.
pub const FIRST_LSI: u32 = IRQ_BASE + 0x10;
/// The specifier's sense cell: level (LSI).
const XICS_LEVEL: u32 = 1;

/// Bus, device, function and register of an RTAS configuration address
/// (`bus << 16 | devfn << 8 | reg`, extended register bits at 28..31).
pub fn decode_config_addr(a: u32) -> (u8, u8, u8, usize) {
    (
        (a >> 16) as u8,
        ((a >> 11) & 0x1f) as u8,
        ((a >> 8) & 0x7) as u8,
        ((a & 0xff) | ((a >> 20) & 0xf00)) as usize,
    )
}

fn size_ok(reg: usize, size: u32) -> bool {
    matches!(size, 1 | 2 | 4) && reg % size as usize == 0
}

/// `read-pci-config`: the value, or `None` for a bad size or alignment.
pub fn config_read(root: &PciRoot, addr: u32, size: u32) -> Option<u32> {
    let (bus, dev, func, reg) = decode_config_addr(addr);
    if !size_ok(reg, size) {
        return None;
    }
    let mut b = [0u8; 4];
    root.config_read(bus, dev, func, reg, &mut b[..size as usize]);
    Some(u32::from_le_bytes(b))
}

/// `write-pci-config`: false for a bad size or alignment.
pub fn config_write(root: &PciRoot, addr: u32, size: u32, value: u32) -> bool {
    let (bus, dev, func, reg) = decode_config_addr(addr);
    if !size_ok(reg, size) {
        return false;
    }
    root.config_write(bus, dev, func, reg, &value.to_le_bytes()[..size as usize]);
    true
}

/// An OF PCI address's first cell: space code, device, register.
fn phys_hi(relocatable: bool, space: u32, slot: u8, reg: usize) -> u32 {
    let n = if relocatable { 0 } else { 1 << 31 };
    n | (space << 24) | (u32::from(slot) << 11) | reg as u32
}

/// Writes the PHB and its function nodes under the root node (whose
/// address and size cells are 2).
pub fn write_fdt(
    fdt: &mut FdtWriter,
    info: &PciHostInfo,
    functions: &[FunctionInfo],
    xics_phandle: u32,
) -> Result<(), vm_fdt::Error> {
    let phb = fdt.begin_node(&format!("pci@{BUID:x}"))?;
    fdt.property_string("device_type", "pci")?;
    fdt.property_string("compatible", "IBM,Logical_PHB")?;
    fdt.property_u32("#address-cells", 3)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_u32("#interrupt-cells", 1)?;
    fdt.property_null("used-by-rtas")?;
    fdt.property_array_u32("bus-range", &[0, 0])?;
    fdt.property_array_u64("reg", &[BUID, 0])?;
    // The DMA window Linux requires of every PCI device (see tce.rs).
    fdt.property_u32("ibm,#dma-address-cells", 2)?;
    fdt.property_u32("ibm,#dma-size-cells", 2)?;
    let [wh, wl] = cells64(super::tce::WINDOW_SIZE);
    fdt.property_array_u32("ibm,dma-window", &[super::tce::LIOBN, 0, 0, wh, wl])?;
    let [ph, pl] = cells64(info.mem_base);
    let [ch, cl] = cells64(info.cpu_base);
    let [sh, sl] = cells64(info.mem_size);
    fdt.property_array_u32("ranges", &[PCI_SPACE_MEM32, ph, pl, ch, cl, sh, sl])?;
    fdt.property_array_u32("interrupt-map-mask", &[0xf800, 0, 0, 7])?;
    let mut map = Vec::new();
    for (slot, irq) in &info.intx {
        map.extend([
            u32::from(*slot) << 11,
            0,
            0,
            1,
            xics_phandle,
            *irq,
            XICS_LEVEL,
        ]);
    }
    fdt.property_array_u32("interrupt-map", &map)?;
    for f in functions {
        let node = fdt.begin_node(&format!("pci@{:x}", f.slot))?;
        fdt.property_u32("vendor-id", u32::from(f.vendor))?;
        fdt.property_u32("device-id", u32::from(f.device))?;
        fdt.property_u32("revision-id", u32::from(f.revision))?;
        fdt.property_u32("class-code", f.class)?;
        fdt.property_u32("subsystem-vendor-id", u32::from(f.subsystem_vendor))?;
        fdt.property_u32("subsystem-id", u32::from(f.subsystem))?;
        // The configuration space entry, then each BAR's size ...
        let mut reg = vec![phys_hi(true, 0, f.slot, 0), 0, 0, 0, 0];
        // ... and where each BAR was placed.
        let mut assigned = Vec::new();
        for (index, addr, size) in &f.bars {
            let bar = BAR0 + 4 * index;
            let [szh, szl] = cells64(*size);
            let [ah, al] = cells64(*addr);
            reg.extend([phys_hi(true, 2, f.slot, bar), 0, 0, szh, szl]);
            assigned.extend([phys_hi(false, 2, f.slot, bar), ah, al, szh, szl]);
        }
        fdt.property_array_u32("reg", &reg)?;
        fdt.property_array_u32("assigned-addresses", &assigned)?;
        if f.pin != 0 {
            fdt.property_u32("interrupts", u32::from(f.pin))?;
        }
        fdt.end_node(node)?;
    }
    fdt.end_node(phb)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::hw::pci::testing::Scratch;

    #[test]
    fn config_addresses_decode_with_extended_registers() {
        assert_eq!(decode_config_addr(0x0000_0810), (0, 1, 0, 0x10));
        assert_eq!(decode_config_addr(0x1001_0f04), (1, 1, 7, 0x104));
    }

    #[test]
    fn rtas_config_access_reaches_the_function() {
        let mut root = PciRoot::new();
        root.add(Arc::new(Mutex::new(Scratch::new(0x1000))))
            .unwrap();
        let dev1 = 1 << 11;
        assert_eq!(config_read(&root, dev1, 4), Some(0x5678_1234));
        assert_eq!(config_read(&root, dev1 + 2, 2), Some(0x5678));
        assert_eq!(config_read(&root, dev1 + 1, 2), None, "misaligned");
        assert_eq!(config_read(&root, dev1, 3), None, "bad size");
        assert_eq!(config_read(&root, 5 << 11, 4), Some(u32::MAX), "no device");
        assert!(config_write(&root, dev1 + 0x10, 4, 0x8000_0000));
        assert_eq!(config_read(&root, dev1 + 0x10, 4), Some(0x8000_0000));
        assert!(!config_write(&root, dev1 + 0x11, 4, 0));
    }
}
