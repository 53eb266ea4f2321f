//! The card's own thread: served over the socket pair, sleeping when idle.

use super::*;

#[test]
fn the_cards_thread_answers_over_the_socket_pair_and_stops() {
    use crate::virtio::net::user::UserNet;
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
