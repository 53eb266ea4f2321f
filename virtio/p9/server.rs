//! The 9P2000.L server: one T-message in, one R-message out.
//!
//! [`Server::handle`] never fails: whatever the guest sent, the answer is
//! a well-formed reply that fits the room the guest left for it, an
//! Rlerror with a Linux errno when the request cannot be served. Session
//! messages, I/O and listing live here; operations that create, change
//! or remove entries are in `ops.rs`.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use nix::errno::Errno;
use nix::sys::stat::{fstat, FileStat};
use nix::unistd::{fdatasync, fsync, lseek, Whence};

use super::fid::{Fid, Fids, Open};
use super::host::{self, signed, widen};
use super::path::{component, RelPath, Root};
use super::wire::{self, msg, Decoder, Encoder, Qid, IO_HEADER, MAXWELEM, NONUNAME};

/// The largest msize lkvm agrees to: Linux asks for 512000 bytes by
/// default over virtio, and every request is buffered whole.
pub const MAX_MSIZE: u32 = 1 << 20;
/// The smallest: room for every fixed-size reply and a useful read.
pub const MIN_MSIZE: u32 = 512;
/// The protocol this server speaks.
pub const VERSION: &[u8] = b"9P2000.L";

/// Rgetattr's "valid" mask: every basic field (mode through blocks).
const GETATTR_BASIC: u64 = 0x7ff;
/// Statfs's type: what the guest mounted, not the host's filesystem
/// (guest tools must not take the share for ext4 and try its ioctls).
const V9FS_MAGIC: u32 = 0x0102_1997;
/// Rgetlock's "no conflicting lock".
const F_UNLCK: u8 = 2;
/// The fixed part of one Rreaddir entry: qid, offset, type, name length.
const DIRENT_FIXED: usize = wire::QID_LEN + 8 + 1 + 2;

pub struct Server {
    pub(super) root: Root,
    pub(super) fids: Fids,
    msize: u32,
    /// lkvm runs as root: files get the guest's owners.
    pub(super) as_root: bool,
    /// The share is read-only: whatever would change it gets EROFS.
    read_only: bool,
}

/// An I/O error from std as an errno for Rlerror.
pub(super) fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

impl Server {
    pub fn new(root: Root, read_only: bool) -> Self {
        Server {
            root,
            fids: Fids::default(),
            msize: MAX_MSIZE,
            as_root: host::is_root(),
            read_only,
        }
    }

    /// Requests that change the share, refused on a read-only one (an
    /// open for writing is judged by its flags in `lopen`).
    fn changes_share(kind: u8) -> bool {
        matches!(
            kind,
            msg::TWRITE
                | msg::TLCREATE
                | msg::TMKDIR
                | msg::TSYMLINK
                | msg::TMKNOD
                | msg::TLINK
                | msg::TRENAME
                | msg::TRENAMEAT
                | msg::TUNLINKAT
                | msg::TREMOVE
                | msg::TSETATTR
        )
    }

    /// The negotiated message size (the largest request worth reading).
    pub fn msize(&self) -> u32 {
        self.msize
    }

    /// How many fids the guest holds.
    #[cfg(test)]
    pub fn fid_count(&self) -> usize {
        self.fids.len()
    }

    /// Answers one request. `room` is the size of the buffers the guest
    /// left for the reply; the reply never exceeds it or msize, and is
    /// empty only when not even an Rlerror fits.
    pub fn handle(&mut self, req: &[u8], room: usize) -> Vec<u8> {
        let limit = room.min(self.msize as usize);
        let reply = match wire::split(req, self.msize) {
            Err((tag, e)) => {
                log::debug!("9p: malformed request of {} bytes: {e}", req.len());
                wire::lerror(tag, e)
            }
            Ok((kind, tag, body)) => match self.dispatch(kind, tag, body, limit) {
                Ok(r) if r.len() <= limit => r,
                Ok(r) => {
                    log::debug!(
                        "9p: reply to type {kind} is {} bytes, room {limit}",
                        r.len()
                    );
                    wire::lerror(tag, Errno::EMSGSIZE)
                }
                Err(e) => {
                    if matches!(e, Errno::EPROTO | Errno::EOPNOTSUPP | Errno::EINVAL) {
                        log::debug!("9p: request type {kind}: {e}");
                    }
                    wire::lerror(tag, e)
                }
            },
        };
        if reply.len() > limit {
            log::debug!("9p: no room ({limit} bytes) even for an error reply");
            return Vec::new();
        }
        reply
    }

    fn dispatch(
        &mut self,
        kind: u8,
        tag: u16,
        body: &[u8],
        limit: usize,
    ) -> Result<Vec<u8>, Errno> {
        if self.read_only && Self::changes_share(kind) {
            return Err(Errno::EROFS);
        }
        let mut d = Decoder::new(body);
        let mut out = Encoder::new(kind.wrapping_add(1), tag);
        let d = &mut d;
        let o = &mut out;
        match kind {
            msg::TVERSION => self.version(d, o)?,
            msg::TATTACH => self.attach(d, o)?,
            msg::TWALK => self.walk(d, o)?,
            msg::TCLUNK => {
                self.fids.remove(d.u32()?)?;
            }
            msg::TFLUSH => {
                // Requests are answered in order, so the one to flush is
                // already done.
                d.u16()?;
            }
            msg::TLOPEN => self.lopen(d, o)?,
            msg::TREAD => self.read(d, o, limit)?,
            msg::TWRITE => self.write(d, o)?,
            msg::TREADDIR => self.readdir(d, o, limit)?,
            msg::TGETATTR => self.getattr(d, o)?,
            msg::TSTATFS => self.statfs(d, o)?,
            msg::TFSYNC => self.fsync(d)?,
            msg::TLOCK => self.lock(d, o)?,
            msg::TGETLOCK => self.getlock(d, o)?,
            msg::TLCREATE => self.lcreate(d, o)?,
            msg::TMKDIR => self.mkdir(d, o)?,
            msg::TSYMLINK => self.symlink(d, o)?,
            msg::TMKNOD => self.mknod(d, o)?,
            msg::TREADLINK => self.readlink(d, o)?,
            msg::TLINK => self.link(d)?,
            msg::TRENAME => self.rename(d)?,
            msg::TRENAMEAT => self.renameat(d)?,
            msg::TUNLINKAT => self.unlinkat(d)?,
            msg::TREMOVE => self.remove(d)?,
            msg::TSETATTR => self.setattr(d)?,
            // No extended attributes: the guest treats this as "none".
            msg::TXATTRWALK | msg::TXATTRCREATE => return Err(Errno::EOPNOTSUPP),
            // No authentication is needed (or possible).
            msg::TAUTH => return Err(Errno::EOPNOTSUPP),
            _ => return Err(Errno::EOPNOTSUPP),
        }
        Ok(out.finish())
    }

    /// Tversion msize[4] version[s]: starts a new session.
    fn version(&mut self, d: &mut Decoder<'_>, o: &mut Encoder) -> Result<(), Errno> {
        let msize = d.u32()?;
        let version = d.string()?;
        if msize < MIN_MSIZE {
            return Err(Errno::EINVAL);
        }
        self.fids.clear();
        self.msize = msize.min(MAX_MSIZE);
        o.u32(self.msize);
        o.string(if version == VERSION {
            VERSION
        } else {
            b"unknown"
        })?;
        Ok(())
    }

    /// Tattach fid[4] afid[4] uname[s] aname[s] n_uname[4].
    fn attach(&mut self, d: &mut Decoder<'_>, o: &mut Encoder) -> Result<(), Errno> {
        let fid = d.u32()?;
        let _afid = d.u32()?;
        let _uname = d.string()?;
        // One share per device: the attach name selects nothing.
        let _aname = d.string()?;
        let uid = if d.remaining() >= 4 {
            d.u32()?
        } else {
            NONUNAME
        };
        self.fids.check_free(fid)?;
        let st = host::lstat_at(self.root.fd(), c".")?;
        self.fids.add(fid, Fid::new(RelPath::root(), uid))?;
        o.qid(&host::qid(&st));
        Ok(())
    }

    /// Twalk fid[4] newfid[4] nwname[2] nwname*(wname[s]).
    fn walk(&mut self, d: &mut Decoder<'_>, o: &mut Encoder) -> Result<(), Errno> {
        let fid = d.u32()?;
        let newfid = d.u32()?;
        let n = usize::from(d.u16()?);
        if n > MAXWELEM {
            return Err(Errno::EINVAL);
        }
        let mut names = Vec::with_capacity(n);
        for _ in 0..n {
            names.push(d.string()?);
        }
        let src = self.fids.get(fid)?;
        let uid = src.uid;
        let mut path = src.path.clone();
        if newfid != fid {
            self.fids.check_free(newfid)?;
        } else if n == 0 {
            o.u16(0);
            return Ok(());
        }
        let mut qids: Vec<Qid> = Vec::with_capacity(n);
        let mut dir = None;
        for (i, raw) in names.iter().enumerate() {
            match self.walk_one(&mut path, &mut dir, raw) {
                Ok(q) => qids.push(q),
                // The first name failing fails the walk; a later one ends
                // it with the qids so far and no new fid.
                Err(e) if i == 0 => return Err(e),
                Err(_) => break,
            }
        }
        if qids.len() == n {
            let new = Fid::new(path, uid);
            if newfid == fid {
                self.fids.replace(fid, new)?;
            } else {
                self.fids.add(newfid, new)?;
            }
        }
        o.u16(qids.len() as u16);
        for q in &qids {
            o.qid(q);
        }
        Ok(())
    }

    /// Moves `path` by one walk element. `dir` caches an O_PATH fd of the
    /// directory `path` names, when known.
    fn walk_one(
        &self,
        path: &mut RelPath,
        dir: &mut Option<std::os::fd::OwnedFd>,
        raw: &[u8],
    ) -> Result<Qid, Errno> {
        let name = component(raw)?;
        let cur = match dir.take() {
            Some(fd) => fd,
            None => self.root.dir(path.components())?,
        };
        match name.as_bytes() {
            b"." => {
                let st = host::lstat_at(&cur, c".")?;
                *dir = Some(cur);
                Ok(host::qid(&st))
            }
            b".." => {
                // Lexical: the root is its own parent, and symlinks were
                // never followed on the way down.
                path.pop();
                let up = self.root.dir(path.components())?;
                let st = host::lstat_at(&up, c".")?;
                *dir = Some(up);
                Ok(host::qid(&st))
            }
            _ => {
                let st = host::lstat_at(&cur, &name)?;
                *path = path.join(&name);
                if host::kind(st.st_mode) == libc::S_IFDIR {
                    // The next step's directory; if it changed meanwhile,
                    // the next step resolves the path again (and fails).
                    *dir = nix::fcntl::openat(
                        &cur,
                        name.as_c_str(),
                        nix::fcntl::OFlag::O_PATH
                            | nix::fcntl::OFlag::O_DIRECTORY
                            | nix::fcntl::OFlag::O_NOFOLLOW
                            | nix::fcntl::OFlag::O_CLOEXEC,
                        nix::sys::stat::Mode::empty(),
                    )
                    .ok();
                }
                Ok(host::qid(&st))
            }
        }
    }

    /// Tlopen fid[4] flags[4] -> qid[13] iounit[4].
    fn lopen(&mut self, d: &mut Decoder<'_>, o: &mut Encoder) -> Result<(), Errno> {
        let fid = d.u32()?;
        let flags = d.u32()?;
        let writes = flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32
            || flags & (libc::O_TRUNC | libc::O_CREAT) as u32 != 0;
        if self.read_only && writes {
            return Err(Errno::EROFS);
        }
        let f = self.fids.get(fid)?.unopened()?;
        self.fids.check_open_room()?;
        let (dir, name) = self.root.locate(&f.path)?;
        let (open, st) = host::open_entry(dir.as_fd(), &name, flags)?;
        self.fids.get_mut(fid)?.open = Some(open);
        // iounit 0: the guest sizes its I/O by msize.
        o.qid(&host::qid(&st)).u32(0);
        Ok(())
    }

    /// Tread fid[4] offset[8] count[4] -> count[4] data.
    fn read(&mut self, d: &mut Decoder<'_>, o: &mut Encoder, limit: usize) -> Result<(), Errno> {
        let fid = d.u32()?;
        let offset = d.u64()?;
        let count = d.u32()? as usize;
        let file = match &self.fids.get(fid)?.open {
            Some(Open::File { file, .. }) => file,
            Some(Open::Dir(_)) => return Err(Errno::EISDIR),
            None => return Err(Errno::EBADF),
        };
        let n = count.min(limit.saturating_sub(IO_HEADER));
        let mut buf = vec![0u8; n];
        let got = match file.read_at(&mut buf, offset) {
            // A FIFO or socket has no offsets: read it as a stream.
            Err(e) if e.raw_os_error() == Some(libc::ESPIPE) => (&*file).read(&mut buf),
            r => r,
        }
        .map_err(|e| io_errno(&e))?;
        let data = buf.get(..got).ok_or(Errno::EIO)?;
        o.u32(got as u32).raw(data);
        Ok(())
    }

    /// Twrite fid[4] offset[8] count[4] data[count] -> count[4].
    fn write(&mut self, d: &mut Decoder<'_>, o: &mut Encoder) -> Result<(), Errno> {
        let fid = d.u32()?;
        let offset = d.u64()?;
        let count = d.u32()? as usize;
        let data = d.bytes(count)?;
        let file = match &self.fids.get(fid)?.open {
            Some(Open::File {
                file,
                writable: true,
            }) => file,
            Some(Open::Dir(_)) => return Err(Errno::EISDIR),
            _ => return Err(Errno::EBADF),
        };
        let n = match file.write_at(data, offset) {
            Err(e) if e.raw_os_error() == Some(libc::ESPIPE) => (&*file).write(data),
            r => r,
        }
        .map_err(|e| io_errno(&e))?;
        o.u32(n as u32);
        Ok(())
    }

    /// Treaddir fid[4] offset[8] count[4] -> count[4] entries. Offsets
    /// are the host's directory cookies (d_off), which stay valid across
    /// calls and are where the next listing seeks to.
    fn readdir(&mut self, d: &mut Decoder<'_>, o: &mut Encoder, limit: usize) -> Result<(), Errno> {
        let fid = d.u32()?;
        let offset = d.u64()?;
        let count = d.u32()? as usize;
        let f = self.fids.get(fid)?;
        let Some(Open::Dir(fd)) = &f.open else {
            return Err(Errno::ENOTDIR);
        };
        let at_root = f.path.is_root();
        let room = count.min(limit.saturating_sub(IO_HEADER));
        let start = i64::try_from(offset).map_err(|_| Errno::EINVAL)?;
        lseek(fd, start, Whence::SeekSet)?;
        let mut data = Encoder::new(0, 0);
        let header = data.len();
        let mut buf = vec![0u8; room.clamp(1024, 64 << 10)];
        'fill: loop {
            let entries = host::getdents(fd.as_fd(), &mut buf)?;
            if entries.is_empty() {
                break;
            }
            for e in entries {
                if data.len() - header + DIRENT_FIXED + e.name.len() > room {
                    break 'fill;
                }
                let mut q = Qid {
                    kind: host::dtype_qid(e.dtype),
                    version: 0,
                    path: e.ino,
                };
                if at_root && e.name == b".." {
                    // The parent of the share is not the guest's business.
                    q = host::qid(&host::lstat_at(self.root.fd(), c".")?);
                }
                data.qid(&q).u64(e.off).u8(e.dtype);
                data.string(&e.name)?;
            }
        }
        let body = data.finish();
        let entries = body.get(header..).unwrap_or_default();
        o.u32(entries.len() as u32).raw(entries);
        Ok(())
    }

    /// The stat of what `fid` names: its open file if it has one (which
    /// may have been unlinked), else the entry itself.
    pub(super) fn stat_fid(&self, fid: u32) -> Result<FileStat, Errno> {
        let f = self.fids.get(fid)?;
        if let Some(open) = &f.open {
            return fstat(open.fd());
        }
        let (dir, name) = self.root.locate(&f.path)?;
        host::lstat_at(&dir, &name)
    }

    /// Tgetattr fid[4] request_mask[8] -> the basic stat fields.
    fn getattr(&mut self, d: &mut Decoder<'_>, o: &mut Encoder) -> Result<(), Errno> {
        let fid = d.u32()?;
        let _mask = d.u64()?;
        let st = self.stat_fid(fid)?;
        o.u64(GETATTR_BASIC)
            .qid(&host::qid(&st))
            .u32(st.st_mode)
            .u32(st.st_uid)
            .u32(st.st_gid)
            .u64(widen(st.st_nlink))
            .u64(widen(st.st_rdev))
            .u64(signed(st.st_size))
            .u64(signed(st.st_blksize))
            .u64(signed(st.st_blocks))
            .u64(signed(st.st_atime))
            .u64(signed(st.st_atime_nsec))
            .u64(signed(st.st_mtime))
            .u64(signed(st.st_mtime_nsec))
            .u64(signed(st.st_ctime))
            .u64(signed(st.st_ctime_nsec));
        // btime, gen and data_version are not in the basic set.
        o.u64(0).u64(0).u64(0).u64(0);
        Ok(())
    }

    /// Tstatfs fid[4].
    fn statfs(&mut self, d: &mut Decoder<'_>, o: &mut Encoder) -> Result<(), Errno> {
        let fid = d.u32()?;
        let f = self.fids.get(fid)?;
        let s = match &f.open {
            Some(open) => nix::sys::statvfs::fstatvfs(open.fd())?,
            None => {
                let (dir, name) = self.root.locate(&f.path)?;
                let flags = nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_NOFOLLOW
                    | nix::fcntl::OFlag::O_CLOEXEC;
                let fd = nix::fcntl::openat(
                    &dir,
                    name.as_c_str(),
                    flags,
                    nix::sys::stat::Mode::empty(),
                )?;
                nix::sys::statvfs::fstatvfs(&fd)?
            }
        };
        let to32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        // The guest multiplies the block counts by bsize, and they count
        // fragments.
        let bsize = match widen(s.fragment_size()) {
            0 => widen(s.block_size()),
            f => f,
        };
        o.u32(V9FS_MAGIC)
            .u32(to32(bsize))
            .u64(widen(s.blocks()))
            .u64(widen(s.blocks_free()))
            .u64(widen(s.blocks_available()))
            .u64(widen(s.files()))
            .u64(widen(s.files_free()))
            .u64(widen(s.filesystem_id()))
            .u32(to32(widen(s.name_max())));
        Ok(())
    }

    /// Tfsync fid[4] datasync[4].
    fn fsync(&mut self, d: &mut Decoder<'_>) -> Result<(), Errno> {
        let fid = d.u32()?;
        // Older clients send no datasync field: a full sync then.
        let datasync = d.remaining() >= 4 && d.u32()? != 0;
        let f = self.fids.get(fid)?;
        let Some(open) = &f.open else {
            return Err(Errno::EBADF);
        };
        if datasync {
            fdatasync(open.fd())
        } else {
            fsync(open.fd())
        }
    }

    /// Tlock fid[4] type[1] flags[4] start[8] length[8] proc_id[4]
    /// client_id[s]. Locks are the guest's own business (its kernel
    /// arbitrates between its processes): always granted.
    fn lock(&mut self, d: &mut Decoder<'_>, o: &mut Encoder) -> Result<(), Errno> {
        let fid = d.u32()?;
        let _ = (d.u8()?, d.u32()?, d.u64()?, d.u64()?, d.u32()?, d.string()?);
        self.fids.get(fid)?;
        o.u8(0);
        Ok(())
    }

    /// Tgetlock fid[4] type[1] start[8] length[8] proc_id[4] client_id[s]:
    /// nothing else ever holds a lock here.
    fn getlock(&mut self, d: &mut Decoder<'_>, o: &mut Encoder) -> Result<(), Errno> {
        let fid = d.u32()?;
        let _kind = d.u8()?;
        let start = d.u64()?;
        let length = d.u64()?;
        let proc_id = d.u32()?;
        let client = d.string()?;
        self.fids.get(fid)?;
        o.u8(F_UNLCK).u64(start).u64(length).u32(proc_id);
        o.string(client)?;
        Ok(())
    }
}
