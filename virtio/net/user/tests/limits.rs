//! What a guest cannot exceed: the flow cap, timeouts, the queue towards it.

use super::*;

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
