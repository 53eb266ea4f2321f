//! Making a vCPU thread leave `KVM_RUN`, for every backend: a real-time
//! signal whose handler sets `kvm_run.immediate_exit` of the vCPU bound to
//! the receiving thread, so a kick that lands just before the ioctl is not
//! lost (KVM returns at once with EINTR).

use std::cell::Cell;
use std::io;
use std::ptr;
use std::sync::Once;

use super::{Error, Result};

thread_local! {
    /// `kvm_run.immediate_exit` of the vCPU bound to this thread.
    /// Const-initialised so the signal handler never allocates.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(ptr::null_mut()) };
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let flag = IMMEDIATE_EXIT.with(Cell::get);
    if !flag.is_null() {
        // SAFETY: the pointer was set by `bind` on this thread and points
        // into that vCPU's mmapped kvm_run, which stays mapped until the
        // vCPU is dropped, which calls `unbind` first.
        unsafe { ptr::write_volatile(flag, 1) };
    }
}

fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

static KICK_HANDLER: Once = Once::new();

/// Installs the kick handler (once per process) and points it at this
/// thread's vCPU `immediate_exit` byte.
pub fn bind(immediate_exit: *mut u8) -> Result<()> {
    let mut failed = None;
    KICK_HANDLER.call_once(|| {
        if let Err(e) = vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick) {
            failed = Some(io::Error::from_raw_os_error(e.errno()));
        }
    });
    if let Some(e) = failed {
        return Err(Error::ioctl("sigaction(kick signal)", e));
    }
    IMMEDIATE_EXIT.with(|c| c.set(immediate_exit));
    Ok(())
}

/// Forgets `immediate_exit` if it is the one bound to this thread.
pub fn unbind(immediate_exit: *mut u8) {
    IMMEDIATE_EXIT.with(|c| {
        if c.get() == immediate_exit {
            c.set(ptr::null_mut());
        }
    });
}

/// Sends the kick signal to one vCPU thread.
#[derive(Clone, Copy, Debug)]
pub struct VcpuKicker {
    thread: libc::pthread_t,
    tid: libc::pid_t,
}

impl VcpuKicker {
    /// A kicker for the calling thread.
    pub fn current() -> Self {
        // SAFETY: pthread_self has no preconditions and cannot fail.
        let thread = unsafe { libc::pthread_self() };
        let tid = nix::unistd::gettid().as_raw();
        VcpuKicker { thread, tid }
    }

    /// The kernel's id of the thread, for reading its state under
    /// /proc/self/task when it does not answer.
    pub fn tid(&self) -> libc::pid_t {
        self.tid
    }

    /// The thread must not have been joined yet.
    pub fn kick(&self) {
        // SAFETY: the thread id came from pthread_self of a live thread the
        // VMM joins only after its last kick.
        let rc = unsafe { libc::pthread_kill(self.thread, kick_signal()) };
        if rc != 0 {
            log::debug!(
                "kicking vCPU thread failed: {}",
                io::Error::from_raw_os_error(rc)
            );
        }
    }
}
