//! RISC-V guests: in-kernel AIA (APLIC + IMSIC) or a userspace PLIC, the SBI
//! console (legacy and DBCN) served in userspace, an 8250 console, `Image`
//! kernels, and ISA/SBI extensions read from and trimmed through ONE_REG.
//!
//! Everything but `machine` is plain data and is tested on any host.

pub mod devices;
pub mod fdt;
pub mod image;
pub mod irqchip;
pub mod isa;
pub mod layout;
pub mod plic;
pub mod regs;
pub mod sbi;

#[cfg(target_arch = "riscv64")]
mod machine;
#[cfg(target_arch = "riscv64")]
pub use machine::Riscv64;

#[cfg(not(target_arch = "riscv64"))]
crate::arch_not_implemented!(Riscv64, "riscv64");

/// Default kernel parameters: the 8250 console, early output through it.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 earlycon panic=1";
