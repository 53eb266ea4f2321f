//! Everything that can stop a PowerPC (sPAPR) VM from being built.

use super::{fdt, layout};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kvm(#[from] crate::kvm::Error),
    #[error(transparent)]
    Layout(#[from] layout::Error),
    #[error(transparent)]
    Fdt(#[from] fdt::Error),
    #[error(transparent)]
    Devices(#[from] crate::virtio::setup::Error),
    #[error("unknown --mmu '{0}' (radix, hash, auto)")]
    UnknownMmu(String),
    #[error("unknown --irqchip '{0}' (powerpc: xics-kernel, xics-user)")]
    UnknownIrqchip(String),
    #[error("--mmu {0}: this host's KVM cannot run {0} guests")]
    MmuUnavailable(&'static str),
    #[error("--irqchip xics-kernel: this host's KVM has no in-kernel XICS")]
    NoKernelXics,
    #[error("the host PVR {0:#010x} is not a POWER7..POWER10 processor lkvm knows")]
    UnknownCpu(u32),
    #[error("cannot allocate the hashed page table: {0}")]
    Htab(#[source] std::io::Error),
    #[error(transparent)]
    Load(#[from] crate::loader::write::Error),
    #[error("a PowerPC guest needs at least one vCPU")]
    NoCpus,
}
