//! lkvm: a kvmtool-style virtual machine monitor.
//!
//! The tree reads like kvmtool's: the shared core lives in `src/`, platform
//! devices in `hw/`, virtio in `virtio/`, and each architecture in its own
//! top-level directory. Every architecture's pure logic (boot tables, device
//! trees, loaders) builds and is tested on every host; only code that issues
//! ioctls is limited to its target.

pub mod arch;
pub mod bus;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod fdlimit;
pub mod fdt;
pub mod handle;
pub mod ipc;
pub mod irq;
pub mod kvm;
pub mod loader;
pub mod logger;
pub mod memory;
pub mod modinit;
pub mod msi;
pub mod regdump;
pub mod rootfs;
pub mod seccomp;
pub mod term;
pub mod vcpu;
pub mod vmm;

#[path = "../hw/mod.rs"]
pub mod hw;
#[path = "../virtio/mod.rs"]
pub mod virtio;

#[path = "../aarch64/mod.rs"]
pub mod aarch64;
#[path = "../powerpc/mod.rs"]
pub mod powerpc;
#[path = "../riscv/mod.rs"]
pub mod riscv;
#[path = "../x86/mod.rs"]
pub mod x86;
