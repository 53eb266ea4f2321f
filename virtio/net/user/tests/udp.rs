//! UDP both ways, port unreachable, DNS forwarding, addresses beyond the gateway.

use super::*;

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
