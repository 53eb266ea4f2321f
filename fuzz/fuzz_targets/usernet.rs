//! The user-mode network stack (`virtio/net/user/`) as a guest drives it:
//! Ethernet frames of any content, and well-formed TCP and UDP segments
//! that reach real flows, with a real host side (a listener on 127.0.0.1
//! that accepts and writes back, a UDP socket that echoes) and time moving
//! forward so that every timeout fires.
//!
//! Nothing leaves the machine: every IPv4 frame's destination becomes the
//! gateway (the host's loopback) and every TCP or UDP destination port one
//! of the target's own sockets or a closed port (DHCP to the stack's server
//! excepted: it opens no socket), with the checksums
//! adjusted incrementally (RFC 1624), so a frame whose checksum was right
//! stays right and one that was wrong stays wrong.
//!
//! Checked after every operation: each frame queued for the guest has the
//! zeroed virtio-net header and an Ethernet header from the gateway's MAC;
//! the queue stays within its bound and the open flows within the cap.
//!
//! Input: operations until it runs out.
//! 0 `len u16, bytes` a raw frame from the guest;
//! 1 `port u8, flags u8, seq u32, ack u32, len u8, fill u8` a TCP segment
//!   from guest port 40000 + (port >> 4 & 7) to host port `port & 3`;
//! 2 `port u8, len u8, fill u8` a UDP datagram, ports as for TCP;
//! 3 host events: the stack's epoll is read without waiting, the host side
//!   accepts, answers and echoes, then the stack is serviced;
//! 4 `secs u8` time moves on by that many seconds (x 8: timeouts run
//!   up to an hour);
//! 5 the guest takes every frame queued for it.
#![no_main]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use lkvm::virtio::net::stats::{Counter, NetStats};
use lkvm::virtio::net::user::stack::{Config, Limits, Stack};
use lkvm::virtio::net::user::wire;
use lkvm::virtio::net::HDR_LEN;
use lkvm_fuzz::input::Input;
use nix::sys::epoll::{EpollEvent, EpollTimeout};

const GUEST_MAC: [u8; 6] = [2, 0x15, 0x15, 0x15, 0x15, 0x15];
const GW_MAC: [u8; 6] = [2, 1, 1, 1, 1, 1];
const GUEST: Ipv4Addr = Ipv4Addr::new(192, 168, 33, 15);
const GW: Ipv4Addr = Ipv4Addr::new(192, 168, 33, 1);
/// Small, so that eviction and a full queue are reached.
const MAX_FLOWS: usize = 8;
const OUT_FRAMES: usize = 32;

/// The host side, made once: libFuzzer runs many inputs in one process.
struct Host {
    tcp: TcpListener,
    udp: UdpSocket,
    /// A port nothing listens on (bound once, then closed).
    closed: u16,
    /// Accepted connections of the current input.
    conns: Mutex<Vec<TcpStream>>,
}

fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind a TCP listener");
        tcp.set_nonblocking(true).expect("non-blocking listener");
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
        udp.set_nonblocking(true).expect("non-blocking UDP socket");
        let closed = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("pick a closed port")
            .port();
        Host {
            tcp,
            udp,
            closed,
            conns: Mutex::new(Vec::new()),
        }
    })
}

/// The destination port a selector stands for: the listener, the UDP
/// echo, a closed port, or DNS on the gateway (no resolver configured, so
/// it is answered port unreachable).
fn port_of(h: &Host, sel: u8, udp: bool) -> u16 {
    match sel & 3 {
        0 if udp => h.udp.local_addr().map(|a| a.port()).unwrap_or(9),
        0 => h.tcp.local_addr().map(|a| a.port()).unwrap_or(9),
        1 => h.closed,
        2 => 53,
        _ => h.closed,
    }
}

/// RFC 1624 (eqn. 3): the checksum after one 16-bit word of what it
/// covers changed from `old` to `new`.
fn adjust(sum: u16, old: u16, new: u16) -> u16 {
    let mut acc = u32::from(!sum) + u32::from(!old) + u32::from(new);
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

fn word(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

/// Rewrites `at..at + 2` to `new`, adjusting the checksums at `sums`
/// (each covering that word; a UDP checksum of 0 means none).
fn rewrite(f: &mut [u8], at: usize, new: u16, sums: &[(usize, bool)]) {
    let old = word(f, at);
    f[at..at + 2].copy_from_slice(&new.to_be_bytes());
    for &(s, zero_is_none) in sums {
        let sum = word(f, s);
        if zero_is_none && sum == 0 {
            continue;
        }
        f[s..s + 2].copy_from_slice(&adjust(sum, old, new).to_be_bytes());
    }
}

/// Keeps a raw frame on this machine: its IPv4 destination becomes the
/// gateway and its TCP/UDP destination port one of the host side's.
fn confine(h: &Host, f: &mut [u8], sel: u8) {
    const IP: usize = wire::ETH_HLEN;
    if f.len() < IP + 20 || word(f, 12) != wire::ETHERTYPE_IPV4 {
        return;
    }
    let ihl = usize::from(f[IP] & 0xf) * 4;
    let proto = f[IP + 9];
    let l4 = IP + ihl;
    let l4_sum = match proto {
        wire::PROTO_TCP if ihl >= 20 && f.len() >= l4 + 18 => Some((l4 + 16, false)),
        wire::PROTO_UDP if ihl >= 20 && f.len() >= l4 + 8 => Some((l4 + 6, true)),
        _ => None,
    };
    // DHCP (client port to server port) is the stack's own; it opens no
    // socket wherever it is sent.
    if proto == wire::PROTO_UDP && f.len() >= l4 + 4 && word(f, l4) == 68 && word(f, l4 + 2) == 67 {
        return;
    }
    let gw = GW.octets();
    for (i, half) in [[gw[0], gw[1]], [gw[2], gw[3]]].iter().enumerate() {
        let mut sums = vec![(IP + 10, false)];
        sums.extend(l4_sum);
        rewrite(f, IP + 16 + 2 * i, u16::from_be_bytes(*half), &sums);
    }
    if let Some(s) = l4_sum {
        rewrite(f, l4 + 2, port_of(h, sel, proto == wire::PROTO_UDP), &[s]);
    }
}

/// The host side's turn: accept, write to every connection, read what
/// came, echo datagrams.
fn serve_host(h: &Host) {
    let mut conns = h.conns.lock().unwrap_or_else(|p| p.into_inner());
    while let Ok((c, _)) = h.tcp.accept() {
        if c.set_nonblocking(true).is_ok() && conns.len() < 16 {
            conns.push(c);
        }
    }
    let mut buf = [0u8; 2048];
    for c in conns.iter_mut() {
        let _ = c.read(&mut buf);
        let _ = c.write(b"host says hello\n");
    }
    while let Ok((n, from)) = h.udp.recv_from(&mut buf) {
        let _ = h.udp.send_to(&buf[..n], from);
    }
}

/// A frame queued for the guest: the zeroed virtio-net header, then
/// Ethernet from the gateway.
fn check_frame(f: &[u8]) {
    assert!(
        f.len() >= HDR_LEN + wire::ETH_HLEN,
        "short frame for the guest"
    );
    assert_eq!(f[..HDR_LEN], [0; HDR_LEN], "virtio-net header not zero");
    let eth = wire::parse_eth(&f[HDR_LEN..]).expect("frame for the guest parses");
    // The destination is the guest's: whatever MAC it last sent from, or
    // the one its DHCP request names.
    assert_eq!(eth.src, GW_MAC);
}

fn check(stack: &Stack, stats: &NetStats) {
    if let Some(f) = stack.front() {
        check_frame(f);
    }
    let open = stats.get(Counter::TcpFlows) + stats.get(Counter::UdpFlows);
    assert!(open <= MAX_FLOWS as u64, "{open} flows open");
}

fuzz_target!(|data: &[u8]| {
    let h = host();
    let stats = Arc::new(NetStats::default());
    let cfg = Config {
        guest_mac: GUEST_MAC,
        gw_mac: GW_MAC,
        guest_ip: GUEST,
        gw_ip: GW,
        dns: None,
        loopback: Ipv4Addr::LOCALHOST.into(),
        limits: Limits {
            max_flows: MAX_FLOWS,
            tcp_buffer: 4096,
            out_frames: OUT_FRAMES,
            ..Limits::default()
        },
    };
    let Ok(mut stack) = Stack::new(cfg, Vec::new(), stats.clone()) else {
        return;
    };
    let start = Instant::now();
    let mut later = Duration::ZERO;
    let mut inp = Input::new(data);
    let mut ident = 0u16;
    while let Some(op) = inp.u8() {
        let now = start + later;
        match op % 6 {
            0 => {
                let Some(len) = inp.u16() else { break };
                let mut f = inp.up_to(usize::from(len) % 2048).to_vec();
                let sel = f.get(1).copied().unwrap_or(0);
                confine(h, &mut f, sel);
                stack.from_guest(&f, now);
                stack.service(now);
            }
            1 => {
                let (Some(port), Some(flags), Some(seq), Some(ack), Some(len), Some(fill)) =
                    (inp.u8(), inp.u8(), inp.u32(), inp.u32(), inp.u8(), inp.u8())
                else {
                    break;
                };
                ident = ident.wrapping_add(1);
                let from = SocketAddrV4::new(GUEST, 40000 + u16::from(port >> 4 & 7));
                let to = SocketAddrV4::new(GW, port_of(h, port, false));
                let data = vec![fill; usize::from(len)];
                let p = wire::tcp_packet(from, to, ident, seq, ack, flags, 65535, &data);
                stack.from_guest(
                    &wire::eth_frame(GW_MAC, GUEST_MAC, wire::ETHERTYPE_IPV4, &p),
                    now,
                );
                stack.service(now);
            }
            2 => {
                let (Some(port), Some(len), Some(fill)) = (inp.u8(), inp.u8(), inp.u8()) else {
                    break;
                };
                ident = ident.wrapping_add(1);
                let from = SocketAddrV4::new(GUEST, 40000 + u16::from(port >> 4 & 7));
                let to = SocketAddrV4::new(GW, port_of(h, port, true));
                let p = wire::udp_packet(from, to, ident, &vec![fill; usize::from(len)]);
                stack.from_guest(
                    &wire::eth_frame(GW_MAC, GUEST_MAC, wire::ETHERTYPE_IPV4, &p),
                    now,
                );
                stack.service(now);
            }
            3 => {
                serve_host(h);
                let mut ev = [EpollEvent::empty(); 16];
                let n = stack
                    .epoll()
                    .wait(&mut ev, EpollTimeout::from(0u16))
                    .unwrap_or(0);
                for e in ev.iter().take(n) {
                    stack.host_event(e.data(), e.events(), now);
                }
                stack.service(now);
            }
            4 => {
                let Some(secs) = inp.u8() else { break };
                later += Duration::from_secs(u64::from(secs) * 8);
                let now = start + later;
                stack.service(now);
                let _ = stack.next_wakeup(now);
            }
            _ => {
                let mut queued = 0;
                while let Some(f) = stack.front() {
                    check_frame(f);
                    stack.pop_front();
                    queued += 1;
                }
                assert!(queued <= OUT_FRAMES, "{queued} frames were queued");
            }
        }
        check(&stack, &stats);
    }
    // The next input starts with no connection of this one's.
    h.conns.lock().unwrap_or_else(|p| p.into_inner()).clear();
});
