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
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpListenEndpoint};

use super::super::spec::{same_24, HostFwd};
use super::super::stats::{Counter, NetStats};
use super::dhcp;
use super::wire::{self, Bad, Ipv4, Tcp};
use crate::virtio::net::HDR_LEN;

mod flows;
mod pipe;
mod tcp_flows;
mod udp_flows;

use pipe::Pipe;

/// Open flows per card when lkvm's descriptor limit allows them.
pub const MAX_FLOWS: usize = 1024;

/// What a guest cannot exceed; tests shrink them.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Open flows (TCP and UDP together, each a host socket); a new one
    /// closes the flow idle the longest. Cards take at most a quarter of
    /// lkvm's descriptor limit ([`MAX_FLOWS`] or fewer).
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
            max_flows: MAX_FLOWS,
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

impl TcpFlow {
    /// A flow whose host socket is connected: writable until it says
    /// otherwise, nothing read or shut yet.
    fn connected(host: TcpStream, handle: SocketHandle) -> TcpFlow {
        TcpFlow {
            host,
            handle,
            readable: false,
            writable: true,
            host_eof: false,
            host_shut: false,
            dead: false,
        }
    }
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

fn smol_now(start: Instant) -> SmolInstant {
    SmolInstant::from_micros(start.elapsed().as_micros() as i64)
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
}
