//! virtio-balloon against hand-built rings in a `GuestMemoryMmap`: page
//! discards seen as zeros, queue numbering by feature, the control side.

use std::sync::atomic::Ordering;

use vm_memory::Bytes;

use super::super::chain::testing::{memory, CountingIrq, Ring, F_NEXT, F_WRITE};
use super::*;

const SIZE: u16 = 16;
/// Where test pages live; 256 KiB-aligned so any host page size up
/// to that divides it.
const PAGES: u64 = 0x40000;
const LIST: u64 = 0x10000;

/// Queue `k`'s ring: descriptors, avail and used in one 4 KiB page.
fn rq(k: u16) -> Ring {
    let base = 0x1000 * (u64::from(k) + 1);
    Ring {
        desc: base,
        avail: base + 0x400,
        used: base + 0x800,
        size: SIZE,
    }
}

fn ring(mem: &GuestMemory, k: u16) -> ActiveQueue {
    ActiveQueue {
        index: k,
        queue: rq(k).queue(mem),
        kick: EventFd::new(EFD_NONBLOCK).unwrap(),
    }
}

struct Rig {
    mem: GuestMemory,
    balloon: Balloon,
    control: BalloonControl,
    irq: Arc<CountingIrq>,
    kicks: Vec<EventFd>,
}

/// A balloon activated with `features`, the driver having set up as
/// many queues as it would for them.
fn rig(features: u64) -> Rig {
    let mem = memory();
    let (mut balloon, control) = Balloon::new();
    let n = 2 + u16::from(features & F_STATS_VQ != 0) + u16::from(features & F_REPORTING != 0);
    let queues: Vec<ActiveQueue> = (0..n).map(|k| ring(&mem, k)).collect();
    let kicks = queues.iter().map(|q| q.kick.try_clone().unwrap()).collect();
    let irq = Arc::new(CountingIrq::default());
    balloon
        .activate(Activation {
            mem: mem.clone(),
            queues,
            irq: irq.clone(),
            features: features | features::VERSION_1,
        })
        .unwrap();
    Rig {
        mem,
        balloon,
        control,
        irq,
        kicks,
    }
}

fn fill(mem: &GuestMemory, addr: u64, len: usize, b: u8) {
    mem.write_slice(&vec![b; len], GuestAddress(addr)).unwrap();
}

fn read(mem: &GuestMemory, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}

/// Puts a PFN list at `at` and offers it on queue `k` as chain `head`.
fn send_pfns(r: &Rig, k: u16, head: u16, at: u64, pfns: &[u32], extra: &[u8]) {
    let mut bytes: Vec<u8> = pfns.iter().flat_map(|p| p.to_le_bytes()).collect();
    bytes.extend_from_slice(extra);
    r.mem.write_slice(&bytes, GuestAddress(at)).unwrap();
    rq(k).desc(&r.mem, head, at, bytes.len() as u32, 0, 0);
    rq(k).offer(&r.mem, head);
    r.kicks[usize::from(k)].write(1).unwrap();
}

#[test]
fn inflated_pages_are_discarded_and_bad_pfns_skipped() {
    let r = rig(0);
    let hp = host_page_size() as usize;
    fill(&r.mem, PAGES, hp, 0xab);
    fill(&r.mem, PAGES + 0x20000, hp, 0xcd);
    // A whole host page's worth of guest pages, out of order, plus
    // PFNs past the end of RAM and a trailing partial PFN.
    let first = (PAGES >> PAGE_SHIFT) as u32;
    let mut pfns: Vec<u32> = (first..first + (hp >> PAGE_SHIFT) as u32).rev().collect();
    pfns.extend([0x100, 0xffff_ffff]);
    send_pfns(&r, Q_INFLATE, 0, LIST, &pfns, &[1, 2]);
    // An inflate chain outside RAM comes back unused.
    rq(Q_INFLATE).desc(&r.mem, 1, 0xffff_0000, 8, 0, 0);
    rq(Q_INFLATE).offer(&r.mem, 1);
    r.kicks[0].write(1).unwrap();
    assert_eq!(rq(Q_INFLATE).wait_used(&r.mem, 2), vec![(0, 0), (1, 0)]);
    assert_eq!(read(&r.mem, PAGES, hp), vec![0u8; hp], "discarded: zeros");
    assert_eq!(
        read(&r.mem, PAGES + 0x20000, hp),
        vec![0xcd; hp],
        "untouched"
    );
    assert!(!r.irq.queues.lock().unwrap().is_empty());
}

#[test]
fn deflate_is_acknowledged_and_leaves_memory_alone() {
    let r = rig(F_STATS_VQ);
    fill(&r.mem, PAGES, 0x1000, 0x5a);
    send_pfns(&r, Q_DEFLATE, 3, LIST, &[(PAGES >> PAGE_SHIFT) as u32], &[]);
    assert_eq!(rq(Q_DEFLATE).wait_used(&r.mem, 1), vec![(3, 0)]);
    assert_eq!(read(&r.mem, PAGES, 0x1000), vec![0x5a; 0x1000]);
}

/// Reporting sits at queue 2 without STATS_VQ and at 3 with it.
fn reporting_discards_ranges(features: u64, k: u16) {
    let r = rig(features);
    fill(&r.mem, PAGES, 0x40000, 0x77);
    // 0: a free 128 KiB block and a range covering no whole page.
    rq(k).desc(&r.mem, 0, PAGES, 0x20000, F_WRITE | F_NEXT, 1);
    rq(k).desc(&r.mem, 1, PAGES + 0x30800, 0x1000, F_WRITE, 0);
    rq(k).offer(&r.mem, 0);
    // 2: partly outside RAM: rejected whole.
    rq(k).desc(&r.mem, 2, 0xff000, 0x2000, F_WRITE, 0);
    rq(k).offer(&r.mem, 2);
    r.kicks[usize::from(k)].write(1).unwrap();
    assert_eq!(rq(k).wait_used(&r.mem, 2), vec![(0, 0), (2, 0)]);
    assert_eq!(read(&r.mem, PAGES, 0x20000), vec![0u8; 0x20000]);
    // With 4 KiB host pages the unaligned range spans two partial
    // pages: nothing goes.
    if host_page_size() == PAGE {
        assert_eq!(read(&r.mem, PAGES + 0x30000, 0x2000), vec![0x77; 0x2000]);
    }
    assert_eq!(read(&r.mem, PAGES + 0x20000, 0x10000), vec![0x77; 0x10000]);
}

#[test]
fn reporting_queue_follows_the_negotiated_features() {
    reporting_discards_ranges(F_REPORTING, 2);
    reporting_discards_ranges(F_REPORTING | F_STATS_VQ, 3);
}

#[test]
fn control_moves_the_target_and_interrupts() {
    let (mut balloon, control) = Balloon::new();
    // Before the driver runs: no interrupt to send, and no RAM size
    // to clamp to yet.
    assert_eq!(control.inflate_mib(3).unwrap(), 3);
    assert!(control.inflate_mib(u64::MAX).is_err());
    let mut cfg = [0u8; 16];
    balloon.read_config(0, &mut cfg);
    assert_eq!(u32::from_le_bytes(cfg[..4].try_into().unwrap()), 768);
    assert_eq!(cfg[4..], [0u8; 12]);

    let mem = memory(); // 1 MiB
    let irq = Arc::new(CountingIrq::default());
    balloon
        .activate(Activation {
            mem: mem.clone(),
            queues: vec![ring(&mem, 0), ring(&mem, 1)],
            irq: irq.clone(),
            features: features::VERSION_1,
        })
        .unwrap();
    assert_eq!(control.target_mib(), 1, "clamped to guest RAM");
    assert_eq!(control.deflate_mib(1).unwrap(), 0);
    assert_eq!(irq.configs.load(Ordering::SeqCst), 1);
    assert_eq!(control.deflate_mib(5).unwrap(), 0, "not below zero");
    assert_eq!(control.inflate_mib(7).unwrap(), 1);
    assert_eq!(irq.configs.load(Ordering::SeqCst), 3);
    balloon.read_config(0, &mut cfg);
    assert_eq!(u32::from_le_bytes(cfg[..4].try_into().unwrap()), 256);

    // The driver reports what it holds; other fields ignore writes.
    balloon.write_config(4, &512u32.to_le_bytes());
    balloon.write_config(0, &[9, 9, 9, 9]);
    balloon.write_config(12, &[9, 9, 9, 9]);
    balloon.write_config(u64::MAX, &[9, 9]);
    assert_eq!(control.actual_mib(), 2);
    balloon.read_config(0, &mut cfg);
    assert_eq!(u32::from_le_bytes(cfg[..4].try_into().unwrap()), 256);
    let mut one = [0u8; 1];
    balloon.read_config(5, &mut one);
    assert_eq!(one, [2]);

    balloon.reset();
    assert_eq!(control.inflate_mib(0).unwrap(), 1);
    assert_eq!(
        irq.configs.load(Ordering::SeqCst),
        3,
        "no interrupt after reset"
    );
    assert_eq!(control.actual_mib(), 0);
}

fn stats_bytes(stats: &[(u16, u64)]) -> Vec<u8> {
    stats
        .iter()
        .flat_map(|(t, v)| t.to_le_bytes().into_iter().chain(v.to_le_bytes()))
        .collect()
}

#[test]
fn statistics_are_kept_and_refreshed_on_request() {
    let r = rig(F_STATS_VQ);
    const Q: u16 = 2;
    assert!(r.control.stats().is_empty());
    let first = [(tags::SWAP_IN, 5u64), (tags::FREE_MEMORY, 1234)];
    let mut bytes = stats_bytes(&first);
    bytes.extend_from_slice(&[0xee; 3]); // a partial entry is ignored
    r.mem.write_slice(&bytes, GuestAddress(LIST)).unwrap();
    rq(Q).desc(&r.mem, 0, LIST, bytes.len() as u32, 0, 0);
    rq(Q).offer(&r.mem, 0);
    r.kicks[2].write(1).unwrap();
    let start = Instant::now();
    while r.control.stats().is_empty() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(r.control.stats(), first.to_vec());
    assert!(rq(Q).used(&r.mem).is_empty(), "the device keeps the buffer");

    // A refresh gives the buffer back; the "driver" answers with new
    // numbers in it.
    let control = r.control.clone();
    let waiter = std::thread::spawn(move || control.refresh_stats(Duration::from_secs(5)));
    assert_eq!(rq(Q).wait_used(&r.mem, 1), vec![(0, 0)]);
    let second = [(tags::FREE_MEMORY, 999u64), (tags::TOTAL_MEMORY, 4096)];
    let bytes = stats_bytes(&second);
    r.mem.write_slice(&bytes, GuestAddress(LIST)).unwrap();
    rq(Q).desc(&r.mem, 0, LIST, bytes.len() as u32, 0, 0);
    rq(Q).offer(&r.mem, 0);
    r.kicks[2].write(1).unwrap();
    assert_eq!(waiter.join().unwrap(), Some(second.to_vec()));
    assert_eq!(r.control.stats(), second.to_vec());

    // Without an answer, a refresh times out.
    assert_eq!(r.control.refresh_stats(Duration::from_millis(50)), None);
}

#[test]
fn no_stats_queue_means_no_refresh() {
    let r = rig(0);
    assert_eq!(r.control.refresh_stats(Duration::from_secs(5)), None);
    drop(r.balloon);
}
