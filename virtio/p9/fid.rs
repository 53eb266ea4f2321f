//! The fid table: the guest's handles on files in the share.
//!
//! A fid is a path below the root plus, once the guest opened it, the
//! host fd it reads and writes through. The path is what every
//! name-based operation resolves (see `path.rs`), and it follows renames
//! the guest makes so that fids on a moved file or directory stay valid.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;

use super::path::RelPath;
use super::wire::NOFID;

/// How many fids a guest may hold at once: a guest must not be able to
/// make lkvm allocate without bound (each is a path of at most PATH_MAX).
pub const MAX_FIDS: usize = 1 << 16;
/// How many of them may be open (each holds a host fd) per share, at most;
/// below that, a quarter of lkvm's descriptor limit (`crate::fdlimit`), so
/// the guest's files never starve lkvm of the descriptors its vCPUs,
/// devices and control socket need.
pub const MAX_OPEN_FIDS: usize = 4096;

/// The open-fid limit for this process.
pub fn open_fid_limit() -> usize {
    crate::fdlimit::share_now(MAX_OPEN_FIDS)
}

/// What an opened fid reads from or lists.
pub enum Open {
    File {
        file: File,
        writable: bool,
    },
    /// A directory opened for reading: Treaddir lists it.
    Dir(OwnedFd),
}

impl Open {
    pub fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Open::File { file, .. } => file.as_fd(),
            Open::Dir(fd) => fd.as_fd(),
        }
    }
}

pub struct Fid {
    pub path: RelPath,
    /// The numeric user the fid was attached as (`NONUNAME` if none):
    /// the owner of what it creates when lkvm runs as root.
    pub uid: u32,
    pub open: Option<Open>,
}

impl Fid {
    pub fn new(path: RelPath, uid: u32) -> Self {
        Fid {
            path,
            uid,
            open: None,
        }
    }

    /// A fid that is not opened yet (walks, creates and opens start from
    /// one of these).
    pub fn unopened(&self) -> Result<&Self, Errno> {
        match self.open {
            None => Ok(self),
            Some(_) => Err(Errno::EBADF),
        }
    }
}

pub struct Fids {
    map: HashMap<u32, Fid>,
    max_open: usize,
}

impl Default for Fids {
    fn default() -> Self {
        Fids::with_open_limit(open_fid_limit())
    }
}

impl Fids {
    pub fn with_open_limit(max_open: usize) -> Self {
        Fids {
            map: HashMap::new(),
            max_open,
        }
    }

    /// Whether one more fid may be opened: EMFILE to the guest when its
    /// open files reach this share's limit (before any host fd is made).
    pub fn check_open_room(&self) -> Result<(), Errno> {
        let open = self.map.values().filter(|f| f.open.is_some()).count();
        if open >= self.max_open {
            return Err(Errno::EMFILE);
        }
        Ok(())
    }

    pub fn get(&self, id: u32) -> Result<&Fid, Errno> {
        self.map.get(&id).ok_or(Errno::EBADF)
    }

    pub fn get_mut(&mut self, id: u32) -> Result<&mut Fid, Errno> {
        self.map.get_mut(&id).ok_or(Errno::EBADF)
    }

    /// Checks that `id` can name a new fid.
    pub fn check_free(&self, id: u32) -> Result<(), Errno> {
        if id == NOFID || self.map.contains_key(&id) {
            return Err(Errno::EINVAL);
        }
        if self.map.len() >= MAX_FIDS {
            return Err(Errno::ENFILE);
        }
        Ok(())
    }

    /// Adds a new fid `id`.
    pub fn add(&mut self, id: u32, fid: Fid) -> Result<(), Errno> {
        self.check_free(id)?;
        self.map.insert(id, fid);
        Ok(())
    }

    /// Puts `fid` in place of the existing fid `id`.
    pub fn replace(&mut self, id: u32, fid: Fid) -> Result<(), Errno> {
        let slot = self.get_mut(id)?;
        *slot = fid;
        Ok(())
    }

    pub fn remove(&mut self, id: u32) -> Result<Fid, Errno> {
        self.map.remove(&id).ok_or(Errno::EBADF)
    }

    /// Forgets every fid (a new session), closing their files.
    pub fn clear(&mut self) {
        self.map.clear();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Moves every fid at or below `from` to the same place below `to`.
    pub fn renamed(&mut self, from: &RelPath, to: &RelPath) {
        for fid in self.map.values_mut() {
            if fid.path.starts_with(from) {
                fid.path.rebase(from, to);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_bounded() {
        let mut f = Fids::default();
        f.add(1, Fid::new(RelPath::root(), 0)).unwrap();
        assert_eq!(f.add(1, Fid::new(RelPath::root(), 0)), Err(Errno::EINVAL));
        assert_eq!(
            f.add(NOFID, Fid::new(RelPath::root(), 0)),
            Err(Errno::EINVAL)
        );
        assert_eq!(f.get(2).err(), Some(Errno::EBADF));
        assert_eq!(f.remove(2).err(), Some(Errno::EBADF));
        for id in 2..MAX_FIDS as u32 + 1 {
            f.add(id, Fid::new(RelPath::root(), 0)).unwrap();
        }
        assert_eq!(
            f.add(u32::MAX - 1, Fid::new(RelPath::root(), 0)),
            Err(Errno::ENFILE)
        );
        f.clear();
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn renames_move_fids_below_the_old_path() {
        let mut f = Fids::default();
        let a = RelPath::root().join(c"a");
        let ab = a.join(c"b");
        let other = RelPath::root().join(c"ab");
        f.add(1, Fid::new(a.clone(), 0)).unwrap();
        f.add(2, Fid::new(ab.clone(), 0)).unwrap();
        f.add(3, Fid::new(other.clone(), 0)).unwrap();
        let z = RelPath::root().join(c"z");
        f.renamed(&a, &z);
        assert_eq!(f.get(1).unwrap().path, z);
        assert_eq!(f.get(2).unwrap().path, z.join(c"b"));
        assert_eq!(f.get(3).unwrap().path, other);
    }

    #[test]
    fn open_fids_are_bounded_below_the_descriptor_limit() {
        let limit = open_fid_limit();
        assert!((16..=MAX_OPEN_FIDS).contains(&limit));
        let mut f = Fids::with_open_limit(2);
        for id in 0..3 {
            f.add(id, Fid::new(RelPath::root(), 0)).unwrap();
        }
        for id in 0..2 {
            f.check_open_room().unwrap();
            let file = std::fs::File::open("/dev/null").unwrap();
            f.get_mut(id).unwrap().open = Some(Open::File {
                file,
                writable: false,
            });
        }
        assert_eq!(f.check_open_room(), Err(Errno::EMFILE));
        // Closing one (clunk) makes room again.
        f.remove(0).unwrap();
        assert_eq!(f.check_open_room(), Ok(()));
    }
}
