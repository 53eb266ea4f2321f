//! Raw Ethernet frames through the user-mode stack, with real host
//! sockets on 127.0.0.1 on the other side: DHCP, ARP, ICMP echo, TCP
//! through the NAT, UDP, DNS forwarding, hostfwd, the flow cap, refusals,
//! timeouts and every class of malformed frame.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::epoll::{EpollEvent, EpollTimeout};

use super::dhcp::{self, kinds};
use super::stack::{Config, Limits, Stack};
use super::wire::{self, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use crate::virtio::net::spec::HostFwd;
use crate::virtio::net::stats::{Counter, NetStats};
use crate::virtio::net::HDR_LEN;

mod limits;
mod link;
mod malformed;
mod tcp;
mod thread;
mod udp;

const GUEST_MAC: [u8; 6] = [2, 0x15, 0x15, 0x15, 0x15, 0x15];
const GW_MAC: [u8; 6] = [2, 1, 1, 1, 1, 1];
const GUEST: Ipv4Addr = Ipv4Addr::new(192, 168, 33, 15);
const GW: Ipv4Addr = Ipv4Addr::new(192, 168, 33, 1);

fn config(limits: Limits, dns: Option<std::net::SocketAddr>) -> Config {
    Config {
        guest_mac: GUEST_MAC,
        gw_mac: GW_MAC,
        guest_ip: GUEST,
        gw_ip: GW,
        dns,
        loopback: Ipv4Addr::LOCALHOST.into(),
        limits,
    }
}

struct Rig {
    stack: Stack,
    stats: Arc<NetStats>,
}

/// An output frame, parsed down to its IPv4 packet when it has one.
struct Out {
    eth_dst: [u8; 6],
    ethertype: u16,
    payload: Vec<u8>,
}

impl Rig {
    fn new() -> Rig {
        Rig::with(Limits::default(), None, Vec::new())
    }

    fn with(
        limits: Limits,
        dns: Option<std::net::SocketAddr>,
        fwd: Vec<(TcpListener, HostFwd)>,
    ) -> Rig {
        let stats = Arc::new(NetStats::default());
        let stack = Stack::new(config(limits, dns), fwd, stats.clone()).unwrap();
        Rig { stack, stats }
    }

    fn send_eth(&mut self, frame: &[u8]) {
        let now = Instant::now();
        self.stack.from_guest(frame, now);
        self.stack.service(now);
    }

    fn send_ip(&mut self, packet: &[u8]) {
        self.send_eth(&wire::eth_frame(
            GW_MAC,
            GUEST_MAC,
            wire::ETHERTYPE_IPV4,
            packet,
        ));
    }

    /// Waits for host events for up to `ms`, once.
    fn pump(&mut self, ms: u16) {
        let mut ev = [EpollEvent::empty(); 16];
        let n = self
            .stack
            .epoll()
            .wait(&mut ev, EpollTimeout::from(ms))
            .unwrap_or(0);
        let now = Instant::now();
        for e in ev.iter().take(n) {
            self.stack.host_event(e.data(), e.events(), now);
        }
        self.stack.service(now);
    }

    fn frames(&mut self) -> Vec<Out> {
        let mut v = Vec::new();
        while let Some(f) = self.stack.front() {
            assert!(f.len() >= HDR_LEN && f[..HDR_LEN] == [0; HDR_LEN]);
            let eth = wire::parse_eth(&f[HDR_LEN..]).unwrap();
            assert_eq!(eth.src, GW_MAC);
            v.push(Out {
                eth_dst: eth.dst,
                ethertype: eth.ethertype,
                payload: eth.payload.to_vec(),
            });
            self.stack.pop_front();
        }
        v
    }

    /// Pumps until `want` holds for an output frame (up to 5 s); returns it.
    fn wait_frame(&mut self, what: &str, want: impl Fn(&Out) -> bool) -> Out {
        let start = Instant::now();
        loop {
            if let Some(f) = self.frames().into_iter().find(|f| want(f)) {
                return f;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "timed out: {what}"
            );
            self.pump(20);
        }
    }

    fn get(&self, c: Counter) -> u64 {
        self.stats.get(c)
    }
}

fn ip_of(o: &Out) -> wire::Ipv4<'_> {
    assert_eq!(o.ethertype, wire::ETHERTYPE_IPV4);
    wire::parse_ipv4(&o.payload).unwrap()
}

fn is_tcp(o: &Out) -> bool {
    o.ethertype == wire::ETHERTYPE_IPV4
        && wire::parse_ipv4(&o.payload).is_ok_and(|ip| ip.proto == wire::PROTO_TCP)
}

fn tcp_of(o: &Out) -> (wire::Tcp, Vec<u8>) {
    let ip = ip_of(o);
    let t = wire::parse_tcp(&ip).unwrap();
    (t, ip.payload[t.header_len..].to_vec())
}

/// The guest's end of one TCP connection, built by hand.
struct GuestTcp {
    me: SocketAddrV4,
    peer: SocketAddrV4,
    seq: u32,
    ack: u32,
}

impl GuestTcp {
    fn seg(&self, flags: u8, data: &[u8]) -> Vec<u8> {
        wire::tcp_packet(
            self.me, self.peer, 1, self.seq, self.ack, flags, 65535, data,
        )
    }

    /// Whether `o` is a segment of this connection towards the guest.
    fn mine(&self, o: &Out) -> bool {
        if !is_tcp(o) {
            return false;
        }
        let ip = ip_of(o);
        let (t, _) = tcp_of(o);
        ip.src == *self.peer.ip()
            && ip.dst == *self.me.ip()
            && t.src_port == self.peer.port()
            && t.dst_port == self.me.port()
    }
}

fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&GUEST_MAC);
    a.extend_from_slice(&GUEST.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target.octets());
    wire::eth_frame(wire::BROADCAST_MAC, GUEST_MAC, wire::ETHERTYPE_ARP, &a)
}

fn dhcp_frame(msg: &[u8]) -> Vec<u8> {
    let p = wire::udp_packet(
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, dhcp::CLIENT_PORT),
        SocketAddrV4::new(Ipv4Addr::BROADCAST, dhcp::SERVER_PORT),
        1,
        msg,
    );
    wire::eth_frame(wire::BROADCAST_MAC, GUEST_MAC, wire::ETHERTYPE_IPV4, &p)
}

fn dhcp_reply(o: &Out) -> (Ipv4Addr, Vec<u8>) {
    let ip = ip_of(o);
    assert_eq!(ip.src, GW);
    let u = wire::parse_udp(&ip).unwrap();
    assert_eq!((u.src_port, u.dst_port), (67, 68));
    (ip.dst, u.payload.to_vec())
}

/// Opens a connection from the guest to `peer` and completes the
/// handshake; returns the guest's end.
fn guest_connect(r: &mut Rig, port: u16, peer: SocketAddrV4) -> GuestTcp {
    let mut g = GuestTcp {
        me: SocketAddrV4::new(GUEST, port),
        peer,
        seq: 1000,
        ack: 0,
    };
    r.send_ip(&g.seg(TCP_SYN, &[]));
    let synack = r.wait_frame("SYN-ACK", |o| g.mine(o));
    let (t, _) = tcp_of(&synack);
    assert_eq!(
        t.flags & (TCP_SYN | TCP_ACK),
        TCP_SYN | TCP_ACK,
        "{:#x}",
        t.flags
    );
    assert_eq!(t.ack, 1001);
    g.seq = 1001;
    g.ack = t.seq.wrapping_add(1);
    r.send_ip(&g.seg(TCP_ACK, &[]));
    g
}

/// Reads from the guest's side until `n` bytes came, acking each segment.
fn guest_read(r: &mut Rig, g: &mut GuestTcp, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "read {} of {n}",
            got.len()
        );
        for o in r.frames() {
            if !g.mine(&o) {
                continue;
            }
            let (t, data) = tcp_of(&o);
            if t.seq == g.ack && !data.is_empty() {
                got.extend_from_slice(&data);
                g.ack = g.ack.wrapping_add(data.len() as u32);
                r.send_ip(&g.seg(TCP_ACK, &[]));
            }
        }
        r.pump(10);
    }
    got
}

fn udp_frame(from_port: u16, to: SocketAddrV4, data: &[u8]) -> Vec<u8> {
    let p = wire::udp_packet(SocketAddrV4::new(GUEST, from_port), to, 3, data);
    wire::eth_frame(GW_MAC, GUEST_MAC, wire::ETHERTYPE_IPV4, &p)
}

/// (a UDP "connect" only picks the route; nothing is sent).
fn host_address() -> Option<Ipv4Addr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    match s.local_addr().ok()? {
        std::net::SocketAddr::V4(a) if !a.ip().is_loopback() && !a.ip().is_unspecified() => {
            Some(*a.ip())
        }
        _ => None,
    }
}
