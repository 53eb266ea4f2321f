//! Serving one virtio-blk request (virtio 1.2, 5.2.6): a 16-byte header the
//! driver wrote, then data (read for OUT/DISCARD/WRITE_ZEROES, written for
//! IN/GET_ID), then one status byte the device writes last.
//!
//! Data moves between the image and guest memory through one reusable bounce
//! buffer of [`BOUNCE`] bytes, so a request of any size costs no allocation.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;

use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};
use virtio_queue::{Reader, Writer};

use crate::virtio::chain::{Chain, Used};

/// Sectors are 512 bytes whatever the block size (virtio 1.2, 5.2.6).
pub const SECTOR: u64 = 512;
/// The bounce buffer: large enough that a typical request is one or two
/// syscalls, small enough to keep per disk.
pub const BOUNCE: usize = 128 << 10;
/// Segments one DISCARD or WRITE_ZEROES request may carry.
pub const MAX_ZERO_SEGMENTS: u32 = 32;
/// Sectors one DISCARD segment may cover: punching a hole is cheap at any
/// size.
pub const MAX_DISCARD_SECTORS: u32 = u32::MAX;
/// Sectors one WRITE_ZEROES segment may cover (1 GiB): when the host file
/// system cannot zero a range in place lkvm writes the zeros, and the
/// worker should not vanish into one huge request.
pub const MAX_WRITE_ZEROES_SECTORS: u32 = 1 << 21;

const ID_BYTES: usize = VIRTIO_BLK_ID_BYTES as usize;
const SEGMENT_BYTES: usize = 16;

/// Why a request failed, and the status the driver gets for it.
struct Refusal {
    status: u32,
    why: String,
    /// The host file failed (not the guest's fault): worth a warning.
    host: bool,
}

fn ioerr(why: impl Into<String>) -> Refusal {
    Refusal {
        status: VIRTIO_BLK_S_IOERR,
        why: why.into(),
        host: false,
    }
}

fn unsupp(why: impl Into<String>) -> Refusal {
    Refusal {
        status: VIRTIO_BLK_S_UNSUPP,
        why: why.into(),
        host: false,
    }
}

fn host(what: &str, e: impl std::fmt::Display) -> Refusal {
    Refusal {
        status: VIRTIO_BLK_S_IOERR,
        why: format!("{what}: {e}"),
        host: true,
    }
}

/// An open image and what lkvm offered the driver for it.
pub struct Disk {
    pub(super) label: String,
    pub(super) file: File,
    /// The image's size in bytes, rounded up to whole sectors: a file whose
    /// size is not a multiple of 512 reads as zero-padded, and a write to
    /// that last sector makes the file whole.
    pub(super) bytes: u64,
    pub(super) read_only: bool,
    /// The host file system punches holes in this file (DISCARD offered).
    pub(super) can_punch: bool,
    pub(super) id: [u8; ID_BYTES],
    bounce: Vec<u8>,
}

/// One DISCARD or WRITE_ZEROES range, checked.
#[derive(Clone, Copy, Default)]
struct Range {
    offset: u64,
    len: u64,
    unmap: bool,
}

impl Disk {
    pub fn new(
        label: String,
        file: File,
        bytes: u64,
        read_only: bool,
        can_punch: bool,
        id: [u8; ID_BYTES],
    ) -> Self {
        Disk {
            label,
            file,
            bytes,
            read_only,
            can_punch,
            id,
            bounce: vec![0; BOUNCE],
        }
    }

    /// Serves one chain and returns how many bytes it wrote into it.
    pub fn handle(&mut self, chain: Chain<'_>) -> Used {
        let Chain {
            head,
            mut reader,
            writer: mut data,
        } = chain;
        let room = data.available_bytes();
        if room == 0 {
            log::debug!(
                "{}: request {head} has no room for a status byte",
                self.label
            );
            return 0;
        }
        let mut status = match data.split_at(room - 1) {
            Ok(s) => s,
            Err(e) => {
                log::debug!("{}: request {head}: {e}", self.label);
                return 0;
            }
        };
        let code = match self.execute(&mut reader, &mut data) {
            Ok(()) => VIRTIO_BLK_S_OK,
            Err(r) => {
                if r.host {
                    log::warn!("{}: request {head}: {}", self.label, r.why);
                } else {
                    log::debug!("{}: request {head}: {}", self.label, r.why);
                }
                r.status
            }
        };
        // The status codes are all below 256.
        if let Err(e) = status.write_all(&[code as u8]) {
            log::debug!("{}: request {head}: status byte: {e}", self.label);
        }
        u32::try_from(data.bytes_written() + status.bytes_written()).unwrap_or(u32::MAX)
    }

    fn execute(&mut self, reader: &mut Reader<'_>, data: &mut Writer<'_>) -> Result<(), Refusal> {
        let mut kind = [0u8; 4];
        let mut ioprio = [0u8; 4];
        let mut sector = [0u8; 8];
        reader
            .read_exact(&mut kind)
            .and_then(|()| reader.read_exact(&mut ioprio))
            .and_then(|()| reader.read_exact(&mut sector))
            .map_err(|_| ioerr("header shorter than 16 bytes"))?;
        let sector = u64::from_le_bytes(sector);
        match u32::from_le_bytes(kind) {
            VIRTIO_BLK_T_IN => self.read(sector, data),
            VIRTIO_BLK_T_OUT => self.write(sector, reader),
            VIRTIO_BLK_T_FLUSH => self.file.sync_data().map_err(|e| host("fdatasync", e)),
            VIRTIO_BLK_T_GET_ID => {
                let n = data.available_bytes().min(ID_BYTES);
                let id = self.id.get(..n).unwrap_or_default();
                data.write_all(id)
                    .map_err(|e| ioerr(format!("writing the id: {e}")))
            }
            k @ (VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES) => self.zero(k, reader),
            other => Err(unsupp(format!("request type {other} is not supported"))),
        }
    }

    /// Checks that `len` bytes from `sector` are whole sectors inside the
    /// disk and returns the byte offset.
    fn locate(&self, sector: u64, len: u64) -> Result<u64, Refusal> {
        if len % SECTOR != 0 {
            return Err(ioerr(format!("length {len} is not a multiple of 512")));
        }
        sector
            .checked_mul(SECTOR)
            .filter(|off| off.checked_add(len).is_some_and(|end| end <= self.bytes))
            .ok_or_else(|| {
                ioerr(format!(
                    "{len} bytes at sector {sector} are beyond the disk's {} sectors",
                    self.bytes / SECTOR
                ))
            })
    }

    fn read(&mut self, sector: u64, data: &mut Writer<'_>) -> Result<(), Refusal> {
        let total = data.available_bytes();
        let mut offset = self.locate(sector, total as u64)?;
        let mut left = total;
        while left > 0 {
            let n = left.min(self.bounce.len());
            let buf = self.bounce.get_mut(..n).unwrap_or_default();
            let got = read_full_at(&self.file, buf, offset).map_err(|e| host("read", e))?;
            // Past the end of a file whose size is not a whole number of
            // sectors: the rest of the last sector reads as zeros.
            buf.get_mut(got..).unwrap_or_default().fill(0);
            data.write_all(buf)
                .map_err(|e| ioerr(format!("guest buffer: {e}")))?;
            offset += n as u64;
            left -= n;
        }
        Ok(())
    }

    fn write(&mut self, sector: u64, reader: &mut Reader<'_>) -> Result<(), Refusal> {
        if self.read_only {
            return Err(ioerr("write to a read-only disk"));
        }
        let total = reader.available_bytes();
        let mut offset = self.locate(sector, total as u64)?;
        let mut left = total;
        while left > 0 {
            let n = left.min(self.bounce.len());
            let buf = self.bounce.get_mut(..n).unwrap_or_default();
            reader
                .read_exact(buf)
                .map_err(|e| ioerr(format!("guest buffer: {e}")))?;
            self.file
                .write_all_at(buf, offset)
                .map_err(|e| host("write", e))?;
            offset += n as u64;
            left -= n;
        }
        Ok(())
    }

    /// DISCARD and WRITE_ZEROES: every segment is checked before any is
    /// acted on, so a bad request changes nothing.
    fn zero(&mut self, kind: u32, reader: &mut Reader<'_>) -> Result<(), Refusal> {
        let discard = kind == VIRTIO_BLK_T_DISCARD;
        let what = if discard { "discard" } else { "write-zeroes" };
        if self.read_only {
            return Err(ioerr(format!("{what} on a read-only disk")));
        }
        if discard && !self.can_punch {
            return Err(unsupp("discard was not offered"));
        }
        let total = reader.available_bytes();
        let count = total / SEGMENT_BYTES;
        if total == 0 || total % SEGMENT_BYTES != 0 || count > MAX_ZERO_SEGMENTS as usize {
            return Err(ioerr(format!(
                "{what} with {total} bytes of segments (16 each, at most {MAX_ZERO_SEGMENTS})"
            )));
        }
        let max_sectors = if discard {
            MAX_DISCARD_SECTORS
        } else {
            MAX_WRITE_ZEROES_SECTORS
        };
        let mut ranges = [Range::default(); MAX_ZERO_SEGMENTS as usize];
        for slot in ranges.iter_mut().take(count) {
            let mut seg = [0u8; SEGMENT_BYTES];
            reader
                .read_exact(&mut seg)
                .map_err(|e| ioerr(format!("{what} segment: {e}")))?;
            let [s0, s1, s2, s3, s4, s5, s6, s7, n0, n1, n2, n3, f0, f1, f2, f3] = seg;
            let sector = u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]);
            let sectors = u32::from_le_bytes([n0, n1, n2, n3]);
            let flags = u32::from_le_bytes([f0, f1, f2, f3]);
            // The spec reserves the unmap flag for write-zeroes only.
            let known = if discard {
                0
            } else {
                VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
            };
            if flags & !known != 0 {
                return Err(unsupp(format!("{what} flags {flags:#x}")));
            }
            if sectors > max_sectors {
                return Err(ioerr(format!(
                    "{what} of {sectors} sectors (at most {max_sectors})"
                )));
            }
            let len = u64::from(sectors) * SECTOR;
            *slot = Range {
                offset: self.locate(sector, len)?,
                len,
                unmap: flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0,
            };
        }
        for r in ranges.iter().take(count).filter(|r| r.len > 0) {
            if discard || (r.unmap && self.can_punch) {
                self.punch(r.offset, r.len)?;
            } else {
                self.zero_in_place(r.offset, r.len)?;
            }
        }
        Ok(())
    }

    fn punch(&self, offset: u64, len: u64) -> Result<(), Refusal> {
        let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        fallocate_range(&self.file, flags, offset, len).map_err(|e| host("punching a hole", e))
    }

    /// Zeros a range and leaves it allocated (WRITE_ZEROES without unmap).
    fn zero_in_place(&mut self, offset: u64, len: u64) -> Result<(), Refusal> {
        let zero = FallocateFlags::FALLOC_FL_ZERO_RANGE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        match fallocate_range(&self.file, zero, offset, len) {
            Ok(()) => return Ok(()),
            Err(Errno::EOPNOTSUPP | Errno::EINVAL) => {}
            Err(e) => return Err(host("zeroing a range", e)),
        }
        // tmpfs, for one, punches but cannot zero in place: punch, then
        // allocate the hole again.
        if self.can_punch {
            self.punch(offset, len)?;
            return match fallocate_range(
                &self.file,
                FallocateFlags::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            ) {
                Ok(()) | Err(Errno::EOPNOTSUPP) => Ok(()),
                Err(e) => Err(host("allocating a range", e)),
            };
        }
        let mut offset = offset;
        let mut left = len;
        self.bounce.fill(0);
        while left > 0 {
            let n = usize::try_from(left).map_or(self.bounce.len(), |l| l.min(self.bounce.len()));
            let buf = self.bounce.get(..n).unwrap_or_default();
            self.file
                .write_all_at(buf, offset)
                .map_err(|e| host("writing zeros", e))?;
            offset += n as u64;
            left -= n as u64;
        }
        Ok(())
    }
}

/// `fallocate(2)` over a byte range given as u64.
pub fn fallocate_range(
    file: &File,
    flags: FallocateFlags,
    offset: u64,
    len: u64,
) -> Result<(), Errno> {
    let offset = i64::try_from(offset).map_err(|_| Errno::EFBIG)?;
    let len = i64::try_from(len).map_err(|_| Errno::EFBIG)?;
    fallocate(file, flags, offset, len)
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
        match file.read_at(rest, offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
