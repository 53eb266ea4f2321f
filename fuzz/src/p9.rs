//! The 9p escape oracle: a sandbox with the served `share/` and a sibling
//! `outside/` holding sentinel files whose names and contents carry a
//! secret drawn at process start. Before every input `share/` is laid anew
//! (files, a directory, and symlinks out of it: `../outside`, the secret
//! file, `/`, `/tmp`, `/etc`, `../..`); after every input, and after every
//! reply, the oracle aborts the process when the guest reached outside:
//!
//! - anything under `outside/` changed: its entries, their type, mode,
//!   owner, size, link count, ctime, contents or symlink targets;
//! - the sandbox holds anything but `share/` and `outside/`, or its own
//!   mode or owner changed;
//! - a new entry in the sandbox's parent, the temp dir, `/` or `/etc`
//!   carries a name the input contains;
//! - a reply carries the secret while no file, name or symlink target in
//!   `share/` does (the guest may write the secret itself once it has
//!   learnt it, which is no escape);
//! - a reply carries a qid (Rattach, Rwalk, Rlopen, Rlcreate, Rmkdir,
//!   Rsymlink, Rmknod, Rgetattr, Rreaddir) naming the inode of the
//!   sandbox, its parent, `outside/` or anything in it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

use crate::tempdir::process_dir;

/// What the oracle knows of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    nlink: u64,
    ctime: (i64, i64),
    /// File contents or symlink target.
    data: Vec<u8>,
}

type Tree = BTreeMap<PathBuf, Entry>;

/// How much of a file the oracle reads.
const READ_LIMIT: u64 = 1 << 20;

fn entry(p: &Path) -> Option<Entry> {
    let m = fs::symlink_metadata(p).ok()?;
    let data = if m.file_type().is_symlink() {
        fs::read_link(p)
            .map(|t| t.into_os_string().into_encoded_bytes())
            .unwrap_or_default()
    } else if m.is_file() {
        // The first MiB: the guest may well make a sparse file of
        // terabytes in the share (its size is compared too).
        let mut v = Vec::new();
        if let Ok(f) = fs::File::open(p) {
            let _ = f.take(READ_LIMIT).read_to_end(&mut v);
        }
        v
    } else {
        Vec::new()
    };
    Some(Entry {
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        size: if m.is_dir() { 0 } else { m.size() },
        nlink: m.nlink(),
        ctime: (m.ctime(), m.ctime_nsec()),
        data,
    })
}

/// Every entry below `dir` (and `dir` itself), no symlink followed.
fn tree(dir: &Path) -> Tree {
    let mut out = Tree::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        if let Some(e) = entry(&d) {
            out.insert(d.clone(), e);
        }
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(p),
                _ => {
                    if let Some(en) = entry(&p) {
                        out.insert(p, en);
                    }
                }
            }
        }
    }
    out
}

fn names(dir: &Path) -> BTreeSet<Vec<u8>> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().into_encoded_bytes())
                .collect()
        })
        .unwrap_or_default()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The sandbox of one fuzzing process.
pub struct Sandbox {
    pub dir: PathBuf,
    pub share: PathBuf,
    pub outside: PathBuf,
    secret: Vec<u8>,
    outside_tree: Tree,
    /// `share/` as [`Sandbox::reset`] lays it, once laid.
    share_tree: Option<Tree>,
    sandbox_entry: Entry,
    /// Inodes on the share's file system that no reply may name.
    forbidden: HashSet<u64>,
    /// Directories where a new entry named by the input is an escape.
    watched: Vec<(PathBuf, BTreeSet<Vec<u8>>)>,
}

fn secret() -> Vec<u8> {
    let mut r = [0u8; 8];
    // SAFETY: getrandom writes at most `r.len()` bytes into `r`.
    let n = unsafe { libc::getrandom(r.as_mut_ptr().cast(), r.len(), 0) };
    if n != r.len() as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        r = (t as u64 ^ u64::from(std::process::id())).to_le_bytes();
    }
    let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
    format!("LKVMSECRET{hex}").into_bytes()
}

fn must<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("9p sandbox: {what}: {e}"),
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        // tmpfs where there is one: creating and removing the share's
        // files for every input is several times faster there than on a
        // journalling file system.
        let dir = process_dir("9p", Some(Path::new("/dev/shm")));
        let share = dir.join("share");
        let outside = dir.join("outside");
        let secret = secret();
        let s = String::from_utf8_lossy(&secret).into_owned();
        must(fs::create_dir_all(outside.join("sub")), "outside");
        must(
            fs::write(outside.join(&s), [&secret[..], b"\n"].concat()),
            "secret",
        );
        must(
            fs::write(
                outside.join("sub").join(format!("{s}-2")),
                [b"second ", &secret[..]].concat(),
            ),
            "secret 2",
        );
        must(symlink(&s, outside.join("link")), "outside link");
        must(fs::create_dir_all(&share), "share");
        let parent = dir.parent().map(Path::to_path_buf).unwrap_or_default();
        let dev = must(fs::metadata(&dir), "sandbox").dev();
        let outside_tree = tree(&outside);
        let mut forbidden: HashSet<u64> = HashSet::new();
        for p in outside_tree.keys().chain([&dir, &parent]) {
            if let Ok(m) = fs::symlink_metadata(p) {
                if m.dev() == dev {
                    forbidden.insert(m.ino());
                }
            }
        }
        for p in ["/", "/etc", "/tmp"] {
            if let Ok(m) = fs::metadata(p) {
                if m.dev() == dev {
                    forbidden.insert(m.ino());
                }
            }
        }
        let watched = [parent, std::env::temp_dir(), "/".into(), "/etc".into()]
            .into_iter()
            .map(|d| {
                let n = names(&d);
                (d, n)
            })
            .collect();
        let sandbox_entry = must(entry(&dir).ok_or("gone"), "sandbox entry");
        let mut sb = Sandbox {
            dir,
            share,
            outside,
            secret,
            outside_tree,
            share_tree: None,
            sandbox_entry,
            forbidden,
            watched,
        };
        sb.reset();
        sb
    }

    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// Lays `share/` anew: the same tree before every input. Skipped when
    /// the last input left it as it was (every change to an entry moves
    /// its ctime or its directory's).
    pub fn reset(&mut self) {
        if self.share_tree.as_ref() == Some(&tree(&self.share)) {
            return;
        }
        self.lay_share();
        self.share_tree = Some(tree(&self.share));
    }

    fn lay_share(&self) {
        let share = &self.share;
        if fs::symlink_metadata(share).is_ok() {
            must(fs::remove_dir_all(share), "clearing share");
        }
        must(fs::create_dir(share), "share");
        let s = String::from_utf8_lossy(&self.secret).into_owned();
        must(
            fs::write(share.join("file"), b"hello from the share\n"),
            "file",
        );
        must(fs::write(share.join("empty"), b""), "empty");
        must(fs::create_dir_all(share.join("dir/deeper")), "dir");
        must(fs::write(share.join("dir/inner"), b"inner\n"), "inner");
        must(
            fs::hard_link(share.join("file"), share.join("hard")),
            "hard",
        );
        for (target, link) in [
            ("../outside".to_string(), "rel"),
            (format!("../outside/{s}"), "relsecret"),
            (self.outside.to_string_lossy().into_owned(), "abs"),
            (format!("{}/{s}", self.outside.display()), "abssecret"),
            ("/".to_string(), "root"),
            ("/tmp".to_string(), "tmp"),
            ("/etc".to_string(), "etc"),
            ("..".to_string(), "up"),
            (".".to_string(), "self"),
            ("loop".to_string(), "loop"),
            ("../../outside".to_string(), "dir/up2"),
            ("../..".to_string(), "dir/deeper/upup"),
            ("../../../outside/link".to_string(), "dir/deeper/outlink"),
        ] {
            must(symlink(target, share.join(link)), link);
        }
    }

    /// Aborts when the input changed or created anything outside the share.
    pub fn check_fs(&self, input: &[u8]) {
        let now = tree(&self.outside);
        if now != self.outside_tree {
            let changed: Vec<_> = now
                .iter()
                .filter(|(p, e)| self.outside_tree.get(*p) != Some(e))
                .map(|(p, _)| p.clone())
                .chain(
                    self.outside_tree
                        .keys()
                        .filter(|p| !now.contains_key(*p))
                        .cloned(),
                )
                .collect();
            escape(&format!("outside/ changed: {changed:?}"));
        }
        let listing = names(&self.dir);
        let want: BTreeSet<Vec<u8>> = [b"share".to_vec(), b"outside".to_vec()].into();
        if listing != want {
            escape(&format!(
                "the sandbox holds {:?}",
                listing
                    .iter()
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .collect::<Vec<_>>()
            ));
        }
        match entry(&self.dir) {
            Some(e) if e.mode == self.sandbox_entry.mode && e.uid == self.sandbox_entry.uid => {}
            other => escape(&format!("the sandbox directory changed: {other:?}")),
        }
        for (dir, before) in &self.watched {
            for n in names(dir).difference(before) {
                if n.len() >= 3 && contains(input, n) {
                    escape(&format!(
                        "{} gained {:?}, a name the input contains",
                        dir.display(),
                        String::from_utf8_lossy(n)
                    ));
                }
            }
        }
    }

    /// Whether the share itself holds `needle` (in a name, a file or a
    /// symlink target): then a reply may carry it without an escape.
    fn share_holds(&self, needle: &[u8]) -> bool {
        tree(&self.share).iter().any(|(p, e)| {
            contains(&e.data, needle) || contains(p.as_os_str().as_encoded_bytes(), needle)
        })
    }

    /// Aborts when `reply` shows something from outside the share.
    pub fn check_reply(&self, reply: &[u8]) {
        if contains(reply, &self.secret) && !self.share_holds(&self.secret) {
            escape("a reply carries the secret from outside/");
        }
        for q in qids(reply) {
            if self.forbidden.contains(&q) {
                escape(&format!(
                    "a reply names inode {q}, which is outside the share"
                ));
            }
        }
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

fn escape(what: &str) -> ! {
    eprintln!("9p ESCAPE: {what}");
    std::process::abort();
}

/// The qid paths (inode numbers) a reply carries.
pub fn qids(reply: &[u8]) -> Vec<u64> {
    const QID: usize = 13;
    let path = |b: &[u8], at: usize| -> Option<u64> {
        let raw = b.get(at + 5..at + QID)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(raw);
        Some(u64::from_le_bytes(a))
    };
    let Some(&kind) = reply.get(4) else {
        return Vec::new();
    };
    let body = reply.get(7..).unwrap_or_default();
    let mut out = Vec::new();
    match kind {
        // Rattach, Rlopen, Rlcreate, Rsymlink, Rmknod, Rmkdir: qid first.
        105 | 13 | 15 | 17 | 19 | 73 => out.extend(path(body, 0)),
        // Rgetattr: valid[8] qid
        25 => out.extend(path(body, 8)),
        // Rwalk: nwqid[2] qid...
        111 => {
            let n = body
                .get(..2)
                .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
            for i in 0..usize::from(n) {
                out.extend(path(body, 2 + QID * i));
            }
        }
        // Rreaddir: count[4] { qid[13] offset[8] type[1] name[s] }
        41 => {
            let mut at = 4;
            while let Some(p) = path(body, at) {
                out.push(p);
                let name_at = at + QID + 9;
                let Some(l) = body.get(name_at..name_at + 2) else {
                    break;
                };
                at = name_at + 2 + usize::from(u16::from_le_bytes([l[0], l[1]]));
            }
        }
        _ => {}
    }
    out
}
