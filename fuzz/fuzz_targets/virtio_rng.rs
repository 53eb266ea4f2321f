//! virtio-rng's queue: buffers of any shape filled from the host's
//! entropy, at most 64 KiB per request.
//!
//! Input: `size` (queue size byte), `flags` (bit 0 EVENT_IDX), then
//! driver operations (`lkvm_fuzz::driver`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lkvm::virtio::rng::Rng;
use lkvm_fuzz::driver::{queue_size, Driver, Step};
use lkvm_fuzz::input::Input;

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let (Some(size), Some(flags)) = (inp.u8(), inp.u8()) else {
        return;
    };
    let rng = Rng::new();
    let mut drv = Driver::new(&[queue_size(size)]);
    let mut queues = drv.queues(flags & 1 != 0);
    while let Some(step) = drv.step(&mut inp) {
        if let Step::Kick(_) = step {
            rng.fuzz_kick(&mut queues[0], &drv.mem, drv.irq.as_ref());
        }
    }
});
