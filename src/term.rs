//! The host terminal: raw mode while a guest owns it (restored on every exit
//! path, including panics and signals), the Ctrl-A escape, and the traits that
//! connect stdin/stdout to whichever device is the guest's console.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use nix::sys::termios::{self, SetArg, Termios};

/// Receives console input for the guest.
pub trait ConsoleSink: Send + Sync {
    fn queue_input(&self, bytes: &[u8]);

    /// Sends the magic SysRq key `key` the way this console carries it.
    /// False if it cannot.
    fn sysrq(&self, _key: u8) -> bool {
        false
    }
}

/// On an hvc console (PowerPC's hvterm, virtio-console) SysRq is Ctrl-O
/// followed by the key.
pub const HVC_SYSRQ: u8 = 0x0f;

/// The escape key: Ctrl-A, as in QEMU and kvmtool-adjacent tools.
pub const ESCAPE: u8 = 0x01;

/// What the escape filter decided for a chunk of input.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Filtered {
    /// Bytes for the guest.
    pub bytes: Vec<u8>,
    /// The user typed Ctrl-A x.
    pub quit: bool,
}

/// Recognises `Ctrl-A x` (quit) and `Ctrl-A Ctrl-A` (send one Ctrl-A) in the
/// input stream, across read boundaries.
#[derive(Debug, Default)]
pub struct EscapeFilter {
    pending: bool,
}

impl EscapeFilter {
    pub fn feed(&mut self, input: &[u8]) -> Filtered {
        let mut out = Filtered::default();
        for &b in input {
            if self.pending {
                self.pending = false;
                match b {
                    b'x' | b'X' => {
                        out.quit = true;
                        return out;
                    }
                    ESCAPE => out.bytes.push(ESCAPE),
                    other => out.bytes.extend_from_slice(&[ESCAPE, other]),
                }
            } else if b == ESCAPE {
                self.pending = true;
            } else {
                out.bytes.push(b);
            }
        }
        out
    }
}

/// The saved terminal state, for restoring from panic and signal paths.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);
static RAW: AtomicBool = AtomicBool::new(false);

/// True while the host terminal is in raw mode (log lines then need `\r`).
pub fn is_raw() -> bool {
    RAW.load(Ordering::Relaxed)
}

/// Puts stdin's terminal in raw mode for its lifetime; a no-op when stdin is
/// not a terminal.
#[derive(Debug)]
pub struct RawTerminal {
    active: bool,
}

impl RawTerminal {
    pub fn enter() -> Self {
        let stdin = io::stdin();
        let fd = stdin.as_fd();
        let Ok(orig) = termios::tcgetattr(fd) else {
            return RawTerminal { active: false };
        };
        let mut raw = orig.clone();
        termios::cfmakeraw(&mut raw);
        // Keep output post-processing so host-side log lines stay readable.
        raw.output_flags = orig.output_flags;
        if let Err(e) = termios::tcsetattr(fd, SetArg::TCSANOW, &raw) {
            log::warn!("cannot put the terminal in raw mode: {e}");
            return RawTerminal { active: false };
        }
        *crate::bus::lock(&SAVED) = Some(orig);
        RAW.store(true, Ordering::Relaxed);
        install_panic_restore();
        RawTerminal { active: true }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if self.active {
            restore();
        }
    }
}

/// Restores the terminal if lkvm changed it. Safe to call more than once.
pub fn restore() {
    let saved = match SAVED.try_lock() {
        Ok(mut guard) => guard.take(),
        Err(_) => None,
    };
    if let Some(orig) = saved {
        let stdin = io::stdin();
        let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &orig);
        RAW.store(false, Ordering::Relaxed);
    }
}

fn install_panic_restore() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

/// The guest console's output: lkvm's stdout, unbuffered so every byte the
/// guest writes is visible at once.
#[derive(Debug, Default)]
pub struct ConsoleOut;

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut out = io::stdout().lock();
        out.write_all(buf)?;
        out.flush()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stdout().lock().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_bytes_pass_through() {
        let mut f = EscapeFilter::default();
        assert_eq!(
            f.feed(b"ls -l\r"),
            Filtered {
                bytes: b"ls -l\r".to_vec(),
                quit: false
            }
        );
    }

    #[test]
    fn ctrl_a_x_quits_even_across_reads() {
        let mut f = EscapeFilter::default();
        let first = f.feed(b"ab\x01");
        assert_eq!(first.bytes, b"ab");
        assert!(!first.quit);
        let second = f.feed(b"xignored");
        assert!(second.quit);
        assert!(second.bytes.is_empty());
    }

    #[test]
    fn double_ctrl_a_sends_one_and_other_keys_keep_both() {
        let mut f = EscapeFilter::default();
        assert_eq!(f.feed(b"\x01\x01z").bytes, b"\x01z");
        assert_eq!(f.feed(b"\x01c").bytes, b"\x01c");
    }
}
