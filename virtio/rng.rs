//! virtio-rng (`--rng`): one queue the driver fills with empty buffers,
//! returned full of bytes from the host's `getrandom(2)`.

use std::io::Write;

use super::chain::serve_queue;
use super::device::{Activation, Error, VirtioDevice};
use super::worker::{drain, AsFdBorrowed, Flow, WorkerBuilder, WorkerSlot};
use super::{ids, QUEUE_SIZE};

/// The most one request gets: the driver asks for small amounts, and a
/// bound keeps a hostile one from making us fill gigabytes.
const MAX_REQUEST: usize = 64 << 10;

#[derive(Default)]
pub struct Rng {
    worker: WorkerSlot,
}

impl Rng {
    pub fn new() -> Self {
        Rng::default()
    }
}

/// Fills `buf` from the host's entropy pool.
pub fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the kernel writes at most `rest.len()` bytes into `rest`,
        // which is valid writable memory for that length.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        ids::RNG
    }

    fn name(&self) -> &'static str {
        "virtio-rng"
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        0
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, mut act: Activation) -> Result<(), Error> {
        let name = self.name();
        let mut q = act.take_queue(0).ok_or(Error::MissingQueue(name, 0))?;
        let (mem, irq) = (act.mem, act.irq);
        let wb = WorkerBuilder::new().map_err(|e| Error::Worker(name, e))?;
        wb.watch(q.kick.as_fd_borrowed(), 0)
            .map_err(|e| Error::Worker(name, e))?;
        let w = wb
            .spawn(name, move |_| {
                drain(&q.kick);
                let mut failed = false;
                serve_queue(
                    name,
                    0,
                    &mut q.queue,
                    &mem,
                    irq.as_ref(),
                    u64::MAX,
                    |mut c| {
                        let want = c.writer.available_bytes().min(MAX_REQUEST);
                        let mut buf = vec![0u8; want];
                        if let Err(e) = getrandom(&mut buf) {
                            log::error!("{name}: getrandom: {e}");
                            failed = true;
                            return 0;
                        }
                        match c.writer.write_all(&buf) {
                            Ok(()) => want as u32,
                            Err(e) => {
                                log::debug!("{name}: {e}");
                                0
                            }
                        }
                    },
                );
                if failed {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            })
            .map_err(|e| Error::Worker(name, e))?;
        self.worker.set(w);
        Ok(())
    }

    fn reset(&mut self) {
        self.worker.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use super::super::chain::testing::*;
    use super::super::device::ActiveQueue;
    use super::*;

    #[test]
    fn fills_buffers_with_random_bytes_and_rejects_bad_ones() {
        let mem = memory();
        let q = queue(&mem, 16);
        desc(&mem, 0, DATA, 64, F_WRITE, 0);
        offer(&mem, 0);
        desc(&mem, 1, 0xffff_f000, 64, F_WRITE, 0); // outside RAM
        offer(&mem, 1);
        desc(&mem, 2, DATA + 0x1000, 0x8_0000, F_WRITE, 0); // larger than one request
        offer(&mem, 2);
        let kick = EventFd::new(EFD_NONBLOCK).unwrap();
        let irq = Arc::new(CountingIrq::default());
        let mut rng = Rng::new();
        rng.activate(Activation {
            mem: mem.clone(),
            queues: vec![ActiveQueue {
                index: 0,
                queue: q,
                kick: kick.try_clone().unwrap(),
            }],
            irq: irq.clone(),
            features: 1 << 32,
        })
        .unwrap();
        kick.write(1).unwrap();
        let u = wait_used(&mem, 3);
        assert_eq!(u, vec![(0, 64), (1, 0), (2, MAX_REQUEST as u32)]);
        let mut got = [0u8; 64];
        mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert!(
            got.iter().any(|b| *b != 0),
            "64 random bytes are not all zero"
        );
        assert!(!irq.queues.lock().unwrap().is_empty());
        rng.reset();
        // After reset the worker is gone: new buffers stay unused.
        desc(&mem, 3, DATA, 8, F_WRITE, 0);
        offer(&mem, 3);
        kick.write(1).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(used(&mem).len(), 3);
    }

    /// A driver that puts its avail index more than a queue ahead of the
    /// device used to make the device thread spin for ever (and a reset,
    /// which joins it, never return): now the queue is broken once, the
    /// driver told, and the reset returns.
    #[test]
    fn an_avail_index_a_queue_ahead_breaks_the_queue_and_reset_returns() {
        let mem = memory();
        let q = queue(&mem, 256);
        desc(&mem, 0, DATA, 64, F_WRITE, 0);
        mem.write_obj(257u16, GuestAddress(AVAIL + 2)).unwrap();
        let kick = EventFd::new(EFD_NONBLOCK).unwrap();
        let irq = Arc::new(CountingIrq::default());
        let mut rng = Rng::new();
        rng.activate(Activation {
            mem: mem.clone(),
            queues: vec![ActiveQueue {
                index: 0,
                queue: q,
                kick: kick.try_clone().unwrap(),
            }],
            irq: irq.clone(),
            features: 1 << 32,
        })
        .unwrap();
        for _ in 0..3 {
            kick.write(1).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(irq.resets.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(used(&mem).is_empty());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            rng.reset();
            tx.send(()).unwrap();
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the reset returned");
    }
}
