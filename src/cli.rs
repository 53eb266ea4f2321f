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
    /// Set up a rootfs for a guest
    Setup(Unsupported),
    /// List running instances
    List(Unsupported),
    /// Stop a running instance
    Stop(Unsupported),
    /// Pause a running instance
    Pause(Unsupported),
    /// Resume a paused instance
    Resume(Unsupported),
    /// Print statistics about a running instance
    Stat(Unsupported),
    /// Inflate or deflate the balloon of a running instance
    Balloon(Unsupported),
    /// Debug a running instance
    Debug(Unsupported),
    /// Run a command in a sandboxed guest
    Sandbox(Unsupported),
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

/// Arguments of a command lkvm does not implement yet, kept whole so the
/// refusal names the command instead of a parse error.
#[derive(Debug, Args)]
pub struct Unsupported {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub args: Vec<String>,
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

#[derive(Debug, Args)]
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
    /// Console device
    #[arg(long, value_enum, default_value = "serial")]
    pub console: ConsoleKind,
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

    // --- Debug options ---
    /// Log every port I/O access
    #[arg(long)]
    pub debug_ioport: bool,
    /// Log every MMIO access
    #[arg(long)]
    pub debug_mmio: bool,

    // --- kvmtool options lkvm does not implement yet ---
    #[arg(short = 'd', long, hide = true)]
    pub disk: Vec<String>,
    #[arg(long, hide = true)]
    pub balloon: bool,
    #[arg(long, hide = true)]
    pub vnc: bool,
    #[arg(long, hide = true)]
    pub gtk: bool,
    #[arg(long, hide = true)]
    pub sdl: bool,
    #[arg(long, hide = true)]
    pub rng: bool,
    #[arg(long = "9p", hide = true)]
    pub ninep: Vec<String>,
    #[arg(long, hide = true)]
    pub vsock: Option<String>,
    #[arg(long, hide = true)]
    pub tty: Option<String>,
    #[arg(long, hide = true)]
    pub sandbox: Option<String>,
    #[arg(long, hide = true)]
    pub virtio_legacy: bool,
    #[arg(long, hide = true)]
    pub virtio_transport: Option<String>,
    #[arg(short = 'f', long, hide = true)]
    pub firmware: Option<String>,
    #[arg(short = 'F', long, hide = true)]
    pub flash: Option<String>,
    #[arg(short = 'n', long, hide = true)]
    pub network: Vec<String>,
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
            (!self.disk.is_empty(), "--disk"),
            (self.balloon, "--balloon"),
            (self.vnc, "--vnc"),
            (self.gtk, "--gtk"),
            (self.sdl, "--sdl"),
            (self.rng, "--rng"),
            (!self.ninep.is_empty(), "--9p"),
            (self.vsock.is_some(), "--vsock"),
            (self.tty.is_some(), "--tty"),
            (self.sandbox.is_some(), "--sandbox"),
            (self.virtio_legacy, "--virtio-legacy"),
            (self.virtio_transport.is_some(), "--virtio-transport"),
            (self.firmware.is_some(), "--firmware"),
            (self.flash.is_some(), "--flash"),
            (!self.network.is_empty(), "--network"),
            (self.no_dhcp, "--no-dhcp"),
            (!self.vfio_pci.is_empty(), "--vfio-pci"),
            (self.debug, "--debug"),
            (self.debug_single_step, "--debug-single-step"),
            (self.debug_iodelay.is_some(), "--debug-iodelay"),
            (self.vidmode.is_some(), "--vidmode"),
        ];
        given.iter().find(|(set, _)| *set).map(|(_, name)| *name)
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
        assert_eq!(run.console, ConsoleKind::Serial);
        assert_eq!(run.loglevel, LogLevel::Info);
        assert_eq!(run.unsupported_option(), None);
    }

    #[test]
    fn unimplemented_kvmtool_options_are_recognised_not_ignored() {
        for (args, name) in [
            (&["run", "-d", "disk.img"][..], "--disk"),
            (&["run", "--9p", "/tmp,tag"], "--9p"),
            (&["run", "-n", "mode=tap"], "--network"),
            (&["run", "--rng"], "--rng"),
            (&["run", "--vidmode", "0x312"], "--vidmode"),
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
    fn other_commands_keep_their_arguments() {
        let cli = parse(&["stop", "-n", "guest-1"]).unwrap();
        assert_eq!(cli.command.name(), "stop");
    }
}
