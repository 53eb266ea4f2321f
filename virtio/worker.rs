//! A device's own thread: it sleeps in epoll on the queues' kick eventfds
//! and whatever host fds the device serves (a tap, console input), and is
//! stopped through one more eventfd when the driver resets the device or
//! the VM ends.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::thread::JoinHandle;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::bus::lock;

/// What the device's handler wants after an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The device cannot go on (logged by the handler); the thread ends.
    Stop,
}

/// The token the stop eventfd is registered with.
const STOP: u64 = u64::MAX;

type Job = Box<dyn FnOnce() + Send>;

/// Where device threads are started from, once [`start_spawner`] ran:
/// a thread of its own, so that a worker started while a vCPU thread
/// handles the driver's DRIVER_OK does not inherit that vCPU's seccomp
/// filter (see src/seccomp.rs).
static SPAWNER: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Job>>> =
    std::sync::OnceLock::new();

/// Starts the thread that starts device threads; it takes the spawner's
/// seccomp list first.
pub fn start_spawner() -> std::io::Result<()> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("spawner".into())
        .spawn(move || {
            if let Err(e) = crate::seccomp::enter(crate::seccomp::Kind::Spawner) {
                log::error!("spawner: {e}");
                return;
            }
            while let Ok(job) = rx.recv() {
                job();
            }
        })?;
    let _ = SPAWNER.set(std::sync::Mutex::new(tx));
    Ok(())
}

/// Starts thread `name` running `f`: through the spawner when there is
/// one, else from the calling thread.
fn spawn_thread<F>(name: &str, f: F) -> std::io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    let builder = std::thread::Builder::new().name(name.to_string());
    let Some(spawner) = SPAWNER.get() else {
        return builder.spawn(f);
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        let _ = tx.send(builder.spawn(f));
    });
    lock(spawner)
        .send(job)
        .map_err(|_| std::io::Error::other("the device thread spawner is gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("the device thread spawner did not answer"))?
}

/// Collects the fds a worker will wait on, then starts it.
pub struct WorkerBuilder {
    epoll: Epoll,
    stop: EventFd,
}

impl WorkerBuilder {
    pub fn new() -> std::io::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let stop = EventFd::new(EFD_NONBLOCK)?;
        epoll.add(
            stop.as_fd_borrowed(),
            EpollEvent::new(EpollFlags::EPOLLIN, STOP),
        )?;
        Ok(WorkerBuilder { epoll, stop })
    }

    /// Wakes the worker with `token` whenever `fd` is readable. The fd
    /// must stay open while the worker runs (the handler owns it).
    pub fn watch(&self, fd: BorrowedFd<'_>, token: u64) -> std::io::Result<()> {
        Ok(self
            .epoll
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token))?)
    }

    /// Starts thread `name`, calling `handle(token)` for each ready fd.
    pub fn spawn<F>(self, name: &str, mut handle: F) -> std::io::Result<Worker>
    where
        F: FnMut(u64) -> Flow + Send + 'static,
    {
        let WorkerBuilder { epoll, stop } = self;
        let thread_name = name.to_string();
        let (done_tx, done) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = spawn_thread(name, move || {
            // Dropped however the thread ends: stop() hears of it.
            let _done = done_tx;
            if let Some(kind) = crate::seccomp::Kind::of_worker(&thread_name) {
                if let Err(e) = crate::seccomp::enter(kind) {
                    log::error!("{thread_name}: {e}");
                    return;
                }
            }
            let mut events = [EpollEvent::empty(); 16];
            loop {
                let n = match epoll.wait(&mut events, EpollTimeout::NONE) {
                    Ok(n) => n,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        log::error!("{thread_name}: epoll: {e}");
                        return;
                    }
                };
                for ev in &events[..n] {
                    if ev.data() == STOP || handle(ev.data()) == Flow::Stop {
                        return;
                    }
                }
            }
        })?;
        Ok(Worker {
            stop,
            thread: Some(thread),
            done,
        })
    }
}

/// How long a reset or lkvm's teardown waits for a device thread (one
/// stuck in a host system call, say) before going on without it.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A running worker thread. Dropping it stops and joins the thread.
pub struct Worker {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
    /// Disconnected when the thread ends.
    done: std::sync::mpsc::Receiver<()>,
}

impl Worker {
    /// Stops the thread and waits for it, at most [`STOP_WAIT`]: a reset
    /// (under the transport's lock) and lkvm's exit never hang on a
    /// device thread; one that does not answer is left behind, logged.
    pub fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            if let Err(e) = self.stop.write(1) {
                log::error!("cannot stop a device thread: {e}");
                return;
            }
            let name = t.thread().name().unwrap_or("device").to_string();
            match self.done.recv_timeout(STOP_WAIT) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    log::error!(
                        "{name}: the device thread did not stop within {STOP_WAIT:?}; going on without it"
                    );
                }
                Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    if t.join().is_err() {
                        log::error!("{name}: the device thread panicked");
                    }
                }
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Borrowing an `EventFd` as a `BorrowedFd`.
pub trait AsFdBorrowed {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_>;
}

impl AsFdBorrowed for EventFd {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd is owned by `self` and stays open for the borrow.
        unsafe { BorrowedFd::borrow_raw(self.as_raw_fd()) }
    }
}

/// Clears an eventfd's count (a kick may have been signalled many times).
pub fn drain(evt: &EventFd) {
    let _ = evt.read();
}

/// A worker slot a device keeps: started at activation, stopped at reset.
#[derive(Default)]
pub struct WorkerSlot(std::sync::Mutex<Option<Worker>>);

impl WorkerSlot {
    pub fn set(&self, w: Worker) {
        *lock(&self.0) = Some(w);
    }

    /// Stops the running worker, if any.
    pub fn stop(&self) {
        let w = lock(&self.0).take();
        drop(w);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn a_worker_serves_its_fds_and_stops() {
        let a = EventFd::new(EFD_NONBLOCK).unwrap();
        let b = EventFd::new(EFD_NONBLOCK).unwrap();
        let (tx, rx) = mpsc::channel();
        let (a2, b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
        let wb = WorkerBuilder::new().unwrap();
        wb.watch(a.as_fd_borrowed(), 1).unwrap();
        wb.watch(b.as_fd_borrowed(), 2).unwrap();
        let mut w = wb
            .spawn("test-worker", move |t| {
                drain(if t == 1 { &a2 } else { &b2 });
                tx.send(t).unwrap();
                Flow::Continue
            })
            .unwrap();
        b.write(1).unwrap();
        assert_eq!(rx.recv().unwrap(), 2);
        a.write(3).unwrap();
        assert_eq!(rx.recv().unwrap(), 1);
        w.stop();
        a.write(1).unwrap();
        assert!(rx.recv().is_err(), "handler gone after stop");
    }

    #[test]
    fn a_thread_that_does_not_stop_is_left_behind_not_waited_for() {
        let a = EventFd::new(EFD_NONBLOCK).unwrap();
        let a2 = a.try_clone().unwrap();
        let (release_tx, release) = mpsc::channel::<()>();
        let wb = WorkerBuilder::new().unwrap();
        wb.watch(a.as_fd_borrowed(), 1).unwrap();
        let mut w = wb
            .spawn("stuck-worker", move |_| {
                drain(&a2);
                // Stuck in the handler (as in a host call that never returns).
                let _ = release.recv();
                Flow::Continue
            })
            .unwrap();
        a.write(1).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let t = std::time::Instant::now();
        w.stop();
        assert!(t.elapsed() < STOP_WAIT + std::time::Duration::from_secs(1));
        drop(release_tx);
    }
}
