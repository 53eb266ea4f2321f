//! One thread per vCPU: run, dispatch the exit, repeat until the VM ends.

use std::fmt::Write as _;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crate::bus::Bus;
use crate::control::{GuestExit, VmControl};
use crate::kvm::{SystemEvent, Vcpu, VcpuExit, VcpuKicker};

/// What a vCPU thread needs besides its vCPU.
#[derive(Clone)]
pub struct VcpuContext {
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub ctl: Arc<VmControl>,
    pub debug_ioport: bool,
    pub debug_mmio: bool,
    /// Formats the vCPU's registers for crash reports.
    pub dump: Arc<dyn Fn(&Vcpu) -> String + Send + Sync>,
    /// Answers the architecture's own exits.
    pub exits: Arc<crate::arch::HostExits>,
}

/// The outcome of one exit, without borrows of the vCPU.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Continue,
    Kicked,
    End(GuestExit),
    Crash(String),
}

fn hex(data: &[u8]) -> String {
    data.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Starts the vCPU on its own thread.
pub fn spawn(vcpu: Vcpu, ctx: VcpuContext) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(format!("vcpu{}", vcpu.id()))
        .spawn(move || run(vcpu, &ctx))
}

fn run(mut vcpu: Vcpu, ctx: &VcpuContext) {
    let id = vcpu.id();
    if let Err(e) = vcpu.bind_to_current_thread() {
        ctx.ctl
            .request_exit(GuestExit::VmmError(format!("vCPU {id}: {e}")));
        return;
    }
    ctx.ctl.add_vcpu(id, VcpuKicker::current());
    if let Err(e) = crate::seccomp::enter(crate::seccomp::Kind::Vcpu) {
        ctx.ctl
            .request_exit(GuestExit::VmmError(format!("vCPU {id}: {e}")));
        return;
    }
    while !ctx.ctl.is_stopping() {
        for work in ctx.ctl.take_work(id) {
            work(&vcpu);
        }
        ctx.ctl.park_while_paused(id, |queued| {
            for work in queued {
                work(&vcpu);
            }
        });
        let step = match vcpu.run() {
            Ok(exit) => handle(id, exit, ctx),
            Err(e) => Step::End(GuestExit::VmmError(format!("vCPU {id}: {e}"))),
        };
        match step {
            Step::Continue => {}
            Step::Kicked => vcpu.clear_immediate_exit(),
            Step::End(why) => ctx.ctl.request_exit(why),
            Step::Crash(msg) => {
                log::debug!("vCPU {id} state:\n{}", (ctx.dump)(&vcpu));
                ctx.ctl.request_exit(GuestExit::Crash(msg));
            }
        }
    }
    log::debug!("vCPU {id} stopped");
}

/// An access no device handled: logged at info with `--debug-ioport` /
/// `--debug-mmio` (kvmtool's meaning of those options), at debug otherwise.
fn unhandled(asked: bool, what: std::fmt::Arguments<'_>) {
    if asked {
        log::info!("{what}");
    } else {
        log::debug!("{what}");
    }
}

fn handle(id: u32, exit: VcpuExit<'_>, ctx: &VcpuContext) -> Step {
    match exit {
        VcpuExit::IoOut { port, size, data } => {
            for chunk in data.chunks(size.max(1)) {
                if !ctx.pio.write(u64::from(port), chunk) {
                    unhandled(
                        ctx.debug_ioport,
                        format_args!(
                            "ioport: vCPU {id} unhandled out {port:#06x} size {} data {}",
                            chunk.len(),
                            hex(chunk)
                        ),
                    );
                }
            }
            Step::Continue
        }
        VcpuExit::IoIn { port, size, data } => {
            for chunk in data.chunks_mut(size.max(1)) {
                if !ctx.pio.read(u64::from(port), chunk) {
                    // An empty ISA bus floats high.
                    chunk.fill(0xff);
                    unhandled(
                        ctx.debug_ioport,
                        format_args!(
                            "ioport: vCPU {id} unhandled in  {port:#06x} size {}",
                            chunk.len()
                        ),
                    );
                }
            }
            Step::Continue
        }
        VcpuExit::MmioWrite { addr, data } => {
            if !ctx.mmio.write(addr, data) {
                unhandled(
                    ctx.debug_mmio,
                    format_args!(
                        "mmio: vCPU {id} unhandled write {addr:#x} size {} data {}",
                        data.len(),
                        hex(data)
                    ),
                );
            }
            Step::Continue
        }
        VcpuExit::MmioRead { addr, data } => {
            if !ctx.mmio.read(addr, data) {
                data.fill(0);
                unhandled(
                    ctx.debug_mmio,
                    format_args!(
                        "mmio: vCPU {id} unhandled read  {addr:#x} size {}",
                        data.len()
                    ),
                );
            }
            Step::Continue
        }
        VcpuExit::Interrupted => Step::Kicked,
        VcpuExit::Arch(exit) => ctx.exits.handle(id, exit).map_or(Step::Continue, Step::End),
        VcpuExit::Hlt => Step::Continue,
        VcpuExit::SystemEvent(SystemEvent::Shutdown) => Step::End(GuestExit::PowerOff),
        VcpuExit::SystemEvent(SystemEvent::Reset) => Step::End(GuestExit::Reset),
        VcpuExit::SystemEvent(SystemEvent::Crash) => Step::Crash(format!(
            "vCPU {id}: the guest reported a crash (system event)"
        )),
        VcpuExit::SystemEvent(SystemEvent::Other(kind)) => {
            log::warn!("vCPU {id}: ignoring system event type {kind}");
            Step::Continue
        }
        VcpuExit::Shutdown => Step::Crash(format!(
            "vCPU {id}: the guest triple-faulted (KVM_EXIT_SHUTDOWN)"
        )),
        VcpuExit::FailEntry { reason, cpu } => Step::Crash(format!(
            "vCPU {id}: VM entry failed on host CPU {cpu} (hardware reason {reason:#x})"
        )),
        VcpuExit::InternalError { suberror } => Step::Crash(format!(
            "vCPU {id}: KVM internal error (suberror {suberror}{})",
            match suberror {
                1 => ": emulation failure",
                2 => ": simultaneous exceptions",
                3 => ": delivery event",
                _ => "",
            }
        )),
        VcpuExit::Other(reason) => {
            Step::Crash(format!("vCPU {id}: unexpected KVM exit reason {reason}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusDevice;
    use std::sync::Mutex;

    struct Echo(Vec<(u64, Vec<u8>)>);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(0x40 + offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    fn ctx() -> (VcpuContext, Arc<Mutex<Echo>>) {
        let dev = Arc::new(Mutex::new(Echo(Vec::new())));
        let mut pio = Bus::new("pio");
        pio.insert("echo", 0x10, 4, dev.clone()).unwrap();
        let mut mmio = Bus::new("mmio");
        mmio.insert("echo", 0x1000, 0x10, dev.clone()).unwrap();
        let ctx = VcpuContext {
            pio: Arc::new(pio),
            mmio: Arc::new(mmio),
            ctl: Arc::new(VmControl::new().unwrap()),
            debug_ioport: true,
            debug_mmio: true,
            dump: Arc::new(|_| String::new()),
            exits: Arc::new(crate::arch::NoExits),
        };
        (ctx, dev)
    }

    #[test]
    fn rep_port_io_is_split_into_accesses_of_the_exit_size() {
        let (ctx, dev) = ctx();
        let data = [1u8, 2, 3, 4];
        let step = handle(
            0,
            VcpuExit::IoOut {
                port: 0x11,
                size: 2,
                data: &data,
            },
            &ctx,
        );
        assert_eq!(step, Step::Continue);
        assert_eq!(
            dev.lock().unwrap().0,
            vec![(1, vec![1, 2]), (1, vec![3, 4])]
        );
        let mut buf = [0u8; 3];
        handle(
            0,
            VcpuExit::IoIn {
                port: 0x12,
                size: 1,
                data: &mut buf,
            },
            &ctx,
        );
        assert_eq!(buf, [0x42; 3]);
    }

    #[test]
    fn unmapped_reads_float_and_mmio_reaches_devices() {
        let (ctx, dev) = ctx();
        let mut buf = [0u8; 2];
        handle(
            0,
            VcpuExit::IoIn {
                port: 0x80,
                size: 2,
                data: &mut buf,
            },
            &ctx,
        );
        assert_eq!(buf, [0xff, 0xff]);
        let mut m = [9u8; 4];
        handle(
            0,
            VcpuExit::MmioRead {
                addr: 0x9000,
                data: &mut m,
            },
            &ctx,
        );
        assert_eq!(m, [0; 4]);
        handle(
            0,
            VcpuExit::MmioWrite {
                addr: 0x1004,
                data: &[7],
            },
            &ctx,
        );
        assert_eq!(dev.lock().unwrap().0, vec![(4, vec![7])]);
    }

    #[test]
    fn guest_ends_and_failures_map_to_exit_reasons() {
        let (ctx, _) = ctx();
        assert_eq!(
            handle(0, VcpuExit::SystemEvent(SystemEvent::Shutdown), &ctx),
            Step::End(GuestExit::PowerOff)
        );
        assert_eq!(
            handle(1, VcpuExit::SystemEvent(SystemEvent::Reset), &ctx),
            Step::End(GuestExit::Reset)
        );
        assert!(
            matches!(handle(0, VcpuExit::Shutdown, &ctx), Step::Crash(m) if m.contains("triple-fault"))
        );
        assert!(matches!(
            handle(0, VcpuExit::InternalError { suberror: 1 }, &ctx),
            Step::Crash(m) if m.contains("emulation failure")
        ));
        assert!(matches!(
            handle(0, VcpuExit::FailEntry { reason: 7, cpu: 1 }, &ctx),
            Step::Crash(_)
        ));
        assert_eq!(handle(0, VcpuExit::Interrupted, &ctx), Step::Kicked);
        assert_eq!(
            handle(0, VcpuExit::SystemEvent(SystemEvent::Other(9)), &ctx),
            Step::Continue
        );
    }
}
