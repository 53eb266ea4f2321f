//! Test helpers: temporary shares and a small 9P client that drives the
//! server with real encoded messages.

mod device;
mod escapes;
mod garbage;
mod ops;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::errno::Errno;

use super::path::Root;
use super::server::Server;
use super::wire::{msg, Decoder, Encoder, Qid, NOFID, NONUNAME};

/// A unique directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let p =
            std::env::temp_dir().join(format!("lkvm-9p-{what}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub type R<T> = Result<T, Errno>;

const TAG: u16 = 0x42;

/// Checks a reply's framing and splits off Rlerror.
pub fn decode_reply(kind: u8, tag: u16, reply: &[u8]) -> R<Vec<u8>> {
    assert!(reply.len() >= 7, "reply too short: {reply:?}");
    assert_eq!(
        u32::from_le_bytes(reply[..4].try_into().unwrap()) as usize,
        reply.len(),
        "size field"
    );
    assert_eq!(u16::from_le_bytes([reply[5], reply[6]]), tag, "tag");
    if reply[4] == msg::RLERROR {
        assert_eq!(reply.len(), 11);
        return Err(Errno::from_raw(
            u32::from_le_bytes(reply[7..11].try_into().unwrap()) as i32,
        ));
    }
    assert_eq!(reply[4], kind + 1, "reply type");
    Ok(reply[7..].to_vec())
}

pub fn read_qid(d: &mut Decoder<'_>) -> Qid {
    Qid {
        kind: d.u8().unwrap(),
        version: d.u32().unwrap(),
        path: d.u64().unwrap(),
    }
}

#[derive(Debug)]
pub struct Dirent {
    pub qid: Qid,
    pub off: u64,
    pub dtype: u8,
    pub name: String,
}

#[derive(Debug)]
pub struct Attr {
    pub qid: Qid,
    pub mode: u32,
    pub nlink: u64,
    pub size: u64,
    pub atime: (u64, u64),
    pub mtime: (u64, u64),
}

#[derive(Default)]
pub struct SetAttr {
    pub valid: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub atime: (u64, u64),
    pub mtime: (u64, u64),
}

/// A client attached as fid 0 to the root of a share.
pub struct Client {
    pub s: Server,
    /// The room each request leaves for its reply.
    pub room: usize,
}

impl Client {
    pub fn new(dir: &Path) -> Client {
        Client::with_root(Root::open(dir).unwrap())
    }

    /// A client of a read-only share.
    pub fn read_only(dir: &Path) -> Client {
        Client::start(Server::new(Root::open(dir).unwrap(), true))
    }

    /// Resolving without openat2, as on hosts before Linux 5.6.
    pub fn fallback(dir: &Path) -> Client {
        Client::with_root(Root::open(dir).unwrap().without_openat2())
    }

    fn with_root(root: Root) -> Client {
        Client::start(Server::new(root, false))
    }

    fn start(s: Server) -> Client {
        let mut c = Client { s, room: 8192 };
        assert_eq!(c.version(8192, "9P2000.L").unwrap().0, 8192);
        c.attach(0, NONUNAME).unwrap();
        c
    }

    pub fn raw(&mut self, req: &[u8]) -> Vec<u8> {
        let r = self.s.handle(req, self.room);
        assert!(r.len() <= self.room);
        r
    }

    pub fn call(&mut self, kind: u8, f: impl FnOnce(&mut Encoder)) -> R<Vec<u8>> {
        let mut e = Encoder::new(kind, TAG);
        f(&mut e);
        let reply = self.raw(&e.finish());
        decode_reply(kind, TAG, &reply)
    }

    pub fn version(&mut self, msize: u32, v: &str) -> R<(u32, String)> {
        let b = self.call(msg::TVERSION, |e| {
            e.u32(msize).string(v.as_bytes()).unwrap();
        })?;
        let mut d = Decoder::new(&b);
        Ok((
            d.u32().unwrap(),
            String::from_utf8(d.string().unwrap().to_vec()).unwrap(),
        ))
    }

    pub fn attach(&mut self, fid: u32, uid: u32) -> R<Qid> {
        let b = self.call(msg::TATTACH, |e| {
            e.u32(fid)
                .u32(NOFID)
                .string(b"user")
                .unwrap()
                .string(b"")
                .unwrap()
                .u32(uid);
        })?;
        Ok(read_qid(&mut Decoder::new(&b)))
    }

    pub fn walk(&mut self, fid: u32, newfid: u32, names: &[&str]) -> R<Vec<Qid>> {
        let b = self.call(msg::TWALK, |e| {
            e.u32(fid).u32(newfid).u16(names.len() as u16);
            for n in names {
                e.string(n.as_bytes()).unwrap();
            }
        })?;
        let mut d = Decoder::new(&b);
        let n = d.u16().unwrap();
        Ok((0..n).map(|_| read_qid(&mut d)).collect())
    }

    fn qid_reply(&mut self, kind: u8, f: impl FnOnce(&mut Encoder)) -> R<Qid> {
        let b = self.call(kind, f)?;
        Ok(read_qid(&mut Decoder::new(&b)))
    }

    pub fn lopen(&mut self, fid: u32, flags: u32) -> R<Qid> {
        self.qid_reply(msg::TLOPEN, |e| {
            e.u32(fid).u32(flags);
        })
    }

    pub fn lcreate(&mut self, fid: u32, name: &str, flags: u32, mode: u32, gid: u32) -> R<Qid> {
        self.qid_reply(msg::TLCREATE, |e| {
            e.u32(fid)
                .string(name.as_bytes())
                .unwrap()
                .u32(flags)
                .u32(mode)
                .u32(gid);
        })
    }

    pub fn mkdir(&mut self, dfid: u32, name: &str, mode: u32, gid: u32) -> R<Qid> {
        self.qid_reply(msg::TMKDIR, |e| {
            e.u32(dfid)
                .string(name.as_bytes())
                .unwrap()
                .u32(mode)
                .u32(gid);
        })
    }

    pub fn symlink(&mut self, fid: u32, name: &str, target: &str, gid: u32) -> R<Qid> {
        self.qid_reply(msg::TSYMLINK, |e| {
            e.u32(fid).string(name.as_bytes()).unwrap();
            e.string(target.as_bytes()).unwrap().u32(gid);
        })
    }

    pub fn mknod(&mut self, dfid: u32, name: &str, mode: u32, major: u32, minor: u32) -> R<Qid> {
        self.qid_reply(msg::TMKNOD, |e| {
            e.u32(dfid).string(name.as_bytes()).unwrap();
            e.u32(mode).u32(major).u32(minor).u32(0);
        })
    }

    pub fn read(&mut self, fid: u32, off: u64, count: u32) -> R<Vec<u8>> {
        let b = self.call(msg::TREAD, |e| {
            e.u32(fid).u64(off).u32(count);
        })?;
        let mut d = Decoder::new(&b);
        let n = d.u32().unwrap() as usize;
        assert_eq!(d.remaining(), n);
        Ok(d.bytes(n).unwrap().to_vec())
    }

    pub fn write(&mut self, fid: u32, off: u64, data: &[u8]) -> R<u32> {
        let b = self.call(msg::TWRITE, |e| {
            e.u32(fid).u64(off).u32(data.len() as u32).raw(data);
        })?;
        Ok(Decoder::new(&b).u32().unwrap())
    }

    pub fn readdir(&mut self, fid: u32, off: u64, count: u32) -> R<Vec<Dirent>> {
        let b = self.call(msg::TREADDIR, |e| {
            e.u32(fid).u64(off).u32(count);
        })?;
        let mut d = Decoder::new(&b);
        let n = d.u32().unwrap() as usize;
        assert_eq!(d.remaining(), n);
        assert!(n <= count as usize);
        let mut out = Vec::new();
        while d.remaining() > 0 {
            out.push(Dirent {
                qid: read_qid(&mut d),
                off: d.u64().unwrap(),
                dtype: d.u8().unwrap(),
                name: String::from_utf8(d.string().unwrap().to_vec()).unwrap(),
            });
        }
        Ok(out)
    }

    /// Every entry of an opened directory, `count` bytes at a time.
    pub fn list(&mut self, fid: u32, count: u32) -> Vec<String> {
        let (mut off, mut names) = (0, Vec::new());
        loop {
            let batch = self.readdir(fid, off, count).unwrap();
            let Some(last) = batch.last() else {
                return names;
            };
            off = last.off;
            names.extend(batch.into_iter().map(|e| e.name));
        }
    }

    pub fn getattr(&mut self, fid: u32) -> R<Attr> {
        let b = self.call(msg::TGETATTR, |e| {
            e.u32(fid).u64(0x3fff);
        })?;
        let mut d = Decoder::new(&b);
        assert_eq!(d.u64().unwrap(), 0x7ff);
        let qid = read_qid(&mut d);
        let mode = d.u32().unwrap();
        let (_uid, _gid) = (d.u32().unwrap(), d.u32().unwrap());
        let nlink = d.u64().unwrap();
        let _rdev = d.u64().unwrap();
        let size = d.u64().unwrap();
        let _blksize = d.u64().unwrap();
        let _blocks = d.u64().unwrap();
        let atime = (d.u64().unwrap(), d.u64().unwrap());
        let mtime = (d.u64().unwrap(), d.u64().unwrap());
        for _ in 0..6 {
            d.u64().unwrap();
        }
        assert_eq!(d.remaining(), 0);
        Ok(Attr {
            qid,
            mode,
            nlink,
            size,
            atime,
            mtime,
        })
    }

    pub fn setattr(&mut self, fid: u32, a: &SetAttr) -> R<()> {
        self.call(msg::TSETATTR, |e| {
            e.u32(fid)
                .u32(a.valid)
                .u32(a.mode)
                .u32(a.uid)
                .u32(a.gid)
                .u64(a.size);
            e.u64(a.atime.0)
                .u64(a.atime.1)
                .u64(a.mtime.0)
                .u64(a.mtime.1);
        })
        .map(drop)
    }

    pub fn readlink(&mut self, fid: u32) -> R<String> {
        let b = self.call(msg::TREADLINK, |e| {
            e.u32(fid);
        })?;
        Ok(String::from_utf8(Decoder::new(&b).string().unwrap().to_vec()).unwrap())
    }

    pub fn link(&mut self, dfid: u32, fid: u32, name: &str) -> R<()> {
        self.call(msg::TLINK, |e| {
            e.u32(dfid).u32(fid).string(name.as_bytes()).unwrap();
        })
        .map(drop)
    }

    pub fn rename(&mut self, fid: u32, dfid: u32, name: &str) -> R<()> {
        self.call(msg::TRENAME, |e| {
            e.u32(fid).u32(dfid).string(name.as_bytes()).unwrap();
        })
        .map(drop)
    }

    pub fn renameat(&mut self, odfid: u32, oname: &str, ndfid: u32, nname: &str) -> R<()> {
        self.call(msg::TRENAMEAT, |e| {
            e.u32(odfid).string(oname.as_bytes()).unwrap();
            e.u32(ndfid).string(nname.as_bytes()).unwrap();
        })
        .map(drop)
    }

    pub fn unlinkat(&mut self, dfid: u32, name: &str, flags: u32) -> R<()> {
        self.call(msg::TUNLINKAT, |e| {
            e.u32(dfid).string(name.as_bytes()).unwrap().u32(flags);
        })
        .map(drop)
    }

    pub fn simple(&mut self, kind: u8, fid: u32) -> R<Vec<u8>> {
        self.call(kind, |e| {
            e.u32(fid);
        })
    }

    pub fn clunk(&mut self, fid: u32) -> R<()> {
        self.simple(msg::TCLUNK, fid).map(drop)
    }

    pub fn remove(&mut self, fid: u32) -> R<()> {
        self.simple(msg::TREMOVE, fid).map(drop)
    }
}

/// Host-side mode of `p` (lstat).
pub fn host_mode(p: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p).unwrap().mode()
}
