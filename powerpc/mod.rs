//! PowerPC (sPAPR) guests on book3s-64 hosts: lkvm's own KVM bindings, RTAS,
//! PAPR hcalls, radix and hash (HPT) MMU setup, XICS, the hvterm console.
//!
//! Everything but `machine` and `kvm_sys::backend` is plain data and is
//! tested on any host.

pub mod choice;
pub mod cpu_states;
pub mod cpu_table;
pub mod devices;
pub mod error;
pub mod fdt;
pub mod hcall;
pub mod hpt;
pub mod hvterm;
pub mod kvm_sys;
pub mod layout;
pub mod options;
pub mod pci;
pub mod rtas;
pub mod tce;
pub mod xics;

#[cfg(powerpc)]
mod machine;
#[cfg(powerpc)]
pub use machine::Ppc64;

/// Default kernel parameters: the hypervisor console.
pub const DEFAULT_CMDLINE: &str = "console=hvc0 panic=1";
