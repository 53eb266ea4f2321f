//! A host tap interface carrying virtio-net frames.
//!
//! The tap is opened with `IFF_VNET_HDR` and a 12-byte header size, the
//! size of the virtio 1.x `virtio_net_hdr_v1`: every frame read from or
//! written to the fd starts with the same header the guest's driver uses,
//! so a frame passes between a descriptor chain and the tap without
//! conversion. Offloads are switched off (`TUNSETOFFLOAD 0`) because the
//! device offers none: the kernel then never hands us a GSO frame or a
//! partial checksum the guest did not agree to take.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use nix::sys::ioctl::ioctl_num_type;

use super::NetBackend;

const TUN_PATH: &str = "/dev/net/tun";

/// `virtio_net_hdr_v1`: flags, gso_type, hdr_len, gso_size, csum_start,
/// csum_offset, num_buffers.
pub const VNET_HDR_LEN: usize = 12;

// The `_IOW` encoding differs between architectures (PowerPC puts the
// direction bits elsewhere); nix computes it for the target.
const TUNSETIFF: ioctl_num_type =
    nix::request_code_write!(b'T', 202, std::mem::size_of::<libc::c_int>());
const TUNSETOFFLOAD: ioctl_num_type =
    nix::request_code_write!(b'T', 208, std::mem::size_of::<libc::c_uint>());
const TUNSETVNETHDRSZ: ioctl_num_type =
    nix::request_code_write!(b'T', 216, std::mem::size_of::<libc::c_int>());

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open {TUN_PATH}: {0}{hint}", hint = open_hint(.0))]
    Open(#[source] io::Error),
    #[error(
        "{}: cannot create or attach: {source}{}",
        shown(name),
        attach_hint(name, source)
    )]
    Attach {
        /// `None` when the kernel was to pick the name.
        name: Option<String>,
        #[source]
        source: io::Error,
    },
    #[error("tap {name}: {op}: {source}")]
    Setup {
        name: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

fn open_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => {
            " (the host has no tun driver: load it with 'modprobe tun')"
        }
        Some(libc::EACCES) | Some(libc::EPERM) => {
            " (lkvm needs read-write access to it: run as root or adjust its permissions)"
        }
        _ => "",
    }
}

fn shown(name: &Option<String>) -> String {
    match name {
        Some(n) => format!("tap {n}"),
        None => "a new tap".to_string(),
    }
}

fn attach_hint(name: &Option<String>, e: &io::Error) -> String {
    let name = name.as_deref().unwrap_or("NAME");
    match e.raw_os_error() {
        Some(libc::EPERM) => format!(
            " (needs CAP_NET_ADMIN or a pre-created tap owned by this user: \
             'ip tuntap add {name} mode tap user $USER')"
        ),
        Some(libc::EBUSY) => " (another process has it open)".to_string(),
        Some(libc::EINVAL) => {
            " (an interface of that name exists and is not a single-queue tap)".to_string()
        }
        _ => String::new(),
    }
}

/// An open tap interface. Closing it removes the interface again unless
/// it was made persistent by whoever created it.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Creates tap `name` (or one the kernel names, when `None`) or
    /// attaches to an existing one, with 12-byte virtio headers, no
    /// offloads and non-blocking I/O, and brings its link up (best effort:
    /// a user-owned tap may not be allowed to).
    pub fn open(name: Option<&str>) -> Result<Tap, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_PATH)
            .map_err(Error::Open)?;

        let mut ifr = ifreq(name.unwrap_or(""));
        // Only the flag bits tun looks at; the cast keeps their bit pattern.
        let flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
        ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which
        // `ifr` is, and `file` is an open tun fd.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut ifr) };
        if r < 0 {
            return Err(Error::Attach {
                name: name.map(String::from),
                source: io::Error::last_os_error(),
            });
        }
        let name = ifreq_name(&ifr);
        let setup = |op, r: libc::c_int| {
            if r < 0 {
                Err(Error::Setup {
                    name: name.clone(),
                    op,
                    source: io::Error::last_os_error(),
                })
            } else {
                Ok(())
            }
        };

        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which
        // points at `hdr_len`.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETVNETHDRSZ, &hdr_len) };
        setup("cannot set the 12-byte virtio header size", r)?;
        // SAFETY: TUNSETOFFLOAD takes its flags by value, not a pointer.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETOFFLOAD, 0 as libc::c_uint) };
        setup("cannot switch offloads off", r)?;

        if let Err(e) = link_up(&name) {
            log::warn!("tap {name}: cannot bring the link up ({e}); run 'ip link set {name} up'");
        }
        log::debug!("tap {name}: attached");
        Ok(Tap { file, name })
    }

    /// The interface's name (the kernel's choice if none was given).
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data (a name array and a union of integers
    // and addresses) for which all-zero bytes are a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    // One byte stays NUL: the spec parser already limits names to 15.
    for (dst, src) in ifr
        .ifr_name
        .iter_mut()
        .take(libc::IFNAMSIZ - 1)
        .zip(name.bytes())
    {
        *dst = src as libc::c_char;
    }
    ifr
}

fn ifreq_name(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|c| **c != 0)
        // c_char is i8 on x86 and u8 on the others.
        .map(|c| u8::from_ne_bytes(c.to_ne_bytes()))
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Sets IFF_UP on interface `name` unless it is already up.
fn link_up(name: &str) -> io::Result<()> {
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut ifr = ifreq(name);
    // SAFETY: SIOCGIFFLAGS fills the flags of the `struct ifreq` we pass.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS succeeded, so the union holds the flags.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the `struct ifreq` we pass.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl NetBackend for Tap {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.file.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        loop {
            match self.file.write(frame) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
                Ok(n) if n == frame.len() => return Ok(()),
                Ok(n) => {
                    return Err(io::Error::other(format!(
                        "short write of {n} of {} bytes",
                        frame.len()
                    )))
                }
            }
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    fn ifname(&self) -> Option<&str> {
        Some(&self.name)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// Host-side helpers for tests that need a real tap: a packet socket on
/// the interface sees what the guest sends and injects what it receives.
#[cfg(test)]
pub mod testing {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::{Duration, Instant};

    /// A test that needs a real tap may give up only outside CI: with
    /// CI=true (where it runs as root) failing to get one is a failure.
    pub fn skip_unless_ci(why: &dyn std::fmt::Display) {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true and this test needs a tap: {why}");
        }
        eprintln!("skipping a real-tap test: {why}");
    }

    /// A raw `AF_PACKET` socket bound to one interface, all protocols.
    pub struct PacketSocket {
        fd: OwnedFd,
        ifindex: i32,
    }

    impl PacketSocket {
        pub fn bind(ifname: &str) -> std::io::Result<Self> {
            let cname = std::ffi::CString::new(ifname).unwrap();
            // SAFETY: `cname` is a valid NUL-terminated string.
            let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
            if ifindex == 0 {
                return Err(std::io::Error::last_os_error());
            }
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket(2); the result is checked.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                    i32::from(proto),
                )
            };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: `fd` is a fresh socket nobody else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: sockaddr_ll is plain data; zero is a valid value.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = ifindex as i32;
            // SAFETY: `sll` is a sockaddr_ll of the length we pass.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(PacketSocket {
                fd,
                ifindex: ifindex as i32,
            })
        }

        /// Sends `frame` (a whole Ethernet frame) out of the interface,
        /// which for a tap means to whoever holds its fd.
        pub fn send(&self, frame: &[u8]) -> std::io::Result<()> {
            // SAFETY: sockaddr_ll is plain data; zero is a valid value.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = self.ifindex;
            sll.sll_halen = 6;
            sll.sll_addr[..6].copy_from_slice(&frame[..6]);
            // SAFETY: `frame` is readable for its length and `sll` is a
            // sockaddr_ll of the length we pass.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        }

        /// Waits up to `timeout` for a frame `keep` accepts, skipping the
        /// host's own chatter (IPv6 router solicitations and the like).
        pub fn recv_matching(
            &self,
            timeout: Duration,
            keep: impl Fn(&[u8]) -> bool,
        ) -> Option<Vec<u8>> {
            let start = Instant::now();
            let mut buf = vec![0u8; 65536];
            while start.elapsed() < timeout {
                // SAFETY: `buf` is writable for its length.
                let n = unsafe {
                    libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                };
                if n < 0 {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let frame = &buf[..n as usize];
                if keep(frame) {
                    return Some(frame.to_vec());
                }
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::testing::{self, PacketSocket};
    use super::*;

    #[test]
    fn a_real_tap_carries_frames_both_ways() {
        let mut tap = match Tap::open(Some("lkvmtest1")) {
            Ok(t) => t,
            Err(e) => {
                testing::skip_unless_ci(&e);
                return;
            }
        };
        assert_eq!(tap.name(), "lkvmtest1");
        let chosen = Tap::open(None).unwrap();
        assert!(chosen.name().starts_with("tap"), "{}", chosen.name());
        drop(chosen);
        let sock = PacketSocket::bind("lkvmtest1").unwrap();
        // fd -> host: a vnet header then an Ethernet frame of a local
        // experimental ethertype.
        let mut out = vec![0u8; VNET_HDR_LEN];
        out.extend_from_slice(&[0xff; 6]);
        out.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        out.extend_from_slice(&[0x88, 0xb5]);
        out.extend_from_slice(b"lkvm tap test: to the host");
        tap.write_frame(&out).unwrap();
        let got = sock
            .recv_matching(Duration::from_secs(5), |f| f.ends_with(b"to the host"))
            .expect("the frame reached the host");
        assert_eq!(got, out[VNET_HDR_LEN..]);
        // host -> fd
        let mut back = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x88, 0xb5];
        back.extend_from_slice(b"lkvm tap test: to the fd");
        sock.send(&back).unwrap();
        let mut buf = vec![0u8; 65536];
        let start = std::time::Instant::now();
        loop {
            assert!(start.elapsed() < Duration::from_secs(5), "frame never came");
            match tap.read_frame(&mut buf) {
                Ok(n) if buf[..n].ends_with(b"to the fd") => {
                    assert_eq!(&buf[VNET_HDR_LEN..n], &back[..]);
                    assert_eq!(buf[1], 0, "no GSO with offloads off");
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn attach_errors_explain_themselves() {
        let e = Error::Attach {
            name: Some("tap0".into()),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        let msg = e.to_string();
        assert!(msg.contains("tap tap0"), "{msg}");
        assert!(msg.contains("CAP_NET_ADMIN"), "{msg}");
        assert!(msg.contains("ip tuntap add tap0 mode tap user"), "{msg}");
        let e = Error::Attach {
            name: None,
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        let msg = e.to_string();
        assert!(msg.starts_with("a new tap: cannot create"), "{msg}");
        assert!(msg.contains("ip tuntap add NAME mode tap"), "{msg}");
        let e = Error::Open(io::Error::from_raw_os_error(libc::ENOENT));
        assert!(e.to_string().contains("modprobe tun"));
        // An interface that is not a tap cannot be attached to (when the
        // process may open /dev/net/tun at all).
        match Tap::open(Some("lo")) {
            Ok(_) => panic!("attached to lo"),
            Err(Error::Open(e)) => testing::skip_unless_ci(&e),
            Err(e) => assert!(
                e.to_string().contains("tap lo: cannot create or attach"),
                "{e}"
            ),
        }
    }

    #[test]
    fn names_round_trip_through_ifreq() {
        let ifr = ifreq("abcdefghijklmnopq");
        assert_eq!(ifreq_name(&ifr), "abcdefghijklmno");
        assert_eq!(ifreq_name(&ifreq("tap0")), "tap0");
    }
}
