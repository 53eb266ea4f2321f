//! `-n/--network` option values, in kvmtool's syntax: comma-separated
//! `key=value` pairs, e.g. `mode=tap,tapif=tap0,guest_mac=02:00:00:00:00:01`
//! or `mode=user,hostfwd=tcp::2222-:22`.
//!
//! Modes: `user` (lkvm's own user-mode network stack, [`super::user`]),
//! `tap` and `none`. An `-n` without a value is a user-mode card with
//! kvmtool's addresses; a value without `mode=` is a tap, as kvmtool's
//! parser has it. `hostfwd` may be given several times in one value.

use std::net::Ipv4Addr;

/// What one `--network` option asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetSpec {
    /// A virtio-net device on a host tap interface: `ifname` is the tap to
    /// create or attach to (the kernel picks a `tapN` name when absent),
    /// `mac` the guest's address.
    Tap {
        ifname: Option<String>,
        mac: [u8; 6],
    },
    /// A virtio-net device on lkvm's user-mode stack.
    User(UserSpec),
    /// `mode=none` (or `none`): no device.
    None,
}

/// A user-mode card: the guest's and the gateway's addresses (a /24, as in
/// kvmtool) and the host ports forwarded into the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    /// The guest's MAC (`guest_mac`).
    pub mac: [u8; 6],
    /// The gateway's MAC (`host_mac`).
    pub host_mac: [u8; 6],
    /// The address the DHCP server hands out (`guest_ip`).
    pub guest_ip: Ipv4Addr,
    /// The gateway, DNS server and DHCP server (`host_ip`); it stands for
    /// the host's loopback.
    pub host_ip: Ipv4Addr,
    pub hostfwd: Vec<HostFwd>,
}

/// `hostfwd=tcp:[ADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT`: connections to
/// ADDR:HOSTPORT on the host (every address when ADDR is empty, as in
/// QEMU) are carried to GUESTADDR:GUESTPORT (the guest's address when
/// empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFwd {
    pub host_addr: Ipv4Addr,
    pub host_port: u16,
    pub guest_addr: Option<Ipv4Addr>,
    pub guest_port: u16,
}

/// kvmtool's user-mode addresses.
pub const DEFAULT_GUEST_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 33, 15);
pub const DEFAULT_HOST_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 33, 1);
pub const DEFAULT_HOST_MAC: [u8; 6] = [0x02, 0x01, 0x01, 0x01, 0x01, 0x01];
/// At most this many `hostfwd` rules per card.
pub const MAX_HOSTFWD: usize = 64;

impl UserSpec {
    /// kvmtool's defaults for card `index`.
    pub fn new(index: usize) -> UserSpec {
        UserSpec {
            mac: default_mac(index),
            host_mac: DEFAULT_HOST_MAC,
            guest_ip: DEFAULT_GUEST_IP,
            host_ip: DEFAULT_HOST_IP,
            hostfwd: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("--network: \"{0}\" is not key=value")]
    NotKeyValue(String),
    #[error("--network: {0} given twice")]
    Duplicate(String),
    #[error("--network: unknown mode \"{0}\"; use mode=user, mode=tap or mode=none")]
    UnknownMode(String),
    #[error("--network: {0} is not supported yet")]
    Unsupported(String),
    #[error("--network: unknown key \"{0}\" (known: mode, tapif, guest_mac, guest_ip, host_ip, host_mac, hostfwd)")]
    UnknownKey(String),
    #[error("--network: tapif \"{0}\" is not a valid interface name: {1}")]
    BadIfname(String, &'static str),
    #[error("--network: {0} \"{1}\" is not a MAC address like 02:15:15:15:15:15")]
    BadMac(&'static str, String),
    #[error("--network: {0} \"{1}\" is a {2} address; a NIC needs a unicast one")]
    UnusableMac(&'static str, String, &'static str),
    #[error("--network: {0} makes no sense with mode=none")]
    NoneWithOptions(String),
    #[error("--network: {0} applies to mode=user only")]
    UserOnly(String),
    #[error("--network: {0} applies to mode=tap only")]
    TapOnly(String),
    #[error("--network: {0} \"{1}\" is not an IPv4 address")]
    BadIp(&'static str, String),
    #[error("--network: {0}")]
    BadAddresses(String),
    #[error("--network: hostfwd \"{0}\" is not tcp:[ADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT: {1}")]
    BadHostFwd(String, &'static str),
    #[error("--network: host port {0}:{1} is forwarded twice")]
    HostFwdTwice(Ipv4Addr, u16),
    #[error("--network: more than {MAX_HOSTFWD} hostfwd rules")]
    TooManyHostFwd,
}

/// kvmtool's other `-n` keys, refused by name so the user knows the
/// option exists but is not implemented rather than misspelt.
const KVMTOOL_KEYS: &[&str] = &["script", "downscript", "vhost", "trans", "fd", "mq"];

/// Longest interface name the kernel accepts (IFNAMSIZ less the NUL).
const IFNAME_MAX: usize = 15;

impl NetSpec {
    /// Parses one `--network` value; `index` (0 for the first card) picks
    /// the default MAC so several devices do not collide.
    pub fn parse(arg: &str, index: usize) -> Result<NetSpec, Error> {
        let arg = arg.trim();
        if arg.is_empty() {
            return Ok(NetSpec::User(UserSpec::new(index)));
        }
        if arg == "none" {
            return Ok(NetSpec::None);
        }
        let mut mode: Option<&str> = None;
        let mut ifname: Option<String> = None;
        let mut mac: Option<[u8; 6]> = None;
        let mut host_mac: Option<[u8; 6]> = None;
        let mut guest_ip: Option<Ipv4Addr> = None;
        let mut host_ip: Option<Ipv4Addr> = None;
        let mut hostfwd: Vec<HostFwd> = Vec::new();
        // The keys given, in order, for messages about the wrong mode.
        let mut user_keys: Vec<&str> = Vec::new();
        for part in arg.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| Error::NotKeyValue(part.to_string()))?;
            let seen = match key {
                "mode" => mode.replace(value).is_some(),
                "tapif" => ifname.replace(check_ifname(value)?).is_some(),
                "guest_mac" => mac.replace(parse_mac("guest_mac", value)?).is_some(),
                "host_mac" => host_mac.replace(parse_mac("host_mac", value)?).is_some(),
                "guest_ip" => guest_ip.replace(parse_ip("guest_ip", value)?).is_some(),
                "host_ip" => host_ip.replace(parse_ip("host_ip", value)?).is_some(),
                "hostfwd" => {
                    if hostfwd.len() >= MAX_HOSTFWD {
                        return Err(Error::TooManyHostFwd);
                    }
                    hostfwd.push(parse_hostfwd(value)?);
                    false
                }
                k if KVMTOOL_KEYS.contains(&k) => return Err(Error::Unsupported(k.to_string())),
                k => return Err(Error::UnknownKey(k.to_string())),
            };
            if seen {
                return Err(Error::Duplicate(key.to_string()));
            }
            if matches!(key, "guest_ip" | "host_ip" | "host_mac" | "hostfwd") {
                user_keys.push(key);
            }
        }
        match mode.unwrap_or("tap") {
            "tap" => {
                if let Some(k) = user_keys.first() {
                    return Err(Error::UserOnly(k.to_string()));
                }
                Ok(NetSpec::Tap {
                    ifname,
                    mac: mac.unwrap_or_else(|| default_mac(index)),
                })
            }
            "user" => {
                if ifname.is_some() {
                    return Err(Error::TapOnly("tapif".into()));
                }
                let mut u = UserSpec::new(index);
                u.mac = mac.unwrap_or(u.mac);
                u.host_mac = host_mac.unwrap_or(u.host_mac);
                u.guest_ip = guest_ip.unwrap_or(u.guest_ip);
                u.host_ip = host_ip.unwrap_or(u.host_ip);
                u.hostfwd = hostfwd;
                check_user(&u)?;
                Ok(NetSpec::User(u))
            }
            "none" => {
                let given = [
                    ("tapif", ifname.is_some()),
                    ("guest_mac", mac.is_some()),
                    ("host_mac", host_mac.is_some()),
                    ("guest_ip", guest_ip.is_some()),
                    ("host_ip", host_ip.is_some()),
                    ("hostfwd", !hostfwd.is_empty()),
                ];
                match given.iter().find(|(_, g)| *g) {
                    Some((k, _)) => Err(Error::NoneWithOptions(k.to_string())),
                    None => Ok(NetSpec::None),
                }
            }
            m => Err(Error::UnknownMode(m.to_string())),
        }
    }
}

/// The gateway and the guest share a /24 (kvmtool's netmask), as distinct
/// host addresses of it; forwarded ports are distinct.
fn check_user(u: &UserSpec) -> Result<(), Error> {
    let bad = |m: String| Err(Error::BadAddresses(m));
    for (what, ip) in [("guest_ip", u.guest_ip), ("host_ip", u.host_ip)] {
        let last = ip.octets()[3];
        if !is_host_address(ip) || last == 0 || last == 255 {
            return bad(format!(
                "{what} {ip} is not a host address of its /24 (a unicast address other than .0 and .255)"
            ));
        }
    }
    if u.guest_ip == u.host_ip {
        return bad(format!("guest_ip and host_ip are both {}", u.guest_ip));
    }
    if !same_24(u.guest_ip, u.host_ip) {
        return bad(format!(
            "guest_ip {} and host_ip {} are not in the same /24",
            u.guest_ip, u.host_ip
        ));
    }
    for (i, f) in u.hostfwd.iter().enumerate() {
        if let Some(g) = f.guest_addr {
            if !same_24(g, u.host_ip) || g == u.host_ip || !is_host_address(g) {
                return bad(format!(
                    "hostfwd guest address {g} is not a guest address in {}/24",
                    u.host_ip
                ));
            }
        }
        if u.hostfwd[..i]
            .iter()
            .any(|o| o.host_port == f.host_port && o.host_addr == f.host_addr)
        {
            return Err(Error::HostFwdTwice(f.host_addr, f.host_port));
        }
    }
    Ok(())
}

fn is_host_address(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast())
}

/// Whether `a` and `b` are in the same /24.
pub fn same_24(a: Ipv4Addr, b: Ipv4Addr) -> bool {
    a.octets()[..3] == b.octets()[..3]
}

fn parse_ip(what: &'static str, s: &str) -> Result<Ipv4Addr, Error> {
    s.parse().map_err(|_| Error::BadIp(what, s.to_string()))
}

/// QEMU's `tcp:[ADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT` (also without the
/// colon after `tcp` when ADDR is left out).
fn parse_hostfwd(s: &str) -> Result<HostFwd, Error> {
    let bad = |why| Error::BadHostFwd(s.to_string(), why);
    let rest = if let Some(r) = s.strip_prefix("tcp:") {
        r
    } else if s.starts_with("udp:") {
        return Err(Error::Unsupported(format!("hostfwd={s} (UDP forwarding)")));
    } else {
        return Err(bad("it does not start with tcp:"));
    };
    let (host, guest) = rest.split_once('-').ok_or_else(|| bad("no '-'"))?;
    let port = |p: &str| -> Result<u16, Error> {
        p.parse::<u16>()
            .ok()
            .filter(|&n| n != 0)
            .ok_or_else(|| bad("a port is not a number from 1 to 65535"))
    };
    let addr = |a: &str| -> Result<Option<Ipv4Addr>, Error> {
        if a.is_empty() {
            Ok(None)
        } else {
            a.parse()
                .map(Some)
                .map_err(|_| bad("an address is not an IPv4 address"))
        }
    };
    let (host_addr, host_port) = match host.rsplit_once(':') {
        Some((a, p)) => (addr(a)?, port(p)?),
        None => (None, port(host)?),
    };
    let (guest_addr, guest_port) = match guest.rsplit_once(':') {
        Some((a, p)) => (addr(a)?, port(p)?),
        None => (None, port(guest)?),
    };
    Ok(HostFwd {
        host_addr: host_addr.unwrap_or(Ipv4Addr::UNSPECIFIED),
        host_port,
        guest_addr,
        guest_port,
    })
}

/// kvmtool's first guest gets 02:15:15:15:15:15; later devices count up
/// from there. Bit 1 of the first byte marks it locally administered.
pub fn default_mac(index: usize) -> [u8; 6] {
    let base = 0x15u8;
    [
        0x02,
        base,
        base,
        base,
        base.wrapping_add((index >> 8) as u8),
        base.wrapping_add(index as u8),
    ]
}

/// Formats a MAC the usual way, for logs and messages.
pub fn format_mac(mac: &[u8; 6]) -> String {
    let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

fn parse_mac(what: &'static str, s: &str) -> Result<[u8; 6], Error> {
    let bad = || Error::BadMac(what, s.to_string());
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let p = parts.next().ok_or_else(bad)?;
        if p.is_empty() || p.len() > 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    if mac[0] & 1 != 0 {
        let kind = if mac == [0xff; 6] {
            "broadcast"
        } else {
            "multicast"
        };
        return Err(Error::UnusableMac(what, s.to_string(), kind));
    }
    if mac == [0; 6] {
        return Err(Error::UnusableMac(what, s.to_string(), "all-zero"));
    }
    Ok(mac)
}

/// The kernel's rules for a device name (`dev_valid_name`), checked here
/// so the user gets a message about the name rather than an EINVAL.
fn check_ifname(name: &str) -> Result<String, Error> {
    if name.starts_with("/dev/") {
        // kvmtool also takes a macvtap character device here.
        return Err(Error::Unsupported(format!(
            "tapif={name} (a macvtap device node)"
        )));
    }
    let bad = |why| Err(Error::BadIfname(name.to_string(), why));
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > IFNAME_MAX {
        return bad("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("it is a path component");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        return bad("it contains '/', ':', NUL or whitespace");
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap(ifname: Option<&str>, mac: [u8; 6]) -> NetSpec {
        NetSpec::Tap {
            ifname: ifname.map(String::from),
            mac,
        }
    }

    #[test]
    fn good_specs() {
        assert_eq!(
            NetSpec::parse("mode=tap,tapif=tap0", 0).unwrap(),
            tap(Some("tap0"), [2, 0x15, 0x15, 0x15, 0x15, 0x15])
        );
        assert_eq!(
            NetSpec::parse("mode=tap", 2).unwrap(),
            tap(None, [2, 0x15, 0x15, 0x15, 0x15, 0x17])
        );
        assert_eq!(
            NetSpec::parse("tapif=lkvm-a_1.x,guest_mac=52:54:00:AB:cd:0f,", 0).unwrap(),
            tap(Some("lkvm-a_1.x"), [0x52, 0x54, 0, 0xab, 0xcd, 0x0f])
        );
        assert_eq!(
            NetSpec::parse("tapif=abcdefghijklmno", 0).unwrap(),
            tap(Some("abcdefghijklmno"), default_mac(0))
        );
        assert_eq!(NetSpec::parse("none", 0).unwrap(), NetSpec::None);
        assert_eq!(
            NetSpec::parse("", 1).unwrap(),
            NetSpec::User(UserSpec::new(1)),
            "-n alone: kvmtool's default card"
        );
        assert_eq!(NetSpec::parse("mode=none", 0).unwrap(), NetSpec::None);
        assert_ne!(default_mac(1), default_mac(257));
        let NetSpec::User(u) = NetSpec::parse(
            "mode=user,guest_ip=10.1.2.3,host_ip=10.1.2.254,host_mac=02:aa:00:00:00:01,\
             hostfwd=tcp::2222-:22,hostfwd=tcp:127.0.0.1:8080-10.1.2.3:80,hostfwd=tcp:9-7",
            0,
        )
        .unwrap() else {
            panic!("not user")
        };
        assert_eq!(u.guest_ip, std::net::Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(u.host_ip, std::net::Ipv4Addr::new(10, 1, 2, 254));
        assert_eq!(u.host_mac, [2, 0xaa, 0, 0, 0, 1]);
        assert_eq!(u.mac, default_mac(0));
        let fwd = |a: [u8; 4], hp, g: Option<[u8; 4]>, gp| HostFwd {
            host_addr: a.into(),
            host_port: hp,
            guest_addr: g.map(Into::into),
            guest_port: gp,
        };
        assert_eq!(
            u.hostfwd,
            vec![
                fwd([0, 0, 0, 0], 2222, None, 22),
                fwd([127, 0, 0, 1], 8080, Some([10, 1, 2, 3]), 80),
                fwd([0, 0, 0, 0], 9, None, 7),
            ]
        );
        assert_eq!(
            NetSpec::parse("mode=user,guest_mac=02:00:00:00:00:09", 3).unwrap(),
            NetSpec::User(UserSpec {
                mac: [2, 0, 0, 0, 0, 9],
                ..UserSpec::new(3)
            })
        );
        assert_eq!(format_mac(&default_mac(0)), "02:15:15:15:15:15");
    }

    #[test]
    fn every_error_names_its_value() {
        let cases: &[(&str, Error, &str)] = &[
            ("tap0", Error::NotKeyValue("tap0".into()), "\"tap0\""),
            (
                "mode=tap,mode=tap",
                Error::Duplicate("mode".into()),
                "mode given twice",
            ),
            (
                "tapif=a,tapif=b",
                Error::Duplicate("tapif".into()),
                "tapif given twice",
            ),
            (
                "mode=user,tapif=tap0",
                Error::TapOnly("tapif".into()),
                "tapif applies to mode=tap",
            ),
            (
                "mode=tap,guest_ip=10.0.0.2",
                Error::UserOnly("guest_ip".into()),
                "guest_ip applies to mode=user",
            ),
            (
                "hostfwd=tcp::22-:22",
                Error::UserOnly("hostfwd".into()),
                "hostfwd applies",
            ),
            (
                "mode=user,guest_ip=10.0.0.300",
                Error::BadIp("guest_ip", "10.0.0.300".into()),
                "\"10.0.0.300\"",
            ),
            (
                "mode=user,guest_ip=10.0.0.2",
                Error::BadAddresses(
                    "guest_ip 10.0.0.2 and host_ip 192.168.33.1 are not in the same /24".into(),
                ),
                "not in the same /24",
            ),
            (
                "mode=user,host_ip=192.168.33.15",
                Error::BadAddresses("guest_ip and host_ip are both 192.168.33.15".into()),
                "both 192.168.33.15",
            ),
            (
                "mode=user,guest_ip=192.168.33.255",
                Error::BadAddresses("guest_ip 192.168.33.255 is not a host address of its /24 (a unicast address other than .0 and .255)".into()),
                "192.168.33.255",
            ),
            (
                "mode=user,hostfwd=tcp::2222",
                Error::BadHostFwd("tcp::2222".into(), "no '-'"),
                "\"tcp::2222\"",
            ),
            (
                "mode=user,hostfwd=tcp::0-:22",
                Error::BadHostFwd(
                    "tcp::0-:22".into(),
                    "a port is not a number from 1 to 65535",
                ),
                "1 to 65535",
            ),
            (
                "mode=user,hostfwd=tcp:1.2.3:80-:22",
                Error::BadHostFwd(
                    "tcp:1.2.3:80-:22".into(),
                    "an address is not an IPv4 address",
                ),
                "tcp:1.2.3:80-:22",
            ),
            (
                "mode=user,hostfwd=sctp::1-:1",
                Error::BadHostFwd("sctp::1-:1".into(), "it does not start with tcp:"),
                "sctp",
            ),
            (
                "mode=user,hostfwd=udp::53-:53",
                Error::Unsupported("hostfwd=udp::53-:53 (UDP forwarding)".into()),
                "not supported yet",
            ),
            (
                "mode=user,hostfwd=tcp::80-:80,hostfwd=tcp:0.0.0.0:80-:81",
                Error::HostFwdTwice(std::net::Ipv4Addr::UNSPECIFIED, 80),
                "0.0.0.0:80 is forwarded twice",
            ),
            (
                "mode=user,hostfwd=tcp::80-10.0.0.9:80",
                Error::BadAddresses(
                    "hostfwd guest address 10.0.0.9 is not a guest address in 192.168.33.1/24"
                        .into(),
                ),
                "10.0.0.9",
            ),            (
                "mode=bridge",
                Error::UnknownMode("bridge".into()),
                "\"bridge\"",
            ),
            (
                "mode=tap,host_ip=10.0.0.1",
                Error::UserOnly("host_ip".into()),
                "host_ip applies to mode=user only",
            ),
            (
                "vhost=1",
                Error::Unsupported("vhost".into()),
                "vhost is not supported",
            ),
            (
                "trans=mmio",
                Error::Unsupported("trans".into()),
                "trans is not",
            ),
            (
                "colour=blue",
                Error::UnknownKey("colour".into()),
                "\"colour\"",
            ),
            (
                "tapif=",
                Error::BadIfname("".into(), "it is empty"),
                "empty",
            ),
            (
                "tapif=abcdefghijklmnop",
                Error::BadIfname("abcdefghijklmnop".into(), "longer than 15 bytes"),
                "abcdefghijklmnop",
            ),
            (
                "tapif=a/b",
                Error::BadIfname("a/b".into(), "it contains '/', ':', NUL or whitespace"),
                "\"a/b\"",
            ),
            (
                "tapif=..",
                Error::BadIfname("..".into(), "it is a path component"),
                "\"..\"",
            ),
            (
                "tapif=/dev/tap9",
                Error::Unsupported("tapif=/dev/tap9 (a macvtap device node)".into()),
                "tapif=/dev/tap9 (a macvtap device node) is not supported yet",
            ),
            (
                "guest_mac=02:15:15:15:15",
                Error::BadMac("guest_mac", "02:15:15:15:15".into()),
                "02:15:15:15:15",
            ),
            (
                "guest_mac=02:15:15:15:15:15:15",
                Error::BadMac("guest_mac", "02:15:15:15:15:15:15".into()),
                "\"02:15:15:15:15:15:15\"",
            ),
            (
                "guest_mac=02:15:15:15:15:xy",
                Error::BadMac("guest_mac", "02:15:15:15:15:xy".into()),
                "xy",
            ),
            (
                "guest_mac=02:15:15:15:15:123",
                Error::BadMac("guest_mac", "02:15:15:15:15:123".into()),
                "123",
            ),
            (
                "guest_mac=01:00:5e:00:00:01",
                Error::UnusableMac("guest_mac", "01:00:5e:00:00:01".into(), "multicast"),
                "multicast",
            ),
            (
                "guest_mac=ff:ff:ff:ff:ff:ff",
                Error::UnusableMac("guest_mac", "ff:ff:ff:ff:ff:ff".into(), "broadcast"),
                "broadcast",
            ),
            (
                "guest_mac=00:00:00:00:00:00",
                Error::UnusableMac("guest_mac", "00:00:00:00:00:00".into(), "all-zero"),
                "all-zero",
            ),
            (
                "mode=none,tapif=tap0",
                Error::NoneWithOptions("tapif".into()),
                "tapif",
            ),
        ];
        for (arg, want, text) in cases {
            let got = NetSpec::parse(arg, 0).unwrap_err();
            assert_eq!(&got, want, "{arg}");
            let msg = got.to_string();
            assert!(msg.contains(text), "{arg}: {msg}");
            assert!(!msg.contains('\n'), "{arg}: one line");
        }
    }
}
