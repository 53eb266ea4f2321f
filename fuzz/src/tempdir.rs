//! One temporary directory per fuzzing process, removed when the process
//! exits normally (libFuzzer's `-max_total_time` and `-runs` end with
//! `exit`); directories of processes that died (a crash) are removed by
//! the next process that starts.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

const PREFIX: &str = "lkvm-fuzz-";

static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

extern "C" fn remove_all() {
    let dirs = match DIRS.lock() {
        Ok(mut d) => std::mem::take(&mut *d),
        Err(_) => return,
    };
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Removes `lkvm-fuzz-*-PID` directories whose process is gone.
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// This process's directory for `tag`, created under `base` if it is a
/// writable directory, else under the temp dir.
pub fn process_dir(tag: &str, base: Option<&Path>) -> PathBuf {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    let writable = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
            // SAFETY: access() only reads the NUL-terminated path.
            .is_ok_and(|c| unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0)
    };
    let base = base
        .filter(|b| b.is_dir() && writable(b))
        .map_or_else(std::env::temp_dir, Path::to_path_buf);
    REGISTERED.get_or_init(|| {
        remove_stale(&std::env::temp_dir());
        remove_stale(Path::new("/dev/shm"));
        // SAFETY: registers a plain function with no arguments to run at
        // exit; it only touches a static.
        unsafe {
            libc::atexit(remove_all);
        }
    });
    let dir = base.join(format!("{PREFIX}{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    if let Ok(mut d) = DIRS.lock() {
        d.push(dir.clone());
    }
    dir
}
