//! Where RISC-V puts virtio devices: virtio-mmio windows after the UART,
//! or functions behind a `pci-host-ecam-generic` bridge. Each gets a level
//! interrupt source of its own on the PLIC or APLIC; with AIA, MSI-X goes
//! straight to the harts' IMSIC files, through irqfds.

use std::sync::Arc;

use super::irqchip::IrqchipKind;
use super::layout::{
    LEGACY, NR_SOURCES, PCI_ECAM_BASE, PCI_MEM_BASE, PCI_MEM_SIZE, VIRTIO_MMIO_BASE,
    VIRTIO_MMIO_SIZE,
};
use crate::arch::{Platform, VirtioSet};
use crate::fdt::DeviceTree;
use crate::irq::{IrqChip, MsiSink, RoutedMsi};
use crate::kvm::GsiRoute;
use crate::msi::MsiRouter;
use crate::virtio::setup::{self, FdtPlatformLayout};

pub const LAYOUT: FdtPlatformLayout = FdtPlatformLayout {
    mmio_base: VIRTIO_MMIO_BASE,
    mmio_size: VIRTIO_MMIO_SIZE,
    ecam_base: PCI_ECAM_BASE,
    pci_mem_base: PCI_MEM_BASE,
    pci_mem_size: PCI_MEM_SIZE,
};

/// Places `virtio` and describes it in `tree`; sources are handed out
/// after the UARTs'.
pub fn place_virtio(
    p: &mut Platform,
    tree: &mut DeviceTree,
    virtio: VirtioSet,
    kind: IrqchipKind,
    chip: Arc<dyn IrqChip>,
) -> Result<(), setup::Error> {
    let msi: Option<Arc<dyn MsiSink>> = match kind {
        IrqchipKind::Aia => Some(Arc::new(RoutedMsi {
            vm: p.vm.clone(),
            router: MsiRouter::new(p.vm.clone(), default_routes(NR_SOURCES), false),
            with_devid: false,
        })),
        IrqchipKind::Plic => None,
    };
    let mut next = LEGACY.next_irq();
    let irqs = || {
        let src = next;
        next += 1;
        (src <= NR_SOURCES).then_some(src)
    };
    setup::place_on_fdt_platform(p, tree, virtio, &LAYOUT, chip, irqs, msi)
}

/// RISC-V AIA's default routes: source N of the APLIC as GSI N.
fn default_routes(sources: u32) -> Vec<(u32, GsiRoute)> {
    (1..=sources)
        .map(|pin| (pin, GsiRoute::Irqchip { chip: 0, pin }))
        .collect()
}
