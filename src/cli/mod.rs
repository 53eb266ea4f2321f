//! The command line, with kvmtool's commands and option names.
//!
//! Options kvmtool has and lkvm does not implement yet are still parsed, so
//! that using one gets "not supported yet" instead of being silently ignored
//! or misread as something else.

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::arch::{ArchInfo, ArchOptions};

#[derive(Debug, Parser)]
#[command(
    name = "lkvm",
    version,
    about = "Boot a Linux kernel under KVM (a kvmtool-style VMM)",
    disable_help_subcommand = false,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a virtual machine
    Run(Box<RunCommand>),
    /// Print the version of lkvm
    Version,
    /// Set up a rootfs for a guest (~/.lkvm/NAME)
    Setup(SetupArgs),
    /// List running instances and rootfs directories
    List(ListArgs),
    /// Stop a running instance
    Stop(TargetArgs),
    /// Pause a running instance
    Pause(TargetArgs),
    /// Resume a paused instance
    Resume(TargetArgs),
    /// Print statistics about a running instance
    Stat(StatArgs),
    /// Inflate or deflate the balloon of a running instance
    Balloon(BalloonArgs),
    /// Debug a running instance
    Debug(DebugArgs),
    /// Run a command in a sandboxed guest and return its exit code
    Sandbox(Box<SandboxArgs>),
}

/// `lkvm setup NAME`.
#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Name of the rootfs (a directory under ~/.lkvm)
    pub name: String,
}

/// `lkvm list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// List running instances only
    #[arg(short = 'i', long = "run")]
    pub run: bool,
    /// List rootfs directories only
    #[arg(short = 'r', long)]
    pub rootfs: bool,
    /// Print JSON for scripts
    #[arg(long)]
    pub json: bool,
}

/// Which running guests a command acts on.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Instance name
    #[arg(
        short = 'n',
        long,
        conflicts_with = "all",
        required_unless_present = "all"
    )]
    pub name: Option<String>,
    /// Every running instance
    #[arg(short = 'a', long)]
    pub all: bool,
}

/// `lkvm stat`.
#[derive(Debug, Args)]
pub struct StatArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Memory statistics (from the guest's balloon)
    #[arg(short = 'm', long)]
    pub memory: bool,
    /// Print JSON for scripts
    #[arg(long)]
    pub json: bool,
}

/// `lkvm balloon`.
#[derive(Debug, Args)]
pub struct BalloonArgs {
    /// Instance name
    #[arg(short = 'n', long)]
    pub name: String,
    /// Take this many MiB from the guest
    #[arg(
        short = 'i',
        long,
        value_name = "MB",
        conflicts_with = "deflate",
        required_unless_present = "deflate"
    )]
    pub inflate: Option<u64>,
    /// Give this many MiB back to the guest
    #[arg(short = 'd', long, value_name = "MB")]
    pub deflate: Option<u64>,
}

/// `lkvm debug`.
#[derive(Debug, Args)]
pub struct DebugArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print every vCPU's registers and the memory map
    #[arg(short = 'd', long)]
    pub dump: bool,
    /// Inject an NMI into vCPU CPU (x86_64)
    #[arg(short = 'm', long, value_name = "CPU")]
    pub nmi: Option<u32>,
    /// Send the magic SysRq key C to the guest's console
    #[arg(short = 's', long, value_name = "C")]
    pub sysrq: Option<char>,
}

/// `lkvm run [options] [KERNEL]`.
#[derive(Debug, Args)]
pub struct RunCommand {
    #[command(flatten)]
    pub args: RunArgs,
    /// Kernel to boot, as kvmtool takes it: the first argument that is not an option (the same as -k)
    #[arg(id = "kernel_file", value_name = "KERNEL")]
    pub kernel: Option<PathBuf>,
}

impl RunCommand {
    /// The options, with a positional kernel folded into `-k`.
    pub fn into_args(self) -> Result<RunArgs, String> {
        let mut args = self.args;
        if let Some(k) = self.kernel {
            if let Some(other) = &args.kernel {
                return Err(format!(
                    "two kernels given: -k {} and {}",
                    other.display(),
                    k.display()
                ));
            }
            args.kernel = Some(k);
        }
        Ok(args)
    }
}

/// `lkvm sandbox [run options] [--] COMMAND [ARGS...]`.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// The host program to run inside the guest, from the caller's working directory, and its arguments
    #[arg(
        required = true,
        value_name = "COMMAND",
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Run(_) => "run",
            Command::Version => "version",
            Command::Setup(_) => "setup",
            Command::List(_) => "list",
            Command::Stop(_) => "stop",
            Command::Pause(_) => "pause",
            Command::Resume(_) => "resume",
            Command::Stat(_) => "stat",
            Command::Balloon(_) => "balloon",
            Command::Debug(_) => "debug",
            Command::Sandbox(_) => "sandbox",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ConsoleKind {
    /// 8250 UART (ttyS0)
    Serial,
    /// virtio-console (hvc0)
    Virtio,
    /// PowerPC hypervisor console (hvc0)
    Hv,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    Warning,
    Info,
    Debug,
}

impl LogLevel {
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warning => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
        }
    }
}

/// Options that only exist on some architectures: each architecture's own
/// group, and the device-tree platforms' shared one. They parse everywhere
/// (so their handling is tested on every host) and are refused on the
/// others.
#[derive(Clone, Debug, Default, Args, PartialEq, Eq)]
pub struct ArchArgs {
    #[command(flatten)]
    pub dt: DeviceTreeOptions,
    #[command(flatten)]
    pub arm64: crate::aarch64::options::Options,
    #[command(flatten)]
    pub riscv: crate::riscv::options::Options,
    #[command(flatten)]
    pub powerpc: crate::powerpc::options::Options,
}

/// Options of every architecture whose guests boot with a device tree.
#[derive(Clone, Debug, Default, Args, PartialEq, Eq)]
pub struct DeviceTreeOptions {
    /// Interrupt controller: arm64 auto|gicv2|gicv2m|gicv3|gicv3-its (default auto: the first of gicv3-its, gicv3, gicv2m, gicv2 the host can create); riscv aia|plic (default: aia if the host has it, else plic); powerpc xics-kernel|xics-user (default: in-kernel XICS if the host has it)
    #[arg(long, help_heading = "Arch-specific options")]
    pub irqchip: Option<String>,
    /// Write the generated device tree blob to FILE (arm64, riscv, powerpc)
    #[arg(long, value_name = "FILE", help_heading = "Arch-specific options")]
    pub dump_dtb: Option<PathBuf>,
}

impl ArchOptions for DeviceTreeOptions {
    const ON: &'static str = "arm64, riscv and powerpc";

    fn exists_on(arch: &ArchInfo) -> bool {
        arch.device_tree
    }

    fn given(&self) -> Option<&'static str> {
        match (&self.irqchip, &self.dump_dtb) {
            (Some(_), _) => Some("--irqchip"),
            (None, Some(_)) => Some("--dump-dtb"),
            (None, None) => None,
        }
    }
}

impl ArchArgs {
    /// Options given that lkvm does not implement yet.
    pub fn unsupported_option(&self) -> Option<&'static str> {
        self.dt
            .not_supported_yet()
            .or_else(|| self.arm64.not_supported_yet())
            .or_else(|| self.riscv.not_supported_yet())
            .or_else(|| self.powerpc.not_supported_yet())
    }

    /// The first option given that does not exist on `arch`, with the
    /// architectures it exists on.
    pub fn foreign_option(&self, arch: &ArchInfo) -> Option<(&'static str, &'static str)> {
        fn foreign<O: ArchOptions>(o: &O, arch: &ArchInfo) -> Option<(&'static str, &'static str)> {
            match O::exists_on(arch) {
                true => None,
                false => o.given().map(|name| (name, O::ON)),
            }
        }
        foreign(&self.dt, arch)
            .or_else(|| foreign(&self.arm64, arch))
            .or_else(|| foreign(&self.riscv, arch))
            .or_else(|| foreign(&self.powerpc, arch))
    }

    /// kvmtool's spelling of an architecture option, as lkvm's.
    fn respell(arg: &str) -> Option<[std::ffi::OsString; 2]> {
        DeviceTreeOptions::respell(arg)
            .or_else(|| crate::aarch64::options::Options::respell(arg))
            .or_else(|| crate::riscv::options::Options::respell(arg))
            .or_else(|| crate::powerpc::options::Options::respell(arg))
    }
}

/// Numbers in decimal or with a 0x prefix.
pub(crate) fn parse_u64(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("'{s}' is not a number"))
}

/// Rewrites kvmtool's per-extension RISC-V options (`--disable-zbb`,
/// `--disable-sbi-dbcn`) into lkvm's list options (`--disable-ext zbb`,
/// `--disable-sbi dbcn`). Only options are rewritten: names of known
/// extensions, so `--disable-mte` and typos reach the parser unchanged, and
/// never an option's value, anything after `--`, or a sandboxed command and
/// its arguments.
pub fn rewrite_kvmtool_spellings<I: IntoIterator<Item = std::ffi::OsString>>(
    args: I,
) -> Vec<std::ffi::OsString> {
    let cli = Cli::command();
    let mut iter = args.into_iter();
    let mut out: Vec<std::ffi::OsString> = iter.next().into_iter().collect();
    let mut sub: Option<&clap::Command> = None;
    let mut verbatim = false;
    let mut value_next = false;
    for arg in iter {
        let Some(s) = arg.to_str().filter(|_| !verbatim && !value_next) else {
            value_next = false;
            out.push(arg);
            continue;
        };
        let Some(cmd) = sub else {
            if !s.starts_with('-') {
                sub = cli.find_subcommand(s);
            }
            out.push(arg);
            continue;
        };
        if s == "--" || !s.starts_with('-') || s == "-" {
            // A sandboxed command starts at the first word that is not an
            // option; everything from there on is its own.
            verbatim = s == "--" || cmd.get_name() == "sandbox";
            out.push(arg);
            continue;
        }
        if let Some(rewritten) = ArchArgs::respell(s) {
            out.extend(rewritten);
            continue;
        }
        value_next = takes_separate_value(cmd, s);
        out.push(arg);
    }
    out
}

/// Whether option word `s` of `cmd` takes the next word as its value.
fn takes_separate_value(cmd: &clap::Command, s: &str) -> bool {
    let needs_value = |a: &clap::Arg| {
        a.get_action().takes_values() && a.get_num_args().is_none_or(|n| n.min_values() > 0)
    };
    if let Some(long) = s.strip_prefix("--") {
        return !long.contains('=')
            && cmd
                .get_arguments()
                .any(|a| a.get_long() == Some(long) && needs_value(a));
    }
    let mut shorts = s.chars().skip(1);
    match (shorts.next(), shorts.next()) {
        (Some(c), None) => cmd
            .get_arguments()
            .any(|a| a.get_short() == Some(c) && needs_value(a)),
        _ => false,
    }
}

#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    // --- Basic options ---
    /// A name for the guest
    #[arg(long)]
    pub name: Option<String>,
    /// Number of vCPUs (default: the host's online CPUs)
    #[arg(short = 'c', long = "cpus")]
    pub cpus: Option<u32>,
    /// Guest RAM: size[BKMGTP], plain numbers are MiB (default: 64 MiB x (vCPUs + 3))
    #[arg(short = 'm', long = "mem")]
    pub mem: Option<String>,
    /// Console device (default: hv on PowerPC, serial elsewhere)
    #[arg(long, value_enum)]
    pub console: Option<ConsoleKind>,
    /// Do not add lkvm's default kernel parameters
    #[arg(long)]
    pub nodefaults: bool,
    /// KVM device file
    #[arg(long, default_value = "/dev/kvm")]
    pub dev: PathBuf,
    /// Back guest RAM with files in this hugetlbfs mount
    #[arg(long)]
    pub hugetlbfs: Option<PathBuf>,
    /// Logging level
    #[arg(long, value_enum, default_value = "info")]
    pub loglevel: LogLevel,

    // --- Kernel options ---
    /// Kernel to boot (x86: bzImage or PVH ELF vmlinux)
    #[arg(short = 'k', long)]
    pub kernel: Option<PathBuf>,
    /// Initial RAM disk
    #[arg(short = 'i', long)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line parameters
    #[arg(short = 'p', long)]
    pub params: Option<String>,

    // --- Device options ---
    /// Add a virtio-blk disk: a raw image FILE, ",ro" for read-only (repeatable)
    #[arg(
        short = 'd',
        long,
        value_name = "FILE[,ro]",
        help_heading = "Device options"
    )]
    pub disk: Vec<String>,
    /// Share host directory DIR with the guest over virtio-9p as mount tag TAG (repeatable)
    #[arg(long = "9p", value_name = "DIR,TAG", help_heading = "Device options")]
    pub ninep: Vec<String>,
    /// Add a virtio-net device: mode=tap[,tapif=NAME][,guest_mac=MAC] or mode=none (repeatable)
    #[arg(
        short = 'n',
        long,
        value_name = "SPEC",
        num_args = 0..=1,
        default_missing_value = "",
        help_heading = "Device options"
    )]
    pub network: Vec<String>,
    /// Add a virtio-balloon device (driven by `lkvm balloon`)
    #[arg(long, help_heading = "Device options")]
    pub balloon: bool,
    /// Add a virtio-rng device fed from the host's getrandom(2)
    #[arg(long, help_heading = "Device options")]
    pub rng: bool,
    /// Virtio transport: pci (default) or mmio (arm64, riscv64)
    #[arg(long, value_name = "TRANSPORT", help_heading = "Device options")]
    pub virtio_transport: Option<String>,

    // --- Architecture-specific options ---
    #[command(flatten)]
    pub arch: ArchArgs,

    /// Share the host's / with the default rootfs (mounted at /host) writable, not read-only
    #[arg(long)]
    pub hostfs_rw: bool,
    /// System call filters per thread: on (a call outside a thread's list ends lkvm), log (the kernel logs it), off
    #[arg(long, value_enum, default_value = "on", value_name = "MODE")]
    pub seccomp: crate::seccomp::Mode,
    /// Set by `lkvm sandbox`: the guest runs in the default rootfs.
    #[arg(skip)]
    pub sandbox_mode: bool,

    // --- Debug options ---
    /// The same as --loglevel debug (kvmtool's spelling)
    #[arg(long)]
    pub debug: bool,
    /// Log port I/O accesses no device handles
    #[arg(long)]
    pub debug_ioport: bool,
    /// Log MMIO accesses no device handles
    #[arg(long)]
    pub debug_mmio: bool,

    // --- kvmtool options lkvm does not implement yet ---
    #[arg(long, hide = true)]
    pub vnc: bool,
    #[arg(long, hide = true)]
    pub gtk: bool,
    #[arg(long, hide = true)]
    pub sdl: bool,
    #[arg(long, hide = true)]
    pub vsock: Option<String>,
    #[arg(long, hide = true)]
    pub tty: Option<String>,
    #[arg(long, hide = true)]
    pub sandbox: Option<String>,
    #[arg(long, hide = true)]
    pub virtio_legacy: bool,
    #[arg(short = 'f', long, hide = true)]
    pub firmware: Option<String>,
    #[arg(short = 'F', long, hide = true)]
    pub flash: Option<String>,
    #[arg(long, hide = true)]
    pub no_dhcp: bool,
    #[arg(long, hide = true)]
    pub vfio_pci: Vec<String>,
    #[arg(long, hide = true)]
    pub debug_single_step: bool,
    #[arg(long, hide = true)]
    pub debug_iodelay: Option<String>,
    #[arg(long, hide = true)]
    pub vidmode: Option<String>,
}

impl RunArgs {
    /// The log level asked for: `--debug` is `--loglevel debug`.
    pub fn log_filter(&self) -> log::LevelFilter {
        if self.debug {
            log::LevelFilter::Debug
        } else {
            self.loglevel.filter()
        }
    }

    /// The first kvmtool option given that lkvm does not implement yet.
    pub fn unsupported_option(&self) -> Option<&'static str> {
        let given = [
            (self.vnc, "--vnc"),
            (self.gtk, "--gtk"),
            (self.sdl, "--sdl"),
            (self.vsock.is_some(), "--vsock"),
            (self.tty.is_some(), "--tty"),
            (self.sandbox.is_some(), "--sandbox"),
            (self.virtio_legacy, "--virtio-legacy"),
            (self.firmware.is_some(), "--firmware"),
            (self.flash.is_some(), "--flash"),
            (self.no_dhcp, "--no-dhcp"),
            (!self.vfio_pci.is_empty(), "--vfio-pci"),
            (self.debug_single_step, "--debug-single-step"),
            (self.debug_iodelay.is_some(), "--debug-iodelay"),
            (self.vidmode.is_some(), "--vidmode"),
        ];
        given
            .iter()
            .find(|(set, _)| *set)
            .map(|(_, name)| *name)
            .or_else(|| self.arch.unsupported_option())
    }
}

#[cfg(test)]
mod tests;
