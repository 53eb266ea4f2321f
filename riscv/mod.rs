//! RISC-V guests: in-kernel AIA (APLIC + IMSIC) or a userspace PLIC, the SBI
//! console (legacy and DBCN) served in userspace, an 8250 console, `Image`
//! kernels, and ISA/SBI extensions read from and trimmed through ONE_REG.
//!
//! Everything but `machine` is plain data and is tested on any host.

pub mod devices;
pub mod error;
pub mod exit;
pub mod fdt;
pub mod hart_config;
pub mod image;
pub mod irqchip;
pub mod isa;
pub mod layout;
pub mod options;
pub mod plic;
pub mod regs;
pub mod sbi;

#[cfg(riscv)]
mod machine;
#[cfg(riscv)]
pub use machine::Riscv64;

/// Default kernel parameters: the 8250 console, early output through it.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 earlycon panic=1";
