//! virtio-blk on a real image file: the request queue as the device
//! thread serves it (IN, OUT, FLUSH, GET_ID, DISCARD, WRITE_ZEROES and
//! anything else), on malformed chains too.
//!
//! Input: `size` (queue size byte), `flags` (bit 0 read-only disk, bit 1
//! EVENT_IDX), then driver operations (`lkvm_fuzz::driver`). The image is
//! rewritten before every input, so runs do not depend on each other.
#![no_main]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use lkvm::virtio::blk::{Block, DiskSpec};
use lkvm_fuzz::driver::{queue_size, Driver, Step};
use lkvm_fuzz::input::Input;
use lkvm_fuzz::tempdir::process_dir;

/// 64 KiB and a partial sector, so the zero-padded last sector is reached.
const IMAGE_LEN: u64 = (64 << 10) + 300;

struct Disks {
    image: PathBuf,
    rw: Block,
    ro: Block,
}

fn image_bytes() -> Vec<u8> {
    (0..IMAGE_LEN).map(|i| (i % 251) as u8).collect()
}

fn disks() -> &'static Mutex<Disks> {
    static DISKS: OnceLock<Mutex<Disks>> = OnceLock::new();
    DISKS.get_or_init(|| {
        let image = process_dir("blk", None).join("disk.img");
        if let Err(e) = std::fs::write(&image, image_bytes()) {
            panic!("{}: {e}", image.display());
        }
        let open = |read_only| {
            let spec = DiskSpec {
                path: image.clone(),
                read_only,
            };
            match Block::open(&spec, 0) {
                Ok(b) => b,
                Err(e) => panic!("{e}"),
            }
        };
        Mutex::new(Disks {
            rw: open(false),
            ro: open(true),
            image,
        })
    })
}

fn reset_image(path: &PathBuf) {
    let f = match File::options().write(true).open(path) {
        Ok(f) => f,
        Err(e) => panic!("{}: {e}", path.display()),
    };
    if let Err(e) = f
        .set_len(IMAGE_LEN)
        .and_then(|()| f.write_all_at(&image_bytes(), 0))
    {
        panic!("{}: {e}", path.display());
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let (Some(size), Some(flags)) = (inp.u8(), inp.u8()) else {
        return;
    };
    let disks = match disks().lock() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
    reset_image(&disks.image);
    let block = if flags & 1 != 0 { &disks.ro } else { &disks.rw };
    let mut drv = Driver::new(&[queue_size(size)]);
    let mut queues = drv.queues(flags & 2 != 0);
    while let Some(step) = drv.step(&mut inp) {
        if let Step::Kick(_) = step {
            block.fuzz_kick(&mut queues[0], &drv.mem, drv.irq.as_ref());
        }
    }
    // Nothing is written past the disk's last (whole) sector.
    let len = std::fs::metadata(&disks.image).map_or(0, |m| m.len());
    assert!(
        len <= IMAGE_LEN.next_multiple_of(512),
        "the image grew to {len} bytes"
    );
});
