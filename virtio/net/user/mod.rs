//! User-mode networking (`-n mode=user`, and the card a guest gets when no
//! `-n` is given): the guest reaches whatever the host can, through host
//! sockets lkvm opens, with no privileges and nothing set up on the host.
//!
//! The card's backend is one end of a `SOCK_SEQPACKET` socket pair: the
//! virtio-net device thread moves frames between the guest's queues and
//! it, as it does with a tap. The other end belongs to the card's own
//! thread (`net-userN`), which runs the stack ([`stack`]): smoltcp for
//! TCP, lkvm's own DHCP server, DNS forwarding, UDP and the NAT table, all
//! on non-blocking host sockets waited on with one epoll. That thread is
//! started when the card is made, before any seccomp filter, so it can
//! install a list of its own with the socket calls no other thread has
//! (src/seccomp.rs, `net-user`).

pub mod dhcp;
pub mod dns;
pub mod stack;
#[cfg(test)]
mod tests;
pub mod wire;

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::epoll::{EpollEvent, EpollFlags, EpollTimeout};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::spec::UserSpec;
use super::stats::NetStats;
use super::{NetBackend, HDR_LEN, MAX_FRAME};
use crate::virtio::worker::AsFdBorrowed;
use stack::{Config, Limits, Stack, TOKEN_RESERVED};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("user-mode network: hostfwd {addr}:{port}: cannot listen on the host: {source}{hint}",
        hint = listen_hint(.source))]
    Listen {
        addr: Ipv4Addr,
        port: u16,
        #[source]
        source: io::Error,
    },
    #[error("user-mode network: {0}")]
    Setup(#[source] io::Error),
}

fn listen_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => " (something else listens there)",
        Some(libc::EACCES) => " (ports below 1024 need privileges)",
        Some(libc::EADDRNOTAVAIL) => " (the host has no such address)",
        _ => "",
    }
}

const T_PAIR: u64 = TOKEN_RESERVED;
const T_STOP: u64 = TOKEN_RESERVED + 1;
/// Frames taken from the device per wake-up before host sockets get a
/// turn.
const PAIR_BURST: usize = 256;
/// How long the device thread waits for room towards the stack before a
/// guest frame is dropped.
const SEND_WAIT: Duration = Duration::from_millis(50);
/// How long dropping the card waits for its thread.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// Numbers the cards' threads (`net-user0`, `net-user1`, ...).
static CARDS: AtomicUsize = AtomicUsize::new(0);

/// The backend of a user-mode card.
pub struct UserNet {
    pair: File,
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
    done: mpsc::Receiver<()>,
}

fn seqpacket_pair() -> io::Result<(File, File)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: socketpair writes two fds into `fds`; the result is checked.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just made and nothing else owns them.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    for fd in [&a, &b] {
        // As much room as the host allows: a guest sends a queue's worth
        // of frames at once. (Capped by net.core.wmem_max.)
        let size: libc::c_int = 4 << 20;
        // SAFETY: SO_SNDBUF reads one int through the pointer.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    // Plain read(2) and write(2) carry one message each on a seqpacket
    // socket: the device thread's seccomp list needs no socket calls.
    Ok((File::from(a), File::from(b)))
}

impl UserNet {
    /// Binds the card's forwarded ports, reads the host's resolver and
    /// starts the card's thread.
    pub fn start(spec: &UserSpec, stats: Arc<NetStats>) -> Result<UserNet, Error> {
        let mut listeners = Vec::new();
        for f in &spec.hostfwd {
            let l = TcpListener::bind((f.host_addr, f.host_port))
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|source| Error::Listen {
                    addr: f.host_addr,
                    port: f.host_port,
                    source,
                })?;
            listeners.push((l, *f));
        }
        let dns = dns::host_resolver();
        if dns.is_none() {
            log::info!(
                "virtio-net: {} names no nameserver: DNS queries to {} go unanswered",
                dns::RESOLV_CONF,
                spec.host_ip
            );
        }
        let cfg = Config {
            guest_mac: spec.mac,
            gw_mac: spec.host_mac,
            guest_ip: spec.guest_ip,
            gw_ip: spec.host_ip,
            dns,
            loopback: IpAddr::V4(Ipv4Addr::LOCALHOST),
            limits: Limits {
                max_flows: crate::fdlimit::share_now(stack::MAX_FLOWS),
                ..Limits::default()
            },
        };
        Self::with_stack(cfg, listeners, stats)
    }

    /// A card on a stack made from `cfg` (tests give their own resolver
    /// and limits).
    pub fn with_stack(
        cfg: Config,
        listeners: Vec<(TcpListener, super::spec::HostFwd)>,
        stats: Arc<NetStats>,
    ) -> Result<UserNet, Error> {
        let stack = Stack::new(cfg, listeners, stats).map_err(Error::Setup)?;
        let (pair, theirs) = seqpacket_pair().map_err(Error::Setup)?;
        let stop = EventFd::new(EFD_NONBLOCK).map_err(Error::Setup)?;
        let their_stop = stop.try_clone().map_err(Error::Setup)?;
        stack
            .epoll()
            .add(theirs.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, T_PAIR))
            .map_err(|e| Error::Setup(e.into()))?;
        stack
            .epoll()
            .add(
                their_stop.as_fd_borrowed(),
                EpollEvent::new(EpollFlags::EPOLLIN, T_STOP),
            )
            .map_err(|e| Error::Setup(e.into()))?;
        let (done_tx, done) = mpsc::sync_channel::<()>(1);
        let n = CARDS.fetch_add(1, Ordering::Relaxed);
        let thread = std::thread::Builder::new()
            .name(format!("net-user{n}"))
            .spawn(move || {
                let _done = done_tx;
                let _stop = their_stop;
                if let Err(e) = crate::seccomp::enter(crate::seccomp::Kind::UserNet) {
                    log::error!("net-user{n}: {e}");
                    return;
                }
                run(stack, theirs);
            })
            .map_err(Error::Setup)?;
        Ok(UserNet {
            pair,
            stop,
            thread: Some(thread),
            done,
        })
    }
}

/// The card's thread: frames from the device, host sockets and timers,
/// until the device end closes or the card is dropped.
fn run(mut stack: Stack, pair: File) {
    let mut buf = vec![0u8; MAX_FRAME];
    let mut events = [EpollEvent::empty(); 64];
    let mut blocked = false;
    loop {
        let wait = stack.next_wakeup(Instant::now());
        // Rounded up, so a timer is not polled for early again and again.
        let ms = wait.as_micros().div_ceil(1000).min(60_000) as u16;
        let n = match stack.epoll().wait(&mut events, EpollTimeout::from(ms)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                log::error!("user net: epoll: {e}");
                return;
            }
        };
        let now = Instant::now();
        for ev in events.iter().take(n) {
            let flags = ev.events();
            match ev.data() {
                T_STOP => return,
                T_PAIR => {
                    if flags.contains(EpollFlags::EPOLLOUT) {
                        blocked = false;
                    }
                    for _ in 0..PAIR_BURST {
                        match (&pair).read(&mut buf) {
                            Ok(0) => return,
                            Ok(len) => {
                                if let Some(frame) = buf.get(HDR_LEN..len) {
                                    stack.from_guest(frame, now);
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                log::error!("user net: the device end failed: {e}");
                                return;
                            }
                        }
                    }
                    if flags.contains(EpollFlags::EPOLLHUP) {
                        return;
                    }
                }
                token => stack.host_event(token, flags, now),
            }
        }
        stack.service(now);
        // Frames for the guest, until the device end is full.
        let was_blocked = blocked;
        while let Some(f) = stack.front() {
            match (&pair).write(f) {
                Ok(_) => stack.pop_front(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("user net: a frame for the guest: {e}");
                    stack.pop_front();
                }
            }
        }
        if blocked != was_blocked {
            let mut flags = EpollFlags::EPOLLIN;
            if blocked {
                flags |= EpollFlags::EPOLLOUT;
            }
            let mut ev = EpollEvent::new(flags, T_PAIR);
            if let Err(e) = stack.epoll().modify(pair.as_fd(), &mut ev) {
                log::error!("user net: epoll: {e}");
                return;
            }
        }
    }
}

impl NetBackend for UserNet {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match (&self.pair).read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The stack's end is gone (its thread ended): nothing more
                // comes, which is not an error of the device.
                Ok(0) => return Err(io::ErrorKind::WouldBlock.into()),
                r => return r,
            }
        }
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let deadline = Instant::now() + SEND_WAIT;
        loop {
            match (&self.pair).write(frame) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The stack is behind: wait a little for room rather
                    // than drop a burst of the guest's frames.
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(e);
                    }
                    let mut pfd = [nix::poll::PollFd::new(
                        self.pair.as_fd(),
                        nix::poll::PollFlags::POLLOUT,
                    )];
                    let ms = left.as_millis().clamp(1, 1000) as u16;
                    let _ = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(ms));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.pair.as_fd()
    }
}

impl Drop for UserNet {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.stop.write(1);
            match self.done.recv_timeout(STOP_WAIT) {
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    log::error!("user net: the card's thread did not stop; going on without it");
                }
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = t.join();
                }
            }
        }
    }
}
