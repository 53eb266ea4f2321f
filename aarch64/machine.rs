//! The arm64 implementation of the architecture hooks: the part that talks
//! to KVM.

use std::fmt::Write as _;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_ITS, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V2,
    kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3, KVM_ARM_VCPU_PMU_V3, KVM_ARM_VCPU_PMU_V3_CTRL,
    KVM_ARM_VCPU_PMU_V3_INIT, KVM_ARM_VCPU_PMU_V3_IRQ, KVM_ARM_VCPU_POWER_OFF,
    KVM_ARM_VCPU_PSCI_0_2, KVM_ARM_VCPU_PTRAUTH_ADDRESS, KVM_ARM_VCPU_PTRAUTH_GENERIC,
    KVM_ARM_VCPU_PVTIME_CTRL, KVM_ARM_VCPU_PVTIME_IPA, KVM_ARM_VCPU_SVE,
    KVM_DEV_ARM_VGIC_CTRL_INIT, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_DEV_ARM_VGIC_GRP_CTRL,
    KVM_DEV_ARM_VGIC_GRP_NR_IRQS, KVM_VGIC_ITS_ADDR_TYPE, KVM_VGIC_V2_ADDR_TYPE_CPU,
    KVM_VGIC_V2_ADDR_TYPE_DIST, KVM_VGIC_V3_ADDR_TYPE_DIST, KVM_VGIC_V3_ADDR_TYPE_REDIST,
};
use vm_memory::{Bytes, GuestAddress};

use super::asyncpf::{self, AsyncPfCmd, AsyncPfHost};
use super::devices;
use super::fdt::{self, FdtInputs, PMU_PPI};
use super::gic::{
    self, kvm_irq_line_spi, GicKind, GicLayout, SpiLines, SpiSink, V2mFrame, NR_IRQS,
};
use super::image::{self, Image, Placement};
use super::layout::{LEGACY, PVTIME_BASE, PVTIME_RECORD, PVTIME_SIZE, RAM_BASE};
use super::options::AsyncPfMode;
use super::regs;
use crate::arch::{Arch, Platform};
use crate::bus;
use crate::config::VmConfig;
use crate::fdt::DeviceNode;
use crate::hw::serial::SerialConsole;
use crate::irq::IrqChip;
use crate::kvm::{Device, Kvm, Vcpu, Vm};
use crate::memory::{GuestMemory, RamRange};
use crate::term::{ConsoleOut, ConsoleSink};
use crate::virtio::setup::PciHostInfo;

const KVM_CAP_ARM_PMU_V3: u32 = 126;
const KVM_CAP_ARM_VM_IPA_SIZE: u32 = 165;
const KVM_CAP_ARM_SVE: u32 = 170;
const KVM_CAP_ARM_PTRAUTH_ADDRESS: u32 = 171;
const KVM_CAP_ARM_PTRAUTH_GENERIC: u32 = 172;
const KVM_CAP_STEAL_TIME: u32 = 187;
/// `KVM_REG_ARM64_SVE_VLS`: the bitmap of vector lengths (in 128-bit units).
const KVM_REG_ARM64_SVE_VLS: u64 = 0x6060_0000_0015_ffff;
/// KVM's default IPA size; larger ones must be asked for in the VM type.
const DEFAULT_IPA_BITS: u32 = 40;
/// Most vCPUs KVM gives an arm64 VM (KVM_MAX_VCPUS).
const MAX_CPUS: u32 = 512;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kvm(#[from] crate::kvm::Error),
    #[error(transparent)]
    Gic(#[from] gic::Error),
    #[error(transparent)]
    Image(#[from] image::Error),
    #[error(transparent)]
    Place(#[from] crate::loader::place::Error),
    #[error(transparent)]
    Fdt(#[from] fdt::Error),
    #[error(transparent)]
    AsyncPf(#[from] asyncpf::Error),
    #[error("cannot place a device: {0}")]
    Bus(#[from] bus::Error),
    #[error(transparent)]
    Devices(#[from] crate::virtio::setup::Error),
    #[error("guest RAM up to {end:#x} needs {bits}-bit guest physical addresses; this host's KVM allows {max}")]
    IpaTooSmall { end: u64, bits: u32, max: i32 },
    #[error("--pmu: this host's KVM has no PMUv3 for guests")]
    NoPmu,
    #[error("--sve-max-vl {0}: must be a multiple of 128 between 128 and 2048")]
    BadSveLength(u32),
    #[error("--sve-max-vl: this host's KVM has no SVE for guests")]
    NoSve,
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
    #[error("--irqchip {0}: this host's KVM cannot give guests that interrupt controller (a GICv3 host without GICv2 compatibility has no vGICv2)")]
    NoSuchGic(GicKind),
    #[error("vCPU {0} was not initialised before loading")]
    MissingMpidr(u32),
}

/// What the boot vCPU starts with.
#[derive(Clone, Copy, Debug)]
pub struct Boot {
    pub entry: u64,
    pub fdt: u64,
}

pub struct Aarch64 {
    cpus: u32,
    ram_base: u64,
    ram_size: u64,
    requested_gic: Option<GicKind>,
    gic: Option<GicLayout>,
    gic_fd: Option<Device>,
    its_fd: Option<Device>,
    pmu: bool,
    sve: bool,
    sve_max_vl: Option<u32>,
    ptrauth: bool,
    pvtime_wanted: bool,
    pvtime: bool,
    async_pf_mode: AsyncPfMode,
    async_pf: Option<u32>,
    kaslr_seed: Option<u64>,
    dump_dtb: Option<PathBuf>,
    mpidrs: Vec<u64>,
    pci: Option<PciHostInfo>,
}

impl std::fmt::Debug for Aarch64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aarch64")
            .field("cpus", &self.cpus)
            .field("gic", &self.gic)
            .finish()
    }
}

/// Raises SPIs through `KVM_IRQ_LINE`.
struct VmSpis(Arc<Vm>);

impl SpiSink for VmSpis {
    fn set_spi(&self, intid: u32, level: bool) -> Result<(), crate::irq::Error> {
        self.0
            .set_irq_line(kvm_irq_line_spi(intid), level)
            .map_err(|source| crate::irq::Error::Set {
                line: intid,
                source,
            })
    }
}

/// The real host behind the async-PF logic.
struct KvmAsyncPf<'a> {
    vm: &'a Vm,
    vcpus: &'a [Vcpu],
}

impl AsyncPfHost for KvmAsyncPf<'_> {
    fn check_vm_extension(&self, cap: u32) -> i32 {
        self.vm.check_extension(cap)
    }
    fn vm_command(&self, cmd: &mut AsyncPfCmd) -> std::io::Result<()> {
        self.vm.async_pf_command(cmd)
    }
    fn vcpu_command(&self, vcpu: u32, cmd: &mut AsyncPfCmd) -> std::io::Result<()> {
        self.vcpus
            .get(vcpu as usize)
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?
            .async_pf_command(cmd)
    }
}

fn random_seed() -> Option<u64> {
    let mut buf = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)) {
        Ok(()) => Some(u64::from_ne_bytes(buf)),
        Err(e) => {
            log::warn!("no KASLR seed for the guest: /dev/urandom: {e}");
            None
        }
    }
}

impl Aarch64 {
    fn create_gic(&mut self, vm: &Vm) -> Result<(), Error> {
        let kind = match self.requested_gic {
            Some(k) => k,
            None => {
                let can = |k: GicKind| {
                    let t = match k {
                        GicKind::V3 => kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3,
                        GicKind::V3Its => kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_ITS,
                        GicKind::V2 | GicKind::V2m => kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V2,
                    };
                    vm.can_create_device(t)
                };
                // Nothing creatable: asking for a GICv2 gives the error.
                let k = GicKind::auto(can).unwrap_or(GicKind::V2);
                log::info!("arm64: --irqchip auto: {k}, the first of gicv3-its, gicv3, gicv2m, gicv2 this host's KVM can create");
                k
            }
        };
        let layout = GicLayout::new(kind, self.cpus)?;
        let dev_type = if kind.is_v3() {
            kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3
        } else {
            kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V2
        };
        let fd = match vm.create_device(dev_type) {
            Ok(fd) => fd,
            Err(e) if e.errno() == Some(libc::ENODEV) => return Err(Error::NoSuchGic(kind)),
            Err(e) => return Err(e.into()),
        };
        let dist = layout.dist.0;
        let frames: Vec<(u32, u64)> = if kind.is_v3() {
            vec![
                (KVM_VGIC_V3_ADDR_TYPE_DIST, dist),
                (
                    KVM_VGIC_V3_ADDR_TYPE_REDIST,
                    layout.redist.map_or(0, |r| r.0),
                ),
            ]
        } else {
            vec![
                (KVM_VGIC_V2_ADDR_TYPE_DIST, dist),
                (KVM_VGIC_V2_ADDR_TYPE_CPU, layout.cpu.map_or(0, |c| c.0)),
            ]
        };
        for (attr, addr) in frames {
            fd.set_attr_u64(
                "KVM_SET_DEVICE_ATTR(vGIC address)",
                KVM_DEV_ARM_VGIC_GRP_ADDR,
                attr.into(),
                addr,
            )?;
        }
        if let Some((its_base, _)) = layout.its {
            let its = vm.create_device(kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_ITS)?;
            its.set_attr_u64(
                "KVM_SET_DEVICE_ATTR(ITS address)",
                KVM_DEV_ARM_VGIC_GRP_ADDR,
                KVM_VGIC_ITS_ADDR_TYPE.into(),
                its_base,
            )?;
            self.its_fd = Some(its);
        }
        log::debug!("arm64: {kind} at {dist:#x}");
        self.gic = Some(layout);
        self.gic_fd = Some(fd);
        Ok(())
    }

    fn limit_sve(&self, vcpu: &Vcpu) -> Result<(), Error> {
        let Some(max_vl) = self.sve_max_vl else {
            return Ok(());
        };
        let mut vls = [0u8; 64];
        vcpu.get_one_reg_bytes(KVM_REG_ARM64_SVE_VLS, &mut vls)?;
        // Bit n-1 set: a vector length of n x 128 bits is offered.
        let max_quads = (max_vl / 128) as usize;
        for bit in max_quads..512 {
            vls[bit / 8] &= !(1 << (bit % 8));
        }
        vcpu.set_one_reg_bytes(KVM_REG_ARM64_SVE_VLS, &vls)?;
        Ok(())
    }

    fn read_reg(vcpu: &Vcpu, id: u64) -> Option<u64> {
        vcpu.get_one_reg(id).ok()
    }

    fn set_reg(vcpu: &Vcpu, id: u64, value: u64) -> Result<(), Error> {
        Ok(vcpu.set_one_reg(id, value)?)
    }

    fn write(mem: &GuestMemory, what: &'static str, addr: u64, data: &[u8]) -> Result<(), Error> {
        mem.write_slice(data, GuestAddress(addr))
            .map_err(|source| Error::Write { what, source })
    }
}

impl Arch for Aarch64 {
    type Error = Error;
    type Boot = Boot;
    type Exit<'a> = crate::arch::NoExit;

    fn new(cfg: &VmConfig) -> Result<Self, Error> {
        let (a, dt) = (&cfg.arch.arm64, &cfg.arch.dt);
        let requested_gic = match dt.irqchip.as_deref() {
            Some(s) => GicKind::parse_option(s)?,
            None => None,
        };
        if let Some(vl) = a.sve_max_vl {
            if vl == 0 || vl % 128 != 0 || vl > 2048 {
                return Err(Error::BadSveLength(vl));
            }
        }
        Ok(Aarch64 {
            cpus: cfg.cpus,
            ram_base: cfg.ram_base.unwrap_or(RAM_BASE),
            ram_size: cfg.ram_size,
            requested_gic,
            gic: None,
            gic_fd: None,
            its_fd: None,
            pmu: a.pmu,
            sve: false,
            sve_max_vl: a.sve_max_vl,
            ptrauth: false,
            pvtime_wanted: !a.no_pvtime,
            pvtime: false,
            async_pf_mode: a.async_pf.unwrap_or_default(),
            async_pf: None,
            kaslr_seed: match a.kaslr_seed {
                Some(0) => None,
                Some(seed) => Some(seed),
                None => random_seed(),
            },
            dump_dtb: dt.dump_dtb.clone(),
            mpidrs: Vec::new(),
            pci: None,
        })
    }

    fn max_cpus(&self) -> u32 {
        MAX_CPUS
    }

    fn vm_type(&self, kvm: &Kvm) -> Result<u64, Error> {
        let end = self.ram_base + self.ram_size;
        let bits = 64 - (end - 1).leading_zeros();
        if bits <= DEFAULT_IPA_BITS {
            return Ok(0);
        }
        let max = kvm.check_extension(KVM_CAP_ARM_VM_IPA_SIZE);
        if max < bits as i32 {
            return Err(Error::IpaTooSmall { end, bits, max });
        }
        Ok(u64::from(bits))
    }

    fn ram_ranges(&self, ram_size: u64) -> Result<Vec<RamRange>, Error> {
        let mut ranges = Vec::new();
        if self.pvtime_wanted {
            ranges.push(RamRange {
                base: PVTIME_BASE,
                size: PVTIME_SIZE,
            });
        }
        ranges.push(RamRange {
            base: self.ram_base,
            size: ram_size,
        });
        Ok(ranges)
    }

    fn wants_thp(&self) -> bool {
        true
    }

    fn setup_vm(&mut self, kvm: &Kvm, vm: &Vm) -> Result<(), Error> {
        self.create_gic(vm)?;
        if self.pmu && vm.check_extension(KVM_CAP_ARM_PMU_V3) <= 0 {
            return Err(Error::NoPmu);
        }
        self.sve = vm.check_extension(KVM_CAP_ARM_SVE) > 0;
        if self.sve_max_vl.is_some() && !self.sve {
            return Err(Error::NoSve);
        }
        self.ptrauth = vm.check_extension(KVM_CAP_ARM_PTRAUTH_ADDRESS) > 0
            && vm.check_extension(KVM_CAP_ARM_PTRAUTH_GENERIC) > 0;
        self.pvtime = self.pvtime_wanted && kvm.check_extension(KVM_CAP_STEAL_TIME) > 0;
        log::debug!(
            "arm64: sve {} ptrauth {} pvtime {} pmu {}",
            self.sve,
            self.ptrauth,
            self.pvtime,
            self.pmu
        );
        Ok(())
    }

    fn setup_devices(&mut self, p: &mut Platform) -> Result<Arc<dyn ConsoleSink>, Error> {
        let spis: Arc<dyn SpiSink> = Arc::new(VmSpis(p.vm.clone()));
        let chip: Arc<dyn IrqChip> = Arc::new(SpiLines(spis.clone()));
        let serial = LEGACY.attach(&mut p.mmio, &chip, Box::new(ConsoleOut))?;
        p.fdt_nodes.extend(LEGACY.nodes());
        if let Some((base, size)) = self.gic.and_then(|g| g.v2m) {
            p.mmio.insert(
                "gicv2m",
                base,
                size,
                Arc::new(Mutex::new(V2mFrame::new(spis.clone()))),
            )?;
        }
        let gic = self
            .gic
            .ok_or(Error::Gic(gic::Error::Unknown("none".into())))?;
        self.pci = devices::place_virtio(p, &gic, chip, spis, LEGACY.next_irq())?;
        Ok(Arc::new(SerialConsole(serial)))
    }

    fn default_cmdline(&self) -> &'static str {
        super::DEFAULT_CMDLINE
    }

    fn init_vcpu(&mut self, _kvm: &Kvm, vm: &Vm, vcpu: &mut Vcpu) -> Result<(), Error> {
        let mut kvi = vm.preferred_target()?;
        let mut features = 1u32 << KVM_ARM_VCPU_PSCI_0_2;
        // Secondaries stay off until the guest starts them with PSCI CPU_ON.
        if vcpu.id() > 0 {
            features |= 1 << KVM_ARM_VCPU_POWER_OFF;
        }
        if self.pmu {
            features |= 1 << KVM_ARM_VCPU_PMU_V3;
        }
        if self.sve {
            features |= 1 << KVM_ARM_VCPU_SVE;
        }
        if self.ptrauth {
            features |= (1 << KVM_ARM_VCPU_PTRAUTH_ADDRESS) | (1 << KVM_ARM_VCPU_PTRAUTH_GENERIC);
        }
        kvi.features[0] |= features;
        vcpu.vcpu_init(&kvi)?;
        if self.sve {
            self.limit_sve(vcpu)?;
            vcpu.vcpu_finalize(KVM_ARM_VCPU_SVE as i32)?;
        }
        self.mpidrs.push(vcpu.get_one_reg(regs::MPIDR_EL1)?);
        if self.pvtime {
            let ipa = PVTIME_BASE + u64::from(vcpu.id()) * PVTIME_RECORD;
            vcpu.set_device_attr(
                "KVM_SET_DEVICE_ATTR(PVTIME_IPA)",
                KVM_ARM_VCPU_PVTIME_CTRL,
                KVM_ARM_VCPU_PVTIME_IPA.into(),
                std::ptr::addr_of!(ipa) as u64,
            )?;
        }
        Ok(())
    }

    fn finish_vcpus(&mut self, vm: &Vm, vcpus: &[Vcpu]) -> Result<(), Error> {
        if let Some(fd) = &self.gic_fd {
            fd.set_attr_u32(
                "KVM_SET_DEVICE_ATTR(vGIC NR_IRQS)",
                KVM_DEV_ARM_VGIC_GRP_NR_IRQS,
                0,
                NR_IRQS,
            )?;
            fd.set_attr(
                "KVM_SET_DEVICE_ATTR(vGIC CTRL_INIT)",
                KVM_DEV_ARM_VGIC_GRP_CTRL,
                KVM_DEV_ARM_VGIC_CTRL_INIT.into(),
                0,
            )?;
        }
        if let Some(its) = &self.its_fd {
            its.set_attr(
                "KVM_SET_DEVICE_ATTR(ITS CTRL_INIT)",
                KVM_DEV_ARM_VGIC_GRP_CTRL,
                KVM_DEV_ARM_VGIC_CTRL_INIT.into(),
                0,
            )?;
        }
        if self.pmu {
            let intid: u32 = PMU_PPI + 16;
            for vcpu in vcpus {
                for (attr, addr, op) in [
                    (
                        KVM_ARM_VCPU_PMU_V3_IRQ,
                        &intid as *const u32 as u64,
                        "KVM_SET_DEVICE_ATTR(PMU_V3_IRQ)",
                    ),
                    (
                        KVM_ARM_VCPU_PMU_V3_INIT,
                        0,
                        "KVM_SET_DEVICE_ATTR(PMU_V3_INIT)",
                    ),
                ] {
                    vcpu.set_device_attr(op, KVM_ARM_VCPU_PMU_V3_CTRL, attr.into(), addr)?;
                }
            }
        }
        let host = KvmAsyncPf { vm, vcpus };
        self.async_pf = asyncpf::configure(&host, self.async_pf_mode, self.cpus)?;
        Ok(())
    }

    fn load(
        &mut self,
        mem: &GuestMemory,
        _cfg: &VmConfig,
        kernel: &[u8],
        initrd: Option<&[u8]>,
        cmdline: &str,
        fdt_nodes: &[DeviceNode],
    ) -> Result<Boot, Error> {
        let image = Image::parse(kernel)?;
        log::debug!(
            "arm64: kernel format {:?}, text offset {:#x}, {} bytes",
            image.format,
            image.text_offset,
            image.image_size
        );
        let Placement {
            kernel: kernel_at,
            kernel_end,
            fdt: fdt_at,
            initrd: initrd_at,
        } = image::place(
            self.ram_base,
            self.ram_size,
            &image,
            initrd.map(|i| i.len() as u64),
        )?;
        Self::write(mem, "kernel", kernel_at, kernel)?;
        if let (Some(data), Some((addr, _))) = (initrd, initrd_at) {
            Self::write(mem, "initrd", addr, data)?;
        }
        if self.mpidrs.len() != self.cpus as usize {
            return Err(Error::MissingMpidr(self.mpidrs.len() as u32));
        }
        let gic = self
            .gic
            .ok_or(Error::Gic(gic::Error::Unknown("none".into())))?;
        let blob = fdt::build(&FdtInputs {
            mpidrs: &self.mpidrs,
            ram_base: self.ram_base,
            ram_size: self.ram_size,
            cmdline,
            initrd: initrd_at,
            gic: &gic,
            pmu: self.pmu,
            sdei: self.async_pf.is_some(),
            kaslr_seed: self.kaslr_seed,
            devices: fdt_nodes,
            stdout: fdt_nodes.first(),
            pci: self.pci.as_ref(),
        })?;
        if let Some(path) = &self.dump_dtb {
            std::fs::write(path, &blob).map_err(|source| Error::DumpDtb {
                path: path.clone(),
                source,
            })?;
        }
        Self::write(mem, "device tree", fdt_at, &blob)?;
        log::debug!(
            "arm64: kernel {kernel_at:#x}..{kernel_end:#x}, fdt {fdt_at:#x} ({} bytes), initrd {initrd_at:?}",
            blob.len()
        );
        Ok(Boot {
            entry: kernel_at,
            fdt: fdt_at,
        })
    }

    fn boot_vcpu(&self, vcpu: &mut Vcpu, boot: &Boot) -> Result<(), Error> {
        if vcpu.id() != 0 {
            return Ok(());
        }
        Self::set_reg(vcpu, regs::PSTATE, regs::PSTATE_EL1H_DAIF)?;
        Self::set_reg(vcpu, regs::PC, boot.entry)?;
        Self::set_reg(vcpu, regs::x(0), boot.fdt)?;
        for n in 1..4 {
            Self::set_reg(vcpu, regs::x(n), 0)?;
        }
        Ok(())
    }

    fn dump_vcpu(&self, vcpu: &Vcpu) -> String {
        let mut out = String::new();
        let r = |id| Self::read_reg(vcpu, id).map_or("?".to_string(), |v| format!("{v:#018x}"));
        let _ = writeln!(
            out,
            "pc {} sp {} pstate {}",
            r(regs::PC),
            r(regs::SP),
            r(regs::PSTATE)
        );
        for n in 0..31u64 {
            let _ = write!(
                out,
                "x{n:<2} {}{}",
                r(regs::x(n)),
                if n % 4 == 3 { "\n" } else { " " }
            );
        }
        out
    }
}
