//! PowerPC (sPAPR) guests on book3s-64 hosts: lkvm's own KVM bindings, RTAS,
//! PAPR hcalls, radix and hash (HPT) MMU setup, XICS, the hvterm console.
//!
//! Everything but `machine` and `kvm_sys::backend` is plain data and is
//! tested on any host.

pub mod cpu_table;
pub mod hcall;
pub mod hpt;
pub mod kvm_sys;
pub mod layout;
pub mod rtas;
pub mod xics;

crate::arch_not_implemented!(Ppc64, "ppc64le");
