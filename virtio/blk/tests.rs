use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_blk::*;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::request::BOUNCE;
use super::*;
use crate::memory::GuestMemory;
use crate::virtio::chain::testing::*;
use crate::virtio::device::ActiveQueue;

const HDR: u64 = DATA;
const STATUS: u64 = DATA + 0x100;
const BUF: u64 = DATA + 0x1000;

/// A file under the temp dir, removed when dropped.
struct Temp(PathBuf);

impl Temp {
    fn new(tag: &str, contents: &[u8]) -> Temp {
        Temp::in_dir(&std::env::temp_dir(), tag, contents)
    }

    fn in_dir(dir: &Path, tag: &str, contents: &[u8]) -> Temp {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let p = dir.join(format!("lkvm-blk-{}-{n}-{tag}.img", std::process::id()));
        std::fs::write(&p, contents).unwrap();
        Temp(p)
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.0).unwrap()
    }

    fn spec(&self, read_only: bool) -> DiskSpec {
        DiskSpec {
            path: self.0.clone(),
            read_only,
        }
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 + 1).collect()
}

/// A disk on a hand-built ring, served synchronously.
struct Rig {
    mem: GuestMemory,
    q: Queue,
    irq: CountingIrq,
    block: Block,
    next: u16,
}

impl Rig {
    fn new(block: Block) -> Rig {
        let mem = memory();
        let q = queue(&mem, 64);
        Rig {
            mem,
            q,
            irq: CountingIrq::default(),
            block,
            next: 0,
        }
    }

    /// Makes a chain of `bufs` (address, length, device-writable)
    /// available.
    fn chain(&mut self, bufs: &[(u64, u32, bool)]) {
        let first = self.next;
        for (k, &(addr, len, w)) in bufs.iter().enumerate() {
            let i = first + k as u16;
            let mut flags = if w { F_WRITE } else { 0 };
            if k + 1 < bufs.len() {
                flags |= F_NEXT;
            }
            desc(&self.mem, i, addr, len, flags, i + 1);
        }
        offer(&self.mem, first);
        self.next += bufs.len() as u16;
    }

    fn header(&self, kind: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&kind.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&h, GuestAddress(HDR)).unwrap();
    }

    /// Sends header + `data` + status; returns (status, used length).
    fn request(&mut self, kind: u32, sector: u64, data: &[(u64, u32, bool)]) -> (u8, u32) {
        self.header(kind, sector);
        self.mem.write_obj(0xeeu8, GuestAddress(STATUS)).unwrap();
        let mut bufs = vec![(HDR, 16, false)];
        bufs.extend_from_slice(data);
        bufs.push((STATUS, 1, true));
        self.chain(&bufs);
        let used = self.serve();
        let status: u8 = self.mem.read_obj(GuestAddress(STATUS)).unwrap();
        (status, used)
    }

    /// Serves what is available; returns the last used length.
    fn serve(&mut self) -> u32 {
        let mut disk = lock(&self.block.disk);
        serve_queue(
            "test",
            0,
            &mut self.q,
            &self.mem,
            &self.irq,
            u64::MAX,
            |c| disk.handle(c),
        );
        drop(disk);
        used(&self.mem).last().unwrap().1
    }

    fn segments(&self, segs: &[(u64, u32, u32)]) -> u32 {
        for (i, &(sector, n, flags)) in segs.iter().enumerate() {
            let mut s = [0u8; 16];
            s[..8].copy_from_slice(&sector.to_le_bytes());
            s[8..12].copy_from_slice(&n.to_le_bytes());
            s[12..].copy_from_slice(&flags.to_le_bytes());
            self.mem
                .write_slice(&s, GuestAddress(BUF + 16 * i as u64))
                .unwrap();
        }
        16 * segs.len() as u32
    }

    fn guest(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

#[test]
fn reads_known_data_across_buffers() {
    let img = pattern(8192);
    let t = Temp::new("read", &img);
    let mut r = Rig::new(Block::open(&t.spec(false), 0).unwrap());
    assert_eq!(r.block.sectors(), 16);
    let got = r.request(
        VIRTIO_BLK_T_IN,
        3,
        &[(BUF, 512, true), (BUF + 0x4000, 1024, true)],
    );
    assert_eq!(got, (OK, 1536 + 1));
    assert_eq!(r.guest(BUF, 512), img[1536..2048]);
    assert_eq!(r.guest(BUF + 0x4000, 1024), img[2048..3072]);
    // The last sector, read past the bounce buffer's size in one request.
    let t2 = Temp::new("big", &pattern(BOUNCE * 2 + 4096));
    let mut r2 = Rig::new(Block::open(&t2.spec(false), 0).unwrap());
    let len = (BOUNCE + 1024) as u32;
    let got = r2.request(VIRTIO_BLK_T_IN, 6, &[(0x20000, len, true)]);
    assert_eq!(got, (OK, len + 1));
    assert_eq!(
        r2.guest(0x20000, len as usize),
        t2.bytes()[3072..3072 + len as usize]
    );
    assert!(!r.irq.queues.lock().unwrap().is_empty());
}

#[test]
fn a_file_not_made_of_whole_sectors_reads_zero_padded() {
    let img = pattern(1000);
    let t = Temp::new("short", &img);
    let mut r = Rig::new(Block::open(&t.spec(true), 0).unwrap());
    assert_eq!(r.block.sectors(), 2);
    r.mem
        .write_slice(&[0xffu8; 512], GuestAddress(BUF))
        .unwrap();
    assert_eq!(
        r.request(VIRTIO_BLK_T_IN, 1, &[(BUF, 512, true)]),
        (OK, 513)
    );
    let got = r.guest(BUF, 512);
    assert_eq!(got[..488], img[512..]);
    assert!(got[488..].iter().all(|b| *b == 0));
}

#[test]
fn writes_reach_the_file_and_flush_succeeds() {
    let t = Temp::new("write", &[0u8; 4096]);
    let mut r = Rig::new(Block::open(&t.spec(false), 0).unwrap());
    r.mem.write_slice(&[0xab; 512], GuestAddress(BUF)).unwrap();
    r.mem
        .write_slice(&[0xcd; 512], GuestAddress(BUF + 0x800))
        .unwrap();
    let got = r.request(
        VIRTIO_BLK_T_OUT,
        2,
        &[(BUF, 512, false), (BUF + 0x800, 512, false)],
    );
    assert_eq!(got, (OK, 1));
    let f = t.bytes();
    assert!(f[..1024].iter().all(|b| *b == 0));
    assert!(f[1024..1536].iter().all(|b| *b == 0xab));
    assert!(f[1536..2048].iter().all(|b| *b == 0xcd));
    assert!(f[2048..].iter().all(|b| *b == 0));
    assert_eq!(r.request(VIRTIO_BLK_T_FLUSH, 0, &[]), (OK, 1));
    // And the guest reads back what it wrote.
    assert_eq!(
        r.request(VIRTIO_BLK_T_IN, 3, &[(BUF, 512, true)]),
        (OK, 513)
    );
    assert_eq!(r.guest(BUF, 512), vec![0xcd; 512]);
}

#[test]
fn get_id_answers_the_serial() {
    let t = Temp::new("id", &[0u8; 512]);
    let mut r = Rig::new(Block::open(&t.spec(false), 3).unwrap());
    r.mem.write_slice(&[0xff; 20], GuestAddress(BUF)).unwrap();
    assert_eq!(
        r.request(VIRTIO_BLK_T_GET_ID, 0, &[(BUF, 20, true)]),
        (OK, 21)
    );
    let mut want = b"lkvm-3".to_vec();
    want.resize(20, 0);
    assert_eq!(r.guest(BUF, 20), want);
}

#[test]
fn discard_punches_holes_and_checks_every_segment_first() {
    let img = pattern(64 << 10);
    let t = Temp::new("discard", &img);
    let b = Block::open(&t.spec(false), 0).unwrap();
    assert!(
        b.discard(),
        "{} must be on a file system that punches holes (tmpfs, ext4, xfs, btrfs)",
        t.0.display()
    );
    assert!(b.features() & (1 << VIRTIO_BLK_F_DISCARD) != 0);
    let mut r = Rig::new(b);
    let len = r.segments(&[(8, 16, 0), (100, 4, 0)]);
    assert_eq!(
        r.request(VIRTIO_BLK_T_DISCARD, 0, &[(BUF, len, false)]),
        (OK, 1)
    );
    let f = t.bytes();
    assert_eq!(f.len(), img.len(), "discard keeps the size");
    assert_eq!(f[..4096], img[..4096]);
    assert!(f[4096..12288].iter().all(|b| *b == 0));
    assert_eq!(f[12288..51200], img[12288..51200]);
    assert!(f[51200..53248].iter().all(|b| *b == 0));
    assert_eq!(f[53248..], img[53248..]);

    // A bad second segment: nothing at all is discarded.
    let before = t.bytes();
    let len = r.segments(&[(0, 1, 0), (127, 2, 0)]);
    assert_eq!(
        r.request(VIRTIO_BLK_T_DISCARD, 0, &[(BUF, len, false)]),
        (IOERR, 1)
    );
    // The unmap flag is for write-zeroes only; unknown flags are refused.
    let len = r.segments(&[(0, 1, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)]);
    assert_eq!(
        r.request(VIRTIO_BLK_T_DISCARD, 0, &[(BUF, len, false)]),
        (UNSUPP, 1)
    );
    let len = r.segments(&[(0, 1, 0x80)]);
    assert_eq!(
        r.request(VIRTIO_BLK_T_WRITE_ZEROES, 0, &[(BUF, len, false)]),
        (UNSUPP, 1)
    );
    // Too many segments, a partial segment, none at all.
    let many = vec![(0u64, 1u32, 0u32); MAX_ZERO_SEGMENTS as usize + 1];
    let len = r.segments(&many);
    assert_eq!(
        r.request(VIRTIO_BLK_T_DISCARD, 0, &[(BUF, len, false)]),
        (IOERR, 1)
    );
    assert_eq!(
        r.request(VIRTIO_BLK_T_DISCARD, 0, &[(BUF, 15, false)]),
        (IOERR, 1)
    );
    assert_eq!(r.request(VIRTIO_BLK_T_DISCARD, 0, &[]), (IOERR, 1));
    assert_eq!(t.bytes(), before);

    // Where the host cannot punch, DISCARD is not offered and refused.
    lock(&r.block.disk).can_punch = false;
    let len = r.segments(&[(0, 1, 0)]);
    assert_eq!(
        r.request(VIRTIO_BLK_T_DISCARD, 0, &[(BUF, len, false)]),
        (UNSUPP, 1)
    );
    assert_eq!(t.bytes(), before);
}

#[test]
fn write_zeroes_zeros_with_and_without_unmap() {
    let img = pattern(16 << 10);
    let t = Temp::new("wz", &img);
    let mut r = Rig::new(Block::open(&t.spec(false), 0).unwrap());
    let len = r.segments(&[(1, 2, 0), (10, 1, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)]);
    assert_eq!(
        r.request(VIRTIO_BLK_T_WRITE_ZEROES, 0, &[(BUF, len, false)]),
        (OK, 1)
    );
    let f = t.bytes();
    assert_eq!(f.len(), img.len());
    assert_eq!(f[..512], img[..512]);
    assert!(f[512..1536].iter().all(|b| *b == 0));
    assert_eq!(f[1536..5120], img[1536..5120]);
    assert!(f[5120..5632].iter().all(|b| *b == 0));
    assert_eq!(f[5632..], img[5632..]);
    // Without hole punching, on tmpfs (no ZERO_RANGE either) where there is
    // one: the zeros are written.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let t2 = Temp::in_dir(&dir, "wz-write", &img);
    let mut r2 = Rig::new(Block::open(&t2.spec(false), 0).unwrap());
    lock(&r2.block.disk).can_punch = false;
    let len = r2.segments(&[(2, 3, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)]);
    assert_eq!(
        r2.request(VIRTIO_BLK_T_WRITE_ZEROES, 0, &[(BUF, len, false)]),
        (OK, 1)
    );
    let f = t2.bytes();
    assert_eq!(f[..1024], img[..1024]);
    assert!(f[1024..2560].iter().all(|b| *b == 0));
    assert_eq!(f[2560..], img[2560..]);
    // Over the per-segment limit.
    let len = r.segments(&[(0, MAX_WRITE_ZEROES_SECTORS + 1, 0)]);
    assert_eq!(
        r.request(VIRTIO_BLK_T_WRITE_ZEROES, 0, &[(BUF, len, false)]),
        (IOERR, 1)
    );
}

#[test]
fn a_read_only_disk_refuses_changes() {
    let img = pattern(4096);
    let t = Temp::new("ro", &img);
    let b = Block::open(&t.spec(true), 0).unwrap();
    let f = b.features();
    assert!(f & (1 << VIRTIO_BLK_F_RO) != 0);
    assert_eq!(f & (1 << VIRTIO_BLK_F_DISCARD), 0);
    assert_eq!(f & (1 << VIRTIO_BLK_F_WRITE_ZEROES), 0);
    let mut r = Rig::new(b);
    r.mem.write_slice(&[0x55; 512], GuestAddress(BUF)).unwrap();
    assert_eq!(
        r.request(VIRTIO_BLK_T_OUT, 0, &[(BUF, 512, false)]),
        (IOERR, 1)
    );
    let len = r.segments(&[(0, 1, 0)]);
    assert_eq!(
        r.request(VIRTIO_BLK_T_DISCARD, 0, &[(BUF, len, false)]),
        (IOERR, 1)
    );
    assert_eq!(
        r.request(VIRTIO_BLK_T_WRITE_ZEROES, 0, &[(BUF, len, false)]),
        (IOERR, 1)
    );
    assert_eq!(t.bytes(), img);
    assert_eq!(
        r.request(VIRTIO_BLK_T_IN, 0, &[(BUF, 512, true)]),
        (OK, 513)
    );
    assert_eq!(r.guest(BUF, 512), img[..512]);
    assert_eq!(r.request(VIRTIO_BLK_T_FLUSH, 0, &[]), (OK, 1));
}

#[test]
fn out_of_range_and_misaligned_requests_fail() {
    let img = pattern(4096);
    let t = Temp::new("range", &img);
    let mut r = Rig::new(Block::open(&t.spec(false), 0).unwrap());
    // Straddling the end, starting at the end, and sector numbers whose
    // byte offset overflows.
    for sector in [7, 8, u64::MAX / 512 + 1, u64::MAX] {
        assert_eq!(
            r.request(VIRTIO_BLK_T_IN, sector, &[(BUF, 1024, true)]),
            (IOERR, 1),
            "sector {sector}"
        );
        assert_eq!(
            r.request(VIRTIO_BLK_T_OUT, sector, &[(BUF, 1024, false)]),
            (IOERR, 1),
            "sector {sector}"
        );
    }
    assert_eq!(
        r.request(VIRTIO_BLK_T_IN, 0, &[(BUF, 100, true)]),
        (IOERR, 1)
    );
    assert_eq!(
        r.request(VIRTIO_BLK_T_OUT, 0, &[(BUF, 513, false)]),
        (IOERR, 1)
    );
    assert_eq!(t.bytes(), img);
}

#[test]
fn malformed_requests_get_an_error_or_nothing() {
    let img = pattern(4096);
    let t = Temp::new("bad", &img);
    let mut r = Rig::new(Block::open(&t.spec(false), 0).unwrap());
    // Garbage type.
    assert_eq!(r.request(0xdead, 0, &[(BUF, 512, true)]), (UNSUPP, 1));
    // A header cut short.
    r.header(VIRTIO_BLK_T_IN, 0);
    r.chain(&[(HDR, 8, false), (BUF, 512, true), (STATUS, 1, true)]);
    assert_eq!(r.serve(), 1);
    assert_eq!(r.guest(STATUS, 1), [IOERR]);
    // No writable byte for the status: the write must not happen.
    r.mem.write_slice(&[0x77; 512], GuestAddress(BUF)).unwrap();
    r.header(VIRTIO_BLK_T_OUT, 0);
    r.chain(&[(HDR, 16, false), (BUF, 512, false)]);
    assert_eq!(r.serve(), 0);
    assert_eq!(t.bytes(), img);
    // The status byte is the chain's last writable byte, even inside a
    // longer buffer: here the data is 512 bytes plus the status.
    r.header(VIRTIO_BLK_T_IN, 1);
    r.chain(&[(HDR, 16, false), (BUF, 513, true)]);
    assert_eq!(r.serve(), 513);
    assert_eq!(r.guest(BUF, 512), img[512..1024]);
    assert_eq!(r.guest(BUF + 512, 1), [OK]);
    // A descriptor outside guest RAM: returned unused, nothing written.
    r.chain(&[
        (HDR, 16, false),
        (0xfff0_0000, 512, true),
        (STATUS, 1, true),
    ]);
    assert_eq!(r.serve(), 0);
    assert_eq!(
        r.block.sectors(),
        8,
        "the device still works after all this"
    );
    assert_eq!(
        r.request(VIRTIO_BLK_T_IN, 7, &[(BUF, 512, true)]),
        (OK, 513)
    );
}

#[test]
fn config_space_follows_the_spec_layout() {
    let t = Temp::new("cfg", &pattern(3 << 20));
    let b = Block::open(&t.spec(false), 0).unwrap();
    let read = |off: u64, len: usize| {
        let mut d = vec![0u8; len];
        b.read_config(off, &mut d);
        d
    };
    let u32_at = |off| u32::from_le_bytes(read(off, 4).try_into().unwrap());
    assert_eq!(read(0, 8), ((3u64 << 20) / 512).to_le_bytes());
    assert_eq!(u32_at(12), u32::from(QUEUE_SIZE) - 2); // seg_max
    assert_eq!(u32_at(20), 512); // blk_size
    assert_eq!(u32_at(36), MAX_DISCARD_SECTORS);
    assert_eq!(u32_at(40), MAX_ZERO_SEGMENTS);
    assert!(u32_at(44) >= 1); // discard_sector_alignment
    assert_eq!(u32_at(48), MAX_WRITE_ZEROES_SECTORS);
    assert_eq!(u32_at(52), MAX_ZERO_SEGMENTS);
    assert_eq!(read(56, 1), [1]); // write_zeroes_may_unmap
    let f = b.features();
    for bit in [
        VIRTIO_BLK_F_SEG_MAX,
        VIRTIO_BLK_F_BLK_SIZE,
        VIRTIO_BLK_F_FLUSH,
        VIRTIO_BLK_F_WRITE_ZEROES,
    ] {
        assert!(f & (1 << bit) != 0, "feature {bit}");
    }
    assert_eq!(b.device_type(), 2);
    assert_eq!(b.queue_max_sizes(), vec![QUEUE_SIZE]);
}

#[test]
fn the_worker_serves_kicks_until_reset() {
    let img = pattern(4096);
    let t = Temp::new("worker", &img);
    let mut b = Block::open(&t.spec(false), 0).unwrap();
    let mem = memory();
    let q = queue(&mem, 16);
    let mut h = [0u8; 16];
    h[8..].copy_from_slice(&2u64.to_le_bytes());
    mem.write_slice(&h, GuestAddress(HDR)).unwrap();
    desc(&mem, 0, HDR, 16, F_NEXT, 1);
    desc(&mem, 1, BUF, 512, F_WRITE | F_NEXT, 2);
    desc(&mem, 2, STATUS, 1, F_WRITE, 0);
    offer(&mem, 0);
    let kick = EventFd::new(EFD_NONBLOCK).unwrap();
    let irq = Arc::new(CountingIrq::default());
    b.activate(Activation {
        mem: mem.clone(),
        queues: vec![ActiveQueue {
            index: 0,
            queue: q,
            kick: kick.try_clone().unwrap(),
        }],
        irq: irq.clone(),
        features: b.features() | (1 << 32),
    })
    .unwrap();
    kick.write(1).unwrap();
    let t0 = Instant::now();
    while used(&mem).is_empty() && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(used(&mem), vec![(0, 513)]);
    let mut got = vec![0u8; 512];
    mem.read_slice(&mut got, GuestAddress(BUF)).unwrap();
    assert_eq!(got, img[1024..1536]);
    assert_eq!(*irq.queues.lock().unwrap(), vec![0]);
    b.reset();
    offer(&mem, 0);
    kick.write(1).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(used(&mem).len(), 1);
}

#[test]
fn disk_specs_parse_or_say_why_not() {
    assert_eq!(
        DiskSpec::parse("disk.img").unwrap(),
        DiskSpec {
            path: "disk.img".into(),
            read_only: false
        }
    );
    assert_eq!(
        DiskSpec::parse("/a/b.img,ro").unwrap(),
        DiskSpec {
            path: "/a/b.img".into(),
            read_only: true
        }
    );
    let msg = |a: &str| DiskSpec::parse(a).unwrap_err().to_string();
    assert!(matches!(DiskSpec::parse(""), Err(Error::EmptyPath(_))));
    assert_eq!(
        msg("scsi:naa.500:1"),
        "--disk 'scsi:naa.500:1': SCSI disks (scsi:WWPN:TPGT, vhost-scsi) are not supported yet"
    );
    assert!(matches!(DiskSpec::parse(",ro"), Err(Error::EmptyPath(_))));
    assert_eq!(
        msg("d.img,direct"),
        "--disk 'd.img,direct': 'direct' (O_DIRECT) is not supported yet; drop it"
    );
    assert_eq!(
        msg("d.img,rw"),
        "--disk 'd.img,rw': unknown option 'rw' (expected FILE or FILE,ro)"
    );
    assert!(matches!(
        DiskSpec::parse("d.img,"),
        Err(Error::UnknownOption { .. })
    ));
}

#[test]
fn open_errors_are_one_clear_line() {
    let missing = std::env::temp_dir().join(format!("lkvm-blk-{}-missing", std::process::id()));
    let e = Block::open(
        &DiskSpec {
            path: missing.clone(),
            read_only: false,
        },
        0,
    )
    .err()
    .unwrap();
    assert_eq!(
        e.to_string(),
        format!("disk image {}: no such file", missing.display())
    );

    let dir = std::env::temp_dir();
    let e = Block::open(
        &DiskSpec {
            path: dir.clone(),
            read_only: true,
        },
        0,
    )
    .err()
    .unwrap();
    assert_eq!(
        e.to_string(),
        format!(
            "{} is a directory; booting a directory as a rootfs (lkvm setup) is not supported yet",
            dir.display()
        )
    );

    let e = Block::open(
        &DiskSpec {
            path: "/dev/null".into(),
            read_only: true,
        },
        0,
    )
    .err()
    .unwrap();
    assert!(matches!(e, Error::NotADisk(_)), "{e}");

    // A QCOW image is refused by its magic, never served raw.
    let mut qcow2 = b"QFI\xfb\0\0\0\x03".to_vec();
    qcow2.resize(4096, 0);
    let t = Temp::new("qcow", &qcow2);
    let e = Block::open(&t.spec(true), 0).err().unwrap();
    assert!(matches!(e, Error::Qcow(_, 3)), "{e}");
    assert!(
        e.to_string()
            .contains("QCOW3 image; QCOW images are not supported yet"),
        "{e}"
    );

    // An empty image is a legal, useless, 0-sector disk.
    let t = Temp::new("empty", &[]);
    let b = Block::open(&t.spec(false), 0).unwrap();
    assert_eq!(b.sectors(), 0);
    let mut r = Rig::new(b);
    assert_eq!(
        r.request(VIRTIO_BLK_T_IN, 0, &[(BUF, 512, true)]),
        (IOERR, 1)
    );

    // A file the host only lets us read (a read-only mount, say): the
    // error says what to do. Played through the opener, as root could
    // open a mode-0444 file for writing.
    let t = Temp::new("rofs", &[0u8; 512]);
    let erofs = |p: &Path, write: bool| {
        if write {
            Err(io::Error::from_raw_os_error(libc::EROFS))
        } else {
            open_file(p, false)
        }
    };
    let e = Block::open_with(&t.spec(false), 0, erofs).err().unwrap();
    assert!(matches!(e, Error::NotWritable { .. }));
    assert!(e.to_string().contains("add ',ro'"), "{e}");
    let b = Block::open_with(&t.spec(true), 0, erofs).unwrap();
    assert!(b.features() & (1 << VIRTIO_BLK_F_RO) != 0);
    // Not readable at all: a plain open error, no ',ro' hint.
    let eacces =
        |_: &Path, _: bool| -> io::Result<File> { Err(io::Error::from_raw_os_error(libc::EACCES)) };
    let e = Block::open_with(&t.spec(false), 0, eacces).err().unwrap();
    assert!(matches!(e, Error::Open { .. }), "{e}");
    assert!(!e.to_string().contains(",ro"), "{e}");
    // The real thing, where permissions bind (not for root).
    let mut perm = std::fs::metadata(&t.0).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o444);
    std::fs::set_permissions(&t.0, perm).unwrap();
    match open_file(&t.0, true) {
        Ok(_) => assert!(Block::open(&t.spec(false), 0).is_ok()),
        Err(_) => assert!(matches!(
            Block::open(&t.spec(false), 0),
            Err(Error::NotWritable { .. })
        )),
    }
}

#[test]
fn the_file_is_left_untouched_by_opening() {
    let img = pattern(1000);
    let t = Temp::new("probe", &img);
    let b = Block::open(&t.spec(false), 0).unwrap();
    drop(b);
    assert_eq!(t.bytes(), img, "the hole-punching probe changes nothing");
    let f = std::fs::File::open(&t.0).unwrap();
    let mut tail = [0u8; 1];
    assert_eq!(f.read_at(&mut tail, 1000).unwrap(), 0);
}
