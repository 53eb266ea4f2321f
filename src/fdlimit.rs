//! lkvm's file descriptors, shared between what a guest can make it open
//! (9p files, user-mode network flows) and what lkvm itself needs (vCPUs,
//! eventfds, the control socket, device resets).
//!
//! `lkvm run` raises its soft `RLIMIT_NOFILE` to the hard limit first, as
//! a process that serves many files should (the soft limit of 1024 exists
//! for `select(2)`, which lkvm never uses). Each guest-facing user of
//! descriptors then takes at most a quarter of the limit, so a guest that
//! opens all it may still leaves lkvm the descriptors it runs on.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// The soft limit assumed when it cannot be read.
const FALLBACK: u64 = 1024;
/// Never fewer than this many per user, however low the limit.
const FLOOR: usize = 16;

/// Raises the soft descriptor limit to the hard one. Failing to raise it
/// is not an error: the shares below follow whatever limit there is.
pub fn raise() {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft >= hard {
        return;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => log::debug!("descriptor limit raised from {soft} to {hard}"),
        Err(e) => log::debug!("descriptor limit stays {soft} (raising it to {hard}: {e})"),
    }
}

/// The soft descriptor limit now in force.
pub fn soft_limit() -> u64 {
    getrlimit(Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(FALLBACK)
}

/// How many descriptors one guest-facing user may hold under a soft limit
/// of `soft`: a quarter of it, at least [`FLOOR`], at most `cap`.
pub fn share(soft: u64, cap: usize) -> usize {
    usize::try_from(soft / 4)
        .unwrap_or(usize::MAX)
        .clamp(FLOOR, cap.max(FLOOR))
}

/// [`share`] of the limit now in force.
pub fn share_now(cap: usize) -> usize {
    share(soft_limit(), cap)
}

// `raise` is tested on a running lkvm (tests/tiny_guests.rs): raising the
// limit of the unit-test process would race the 9p tests that read it.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_is_a_quarter_between_the_floor_and_the_cap() {
        assert_eq!(share(1024, 4096), 256);
        assert_eq!(share(1 << 20, 4096), 4096);
        assert_eq!(share(1 << 20, 1024), 1024);
        assert_eq!(share(40, 4096), FLOOR);
        assert_eq!(share(0, 4096), FLOOR);
        assert_eq!(share(u64::MAX, 4096), 4096);
        assert_eq!(share(1 << 20, 0), FLOOR);
    }
}
