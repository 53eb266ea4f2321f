//! x86_64 guests: bzImage (64-bit boot protocol) and PVH ELF kernels, e820,
//! MP table, CPUID from KVM, in-kernel PIC/IOAPIC/PIT, and the legacy PC
//! devices (8250, i8042, CMOS RTC, PCI configuration ports, ACPI PM1).
//!
//! Everything but `machine` is plain data and is tested on any host.

pub mod bzimage;
pub mod cpuid;
pub mod devices;
pub mod kernel;
pub mod layout;
pub mod mptable;
pub mod pvh;
pub mod regs;

#[cfg(x86)]
mod machine;
#[cfg(x86)]
pub use machine::X86;

/// kvmtool's x86 defaults, minus `noapic` (lkvm describes the IOAPIC in its
/// MP table) and with ACPI off (lkvm has no ACPI tables).
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 earlyprintk=serial reboot=k panic=1 \
     pci=conf1 i8042.direct=1 i8042.dumbkbd=1 i8042.nopnp=1 i8042.noaux=1 acpi=off";
