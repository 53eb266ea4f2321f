//! virtio-blk (`-d/--disk FILE[,ro]`): a raw image file or a host block
//! device as the guest's `/dev/vdX`.
//!
//! One request queue, served on the device's own thread with
//! `pread`/`pwrite` on the image. FLUSH is `fdatasync`, so a flush the
//! guest saw complete survives lkvm being killed (and the host crashing).
//!
//! DISCARD is offered only when the image is a regular file on a file
//! system that punches holes. [`Block::open`] asks the file system itself:
//! it punches a hole *past the end of the file* (`PUNCH_HOLE|KEEP_SIZE`),
//! which changes nothing but fails with `EOPNOTSUPP` where hole punching is
//! not implemented. This beats a list of file system types, which cannot
//! know about NFS servers, FUSE file systems or new kernels. Host block
//! devices get no DISCARD (their `fallocate` refuses ranges past the end,
//! so the probe would not work, and discarding on a real disk deserves an
//! explicit option). WRITE_ZEROES is offered on every writable disk: it
//! zeros in place when the file system can, punches and reallocates on
//! tmpfs, and otherwise writes zeros.

mod request;
#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::mem::{offset_of, size_of};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::FallocateFlags;
use virtio_bindings::virtio_blk::{
    virtio_blk_config, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH,
    VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_ID_BYTES,
};

use self::request::{
    fallocate_range, Disk, MAX_DISCARD_SECTORS, MAX_WRITE_ZEROES_SECTORS, MAX_ZERO_SEGMENTS, SECTOR,
};
use super::chain::serve_queue;
use super::device::{read_config_bytes, Activation, Error as DeviceError, VirtioDevice};
use super::worker::{drain, AsFdBorrowed, Flow, WorkerBuilder, WorkerSlot};
use super::{features, ids, QUEUE_SIZE};
use crate::bus::lock;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--disk '{0}': no image path before the options")]
    EmptyPath(String),
    #[error("--disk '{arg}': unknown option '{opt}' (expected FILE or FILE,ro)")]
    UnknownOption { arg: String, opt: String },
    #[error("--disk '{0}': 'direct' (O_DIRECT) is not supported yet; drop it")]
    Direct(String),
    #[error("--disk '{0}': SCSI disks (scsi:WWPN:TPGT, vhost-scsi) are not supported yet")]
    Scsi(String),
    #[error("disk image {path} is a QCOW{version} image; QCOW images are not supported yet (convert it: qemu-img convert -O raw {path} {path}.raw)", path = .0.display(), version = .1)]
    Qcow(PathBuf, u32),
    #[error("disk image {0}: no such file")]
    Missing(PathBuf),
    #[error(
        "{0} is a directory; booting a directory as a rootfs (lkvm setup) is not supported yet"
    )]
    Directory(PathBuf),
    #[error("disk image {0}: not a regular file or a block device")]
    NotADisk(PathBuf),
    #[error(
        "disk image {path}: cannot open it read-write ({source}); add ',ro' to use it read-only"
    )]
    NotWritable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("disk image {path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("disk image {path}: cannot find its size: {source}")]
    Size {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One `--disk` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    pub path: PathBuf,
    pub read_only: bool,
}

impl DiskSpec {
    /// Parses kvmtool's `FILE[,ro]`. The path cannot contain a comma.
    pub fn parse(arg: &str) -> Result<DiskSpec, Error> {
        if arg.starts_with("scsi:") {
            return Err(Error::Scsi(arg.to_string()));
        }
        let mut parts = arg.split(',');
        let path = parts.next().unwrap_or_default();
        if path.is_empty() {
            return Err(Error::EmptyPath(arg.to_string()));
        }
        let mut read_only = false;
        for opt in parts {
            match opt {
                "ro" => read_only = true,
                "direct" => return Err(Error::Direct(arg.to_string())),
                other => {
                    return Err(Error::UnknownOption {
                        arg: arg.to_string(),
                        opt: other.to_string(),
                    })
                }
            }
        }
        Ok(DiskSpec {
            path: PathBuf::from(path),
            read_only,
        })
    }
}

/// The QCOW version of an image, if it is one: serving its metadata as
/// raw sectors would hand the guest a garbled disk.
fn qcow_version(file: &File) -> Option<u32> {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; 8];
    file.read_exact_at(&mut head, 0).ok()?;
    let (magic, version) = head.split_at(4);
    (magic == b"QFI\xfb")
        .then(|| u32::from_be_bytes([version[0], version[1], version[2], version[3]]))
}

/// A virtio-blk device over one image.
pub struct Block {
    path: PathBuf,
    sectors: u64,
    features: u64,
    config: Vec<u8>,
    disk: Arc<Mutex<Disk>>,
    worker: WorkerSlot,
}

impl Block {
    /// Opens the image of `spec`; `index` is its position among the disks
    /// (it names the device's thread and makes its serial, `lkvm-INDEX`).
    pub fn open(spec: &DiskSpec, index: usize) -> Result<Block, Error> {
        Self::open_with(spec, index, open_file)
    }

    /// [`Block::open`] with the `open(2)` call replaced, so tests can play
    /// a read-only file system while running as root.
    fn open_with(
        spec: &DiskSpec,
        index: usize,
        open: impl Fn(&Path, bool) -> io::Result<File>,
    ) -> Result<Block, Error> {
        let path = spec.path.clone();
        let meta = std::fs::metadata(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => Error::Missing(path.clone()),
            _ => Error::Open {
                path: path.clone(),
                source,
            },
        })?;
        if meta.is_dir() {
            return Err(Error::Directory(path));
        }
        let is_file = meta.is_file();
        if !is_file && !meta.file_type().is_block_device() {
            return Err(Error::NotADisk(path));
        }
        let file = match open(&path, !spec.read_only) {
            Ok(f) => f,
            Err(source) => {
                let refused = matches!(
                    Errno::from_raw(source.raw_os_error().unwrap_or(0)),
                    Errno::EACCES | Errno::EROFS | Errno::EPERM
                );
                // Only blame the write access if reading would work.
                return Err(
                    if !spec.read_only && refused && open(&path, false).is_ok() {
                        Error::NotWritable { path, source }
                    } else {
                        Error::Open { path, source }
                    },
                );
            }
        };
        if let Some(version) = qcow_version(&file) {
            return Err(Error::Qcow(path, version));
        }
        // Seeking works for block devices too, whose metadata size is 0.
        let size = (&file)
            .seek(SeekFrom::End(0))
            .map_err(|source| Error::Size {
                path: path.clone(),
                source,
            })?;
        let sectors = size.div_ceil(SECTOR);
        let can_punch = !spec.read_only && is_file && punches_holes(&file, size);
        let label = format!("virtio-blk{index}");
        log::debug!(
            "{label}: {} ({sectors} sectors{}{})",
            path.display(),
            if spec.read_only { ", read-only" } else { "" },
            if can_punch { ", discard" } else { "" }
        );
        let features = offered_features(spec.read_only, can_punch);
        let alignment = u32::try_from(std::os::unix::fs::MetadataExt::blksize(&meta) / SECTOR)
            .unwrap_or(1)
            .max(1);
        let config = config_space(sectors, features, alignment, can_punch);
        let disk = Disk::new(
            label,
            file,
            sectors * SECTOR,
            spec.read_only,
            can_punch,
            serial(index),
        );
        Ok(Block {
            path,
            sectors,
            features,
            config,
            disk: Arc::new(Mutex::new(disk)),
            worker: WorkerSlot::default(),
        })
    }

    /// The image this device serves.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The capacity in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Whether DISCARD is offered (see the module documentation).
    pub fn discard(&self) -> bool {
        self.features & (1 << VIRTIO_BLK_F_DISCARD) != 0
    }
}

fn open_file(path: &Path, write: bool) -> io::Result<File> {
    OpenOptions::new().read(true).write(write).open(path)
}

/// Whether the file system punches holes in `file`: a punch past its end
/// changes nothing where it works and fails where it does not.
fn punches_holes(file: &File, size: u64) -> bool {
    let past_end = size.div_ceil(1 << 20).saturating_add(1) << 20;
    let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    match fallocate_range(file, flags, past_end, 1 << 16) {
        Ok(()) => true,
        Err(e) => {
            log::debug!("virtio-blk: no hole punching ({e}): DISCARD not offered");
            false
        }
    }
}

fn offered_features(read_only: bool, can_punch: bool) -> u64 {
    let mut f = features::RING_INDIRECT_DESC
        | 1 << VIRTIO_BLK_F_SEG_MAX
        | 1 << VIRTIO_BLK_F_BLK_SIZE
        | 1 << VIRTIO_BLK_F_FLUSH;
    if read_only {
        f |= 1 << VIRTIO_BLK_F_RO;
    } else {
        f |= 1 << VIRTIO_BLK_F_WRITE_ZEROES;
        if can_punch {
            f |= 1 << VIRTIO_BLK_F_DISCARD;
        }
    }
    f
}

/// The configuration space (virtio 1.2, 5.2.4), little-endian, laid out
/// by the bindings' `virtio_blk_config`.
fn config_space(sectors: u64, features: u64, alignment: u32, can_punch: bool) -> Vec<u8> {
    let mut c = vec![0u8; size_of::<virtio_blk_config>()];
    let mut put = |at: usize, bytes: &[u8]| {
        if let Some(dst) = c.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    };
    put(
        offset_of!(virtio_blk_config, capacity),
        &sectors.to_le_bytes(),
    );
    // A chain holds the header and the status besides the data.
    let seg_max = u32::from(QUEUE_SIZE) - 2;
    put(
        offset_of!(virtio_blk_config, seg_max),
        &seg_max.to_le_bytes(),
    );
    put(
        offset_of!(virtio_blk_config, blk_size),
        &(SECTOR as u32).to_le_bytes(),
    );
    if features & (1 << VIRTIO_BLK_F_DISCARD) != 0 {
        put(
            offset_of!(virtio_blk_config, max_discard_sectors),
            &MAX_DISCARD_SECTORS.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, max_discard_seg),
            &MAX_ZERO_SEGMENTS.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, discard_sector_alignment),
            &alignment.to_le_bytes(),
        );
    }
    if features & (1 << VIRTIO_BLK_F_WRITE_ZEROES) != 0 {
        put(
            offset_of!(virtio_blk_config, max_write_zeroes_sectors),
            &MAX_WRITE_ZEROES_SECTORS.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, max_write_zeroes_seg),
            &MAX_ZERO_SEGMENTS.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, write_zeroes_may_unmap),
            &[u8::from(can_punch)],
        );
    }
    c
}

/// The GET_ID answer: `lkvm-INDEX`, NUL padded to 20 bytes.
fn serial(index: usize) -> [u8; VIRTIO_BLK_ID_BYTES as usize] {
    let mut id = [0u8; VIRTIO_BLK_ID_BYTES as usize];
    let text = format!("lkvm-{index}");
    for (d, s) in id.iter_mut().zip(text.bytes()) {
        *d = s;
    }
    id
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        ids::BLOCK
    }

    fn name(&self) -> &'static str {
        "virtio-blk"
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, mut act: Activation) -> Result<(), DeviceError> {
        let name = self.name();
        let mut q = act
            .take_queue(0)
            .ok_or(DeviceError::MissingQueue(name, 0))?;
        let (mem, irq) = (act.mem, act.irq);
        let disk = Arc::clone(&self.disk);
        let label = lock(&disk).label.clone();
        let wb = WorkerBuilder::new().map_err(|e| DeviceError::Worker(name, e))?;
        wb.watch(q.kick.as_fd_borrowed(), 0)
            .map_err(|e| DeviceError::Worker(name, e))?;
        let thread = label.clone();
        let w = wb
            .spawn(&thread, move |_| {
                drain(&q.kick);
                let mut d = lock(&disk);
                // No bound on the chain: the data goes through the bounce
                // buffer, and Chain::parse keeps every buffer in guest RAM.
                serve_queue(&label, 0, &mut q.queue, &mem, irq.as_ref(), u64::MAX, |c| {
                    d.handle(c)
                });
                Flow::Continue
            })
            .map_err(|e| DeviceError::Worker(name, e))?;
        self.worker.set(w);
        Ok(())
    }

    fn reset(&mut self) {
        self.worker.stop();
    }
}
