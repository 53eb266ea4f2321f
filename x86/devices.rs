//! Where x86 puts virtio devices: functions on the PCI root bus (reached
//! through ports 0xcf8/0xcfc), BARs in the 32-bit hole below the IOAPIC,
//! INTA# on IOAPIC pins 16-23 (described in the MP table), and MSI-X into
//! the in-kernel LAPICs through irqfds.

use std::sync::Arc;

use super::layout::{IOAPIC_ADDR, MMIO_HOLE_START};
use crate::arch::{Platform, VirtioSet};
use crate::fdt::PciHost;
use crate::hw::pci::PciRoot;
use crate::irq::{IrqChip, IrqLine, MsiSink, RoutedMsi, Trigger};
use crate::kvm::GsiRoute;
use crate::msi::MsiRouter;
use crate::virtio::setup::{self, PciHostBuilder, Transport};

pub const PCI_MEM_BASE: u64 = MMIO_HOLE_START;
pub const PCI_MEM_SIZE: u64 = 0xfe00_0000 - PCI_MEM_BASE;
/// The IOAPIC pins above the ISA ones, one per PCI slot (no sharing: two
/// devices holding one KVM line would lower it for each other).
const FIRST_PCI_PIN: u32 = 16;
const PCI_PINS: u32 = 8;

const _: () = assert!(PCI_MEM_BASE + PCI_MEM_SIZE <= IOAPIC_ADDR as u64);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Virtio(#[from] setup::Error),
    #[error("too many PCI devices: x86 wires at most {PCI_PINS} to the IOAPIC")]
    NoPins,
}

/// Places `virtio` on the PCI root bus and returns the bus and the host's
/// description (its INTA# pins are the MP table's interrupt entries).
/// (`--virtio-transport mmio` is refused for x86 when the configuration is
/// parsed.)
pub fn place_virtio(p: &mut Platform, virtio: VirtioSet) -> Result<(Arc<PciRoot>, PciHost), Error> {
    debug_assert_eq!(virtio.transport, Transport::Pci);
    let chip: Arc<dyn IrqChip> = p.vm.clone();
    // MSI-X vectors go through irqfds routed to their messages.
    let msi: Arc<dyn MsiSink> = Arc::new(RoutedMsi {
        vm: p.vm.clone(),
        router: MsiRouter::new(p.vm.clone(), default_routes(), false),
        with_devid: false,
    });
    let mut host = PciHostBuilder::new(PCI_MEM_BASE, PCI_MEM_SIZE);
    for (i, dev) in virtio.devices.into_iter().enumerate() {
        let i = i as u32;
        if i >= PCI_PINS {
            return Err(Error::NoPins);
        }
        let pin = FIRST_PCI_PIN + i;
        let line = IrqLine::new(chip.clone(), pin, Trigger::Level);
        host.add_virtio(p, dev, line, pin as u8, Some(msi.clone()))?;
    }
    Ok(host.finish(p)?)
}

/// x86's default routes: ISA IRQs 0-15 on both PICs and the IOAPIC, 16-23
/// on the IOAPIC (KVM's own defaults, which a new table must repeat).
fn default_routes() -> Vec<(u32, GsiRoute)> {
    const PIC_MASTER: u32 = 0;
    const PIC_SLAVE: u32 = 1;
    const IOAPIC: u32 = 2;
    let mut routes = Vec::new();
    for gsi in 0..24 {
        routes.push((
            gsi,
            GsiRoute::Irqchip {
                chip: IOAPIC,
                pin: gsi,
            },
        ));
        if gsi < 16 {
            let chip = if gsi < 8 { PIC_MASTER } else { PIC_SLAVE };
            routes.push((gsi, GsiRoute::Irqchip { chip, pin: gsi % 8 }));
        }
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_defaults_match_kvms() {
        let d = default_routes();
        assert_eq!(d.len(), 40);
        assert!(d.contains(&(2, GsiRoute::Irqchip { chip: 0, pin: 2 })));
        assert!(d.contains(&(12, GsiRoute::Irqchip { chip: 1, pin: 4 })));
        assert!(d.contains(&(23, GsiRoute::Irqchip { chip: 2, pin: 23 })));
        assert!(!d.contains(&(20, GsiRoute::Irqchip { chip: 1, pin: 4 })));
    }
}
