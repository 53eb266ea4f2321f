//! virtio-balloon: inflate and deflate PFN lists (pages really discarded
//! from the fuzzer's guest RAM), the statistics queue and its request
//! from the control socket, free page reporting, the config space and
//! target changes, with the queue numbering that follows the negotiated
//! features.
//!
//! Input: four queue size bytes, `enabled` (bit i: the driver enabled
//! queue i), `features` (bit 0 STATS_VQ, bit 1 REPORTING, bit 2
//! EVENT_IDX), then driver operations (`lkvm_fuzz::driver`); a kick of
//! queue i wakes the device for what the driver's numbering makes queue
//! i. Device operations: 9 a statistics request from the control socket,
//! 10 `mib u8` inflate, 11 `mib u8` deflate, 12 `offset u8, n u8, bytes`
//! a config write, 13 `offset u8, n u8` a config read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lkvm::virtio::balloon::fuzzing::{T_DEFLATE, T_INFLATE, T_REPORT, T_STATS, T_STATS_REQUEST};
use lkvm::virtio::balloon::{Balloon, F_REPORTING, F_STATS_VQ};
use lkvm::virtio::{Activation, ActiveQueue, VirtioDevice};
use lkvm_fuzz::driver::{queue_size, Driver, Step};
use lkvm_fuzz::input::Input;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let Some(sizes) = inp.array::<4>() else {
        return;
    };
    let (Some(enabled), Some(feat)) = (inp.u8(), inp.u8()) else {
        return;
    };
    let (stats, report) = (feat & 1 != 0, feat & 2 != 0);
    let features =
        (1u64 << 32) | if stats { F_STATS_VQ } else { 0 } | if report { F_REPORTING } else { 0 };
    let drv_sizes: Vec<u16> = sizes.iter().map(|b| queue_size(*b)).collect();
    let mut drv = Driver::new(&drv_sizes);
    let mut queues = Vec::new();
    for (i, q) in drv.queues(feat & 4 != 0).into_iter().enumerate() {
        if enabled & (1 << i) == 0 {
            continue;
        }
        let Ok(kick) = EventFd::new(EFD_NONBLOCK) else {
            return;
        };
        queues.push(ActiveQueue {
            index: i as u16,
            queue: q,
            kick,
        });
    }
    let (mut balloon, control) = Balloon::new();
    let act = Activation {
        mem: drv.mem.clone(),
        queues,
        irq: drv.irq.clone(),
        features,
    };
    let Ok(mut port) = balloon.fuzz_activate(act) else {
        return;
    };
    // The driver's numbering: inflate, deflate, then stats and reporting
    // if negotiated.
    let mut tokens = vec![T_INFLATE, T_DEFLATE];
    if stats {
        tokens.push(T_STATS);
    }
    if report {
        tokens.push(T_REPORT);
    }
    while let Some(step) = drv.step(&mut inp) {
        match step {
            Step::Kick(q) => {
                if let Some(t) = tokens.get(q) {
                    port.handle(*t);
                }
            }
            Step::Device(9) => port.handle(T_STATS_REQUEST),
            Step::Device(10) => {
                let Some(m) = inp.u8() else { break };
                let _ = control.inflate_mib(u64::from(m));
            }
            Step::Device(11) => {
                let Some(m) = inp.u8() else { break };
                let _ = control.deflate_mib(u64::from(m));
            }
            Step::Device(12) => {
                let (Some(off), Some(n)) = (inp.u8(), inp.u8()) else {
                    break;
                };
                balloon.write_config(u64::from(off), inp.up_to(usize::from(n % 16)));
            }
            Step::Device(13) => {
                let (Some(off), Some(n)) = (inp.u8(), inp.u8()) else {
                    break;
                };
                let mut buf = vec![0u8; usize::from(n % 16)];
                balloon.read_config(u64::from(off), &mut buf);
            }
            Step::Device(_) => {}
        }
    }
    let _ = (control.target_mib(), control.actual_mib(), control.stats());
    balloon.reset();
});
