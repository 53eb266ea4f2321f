//! UDP through the stack: one connected host socket per guest flow.

use super::*;

impl Stack {
    pub(super) fn udp(
        &mut self,
        ip: &Ipv4<'_>,
        guest: SocketAddrV4,
        remote: SocketAddrV4,
        data: &[u8],
        now: Instant,
    ) {
        let key = Key {
            proto: wire::PROTO_UDP,
            guest,
            remote,
        };
        let id = match self.keys.get(&key) {
            Some(&id) => id,
            None => {
                let to = match self.target(remote) {
                    Target::To(a) => a,
                    Target::Unreachable(code) => {
                        self.count(Counter::HostRefused);
                        return self.unreachable(ip, code);
                    }
                    Target::Invalid => return self.count(Counter::DropUnsupported),
                };
                self.make_room();
                let any: SocketAddr = match to {
                    SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                    SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
                };
                let sock = UdpSocket::bind(any).and_then(|s| {
                    s.set_nonblocking(true)?;
                    s.connect(to)?;
                    Ok(s)
                });
                let host = match sock {
                    Ok(s) => s,
                    Err(e) => {
                        log::debug!("user net: UDP to {to}: {e}");
                        self.count(Counter::HostRefused);
                        let code = if errno(&e) == libc::ENETUNREACH { 0 } else { 1 };
                        return self.unreachable(ip, code);
                    }
                };
                let kind = Kind::Udp {
                    host,
                    quote: Vec::new(),
                };
                match self.add_flow(key, kind, now) {
                    Ok(id) => id,
                    Err(e) => {
                        log::debug!("user net: cannot watch a UDP socket: {e}");
                        return self.count(Counter::DropHostSend);
                    }
                }
            }
        };
        let Some(flow) = self.flows.get_mut(&id) else {
            return;
        };
        flow.last = now;
        let Kind::Udp { host, quote } = &mut flow.kind else {
            return;
        };
        let keep = ip.header_len.saturating_add(8).min(ip.packet.len());
        quote.clear();
        quote.extend_from_slice(ip.packet.get(..keep).unwrap_or_default());
        match host.send(data) {
            Ok(_) => {}
            Err(e) if errno(&e) == libc::ECONNREFUSED => {
                // An earlier datagram was refused; this one goes out on
                // the next try, the guest hears of the refusal now.
                self.count(Counter::HostRefused);
                self.unreachable(ip, 3);
            }
            Err(e) => {
                log::debug!("user net: UDP to {remote}: {e}");
                self.count(Counter::DropHostSend);
            }
        }
    }

    pub(super) fn udp_readable(&mut self, id: u64, now: Instant) {
        for _ in 0..UDP_BURST {
            let Some(flow) = self.flows.get_mut(&id) else {
                return;
            };
            let Kind::Udp { host, quote } = &flow.kind else {
                return;
            };
            match host.recv(&mut self.scratch) {
                Ok(n) => {
                    flow.last = now;
                    let (guest, remote) = (flow.key.guest, flow.key.remote);
                    if n > UDP_MAX {
                        self.count(Counter::DropTooBig);
                        continue;
                    }
                    let ident = self.next_ident();
                    let data = self.scratch.get(..n).unwrap_or_default();
                    let p = wire::udp_packet(remote, guest, ident, data);
                    self.push_ip(&p);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if errno(&e) == libc::ECONNREFUSED => {
                    let quote = quote.clone();
                    self.count(Counter::HostRefused);
                    if let Ok(ip) = wire::parse_ipv4_quote(&quote) {
                        self.unreachable(&ip, 3);
                    }
                }
                Err(e) => {
                    log::debug!("user net: UDP receive: {e}");
                    return;
                }
            }
        }
    }
}
