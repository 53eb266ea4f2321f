//! The user-mode stack of one card: the guest's Ethernet frames in, the
//! frames for the guest out, and host sockets in between.
//!
//! - ARP for the gateway, ICMP echo to the gateway, DHCP: answered here.
//! - UDP: one connected host socket per guest flow (guest address and
//!   port, remote address and port); the gateway's port 53 leads to the
//!   host's resolver, its other ports to the host's loopback.
//! - TCP: a guest's SYN starts a non-blocking connect on the host; once
//!   the host accepts, a smoltcp socket listening on the remote address
//!   takes the SYN and smoltcp's state machine runs the guest's side,
//!   while data moves between it and the host socket. A refused connect
//!   is answered with a RST, an unreachable one with ICMP unreachable.
//!   `hostfwd` listeners do the reverse: an accepted host connection
//!   becomes a smoltcp socket connecting to the guest from the gateway.
//!
//! Everything is bounded: flows (the oldest idle one makes room), each
//! TCP flow's buffers (smoltcp's, so the guest sees a window), the queue
//! of frames for the guest, and every state's time. Host sockets are
//! non-blocking and waited on with epoll; a socket is watched only for
//! what the stack can take (no level-triggered spin while a buffer is
//! full).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket,
};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpListenEndpoint};

use super::super::spec::{same_24, HostFwd};
use super::super::stats::{Counter, NetStats};
use super::dhcp;
use super::wire::{self, Bad, Ipv4, Tcp};
use crate::virtio::net::HDR_LEN;

/// What a guest cannot exceed; tests shrink them.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Open flows (TCP and UDP together); a new one closes the flow idle
    /// the longest.
    pub max_flows: usize,
    /// Each TCP flow's receive and send buffer (smoltcp's).
    pub tcp_buffer: usize,
    /// Frames waiting for the guest.
    pub out_frames: usize,
    /// A host connect that has not finished.
    pub connect: Duration,
    /// A guest handshake (SYN-RECEIVED, SYN-SENT) that has not finished.
    pub handshake: Duration,
    /// A flow one side has closed, without traffic.
    pub half_closed: Duration,
    /// An open TCP flow without traffic.
    pub tcp_idle: Duration,
    /// A UDP flow without traffic (DNS flows: `dns_idle`).
    pub udp_idle: Duration,
    pub dns_idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_flows: 1024,
            tcp_buffer: 64 * 1024,
            out_frames: 512,
            connect: Duration::from_secs(30),
            handshake: Duration::from_secs(30),
            half_closed: Duration::from_secs(60),
            tcp_idle: Duration::from_secs(3600),
            udp_idle: Duration::from_secs(60),
            dns_idle: Duration::from_secs(10),
        }
    }
}

/// One card's addresses and where the gateway leads.
#[derive(Clone, Debug)]
pub struct Config {
    pub guest_mac: [u8; 6],
    pub gw_mac: [u8; 6],
    pub guest_ip: Ipv4Addr,
    pub gw_ip: Ipv4Addr,
    /// Where DNS to the gateway goes; `None`: answered port unreachable.
    pub dns: Option<SocketAddr>,
    /// What the gateway address stands for on the host (127.0.0.1).
    pub loopback: IpAddr,
    pub limits: Limits,
}

/// Tokens the stack's owner may use on [`Stack::epoll`].
pub const TOKEN_RESERVED: u64 = u64::MAX - 15;
const LISTENER: u64 = 1 << 62;
/// Each guest frame handed to smoltcp, and each round of relaying, may
/// make it send; this bounds one round's passes.
const POLL_PASSES: usize = 64;
/// Datagrams read from one UDP socket per wake-up.
const UDP_BURST: usize = 64;
/// Connections accepted per listener wake-up.
const ACCEPT_BURST: usize = 16;
/// The largest UDP payload one frame carries.
const UDP_MAX: usize = wire::MTU - 28;
/// Local ports of forwarded connections, as the gateway's.
const FWD_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct Key {
    proto: u8,
    guest: SocketAddrV4,
    remote: SocketAddrV4,
}

struct TcpFlow {
    host: TcpStream,
    handle: SocketHandle,
    /// What epoll last said (cleared by `WouldBlock`).
    readable: bool,
    writable: bool,
    host_eof: bool,
    host_shut: bool,
    /// The host socket failed; the guest side is being reset.
    dead: bool,
}

enum Kind {
    /// The host connect is in progress; the guest's SYN (an IPv4 packet)
    /// waits for it.
    Connecting {
        host: TcpStream,
        syn: Vec<u8>,
    },
    Tcp(TcpFlow),
    /// A host socket, and the start of the guest's last datagram for an
    /// ICMP error about it.
    Udp {
        host: UdpSocket,
        quote: Vec<u8>,
    },
}

struct Flow {
    key: Key,
    kind: Kind,
    created: Instant,
    last: Instant,
    /// Events the host socket is watched for; `None` once it is no
    /// longer watched (hung up).
    interest: Option<EpollFlags>,
}

/// smoltcp's view of the card: IP packets in (one at a time) and out.
struct Pipe {
    rx: Option<Vec<u8>>,
    tx: Vec<Vec<u8>>,
    room: usize,
}

struct Rx(Vec<u8>);

struct Tx<'a> {
    tx: &'a mut Vec<Vec<u8>>,
}

impl RxToken for Rx {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut p = vec![0u8; len];
        let r = f(&mut p);
        self.tx.push(p);
        r
    }
}

impl Device for Pipe {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _now: SmolInstant) -> Option<(Rx, Tx<'_>)> {
        let p = self.rx.take()?;
        Some((Rx(p), Tx { tx: &mut self.tx }))
    }

    fn transmit(&mut self, _now: SmolInstant) -> Option<Tx<'_>> {
        if self.tx.len() >= self.room {
            return None;
        }
        Some(Tx { tx: &mut self.tx })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = wire::MTU;
        c
    }
}

/// Where a guest's packet to `remote` goes on the host.
enum Target {
    To(SocketAddr),
    /// Answered ICMP unreachable with this code (1 host, 3 port).
    Unreachable(u8),
    /// Not a destination at all (broadcast, multicast, ...): dropped.
    Invalid,
}

pub struct Stack {
    cfg: Config,
    stats: Arc<NetStats>,
    start: Instant,
    iface: Interface,
    pipe: Pipe,
    sockets: SocketSet<'static>,
    epoll: Epoll,
    flows: HashMap<u64, Flow>,
    keys: HashMap<Key, u64>,
    next_id: u64,
    listeners: Vec<(TcpListener, HostFwd)>,
    /// Frames for the guest, each behind a zeroed virtio-net header.
    out: VecDeque<Vec<u8>>,
    guest_mac: [u8; 6],
    ident: u16,
    next_port: u16,
    scratch: Vec<u8>,
    tcp_count: u64,
    udp_count: u64,
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 8 {
        // Only the ISNs depend on it; the clock is good enough then.
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
    }
    u64::from_ne_bytes(b)
}

/// A TCP connect that does not wait: the stream and whether it is still
/// in progress is for epoll to say.
fn connect_nonblocking(to: SocketAddr) -> io::Result<TcpStream> {
    let family = match to {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nobody else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let r = match to {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_in is plain data; zero is a valid value.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_port = a.port().to_be();
            sa.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            // SAFETY: `sa` is a sockaddr_in of the length passed.
            unsafe {
                libc::connect(
                    fd,
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_in6 is plain data; zero is a valid value.
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_port = a.port().to_be();
            sa.sin6_addr.s6_addr = a.ip().octets();
            sa.sin6_scope_id = a.scope_id();
            // SAFETY: `sa` is a sockaddr_in6 of the length passed.
            unsafe {
                libc::connect(
                    fd,
                    (&sa as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if errno(&e) != libc::EINPROGRESS {
            return Err(e);
        }
    }
    Ok(TcpStream::from(owned))
}

fn smol_now(start: Instant) -> SmolInstant {
    SmolInstant::from_micros(start.elapsed().as_micros() as i64)
}

/// The guest has closed its sending side and everything it sent was
/// taken.
fn guest_finished(s: &tcp::Socket<'_>) -> bool {
    use tcp::State::*;
    matches!(s.state(), CloseWait | LastAck | Closing | TimeWait | Closed) && s.recv_queue() == 0
}

impl Stack {
    /// A stack for `cfg`, serving the `hostfwd` listeners given (bound by
    /// the caller, non-blocking).
    pub fn new(
        cfg: Config,
        listeners: Vec<(TcpListener, HostFwd)>,
        stats: Arc<NetStats>,
    ) -> io::Result<Stack> {
        let start = Instant::now();
        let mut pipe = Pipe {
            rx: None,
            tx: Vec::new(),
            room: 0,
        };
        let mut ic = IfaceConfig::new(HardwareAddress::Ip);
        ic.random_seed = random_seed();
        let mut iface = Interface::new(ic, &mut pipe, smol_now(start));
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(cfg.gw_ip), 24));
        });
        // Packets to any address are the stack's (the NAT's) when the
        // route to them leads through one of its own addresses.
        iface
            .routes_mut()
            .add_default_ipv4_route(cfg.gw_ip)
            .map_err(|_| io::Error::other("smoltcp: no room for the default route"))?;
        iface.set_any_ip(true);
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        for (i, (l, _)) in listeners.iter().enumerate() {
            epoll.add(
                l.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, LISTENER + i as u64),
            )?;
        }
        Ok(Stack {
            guest_mac: cfg.guest_mac,
            cfg,
            stats,
            start,
            iface,
            pipe,
            sockets: SocketSet::new(Vec::new()),
            epoll,
            flows: HashMap::new(),
            keys: HashMap::new(),
            next_id: 1,
            listeners,
            out: VecDeque::new(),
            ident: 0,
            next_port: *FWD_PORTS.start(),
            scratch: vec![0u8; 65536],
            tcp_count: 0,
            udp_count: 0,
        })
    }

    /// The epoll the stack's host sockets are in; its owner adds its own
    /// fds with tokens from [`TOKEN_RESERVED`] up.
    pub fn epoll(&self) -> &Epoll {
        &self.epoll
    }

    /// The next frame for the guest (with its virtio-net header).
    pub fn front(&self) -> Option<&[u8]> {
        self.out.front().map(Vec::as_slice)
    }

    pub fn pop_front(&mut self) {
        self.out.pop_front();
    }

    fn count(&self, c: Counter) {
        self.stats.inc(c);
    }

    fn drop_bad(&self, b: Bad) {
        self.count(match b {
            Bad::Malformed => Counter::DropMalformed,
            Bad::Fragment => Counter::DropFragment,
            Bad::Checksum => Counter::DropBadChecksum,
        });
    }

    fn next_ident(&mut self) -> u16 {
        self.ident = self.ident.wrapping_add(1);
        self.ident
    }

    /// Queues an Ethernet frame for the guest.
    fn push_frame(&mut self, frame: Vec<u8>) {
        if self.out.len() >= self.cfg.limits.out_frames {
            self.count(Counter::DropQueueFull);
            return;
        }
        let mut f = Vec::with_capacity(HDR_LEN + frame.len());
        f.resize(HDR_LEN, 0);
        f.extend_from_slice(&frame);
        self.out.push_back(f);
    }

    /// Queues an IPv4 packet for the guest.
    fn push_ip(&mut self, packet: &[u8]) {
        let f = wire::eth_frame(
            self.guest_mac,
            self.cfg.gw_mac,
            wire::ETHERTYPE_IPV4,
            packet,
        );
        self.push_frame(f);
    }

    fn set_gauges(&self) {
        self.stats.set(Counter::TcpFlows, self.tcp_count);
        self.stats.set(Counter::UdpFlows, self.udp_count);
    }

    /// A host address of the guest's /24 other than the gateway's.
    fn guest_addr_ok(&self, a: Ipv4Addr) -> bool {
        let last = a.octets()[3];
        same_24(a, self.cfg.gw_ip) && a != self.cfg.gw_ip && last != 0 && last != 255
    }

    fn target(&self, remote: SocketAddrV4) -> Target {
        let ip = *remote.ip();
        if ip == self.cfg.gw_ip {
            if remote.port() == super::dns::PORT {
                return match self.cfg.dns {
                    Some(d) => Target::To(d),
                    None => Target::Unreachable(3),
                };
            }
            return Target::To(SocketAddr::new(self.cfg.loopback, remote.port()));
        }
        if ip.is_unspecified()
            || ip.is_broadcast()
            || ip.is_multicast()
            || ip.is_loopback()
            || remote.port() == 0
        {
            return Target::Invalid;
        }
        if same_24(ip, self.cfg.gw_ip) {
            // Nothing but the gateway and the guest lives on this net.
            return Target::Unreachable(1);
        }
        Target::To(SocketAddr::V4(remote))
    }

    // --- from the guest ------------------------------------------------

    /// One Ethernet frame from the guest (no virtio-net header).
    pub fn from_guest(&mut self, frame: &[u8], now: Instant) {
        let eth = match wire::parse_eth(frame) {
            Ok(e) => e,
            Err(b) => return self.drop_bad(b),
        };
        let broadcast = eth.dst == wire::BROADCAST_MAC;
        if !broadcast && eth.dst[0] & 1 != 0 {
            // Multicast (IPv6 neighbour discovery, mDNS, ...).
            return self.count(Counter::DropUnsupported);
        }
        if !broadcast && eth.dst != self.cfg.gw_mac {
            return self.count(Counter::DropNotForUs);
        }
        if eth.src[0] & 1 == 0 && eth.src != [0; 6] {
            self.guest_mac = eth.src;
        }
        match eth.ethertype {
            wire::ETHERTYPE_ARP => self.arp(eth.payload),
            wire::ETHERTYPE_IPV4 => self.ipv4(eth.payload, broadcast, now),
            _ => self.count(Counter::DropUnsupported),
        }
    }

    fn arp(&mut self, p: &[u8]) {
        let a = match wire::parse_arp(p) {
            Ok(a) => a,
            Err(b) => return self.drop_bad(b),
        };
        if a.op == 1 && a.target_ip == self.cfg.gw_ip {
            let f = wire::arp_reply(self.cfg.gw_mac, self.cfg.gw_ip, &a);
            self.push_frame(f);
        }
    }

    fn ipv4(&mut self, p: &[u8], l2_broadcast: bool, now: Instant) {
        let ip = match wire::parse_ipv4(p) {
            Ok(ip) => ip,
            Err(b) => return self.drop_bad(b),
        };
        match ip.proto {
            wire::PROTO_UDP => {
                let udp = match wire::parse_udp(&ip) {
                    Ok(u) => u,
                    Err(b) => return self.drop_bad(b),
                };
                if udp.dst_port == dhcp::SERVER_PORT
                    && udp.src_port == dhcp::CLIENT_PORT
                    && (ip.dst.is_broadcast() || ip.dst == self.cfg.gw_ip)
                {
                    return self.dhcp(udp.payload);
                }
                if l2_broadcast || !self.guest_addr_ok(ip.src) {
                    return self.count(Counter::DropUnsupported);
                }
                let guest = SocketAddrV4::new(ip.src, udp.src_port);
                let remote = SocketAddrV4::new(ip.dst, udp.dst_port);
                self.udp(&ip, guest, remote, udp.payload, now);
            }
            wire::PROTO_TCP => {
                let seg = match wire::parse_tcp(&ip) {
                    Ok(t) => t,
                    Err(b) => return self.drop_bad(b),
                };
                if l2_broadcast || !self.guest_addr_ok(ip.src) {
                    return self.count(Counter::DropUnsupported);
                }
                self.tcp(&ip, &seg, now);
            }
            wire::PROTO_ICMP => {
                let m = match wire::parse_icmp(&ip) {
                    Ok(m) => m,
                    Err(b) => return self.drop_bad(b),
                };
                // Echo to the gateway is answered; other ICMP (echo to
                // other hosts included) is not carried.
                if m.kind == 8 && m.code == 0 && ip.dst == self.cfg.gw_ip && !l2_broadcast {
                    let id = self.next_ident();
                    let reply = wire::icmp_packet(self.cfg.gw_ip, ip.src, id, 0, 0, m.rest, m.data);
                    self.push_ip(&reply);
                } else {
                    self.count(Counter::DropUnsupported);
                }
            }
            _ => self.count(Counter::DropUnsupported),
        }
    }

    fn dhcp(&mut self, msg: &[u8]) {
        let server = dhcp::Server {
            guest_ip: self.cfg.guest_ip,
            server_ip: self.cfg.gw_ip,
        };
        match server.answer(msg) {
            Ok(r) => {
                let id = self.next_ident();
                let p = wire::udp_packet(
                    SocketAddrV4::new(self.cfg.gw_ip, dhcp::SERVER_PORT),
                    SocketAddrV4::new(r.dst_ip, dhcp::CLIENT_PORT),
                    id,
                    &r.message,
                );
                let f = wire::eth_frame(r.dst_mac, self.cfg.gw_mac, wire::ETHERTYPE_IPV4, &p);
                self.push_frame(f);
            }
            Err(dhcp::Ignored::Malformed) => self.count(Counter::DropMalformed),
            Err(dhcp::Ignored::NoReply) => {}
        }
    }

    /// ICMP unreachable about `ip` to the guest.
    fn unreachable(&mut self, ip: &Ipv4<'_>, code: u8) {
        let id = self.next_ident();
        let from = if code == 3 { ip.dst } else { self.cfg.gw_ip };
        let p = wire::icmp_unreachable(from, id, code, ip);
        self.push_ip(&p);
    }

    /// The answer to a host connect that failed with `e`: a RST when the
    /// host refused, ICMP unreachable when it could not get there.
    fn refuse(&mut self, e: &io::Error, ip: &Ipv4<'_>, seg: &Tcp) {
        self.count(Counter::HostRefused);
        log::debug!(
            "user net: {}:{} -> {}:{} refused on the host: {e}",
            ip.src,
            seg.src_port,
            ip.dst,
            seg.dst_port
        );
        match errno(e) {
            libc::ENETUNREACH | libc::ENETDOWN => self.unreachable(ip, 0),
            libc::EHOSTUNREACH | libc::ETIMEDOUT | libc::EHOSTDOWN => self.unreachable(ip, 1),
            _ => {
                let id = self.next_ident();
                let rst = wire::tcp_rst_for(
                    SocketAddrV4::new(ip.dst, seg.dst_port),
                    SocketAddrV4::new(ip.src, seg.src_port),
                    id,
                    seg,
                );
                self.push_ip(&rst);
            }
        }
    }

    /// Room for one more flow: the flow idle the longest goes.
    fn make_room(&mut self) {
        while self.flows.len() >= self.cfg.limits.max_flows.max(1) {
            let Some(oldest) = self
                .flows
                .iter()
                .min_by_key(|(id, f)| (f.last, **id))
                .map(|(id, _)| *id)
            else {
                return;
            };
            self.count(Counter::FlowsEvicted);
            self.close_flow(oldest);
        }
    }

    fn add_flow(&mut self, key: Key, kind: Kind, now: Instant) -> io::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let (fd, interest) = match &kind {
            Kind::Connecting { host, .. } => (host.as_fd(), EpollFlags::EPOLLOUT),
            Kind::Tcp(t) => (t.host.as_fd(), EpollFlags::EPOLLIN),
            Kind::Udp { host, .. } => (host.as_fd(), EpollFlags::EPOLLIN),
        };
        self.epoll.add(fd, EpollEvent::new(interest, id))?;
        match &kind {
            Kind::Udp { .. } => self.udp_count += 1,
            _ => self.tcp_count += 1,
        }
        self.flows.insert(
            id,
            Flow {
                key,
                kind,
                created: now,
                last: now,
                interest: Some(interest),
            },
        );
        self.keys.insert(key, id);
        self.count(Counter::FlowsOpened);
        self.set_gauges();
        Ok(id)
    }

    /// Removes a flow; an open TCP flow is reset towards the guest first.
    fn close_flow(&mut self, id: u64) {
        let handle = match self.flows.get(&id).map(|f| &f.kind) {
            Some(Kind::Tcp(t)) => Some(t.handle),
            _ => None,
        };
        if let Some(h) = handle {
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            if s.is_open() {
                s.abort();
                self.smol_poll();
            }
        }
        self.remove_flow(id);
    }

    fn remove_flow(&mut self, id: u64) {
        let Some(f) = self.flows.remove(&id) else {
            return;
        };
        self.keys.remove(&f.key);
        match f.kind {
            Kind::Udp { .. } => self.udp_count = self.udp_count.saturating_sub(1),
            Kind::Tcp(t) => {
                self.sockets.remove(t.handle);
                self.tcp_count = self.tcp_count.saturating_sub(1);
            }
            Kind::Connecting { .. } => self.tcp_count = self.tcp_count.saturating_sub(1),
        }
        self.set_gauges();
        // Dropping the host socket closes it, which takes it out of epoll.
    }

    fn udp(
        &mut self,
        ip: &Ipv4<'_>,
        guest: SocketAddrV4,
        remote: SocketAddrV4,
        data: &[u8],
        now: Instant,
    ) {
        let key = Key {
            proto: wire::PROTO_UDP,
            guest,
            remote,
        };
        let id = match self.keys.get(&key) {
            Some(&id) => id,
            None => {
                let to = match self.target(remote) {
                    Target::To(a) => a,
                    Target::Unreachable(code) => {
                        self.count(Counter::HostRefused);
                        return self.unreachable(ip, code);
                    }
                    Target::Invalid => return self.count(Counter::DropUnsupported),
                };
                self.make_room();
                let any: SocketAddr = match to {
                    SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                    SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
                };
                let sock = UdpSocket::bind(any).and_then(|s| {
                    s.set_nonblocking(true)?;
                    s.connect(to)?;
                    Ok(s)
                });
                let host = match sock {
                    Ok(s) => s,
                    Err(e) => {
                        log::debug!("user net: UDP to {to}: {e}");
                        self.count(Counter::HostRefused);
                        let code = if errno(&e) == libc::ENETUNREACH { 0 } else { 1 };
                        return self.unreachable(ip, code);
                    }
                };
                let kind = Kind::Udp {
                    host,
                    quote: Vec::new(),
                };
                match self.add_flow(key, kind, now) {
                    Ok(id) => id,
                    Err(e) => {
                        log::debug!("user net: cannot watch a UDP socket: {e}");
                        return self.count(Counter::DropHostSend);
                    }
                }
            }
        };
        let Some(flow) = self.flows.get_mut(&id) else {
            return;
        };
        flow.last = now;
        let Kind::Udp { host, quote } = &mut flow.kind else {
            return;
        };
        let keep = ip.header_len.saturating_add(8).min(ip.packet.len());
        quote.clear();
        quote.extend_from_slice(ip.packet.get(..keep).unwrap_or_default());
        match host.send(data) {
            Ok(_) => {}
            Err(e) if errno(&e) == libc::ECONNREFUSED => {
                // An earlier datagram was refused; this one goes out on
                // the next try, the guest hears of the refusal now.
                self.count(Counter::HostRefused);
                self.unreachable(ip, 3);
            }
            Err(e) => {
                log::debug!("user net: UDP to {remote}: {e}");
                self.count(Counter::DropHostSend);
            }
        }
    }

    fn tcp(&mut self, ip: &Ipv4<'_>, seg: &Tcp, now: Instant) {
        let guest = SocketAddrV4::new(ip.src, seg.src_port);
        let remote = SocketAddrV4::new(ip.dst, seg.dst_port);
        let key = Key {
            proto: wire::PROTO_TCP,
            guest,
            remote,
        };
        let bare_syn = seg.flags & (wire::TCP_SYN | wire::TCP_ACK | wire::TCP_RST) == wire::TCP_SYN;
        if let Some(&id) = self.keys.get(&key) {
            let mut stale = false;
            if let Some(f) = self.flows.get_mut(&id) {
                match &f.kind {
                    // The guest retransmits its SYN while the host
                    // connect goes on: the first one will do.
                    Kind::Connecting { .. } => return,
                    Kind::Tcp(t) => {
                        let s = self.sockets.get::<tcp::Socket>(t.handle);
                        stale = bare_syn && !s.is_open();
                        if !stale {
                            f.last = now;
                        }
                    }
                    Kind::Udp { .. } => {}
                }
            }
            if !stale {
                self.pipe.rx = Some(ip.packet.to_vec());
                self.smol_poll();
                return;
            }
            // A new connection on the ports of one that is over.
            self.remove_flow(id);
        }
        if !bare_syn {
            // No flow: answered as a closed port (never a RST to a RST).
            if seg.flags & wire::TCP_RST == 0 {
                let id = self.next_ident();
                let rst = wire::tcp_rst_for(remote, guest, id, seg);
                self.push_ip(&rst);
            }
            return;
        }
        let to = match self.target(remote) {
            Target::To(a) => a,
            Target::Unreachable(1) => {
                self.count(Counter::HostRefused);
                return self.unreachable(ip, 1);
            }
            Target::Unreachable(_) => {
                let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
                return self.refuse(&e, ip, seg);
            }
            Target::Invalid => return self.count(Counter::DropUnsupported),
        };
        self.make_room();
        match connect_nonblocking(to) {
            Ok(host) => {
                let kind = Kind::Connecting {
                    host,
                    syn: ip.packet.to_vec(),
                };
                if let Err(e) = self.add_flow(key, kind, now) {
                    self.refuse(&e, ip, seg);
                }
            }
            Err(e) => self.refuse(&e, ip, seg),
        }
    }

    // --- from the host -------------------------------------------------

    /// Epoll reported `flags` for `token`.
    pub fn host_event(&mut self, token: u64, flags: EpollFlags, now: Instant) {
        if token >= LISTENER {
            if let Ok(i) = usize::try_from(token - LISTENER) {
                self.accept(i, now);
            }
            return;
        }
        let Some(flow) = self.flows.get_mut(&token) else {
            return;
        };
        let err = flags.intersects(EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP);
        match &mut flow.kind {
            Kind::Connecting { .. } => self.connected(token),
            Kind::Tcp(t) => {
                t.readable |= flags.contains(EpollFlags::EPOLLIN) || err;
                t.writable |= flags.contains(EpollFlags::EPOLLOUT) || err;
                if err && flow.interest.is_some() {
                    // Hung up or failed: level-triggered, it would be
                    // reported again and again; reads and writes say the
                    // rest.
                    let _ = self.epoll.delete(t.host.as_fd());
                    flow.interest = None;
                }
            }
            Kind::Udp { .. } => self.udp_readable(token, now),
        }
    }

    fn connected(&mut self, id: u64) {
        let Some(flow) = self.flows.get(&id) else {
            return;
        };
        let Kind::Connecting { host, .. } = &flow.kind else {
            return;
        };
        let result = match host.take_error() {
            Ok(None) => host.peer_addr().map(|_| ()),
            Ok(Some(e)) | Err(e) => Err(e),
        };
        if let Err(e) = result {
            if matches!(e.kind(), io::ErrorKind::WouldBlock) {
                return;
            }
            self.fail_connect(id, &e);
            return;
        }
        let Some(flow) = self.flows.remove(&id) else {
            return;
        };
        let Kind::Connecting { host, syn } = flow.kind else {
            return;
        };
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; self.cfg.limits.tcp_buffer]),
            tcp::SocketBuffer::new(vec![0u8; self.cfg.limits.tcp_buffer]),
        );
        s.set_nagle_enabled(false);
        let remote = flow.key.remote;
        let listening = s.listen(IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(*remote.ip())),
            port: remote.port(),
        });
        if listening.is_err() {
            self.keys.remove(&flow.key);
            self.tcp_count = self.tcp_count.saturating_sub(1);
            self.set_gauges();
            return;
        }
        let handle = self.sockets.add(s);
        let _ = host.set_nodelay(true);
        self.flows.insert(
            id,
            Flow {
                kind: Kind::Tcp(TcpFlow {
                    host,
                    handle,
                    readable: false,
                    writable: true,
                    host_eof: false,
                    host_shut: false,
                    dead: false,
                }),
                ..flow
            },
        );
        self.pipe.rx = Some(syn);
        self.smol_poll();
    }

    fn fail_connect(&mut self, id: u64, e: &io::Error) {
        let Some(flow) = self.flows.get(&id) else {
            return;
        };
        let Kind::Connecting { syn, .. } = &flow.kind else {
            return;
        };
        let syn = syn.clone();
        self.remove_flow(id);
        if let Ok(ip) = wire::parse_ipv4(&syn) {
            if let Ok(seg) = wire::parse_tcp(&ip) {
                self.refuse(e, &ip, &seg);
            }
        }
    }

    fn udp_readable(&mut self, id: u64, now: Instant) {
        for _ in 0..UDP_BURST {
            let Some(flow) = self.flows.get_mut(&id) else {
                return;
            };
            let Kind::Udp { host, quote } = &flow.kind else {
                return;
            };
            match host.recv(&mut self.scratch) {
                Ok(n) => {
                    flow.last = now;
                    let (guest, remote) = (flow.key.guest, flow.key.remote);
                    if n > UDP_MAX {
                        self.count(Counter::DropTooBig);
                        continue;
                    }
                    let ident = self.next_ident();
                    let data = self.scratch.get(..n).unwrap_or_default();
                    let p = wire::udp_packet(remote, guest, ident, data);
                    self.push_ip(&p);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if errno(&e) == libc::ECONNREFUSED => {
                    let quote = quote.clone();
                    self.count(Counter::HostRefused);
                    if let Ok(ip) = wire::parse_ipv4_quote(&quote) {
                        self.unreachable(&ip, 3);
                    }
                }
                Err(e) => {
                    log::debug!("user net: UDP receive: {e}");
                    return;
                }
            }
        }
    }

    fn accept(&mut self, i: usize, now: Instant) {
        for _ in 0..ACCEPT_BURST {
            let Some((l, fwd)) = self.listeners.get(i) else {
                return;
            };
            let fwd = *fwd;
            let (host, peer) = match l.accept() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::debug!("user net: hostfwd {}: accept: {e}", fwd.host_port);
                    return;
                }
            };
            self.count(Counter::HostfwdAccepted);
            if host.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = host.set_nodelay(true);
            self.make_room();
            let guest =
                SocketAddrV4::new(fwd.guest_addr.unwrap_or(self.cfg.guest_ip), fwd.guest_port);
            let Some(port) = self.free_port(guest) else {
                log::debug!("user net: no free port for a forwarded connection");
                continue;
            };
            let local = SocketAddrV4::new(self.cfg.gw_ip, port);
            let mut s = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0u8; self.cfg.limits.tcp_buffer]),
                tcp::SocketBuffer::new(vec![0u8; self.cfg.limits.tcp_buffer]),
            );
            s.set_nagle_enabled(false);
            let cx = self.iface.context();
            let remote = (IpAddress::Ipv4(*guest.ip()), guest.port());
            let local_ep = IpListenEndpoint {
                addr: Some(IpAddress::Ipv4(*local.ip())),
                port,
            };
            if let Err(e) = s.connect(cx, remote, local_ep) {
                log::debug!("user net: hostfwd to {guest}: {e:?}");
                continue;
            }
            log::debug!("user net: hostfwd {peer} -> {guest} from {local}");
            let handle = self.sockets.add(s);
            let key = Key {
                proto: wire::PROTO_TCP,
                guest,
                remote: local,
            };
            let flow = TcpFlow {
                host,
                handle,
                readable: false,
                writable: true,
                host_eof: false,
                host_shut: false,
                dead: false,
            };
            if self.add_flow(key, Kind::Tcp(flow), now).is_err() {
                self.sockets.remove(handle);
            }
        }
    }

    /// A gateway port no flow to `guest` uses.
    fn free_port(&mut self, guest: SocketAddrV4) -> Option<u16> {
        let span = usize::from(FWD_PORTS.end() - FWD_PORTS.start()) + 1;
        for _ in 0..span {
            let p = self.next_port;
            self.next_port = if p >= *FWD_PORTS.end() {
                *FWD_PORTS.start()
            } else {
                p + 1
            };
            let key = Key {
                proto: wire::PROTO_TCP,
                guest,
                remote: SocketAddrV4::new(self.cfg.gw_ip, p),
            };
            if !self.keys.contains_key(&key) {
                return Some(p);
            }
        }
        None
    }

    // --- moving data ---------------------------------------------------

    /// Runs smoltcp until it has nothing more to send now (or the queue
    /// for the guest is full), moving its packets into that queue.
    fn smol_poll(&mut self) {
        for _ in 0..POLL_PASSES {
            self.pipe.room = self.cfg.limits.out_frames.saturating_sub(self.out.len());
            let t = smol_now(self.start);
            let r = self.iface.poll(t, &mut self.pipe, &mut self.sockets);
            let sent = std::mem::take(&mut self.pipe.tx);
            let any = !sent.is_empty();
            for p in sent {
                self.push_ip(&p);
            }
            if r == smoltcp::iface::PollResult::None && !any {
                break;
            }
        }
    }

    /// Moves data between each TCP flow's smoltcp socket and its host
    /// socket; returns whether anything moved.
    fn relay(&mut self, now: Instant) -> bool {
        let mut moved = false;
        for (&id, flow) in self.flows.iter_mut() {
            let Kind::Tcp(t) = &mut flow.kind else {
                continue;
            };
            let s = self.sockets.get_mut::<tcp::Socket>(t.handle);
            let mut active = false;
            // Guest to host.
            while t.writable && !t.host_shut && !t.dead && s.can_recv() {
                let host = &t.host;
                let r = s.recv(|buf| match (&*host).write(buf) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                });
                match r {
                    Ok(Ok(0)) | Err(_) => break,
                    Ok(Ok(_)) => active = true,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => t.writable = false,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(e)) => {
                        log::debug!("user net: host write: {e}");
                        t.dead = true;
                    }
                }
            }
            if !t.host_shut && !t.dead && guest_finished(s) {
                let _ = t.host.shutdown(Shutdown::Write);
                t.host_shut = true;
                active = true;
            }
            // Host to guest.
            while t.readable && !t.host_eof && !t.dead && s.can_send() {
                let host = &t.host;
                let r = s.send(|buf| match (&*host).read(buf) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                });
                match r {
                    Ok(Ok(0)) => {
                        t.host_eof = true;
                        s.close();
                        active = true;
                    }
                    Err(_) => break,
                    Ok(Ok(_)) => active = true,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => t.readable = false,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(e)) => {
                        log::debug!("user net: host read: {e}");
                        t.dead = true;
                    }
                }
            }
            if t.dead && s.is_open() {
                s.abort();
                active = true;
            }
            if active {
                flow.last = now;
                moved = true;
            }
            // Watch the host socket for what the flow can take now.
            if let Some(current) = flow.interest {
                let mut want = EpollFlags::empty();
                if !t.readable && !t.host_eof && !t.dead && (s.can_send() || !s.may_send()) {
                    want |= EpollFlags::EPOLLIN;
                }
                if !t.writable && !t.host_shut && !t.dead && s.recv_queue() > 0 {
                    want |= EpollFlags::EPOLLOUT;
                }
                if want != current {
                    let mut ev = EpollEvent::new(want, id);
                    if self.epoll.modify(t.host.as_fd(), &mut ev).is_ok() {
                        flow.interest = Some(want);
                    }
                }
            }
        }
        moved
    }

    /// Ends flows whose time is up or whose both sides are done.
    fn sweep(&mut self, now: Instant) {
        let l = &self.cfg.limits;
        let mut done = Vec::new();
        let mut expired = Vec::new();
        for (&id, f) in &self.flows {
            let idle = now.saturating_duration_since(f.last);
            let age = now.saturating_duration_since(f.created);
            match &f.kind {
                Kind::Connecting { .. } => {
                    if age >= l.connect {
                        expired.push(id);
                    }
                }
                Kind::Udp { .. } => {
                    let limit = if f.key.remote.port() == super::dns::PORT {
                        l.dns_idle
                    } else {
                        l.udp_idle
                    };
                    if idle >= limit {
                        expired.push(id);
                    }
                }
                Kind::Tcp(t) => {
                    use tcp::State::*;
                    let s = self.sockets.get::<tcp::Socket>(t.handle);
                    let state = s.state();
                    if state == Closed || (state == TimeWait && t.host_shut) {
                        done.push(id);
                    } else if matches!(state, SynReceived | SynSent | Listen) {
                        if age >= l.handshake {
                            expired.push(id);
                        }
                    } else if t.host_eof || t.host_shut {
                        if idle >= l.half_closed {
                            expired.push(id);
                        }
                    } else if idle >= l.tcp_idle {
                        expired.push(id);
                    }
                }
            }
        }
        for id in done {
            self.remove_flow(id);
        }
        for id in expired {
            self.count(Counter::FlowsTimedOut);
            let connecting = matches!(
                self.flows.get(&id).map(|f| &f.kind),
                Some(Kind::Connecting { .. })
            );
            if connecting {
                let e = io::Error::from_raw_os_error(libc::ETIMEDOUT);
                self.fail_connect(id, &e);
            } else {
                self.close_flow(id);
            }
        }
    }

    /// After frames and host events: lets smoltcp answer, moves data both
    /// ways until nothing moves, and ends finished flows.
    pub fn service(&mut self, now: Instant) {
        self.smol_poll();
        for _ in 0..POLL_PASSES {
            if !self.relay(now) {
                break;
            }
            self.smol_poll();
        }
        self.sweep(now);
    }

    /// How long the owner may sleep before calling [`Stack::service`]
    /// again (smoltcp's timers, the flows' timeouts).
    pub fn next_wakeup(&mut self, now: Instant) -> Duration {
        let mut wait = Duration::from_secs(60);
        // With the queue for the guest full smoltcp cannot send: its
        // "now" would only spin; room comes with an epoll event.
        if self.out.len() < self.cfg.limits.out_frames {
            if let Some(d) = self.iface.poll_delay(smol_now(self.start), &self.sockets) {
                wait = wait.min(Duration::from_micros(d.total_micros()));
            }
        }
        for f in self.flows.values() {
            if let Some(deadline) = self.deadline(f) {
                wait = wait.min(deadline.saturating_duration_since(now));
            }
        }
        wait
    }

    /// When `f` times out, by the same rules as [`Stack::sweep`].
    fn deadline(&self, f: &Flow) -> Option<Instant> {
        use tcp::State::*;
        let l = &self.cfg.limits;
        let (from, limit) = match &f.kind {
            Kind::Connecting { .. } => (f.created, l.connect),
            Kind::Udp { .. } if f.key.remote.port() == super::dns::PORT => (f.last, l.dns_idle),
            Kind::Udp { .. } => (f.last, l.udp_idle),
            Kind::Tcp(t) => {
                let state = self.sockets.get::<tcp::Socket>(t.handle).state();
                if state == Closed || (state == TimeWait && t.host_shut) {
                    return Some(f.last);
                } else if matches!(state, SynReceived | SynSent | Listen) {
                    (f.created, l.handshake)
                } else if t.host_eof || t.host_shut {
                    (f.last, l.half_closed)
                } else {
                    (f.last, l.tcp_idle)
                }
            }
        };
        from.checked_add(limit)
    }

    /// Open flows (TCP, UDP), for tests.
    #[cfg(test)]
    pub fn flow_counts(&self) -> (u64, u64) {
        (self.tcp_count, self.udp_count)
    }
}
