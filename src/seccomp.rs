//! Per-thread system call allow-lists (seccomp), on by default.
//!
//! Each kind of thread lkvm runs gets its own list, installed by the
//! thread itself before it does anything the guest can influence:
//!
//! - `main`: after the VM is built, the terminal, signals and teardown;
//! - `vcpu`: `KVM_RUN` and the device registers its exits reach;
//! - `control`: the control socket and the `/proc` reads of `lkvm debug`;
//! - one per device worker (`virtio-blk`, `virtio-9p`, ...);
//! - `net-user`: a user-mode network card's stack, the only thread that
//!   opens sockets (it is started while the VM is built, before any
//!   filter, so the spawner's list need not have them).
//!
//! Filters are inherited and stack, so a device worker must not be
//! created by a vCPU thread (whose list would then bound it): workers are
//! started by the `spawner` thread, which main creates before any filter
//! and whose list is the union of the device lists.
//!
//! A system call outside a thread's list ends lkvm (`--seccomp on`) with
//! one line naming the thread and the call, or is allowed and logged by
//! the kernel (`--seccomp log`, audit type 1326 in the kernel log). To add
//! a call, find the kind in [`names`] and add the call's name (`libc`'s
//! `SYS_` constant without the prefix); names an architecture does not
//! have are skipped there. docs/seccomp.md says more.

use std::sync::atomic::{AtomicU8, Ordering};

use seccompiler::{sock_filter, BpfProgram};

mod numbers;
mod sigsys;

use numbers::table;
use sigsys::catch_sigsys;

/// `--seccomp`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// No filters
    Off,
    /// Filters that log calls outside the lists (kernel log) and allow them
    Log,
    /// Filters that end lkvm on a call outside the lists
    #[default]
    On,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("seccomp: cannot build the {0} filter: {1}")]
    Build(&'static str, String),
    #[error("seccomp: cannot install the {0} filter: {1}")]
    Install(&'static str, String),
    #[error("seccomp: cannot catch SIGSYS: {0}")]
    Signal(nix::Error),
}

/// The kinds of thread lkvm runs, each with its own list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Main,
    Vcpu,
    Control,
    Spawner,
    /// A user-mode network card's stack (virtio/net/user).
    UserNet,
    Device(Device),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Blk,
    NineP,
    Net,
    Console,
    Rng,
    Balloon,
}

const DEVICES: [Device; 6] = [
    Device::Blk,
    Device::NineP,
    Device::Net,
    Device::Console,
    Device::Rng,
    Device::Balloon,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Main => "main",
            Kind::Vcpu => "vcpu",
            Kind::Control => "control",
            Kind::Spawner => "spawner",
            Kind::UserNet => "net-user",
            Kind::Device(d) => d.name(),
        }
    }

    /// The device kind of a worker thread called `thread` ("virtio-blk0").
    pub fn of_worker(thread: &str) -> Option<Kind> {
        DEVICES
            .into_iter()
            .find(|d| thread.starts_with(d.name()))
            .map(Kind::Device)
    }
}

impl Device {
    pub fn name(self) -> &'static str {
        match self {
            Device::Blk => "virtio-blk",
            Device::NineP => "virtio-9p",
            Device::Net => "virtio-net",
            Device::Console => "virtio-console",
            Device::Rng => "virtio-rng",
            Device::Balloon => "virtio-balloon",
        }
    }
}

/// What every thread needs: memory, locks, signals, its own end, time.
const BASE: &[&str] = &[
    // (fcntl: debug builds check an fd with F_GETFD before closing it.)
    "fcntl",
    "read",
    "write",
    "readv",
    "writev",
    "close",
    "futex",
    "mmap",
    "munmap",
    "mprotect",
    "madvise",
    "mremap",
    "brk",
    "sigaltstack",
    "rt_sigreturn",
    "rt_sigprocmask",
    "rt_sigaction",
    "exit",
    "exit_group",
    "sched_yield",
    "gettid",
    "getpid",
    "tgkill",
    "clock_gettime",
    "clock_nanosleep",
    "nanosleep",
    "restart_syscall",
    "getrandom",
    "sched_getaffinity",
    "prctl",
    "rseq",
];

/// Waiting on fds, the way device workers and the control thread do.
const WAIT: &[&str] = &[
    "epoll_create1",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_ctl",
    "poll",
    "ppoll",
    "eventfd2",
];

/// What a file server does to the files of its share.
const FILES: &[&str] = &[
    "openat",
    "openat2",
    "open",
    "newfstatat",
    "fstat",
    "stat",
    "lstat",
    "statx",
    "getdents64",
    "getdents",
    "unlinkat",
    "mkdirat",
    "renameat",
    "renameat2",
    "linkat",
    "symlinkat",
    "readlinkat",
    "mknodat",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchownat",
    "utimensat",
    "ftruncate",
    "fsync",
    "fdatasync",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "lseek",
    "statfs",
    "fstatfs",
    "flock",
    "fcntl",
    "dup",
    "fallocate",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
];

/// The names of the calls `kind` may make (beyond [`BASE`]).
pub fn names(kind: Kind) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = BASE.to_vec();
    let extra: &[&[&str]] = match kind {
        Kind::Main => &[
            WAIT,
            &[
                "ioctl",
                "poll",
                "ppoll",
                "fcntl",
                "openat",
                "newfstatat",
                "fstat",
                "statx",
                "unlinkat",
                "unlink",
                "lseek",
                "dup",
                "pread64",
            ],
        ],
        Kind::Vcpu => &[
            WAIT,
            &[
                "ioctl",
                "fcntl",
                "dup",
                "dup3",
                "openat",
                "newfstatat",
                "fstat",
                "statx",
                "lseek",
                "pread64",
                // Activating a device builds its state here: the 9p
                // server asks who lkvm runs as and its descriptor limit.
                "geteuid",
                "getuid",
                "prlimit64",
                "getrlimit",
            ],
        ],
        Kind::Control => &[
            WAIT,
            &[
                "accept4",
                "accept",
                "ioctl",
                "openat",
                "newfstatat",
                "fstat",
                "statx",
                "getdents64",
                "getdents",
                "readlinkat",
                "readlink",
                "lseek",
                "fcntl",
                "unlinkat",
                "unlink",
                "recvfrom",
                "sendto",
                "shutdown",
                "getsockopt",
                "setsockopt",
            ],
        ],
        Kind::Spawner => &[
            WAIT,
            FILES,
            &[
                "clone",
                "clone3",
                "set_robust_list",
                "prctl",
                "prlimit64",
                "getrlimit",
                "ioctl",
                // The workers it starts install their own filters.
                "seccomp",
            ],
        ],
        // Host sockets for the guest's flows: made, connected, accepted
        // (hostfwd), read and written, shut down; std's set_nonblocking
        // is an ioctl.
        Kind::UserNet => &[
            WAIT,
            &[
                "socket",
                "connect",
                "bind",
                "accept4",
                "accept",
                "getsockopt",
                "setsockopt",
                "getsockname",
                "getpeername",
                "sendto",
                "recvfrom",
                // PowerPC has calls of their own for these.
                "send",
                "recv",
                "sendmsg",
                "recvmsg",
                "shutdown",
                "ioctl",
            ],
        ],
        Kind::Device(d) => match d {
            Device::Blk => &[
                WAIT,
                &[
                    "ioctl",
                    "pread64",
                    "pwrite64",
                    "preadv",
                    "pwritev",
                    "fsync",
                    "fdatasync",
                    "fallocate",
                    "lseek",
                ],
            ],
            Device::NineP => &[WAIT, FILES, &["ioctl"]],
            Device::Net => &[WAIT, &["ioctl"]],
            Device::Console => &[WAIT, &["ioctl"]],
            Device::Rng => &[WAIT, &["ioctl"]],
            Device::Balloon => &[WAIT, &["ioctl"]],
        },
    };
    for list in extra {
        v.extend_from_slice(list);
    }
    if kind == Kind::Spawner {
        // Whatever a worker may do, the spawner it inherits from must allow.
        for d in DEVICES {
            v.extend(names(Kind::Device(d)));
        }
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// The name of call `nr` on this architecture, if lkvm knows it.
pub fn call_name(nr: i64) -> Option<&'static str> {
    table()
        .iter()
        .find(|(_, n)| *n == nr)
        .map(|(name, _)| *name)
}

/// Calls taken out of a list for a test, from `LKVM_SECCOMP_DENY`
/// (`kind:call,...`, e.g. `vcpu:write`), so a test can make a real device
/// path step outside its list. Debug builds only: a release build never
/// reads it.
fn denied(kind: Kind) -> Vec<String> {
    if !cfg!(debug_assertions) {
        return Vec::new();
    }
    std::env::var("LKVM_SECCOMP_DENY")
        .unwrap_or_default()
        .split(',')
        .filter_map(|entry| entry.split_once(':'))
        .filter(|(k, _)| *k == kind.name())
        .map(|(_, call)| call.to_string())
        .collect()
}

/// The numbers of the calls `kind` may make here.
pub fn numbers(kind: Kind) -> Vec<i64> {
    let t = table();
    let deny = denied(kind);
    let mut v: Vec<i64> = names(kind)
        .iter()
        .filter(|n| !deny.iter().any(|d| d == *n))
        .filter_map(|n| t.iter().find(|(name, _)| name == n).map(|(_, nr)| *nr))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The mode of this process, set once by main.
static MODE: AtomicU8 = AtomicU8::new(0);

fn mode() -> Mode {
    match MODE.load(Ordering::SeqCst) {
        1 => Mode::Log,
        2 => Mode::On,
        _ => Mode::Off,
    }
}

/// Sets the mode every later [`enter`] uses, and catches SIGSYS for `on`.
pub fn configure(m: Mode) -> Result<(), Error> {
    if m == Mode::On {
        catch_sigsys()?;
    }
    MODE.store(
        match m {
            Mode::Off => 0,
            Mode::Log => 1,
            Mode::On => 2,
        },
        Ordering::SeqCst,
    );
    Ok(())
}

/// The filter program of `kind` for this architecture.
pub fn program(kind: Kind, m: Mode) -> Result<BpfProgram, Error> {
    let nrs = numbers(kind);
    build(&nrs, m).map_err(|e| Error::Build(kind.name(), e))
}

cfg_if::cfg_if! {
    if #[cfg(powerpc)] {
        fn build(nrs: &[i64], m: Mode) -> Result<BpfProgram, String> {
            ppc64::program(nrs, m)
        }
    } else {
        fn build(nrs: &[i64], m: Mode) -> Result<BpfProgram, String> {
            use seccompiler::{SeccompAction, SeccompFilter, SeccompRule, TargetArch};
            let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
            let rules: std::collections::BTreeMap<i64, Vec<SeccompRule>> =
                nrs.iter().map(|nr| (*nr, Vec::new())).collect();
            let mismatch = match m {
                Mode::Log => SeccompAction::Log,
                _ => SeccompAction::Trap,
            };
            let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, arch)
                .map_err(|e| e.to_string())?;
            BpfProgram::try_from(filter).map_err(|e| e.to_string())
        }
    }
}

/// Installs `kind`'s filter on the calling thread (nothing with `--seccomp
/// off`). Threads it creates later inherit it.
pub fn enter(kind: Kind) -> Result<(), Error> {
    let m = mode();
    if m == Mode::Off {
        return Ok(());
    }
    let prog = program(kind, m)?;
    seccompiler::apply_filter(&prog).map_err(|e| Error::Install(kind.name(), e.to_string()))
}

pub mod ppc64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_a_call_of_some_architecture_and_lists_are_distinct() {
        for kind in [
            Kind::Main,
            Kind::Vcpu,
            Kind::Control,
            Kind::Spawner,
            Kind::UserNet,
        ]
        .into_iter()
        .chain(DEVICES.map(Kind::Device))
        {
            let n = names(kind);
            assert!(n.contains(&"futex") && n.contains(&"exit"), "{kind:?}");
            assert!(!numbers(kind).is_empty());
        }
        // Only the file server opens files by name; nobody else spawns.
        assert!(!names(Kind::Vcpu).contains(&"mkdirat"));
        assert!(names(Kind::Device(Device::NineP)).contains(&"mkdirat"));
        assert!(!names(Kind::Vcpu).contains(&"clone3"));
        assert!(names(Kind::Spawner).contains(&"clone3"));
        // The spawner's list bounds the workers it starts.
        for d in DEVICES {
            for call in names(Kind::Device(d)) {
                assert!(names(Kind::Spawner).contains(&call), "{call}");
            }
        }
        // No one may start programs or open network connections, but
        // the user-mode network's stack, which opens sockets and nothing
        // else more than a device does.
        for kind in [Kind::Main, Kind::Vcpu, Kind::Control, Kind::Spawner]
            .into_iter()
            .chain(DEVICES.map(Kind::Device))
        {
            for bad in ["execve", "socket", "connect", "ptrace"] {
                assert!(!names(kind).contains(&bad), "{kind:?} {bad}");
            }
        }
        let user = names(Kind::UserNet);
        for call in ["socket", "connect", "accept4"] {
            assert!(user.contains(&call), "{call}");
        }
        for bad in ["execve", "ptrace", "openat", "clone3", "mkdirat"] {
            assert!(!user.contains(&bad), "{bad}");
        }
        assert_eq!(call_name(libc::SYS_read), Some("read"));
        assert_eq!(
            Kind::of_worker("virtio-blk3"),
            Some(Kind::Device(Device::Blk))
        );
        assert_eq!(Kind::of_worker("stuck-worker"), None);
    }

    #[test]
    fn filters_compile_for_every_kind() {
        for kind in [
            Kind::Main,
            Kind::Vcpu,
            Kind::Control,
            Kind::Spawner,
            Kind::UserNet,
        ]
        .into_iter()
        .chain(DEVICES.map(Kind::Device))
        {
            for m in [Mode::Log, Mode::On] {
                assert!(program(kind, m).unwrap().len() > 4);
            }
        }
    }

    #[test]
    fn the_powerpc_program_allows_exactly_its_list() {
        // Run the BPF by hand: a tiny interpreter for the four opcodes.
        let prog = ppc64::program(&[3, 4, 90], Mode::On).unwrap();
        let run = |arch: u32, nr: u32| -> u32 {
            let mut pc = 0usize;
            let mut acc = 0u32;
            loop {
                let i = &prog[pc];
                match i.code {
                    0x20 => acc = if i.k == 4 { arch } else { nr },
                    0x15 => {
                        pc += usize::from(if acc == i.k { i.jt } else { i.jf });
                    }
                    0x06 => return i.k,
                    c => panic!("opcode {c:#x}"),
                }
                pc += 1;
            }
        };
        let a = ppc64::AUDIT_ARCH_PPC64LE;
        for nr in [3, 4, 90] {
            assert_eq!(run(a, nr), 0x7fff_0000, "{nr}");
        }
        assert_eq!(run(a, 5), 0x0003_0000);
        assert_eq!(run(a, 0), 0x0003_0000);
        assert_eq!(
            run(62 | 0xc000_0000, 3),
            0x8000_0000,
            "another architecture"
        );
        let logging = ppc64::program(&[3], Mode::Log).unwrap();
        assert!(ppc64::program(&[1; 251], Mode::On).is_err());
        assert_eq!(logging[logging.len() - 2].k, 0x7ffc_0000);
    }
}
