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

/// This architecture's number for each name lkvm's lists use, where it
/// has the call.
fn table() -> &'static [(&'static str, i64)] {
    macro_rules! calls {
        ($($name:ident),* $(,)?) => {
            &[$((stringify!($name), libc::$name as i64)),*]
        };
    }
    // Every architecture has these.
    const GENERIC: &[(&str, i64)] = calls![
        SYS_read,
        SYS_write,
        SYS_readv,
        SYS_writev,
        SYS_close,
        SYS_futex,
        SYS_mmap,
        SYS_munmap,
        SYS_mprotect,
        SYS_madvise,
        SYS_mremap,
        SYS_brk,
        SYS_sigaltstack,
        SYS_rt_sigreturn,
        SYS_rt_sigprocmask,
        SYS_rt_sigaction,
        SYS_exit,
        SYS_exit_group,
        SYS_sched_yield,
        SYS_gettid,
        SYS_getpid,
        SYS_tgkill,
        SYS_clock_gettime,
        SYS_clock_nanosleep,
        SYS_nanosleep,
        SYS_restart_syscall,
        SYS_getrandom,
        SYS_sched_getaffinity,
        SYS_rseq,
        SYS_epoll_pwait,
        SYS_epoll_pwait2,
        SYS_epoll_ctl,
        SYS_ppoll,
        SYS_eventfd2,
        SYS_epoll_create1,
        SYS_openat,
        SYS_openat2,
        SYS_newfstatat,
        SYS_fstat,
        SYS_statx,
        SYS_getdents64,
        SYS_unlinkat,
        SYS_mkdirat,
        SYS_renameat2,
        SYS_linkat,
        SYS_symlinkat,
        SYS_readlinkat,
        SYS_mknodat,
        SYS_fchmod,
        SYS_fchmodat,
        SYS_fchown,
        SYS_fchownat,
        SYS_utimensat,
        SYS_ftruncate,
        SYS_fsync,
        SYS_fdatasync,
        SYS_pread64,
        SYS_pwrite64,
        SYS_preadv,
        SYS_pwritev,
        SYS_lseek,
        SYS_statfs,
        SYS_fstatfs,
        SYS_flock,
        SYS_fcntl,
        SYS_dup,
        SYS_dup3,
        SYS_fallocate,
        SYS_getuid,
        SYS_geteuid,
        SYS_getgid,
        SYS_getegid,
        SYS_ioctl,
        SYS_accept4,
        SYS_accept,
        SYS_recvfrom,
        SYS_sendto,
        SYS_shutdown,
        SYS_getsockopt,
        SYS_setsockopt,
        SYS_socket,
        SYS_connect,
        SYS_bind,
        SYS_getsockname,
        SYS_getpeername,
        SYS_sendmsg,
        SYS_recvmsg,
        SYS_seccomp,
        SYS_clone,
        SYS_clone3,
        SYS_set_robust_list,
        SYS_prctl,
        SYS_prlimit64,
    ];
    cfg_if::cfg_if! {
        if #[cfg(any(x86, powerpc))] {
            // The older calls these two still have; glibc uses some.
            const OLD: &[(&str, i64)] = calls![
                SYS_epoll_wait, SYS_poll, SYS_open, SYS_stat, SYS_lstat, SYS_renameat,
                SYS_getdents, SYS_readlink, SYS_unlink, SYS_getrlimit,
            ];
        } else {
            const OLD: &[(&str, i64)] = &[];
        }
    }
    cfg_if::cfg_if! {
        if #[cfg(powerpc)] {
            // PowerPC's own send and recv, which its glibc calls where the
            // others' use sendto and recvfrom.
            const SEND_RECV: &[(&str, i64)] = calls![SYS_send, SYS_recv];
        } else {
            const SEND_RECV: &[(&str, i64)] = &[];
        }
    }
    static TABLE: std::sync::OnceLock<Vec<(&'static str, i64)>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        GENERIC
            .iter()
            .chain(OLD)
            .chain(SEND_RECV)
            .map(|(n, nr)| (n.trim_start_matches("SYS_"), *nr))
            .collect()
    })
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

/// The BPF of a plain allow-list, for the one architecture seccompiler
/// does not know (PowerPC): check the architecture, then the call number
/// against each allowed one.
pub mod ppc64 {
    use super::{sock_filter, BpfProgram, Mode};

    /// `AUDIT_ARCH_PPC64LE`: EM_PPC64 | 64-bit | little-endian.
    pub const AUDIT_ARCH_PPC64LE: u32 = 21 | 0x8000_0000 | 0x4000_0000;
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
    const SECCOMP_RET_TRAP: u32 = 0x0003_0000;
    const SECCOMP_RET_LOG: u32 = 0x7ffc_0000;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    /// `struct seccomp_data`: nr at 0, arch at 4.
    const NR: u32 = 0;
    const ARCH: u32 = 4;

    fn stmt(code: u16, k: u32) -> sock_filter {
        sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }

    fn jeq(k: u32, jt: u8, jf: u8) -> sock_filter {
        sock_filter {
            code: JEQ_K,
            jt,
            jf,
            k,
        }
    }

    /// Jumps are 8-bit: a list this long no longer fits.
    pub const MAX_CALLS: usize = 250;

    pub fn program(nrs: &[i64], m: Mode) -> Result<BpfProgram, String> {
        if nrs.len() > MAX_CALLS {
            return Err(format!("{} calls, at most {MAX_CALLS}", nrs.len()));
        }
        let miss = if m == Mode::Log {
            SECCOMP_RET_LOG
        } else {
            SECCOMP_RET_TRAP
        };
        let mut p = vec![
            stmt(LD_W_ABS, ARCH),
            jeq(AUDIT_ARCH_PPC64LE, 1, 0),
            stmt(RET_K, SECCOMP_RET_KILL_PROCESS),
            stmt(LD_W_ABS, NR),
        ];
        for nr in nrs {
            // A match jumps over the instructions to "allow" at the end.
            p.push(jeq(*nr as u32, 0, 0));
        }
        let n = nrs.len();
        for (i, ins) in p.iter_mut().skip(4).enumerate() {
            // From instruction 4+i, the miss return is n-i-1 ahead, the
            // allow return one further.
            ins.jt = u8::try_from(n - i).unwrap_or(u8::MAX);
        }
        p.push(stmt(RET_K, miss));
        p.push(stmt(RET_K, SECCOMP_RET_ALLOW));
        Ok(p)
    }
}

/// `SIGSYS` from a trapping filter: one line naming the thread and the
/// call, the terminal restored, lkvm ends. Only async-signal-safe work.
extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler;
    // for SIGSYS, the system call number is the int at offset 24 of it
    // (the `_sigsys` member: call address at 16, number at 24).
    let nr = unsafe { std::ptr::read_unaligned((info as *const u8).add(24) as *const libc::c_int) };
    let mut thread = [0u8; 17];
    // SAFETY: PR_GET_NAME writes at most 16 bytes and a NUL into `thread`.
    unsafe { libc::prctl(libc::PR_GET_NAME, thread.as_mut_ptr()) };
    let mut line = LineBuf::default();
    line.push(b"lkvm: error: seccomp: thread ");
    let name_len = thread.iter().position(|b| *b == 0).unwrap_or(16);
    line.push(&thread[..name_len]);
    line.push(b" made system call ");
    line.push_num(i64::from(nr));
    if let Some(name) = call_name(i64::from(nr)) {
        line.push(b" (");
        line.push(name.as_bytes());
        line.push(b")");
    }
    line.push(b", which its allow-list does not have (see docs/seccomp.md)\n");
    crate::term::restore();
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is ours.
    unsafe {
        libc::write(2, line.buf.as_ptr().cast(), line.len);
        libc::_exit(crate::control::EXIT_ERROR);
    }
}

/// A line built without allocating, for the signal handler.
struct LineBuf {
    buf: [u8; 256],
    len: usize,
}

impl Default for LineBuf {
    fn default() -> Self {
        LineBuf {
            buf: [0; 256],
            len: 0,
        }
    }
}

impl LineBuf {
    fn push(&mut self, s: &[u8]) {
        for b in s {
            if self.len < self.buf.len() {
                self.buf[self.len] = *b;
                self.len += 1;
            }
        }
    }

    fn push_num(&mut self, n: i64) {
        if n < 0 {
            self.push(b"-");
        }
        let mut digits = [0u8; 20];
        let mut v = n.unsigned_abs();
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

fn catch_sigsys() -> Result<(), Error> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::SigAction(on_sigsys),
        SaFlags::SA_SIGINFO,
        SigSet::empty(),
    );
    // SAFETY: the handler only makes async-signal-safe calls.
    unsafe { sigaction(Signal::SIGSYS, &action) }
        .map(|_| ())
        .map_err(Error::Signal)
}

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

    #[test]
    fn the_sigsys_line_is_built_without_allocating() {
        let mut l = LineBuf::default();
        l.push(b"nr ");
        l.push_num(-42);
        l.push_num(0);
        assert_eq!(&l.buf[..l.len], b"nr -420");
    }
}
