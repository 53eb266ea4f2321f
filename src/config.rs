//! A validated VM configuration, built from the command line.

use std::path::PathBuf;

use crate::cli::{ArchArgs, ConsoleKind, RunArgs};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("invalid size '{0}': expected a number with an optional B, K, M, G, T or P suffix")]
    BadSize(String),
    #[error("size '{0}' is too large")]
    SizeOverflow(String),
    #[error("-m/--mem must be larger than 0")]
    ZeroMemory,
    #[error("-c/--cpus must be at least 1")]
    ZeroCpus,
    #[error("no kernel to boot: pass one with -k/--kernel")]
    NoKernel,
    #[error("option {0} is not supported yet")]
    NotSupportedYet(&'static str),
    #[error("--console hv is only available on PowerPC")]
    ConsoleHvNotHere,
    #[error("--console serial: sPAPR guests have no 8250 UART; use --console hv")]
    ConsoleSerialNotHere,
    #[error("--name must be non-empty and may use only letters, digits, '-', '_' and '.'")]
    BadName,
    #[error(transparent)]
    Virtio(#[from] crate::virtio::setup::ConfigError),
    #[error("option {option} is only available on {arches}")]
    ForeignOption {
        option: &'static str,
        arches: &'static str,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

const MIB: u64 = 1 << 20;

/// Parses kvmtool's `size[BKMGTP]`; a bare number is MiB.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    if digits.is_empty() {
        return Err(Error::BadSize(s.to_string()));
    }
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "M" => 20,
        "B" => 0,
        "K" => 10,
        "G" => 30,
        "T" => 40,
        "P" => 50,
        _ => return Err(Error::BadSize(s.to_string())),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| Error::SizeOverflow(s.to_string()))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| Error::SizeOverflow(s.to_string()))
}

/// kvmtool's default RAM size: 64 MiB per vCPU plus 192 MiB, but no more
/// than 80% of the host's RAM.
pub fn default_ram_size(cpus: u32, host_ram: Option<u64>) -> u64 {
    let size = 64 * MIB * (u64::from(cpus) + 3);
    match host_ram {
        Some(host) => size.min(host / 5 * 4 / MIB * MIB),
        None => size,
    }
}

/// What the configuration needs to know about the host.
#[derive(Clone, Copy, Debug)]
pub struct Host {
    pub cpus: u32,
    pub ram: Option<u64>,
}

impl Host {
    pub fn probe() -> Self {
        Host {
            cpus: host_cpus(),
            ram: host_ram(),
        }
    }
}

/// The guest name kvmtool would pick.
pub fn default_name() -> String {
    format!("guest-{}", std::process::id())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    pub name: String,
    pub cpus: u32,
    pub ram_size: u64,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// User parameters (`-p`), appended after the architecture defaults.
    pub params: String,
    pub nodefaults: bool,
    pub console: ConsoleKind,
    pub dev: PathBuf,
    pub hugetlbfs: Option<PathBuf>,
    pub debug_ioport: bool,
    pub debug_mmio: bool,
    /// Architecture-specific options, already checked to exist on this host.
    pub arch: ArchArgs,
    pub virtio: crate::virtio::setup::VirtioConfig,
}

impl VmConfig {
    /// Validates what can be checked without KVM; `host` fills in defaults.
    pub fn from_args(args: &RunArgs, host: Host) -> Result<VmConfig> {
        Self::from_args_on(args, host, std::env::consts::ARCH)
    }

    /// [`VmConfig::from_args`] as if running on architecture `arch`.
    pub fn from_args_on(args: &RunArgs, host: Host, arch: &str) -> Result<VmConfig> {
        if let Some(opt) = args.unsupported_option() {
            return Err(Error::NotSupportedYet(opt));
        }
        if let Some((option, arches)) = args.arch.foreign_option(arch) {
            return Err(Error::ForeignOption { option, arches });
        }
        let powerpc = arch == "powerpc64";
        let console = match (args.console, powerpc) {
            (None, false) | (Some(ConsoleKind::Serial), false) => ConsoleKind::Serial,
            (None, true) | (Some(ConsoleKind::Hv), true) => ConsoleKind::Hv,
            (Some(ConsoleKind::Virtio), _) => ConsoleKind::Virtio,
            (Some(ConsoleKind::Hv), false) => return Err(Error::ConsoleHvNotHere),
            (Some(ConsoleKind::Serial), true) => return Err(Error::ConsoleSerialNotHere),
        };
        let cpus = args.cpus.unwrap_or(host.cpus.max(1));
        if cpus == 0 {
            return Err(Error::ZeroCpus);
        }
        let ram_size = match &args.mem {
            Some(m) => parse_size(m)?,
            None => default_ram_size(cpus, host.ram),
        };
        if ram_size == 0 {
            return Err(Error::ZeroMemory);
        }
        let name = args.name.clone().unwrap_or_else(default_name);
        if !valid_name(&name) {
            return Err(Error::BadName);
        }
        let virtio = crate::virtio::setup::VirtioConfig::from_args(args, arch, console)?;
        Ok(VmConfig {
            name,
            cpus,
            ram_size,
            kernel: args.kernel.clone().ok_or(Error::NoKernel)?,
            initrd: args.initrd.clone(),
            params: args.params.clone().unwrap_or_default(),
            nodefaults: args.nodefaults,
            console,
            dev: args.dev.clone(),
            hugetlbfs: args.hugetlbfs.clone(),
            debug_ioport: args.debug_ioport,
            debug_mmio: args.debug_mmio,
            arch: args.arch.clone(),
            virtio,
        })
    }

    /// The kernel command line: architecture defaults (unless
    /// `--nodefaults`), with the console the user chose, followed by the
    /// user's parameters.
    pub fn cmdline(&self, arch_defaults: &str) -> String {
        let defaults = match self.console {
            // virtio-console is hvc0, or hvc1 next to PowerPC's hvterm.
            ConsoleKind::Virtio if arch_defaults.contains("console=hvc0") => {
                arch_defaults.replace("console=hvc0", "console=hvc1")
            }
            ConsoleKind::Virtio => arch_defaults.replace("console=ttyS0", "console=hvc0"),
            _ => arch_defaults.to_string(),
        };
        let mut parts = Vec::new();
        if !self.nodefaults && !defaults.is_empty() {
            parts.push(defaults.as_str());
        }
        // The guest must know where its root is, defaults or not.
        if self.virtio.rootfs.is_some() {
            parts.push(crate::rootfs::ROOT_PARAMS);
        }
        if !self.params.is_empty() {
            parts.push(self.params.as_str());
        }
        parts.join(" ")
    }
}

/// Host RAM in bytes, from `/proc/meminfo`.
pub fn host_ram() -> Option<u64> {
    parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Online host CPUs.
pub fn host_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn host(cpus: u32) -> Host {
        Host { cpus, ram: None }
    }

    fn run_args(args: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(["lkvm", "run"].iter().chain(args.iter())).unwrap();
        match cli.command {
            Command::Run(r) => *r,
            _ => unreachable!(),
        }
    }

    #[test]
    fn sizes_default_to_mib_and_take_suffixes() {
        assert_eq!(parse_size("256"), Ok(256 * MIB));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("4096K"), Ok(4 << 20));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("1P"), Ok(1 << 50));
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn bad_sizes_are_rejected() {
        for bad in ["", "M", "12Q", "1.5G", "-1", "0x100", "1GB"] {
            assert_eq!(parse_size(bad), Err(Error::BadSize(bad.into())), "{bad}");
        }
        assert_eq!(
            parse_size("99999999999P"),
            Err(Error::SizeOverflow("99999999999P".into()))
        );
        assert_eq!(
            parse_size("99999999999999999999999"),
            Err(Error::SizeOverflow("99999999999999999999999".into()))
        );
    }

    #[test]
    fn defaults_follow_kvmtool() {
        let cfg = VmConfig::from_args(&run_args(&["-k", "k"]), host(2)).unwrap();
        assert_eq!(cfg.cpus, 2);
        assert_eq!(cfg.ram_size, 320 * MIB);
        assert!(cfg.name.starts_with("guest-"));
        assert_eq!(default_ram_size(1, None), 256 * MIB);
        // capped at 80% of a small host, in whole MiB
        assert_eq!(default_ram_size(100_000, Some(1000 * MIB)), 800 * MIB);
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let err = |a: &[&str]| VmConfig::from_args(&run_args(a), host(1)).unwrap_err();
        assert_eq!(err(&["-k", "k", "-m", "0"]), Error::ZeroMemory);
        assert_eq!(err(&["-k", "k", "-c", "0"]), Error::ZeroCpus);
        assert_eq!(err(&[]), Error::NoKernel);
        assert_eq!(
            err(&["-k", "k", "--console", "hv"]),
            Error::ConsoleHvNotHere
        );
        assert_eq!(
            err(&["-k", "k", "-d", "x.img,direct"]),
            Error::Virtio(crate::virtio::setup::ConfigError::Disk(
                "--disk 'x.img,direct': 'direct' (O_DIRECT) is not supported yet; drop it".into()
            ))
        );
        assert!(matches!(
            err(&["-k", "k", "--9p", "/nonexistent/dir,tag"]),
            Error::Virtio(crate::virtio::setup::ConfigError::Share(_))
        ));
        assert_eq!(err(&["-k", "k", "--name", "a/b"]), Error::BadName);
        let on = |a: &[&str], arch| VmConfig::from_args_on(&run_args(a), host(1), arch);
        assert_eq!(
            on(&["-k", "k", "--pmu"], "x86_64").unwrap_err(),
            Error::ForeignOption {
                option: "--pmu",
                arches: "arm64"
            }
        );
        assert!(on(&["-k", "k", "--pmu"], "aarch64").unwrap().arch.pmu);
        assert_eq!(
            on(&["-k", "k"], "powerpc64").unwrap().console,
            ConsoleKind::Hv
        );
        assert_eq!(
            on(&["-k", "k"], "x86_64").unwrap().console,
            ConsoleKind::Serial
        );
        assert_eq!(
            on(&["-k", "k", "--console", "serial"], "powerpc64").unwrap_err(),
            Error::ConsoleSerialNotHere
        );
        assert!(on(&["-k", "k", "--mmu", "hash"], "powerpc64").is_ok());
    }

    #[test]
    fn cmdline_puts_user_params_after_defaults() {
        let mut cfg = VmConfig::from_args(&run_args(&["-k", "k", "-p", "quiet"]), host(1)).unwrap();
        assert_eq!(cfg.cmdline("console=ttyS0"), "console=ttyS0 quiet");
        cfg.nodefaults = true;
        assert_eq!(cfg.cmdline("console=ttyS0"), "quiet");
        cfg.params.clear();
        assert_eq!(cfg.cmdline("console=ttyS0"), "");
    }

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        let text = "MemTotal:       24576000 kB\nMemFree:  1 kB\n";
        assert_eq!(parse_meminfo(text), Some(24_576_000 * 1024));
        assert_eq!(parse_meminfo("nothing"), None);
    }
}
