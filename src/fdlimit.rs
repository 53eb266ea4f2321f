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

/// Raises the soft descriptor limit to the hard one; returns the soft
/// limit in force afterwards. Failing to raise it is not an error: the
/// shares below follow whatever limit there is.
pub fn raise() -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return FALLBACK;
    };
    if soft >= hard {
        return soft;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            log::debug!("descriptor limit raised from {soft} to {hard}");
            hard
        }
        Err(e) => {
            log::debug!("descriptor limit stays {soft} (raising it to {hard}: {e})");
            soft
        }
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

    #[test]
    fn raising_never_lowers_the_limit() {
        let before = soft_limit();
        let after = raise();
        assert!(after >= before);
        assert_eq!(soft_limit(), after);
        assert_eq!(raise(), after);
    }
}
