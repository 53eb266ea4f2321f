//! virtio-console's two queues: the guest's output (transmitq) and host
//! input moving into the buffers the guest posts (receiveq), with input
//! arriving at any time and the 64 KiB input bound.
//!
//! Input: `rx size`, `tx size`, `flags` (bit 0 EVENT_IDX), then driver
//! operations (`lkvm_fuzz::driver`); kicking queue 0 serves the receiveq,
//! queue 1 the transmitq. Device operations: 9 `n u16, bytes` host input
//! (then the receive pass the device thread makes on it), 10 `key u8`
//! SysRq, 11 `n u16` that many bytes of input at once (the bound).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lkvm::term::ConsoleSink;
use lkvm::virtio::console::Console;
use lkvm_fuzz::driver::{queue_size, Driver, Step};
use lkvm_fuzz::input::Input;

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let (Some(rx), Some(tx), Some(flags)) = (inp.u8(), inp.u8(), inp.u8()) else {
        return;
    };
    let (console, input) = Console::new(Box::new(std::io::sink()));
    let mut drv = Driver::new(&[queue_size(rx), queue_size(tx)]);
    let mut queues = drv.queues(flags & 1 != 0);
    let (rxq, rest) = queues.split_at_mut(1);
    let (rxq, txq) = (&mut rxq[0], &mut rest[0]);
    while let Some(step) = drv.step(&mut inp) {
        let (mem, irq) = (&drv.mem, drv.irq.as_ref());
        match step {
            Step::Kick(0) => console.fuzz_receive(rxq, mem, irq),
            Step::Kick(_) => console.fuzz_transmit(txq, mem, irq),
            Step::Device(9) => {
                let Some(n) = inp.u16() else { break };
                input.queue_input(inp.up_to(usize::from(n)));
                console.fuzz_receive(rxq, mem, irq);
            }
            Step::Device(10) => {
                let Some(key) = inp.u8() else { break };
                input.sysrq(key);
                console.fuzz_receive(rxq, mem, irq);
            }
            Step::Device(11) => {
                let Some(n) = inp.u16() else { break };
                let bytes: Vec<u8> = (0..usize::from(n) * 2).map(|i| i as u8).collect();
                input.queue_input(&bytes);
                console.fuzz_receive(rxq, mem, irq);
            }
            Step::Device(_) => {}
        }
    }
});
