//! The RISC-V guest physical memory map.
//!
//! ```text
//! 0x0c00_0000  PLIC (64 MiB window), when the PLIC is the interrupt controller
//! 0x0d00_0000  APLIC (16 KiB), with in-kernel AIA
//! 0x1000_0000  ttyS0..ttyS3 (ns16550a, 8 byte registers, one per 4 KiB)
//! 0x1000_4000  RTC (mc146818, index and data registers)
//! 0x1001_0000  virtio-mmio windows, 0x200 bytes each
//! 0x2800_0000  IMSIC interrupt files, one 4 KiB page per hart (AIA)
//! 0x3000_0000  PCI ECAM (bus 0)
//! 0x4000_0000  PCI memory window (32-bit BARs)
//! 0x8000_0000  RAM; the kernel at RAM + 2 MiB
//! ```

pub const PLIC_BASE: u64 = 0x0c00_0000;
pub const PLIC_SIZE: u64 = 0x0400_0000;
pub const APLIC_BASE: u64 = 0x0d00_0000;
/// `KVM_DEV_RISCV_APLIC_SIZE`.
pub const APLIC_SIZE: u64 = 0x4000;
pub const UART_BASE: u64 = 0x1000_0000;
pub const UART_LEN: u64 = 8;
/// ttyS0..ttyS3 on sources 1..4, the RTC without an interrupt.
pub const LEGACY: crate::hw::legacy::MmioLegacy = crate::hw::legacy::MmioLegacy {
    uart_base: UART_BASE,
    uart_stride: 0x1000,
    first_irq: UART_IRQ,
    rtc_base: 0x1000_4000,
};
pub const VIRTIO_MMIO_BASE: u64 = 0x1001_0000;
pub const VIRTIO_MMIO_SIZE: u64 = 0x8000;
pub const IMSIC_BASE: u64 = 0x2800_0000;
pub const PCI_ECAM_BASE: u64 = 0x3000_0000;
pub const PCI_MEM_BASE: u64 = 0x4000_0000;
pub const PCI_MEM_SIZE: u64 = RAM_BASE - PCI_MEM_BASE;
/// One S-level interrupt file per hart (no guest files).
pub const IMSIC_PER_HART: u64 = 0x1000;
pub const RAM_BASE: u64 = 0x8000_0000;
/// rv64 kernels load at a 2 MiB-aligned address; RAM + 2 MiB as kvmtool.
pub const KERNEL_OFFSET: u64 = 2 << 20;
/// Interrupt sources: 1..=NR_SOURCES (0 means "none" on both PLIC and APLIC).
pub const NR_SOURCES: u32 = 63;
/// ttyS0's interrupt source; ttyS1..3 take the next three.
pub const UART_IRQ: u32 = 1;
