//! A userspace XICS for hosts without the in-kernel one: an interrupt
//! source controller (ICS) and one presentation controller (ICP) per server
//! (vCPU), driven by the XICS hypercalls and RTAS calls, raising each
//! vCPU's external interrupt through `KVM_INTERRUPT`.
//!
//! XIRR = CPPR (current processor priority, top byte) | XISR (source,
//! 24 bits). Lower priority numbers are more favoured; 0xff is "masked".

use std::sync::{Arc, Mutex};

use super::hcall::XicsHcalls;
use super::rtas::XicsRtas;
use crate::bus::lock;
use crate::irq::IrqChip;

/// The inter-processor interrupt's source number.
pub const XICS_IPI: u32 = 2;
/// Device interrupt sources are numbered from here.
pub const IRQ_BASE: u32 = 0x1000;
pub const NR_IRQS: u32 = 1024;
const XISR_MASK: u32 = 0x00ff_ffff;
const MASKED: u8 = 0xff;

/// A vCPU's external interrupt input.
pub trait ServerLines: Send + Sync {
    fn set(&self, server: u32, level: bool);
}

#[derive(Clone, Copy, Debug)]
struct Icp {
    xirr: u32,
    pending_priority: u8,
    mfrr: u8,
    output: bool,
}

impl Icp {
    fn cppr(&self) -> u8 {
        (self.xirr >> 24) as u8
    }
    fn xisr(&self) -> u32 {
        self.xirr & XISR_MASK
    }
}

#[derive(Clone, Copy, Debug)]
struct Source {
    server: u32,
    priority: u8,
    saved_priority: u8,
    level_sensitive: bool,
    asserted: bool,
    /// Level source presented and not yet EOIed.
    sent: bool,
    /// Message source the ICP turned away; offered again on resend.
    rejected: bool,
    /// Message source that fired while masked.
    masked_pending: bool,
}

#[derive(Debug)]
struct State {
    icps: Vec<Icp>,
    sources: Vec<Source>,
    /// Output changes to apply to the vCPUs after the state is updated.
    changes: Vec<(u32, bool)>,
}

impl State {
    fn source(&mut self, irq: u32) -> Option<&mut Source> {
        irq.checked_sub(IRQ_BASE)
            .and_then(|i| self.sources.get_mut(i as usize))
    }

    fn set_output(&mut self, server: usize, level: bool) {
        if self.icps[server].output != level {
            self.icps[server].output = level;
            self.changes.push((server as u32, level));
        }
    }

    /// Offers `irq` at `priority` to `server`'s ICP.
    fn icp_irq(&mut self, server: u32, irq: u32, priority: u8) {
        let s = server as usize;
        let Some(icp) = self.icps.get(s).copied() else {
            self.reject(irq);
            return;
        };
        if priority >= icp.cppr() || (icp.xisr() != 0 && icp.pending_priority <= priority) {
            self.reject(irq);
            return;
        }
        if icp.xisr() != 0 {
            self.reject(icp.xisr());
        }
        self.icps[s].xirr = (icp.xirr & !XISR_MASK) | irq;
        self.icps[s].pending_priority = priority;
        self.set_output(s, true);
    }

    fn reject(&mut self, irq: u32) {
        if let Some(src) = self.source(irq) {
            if src.level_sensitive {
                src.sent = false;
            } else {
                src.rejected = true;
            }
        }
    }

    /// Presents an IPI if it is more favoured than what is there.
    fn check_ipi(&mut self, s: usize) {
        let icp = self.icps[s];
        if icp.xisr() != 0 && icp.pending_priority <= icp.mfrr {
            return;
        }
        if icp.xisr() != 0 {
            self.reject(icp.xisr());
        }
        self.icps[s].xirr = (icp.xirr & !XISR_MASK) | XICS_IPI;
        self.icps[s].pending_priority = icp.mfrr;
        self.set_output(s, true);
    }

    fn resend(&mut self, s: usize) {
        if self.icps[s].mfrr < self.icps[s].cppr() {
            self.check_ipi(s);
        }
        for i in 0..self.sources.len() {
            let src = self.sources[i];
            let irq = IRQ_BASE + i as u32;
            if src.server as usize != s || src.priority == MASKED {
                continue;
            }
            if src.level_sensitive {
                if src.asserted && !src.sent {
                    self.sources[i].sent = true;
                    self.icp_irq(src.server, irq, src.priority);
                }
            } else if src.rejected {
                self.sources[i].rejected = false;
                self.icp_irq(src.server, irq, src.priority);
            }
        }
    }

    fn deliver(&mut self, irq: u32) {
        let Some(src) = self.source(irq).copied() else {
            return;
        };
        if src.priority == MASKED {
            if !src.level_sensitive {
                if let Some(s) = self.source(irq) {
                    s.masked_pending = true;
                }
            }
            return;
        }
        if src.level_sensitive {
            if !src.asserted || src.sent {
                return;
            }
            if let Some(s) = self.source(irq) {
                s.sent = true;
            }
        }
        self.icp_irq(src.server, irq, src.priority);
    }

    fn set_irq(&mut self, irq: u32, level: bool) {
        let Some(src) = self.source(irq) else {
            return;
        };
        if src.level_sensitive {
            src.asserted = level;
            if level {
                self.deliver(irq);
            }
        } else if level {
            self.deliver(irq);
        }
    }

    fn cppr(&mut self, s: usize, cppr: u8) {
        let Some(icp) = self.icps.get(s).copied() else {
            return;
        };
        self.icps[s].xirr = (u32::from(cppr) << 24) | icp.xisr();
        if cppr < icp.cppr() {
            // More favoured: what is pending may no longer qualify.
            if icp.xisr() != 0 && cppr <= icp.pending_priority {
                self.icps[s].xirr &= !XISR_MASK;
                self.icps[s].pending_priority = MASKED;
                self.set_output(s, false);
                self.reject(icp.xisr());
            }
        } else if icp.xisr() == 0 {
            self.resend(s);
        }
    }

    fn accept(&mut self, s: usize) -> u32 {
        let Some(icp) = self.icps.get(s).copied() else {
            return 0;
        };
        self.set_output(s, false);
        self.icps[s].xirr = u32::from(icp.pending_priority) << 24;
        self.icps[s].pending_priority = MASKED;
        icp.xirr
    }

    fn eoi(&mut self, s: usize, xirr: u32) {
        if s >= self.icps.len() {
            return;
        }
        self.icps[s].xirr = (xirr & !XISR_MASK) | self.icps[s].xisr();
        let irq = xirr & XISR_MASK;
        if let Some(src) = self.source(irq) {
            if src.level_sensitive {
                src.sent = false;
                if src.asserted {
                    self.deliver(irq);
                }
            }
        }
        if self.icps[s].xisr() == 0 {
            self.resend(s);
        }
    }
}

/// The whole XICS, shared by hcalls, RTAS and devices.
pub struct Xics {
    state: Mutex<State>,
    lines: Mutex<Option<Arc<dyn ServerLines>>>,
}

impl Xics {
    pub fn new(servers: u32) -> Arc<Self> {
        Arc::new(Xics {
            state: Mutex::new(State {
                icps: vec![
                    Icp {
                        xirr: 0,
                        pending_priority: MASKED,
                        mfrr: MASKED,
                        output: false
                    };
                    servers as usize
                ],
                sources: vec![
                    Source {
                        server: 0,
                        priority: MASKED,
                        saved_priority: MASKED,
                        level_sensitive: false,
                        asserted: false,
                        sent: false,
                        rejected: false,
                        masked_pending: false,
                    };
                    NR_IRQS as usize
                ],
                changes: Vec::new(),
            }),
            lines: Mutex::new(None),
        })
    }

    /// Marks a source level-sensitive (device lines default to messages).
    pub fn set_level_sensitive(&self, irq: u32) {
        if let Some(src) = lock(&self.state).source(irq) {
            src.level_sensitive = true;
        }
    }

    /// Connects the vCPUs' external interrupt inputs.
    pub fn attach(&self, lines: Arc<dyn ServerLines>) {
        *lock(&self.lines) = Some(lines);
        let mut st = lock(&self.state);
        let raised: Vec<(u32, bool)> = st
            .icps
            .iter()
            .enumerate()
            .filter(|(_, icp)| icp.output)
            .map(|(i, _)| (i as u32, true))
            .collect();
        st.changes.extend(raised);
        self.flush(&mut st);
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut st = lock(&self.state);
        let r = f(&mut st);
        self.flush(&mut st);
        r
    }

    fn flush(&self, st: &mut State) {
        if let Some(lines) = lock(&self.lines).as_ref() {
            for (server, level) in st.changes.drain(..) {
                lines.set(server, level);
            }
        }
    }
}

impl IrqChip for Xics {
    fn set_level(&self, line: u32, level: bool) -> Result<(), crate::irq::Error> {
        self.with(|st| st.set_irq(line, level));
        Ok(())
    }
}

impl XicsHcalls for Xics {
    fn cppr(&self, server: u32, cppr: u8) {
        self.with(|st| st.cppr(server as usize, cppr));
    }

    fn ipi(&self, server: u32, mfrr: u8) -> bool {
        self.with(|st| {
            let s = server as usize;
            if s >= st.icps.len() {
                return false;
            }
            st.icps[s].mfrr = mfrr;
            if mfrr < st.icps[s].cppr() {
                st.check_ipi(s);
            }
            true
        })
    }

    fn xirr(&self, server: u32) -> u32 {
        self.with(|st| st.accept(server as usize))
    }

    fn eoi(&self, server: u32, xirr: u32) {
        self.with(|st| st.eoi(server as usize, xirr));
    }

    fn ipoll(&self, server: u32) -> Option<(u32, u8)> {
        let st = lock(&self.state);
        st.icps.get(server as usize).map(|i| (i.xirr, i.mfrr))
    }
}

impl XicsRtas for Xics {
    fn set_xive(&self, irq: u32, server: u32, priority: u8) -> bool {
        self.with(|st| {
            let servers = st.icps.len() as u32;
            let Some(src) = st.source(irq) else {
                return false;
            };
            if server >= servers {
                return false;
            }
            src.server = server;
            src.priority = priority;
            src.saved_priority = priority;
            let fire =
                priority != MASKED && (src.masked_pending || (src.level_sensitive && src.asserted));
            src.masked_pending = false;
            if fire {
                st.deliver(irq);
            }
            true
        })
    }

    fn get_xive(&self, irq: u32) -> Option<(u32, u8)> {
        lock(&self.state)
            .source(irq)
            .map(|s| (s.server, s.priority))
    }

    fn int_off(&self, irq: u32) -> bool {
        self.with(|st| {
            st.source(irq)
                .map(|s| {
                    if s.priority != MASKED {
                        s.saved_priority = s.priority;
                    }
                    s.priority = MASKED;
                })
                .is_some()
        })
    }

    fn int_on(&self, irq: u32) -> bool {
        self.with(|st| {
            let Some(src) = st.source(irq) else {
                return false;
            };
            src.priority = src.saved_priority;
            let fire = src.priority != MASKED
                && (src.masked_pending || (src.level_sensitive && src.asserted));
            src.masked_pending = false;
            if fire {
                st.deliver(irq);
            }
            true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Lines(Mutex<Vec<(u32, bool)>>);
    impl ServerLines for Lines {
        fn set(&self, server: u32, level: bool) {
            self.0.lock().unwrap().push((server, level));
        }
    }

    fn xics(servers: u32) -> (Arc<Xics>, Arc<Lines>) {
        let x = Xics::new(servers);
        let l = Arc::new(Lines::default());
        x.attach(l.clone());
        (x, l)
    }

    const DEV: u32 = IRQ_BASE + 5;

    #[test]
    fn a_message_interrupt_is_presented_accepted_and_eoied() {
        let (x, l) = xics(2);
        x.cppr(1, 0xff);
        assert!(x.set_xive(DEV, 1, 5));
        x.set_level(DEV, true).unwrap();
        assert_eq!(*l.0.lock().unwrap(), vec![(1, true)]);
        let xirr = x.xirr(1);
        assert_eq!(
            xirr,
            0xff00_0000 | DEV,
            "CPPR before the accept, and the source"
        );
        assert_eq!(l.0.lock().unwrap().last(), Some(&(1, false)));
        // while handling, CPPR is the interrupt's priority
        assert_eq!(x.ipoll(1), Some((5 << 24, 0xff)));
        x.eoi(1, xirr);
        assert_eq!(x.ipoll(1).unwrap().0 >> 24, 0xff);
    }

    #[test]
    fn masked_and_less_favoured_interrupts_wait() {
        let (x, l) = xics(1);
        x.cppr(0, 4);
        x.set_level(DEV, true).unwrap(); // masked source: held
        assert!(l.0.lock().unwrap().is_empty());
        assert!(x.set_xive(DEV, 0, 6)); // unmasked, but 6 is not above CPPR 4
        assert!(l.0.lock().unwrap().is_empty());
        x.cppr(0, 0xff); // open up: the rejected source is resent
        assert_eq!(*l.0.lock().unwrap(), vec![(0, true)]);
        assert_eq!(x.xirr(0) & XISR_MASK, DEV);
    }

    #[test]
    fn ipis_follow_mfrr() {
        let (x, l) = xics(2);
        x.cppr(1, 0xff);
        assert!(x.ipi(1, 3));
        assert_eq!(*l.0.lock().unwrap(), vec![(1, true)]);
        assert_eq!(x.xirr(1), 0xff00_0000 | XICS_IPI);
        assert!(x.ipi(1, 0xff)); // the guest clears the IPI before EOI
        x.eoi(1, 0xff00_0000 | XICS_IPI);
        assert_eq!(l.0.lock().unwrap().len(), 2);
        assert!(!x.ipi(9, 1), "no such server");
    }

    #[test]
    fn level_sources_reassert_after_eoi_until_lowered() {
        let (x, l) = xics(1);
        x.set_level_sensitive(DEV);
        x.cppr(0, 0xff);
        x.set_xive(DEV, 0, 1);
        x.set_level(DEV, true).unwrap();
        let xirr = x.xirr(0);
        x.eoi(0, 0xff00_0000 | (xirr & XISR_MASK));
        // still asserted: presented again
        assert_eq!(l.0.lock().unwrap().iter().filter(|e| e.1).count(), 2);
        x.set_level(DEV, false).unwrap();
        let xirr = x.xirr(0);
        x.eoi(0, 0xff00_0000 | (xirr & XISR_MASK));
        assert_eq!(l.0.lock().unwrap().iter().filter(|e| e.1).count(), 2);
    }

    #[test]
    fn int_off_and_on_keep_the_priority() {
        let (x, l) = xics(1);
        x.cppr(0, 0xff);
        x.set_xive(DEV, 0, 2);
        assert!(x.int_off(DEV));
        assert_eq!(x.get_xive(DEV), Some((0, 0xff)));
        x.set_level(DEV, true).unwrap();
        assert!(l.0.lock().unwrap().is_empty());
        assert!(x.int_on(DEV));
        assert_eq!(x.get_xive(DEV), Some((0, 2)));
        assert_eq!(
            *l.0.lock().unwrap(),
            vec![(0, true)],
            "fired while off, delivered on"
        );
    }

    #[test]
    fn guest_garbage_is_refused_or_ignored() {
        let (x, _) = xics(1);
        assert!(!x.set_xive(5, 0, 1), "below the source range");
        assert!(!x.set_xive(IRQ_BASE + NR_IRQS, 0, 1));
        assert!(!x.set_xive(DEV, 7, 1), "no such server");
        assert_eq!(x.get_xive(1), None);
        assert!(!x.int_on(0));
        x.cppr(8, 1);
        x.eoi(8, 0);
        assert_eq!(x.xirr(8), 0);
        assert_eq!(x.ipoll(8), None);
        x.set_level(7, true).unwrap();
    }
}
