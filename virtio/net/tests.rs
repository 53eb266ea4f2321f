//! virtio-net against hand-built rings: the port logic driven token by
//! token (deterministic), the whole device through its worker thread,
//! and a real tap when the process may create one.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::epoll::EpollEvent;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::super::chain::testing::{memory, CountingIrq, Ring, F_NEXT, F_WRITE};
use super::*;

const SIZE: u16 = 16;
/// The two queues' rings, side by side in one guest memory.
const RX_RING: Ring = Ring {
    desc: 0x1000,
    avail: 0x3000,
    used: 0x4000,
    size: SIZE,
};
const TX_RING: Ring = Ring {
    desc: 0x5000,
    avail: 0x7000,
    used: 0x8000,
    size: SIZE,
};
const DATA: u64 = 0x10000;
const TX_DATA: u64 = 0x80000;

trait Post {
    /// A one-descriptor receive buffer of `len` bytes at `addr`.
    fn post(&self, mem: &GuestMemory, head: u16, addr: u64, len: u32);
}

impl Post for Ring {
    fn post(&self, mem: &GuestMemory, head: u16, addr: u64, len: u32) {
        self.desc(mem, head, addr, len, F_WRITE, 0);
        self.offer(mem, head);
    }
}

/// One end of a datagram socket pair as the backend; the test holds the
/// other end as "the host network".
struct Sock(UnixDatagram);

impl NetBackend for Sock {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.recv(buf)
    }
    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        self.0.send(frame).map(|_| ())
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

fn sock_pair() -> (Box<dyn NetBackend>, UnixDatagram) {
    let (a, b) = UnixDatagram::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (Box::new(Sock(a)), b)
}

/// A header as a host might send it, then `payload`.
fn frame(flags: u8, gso: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; HDR_LEN];
    f[0] = flags;
    f[1] = gso;
    f[10] = 0xaa; // num_buffers garbage the device must overwrite
    f.extend_from_slice(payload);
    f
}

fn active_queue(ring: &Ring, mem: &GuestMemory, index: u16) -> ActiveQueue {
    ActiveQueue {
        index,
        queue: ring.queue(mem),
        kick: EventFd::new(EFD_NONBLOCK).unwrap(),
    }
}

struct Rig {
    mem: GuestMemory,
    port: Port,
    host: UnixDatagram,
    irq: Arc<CountingIrq>,
}

fn rig(mergeable: bool) -> Rig {
    let mem = memory();
    let (backend, host) = sock_pair();
    let irq = Arc::new(CountingIrq::default());
    let queues = (
        active_queue(&RX_RING, &mem, RX),
        active_queue(&TX_RING, &mem, TX),
    );
    let rx_poll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
    let backend = Arc::new(Mutex::new(backend));
    let port = Port::new(
        mem.clone(),
        irq.clone(),
        queues,
        backend,
        mergeable,
        rx_poll,
    );
    Rig {
        mem,
        port,
        host,
        irq,
    }
}

impl Rig {
    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    /// Whether the device's own epoll would wake it for the backend.
    fn backend_watched(&self) -> bool {
        let mut ev = [EpollEvent::empty(); 1];
        self.port.rx_poll.wait(&mut ev, 0u16).unwrap() > 0
    }
}

/// What the guest should find: flags cleared, num_buffers set.
fn expected(sent: &[u8], num_buffers: u16) -> Vec<u8> {
    let mut e = sent.to_vec();
    e[0] = 0;
    e[10..12].copy_from_slice(&num_buffers.to_le_bytes());
    e
}

#[test]
fn a_received_frame_lands_in_a_posted_chain() {
    let mut r = rig(false);
    RX_RING.post(&r.mem, 0, DATA, 2048);
    // DATA_VALID (2) from the host; the driver did not negotiate checksums.
    let sent = frame(
        2,
        0,
        b"\xff\xff\xff\xff\xff\xff\x02\0\0\0\0\x01\x08\x00hello guest",
    );
    r.host.send(&sent).unwrap();
    r.port.handle(T_BACKEND);
    assert_eq!(RX_RING.used(&r.mem), vec![(0, sent.len() as u32)]);
    assert_eq!(r.read(DATA, sent.len()), expected(&sent, 1));
    assert_eq!(*r.irq.queues.lock().unwrap(), vec![RX]);
    assert!(r.port.armed, "still has no reason to stop watching");
}

#[test]
fn receiving_without_buffers_waits_for_a_kick() {
    let mut r = rig(false);
    let a = frame(0, 0, &[0x11; 60]);
    let b = frame(0, 0, &[0x22; 70]);
    r.host.send(&a).unwrap();
    r.host.send(&b).unwrap();
    assert!(r.backend_watched());
    r.port.handle(T_BACKEND);
    assert!(RX_RING.used(&r.mem).is_empty());
    assert_eq!(
        r.port.pending,
        Some(a.len()),
        "one frame waits in the device"
    );
    assert!(!r.port.armed);
    // The point: frame b still waits in the backend, yet the device's
    // epoll no longer reports it, so the worker sleeps.
    assert!(!r.backend_watched());
    // A buffer posted without a kick is not noticed (a wake-up for the
    // backend fd can still be queued; it must do nothing).
    RX_RING.post(&r.mem, 0, DATA, 2048);
    r.port.handle(T_BACKEND);
    assert!(RX_RING.used(&r.mem).is_empty());
    // The kick delivers a, then b waits again for lack of buffers.
    r.port.rx.kick.write(1).unwrap();
    r.port.handle(T_RX_KICK);
    assert_eq!(RX_RING.used(&r.mem), vec![(0, a.len() as u32)]);
    assert_eq!(r.read(DATA, a.len()), expected(&a, 1));
    assert_eq!(r.port.pending, Some(b.len()));
    assert!(!r.port.armed);
    RX_RING.post(&r.mem, 1, DATA + 0x1000, 2048);
    r.port.handle(T_RX_KICK);
    assert_eq!(
        RX_RING.used(&r.mem),
        vec![(0, a.len() as u32), (1, b.len() as u32)]
    );
    assert_eq!(r.read(DATA + 0x1000, b.len()), expected(&b, 1));
    assert_eq!(r.port.pending, None);
    assert!(
        r.port.armed,
        "buffers may come later: the backend is watched"
    );
}

#[test]
fn a_frame_too_big_for_the_buffer_is_dropped_and_the_buffer_kept() {
    let mut r = rig(false);
    RX_RING.post(&r.mem, 0, DATA, 64);
    let big = frame(0, 0, &[0x33; 200]);
    let small = frame(0, 0, &[0x44; 40]);
    r.host.send(&big).unwrap();
    r.host.send(&small).unwrap();
    r.port.handle(T_BACKEND);
    assert_eq!(RX_RING.used(&r.mem), vec![(0, small.len() as u32)]);
    assert_eq!(r.read(DATA, small.len()), expected(&small, 1));
    assert_eq!(r.port.pending, None);
}

#[test]
fn mergeable_buffers_take_a_frame_in_pieces() {
    let mut r = rig(true);
    r.port.rx.queue.set_event_idx(true);
    RX_RING.post(&r.mem, 0, DATA, 512);
    let payload: Vec<u8> = (0..1088u32).map(|i| i as u8).collect();
    let sent = frame(0, 0, &payload);
    assert_eq!(sent.len(), 1100);
    r.host.send(&sent).unwrap();
    r.port.handle(T_BACKEND);
    assert!(RX_RING.used(&r.mem).is_empty(), "one buffer is not enough");
    assert!(!r.port.armed);
    // The driver must kick for the next buffer, not for the one the
    // device already looked at: avail_event (after the used ring) is 1.
    let avail_event: u16 = r
        .mem
        .read_obj(GuestAddress(RX_RING.used + 4 + 8 * u64::from(SIZE)))
        .unwrap();
    assert_eq!(avail_event, 1);
    // Two more buffers, one of them in two descriptors.
    RX_RING.post(&r.mem, 1, DATA + 0x1000, 512);
    RX_RING.desc(&r.mem, 2, DATA + 0x2000, 100, F_WRITE | F_NEXT, 3);
    RX_RING.desc(&r.mem, 3, DATA + 0x3000, 412, F_WRITE, 0);
    RX_RING.offer(&r.mem, 2);
    r.port.handle(T_RX_KICK);
    assert_eq!(RX_RING.used(&r.mem), vec![(0, 512), (1, 512), (2, 76)]);
    let mut got = r.read(DATA, 512);
    got.extend(r.read(DATA + 0x1000, 512));
    got.extend(r.read(DATA + 0x2000, 76));
    assert_eq!(got, expected(&sent, 3));
}

#[test]
fn malformed_receive_chains_come_back_empty() {
    let mut r = rig(false);
    RX_RING.post(&r.mem, 0, 0xffff_0000, 2048); // outside RAM
    RX_RING.desc(&r.mem, 1, DATA, 64, F_WRITE | F_NEXT, 99); // bad next
    RX_RING.offer(&r.mem, 1);
    RX_RING.post(&r.mem, 2, DATA + 0x1000, 2048);
    for i in 0..3u8 {
        r.host.send(&frame(0, 0, &[i; 50])).unwrap();
    }
    r.port.handle(T_BACKEND);
    // The broken chains go back empty and the first frame takes the good
    // one; the next waits for more buffers.
    assert_eq!(RX_RING.used(&r.mem), vec![(0, 0), (1, 0), (2, 62)]);
    assert_eq!(r.read(DATA + 0x1000 + 12, 50), vec![0u8; 50]);
    assert_eq!(r.port.pending, Some(62));
    assert_eq!(r.irq.queues.lock().unwrap().len(), 1);

    // With merging, a good chain taken before a broken one is returned
    // empty too, rather than carrying half a frame.
    let mut r = rig(true);
    RX_RING.post(&r.mem, 0, DATA, 64);
    RX_RING.post(&r.mem, 1, 0xffff_0000, 2048);
    RX_RING.post(&r.mem, 2, DATA + 0x1000, 2048);
    r.host.send(&frame(0, 0, &[7; 100])).unwrap();
    r.host.send(&frame(0, 0, &[8; 100])).unwrap();
    r.port.handle(T_BACKEND);
    assert_eq!(RX_RING.used(&r.mem), vec![(0, 0), (1, 0), (2, 112)]);
    assert_eq!(r.read(DATA + 0x1000 + 12, 100), vec![8u8; 100]);
}

#[test]
fn frames_the_guest_cannot_take_are_dropped() {
    let mut r = rig(false);
    RX_RING.post(&r.mem, 0, DATA, 2048);
    r.host.send(&frame(0, 1, &[1; 100])).unwrap(); // GSO TCPv4
    r.host.send(&[0u8; 5]).unwrap(); // no header
    let ok = frame(0, 0, &[3; 30]);
    r.host.send(&ok).unwrap();
    r.port.handle(T_BACKEND);
    assert_eq!(RX_RING.used(&r.mem), vec![(0, ok.len() as u32)]);
}

#[test]
fn transmitted_chains_reach_the_backend_with_their_header() {
    let mut r = rig(false);
    let hdr = [0u8; HDR_LEN];
    let body = b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x06an arp, say";
    r.mem.write_slice(&hdr, GuestAddress(TX_DATA)).unwrap();
    r.mem
        .write_slice(body, GuestAddress(TX_DATA + 0x100))
        .unwrap();
    // 0: header and body in two descriptors, as Linux sends them.
    TX_RING.desc(&r.mem, 0, TX_DATA, HDR_LEN as u32, F_NEXT, 1);
    TX_RING.desc(&r.mem, 1, TX_DATA + 0x100, body.len() as u32, 0, 0);
    TX_RING.offer(&r.mem, 0);
    // 2: outside RAM; 3: shorter than a header; 4: over the frame limit;
    // 5: writable only.
    TX_RING.desc(&r.mem, 2, 0xffff_0000, 64, 0, 0);
    TX_RING.offer(&r.mem, 2);
    TX_RING.desc(&r.mem, 3, TX_DATA, 11, 0, 0);
    TX_RING.offer(&r.mem, 3);
    TX_RING.desc(&r.mem, 4, TX_DATA, MAX_FRAME as u32 + 1, 0, 0);
    TX_RING.offer(&r.mem, 4);
    TX_RING.desc(&r.mem, 5, TX_DATA, 64, F_WRITE, 0);
    TX_RING.offer(&r.mem, 5);
    r.port.handle(T_TX_KICK);
    assert_eq!(
        TX_RING.used(&r.mem),
        vec![(0, 0), (2, 0), (3, 0), (4, 0), (5, 0)]
    );
    let mut buf = [0u8; 256];
    let n = r.host.recv(&mut buf).unwrap();
    let mut want = hdr.to_vec();
    want.extend_from_slice(body);
    assert_eq!(&buf[..n], &want[..]);
    let more = r.host.recv(&mut buf);
    assert_eq!(more.unwrap_err().kind(), io::ErrorKind::WouldBlock);
    assert_eq!(*r.irq.queues.lock().unwrap(), vec![TX]);
}

#[test]
fn config_features_and_queues() {
    let (backend, _host) = sock_pair();
    let net = Net::with_backend(backend, [2, 1, 2, 3, 4, 5]);
    assert_eq!(net.device_type(), 1);
    assert_eq!(net.queue_max_sizes().len(), 2);
    let f = net.features();
    assert_ne!(f & F_MAC, 0);
    assert_ne!(f & F_STATUS, 0);
    assert_eq!(f & 0x7fc3, F_MRG_RXBUF & 0x7fc3, "no offloads offered");
    let mut cfg = [0xffu8; 10];
    net.read_config(0, &mut cfg);
    assert_eq!(cfg, [2, 1, 2, 3, 4, 5, 1, 0, 0, 0]);
    assert!(net.ifname().is_none());
    assert!(matches!(Net::new(&NetSpec::None), Ok(None)));
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The device activated as a transport would, on `backend`.
fn activate(net: &mut Net, mem: &GuestMemory, features: u64) -> (EventFd, EventFd) {
    let rx = active_queue(&RX_RING, mem, RX);
    let tx = active_queue(&TX_RING, mem, TX);
    let kicks = (rx.kick.try_clone().unwrap(), tx.kick.try_clone().unwrap());
    net.activate(Activation {
        mem: mem.clone(),
        queues: vec![rx, tx],
        irq: Arc::new(CountingIrq::default()),
        features,
    })
    .unwrap();
    kicks
}

#[test]
fn the_device_moves_frames_both_ways_on_its_thread() {
    let mem = memory();
    let (backend, host) = sock_pair();
    let mut net = Net::with_backend(backend, spec::default_mac(0));
    let (rx_kick, tx_kick) = activate(&mut net, &mem, features::VERSION_1 | F_MRG_RXBUF);
    // Nothing posted yet: a frame waits.
    let sent = frame(0, 0, &[0x5a; 100]);
    host.send(&sent).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(RX_RING.used(&mem).is_empty());
    RX_RING.post(&mem, 0, DATA, 2048);
    rx_kick.write(1).unwrap();
    wait_for("rx", || RX_RING.used(&mem).len() == 1);
    assert_eq!(RX_RING.used(&mem), vec![(0, sent.len() as u32)]);
    let mut got = vec![0u8; sent.len()];
    mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got, expected(&sent, 1));

    let out = frame(0, 0, b"from the guest");
    mem.write_slice(&out, GuestAddress(TX_DATA)).unwrap();
    TX_RING.desc(&mem, 0, TX_DATA, out.len() as u32, 0, 0);
    TX_RING.offer(&mem, 0);
    tx_kick.write(1).unwrap();
    host.set_nonblocking(false).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 128];
    let n = host.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], &out[..]);

    // After a reset the device is quiet; a second activation works.
    net.reset();
    host.send(&sent).unwrap();
    RX_RING.post(&mem, 1, DATA + 0x1000, 2048);
    rx_kick.write(1).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(RX_RING.used(&mem).len(), 1);
}

/// Through a real tap: created as "lkvmtest0", frames checked with a
/// packet socket on the host side. Needs CAP_NET_ADMIN; under CI=true a
/// missing tap is a failure.
#[test]
fn a_real_tap_device_end_to_end() {
    let spec = NetSpec::parse("mode=tap,tapif=lkvmtest0", 0).unwrap();
    let mut net = match Net::new(&spec) {
        Ok(Some(n)) => n,
        Ok(None) => panic!("mode=tap gave no device"),
        Err(e) => {
            tap::testing::skip_unless_ci(&e);
            return;
        }
    };
    assert_eq!(net.ifname().as_deref(), Some("lkvmtest0"));
    let host = tap::testing::PacketSocket::bind("lkvmtest0").unwrap();
    let mem = memory();
    // The host may send its own frames (IPv6 router solicitations) once
    // the link is up, so post several buffers and look for ours.
    for i in 0..8u16 {
        RX_RING.post(&mem, i, DATA + 0x1000 * u64::from(i), 2048);
    }
    let (rx_kick, tx_kick) = activate(&mut net, &mem, features::VERSION_1);
    rx_kick.write(1).unwrap();

    let mac = spec::default_mac(0);
    let mut to_host = frame(0, 0, &[0xff; 6]);
    to_host.extend_from_slice(&mac);
    to_host.extend_from_slice(&[0x88, 0xb5]);
    to_host.extend_from_slice(b"lkvm: guest to host");
    mem.write_slice(&to_host, GuestAddress(TX_DATA)).unwrap();
    TX_RING.desc(&mem, 0, TX_DATA, to_host.len() as u32, 0, 0);
    TX_RING.offer(&mem, 0);
    tx_kick.write(1).unwrap();
    let got = host
        .recv_matching(Duration::from_secs(5), |f| f.ends_with(b"guest to host"))
        .expect("the guest's frame left through the tap");
    assert_eq!(got, to_host[HDR_LEN..]);

    let mut to_guest = mac.to_vec();
    to_guest.extend_from_slice(&[2, 0, 0, 0, 0, 9, 0x88, 0xb5]);
    to_guest.extend_from_slice(b"lkvm: host to guest");
    host.send(&to_guest).unwrap();
    let mut found = None;
    wait_for("the host's frame in a receive buffer", || {
        for (id, len) in RX_RING.used(&mem) {
            let mut b = vec![0u8; len as usize];
            mem.read_slice(&mut b, GuestAddress(DATA + 0x1000 * u64::from(id)))
                .unwrap();
            if b.ends_with(b"host to guest") {
                found = Some(b);
                return true;
            }
        }
        false
    });
    let b = found.unwrap();
    assert_eq!(&b[HDR_LEN..], &to_guest[..]);
    assert_eq!(u16::from_le_bytes([b[10], b[11]]), 1, "num_buffers");
    net.reset();
}
