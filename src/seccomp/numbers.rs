//! The system call numbers of the names lkvm's lists use, per
//! architecture (libc's `SYS_` constants).

/// This architecture's number for each name lkvm's lists use, where it
/// has the call.
pub(super) fn table() -> &'static [(&'static str, i64)] {
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
