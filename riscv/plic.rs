//! A userspace PLIC (SiFive/RISC-V platform-level interrupt controller)
//! for hosts without in-kernel AIA: sources with priorities, one S-mode
//! context per hart with its enables and threshold, claim/complete, and the
//! hart's external-interrupt line driven through `KVM_INTERRUPT`.
//!
//! Register map (32-bit registers):
//! `0x000000 + 4*src` priority, `0x001000` pending bits,
//! `0x002000 + 0x80*ctx` enable bits, `0x200000 + 0x1000*ctx` threshold,
//! `+4` claim (read) / complete (write).

use std::sync::{Arc, Mutex};

use crate::bus::{lock, BusDevice};
use crate::irq::IrqChip;

const PRIORITY_BASE: u64 = 0x0;
const PENDING_BASE: u64 = 0x1000;
const ENABLE_BASE: u64 = 0x2000;
const ENABLE_STRIDE: u64 = 0x80;
const CONTEXT_BASE: u64 = 0x20_0000;
const CONTEXT_STRIDE: u64 = 0x1000;
/// Priorities are 3 bits wide here.
pub const MAX_PRIORITY: u32 = 7;

/// A hart's S-mode external interrupt input.
pub trait HartLines: Send + Sync {
    fn set_external(&self, hart: u32, level: bool);
}

#[derive(Debug, Default, Clone)]
struct Context {
    enable: Vec<u32>,
    threshold: u32,
    /// The line level last driven to the hart.
    asserted: bool,
}

#[derive(Debug)]
struct State {
    sources: u32,
    priority: Vec<u32>,
    pending: Vec<u32>,
    /// Claimed and not yet completed: the gateway holds further requests.
    in_service: Vec<u32>,
    /// The device's line, for level-sensitive re-triggering at completion.
    level: Vec<u32>,
    /// A request that arrived while the source was in service: the gateway
    /// keeps one, so an edge (a pulse already gone by completion) is not lost.
    latched: Vec<u32>,
    contexts: Vec<Context>,
}

fn bit(words: &[u32], n: u32) -> bool {
    words
        .get((n / 32) as usize)
        .is_some_and(|w| w & (1 << (n % 32)) != 0)
}

fn set_bit(words: &mut [u32], n: u32, on: bool) {
    if let Some(w) = words.get_mut((n / 32) as usize) {
        if on {
            *w |= 1 << (n % 32);
        } else {
            *w &= !(1 << (n % 32));
        }
    }
}

impl State {
    fn new(sources: u32, contexts: u32) -> Self {
        let words = (sources as usize + 1).div_ceil(32);
        State {
            sources,
            priority: vec![0; sources as usize + 1],
            pending: vec![0; words],
            in_service: vec![0; words],
            level: vec![0; words],
            latched: vec![0; words],
            contexts: vec![
                Context {
                    enable: vec![0; words],
                    ..Default::default()
                };
                contexts as usize
            ],
        }
    }

    /// The highest-priority pending, enabled source above the threshold
    /// (lowest id on ties).
    fn best(&self, ctx: usize) -> Option<u32> {
        let c = &self.contexts[ctx];
        (1..=self.sources)
            .filter(|s| bit(&self.pending, *s) && bit(&c.enable, *s))
            .filter(|s| self.priority[*s as usize] > c.threshold)
            .max_by_key(|s| (self.priority[*s as usize], std::cmp::Reverse(*s)))
    }

    fn raise(&mut self, src: u32, level: bool) {
        if src == 0 || src > self.sources {
            return;
        }
        set_bit(&mut self.level, src, level);
        if level {
            if bit(&self.in_service, src) {
                set_bit(&mut self.latched, src, true);
            } else {
                set_bit(&mut self.pending, src, true);
            }
        }
    }

    fn claim(&mut self, ctx: usize) -> u32 {
        match self.best(ctx) {
            Some(src) => {
                set_bit(&mut self.pending, src, false);
                set_bit(&mut self.in_service, src, true);
                src
            }
            None => 0,
        }
    }

    fn complete(&mut self, src: u32) {
        if src == 0 || src > self.sources || !bit(&self.in_service, src) {
            return;
        }
        set_bit(&mut self.in_service, src, false);
        if bit(&self.level, src) || bit(&self.latched, src) {
            set_bit(&mut self.pending, src, true);
        }
        set_bit(&mut self.latched, src, false);
    }

    fn read(&mut self, offset: u64) -> u32 {
        match offset {
            o if o < PENDING_BASE => self
                .priority
                .get(((o - PRIORITY_BASE) / 4) as usize)
                .copied()
                .unwrap_or(0),
            o if o < ENABLE_BASE => self
                .pending
                .get(((o - PENDING_BASE) / 4) as usize)
                .copied()
                .unwrap_or(0),
            o if o < CONTEXT_BASE => {
                let ctx = ((o - ENABLE_BASE) / ENABLE_STRIDE) as usize;
                let word = ((o - ENABLE_BASE) % ENABLE_STRIDE / 4) as usize;
                self.contexts
                    .get(ctx)
                    .and_then(|c| c.enable.get(word))
                    .copied()
                    .unwrap_or(0)
            }
            o => {
                let ctx = ((o - CONTEXT_BASE) / CONTEXT_STRIDE) as usize;
                if ctx >= self.contexts.len() {
                    return 0;
                }
                match (o - CONTEXT_BASE) % CONTEXT_STRIDE {
                    0 => self.contexts[ctx].threshold,
                    4 => self.claim(ctx),
                    _ => 0,
                }
            }
        }
    }

    fn write(&mut self, offset: u64, value: u32) {
        match offset {
            o if o < PENDING_BASE => {
                let src = ((o - PRIORITY_BASE) / 4) as usize;
                if src > 0 && src < self.priority.len() {
                    self.priority[src] = value.min(MAX_PRIORITY);
                }
            }
            // Pending bits are read-only.
            o if o < ENABLE_BASE => {}
            o if o < CONTEXT_BASE => {
                let ctx = ((o - ENABLE_BASE) / ENABLE_STRIDE) as usize;
                let word = ((o - ENABLE_BASE) % ENABLE_STRIDE / 4) as usize;
                // Source 0 does not exist; its enable bit stays clear.
                let mask = if word == 0 { !1 } else { u32::MAX };
                if let Some(w) = self
                    .contexts
                    .get_mut(ctx)
                    .and_then(|c| c.enable.get_mut(word))
                {
                    *w = value & mask;
                }
            }
            o => {
                let ctx = ((o - CONTEXT_BASE) / CONTEXT_STRIDE) as usize;
                if ctx >= self.contexts.len() {
                    return;
                }
                match (o - CONTEXT_BASE) % CONTEXT_STRIDE {
                    0 => self.contexts[ctx].threshold = value.min(MAX_PRIORITY),
                    4 => self.complete(value),
                    _ => {}
                }
            }
        }
    }
}

/// The PLIC, shared by the MMIO bus (guest accesses) and the devices (lines).
pub struct Plic {
    state: Mutex<State>,
    harts: Mutex<Option<Arc<dyn HartLines>>>,
}

impl Plic {
    pub fn new(sources: u32, harts: u32) -> Arc<Self> {
        Arc::new(Plic {
            state: Mutex::new(State::new(sources, harts)),
            harts: Mutex::new(None),
        })
    }

    /// Connects the harts' external interrupt inputs (once the vCPUs exist).
    pub fn attach(&self, lines: Arc<dyn HartLines>) {
        *lock(&self.harts) = Some(lines);
        self.update(&mut lock(&self.state));
    }

    /// Drives every context's output from the current state.
    fn update(&self, state: &mut State) {
        let harts = lock(&self.harts).clone();
        for ctx in 0..state.contexts.len() {
            let want = state.best(ctx).is_some();
            if want != state.contexts[ctx].asserted {
                if let Some(h) = &harts {
                    h.set_external(ctx as u32, want);
                    state.contexts[ctx].asserted = want;
                }
            }
        }
    }
}

impl IrqChip for Plic {
    fn set_level(&self, line: u32, level: bool) -> Result<(), crate::irq::Error> {
        let mut state = lock(&self.state);
        state.raise(line, level);
        self.update(&mut state);
        Ok(())
    }
}

/// The PLIC's MMIO window.
pub struct PlicMmio(pub Arc<Plic>);

impl BusDevice for PlicMmio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if data.len() != 4 || offset % 4 != 0 {
            return;
        }
        let mut state = lock(&self.0.state);
        let v = state.read(offset);
        // A claim changes what is pending.
        self.0.update(&mut state);
        data.copy_from_slice(&v.to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Ok(raw) = <[u8; 4]>::try_from(data) else {
            return;
        };
        if offset % 4 != 0 {
            return;
        }
        let mut state = lock(&self.0.state);
        state.write(offset, u32::from_le_bytes(raw));
        self.0.update(&mut state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Lines(Mutex<Vec<(u32, bool)>>);
    impl HartLines for Lines {
        fn set_external(&self, hart: u32, level: bool) {
            self.0.lock().unwrap().push((hart, level));
        }
    }

    fn plic(harts: u32) -> (Arc<Plic>, PlicMmio, Arc<Lines>) {
        let p = Plic::new(63, harts);
        let lines = Arc::new(Lines::default());
        p.attach(lines.clone());
        (p.clone(), PlicMmio(p), lines)
    }

    fn w(m: &mut PlicMmio, off: u64, v: u32) {
        m.write(off, &v.to_le_bytes());
    }

    fn r(m: &mut PlicMmio, off: u64) -> u32 {
        let mut b = [0u8; 4];
        m.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    const CLAIM0: u64 = CONTEXT_BASE + 4;
    const CLAIM1: u64 = CONTEXT_BASE + CONTEXT_STRIDE + 4;

    #[test]
    fn claim_and_complete_drive_the_hart_line() {
        let (p, mut m, lines) = plic(1);
        w(&mut m, 4 * 5, 1); // priority of source 5
        w(&mut m, ENABLE_BASE, 1 << 5);
        p.set_level(5, true).unwrap();
        p.set_level(5, false).unwrap(); // an edge: the pulse latched
        assert_eq!(r(&mut m, PENDING_BASE), 1 << 5);
        assert_eq!(*lines.0.lock().unwrap(), vec![(0, true)]);
        assert_eq!(r(&mut m, CLAIM0), 5);
        assert_eq!(r(&mut m, PENDING_BASE), 0);
        assert_eq!(lines.0.lock().unwrap().last(), Some(&(0, false)));
        assert_eq!(r(&mut m, CLAIM0), 0, "nothing left to claim");
        w(&mut m, CLAIM0, 5);
        assert_eq!(lines.0.lock().unwrap().len(), 2, "edge source stays quiet");
    }

    #[test]
    fn an_edge_during_service_is_delivered_after_completion() {
        // The 8250 pulses its line for THRE while the guest is still inside
        // the handler of the previous interrupt; losing that pulse stalls
        // the guest's transmit path for good.
        let (p, mut m, _) = plic(2);
        w(&mut m, 4 * 5, 1);
        w(&mut m, ENABLE_BASE, 1 << 5);
        p.set_level(5, true).unwrap();
        p.set_level(5, false).unwrap();
        assert_eq!(r(&mut m, CLAIM0), 5);
        p.set_level(5, true).unwrap();
        p.set_level(5, false).unwrap();
        assert_eq!(r(&mut m, PENDING_BASE), 0, "held while in service");
        w(&mut m, CLAIM0, 5);
        assert_eq!(r(&mut m, PENDING_BASE), 1 << 5);
        assert_eq!(r(&mut m, CLAIM0), 5);
        w(&mut m, CLAIM0, 5);
        assert_eq!(r(&mut m, PENDING_BASE), 0, "one latched request, once");
    }

    #[test]
    fn level_sources_retrigger_after_completion_while_high() {
        let (p, mut m, _) = plic(1);
        w(&mut m, 4 * 3, 2);
        w(&mut m, ENABLE_BASE, 1 << 3);
        p.set_level(3, true).unwrap();
        assert_eq!(r(&mut m, CLAIM0), 3);
        // still high while in service: no new pending
        p.set_level(3, true).unwrap();
        assert_eq!(r(&mut m, PENDING_BASE), 0);
        w(&mut m, CLAIM0, 3);
        assert_eq!(r(&mut m, PENDING_BASE), 1 << 3);
        p.set_level(3, false).unwrap();
        assert_eq!(r(&mut m, CLAIM0), 3);
        w(&mut m, CLAIM0, 3);
        assert_eq!(r(&mut m, PENDING_BASE), 0);
    }

    #[test]
    fn priorities_thresholds_and_per_context_enables() {
        let (p, mut m, lines) = plic(2);
        for (src, prio) in [(1, 1), (2, 3), (3, 3)] {
            w(&mut m, 4 * src, prio);
        }
        w(&mut m, ENABLE_BASE, (1 << 1) | (1 << 2) | (1 << 3)); // hart 0: all
        w(&mut m, ENABLE_BASE + ENABLE_STRIDE, 1 << 1); // hart 1: source 1 only
        w(&mut m, CONTEXT_BASE + CONTEXT_STRIDE, 1); // hart 1 threshold 1
        for s in 1..=3 {
            p.set_level(s, true).unwrap();
            p.set_level(s, false).unwrap();
        }
        // hart 1 only sees source 1, whose priority 1 is not above 1
        assert!(!lines.0.lock().unwrap().contains(&(1, true)));
        assert_eq!(r(&mut m, CLAIM1), 0);
        // hart 0: highest priority first, lowest id among equals
        assert_eq!(r(&mut m, CLAIM0), 2);
        assert_eq!(r(&mut m, CLAIM0), 3);
        w(&mut m, CONTEXT_BASE, 1); // raise hart 0's threshold: source 1 masked
        assert_eq!(r(&mut m, CLAIM0), 0);
        w(&mut m, CONTEXT_BASE + CONTEXT_STRIDE, 0);
        assert_eq!(r(&mut m, CLAIM1), 1);
    }

    #[test]
    fn guest_garbage_is_ignored() {
        let (p, mut m, _) = plic(1);
        w(&mut m, 0, 7); // source 0 has no priority
        assert_eq!(r(&mut m, 0), 0);
        w(&mut m, ENABLE_BASE, u32::MAX);
        assert_eq!(r(&mut m, ENABLE_BASE), !1, "source 0 cannot be enabled");
        w(&mut m, CLAIM0, 40); // completing what was never claimed
        w(&mut m, CLAIM0, 1000);
        w(&mut m, 4 * 2, 99);
        assert_eq!(r(&mut m, 8), MAX_PRIORITY);
        m.write(CLAIM0, &[1, 2]); // wrong size
        m.write(CLAIM0 + 1, &[0; 4]); // misaligned
        let mut b = [0u8; 2];
        m.read(CLAIM0, &mut b);
        assert_eq!(b, [0, 0]);
        assert_eq!(
            r(&mut m, CONTEXT_BASE + 5 * CONTEXT_STRIDE),
            0,
            "no such context"
        );
        p.set_level(0, true).unwrap();
        p.set_level(64, true).unwrap();
        assert_eq!(r(&mut m, PENDING_BASE), 0);
    }

    #[test]
    fn lines_attached_late_catch_up() {
        let p = Plic::new(63, 1);
        let mut m = PlicMmio(p.clone());
        w(&mut m, 4, 1);
        w(&mut m, ENABLE_BASE, 1 << 1);
        p.set_level(1, true).unwrap();
        let lines = Arc::new(Lines::default());
        p.attach(lines.clone());
        assert_eq!(*lines.0.lock().unwrap(), vec![(0, true)]);
    }
}
