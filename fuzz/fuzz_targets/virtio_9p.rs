//! virtio-9p's request queue: raw T-messages in descriptor chains (any
//! framing, any split between descriptors, replies into whatever room the
//! chain leaves), on a share inside the escape oracle's sandbox; after
//! every input nothing outside the share may have changed.
//!
//! Input: `size` (queue size byte), `flags` (bit 0 read-only share, bit 1
//! without openat2, bit 2 EVENT_IDX), then driver operations
//! (`lkvm_fuzz::driver`).
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use lkvm::virtio::p9::fuzzing::Session;
use lkvm_fuzz::driver::{queue_size, Driver, Step};
use lkvm_fuzz::input::Input;
use lkvm_fuzz::p9::Sandbox;

fn sandbox() -> &'static Mutex<Sandbox> {
    static S: OnceLock<Mutex<Sandbox>> = OnceLock::new();
    S.get_or_init(|| Mutex::new(Sandbox::new()))
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let (Some(size), Some(flags)) = (inp.u8(), inp.u8()) else {
        return;
    };
    let mut sb = match sandbox().lock() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    };
    sb.reset();
    let Ok(mut s) = Session::new(&sb.share, flags & 1 != 0, flags & 2 == 0) else {
        return;
    };
    let mut drv = Driver::new(&[queue_size(size)]);
    let mut queues = drv.queues(flags & 4 != 0);
    while let Some(step) = drv.step(&mut inp) {
        if let Step::Kick(_) = step {
            s.kick(&mut queues[0], &drv.mem, drv.irq.as_ref());
        }
    }
    drop(s);
    sb.check_fs(data);
});
