//! lkvm's logger: `lkvm: <level>: message` on stderr, filtered by
//! `--loglevel`, with CR-LF line ends while the terminal is raw.
//!
//! Much of what lkvm logs happens because the guest did something (an
//! access no device handles, a malformed request), and a guest can do it
//! millions of times a second. Every log statement is therefore limited to
//! a burst of [`BURST`] records per second; what it would have said beyond
//! that is counted and reported once its next second begins.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Records one log statement may write per [`WINDOW`].
pub const BURST: u32 = 20;
pub const WINDOW: Duration = Duration::from_secs(1);
/// Log statements tracked at once; lkvm has far fewer, so this only
/// bounds the table if something logs from generated call sites.
const MAX_SITES: usize = 4096;

/// One log statement's current window.
struct Site {
    start: Instant,
    written: u32,
    suppressed: u64,
}

/// Per-statement rate limiting, keyed by where the statement is.
#[derive(Default)]
pub struct Limiter {
    sites: HashMap<(String, u32), Site>,
}

/// What to do with one record.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    pub write: bool,
    /// Records of this statement dropped in its last window, to report
    /// before this one.
    pub suppressed_before: u64,
}

impl Limiter {
    pub fn check(&mut self, site: (&str, u32), now: Instant) -> Verdict {
        let key = (site.0.to_string(), site.1);
        if self.sites.len() >= MAX_SITES && !self.sites.contains_key(&key) {
            self.sites
                .retain(|_, s| now.duration_since(s.start) < WINDOW);
        }
        let s = self.sites.entry(key).or_insert(Site {
            start: now,
            written: 0,
            suppressed: 0,
        });
        let mut suppressed_before = 0;
        if now.duration_since(s.start) >= WINDOW {
            suppressed_before = std::mem::take(&mut s.suppressed);
            s.start = now;
            s.written = 0;
        }
        if s.written < BURST {
            s.written += 1;
            Verdict {
                write: true,
                suppressed_before,
            }
        } else {
            s.suppressed += 1;
            Verdict {
                write: false,
                suppressed_before,
            }
        }
    }
}

struct StderrLogger {
    limiter: Mutex<Limiter>,
}

static LOGGER: std::sync::OnceLock<StderrLogger> = std::sync::OnceLock::new();

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let site = (
            record.file().unwrap_or(record.target()),
            record.line().unwrap_or(0),
        );
        let verdict = crate::bus::lock(&self.limiter).check(site, Instant::now());
        let level = level_name(record.level());
        let end = if crate::term::is_raw() { "\r\n" } else { "\n" };
        let mut err = std::io::stderr().lock();
        if verdict.suppressed_before > 0 {
            let _ = write!(
                err,
                "lkvm: {level}: ({} more like the next were suppressed){end}",
                verdict.suppressed_before
            );
        }
        if verdict.write {
            let _ = write!(err, "lkvm: {level}: {}{end}", record.args());
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Installs the logger at `level`. Safe to call more than once.
pub fn init(level: LevelFilter) {
    let logger = LOGGER.get_or_init(|| StderrLogger {
        limiter: Mutex::new(Limiter::default()),
    });
    let _ = log::set_logger(logger);
    log::set_max_level(level);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_statement_gets_a_burst_per_second_and_a_count_of_the_rest() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let written = (0..1000)
            .filter(|_| l.check(("a.rs", 1), at(10)).write)
            .count();
        assert_eq!(written, BURST as usize);
        // Another statement has its own budget.
        assert!(l.check(("a.rs", 2), at(20)).write);
        // The next second: the count of what was dropped comes first.
        assert_eq!(
            l.check(("a.rs", 1), at(1010)),
            Verdict {
                write: true,
                suppressed_before: 1000 - u64::from(BURST)
            }
        );
        assert_eq!(l.check(("a.rs", 1), at(1020)).suppressed_before, 0);
    }

    #[test]
    fn the_table_of_statements_is_bounded() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        for line in 0..(MAX_SITES as u32 * 3) {
            l.check(("gen.rs", line), t0 + Duration::from_secs(u64::from(line)));
        }
        assert!(l.sites.len() <= MAX_SITES);
    }
}
