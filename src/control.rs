//! In-process VM lifecycle: how the guest (or the user) ends the VM, and how
//! every vCPU thread is told to leave `KVM_RUN`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::bus::lock;
use crate::kvm::VcpuKicker;

/// Why the VM ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestExit {
    /// The guest powered itself off.
    PowerOff,
    /// The guest asked for a reset; lkvm ends the VM (as kvmtool does).
    Reset,
    /// The user typed the escape sequence.
    Quit,
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
            GuestExit::PowerOff | GuestExit::Reset | GuestExit::Quit => EXIT_OK,
            GuestExit::Signal(sig) => 128 + sig,
            GuestExit::Crash(_) => EXIT_GUEST_CRASH,
            GuestExit::VmmError(_) => EXIT_ERROR,
        }
    }
}

/// Shared between the main thread, vCPU threads and devices.
#[derive(Debug)]
pub struct VmControl {
    exit: Mutex<Option<GuestExit>>,
    stopping: AtomicBool,
    evt: EventFd,
    kickers: Mutex<Vec<VcpuKicker>>,
}

impl VmControl {
    pub fn new() -> nix::Result<Self> {
        Ok(VmControl {
            exit: Mutex::new(None),
            stopping: AtomicBool::new(false),
            evt: EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?,
            kickers: Mutex::new(Vec::new()),
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
    }

    /// True once the VM is ending; vCPU loops check it before every run.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Registers a vCPU thread to be kicked when the VM ends. A thread that
    /// registers after the end is kicked at once.
    pub fn add_vcpu(&self, kicker: VcpuKicker) {
        lock(&self.kickers).push(kicker);
        if self.is_stopping() {
            kicker.kick();
        }
    }

    fn kick_all(&self) {
        for k in lock(&self.kickers).iter() {
            k.kick();
        }
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
}
