//! Malformed and random input: dropped and counted, never a crash.

use super::*;

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
