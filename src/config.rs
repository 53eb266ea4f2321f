//! A validated VM configuration, built from the command line.

use std::path::PathBuf;

use crate::arch::{ArchInfo, RamPlacement};
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
    #[error("no kernel given and none found in {0}; pass one with -k/--kernel")]
    NoKernel(String),
    #[error("-m {0}: a RAM address (@ADDR) is only available on arm64")]
    RamAddrNotHere(String),
    #[error("-m {arg}: RAM at {addr:#x} would overlap the devices below {min:#x}")]
    RamAddrTooLow { arg: String, addr: u64, min: u64 },
    #[error("-m {arg}: the RAM address {addr:#x} must be a multiple of {align:#x}")]
    RamAddrUnaligned { arg: String, addr: u64, align: u64 },
    #[error("-m {0}: RAM would end beyond the 64-bit address space")]
    RamAddrOverflow(String),
    #[error("the kernel command line is {len} bytes; {arch} kernels take at most {max}")]
    CmdlineTooLong {
        len: usize,
        arch: &'static str,
        max: usize,
    },
    #[error("the kernel command line: {0}")]
    CmdlineInvalid(String),
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

/// Parses kvmtool's `-m SIZE[@ADDR]`: a size, and where RAM starts when
/// the architecture lets it move. ADDR is a size (`2G`) or hexadecimal.
pub fn parse_mem(s: &str, arch: &ArchInfo) -> Result<(u64, Option<u64>)> {
    let Some((size, addr)) = s.split_once('@') else {
        return Ok((parse_size(s)?, None));
    };
    let RamPlacement::Movable { min, align, .. } = arch.ram else {
        return Err(Error::RamAddrNotHere(s.to_string()));
    };
    let size = parse_size(size)?;
    let addr = match addr.strip_prefix("0x").or_else(|| addr.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).map_err(|_| Error::BadSize(s.to_string()))?,
        None => parse_size(addr)?,
    };
    if addr < min {
        return Err(Error::RamAddrTooLow {
            arg: s.to_string(),
            addr,
            min,
        });
    }
    if addr % align != 0 {
        return Err(Error::RamAddrUnaligned {
            arg: s.to_string(),
            addr,
            align,
        });
    }
    if addr.checked_add(size).is_none() {
        return Err(Error::RamAddrOverflow(s.to_string()));
    }
    Ok((size, Some(addr)))
}

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
#[derive(Clone, Debug)]
pub struct Host {
    pub cpus: u32,
    pub ram: Option<u64>,
    /// kvmtool's kernel search: the kernel found, or where it looked.
    pub kernel: std::result::Result<PathBuf, Vec<PathBuf>>,
}

impl Host {
    pub fn probe() -> Self {
        Host {
            cpus: host_cpus(),
            ram: host_ram(),
            kernel: crate::loader::search::find_on_host(crate::arch::HOST),
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
    pub arch_info: &'static ArchInfo,
    pub name: String,
    pub cpus: u32,
    pub ram_size: u64,
    /// Where RAM starts, when `-m SIZE@ADDR` moved it.
    pub ram_base: Option<u64>,
    pub kernel: PathBuf,
    /// The kernel was found by kvmtool's search, not given.
    pub kernel_found: bool,
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
    pub seccomp: crate::seccomp::Mode,
}

impl VmConfig {
    /// Validates what can be checked without KVM; `host` fills in defaults.
    pub fn from_args(args: &RunArgs, host: Host) -> Result<VmConfig> {
        Self::from_args_on(args, host, crate::arch::HOST)
    }

    /// [`VmConfig::from_args`] as if running on architecture `arch`.
    pub fn from_args_on(args: &RunArgs, host: Host, arch: &'static ArchInfo) -> Result<VmConfig> {
        if let Some(opt) = args.unsupported_option() {
            return Err(Error::NotSupportedYet(opt));
        }
        if let Some((option, arches)) = args.arch.foreign_option(arch) {
            return Err(Error::ForeignOption { option, arches });
        }
        // The hypervisor console exists only where it is the default.
        let hv_here = arch.default_console == ConsoleKind::Hv;
        let console = match (args.console, hv_here) {
            (None, _) => arch.default_console,
            (Some(ConsoleKind::Serial), false) | (Some(ConsoleKind::Hv), true) => {
                arch.default_console
            }
            (Some(ConsoleKind::Virtio), _) => ConsoleKind::Virtio,
            (Some(ConsoleKind::Hv), false) => return Err(Error::ConsoleHvNotHere),
            (Some(ConsoleKind::Serial), true) => return Err(Error::ConsoleSerialNotHere),
        };
        let cpus = args.cpus.unwrap_or(host.cpus.max(1));
        if cpus == 0 {
            return Err(Error::ZeroCpus);
        }
        let (ram_size, ram_base) = match &args.mem {
            Some(m) => parse_mem(m, arch)?,
            None => (default_ram_size(cpus, host.ram), None),
        };
        if ram_size == 0 {
            return Err(Error::ZeroMemory);
        }
        let name = args.name.clone().unwrap_or_else(default_name);
        if !valid_name(&name) {
            return Err(Error::BadName);
        }
        let virtio = crate::virtio::setup::VirtioConfig::from_args(args, arch, console)?;
        let (kernel, kernel_found) = match (&args.kernel, host.kernel) {
            (Some(k), _) => (k.clone(), false),
            (None, Ok(found)) => (found, true),
            (None, Err(searched)) => {
                let list: Vec<String> = searched.iter().map(|p| p.display().to_string()).collect();
                return Err(Error::NoKernel(list.join(", ")));
            }
        };
        Ok(VmConfig {
            arch_info: arch,
            name,
            cpus,
            ram_size,
            ram_base,
            kernel,
            kernel_found,
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
            seccomp: args.seccomp,
        })
    }

    /// The kernel command line, as kvmtool builds it: the architecture's
    /// defaults with the console the user chose, where the root is (the
    /// 9p rootfs, or `/dev/vda` when the first disk is the root and `-p`
    /// names no `root=`), then the user's parameters. `--nodefaults`
    /// passes `-p` alone, verbatim. Checked against the kernel's
    /// `COMMAND_LINE_SIZE` rather than truncated by the guest.
    pub fn cmdline(&self, arch_defaults: &str) -> Result<String> {
        let mut parts: Vec<String> = Vec::new();
        if !self.nodefaults {
            let defaults = match self.console {
                // virtio-console is hvc0, or hvc1 next to PowerPC's hvterm.
                ConsoleKind::Virtio if arch_defaults.contains("console=hvc0") => {
                    arch_defaults.replace("console=hvc0", "console=hvc1")
                }
                ConsoleKind::Virtio => arch_defaults.replace("console=ttyS0", "console=hvc0"),
                _ => arch_defaults.to_string(),
            };
            parts.push(defaults);
            let user_root = self
                .params
                .split_whitespace()
                .any(|w| w.starts_with("root="));
            if self.virtio.rootfs.is_some() {
                parts.push(crate::rootfs::ROOT_PARAMS.to_string());
            } else if self.virtio.root_on_disk() && !user_root {
                parts.push(ROOT_DISK_PARAMS.to_string());
            }
        }
        parts.push(self.params.clone());
        let parts: Vec<&str> = parts
            .iter()
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .collect();
        let max = self.arch_info.cmdline_size;
        let len = parts
            .iter()
            .map(|p| p.len() + 1)
            .sum::<usize>()
            .saturating_sub(1);
        if len >= max {
            return Err(Error::CmdlineTooLong {
                len,
                arch: self.arch_info.display,
                max: max - 1,
            });
        }
        let mut line = linux_loader::cmdline::Cmdline::new(max)
            .map_err(|e| Error::CmdlineInvalid(e.to_string()))?;
        for part in parts {
            line.insert_str(part)
                .map_err(|e| Error::CmdlineInvalid(e.to_string()))?;
        }
        let text = line
            .as_cstring()
            .map_err(|e| Error::CmdlineInvalid(e.to_string()))?;
        Ok(text.to_string_lossy().into_owned())
    }
}

/// Where the guest finds its root when it is the first disk (kvmtool's).
pub const ROOT_DISK_PARAMS: &str = "root=/dev/vda rw";

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
        Host {
            cpus,
            ram: None,
            kernel: Err(vec!["./bzImage".into(), "/boot/vmlinuz-r".into()]),
        }
    }

    fn run_args(args: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(["lkvm", "run"].iter().chain(args.iter())).unwrap();
        match cli.command {
            Command::Run(r) => r.into_args().unwrap(),
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
        assert_eq!(
            err(&[]),
            Error::NoKernel("./bzImage, /boot/vmlinuz-r".into())
        );
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
        use crate::arch::{AARCH64, POWERPC64, X86_64};
        let on = |a: &[&str], arch| VmConfig::from_args_on(&run_args(a), host(1), arch);
        assert_eq!(
            on(&["-k", "k", "--pmu"], &X86_64).unwrap_err(),
            Error::ForeignOption {
                option: "--pmu",
                arches: "arm64"
            }
        );
        assert!(on(&["-k", "k", "--pmu"], &AARCH64).unwrap().arch.arm64.pmu);
        assert_eq!(
            on(&["-k", "k"], &POWERPC64).unwrap().console,
            ConsoleKind::Hv
        );
        assert_eq!(
            on(&["-k", "k"], &X86_64).unwrap().console,
            ConsoleKind::Serial
        );
        assert_eq!(
            on(&["-k", "k", "--console", "serial"], &POWERPC64).unwrap_err(),
            Error::ConsoleSerialNotHere
        );
        assert!(on(&["-k", "k", "--mmu", "hash"], &POWERPC64).is_ok());
        assert_eq!(
            err(&["-k", "k", "-d", "x.img", "--hostfs-rw"]),
            Error::Virtio(crate::virtio::setup::ConfigError::NoHostfs)
        );
    }

    #[test]
    fn a_kernel_found_by_the_search_is_used_and_said_so() {
        let mut h = host(1);
        h.kernel = Ok("arch/x86/boot/bzImage".into());
        let cfg = VmConfig::from_args(&run_args(&[]), h.clone()).unwrap();
        assert_eq!(cfg.kernel, PathBuf::from("arch/x86/boot/bzImage"));
        assert!(cfg.kernel_found);
        let cfg = VmConfig::from_args(&run_args(&["mine"]), h).unwrap();
        assert_eq!((cfg.kernel, cfg.kernel_found), ("mine".into(), false));
    }

    #[test]
    fn ram_moves_only_where_the_architecture_lets_it() {
        use crate::arch::{AARCH64, X86_64};
        assert_eq!(parse_mem("1G", &X86_64), Ok((1 << 30, None)));
        assert_eq!(
            parse_mem("1G@2G", &X86_64),
            Err(Error::RamAddrNotHere("1G@2G".into()))
        );
        assert_eq!(parse_mem("1G@4G", &AARCH64), Ok((1 << 30, Some(4 << 30))));
        assert_eq!(
            parse_mem("512@0x100000000", &AARCH64),
            Ok((512 << 20, Some(1 << 32)))
        );
        assert_eq!(
            parse_mem("1G@0x1000", &AARCH64),
            Err(Error::RamAddrTooLow {
                arg: "1G@0x1000".into(),
                addr: 0x1000,
                min: 0x8000_0000
            })
        );
        assert!(matches!(
            parse_mem("1G@0x80100000", &AARCH64),
            Err(Error::RamAddrUnaligned { .. })
        ));
        assert!(matches!(parse_mem("1G@", &AARCH64), Err(Error::BadSize(_))));
        assert!(matches!(
            parse_mem("1G@0xffffffffffe00000", &AARCH64),
            Err(Error::RamAddrOverflow(_))
        ));
    }

    #[test]
    fn cmdline_puts_user_params_after_defaults_and_the_root_between() {
        let dir = std::env::temp_dir().join(format!("lkvm-cmdline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("disk.img");
        std::fs::write(&img, [0u8; 512]).unwrap();
        let img = img.to_str().unwrap();
        let cfg = |a: &[&str]| VmConfig::from_args(&run_args(a), host(1)).unwrap();
        let line = |a: &[&str]| cfg(a).cmdline("console=ttyS0").unwrap();
        // The first disk is the root, unless -p names one.
        assert_eq!(
            line(&["-k", "k", "-d", img, "-p", "quiet"]),
            "console=ttyS0 root=/dev/vda rw quiet"
        );
        assert_eq!(
            line(&["-k", "k", "-d", img, "-p", "root=/dev/vdb"]),
            "console=ttyS0 root=/dev/vdb"
        );
        assert_eq!(
            line(&["-k", "k", "-d", img, "-p", "nfsroot=x"]),
            "console=ttyS0 root=/dev/vda rw nfsroot=x"
        );
        // An initrd without a disk is its own root.
        assert_eq!(
            line(&["-k", "k", "-i", "rd", "-p", "quiet"]),
            "console=ttyS0 quiet"
        );
        // Nothing to boot: the default rootfs over 9p, with the host's /.
        let c = cfg(&["-k", "k"]);
        assert!(c.virtio.default_rootfs);
        assert_eq!(c.virtio.hostfs, Some(false));
        assert_eq!(
            c.cmdline("console=ttyS0").unwrap(),
            format!("console=ttyS0 {}", crate::rootfs::ROOT_PARAMS)
        );
        // --nodefaults: -p verbatim, whatever the devices.
        assert_eq!(
            line(&["-k", "k", "-d", img, "--nodefaults", "-p", " a  b "]),
            "a  b"
        );
        let c = cfg(&["-k", "k", "--nodefaults"]);
        assert!(!c.virtio.default_rootfs && c.virtio.hostfs.is_none());
        assert_eq!(c.cmdline("console=ttyS0").unwrap(), "");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cmdlines_longer_than_the_kernel_takes_are_one_error() {
        let with_p = |p: &str, arch| {
            let args = run_args(&["-k", "k", "-i", "rd", "-p", p]);
            VmConfig::from_args_on(&args, host(1), arch).unwrap()
        };
        // COMMAND_LINE_SIZE counts the NUL.
        let fits = "x".repeat(2047);
        assert_eq!(
            with_p(&fits, &crate::arch::X86_64).cmdline("").unwrap(),
            fits
        );
        let e = with_p(&"x".repeat(2048), &crate::arch::X86_64)
            .cmdline("")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the kernel command line is 2048 bytes; x86_64 kernels take at most 2047"
        );
        // RISC-V kernels take half as much; the defaults count too.
        let c = with_p(&"y".repeat(1023), &crate::arch::RISCV64);
        assert!(c.cmdline("").is_ok());
        assert_eq!(
            c.cmdline("console=ttyS0").unwrap_err(),
            Error::CmdlineTooLong {
                len: 1037,
                arch: crate::arch::RISCV64.display,
                max: 1023
            }
        );
        // What linux-loader refuses (a tab) is one error too.
        let e = with_p("a\tb", &crate::arch::X86_64)
            .cmdline("")
            .unwrap_err();
        assert!(matches!(e, Error::CmdlineInvalid(_)), "{e}");
    }

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        let text = "MemTotal:       24576000 kB\nMemFree:  1 kB\n";
        assert_eq!(parse_meminfo(text), Some(24_576_000 * 1024));
        assert_eq!(parse_meminfo("nothing"), None);
    }
}
