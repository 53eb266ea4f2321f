//! TCP through the stack: a guest's SYN becomes a non-blocking host
//! connect; once the host accepts, smoltcp runs the guest's side and
//! `relay` moves data between it and the host socket. `hostfwd` listeners
//! do the reverse.

use super::*;

/// A TCP connect that does not wait: the stream and whether it is still
/// in progress is for epoll to say.
pub(super) fn connect_nonblocking(to: SocketAddr) -> io::Result<TcpStream> {
    use nix::errno::Errno;
    use nix::sys::socket::{
        connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6,
    };
    use std::os::fd::AsRawFd;
    let family = match to {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let r = match to {
        SocketAddr::V4(a) => connect(fd.as_raw_fd(), &SockaddrIn::from(a)),
        SocketAddr::V6(a) => connect(fd.as_raw_fd(), &SockaddrIn6::from(a)),
    };
    match r {
        Ok(()) | Err(Errno::EINPROGRESS) => Ok(TcpStream::from(fd)),
        Err(e) => Err(e.into()),
    }
}

/// The guest has closed its sending side and everything it sent was
/// taken.
pub(super) fn guest_finished(s: &tcp::Socket<'_>) -> bool {
    use tcp::State::*;
    matches!(s.state(), CloseWait | LastAck | Closing | TimeWait | Closed) && s.recv_queue() == 0
}

impl Stack {
    /// The answer to a host connect that failed with `e`: a RST when the
    /// host refused, ICMP unreachable when it could not get there.
    pub(super) fn refuse(&mut self, e: &io::Error, ip: &Ipv4<'_>, seg: &Tcp) {
        self.count(Counter::HostRefused);
        log::debug!(
            "user net: {}:{} -> {}:{} refused on the host: {e}",
            ip.src,
            seg.src_port,
            ip.dst,
            seg.dst_port
        );
        match errno(e) {
            libc::ENETUNREACH | libc::ENETDOWN => self.unreachable(ip, 0),
            libc::EHOSTUNREACH | libc::ETIMEDOUT | libc::EHOSTDOWN => self.unreachable(ip, 1),
            _ => {
                let id = self.next_ident();
                let rst = wire::tcp_rst_for(
                    SocketAddrV4::new(ip.dst, seg.dst_port),
                    SocketAddrV4::new(ip.src, seg.src_port),
                    id,
                    seg,
                );
                self.push_ip(&rst);
            }
        }
    }

    pub(super) fn tcp(&mut self, ip: &Ipv4<'_>, seg: &Tcp, now: Instant) {
        let guest = SocketAddrV4::new(ip.src, seg.src_port);
        let remote = SocketAddrV4::new(ip.dst, seg.dst_port);
        let key = Key {
            proto: wire::PROTO_TCP,
            guest,
            remote,
        };
        let bare_syn = seg.flags & (wire::TCP_SYN | wire::TCP_ACK | wire::TCP_RST) == wire::TCP_SYN;
        if let Some(&id) = self.keys.get(&key) {
            let mut stale = false;
            if let Some(f) = self.flows.get_mut(&id) {
                match &f.kind {
                    // The guest retransmits its SYN while the host
                    // connect goes on: the first one will do.
                    Kind::Connecting { .. } => return,
                    Kind::Tcp(t) => {
                        let s = self.sockets.get::<tcp::Socket>(t.handle);
                        stale = bare_syn && !s.is_open();
                        if !stale {
                            f.last = now;
                        }
                    }
                    Kind::Udp { .. } => {}
                }
            }
            if !stale {
                self.pipe.rx = Some(ip.packet.to_vec());
                self.smol_poll();
                return;
            }
            // A new connection on the ports of one that is over.
            self.remove_flow(id);
        }
        if !bare_syn {
            // No flow: answered as a closed port (never a RST to a RST).
            if seg.flags & wire::TCP_RST == 0 {
                let id = self.next_ident();
                let rst = wire::tcp_rst_for(remote, guest, id, seg);
                self.push_ip(&rst);
            }
            return;
        }
        let to = match self.target(remote) {
            Target::To(a) => a,
            Target::Unreachable(1) => {
                self.count(Counter::HostRefused);
                return self.unreachable(ip, 1);
            }
            Target::Unreachable(_) => {
                let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
                return self.refuse(&e, ip, seg);
            }
            Target::Invalid => return self.count(Counter::DropUnsupported),
        };
        self.make_room();
        match connect_nonblocking(to) {
            Ok(host) => {
                let kind = Kind::Connecting {
                    host,
                    syn: ip.packet.to_vec(),
                };
                if let Err(e) = self.add_flow(key, kind, now) {
                    self.refuse(&e, ip, seg);
                }
            }
            Err(e) => self.refuse(&e, ip, seg),
        }
    }

    // --- from the host -------------------------------------------------

    pub(super) fn connected(&mut self, id: u64) {
        let Some(flow) = self.flows.get(&id) else {
            return;
        };
        let Kind::Connecting { host, .. } = &flow.kind else {
            return;
        };
        let result = match host.take_error() {
            Ok(None) => host.peer_addr().map(|_| ()),
            Ok(Some(e)) | Err(e) => Err(e),
        };
        if let Err(e) = result {
            if matches!(e.kind(), io::ErrorKind::WouldBlock) {
                return;
            }
            self.fail_connect(id, &e);
            return;
        }
        let Some(flow) = self.flows.remove(&id) else {
            return;
        };
        let Kind::Connecting { host, syn } = flow.kind else {
            return;
        };
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; self.cfg.limits.tcp_buffer]),
            tcp::SocketBuffer::new(vec![0u8; self.cfg.limits.tcp_buffer]),
        );
        s.set_nagle_enabled(false);
        let remote = flow.key.remote;
        let listening = s.listen(IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(*remote.ip())),
            port: remote.port(),
        });
        if listening.is_err() {
            self.keys.remove(&flow.key);
            self.tcp_count = self.tcp_count.saturating_sub(1);
            self.set_gauges();
            return;
        }
        let handle = self.sockets.add(s);
        let _ = host.set_nodelay(true);
        self.flows.insert(
            id,
            Flow {
                kind: Kind::Tcp(TcpFlow::connected(host, handle)),
                ..flow
            },
        );
        self.pipe.rx = Some(syn);
        self.smol_poll();
    }

    pub(super) fn fail_connect(&mut self, id: u64, e: &io::Error) {
        let Some(flow) = self.flows.get(&id) else {
            return;
        };
        let Kind::Connecting { syn, .. } = &flow.kind else {
            return;
        };
        let syn = syn.clone();
        self.remove_flow(id);
        if let Ok(ip) = wire::parse_ipv4(&syn) {
            if let Ok(seg) = wire::parse_tcp(&ip) {
                self.refuse(e, &ip, &seg);
            }
        }
    }

    pub(super) fn accept(&mut self, i: usize, now: Instant) {
        for _ in 0..ACCEPT_BURST {
            let Some((l, fwd)) = self.listeners.get(i) else {
                return;
            };
            let fwd = *fwd;
            let (host, peer) = match l.accept() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::debug!("user net: hostfwd {}: accept: {e}", fwd.host_port);
                    return;
                }
            };
            self.count(Counter::HostfwdAccepted);
            if host.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = host.set_nodelay(true);
            self.make_room();
            let guest =
                SocketAddrV4::new(fwd.guest_addr.unwrap_or(self.cfg.guest_ip), fwd.guest_port);
            let Some(port) = self.free_port(guest) else {
                log::debug!("user net: no free port for a forwarded connection");
                continue;
            };
            let local = SocketAddrV4::new(self.cfg.gw_ip, port);
            let mut s = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0u8; self.cfg.limits.tcp_buffer]),
                tcp::SocketBuffer::new(vec![0u8; self.cfg.limits.tcp_buffer]),
            );
            s.set_nagle_enabled(false);
            let cx = self.iface.context();
            let remote = (IpAddress::Ipv4(*guest.ip()), guest.port());
            let local_ep = IpListenEndpoint {
                addr: Some(IpAddress::Ipv4(*local.ip())),
                port,
            };
            if let Err(e) = s.connect(cx, remote, local_ep) {
                log::debug!("user net: hostfwd to {guest}: {e:?}");
                continue;
            }
            log::debug!("user net: hostfwd {peer} -> {guest} from {local}");
            let handle = self.sockets.add(s);
            let key = Key {
                proto: wire::PROTO_TCP,
                guest,
                remote: local,
            };
            let flow = TcpFlow::connected(host, handle);
            if self.add_flow(key, Kind::Tcp(flow), now).is_err() {
                self.sockets.remove(handle);
            }
        }
    }

    /// A gateway port no flow to `guest` uses.
    pub(super) fn free_port(&mut self, guest: SocketAddrV4) -> Option<u16> {
        let span = usize::from(FWD_PORTS.end() - FWD_PORTS.start()) + 1;
        for _ in 0..span {
            let p = self.next_port;
            self.next_port = if p >= *FWD_PORTS.end() {
                *FWD_PORTS.start()
            } else {
                p + 1
            };
            let key = Key {
                proto: wire::PROTO_TCP,
                guest,
                remote: SocketAddrV4::new(self.cfg.gw_ip, p),
            };
            if !self.keys.contains_key(&key) {
                return Some(p);
            }
        }
        None
    }

    // --- moving data ---------------------------------------------------

    /// Moves data between each TCP flow's smoltcp socket and its host
    /// socket; returns whether anything moved.
    pub(super) fn relay(&mut self, now: Instant) -> bool {
        let mut moved = false;
        for (&id, flow) in self.flows.iter_mut() {
            let Kind::Tcp(t) = &mut flow.kind else {
                continue;
            };
            let s = self.sockets.get_mut::<tcp::Socket>(t.handle);
            let mut active = false;
            // Guest to host.
            while t.writable && !t.host_shut && !t.dead && s.can_recv() {
                let host = &t.host;
                let r = s.recv(|buf| match (&*host).write(buf) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                });
                match r {
                    Ok(Ok(0)) | Err(_) => break,
                    Ok(Ok(_)) => active = true,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => t.writable = false,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(e)) => {
                        log::debug!("user net: host write: {e}");
                        t.dead = true;
                    }
                }
            }
            if !t.host_shut && !t.dead && guest_finished(s) {
                let _ = t.host.shutdown(Shutdown::Write);
                t.host_shut = true;
                active = true;
            }
            // Host to guest.
            while t.readable && !t.host_eof && !t.dead && s.can_send() {
                let host = &t.host;
                let r = s.send(|buf| match (&*host).read(buf) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                });
                match r {
                    Ok(Ok(0)) => {
                        t.host_eof = true;
                        s.close();
                        active = true;
                    }
                    Err(_) => break,
                    Ok(Ok(_)) => active = true,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => t.readable = false,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(e)) => {
                        log::debug!("user net: host read: {e}");
                        t.dead = true;
                    }
                }
            }
            if t.dead && s.is_open() {
                s.abort();
                active = true;
            }
            if active {
                flow.last = now;
                moved = true;
            }
            // Watch the host socket for what the flow can take now.
            if let Some(current) = flow.interest {
                let mut want = EpollFlags::empty();
                if !t.readable && !t.host_eof && !t.dead && (s.can_send() || !s.may_send()) {
                    want |= EpollFlags::EPOLLIN;
                }
                if !t.writable && !t.host_shut && !t.dead && s.recv_queue() > 0 {
                    want |= EpollFlags::EPOLLOUT;
                }
                if want != current {
                    let mut ev = EpollEvent::new(want, id);
                    if self.epoll.modify(t.host.as_fd(), &mut ev).is_ok() {
                        flow.interest = Some(want);
                    }
                }
            }
        }
        moved
    }
}
