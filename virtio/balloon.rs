//! virtio-balloon (`--balloon`): the host asks the guest to give memory
//! back (inflate) or lets it take memory again (deflate); the guest also
//! reports free memory on its own (free page reporting) and sends memory
//! statistics on request.
//!
//! Pages the guest hands over are dropped from the host with
//! `madvise(MADV_DONTNEED)`: anonymous guest RAM then reads back as zeros
//! and costs the host nothing until the guest touches it again. That is
//! only sound when KVM follows host page-table changes into the guest's
//! (`KVM_CAP_SYNC_MMU`); this device does not check it. The VMM refuses
//! `--balloon` on hosts without it before the device is created.
//!
//! The protocol counts 4 KiB pages whatever the page sizes. A host page
//! is discarded only when the guest gave all of it in one request (a
//! 64 KiB-page guest always does; a 4 KiB guest on a 64 KiB host mostly
//! does not, and those pages simply stay). Guest RAM backed by a shared
//! file keeps its data in the file after DONTNEED, and hugetlbfs RAM
//! refuses partial huge pages: both are harmless, only less effective.
//!
//! Queues follow the negotiated features, as the driver numbers them:
//! inflate (0), deflate (1), then the stats queue if STATS_VQ was
//! negotiated, then the reporting queue if REPORTING was. All four are
//! exposed, since their number is fixed before negotiation.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::chain::{next_chain, notify, rearm, serve_queue, Chain};
use super::device::{read_config_bytes, Activation, ActiveQueue, Error as DeviceError};
use super::device::{Interrupt, VirtioDevice};
use super::worker::{drain, AsFdBorrowed, Flow, WorkerBuilder, WorkerSlot};
use super::{features, ids, QUEUE_SIZE};
use crate::bus::lock;
use crate::memory::GuestMemory;

pub const F_STATS_VQ: u64 = 1 << 1;
pub const F_DEFLATE_ON_OOM: u64 = 1 << 2;
pub const F_REPORTING: u64 = 1 << 5;

/// Statistics tags (virtio 1.2, 5.5.6.3), for callers that print them.
pub mod tags {
    pub const SWAP_IN: u16 = 0;
    pub const SWAP_OUT: u16 = 1;
    pub const MAJOR_FAULTS: u16 = 2;
    pub const MINOR_FAULTS: u16 = 3;
    pub const FREE_MEMORY: u16 = 4;
    pub const TOTAL_MEMORY: u16 = 5;
    pub const AVAILABLE_MEMORY: u16 = 6;
    pub const DISK_CACHES: u16 = 7;
}

const NAME: &str = "virtio-balloon";
const PAGE_SHIFT: u32 = 12;
const PAGE: u64 = 1 << PAGE_SHIFT;
const PAGES_PER_MIB: u64 = (1 << 20) / PAGE;
const Q_INFLATE: u16 = 0;
const Q_DEFLATE: u16 = 1;
/// Bounds on what one chain may carry: Linux sends at most 256 PFNs and
/// a dozen statistics; reporting chains only describe ranges.
const PFN_CHAIN_LIMIT: u64 = 64 << 10;
const STATS_CHAIN_LIMIT: u64 = 4 << 10;
const REPORT_CHAIN_LIMIT: u64 = u64::MAX;
/// One statistic: le16 tag, le64 value, packed.
const STAT_LEN: usize = 10;

// Worker tokens.
const T_INFLATE: u64 = 0;
const T_DEFLATE: u64 = 1;
const T_STATS: u64 = 2;
const T_REPORT: u64 = 3;
const T_STATS_REQUEST: u64 = 4;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("balloon: {0} MiB is more than a balloon can hold")]
    TooLarge(u64),
}

struct State {
    /// The target, in 4 KiB pages.
    num_pages: u32,
    /// What the driver says it holds.
    actual: u32,
    /// Guest RAM in pages, once the device has seen it.
    ram_pages: Option<u64>,
    stats: Vec<(u16, u64)>,
    /// Counts stats updates, so a waiter can tell a new one.
    stats_seq: u64,
    /// Set while the device runs.
    irq: Option<Arc<dyn Interrupt>>,
    stats_request: Option<EventFd>,
}

struct Shared {
    state: Mutex<State>,
    stats_arrived: Condvar,
}

/// The device; its [`BalloonControl`] changes the target from elsewhere.
pub struct Balloon {
    shared: Arc<Shared>,
    worker: WorkerSlot,
}

/// The host's side of the balloon, for the control socket: cheap to
/// clone, usable from any thread.
#[derive(Clone)]
pub struct BalloonControl {
    shared: Arc<Shared>,
}

impl Balloon {
    pub fn new() -> (Balloon, BalloonControl) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                num_pages: 0,
                actual: 0,
                ram_pages: None,
                stats: Vec::new(),
                stats_seq: 0,
                irq: None,
                stats_request: None,
            }),
            stats_arrived: Condvar::new(),
        });
        (
            Balloon {
                shared: shared.clone(),
                worker: WorkerSlot::default(),
            },
            BalloonControl { shared },
        )
    }
}

impl BalloonControl {
    /// Raises the target by `mib` MiB (at most to all of guest RAM, once
    /// known) and tells a running driver. Returns the new target in MiB.
    pub fn inflate_mib(&self, mib: u64) -> Result<u64, Error> {
        let pages = mib.checked_mul(PAGES_PER_MIB).ok_or(Error::TooLarge(mib))?;
        Ok(self.set_target(|cur| cur.saturating_add(pages)))
    }

    /// Lowers the target by `mib` MiB (not below zero) and tells a
    /// running driver. Returns the new target in MiB.
    pub fn deflate_mib(&self, mib: u64) -> Result<u64, Error> {
        let pages = mib.checked_mul(PAGES_PER_MIB).ok_or(Error::TooLarge(mib))?;
        Ok(self.set_target(|cur| cur.saturating_sub(pages)))
    }

    fn set_target(&self, f: impl FnOnce(u64) -> u64) -> u64 {
        let (irq, target) = {
            let mut st = lock(&self.shared.state);
            let limit = st.ram_pages.unwrap_or(u64::MAX).min(u64::from(u32::MAX));
            let target = f(u64::from(st.num_pages)).min(limit);
            st.num_pages = target as u32;
            (st.irq.clone(), target)
        };
        // Outside the lock: the transport takes its own.
        if let Some(irq) = irq {
            irq.config();
        }
        target / PAGES_PER_MIB
    }

    /// The current target in MiB.
    pub fn target_mib(&self) -> u64 {
        u64::from(lock(&self.shared.state).num_pages) / PAGES_PER_MIB
    }

    /// What the driver last said it holds, in MiB.
    pub fn actual_mib(&self) -> u64 {
        u64::from(lock(&self.shared.state).actual) / PAGES_PER_MIB
    }

    /// The last statistics the guest sent, as (tag, value) pairs
    /// ([`tags`]); empty until it sends any.
    pub fn stats(&self) -> Vec<(u16, u64)> {
        lock(&self.shared.state).stats.clone()
    }

    /// Asks the guest for fresh statistics and waits up to `timeout` for
    /// them. `None` if the device is not running with a stats queue or
    /// the guest did not answer in time.
    pub fn refresh_stats(&self, timeout: Duration) -> Option<Vec<(u16, u64)>> {
        let mut st = lock(&self.shared.state);
        let seq = st.stats_seq;
        match &st.stats_request {
            Some(evt) => {
                if let Err(e) = evt.write(1) {
                    log::warn!("{NAME}: cannot ask for statistics: {e}");
                    return None;
                }
            }
            None => return None,
        }
        let deadline = Instant::now() + timeout;
        while st.stats_seq == seq {
            let left = deadline.checked_duration_since(Instant::now())?;
            st = match self.shared.stats_arrived.wait_timeout(st, left) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        Some(st.stats.clone())
    }
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        ids::BALLOON
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE; 4]
    }

    fn features(&self) -> u64 {
        F_STATS_VQ | F_DEFLATE_ON_OOM | F_REPORTING | features::RING_INDIRECT_DESC
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // num_pages, actual, free_page_hint_cmd_id, poison_val.
        let st = lock(&self.shared.state);
        let mut cfg = [0u8; 16];
        cfg[..4].copy_from_slice(&st.num_pages.to_le_bytes());
        cfg[4..8].copy_from_slice(&st.actual.to_le_bytes());
        read_config_bytes(&cfg, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let mut st = lock(&self.shared.state);
        // Only `actual` belongs to the driver; the rest is read-only.
        let mut actual = st.actual.to_le_bytes();
        let mut ignored = false;
        for (i, b) in data.iter().enumerate() {
            match offset.checked_add(i as u64) {
                Some(at @ 4..=7) => actual[(at - 4) as usize] = *b,
                _ => ignored = true,
            }
        }
        if ignored {
            log::debug!(
                "{NAME}: config write of {} bytes at {offset:#x}: read-only part ignored",
                data.len()
            );
        }
        st.actual = u32::from_le_bytes(actual);
    }

    fn activate(&mut self, mut act: Activation) -> Result<(), DeviceError> {
        let mut next = 2u16;
        let mut slot = |negotiated: bool| {
            negotiated.then(|| {
                let i = next;
                next += 1;
                i
            })
        };
        let stats_idx = slot(act.features & F_STATS_VQ != 0);
        let report_idx = slot(act.features & F_REPORTING != 0);
        let inflate = act
            .take_queue(Q_INFLATE)
            .ok_or(DeviceError::MissingQueue(NAME, Q_INFLATE))?;
        let deflate = act
            .take_queue(Q_DEFLATE)
            .ok_or(DeviceError::MissingQueue(NAME, Q_DEFLATE))?;
        let stats = stats_idx.and_then(|i| act.take_queue(i));
        let report = report_idx.and_then(|i| act.take_queue(i));

        let worker_err = |e| DeviceError::Worker(NAME, e);
        let request = EventFd::new(EFD_NONBLOCK).map_err(worker_err)?;
        let wb = WorkerBuilder::new().map_err(worker_err)?;
        wb.watch(inflate.kick.as_fd_borrowed(), T_INFLATE)
            .map_err(worker_err)?;
        wb.watch(deflate.kick.as_fd_borrowed(), T_DEFLATE)
            .map_err(worker_err)?;
        if let Some(q) = &stats {
            wb.watch(q.kick.as_fd_borrowed(), T_STATS)
                .map_err(worker_err)?;
        }
        if let Some(q) = &report {
            wb.watch(q.kick.as_fd_borrowed(), T_REPORT)
                .map_err(worker_err)?;
        }
        wb.watch(request.as_fd_borrowed(), T_STATS_REQUEST)
            .map_err(worker_err)?;
        let request_for_control = if stats.is_some() {
            Some(request.try_clone().map_err(worker_err)?)
        } else {
            None
        };

        let ram: u64 = act.mem.iter().map(|r| r.len()).sum();
        let mut port = Port {
            mem: act.mem,
            irq: act.irq.clone(),
            inflate,
            deflate,
            stats,
            report,
            held_stats: None,
            request,
            shared: self.shared.clone(),
            host_page: host_page_size(),
        };
        let w = wb
            .spawn(NAME, move |token| port.handle(token))
            .map_err(worker_err)?;
        self.worker.set(w);

        let mut st = lock(&self.shared.state);
        let ram_pages = ram / PAGE;
        st.ram_pages = Some(ram_pages);
        if u64::from(st.num_pages) > ram_pages {
            st.num_pages = ram_pages as u32;
        }
        st.irq = Some(act.irq);
        st.stats_request = request_for_control;
        Ok(())
    }

    fn reset(&mut self) {
        self.worker.stop();
        let mut st = lock(&self.shared.state);
        st.irq = None;
        st.stats_request = None;
        // A reset driver holds nothing; the target stays for the next one.
        st.actual = 0;
    }
}

fn host_page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|n| *n >= PAGE).unwrap_or(PAGE)
}

/// The running device, owned by its worker thread.
struct Port {
    mem: GuestMemory,
    irq: Arc<dyn Interrupt>,
    inflate: ActiveQueue,
    deflate: ActiveQueue,
    stats: Option<ActiveQueue>,
    report: Option<ActiveQueue>,
    /// The stats buffer the device keeps until it wants new statistics.
    held_stats: Option<u16>,
    request: EventFd,
    shared: Arc<Shared>,
    host_page: u64,
}

impl Port {
    fn handle(&mut self, token: u64) -> Flow {
        let (mem, irq, hp) = (&self.mem, self.irq.as_ref(), self.host_page);
        match token {
            T_INFLATE => {
                drain(&self.inflate.kick);
                let q = &mut self.inflate;
                serve_queue(
                    NAME,
                    q.index,
                    &mut q.queue,
                    mem,
                    irq,
                    PFN_CHAIN_LIMIT,
                    |c| {
                        discard_pfns(mem, &read_pfns(c), hp);
                        0
                    },
                );
            }
            T_DEFLATE => {
                // The guest takes the pages back by touching them; the
                // host has nothing to undo.
                drain(&self.deflate.kick);
                let q = &mut self.deflate;
                serve_queue(
                    NAME,
                    q.index,
                    &mut q.queue,
                    mem,
                    irq,
                    PFN_CHAIN_LIMIT,
                    |_| 0,
                );
            }
            T_REPORT => {
                if let Some(q) = &mut self.report {
                    drain(&q.kick);
                    take_chains(q, mem, irq, REPORT_CHAIN_LIMIT, |dc, _| {
                        for d in dc {
                            discard_range(mem, d.addr().0, u64::from(d.len()), hp);
                        }
                        Some(0)
                    });
                }
            }
            T_STATS => self.receive_stats(),
            T_STATS_REQUEST => {
                drain(&self.request);
                if let (Some(q), Some(head)) = (&mut self.stats, self.held_stats.take()) {
                    // Giving the buffer back is the request.
                    match q.queue.add_used(mem, head, 0) {
                        Ok(()) => notify(NAME, q.index, &mut q.queue, mem, irq),
                        Err(e) => log::debug!("{NAME}: stats queue: {e}"),
                    }
                }
            }
            _ => {}
        }
        Flow::Continue
    }

    fn receive_stats(&mut self) {
        let Some(q) = &mut self.stats else {
            return;
        };
        drain(&q.kick);
        let mut held = self.held_stats;
        let mut latest = None;
        let index = q.index;
        take_chains(
            q,
            &self.mem,
            self.irq.as_ref(),
            STATS_CHAIN_LIMIT,
            |_, mut c| {
                latest = Some(read_stats(&mut c));
                // One buffer is all the device needs to hold; a second one
                // (the driver never sends it) goes straight back.
                if held.is_none() {
                    held = Some(c.head);
                    None
                } else {
                    log::debug!("{NAME}: queue {index}: a second stats buffer returned");
                    Some(0)
                }
            },
        );
        self.held_stats = held;
        if let Some(stats) = latest {
            let mut st = lock(&self.shared.state);
            st.stats = stats;
            st.stats_seq += 1;
            self.shared.stats_arrived.notify_all();
        }
    }
}

/// Pops every available chain: malformed ones go back unused, valid ones
/// to `f` with their descriptors, which returns the used length or `None`
/// to keep the chain. Interrupts once if anything was used.
fn take_chains<'m>(
    q: &mut ActiveQueue,
    mem: &'m GuestMemory,
    irq: &dyn Interrupt,
    limit: u64,
    mut f: impl FnMut(DescriptorChain<&'m GuestMemory>, Chain<'m>) -> Option<u32>,
) {
    let index = q.index;
    let queue: &mut Queue = &mut q.queue;
    let used_before = queue.next_used();
    loop {
        if !queue.ready() {
            break;
        }
        if let Err(e) = queue.disable_notification(mem) {
            log::debug!("{NAME}: queue {index}: {e}");
            break;
        }
        while let Some(dc) = next_chain(NAME, index, queue, mem, irq) {
            let head = dc.head_index();
            let used = match Chain::parse(mem, dc.clone(), limit) {
                Ok(c) => f(dc, c),
                Err(e) => {
                    log::debug!("{NAME}: queue {index}: descriptor {head} rejected: {e}");
                    Some(0)
                }
            };
            if let Some(len) = used {
                if let Err(e) = queue.add_used(mem, head, len) {
                    log::debug!("{NAME}: queue {index}: cannot return descriptor {head}: {e}");
                }
            }
        }
        if !rearm(NAME, index, queue, mem, irq) {
            break;
        }
    }
    if queue.next_used() != used_before {
        notify(NAME, index, queue, mem, irq);
    }
}

/// The le32 page frame numbers a chain carries; a trailing partial one is
/// ignored.
fn read_pfns(mut c: Chain<'_>) -> Vec<u32> {
    let mut bytes = vec![0u8; c.reader.available_bytes()];
    if let Err(e) = std::io::Read::read_exact(&mut c.reader, &mut bytes) {
        log::debug!("{NAME}: PFN list: {e}");
        return Vec::new();
    }
    bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn read_stats(c: &mut Chain<'_>) -> Vec<(u16, u64)> {
    let mut bytes = vec![0u8; c.reader.available_bytes()];
    if let Err(e) = std::io::Read::read_exact(&mut c.reader, &mut bytes) {
        log::debug!("{NAME}: statistics: {e}");
        return Vec::new();
    }
    bytes
        .chunks_exact(STAT_LEN)
        .map(|s| {
            let (tag, val) = s.split_at(2);
            let mut v = [0u8; 8];
            v.copy_from_slice(val);
            (u16::from_le_bytes([tag[0], tag[1]]), u64::from_le_bytes(v))
        })
        .collect()
}

/// Discards the guest pages `pfns` names: each must be a whole page in
/// guest RAM (others are logged and skipped); neighbours are merged so
/// that host pages larger than 4 KiB can go too.
fn discard_pfns(mem: &GuestMemory, pfns: &[u32], host_page: u64) {
    let mut pages: Vec<u64> = pfns
        .iter()
        .map(|pfn| u64::from(*pfn))
        .filter(|pfn| {
            let ok = mem
                .get_slice(GuestAddress(pfn << PAGE_SHIFT), PAGE as usize)
                .is_ok();
            if !ok {
                log::debug!("{NAME}: PFN {pfn:#x} is not guest RAM; skipped");
            }
            ok
        })
        .collect();
    pages.sort_unstable();
    pages.dedup();
    let mut run: Option<(u64, u64)> = None;
    for pfn in pages {
        run = match run {
            Some((first, end)) if end == pfn => Some((first, end + 1)),
            other => {
                if let Some((first, end)) = other {
                    discard_range(
                        mem,
                        first << PAGE_SHIFT,
                        (end - first) << PAGE_SHIFT,
                        host_page,
                    );
                }
                Some((pfn, pfn + 1))
            }
        };
    }
    if let Some((first, end)) = run {
        discard_range(
            mem,
            first << PAGE_SHIFT,
            (end - first) << PAGE_SHIFT,
            host_page,
        );
    }
}

/// Discards the whole host pages inside guest range `addr..addr+len`,
/// region by region; anything outside guest RAM is logged and skipped.
fn discard_range(mem: &GuestMemory, addr: u64, len: u64, host_page: u64) {
    let Some(end) = addr.checked_add(len) else {
        log::debug!("{NAME}: range {addr:#x}+{len:#x} wraps; skipped");
        return;
    };
    let mut at = addr;
    while at < end {
        let Some((region, off)) = mem.to_region_addr(GuestAddress(at)) else {
            log::debug!("{NAME}: {at:#x} is not guest RAM; rest of range skipped");
            return;
        };
        let n = region.len().saturating_sub(off.0).min(end - at);
        match region.get_host_address(off) {
            Ok(host) => dontneed(host as u64, n, host_page),
            Err(e) => log::debug!("{NAME}: {at:#x}: {e}"),
        }
        if n == 0 {
            return;
        }
        at += n;
    }
}

/// `madvise(MADV_DONTNEED)` on the host pages wholly inside `host..+len`,
/// which lies in one guest RAM mapping.
fn dontneed(host: u64, len: u64, host_page: u64) {
    let mask = host_page - 1;
    let Some(start) = host.checked_add(mask).map(|a| a & !mask) else {
        return;
    };
    let Some(end) = host.checked_add(len).map(|e| e & !mask) else {
        return;
    };
    if start >= end {
        return;
    }
    // SAFETY: `start..end` lies inside a guest RAM mapping (the caller
    // found it in one vm-memory region, which stays mapped for the VM's
    // life). lkvm never holds Rust references into guest RAM, only
    // volatile accesses, so pages vanishing under it change nothing but
    // their contents, which the guest has given up.
    let r = unsafe {
        libc::madvise(
            start as usize as *mut libc::c_void,
            (end - start) as usize,
            libc::MADV_DONTNEED,
        )
    };
    if r < 0 {
        log::debug!(
            "{NAME}: madvise({start:#x}, {:#x}): {}",
            end - start,
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests;
