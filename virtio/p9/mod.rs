//! virtio-9p (`--9p DIR,TAG`): shares host directory DIR with the guest,
//! which mounts it with
//! `mount -t 9p -o trans=virtio,version=9p2000.L TAG /mnt`.
//!
//! The device has one request queue; each chain's readable part is a
//! 9P2000.L T-message and its writable part receives the R-message
//! ([`server`]). The guest names files by walking names from the root
//! of the share, and nothing it sends can reach outside DIR: paths are
//! resolved below the root's fd without following symlinks ([`path`]),
//! device nodes are neither opened nor created, and every reply is sized
//! to the buffers the guest gave.
//!
//! The server runs as lkvm's user. When that is root, new files get the
//! guest's owner and group and setattr changes them; otherwise they
//! belong to lkvm's user and chown is whatever the host allows it.

mod fid;
mod host;
mod ops;
mod path;
mod server;
mod wire;

#[cfg(test)]
mod tests;

use std::io::{Read, Write};
use std::path::PathBuf;

use super::chain::{serve_queue, Chain};
use super::device::{self, read_config_bytes, Activation, VirtioDevice};
use super::worker::{drain, AsFdBorrowed, Flow, WorkerBuilder, WorkerSlot};
use super::{ids, QUEUE_SIZE};

use server::Server;
pub use server::MAX_MSIZE;

/// The device offers its mount tag in config space (virtio 1.2, 5.15).
pub const VIRTIO_9P_MOUNT_TAG: u64 = 1;
/// The longest mount tag lkvm accepts.
pub const MAX_TAG_LEN: usize = 64;

/// The most one chain may hold: a request and a reply of msize each,
/// plus slack for how the driver splits them.
const CHAIN_LIMIT: u64 = 2 * MAX_MSIZE as u64 + 8192;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--9p {0:?}: expected DIR,TAG")]
    Syntax(String),
    #[error("--9p {0:?}: the mount tag is empty")]
    EmptyTag(String),
    #[error("9p mount tag {tag:?} is {len} bytes long; the limit is {MAX_TAG_LEN}")]
    TagTooLong { tag: String, len: usize },
    #[error("9p share directory {}: {source}", .dir.display())]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("9p share {} is not a directory", .0.display())]
    NotADir(PathBuf),
    #[error("cannot open 9p share directory {}: {source}", .dir.display())]
    Open {
        dir: PathBuf,
        source: nix::errno::Errno,
    },
}

/// kvmtool's mount tag for `--9p DIR` without one.
pub const DEFAULT_TAG: &str = "kvm_9p";

/// One `--9p DIR[,TAG]` option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareSpec {
    pub dir: PathBuf,
    pub tag: String,
    /// Nothing the guest sends may change the share.
    pub read_only: bool,
}

impl ShareSpec {
    /// Parses kvmtool's "DIR[,TAG]". The tag is what follows the last
    /// comma, so DIR may contain commas; without one the tag is
    /// kvmtool's `kvm_9p`. DIR must be an existing directory and TAG 1 to
    /// 64 bytes.
    pub fn parse(arg: &str) -> Result<ShareSpec, Error> {
        let (dir, tag) = arg.rsplit_once(',').unwrap_or((arg, DEFAULT_TAG));
        if dir.is_empty() {
            return Err(Error::Syntax(arg.to_string()));
        }
        if tag.is_empty() {
            return Err(Error::EmptyTag(arg.to_string()));
        }
        if tag.len() > MAX_TAG_LEN {
            return Err(Error::TagTooLong {
                tag: tag.to_string(),
                len: tag.len(),
            });
        }
        let dir = PathBuf::from(dir);
        let meta = std::fs::metadata(&dir).map_err(|source| Error::Dir {
            dir: dir.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(Error::NotADir(dir));
        }
        Ok(ShareSpec {
            dir,
            tag: tag.to_string(),
            read_only: false,
        })
    }
}

/// The virtio-9p device for one share.
pub struct Virtio9p {
    /// The share's root, opened once; each activation serves a dup.
    root: path::Root,
    tag: String,
    read_only: bool,
    /// le16 tag length, then the tag bytes.
    config: Vec<u8>,
    worker: WorkerSlot,
}

impl Virtio9p {
    /// Opens the share's directory; the tag must already be valid (see
    /// [`ShareSpec::parse`]).
    pub fn new(spec: &ShareSpec) -> Result<Virtio9p, Error> {
        if spec.tag.is_empty() {
            return Err(Error::EmptyTag(spec.tag.clone()));
        }
        let len = u16::try_from(spec.tag.len())
            .ok()
            .filter(|n| usize::from(*n) <= MAX_TAG_LEN)
            .ok_or_else(|| Error::TagTooLong {
                tag: spec.tag.clone(),
                len: spec.tag.len(),
            })?;
        let root = path::Root::open(&spec.dir).map_err(|source| Error::Open {
            dir: spec.dir.clone(),
            source,
        })?;
        let mut config = len.to_le_bytes().to_vec();
        config.extend_from_slice(spec.tag.as_bytes());
        Ok(Virtio9p {
            root,
            tag: spec.tag.clone(),
            read_only: spec.read_only,
            config,
            worker: WorkerSlot::default(),
        })
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }
}

/// Answers the request in one chain; returns the bytes written.
fn serve_chain(server: &mut Server, c: &mut Chain<'_>) -> u32 {
    // A request larger than msize is refused from its size field; its
    // first msize bytes are all that is worth reading.
    let want = c.reader.available_bytes().min(server.msize() as usize);
    let mut req = vec![0u8; want];
    if let Err(e) = c.reader.read_exact(&mut req) {
        log::debug!("virtio-9p: descriptor {}: {e}", c.head);
        return 0;
    }
    let reply = server.handle(&req, c.writer.available_bytes());
    match c.writer.write_all(&reply) {
        Ok(()) => u32::try_from(reply.len()).unwrap_or(0),
        Err(e) => {
            log::debug!("virtio-9p: descriptor {}: {e}", c.head);
            0
        }
    }
}

impl VirtioDevice for Virtio9p {
    fn device_type(&self) -> u32 {
        ids::NINE_P
    }

    fn name(&self) -> &'static str {
        "virtio-9p"
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        VIRTIO_9P_MOUNT_TAG
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, mut act: Activation) -> Result<(), device::Error> {
        let name = self.name();
        let mut q = act
            .take_queue(0)
            .ok_or(device::Error::MissingQueue(name, 0))?;
        let root = self
            .root
            .fd()
            .try_clone_to_owned()
            .map_err(|e| device::Error::Worker(name, e))?;
        // A fresh session per activation: a reset forgets every fid.
        let mut server = Server::new(path::Root::from_fd(root), self.read_only);
        let (mem, irq) = (act.mem, act.irq);
        let wb = WorkerBuilder::new().map_err(|e| device::Error::Worker(name, e))?;
        wb.watch(q.kick.as_fd_borrowed(), 0)
            .map_err(|e| device::Error::Worker(name, e))?;
        let w = wb
            .spawn(name, move |_| {
                drain(&q.kick);
                serve_queue(
                    name,
                    0,
                    &mut q.queue,
                    &mem,
                    irq.as_ref(),
                    CHAIN_LIMIT,
                    |mut c| serve_chain(&mut server, &mut c),
                );
                Flow::Continue
            })
            .map_err(|e| device::Error::Worker(name, e))?;
        self.worker.set(w);
        Ok(())
    }

    fn reset(&mut self) {
        self.worker.stop();
    }
}
