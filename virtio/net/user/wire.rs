//! The frames the user-mode stack reads and writes itself: Ethernet, ARP,
//! IPv4, UDP, ICMP and the TCP reset, parsed with every length checked
//! against the buffer and every checksum verified, and built with their
//! checksums. (TCP's state machine is smoltcp's.)

use std::net::{Ipv4Addr, SocketAddrV4};

pub const ETH_HLEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];
/// The IP packets the stack sends and takes: Ethernet's 1500 bytes.
pub const MTU: usize = 1500;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Why a frame was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bad {
    Malformed,
    Fragment,
    Checksum,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn addr(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    be32(b, at).map(Ipv4Addr::from)
}

/// The ones'-complement sum of `data` (an odd last byte padded), added to
/// `acc`, not folded.
pub fn sum(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

/// Folds a sum into the 16-bit checksum field's value.
pub fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let mut acc = sum(&src.octets(), 0);
    acc = sum(&dst.octets(), acc);
    acc.wrapping_add(u32::from(proto))
        .wrapping_add((len & 0xffff) as u32)
}

/// An Ethernet frame's header fields and payload.
pub struct Eth<'a> {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ethertype: u16,
    pub payload: &'a [u8],
}

pub fn parse_eth(f: &[u8]) -> Result<Eth<'_>, Bad> {
    let (hdr, payload) = (f.get(..ETH_HLEN), f.get(ETH_HLEN..));
    let (Some(hdr), Some(payload)) = (hdr, payload) else {
        return Err(Bad::Malformed);
    };
    let mut dst = [0u8; 6];
    let mut src = [0u8; 6];
    dst.copy_from_slice(&hdr[..6]);
    src.copy_from_slice(&hdr[6..12]);
    let ethertype = u16::from_be_bytes([hdr[12], hdr[13]]);
    Ok(Eth {
        dst,
        src,
        ethertype,
        payload,
    })
}

/// An IPv4 packet, checked: version, header length, total length within
/// the frame (Ethernet padding after it is ignored), header checksum; a
/// fragment is refused.
pub struct Ipv4<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    /// The header and payload, without the frame's padding.
    pub packet: &'a [u8],
    pub header_len: usize,
    pub payload: &'a [u8],
}

pub fn parse_ipv4(p: &[u8]) -> Result<Ipv4<'_>, Bad> {
    let first = *p.first().ok_or(Bad::Malformed)?;
    if first >> 4 != 4 {
        return Err(Bad::Malformed);
    }
    let header_len = usize::from(first & 0xf) * 4;
    let total = usize::from(be16(p, 2).ok_or(Bad::Malformed)?);
    if header_len < 20 || total < header_len || total > p.len() {
        return Err(Bad::Malformed);
    }
    let packet = p.get(..total).ok_or(Bad::Malformed)?;
    let header = packet.get(..header_len).ok_or(Bad::Malformed)?;
    if fold(sum(header, 0)) != 0 {
        return Err(Bad::Checksum);
    }
    let frag = be16(header, 6).ok_or(Bad::Malformed)?;
    // More fragments, or an offset: a piece of a packet.
    if frag & 0x2000 != 0 || frag & 0x1fff != 0 {
        return Err(Bad::Fragment);
    }
    Ok(Ipv4 {
        src: addr(header, 12).ok_or(Bad::Malformed)?,
        dst: addr(header, 16).ok_or(Bad::Malformed)?,
        proto: header[9],
        packet,
        header_len,
        payload: packet.get(header_len..).ok_or(Bad::Malformed)?,
    })
}

/// An [`Ipv4`] over the quoted start of a packet (its header and 8
/// bytes, kept for an ICMP error): the header is checked, the total length
/// is not, since the quote is cut short on purpose.
pub fn parse_ipv4_quote(q: &[u8]) -> Result<Ipv4<'_>, Bad> {
    let first = *q.first().ok_or(Bad::Malformed)?;
    let header_len = usize::from(first & 0xf) * 4;
    if first >> 4 != 4 || header_len < 20 || header_len > q.len() {
        return Err(Bad::Malformed);
    }
    Ok(Ipv4 {
        src: addr(q, 12).ok_or(Bad::Malformed)?,
        dst: addr(q, 16).ok_or(Bad::Malformed)?,
        proto: *q.get(9).ok_or(Bad::Malformed)?,
        packet: q,
        header_len,
        payload: q.get(header_len..).unwrap_or_default(),
    })
}

pub struct Udp<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

/// A UDP datagram: its length field within the packet, its checksum right
/// (or absent, which IPv4 allows).
pub fn parse_udp<'a>(ip: &Ipv4<'a>) -> Result<Udp<'a>, Bad> {
    let p = ip.payload;
    let len = usize::from(be16(p, 4).ok_or(Bad::Malformed)?);
    if len < 8 || len > p.len() {
        return Err(Bad::Malformed);
    }
    let d = p.get(..len).ok_or(Bad::Malformed)?;
    let csum = be16(d, 6).ok_or(Bad::Malformed)?;
    if csum != 0 && fold(sum(d, pseudo(ip.src, ip.dst, PROTO_UDP, len))) != 0 {
        return Err(Bad::Checksum);
    }
    Ok(Udp {
        src_port: be16(d, 0).ok_or(Bad::Malformed)?,
        dst_port: be16(d, 2).ok_or(Bad::Malformed)?,
        payload: d.get(8..).ok_or(Bad::Malformed)?,
    })
}

/// The fields of a TCP segment the flow table needs.
#[derive(Clone, Copy, Debug)]
pub struct Tcp {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub header_len: usize,
    pub payload_len: usize,
}

pub fn parse_tcp(ip: &Ipv4<'_>) -> Result<Tcp, Bad> {
    let p = ip.payload;
    let off = usize::from(*p.get(12).ok_or(Bad::Malformed)? >> 4) * 4;
    if off < 20 || off > p.len() {
        return Err(Bad::Malformed);
    }
    if fold(sum(p, pseudo(ip.src, ip.dst, PROTO_TCP, p.len()))) != 0 {
        return Err(Bad::Checksum);
    }
    Ok(Tcp {
        src_port: be16(p, 0).ok_or(Bad::Malformed)?,
        dst_port: be16(p, 2).ok_or(Bad::Malformed)?,
        seq: be32(p, 4).ok_or(Bad::Malformed)?,
        ack: be32(p, 8).ok_or(Bad::Malformed)?,
        flags: *p.get(13).ok_or(Bad::Malformed)?,
        window: be16(p, 14).ok_or(Bad::Malformed)?,
        header_len: off,
        payload_len: p.len() - off,
    })
}

/// An ICMP message, checksum verified: type, code, the rest of its header
/// (echo: identifier and sequence) and its data.
pub struct Icmp<'a> {
    pub kind: u8,
    pub code: u8,
    pub rest: [u8; 4],
    pub data: &'a [u8],
}

pub fn parse_icmp<'a>(ip: &Ipv4<'a>) -> Result<Icmp<'a>, Bad> {
    let p = ip.payload;
    let hdr = p.get(..8).ok_or(Bad::Malformed)?;
    if fold(sum(p, 0)) != 0 {
        return Err(Bad::Checksum);
    }
    Ok(Icmp {
        kind: hdr[0],
        code: hdr[1],
        rest: [hdr[4], hdr[5], hdr[6], hdr[7]],
        data: p.get(8..).ok_or(Bad::Malformed)?,
    })
}

/// An ARP request or reply for IPv4 over Ethernet.
pub struct Arp {
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

pub fn parse_arp(p: &[u8]) -> Result<Arp, Bad> {
    let h = p.get(..28).ok_or(Bad::Malformed)?;
    // Ethernet hardware, IPv4 protocol, 6- and 4-byte addresses.
    if h[..6] != [0, 1, 8, 0, 6, 4] {
        return Err(Bad::Malformed);
    }
    let mut sender_mac = [0u8; 6];
    sender_mac.copy_from_slice(&h[8..14]);
    Ok(Arp {
        op: u16::from_be_bytes([h[6], h[7]]),
        sender_mac,
        sender_ip: addr(h, 14).ok_or(Bad::Malformed)?,
        target_ip: addr(h, 24).ok_or(Bad::Malformed)?,
    })
}

/// An Ethernet frame around `payload`.
pub fn eth_frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_HLEN + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An ARP reply: `ip` is at `mac`, told to `to`.
pub fn arp_reply(mac: [u8; 6], ip: Ipv4Addr, to: &Arp) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 2];
    a.extend_from_slice(&mac);
    a.extend_from_slice(&ip.octets());
    a.extend_from_slice(&to.sender_mac);
    a.extend_from_slice(&to.sender_ip.octets());
    eth_frame(to.sender_mac, mac, ETHERTYPE_ARP, &a)
}

/// An IPv4 packet (no options, TTL 64, DF clear) around `payload`.
pub fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ident: u16, payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&((total & 0xffff) as u16).to_be_bytes());
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&[0, 0, 64, proto, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = fold(sum(&p, 0));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// A UDP datagram in an IPv4 packet.
pub fn udp_packet(src: SocketAddrV4, dst: SocketAddrV4, ident: u16, data: &[u8]) -> Vec<u8> {
    let len = 8 + data.len();
    let mut u = Vec::with_capacity(len);
    u.extend_from_slice(&src.port().to_be_bytes());
    u.extend_from_slice(&dst.port().to_be_bytes());
    u.extend_from_slice(&((len & 0xffff) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    let mut c = fold(sum(&u, pseudo(*src.ip(), *dst.ip(), PROTO_UDP, len)));
    if c == 0 {
        c = 0xffff;
    }
    u[6..8].copy_from_slice(&c.to_be_bytes());
    ipv4_packet(*src.ip(), *dst.ip(), PROTO_UDP, ident, &u)
}

/// An ICMP message in an IPv4 packet.
pub fn icmp_packet(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    kind: u8,
    code: u8,
    rest: [u8; 4],
    data: &[u8],
) -> Vec<u8> {
    let mut m = vec![kind, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(data);
    let c = fold(sum(&m, 0));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4_packet(src, dst, PROTO_ICMP, ident, &m)
}

/// ICMP destination unreachable (`code`: 0 net, 1 host, 3 port) about
/// `original` (an IPv4 packet the guest sent): its header and first 8
/// payload bytes go back, as RFC 792 asks.
pub fn icmp_unreachable(from: Ipv4Addr, ident: u16, code: u8, original: &Ipv4<'_>) -> Vec<u8> {
    let keep = original
        .header_len
        .saturating_add(8)
        .min(original.packet.len());
    let quoted = original.packet.get(..keep).unwrap_or_default();
    icmp_packet(from, original.src, ident, 3, code, [0; 4], quoted)
}

/// A TCP segment (no options) in an IPv4 packet.
#[allow(clippy::too_many_arguments)]
pub fn tcp_packet(
    from: SocketAddrV4,
    to: SocketAddrV4,
    ident: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    data: &[u8],
) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + data.len());
    t.extend_from_slice(&from.port().to_be_bytes());
    t.extend_from_slice(&to.port().to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.extend_from_slice(&[0x50, flags]);
    t.extend_from_slice(&window.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(data);
    let c = fold(sum(&t, pseudo(*from.ip(), *to.ip(), PROTO_TCP, t.len())));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    ipv4_packet(*from.ip(), *to.ip(), PROTO_TCP, ident, &t)
}

/// The RST that answers segment `seg` from `from` (RFC 793's reset
/// generation for a closed port): with the ACK bit when `seg` had none.
pub fn tcp_rst_for(from: SocketAddrV4, to: SocketAddrV4, ident: u16, seg: &Tcp) -> Vec<u8> {
    let (seq, ack, flags) = if seg.flags & TCP_ACK != 0 {
        (seg.ack, 0, TCP_RST)
    } else {
        let mut len = seg.payload_len as u32;
        if seg.flags & TCP_SYN != 0 {
            len = len.wrapping_add(1);
        }
        if seg.flags & TCP_FIN != 0 {
            len = len.wrapping_add(1);
        }
        (0, seg.seq.wrapping_add(len), TCP_RST | TCP_ACK)
    };
    tcp_packet(from, to, ident, seq, ack, flags, 0, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_packets_parse_back_with_good_checksums() {
        let a = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 53);
        let b = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 4000);
        let p = udp_packet(a, b, 7, b"hello");
        let ip = parse_ipv4(&p).unwrap();
        assert_eq!((ip.src, ip.dst, ip.proto), (*a.ip(), *b.ip(), PROTO_UDP));
        let u = parse_udp(&ip).unwrap();
        assert_eq!(
            (u.src_port, u.dst_port, u.payload),
            (53, 4000, &b"hello"[..])
        );
        let mut padded = p.clone();
        padded.extend_from_slice(&[0; 9]);
        assert_eq!(
            parse_udp(&parse_ipv4(&padded).unwrap()).unwrap().payload,
            b"hello"
        );
        let mut bad = p.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(
            parse_udp(&parse_ipv4(&bad).unwrap()).err(),
            Some(Bad::Checksum)
        );
        let mut bad = p.clone();
        bad[8] ^= 1; // TTL: the header checksum
        assert_eq!(parse_ipv4(&bad).err(), Some(Bad::Checksum));

        let i = icmp_packet(*a.ip(), *b.ip(), 1, 8, 0, [0, 1, 0, 2], b"ping");
        let ip = parse_ipv4(&i).unwrap();
        let m = parse_icmp(&ip).unwrap();
        assert_eq!(
            (m.kind, m.code, m.rest, m.data),
            (8, 0, [0, 1, 0, 2], &b"ping"[..])
        );
        let un = icmp_unreachable(*b.ip(), 2, 3, &parse_ipv4(&p).unwrap());
        let ip = parse_ipv4(&un).unwrap();
        assert_eq!(ip.dst, *a.ip());
        let m = parse_icmp(&ip).unwrap();
        assert_eq!((m.kind, m.code), (3, 3));
        assert_eq!(m.data, &p[..28]);

        let syn = Tcp {
            src_port: 4000,
            dst_port: 80,
            seq: 1000,
            ack: 0,
            flags: TCP_SYN,
            window: 0,
            header_len: 20,
            payload_len: 0,
        };
        let r = tcp_rst_for(a, b, 3, &syn);
        let ip = parse_ipv4(&r).unwrap();
        let t = parse_tcp(&ip).unwrap();
        assert_eq!((t.flags, t.ack, t.seq), (TCP_RST | TCP_ACK, 1001, 0));
    }

    #[test]
    fn every_length_is_checked() {
        assert_eq!(parse_eth(&[0; 13]).err(), Some(Bad::Malformed));
        assert_eq!(parse_ipv4(&[]).err(), Some(Bad::Malformed));
        assert_eq!(parse_ipv4(&[0x45; 19]).err(), Some(Bad::Malformed));
        assert_eq!(parse_ipv4(&[0x65; 40]).err(), Some(Bad::Malformed));
        let a = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 1);
        let p = udp_packet(a, a, 0, b"x");
        // Total length beyond the buffer; header length beyond the total.
        assert_eq!(parse_ipv4(&p[..p.len() - 1]).err(), Some(Bad::Malformed));
        let mut q = p.clone();
        q[0] = 0x4f;
        assert_eq!(parse_ipv4(&q).err(), Some(Bad::Malformed));
        // A UDP length beyond the packet.
        let mut q = p.clone();
        q[25] = 200;
        let ip = parse_ipv4(&q).unwrap();
        assert_eq!(parse_udp(&ip).err(), Some(Bad::Malformed));
        // Fragments.
        let mut q = p.clone();
        q[6] = 0x20;
        let c = fold(sum(&q[..10], sum(&q[12..20], 0)));
        q[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse_ipv4(&q).err(), Some(Bad::Fragment));
        assert_eq!(parse_arp(&[0; 27]).err(), Some(Bad::Malformed));
        // A TCP data offset past the segment.
        let r = tcp_rst_for(
            a,
            a,
            0,
            &Tcp {
                src_port: 1,
                dst_port: 1,
                seq: 0,
                ack: 0,
                flags: TCP_ACK,
                window: 0,
                header_len: 20,
                payload_len: 0,
            },
        );
        let mut q = r.clone();
        q[32] = 0xf0;
        assert!(parse_tcp(&parse_ipv4(&q).unwrap()).is_err());
    }
}
