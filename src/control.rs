//! In-process VM lifecycle: how the guest (or the user) ends the VM, and how
//! every vCPU thread is told to leave `KVM_RUN`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::bus::lock;
use crate::kvm::{Vcpu, VcpuKicker};

/// Work to run on a vCPU's own thread, between two `KVM_RUN`s: vCPU ioctls
/// must come from the thread that holds the vCPU, and a vCPU inside
/// `KVM_RUN` holds it until it exits.
pub type VcpuWork = Box<dyn FnOnce(&Vcpu) + Send>;

/// Why the VM ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestExit {
    /// The guest powered itself off.
    PowerOff,
    /// The guest asked for a reset; lkvm ends the VM (as kvmtool does).
    Reset,
    /// The user typed the escape sequence.
    Quit,
    /// `lkvm stop` asked for it.
    Stopped,
    /// lkvm received a terminating signal.
    Signal(i32),
    /// The guest or KVM failed: triple fault, internal error, failed entry.
    Crash(String),
    /// The VMM itself failed while the guest ran.
    VmmError(String),
}

/// Process exit status of a guest that ran and ended cleanly.
pub const EXIT_OK: i32 = 0;
/// lkvm could not start or run the guest (bad input, host problem).
pub const EXIT_ERROR: i32 = 1;
/// The command line could not be parsed.
pub const EXIT_USAGE: i32 = 2;
/// The guest crashed.
pub const EXIT_GUEST_CRASH: i32 = 3;

impl GuestExit {
    pub fn exit_code(&self) -> i32 {
        match self {
            GuestExit::PowerOff | GuestExit::Reset | GuestExit::Quit | GuestExit::Stopped => {
                EXIT_OK
            }
            GuestExit::Signal(sig) => 128 + sig,
            GuestExit::Crash(_) => EXIT_GUEST_CRASH,
            GuestExit::VmmError(_) => EXIT_ERROR,
        }
    }
}

/// Shared between the main thread, vCPU threads and devices.
pub struct VmControl {
    exit: Mutex<Option<GuestExit>>,
    stopping: AtomicBool,
    evt: EventFd,
    kickers: Mutex<Vec<(u32, VcpuKicker)>>,
    work: Mutex<Vec<(u32, VcpuWork)>>,
    pending_work: AtomicUsize,
    pause: Mutex<PauseState>,
    /// Wakes parked vCPUs (resume, queued work, the end) and pausers.
    pause_cv: Condvar,
}

#[derive(Debug, Default)]
struct PauseState {
    requested: bool,
    parked: usize,
}

impl std::fmt::Debug for VmControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmControl")
            .field("exit", &self.exit_reason())
            .field("stopping", &self.is_stopping())
            .field("pending_work", &self.pending_work.load(Ordering::SeqCst))
            .finish()
    }
}

impl VmControl {
    pub fn new() -> nix::Result<Self> {
        Ok(VmControl {
            exit: Mutex::new(None),
            stopping: AtomicBool::new(false),
            evt: EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?,
            kickers: Mutex::new(Vec::new()),
            work: Mutex::new(Vec::new()),
            pending_work: AtomicUsize::new(0),
            pause: Mutex::new(PauseState::default()),
            pause_cv: Condvar::new(),
        })
    }

    /// Ends the VM. The first reason wins; later ones are only logged.
    pub fn request_exit(&self, why: GuestExit) {
        {
            let mut exit = lock(&self.exit);
            if let Some(first) = exit.as_ref() {
                log::debug!("VM already ending ({first:?}); ignoring {why:?}");
                return;
            }
            log::debug!("VM ending: {why:?}");
            *exit = Some(why);
        }
        self.stopping.store(true, Ordering::SeqCst);
        if let Err(e) = self.evt.write(1) {
            log::warn!("cannot signal VM exit: {e}");
        }
        self.kick_all();
        self.pause_cv.notify_all();
    }

    /// True once the VM is ending; vCPU loops check it before every run.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Registers vCPU `id`'s thread to be kicked when the VM ends or work
    /// is queued for it. A thread that registers after the end is kicked at
    /// once.
    pub fn add_vcpu(&self, id: u32, kicker: VcpuKicker) {
        lock(&self.kickers).push((id, kicker));
        if self.is_stopping() {
            kicker.kick();
        }
    }

    fn kick_all(&self) {
        for (_, k) in lock(&self.kickers).iter() {
            k.kick();
        }
    }

    /// Queues `work` for vCPU `id` and kicks it out of `KVM_RUN` to do it.
    pub fn run_on_vcpu(&self, id: u32, work: VcpuWork) {
        lock(&self.work).push((id, work));
        self.pending_work.fetch_add(1, Ordering::SeqCst);
        if let Some((_, k)) = lock(&self.kickers).iter().find(|(v, _)| *v == id) {
            k.kick();
        }
        self.pause_cv.notify_all();
    }

    /// The vCPU ids that have started.
    pub fn vcpu_ids(&self) -> Vec<u32> {
        lock(&self.kickers).iter().map(|(id, _)| *id).collect()
    }

    /// The kernel thread id of vCPU `id`, once it has started.
    pub fn vcpu_tid(&self, id: u32) -> Option<libc::pid_t> {
        lock(&self.kickers)
            .iter()
            .find(|(v, _)| *v == id)
            .map(|(_, k)| k.tid())
    }

    /// Stops every vCPU before its next guest instruction and waits (up to
    /// `timeout`) until they are parked. Returns how many are. A vCPU held
    /// elsewhere (a PowerPC CPU stopped by the guest) parks when it wakes.
    pub fn pause(&self, timeout: Duration) -> usize {
        lock(&self.pause).requested = true;
        self.kick_all();
        let want = lock(&self.kickers).len();
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.pause);
        while st.parked < want && !self.is_stopping() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = match self.pause_cv.wait_timeout(st, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        st.parked
    }

    pub fn resume(&self) {
        lock(&self.pause).requested = false;
        self.pause_cv.notify_all();
    }

    pub fn is_paused(&self) -> bool {
        lock(&self.pause).requested
    }

    /// Called by vCPU `id` between runs: while the VM is paused, blocks,
    /// still doing the work queued for it (`lkvm debug` dumps a paused VM).
    pub fn park_while_paused(&self, id: u32, mut run_work: impl FnMut(Vec<VcpuWork>)) {
        let mut st = lock(&self.pause);
        if !st.requested {
            return;
        }
        st.parked += 1;
        self.pause_cv.notify_all();
        log::debug!("vCPU {id} paused");
        while st.requested && !self.is_stopping() {
            drop(st);
            run_work(self.take_work(id));
            st = lock(&self.pause);
            if !st.requested || self.is_stopping() || self.pending_work.load(Ordering::SeqCst) > 0 {
                continue;
            }
            st = match self.pause_cv.wait_timeout(st, Duration::from_millis(100)) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        st.parked -= 1;
        log::debug!("vCPU {id} resumed");
    }

    /// The work queued for vCPU `id` (cheap when there is none).
    pub fn take_work(&self, id: u32) -> Vec<VcpuWork> {
        if self.pending_work.load(Ordering::SeqCst) == 0 {
            return Vec::new();
        }
        let mut queue = lock(&self.work);
        let (mine, rest): (Vec<_>, Vec<_>) = queue.drain(..).partition(|(v, _)| *v == id);
        *queue = rest;
        self.pending_work.fetch_sub(mine.len(), Ordering::SeqCst);
        mine.into_iter().map(|(_, w)| w).collect()
    }

    /// Readable once an exit was requested.
    pub fn exit_event(&self) -> &EventFd {
        &self.evt
    }

    pub fn exit_reason(&self) -> Option<GuestExit> {
        lock(&self.exit).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_exit_reason_wins_and_maps_to_its_code() {
        let ctl = VmControl::new().unwrap();
        assert!(!ctl.is_stopping());
        ctl.request_exit(GuestExit::Reset);
        ctl.request_exit(GuestExit::Crash("late".into()));
        assert!(ctl.is_stopping());
        assert_eq!(ctl.exit_reason(), Some(GuestExit::Reset));
        assert_eq!(ctl.exit_event().read().unwrap(), 1);
        assert_eq!(GuestExit::PowerOff.exit_code(), 0);
        assert_eq!(GuestExit::Quit.exit_code(), 0);
        assert_eq!(GuestExit::Crash("x".into()).exit_code(), 3);
        assert_eq!(GuestExit::Signal(15).exit_code(), 143);
    }

    #[test]
    fn work_reaches_only_the_vcpu_it_was_queued_for() {
        let ctl = VmControl::new().unwrap();
        assert!(ctl.take_work(0).is_empty());
        ctl.run_on_vcpu(1, Box::new(|_| {}));
        ctl.run_on_vcpu(0, Box::new(|_| {}));
        ctl.run_on_vcpu(1, Box::new(|_| {}));
        assert_eq!(ctl.take_work(1).len(), 2);
        assert_eq!(ctl.take_work(1).len(), 0);
        assert_eq!(ctl.take_work(0).len(), 1);
        assert_eq!(ctl.pending_work.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn pause_parks_every_vcpu_until_resume_and_work_still_runs() {
        use std::sync::Arc;
        let ctl = Arc::new(VmControl::new().unwrap());
        let ran = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..2u32)
            .map(|id| {
                let (ctl, ran) = (ctl.clone(), ran.clone());
                std::thread::spawn(move || {
                    // The kick signal's handler, with no vCPU behind it.
                    crate::kvm::kick::bind(std::ptr::null_mut()).unwrap();
                    ctl.add_vcpu(id, VcpuKicker::current());
                    while !ctl.is_stopping() {
                        ctl.park_while_paused(id, |work| {
                            ran.fetch_add(work.len(), Ordering::SeqCst);
                        });
                        std::thread::sleep(Duration::from_millis(1));
                    }
                })
            })
            .collect();
        while ctl.vcpu_ids().len() < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(ctl.pause(Duration::from_secs(5)), 2);
        assert!(ctl.is_paused());
        ctl.run_on_vcpu(1, Box::new(|_| {}));
        let t = Instant::now();
        while ran.load(Ordering::SeqCst) == 0 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(ran.load(Ordering::SeqCst), 1, "work runs on a paused vCPU");
        ctl.resume();
        let t = Instant::now();
        while lock(&ctl.pause).parked > 0 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(lock(&ctl.pause).parked, 0);
        ctl.request_exit(GuestExit::Stopped);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(GuestExit::Stopped.exit_code(), 0);
    }
}
