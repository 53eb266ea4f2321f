//! Which vCPUs RTAS has stopped (`stop-self`) and where `start-cpu` asked
//! a stopped one to resume. Pure bookkeeping, tested on every host; the
//! vCPU threads that wait on it live in powerpc/machine.rs.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::bus::lock;

#[derive(Clone, Copy, Debug, Default)]
struct CpuState {
    stopped: bool,
    start: Option<(u64, u64)>,
}

/// Per-CPU start/stop state, shared by the RTAS handler (any vCPU's
/// thread) and the stopped vCPUs' threads.
#[derive(Debug, Default)]
pub struct CpuStates {
    cpus: Mutex<Vec<CpuState>>,
    wake: Condvar,
}

impl CpuStates {
    /// `cpus` vCPUs, all running (secondaries spin in the kernel's hold
    /// loop until released, which RTAS sees as running).
    pub fn new(cpus: u32) -> Self {
        CpuStates {
            cpus: Mutex::new(vec![CpuState::default(); cpus as usize]),
            wake: Condvar::new(),
        }
    }

    /// `query-cpu-stopped-state`: `None` for a CPU that does not exist.
    pub fn running(&self, cpu: u32) -> Option<bool> {
        lock(&self.cpus).get(cpu as usize).map(|c| !c.stopped)
    }

    /// `start-cpu`: only a stopped CPU can be started.
    pub fn start(&self, cpu: u32, entry: u64, r3: u64) -> bool {
        let mut cpus = lock(&self.cpus);
        match cpus.get_mut(cpu as usize) {
            Some(c) if c.stopped => {
                c.stopped = false;
                c.start = Some((entry, r3));
                self.wake.notify_all();
                true
            }
            _ => false,
        }
    }

    /// `stop-self`.
    pub fn stop(&self, cpu: u32) {
        if let Some(c) = lock(&self.cpus).get_mut(cpu as usize) {
            c.stopped = true;
        }
    }

    /// Waits (at most `timeout`) for a `start-cpu` naming `cpu`; returns
    /// its entry point and r3 once.
    pub fn wait_start(&self, cpu: u32, timeout: Duration) -> Option<(u64, u64)> {
        let mut cpus: MutexGuard<'_, Vec<CpuState>> = lock(&self.cpus);
        if let Some(start) = cpus.get_mut(cpu as usize).and_then(|c| c.start.take()) {
            return Some(start);
        }
        cpus = self
            .wake
            .wait_timeout(cpus, timeout)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
        cpus.get_mut(cpu as usize).and_then(|c| c.start.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn only_a_stopped_cpu_starts_and_it_starts_once() {
        let s = CpuStates::new(2);
        assert_eq!(s.running(1), Some(true));
        assert_eq!(s.running(2), None);
        assert!(!s.start(1, 0x100, 7), "running already");
        s.stop(1);
        assert_eq!(s.running(1), Some(false));
        assert!(s.start(1, 0x100, 7));
        assert!(!s.start(1, 0x200, 8), "started already");
        assert_eq!(s.wait_start(1, Duration::ZERO), Some((0x100, 7)));
        assert_eq!(s.wait_start(1, Duration::ZERO), None);
        assert!(!s.start(9, 0, 0), "no such CPU");
    }

    #[test]
    fn a_waiting_cpu_wakes_for_its_start() {
        let s = Arc::new(CpuStates::new(2));
        s.stop(1);
        let waiter = {
            let s = s.clone();
            std::thread::spawn(move || {
                (0..200).find_map(|_| s.wait_start(1, Duration::from_millis(50)))
            })
        };
        assert!(s.start(1, 0xc000, 1));
        assert_eq!(waiter.join().unwrap(), Some((0xc000, 1)));
    }
}
