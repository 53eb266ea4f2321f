//! arm64 guests: vGICv2/v2m/v3/v3-ITS through KVM_CREATE_DEVICE, PSCI 0.2
//! in the kernel, the arch timer, an 8250 console, `Image` kernels, and the
//! asynchronous-page-fault SDEI/PPI wiring where the host has it.
//!
//! Everything but `machine` is plain data and is tested on any host.

pub mod asyncpf;
pub mod devices;
pub mod error;
pub mod fdt;
pub mod features;
pub mod gic;
pub mod image;
pub mod layout;
pub mod options;
pub mod regs;

#[cfg(arm64)]
mod machine;
#[cfg(arm64)]
pub use machine::Aarch64;

/// Default kernel parameters: the 8250 console, and early output through it.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 earlycon panic=1";

// The page-ready PPI lkvm reserves for async PF must not collide with the
// PPIs lkvm describes: the timer's (INTIDs 26, 27, 29, 30) and the PMU's (23).
const _: () = {
    let ppi = asyncpf::PAGE_READY_PPI;
    assert!(ppi >= 16 && ppi < 32);
    assert!(ppi != fdt::PMU_PPI + 16);
    assert!(ppi != 26 && ppi != 27 && ppi != 29 && ppi != 30);
};
