//! The operations Linux's v9fs uses, against a temporary share.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;

use nix::errno::Errno;

use super::super::host::dotl;
use super::super::server::{MAX_MSIZE, MIN_MSIZE};
use super::super::wire::{msg, qt, Decoder, NONUNAME};
use super::*;

const RDONLY: u32 = 0;
const RDWR: u32 = 2;
const CREATE: u32 = 0o100;

#[test]
fn version_negotiates_msize_and_answers_unknown() {
    let t = TempDir::new("version");
    let mut c = Client::new(t.path());
    assert_eq!(
        c.version(u32::MAX, "9P2000.L").unwrap(),
        (MAX_MSIZE, "9P2000.L".into())
    );
    assert_eq!(c.s.msize(), MAX_MSIZE);
    assert_eq!(
        c.version(4096, "9P2000.u").unwrap(),
        (4096, "unknown".into())
    );
    assert_eq!(c.version(4096, "9P2000").unwrap().1, "unknown");
    assert_eq!(c.version(MIN_MSIZE - 1, "9P2000.L"), Err(Errno::EINVAL));
    // A new session forgets the old fids.
    c.version(8192, "9P2000.L").unwrap();
    c.attach(0, NONUNAME).unwrap();
    c.walk(0, 1, &[]).unwrap();
    assert_eq!(c.s.fid_count(), 2);
    c.version(8192, "9P2000.L").unwrap();
    assert_eq!(c.s.fid_count(), 0);
    assert_eq!(c.getattr(0).err(), Some(Errno::EBADF));
}

#[test]
fn attach_walk_open_read_write() {
    let t = TempDir::new("rw");
    std::fs::create_dir(t.path().join("a")).unwrap();
    std::fs::write(t.path().join("a/b.txt"), b"hello, 9p world").unwrap();
    let mut c = Client::new(t.path());
    assert_eq!(c.attach(0, NONUNAME), Err(Errno::EINVAL), "fid 0 is in use");
    let q = c.walk(0, 1, &["a", "b.txt"]).unwrap();
    assert_eq!(q.len(), 2);
    assert_eq!(q[0].kind, qt::DIR);
    assert_eq!(q[1].kind, qt::FILE);
    assert_eq!(
        q[1].path,
        std::fs::metadata(t.path().join("a/b.txt")).unwrap().ino()
    );
    c.lopen(1, RDONLY).unwrap();
    assert_eq!(c.lopen(1, RDONLY), Err(Errno::EBADF), "already open");
    assert_eq!(c.read(1, 0, 5).unwrap(), b"hello");
    assert_eq!(c.read(1, 7, 100).unwrap(), b"9p world");
    assert_eq!(c.read(1, 100, 100).unwrap(), b"");
    assert_eq!(c.write(1, 0, b"x"), Err(Errno::EBADF), "opened read-only");

    c.walk(0, 2, &["a", "b.txt"]).unwrap();
    c.lopen(2, RDWR).unwrap();
    assert_eq!(c.write(2, 7, b"9P").unwrap(), 2);
    assert_eq!(
        std::fs::read(t.path().join("a/b.txt")).unwrap(),
        b"hello, 9P world"
    );
    // Reads are clamped to the room for the reply.
    std::fs::write(t.path().join("big"), vec![7u8; 10_000]).unwrap();
    c.walk(0, 3, &["big"]).unwrap();
    c.lopen(3, RDONLY).unwrap();
    assert_eq!(c.read(3, 0, 100_000).unwrap().len(), 8192 - 11);
    c.room = 100;
    assert_eq!(c.read(3, 0, 100_000).unwrap().len(), 89);
    c.room = 8192;
    // A directory reads as EISDIR; an unopened fid as EBADF.
    c.walk(0, 4, &["a"]).unwrap();
    assert_eq!(c.read(4, 0, 10), Err(Errno::EBADF));
    assert_eq!(c.lopen(4, RDWR), Err(Errno::EISDIR));
    c.lopen(4, RDONLY).unwrap();
    assert_eq!(c.read(4, 0, 10), Err(Errno::EISDIR));
    for fid in 1..=4 {
        c.clunk(fid).unwrap();
    }
    assert_eq!(c.clunk(1), Err(Errno::EBADF));
    assert_eq!(c.s.fid_count(), 1);
}

#[test]
fn a_read_only_share_reads_but_refuses_every_change() {
    let t = TempDir::new("ro");
    std::fs::create_dir(t.path().join("d")).unwrap();
    std::fs::write(t.path().join("f"), b"kept").unwrap();
    let mut c = Client::read_only(t.path());
    c.walk(0, 1, &["f"]).unwrap();
    assert_eq!(c.lopen(1, RDWR), Err(Errno::EROFS));
    assert_eq!(c.lopen(1, RDONLY | 0o1000), Err(Errno::EROFS), "O_TRUNC");
    c.lopen(1, RDONLY).unwrap();
    assert_eq!(c.read(1, 0, 10).unwrap(), b"kept");
    assert_eq!(c.write(1, 0, b"x"), Err(Errno::EROFS));
    c.walk(0, 2, &["d"]).unwrap();
    assert_eq!(
        c.lcreate(2, "new", RDWR | CREATE, 0o644, 0),
        Err(Errno::EROFS)
    );
    assert_eq!(c.mkdir(0, "e", 0o755, 0), Err(Errno::EROFS));
    assert_eq!(c.unlinkat(0, "f", 0), Err(Errno::EROFS));
    assert_eq!(std::fs::read(t.path().join("f")).unwrap(), b"kept");
    assert!(!t.path().join("d/new").exists() && !t.path().join("e").exists());
}

/// A guest opening files without closing them gets EMFILE from the
/// share's limit, not lkvm's descriptors run dry.
#[test]
fn open_files_beyond_the_limit_get_emfile() {
    let t = TempDir::new("emfile");
    std::fs::write(t.path().join("f"), b"x").unwrap();
    let mut c = Client::new(t.path());
    let limit = super::super::fid::open_fid_limit() as u32;
    for fid in 1..=limit {
        c.walk(0, fid, &["f"]).unwrap();
        c.lopen(fid, RDONLY).unwrap();
    }
    c.walk(0, limit + 1, &["f"]).unwrap();
    assert_eq!(c.lopen(limit + 1, RDONLY), Err(Errno::EMFILE));
    assert_eq!(
        c.lcreate(0, "g", RDWR | CREATE, 0o644, 0),
        Err(Errno::EMFILE)
    );
    c.clunk(1).unwrap();
    c.lopen(limit + 1, RDONLY).unwrap();
}

#[test]
fn walk_semantics() {
    let t = TempDir::new("walk");
    std::fs::create_dir_all(t.path().join("d/e")).unwrap();
    std::fs::write(t.path().join("d/f"), b"").unwrap();
    let mut c = Client::new(t.path());
    let root = c.getattr(0).unwrap().qid;
    // Clone, and a no-op walk onto itself.
    assert!(c.walk(0, 1, &[]).unwrap().is_empty());
    assert!(c.walk(1, 1, &[]).unwrap().is_empty());
    assert_eq!(c.getattr(1).unwrap().qid, root);
    // ".." at the root stays at the root; "." stays put.
    let q = c.walk(0, 2, &["..", "..", ".", ".."]).unwrap();
    assert!(q.iter().all(|q| *q == root));
    assert_eq!(c.getattr(2).unwrap().qid, root);
    // ".." below the root goes up one.
    let q = c.walk(0, 3, &["d", "e", "..", "f"]).unwrap();
    assert_eq!(q.len(), 4);
    assert_eq!(q[2], q[0]);
    assert_eq!(c.getattr(3).unwrap().qid, q[3]);
    // The first name failing fails the walk; a later one is partial and
    // makes no fid.
    assert_eq!(c.walk(0, 4, &["nope"]), Err(Errno::ENOENT));
    assert_eq!(c.walk(0, 4, &["d", "nope", "x"]).unwrap().len(), 1);
    assert_eq!(
        c.walk(0, 4, &["d", "f", "x"]).unwrap().len(),
        2,
        "f is not a directory"
    );
    assert_eq!(c.getattr(4).err(), Some(Errno::EBADF));
    // Names are single components.
    for bad in ["a/b", "", "/", "d/../.."] {
        assert_eq!(c.walk(0, 4, &[bad]), Err(Errno::EINVAL), "{bad:?}");
    }
    assert_eq!(c.walk(0, 4, &["d", "e/.."]).unwrap().len(), 1);
    // At most 16 names; the new fid must be free.
    assert_eq!(c.walk(0, 4, &["."; 17]), Err(Errno::EINVAL));
    assert_eq!(c.walk(0, 4, &["."; 16]).unwrap().len(), 16);
    assert_eq!(c.walk(0, 1, &["d"]), Err(Errno::EINVAL));
    // Walking a fid onto itself replaces it.
    c.walk(1, 1, &["d", "e"]).unwrap();
    assert_eq!(c.getattr(1).unwrap().qid.kind, qt::DIR);
    assert_eq!(c.walk(99, 5, &[]), Err(Errno::EBADF));
}

#[test]
fn create_applies_exact_modes_and_owners() {
    let t = TempDir::new("create");
    let mut c = Client::new(t.path());
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    c.walk(0, 1, &[]).unwrap();
    let q = c.lcreate(1, "f", RDWR | CREATE, 0o100666, 0).unwrap();
    assert_eq!(q.kind, qt::FILE);
    assert_eq!(c.write(1, 0, b"data").unwrap(), 4);
    assert_eq!(c.read(1, 0, 10).unwrap(), b"data");
    assert_eq!(
        host_mode(&t.path().join("f")) & 0o7777,
        0o666,
        "not filtered by umask"
    );
    // The fid is now the file.
    assert_eq!(c.getattr(1).unwrap().qid, q);
    c.walk(0, 2, &[]).unwrap();
    assert_eq!(
        c.lcreate(2, "f", RDWR | CREATE | dotl::EXCL, 0o644, 0),
        Err(Errno::EEXIST)
    );
    // Without O_EXCL an existing file is opened as it is.
    c.lcreate(2, "f", RDONLY | CREATE, 0o600, 0).unwrap();
    assert_eq!(host_mode(&t.path().join("f")) & 0o7777, 0o666);
    assert_eq!(c.read(2, 0, 10).unwrap(), b"data");
    c.walk(0, 3, &[]).unwrap();
    c.lcreate(3, "suid", RDWR | CREATE, 0o4755, 0).unwrap();
    assert_eq!(host_mode(&t.path().join("suid")) & 0o7777, 0o4755);
    let q = c.mkdir(0, "dir", 0o2751, 0).unwrap();
    assert_eq!(q.kind, qt::DIR);
    assert_eq!(host_mode(&t.path().join("dir")) & 0o7777, 0o2751);
    assert_eq!(c.mkdir(0, "dir", 0o755, 0), Err(Errno::EEXIST));
    for bad in [".", "..", "a/b", ""] {
        assert_eq!(c.mkdir(0, bad, 0o755, 0), Err(Errno::EINVAL), "{bad:?}");
        c.walk(0, 4, &[]).unwrap();
        assert_eq!(
            c.lcreate(4, bad, RDWR | CREATE, 0o644, 0),
            Err(Errno::EINVAL)
        );
        c.clunk(4).unwrap();
    }
    nix::sys::stat::umask(old);

    // When lkvm is root, new files belong to the attaching user and the
    // guest's group.
    if super::super::host::is_root() {
        assert!(c.s.as_root);
        c.attach(10, 1234).unwrap();
        c.walk(10, 11, &[]).unwrap();
        c.lcreate(11, "owned", RDWR | CREATE, 0o640, 5678).unwrap();
        let m = std::fs::metadata(t.path().join("owned")).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1234, 5678, 0o640));
        c.mkdir(10, "odir", 0o750, 4321).unwrap();
        let m = std::fs::metadata(t.path().join("odir")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1234, 4321));
        c.symlink(10, "olink", "target", 99).unwrap();
        let m = std::fs::symlink_metadata(t.path().join("olink")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1234, 99));
    } else {
        eprintln!("not root: ownership of created files is lkvm's user, not checked");
    }
}

#[test]
fn readdir_offsets_are_stable_and_counts_respected() {
    let t = TempDir::new("readdir");
    let mut want: HashSet<String> = [".", ".."].iter().map(|s| s.to_string()).collect();
    for i in 0..60 {
        let name = format!("file-with-a-longish-name-{i:03}");
        std::fs::write(t.path().join(&name), b"").unwrap();
        want.insert(name);
    }
    std::fs::create_dir(t.path().join("sub")).unwrap();
    std::os::unix::fs::symlink("/etc", t.path().join("ln")).unwrap();
    want.insert("sub".into());
    want.insert("ln".into());
    let mut c = Client::new(t.path());
    c.walk(0, 1, &[]).unwrap();
    assert_eq!(
        c.readdir(1, 0, 1000).err(),
        Some(Errno::ENOTDIR),
        "not opened"
    );
    c.lopen(1, RDONLY).unwrap();
    for count in [200u32, 333, 4096] {
        let names = c.list(1, count);
        assert_eq!(names.len(), want.len(), "count {count}: no duplicates");
        assert_eq!(names.into_iter().collect::<HashSet<_>>(), want);
    }
    let all = c.readdir(1, 0, 8000).unwrap();
    let kind = |n: &str| all.iter().find(|e| e.name == n).unwrap().qid.kind;
    assert_eq!(kind("sub"), qt::DIR);
    assert_eq!(kind("ln"), qt::SYMLINK);
    assert_eq!(kind("file-with-a-longish-name-000"), qt::FILE);
    assert_eq!(
        all.iter().find(|e| e.name == "sub").unwrap().dtype,
        libc::DT_DIR
    );
    // ".." of the root is the root, not the host directory above it.
    let root = c.getattr(0).unwrap().qid;
    assert_eq!(
        all.iter().find(|e| e.name == "..").unwrap().qid.path,
        root.path
    );
    // Restarting from a middle offset continues after that entry.
    let first = c.readdir(1, 0, 200).unwrap();
    let rest = c.readdir(1, first[0].off, 8000).unwrap();
    assert_eq!(rest.len(), want.len() - 1);
    // The room for the reply bounds the listing too.
    c.room = 150;
    let few = c.readdir(1, 0, 8000).unwrap();
    assert!(!few.is_empty() && few.len() < 5);
}

#[test]
fn rename_unlink_remove_and_link() {
    let t = TempDir::new("rename");
    std::fs::create_dir_all(t.path().join("d/sub")).unwrap();
    std::fs::write(t.path().join("d/sub/f"), b"content").unwrap();
    let mut c = Client::new(t.path());
    c.walk(0, 1, &["d", "sub", "f"]).unwrap();
    c.walk(0, 2, &["d"]).unwrap();
    // Renaming a directory moves the fids below it along.
    c.renameat(0, "d", 0, "e").unwrap();
    assert!(t.path().join("e/sub/f").exists());
    assert_eq!(c.getattr(1).unwrap().size, 7);
    c.lopen(1, RDONLY).unwrap();
    assert_eq!(c.read(1, 0, 100).unwrap(), b"content");
    // Trename moves the fid's own file.
    c.walk(0, 3, &["e", "sub", "f"]).unwrap();
    c.rename(3, 2, "g").unwrap();
    assert_eq!(std::fs::read(t.path().join("e/g")).unwrap(), b"content");
    assert_eq!(c.getattr(3).unwrap().size, 7);
    assert_eq!(c.rename(0, 2, "x"), Err(Errno::EBUSY), "the root stays");
    assert_eq!(c.renameat(0, "e", 2, "inside"), Err(Errno::EINVAL));
    assert_eq!(c.renameat(0, "..", 0, "x"), Err(Errno::EINVAL));
    // Hard links.
    c.link(0, 3, "hard").unwrap();
    assert_eq!(c.getattr(3).unwrap().nlink, 2);
    assert_eq!(std::fs::read(t.path().join("hard")).unwrap(), b"content");
    assert_eq!(c.link(0, 0, "rootlink"), Err(Errno::EPERM));
    // unlinkat: files, and directories only with AT_REMOVEDIR.
    c.unlinkat(0, "hard", 0).unwrap();
    assert!(!t.path().join("hard").exists());
    assert_eq!(c.unlinkat(2, "sub", 0), Err(Errno::EISDIR));
    c.unlinkat(2, "sub", 0x200).unwrap();
    assert_eq!(c.unlinkat(0, "e", 0x200), Err(Errno::ENOTEMPTY));
    // Tremove clunks the fid even when it fails.
    c.walk(0, 4, &[]).unwrap();
    assert_eq!(c.remove(4), Err(Errno::EBUSY));
    assert_eq!(c.getattr(4).err(), Some(Errno::EBADF));
    c.remove(3).unwrap();
    assert!(!t.path().join("e/g").exists());
    // An open file stays usable after its name is gone.
    assert_eq!(c.getattr(1).unwrap().size, 7);
    assert_eq!(c.read(1, 0, 3).unwrap(), b"con");
    c.remove(2).unwrap();
    assert!(!t.path().join("e").exists());
}

#[test]
fn getattr_and_setattr() {
    let t = TempDir::new("attr");
    std::fs::write(t.path().join("f"), b"0123456789").unwrap();
    let mut c = Client::new(t.path());
    c.walk(0, 1, &["f"]).unwrap();
    let a = c.getattr(1).unwrap();
    assert_eq!(a.mode & libc::S_IFMT, libc::S_IFREG);
    assert_eq!(a.size, 10);
    assert_eq!(a.nlink, 1);
    // Mode, exactly.
    c.setattr(
        1,
        &SetAttr {
            valid: 1,
            mode: 0o4741,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(host_mode(&t.path().join("f")) & 0o7777, 0o4741);
    assert_eq!(c.getattr(1).unwrap().mode & 0o7777, 0o4741);
    // Size by name, then through a writable open fid.
    c.setattr(
        1,
        &SetAttr {
            valid: 8,
            size: 4,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(std::fs::read(t.path().join("f")).unwrap(), b"0123");
    c.walk(0, 2, &["f"]).unwrap();
    c.lopen(2, RDWR).unwrap();
    c.setattr(
        2,
        &SetAttr {
            valid: 8,
            size: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(c.getattr(2).unwrap().size, 2);
    // Explicit times, then "now" for mtime only.
    let set = SetAttr {
        valid: 16 | 32 | 128 | 256,
        atime: (1_000_000, 5),
        mtime: (2_000_000, 7),
        ..Default::default()
    };
    c.setattr(1, &set).unwrap();
    let a = c.getattr(1).unwrap();
    assert_eq!((a.atime, a.mtime), ((1_000_000, 5), (2_000_000, 7)));
    c.setattr(
        2,
        &SetAttr {
            valid: 32,
            ..Default::default()
        },
    )
    .unwrap();
    let a = c.getattr(1).unwrap();
    assert_eq!(a.atime, (1_000_000, 5), "atime left alone");
    assert!(a.mtime.0 > 1_600_000_000, "mtime is now: {:?}", a.mtime);
    // A directory's size cannot be set.
    c.walk(0, 3, &[]).unwrap();
    assert_eq!(
        c.setattr(
            3,
            &SetAttr {
                valid: 8,
                ..Default::default()
            }
        ),
        Err(Errno::EISDIR)
    );
    // Owners: as root the guest's; otherwise whatever the host allows.
    let want = if super::super::host::is_root() {
        Ok(())
    } else {
        Err(Errno::EPERM)
    };
    let chown = SetAttr {
        valid: 2 | 4,
        uid: 4242,
        gid: 4343,
        ..Default::default()
    };
    assert_eq!(c.setattr(1, &chown), want);
    if want.is_ok() {
        let m = std::fs::metadata(t.path().join("f")).unwrap();
        assert_eq!((m.uid(), m.gid()), (4242, 4343));
        c.setattr(
            2,
            &SetAttr {
                valid: 4,
                gid: 7,
                ..Default::default()
            },
        )
        .unwrap();
        let m = std::fs::metadata(t.path().join("f")).unwrap();
        assert_eq!((m.uid(), m.gid()), (4242, 7));
    }
}

#[test]
fn statfs_fsync_locks_flush_and_xattrs() {
    let t = TempDir::new("misc");
    std::fs::write(t.path().join("f"), b"x").unwrap();
    let mut c = Client::new(t.path());
    let b = c.simple(msg::TSTATFS, 0).unwrap();
    let mut d = Decoder::new(&b);
    assert_eq!(d.u32().unwrap(), 0x0102_1997);
    assert!(d.u32().unwrap() > 0, "block size");
    assert_eq!(d.remaining(), 5 * 8 + 8 + 4);
    c.walk(0, 1, &["f"]).unwrap();
    assert_eq!(
        c.call(msg::TFSYNC, |e| {
            e.u32(1).u32(0);
        }),
        Err(Errno::EBADF)
    );
    c.lopen(1, RDWR).unwrap();
    c.call(msg::TFSYNC, |e| {
        e.u32(1).u32(0);
    })
    .unwrap();
    c.call(msg::TFSYNC, |e| {
        e.u32(1).u32(1);
    })
    .unwrap();
    let b = c
        .call(msg::TLOCK, |e| {
            e.u32(1)
                .u8(1)
                .u32(0)
                .u64(0)
                .u64(10)
                .u32(77)
                .string(b"guest")
                .unwrap();
        })
        .unwrap();
    assert_eq!(b, [0]);
    let b = c
        .call(msg::TGETLOCK, |e| {
            e.u32(1)
                .u8(1)
                .u64(5)
                .u64(10)
                .u32(77)
                .string(b"guest")
                .unwrap();
        })
        .unwrap();
    let mut d = Decoder::new(&b);
    assert_eq!(d.u8().unwrap(), 2, "F_UNLCK");
    assert_eq!(
        (d.u64().unwrap(), d.u64().unwrap(), d.u32().unwrap()),
        (5, 10, 77)
    );
    assert_eq!(d.string().unwrap(), b"guest");
    assert_eq!(
        c.call(msg::TFLUSH, |e| {
            e.u16(3);
        })
        .unwrap(),
        b""
    );
    let xw = c.call(msg::TXATTRWALK, |e| {
        e.u32(0).u32(9).string(b"security.capability").unwrap();
    });
    assert_eq!(xw, Err(Errno::EOPNOTSUPP));
    let xc = c.call(msg::TXATTRCREATE, |e| {
        e.u32(1).string(b"user.x").unwrap().u64(3).u32(0);
    });
    assert_eq!(xc, Err(Errno::EOPNOTSUPP));
}
