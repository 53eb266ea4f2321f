//! `-n/--network` option values, in kvmtool's syntax: comma-separated
//! `key=value` pairs, e.g. `mode=tap,tapif=tap0,guest_mac=02:00:00:00:00:01`.
//!
//! Only tap networking exists so far. kvmtool's default mode is user-mode
//! networking, which lkvm does not have; since asking for it is an error,
//! an omitted `mode` means tap here rather than a guaranteed failure.

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
    /// `mode=none` (or `none`): no device.
    None,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("-n/--network without a value (kvmtool's default, user-mode networking) is not supported yet; use mode=tap[,tapif=NAME][,guest_mac=MAC] or mode=none")]
    Empty,
    #[error("--network: \"{0}\" is not key=value")]
    NotKeyValue(String),
    #[error("--network: {0} given twice")]
    Duplicate(String),
    #[error("--network: user-mode networking (mode=user) is not supported yet; use mode=tap")]
    UserMode,
    #[error("--network: unknown mode \"{0}\"; use mode=tap or mode=none")]
    UnknownMode(String),
    #[error("--network: {0} is not supported yet")]
    Unsupported(String),
    #[error("--network: unknown key \"{0}\" (known: mode, tapif, guest_mac)")]
    UnknownKey(String),
    #[error("--network: tapif \"{0}\" is not a valid interface name: {1}")]
    BadIfname(String, &'static str),
    #[error("--network: guest_mac \"{0}\" is not a MAC address like 02:15:15:15:15:15")]
    BadMac(String),
    #[error("--network: guest_mac \"{0}\" is a {1} address; a NIC needs a unicast one")]
    UnusableMac(String, &'static str),
    #[error("--network: {0} makes no sense with mode=none")]
    NoneWithOptions(String),
}

/// kvmtool's other `-n` keys, refused by name so the user knows the
/// option exists but is not implemented rather than misspelt.
const KVMTOOL_KEYS: &[&str] = &[
    "host_ip",
    "guest_ip",
    "host_mac",
    "script",
    "downscript",
    "vhost",
    "trans",
    "fd",
    "mq",
];

/// Longest interface name the kernel accepts (IFNAMSIZ less the NUL).
const IFNAME_MAX: usize = 15;

impl NetSpec {
    /// Parses one `--network` value; `index` (0 for the first network
    /// option) picks the default MAC so several devices do not collide.
    pub fn parse(arg: &str, index: usize) -> Result<NetSpec, Error> {
        let arg = arg.trim();
        if arg.is_empty() {
            return Err(Error::Empty);
        }
        if arg == "none" {
            return Ok(NetSpec::None);
        }
        let mut mode: Option<&str> = None;
        let mut ifname: Option<String> = None;
        let mut mac: Option<[u8; 6]> = None;
        for part in arg.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| Error::NotKeyValue(part.to_string()))?;
            let seen = match key {
                "mode" => mode.replace(value).is_some(),
                "tapif" => ifname.replace(check_ifname(value)?).is_some(),
                "guest_mac" => mac.replace(parse_mac(value)?).is_some(),
                k if KVMTOOL_KEYS.contains(&k) => return Err(Error::Unsupported(k.to_string())),
                k => return Err(Error::UnknownKey(k.to_string())),
            };
            if seen {
                return Err(Error::Duplicate(key.to_string()));
            }
        }
        match mode.unwrap_or("tap") {
            "tap" => Ok(NetSpec::Tap {
                ifname,
                mac: mac.unwrap_or_else(|| default_mac(index)),
            }),
            "none" => match (ifname, mac) {
                (Some(_), _) => Err(Error::NoneWithOptions("tapif".into())),
                (_, Some(_)) => Err(Error::NoneWithOptions("guest_mac".into())),
                _ => Ok(NetSpec::None),
            },
            "user" => Err(Error::UserMode),
            m => Err(Error::UnknownMode(m.to_string())),
        }
    }
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

fn parse_mac(s: &str) -> Result<[u8; 6], Error> {
    let bad = || Error::BadMac(s.to_string());
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
        return Err(Error::UnusableMac(s.to_string(), kind));
    }
    if mac == [0; 6] {
        return Err(Error::UnusableMac(s.to_string(), "all-zero"));
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
        assert_eq!(NetSpec::parse("mode=none", 0).unwrap(), NetSpec::None);
        assert_ne!(default_mac(1), default_mac(257));
        assert_eq!(format_mac(&default_mac(0)), "02:15:15:15:15:15");
    }

    #[test]
    fn every_error_names_its_value() {
        let cases: &[(&str, Error, &str)] = &[
            ("", Error::Empty, "without a value"),
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
            ("mode=user", Error::UserMode, "mode=user"),
            (
                "mode=bridge",
                Error::UnknownMode("bridge".into()),
                "\"bridge\"",
            ),
            (
                "mode=tap,host_ip=10.0.0.1",
                Error::Unsupported("host_ip".into()),
                "host_ip is not supported yet",
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
                Error::BadMac("02:15:15:15:15".into()),
                "02:15:15:15:15",
            ),
            (
                "guest_mac=02:15:15:15:15:15:15",
                Error::BadMac("02:15:15:15:15:15:15".into()),
                "\"02:15:15:15:15:15:15\"",
            ),
            (
                "guest_mac=02:15:15:15:15:xy",
                Error::BadMac("02:15:15:15:15:xy".into()),
                "xy",
            ),
            (
                "guest_mac=02:15:15:15:15:123",
                Error::BadMac("02:15:15:15:15:123".into()),
                "123",
            ),
            (
                "guest_mac=01:00:5e:00:00:01",
                Error::UnusableMac("01:00:5e:00:00:01".into(), "multicast"),
                "multicast",
            ),
            (
                "guest_mac=ff:ff:ff:ff:ff:ff",
                Error::UnusableMac("ff:ff:ff:ff:ff:ff".into(), "broadcast"),
                "broadcast",
            ),
            (
                "guest_mac=00:00:00:00:00:00",
                Error::UnusableMac("00:00:00:00:00:00".into(), "all-zero"),
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
