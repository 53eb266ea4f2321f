//! Paths inside the share, and the only way the server turns them into
//! host files.
//!
//! A fid names a file by its components below the share root; each
//! component is one validated name (never empty, never "." or "..", no
//! '/' and no NUL), so a path can only ever point below the root. It is
//! opened relative to the root's fd without following any symlink:
//! openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) where the host has it,
//! otherwise one openat(O_NOFOLLOW) per component. The last component is
//! never opened through a path at all: callers get its directory's fd and
//! its name and use the *at calls with AT_SYMLINK_NOFOLLOW or O_NOFOLLOW.
//! A symlink in the share, whatever it points at, is therefore only ever
//! read with readlink, never followed on the host.

use std::cell::Cell;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// Checks one name a guest sent for a directory entry (create, link,
/// rename, unlink): one real component.
pub fn entry_name(raw: &[u8]) -> Result<CString, Errno> {
    if raw == b"." || raw == b".." {
        return Err(Errno::EINVAL);
    }
    component(raw)
}

/// Checks one walk element, which may also be "." or "..": any single
/// component without '/' or NUL.
pub fn component(raw: &[u8]) -> Result<CString, Errno> {
    if raw.is_empty() || raw.contains(&b'/') {
        return Err(Errno::EINVAL);
    }
    if raw.len() > 255 {
        return Err(Errno::ENAMETOOLONG);
    }
    CString::new(raw).map_err(|_| Errno::EINVAL)
}

/// A file's location below the share root. The empty path is the root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelPath(Vec<CString>);

impl RelPath {
    pub fn root() -> Self {
        RelPath(Vec::new())
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn components(&self) -> &[CString] {
        &self.0
    }

    /// Appends `name`, which must come from [`entry_name`].
    pub fn join(&self, name: &CStr) -> Self {
        let mut p = self.clone();
        p.0.push(name.to_owned());
        p
    }

    /// Steps to the parent; the root stays the root.
    pub fn pop(&mut self) {
        self.0.pop();
    }

    /// The directory's components and the last name; `None` for the root.
    pub fn split_last(&self) -> Option<(&[CString], &CStr)> {
        let (last, dir) = self.0.split_last()?;
        Some((dir, last.as_c_str()))
    }

    /// Whether `self` is `prefix` or lies below it.
    pub fn starts_with(&self, prefix: &RelPath) -> bool {
        self.0.starts_with(&prefix.0)
    }

    /// Moves `self` from below `from` to below `to` (after a rename).
    pub fn rebase(&mut self, from: &RelPath, to: &RelPath) {
        if let Some(rest) = self.0.get(from.0.len()..) {
            let mut moved = to.0.clone();
            moved.extend_from_slice(rest);
            self.0 = moved;
        }
    }
}

/// The O_PATH flags every directory on the way is opened with.
fn dir_flags() -> OFlag {
    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// The shared directory: its fd and the resolution rules.
pub struct Root {
    fd: OwnedFd,
    /// Cleared once openat2 turns out not to exist (or to be filtered).
    openat2: Cell<bool>,
}

impl Root {
    /// Opens `dir` (which the user named, so symlinks in it are fine).
    pub fn open(dir: &Path) -> Result<Root, Errno> {
        let fd = openat(
            nix::fcntl::AT_FDCWD,
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root::from_fd(fd))
    }

    pub fn from_fd(fd: OwnedFd) -> Root {
        Root {
            fd,
            openat2: Cell::new(true),
        }
    }

    /// Resolves only with per-component openat, as on hosts before 5.6.
    #[cfg(any(test, fuzzing))]
    pub fn without_openat2(self) -> Root {
        self.openat2.set(false);
        self
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// An O_PATH fd for the directory at `comps`, no symlink followed.
    pub fn dir(&self, comps: &[CString]) -> Result<OwnedFd, Errno> {
        if comps.is_empty() {
            return openat(&self.fd, c".", dir_flags(), Mode::empty());
        }
        if self.openat2.get() {
            match self.dir_openat2(comps) {
                // Not there (pre-5.6), or refused by a seccomp filter or a
                // kernel that does not know a flag: fall back for good.
                Err(Errno::ENOSYS | Errno::EPERM | Errno::E2BIG) => self.openat2.set(false),
                // A concurrent rename made the kernel give up: the
                // component walk below copes with it.
                Err(Errno::EAGAIN) => {}
                other => return other,
            }
        }
        let mut cur: Option<OwnedFd> = None;
        for name in comps {
            let at = cur.as_ref().unwrap_or(&self.fd);
            cur = Some(openat(at, name.as_c_str(), dir_flags(), Mode::empty())?);
        }
        cur.ok_or(Errno::ENOENT)
    }

    fn dir_openat2(&self, comps: &[CString]) -> Result<OwnedFd, Errno> {
        let mut joined = Vec::new();
        for (i, c) in comps.iter().enumerate() {
            if i > 0 {
                joined.push(b'/');
            }
            joined.extend_from_slice(c.as_bytes());
        }
        let path = CString::new(joined).map_err(|_| Errno::EINVAL)?;
        let how = OpenHow::new().flags(dir_flags()).resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
        openat2(&self.fd, path.as_c_str(), how)
    }

    /// Where `path` lives: its directory's fd and its name, "." for the
    /// root itself (so every operation is an *at call on a name).
    pub fn locate(&self, path: &RelPath) -> Result<(OwnedFd, CString), Errno> {
        match path.split_last() {
            Some((dir, name)) => Ok((self.dir(dir)?, name.to_owned())),
            None => Ok((self.dir(&[])?, c".".to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use nix::sys::stat::fstat;

    use super::*;
    use crate::virtio::p9::tests::TempDir;

    fn names(p: &[&str]) -> Vec<CString> {
        p.iter().map(|s| CString::new(*s).unwrap()).collect()
    }

    #[test]
    fn names_are_single_components() {
        assert!(entry_name(b"a.txt").is_ok());
        assert!(component(b"..").is_ok());
        assert!(component(b".").is_ok());
        for bad in [&b""[..], b"a/b", b"/", b"a\0b", b".", b".."] {
            assert_eq!(entry_name(bad), Err(Errno::EINVAL), "{bad:?}");
        }
        assert_eq!(entry_name(&[b'x'; 256]), Err(Errno::ENAMETOOLONG));
    }

    #[test]
    fn paths_pop_at_the_root_and_rebase() {
        let mut p = RelPath::root().join(c"a").join(c"b");
        let from = RelPath::root().join(c"a");
        let to = RelPath::root().join(c"x").join(c"y");
        assert!(p.starts_with(&from));
        assert!(!from.starts_with(&p));
        p.rebase(&from, &to);
        assert_eq!(p, to.join(c"b"));
        let mut r = RelPath::root();
        r.pop();
        assert!(r.is_root());
        assert_eq!(p.split_last().unwrap().1, c"b");
    }

    #[test]
    fn resolution_never_follows_a_symlink() {
        let t = TempDir::new("path");
        std::fs::create_dir_all(t.path().join("d/e")).unwrap();
        std::os::unix::fs::symlink("/etc", t.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../../", t.path().join("d/up")).unwrap();
        std::os::unix::fs::symlink("e", t.path().join("d/rel")).unwrap();
        for fallback in [false, true] {
            let mut root = Root::open(t.path()).unwrap();
            if fallback {
                root = root.without_openat2();
            }
            let e = root.dir(&names(&["d", "e"])).unwrap();
            let want = std::fs::metadata(t.path().join("d/e")).unwrap();
            assert_eq!(
                fstat(&e).unwrap().st_ino,
                std::os::unix::fs::MetadataExt::ino(&want)
            );
            for bad in [
                &["abs"][..],
                &["d", "up"],
                &["d", "rel"],
                &["d", "up", "etc"],
            ] {
                let err = root.dir(&names(bad)).unwrap_err();
                assert!(
                    matches!(err, Errno::ELOOP | Errno::ENOTDIR | Errno::EXDEV),
                    "{bad:?} (fallback {fallback}): {err}"
                );
            }
            let (_, name) = root.locate(&RelPath::root()).unwrap();
            assert_eq!(name.as_c_str(), c".");
        }
    }
}
