//! Builds a VM from a validated configuration, runs it, and reports how it
//! ended. The order follows kvmtool's init levels: host checks, VM and RAM,
//! interrupt controller, devices, kernel, vCPUs, then the terminal.

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Instant;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::arch::{Arch, BootImages, HostArch, Platform, VirtioSet};
use crate::config::{self, VmConfig};
use crate::control::{GuestExit, VmControl};
use crate::handle::VmHandle;
use crate::ipc::server::ControlSocket;
use crate::kvm::{self, caps, Kvm, Vcpu};
use crate::loader;
use crate::memory::{self, Backing, GuestRam, MemoryPolicy};
use crate::term::{ConsoleSink, EscapeFilter, RawTerminal};
use crate::vcpu::{self, VcpuContext};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Load(#[from] loader::Error),
    #[error(transparent)]
    Config(#[from] config::Error),
    #[error(transparent)]
    Modules(#[from] crate::modinit::Error),
    #[error(transparent)]
    Kvm(#[from] kvm::Error),
    #[error(transparent)]
    Memory(#[from] memory::Error),
    #[error(transparent)]
    Arch(Box<dyn std::error::Error + Send + Sync>),
    #[error("-m {requested} MiB is more than this host's {host} MiB of RAM")]
    RamExceedsHost { requested: u64, host: u64 },
    #[error("-c {requested}: this host's KVM allows at most {max} vCPUs per VM")]
    TooManyCpusForKvm { requested: u32, max: usize },
    #[error("-c {requested}: {arch} guests support at most {max} vCPUs")]
    TooManyCpusForArch {
        requested: u32,
        arch: &'static str,
        max: u32,
    },
    #[error("cannot set up VM control: {0}")]
    Control(#[source] nix::Error),
    #[error("cannot start vCPU thread: {0}")]
    Thread(#[source] io::Error),
    #[error(transparent)]
    Virtio(#[from] crate::virtio::setup::Error),
    #[error(transparent)]
    Ipc(#[from] crate::ipc::Error),
}

fn arch_err<E: std::error::Error + Send + Sync + 'static>(e: E) -> Error {
    Error::Arch(Box::new(e))
}

/// Startup phase timings for `--loglevel debug`.
struct Phases {
    start: Instant,
    last: Instant,
}

impl Phases {
    fn new() -> Self {
        let now = Instant::now();
        Phases {
            start: now,
            last: now,
        }
    }

    fn mark(&mut self, what: &str) {
        let now = Instant::now();
        log::debug!(
            "startup: {what} took {:.2} ms ({:.2} ms total, peak RSS {} KiB)",
            (now - self.last).as_secs_f64() * 1e3,
            (now - self.start).as_secs_f64() * 1e3,
            peak_rss_kib().unwrap_or(0)
        );
        self.last = now;
    }
}

/// This process's peak resident set (VmHWM), for startup diagnostics.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Checks what the host can be asked without KVM.
fn check_host(cfg: &VmConfig) -> Result<(), Error> {
    if let Some(host) = config::host_ram() {
        if cfg.ram_size > host {
            return Err(Error::RamExceedsHost {
                requested: cfg.ram_size >> 20,
                host: host >> 20,
            });
        }
    }
    Ok(())
}

/// Builds and runs a VM of the host's architecture to its end.
pub fn run(cfg: &VmConfig) -> Result<GuestExit, Error> {
    build::<HostArch>(cfg)?.run()
}

/// A VM built and ready to run: every piece `run` needs, and nothing
/// half-made. Fields drop in declaration order, which is the teardown
/// order: devices (which hold the VM fd through the buses) before the
/// architecture's VM-wide state, that before the VM fd, the VM fd before
/// guest RAM is unmapped, and the control socket's name last.
pub struct Vm<A: Arch> {
    /// The vCPUs, until `run` moves them onto their threads.
    vcpus: Vec<Vcpu>,
    /// The buses with every device, and the architecture's exit handler.
    ctx: VcpuContext,
    /// What the control socket serves (`lkvm stat`, `debug`, `balloon`).
    handle: Arc<VmHandle>,
    console: Arc<dyn ConsoleSink>,
    // Held only so that they go in this order.
    #[allow(dead_code)]
    arch: Arc<A>,
    #[allow(dead_code)]
    chipset: A::Chipset,
    #[allow(dead_code)]
    vm: Arc<kvm::Vm>,
    #[allow(dead_code)]
    ram: GuestRam,
    /// The control socket, until `run` serves it (its name is removed
    /// when it is dropped, served or not).
    socket: Option<ControlSocket>,
    ctl: Arc<VmControl>,
    phases: Phases,
}

/// Builds a VM of architecture `A` from a validated configuration: host
/// checks, VM and RAM, interrupt controller, devices, vCPUs, then the
/// kernel (kvmtool's init levels).
pub fn build<A: Arch>(cfg: &VmConfig) -> Result<Vm<A>, Error> {
    let mut phases = Phases::new();
    let arch = A::new(cfg).map_err(arch_err)?;
    let cmdline = cfg.cmdline(arch.default_cmdline())?;
    check_host(cfg)?;
    // Claim the name first: a second guest with a live name is refused
    // before anything is built.
    let socket = ControlSocket::bind(&cfg.name)?;
    if let Some(dir) = &cfg.hugetlbfs {
        memory::hugetlbfs_page_size(dir)?;
    }
    let kernel = loader::read_image("kernel", &cfg.kernel, cfg.ram_size)?;
    let initrd = match &cfg.initrd {
        Some(p) => Some(loader::read_image("initrd", p, cfg.ram_size)?),
        // A distribution kernel mounts a 9p root only with its modules.
        None if cfg.virtio.rootfs.is_some() => crate::modinit::for_9p_root(&kernel)?,
        None => None,
    };
    phases.mark("reading images");

    let kvm = Kvm::open(&cfg.dev)?;
    let max = kvm.max_vcpus();
    if cfg.cpus as usize > max {
        return Err(Error::TooManyCpusForKvm {
            requested: cfg.cpus,
            max,
        });
    }
    if cfg.cpus > arch.max_cpus() {
        return Err(Error::TooManyCpusForArch {
            requested: cfg.cpus,
            arch: cfg.arch_info.display,
            max: arch.max_cpus(),
        });
    }
    let vm = Arc::new(kvm.create_vm(arch.vm_type(&kvm).map_err(arch_err)?)?);
    phases.mark("creating the VM");

    let policy = MemoryPolicy {
        sync_mmu: vm.check_extension(caps::KVM_CAP_SYNC_MMU) > 0,
    };
    log::debug!("KVM_CAP_SYNC_MMU: {}", policy.sync_mmu);
    let backing = match &cfg.hugetlbfs {
        Some(dir) => Backing::Hugetlbfs(dir.clone()),
        None => Backing::Anonymous,
    };
    let advice = policy.plan(&backing, arch.wants_thp())?;
    let ranges = arch.ram_ranges(cfg.ram_size).map_err(arch_err)?;
    let mut ram = GuestRam::new(&ranges, &backing, advice)?;
    ram.register(&vm)?;
    phases.mark("guest RAM");

    let chipset = arch.setup_vm(&kvm, &vm).map_err(arch_err)?;
    let ctl = Arc::new(VmControl::new().map_err(Error::Control)?);
    let mut platform = Platform::new(ctl.clone(), vm.clone(), ram.memory().clone());
    let virtio = crate::virtio::setup::build_devices(&cfg.virtio, policy.allows_discard())?;
    let set = VirtioSet {
        devices: virtio.devices,
        transport: cfg.virtio.transport,
    };
    let devices = arch
        .setup_devices(&chipset, &mut platform, set)
        .map_err(arch_err)?;
    let console: Arc<dyn ConsoleSink> = match virtio.console {
        Some(input) => Arc::new(input),
        None => devices.console.clone(),
    };
    phases.mark("irqchip and devices");

    let vcpus = (0..cfg.cpus)
        .map(|id| vm.create_vcpu(id))
        .collect::<Result<Vec<_>, _>>()?;
    let topology = arch
        .init_vcpus(&chipset, &kvm, &vm, &vcpus)
        .map_err(arch_err)?;
    phases.mark("creating vCPUs");

    log::debug!("kernel command line: {cmdline}");
    let images = BootImages {
        kernel: &kernel,
        initrd: initrd.as_deref(),
        cmdline: &cmdline,
    };
    let boot = arch
        .load(&chipset, &topology, &devices.tree, ram.memory(), &images)
        .map_err(arch_err)?;
    for vcpu in &vcpus {
        arch.boot_vcpu(vcpu, &boot).map_err(arch_err)?;
    }
    phases.mark("loading the kernel");

    let arch = Arc::new(arch);
    let dump: crate::handle::VcpuFn<String> = Arc::new({
        let a = arch.clone();
        move |v: &Vcpu| a.dump_vcpu(v)
    });
    let handle = Arc::new(VmHandle {
        name: cfg.name.clone(),
        cpus: cfg.cpus,
        ram_mib: cfg.ram_size >> 20,
        ctl: ctl.clone(),
        dump: dump.clone(),
        nmi: Arc::new({
            let a = arch.clone();
            move |v: &Vcpu| a.inject_nmi(v)
        }),
        memory_map: memory_map(&ram),
        balloon: virtio.balloon,
        console: console.clone(),
        nets: virtio.nets,
    });
    let Platform { pio, mmio, .. } = platform;
    let ctx = VcpuContext {
        pio: Arc::new(pio),
        mmio: Arc::new(mmio),
        ctl: ctl.clone(),
        debug_ioport: cfg.debug_ioport,
        debug_mmio: cfg.debug_mmio,
        dump,
        exits: devices.exits,
    };
    Ok(Vm {
        vcpus,
        ctx,
        handle,
        console,
        arch,
        chipset,
        vm,
        ram,
        socket: Some(socket),
        ctl,
        phases,
    })
}

/// The memory slots, as `lkvm debug --dump` prints them.
fn memory_map(ram: &GuestRam) -> String {
    ram.slots()
        .iter()
        .map(|s| {
            format!(
                "slot {}: guest {:#x}-{:#x} ({} MiB) host {:#x}{}{}",
                s.slot,
                s.guest_addr,
                s.guest_addr + s.size - 1,
                s.size >> 20,
                s.host_addr,
                if s.flags.readonly { " read-only" } else { "" },
                if s.flags.dirty_log { " dirty-log" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl<A: Arch> Vm<A> {
    /// The VM's control, for whoever drives it from outside (tests).
    pub fn control(&self) -> &Arc<VmControl> {
        &self.ctl
    }

    /// Runs the vCPUs until the guest or the user ends the VM, then tears
    /// it down.
    pub fn run(mut self) -> Result<GuestExit, Error> {
        let ctl = self.ctl.clone();
        // Termination signals are taken through a signalfd by the main
        // loop; blocking them here, before any vCPU thread exists, keeps
        // them off the vCPU threads (which inherit the mask).
        let mut signals = SigSet::empty();
        for s in [
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
            Signal::SIGQUIT,
        ] {
            signals.add(s);
        }
        signals.thread_block().map_err(Error::Control)?;
        // Device threads start from here once the guest's drivers are
        // ready, never from a vCPU thread (src/seccomp.rs); like every
        // thread from now on, it inherits the blocked termination signals.
        crate::virtio::worker::start_spawner().map_err(Error::Thread)?;
        let sigfd = SignalFd::with_flags(&signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(Error::Control)?;

        let terminal = RawTerminal::enter();
        let vcpus = std::mem::take(&mut self.vcpus);
        let mut threads = Vec::with_capacity(vcpus.len());
        for vcpu in vcpus {
            match vcpu::spawn(vcpu, self.ctx.clone()) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    ctl.request_exit(GuestExit::VmmError(format!(
                        "cannot start vCPU thread: {e}"
                    )));
                    break;
                }
            }
        }
        self.phases.mark("starting vCPUs");
        let ops: Arc<dyn crate::ipc::server::GuestOps> = self.handle.clone();
        let server = match self.socket.take().map(|s| s.serve(ops, ctl.clone())) {
            Some(Ok(t)) => Some(t),
            None => None,
            Some(Err(e)) => {
                ctl.request_exit(GuestExit::VmmError(format!(
                    "cannot start the control thread: {e}"
                )));
                None
            }
        };

        if let Err(e) = crate::seccomp::enter(crate::seccomp::Kind::Main) {
            ctl.request_exit(GuestExit::VmmError(e.to_string()));
        }
        event_loop(&ctl, self.console.as_ref(), &sigfd);
        self.phases.mark("running the guest");
        for t in threads {
            if t.join().is_err() {
                log::error!("a vCPU thread panicked");
            }
        }
        // The control thread removes the socket as it ends.
        if let Some(t) = server {
            if t.join().is_err() {
                log::error!("the control thread panicked");
            }
        }
        drop(terminal);
        self.phases.mark("stopping vCPUs");
        let exit = ctl
            .exit_reason()
            .unwrap_or(GuestExit::VmmError("VM ended without a reason".into()));
        let mut phases = std::mem::replace(&mut self.phases, Phases::new());
        // The rest of the VM goes here, field by field in declaration
        // order (see `Vm`).
        drop(self);
        phases.mark("destroying the VM");
        Ok(exit)
    }
}

/// Forwards console input and waits for the VM to end or a signal.
fn event_loop(ctl: &VmControl, console: &dyn ConsoleSink, sigfd: &SignalFd) {
    let stdin = io::stdin();
    let mut stdin_open = true;
    let mut filter = EscapeFilter::default();
    let mut buf = [0u8; 512];
    while !ctl.is_stopping() {
        let mut fds = vec![
            PollFd::new(ctl.exit_event().as_fd(), PollFlags::POLLIN),
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
        ];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                ctl.request_exit(GuestExit::VmmError(format!("poll: {e}")));
                break;
            }
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(PollFd::revents)
                .is_some_and(|r| !r.is_empty())
        };
        let (sig_ready, stdin_ready) = (ready(1), stdin_open && ready(2));
        drop(fds);
        if sig_ready {
            if let Ok(Some(info)) = sigfd.read_signal() {
                log::info!("received signal {}, stopping the guest", info.ssi_signo);
                ctl.request_exit(GuestExit::Signal(info.ssi_signo as i32));
            }
        }
        if stdin_ready {
            match stdin.lock().read(&mut buf) {
                Ok(0) => stdin_open = false,
                Ok(n) => {
                    let f = filter.feed(&buf[..n]);
                    if !f.bytes.is_empty() {
                        console.queue_input(&f.bytes);
                    }
                    if f.quit {
                        log::info!("escape sequence typed, stopping the guest");
                        ctl.request_exit(GuestExit::Quit);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("stdin: {e}; console input closed");
                    stdin_open = false;
                }
            }
        }
    }
}

#[cfg(test)]
#[cfg(x86)]
#[path = "vmm_tests.rs"]
mod tests;
