//! Everything that can stop an arm64 VM from being built.

use super::gic::{self, GicKind};
use super::{asyncpf, fdt, image};
use crate::bus;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kvm(#[from] crate::kvm::Error),
    #[error(transparent)]
    Gic(#[from] gic::Error),
    #[error(transparent)]
    Image(#[from] image::Error),
    #[error(transparent)]
    Place(#[from] crate::loader::place::Error),
    #[error(transparent)]
    Fdt(#[from] fdt::Error),
    #[error(transparent)]
    AsyncPf(#[from] asyncpf::Error),
    #[error("cannot place a device: {0}")]
    Bus(#[from] bus::Error),
    #[error(transparent)]
    Devices(#[from] crate::virtio::setup::Error),
    #[error("guest RAM up to {end:#x} needs {bits}-bit guest physical addresses; this host's KVM allows {max}")]
    IpaTooSmall { end: u64, bits: u32, max: i32 },
    #[error("--pmu: this host's KVM has no PMUv3 for guests")]
    NoPmu,
    #[error("--sve-max-vl {0}: must be a multiple of 128 between 128 and 2048")]
    BadSveLength(u32),
    #[error("--sve-max-vl: this host's KVM has no SVE for guests")]
    NoSve,
    #[error(transparent)]
    Load(#[from] crate::loader::write::Error),
    #[error("--irqchip {0}: this host's KVM cannot give guests that interrupt controller (a GICv3 host without GICv2 compatibility has no vGICv2)")]
    NoSuchGic(GicKind),
}
