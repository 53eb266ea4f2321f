//! Where DNS queries to the gateway go: the first `nameserver` of the
//! host's `/etc/resolv.conf`, read once when the card is made.

use std::net::{IpAddr, SocketAddr};

pub const RESOLV_CONF: &str = "/etc/resolv.conf";
pub const PORT: u16 = 53;

/// The first nameserver `text` (a resolv.conf) names, on port 53. IPv6
/// addresses with a zone (`fe80::1%eth0`) are skipped: a socket address
/// cannot carry the zone's name.
pub fn first_nameserver(text: &str) -> Option<SocketAddr> {
    text.lines()
        .map(|l| l.split(['#', ';']).next().unwrap_or_default())
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(a)) => a.parse::<IpAddr>().ok(),
                _ => None,
            }
        })
        .map(|ip| SocketAddr::new(ip, PORT))
        .next()
}

/// The host's resolver, if it has one.
pub fn host_resolver() -> Option<SocketAddr> {
    let text = std::fs::read_to_string(RESOLV_CONF).ok()?;
    first_nameserver(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_usable_nameserver_wins() {
        let conf = "# generated\nsearch example.org\nnameserver fe80::1%eth0\n\
                    nameserver   10.0.0.53 # office\nnameserver 8.8.8.8\n";
        assert_eq!(
            first_nameserver(conf),
            Some("10.0.0.53:53".parse().unwrap())
        );
        assert_eq!(
            first_nameserver("nameserver ::1\n"),
            Some("[::1]:53".parse().unwrap())
        );
        assert_eq!(first_nameserver("; nameserver 1.1.1.1\nsearch x\n"), None);
        assert_eq!(first_nameserver("nameserver\nnameserver nonsense\n"), None);
    }
}
