//! The PowerPC (sPAPR) implementation of the architecture hooks: the part
//! that talks to KVM.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vm_memory::{Bytes, GuestAddress};

use super::choice::{MmuChoice, XicsChoice};
use super::cpu_states::CpuStates;
pub use super::error::Error;

use super::cpu_table::{self, CpuModel};
use super::devices;
use super::fdt::{self, FdtInputs, Mmu, VTY_REG};
use super::hcall::{self, HcallHost, Unknown, XicsHcalls};
use super::hpt;
use super::hvterm::HvTerm;
use super::kvm_sys::*;
use super::layout::{self, SECONDARY_ENTRY};
use super::rtas::{self, RtasHost, XicsRtas, XICS_CALLS};
use super::tce::TceTable;
use super::xics::{ServerLines, Xics};
use crate::arch::{Arch, BootImages, Devices, ExitHandler, Platform, VirtioSet};
use crate::config::VmConfig;
use crate::control::{GuestExit, VmControl};
use crate::fdt::DeviceTree;
use crate::hw::pci::PciRoot;
use crate::irq::IrqChip;
use crate::kvm::{Device, InterruptLine, Kvm, Vcpu, Vm};
use crate::loader::write;
use crate::memory::{AlignedMapping, GuestMemory, RamRange};
use crate::regdump::RegisterDump;
use crate::term::ConsoleOut;

/// 64-bit mode, machine checks enabled, hypervisor state off: how a pSeries
/// partition enters the kernel.
const BOOT_MSR: u64 = 0x8000_0000_0000_1000;
/// KVM-HV hosts allow this many vCPUs in practice (one core each).
const MAX_CPUS: u32 = 2048;

/// What the boot vCPU starts with.
#[derive(Clone, Copy, Debug)]
pub struct Boot {
    pub entry: u64,
    pub fdt: u64,
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
        self.states.running(cpu)
    }

    fn start_cpu(&self, cpu: u32, entry: u64, r3: u64) -> bool {
        self.states.start(cpu, entry, r3)
    }

    fn stop_self(&self, caller: u32) {
        self.states.stop(caller);
        let states = self.states.clone();
        let ctl = self.ctl.clone();
        // Park this vCPU's thread until a start-cpu names it (or the VM ends).
        self.ctl.run_on_vcpu(
            caller,
            Box::new(move |vcpu| {
                while !ctl.is_stopping() {
                    let Some((entry, r3)) = states.wait_start(caller, Duration::from_millis(50))
                    else {
                        continue;
                    };
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

/// Every vCPU's external interrupt, through `KVM_INTERRUPT` (which any
/// thread may call on PowerPC).
struct VcpuLines(Vec<InterruptLine>);

impl ServerLines for VcpuLines {
    fn set(&self, server: u32, level: bool) {
        let Some(line) = self.0.get(server as usize) else {
            return;
        };
        let irq = if level {
            KVM_INTERRUPT_SET_LEVEL
        } else {
            KVM_INTERRUPT_UNSET
        };
        if let Err(e) = line.set(irq) {
            log::debug!("server {server}: {e}");
        }
    }
}

#[derive(Debug)]
pub struct Ppc64 {
    cpus: u32,
    ram_size: u64,
    mmu_choice: MmuChoice,
    xics_choice: XicsChoice,
    dump_dtb: Option<PathBuf>,
}

/// The interrupt controller: KVM's XICS, or lkvm's.
pub enum XicsKind {
    Kernel(Device),
    User(Arc<Xics>),
}

/// What `setup_vm` made: the guest MMU (with the hashed page table lkvm
/// keeps for PR KVM) and the interrupt controller.
pub struct Chipset {
    hv: bool,
    smmu: Option<KvmPpcSmmuInfo>,
    mmu: Mmu,
    user_htab: Option<AlignedMapping>,
    xics: XicsKind,
}

/// The processor every vCPU is, as KVM started vCPU 0.
pub struct Topology {
    pvr: u32,
    model: CpuModel,
}

impl Ppc64 {
    fn mmu(&self, vm: &Vm, hv: bool) -> Result<(Mmu, Option<AlignedMapping>), Error> {
        let radix = self.mmu_choice.radix(
            vm.check_extension(KVM_CAP_PPC_MMU_RADIX) > 0,
            vm.check_extension(KVM_CAP_PPC_MMU_HASH_V3) > 0,
        )?;
        if radix {
            return Ok((Mmu::Radix, None));
        }
        let order = hpt::order_for_ram(self.ram_size);
        if hv {
            return Ok((
                Mmu::Hash {
                    order: vm.allocate_htab(order)?,
                },
                None,
            ));
        }
        // PR KVM: the HPT lives in lkvm's memory, named by SDR1.
        let map = AlignedMapping::new(1 << order, 1 << hpt::MIN_ORDER).map_err(Error::Htab)?;
        Ok((Mmu::Hash { order }, Some(map)))
    }

    fn init_vcpu(&self, chip: &Chipset, pvr: u32, vcpu: &Vcpu) -> Result<(), Error> {
        // Forward the hypercalls KVM does not handle (PR needs this; HV
        // accepts it).
        vcpu.enable_cap(KVM_CAP_PPC_PAPR, [0; 4])?;
        if let (Some(map), Mmu::Hash { order }) = (&chip.user_htab, chip.mmu) {
            let mut sregs = vcpu.get_sregs()?;
            sregs.sdr1 = hpt::sdr1(map.host_addr(), order);
            sregs.pvr = pvr;
            vcpu.set_sregs(&sregs)?;
            if let Err(e) = vcpu.set_one_reg(KVM_REG_PPC_HIOR, 0) {
                log::debug!("HIOR: {e}");
            }
        }
        if let XicsKind::Kernel(xics) = &chip.xics {
            vcpu.enable_cap(
                KVM_CAP_IRQ_XICS,
                [xics.raw_fd() as u64, u64::from(vcpu.id()), 0, 0],
            )?;
        }
        Ok(())
    }
}

impl Arch for Ppc64 {
    type Error = Error;
    type Exit<'a> = hcall::Hcall<'a>;
    type Chipset = Chipset;
    type Topology = Topology;
    type Boot = Boot;

    fn new(cfg: &VmConfig) -> Result<Self, Error> {
        Ok(Ppc64 {
            cpus: cfg.cpus,
            ram_size: cfg.ram_size,
            mmu_choice: MmuChoice::parse(cfg.arch.powerpc.mmu.as_deref())?,
            xics_choice: XicsChoice::parse(cfg.arch.dt.irqchip.as_deref())?,
            dump_dtb: cfg.arch.dt.dump_dtb.clone(),
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

    fn setup_vm(&self, _kvm: &Kvm, vm: &Vm) -> Result<Chipset, Error> {
        // KVM_CAP_PPC_ALLOC_HTAB reports whether the VM is HV.
        let hv = vm.check_extension(KVM_CAP_PPC_ALLOC_HTAB) > 0;
        let smmu = match vm.check_extension(KVM_CAP_PPC_GET_SMMU_INFO) > 0 {
            true => Some(vm.smmu_info()?),
            false => None,
        };
        let (mmu, user_htab) = self.mmu(vm, hv)?;
        let kernel = self
            .xics_choice
            .in_kernel(vm.check_extension(KVM_CAP_IRQ_XICS) > 0)?;
        let xics = if kernel {
            let fd = vm.create_device(KVM_DEV_TYPE_XICS)?;
            if vm.check_extension(KVM_CAP_PPC_RTAS) > 0 {
                for name in XICS_CALLS {
                    if let Some(token) = rtas::token(name) {
                        vm.rtas_define_token(name, token)?;
                    }
                }
            }
            XicsKind::Kernel(fd)
        } else {
            XicsKind::User(Xics::new(self.cpus))
        };
        log::debug!(
            "ppc: {} host, {:?} guest MMU, {} XICS",
            if hv { "HV" } else { "PR" },
            mmu,
            if kernel { "in-kernel" } else { "userspace" }
        );
        Ok(Chipset {
            hv,
            smmu,
            mmu,
            user_htab,
            xics,
        })
    }

    fn setup_devices(
        &self,
        chip: &Chipset,
        p: &mut Platform,
        virtio: VirtioSet,
    ) -> Result<Devices, Error> {
        let irqchip: Arc<dyn IrqChip> = match &chip.xics {
            XicsKind::User(x) => x.clone(),
            XicsKind::Kernel(_) => p.vm.clone(),
        };
        let pci = devices::place_virtio(p, virtio, irqchip, |irq| -> Result<(), Error> {
            match &chip.xics {
                XicsKind::Kernel(fd) => {
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
                XicsKind::User(x) => x.set_level_sensitive(irq),
            }
            Ok(())
        })?;
        let hvterm = Arc::new(HvTerm::default());
        let (root, host) = match pci {
            Some((root, host)) => (Some(root), Some(host)),
            None => (None, None),
        };
        let firmware = Arc::new(Firmware {
            hvterm: hvterm.clone(),
            mem: p.mem.clone(),
            vm: p.vm.clone(),
            ctl: p.ctl.clone(),
            cpus: self.cpus,
            xics: match &chip.xics {
                XicsKind::User(x) => Some(x.clone()),
                XicsKind::Kernel(_) => None,
            },
            states: Arc::new(CpuStates::new(self.cpus)),
            unknown: Unknown::default(),
            radix_configured: AtomicBool::new(false),
            pci: root,
            tce: TceTable::default(),
        });
        Ok(Devices {
            console: hvterm,
            exits: Arc::new(PpcExits(firmware)),
            tree: DeviceTree {
                pci: host,
                ..Default::default()
            },
        })
    }

    fn default_cmdline(&self) -> &'static str {
        super::DEFAULT_CMDLINE
    }

    fn init_vcpus(
        &self,
        chip: &Chipset,
        _kvm: &Kvm,
        _vm: &Vm,
        vcpus: &[Vcpu],
    ) -> Result<Topology, Error> {
        // KVM-HV starts vCPUs with the host's PVR; the guest is told that
        // processor.
        let pvr = vcpus.first().ok_or(Error::NoCpus)?.get_sregs()?.pvr;
        let model = cpu_table::lookup(pvr).ok_or(Error::UnknownCpu(pvr))?;
        for vcpu in vcpus {
            self.init_vcpu(chip, pvr, vcpu)?;
        }
        if let XicsKind::User(xics) = &chip.xics {
            let lines = vcpus
                .iter()
                .map(Vcpu::interrupt_line)
                .collect::<Result<Vec<_>, _>>()?;
            xics.attach(Arc::new(VcpuLines(lines)));
        }
        Ok(Topology { pvr, model })
    }

    fn load(
        &self,
        chip: &Chipset,
        topology: &Topology,
        devices: &DeviceTree,
        mem: &GuestMemory,
        images: &BootImages<'_>,
    ) -> Result<Boot, Error> {
        let k = layout::parse_kernel(images.kernel)?;
        let at = layout::place(self.ram_size, k.end, images.initrd.map(|i| i.len() as u64))?;
        for (addr, bytes) in &k.pieces {
            write::write(mem, "kernel", *addr, bytes)?;
        }
        if let (Some(data), Some((addr, _))) = (images.initrd, at.initrd) {
            write::write(mem, "initrd", addr, data)?;
        }
        let stub = rtas::stub_bytes();
        write::write(mem, "RTAS", at.rtas, &stub)?;
        let blob = fdt::build(&FdtInputs {
            cpus: self.cpus,
            pvr: topology.pvr,
            model: &topology.model,
            ram_size: self.ram_size,
            cmdline: images.cmdline,
            initrd: at.initrd,
            rtas: (at.rtas, stub.len() as u64),
            mmu: chip.mmu,
            smmu: chip.smmu.as_ref(),
            backing_page_shift: nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
                .ok()
                .flatten()
                .map_or(16, |p| (p as u64).trailing_zeros()),
            devices,
        })?;
        write::write_fdt(mem, at.fdt, &blob, self.dump_dtb.as_deref())?;
        log::debug!(
            "ppc: {} host, kernel entry {:#x} end {:#x}, fdt {:#x} ({} bytes), rtas {:#x}, initrd {:?}, pvr {:#x} ({})",
            if chip.hv { "HV" } else { "PR" },
            k.entry,
            k.end,
            at.fdt,
            blob.len(),
            at.rtas,
            at.initrd,
            topology.pvr,
            topology.model.name
        );
        Ok(Boot {
            entry: k.entry,
            fdt: at.fdt,
        })
    }

    fn boot_vcpu(&self, vcpu: &Vcpu, boot: &Boot) -> Result<(), Error> {
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
        let mut d = RegisterDump::default();
        match vcpu.get_regs() {
            Ok(r) => {
                let gpr: Vec<Option<u64>> = r.gpr.iter().map(|g| Some(*g)).collect();
                d.line(&[
                    ("pc", Some(r.pc)),
                    ("msr", Some(r.msr)),
                    ("lr", Some(r.lr)),
                    ("ctr", Some(r.ctr)),
                ])
                .short_line(&[("cr", Some(r.cr))])
                .bank("r", &gpr);
            }
            Err(e) => {
                d.unavailable("registers", e);
            }
        }
        d.finish()
    }
}
