//! A card's counters, shared by its device thread, its backend and the
//! control socket (`lkvm stat`).

use std::sync::atomic::{AtomicU64, Ordering};

/// One counter or gauge; [`Counter::name`] is what `lkvm stat` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Frames the guest sent (transmit chains handed to the backend).
    FramesFromGuest,
    /// Frames put into the guest's receive buffers.
    FramesToGuest,
    BytesFromGuest,
    BytesToGuest,
    /// Open flows now (gauges).
    TcpFlows,
    UdpFlows,
    /// Flows made since the start.
    FlowsOpened,
    /// Flows closed to make room under the cap (the oldest idle one).
    FlowsEvicted,
    /// Flows ended by a timeout (half-open, half-closed or idle).
    FlowsTimedOut,
    /// Connections accepted on a `hostfwd` port.
    HostfwdAccepted,
    /// Flows the host refused (connection refused, unreachable, no
    /// socket), answered to the guest with a RST or ICMP unreachable.
    HostRefused,
    /// Drops, by reason.
    DropMalformed,
    DropFragment,
    DropBadChecksum,
    DropUnsupported,
    DropNotForUs,
    /// A frame for the guest found the queue towards it full.
    DropQueueFull,
    /// A datagram the host socket would not take.
    DropHostSend,
    /// A host datagram too big for one frame.
    DropTooBig,
    /// A received frame the guest's buffers could not hold.
    DropGuestRx,
}

const ALL: [Counter; 20] = [
    Counter::FramesFromGuest,
    Counter::FramesToGuest,
    Counter::BytesFromGuest,
    Counter::BytesToGuest,
    Counter::TcpFlows,
    Counter::UdpFlows,
    Counter::FlowsOpened,
    Counter::FlowsEvicted,
    Counter::FlowsTimedOut,
    Counter::HostfwdAccepted,
    Counter::HostRefused,
    Counter::DropMalformed,
    Counter::DropFragment,
    Counter::DropBadChecksum,
    Counter::DropUnsupported,
    Counter::DropNotForUs,
    Counter::DropQueueFull,
    Counter::DropHostSend,
    Counter::DropTooBig,
    Counter::DropGuestRx,
];

impl Counter {
    pub fn name(self) -> &'static str {
        match self {
            Counter::FramesFromGuest => "frames_from_guest",
            Counter::FramesToGuest => "frames_to_guest",
            Counter::BytesFromGuest => "bytes_from_guest",
            Counter::BytesToGuest => "bytes_to_guest",
            Counter::TcpFlows => "tcp_flows",
            Counter::UdpFlows => "udp_flows",
            Counter::FlowsOpened => "flows_opened",
            Counter::FlowsEvicted => "flows_evicted",
            Counter::FlowsTimedOut => "flows_timed_out",
            Counter::HostfwdAccepted => "hostfwd_accepted",
            Counter::HostRefused => "host_refused",
            Counter::DropMalformed => "drop_malformed",
            Counter::DropFragment => "drop_fragment",
            Counter::DropBadChecksum => "drop_bad_checksum",
            Counter::DropUnsupported => "drop_unsupported",
            Counter::DropNotForUs => "drop_not_for_us",
            Counter::DropQueueFull => "drop_queue_full",
            Counter::DropHostSend => "drop_host_send",
            Counter::DropTooBig => "drop_too_big",
            Counter::DropGuestRx => "drop_guest_rx",
        }
    }

    /// Counters a tap card has (the others are the user stack's).
    fn on_tap(self) -> bool {
        matches!(
            self,
            Counter::FramesFromGuest
                | Counter::FramesToGuest
                | Counter::BytesFromGuest
                | Counter::BytesToGuest
                | Counter::DropGuestRx
        )
    }
}

/// The counters of one card.
#[derive(Debug, Default)]
pub struct NetStats {
    values: [AtomicU64; ALL.len()],
}

impl NetStats {
    pub fn add(&self, c: Counter, n: u64) {
        self.values[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(&self, c: Counter) {
        self.add(c, 1);
    }

    /// Sets a gauge.
    pub fn set(&self, c: Counter, n: u64) {
        self.values[c as usize].store(n, Ordering::Relaxed);
    }

    pub fn get(&self, c: Counter) -> u64 {
        self.values[c as usize].load(Ordering::Relaxed)
    }

    /// Every counter of a card in `mode` ("user" or "tap"), by name.
    pub fn fields(&self, mode: &str) -> Vec<(&'static str, u64)> {
        ALL.iter()
            .filter(|c| mode == "user" || c.on_tap())
            .map(|&c| (c.name(), self.get(c)))
            .collect()
    }
}

/// What the control socket shows of one card.
#[derive(Clone, Debug)]
pub struct NetCard {
    /// "user" or "tap".
    pub mode: &'static str,
    pub mac: [u8; 6],
    pub stats: std::sync::Arc<NetStats>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_once_each_and_tap_cards_show_fewer() {
        let s = NetStats::default();
        s.inc(Counter::DropFragment);
        s.add(Counter::BytesToGuest, 5);
        s.set(Counter::TcpFlows, 3);
        s.set(Counter::TcpFlows, 2);
        let f = s.fields("user");
        assert_eq!(f.len(), ALL.len());
        let mut names: Vec<_> = f.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert!(f.contains(&("drop_fragment", 1)));
        assert!(f.contains(&("tcp_flows", 2)));
        for (i, c) in ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        let t = s.fields("tap");
        assert_eq!(t.len(), 5);
        assert!(t.contains(&("bytes_to_guest", 5)));
    }
}
