//! virtio-console (`--console virtio`): the guest's `hvc0`, one port, no
//! MULTIPORT. Queue 0 (receiveq) carries host input to the guest in buffers
//! the driver posts; queue 1 (transmitq) carries the guest's output.
//!
//! Host input arrives through [`ConsoleInput`] at any time, also before the
//! driver is up, and waits in a bounded buffer until the guest has posted
//! receive buffers for it. The device thread wakes on three things: a
//! receiveq kick (new buffers), a transmitq kick (output), and an eventfd
//! [`ConsoleInput`] signals (new input).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::chain::{next_chain, notify, rearm, serve_queue, Chain};
use super::device::{read_config_bytes, Activation, Error, Interrupt, VirtioDevice};
use super::worker::{drain, AsFdBorrowed, Flow, WorkerBuilder, WorkerSlot};
use super::{ids, QUEUE_SIZE};
use crate::bus::lock;
use crate::memory::GuestMemory;
use crate::term::ConsoleSink;

/// Input kept while the guest reads none: a paste's worth. Past it the
/// oldest bytes go, as on a serial line nobody reads.
pub const INPUT_LIMIT: usize = 64 << 10;

const RECEIVEQ: u16 = 0;
const TRANSMITQ: u16 = 1;
/// The worker's token for new input.
const INPUT: u64 = 2;

/// cols, rows (le16 each), max_nr_ports, emerg_wr (le32 each): all zero,
/// as neither SIZE, MULTIPORT nor EMERG_WRITE is offered.
const CONFIG: [u8; 12] = [0; 12];

/// Input waiting for the guest, and how to wake the worker about more.
#[derive(Default)]
struct Pending {
    bytes: VecDeque<u8>,
    /// The running worker's input eventfd; none while the driver is not up.
    wake: Option<EventFd>,
}

type Output = Arc<Mutex<Box<dyn Write + Send>>>;

/// The device. Create it with [`Console::new`].
pub struct Console {
    out: Output,
    pending: Arc<Mutex<Pending>>,
    worker: WorkerSlot,
}

/// The host side of the console's input: give it to whatever reads the
/// terminal. Cheap to clone.
#[derive(Clone)]
pub struct ConsoleInput {
    pending: Arc<Mutex<Pending>>,
}

impl Console {
    /// A console whose guest output goes to `out` (flushed after every
    /// transmit buffer), and the handle that feeds it input.
    pub fn new(out: Box<dyn Write + Send>) -> (Console, ConsoleInput) {
        let pending = Arc::new(Mutex::new(Pending::default()));
        let input = ConsoleInput {
            pending: Arc::clone(&pending),
        };
        let console = Console {
            out: Arc::new(Mutex::new(out)),
            pending,
            worker: WorkerSlot::default(),
        };
        (console, input)
    }
}

impl ConsoleSink for ConsoleInput {
    fn sysrq(&self, key: u8) -> bool {
        self.queue_input(&[crate::term::HVC_SYSRQ, key]);
        true
    }

    fn queue_input(&self, bytes: &[u8]) {
        let mut p = lock(&self.pending);
        p.bytes.extend(bytes);
        let over = p.bytes.len().saturating_sub(INPUT_LIMIT);
        if over > 0 {
            p.bytes.drain(..over);
            log::debug!("virtio-console: the guest is not reading; dropped {over} bytes of input");
        }
        if let Some(wake) = &p.wake {
            if let Err(e) = wake.write(1) {
                log::debug!("virtio-console: cannot wake the device thread: {e}");
            }
        }
    }
}

/// Copies every transmit chain's bytes to `out`, in order.
fn transmit(q: &mut Queue, mem: &GuestMemory, irq: &dyn Interrupt, out: &Output) {
    let mut out = lock(out);
    serve_queue(
        "virtio-console",
        TRANSMITQ,
        q,
        mem,
        irq,
        u64::MAX,
        |mut c| {
            if let Err(e) = std::io::copy(&mut c.reader, &mut *out).and_then(|_| out.flush()) {
                log::debug!("virtio-console: output: {e}");
            }
            // The device writes nothing into transmit buffers.
            0
        },
    );
}

/// Moves pending input into the receive buffers the guest posted, as far
/// as both go.
fn receive(q: &mut Queue, mem: &GuestMemory, irq: &dyn Interrupt, pending: &Mutex<Pending>) {
    let mut used_any = false;
    loop {
        let mut p = lock(pending);
        if p.bytes.is_empty() {
            break;
        }
        let Some(dc) = next_chain("virtio-console", RECEIVEQ, q, mem, irq) else {
            // Out of buffers: have the driver kick when it posts more (and
            // catch one it posted meanwhile).
            if rearm("virtio-console", RECEIVEQ, q, mem, irq) {
                continue;
            }
            break;
        };
        let head = dc.head_index();
        let len = match Chain::parse(mem, dc, u64::MAX) {
            Ok(mut c) => {
                let n = c.writer.available_bytes().min(p.bytes.len());
                let (a, b) = p.bytes.as_slices();
                let a = a.get(..n.min(a.len())).unwrap_or_default();
                let b = b.get(..n - a.len()).unwrap_or_default();
                if let Err(e) = c.writer.write_all(a).and_then(|()| c.writer.write_all(b)) {
                    log::debug!("virtio-console: receive buffer {head}: {e}");
                }
                let done = c.writer.bytes_written();
                p.bytes.drain(..done);
                done
            }
            Err(e) => {
                log::debug!("virtio-console: receiveq: descriptor {head} rejected: {e}");
                0
            }
        };
        drop(p);
        // Bounded by the pending input, itself at most INPUT_LIMIT.
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        if let Err(e) = q.add_used(mem, head, len) {
            log::debug!("virtio-console: receiveq: cannot return descriptor {head}: {e}");
            break;
        }
        used_any = true;
    }
    if used_any {
        notify("virtio-console", RECEIVEQ, q, mem, irq);
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        ids::CONSOLE
    }

    fn name(&self) -> &'static str {
        "virtio-console"
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        0
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&CONFIG, offset, data);
    }

    fn activate(&mut self, mut act: Activation) -> Result<(), Error> {
        let name = self.name();
        let mut rx = act
            .take_queue(RECEIVEQ)
            .ok_or(Error::MissingQueue(name, RECEIVEQ))?;
        let mut tx = act
            .take_queue(TRANSMITQ)
            .ok_or(Error::MissingQueue(name, TRANSMITQ))?;
        let (mem, irq) = (act.mem, act.irq);
        let wake = EventFd::new(EFD_NONBLOCK).map_err(|e| Error::Worker(name, e))?;
        let wake_input = wake.try_clone().map_err(|e| Error::Worker(name, e))?;
        let wb = WorkerBuilder::new().map_err(|e| Error::Worker(name, e))?;
        wb.watch(rx.kick.as_fd_borrowed(), u64::from(RECEIVEQ))
            .and_then(|()| wb.watch(tx.kick.as_fd_borrowed(), u64::from(TRANSMITQ)))
            .and_then(|()| wb.watch(wake.as_fd_borrowed(), INPUT))
            .map_err(|e| Error::Worker(name, e))?;
        // One pass at start: input queued before the driver came up, and
        // buffers it posted before its kicks reached us.
        wake.write(1)
            .and_then(|()| tx.kick.write(1))
            .map_err(|e| Error::Worker(name, e))?;
        let pending = Arc::clone(&self.pending);
        let out = Arc::clone(&self.out);
        let w = wb
            .spawn(name, move |token| {
                match token {
                    t if t == u64::from(TRANSMITQ) => {
                        drain(&tx.kick);
                        transmit(&mut tx.queue, &mem, irq.as_ref(), &out);
                    }
                    t => {
                        drain(if t == INPUT { &wake } else { &rx.kick });
                        receive(&mut rx.queue, &mem, irq.as_ref(), &pending);
                    }
                }
                Flow::Continue
            })
            .map_err(|e| Error::Worker(name, e))?;
        lock(&self.pending).wake = Some(wake_input);
        self.worker.set(w);
        Ok(())
    }

    fn reset(&mut self) {
        lock(&self.pending).wake = None;
        self.worker.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vm_memory::{Bytes, GuestAddress};

    use super::super::chain::testing::{self, CountingIrq, Ring, DATA, F_NEXT, F_WRITE};
    use super::super::device::ActiveQueue;
    use super::*;

    /// The two queues' rings, side by side in one guest memory.
    const RX: Ring = Ring {
        size: 16,
        ..testing::RING
    };
    const TX: Ring = Ring {
        desc: 0x5000,
        avail: 0x6000,
        used: 0x7000,
        size: 16,
    };

    /// A writer the test can look into.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Rig {
        mem: GuestMemory,
        console: Console,
        input: ConsoleInput,
        out: Shared,
        rx_kick: EventFd,
        tx_kick: EventFd,
        irq: Arc<CountingIrq>,
    }

    impl Rig {
        fn new() -> Rig {
            let out = Shared::default();
            let (console, input) = Console::new(Box::new(out.clone()));
            Rig {
                mem: testing::memory(),
                console,
                input,
                out,
                rx_kick: EventFd::new(EFD_NONBLOCK).unwrap(),
                tx_kick: EventFd::new(EFD_NONBLOCK).unwrap(),
                irq: Arc::new(CountingIrq::default()),
            }
        }

        fn activate(&mut self) {
            let act = Activation {
                mem: self.mem.clone(),
                queues: vec![
                    ActiveQueue {
                        index: 0,
                        queue: RX.queue(&self.mem),
                        kick: self.rx_kick.try_clone().unwrap(),
                    },
                    ActiveQueue {
                        index: 1,
                        queue: TX.queue(&self.mem),
                        kick: self.tx_kick.try_clone().unwrap(),
                    },
                ],
                irq: self.irq.clone(),
                features: 1 << 32,
            };
            self.console.activate(act).unwrap();
        }

        /// Posts receive buffer `i` of `len` bytes at DATA + i * 0x100.
        fn post(&self, i: u16, len: u32) {
            RX.desc(&self.mem, i, DATA + 0x100 * u64::from(i), len, F_WRITE, 0);
            RX.offer(&self.mem, i);
        }

        fn received(&self, i: u16, len: u32) -> Vec<u8> {
            let mut v = vec![0u8; len as usize];
            self.mem
                .read_slice(&mut v, GuestAddress(DATA + 0x100 * u64::from(i)))
                .unwrap();
            v
        }
    }

    #[test]
    fn output_reaches_the_writer_byte_for_byte() {
        let mut r = Rig::new();
        r.activate();
        let out = DATA + 0x8000;
        r.mem
            .write_slice(b"hello, world\n", GuestAddress(out))
            .unwrap();
        TX.desc(&r.mem, 0, out, 5, F_NEXT, 1);
        TX.desc(&r.mem, 1, out + 5, 8, 0, 0);
        TX.offer(&r.mem, 0);
        TX.desc(&r.mem, 2, 0xfff0_0000, 8, 0, 0); // outside RAM: skipped
        TX.offer(&r.mem, 2);
        let all: Vec<u8> = (0..=255u8).collect();
        r.mem.write_slice(&all, GuestAddress(out + 0x100)).unwrap();
        TX.desc(&r.mem, 3, out + 0x100, 256, 0, 0);
        TX.offer(&r.mem, 3);
        r.tx_kick.write(1).unwrap();
        assert_eq!(TX.wait_used(&r.mem, 3), vec![(0, 0), (2, 0), (3, 0)]);
        let mut want = b"hello, world\n".to_vec();
        want.extend_from_slice(&all);
        assert_eq!(*r.out.0.lock().unwrap(), want);
        assert!(r.irq.queues.lock().unwrap().contains(&1));
    }

    #[test]
    fn input_arrives_in_order_across_small_buffers_and_waits_for_them() {
        let mut r = Rig::new();
        r.input.queue_input(b"abc");
        r.post(0, 2);
        r.post(1, 2);
        r.post(2, 2);
        r.activate();
        assert_eq!(RX.wait_used(&r.mem, 2), vec![(0, 2), (1, 1)]);
        assert_eq!(r.received(0, 2), b"ab");
        assert_eq!(r.received(1, 1), b"c");
        r.input.queue_input(b"defg");
        assert_eq!(RX.wait_used(&r.mem, 3), vec![(0, 2), (1, 1), (2, 2)]);
        assert_eq!(r.received(2, 2), b"de");
        // "fg" has no buffer: it waits.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(RX.used(&r.mem).len(), 3);
        r.post(3, 8);
        r.rx_kick.write(1).unwrap();
        assert_eq!(RX.wait_used(&r.mem, 4).last(), Some(&(3, 2)));
        assert_eq!(r.received(3, 2), b"fg");
        assert!(r.irq.queues.lock().unwrap().contains(&0));
        // After a reset input is kept for the next driver, not delivered.
        r.console.reset();
        r.input.queue_input(b"hij");
        r.post(4, 8);
        r.rx_kick.write(1).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(RX.used(&r.mem).len(), 4);
        assert_eq!(lock(&r.input.pending).bytes, b"hij".to_vec());
    }

    #[test]
    fn the_input_buffer_drops_the_oldest_bytes() {
        let mut r = Rig::new();
        let data: Vec<u8> = (0..INPUT_LIMIT + 10).map(|i| (i % 253) as u8).collect();
        r.input.queue_input(&data[..1000]);
        r.input.queue_input(&data[1000..]);
        assert_eq!(lock(&r.input.pending).bytes.len(), INPUT_LIMIT);
        // One receive buffer larger than what is kept.
        let big = DATA + 0x4_0000;
        RX.desc(&r.mem, 0, big, (INPUT_LIMIT + 100) as u32, F_WRITE, 0);
        RX.offer(&r.mem, 0);
        r.activate();
        assert_eq!(RX.wait_used(&r.mem, 1), vec![(0, INPUT_LIMIT as u32)]);
        let mut got = vec![0u8; INPUT_LIMIT];
        r.mem.read_slice(&mut got, GuestAddress(big)).unwrap();
        assert_eq!(got, data[10..]);
    }

    #[test]
    fn a_bad_receive_buffer_is_returned_empty() {
        let mut r = Rig::new();
        r.input.queue_input(b"xy");
        RX.desc(&r.mem, 0, 0xfff0_0000, 4, F_WRITE, 0);
        RX.offer(&r.mem, 0);
        r.post(1, 4);
        r.activate();
        assert_eq!(RX.wait_used(&r.mem, 2), vec![(0, 0), (1, 2)]);
        assert_eq!(r.received(1, 2), b"xy");
        assert_eq!(r.console.device_type(), 3);
        assert_eq!(r.console.queue_max_sizes().len(), 2);
    }
}
