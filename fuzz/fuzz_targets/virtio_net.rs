//! virtio-net's receive and transmit paths over a fake backend: frames
//! from the "host" (any length, any header) into receive buffers, merged
//! or not, buffers running out and coming back, a backend that fails;
//! transmit chains of any shape out to it.
//!
//! Input: `rx size`, `tx size`, `flags` (bit 0 MRG_RXBUF, bit 1
//! EVENT_IDX), then driver operations (`lkvm_fuzz::driver`); kicking
//! queue 0 is a receive kick, queue 1 a transmit kick. Device operations:
//! 9 `n u16, bytes` a frame arrives, 10 `hdr [12], len u16, fill u8` a
//! frame of `len` bytes arrives, 11 the backend wakes the device with
//! nothing new, 12 the backend's next read fails, 13 its writes fail from
//! now on.
#![no_main]

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use lkvm::virtio::net::fuzzing::{Direct, T_BACKEND, T_RX_KICK, T_TX_KICK};
use lkvm::virtio::net::NetBackend;
use lkvm::virtio::ActiveQueue;
use lkvm_fuzz::driver::{queue_size, Driver, Step};
use lkvm_fuzz::input::Input;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

#[derive(Default)]
struct Host {
    frames: VecDeque<Vec<u8>>,
    fail_read: bool,
    fail_write: bool,
}

struct Fake {
    host: Arc<Mutex<Host>>,
    fd: EventFd,
}

fn host(h: &Mutex<Host>) -> std::sync::MutexGuard<'_, Host> {
    match h.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl NetBackend for Fake {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut h = host(&self.host);
        if std::mem::take(&mut h.fail_read) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        match h.frames.pop_front() {
            // A datagram longer than the buffer is cut, as a tap cuts it.
            Some(f) => {
                let n = f.len().min(buf.len());
                buf[..n].copy_from_slice(&f[..n]);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn write_frame(&mut self, _frame: &[u8]) -> io::Result<()> {
        if host(&self.host).fail_write {
            return Err(io::Error::from_raw_os_error(libc::ENOBUFS));
        }
        Ok(())
    }

    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the eventfd is owned by `self` and open for the borrow.
        unsafe { BorrowedFd::borrow_raw(self.fd.as_raw_fd()) }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let (Some(rx), Some(tx), Some(flags)) = (inp.u8(), inp.u8(), inp.u8()) else {
        return;
    };
    let mut drv = Driver::new(&[queue_size(rx), queue_size(tx)]);
    let mut qs = drv.queues(flags & 2 != 0).into_iter();
    let (Some(rxq), Some(txq)) = (qs.next(), qs.next()) else {
        return;
    };
    let (Ok(k0), Ok(k1), Ok(fd)) = (
        EventFd::new(EFD_NONBLOCK),
        EventFd::new(EFD_NONBLOCK),
        EventFd::new(EFD_NONBLOCK),
    ) else {
        return;
    };
    let h = Arc::new(Mutex::new(Host::default()));
    let backend = Box::new(Fake {
        host: h.clone(),
        fd,
    });
    let queues = (
        ActiveQueue {
            index: 0,
            queue: rxq,
            kick: k0,
        },
        ActiveQueue {
            index: 1,
            queue: txq,
            kick: k1,
        },
    );
    let Ok(mut port) = Direct::new(
        drv.mem.clone(),
        drv.irq.clone(),
        queues,
        backend,
        flags & 1 != 0,
    ) else {
        return;
    };
    while let Some(step) = drv.step(&mut inp) {
        match step {
            Step::Kick(0) => port.handle(T_RX_KICK),
            Step::Kick(_) => port.handle(T_TX_KICK),
            Step::Device(9) => {
                let Some(n) = inp.u16() else { break };
                host(&h)
                    .frames
                    .push_back(inp.up_to(usize::from(n)).to_vec());
                port.handle(T_BACKEND);
            }
            Step::Device(10) => {
                let (Some(hdr), Some(len), Some(fill)) = (inp.array::<12>(), inp.u16(), inp.u8())
                else {
                    break;
                };
                let mut f = hdr.to_vec();
                f.resize(usize::from(len).max(12), fill);
                host(&h).frames.push_back(f);
                port.handle(T_BACKEND);
            }
            Step::Device(11) => port.handle(T_BACKEND),
            Step::Device(12) => {
                host(&h).fail_read = true;
                port.handle(T_BACKEND);
            }
            Step::Device(13) => host(&h).fail_write = true,
            Step::Device(_) => {}
        }
    }
});
