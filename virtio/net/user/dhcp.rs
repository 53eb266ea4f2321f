//! The DHCP server of a user-mode card (RFC 2131, one address): DISCOVER
//! gets an OFFER, a REQUEST for the guest's address an ACK (anything else
//! a NAK), INFORM an ACK without a lease; RELEASE and DECLINE are noted
//! and nothing else happens. Every reply carries the subnet mask, router,
//! DNS server, server identifier and (but for INFORM) lease time.

use std::net::Ipv4Addr;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
/// A day; the guest renews at half of it.
pub const LEASE_SECS: u32 = 86400;

const COOKIE: [u8; 4] = [99, 130, 83, 99];
/// op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr,
/// giaddr, chaddr (16), sname (64), file (128), then the cookie.
const FIXED: usize = 236;
/// BOOTP's smallest message; some clients want no less.
const MIN_REPLY: usize = 300;

const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const DECLINE: u8 = 4;
const ACK: u8 = 5;
const NAK: u8 = 6;
const RELEASE: u8 = 7;
const INFORM: u8 = 8;

const OPT_PAD: u8 = 0;
const OPT_MASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_BROADCAST: u8 = 28;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_LEASE: u8 = 51;
const OPT_MSG_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_T1: u8 = 58;
const OPT_T2: u8 = 59;
const OPT_END: u8 = 255;

/// What the server hands out.
#[derive(Clone, Copy, Debug)]
pub struct Server {
    pub guest_ip: Ipv4Addr,
    /// Router, DNS server and server identifier.
    pub server_ip: Ipv4Addr,
}

/// A reply and where it goes.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    /// The BOOTP message (the UDP payload).
    pub message: Vec<u8>,
    /// Broadcast, or the client's address when it has one (renewing).
    pub dst_ip: Ipv4Addr,
    pub dst_mac: [u8; 6],
}

/// Why a message got no reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Ignored {
    /// Not a well-formed DHCP request (counted as malformed).
    Malformed,
    /// A message that asks for nothing (RELEASE, DECLINE, another
    /// server's REQUEST, a reply).
    NoReply,
}

fn netmask() -> Ipv4Addr {
    Ipv4Addr::new(255, 255, 255, 0)
}

impl Server {
    /// The answer to one client message.
    pub fn answer(&self, msg: &[u8]) -> Result<Reply, Ignored> {
        let fixed = msg.get(..FIXED).ok_or(Ignored::Malformed)?;
        // A BOOTREQUEST over Ethernet with 6-byte addresses.
        if fixed[0] != 1 || fixed[1] != 1 || fixed[2] != 6 {
            return Err(Ignored::Malformed);
        }
        if msg.get(FIXED..FIXED + 4) != Some(&COOKIE[..]) {
            return Err(Ignored::Malformed);
        }
        let opts = parse_options(msg.get(FIXED + 4..).unwrap_or_default())?;
        let kind = opts.msg_type.ok_or(Ignored::Malformed)?;
        let ciaddr = Ipv4Addr::new(fixed[12], fixed[13], fixed[14], fixed[15]);
        let mut chaddr = [0u8; 6];
        chaddr.copy_from_slice(&fixed[28..34]);
        let reply_kind = match kind {
            DISCOVER => OFFER,
            REQUEST => {
                if opts.server_id.is_some_and(|s| s != self.server_ip) {
                    // The client took another server's offer.
                    return Err(Ignored::NoReply);
                }
                let wanted = opts.requested_ip.unwrap_or(ciaddr);
                if wanted == self.guest_ip {
                    ACK
                } else {
                    NAK
                }
            }
            INFORM => ACK,
            DECLINE | RELEASE => return Err(Ignored::NoReply),
            _ => return Err(Ignored::NoReply),
        };
        let mut r = vec![0u8; FIXED];
        r[0] = 2; // BOOTREPLY
        r[1] = 1;
        r[2] = 6;
        r[4..8].copy_from_slice(&fixed[4..8]); // xid
        r[10..12].copy_from_slice(&fixed[10..12]); // flags
        if kind == INFORM {
            r[12..16].copy_from_slice(&fixed[12..16]); // ciaddr
        } else if reply_kind != NAK {
            r[16..20].copy_from_slice(&self.guest_ip.octets()); // yiaddr
        }
        r[24..28].copy_from_slice(&fixed[24..28]); // giaddr
        r[28..44].copy_from_slice(&fixed[28..44]); // chaddr
        r.extend_from_slice(&COOKIE);
        let mut opt = |code: u8, value: &[u8]| {
            r.push(code);
            r.push(value.len() as u8);
            r.extend_from_slice(value);
        };
        opt(OPT_MSG_TYPE, &[reply_kind]);
        opt(OPT_SERVER_ID, &self.server_ip.octets());
        if reply_kind != NAK {
            if kind != INFORM {
                opt(OPT_LEASE, &LEASE_SECS.to_be_bytes());
                opt(OPT_T1, &(LEASE_SECS / 2).to_be_bytes());
                opt(OPT_T2, &(LEASE_SECS / 8 * 7).to_be_bytes());
            }
            opt(OPT_MASK, &netmask().octets());
            opt(OPT_ROUTER, &self.server_ip.octets());
            opt(OPT_DNS, &self.server_ip.octets());
            let o = self.guest_ip.octets();
            opt(OPT_BROADCAST, &[o[0], o[1], o[2], 255]);
        }
        r.push(OPT_END);
        if r.len() < MIN_REPLY {
            r.resize(MIN_REPLY, OPT_PAD);
        }
        // A client with an address (renewing, INFORM) is answered there;
        // one without one, and every NAK, by broadcast.
        let (dst_ip, dst_mac) = if reply_kind != NAK && !ciaddr.is_unspecified() {
            (ciaddr, chaddr)
        } else {
            (Ipv4Addr::BROADCAST, super::wire::BROADCAST_MAC)
        };
        Ok(Reply {
            message: r,
            dst_ip,
            dst_mac,
        })
    }
}

#[derive(Default)]
struct Options {
    msg_type: Option<u8>,
    requested_ip: Option<Ipv4Addr>,
    server_id: Option<Ipv4Addr>,
}

fn ip4(v: &[u8]) -> Option<Ipv4Addr> {
    let b: [u8; 4] = v.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

fn parse_options(mut o: &[u8]) -> Result<Options, Ignored> {
    let mut out = Options::default();
    loop {
        let Some((&code, rest)) = o.split_first() else {
            // Options may end without END; what was read stands.
            return Ok(out);
        };
        match code {
            OPT_END => return Ok(out),
            OPT_PAD => {
                o = rest;
                continue;
            }
            _ => {}
        }
        let (&len, rest) = rest.split_first().ok_or(Ignored::Malformed)?;
        let len = usize::from(len);
        let value = rest.get(..len).ok_or(Ignored::Malformed)?;
        match code {
            OPT_MSG_TYPE => out.msg_type = value.first().copied(),
            OPT_REQUESTED_IP => out.requested_ip = ip4(value),
            OPT_SERVER_ID => out.server_id = ip4(value),
            _ => {}
        }
        o = rest.get(len..).unwrap_or_default();
    }
}

/// A client message, for tests: `kind` with the given options.
#[cfg(test)]
pub fn client_message(
    kind: u8,
    xid: u32,
    mac: [u8; 6],
    ciaddr: Ipv4Addr,
    opts: &[(u8, Vec<u8>)],
) -> Vec<u8> {
    let mut m = vec![0u8; FIXED];
    m[0] = 1;
    m[1] = 1;
    m[2] = 6;
    m[4..8].copy_from_slice(&xid.to_be_bytes());
    m[12..16].copy_from_slice(&ciaddr.octets());
    m[28..34].copy_from_slice(&mac);
    m.extend_from_slice(&COOKIE);
    m.extend_from_slice(&[OPT_MSG_TYPE, 1, kind]);
    for (code, v) in opts {
        m.push(*code);
        m.push(v.len() as u8);
        m.extend_from_slice(v);
    }
    m.push(OPT_END);
    m
}

/// The options of a server reply, for tests: (code, value) in order.
#[cfg(test)]
pub fn reply_options(m: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut o = &m[FIXED + 4..];
    let mut out = Vec::new();
    while let Some((&code, rest)) = o.split_first() {
        if code == OPT_END {
            break;
        }
        let len = usize::from(rest[0]);
        out.push((code, rest[1..1 + len].to_vec()));
        o = &rest[1 + len..];
    }
    out
}

#[cfg(test)]
pub mod kinds {
    pub const DISCOVER: u8 = super::DISCOVER;
    pub const OFFER: u8 = super::OFFER;
    pub const REQUEST: u8 = super::REQUEST;
    pub const ACK: u8 = super::ACK;
    pub const NAK: u8 = super::NAK;
    pub const RELEASE: u8 = super::RELEASE;
    pub const INFORM: u8 = super::INFORM;
    pub const REQUESTED_IP: u8 = super::OPT_REQUESTED_IP;
    pub const SERVER_ID: u8 = super::OPT_SERVER_ID;
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0x15, 0x15, 0x15, 0x15, 0x15];

    fn server() -> Server {
        Server {
            guest_ip: Ipv4Addr::new(192, 168, 33, 15),
            server_ip: Ipv4Addr::new(192, 168, 33, 1),
        }
    }

    #[test]
    fn offers_acks_naks_and_ignores() {
        let s = server();
        let zero = Ipv4Addr::UNSPECIFIED;
        let offer = s
            .answer(&client_message(DISCOVER, 7, MAC, zero, &[]))
            .unwrap();
        assert_eq!(offer.dst_ip, Ipv4Addr::BROADCAST);
        assert_eq!(&offer.message[4..8], &7u32.to_be_bytes());
        assert_eq!(&offer.message[16..20], &[192, 168, 33, 15]);
        assert_eq!(&offer.message[28..34], &MAC);
        assert!(offer.message.len() >= MIN_REPLY);
        let o = reply_options(&offer.message);
        assert_eq!(o[0], (OPT_MSG_TYPE, vec![OFFER]));
        for (code, v) in [
            (OPT_SERVER_ID, vec![192, 168, 33, 1]),
            (OPT_ROUTER, vec![192, 168, 33, 1]),
            (OPT_DNS, vec![192, 168, 33, 1]),
            (OPT_MASK, vec![255, 255, 255, 0]),
            (OPT_LEASE, LEASE_SECS.to_be_bytes().to_vec()),
        ] {
            assert!(o.contains(&(code, v.clone())), "{code}: {o:?}");
        }
        let req = |ip: [u8; 4]| {
            client_message(
                REQUEST,
                8,
                MAC,
                zero,
                &[
                    (OPT_REQUESTED_IP, ip.to_vec()),
                    (OPT_SERVER_ID, vec![192, 168, 33, 1]),
                ],
            )
        };
        let ack = s.answer(&req([192, 168, 33, 15])).unwrap();
        assert_eq!(reply_options(&ack.message)[0], (OPT_MSG_TYPE, vec![ACK]));
        let nak = s.answer(&req([192, 168, 33, 99])).unwrap();
        assert_eq!(reply_options(&nak.message)[0], (OPT_MSG_TYPE, vec![NAK]));
        assert_eq!(&nak.message[16..20], &[0; 4]);
        // Renewing: unicast to the client's address.
        let renew = s
            .answer(&client_message(
                REQUEST,
                9,
                MAC,
                Ipv4Addr::new(192, 168, 33, 15),
                &[],
            ))
            .unwrap();
        assert_eq!(renew.dst_ip, Ipv4Addr::new(192, 168, 33, 15));
        assert_eq!(renew.dst_mac, MAC);
        // Another server's offer taken; a release.
        let other = client_message(REQUEST, 1, MAC, zero, &[(OPT_SERVER_ID, vec![10, 0, 0, 1])]);
        assert_eq!(s.answer(&other), Err(Ignored::NoReply));
        assert_eq!(
            s.answer(&client_message(RELEASE, 1, MAC, zero, &[])),
            Err(Ignored::NoReply)
        );
        let inform = s
            .answer(&client_message(
                INFORM,
                2,
                MAC,
                Ipv4Addr::new(192, 168, 33, 15),
                &[],
            ))
            .unwrap();
        assert!(!reply_options(&inform.message)
            .iter()
            .any(|(c, _)| *c == OPT_LEASE));
    }

    #[test]
    fn malformed_messages_are_refused() {
        let s = server();
        let good = client_message(DISCOVER, 1, MAC, Ipv4Addr::UNSPECIFIED, &[]);
        assert_eq!(s.answer(&good[..100]), Err(Ignored::Malformed));
        let mut bad = good.clone();
        bad[FIXED] = 0;
        assert_eq!(s.answer(&bad), Err(Ignored::Malformed), "cookie");
        let mut bad = good.clone();
        bad[0] = 2;
        assert_eq!(s.answer(&bad), Err(Ignored::Malformed), "a reply");
        // An option running past the end; no message type.
        let mut bad = good[..FIXED + 4].to_vec();
        bad.extend_from_slice(&[OPT_MSG_TYPE, 9, 1]);
        assert_eq!(s.answer(&bad), Err(Ignored::Malformed));
        let mut bad = good[..FIXED + 4].to_vec();
        bad.push(OPT_END);
        assert_eq!(s.answer(&bad), Err(Ignored::Malformed));
    }
}
