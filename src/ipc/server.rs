//! The guest's side of the control socket: one listening socket per guest,
//! a thread that answers one request per connection, and the socket file
//! removed on every way out of `lkvm run` that runs destructors (a killed
//! lkvm leaves a stale socket, which the next user detects and removes).

use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::proto::{Answer, Request, MAX_REQUEST};
use super::{home, probe, socket_path, Error, Probe, SUN_PATH_MAX};
use crate::control::VmControl;

/// What the control socket can do to a running guest.
pub trait GuestOps: Send + Sync {
    /// `key=value` facts: name, pid, state, cpus, mem_mib.
    fn info(&self) -> Vec<(&'static str, String)>;
    fn stop(&self);
    /// Returns how many vCPUs are parked.
    fn pause(&self) -> Result<usize, String>;
    fn resume(&self) -> Result<(), String>;
    fn memory_stats(&self) -> Result<Vec<(String, u64)>, String>;
    /// Each network card's counters as `netN.NAME` fields (mode, MAC,
    /// then the counters).
    fn net_stats(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// Returns the new balloon target in MiB.
    fn inflate(&self, mib: u64) -> Result<u64, String>;
    fn deflate(&self, mib: u64) -> Result<u64, String>;
    fn dump(&self) -> String;
    fn nmi(&self, cpu: u32) -> Result<(), String>;
    fn sysrq(&self, key: u8) -> Result<(), String>;
}

/// Answers one request line.
pub fn answer(line: &[u8], ops: &dyn GuestOps) -> Answer {
    let req = match Request::parse(line) {
        Ok(r) => r,
        Err(e) => return Answer::error(e.to_string()),
    };
    let result = match req {
        Request::Info => Ok(ops
            .info()
            .into_iter()
            .fold(Answer::ok(), |a, (k, v)| a.with(k, v))),
        Request::Stop => {
            ops.stop();
            Ok(Answer::ok())
        }
        Request::Pause => ops.pause().map(|n| Answer::ok().with("parked", n)),
        Request::Resume => ops.resume().map(|()| Answer::ok()),
        Request::MemoryStats => ops.memory_stats().map(|stats| {
            stats
                .into_iter()
                .fold(Answer::ok(), |a, (k, v)| a.with(&k, v))
        }),
        Request::NetStats => Ok(ops
            .net_stats()
            .into_iter()
            .fold(Answer::ok(), |a, (k, v)| a.with(&k, v))),
        Request::Inflate(n) => ops.inflate(n).map(|t| Answer::ok().with("target_mib", t)),
        Request::Deflate(n) => ops.deflate(n).map(|t| Answer::ok().with("target_mib", t)),
        Request::Dump => Ok(Answer::ok().with("dump", ops.dump())),
        Request::Nmi(cpu) => ops.nmi(cpu).map(|()| Answer::ok()),
        Request::Sysrq(key) => ops.sysrq(key).map(|()| Answer::ok()),
    };
    result.unwrap_or_else(Answer::error)
}

/// A bound control socket; dropping it removes the file.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds `~/.lkvm/NAME.sock`, refusing a name a live guest holds and
    /// removing the socket a dead one left.
    pub fn bind(name: &str) -> Result<ControlSocket, Error> {
        let path = socket_path(&home()?, name);
        Self::bind_at(name, &path)
    }

    pub fn bind_at(name: &str, path: &Path) -> Result<ControlSocket, Error> {
        if path.as_os_str().len() > SUN_PATH_MAX {
            return Err(Error::PathTooLong(path.to_path_buf()));
        }
        match probe(path) {
            Probe::Alive(_) => return Err(Error::NameInUse(name.to_string())),
            Probe::Stale => {
                log::info!("removing the stale control socket {}", path.display());
                let _ = std::fs::remove_file(path);
            }
            Probe::Missing => {}
            Probe::Denied => {
                return Err(Error::Permission {
                    name: name.to_string(),
                    path: path.to_path_buf(),
                })
            }
            Probe::Failed(source) => {
                return Err(Error::Bind {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
        let bind_err = |source| Error::Bind {
            path: path.to_path_buf(),
            source,
        };
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        let sock = ControlSocket {
            listener,
            path: path.to_path_buf(),
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
        Ok(sock)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers requests on a thread of its own until the VM ends.
    pub fn serve(
        self,
        ops: Arc<dyn GuestOps>,
        ctl: Arc<VmControl>,
    ) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || self.run(ops.as_ref(), &ctl))
    }

    fn run(self, ops: &dyn GuestOps, ctl: &VmControl) {
        if let Err(e) = crate::seccomp::enter(crate::seccomp::Kind::Control) {
            ctl.request_exit(crate::control::GuestExit::VmmError(e.to_string()));
        }
        while !ctl.is_stopping() {
            let mut fds = [
                PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(ctl.exit_event().as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    log::warn!("control socket: poll: {e}");
                    return;
                }
            }
            let ready = fds[0].revents().is_some_and(|r| !r.is_empty());
            if !ready {
                continue;
            }
            match self.listener.accept() {
                Ok((stream, _)) => serve_one(stream, ops),
                Err(e) => log::debug!("control socket: accept: {e}"),
            }
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            log::debug!("removing {}: {e}", self.path.display());
        }
    }
}

/// One connection: one request, one answer. A client that stalls or
/// floods is cut off; the guest never waits on it for long.
fn serve_one(stream: UnixStream, ops: &dyn GuestOps) {
    let timeout = Some(Duration::from_secs(2));
    if stream.set_read_timeout(timeout).is_err() || stream.set_write_timeout(timeout).is_err() {
        return;
    }
    let mut line = Vec::new();
    let mut reader = BufReader::new((&stream).take(MAX_REQUEST as u64 + 1));
    let answer = match reader.read_until(b'\n', &mut line) {
        Ok(_) => {
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            answer(&line, ops)
        }
        Err(e) => Answer::error(format!("cannot read the request: {e}")),
    };
    if answer.error.is_some() {
        log::debug!("control socket: refused a request: {:?}", answer.error);
    }
    if let Err(e) = answer.write_to(&mut &stream) {
        log::debug!("control socket: cannot answer: {e}");
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::control::GuestExit;

    #[derive(Default)]
    struct Fake {
        stopped: AtomicBool,
    }

    impl GuestOps for Fake {
        fn info(&self) -> Vec<(&'static str, String)> {
            vec![("name", "fake".into()), ("state", "running".into())]
        }
        fn stop(&self) {
            self.stopped.store(true, Ordering::SeqCst);
        }
        fn pause(&self) -> Result<usize, String> {
            Ok(2)
        }
        fn resume(&self) -> Result<(), String> {
            Ok(())
        }
        fn memory_stats(&self) -> Result<Vec<(String, u64)>, String> {
            Err("the guest has no balloon device (start it with --balloon)".into())
        }
        fn inflate(&self, mib: u64) -> Result<u64, String> {
            Ok(mib)
        }
        fn deflate(&self, _mib: u64) -> Result<u64, String> {
            Ok(0)
        }
        fn dump(&self) -> String {
            "vCPU 0\nrip 0x0".into()
        }
        fn nmi(&self, cpu: u32) -> Result<(), String> {
            Err(format!("no vCPU {cpu}"))
        }
        fn sysrq(&self, _key: u8) -> Result<(), String> {
            Ok(())
        }
    }

    fn ask(path: &Path, req: &[u8]) -> Answer {
        let mut s = UnixStream::connect(path).unwrap();
        s.write_all(req).unwrap();
        Answer::read_from(&mut BufReader::new(&s)).unwrap()
    }

    #[test]
    fn a_socket_answers_requests_refuses_garbage_and_cleans_up() {
        let dir = std::env::temp_dir().join(format!("lkvm-ipc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("g.sock");
        let sock = ControlSocket::bind_at("g", &path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // a second guest with the same name is refused while this one lives
        assert!(matches!(
            ControlSocket::bind_at("g", &path),
            Err(Error::NameInUse(_))
        ));
        let ctl = Arc::new(VmControl::new().unwrap());
        let fake = Arc::new(Fake::default());
        let t = sock.serve(fake.clone(), ctl.clone()).unwrap();
        assert_eq!(ask(&path, b"info\n").get("name"), Some("fake"));
        assert_eq!(ask(&path, b"pause\n").get("parked"), Some("2"));
        assert_eq!(ask(&path, b"dump\n").text("dump"), "vCPU 0\nrip 0x0");
        assert!(ask(&path, b"memory-stats\n")
            .error
            .unwrap()
            .contains("no balloon"));
        assert!(ask(&path, b"\x00\xff garbage\n").error.is_some());
        assert!(ask(&path, &[b'x'; 1000]).error.is_some());
        // a client that connects and says nothing is cut off, not waited for
        let idle = UnixStream::connect(&path).unwrap();
        assert_eq!(ask(&path, b"stop\n"), Answer::ok());
        drop(idle);
        assert!(fake.stopped.load(Ordering::SeqCst));
        ctl.request_exit(GuestExit::Stopped);
        t.join().unwrap();
        assert!(!path.exists(), "socket removed when the guest ends");
        // a socket left by a killed lkvm is stale: the next bind takes it over
        let stale = UnixListener::bind(&path).unwrap();
        std::mem::forget(stale);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        drop(listener); // file stays, nobody listens
        let again = ControlSocket::bind_at("g", &path).unwrap();
        drop(again);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
