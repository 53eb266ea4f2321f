//! Host file operations as the 9P server needs them: stat to qid,
//! opening an entry without ever touching a device node or following a
//! symlink, the guest's open flags in host terms, exact modes, and raw
//! directory listing.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmodat, fstat, fstatat, FchmodatFlags, FileStat, Mode};

use super::fid::Open;
use super::wire::{qt, Qid};

/// Linux's open flags as 9P2000.L carries them (the generic/x86 values;
/// other hosts number some of them differently, hence the translation).
pub mod dotl {
    pub const ACCMODE: u32 = 3;
    pub const WRONLY: u32 = 1;
    pub const RDWR: u32 = 2;
    pub const EXCL: u32 = 0o200;
    pub const TRUNC: u32 = 0o1000;
    pub const APPEND: u32 = 0o2000;
    pub const NONBLOCK: u32 = 0o4000;
    pub const DSYNC: u32 = 0o10000;
    pub const DIRECTORY: u32 = 0o200000;
    pub const SYNC: u32 = 0o4000000;
}

/// Widens an unsigned stat field whose width differs between
/// architectures (st_nlink is 32-bit on arm64 and RISC-V, 64 on x86).
pub fn widen<T: Into<u64>>(v: T) -> u64 {
    v.into()
}

/// Reinterprets a signed stat field (sizes, times, st_blksize whose width
/// also varies) as 9P's unsigned 64-bit, two's complement.
pub fn signed<T: Into<i64>>(v: T) -> u64 {
    v.into() as u64
}

/// The file-type bits of a mode.
pub fn kind(mode: u32) -> u32 {
    mode & libc::S_IFMT
}

/// Character and block devices: never opened, never created.
pub fn is_device(mode: u32) -> bool {
    matches!(kind(mode), libc::S_IFCHR | libc::S_IFBLK)
}

pub fn qid(st: &FileStat) -> Qid {
    let kind = match kind(st.st_mode) {
        libc::S_IFDIR => qt::DIR,
        libc::S_IFLNK => qt::SYMLINK,
        _ => qt::FILE,
    };
    Qid {
        kind,
        version: 0,
        path: widen(st.st_ino),
    }
}

/// The qid type of a directory entry's d_type.
pub fn dtype_qid(dtype: u8) -> u8 {
    match dtype {
        libc::DT_DIR => qt::DIR,
        libc::DT_LNK => qt::SYMLINK,
        _ => qt::FILE,
    }
}

/// lstat of `name` in `dir`.
pub fn lstat_at(dir: impl AsFd, name: &CStr) -> Result<FileStat, Errno> {
    fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

/// The access mode and the flags worth passing on from a guest's open
/// flags. Creation flags are the caller's business; O_DIRECT (the host
/// page cache is fine), O_NOATIME (EPERM for non-owners) and O_ASYNC are
/// dropped; O_NOFOLLOW, O_NOCTTY and O_CLOEXEC are always added.
pub fn open_flags(guest: u32) -> Result<OFlag, Errno> {
    let mut f = match guest & dotl::ACCMODE {
        0 => OFlag::O_RDONLY,
        dotl::WRONLY => OFlag::O_WRONLY,
        dotl::RDWR => OFlag::O_RDWR,
        _ => return Err(Errno::EINVAL),
    };
    for (bit, host) in [
        (dotl::TRUNC, OFlag::O_TRUNC),
        (dotl::APPEND, OFlag::O_APPEND),
        (dotl::NONBLOCK, OFlag::O_NONBLOCK),
        (dotl::DSYNC, OFlag::O_DSYNC),
        (dotl::SYNC, OFlag::O_SYNC),
        (dotl::DIRECTORY, OFlag::O_DIRECTORY),
    ] {
        if guest & bit != 0 {
            f |= host;
        }
    }
    Ok(f | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
}

/// Whether the guest's flags ask for write access.
pub fn writes(guest: u32) -> bool {
    matches!(guest & dotl::ACCMODE, dotl::WRONLY | dotl::RDWR)
}

/// Opens the existing entry `name` in `dir` for the guest: directories
/// for listing, regular files, FIFOs and sockets for I/O (the last two
/// non-blocking, so a FIFO without a peer cannot stall the device);
/// symlinks are ELOOP and device nodes EACCES, checked before the open
/// (opening a device can have effects) and again on what was opened.
pub fn open_entry(dir: BorrowedFd<'_>, name: &CStr, guest: u32) -> Result<(Open, FileStat), Errno> {
    let mut flags = open_flags(guest)?;
    let st = lstat_at(dir, name)?;
    match kind(st.st_mode) {
        libc::S_IFLNK => return Err(Errno::ELOOP),
        _ if is_device(st.st_mode) => return Err(Errno::EACCES),
        libc::S_IFDIR => {
            if guest & dotl::ACCMODE != 0 {
                return Err(Errno::EISDIR);
            }
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let fd = openat(dir, name, flags, Mode::empty())?;
            let st = fstat(&fd)?;
            return Ok((Open::Dir(fd), st));
        }
        _ => {}
    }
    if kind(st.st_mode) != libc::S_IFREG {
        flags |= OFlag::O_NONBLOCK;
    }
    let fd = openat(dir, name, flags, Mode::empty())?;
    let st = fstat(&fd)?;
    if is_device(st.st_mode) {
        return Err(Errno::EACCES);
    }
    let file = File::from(fd);
    Ok((
        Open::File {
            file,
            writable: writes(guest),
        },
        st,
    ))
}

/// Sets exactly `mode`'s permission bits on `name` in `dir`, without
/// following a symlink. The C libraries implement the no-follow variant
/// with fchmodat2 or through /proc; where neither works they answer
/// EOPNOTSUPP, and then a plain fchmodat on what lstat just showed is not
/// a symlink is used (a race only a host process could exploit).
pub fn chmod_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> Result<(), Errno> {
    let m = Mode::from_bits_truncate(mode & 0o7777);
    match fchmodat(dir, name, m, FchmodatFlags::NoFollowSymlink) {
        Err(Errno::EOPNOTSUPP | Errno::ENOSYS) => {
            let st = lstat_at(dir, name)?;
            if kind(st.st_mode) == libc::S_IFLNK {
                return Err(Errno::EOPNOTSUPP);
            }
            fchmodat(dir, name, m, FchmodatFlags::FollowSymlink)
        }
        other => other,
    }
}

/// Whether lkvm runs as root (and may give files the guest's owners).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The kernel's "leave this id unchanged".
const KEEP: u32 = u32::MAX;

/// fchown on an open file; `None` leaves that id alone.
pub fn chown_fd(fd: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> Result<(), Errno> {
    // SAFETY: fchown takes a valid fd (borrowed for the call) and two
    // plain integers; it touches no memory of ours.
    let r = unsafe { libc::fchown(fd.as_raw_fd(), uid.unwrap_or(KEEP), gid.unwrap_or(KEEP)) };
    Errno::result(r).map(drop)
}

/// lchown of `name` in `dir`: never through a symlink.
pub fn chown_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<(), Errno> {
    // SAFETY: `name` is a NUL-terminated string that outlives the call,
    // which only reads it; `dir` is a valid fd borrowed for the call.
    let r = unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid.unwrap_or(KEEP),
            gid.unwrap_or(KEEP),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    Errno::result(r).map(drop)
}

/// One entry getdents64 returned.
#[derive(Debug)]
pub struct DirEntry {
    pub ino: u64,
    /// The position just after this entry, for the next listing.
    pub off: u64,
    pub dtype: u8,
    pub name: Vec<u8>,
}

/// Reads entries from `fd`'s current position into `buf`'s worth.
pub fn getdents(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<Vec<DirEntry>, Errno> {
    // SAFETY: getdents64 writes at most `buf.len()` bytes into `buf`,
    // which is valid writable memory of that length, and reads nothing
    // else of ours; `fd` is a valid open fd for the duration of the call.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(Errno::last());
    }
    let filled = buf
        .get(..usize::try_from(n).unwrap_or(0))
        .ok_or(Errno::EIO)?;
    Ok(parse_dirents(filled))
}

fn ne_u64(b: Option<&[u8]>) -> u64 {
    b.and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map_or(0, u64::from_ne_bytes)
}

/// Splits getdents64 records: d_ino[8] d_off[8] d_reclen[2] d_type[1]
/// d_name (NUL-terminated), native-endian. Stops at anything malformed.
fn parse_dirents(mut rec: &[u8]) -> Vec<DirEntry> {
    let mut out = Vec::new();
    while rec.len() >= 19 {
        let ino = ne_u64(rec.get(0..8));
        let off = ne_u64(rec.get(8..16));
        let reclen = match rec.get(16..18) {
            Some(&[a, b]) => usize::from(u16::from_ne_bytes([a, b])),
            _ => break,
        };
        let dtype = rec.get(18).copied().unwrap_or(libc::DT_UNKNOWN);
        let Some(name_field) = rec.get(19..reclen) else {
            break;
        };
        let name_len = name_field
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(name_field.len());
        if reclen < 19 || name_len == 0 {
            break;
        }
        out.push(DirEntry {
            ino,
            off,
            dtype,
            name: name_field.get(..name_len).unwrap_or_default().to_vec(),
        });
        rec = rec.get(reclen..).unwrap_or_default();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_flags_translate_to_host_flags() {
        let f = open_flags(dotl::RDWR | dotl::TRUNC | dotl::APPEND | 0o40000 | 0o100).unwrap();
        assert!(f.contains(OFlag::O_RDWR | OFlag::O_TRUNC | OFlag::O_APPEND | OFlag::O_NOFOLLOW));
        assert!(!f.contains(OFlag::O_DIRECT));
        assert!(!f.contains(OFlag::O_CREAT));
        let f = open_flags(dotl::DIRECTORY).unwrap();
        assert!(f.contains(OFlag::O_DIRECTORY));
        assert_eq!(open_flags(3), Err(Errno::EINVAL));
        assert!(writes(dotl::WRONLY) && writes(dotl::RDWR) && !writes(0));
    }

    #[test]
    fn devices_are_told_from_fifos_and_sockets() {
        assert!(is_device(libc::S_IFCHR | 0o666));
        assert!(is_device(libc::S_IFBLK | 0o660));
        assert!(!is_device(libc::S_IFIFO | 0o644));
        assert!(!is_device(libc::S_IFSOCK | 0o644));
        assert!(!is_device(libc::S_IFREG | 0o644));
    }

    #[test]
    fn dirent_records_parse_and_stop_at_garbage() {
        let mut buf = Vec::new();
        for (ino, name) in [(5u64, &b"ab"[..]), (6, b"c")] {
            let reclen = (19 + name.len() + 1).next_multiple_of(8);
            let start = buf.len();
            buf.extend_from_slice(&ino.to_ne_bytes());
            buf.extend_from_slice(&(ino * 10).to_ne_bytes());
            buf.extend_from_slice(&(reclen as u16).to_ne_bytes());
            buf.push(libc::DT_REG);
            buf.extend_from_slice(name);
            buf.resize(start + reclen, 0);
        }
        let e = parse_dirents(&buf);
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0].ino, e[0].off, e[0].name.as_slice()),
            (5, 50, &b"ab"[..])
        );
        assert_eq!((e[1].ino, e[1].name.as_slice()), (6, &b"c"[..]));
        // A record length running past the buffer ends the parse.
        buf[16..18].copy_from_slice(&999u16.to_ne_bytes());
        assert!(parse_dirents(&buf).is_empty());
        // A zero record length cannot loop.
        buf[16..18].copy_from_slice(&0u16.to_ne_bytes());
        assert!(parse_dirents(&buf).is_empty());
    }
}
