//! Where arm64 puts virtio devices: virtio-mmio windows from 0x0200_0000,
//! or functions behind a `pci-host-ecam-generic` bridge, each with a level
//! SPI of its own; MSI-X goes to the ITS through irqfds (with the requester
//! id as device id) or through the GICv2m frame, and is not offered on a
//! plain GIC.

use std::sync::Arc;

use super::gic::{GicKind, GicLayout, SpiSink, V2M_FIRST_SPI, V2M_MSI_SETSPI_NS, V2M_NUM_SPIS};
use super::layout::{
    PCI_ECAM_BASE, PCI_MEM_BASE, PCI_MEM_SIZE, VIRTIO_MMIO_BASE, VIRTIO_MMIO_SIZE,
};
use crate::arch::{Platform, VirtioSet};
use crate::fdt::DeviceTree;
use crate::irq::{self, IrqChip, MsiSink, RoutedMsi};
use crate::kvm::MsiMessage;
use crate::msi::MsiRouter;
use crate::virtio::setup::{self, FdtPlatformLayout};

/// MSIs through lkvm's GICv2m frame: a write of an SPI INTID to its
/// SETSPI register, which is what the guest programs into the vectors.
pub struct V2mMsi {
    pub frame: u64,
    pub spis: Arc<dyn SpiSink>,
}

impl MsiSink for V2mMsi {
    fn send(&self, msg: MsiMessage) -> Result<(), irq::Error> {
        let intid = msg.data;
        if msg.addr != self.frame + V2M_MSI_SETSPI_NS
            || !(V2M_FIRST_SPI..V2M_FIRST_SPI + V2M_NUM_SPIS).contains(&intid)
        {
            return Err(irq::Error::MsiTarget { addr: msg.addr });
        }
        self.spis.set_spi(intid, true)?;
        self.spis.set_spi(intid, false)
    }
}

/// Places `virtio` on its transport and describes it in `tree`; SPIs are handed out from
/// `next_spi` up to the first one the GICv2m frame owns. Returns the PCI
/// host for the device tree, if there is one.
pub fn place_virtio(
    p: &mut Platform,
    tree: &mut DeviceTree,
    virtio: VirtioSet,
    gic: &GicLayout,
    chip: Arc<dyn IrqChip>,
    spis: Arc<dyn SpiSink>,
    mut next_spi: u32,
) -> Result<(), setup::Error> {
    let msi: Option<Arc<dyn MsiSink>> = match (gic.kind, gic.v2m) {
        // The ITS identifies the sender by its requester id; vectors go
        // through irqfds routed to their messages.
        (GicKind::V3Its, _) => Some(Arc::new(RoutedMsi {
            vm: p.vm.clone(),
            router: MsiRouter::new(p.vm.clone(), Vec::new(), true),
            with_devid: true,
        })),
        (GicKind::V2m, Some((frame, _))) => Some(Arc::new(V2mMsi { frame, spis })),
        _ => None,
    };
    let layout = FdtPlatformLayout {
        mmio_base: VIRTIO_MMIO_BASE,
        mmio_size: VIRTIO_MMIO_SIZE,
        ecam_base: PCI_ECAM_BASE,
        pci_mem_base: PCI_MEM_BASE,
        pci_mem_size: PCI_MEM_SIZE,
    };
    let irqs = || {
        let spi = next_spi;
        next_spi += 1;
        (spi < V2M_FIRST_SPI).then_some(spi)
    };
    setup::place_on_fdt_platform(p, tree, virtio, &layout, chip, irqs, msi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Spis(Mutex<Vec<(u32, bool)>>);
    impl SpiSink for Spis {
        fn set_spi(&self, intid: u32, level: bool) -> Result<(), irq::Error> {
            self.0.lock().unwrap().push((intid, level));
            Ok(())
        }
    }

    #[test]
    fn v2m_msis_pulse_the_spi_the_guest_programmed() {
        let spis = Arc::new(Spis::default());
        let s = V2mMsi {
            frame: 0x3ffd_0000,
            spis: spis.clone(),
        };
        let at = 0x3ffd_0000 + V2M_MSI_SETSPI_NS;
        s.send(MsiMessage {
            addr: at,
            data: 70,
            devid: Some(8),
        })
        .unwrap();
        assert_eq!(*spis.0.lock().unwrap(), vec![(70, true), (70, false)]);
        assert!(
            s.send(MsiMessage {
                addr: at,
                data: 40,
                devid: None
            })
            .is_err(),
            "outside the frame's SPIs"
        );
        assert!(s
            .send(MsiMessage {
                addr: 0xfee0_0000,
                data: 70,
                devid: None
            })
            .is_err());
    }
}
