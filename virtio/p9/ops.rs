//! The operations that create, change or remove entries.
//!
//! Every new entry is created with owner-only permissions and then given
//! exactly the guest's mode with fchmod/fchmodat, so lkvm's umask never
//! filters it; when lkvm runs as root it first gets the guest's owner
//! (chown before chmod: chown clears set-id bits). If a step after the
//! creation fails, the new entry is removed again.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fstat, futimens, mkdirat, mknodat, utimensat, FileStat, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{ftruncate, linkat, symlinkat, unlinkat, UnlinkatFlags};

use super::fid::Open;
use super::host::{self, dotl};
use super::path::{entry_name, RelPath};
use super::server::{io_errno, Server};
use super::wire::{Decoder, Encoder, NONUNAME};

/// Tsetattr's valid bits.
mod attr {
    pub const MODE: u32 = 1;
    pub const UID: u32 = 2;
    pub const GID: u32 = 4;
    pub const SIZE: u32 = 8;
    pub const ATIME: u32 = 16;
    pub const MTIME: u32 = 32;
    pub const ATIME_SET: u32 = 128;
    pub const MTIME_SET: u32 = 256;
}

/// Tunlinkat's flag for directories (Linux's AT_REMOVEDIR).
const AT_REMOVEDIR: u32 = 0x200;

/// What a newly created entry is born with, before the exact mode.
const PRIVATE: Mode = Mode::S_IRWXU;

/// Owner ids from the guest; its "none" (-1) leaves the id alone.
fn ids(uid: Option<u32>, gid: Option<u32>) -> (Option<u32>, Option<u32>) {
    (
        uid.filter(|u| *u != NONUNAME),
        gid.filter(|g| *g != NONUNAME),
    )
}

/// Removes a half-made entry; the original error is what the guest sees.
fn undo(dir: BorrowedFd<'_>, name: &CStr, is_dir: bool) {
    let flag = if is_dir {
        UnlinkatFlags::RemoveDir
    } else {
        UnlinkatFlags::NoRemoveDir
    };
    if let Err(e) = unlinkat(dir, name, flag) {
        log::debug!("9p: cannot remove half-created {name:?}: {e}");
    }
}

impl Server {
    /// The owner a new entry gets: the attaching user and the guest's
    /// group when lkvm is root, else lkvm's own (no chown at all).
    fn new_owner(&self, uid: u32, gid: u32) -> Option<(Option<u32>, Option<u32>)> {
        self.as_root.then(|| ids(Some(uid), Some(gid)))
    }

    /// The directory fid `fid` names (an O_PATH fd) and its attach user.
    fn dir_of(&self, fid: u32) -> Result<(OwnedFd, RelPath, u32), Errno> {
        let f = self.fids.get(fid)?;
        Ok((self.root.dir(f.path.components())?, f.path.clone(), f.uid))
    }

    /// Tlcreate fid[4] name[s] flags[4] mode[4] gid[4] -> qid[13]
    /// iounit[4]. The fid, a directory, becomes the new open file.
    pub(super) fn lcreate(&mut self, d: &mut Decoder<'_>, o: &mut Encoder) -> Result<(), Errno> {
        let fid = d.u32()?;
        let name = entry_name(d.string()?)?;
        let flags = d.u32()?;
        let mode = d.u32()?;
        let gid = d.u32()?;
        self.fids.get(fid)?.unopened()?;
        self.fids.check_open_room()?;
        let (dir, path, uid) = self.dir_of(fid)?;
        let (open, st) = match host::lstat_at(&dir, &name) {
            Ok(_) if flags & dotl::EXCL != 0 => return Err(Errno::EEXIST),
            // An existing entry: the same checks as any open.
            Ok(_) => host::open_entry(dir.as_fd(), &name, flags)?,
            Err(Errno::ENOENT) => self.create_file(dir.as_fd(), &name, flags, mode, uid, gid)?,
            Err(e) => return Err(e),
        };
        let f = self.fids.get_mut(fid)?;
        f.path = path.join(&name);
        f.open = Some(open);
        o.qid(&host::qid(&st)).u32(0);
        Ok(())
    }

    fn create_file(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        flags: u32,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(Open, FileStat), Errno> {
        let oflags = host::open_flags(flags)? | OFlag::O_CREAT | OFlag::O_EXCL;
        let fd = openat(dir, name, oflags, PRIVATE)?;
        let finish = || -> Result<FileStat, Errno> {
            if let Some((u, g)) = self.new_owner(uid, gid) {
                host::chown_fd(fd.as_fd(), u, g)?;
            }
            fchmod(&fd, Mode::from_bits_truncate(mode & 0o7777))?;
            fstat(&fd)
        };
        match finish() {
            Ok(st) => Ok((
                Open::File {
                    file: File::from(fd),
                    writable: host::writes(flags),
                },
                st,
            )),
            Err(e) => {
                undo(dir, name, false);
                Err(e)
            }
        }
    }

    /// Tmkdir dfid[4] name[s] mode[4] gid[4] -> qid[13].
    pub(super) fn mkdir(&mut self, d: &mut Decoder<'_>, o: &mut Encoder) -> Result<(), Errno> {
        let dfid = d.u32()?;
        let name = entry_name(d.string()?)?;
        let mode = d.u32()?;
        let gid = d.u32()?;
        let (dir, _, uid) = self.dir_of(dfid)?;
        mkdirat(&dir, name.as_c_str(), PRIVATE)?;
        let finish = || -> Result<FileStat, Errno> {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let fd = openat(&dir, name.as_c_str(), flags, Mode::empty())?;
            if let Some((u, g)) = self.new_owner(uid, gid) {
                host::chown_fd(fd.as_fd(), u, g)?;
            }
            fchmod(&fd, Mode::from_bits_truncate(mode & 0o7777))?;
            fstat(&fd)
        };
        let st = finish().inspect_err(|_| undo(dir.as_fd(), &name, true))?;
        o.qid(&host::qid(&st));
        Ok(())
    }

    /// Tsymlink fid[4] name[s] symtgt[s] gid[4] -> qid[13]. The target
    /// is stored as the guest wrote it; the server never follows it.
    pub(super) fn symlink(&mut self, d: &mut Decoder<'_>, o: &mut Encoder) -> Result<(), Errno> {
        let fid = d.u32()?;
        let name = entry_name(d.string()?)?;
        let target = CString::new(d.string()?).map_err(|_| Errno::EINVAL)?;
        let gid = d.u32()?;
        let (dir, _, uid) = self.dir_of(fid)?;
        symlinkat(target.as_c_str(), &dir, name.as_c_str())?;
        let finish = || -> Result<FileStat, Errno> {
            if let Some((u, g)) = self.new_owner(uid, gid) {
                host::chown_at(dir.as_fd(), &name, u, g)?;
            }
            host::lstat_at(&dir, &name)
        };
        let st = finish().inspect_err(|_| undo(dir.as_fd(), &name, false))?;
        o.qid(&host::qid(&st));
        Ok(())
    }

    /// Tmknod dfid[4] name[s] mode[4] major[4] minor[4] gid[4] ->
    /// qid[13]. FIFOs, sockets and regular files only: a device node in
    /// the share would hand the guest the host's hardware.
    pub(super) fn mknod(&mut self, d: &mut Decoder<'_>, o: &mut Encoder) -> Result<(), Errno> {
        let dfid = d.u32()?;
        let name = entry_name(d.string()?)?;
        let mode = d.u32()?;
        let _major = d.u32()?;
        let _minor = d.u32()?;
        let gid = d.u32()?;
        let (dir, _, uid) = self.dir_of(dfid)?;
        match host::kind(mode) {
            libc::S_IFCHR | libc::S_IFBLK => return Err(Errno::EPERM),
            k @ (libc::S_IFIFO | libc::S_IFSOCK) => {
                mknodat(
                    &dir,
                    name.as_c_str(),
                    SFlag::from_bits_truncate(k),
                    PRIVATE,
                    0,
                )?;
            }
            0 | libc::S_IFREG => {
                let flags = OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_WRONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC;
                drop(openat(&dir, name.as_c_str(), flags, PRIVATE)?);
            }
            _ => return Err(Errno::EINVAL),
        }
        let finish = || -> Result<FileStat, Errno> {
            if let Some((u, g)) = self.new_owner(uid, gid) {
                host::chown_at(dir.as_fd(), &name, u, g)?;
            }
            host::chmod_at(dir.as_fd(), &name, mode)?;
            host::lstat_at(&dir, &name)
        };
        let st = finish().inspect_err(|_| undo(dir.as_fd(), &name, false))?;
        o.qid(&host::qid(&st));
        Ok(())
    }

    /// Treadlink fid[4] -> target[s].
    pub(super) fn readlink(&mut self, d: &mut Decoder<'_>, o: &mut Encoder) -> Result<(), Errno> {
        let fid = d.u32()?;
        let f = self.fids.get(fid)?;
        if f.path.is_root() {
            return Err(Errno::EINVAL);
        }
        let (dir, name) = self.root.locate(&f.path)?;
        let target = nix::fcntl::readlinkat(&dir, name.as_c_str())?;
        o.string(std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()))?;
        Ok(())
    }

    /// Tlink dfid[4] fid[4] name[s]: a hard link, never through a symlink.
    pub(super) fn link(&mut self, d: &mut Decoder<'_>) -> Result<(), Errno> {
        let dfid = d.u32()?;
        let fid = d.u32()?;
        let name = entry_name(d.string()?)?;
        let (ddir, _, _) = self.dir_of(dfid)?;
        let src = &self.fids.get(fid)?.path;
        if src.is_root() {
            return Err(Errno::EPERM);
        }
        let (sdir, sname) = self.root.locate(src)?;
        linkat(
            &sdir,
            sname.as_c_str(),
            &ddir,
            name.as_c_str(),
            AtFlags::empty(),
        )
    }

    /// Trename fid[4] dfid[4] name[s].
    pub(super) fn rename(&mut self, d: &mut Decoder<'_>) -> Result<(), Errno> {
        let fid = d.u32()?;
        let dfid = d.u32()?;
        let name = entry_name(d.string()?)?;
        let from = self.fids.get(fid)?.path.clone();
        let to = self.fids.get(dfid)?.path.join(&name);
        self.move_entry(&from, &to)
    }

    /// Trenameat olddirfid[4] oldname[s] newdirfid[4] newname[s].
    pub(super) fn renameat(&mut self, d: &mut Decoder<'_>) -> Result<(), Errno> {
        let odfid = d.u32()?;
        let oname = entry_name(d.string()?)?;
        let ndfid = d.u32()?;
        let nname = entry_name(d.string()?)?;
        let from = self.fids.get(odfid)?.path.join(&oname);
        let to = self.fids.get(ndfid)?.path.join(&nname);
        self.move_entry(&from, &to)
    }

    fn move_entry(&mut self, from: &RelPath, to: &RelPath) -> Result<(), Errno> {
        if from.is_root() || to.is_root() {
            return Err(Errno::EBUSY);
        }
        let (fdir, fname) = self.root.locate(from)?;
        let (tdir, tname) = self.root.locate(to)?;
        renameat(&fdir, fname.as_c_str(), &tdir, tname.as_c_str())?;
        self.fids.renamed(from, to);
        Ok(())
    }

    /// Tunlinkat dirfd[4] name[s] flags[4].
    pub(super) fn unlinkat(&mut self, d: &mut Decoder<'_>) -> Result<(), Errno> {
        let dfid = d.u32()?;
        let name = entry_name(d.string()?)?;
        let flags = d.u32()?;
        let (dir, _, _) = self.dir_of(dfid)?;
        let flag = if flags & AT_REMOVEDIR != 0 {
            UnlinkatFlags::RemoveDir
        } else {
            UnlinkatFlags::NoRemoveDir
        };
        unlinkat(&dir, name.as_c_str(), flag)
    }

    /// Tremove fid[4]: removes the entry; the fid is gone either way.
    pub(super) fn remove(&mut self, d: &mut Decoder<'_>) -> Result<(), Errno> {
        let f = self.fids.remove(d.u32()?)?;
        if f.path.is_root() {
            return Err(Errno::EBUSY);
        }
        let (dir, name) = self.root.locate(&f.path)?;
        let st = host::lstat_at(&dir, &name)?;
        let flag = if host::kind(st.st_mode) == libc::S_IFDIR {
            UnlinkatFlags::RemoveDir
        } else {
            UnlinkatFlags::NoRemoveDir
        };
        unlinkat(&dir, name.as_c_str(), flag)
    }

    /// Tsetattr fid[4] valid[4] mode[4] uid[4] gid[4] size[8]
    /// atime_sec[8] atime_nsec[8] mtime_sec[8] mtime_nsec[8]. An open fid
    /// is changed through its fd (it may be unlinked); otherwise the
    /// entry by name, never through a symlink.
    pub(super) fn setattr(&mut self, d: &mut Decoder<'_>) -> Result<(), Errno> {
        let fid = d.u32()?;
        let valid = d.u32()?;
        let mode = d.u32()?;
        let uid = d.u32()?;
        let gid = d.u32()?;
        let size = d.u64()?;
        let atime = (d.u64()?, d.u64()?);
        let mtime = (d.u64()?, d.u64()?);
        let f = self.fids.get(fid)?;
        let fd = f.open.as_ref().map(Open::fd);
        let at = match fd {
            Some(_) => None,
            None => Some(self.root.locate(&f.path)?),
        };
        let target = match (&fd, &at) {
            (Some(fd), _) => Target::Fd(fd.as_fd()),
            (None, Some((dir, name))) => Target::At(dir.as_fd(), name),
            (None, None) => return Err(Errno::EBADF),
        };
        if valid & (attr::UID | attr::GID) != 0 {
            let (u, g) = ids(
                (valid & attr::UID != 0).then_some(uid),
                (valid & attr::GID != 0).then_some(gid),
            );
            match target {
                Target::Fd(fd) => host::chown_fd(fd, u, g)?,
                Target::At(dir, name) => host::chown_at(dir, name, u, g)?,
            }
        }
        if valid & attr::MODE != 0 {
            match target {
                Target::Fd(fd) => fchmod(fd, Mode::from_bits_truncate(mode & 0o7777))?,
                Target::At(dir, name) => host::chmod_at(dir, name, mode)?,
            }
        }
        if valid & attr::SIZE != 0 {
            let len = i64::try_from(size).map_err(|_| Errno::EFBIG)?;
            match &f.open {
                Some(Open::File {
                    file,
                    writable: true,
                }) => file.set_len(size).map_err(|e| io_errno(&e))?,
                _ => {
                    let (dir, name) = self.root.locate(&f.path)?;
                    truncate_at(dir.as_fd(), &name, len)?;
                }
            }
        }
        if valid & (attr::ATIME | attr::MTIME) != 0 {
            let a = time(valid, attr::ATIME, attr::ATIME_SET, atime);
            let m = time(valid, attr::MTIME, attr::MTIME_SET, mtime);
            match target {
                Target::Fd(fd) => futimens(fd, &a, &m)?,
                Target::At(dir, name) => {
                    utimensat(dir, name, &a, &m, UtimensatFlags::NoFollowSymlink)?
                }
            }
        }
        Ok(())
    }
}

/// What setattr changes: an open file, or an entry by name.
#[derive(Clone, Copy)]
enum Target<'a> {
    Fd(BorrowedFd<'a>),
    At(BorrowedFd<'a>, &'a CStr),
}

/// A timestamp from setattr: left alone, the guest's, or now.
fn time(valid: u32, change: u32, given: u32, (sec, nsec): (u64, u64)) -> TimeSpec {
    if valid & change == 0 {
        TimeSpec::UTIME_OMIT
    } else if valid & given != 0 {
        TimeSpec::new(sec as libc::time_t, nsec as libc::c_long)
    } else {
        TimeSpec::UTIME_NOW
    }
}

/// Truncates a regular file by name (opening it for writing: the same
/// permission truncate(2) needs). Anything else is refused unopened.
fn truncate_at(dir: BorrowedFd<'_>, name: &CStr, len: i64) -> Result<(), Errno> {
    let st = host::lstat_at(dir, name)?;
    match host::kind(st.st_mode) {
        libc::S_IFREG => {}
        libc::S_IFDIR => return Err(Errno::EISDIR),
        _ => return Err(Errno::EINVAL),
    }
    let flags = OFlag::O_WRONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let fd = openat(dir, name, flags, Mode::empty())?;
    if host::kind(fstat(&fd)?.st_mode) != libc::S_IFREG {
        return Err(Errno::EINVAL);
    }
    ftruncate(&fd, len)
}
