//! Where arm64 puts virtio devices: virtio-mmio windows from 0x0200_0000,
//! or functions behind a `pci-host-ecam-generic` bridge, each with a level
//! SPI of its own; MSI-X goes to the ITS (with the requester id as device
//! id) or through the GICv2m frame, and is not offered on a plain GIC.

use std::sync::{Arc, Mutex};

use super::gic::{GicKind, GicLayout, SpiSink, V2M_FIRST_SPI, V2M_MSI_SETSPI_NS, V2M_NUM_SPIS};
use super::layout::{
    PCI_ECAM_BASE, PCI_MEM_BASE, PCI_MEM_SIZE, VIRTIO_MMIO_BASE, VIRTIO_MMIO_SIZE,
};
use crate::arch::Platform;
use crate::hw::pci::ecam::{PciEcam, BUS_SIZE};
use crate::irq::{self, IrqChip, IrqLine, MsiSink, Trigger};
use crate::kvm::{MsiMessage, Vm};
use crate::virtio::mmio;
use crate::virtio::setup::{self, PciHostBuilder, PciHostInfo, Transport};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Virtio(#[from] setup::Error),
    #[error(transparent)]
    Bus(#[from] crate::bus::Error),
    #[error("too many devices: arm64 device interrupts end below SPI INTID {V2M_FIRST_SPI}")]
    NoSpis,
}

/// MSIs into a GICv3 ITS, which identifies the sender by its requester id.
pub struct ItsMsi(pub Arc<Vm>);

impl MsiSink for ItsMsi {
    fn send(&self, msg: MsiMessage) -> Result<(), irq::Error> {
        self.0.signal_msi(msg).map_err(|source| irq::Error::Msi {
            addr: msg.addr,
            data: msg.data,
            source,
        })
    }
}

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

/// Places `p.virtio` on the configured transport; SPIs are handed out from
/// `next_spi`. Returns the PCI host for the device tree, if there is one.
pub fn place_virtio(
    p: &mut Platform,
    gic: &GicLayout,
    chip: Arc<dyn IrqChip>,
    spis: Arc<dyn SpiSink>,
    mut next_spi: u32,
) -> Result<Option<PciHostInfo>, Error> {
    let devices = std::mem::take(&mut p.virtio);
    if devices.is_empty() {
        return Ok(None);
    }
    let mut take_spi = || {
        let spi = next_spi;
        next_spi += 1;
        (spi < V2M_FIRST_SPI).then_some(spi).ok_or(Error::NoSpis)
    };
    match p.transport {
        Transport::Mmio => {
            for (i, dev) in devices.into_iter().enumerate() {
                let base = VIRTIO_MMIO_BASE + i as u64 * mmio::WINDOW;
                if base + mmio::WINDOW > VIRTIO_MMIO_BASE + VIRTIO_MMIO_SIZE {
                    return Err(setup::Error::NoRoom("virtio-mmio").into());
                }
                let line = IrqLine::new(chip.clone(), take_spi()?, Trigger::Level);
                setup::place_mmio(p, dev, base, line)?;
            }
            Ok(None)
        }
        Transport::Pci => {
            let msi: Option<Arc<dyn MsiSink>> = match (gic.kind, gic.v2m) {
                (GicKind::V3Its, _) => Some(Arc::new(ItsMsi(p.vm.clone()))),
                (GicKind::V2m, Some((frame, _))) => Some(Arc::new(V2mMsi { frame, spis })),
                _ => None,
            };
            let mut host = PciHostBuilder::new(PCI_MEM_BASE, PCI_MEM_SIZE);
            for dev in devices {
                let spi = take_spi()?;
                let line = IrqLine::new(chip.clone(), spi, Trigger::Level);
                host.add_virtio(p, dev, line, spi as u8, msi.clone())?;
            }
            let (root, info) = host.finish(p)?;
            p.mmio.insert(
                "pci-ecam",
                PCI_ECAM_BASE,
                BUS_SIZE,
                Arc::new(Mutex::new(PciEcam(root))),
            )?;
            Ok(Some(info))
        }
    }
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
