//! Helpers for lkvm's integration tests: the binary, the tiny guests built
//! from `tests/guests/*.s`, and runs with a deadline.

#![allow(dead_code)]
// Test support: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub fn lkvm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lkvm"))
}

fn guests_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guests")
}

fn run_tool(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How a tiny guest is packaged.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// 32-bit PVH code in an ELF64 (`guest.ld`: one segment at 1 MiB).
    Pvh64,
    /// The same code in an ELF32 (i386).
    Pvh32,
    /// Raw bytes linked at 0, for kvmtool's flat real-mode layout.
    Flat,
}

/// Assembles and links `tests/guests/<name>.s` into a PVH ELF64.
pub fn guest(name: &str) -> PathBuf {
    guest_as(name, Format::Pvh64)
}

/// Assembles and links `tests/guests/<name>.s` as `format`. Each test
/// process builds into its own file, then renames it into place, so parallel
/// test processes never see a half-written guest.
pub fn guest_as(name: &str, format: Format) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guests");
    std::fs::create_dir_all(&dir).expect("create guest dir");
    let suffix = match format {
        Format::Pvh64 => "elf",
        Format::Pvh32 => "elf32",
        Format::Flat => "flat",
    };
    let out = dir.join(format!("{name}.{suffix}"));
    static BUILDS: AtomicUsize = AtomicUsize::new(0);
    let unique = format!(
        "{}.{}",
        std::process::id(),
        BUILDS.fetch_add(1, Ordering::Relaxed)
    );
    let tmp_obj = dir.join(format!("{name}.{unique}.o"));
    let tmp_out = dir.join(format!("{name}.{unique}.{suffix}"));
    let src = guests_src();
    let (as_mode, ld_mode) = match format {
        Format::Pvh64 => ("--64", "elf_x86_64"),
        Format::Pvh32 | Format::Flat => ("--32", "elf_i386"),
    };
    run_tool(
        Command::new("as")
            .arg(as_mode)
            .arg("-I")
            .arg(&src)
            .arg("-o")
            .arg(&tmp_obj)
            .arg(src.join(format!("{name}.s"))),
    );
    let mut ld = Command::new("ld");
    ld.args(["--no-warn-rwx-segments", "-m", ld_mode]);
    if format == Format::Flat {
        ld.args(["-Ttext", "0", "-e", "_start", "--oformat", "binary"]);
    } else {
        ld.arg("-T").arg(src.join("guest.ld"));
    }
    run_tool(ld.arg("-o").arg(&tmp_out).arg(&tmp_obj));
    std::fs::rename(&tmp_out, &out).expect("install guest");
    let _ = std::fs::remove_file(&tmp_obj);
    out
}

/// True when tests that need /dev/kvm can run. Without a usable /dev/kvm
/// they fail, unless LKVM_SKIP_KVM_TESTS=1 is set outside CI, in which case
/// the test says SKIPPED on stderr and returns.
pub fn kvm_available() -> bool {
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if usable {
        return true;
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let skip = std::env::var("LKVM_SKIP_KVM_TESTS").is_ok_and(|v| v == "1");
    if skip && !in_ci {
        eprintln!("SKIPPED: /dev/kvm is not usable and LKVM_SKIP_KVM_TESTS=1");
        return false;
    }
    panic!("/dev/kvm is not usable; these tests need it (set LKVM_SKIP_KVM_TESTS=1 to skip outside CI)");
}

/// Runs `cmd` with `input` on stdin; kills it and fails after `limit`.
pub fn run_with_input(cmd: &mut Command, input: &[u8], limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lkvm");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("collect output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "{cmd:?} did not finish in {limit:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn run(cmd: &mut Command) -> Output {
    run_with_input(cmd, b"", Duration::from_secs(30))
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A running lkvm whose console is driven step by step.
pub struct Interactive {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Interactive {
    pub fn spawn(cmd: &mut Command) -> Self {
        use std::io::Read;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lkvm");
        let stdin = child.stdin.take();
        let mut out = child.stdout.take().expect("stdout");
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = stdout.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Interactive {
            child,
            stdin,
            stdout,
            reader: Some(reader),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn output(&self) -> Vec<u8> {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits until the console output contains `needle`.
    pub fn wait_for(&mut self, needle: &[u8], limit: Duration) {
        let start = Instant::now();
        loop {
            if self.output().windows(needle.len()).any(|w| w == needle) {
                return;
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "console never showed {:?}; it showed {:?}",
                    text(needle),
                    text(&self.output())
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).expect("write to lkvm");
        stdin.flush().expect("flush");
    }

    /// Waits for the exit; returns (status, stdout, stderr).
    pub fn finish(mut self, limit: Duration) -> (std::process::ExitStatus, Vec<u8>, String) {
        use std::io::Read;
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "lkvm did not exit in {limit:?}; console: {:?}",
                    text(&self.output())
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status, self.output(), err)
    }
}

impl Drop for Interactive {
    /// A test that fails half way must not leave its guest running (and
    /// eating CPU under everything that runs after it).
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
