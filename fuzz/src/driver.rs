//! A fuzzed virtio driver: guest memory with split rings at fixed places,
//! and a small language of driver operations read from the input, so the
//! fuzzer writes descriptors, offers chains, pokes buffers and ring
//! fields, and decides when each queue is kicked.
//!
//! Guest RAM is three regions, two of them adjacent and one behind a hole,
//! so buffers can straddle regions or fall outside RAM:
//! `0..0x40000`, `0x40000..0x60000`, `0x100000..0x120000`. Queue `i`'s
//! rings are at `0x1000 + 0x4000 * i` (descriptors), `+0x1000` (avail) and
//! `+0x2000` (used); buffers usually go from `DATA` on.
//!
//! Operations (first byte, then little-endian fields):
//!
//! | op | fields | effect |
//! |---|---|---|
//! | 0 | q u8, i u16, addr u32, len u32, flags u16, next u16 | descriptor `i` of queue `q` |
//! | 1 | q u8, head u16 | offer `head` on the avail ring |
//! | 2 | q u8, n u8, n x (flags u8, addr u32, len u32) | a chain of `n % 8 + 1` descriptors at the queue's cursor, linked and offered |
//! | 3 | addr u32, n u16, n bytes | write guest memory |
//! | 4 | q u8, idx u16 | the avail index, raw |
//! | 5 | q u8, v u16 | `used_event` |
//! | 6 | q u8, v u16 | the avail flags |
//! | 7 | q u8, table u32, n u8, n x (flags u8, addr u32, len u32) | an indirect table of `n % 8 + 1` at `table`, offered through one descriptor |
//! | 8 | q u8 | kick queue `q` |
//! | 9.. | | device-specific, read by the target |
//!
//! In `flags` of ops 2 and 7, bit 0 is WRITE and bit 1 INDIRECT (raw).

use std::sync::Arc;

use lkvm::memory::GuestMemory;
use lkvm::virtio::chain::testing::CountingIrq;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use crate::input::Input;

pub const RAM: [(GuestAddress, usize); 3] = [
    (GuestAddress(0), 0x40000),
    (GuestAddress(0x40000), 0x20000),
    (GuestAddress(0x10_0000), 0x20000),
];
/// Where buffers usually go.
pub const DATA: u64 = 0x10000;
pub const MAX_QUEUES: usize = 4;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;

/// Fresh guest RAM (zero), as mmaps that are gone after the input.
pub fn memory() -> GuestMemory {
    match GuestMemory::from_ranges(&RAM) {
        Ok(m) => m,
        Err(e) => panic!("guest memory: {e}"),
    }
}

/// One queue's split ring.
#[derive(Clone, Copy, Debug)]
pub struct Ring {
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    pub size: u16,
}

impl Ring {
    pub fn at(index: usize, size: u16) -> Ring {
        let base = 0x1000 + 0x4000 * index as u64;
        Ring {
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
            size,
        }
    }

    /// A ready queue over this ring, as a driver leaves it at DRIVER_OK.
    pub fn queue(&self, event_idx: bool) -> Queue {
        let mut q = match Queue::new(256) {
            Ok(q) => q,
            Err(e) => panic!("queue: {e:?}"),
        };
        q.set_size(self.size);
        q.set_desc_table_address(Some(self.desc as u32), Some(0));
        q.set_avail_ring_address(Some(self.avail as u32), Some(0));
        q.set_used_ring_address(Some(self.used as u32), Some(0));
        q.set_event_idx(event_idx);
        q.set_ready(true);
        q
    }
}

/// A queue size from one byte: a power of two from 1 to 256.
pub fn queue_size(b: u8) -> u16 {
    1 << (b % 9)
}

/// What the target does after a driver step.
pub enum Step {
    /// The driver notified queue `q`.
    Kick(usize),
    /// A device-specific operation; its fields follow in the input.
    Device(u8),
}

pub struct Driver {
    pub mem: GuestMemory,
    pub rings: Vec<Ring>,
    pub irq: Arc<CountingIrq>,
    /// The next descriptor op 2/7 writes, per queue.
    cursor: Vec<u16>,
}

fn write<T: vm_memory::ByteValued>(mem: &GuestMemory, addr: u64, v: T) {
    let _ = mem.write_obj(v, GuestAddress(addr));
}

impl Driver {
    /// Rings of the given sizes (at most [`MAX_QUEUES`]).
    pub fn new(sizes: &[u16]) -> Driver {
        let rings: Vec<Ring> = sizes
            .iter()
            .take(MAX_QUEUES)
            .enumerate()
            .map(|(i, s)| Ring::at(i, *s))
            .collect();
        Driver {
            mem: memory(),
            cursor: vec![0; rings.len()],
            rings,
            irq: Arc::new(CountingIrq::default()),
        }
    }

    /// Ready queues for every ring.
    pub fn queues(&self, event_idx: bool) -> Vec<Queue> {
        self.rings.iter().map(|r| r.queue(event_idx)).collect()
    }

    fn ring(&self, q: u8) -> (usize, Ring) {
        let i = usize::from(q) % self.rings.len().max(1);
        (i, self.rings[i])
    }

    fn desc(&self, r: &Ring, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = r.desc + 16 * u64::from(i % 256);
        write(&self.mem, at, addr);
        write(&self.mem, at + 8, len);
        write(&self.mem, at + 12, flags);
        write(&self.mem, at + 14, next);
    }

    fn offer(&self, r: &Ring, head: u16) {
        let idx: u16 = self.mem.read_obj(GuestAddress(r.avail + 2)).unwrap_or(0);
        let slot = r.avail + 4 + 2 * u64::from(idx % r.size.max(1));
        write(&self.mem, slot, head);
        write(&self.mem, r.avail + 2, idx.wrapping_add(1));
    }

    /// Reads `n` (flags, addr, len) elements.
    fn elements(inp: &mut Input) -> Option<Vec<(u16, u64, u32)>> {
        let n = usize::from(inp.u8()? % 8) + 1;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let f = inp.u8()?;
            let flags =
                if f & 1 != 0 { F_WRITE } else { 0 } | if f & 2 != 0 { F_INDIRECT } else { 0 };
            v.push((flags, u64::from(inp.u32()?), inp.u32()?));
        }
        Some(v)
    }

    /// Applies driver operations until one needs the target (a kick or a
    /// device operation); `None` when the input ends.
    pub fn step(&mut self, inp: &mut Input) -> Option<Step> {
        loop {
            let op = inp.u8()?;
            match op {
                0 => {
                    let (_, r) = self.ring(inp.u8()?);
                    let (i, addr, len) = (inp.u16()?, inp.u32()?, inp.u32()?);
                    let (flags, next) = (inp.u16()?, inp.u16()?);
                    self.desc(&r, i, u64::from(addr), len, flags, next);
                }
                1 => {
                    let (_, r) = self.ring(inp.u8()?);
                    self.offer(&r, inp.u16()?);
                }
                2 => {
                    let (qi, r) = self.ring(inp.u8()?);
                    let els = Self::elements(inp)?;
                    let size = r.size.max(1);
                    let head = self.cursor[qi] % size;
                    let mut i = head;
                    for (k, (flags, addr, len)) in els.iter().enumerate() {
                        let next = (i + 1) % size;
                        let more = k + 1 < els.len();
                        let f = flags | if more { F_NEXT } else { 0 };
                        self.desc(&r, i, *addr, *len, f, next);
                        i = next;
                    }
                    self.cursor[qi] = i;
                    self.offer(&r, head);
                }
                3 => {
                    let addr = u64::from(inp.u32()?);
                    let n = usize::from(inp.u16()?);
                    let bytes = inp.up_to(n);
                    let _ = self.mem.write_slice(bytes, GuestAddress(addr));
                }
                4 => {
                    let (_, r) = self.ring(inp.u8()?);
                    write(&self.mem, r.avail + 2, inp.u16()?);
                }
                5 => {
                    let (_, r) = self.ring(inp.u8()?);
                    write(&self.mem, r.avail + 4 + 2 * u64::from(r.size), inp.u16()?);
                }
                6 => {
                    let (_, r) = self.ring(inp.u8()?);
                    write(&self.mem, r.avail, inp.u16()?);
                }
                7 => {
                    let (qi, r) = self.ring(inp.u8()?);
                    let table = u64::from(inp.u32()?);
                    let els = Self::elements(inp)?;
                    for (k, (flags, addr, len)) in els.iter().enumerate() {
                        let more = k + 1 < els.len();
                        let f = flags | if more { F_NEXT } else { 0 };
                        let at = table + 16 * k as u64;
                        write(&self.mem, at, *addr);
                        write(&self.mem, at + 8, *len);
                        write(&self.mem, at + 12, f);
                        write(&self.mem, at + 14, (k + 1) as u16);
                    }
                    let size = r.size.max(1);
                    let head = self.cursor[qi] % size;
                    self.desc(&r, head, table, 16 * els.len() as u32, F_INDIRECT, 0);
                    self.cursor[qi] = (head + 1) % size;
                    self.offer(&r, head);
                }
                8 => {
                    let (qi, _) = self.ring(inp.u8()?);
                    return Some(Step::Kick(qi));
                }
                other => return Some(Step::Device(other)),
            }
        }
    }
}
