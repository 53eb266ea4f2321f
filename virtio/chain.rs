//! Descriptor chains as a device may trust them.
//!
//! virtio-queue walks a chain but ends the walk quietly on a bad `next`
//! index, a loop (it stops after queue-size descriptors) or a malformed
//! indirect table. A device must not act on such a truncated chain, so
//! [`Chain::parse`] walks it once more and rejects it: the last descriptor
//! must end the chain, readable buffers must come before writable ones
//! (virtio 1.2, 2.7.4.2), every buffer must lie in guest RAM and the total
//! must stay under the device's limit. A rejected chain is logged at debug
//! level and returned to the driver unused; the device carries on.

use std::num::Wrapping;

use virtio_queue::{desc::split::Descriptor, DescriptorChain, Queue, QueueT, Reader, Writer};
use vm_memory::{GuestAddress, GuestMemory as _, Permissions};

use super::device::Interrupt;
use crate::memory::GuestMemory;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("chain ends early: a next index out of range, a loop, or a bad indirect table")]
    Broken,
    #[error("readable buffer after a writable one")]
    Order,
    #[error("buffer {addr:#x}+{len:#x} is outside guest RAM")]
    OutOfRange { addr: u64, len: u32 },
    #[error("chain of {total} bytes is over this device's limit of {limit}")]
    TooLong { total: u64, limit: u64 },
    #[error("chain has no {0} buffer")]
    Missing(&'static str),
}

/// A validated chain: what the driver wrote and what it left for us.
pub struct Chain<'m> {
    pub head: u16,
    pub reader: Reader<'m>,
    pub writer: Writer<'m>,
}

impl<'m> Chain<'m> {
    /// Checks `chain` and splits it into its readable and writable parts.
    pub fn parse(
        mem: &'m GuestMemory,
        chain: DescriptorChain<&'m GuestMemory>,
        limit: u64,
    ) -> Result<Self, ChainError> {
        let head = chain.head_index();
        let mut total = 0u64;
        let mut seen_writable = false;
        let mut last: Option<Descriptor> = None;
        for d in chain.clone() {
            if d.is_write_only() {
                seen_writable = true;
            } else if seen_writable {
                return Err(ChainError::Order);
            }
            let access = if d.is_write_only() {
                Permissions::Write
            } else {
                Permissions::Read
            };
            if d.len() > 0 && !mem.check_range(d.addr(), d.len() as usize, access) {
                return Err(ChainError::OutOfRange {
                    addr: d.addr().0,
                    len: d.len(),
                });
            }
            total += u64::from(d.len());
            if total > limit {
                return Err(ChainError::TooLong { total, limit });
            }
            last = Some(d);
        }
        match last {
            Some(d) if !d.has_next() => {}
            _ => return Err(ChainError::Broken),
        }
        let reader = Reader::new(mem, chain.clone()).map_err(|_| ChainError::Broken)?;
        let writer = Writer::new(mem, chain).map_err(|_| ChainError::Broken)?;
        Ok(Chain {
            head,
            reader,
            writer,
        })
    }
}

/// What handling one chain produced: the bytes written into it.
pub type Used = u32;

/// How many chains the driver has made available, if the ring says so
/// consistently: an avail ring at guest address 0 or outside RAM, or an
/// avail index more than a queue ahead of where the device is, is a ring
/// no device can serve. A queue already marked broken is `Ok(0)`.
fn pending(queue: &Queue, mem: &GuestMemory) -> Result<u16, &'static str> {
    if !queue.ready() {
        return Ok(0);
    }
    if queue.avail_ring() == 0 {
        return Err("its avail ring is at guest address 0");
    }
    let idx = queue
        .avail_idx(mem, std::sync::atomic::Ordering::Acquire)
        .map_err(|_| "its avail ring is outside guest RAM")?;
    let ahead = (idx - Wrapping(queue.next_avail())).0;
    if ahead > queue.size() {
        return Err("its avail index is more than a queue ahead of the device");
    }
    Ok(ahead)
}

/// Takes a queue the driver made inconsistent out of service: it is
/// marked not ready (so it is never served again until the driver resets
/// the device and sets it up anew), the driver is told through
/// DEVICE_NEEDS_RESET, and it is logged once.
fn break_queue(name: &str, index: u16, queue: &mut Queue, irq: &dyn Interrupt, why: &str) {
    log::warn!(
        "{name}: queue {index}: {why}; the queue is stopped until the driver resets the device"
    );
    queue.set_ready(false);
    irq.needs_reset();
}

/// The next chain the driver made available, or `None` when there is none
/// or the ring is inconsistent (then the queue is broken, see
/// [`break_queue`]). Use this rather than `pop_descriptor_chain`, which
/// logs every failed attempt and leaves the caller to retry for ever.
pub fn next_chain<'m>(
    name: &str,
    index: u16,
    queue: &mut Queue,
    mem: &'m GuestMemory,
    irq: &dyn Interrupt,
) -> Option<DescriptorChain<&'m GuestMemory>> {
    match pending(queue, mem) {
        Ok(0) => None,
        Ok(_) => queue.pop_descriptor_chain(mem),
        Err(why) => {
            break_queue(name, index, queue, irq, why);
            None
        }
    }
}

/// Re-enables notifications; true when the driver made chains available
/// meanwhile (the caller serves them before sleeping). A broken ring is
/// never "more to do".
pub fn rearm(
    name: &str,
    index: u16,
    queue: &mut Queue,
    mem: &GuestMemory,
    irq: &dyn Interrupt,
) -> bool {
    if !queue.ready() {
        return false;
    }
    match queue.enable_notification(mem) {
        Ok(false) => false,
        Ok(true) => match pending(queue, mem) {
            Ok(n) => n > 0,
            Err(why) => {
                break_queue(name, index, queue, irq, why);
                false
            }
        },
        Err(e) => {
            break_queue(name, index, queue, irq, &e.to_string());
            false
        }
    }
}

/// Serves every available chain of `queue`: each goes through `serve`
/// (or, if it is malformed, straight back unused), then the driver is
/// interrupted once if it asked to be. Returns whether anything was used.
pub fn serve_queue(
    name: &str,
    index: u16,
    queue: &mut Queue,
    mem: &GuestMemory,
    irq: &dyn Interrupt,
    limit: u64,
    mut serve: impl FnMut(Chain<'_>) -> Used,
) -> bool {
    let mut used_any = false;
    loop {
        if !queue.ready() {
            return used_any;
        }
        if let Err(e) = queue.disable_notification(mem) {
            break_queue(name, index, queue, irq, &e.to_string());
            return used_any;
        }
        while let Some(dc) = next_chain(name, index, queue, mem, irq) {
            let head = dc.head_index();
            let len = match Chain::parse(mem, dc, limit) {
                Ok(chain) => serve(chain),
                Err(e) => {
                    log::debug!("{name}: queue {index}: descriptor {head} rejected: {e}");
                    0
                }
            };
            if let Err(e) = queue.add_used(mem, head, len) {
                break_queue(name, index, queue, irq, &e.to_string());
                return used_any;
            }
            used_any = true;
        }
        if !rearm(name, index, queue, mem, irq) {
            break;
        }
    }
    if used_any {
        notify(name, index, queue, mem, irq);
    }
    used_any
}

/// Interrupts the driver for `queue` unless it suppressed interrupts.
pub fn notify(name: &str, index: u16, queue: &mut Queue, mem: &GuestMemory, irq: &dyn Interrupt) {
    match queue.needs_notification(mem) {
        Ok(true) => irq.queue(index),
        Ok(false) => {}
        Err(e) => log::debug!("{name}: queue {index}: {e}"),
    }
}

/// Whether the driver has made chains available that were not popped yet.
pub fn has_available(queue: &Queue, mem: &GuestMemory) -> bool {
    queue
        .avail_idx(mem, std::sync::atomic::Ordering::Acquire)
        .is_ok_and(|idx| idx != Wrapping(queue.next_avail()))
}

/// The guest address one past `addr + len`, if it does not wrap.
pub fn end_of(addr: GuestAddress, len: u32) -> Option<u64> {
    addr.0.checked_add(u64::from(len))
}

#[cfg(test)]
pub mod testing {
    //! Hand-built split rings in a `GuestMemoryMmap`, for device tests.

    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use virtio_queue::desc::{split::Descriptor as SplitDesc, RawDescriptor};
    use virtio_queue::{Queue, QueueT};
    use vm_memory::{Bytes, GuestAddress};

    use super::super::device::Interrupt;
    use crate::memory::GuestMemory;

    pub const F_NEXT: u16 = 1;
    pub const F_WRITE: u16 = 2;
    pub const F_INDIRECT: u16 = 4;

    pub const DESC: u64 = 0x1000;
    pub const AVAIL: u64 = 0x3000;
    pub const USED: u64 = 0x4000;
    /// Where tests put buffers.
    pub const DATA: u64 = 0x10000;

    pub fn memory() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    /// One split ring at its own guest addresses, so tests of devices
    /// with several queues can lay them side by side in one memory.
    #[derive(Clone, Copy, Debug)]
    pub struct Ring {
        pub desc: u64,
        pub avail: u64,
        pub used: u64,
        pub size: u16,
    }

    /// The ring the free functions below use.
    pub const RING: Ring = Ring {
        desc: DESC,
        avail: AVAIL,
        used: USED,
        size: 256,
    };

    impl Ring {
        /// A ready queue over this ring.
        pub fn queue(&self, mem: &GuestMemory) -> Queue {
            let mut q = Queue::new(self.size).unwrap();
            q.set_size(self.size);
            q.set_desc_table_address(Some(self.desc as u32), Some(0));
            q.set_avail_ring_address(Some(self.avail as u32), Some(0));
            q.set_used_ring_address(Some(self.used as u32), Some(0));
            q.set_ready(true);
            assert!(q.is_valid(mem));
            q
        }

        /// Writes descriptor `i`.
        pub fn desc(&self, mem: &GuestMemory, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
            let d = SplitDesc::new(addr, len, flags, next);
            mem.write_obj(
                RawDescriptor::from(d),
                GuestAddress(self.desc + 16 * u64::from(i)),
            )
            .unwrap();
        }

        /// Makes the chain starting at `head` available.
        pub fn offer(&self, mem: &GuestMemory, head: u16) {
            let idx: u16 = mem.read_obj(GuestAddress(self.avail + 2)).unwrap();
            let slot = self.avail + 4 + 2 * u64::from(idx % self.size);
            mem.write_obj(head, GuestAddress(slot)).unwrap();
            mem.write_obj(idx.wrapping_add(1), GuestAddress(self.avail + 2))
                .unwrap();
        }

        /// The used entries (id, len) so far, oldest first; only the last
        /// `size` are still in the ring.
        pub fn used(&self, mem: &GuestMemory) -> Vec<(u32, u32)> {
            let idx: u16 = mem.read_obj(GuestAddress(self.used + 2)).unwrap();
            (0..u64::from(idx))
                .map(|i| {
                    let at = self.used + 4 + 8 * (i % u64::from(self.size));
                    (
                        mem.read_obj(GuestAddress(at)).unwrap(),
                        mem.read_obj(GuestAddress(at + 4)).unwrap(),
                    )
                })
                .collect()
        }

        /// [`Ring::used`] once it holds `n` entries, or as it is after
        /// 5 s, for devices that answer on a worker thread.
        pub fn wait_used(&self, mem: &GuestMemory, n: usize) -> Vec<(u32, u32)> {
            let t = Instant::now();
            loop {
                let u = self.used(mem);
                if u.len() >= n || t.elapsed() > Duration::from_secs(5) {
                    return u;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// A ready queue of `size` entries over [`RING`]'s addresses.
    pub fn queue(mem: &GuestMemory, size: u16) -> Queue {
        Ring { size, ..RING }.queue(mem)
    }

    /// Writes descriptor `i` of [`RING`].
    pub fn desc(mem: &GuestMemory, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        RING.desc(mem, i, addr, len, flags, next);
    }

    /// Makes the chain starting at `head` available on [`RING`].
    pub fn offer(mem: &GuestMemory, head: u16) {
        RING.offer(mem, head);
    }

    /// [`RING`]'s used entries so far.
    pub fn used(mem: &GuestMemory) -> Vec<(u32, u32)> {
        RING.used(mem)
    }

    /// [`RING`]'s used entries once there are `n`, or after 5 s.
    pub fn wait_used(mem: &GuestMemory, n: usize) -> Vec<(u32, u32)> {
        RING.wait_used(mem, n)
    }

    /// Counts interrupts by queue.
    #[derive(Default)]
    pub struct CountingIrq {
        pub queues: Mutex<Vec<u16>>,
        pub configs: AtomicU32,
        pub resets: AtomicU32,
    }

    impl Interrupt for CountingIrq {
        fn queue(&self, index: u16) {
            self.queues.lock().unwrap().push(index);
        }
        fn config(&self) {
            self.configs.fetch_add(1, Ordering::SeqCst);
        }
        fn needs_reset(&self) {
            self.resets.fetch_add(1, Ordering::SeqCst);
            self.config();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use vm_memory::{Bytes, GuestAddress};

    use super::testing::*;
    use super::*;

    fn serve_one(
        mem: &GuestMemory,
        q: &mut Queue,
        limit: u64,
    ) -> Vec<Result<(usize, usize), ChainError>> {
        let mut out = Vec::new();
        while let Some(dc) = q.pop_descriptor_chain(mem) {
            out.push(
                Chain::parse(mem, dc, limit)
                    .map(|c| (c.reader.available_bytes(), c.writer.available_bytes())),
            );
        }
        out
    }

    #[test]
    fn a_good_chain_splits_into_reader_and_writer() {
        let mem = memory();
        let mut q = queue(&mem, 16);
        mem.write_slice(b"hello", GuestAddress(DATA)).unwrap();
        desc(&mem, 0, DATA, 5, F_NEXT, 1);
        desc(&mem, 1, DATA + 0x100, 8, F_WRITE, 0);
        offer(&mem, 0);
        let dc = q.pop_descriptor_chain(&mem).unwrap();
        let mut c = Chain::parse(&mem, dc, 1 << 20).unwrap();
        let mut got = String::new();
        c.reader.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello");
        c.writer.write_all(b"world!!!").unwrap();
        assert!(c.writer.write_all(b"x").is_err() || c.writer.available_bytes() == 0);
        let mut back = [0u8; 8];
        mem.read_slice(&mut back, GuestAddress(DATA + 0x100))
            .unwrap();
        assert_eq!(&back, b"world!!!");
    }

    #[test]
    fn malformed_chains_are_rejected() {
        let mem = memory();
        let mut q = queue(&mem, 16);
        // 0: a loop 0 -> 1 -> 0
        desc(&mem, 0, DATA, 4, F_NEXT, 1);
        desc(&mem, 1, DATA, 4, F_NEXT, 0);
        offer(&mem, 0);
        // 2: next index out of range
        desc(&mem, 2, DATA, 4, F_NEXT, 99);
        offer(&mem, 2);
        // 3: writable then readable
        desc(&mem, 3, DATA, 4, F_WRITE | F_NEXT, 4);
        desc(&mem, 4, DATA, 4, 0, 0);
        offer(&mem, 3);
        // 5: outside guest RAM
        desc(&mem, 5, 0xffff_0000, 4, 0, 0);
        offer(&mem, 5);
        // 6: address + length wraps
        desc(&mem, 6, u64::MAX - 1, 4, 0, 0);
        offer(&mem, 6);
        // 7: over the limit
        desc(&mem, 7, DATA, 0x8000, F_WRITE, 0);
        offer(&mem, 7);
        // 8: indirect table inside an indirect table
        let table = DATA + 0x2000;
        let inner = virtio_queue::desc::split::Descriptor::new(table, 16, F_INDIRECT, 0);
        mem.write_obj(
            virtio_queue::desc::RawDescriptor::from(inner),
            GuestAddress(table),
        )
        .unwrap();
        desc(&mem, 8, table, 16, F_INDIRECT, 0);
        offer(&mem, 8);
        let got = serve_one(&mem, &mut q, 0x1000);
        assert_eq!(
            got,
            vec![
                Err(ChainError::Broken),
                Err(ChainError::Broken),
                Err(ChainError::Order),
                Err(ChainError::OutOfRange {
                    addr: 0xffff_0000,
                    len: 4
                }),
                Err(ChainError::OutOfRange {
                    addr: u64::MAX - 1,
                    len: 4
                }),
                Err(ChainError::TooLong {
                    total: 0x8000,
                    limit: 0x1000
                }),
                Err(ChainError::Broken),
            ]
        );
    }

    #[test]
    fn an_indirect_table_is_followed() {
        let mem = memory();
        let mut q = queue(&mem, 16);
        let table = DATA + 0x1000;
        for (i, (addr, len, flags, next)) in
            [(DATA, 3u32, F_NEXT, 1u16), (DATA + 0x100, 7, F_WRITE, 0)]
                .into_iter()
                .enumerate()
        {
            let d = virtio_queue::desc::split::Descriptor::new(addr, len, flags, next);
            mem.write_obj(
                virtio_queue::desc::RawDescriptor::from(d),
                GuestAddress(table + 16 * i as u64),
            )
            .unwrap();
        }
        desc(&mem, 0, table, 32, F_INDIRECT, 0);
        offer(&mem, 0);
        assert_eq!(serve_one(&mem, &mut q, 1 << 20), vec![Ok((3, 7))]);
    }

    #[test]
    fn serve_queue_returns_bad_chains_unused_and_interrupts_once() {
        let mem = memory();
        let mut q = queue(&mem, 16);
        desc(&mem, 0, DATA, 4, F_WRITE, 0);
        offer(&mem, 0);
        desc(&mem, 1, 0xffff_0000, 4, F_WRITE, 0);
        offer(&mem, 1);
        desc(&mem, 2, DATA + 0x10, 4, F_WRITE, 0);
        offer(&mem, 2);
        let irq = CountingIrq::default();
        let mut served = 0;
        let used = serve_queue("test", 3, &mut q, &mem, &irq, 1 << 20, |mut c| {
            served += 1;
            c.writer.write_all(b"abcd").unwrap();
            c.writer.bytes_written() as u32
        });
        assert!(used);
        assert_eq!(served, 2);
        assert_eq!(used_entries(&mem), vec![(0, 4), (1, 0), (2, 4)]);
        assert_eq!(*irq.queues.lock().unwrap(), vec![3]);
        assert!(!has_available(&q, &mem));
    }

    /// With VIRTIO_RING_F_EVENT_IDX the driver says after which used
    /// index it wants an interrupt, and the device says at which avail
    /// index it wants a kick.
    #[test]
    fn serve_queue_follows_the_event_indexes() {
        const SIZE: u16 = 16;
        let ring = Ring { size: SIZE, ..RING };
        let used_event = GuestAddress(ring.avail + 4 + 2 * u64::from(SIZE));
        let avail_event = GuestAddress(ring.used + 4 + 8 * u64::from(SIZE));
        let mem = memory();
        let mut q = ring.queue(&mem);
        q.set_event_idx(true);
        let irq = CountingIrq::default();
        let serve = |q: &mut Queue| serve_queue("test", 0, q, &mem, &irq, 1 << 20, |_| 0);

        // The driver wants an interrupt once used idx passes 0.
        mem.write_obj(0u16, used_event).unwrap();
        ring.desc(&mem, 0, DATA, 4, F_WRITE, 0);
        ring.offer(&mem, 0);
        assert!(serve(&mut q));
        // Served up to avail idx 1: the next kick is wanted when the
        // driver makes entry 1 available.
        assert_eq!(mem.read_obj::<u16>(avail_event).unwrap(), 1);

        // Now only once used idx passes 3: used idx 2 and 3 interrupt
        // nobody, 4 does.
        mem.write_obj(3u16, used_event).unwrap();
        for head in 1..4 {
            ring.desc(&mem, head, DATA, 4, F_WRITE, 0);
            ring.offer(&mem, head);
            assert!(serve(&mut q));
        }
        assert_eq!(mem.read_obj::<u16>(avail_event).unwrap(), 4);
        assert_eq!(ring.used(&mem).len(), 4);
        assert_eq!(*irq.queues.lock().unwrap(), vec![0, 0]);
    }

    fn used_entries(mem: &GuestMemory) -> Vec<(u32, u32)> {
        used(mem)
    }

    #[test]
    fn inconsistent_rings_break_the_queue_once_instead_of_spinning() {
        use std::sync::atomic::Ordering::SeqCst;
        let mem = memory();
        let irq = CountingIrq::default();
        // The avail index 257 entries ahead of a 256-entry queue.
        let mut q = queue(&mem, 256);
        mem.write_obj(257u16, GuestAddress(AVAIL + 2)).unwrap();
        let served = serve_queue("t", 0, &mut q, &mem, &irq, 4096, |_| 0);
        assert!(!served && !q.ready());
        assert_eq!((irq.resets.load(SeqCst), irq.configs.load(SeqCst)), (1, 1));
        // Broken stays broken, quietly.
        assert!(!serve_queue("t", 0, &mut q, &mem, &irq, 4096, |_| 0));
        assert!(next_chain("t", 0, &mut q, &mem, &irq).is_none());
        assert!(!rearm("t", 0, &mut q, &mem, &irq));
        assert_eq!(irq.resets.load(SeqCst), 1);
        // Exactly a queue ahead is legal: 256 chains to serve.
        let mut q = queue(&mem, 256);
        mem.write_obj(256u16, GuestAddress(AVAIL + 2)).unwrap();
        for i in 0..256u16 {
            mem.write_obj(0u16, GuestAddress(AVAIL + 4 + 2 * u64::from(i)))
                .unwrap();
        }
        desc(&mem, 0, DATA, 16, 0, 0);
        let mut n = 0;
        serve_queue("t", 0, &mut q, &mem, &irq, 4096, |_| {
            n += 1;
            0
        });
        assert_eq!((n, q.ready()), (256, true));
        // An avail ring at guest address 0.
        let mut q = queue(&mem, 16);
        q.set_avail_ring_address(Some(0), Some(0));
        assert!(next_chain("t", 3, &mut q, &mem, &irq).is_none());
        assert!(!q.ready());
        assert_eq!(irq.resets.load(SeqCst), 2);
        // An avail ring outside guest RAM (moved after the queue started).
        let mut q = queue(&mem, 16);
        q.set_avail_ring_address(Some(0xfff0_0000), Some(0));
        assert!(!serve_queue("t", 0, &mut q, &mem, &irq, 4096, |_| 0));
        assert_eq!(irq.resets.load(SeqCst), 3);
    }
}
