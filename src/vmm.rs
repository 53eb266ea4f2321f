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

use crate::arch::{Arch, HostArch, Platform};
use crate::config::{self, VmConfig};
use crate::control::{GuestExit, VmControl};
use crate::handle::VmHandle;
use crate::ipc::server::ControlSocket;
use crate::kvm::{self, caps, Kvm};
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
    #[error("{0}: virtio devices are not supported on this architecture yet")]
    VirtioNotPlaced(&'static str),
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

/// Runs a VM to its end.
pub fn run(cfg: &VmConfig) -> Result<GuestExit, Error> {
    let mut phases = Phases::new();
    let mut arch = HostArch::new(cfg).map_err(arch_err)?;
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
            arch: std::env::consts::ARCH,
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

    arch.setup_vm(&kvm, &vm).map_err(arch_err)?;
    let ctl = Arc::new(VmControl::new().map_err(Error::Control)?);
    let mut platform = Platform::new(ctl.clone(), vm.clone(), ram.memory().clone());
    let virtio = crate::virtio::setup::build_devices(&cfg.virtio, policy.allows_discard())?;
    platform.virtio = virtio.devices;
    platform.transport = cfg.virtio.transport;
    let mut console = arch.setup_devices(&mut platform).map_err(arch_err)?;
    if let Some(d) = platform.virtio.first() {
        return Err(Error::VirtioNotPlaced(d.name()));
    }
    if let Some(input) = virtio.console {
        console = Arc::new(input);
    }
    phases.mark("irqchip and devices");

    let mut vcpus = Vec::with_capacity(cfg.cpus as usize);
    for id in 0..cfg.cpus {
        let mut vcpu = vm.create_vcpu(id)?;
        arch.init_vcpu(&kvm, &vm, &mut vcpu).map_err(arch_err)?;
        vcpus.push(vcpu);
    }
    arch.finish_vcpus(&vm, &vcpus).map_err(arch_err)?;
    phases.mark("creating vCPUs");

    log::debug!("kernel command line: {cmdline}");
    let boot = arch
        .load(
            ram.memory(),
            cfg,
            &kernel,
            initrd.as_deref(),
            &cmdline,
            &platform.fdt_nodes,
        )
        .map_err(arch_err)?;
    drop(kernel);
    drop(initrd);
    for vcpu in &mut vcpus {
        arch.boot_vcpu(vcpu, &boot).map_err(arch_err)?;
    }
    phases.mark("loading the kernel");

    let memory_map = ram
        .slots()
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
        .join("\n");
    let arch = Arc::new(arch);
    let dump_arch = arch.clone();
    let nmi_arch = arch.clone();
    let handle = VmHandle {
        name: cfg.name.clone(),
        cpus: cfg.cpus,
        ram_mib: cfg.ram_size >> 20,
        ctl: ctl.clone(),
        dump: Arc::new({
            let a = arch.clone();
            move |v: &crate::kvm::Vcpu| a.dump_vcpu(v)
        }),
        nmi: Arc::new(move |v: &crate::kvm::Vcpu| nmi_arch.inject_nmi(v)),
        memory_map,
        balloon: virtio.balloon.clone(),
        console: console.clone(),
        nets: virtio.nets.clone(),
    };
    let ctx = VcpuContext {
        pio: Arc::new(platform.pio),
        mmio: Arc::new(platform.mmio),
        ctl: ctl.clone(),
        debug_ioport: cfg.debug_ioport,
        debug_mmio: cfg.debug_mmio,
        dump: Arc::new(move |v| dump_arch.dump_vcpu(v)),
        exits: platform.exits.clone(),
    };

    // Termination signals are taken through a signalfd by the main loop;
    // blocking them here, before any vCPU thread exists, keeps them off the
    // vCPU threads (which inherit the mask).
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
    // Device threads start from here once the guest's drivers are ready,
    // never from a vCPU thread (src/seccomp.rs); like every thread from
    // now on, it inherits the blocked termination signals.
    crate::virtio::worker::start_spawner().map_err(Error::Thread)?;
    let sigfd = SignalFd::with_flags(&signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(Error::Control)?;

    let terminal = RawTerminal::enter();
    let mut threads = Vec::with_capacity(vcpus.len());
    for vcpu in vcpus {
        match vcpu::spawn(vcpu, ctx.clone()) {
            Ok(t) => threads.push(t),
            Err(e) => {
                ctl.request_exit(GuestExit::VmmError(format!(
                    "cannot start vCPU thread: {e}"
                )));
                break;
            }
        }
    }
    phases.mark("starting vCPUs");
    let server = match socket.serve(Arc::new(handle), ctl.clone()) {
        Ok(t) => Some(t),
        Err(e) => {
            ctl.request_exit(GuestExit::VmmError(format!(
                "cannot start the control thread: {e}"
            )));
            None
        }
    };

    if let Err(e) = crate::seccomp::enter(crate::seccomp::Kind::Main) {
        ctl.request_exit(GuestExit::VmmError(e.to_string()));
    }
    event_loop(&ctl, console.as_ref(), &sigfd);
    phases.mark("running the guest");
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
    phases.mark("stopping vCPUs");
    let exit = ctl
        .exit_reason()
        .unwrap_or(GuestExit::VmmError("VM ended without a reason".into()));
    // Devices hold the VM (as their irqchip) through the buses; once they
    // are gone the VM fd closes, before guest RAM is unmapped.
    drop(ctx);
    drop(platform.vm);
    drop(platform.fdt_nodes);
    drop(platform.exits);
    drop(platform.mem);
    drop(console);
    drop(arch);
    drop(vm);
    drop(ram);
    phases.mark("destroying the VM");
    Ok(exit)
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
