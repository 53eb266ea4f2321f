//! The CMOS RTC: index and data ports, BCD or binary and 12- or 24-hour
//! encodings as the guest selects them, at any clock value (the input
//! gives the time, as seconds since the Unix epoch).
//!
//! Input: `now u64`, then accesses (`kind u8` as in
//! `lkvm_fuzz::regs::access`, 1-byte offset in the 2 ports).
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;
use lkvm::bus::BusDevice;
use lkvm::hw::rtc::Rtc;
use lkvm_fuzz::input::Input;
use lkvm_fuzz::regs::{access, Access};

static NOW: AtomicU64 = AtomicU64::new(0);

fn now() -> u64 {
    NOW.load(Ordering::Relaxed)
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let Some(t) = inp.u64() else { return };
    NOW.store(t, Ordering::Relaxed);
    let mut rtc = Rtc::fuzz_with_clock(now);
    while let Some(kind) = inp.u8() {
        match access(&mut inp, kind, 1, 2) {
            Some(Access::Read { offset, len }) => rtc.read(offset, &mut vec![0u8; len]),
            Some(Access::Write { offset, data }) => rtc.write(offset, &data),
            None => break,
        }
    }
});
