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

// --- ARP, ICMP, DHCP ----------------------------------------------------

fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&GUEST_MAC);
    a.extend_from_slice(&GUEST.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target.octets());
    wire::eth_frame(wire::BROADCAST_MAC, GUEST_MAC, wire::ETHERTYPE_ARP, &a)
}

#[test]
fn arp_for_the_gateway_is_answered_and_for_others_not() {
    let mut r = Rig::new();
    r.send_eth(&arp_request(GW));
    let f = r.frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].eth_dst, GUEST_MAC);
    assert_eq!(f[0].ethertype, wire::ETHERTYPE_ARP);
    let a = &f[0].payload;
    assert_eq!(&a[6..8], &[0, 2], "a reply");
    assert_eq!(&a[8..14], &GW_MAC);
    assert_eq!(&a[14..18], &GW.octets());
    assert_eq!(&a[18..24], &GUEST_MAC);
    assert_eq!(&a[24..28], &GUEST.octets());
    r.send_eth(&arp_request(Ipv4Addr::new(192, 168, 33, 77)));
    assert!(r.frames().is_empty());
}

#[test]
fn icmp_echo_to_the_gateway_is_answered() {
    let mut r = Rig::new();
    let ping = wire::icmp_packet(GUEST, GW, 9, 8, 0, [0x12, 0x34, 0, 1], b"lkvm ping data");
    r.send_ip(&ping);
    let f = r.frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].eth_dst, GUEST_MAC);
    let ip = ip_of(&f[0]);
    assert_eq!((ip.src, ip.dst), (GW, GUEST));
    let m = wire::parse_icmp(&ip).unwrap();
    assert_eq!(
        (m.kind, m.code, m.rest, m.data),
        (0, 0, [0x12, 0x34, 0, 1], &b"lkvm ping data"[..])
    );
    // Echo to anyone else is not carried.
    let other = wire::icmp_packet(GUEST, Ipv4Addr::new(8, 8, 8, 8), 9, 8, 0, [0; 4], b"x");
    r.send_ip(&other);
    assert!(r.frames().is_empty());
    assert_eq!(r.get(Counter::DropUnsupported), 1);
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

#[test]
fn the_dhcp_exchange_gives_kvmtools_addresses() {
    let mut r = Rig::new();
    let zero = Ipv4Addr::UNSPECIFIED;
    r.send_eth(&dhcp_frame(&dhcp::client_message(
        kinds::DISCOVER,
        0x1234,
        GUEST_MAC,
        zero,
        &[],
    )));
    let f = r.frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].eth_dst, wire::BROADCAST_MAC);
    let (dst, offer) = dhcp_reply(&f[0]);
    assert_eq!(dst, Ipv4Addr::BROADCAST);
    assert_eq!(&offer[4..8], &0x1234u32.to_be_bytes());
    assert_eq!(&offer[16..20], &GUEST.octets(), "yiaddr");
    let opts = dhcp::reply_options(&offer);
    assert_eq!(opts[0], (53, vec![kinds::OFFER]));
    assert!(opts.contains(&(3, GW.octets().to_vec())), "router");
    assert!(opts.contains(&(6, GW.octets().to_vec())), "DNS");
    assert!(opts.contains(&(1, vec![255, 255, 255, 0])), "mask");
    assert!(
        opts.contains(&(51, dhcp::LEASE_SECS.to_be_bytes().to_vec())),
        "lease"
    );
    let req = dhcp::client_message(
        kinds::REQUEST,
        0x1235,
        GUEST_MAC,
        zero,
        &[
            (kinds::REQUESTED_IP, GUEST.octets().to_vec()),
            (kinds::SERVER_ID, GW.octets().to_vec()),
        ],
    );
    r.send_eth(&dhcp_frame(&req));
    let f = r.frames();
    assert_eq!(f.len(), 1);
    let (_, ack) = dhcp_reply(&f[0]);
    assert_eq!(dhcp::reply_options(&ack)[0], (53, vec![kinds::ACK]));
    assert_eq!(&ack[16..20], &GUEST.octets());
    // A request for another address is refused.
    let bad = dhcp::client_message(
        kinds::REQUEST,
        0x1236,
        GUEST_MAC,
        zero,
        &[(kinds::REQUESTED_IP, vec![192, 168, 33, 99])],
    );
    r.send_eth(&dhcp_frame(&bad));
    let (_, nak) = dhcp_reply(&r.frames()[0]);
    assert_eq!(dhcp::reply_options(&nak)[0], (53, vec![kinds::NAK]));
    // Garbage to port 67 is counted, not answered.
    r.send_eth(&dhcp_frame(b"not bootp"));
    assert!(r.frames().is_empty());
    assert_eq!(r.get(Counter::DropMalformed), 1);
}

// --- TCP ------------------------------------------------------------------

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

#[test]
fn tcp_through_the_nat_to_a_listener_on_the_hosts_loopback() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut r = Rig::new();
    // The gateway's address stands for the host's loopback.
    let mut g = guest_connect(&mut r, 40000, SocketAddrV4::new(GW, port));
    let (mut host, _) = l.accept().unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(r.get(Counter::TcpFlows), 1);
    // Guest to host.
    r.send_ip(&g.seg(TCP_ACK | 0x08, b"hello host"));
    g.seq = g.seq.wrapping_add(10);
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while got.len() < 10 {
        r.pump(10);
        let n = host.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"hello host");
    // Host to guest, more than one segment's worth.
    let big: Vec<u8> = (0..20000u32).map(|i| (i % 251) as u8).collect();
    host.write_all(&big).unwrap();
    assert_eq!(guest_read(&mut r, &mut g, big.len()), big);
    // The host closes: the guest gets a FIN; the guest closes: the host
    // reads end of file, and the flow is gone.
    drop(l);
    host.shutdown(std::net::Shutdown::Write).unwrap();
    let fin = r.wait_frame("FIN", |o| g.mine(o) && tcp_of(o).0.flags & TCP_FIN != 0);
    let (t, _) = tcp_of(&fin);
    g.ack = t.seq.wrapping_add(1);
    r.send_ip(&g.seg(TCP_ACK | TCP_FIN, &[]));
    let n = loop {
        r.pump(10);
        match host.read(&mut buf) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(n, 0, "end of file on the host");
    let start = Instant::now();
    while r.get(Counter::TcpFlows) != 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "the flow stays");
        r.pump(10);
    }
    assert_eq!(r.get(Counter::FlowsOpened), 1);
}

#[test]
fn a_refused_connection_is_reset_and_an_unreachable_one_answered_icmp() {
    // A port nobody listens on: bind one, note it, close it.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut r = Rig::new();
    let g = GuestTcp {
        me: SocketAddrV4::new(GUEST, 40001),
        peer: SocketAddrV4::new(GW, port),
        seq: 5000,
        ack: 0,
    };
    r.send_ip(&g.seg(TCP_SYN, &[]));
    let rst = r.wait_frame("RST", |o| g.mine(o));
    let (t, _) = tcp_of(&rst);
    assert_eq!(t.flags, TCP_RST | TCP_ACK);
    assert_eq!(t.ack, 5001);
    assert_eq!(r.get(Counter::HostRefused), 1);
    assert_eq!(r.get(Counter::TcpFlows), 0);
    // Another address of the guest's own net: nobody is there.
    let g2 = GuestTcp {
        me: SocketAddrV4::new(GUEST, 40002),
        peer: SocketAddrV4::new(Ipv4Addr::new(192, 168, 33, 77), 80),
        seq: 1,
        ack: 0,
    };
    r.send_ip(&g2.seg(TCP_SYN, &[]));
    let f = r.frames();
    assert_eq!(f.len(), 1);
    let ip = ip_of(&f[0]);
    let m = wire::parse_icmp(&ip).unwrap();
    assert_eq!((m.kind, m.code), (3, 1), "host unreachable");
    // A segment of no flow gets a RST; a RST of no flow nothing.
    let stray = GuestTcp {
        seq: 77,
        ack: 99,
        ..g2
    };
    let stray = GuestTcp {
        peer: SocketAddrV4::new(GW, port),
        ..stray
    };
    r.send_ip(&stray.seg(TCP_ACK, b"x"));
    let (t, _) = tcp_of(&r.frames()[0]);
    assert_eq!((t.flags, t.seq), (TCP_RST, 99));
    r.send_ip(&stray.seg(TCP_RST, &[]));
    assert!(r.frames().is_empty());
}

#[test]
fn hostfwd_carries_a_host_client_to_a_guest_server() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let hp = l.local_addr().unwrap().port();
    let fwd = HostFwd {
        host_addr: Ipv4Addr::LOCALHOST,
        host_port: hp,
        guest_addr: None,
        guest_port: 22,
    };
    let mut r = Rig::with(Limits::default(), None, vec![(l, fwd)]);
    let mut client = TcpStream::connect(("127.0.0.1", hp)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // The stack connects to the guest's port 22 from the gateway.
    let syn = r.wait_frame("SYN to the guest", |o| {
        is_tcp(o) && tcp_of(o).0.dst_port == 22 && tcp_of(o).0.flags & TCP_SYN != 0
    });
    let ip = ip_of(&syn);
    assert_eq!((ip.src, ip.dst), (GW, GUEST));
    let (t, _) = tcp_of(&syn);
    assert!((49152..=65535).contains(&t.src_port));
    assert_eq!(r.get(Counter::HostfwdAccepted), 1);
    let mut g = GuestTcp {
        me: SocketAddrV4::new(GUEST, 22),
        peer: SocketAddrV4::new(GW, t.src_port),
        seq: 7000,
        ack: t.seq.wrapping_add(1),
    };
    r.send_ip(&g.seg(TCP_SYN | TCP_ACK, &[]));
    g.seq += 1;
    // The server in the guest speaks first: a per-boot token.
    r.send_ip(&g.seg(TCP_ACK | 0x08, b"token-42\n"));
    g.seq += 9;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    client.set_nonblocking(true).unwrap();
    let start = Instant::now();
    while got.len() < 9 {
        assert!(start.elapsed() < Duration::from_secs(5));
        r.pump(10);
        if let Ok(n) = client.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
    }
    assert_eq!(got, b"token-42\n");
    client.write_all(b"thanks").unwrap();
    assert_eq!(guest_read(&mut r, &mut g, 6), b"thanks");
    // The guest resets: the host client sees the end.
    r.send_ip(&g.seg(TCP_RST, &[]));
    client.set_nonblocking(false).unwrap();
    let start = Instant::now();
    while r.get(Counter::TcpFlows) != 0 {
        assert!(start.elapsed() < Duration::from_secs(5));
        r.pump(10);
    }
    assert!(matches!(client.read(&mut buf), Ok(0) | Err(_)));
}

// --- UDP and DNS ------------------------------------------------------------

fn udp_frame(from_port: u16, to: SocketAddrV4, data: &[u8]) -> Vec<u8> {
    let p = wire::udp_packet(SocketAddrV4::new(GUEST, from_port), to, 3, data);
    wire::eth_frame(GW_MAC, GUEST_MAC, wire::ETHERTYPE_IPV4, &p)
}

#[test]
fn udp_both_ways_through_the_gateway() {
    let host = UdpSocket::bind("127.0.0.1:0").unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let port = host.local_addr().unwrap().port();
    let mut r = Rig::new();
    r.send_eth(&udp_frame(
        5555,
        SocketAddrV4::new(GW, port),
        b"ping over udp",
    ));
    let mut buf = [0u8; 64];
    let (n, from) = host.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping over udp");
    assert_eq!(r.get(Counter::UdpFlows), 1);
    host.send_to(b"pong", from).unwrap();
    let f = r.wait_frame("the reply", |o| o.ethertype == wire::ETHERTYPE_IPV4);
    let ip = ip_of(&f);
    assert_eq!((ip.src, ip.dst), (GW, GUEST));
    let u = wire::parse_udp(&ip).unwrap();
    assert_eq!(
        (u.src_port, u.dst_port, u.payload),
        (port, 5555, &b"pong"[..])
    );
    // The same flow carries the next datagram.
    r.send_eth(&udp_frame(5555, SocketAddrV4::new(GW, port), b"again"));
    let (n, from2) = host.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from2), (&b"again"[..], from));
    assert_eq!(r.get(Counter::FlowsOpened), 1);
}

#[test]
fn udp_to_a_closed_port_gets_icmp_port_unreachable() {
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut r = Rig::new();
    r.send_eth(&udp_frame(5556, SocketAddrV4::new(GW, port), b"anyone?"));
    let f = r.wait_frame("ICMP", |o| {
        o.ethertype == wire::ETHERTYPE_IPV4 && ip_of(o).proto == wire::PROTO_ICMP
    });
    let ip = ip_of(&f);
    assert_eq!(ip.dst, GUEST);
    let m = wire::parse_icmp(&ip).unwrap();
    assert_eq!((m.kind, m.code), (3, 3));
    // It quotes the guest's datagram: its header and UDP header.
    let q = wire::parse_ipv4_quote(m.data).unwrap();
    assert_eq!((q.src, q.dst), (GUEST, GW));
    assert_eq!(&q.payload[..2], &5556u16.to_be_bytes());
    assert_eq!(r.get(Counter::HostRefused), 1);
}

#[test]
fn dns_to_the_gateway_goes_to_the_hosts_resolver() {
    let resolver = UdpSocket::bind("127.0.0.1:0").unwrap();
    resolver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let addr = resolver.local_addr().unwrap();
    let mut r = Rig::with(Limits::default(), Some(addr), Vec::new());
    let query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04lkvm\x00\x00\x01\x00\x01";
    r.send_eth(&udp_frame(33333, SocketAddrV4::new(GW, 53), query));
    let mut buf = [0u8; 512];
    let (n, from) = resolver.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], query);
    let mut answer = buf[..n].to_vec();
    answer[2] = 0x81;
    answer[3] = 0x80;
    resolver.send_to(&answer, from).unwrap();
    let f = r.wait_frame("the answer", |o| o.ethertype == wire::ETHERTYPE_IPV4);
    let ip = ip_of(&f);
    let u = wire::parse_udp(&ip).unwrap();
    assert_eq!((ip.src, u.src_port, u.dst_port), (GW, 53, 33333));
    assert_eq!(u.payload, &answer[..]);
    // Without a resolver, the port is unreachable.
    let mut r = Rig::new();
    r.send_eth(&udp_frame(33334, SocketAddrV4::new(GW, 53), query));
    let f = r.frames();
    let m = wire::parse_icmp(&ip_of(&f[0])).unwrap();
    assert_eq!((m.kind, m.code), (3, 3));
}

// --- limits -------------------------------------------------------------------

#[test]
fn the_flow_cap_evicts_the_oldest_idle_flow() {
    let host = UdpSocket::bind("127.0.0.1:0").unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let port = host.local_addr().unwrap().port();
    let limits = Limits {
        max_flows: 3,
        ..Limits::default()
    };
    let mut r = Rig::with(limits, None, Vec::new());
    let to = SocketAddrV4::new(GW, port);
    let mut buf = [0u8; 16];
    for p in [6001, 6002, 6003] {
        r.send_eth(&udp_frame(p, to, b"x"));
        host.recv_from(&mut buf).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    // 6001 is used again: 6002 is now the one idle the longest.
    r.send_eth(&udp_frame(6001, to, b"x"));
    let (_, from_6001) = host.recv_from(&mut buf).unwrap();
    r.send_eth(&udp_frame(6004, to, b"x"));
    host.recv_from(&mut buf).unwrap();
    assert_eq!(r.get(Counter::UdpFlows), 3);
    assert_eq!(r.get(Counter::FlowsEvicted), 1);
    assert_eq!(r.get(Counter::FlowsOpened), 4);
    // 6001's flow survived: an answer to it still reaches the guest.
    host.send_to(b"still here", from_6001).unwrap();
    let f = r.wait_frame("the answer", |o| o.ethertype == wire::ETHERTYPE_IPV4);
    assert_eq!(wire::parse_udp(&ip_of(&f)).unwrap().dst_port, 6001);

    // A TCP flow evicted is reset towards the guest.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let tp = l.local_addr().unwrap().port();
    let limits = Limits {
        max_flows: 1,
        ..Limits::default()
    };
    let mut r = Rig::with(limits, None, Vec::new());
    let g = guest_connect(&mut r, 41000, SocketAddrV4::new(GW, tp));
    r.send_eth(&udp_frame(6001, to, b"x"));
    let rst = r.wait_frame("RST", |o| g.mine(o) && tcp_of(o).0.flags & TCP_RST != 0);
    assert!(g.mine(&rst));
    assert_eq!((r.get(Counter::TcpFlows), r.get(Counter::UdpFlows)), (0, 1));
    assert_eq!(r.get(Counter::FlowsEvicted), 1);
}

#[test]
fn idle_and_half_open_flows_time_out() {
    let host = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    let limits = Limits {
        udp_idle: Duration::from_millis(30),
        handshake: Duration::from_millis(30),
        ..Limits::default()
    };
    let mut r = Rig::with(limits, None, Vec::new());
    r.send_eth(&udp_frame(7001, SocketAddrV4::new(GW, port), b"x"));
    assert_eq!(r.get(Counter::UdpFlows), 1);
    // A guest that never answers the SYN-ACK.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let g = GuestTcp {
        me: SocketAddrV4::new(GUEST, 41001),
        peer: SocketAddrV4::new(GW, l.local_addr().unwrap().port()),
        seq: 1,
        ack: 0,
    };
    r.send_ip(&g.seg(TCP_SYN, &[]));
    r.wait_frame("SYN-ACK", |o| g.mine(o));
    assert!(r.stack.next_wakeup(Instant::now()) <= Duration::from_millis(30));
    let start = Instant::now();
    while r.get(Counter::UdpFlows) + r.get(Counter::TcpFlows) != 0 {
        assert!(start.elapsed() < Duration::from_secs(5));
        r.pump(10);
    }
    assert_eq!(r.get(Counter::FlowsTimedOut), 2);
}

#[test]
fn the_queue_for_the_guest_is_bounded() {
    let limits = Limits {
        out_frames: 4,
        ..Limits::default()
    };
    let mut r = Rig::with(limits, None, Vec::new());
    for _ in 0..10 {
        let now = Instant::now();
        r.stack.from_guest(&arp_request(GW), now);
    }
    assert_eq!(r.frames().len(), 4);
    assert_eq!(r.get(Counter::DropQueueFull), 6);
}

// --- malformed frames -----------------------------------------------------------

#[test]
fn each_class_of_malformed_frame_is_dropped_and_counted() {
    let mut r = Rig::new();
    let to = SocketAddrV4::new(GW, 9);
    let good = wire::udp_packet(SocketAddrV4::new(GUEST, 1), to, 1, b"payload!");
    let eth = |p: &[u8]| wire::eth_frame(GW_MAC, GUEST_MAC, wire::ETHERTYPE_IPV4, p);
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut p = good.clone();
        f(&mut p);
        p
    };
    // Recomputes the IP header checksum after a change to the header.
    let fix = |p: &mut Vec<u8>| {
        p[10] = 0;
        p[11] = 0;
        let c = wire::fold(wire::sum(&p[..20], 0));
        p[10..12].copy_from_slice(&c.to_be_bytes());
    };
    let cases: Vec<(&str, Vec<u8>, Counter)> = vec![
        ("short frame", vec![0u8; 10], Counter::DropMalformed),
        ("no IP header", eth(&good[..12]), Counter::DropMalformed),
        (
            "IP version 6 in an IPv4 frame",
            eth(&with(&|p| p[0] = 0x65)),
            Counter::DropMalformed,
        ),
        (
            "header length 16",
            eth(&with(&|p| {
                p[0] = 0x44;
                fix(p)
            })),
            Counter::DropMalformed,
        ),
        (
            "total length past the frame",
            eth(&with(&|p| {
                p[2] = 0x10;
                fix(p)
            })),
            Counter::DropMalformed,
        ),
        (
            "bad IP checksum",
            eth(&with(&|p| p[10] ^= 0xff)),
            Counter::DropBadChecksum,
        ),
        (
            "first fragment",
            eth(&with(&|p| {
                p[6] = 0x20;
                fix(p)
            })),
            Counter::DropFragment,
        ),
        (
            "later fragment",
            eth(&with(&|p| {
                p[7] = 0x08;
                fix(p)
            })),
            Counter::DropFragment,
        ),
        (
            "bad UDP checksum",
            eth(&with(&|p| {
                let l = p.len();
                p[l - 1] ^= 1
            })),
            Counter::DropBadChecksum,
        ),
        (
            "UDP length past the packet",
            eth(&with(&|p| p[25] = 0xf0)),
            Counter::DropMalformed,
        ),
        (
            "bad TCP checksum",
            eth(&{
                let mut t =
                    wire::tcp_packet(SocketAddrV4::new(GUEST, 1), to, 1, 1, 0, TCP_SYN, 100, &[]);
                t[36] ^= 1;
                t
            }),
            Counter::DropBadChecksum,
        ),
        (
            "TCP header past the packet",
            eth(&{
                let mut t =
                    wire::tcp_packet(SocketAddrV4::new(GUEST, 1), to, 1, 1, 0, TCP_SYN, 100, &[]);
                t[32] = 0xf0;
                t
            }),
            Counter::DropMalformed,
        ),
        (
            "bad ICMP checksum",
            eth(&{
                let mut m = wire::icmp_packet(GUEST, GW, 1, 8, 0, [0; 4], b"ping");
                m[22] ^= 1;
                m
            }),
            Counter::DropBadChecksum,
        ),
        (
            "short ARP",
            wire::eth_frame(
                wire::BROADCAST_MAC,
                GUEST_MAC,
                wire::ETHERTYPE_ARP,
                &[0, 1, 8, 0],
            ),
            Counter::DropMalformed,
        ),
        (
            "IPv6",
            wire::eth_frame(GW_MAC, GUEST_MAC, wire::ETHERTYPE_IPV6, &[0x60; 60]),
            Counter::DropUnsupported,
        ),
        (
            "unknown ethertype",
            wire::eth_frame(GW_MAC, GUEST_MAC, 0x88b5, b"x"),
            Counter::DropUnsupported,
        ),
        (
            "multicast",
            wire::eth_frame(
                [0x33, 0x33, 0, 0, 0, 1],
                GUEST_MAC,
                wire::ETHERTYPE_IPV4,
                &good,
            ),
            Counter::DropUnsupported,
        ),
        (
            "another MAC",
            wire::eth_frame([2, 9, 9, 9, 9, 9], GUEST_MAC, wire::ETHERTYPE_IPV4, &good),
            Counter::DropNotForUs,
        ),
        (
            "an unknown IP protocol",
            eth(&wire::ipv4_packet(GUEST, GW, 132, 1, b"sctp")),
            Counter::DropUnsupported,
        ),
        (
            "a source outside the guest's net",
            eth(&wire::udp_packet(
                SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 1),
                to,
                1,
                b"x",
            )),
            Counter::DropUnsupported,
        ),
        (
            "UDP to a broadcast address",
            eth(&wire::udp_packet(
                SocketAddrV4::new(GUEST, 1),
                SocketAddrV4::new(Ipv4Addr::BROADCAST, 9),
                1,
                b"x",
            )),
            Counter::DropUnsupported,
        ),
    ];
    for (what, frame, counter) in cases {
        let before = r.get(counter);
        r.send_eth(&frame);
        assert_eq!(r.get(counter), before + 1, "{what}");
        assert!(r.frames().is_empty(), "{what}: answered");
    }
    assert_eq!(r.get(Counter::UdpFlows) + r.get(Counter::TcpFlows), 0);
}

#[test]
fn random_frames_never_crash_the_stack() {
    // A small xorshift: reproducible garbage, some of it close to valid.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut r = Rig::new();
    let base = wire::eth_frame(
        GW_MAC,
        GUEST_MAC,
        wire::ETHERTYPE_IPV4,
        &wire::tcp_packet(
            SocketAddrV4::new(GUEST, 1),
            SocketAddrV4::new(GW, 1),
            1,
            1,
            0,
            TCP_SYN,
            9,
            b"abc",
        ),
    );
    for i in 0..20000 {
        let mut f = if i % 2 == 0 {
            base.clone()
        } else {
            vec![0u8; (next() % 1600) as usize]
        };
        let flips = 1 + next() % 4;
        for _ in 0..flips {
            if f.is_empty() {
                break;
            }
            let at = (next() as usize) % f.len();
            f[at] = next() as u8;
        }
        if i % 3 == 0 {
            f.truncate((next() as usize) % (f.len() + 1));
        }
        let now = Instant::now();
        r.stack.from_guest(&f, now);
        if i % 64 == 0 {
            r.stack.service(now);
            r.frames();
        }
    }
    r.stack.service(Instant::now());
}

// --- the card's thread -------------------------------------------------------------

#[test]
fn the_cards_thread_answers_over_the_socket_pair_and_stops() {
    use super::UserNet;
    use crate::virtio::net::NetBackend;
    let stats = Arc::new(NetStats::default());
    let mut card =
        UserNet::with_stack(config(Limits::default(), None), Vec::new(), stats.clone()).unwrap();
    let mut f = vec![0u8; HDR_LEN];
    f.extend_from_slice(&arp_request(GW));
    card.write_frame(&f).unwrap();
    let mut buf = vec![0u8; 2048];
    let start = Instant::now();
    let n = loop {
        match card.read_frame(&mut buf) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(start.elapsed() < Duration::from_secs(5));
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(&buf[..HDR_LEN], &[0; HDR_LEN]);
    let eth = wire::parse_eth(&buf[HDR_LEN..n]).unwrap();
    assert_eq!((eth.dst, eth.ethertype), (GUEST_MAC, wire::ETHERTYPE_ARP));
    let t = Instant::now();
    drop(card);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "the thread stops at once"
    );
}

#[test]
fn an_idle_open_flow_lets_the_thread_sleep() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let limits = Limits {
        handshake: Duration::from_millis(20),
        ..Limits::default()
    };
    let mut r = Rig::with(limits, None, Vec::new());
    let _g = guest_connect(&mut r, 42000, SocketAddrV4::new(GW, port));
    let _host = l.accept().unwrap();
    for _ in 0..5 {
        r.pump(10);
    }
    std::thread::sleep(Duration::from_millis(40));
    r.stack.service(Instant::now());
    // Past the handshake limit, an established flow waits for its idle
    // limit: no wake-up at once, again and again.
    let wait = r.stack.next_wakeup(Instant::now());
    assert!(wait >= Duration::from_secs(1), "{wait:?}");
    assert_eq!(r.get(Counter::TcpFlows), 1);
    assert_eq!(r.get(Counter::FlowsTimedOut), 0);
}

/// One of this host's own addresses other than loopback, if it has one
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

#[test]
fn tcp_and_udp_to_an_address_other_than_the_gateway() {
    // Any address the host reaches, not only the gateway's: here the
    // host's own outward address.
    let Some(ip) = host_address() else {
        eprintln!("skipping: this host has no address but loopback");
        return;
    };
    let l = TcpListener::bind((ip, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let mut r = Rig::new();
    let mut g = guest_connect(&mut r, 43000, SocketAddrV4::new(ip, port));
    let (mut host, peer) = l.accept().unwrap();
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(ip),
        "lkvm's socket, from the host"
    );
    host.write_all(b"from afar").unwrap();
    assert_eq!(guest_read(&mut r, &mut g, 9), b"from afar");
    let u = UdpSocket::bind((ip, 0)).unwrap();
    u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let up = u.local_addr().unwrap().port();
    r.send_eth(&udp_frame(5557, SocketAddrV4::new(ip, up), b"udp afar"));
    let mut buf = [0u8; 32];
    let (n, from) = u.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"udp afar");
    u.send_to(b"back", from).unwrap();
    let f = r.wait_frame("the UDP answer", |o| {
        o.ethertype == wire::ETHERTYPE_IPV4 && ip_of(o).proto == wire::PROTO_UDP
    });
    let ipk = ip_of(&f);
    assert_eq!(ipk.src, ip, "answered from the address the guest wrote to");
    assert_eq!(wire::parse_udp(&ipk).unwrap().payload, b"back");
}

#[test]
fn random_segments_on_an_open_flow_never_crash_the_stack() {
    // Well-formed, checksummed segments with random sequence numbers,
    // flags, windows and lengths reach smoltcp's state machine itself.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut r = Rig::new();
    let g = guest_connect(&mut r, 44000, SocketAddrV4::new(GW, port));
    let (_host, _) = l.accept().unwrap();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let data = [0x42u8; 1400];
    for i in 0..5000 {
        let near = |base: u32, v: u64| {
            base.wrapping_add((v % 200_000) as u32)
                .wrapping_sub(100_000)
        };
        let seq = if i % 2 == 0 {
            near(g.seq, next())
        } else {
            next() as u32
        };
        let ack = if i % 2 == 0 {
            near(g.ack, next())
        } else {
            next() as u32
        };
        // Resets only now and then, so the flow lives through most of it.
        let mut flags = (next() as u8) & !TCP_RST;
        if i % 997 == 0 {
            flags |= TCP_RST;
        }
        let len = (next() % 1401) as usize;
        let p = wire::tcp_packet(
            g.me,
            g.peer,
            1,
            seq,
            ack,
            flags,
            next() as u16,
            &data[..len],
        );
        let now = Instant::now();
        r.stack.from_guest(
            &wire::eth_frame(GW_MAC, GUEST_MAC, wire::ETHERTYPE_IPV4, &p),
            now,
        );
        if i % 16 == 0 {
            r.pump(0);
            r.frames();
        }
    }
    r.pump(0);
}
