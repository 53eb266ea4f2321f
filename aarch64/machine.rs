//! The arm64 implementation of the architecture hooks: the part that talks
//! to KVM.

use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_ITS, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V2,
    kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3, KVM_ARM_VCPU_PMU_V3_CTRL, KVM_ARM_VCPU_PMU_V3_INIT,
    KVM_ARM_VCPU_PMU_V3_IRQ, KVM_ARM_VCPU_PVTIME_CTRL, KVM_ARM_VCPU_PVTIME_IPA, KVM_ARM_VCPU_SVE,
    KVM_DEV_ARM_VGIC_CTRL_INIT, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_DEV_ARM_VGIC_GRP_CTRL,
    KVM_DEV_ARM_VGIC_GRP_NR_IRQS, KVM_VGIC_ITS_ADDR_TYPE, KVM_VGIC_V2_ADDR_TYPE_CPU,
    KVM_VGIC_V2_ADDR_TYPE_DIST, KVM_VGIC_V3_ADDR_TYPE_DIST, KVM_VGIC_V3_ADDR_TYPE_REDIST,
};

use super::asyncpf::{self, AsyncPfCmd, AsyncPfHost};
use super::devices;
pub use super::error::Error;
use super::fdt::{self, FdtInputs, PMU_PPI};
use super::features::{
    limit_vector_lengths, valid_sve_length, vm_type, Features, HostCaps, Wanted,
};
use super::gic::{kvm_irq_line_spi, GicKind, GicLayout, SpiLines, SpiSink, V2mFrame, NR_IRQS};
use super::image::{self, Image, Placement};
use super::layout::{LEGACY, PVTIME_BASE, PVTIME_RECORD, PVTIME_SIZE, RAM_BASE};
use super::options::AsyncPfMode;
use super::regs;
use crate::arch::{Arch, BootImages, Devices, NoExits, Platform, VirtioSet};
use crate::config::VmConfig;
use crate::fdt::DeviceTree;
use crate::hw::serial::SerialConsole;
use crate::irq::IrqChip;
use crate::kvm::{Device, Kvm, Vcpu, Vm};
use crate::loader::write;
use crate::memory::{GuestMemory, RamRange};
use crate::regdump::RegisterDump;
use crate::term::ConsoleOut;

const KVM_CAP_ARM_PMU_V3: u32 = 126;
const KVM_CAP_ARM_VM_IPA_SIZE: u32 = 165;
const KVM_CAP_ARM_SVE: u32 = 170;
const KVM_CAP_ARM_PTRAUTH_ADDRESS: u32 = 171;
const KVM_CAP_ARM_PTRAUTH_GENERIC: u32 = 172;
const KVM_CAP_STEAL_TIME: u32 = 187;
/// `KVM_REG_ARM64_SVE_VLS`: the bitmap of vector lengths (in 128-bit units).
const KVM_REG_ARM64_SVE_VLS: u64 = 0x6060_0000_0015_ffff;
/// Most vCPUs KVM gives an arm64 VM (KVM_MAX_VCPUS).
const MAX_CPUS: u32 = 512;

/// What the boot vCPU starts with.
#[derive(Clone, Copy, Debug)]
pub struct Boot {
    pub entry: u64,
    pub fdt: u64,
}

#[derive(Debug)]
pub struct Aarch64 {
    cpus: u32,
    ram_base: u64,
    ram_size: u64,
    requested_gic: Option<GicKind>,
    wanted: Wanted,
    sve_max_vl: Option<u32>,
    async_pf_mode: AsyncPfMode,
    kaslr_seed: Option<u64>,
    dump_dtb: Option<PathBuf>,
}

/// What `setup_vm` made: the vGIC (and ITS) and the CPU features every
/// vCPU gets.
pub struct Chipset {
    gic: GicLayout,
    gic_fd: Device,
    its_fd: Option<Device>,
    features: Features,
}

/// What the boot description needs from the vCPUs.
pub struct Topology {
    mpidrs: Vec<u64>,
    /// Whether asynchronous page faults are on (an SDEI node).
    sdei: bool,
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
    fn create_gic(&self, vm: &Vm) -> Result<(GicLayout, Device, Option<Device>), Error> {
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
        let its = match layout.its {
            Some((its_base, _)) => {
                let its = vm.create_device(kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_ITS)?;
                its.set_attr_u64(
                    "KVM_SET_DEVICE_ATTR(ITS address)",
                    KVM_DEV_ARM_VGIC_GRP_ADDR,
                    KVM_VGIC_ITS_ADDR_TYPE.into(),
                    its_base,
                )?;
                Some(its)
            }
            None => None,
        };
        log::debug!("arm64: {kind} at {dist:#x}");
        Ok((layout, fd, its))
    }

    fn limit_sve(&self, vcpu: &Vcpu) -> Result<(), Error> {
        let Some(max_vl) = self.sve_max_vl else {
            return Ok(());
        };
        let mut vls = [0u8; 64];
        vcpu.get_one_reg_bytes(KVM_REG_ARM64_SVE_VLS, &mut vls)?;
        limit_vector_lengths(&mut vls, max_vl);
        vcpu.set_one_reg_bytes(KVM_REG_ARM64_SVE_VLS, &vls)?;
        Ok(())
    }

    /// One vCPU's `KVM_ARM_VCPU_INIT` and what must follow it before the
    /// vGIC is initialised; returns its MPIDR.
    fn init_vcpu(&self, features: Features, vm: &Vm, vcpu: &Vcpu) -> Result<u64, Error> {
        let mut kvi = vm.preferred_target()?;
        kvi.features[0] |= features.vcpu_init_bits(vcpu.id());
        vcpu.vcpu_init(&kvi)?;
        if features.sve {
            self.limit_sve(vcpu)?;
            vcpu.vcpu_finalize(KVM_ARM_VCPU_SVE as i32)?;
        }
        if features.pvtime {
            let ipa = PVTIME_BASE + u64::from(vcpu.id()) * PVTIME_RECORD;
            vcpu.set_device_attr(
                "KVM_SET_DEVICE_ATTR(PVTIME_IPA)",
                KVM_ARM_VCPU_PVTIME_CTRL,
                KVM_ARM_VCPU_PVTIME_IPA.into(),
                std::ptr::addr_of!(ipa) as u64,
            )?;
        }
        Ok(vcpu.get_one_reg(regs::MPIDR_EL1)?)
    }

    /// The vGIC and ITS are initialised once every vCPU exists; the PMU
    /// needs an initialised vGIC.
    fn init_gic(chip: &Chipset, vcpus: &[Vcpu]) -> Result<(), Error> {
        chip.gic_fd.set_attr_u32(
            "KVM_SET_DEVICE_ATTR(vGIC NR_IRQS)",
            KVM_DEV_ARM_VGIC_GRP_NR_IRQS,
            0,
            NR_IRQS,
        )?;
        chip.gic_fd.set_attr(
            "KVM_SET_DEVICE_ATTR(vGIC CTRL_INIT)",
            KVM_DEV_ARM_VGIC_GRP_CTRL,
            KVM_DEV_ARM_VGIC_CTRL_INIT.into(),
            0,
        )?;
        if let Some(its) = &chip.its_fd {
            its.set_attr(
                "KVM_SET_DEVICE_ATTR(ITS CTRL_INIT)",
                KVM_DEV_ARM_VGIC_GRP_CTRL,
                KVM_DEV_ARM_VGIC_CTRL_INIT.into(),
                0,
            )?;
        }
        if chip.features.pmu {
            let intid: u32 = PMU_PPI + 16;
            for vcpu in vcpus {
                vcpu.set_device_attr(
                    "KVM_SET_DEVICE_ATTR(PMU_V3_IRQ)",
                    KVM_ARM_VCPU_PMU_V3_CTRL,
                    KVM_ARM_VCPU_PMU_V3_IRQ.into(),
                    &intid as *const u32 as u64,
                )?;
                vcpu.set_device_attr(
                    "KVM_SET_DEVICE_ATTR(PMU_V3_INIT)",
                    KVM_ARM_VCPU_PMU_V3_CTRL,
                    KVM_ARM_VCPU_PMU_V3_INIT.into(),
                    0,
                )?;
            }
        }
        Ok(())
    }
}

impl Arch for Aarch64 {
    type Error = Error;
    type Exit<'a> = crate::arch::NoExit;
    type Chipset = Chipset;
    type Topology = Topology;
    type Boot = Boot;

    fn new(cfg: &VmConfig) -> Result<Self, Error> {
        let (a, dt) = (&cfg.arch.arm64, &cfg.arch.dt);
        let requested_gic = match dt.irqchip.as_deref() {
            Some(s) => GicKind::parse_option(s)?,
            None => None,
        };
        if let Some(vl) = a.sve_max_vl {
            if !valid_sve_length(vl) {
                return Err(Error::BadSveLength(vl));
            }
        }
        Ok(Aarch64 {
            cpus: cfg.cpus,
            ram_base: cfg.ram_base.unwrap_or(RAM_BASE),
            ram_size: cfg.ram_size,
            requested_gic,
            wanted: Wanted {
                pmu: a.pmu,
                sve_limit: a.sve_max_vl.is_some(),
                pvtime: !a.no_pvtime,
            },
            sve_max_vl: a.sve_max_vl,
            async_pf_mode: a.async_pf.unwrap_or_default(),
            kaslr_seed: match a.kaslr_seed {
                Some(0) => None,
                Some(seed) => Some(seed),
                None => random_seed(),
            },
            dump_dtb: dt.dump_dtb.clone(),
        })
    }

    fn max_cpus(&self) -> u32 {
        MAX_CPUS
    }

    fn vm_type(&self, kvm: &Kvm) -> Result<u64, Error> {
        vm_type(self.ram_base, self.ram_size, || {
            kvm.check_extension(KVM_CAP_ARM_VM_IPA_SIZE)
        })
    }

    fn ram_ranges(&self, ram_size: u64) -> Result<Vec<RamRange>, Error> {
        let mut ranges = Vec::new();
        if self.wanted.pvtime {
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

    fn setup_vm(&self, kvm: &Kvm, vm: &Vm) -> Result<Chipset, Error> {
        let (gic, gic_fd, its_fd) = self.create_gic(vm)?;
        let features = self.wanted.decide(HostCaps {
            pmu: vm.check_extension(KVM_CAP_ARM_PMU_V3) > 0,
            sve: vm.check_extension(KVM_CAP_ARM_SVE) > 0,
            ptrauth: vm.check_extension(KVM_CAP_ARM_PTRAUTH_ADDRESS) > 0
                && vm.check_extension(KVM_CAP_ARM_PTRAUTH_GENERIC) > 0,
            steal_time: kvm.check_extension(KVM_CAP_STEAL_TIME) > 0,
        })?;
        log::debug!("arm64: {features:?}");
        Ok(Chipset {
            gic,
            gic_fd,
            its_fd,
            features,
        })
    }

    fn setup_devices(
        &self,
        chip: &Chipset,
        p: &mut Platform,
        virtio: VirtioSet,
    ) -> Result<Devices, Error> {
        let spis: Arc<dyn SpiSink> = Arc::new(VmSpis(p.vm.clone()));
        let irqchip: Arc<dyn IrqChip> = Arc::new(SpiLines(spis.clone()));
        let serial = LEGACY.attach(&mut p.mmio, &irqchip, Box::new(ConsoleOut))?;
        let mut tree = DeviceTree::default();
        tree.extend(LEGACY.nodes(), true);
        if let Some((base, size)) = chip.gic.v2m {
            p.mmio.insert(
                "gicv2m",
                base,
                size,
                Arc::new(Mutex::new(V2mFrame::new(spis.clone()))),
            )?;
        }
        devices::place_virtio(
            p,
            &mut tree,
            virtio,
            &chip.gic,
            irqchip,
            spis,
            LEGACY.next_irq(),
        )?;
        Ok(Devices {
            console: Arc::new(SerialConsole(serial)),
            exits: Arc::new(NoExits),
            tree,
        })
    }

    fn default_cmdline(&self) -> &'static str {
        super::DEFAULT_CMDLINE
    }

    fn init_vcpus(
        &self,
        chip: &Chipset,
        _kvm: &Kvm,
        vm: &Vm,
        vcpus: &[Vcpu],
    ) -> Result<Topology, Error> {
        let mpidrs = vcpus
            .iter()
            .map(|vcpu| self.init_vcpu(chip.features, vm, vcpu))
            .collect::<Result<Vec<_>, _>>()?;
        Self::init_gic(chip, vcpus)?;
        let host = KvmAsyncPf { vm, vcpus };
        let async_pf = asyncpf::configure(&host, self.async_pf_mode, self.cpus)?;
        Ok(Topology {
            mpidrs,
            sdei: async_pf.is_some(),
        })
    }

    fn load(
        &self,
        chip: &Chipset,
        topology: &Topology,
        devices: &DeviceTree,
        mem: &GuestMemory,
        images: &BootImages<'_>,
    ) -> Result<Boot, Error> {
        let image = Image::parse(images.kernel)?;
        log::debug!(
            "arm64: kernel format {:?}, text offset {:#x}, {} bytes",
            image.format,
            image.text_offset,
            image.image_size
        );
        let at: Placement = image::place(
            self.ram_base,
            self.ram_size,
            &image,
            images.initrd.map(|i| i.len() as u64),
        )?;
        write::write_placed(mem, &at, images)?;
        let blob = fdt::build(&FdtInputs {
            mpidrs: &topology.mpidrs,
            ram_base: self.ram_base,
            ram_size: self.ram_size,
            cmdline: images.cmdline,
            initrd: at.initrd,
            gic: &chip.gic,
            pmu: chip.features.pmu,
            sdei: topology.sdei,
            kaslr_seed: self.kaslr_seed,
            devices,
        })?;
        write::write_fdt(mem, at.fdt, &blob, self.dump_dtb.as_deref())?;
        log::debug!(
            "arm64: kernel {:#x}..{:#x}, fdt {:#x} ({} bytes), initrd {:?}",
            at.kernel,
            at.kernel_end,
            at.fdt,
            blob.len(),
            at.initrd
        );
        Ok(Boot {
            entry: at.kernel,
            fdt: at.fdt,
        })
    }

    fn boot_vcpu(&self, vcpu: &Vcpu, boot: &Boot) -> Result<(), Error> {
        if vcpu.id() != 0 {
            return Ok(());
        }
        vcpu.set_one_reg(regs::PSTATE, regs::PSTATE_EL1H_DAIF)?;
        vcpu.set_one_reg(regs::PC, boot.entry)?;
        vcpu.set_one_reg(regs::x(0), boot.fdt)?;
        for n in 1..4 {
            vcpu.set_one_reg(regs::x(n), 0)?;
        }
        Ok(())
    }

    fn dump_vcpu(&self, vcpu: &Vcpu) -> String {
        let r = |id| vcpu.get_one_reg(id).ok();
        let x: Vec<Option<u64>> = (0..31u64).map(|n| r(regs::x(n))).collect();
        RegisterDump::default()
            .line(&[
                ("pc", r(regs::PC)),
                ("sp", r(regs::SP)),
                ("pstate", r(regs::PSTATE)),
            ])
            .bank("x", &x)
            .finish()
    }
}
