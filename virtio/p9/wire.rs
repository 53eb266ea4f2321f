//! 9P2000.L messages on the wire: little-endian integers, strings as a
//! 16-bit length and bytes, every message framed as
//! `size[4] type[1] tag[2] body`.
//!
//! Decoding never trusts a length: a field that runs past the message is
//! `EPROTO`, which the server answers with an Rlerror.

use nix::errno::Errno;

/// size[4] type[1] tag[2].
pub const HEADER: usize = 7;
/// The header of Rread/Rreaddir: the common header and count[4].
pub const IO_HEADER: usize = HEADER + 4;
/// The tag of a message that has none (Tversion) or of a reply to a
/// request too broken to have one.
pub const NOTAG: u16 = 0xffff;
/// "No fid": attach without authentication.
pub const NOFID: u32 = u32::MAX;
/// "No numeric user" in Tattach's n_uname.
pub const NONUNAME: u32 = u32::MAX;
/// The most names one Twalk may carry.
pub const MAXWELEM: usize = 16;

/// Message types (T = request, R = T + 1 = reply).
pub mod msg {
    pub const RLERROR: u8 = 7;
    pub const TSTATFS: u8 = 8;
    pub const TLOPEN: u8 = 12;
    pub const TLCREATE: u8 = 14;
    pub const TSYMLINK: u8 = 16;
    pub const TMKNOD: u8 = 18;
    pub const TRENAME: u8 = 20;
    pub const TREADLINK: u8 = 22;
    pub const TGETATTR: u8 = 24;
    pub const TSETATTR: u8 = 26;
    pub const TXATTRWALK: u8 = 30;
    pub const TXATTRCREATE: u8 = 32;
    pub const TREADDIR: u8 = 40;
    pub const TFSYNC: u8 = 50;
    pub const TLOCK: u8 = 52;
    pub const TGETLOCK: u8 = 54;
    pub const TLINK: u8 = 70;
    pub const TMKDIR: u8 = 72;
    pub const TRENAMEAT: u8 = 74;
    pub const TUNLINKAT: u8 = 76;
    pub const TVERSION: u8 = 100;
    pub const TAUTH: u8 = 102;
    pub const TATTACH: u8 = 104;
    pub const TFLUSH: u8 = 108;
    pub const TWALK: u8 = 110;
    pub const TREAD: u8 = 116;
    pub const TWRITE: u8 = 118;
    pub const TCLUNK: u8 = 120;
    pub const TREMOVE: u8 = 122;
}

/// Qid types.
pub mod qt {
    pub const DIR: u8 = 0x80;
    pub const SYMLINK: u8 = 0x02;
    pub const FILE: u8 = 0x00;
}

/// The server's identity for a file: type, version and a unique path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Qid {
    pub kind: u8,
    pub version: u32,
    pub path: u64,
}

/// The encoded size of a qid.
pub const QID_LEN: usize = 13;

/// Reads fields from the body of one message.
pub struct Decoder<'a> {
    buf: &'a [u8],
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Errno> {
        if n > self.buf.len() {
            return Err(Errno::EPROTO);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Errno> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, Errno> {
        Ok(u8::from_le_bytes(self.array()?))
    }

    pub fn u16(&mut self) -> Result<u16, Errno> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, Errno> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, Errno> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A string's bytes (9P strings carry no terminator; the server
    /// decides what bytes a name may hold).
    pub fn string(&mut self) -> Result<&'a [u8], Errno> {
        let n = self.u16()?;
        self.bytes(usize::from(n))
    }
}

/// Builds one reply; the size field is filled in by [`Encoder::finish`].
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    pub fn new(kind: u8, tag: u16) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&[0; 4]);
        buf.push(kind);
        buf.extend_from_slice(&tag.to_le_bytes());
        Encoder { buf }
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A string; longer than a 16-bit length allows is `ENAMETOOLONG`.
    pub fn string(&mut self, s: &[u8]) -> Result<&mut Self, Errno> {
        let n = u16::try_from(s.len()).map_err(|_| Errno::ENAMETOOLONG)?;
        self.u16(n);
        self.buf.extend_from_slice(s);
        Ok(self)
    }

    pub fn qid(&mut self, q: &Qid) -> &mut Self {
        self.u8(q.kind).u32(q.version).u64(q.path)
    }

    pub fn raw(&mut self, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(data);
        self
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// The finished message with its size field set.
    pub fn finish(mut self) -> Vec<u8> {
        // Replies are bounded by msize (a u32); saturate rather than wrap.
        let size = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        if let Some(field) = self.buf.get_mut(..4) {
            field.copy_from_slice(&size.to_le_bytes());
        }
        self.buf
    }
}

/// Rlerror carrying `e`.
pub fn lerror(tag: u16, e: Errno) -> Vec<u8> {
    let mut enc = Encoder::new(msg::RLERROR, tag);
    // Errno values are small positive numbers.
    enc.u32(u32::try_from(e as i32).unwrap_or(libc::EIO as u32));
    enc.finish()
}

/// The type, tag and body of a request, after checking its size field
/// against what arrived and against `msize`. On failure, the tag (if the
/// header was there) and the errno to answer.
pub fn split(req: &[u8], msize: u32) -> Result<(u8, u16, &[u8]), (u16, Errno)> {
    let mut d = Decoder::new(req);
    let (Ok(size), Ok(kind), Ok(tag)) = (d.u32(), d.u8(), d.u16()) else {
        return Err((NOTAG, Errno::EINVAL));
    };
    if size < HEADER as u32 || size > msize {
        return Err((tag, Errno::EINVAL));
    }
    let body_len = (size as usize).saturating_sub(HEADER);
    let body = d.bytes(body_len).map_err(|e| (tag, e))?;
    Ok((kind, tag, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_fields() {
        let mut e = Encoder::new(msg::TWALK, 0x1234);
        e.u8(1).u16(2).u32(3).u64(4);
        e.string(b"name").unwrap();
        e.qid(&Qid {
            kind: qt::DIR,
            version: 5,
            path: 6,
        });
        let m = e.finish();
        assert_eq!(&m[..4], &(m.len() as u32).to_le_bytes());
        let (kind, tag, body) = split(&m, 8192).unwrap();
        assert_eq!((kind, tag), (msg::TWALK, 0x1234));
        let mut d = Decoder::new(body);
        assert_eq!(d.u8().unwrap(), 1);
        assert_eq!(d.u16().unwrap(), 2);
        assert_eq!(d.u32().unwrap(), 3);
        assert_eq!(d.u64().unwrap(), 4);
        assert_eq!(d.string().unwrap(), b"name");
        assert_eq!(d.u8().unwrap(), qt::DIR);
        assert_eq!(d.u32().unwrap(), 5);
        assert_eq!(d.u64().unwrap(), 6);
        assert_eq!(d.remaining(), 0);
        assert_eq!(d.u8(), Err(Errno::EPROTO));
    }

    #[test]
    fn short_fields_are_eproto() {
        let mut d = Decoder::new(&[5, 0, b'a', b'b']);
        assert_eq!(d.string(), Err(Errno::EPROTO));
        let mut d = Decoder::new(&[1, 2, 3]);
        assert_eq!(d.u32(), Err(Errno::EPROTO));
        assert_eq!(d.u16().unwrap(), 0x0201);
    }

    #[test]
    fn split_checks_the_size_field() {
        // Too short for a header.
        assert_eq!(split(&[1, 2, 3], 8192), Err((NOTAG, Errno::EINVAL)));
        // A size below the header.
        assert_eq!(
            split(&[3, 0, 0, 0, 100, 7, 0], 8192),
            Err((7, Errno::EINVAL))
        );
        // A size over msize.
        let mut m = vec![0u8; 16];
        m[..4].copy_from_slice(&9000u32.to_le_bytes());
        m[5] = 9;
        assert_eq!(split(&m, 8192), Err((9, Errno::EINVAL)));
        // A size past what arrived.
        m[..4].copy_from_slice(&17u32.to_le_bytes());
        assert_eq!(split(&m, 8192), Err((9, Errno::EPROTO)));
        // Trailing bytes past the size are ignored.
        m[..4].copy_from_slice(&8u32.to_le_bytes());
        m[4] = msg::TCLUNK;
        assert_eq!(split(&m, 8192), Ok((msg::TCLUNK, 9, &m[7..8])));
    }

    #[test]
    fn long_strings_are_refused_and_lerror_is_well_formed() {
        let mut e = Encoder::new(msg::TREADLINK + 1, 1);
        assert!(e.string(&vec![b'x'; 70_000]).is_err());
        let m = lerror(3, Errno::ENOENT);
        assert_eq!(m.len(), HEADER + 4);
        assert_eq!(m, [11, 0, 0, 0, msg::RLERROR, 3, 0, 2, 0, 0, 0]);
    }
}
