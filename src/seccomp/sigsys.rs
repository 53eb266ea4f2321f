//! What lkvm does when a filter traps: one line naming the thread and the
//! call, then exit, from a SIGSYS handler that only does async-signal-safe
//! work.

use super::{call_name, Error};

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

pub(super) fn catch_sigsys() -> Result<(), Error> {
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
    fn the_sigsys_line_is_built_without_allocating() {
        let mut l = LineBuf::default();
        l.push(b"nr ");
        l.push_num(-42);
        l.push_num(0);
        assert_eq!(&l.buf[..l.len], b"nr -420");
    }
}
