//! PowerPC (sPAPR) guests. The port (own KVM bindings, RTAS, hcalls, HPT and
//! radix, XICS, hvterm) has not landed yet; until it does, the architecture
//! refuses to run with a clear error.

crate::arch_not_implemented!(Ppc64, "ppc64le");
