//! Where PowerPC puts virtio devices: functions behind the sPAPR PHB
//! ([`super::pci`]), INTA# on a level-sensitive XICS source each. There is
//! no MSI-X: sPAPR's MSIs need the ibm,change-msi RTAS protocol, which
//! lkvm does not offer, so drivers use their LSIs.

use std::sync::Arc;

use super::pci::{FIRST_LSI, MEM_CPU_BASE, MEM_PCI_BASE, MEM_SIZE};
use super::xics::{IRQ_BASE, NR_IRQS};
use crate::arch::{Platform, VirtioSet};
use crate::fdt::PciHost;
use crate::hw::pci::PciRoot;
use crate::irq::{IrqChip, IrqLine, Trigger};
use crate::virtio::setup::{self, PciHostBuilder};

/// Places `virtio` on the PHB. `make_lsi` turns an XICS source into a
/// level-sensitive one before its device can raise it.
pub fn place_virtio<E>(
    p: &mut Platform,
    virtio: VirtioSet,
    chip: Arc<dyn IrqChip>,
    mut make_lsi: impl FnMut(u32) -> Result<(), E>,
) -> Result<Option<(Arc<PciRoot>, PciHost)>, E>
where
    E: From<setup::Error>,
{
    let devices = virtio.devices;
    if devices.is_empty() {
        return Ok(None);
    }
    let mut host = PciHostBuilder::new(MEM_PCI_BASE, MEM_SIZE).with_cpu_base(MEM_CPU_BASE);
    for (i, dev) in devices.into_iter().enumerate() {
        let irq = FIRST_LSI + i as u32;
        if irq >= IRQ_BASE + NR_IRQS {
            return Err(setup::Error::NoIrq.into());
        }
        make_lsi(irq)?;
        // The line register is only a hint here: the guest takes the
        // interrupt from the device tree.
        host.add_virtio(
            p,
            dev,
            IrqLine::new(chip.clone(), irq, Trigger::Level),
            0,
            None,
        )?;
    }
    Ok(Some(host.finish(p)?))
}
