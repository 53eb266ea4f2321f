//! The architecture seam: the hooks each architecture directory implements
//! (kvmtool's `kvm__arch_*` / `kvm_cpu__arch_*`), and the one place that picks
//! the host's implementation.

use std::sync::Arc;

use crate::bus::Bus;
use crate::cli::ConsoleKind;
use crate::config::VmConfig;
use crate::control::GuestExit;
use crate::control::VmControl;
use crate::fdt::DeviceTree;
use crate::kvm::{Kvm, Vcpu, Vm};
use crate::memory::{GuestMemory, RamRange};
use crate::term::ConsoleSink;
use crate::virtio::setup::Transport;

/// What the shared core hands an architecture to attach its devices to:
/// the buses, and the handles devices keep. Input only; what the
/// architecture placed comes back as [`Devices`].
pub struct Platform {
    pub pio: Bus,
    pub mmio: Bus,
    pub ctl: Arc<VmControl>,
    pub vm: Arc<Vm>,
    /// Guest RAM, for devices and exit handlers that read or write it.
    pub mem: GuestMemory,
}

impl Platform {
    pub fn new(ctl: Arc<VmControl>, vm: Arc<Vm>, mem: GuestMemory) -> Self {
        Platform {
            pio: Bus::new("pio"),
            mmio: Bus::new("mmio"),
            ctl,
            vm,
            mem,
        }
    }
}

/// The virtio devices an architecture must place, and on which transport.
/// `setup_devices` takes them by value: each is placed or the set-up fails.
pub struct VirtioSet {
    pub devices: Vec<Box<dyn crate::virtio::VirtioDevice>>,
    pub transport: Transport,
}

/// What `setup_devices` hands back: everything later stages need from it.
pub struct Devices {
    /// Where console input goes.
    pub console: Arc<dyn ConsoleSink>,
    /// Answers the architecture's own exits.
    pub exits: Arc<HostExits>,
    /// The devices as the boot description (device tree, MP table) lists
    /// them.
    pub tree: DeviceTree,
}

/// The kernel, initrd and command line `load` puts into RAM.
pub struct BootImages<'a> {
    pub kernel: &'a [u8],
    pub initrd: Option<&'a [u8]>,
    pub cmdline: &'a str,
}

/// One architecture's part of building and running a VM. The core calls the
/// hooks in the order they are declared; each stage hands the next what it
/// made, so a later stage cannot run without an earlier one's result.
pub trait Arch: Sized + Send + Sync + 'static {
    type Error: std::error::Error + Send + Sync + 'static;
    /// The exits only this architecture has, as the hypervisor backend
    /// decodes them into `VcpuExit::Arch`; [`NoExit`] where there are none.
    type Exit<'a>;
    /// What `setup_vm` creates: the interrupt controller and the VM-wide
    /// features the later stages build on.
    type Chipset: Send + Sync;
    /// What `init_vcpus` learns about the vCPUs for the boot description
    /// (MPIDRs, the ISA, the PVR).
    type Topology;
    /// What `load` found out and `boot_vcpu` needs (entry point, ...).
    type Boot;

    /// Validates the architecture's view of the configuration.
    fn new(cfg: &VmConfig) -> Result<Self, Self::Error>;
    /// The most vCPUs the architecture's boot description can hold.
    fn max_cpus(&self) -> u32;
    /// The machine type passed to `KVM_CREATE_VM`.
    fn vm_type(&self, kvm: &Kvm) -> Result<u64, Self::Error>;
    /// Where guest RAM of `ram_size` bytes lives.
    fn ram_ranges(&self, ram_size: u64) -> Result<Vec<RamRange>, Self::Error>;
    /// Whether RAM should be advised `MADV_HUGEPAGE`.
    fn wants_thp(&self) -> bool;
    /// Interrupt controller and other VM-wide state, after RAM is registered.
    fn setup_vm(&self, kvm: &Kvm, vm: &Vm) -> Result<Self::Chipset, Self::Error>;
    /// Registers the platform devices and places `virtio`.
    fn setup_devices(
        &self,
        chip: &Self::Chipset,
        p: &mut Platform,
        virtio: VirtioSet,
    ) -> Result<Devices, Self::Error>;
    /// Kernel parameters added unless `--nodefaults`.
    fn default_cmdline(&self) -> &'static str;
    /// Initialises every vCPU (features, CPUID, MSRs, ...) right after they
    /// are created, then what needs them all (arm64's vGIC). Boot
    /// registers come later, in `boot_vcpu`.
    fn init_vcpus(
        &self,
        chip: &Self::Chipset,
        kvm: &Kvm,
        vm: &Vm,
        vcpus: &[Vcpu],
    ) -> Result<Self::Topology, Self::Error>;
    /// Places kernel, initrd, command line and firmware tables (MP table,
    /// device tree) in RAM.
    fn load(
        &self,
        chip: &Self::Chipset,
        topology: &Self::Topology,
        devices: &DeviceTree,
        mem: &GuestMemory,
        images: &BootImages<'_>,
    ) -> Result<Self::Boot, Self::Error>;
    /// Sets the boot registers of `vcpu`.
    fn boot_vcpu(&self, vcpu: &Vcpu, boot: &Self::Boot) -> Result<(), Self::Error>;
    /// The vCPU's registers, for crash reports at `--loglevel debug`.
    fn dump_vcpu(&self, vcpu: &Vcpu) -> String;
    /// Injects a non-maskable interrupt (`lkvm debug --nmi`).
    fn inject_nmi(&self, _vcpu: &Vcpu) -> Result<(), String> {
        Err(format!(
            "NMI injection is not available on {} guests",
            HOST.display
        ))
    }
}

/// Answers an architecture's own exits (`VcpuExit::Arch`) on the vCPU's
/// thread; `Some` ends the VM.
pub trait ExitHandler<X>: Send + Sync {
    fn handle(&self, vcpu: u32, exit: X) -> Option<GuestExit>;
}

/// The exit type of architectures that have no exits of their own.
#[derive(Debug)]
pub enum NoExit {}

/// The handler of architectures that have no exits of their own: any exit
/// that reaches it is logged and left unanswered.
pub struct NoExits;

impl<X: std::fmt::Debug> ExitHandler<X> for NoExits {
    fn handle(&self, vcpu: u32, exit: X) -> Option<GuestExit> {
        log::debug!("vCPU {vcpu}: no handler for {exit:?}");
        None
    }
}

cfg_if::cfg_if! {
    if #[cfg(riscv)] {
        /// The host architecture's own exits, as `VcpuExit::Arch` carries
        /// them. Named directly rather than as `HostArch`'s projection, so
        /// that `VcpuExit` stays covariant in its lifetime.
        pub type HostExit<'a> = crate::riscv::exit::Exit<'a>;
    } else if #[cfg(powerpc)] {
        pub type HostExit<'a> = crate::powerpc::hcall::Hcall<'a>;
    } else {
        pub type HostExit<'a> = NoExit;
    }
}

/// `HostExit` is the host architecture's `Arch::Exit`.
#[allow(dead_code)]
fn host_exit_is_the_host_archs(exit: HostExit<'_>) -> <HostArch as Arch>::Exit<'_> {
    exit
}

/// What answers them.
pub type HostExits = dyn for<'a> ExitHandler<HostExit<'a>>;

/// What the shared core knows about an architecture before any VM exists:
/// what the command line, the kernel search and the kernel command line
/// builder need. One value per architecture; code outside this file asks
/// these instead of comparing architecture names.
#[derive(Debug, PartialEq, Eq)]
pub struct ArchInfo {
    /// `std::env::consts::ARCH` of the host that runs such guests.
    pub name: &'static str,
    /// How users and docs call it ("arm64").
    pub display: &'static str,
    /// The kernel tree's `arch/` directory.
    pub kbuild: &'static str,
    /// What the kernel build leaves to boot: `arch/<kbuild>/boot/<image>`,
    /// or `<image>` at the top of the tree when `image_at_top`.
    pub image: &'static str,
    pub image_at_top: bool,
    /// The kernel's `COMMAND_LINE_SIZE`, the terminating NUL included.
    pub cmdline_size: usize,
    /// The console a guest gets without `--console`.
    pub default_console: ConsoleKind,
    /// Where RAM starts and whether `-m SIZE@ADDR` may move it.
    pub ram: RamPlacement,
    /// Whether guests boot with a device tree lkvm writes.
    pub device_tree: bool,
    /// Whether virtio devices may sit on virtio-mmio (a device-tree
    /// platform) rather than PCI.
    pub virtio_mmio: bool,
}

/// Where guest RAM starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RamPlacement {
    /// Always at this address.
    Fixed(u64),
    /// At `default` unless `-m SIZE@ADDR` says otherwise; ADDR may not be
    /// below `min` (the device region) and must be `align`-aligned.
    Movable { default: u64, min: u64, align: u64 },
}

pub const X86_64: ArchInfo = ArchInfo {
    name: "x86_64",
    display: "x86_64",
    kbuild: "x86",
    image: "bzImage",
    image_at_top: false,
    cmdline_size: 2048,
    default_console: ConsoleKind::Serial,
    ram: RamPlacement::Fixed(0),
    device_tree: false,
    virtio_mmio: false,
};

pub const AARCH64: ArchInfo = ArchInfo {
    name: "aarch64",
    display: "arm64",
    kbuild: "arm64",
    image: "Image",
    image_at_top: false,
    cmdline_size: 2048,
    default_console: ConsoleKind::Serial,
    // booting.rst: the Image sits text_offset above a 2 MiB-aligned base.
    ram: RamPlacement::Movable {
        default: crate::aarch64::layout::RAM_BASE,
        min: crate::aarch64::layout::RAM_BASE,
        align: 2 << 20,
    },
    device_tree: true,
    virtio_mmio: true,
};

pub const RISCV64: ArchInfo = ArchInfo {
    name: "riscv64",
    display: "riscv64",
    kbuild: "riscv",
    image: "Image",
    image_at_top: false,
    cmdline_size: 1024,
    default_console: ConsoleKind::Serial,
    ram: RamPlacement::Fixed(crate::riscv::layout::RAM_BASE),
    device_tree: true,
    virtio_mmio: true,
};

pub const POWERPC64: ArchInfo = ArchInfo {
    name: "powerpc64",
    display: "ppc64le",
    kbuild: "powerpc",
    image: "vmlinux",
    image_at_top: true,
    cmdline_size: 2048,
    default_console: ConsoleKind::Hv,
    ram: RamPlacement::Fixed(0),
    device_tree: true,
    virtio_mmio: false,
};

/// One architecture's own `lkvm run` options, a `clap::Args` group that
/// `run` flattens. Every group parses on every host; the ones that do not
/// exist on the host are refused by name.
pub trait ArchOptions: clap::Args {
    /// Where the options exist, as the refusal says it.
    const ON: &'static str;
    fn exists_on(arch: &ArchInfo) -> bool;
    /// The first option given, by name.
    fn given(&self) -> Option<&'static str>;
    /// The first kvmtool option given that lkvm does not implement yet.
    fn not_supported_yet(&self) -> Option<&'static str> {
        None
    }
    /// kvmtool's spelling of one of these options as lkvm's (`--disable-zbb`
    /// as `--disable-ext zbb`); `None` for any other word.
    fn respell(_arg: &str) -> Option<[std::ffi::OsString; 2]> {
        None
    }
}

/// Every architecture lkvm runs on.
pub const ARCHES: [&ArchInfo; 4] = [&X86_64, &AARCH64, &RISCV64, &POWERPC64];

/// The architecture named `name` (`std::env::consts::ARCH`).
pub fn info(name: &str) -> Option<&'static ArchInfo> {
    ARCHES.iter().copied().find(|a| a.name == name)
}

cfg_if::cfg_if! {
    if #[cfg(x86)] {
        pub const HOST: &ArchInfo = &X86_64;
    } else if #[cfg(arm64)] {
        pub const HOST: &ArchInfo = &AARCH64;
    } else if #[cfg(riscv)] {
        pub const HOST: &ArchInfo = &RISCV64;
    } else {
        pub const HOST: &ArchInfo = &POWERPC64;
    }
}

cfg_if::cfg_if! {
    if #[cfg(x86)] {
        pub type HostArch = crate::x86::X86;
    } else if #[cfg(arm64)] {
        pub type HostArch = crate::aarch64::Aarch64;
    } else if #[cfg(riscv)] {
        pub type HostArch = crate::riscv::Riscv64;
    } else if #[cfg(powerpc)] {
        pub type HostArch = crate::powerpc::Ppc64;
    } else {
        compile_error!("lkvm supports x86_64, aarch64, riscv64 and powerpc64 hosts");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_architecture_is_found_by_its_name_and_the_host_is_one() {
        for a in ARCHES {
            assert_eq!(info(a.name), Some(a));
        }
        assert_eq!(info(std::env::consts::ARCH), Some(HOST));
        assert_eq!(info("mips"), None);
    }
}
