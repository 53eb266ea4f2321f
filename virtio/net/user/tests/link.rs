//! ARP and ICMP echo for the gateway, and the DHCP exchange.

use super::*;

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
