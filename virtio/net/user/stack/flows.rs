//! The flow table: adding, closing and evicting flows, and their timeouts.

use super::*;

impl Stack {
    /// Room for one more flow: the flow idle the longest goes.
    pub(super) fn make_room(&mut self) {
        while self.flows.len() >= self.cfg.limits.max_flows.max(1) {
            let Some(oldest) = self
                .flows
                .iter()
                .min_by_key(|(id, f)| (f.last, **id))
                .map(|(id, _)| *id)
            else {
                return;
            };
            self.count(Counter::FlowsEvicted);
            self.close_flow(oldest);
        }
    }

    pub(super) fn add_flow(&mut self, key: Key, kind: Kind, now: Instant) -> io::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let (fd, interest) = match &kind {
            Kind::Connecting { host, .. } => (host.as_fd(), EpollFlags::EPOLLOUT),
            Kind::Tcp(t) => (t.host.as_fd(), EpollFlags::EPOLLIN),
            Kind::Udp { host, .. } => (host.as_fd(), EpollFlags::EPOLLIN),
        };
        self.epoll.add(fd, EpollEvent::new(interest, id))?;
        match &kind {
            Kind::Udp { .. } => self.udp_count += 1,
            _ => self.tcp_count += 1,
        }
        self.flows.insert(
            id,
            Flow {
                key,
                kind,
                created: now,
                last: now,
                interest: Some(interest),
            },
        );
        self.keys.insert(key, id);
        self.count(Counter::FlowsOpened);
        self.set_gauges();
        Ok(id)
    }

    /// Removes a flow; an open TCP flow is reset towards the guest first.
    pub(super) fn close_flow(&mut self, id: u64) {
        let handle = match self.flows.get(&id).map(|f| &f.kind) {
            Some(Kind::Tcp(t)) => Some(t.handle),
            _ => None,
        };
        if let Some(h) = handle {
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            if s.is_open() {
                s.abort();
                self.smol_poll();
            }
        }
        self.remove_flow(id);
    }

    pub(super) fn remove_flow(&mut self, id: u64) {
        let Some(f) = self.flows.remove(&id) else {
            return;
        };
        self.keys.remove(&f.key);
        match f.kind {
            Kind::Udp { .. } => self.udp_count = self.udp_count.saturating_sub(1),
            Kind::Tcp(t) => {
                self.sockets.remove(t.handle);
                self.tcp_count = self.tcp_count.saturating_sub(1);
            }
            Kind::Connecting { .. } => self.tcp_count = self.tcp_count.saturating_sub(1),
        }
        self.set_gauges();
        // Dropping the host socket closes it, which takes it out of epoll.
    }

    /// Ends flows whose time is up or whose both sides are done.
    pub(super) fn sweep(&mut self, now: Instant) {
        let l = &self.cfg.limits;
        let mut done = Vec::new();
        let mut expired = Vec::new();
        for (&id, f) in &self.flows {
            let idle = now.saturating_duration_since(f.last);
            let age = now.saturating_duration_since(f.created);
            match &f.kind {
                Kind::Connecting { .. } => {
                    if age >= l.connect {
                        expired.push(id);
                    }
                }
                Kind::Udp { .. } => {
                    let limit = if f.key.remote.port() == super::super::dns::PORT {
                        l.dns_idle
                    } else {
                        l.udp_idle
                    };
                    if idle >= limit {
                        expired.push(id);
                    }
                }
                Kind::Tcp(t) => {
                    use tcp::State::*;
                    let s = self.sockets.get::<tcp::Socket>(t.handle);
                    let state = s.state();
                    if state == Closed || (state == TimeWait && t.host_shut) {
                        done.push(id);
                    } else if matches!(state, SynReceived | SynSent | Listen) {
                        if age >= l.handshake {
                            expired.push(id);
                        }
                    } else if t.host_eof || t.host_shut {
                        if idle >= l.half_closed {
                            expired.push(id);
                        }
                    } else if idle >= l.tcp_idle {
                        expired.push(id);
                    }
                }
            }
        }
        for id in done {
            self.remove_flow(id);
        }
        for id in expired {
            self.count(Counter::FlowsTimedOut);
            let connecting = matches!(
                self.flows.get(&id).map(|f| &f.kind),
                Some(Kind::Connecting { .. })
            );
            if connecting {
                let e = io::Error::from_raw_os_error(libc::ETIMEDOUT);
                self.fail_connect(id, &e);
            } else {
                self.close_flow(id);
            }
        }
    }

    /// When `f` times out, by the same rules as [`Stack::sweep`].
    pub(super) fn deadline(&self, f: &Flow) -> Option<Instant> {
        use tcp::State::*;
        let l = &self.cfg.limits;
        let (from, limit) = match &f.kind {
            Kind::Connecting { .. } => (f.created, l.connect),
            Kind::Udp { .. } if f.key.remote.port() == super::super::dns::PORT => {
                (f.last, l.dns_idle)
            }
            Kind::Udp { .. } => (f.last, l.udp_idle),
            Kind::Tcp(t) => {
                let state = self.sockets.get::<tcp::Socket>(t.handle).state();
                if state == Closed || (state == TimeWait && t.host_shut) {
                    return Some(f.last);
                } else if matches!(state, SynReceived | SynSent | Listen) {
                    (f.created, l.handshake)
                } else if t.host_eof || t.host_shut {
                    (f.last, l.half_closed)
                } else {
                    (f.last, l.tcp_idle)
                }
            }
        };
        from.checked_add(limit)
    }

    /// Open flows (TCP, UDP), for tests.
    #[cfg(test)]
    pub fn flow_counts(&self) -> (u64, u64) {
        (self.tcp_count, self.udp_count)
    }
}
