//! TCP through the NAT: a guest client to host listeners, refusals, hostfwd.

use super::*;

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
