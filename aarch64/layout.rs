//! The arm64 guest physical memory map.
//!
//! ```text
//! 0x0100_0000  ttyS0..ttyS3 (ns16550a, 8 byte registers, one per 4 KiB)
//! 0x0100_4000  RTC (mc146818, index and data registers)
//! 0x0101_0000  stolen-time (pvtime) records, 64 bytes per vCPU
//! 0x0200_0000  virtio-mmio windows, 0x200 bytes each
//!              GICv2m frame, ITS, GICv3 redistributors / GICv2 CPU interface
//! 0x3fff_0000  GIC distributor
//! 0x4000_0000  PCI ECAM (bus 0)
//! 0x4100_0000  PCI memory window (32-bit BARs)
//! 0x8000_0000  RAM
//! ```

pub const UART_BASE: u64 = 0x0100_0000;
pub const UART_LEN: u64 = 8;
/// ttyS0..ttyS3 on SPIs 32..35, the RTC without an interrupt.
pub const LEGACY: crate::hw::legacy::MmioLegacy = crate::hw::legacy::MmioLegacy {
    uart_base: UART_BASE,
    uart_stride: 0x1000,
    first_irq: FIRST_DEVICE_SPI,
    rtc_base: 0x0100_4000,
};
pub const PVTIME_BASE: u64 = 0x0101_0000;
/// One 64-byte record per vCPU; KVM allows at most 512 vCPUs on arm64.
pub const PVTIME_SIZE: u64 = 0x1_0000;
pub const PVTIME_RECORD: u64 = 64;
pub const VIRTIO_MMIO_BASE: u64 = 0x0200_0000;
/// Room for 64 virtio-mmio windows, far below the lowest GIC frame.
pub const VIRTIO_MMIO_SIZE: u64 = 0x8000;
pub const GIC_DIST_BASE: u64 = 0x3fff_0000;
pub const PCI_ECAM_BASE: u64 = 0x4000_0000;
pub const PCI_MEM_BASE: u64 = 0x4100_0000;
pub const PCI_MEM_SIZE: u64 = RAM_BASE - PCI_MEM_BASE;
pub const RAM_BASE: u64 = 0x8000_0000;
/// The first device SPI (INTID), then one per device: the four UARTs,
/// then virtio.
pub const FIRST_DEVICE_SPI: u32 = 32;
