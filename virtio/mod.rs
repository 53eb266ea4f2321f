//! Virtio: the devices (console, block, rng, 9p, net, balloon) and the
//! transports that put them on a guest's bus (virtio-mmio and modern
//! virtio-pci).
//!
//! A device implements [`device::VirtioDevice`] and never learns which
//! transport carries it: the transport owns the registers, the feature
//! negotiation and the queue configuration ([`common::VirtioState`]), and
//! hands the device its queues, their kick eventfds and an
//! [`device::Interrupt`] when the driver sets DRIVER_OK. Devices then work on
//! their own thread ([`worker`]); a kick is an eventfd KVM signals directly
//! (ioeventfd), so a guest notification costs no trip through userspace.

pub mod balloon;
pub mod blk;
pub mod chain;
pub mod common;
pub mod console;
pub mod device;
pub mod mmio;
pub mod msix;
pub mod net;
pub mod p9;
pub mod pci;
pub mod rng;
pub mod setup;
pub mod worker;

pub use device::{Activation, ActiveQueue, Interrupt, VirtioDevice};

/// Status bits (virtio 1.2, 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const NEEDS_RESET: u8 = 64;
    pub const FAILED: u8 = 128;
}

/// Transport-level feature bits every device shares.
pub mod features {
    pub const RING_INDIRECT_DESC: u64 = 1 << 28;
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    pub const VERSION_1: u64 = 1 << 32;
}

/// Device type ids (virtio 1.2, 5).
pub mod ids {
    pub const NET: u32 = 1;
    pub const BLOCK: u32 = 2;
    pub const CONSOLE: u32 = 3;
    pub const RNG: u32 = 4;
    pub const BALLOON: u32 = 5;
    pub const NINE_P: u32 = 9;
}

/// The queue size lkvm offers unless a device needs another.
pub const QUEUE_SIZE: u16 = 256;
