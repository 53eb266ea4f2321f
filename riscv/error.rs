//! Everything that can stop a RISC-V VM from being built.

use super::{fdt, image, irqchip};
use crate::bus;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kvm(#[from] crate::kvm::Error),
    #[error("--custom-{name}: {source}")]
    CustomId {
        name: &'static str,
        #[source]
        source: crate::kvm::Error,
    },
    #[error(transparent)]
    Irqchip(#[from] irqchip::Error),
    #[error(transparent)]
    Devices(#[from] crate::virtio::setup::Error),
    #[error(transparent)]
    Image(#[from] image::Error),
    #[error(transparent)]
    Place(#[from] crate::loader::place::Error),
    #[error(transparent)]
    Fdt(#[from] fdt::Error),
    #[error("cannot place a device: {0}")]
    Bus(#[from] bus::Error),
    #[error("--disable-{0}: unknown RISC-V ISA extension")]
    UnknownExtension(String),
    #[error("--disable-sbi-{0}: unknown SBI extension")]
    UnknownSbiExtension(String),
    #[error("--irqchip aia: this host's KVM has no in-kernel AIA")]
    NoAia,
    #[error(transparent)]
    Load(#[from] crate::loader::write::Error),
    #[error("a RISC-V guest needs at least one hart")]
    NoHarts,
}
