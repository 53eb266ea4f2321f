//! virtio-net (`-n/--network mode=user|tap|none,...`): one receive and one
//! transmit queue over a backend: a host tap interface ([`tap`]) or lkvm's
//! user-mode network stack ([`user`]), which speaks the same frames over a
//! socket pair.
//!
//! Frames keep the 12-byte `virtio_net_hdr_v1` on both sides: the tap is
//! opened with a header of that size ([`tap`]), so a transmitted chain
//! goes to the tap as it is and a received frame lands in a chain as the
//! tap produced it, with two fixes the spec asks for: `num_buffers` (the
//! tap never writes it) and `flags` cleared, since the driver was not
//! offered checksum offload. The device offers no offloads at all, which
//! keeps every frame at most one Ethernet frame long; it does offer
//! mergeable receive buffers, so the driver may post small buffers and a
//! frame spreads over as many as it needs.
//!
//! Receiving without posted buffers must not spin: the tap stays readable
//! while frames queue up. The tap therefore sits in an epoll of its own
//! (`rx_poll`), nested in the worker's, and is taken out of it when the
//! guest has no buffers left; the guest's next receive kick puts it back.
//! At most one frame waits in the device meanwhile; the rest wait in the
//! tap's queue, where the host kernel drops the excess as a NIC would.

pub mod spec;
pub mod stats;
pub mod tap;
#[cfg(test)]
mod tests;
pub mod user;

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use virtio_queue::{Queue, QueueT};

pub use spec::NetSpec;
pub use stats::{Counter, NetCard, NetStats};
pub use tap::Tap;

use super::chain::{next_chain, notify, rearm, serve_queue, Chain};
use super::device::{Activation, ActiveQueue, Error as DeviceError, Interrupt, VirtioDevice};
use super::worker::{drain, AsFdBorrowed, Flow, WorkerBuilder, WorkerSlot};
use super::{features, ids, QUEUE_SIZE};
use crate::bus::lock;
use crate::memory::GuestMemory;

/// Where frames come from and go to: a tap, or a socket in tests. Frames
/// start with the 12-byte virtio-net header.
pub trait NetBackend: Send {
    /// Reads one frame into `buf`; `WouldBlock` when none is waiting.
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one whole frame.
    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()>;
    /// Readable when a frame is waiting. Must be the same fd for the
    /// backend's whole life.
    fn fd(&self) -> BorrowedFd<'_>;
    /// The host interface's name, if there is one.
    fn ifname(&self) -> Option<&str> {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tap(#[from] tap::Error),
    #[error(transparent)]
    User(#[from] user::Error),
}

const NAME: &str = "virtio-net";
const RX: u16 = 0;
const TX: u16 = 1;

/// The header that precedes every frame.
pub const HDR_LEN: usize = tap::VNET_HDR_LEN;
/// The largest frame: a 64 KiB IP packet behind Ethernet and VLAN
/// headers (65550 bytes), plus the virtio header.
pub const MAX_FRAME: usize = 65550 + HDR_LEN;
/// An upper bound on one receive chain; the device writes at most a frame
/// into it, so this only rejects absurd chains.
const RX_CHAIN_LIMIT: u64 = 1 << 24;

const F_MAC: u64 = 1 << VIRTIO_NET_F_MAC;
const F_STATUS: u64 = 1 << VIRTIO_NET_F_STATUS;
const F_MRG_RXBUF: u64 = 1 << VIRTIO_NET_F_MRG_RXBUF;

// Worker tokens.
const T_RX_KICK: u64 = 0;
const T_TX_KICK: u64 = 1;
const T_BACKEND: u64 = 2;

/// A virtio-net device on a backend.
pub struct Net {
    backend: Arc<Mutex<Box<dyn NetBackend>>>,
    mac: [u8; 6],
    worker: WorkerSlot,
    mode: &'static str,
    stats: Arc<NetStats>,
}

impl Net {
    /// Opens the tap `spec` names (creating it if the process may) or
    /// starts a user-mode stack; `None` for `mode=none`.
    pub fn new(spec: &NetSpec) -> Result<Option<Net>, Error> {
        match spec {
            NetSpec::None => Ok(None),
            NetSpec::User(u) => {
                let stats = Arc::new(NetStats::default());
                let backend = user::UserNet::start(u, stats.clone())?;
                log::info!(
                    "{NAME}: user-mode network for guest MAC {}: guest {}, gateway and DNS {}{}",
                    spec::format_mac(&u.mac),
                    u.guest_ip,
                    u.host_ip,
                    u.hostfwd
                        .iter()
                        .map(|f| format!(
                            ", host {}:{} to guest port {}",
                            f.host_addr, f.host_port, f.guest_port
                        ))
                        .collect::<String>()
                );
                let mut net = Net::with_backend(Box::new(backend), u.mac);
                net.mode = "user";
                net.stats = stats;
                Ok(Some(net))
            }
            NetSpec::Tap { ifname, mac } => {
                let tap = Tap::open(ifname.as_deref())?;
                log::info!(
                    "{NAME}: tap {} for guest MAC {}",
                    tap.name(),
                    spec::format_mac(mac)
                );
                Ok(Some(Net::with_backend(Box::new(tap), *mac)))
            }
        }
    }

    /// A device on any backend (tests use a socket pair).
    pub fn with_backend(backend: Box<dyn NetBackend>, mac: [u8; 6]) -> Net {
        Net {
            backend: Arc::new(Mutex::new(backend)),
            mac,
            worker: WorkerSlot::default(),
            mode: "tap",
            stats: Arc::new(NetStats::default()),
        }
    }

    /// What `lkvm stat` shows of this card.
    pub fn card(&self) -> NetCard {
        NetCard {
            mode: self.mode,
            mac: self.mac,
            stats: self.stats.clone(),
        }
    }

    /// The guest's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The host interface's name, for messages.
    pub fn ifname(&self) -> Option<String> {
        lock(&self.backend).ifname().map(String::from)
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        ids::NET
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        F_MAC | F_STATUS | F_MRG_RXBUF | features::RING_EVENT_IDX | features::RING_INDIRECT_DESC
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // mac[6], then le16 status; the fields after it belong to
        // features not offered.
        let mut cfg = [0u8; 8];
        cfg[..6].copy_from_slice(&self.mac);
        cfg[6..].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        super::device::read_config_bytes(&cfg, offset, data);
    }

    fn activate(&mut self, mut act: Activation) -> Result<(), DeviceError> {
        let rx = act
            .take_queue(RX)
            .ok_or(DeviceError::MissingQueue(NAME, RX))?;
        let tx = act
            .take_queue(TX)
            .ok_or(DeviceError::MissingQueue(NAME, TX))?;
        let worker_err = |e: io::Error| DeviceError::Worker(NAME, e);
        let rx_poll =
            Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| worker_err(e.into()))?;
        let wb = WorkerBuilder::new().map_err(worker_err)?;
        wb.watch(rx.kick.as_fd_borrowed(), T_RX_KICK)
            .map_err(worker_err)?;
        wb.watch(tx.kick.as_fd_borrowed(), T_TX_KICK)
            .map_err(worker_err)?;
        wb.watch(rx_poll.0.as_fd(), T_BACKEND).map_err(worker_err)?;
        let mergeable = act.features & F_MRG_RXBUF != 0;
        let queues = (rx, tx);
        let mut port = Port::new(
            act.mem,
            act.irq,
            queues,
            self.backend.clone(),
            mergeable,
            rx_poll,
        );
        port.stats = self.stats.clone();
        let w = wb
            .spawn(NAME, move |token| port.handle(token))
            .map_err(worker_err)?;
        self.worker.set(w);
        Ok(())
    }

    fn reset(&mut self) {
        self.worker.stop();
    }
}

/// Fuzzing hooks: the running device without its thread.
#[cfg(fuzzing)]
pub mod fuzzing {
    use std::sync::{Arc, Mutex};

    use nix::sys::epoll::{Epoll, EpollCreateFlags};

    use super::{ActiveQueue, Interrupt, NetBackend, Port};
    use crate::memory::GuestMemory;

    pub const T_RX_KICK: u64 = super::T_RX_KICK;
    pub const T_TX_KICK: u64 = super::T_TX_KICK;
    /// The backend became readable.
    pub const T_BACKEND: u64 = super::T_BACKEND;

    /// What the device thread owns.
    pub struct Direct(Port);

    impl Direct {
        /// The port `activate` builds over the (rx, tx) queues.
        pub fn new(
            mem: GuestMemory,
            irq: Arc<dyn Interrupt>,
            queues: (ActiveQueue, ActiveQueue),
            backend: Box<dyn NetBackend>,
            mergeable: bool,
        ) -> nix::Result<Direct> {
            let rx_poll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
            let backend = Arc::new(Mutex::new(backend));
            Ok(Direct(Port::new(
                mem, irq, queues, backend, mergeable, rx_poll,
            )))
        }

        /// One wake-up of the device thread for `token`.
        pub fn handle(&mut self, token: u64) {
            self.0.handle(token);
        }
    }
}

/// The running device, owned by its worker thread.
struct Port {
    mem: GuestMemory,
    irq: Arc<dyn Interrupt>,
    rx: ActiveQueue,
    tx: ActiveQueue,
    backend: Arc<Mutex<Box<dyn NetBackend>>>,
    mergeable: bool,
    /// Holds the backend's fd while the device wants frames from it.
    rx_poll: Epoll,
    armed: bool,
    /// The backend failed on read; receiving has stopped for good.
    rx_dead: bool,
    /// The frame being received, `pending` bytes of it if one waits for
    /// buffers.
    frame: Vec<u8>,
    pending: Option<usize>,
    tx_buf: Vec<u8>,
    stats: Arc<NetStats>,
}

/// What became of one received frame.
#[derive(Debug, PartialEq, Eq)]
enum Delivery {
    Delivered,
    /// Not deliverable (logged); the frame is gone.
    Dropped,
    /// Not enough buffers yet; nothing was consumed. `seen` is the avail
    /// index up to which the buffers were looked at.
    NoBuffers {
        seen: u16,
    },
}

impl Port {
    /// A port over the driver's (rx, tx) queues, already waiting for
    /// frames from the backend if it has receive buffers.
    fn new(
        mem: GuestMemory,
        irq: Arc<dyn Interrupt>,
        (rx, tx): (ActiveQueue, ActiveQueue),
        backend: Arc<Mutex<Box<dyn NetBackend>>>,
        mergeable: bool,
        rx_poll: Epoll,
    ) -> Self {
        let mut port = Port {
            mem,
            irq,
            rx,
            tx,
            backend,
            mergeable,
            rx_poll,
            armed: false,
            rx_dead: false,
            frame: vec![0u8; MAX_FRAME],
            pending: None,
            tx_buf: vec![0u8; MAX_FRAME],
            stats: Arc::new(NetStats::default()),
        };
        port.arm();
        port
    }

    fn handle(&mut self, token: u64) -> Flow {
        let backend = self.backend.clone();
        let mut be = lock(&backend);
        match token {
            T_RX_KICK => {
                drain(&self.rx.kick);
                self.arm_with(&**be);
                self.receive(&mut **be);
            }
            T_TX_KICK => {
                drain(&self.tx.kick);
                self.transmit(&mut **be);
            }
            T_BACKEND => self.receive(&mut **be),
            _ => {}
        }
        Flow::Continue
    }

    fn arm(&mut self) {
        let backend = self.backend.clone();
        let be = lock(&backend);
        self.arm_with(&**be);
    }

    /// Starts watching the backend again.
    fn arm_with(&mut self, be: &dyn NetBackend) {
        if self.armed || self.rx_dead {
            return;
        }
        match self
            .rx_poll
            .add(be.fd(), EpollEvent::new(EpollFlags::EPOLLIN, 0))
        {
            Ok(()) => self.armed = true,
            Err(e) => log::error!("{NAME}: cannot watch the backend: {e}"),
        }
    }

    fn disarm(&mut self, be: &dyn NetBackend) {
        if self.armed {
            if let Err(e) = self.rx_poll.delete(be.fd()) {
                log::error!("{NAME}: cannot stop watching the backend: {e}");
            }
            self.armed = false;
        }
    }

    /// Moves frames from the backend into receive buffers until either
    /// runs out.
    fn receive(&mut self, be: &mut dyn NetBackend) {
        if !self.armed {
            return;
        }
        let used_before = self.rx.queue.next_used();
        if let Err(e) = self.rx.queue.disable_notification(&self.mem) {
            log::debug!("{NAME}: queue {RX}: {e}");
        }
        loop {
            let len = match self.pending {
                Some(len) => len,
                None => match be.read_frame(&mut self.frame) {
                    Ok(n) if n < HDR_LEN => {
                        log::debug!("{NAME}: a {n}-byte frame from the backend has no header");
                        continue;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        log::error!("{NAME}: receiving stopped: the backend failed: {e}");
                        self.disarm(be);
                        self.rx_dead = true;
                        break;
                    }
                },
            };
            self.pending = Some(len);
            let frame = self.frame.get_mut(..len).unwrap_or_default();
            let irq = self.irq.as_ref();
            match deliver(&mut self.rx.queue, &self.mem, irq, frame, self.mergeable) {
                Delivery::Delivered => {
                    self.pending = None;
                    self.stats.inc(Counter::FramesToGuest);
                    self.stats
                        .add(Counter::BytesToGuest, len.saturating_sub(HDR_LEN) as u64);
                }
                Delivery::Dropped => {
                    self.pending = None;
                    self.stats.inc(Counter::DropGuestRx);
                }
                Delivery::NoBuffers { seen } => {
                    // Ask for a kick when buffers beyond those seen come
                    // (with EVENT_IDX the kick point is the queue's next
                    // avail position, hence the detour); if some came in
                    // the meantime, go on instead.
                    let q = &mut self.rx.queue;
                    let start = q.next_avail();
                    q.set_next_avail(seen);
                    let more = rearm(NAME, RX, q, &self.mem, self.irq.as_ref());
                    q.set_next_avail(start);
                    if more {
                        continue;
                    }
                    self.disarm(be);
                    break;
                }
            }
        }
        if self.rx.queue.next_used() != used_before {
            notify(NAME, RX, &mut self.rx.queue, &self.mem, self.irq.as_ref());
        }
    }

    /// Sends every frame the driver made available.
    fn transmit(&mut self, be: &mut dyn NetBackend) {
        let buf = &mut self.tx_buf;
        let stats = &self.stats;
        serve_queue(
            NAME,
            TX,
            &mut self.tx.queue,
            &self.mem,
            self.irq.as_ref(),
            MAX_FRAME as u64,
            |mut c| {
                let n = c.reader.available_bytes();
                if n < HDR_LEN {
                    log::debug!(
                        "{NAME}: transmit chain {} of {n} bytes has no header",
                        c.head
                    );
                    return 0;
                }
                let Some(frame) = buf.get_mut(..n) else {
                    return 0;
                };
                if let Err(e) = c.reader.read_exact(frame) {
                    log::debug!("{NAME}: transmit chain {}: {e}", c.head);
                    return 0;
                }
                stats.inc(Counter::FramesFromGuest);
                stats.add(Counter::BytesFromGuest, (n - HDR_LEN) as u64);
                if let Err(e) = be.write_frame(frame) {
                    // The host refused the frame (interface down, queue
                    // full, a header it rejects): dropped, as a wire would.
                    log::debug!("{NAME}: a {n}-byte frame was not sent: {e}");
                }
                0
            },
        );
    }
}

/// Puts `frame` (header included) into the next receive chain, or chains
/// if `mergeable`, and returns them used. Buffers too small for the frame
/// without merging stay with the device for a later, smaller frame.
fn deliver(
    q: &mut Queue,
    mem: &GuestMemory,
    irq: &dyn Interrupt,
    frame: &mut [u8],
    mergeable: bool,
) -> Delivery {
    let len = frame.len();
    let Some(hdr) = frame.get_mut(..HDR_LEN) else {
        return Delivery::Dropped;
    };
    if hdr[1] != 0 {
        // gso_type: impossible with offloads off, and the driver did not
        // agree to segment anything.
        log::debug!("{NAME}: a GSO frame from the backend dropped");
        return Delivery::Dropped;
    }
    hdr[0] = 0;
    let mut start = q.next_avail();
    let mut chains: Vec<Chain<'_>> = Vec::new();
    let mut room = 0usize;
    while room < len {
        let Some(dc) = next_chain(NAME, RX, q, mem, irq) else {
            let seen = q.next_avail();
            q.set_next_avail(start);
            if chains.len() >= usize::from(q.size()) {
                log::debug!("{NAME}: a {len}-byte frame does not fit in the whole receive ring");
                return Delivery::Dropped;
            }
            return Delivery::NoBuffers { seen };
        };
        let head = dc.head_index();
        match Chain::parse(mem, dc, RX_CHAIN_LIMIT) {
            Ok(c) => {
                room += c.writer.available_bytes();
                chains.push(c);
            }
            Err(e) => {
                log::debug!("{NAME}: queue {RX}: descriptor {head} rejected: {e}");
                if chains.is_empty() {
                    return_unused(q, mem, &[head]);
                    start = q.next_avail();
                    continue;
                }
                // In the middle of a merged frame a broken chain cannot be
                // skipped over: everything taken so far goes back empty.
                let heads: Vec<u16> = chains.iter().map(|c| c.head).chain([head]).collect();
                return_unused(q, mem, &heads);
                return Delivery::Dropped;
            }
        }
        if !mergeable {
            break;
        }
    }
    if room < len {
        log::debug!(
            "{NAME}: a {len}-byte frame does not fit in a {room}-byte receive buffer; dropped"
        );
        q.set_next_avail(start);
        return Delivery::Dropped;
    }
    let num_buffers = chains.len() as u16;
    if let Some(nb) = frame.get_mut(10..12) {
        nb.copy_from_slice(&num_buffers.to_le_bytes());
    }
    let mut used = Vec::with_capacity(chains.len());
    let mut rest: &[u8] = frame;
    for c in &mut chains {
        let n = c.writer.available_bytes().min(rest.len());
        let (part, tail) = rest.split_at(n);
        if let Err(e) = c.writer.write_all(part) {
            log::debug!("{NAME}: receive chain {}: {e}", c.head);
            let heads: Vec<u16> = chains.iter().map(|c| c.head).collect();
            return_unused(q, mem, &heads);
            return Delivery::Dropped;
        }
        used.push((c.head, n as u32));
        rest = tail;
    }
    for (head, n) in used {
        if let Err(e) = q.add_used(mem, head, n) {
            log::debug!("{NAME}: queue {RX}: cannot return descriptor {head}: {e}");
            return Delivery::Dropped;
        }
    }
    Delivery::Delivered
}

fn return_unused(q: &mut Queue, mem: &GuestMemory, heads: &[u16]) {
    for &head in heads {
        if let Err(e) = q.add_used(mem, head, 0) {
            log::debug!("{NAME}: queue {RX}: cannot return descriptor {head}: {e}");
        }
    }
}
