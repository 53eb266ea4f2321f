//! The PowerPC (sPAPR) implementation of the architecture hooks: the part
//! that talks to KVM.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vm_memory::{Bytes, GuestAddress};

use super::cpu_table::{self, CpuModel};
use super::devices;
use super::fdt::{self, FdtInputs, Mmu, VTY_REG};
use super::hcall::{self, HcallHost, Unknown, XicsHcalls};
use super::hpt;
use super::hvterm::HvTerm;
use super::kvm_sys::backend::vcpu_interrupt;
use super::kvm_sys::*;
use super::layout::{self, SECONDARY_ENTRY};
use super::rtas::{self, RtasHost, XicsRtas, XICS_CALLS};
use super::tce::TceTable;
use super::xics::{ServerLines, Xics};
use crate::arch::{Arch, ExitHandler, Platform};
use crate::bus::lock;
use crate::config::VmConfig;
use crate::control::{GuestExit, VmControl};
use crate::fdt::DeviceNode;
use crate::hw::pci::PciRoot;
use crate::irq::IrqChip;
use crate::kvm::{Device, Kvm, Vcpu, Vm};
use crate::memory::{AlignedMapping, GuestMemory, RamRange};
use crate::term::{ConsoleOut, ConsoleSink};
use crate::virtio::setup::PciHostInfo;

/// 64-bit mode, machine checks enabled, hypervisor state off: how a pSeries
/// partition enters the kernel.
const BOOT_MSR: u64 = 0x8000_0000_0000_1000;
/// KVM-HV hosts allow this many vCPUs in practice (one core each).
const MAX_CPUS: u32 = 2048;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kvm(#[from] crate::kvm::Error),
    #[error(transparent)]
    Layout(#[from] layout::Error),
    #[error(transparent)]
    Fdt(#[from] fdt::Error),
    #[error(transparent)]
    Devices(#[from] crate::virtio::setup::Error),
    #[error("unknown --mmu '{0}' (radix, hash, auto)")]
    UnknownMmu(String),
    #[error("unknown --irqchip '{0}' (powerpc: xics-kernel, xics-user)")]
    UnknownIrqchip(String),
    #[error("--mmu {0}: this host's KVM cannot run {0} guests")]
    MmuUnavailable(&'static str),
    #[error("--irqchip xics-kernel: this host's KVM has no in-kernel XICS")]
    NoKernelXics,
    #[error("the host PVR {0:#010x} is not a POWER7..POWER10 processor lkvm knows")]
    UnknownCpu(u32),
    #[error("cannot allocate the hashed page table: {0}")]
    Htab(#[source] std::io::Error),
    #[error("cannot write {what} into guest memory: {source}")]
    Write {
        what: &'static str,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    #[error("--dump-dtb {path}: {source}")]
    DumpDtb {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MmuChoice {
    Auto,
    Radix,
    Hash,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum XicsChoice {
    Auto,
    Kernel,
    User,
}

/// What the boot vCPU starts with.
#[derive(Clone, Copy, Debug)]
pub struct Boot {
    pub entry: u64,
    pub fdt: u64,
}

/// One CPU's RTAS state: stopped by `stop-self`, and the entry point and r3
/// a `start-cpu` left for it.
#[derive(Clone, Copy, Debug, Default)]
struct CpuState {
    stopped: bool,
    start: Option<(u64, u64)>,
}

/// Per-CPU start/stop state for RTAS `start-cpu` / `stop-self`.
#[derive(Debug, Default)]
struct CpuStates {
    cpus: Mutex<Vec<CpuState>>,
    wake: Condvar,
}

/// What the hcall and RTAS handlers act on.
struct Firmware {
    hvterm: Arc<HvTerm>,
    mem: GuestMemory,
    vm: Arc<Vm>,
    ctl: Arc<VmControl>,
    cpus: u32,
    xics: Option<Arc<Xics>>,
    states: Arc<CpuStates>,
    unknown: Unknown,
    radix_configured: AtomicBool,
    pci: Option<Arc<PciRoot>>,
    tce: TceTable,
}

impl HcallHost for Firmware {
    fn console_write(&self, termno: u64, bytes: &[u8]) {
        if termno != u64::from(VTY_REG) {
            log::debug!("hvterm: write to unknown terminal {termno:#x}");
            return;
        }
        if let Err(e) = ConsoleOut.write_all(bytes) {
            log::debug!("hvterm: {e}");
        }
    }

    fn console_read(&self, termno: u64, max: usize) -> Vec<u8> {
        if termno == u64::from(VTY_REG) {
            self.hvterm.read(max)
        } else {
            Vec::new()
        }
    }

    fn set_interrupt_endianness(&self, little: bool) {
        // LPCR is per vCPU; each vCPU's own thread must set it.
        for id in 0..self.cpus {
            self.ctl.run_on_vcpu(
                id,
                Box::new(move |vcpu| {
                    let set = vcpu.get_one_reg(KVM_REG_PPC_LPCR_64).and_then(|lpcr| {
                        let new = if little {
                            lpcr | LPCR_ILE
                        } else {
                            lpcr & !LPCR_ILE
                        };
                        vcpu.set_one_reg(KVM_REG_PPC_LPCR_64, new)
                    });
                    if let Err(e) = set {
                        log::warn!("vCPU {}: cannot set LPCR[ILE]: {e}", vcpu.id());
                    }
                }),
            );
        }
    }

    fn configure_v3_mmu(&self, radix: bool, gtse: bool, process_table: u64) -> bool {
        let mut flags = 0;
        if radix {
            flags |= KVM_PPC_MMUV3_RADIX;
        }
        if gtse {
            flags |= KVM_PPC_MMUV3_GTSE;
        }
        match self.vm.configure_v3_mmu(flags, process_table) {
            Ok(()) => {
                if !self.radix_configured.swap(true, Ordering::Relaxed) {
                    log::debug!("ppc: guest MMU configured: radix {radix} gtse {gtse} table {process_table:#x}");
                }
                true
            }
            Err(e) => {
                log::warn!("H_REGISTER_PROC_TBL: {e}");
                false
            }
        }
    }

    fn ci_load(&self, addr: u64, size: usize) -> Option<u64> {
        let mut b = [0u8; 8];
        self.mem
            .read_slice(&mut b[..size], GuestAddress(addr))
            .ok()?;
        let mut v = 0u64;
        for byte in &b[..size] {
            v = (v << 8) | u64::from(*byte);
        }
        Some(v)
    }

    fn ci_store(&self, addr: u64, size: usize, value: u64) -> bool {
        let bytes = value.to_be_bytes();
        self.mem
            .write_slice(&bytes[8 - size..], GuestAddress(addr))
            .is_ok()
    }

    fn rtas(&self, caller: u32, args: u64) -> Option<GuestExit> {
        rtas::call(&self.mem, args, caller, self)
    }

    fn xics(&self) -> Option<&dyn XicsHcalls> {
        self.xics.as_deref().map(|x| x as &dyn XicsHcalls)
    }

    fn tce(&self, nr: u64, args: &mut [u64; 9]) -> Option<i64> {
        self.pci.as_ref()?;
        Some(self.tce.hcall(nr, args, &self.mem))
    }
}

impl RtasHost for Firmware {
    fn console_write(&self, bytes: &[u8]) {
        HcallHost::console_write(self, u64::from(VTY_REG), bytes);
    }

    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn cpu_running(&self, cpu: u32) -> Option<bool> {
        lock(&self.states.cpus)
            .get(cpu as usize)
            .map(|c| !c.stopped)
    }

    fn start_cpu(&self, cpu: u32, entry: u64, r3: u64) -> bool {
        let mut cpus = lock(&self.states.cpus);
        match cpus.get_mut(cpu as usize) {
            Some(c) if c.stopped => {
                c.stopped = false;
                c.start = Some((entry, r3));
                self.states.wake.notify_all();
                true
            }
            _ => false,
        }
    }

    fn stop_self(&self, caller: u32) {
        if let Some(c) = lock(&self.states.cpus).get_mut(caller as usize) {
            c.stopped = true;
        }
        let states = self.states.clone();
        let ctl = self.ctl.clone();
        // Park this vCPU's thread until a start-cpu names it (or the VM ends).
        self.ctl.run_on_vcpu(
            caller,
            Box::new(move |vcpu| {
                let mut cpus = lock(&states.cpus);
                loop {
                    if ctl.is_stopping() {
                        return;
                    }
                    if let Some((entry, r3)) =
                        cpus.get_mut(caller as usize).and_then(|c| c.start.take())
                    {
                        drop(cpus);
                        let regs = vcpu.get_regs().map(|mut r| {
                            r.pc = entry;
                            r.gpr[3] = r3;
                            r.msr = BOOT_MSR;
                            r
                        });
                        if let Err(e) = regs.and_then(|r| vcpu.set_regs(&r)) {
                            log::warn!("start-cpu {caller}: {e}");
                        }
                        return;
                    }
                    cpus = states
                        .wake
                        .wait_timeout(cpus, Duration::from_millis(50))
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
            }),
        );
    }

    fn xics(&self) -> Option<&dyn XicsRtas> {
        self.xics.as_deref().map(|x| x as &dyn XicsRtas)
    }

    fn pci(&self) -> Option<&PciRoot> {
        self.pci.as_deref()
    }
}

struct PpcExits(Arc<Firmware>);

impl<'a> ExitHandler<hcall::Hcall<'a>> for PpcExits {
    fn handle(&self, vcpu: u32, h: hcall::Hcall<'a>) -> Option<GuestExit> {
        let (ret, end) = hcall::dispatch(vcpu, h.nr, h.args, self.0.as_ref(), &self.0.unknown);
        *h.ret = ret;
        end
    }
}

/// Every vCPU's external interrupt, through `KVM_INTERRUPT` on a copy of
/// its fd (asynchronous on PowerPC: any thread may call it).
struct VcpuLines(Vec<OwnedFd>);

impl ServerLines for VcpuLines {
    fn set(&self, server: u32, level: bool) {
        let Some(fd) = self.0.get(server as usize) else {
            return;
        };
        let irq = if level {
            KVM_INTERRUPT_SET_LEVEL
        } else {
            KVM_INTERRUPT_UNSET
        };
        if let Err(e) = vcpu_interrupt(fd, irq) {
            log::debug!("KVM_INTERRUPT on server {server}: {e}");
        }
    }
}

pub struct Ppc64 {
    cpus: u32,
    ram_size: u64,
    mmu_choice: MmuChoice,
    xics_choice: XicsChoice,
    mmu: Mmu,
    hv: bool,
    smmu: Option<KvmPpcSmmuInfo>,
    kernel_xics: Option<Device>,
    user_xics: Option<Arc<Xics>>,
    user_htab: Option<AlignedMapping>,
    pvr: u32,
    model: Option<CpuModel>,
    firmware: Option<Arc<Firmware>>,
    vcpu_fds: Vec<OwnedFd>,
    dump_dtb: Option<PathBuf>,
    pci: Option<(Arc<PciRoot>, PciHostInfo)>,
}

impl std::fmt::Debug for Ppc64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ppc64")
            .field("cpus", &self.cpus)
            .field("mmu", &self.mmu)
            .field("hv", &self.hv)
            .finish()
    }
}

impl Ppc64 {
    fn set_mmu(&mut self, vm: &Vm) -> Result<(), Error> {
        let radix = vm.check_extension(KVM_CAP_PPC_MMU_RADIX) > 0;
        // Hosts older than POWER9 report neither capability: hash only.
        let hash = vm.check_extension(KVM_CAP_PPC_MMU_HASH_V3) > 0 || !radix;
        let want_radix = match self.mmu_choice {
            MmuChoice::Auto => radix,
            MmuChoice::Radix if radix => true,
            MmuChoice::Radix => return Err(Error::MmuUnavailable("radix")),
            MmuChoice::Hash if hash => false,
            MmuChoice::Hash => return Err(Error::MmuUnavailable("hash")),
        };
        if want_radix {
            self.mmu = Mmu::Radix;
            return Ok(());
        }
        let order = hpt::order_for_ram(self.ram_size);
        let order = if self.hv {
            vm.allocate_htab(order)?
        } else {
            // PR KVM: the HPT lives in lkvm's memory, named by SDR1.
            let map = AlignedMapping::new(1 << order, 1 << hpt::MIN_ORDER).map_err(Error::Htab)?;
            self.user_htab = Some(map);
            order
        };
        self.mmu = Mmu::Hash { order };
        Ok(())
    }
}

impl Arch for Ppc64 {
    type Error = Error;
    type Boot = Boot;
    type Exit<'a> = hcall::Hcall<'a>;

    fn new(cfg: &VmConfig) -> Result<Self, Error> {
        let mmu_choice = match cfg.arch.powerpc.mmu.as_deref() {
            None | Some("auto") => MmuChoice::Auto,
            Some("radix") => MmuChoice::Radix,
            Some("hash") => MmuChoice::Hash,
            Some(other) => return Err(Error::UnknownMmu(other.to_string())),
        };
        let xics_choice = match cfg.arch.dt.irqchip.as_deref() {
            None => XicsChoice::Auto,
            Some("xics-kernel") => XicsChoice::Kernel,
            Some("xics-user") => XicsChoice::User,
            Some(other) => return Err(Error::UnknownIrqchip(other.to_string())),
        };
        Ok(Ppc64 {
            cpus: cfg.cpus,
            ram_size: cfg.ram_size,
            mmu_choice,
            xics_choice,
            mmu: Mmu::Radix,
            hv: false,
            smmu: None,
            kernel_xics: None,
            user_xics: None,
            user_htab: None,
            pvr: 0,
            model: None,
            firmware: None,
            vcpu_fds: Vec::new(),
            dump_dtb: cfg.arch.dt.dump_dtb.clone(),
            pci: None,
        })
    }

    fn max_cpus(&self) -> u32 {
        MAX_CPUS
    }

    fn vm_type(&self, _kvm: &Kvm) -> Result<u64, Error> {
        // 0: KVM picks HV where it is loaded, else PR.
        Ok(0)
    }

    fn ram_ranges(&self, ram_size: u64) -> Result<Vec<RamRange>, Error> {
        Ok(vec![RamRange {
            base: 0,
            size: ram_size,
        }])
    }

    fn wants_thp(&self) -> bool {
        false
    }

    fn setup_vm(&mut self, _kvm: &Kvm, vm: &Vm) -> Result<(), Error> {
        // KVM_CAP_PPC_ALLOC_HTAB reports whether the VM is HV.
        self.hv = vm.check_extension(KVM_CAP_PPC_ALLOC_HTAB) > 0;
        if vm.check_extension(KVM_CAP_PPC_GET_SMMU_INFO) > 0 {
            self.smmu = Some(vm.smmu_info()?);
        }
        self.set_mmu(vm)?;
        let has_kernel_xics = vm.check_extension(KVM_CAP_IRQ_XICS) > 0;
        let kernel = match self.xics_choice {
            XicsChoice::Auto => has_kernel_xics,
            XicsChoice::Kernel if has_kernel_xics => true,
            XicsChoice::Kernel => return Err(Error::NoKernelXics),
            XicsChoice::User => false,
        };
        if kernel {
            let fd = vm.create_device(KVM_DEV_TYPE_XICS)?;
            if vm.check_extension(KVM_CAP_PPC_RTAS) > 0 {
                for name in XICS_CALLS {
                    if let Some(token) = rtas::token(name) {
                        vm.rtas_define_token(name, token)?;
                    }
                }
            }
            self.kernel_xics = Some(fd);
        } else {
            self.user_xics = Some(Xics::new(self.cpus));
        }
        log::debug!(
            "ppc: {} host, {:?} guest MMU, {} XICS",
            if self.hv { "HV" } else { "PR" },
            self.mmu,
            if kernel { "in-kernel" } else { "userspace" }
        );
        Ok(())
    }

    fn setup_devices(&mut self, p: &mut Platform) -> Result<Arc<dyn ConsoleSink>, Error> {
        let chip: Arc<dyn IrqChip> = match &self.user_xics {
            Some(x) => x.clone(),
            None => p.vm.clone(),
        };
        let (kernel_xics, user_xics) = (&self.kernel_xics, &self.user_xics);
        self.pci = devices::place_virtio(p, chip, |irq| -> Result<(), Error> {
            match (kernel_xics, user_xics) {
                (Some(fd), _) => {
                    // Masked at the least favoured priority until the
                    // guest routes it with ibm,set-xive.
                    let source = KVM_XICS_LEVEL_SENSITIVE
                        | KVM_XICS_MASKED
                        | (0xff << KVM_XICS_PRIORITY_SHIFT);
                    fd.set_attr_u64(
                        "KVM_SET_DEVICE_ATTR(XICS source)",
                        KVM_DEV_XICS_GRP_SOURCES,
                        u64::from(irq),
                        source,
                    )?;
                }
                (None, Some(x)) => x.set_level_sensitive(irq),
                (None, None) => {}
            }
            Ok(())
        })?;
        let hvterm = Arc::new(HvTerm::default());
        let firmware = Arc::new(Firmware {
            hvterm: hvterm.clone(),
            mem: p.mem.clone(),
            vm: p.vm.clone(),
            ctl: p.ctl.clone(),
            cpus: self.cpus,
            xics: self.user_xics.clone(),
            states: Arc::new(CpuStates {
                cpus: Mutex::new(vec![CpuState::default(); self.cpus as usize]),
                wake: Condvar::new(),
            }),
            unknown: Unknown::default(),
            radix_configured: AtomicBool::new(false),
            pci: self.pci.as_ref().map(|(root, _)| root.clone()),
            tce: TceTable::default(),
        });
        p.exits = Arc::new(PpcExits(firmware.clone()));
        self.firmware = Some(firmware);
        Ok(hvterm)
    }

    fn default_cmdline(&self) -> &'static str {
        super::DEFAULT_CMDLINE
    }

    fn init_vcpu(&mut self, _kvm: &Kvm, _vm: &Vm, vcpu: &mut Vcpu) -> Result<(), Error> {
        // Forward the hypercalls KVM does not handle (PR needs this; HV
        // accepts it).
        vcpu.enable_cap(KVM_CAP_PPC_PAPR, [0; 4])?;
        let mut sregs = vcpu.get_sregs()?;
        if vcpu.id() == 0 {
            // KVM-HV starts vCPUs with the host's PVR; the guest is told
            // that processor.
            self.pvr = sregs.pvr;
            self.model = Some(cpu_table::lookup(self.pvr).ok_or(Error::UnknownCpu(self.pvr))?);
        }
        if let (Some(map), Mmu::Hash { order }) = (&self.user_htab, self.mmu) {
            sregs.sdr1 = hpt::sdr1(map.host_addr(), order);
            sregs.pvr = self.pvr;
            vcpu.set_sregs(&sregs)?;
            if let Err(e) = vcpu.set_one_reg(KVM_REG_PPC_HIOR, 0) {
                log::debug!("HIOR: {e}");
            }
        }
        if let Some(xics) = &self.kernel_xics {
            vcpu.enable_cap(
                KVM_CAP_IRQ_XICS,
                [xics.raw_fd() as u64, u64::from(vcpu.id()), 0, 0],
            )?;
        } else {
            self.vcpu_fds.push(vcpu.dup_fd()?);
        }
        Ok(())
    }

    fn finish_vcpus(&mut self, _vm: &Vm, _vcpus: &[Vcpu]) -> Result<(), Error> {
        if let Some(xics) = &self.user_xics {
            xics.attach(Arc::new(VcpuLines(std::mem::take(&mut self.vcpu_fds))));
        }
        Ok(())
    }

    fn load(
        &mut self,
        mem: &GuestMemory,
        _cfg: &VmConfig,
        kernel: &[u8],
        initrd: Option<&[u8]>,
        cmdline: &str,
        _fdt_nodes: &[DeviceNode],
    ) -> Result<Boot, Error> {
        let write = |what, addr, data: &[u8]| {
            mem.write_slice(data, GuestAddress(addr))
                .map_err(|source| Error::Write { what, source })
        };
        let k = layout::parse_kernel(kernel)?;
        let at = layout::place(self.ram_size, k.end, initrd.map(|i| i.len() as u64))?;
        for (addr, bytes) in &k.pieces {
            write("kernel", *addr, bytes)?;
        }
        if let (Some(data), Some((addr, _))) = (initrd, at.initrd) {
            write("initrd", addr, data)?;
        }
        let stub = rtas::stub_bytes();
        write("RTAS", at.rtas, &stub)?;
        let model = self.model.ok_or(Error::UnknownCpu(self.pvr))?;
        let pci_fdt = self
            .pci
            .as_ref()
            .map(|(root, info)| (info.clone(), root.describe()));
        let blob = fdt::build(&FdtInputs {
            cpus: self.cpus,
            pvr: self.pvr,
            model: &model,
            ram_size: self.ram_size,
            cmdline,
            initrd: at.initrd,
            rtas: (at.rtas, stub.len() as u64),
            mmu: self.mmu,
            smmu: self.smmu.as_ref(),
            backing_page_shift: nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
                .ok()
                .flatten()
                .map_or(16, |p| (p as u64).trailing_zeros()),
            pci: pci_fdt.as_ref().map(|(info, f)| (info, f.as_slice())),
        })?;
        if let Some(path) = &self.dump_dtb {
            std::fs::write(path, &blob).map_err(|source| Error::DumpDtb {
                path: path.clone(),
                source,
            })?;
        }
        write("device tree", at.fdt, &blob)?;
        log::debug!(
            "ppc: kernel entry {:#x} end {:#x}, fdt {:#x} ({} bytes), rtas {:#x}, initrd {:?}, pvr {:#x} ({})",
            k.entry,
            k.end,
            at.fdt,
            blob.len(),
            at.rtas,
            at.initrd,
            self.pvr,
            model.name
        );
        Ok(Boot {
            entry: k.entry,
            fdt: at.fdt,
        })
    }

    fn boot_vcpu(&self, vcpu: &mut Vcpu, boot: &Boot) -> Result<(), Error> {
        let mut regs = vcpu.get_regs()?;
        if vcpu.id() == 0 {
            regs.pc = boot.entry;
            regs.gpr[3] = boot.fdt;
            regs.gpr[4] = 0;
            regs.gpr[5] = 0;
        } else {
            // Secondaries spin in the kernel's hold loop until released.
            regs.pc = SECONDARY_ENTRY;
            regs.gpr[3] = u64::from(vcpu.id());
        }
        regs.msr = BOOT_MSR;
        vcpu.set_regs(&regs)?;
        Ok(())
    }

    fn dump_vcpu(&self, vcpu: &Vcpu) -> String {
        let mut out = String::new();
        match vcpu.get_regs() {
            Ok(r) => {
                let _ = writeln!(
                    out,
                    "pc {:#018x} msr {:#018x} lr {:#018x} ctr {:#018x} cr {:#x}",
                    r.pc, r.msr, r.lr, r.ctr, r.cr
                );
                for (i, g) in r.gpr.iter().enumerate() {
                    let _ = write!(
                        out,
                        "r{i:<2} {g:#018x}{}",
                        if i % 4 == 3 { "\n" } else { " " }
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(out, "registers unavailable: {e}");
            }
        }
        out
    }
}
