//! The command line, with kvmtool's commands and option names.
//!
//! Options kvmtool has and lkvm does not implement yet are still parsed, so
//! that using one gets "not supported yet" instead of being silently ignored
//! or misread as something else.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    Run(Box<RunArgs>),
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
    /// Instance name
    #[arg(short = 'n', long)]
    pub name: String,
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

/// `lkvm sandbox [run options] -- COMMAND [ARGS...]`.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// The command to run inside the guest
    #[arg(last = true, required = true, value_name = "COMMAND")]
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

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum AsyncPfMode {
    /// Enable where the host supports it
    #[default]
    Auto,
    /// Require it; fail where the host lacks it
    On,
    /// Never touch it
    Off,
}

/// Options that only exist on some architectures. They parse everywhere (so
/// their handling is tested on every host) and are refused on the others.
#[derive(Clone, Debug, Default, Args, PartialEq, Eq)]
pub struct ArchArgs {
    /// Interrupt controller: arm64 gicv2|gicv2m|gicv3|gicv3-its (default: gicv3 if the host has it, else gicv2); riscv aia|plic (default: aia if the host has it, else plic); powerpc xics-kernel|xics-user (default: in-kernel XICS if the host has it)
    #[arg(long, help_heading = "Arch-specific options")]
    pub irqchip: Option<String>,
    /// powerpc: guest MMU mode radix|hash|auto (default: radix where the host can)
    #[arg(long, value_name = "MODE", help_heading = "Arch-specific options")]
    pub mmu: Option<String>,
    /// Write the generated device tree blob to FILE (arm64, riscv, powerpc)
    #[arg(long, value_name = "FILE", help_heading = "Arch-specific options")]
    pub dump_dtb: Option<PathBuf>,
    /// riscv: hide ISA extension EXT from the guest (kvmtool's --disable-EXT works too)
    #[arg(
        long = "disable-ext",
        value_name = "EXT",
        help_heading = "Arch-specific options"
    )]
    pub disable_ext: Vec<String>,
    /// riscv: turn off SBI extension EXT (kvmtool's --disable-sbi-EXT works too)
    #[arg(
        long = "disable-sbi",
        value_name = "EXT",
        help_heading = "Arch-specific options"
    )]
    pub disable_sbi: Vec<String>,
    /// riscv: mvendorid the guest sees
    #[arg(long, value_name = "ID", value_parser = parse_u64, help_heading = "Arch-specific options")]
    pub custom_mvendorid: Option<u64>,
    /// riscv: marchid the guest sees
    #[arg(long, value_name = "ID", value_parser = parse_u64, help_heading = "Arch-specific options")]
    pub custom_marchid: Option<u64>,
    /// riscv: mimpid the guest sees
    #[arg(long, value_name = "ID", value_parser = parse_u64, help_heading = "Arch-specific options")]
    pub custom_mimpid: Option<u64>,
    /// arm64: give every vCPU a PMUv3 (PPI 23)
    #[arg(long, help_heading = "Arch-specific options")]
    pub pmu: bool,
    /// arm64: limit SVE vector lengths to at most this many bits
    #[arg(long, value_name = "BITS", help_heading = "Arch-specific options")]
    pub sve_max_vl: Option<u32>,
    /// arm64: keep MTE off (it is off by default; kept for kvmtool compatibility)
    #[arg(long, help_heading = "Arch-specific options")]
    pub disable_mte: bool,
    /// arm64: no stolen-time (pvtime) region for the vCPUs
    #[arg(long, help_heading = "Arch-specific options")]
    pub no_pvtime: bool,
    /// arm64: KASLR seed for the guest (0: none; default: random)
    #[arg(long, value_name = "SEED", help_heading = "Arch-specific options")]
    pub kaslr_seed: Option<u64>,
    /// arm64: asynchronous page faults (SDEI event + PPI), where the host has them
    #[arg(
        long,
        value_enum,
        value_name = "MODE",
        help_heading = "Arch-specific options"
    )]
    pub async_pf: Option<AsyncPfMode>,

    // kvmtool arm64 options not implemented yet
    #[arg(long, hide = true)]
    pub aarch32: bool,
    #[arg(long, hide = true)]
    pub vcpu_affinity: Option<String>,
    #[arg(long, hide = true)]
    pub override_bad_firmware_cntfrq: bool,
    #[arg(long, hide = true)]
    pub force_pci: bool,
    #[arg(long, hide = true)]
    pub firmware_address: Option<String>,
}

impl ArchArgs {
    /// Options given that lkvm does not implement yet.
    pub fn unsupported_option(&self) -> Option<&'static str> {
        [
            (self.aarch32, "--aarch32"),
            (self.vcpu_affinity.is_some(), "--vcpu-affinity"),
            (
                self.override_bad_firmware_cntfrq,
                "--override-bad-firmware-cntfrq",
            ),
            (self.force_pci, "--force-pci"),
            (self.firmware_address.is_some(), "--firmware-address"),
        ]
        .iter()
        .find(|(set, _)| *set)
        .map(|(_, name)| *name)
    }

    /// The first option given that does not exist on `arch` (a
    /// `std::env::consts::ARCH` name), with the architectures it exists on.
    pub fn foreign_option(&self, arch: &str) -> Option<(&'static str, &'static str)> {
        const ARM: (&str, &[&str]) = ("arm64", &["aarch64"]);
        const RISCV: (&str, &[&str]) = ("riscv", &["riscv64"]);
        const FDT_IRQCHIP: (&str, &[&str]) = (
            "arm64, riscv and powerpc",
            &["aarch64", "riscv64", "powerpc64"],
        );
        const PPC: (&str, &[&str]) = ("powerpc", &["powerpc64"]);
        let options = [
            (self.irqchip.is_some(), "--irqchip", FDT_IRQCHIP),
            (self.dump_dtb.is_some(), "--dump-dtb", FDT_IRQCHIP),
            (self.mmu.is_some(), "--mmu", PPC),
            (self.pmu, "--pmu", ARM),
            (self.sve_max_vl.is_some(), "--sve-max-vl", ARM),
            (self.disable_mte, "--disable-mte", ARM),
            (self.no_pvtime, "--no-pvtime", ARM),
            (self.kaslr_seed.is_some(), "--kaslr-seed", ARM),
            (self.async_pf.is_some(), "--async-pf", ARM),
            (!self.disable_ext.is_empty(), "--disable-<ext>", RISCV),
            (!self.disable_sbi.is_empty(), "--disable-sbi-<ext>", RISCV),
            (self.custom_mvendorid.is_some(), "--custom-mvendorid", RISCV),
            (self.custom_marchid.is_some(), "--custom-marchid", RISCV),
            (self.custom_mimpid.is_some(), "--custom-mimpid", RISCV),
        ];
        options
            .iter()
            .find(|(set, _, (_, arches))| *set && !arches.contains(&arch))
            .map(|(_, name, (on, _))| (*name, *on))
    }
}

/// Numbers in decimal or with a 0x prefix.
fn parse_u64(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("'{s}' is not a number"))
}

/// Rewrites kvmtool's per-extension RISC-V options (`--disable-zbb`,
/// `--disable-sbi-dbcn`) into lkvm's list options (`--disable-ext zbb`,
/// `--disable-sbi dbcn`). Only names of known extensions are rewritten, so
/// `--disable-mte` and typos reach the parser unchanged.
pub fn rewrite_kvmtool_spellings<I: IntoIterator<Item = std::ffi::OsString>>(
    args: I,
) -> Vec<std::ffi::OsString> {
    use crate::riscv::isa::{isa_ext_id, sbi_ext_id};
    let mut out = Vec::new();
    for arg in args {
        let Some(s) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if let Some(name) = s
            .strip_prefix("--disable-sbi-")
            .filter(|n| sbi_ext_id(n).is_some())
        {
            out.push("--disable-sbi".into());
            out.push(name.into());
        } else if let Some(name) = s
            .strip_prefix("--disable-")
            .filter(|n| isa_ext_id(n).is_some())
        {
            out.push("--disable-ext".into());
            out.push(name.into());
        } else {
            out.push(arg);
        }
    }
    out
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

    // --- Debug options ---
    /// Log every port I/O access
    #[arg(long)]
    pub debug_ioport: bool,
    /// Log every MMIO access
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
    pub debug: bool,
    #[arg(long, hide = true)]
    pub debug_single_step: bool,
    #[arg(long, hide = true)]
    pub debug_iodelay: Option<String>,
    #[arg(long, hide = true)]
    pub vidmode: Option<String>,
}

impl RunArgs {
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
            (self.debug, "--debug"),
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
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("lkvm").chain(args.iter().copied()))
    }

    #[test]
    fn run_takes_kvmtool_short_options() {
        let cli = parse(&[
            "run", "-k", "bz", "-i", "rd", "-p", "quiet", "-c", "2", "-m", "512",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.kernel.as_deref(), Some(std::path::Path::new("bz")));
        assert_eq!(run.initrd.as_deref(), Some(std::path::Path::new("rd")));
        assert_eq!(run.params.as_deref(), Some("quiet"));
        assert_eq!(run.cpus, Some(2));
        assert_eq!(run.mem.as_deref(), Some("512"));
        assert_eq!(run.console, None);
        assert_eq!(run.loglevel, LogLevel::Info);
        assert_eq!(run.unsupported_option(), None);
    }

    #[test]
    fn unimplemented_kvmtool_options_are_recognised_not_ignored() {
        for (args, name) in [
            (&["run", "--vidmode", "0x312"][..], "--vidmode"),
            (&["run", "--vfio-pci", "00:01.0"], "--vfio-pci"),
            (&["run", "--tty", "0"], "--tty"),
        ] {
            let Command::Run(run) = parse(args).unwrap().command else {
                panic!("not run")
            };
            assert_eq!(run.unsupported_option(), Some(name));
        }
    }

    #[test]
    fn unknown_console_and_option_fail_to_parse() {
        assert!(parse(&["run", "--console", "bogus"]).is_err());
        assert!(parse(&["run", "--no-such-option"]).is_err());
    }

    #[test]
    fn arch_options_parse_everywhere_and_know_their_architecture() {
        let Command::Run(run) = parse(&[
            "run",
            "--irqchip",
            "gicv3-its",
            "--pmu",
            "--async-pf",
            "on",
            "--kaslr-seed",
            "7",
            "--dump-dtb",
            "/tmp/x.dtb",
        ])
        .unwrap()
        .command
        else {
            panic!("not run")
        };
        assert_eq!(run.arch.irqchip.as_deref(), Some("gicv3-its"));
        assert_eq!(run.arch.async_pf, Some(AsyncPfMode::On));
        assert_eq!(run.arch.kaslr_seed, Some(7));
        assert_eq!(run.arch.foreign_option("aarch64"), None);
        assert_eq!(
            run.arch.foreign_option("x86_64"),
            Some(("--irqchip", "arm64, riscv and powerpc"))
        );
        let Command::Run(run) = parse(&["run", "--aarch32"]).unwrap().command else {
            panic!("not run")
        };
        assert_eq!(run.unsupported_option(), Some("--aarch32"));
    }

    #[test]
    fn kvmtool_riscv_spellings_become_list_options() {
        let argv = [
            "lkvm",
            "run",
            "--disable-zbb",
            "--disable-sbi-dbcn",
            "--disable-mte",
            "--disable-bogus",
        ];
        let out = rewrite_kvmtool_spellings(argv.iter().map(std::ffi::OsString::from));
        let out: Vec<_> = out.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(
            out,
            vec![
                "lkvm",
                "run",
                "--disable-ext",
                "zbb",
                "--disable-sbi",
                "dbcn",
                "--disable-mte",
                "--disable-bogus"
            ]
        );
        let Command::Run(run) = Cli::try_parse_from(rewrite_kvmtool_spellings(
            [
                "lkvm",
                "run",
                "--disable-svpbmt",
                "--disable-zicboz",
                "--custom-mvendorid",
                "0x489",
            ]
            .iter()
            .map(std::ffi::OsString::from),
        ))
        .unwrap()
        .command
        else {
            panic!("not run")
        };
        assert_eq!(run.arch.disable_ext, vec!["svpbmt", "zicboz"]);
        assert_eq!(run.arch.custom_mvendorid, Some(0x489));
        assert_eq!(
            run.arch.foreign_option("x86_64"),
            Some(("--disable-<ext>", "riscv"))
        );
        assert_eq!(run.arch.foreign_option("riscv64"), None);
        assert!(parse(&["run", "--custom-marchid", "zz"]).is_err());
    }

    #[test]
    fn other_commands_keep_their_arguments() {
        let cli = parse(&["stop", "-n", "guest-1"]).unwrap();
        assert_eq!(cli.command.name(), "stop");
    }
}
