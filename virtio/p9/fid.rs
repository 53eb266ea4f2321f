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

/// How many fids a guest may hold at once: each open one costs a host
/// fd, and a guest must not be able to make lkvm allocate without bound.
pub const MAX_FIDS: usize = 1 << 16;

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

#[derive(Default)]
pub struct Fids(HashMap<u32, Fid>);

impl Fids {
    pub fn get(&self, id: u32) -> Result<&Fid, Errno> {
        self.0.get(&id).ok_or(Errno::EBADF)
    }

    pub fn get_mut(&mut self, id: u32) -> Result<&mut Fid, Errno> {
        self.0.get_mut(&id).ok_or(Errno::EBADF)
    }

    /// Checks that `id` can name a new fid.
    pub fn check_free(&self, id: u32) -> Result<(), Errno> {
        if id == NOFID || self.0.contains_key(&id) {
            return Err(Errno::EINVAL);
        }
        if self.0.len() >= MAX_FIDS {
            return Err(Errno::ENFILE);
        }
        Ok(())
    }

    /// Adds a new fid `id`.
    pub fn add(&mut self, id: u32, fid: Fid) -> Result<(), Errno> {
        self.check_free(id)?;
        self.0.insert(id, fid);
        Ok(())
    }

    /// Puts `fid` in place of the existing fid `id`.
    pub fn replace(&mut self, id: u32, fid: Fid) -> Result<(), Errno> {
        let slot = self.get_mut(id)?;
        *slot = fid;
        Ok(())
    }

    pub fn remove(&mut self, id: u32) -> Result<Fid, Errno> {
        self.0.remove(&id).ok_or(Errno::EBADF)
    }

    /// Forgets every fid (a new session), closing their files.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Moves every fid at or below `from` to the same place below `to`.
    pub fn renamed(&mut self, from: &RelPath, to: &RelPath) {
        for fid in self.0.values_mut() {
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
}
