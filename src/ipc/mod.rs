//! The control plane: each running guest listens on `~/.lkvm/NAME.sock`
//! (directory 0700, socket 0600) and `lkvm list/stop/pause/resume/stat/
//! balloon/debug` talk to it from another terminal.
//!
//! The protocol is one request line (`pause`, `balloon inflate 64`, ...)
//! answered by `ok` or `error MESSAGE`, then `key=value` lines, then an
//! empty line. A client that sends anything else gets an error and the
//! guest carries on.

pub mod client;
pub mod proto;
pub mod server;

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot find the home directory for ~/.lkvm: HOME is not set")]
    NoHome,
    #[error("{path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} exists and is not a directory")]
    NotADir { path: PathBuf },
    #[error("a guest named '{0}' is already running; pick another --name")]
    NameInUse(String),
    #[error("control socket path {0} is too long for a unix socket")]
    PathTooLong(PathBuf),
    #[error("cannot create control socket {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no guest named '{0}' is running")]
    NoSuchGuest(String),
    #[error("guest '{name}' is not answering: {source}")]
    Dead {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("guest '{name}': permission denied on {path}")]
    Permission { name: String, path: PathBuf },
    #[error("guest '{0}': {1}")]
    Refused(String, String),
    #[error("guest '{0}' sent a malformed answer")]
    BadAnswer(String),
}

/// Longest path a `sockaddr_un` holds (with its NUL).
const SUN_PATH_MAX: usize = 107;

/// `~/.lkvm`, created 0700 if missing.
pub fn home() -> Result<PathBuf, Error> {
    let base = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or(Error::NoHome)?;
    let dir = PathBuf::from(base).join(".lkvm");
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => Ok(dir),
        Ok(_) => Err(Error::NotADir { path: dir }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(&dir)
                .map_err(|source| Error::Dir {
                    path: dir.clone(),
                    source,
                })?;
            // mkdir honours the umask; the mode must be exact.
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(
                |source| Error::Dir {
                    path: dir.clone(),
                    source,
                },
            )?;
            Ok(dir)
        }
        Err(source) => Err(Error::Dir { path: dir, source }),
    }
}

pub fn socket_path(home: &Path, name: &str) -> PathBuf {
    home.join(format!("{name}.sock"))
}

/// The guests with a socket in `home`, by name, sorted.
pub fn socket_names(home: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(home)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".sock").map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

/// What connecting to a socket path says about its guest.
pub enum Probe {
    Alive(UnixStream),
    /// Nobody listens: lkvm was killed without cleaning up.
    Stale,
    Missing,
    Denied,
    Failed(io::Error),
}

pub fn probe(path: &Path) -> Probe {
    match UnixStream::connect(path) {
        Ok(s) => Probe::Alive(s),
        Err(e) => match e.kind() {
            io::ErrorKind::ConnectionRefused => Probe::Stale,
            io::ErrorKind::NotFound => Probe::Missing,
            io::ErrorKind::PermissionDenied => Probe::Denied,
            _ => Probe::Failed(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_is_created_private_and_sockets_are_listed() {
        let base = std::env::temp_dir().join(format!("lkvm-home-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        // SAFETY of the test: HOME is only read by these helpers.
        let dir = base.join(".lkvm");
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        std::fs::write(dir.join("a.sock"), b"").unwrap();
        std::fs::write(dir.join("b.sock"), b"").unwrap();
        std::fs::write(dir.join("notes.txt"), b"").unwrap();
        assert_eq!(socket_names(&dir), vec!["a".to_string(), "b".to_string()]);
        assert!(matches!(
            probe(&dir.join("a.sock")),
            Probe::Stale | Probe::Failed(_)
        ));
        assert!(matches!(probe(&dir.join("zz.sock")), Probe::Missing));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
