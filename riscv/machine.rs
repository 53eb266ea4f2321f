//! The RISC-V implementation of the architecture hooks: the part that talks
//! to KVM. What it decides lives in hart_config.rs, exit.rs and irqchip.rs.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_device_type_KVM_DEV_TYPE_RISCV_AIA, KVM_DEV_RISCV_AIA_ADDR_APLIC,
    KVM_DEV_RISCV_AIA_CONFIG_HART_BITS, KVM_DEV_RISCV_AIA_CONFIG_IDS,
    KVM_DEV_RISCV_AIA_CONFIG_SRCS, KVM_DEV_RISCV_AIA_CTRL_INIT, KVM_DEV_RISCV_AIA_GRP_ADDR,
    KVM_DEV_RISCV_AIA_GRP_CONFIG, KVM_DEV_RISCV_AIA_GRP_CTRL, KVM_MP_STATE_STOPPED,
};

pub use super::error::Error;
use super::exit::{Exits, UartSbiConsole};
use super::fdt::{self, CpuInfo, FdtInputs};
use super::hart_config::{HartConfig, OnError};
use super::image;
use super::irqchip::{imsic_addr, index_bits, IrqchipKind, IMSIC_IDS};
use super::isa::{HartIsa, ISA_EXTENSIONS};
use super::layout::{
    APLIC_BASE, KERNEL_OFFSET, LEGACY, NR_SOURCES, PLIC_BASE, PLIC_SIZE, RAM_BASE,
};
use super::plic::{HartLines, Plic, PlicMmio};
use super::regs;
use crate::arch::{Arch, BootImages, Devices, Platform, VirtioSet};
use crate::config::VmConfig;
use crate::fdt::DeviceTree;
use crate::hw::serial::SerialConsole;
use crate::irq::IrqChip;
use crate::kvm::{Device, InterruptLine, Kvm, Vcpu, Vm};
use crate::loader::{place, write};
use crate::memory::{GuestMemory, RamRange};
use crate::regdump::RegisterDump;
use crate::term::ConsoleOut;

/// `KVM_INTERRUPT` values: raise / lower the VS external interrupt.
const KVM_INTERRUPT_SET: u32 = -1i32 as u32;
const KVM_INTERRUPT_UNSET: u32 = -2i32 as u32;
/// Most vCPUs KVM gives a RISC-V VM.
const MAX_CPUS: u32 = 1024;

/// What the boot hart starts with.
#[derive(Clone, Copy, Debug)]
pub struct Boot {
    pub entry: u64,
    pub fdt: u64,
}

#[derive(Debug)]
pub struct Riscv64 {
    cpus: u32,
    ram_size: u64,
    requested: Option<IrqchipKind>,
    harts: HartConfig,
    dump_dtb: Option<PathBuf>,
}

/// The interrupt controller `setup_vm` chose: KVM's AIA, or lkvm's PLIC.
pub enum Chipset {
    Aia(Device),
    Plic(Arc<Plic>),
}

impl Chipset {
    fn kind(&self) -> IrqchipKind {
        match self {
            Chipset::Aia(_) => IrqchipKind::Aia,
            Chipset::Plic(_) => IrqchipKind::Plic,
        }
    }
}

/// Every hart's VS external interrupt, through `KVM_INTERRUPT` (which any
/// thread may call on RISC-V).
struct VcpuExtLines(Vec<InterruptLine>);

impl HartLines for VcpuExtLines {
    fn set_external(&self, hart: u32, level: bool) {
        let Some(line) = self.0.get(hart as usize) else {
            return;
        };
        let irq = if level {
            KVM_INTERRUPT_SET
        } else {
            KVM_INTERRUPT_UNSET
        };
        if let Err(e) = line.set(irq) {
            log::debug!("hart {hart}: {e}");
        }
    }
}

impl Riscv64 {
    fn read_cpu_info(vcpu: &Vcpu) -> Result<CpuInfo, Error> {
        let get = |id| vcpu.get_one_reg(id).ok();
        let letters = vcpu.get_one_reg(regs::CONFIG_ISA)?;
        let timebase = vcpu.get_one_reg(regs::TIMER_FREQUENCY)?;
        let extensions: Vec<&'static str> = ISA_EXTENSIONS
            .iter()
            .filter(|(_, id)| get(regs::isa_ext(*id)) == Some(1))
            .map(|(name, _)| *name)
            .collect();
        let has = |name: &str| extensions.contains(&name);
        let block = |on: bool, id| {
            on.then(|| get(id))
                .flatten()
                .and_then(|v| u32::try_from(v).ok())
        };
        Ok(CpuInfo {
            cbom_block_size: block(has("zicbom"), regs::CONFIG_ZICBOM_BLOCK_SIZE),
            cboz_block_size: block(has("zicboz"), regs::CONFIG_ZICBOZ_BLOCK_SIZE),
            isa: HartIsa {
                letters,
                extensions,
            },
            mmu_type: get(regs::CONFIG_SATP_MODE).and_then(regs::mmu_type),
            timebase_frequency: u32::try_from(timebase).unwrap_or(u32::MAX),
        })
    }

    fn configure_hart(&self, vcpu: &Vcpu) -> Result<(), Error> {
        for w in self.harts.writes(vcpu.id()) {
            let Err(e) = vcpu.set_one_reg(w.reg, w.value) else {
                continue;
            };
            match w.on_error {
                OnError::Fail(name) => return Err(Error::CustomId { name, source: e }),
                OnError::Report(what) if e.errno() == Some(libc::ENOENT) => log::info!(
                    "--disable-{what}: this host's KVM does not offer it; nothing to turn off"
                ),
                OnError::Report(what) => {
                    log::warn!("--disable-{what}: this host's KVM cannot turn it off ({e})")
                }
                OnError::Ignore => log::debug!("hart {}: {e}", vcpu.id()),
            }
        }
        Ok(())
    }

    fn init_aia(&self, aia: &Device, vcpus: &[Vcpu]) -> Result<(), Error> {
        for (attr, value, op) in [
            (
                KVM_DEV_RISCV_AIA_CONFIG_SRCS,
                NR_SOURCES,
                "KVM_SET_DEVICE_ATTR(AIA nr sources)",
            ),
            (
                KVM_DEV_RISCV_AIA_CONFIG_IDS,
                IMSIC_IDS,
                "KVM_SET_DEVICE_ATTR(AIA nr ids)",
            ),
            (
                KVM_DEV_RISCV_AIA_CONFIG_HART_BITS,
                index_bits(self.cpus),
                "KVM_SET_DEVICE_ATTR(AIA hart bits)",
            ),
        ] {
            aia.set_attr_u32(op, KVM_DEV_RISCV_AIA_GRP_CONFIG, attr.into(), value)?;
        }
        aia.set_attr_u64(
            "KVM_SET_DEVICE_ATTR(APLIC address)",
            KVM_DEV_RISCV_AIA_GRP_ADDR,
            KVM_DEV_RISCV_AIA_ADDR_APLIC.into(),
            APLIC_BASE,
        )?;
        for vcpu in vcpus {
            aia.set_attr_u64(
                "KVM_SET_DEVICE_ATTR(IMSIC address)",
                KVM_DEV_RISCV_AIA_GRP_ADDR,
                // KVM_DEV_RISCV_AIA_ADDR_IMSIC(hart)
                1 + u64::from(vcpu.id()),
                imsic_addr(vcpu.id()),
            )?;
        }
        aia.set_attr(
            "KVM_SET_DEVICE_ATTR(AIA CTRL_INIT)",
            KVM_DEV_RISCV_AIA_GRP_CTRL,
            KVM_DEV_RISCV_AIA_CTRL_INIT.into(),
            0,
        )?;
        Ok(())
    }
}

impl Arch for Riscv64 {
    type Error = Error;
    type Exit<'a> = super::exit::Exit<'a>;
    type Chipset = Chipset;
    type Topology = CpuInfo;
    type Boot = Boot;

    fn new(cfg: &VmConfig) -> Result<Self, Error> {
        Ok(Riscv64 {
            cpus: cfg.cpus,
            ram_size: cfg.ram_size,
            requested: cfg.arch.dt.irqchip.as_deref().map(str::parse).transpose()?,
            harts: HartConfig::new(&cfg.arch.riscv)?,
            dump_dtb: cfg.arch.dt.dump_dtb.clone(),
        })
    }

    fn max_cpus(&self) -> u32 {
        MAX_CPUS
    }

    fn vm_type(&self, _kvm: &Kvm) -> Result<u64, Error> {
        Ok(0)
    }

    fn ram_ranges(&self, ram_size: u64) -> Result<Vec<RamRange>, Error> {
        Ok(vec![RamRange {
            base: RAM_BASE,
            size: ram_size,
        }])
    }

    fn wants_thp(&self) -> bool {
        true
    }

    fn setup_vm(&self, _kvm: &Kvm, vm: &Vm) -> Result<Chipset, Error> {
        let has_aia = self.requested != Some(IrqchipKind::Plic)
            && vm.can_create_device(kvm_device_type_KVM_DEV_TYPE_RISCV_AIA);
        let chip = match (has_aia, self.requested) {
            (true, _) => Chipset::Aia(vm.create_device(kvm_device_type_KVM_DEV_TYPE_RISCV_AIA)?),
            (false, Some(IrqchipKind::Aia)) => return Err(Error::NoAia),
            (false, _) => Chipset::Plic(Plic::new(NR_SOURCES, self.cpus)),
        };
        log::debug!("riscv: interrupt controller {}", chip.kind());
        Ok(chip)
    }

    fn setup_devices(
        &self,
        chip: &Chipset,
        p: &mut Platform,
        virtio: VirtioSet,
    ) -> Result<Devices, Error> {
        let irqchip: Arc<dyn IrqChip> = match chip {
            // In-kernel AIA takes APLIC source numbers through KVM_IRQ_LINE.
            Chipset::Aia(_) => p.vm.clone(),
            Chipset::Plic(plic) => {
                p.mmio.insert(
                    "plic",
                    PLIC_BASE,
                    PLIC_SIZE,
                    Arc::new(Mutex::new(PlicMmio(plic.clone()))),
                )?;
                plic.clone()
            }
        };
        let serial = LEGACY.attach(&mut p.mmio, &irqchip, Box::new(ConsoleOut))?;
        let mut tree = DeviceTree::default();
        tree.extend(LEGACY.nodes(), true);
        let exits = Arc::new(Exits::new(
            Box::new(UartSbiConsole(serial.clone())),
            p.mem.clone(),
        ));
        super::devices::place_virtio(p, &mut tree, virtio, chip.kind(), irqchip)?;
        Ok(Devices {
            console: Arc::new(SerialConsole(serial)),
            exits,
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
        _vm: &Vm,
        vcpus: &[Vcpu],
    ) -> Result<CpuInfo, Error> {
        for vcpu in vcpus {
            self.configure_hart(vcpu)?;
        }
        // The harts are alike: the device tree describes hart 0's ISA.
        let boot = vcpus.first().ok_or(Error::NoHarts)?;
        let info = Self::read_cpu_info(boot)?;
        match chip {
            Chipset::Aia(aia) => self.init_aia(aia, vcpus)?,
            Chipset::Plic(plic) => {
                let lines = vcpus
                    .iter()
                    .map(Vcpu::interrupt_line)
                    .collect::<Result<Vec<_>, _>>()?;
                plic.attach(Arc::new(VcpuExtLines(lines)));
            }
        }
        Ok(info)
    }

    fn load(
        &self,
        chip: &Chipset,
        cpu: &CpuInfo,
        devices: &DeviceTree,
        mem: &GuestMemory,
        images: &BootImages<'_>,
    ) -> Result<Boot, Error> {
        let (format, size) = image::parse(images.kernel)?;
        log::debug!(
            "riscv64: kernel format {format:?}, {size} bytes from RAM + {KERNEL_OFFSET:#x}"
        );
        let at = place::place(
            RAM_BASE,
            self.ram_size,
            KERNEL_OFFSET,
            size,
            images.initrd.map(|i| i.len() as u64),
        )?;
        write::write_placed(mem, &at, images)?;
        let blob = fdt::build(&FdtInputs {
            harts: self.cpus,
            cpu,
            ram_base: RAM_BASE,
            ram_size: self.ram_size,
            cmdline: images.cmdline,
            initrd: at.initrd,
            irqchip: chip.kind(),
            devices,
        })?;
        write::write_fdt(mem, at.fdt, &blob, self.dump_dtb.as_deref())?;
        log::debug!(
            "riscv: kernel {:#x}..{:#x}, fdt {:#x} ({} bytes), initrd {:?}, isa {}",
            at.kernel,
            at.kernel_end,
            at.fdt,
            blob.len(),
            at.initrd,
            cpu.isa.isa_string()
        );
        Ok(Boot {
            entry: at.kernel,
            fdt: at.fdt,
        })
    }

    fn boot_vcpu(&self, vcpu: &Vcpu, boot: &Boot) -> Result<(), Error> {
        // With SBI HSM in the kernel, secondary harts start stopped and the
        // boot hart starts them itself.
        if vcpu.mp_state()? == KVM_MP_STATE_STOPPED {
            return Ok(());
        }
        vcpu.set_one_reg(regs::CORE_PC, boot.entry)?;
        vcpu.set_one_reg(regs::core_a(0), u64::from(vcpu.id()))?;
        vcpu.set_one_reg(regs::core_a(1), boot.fdt)?;
        Ok(())
    }

    fn dump_vcpu(&self, vcpu: &Vcpu) -> String {
        let r = |id| vcpu.get_one_reg(id).ok();
        let a: Vec<Option<u64>> = (0..8u64).map(|n| r(regs::core_a(n))).collect();
        RegisterDump::default()
            .line(&[
                ("pc", r(regs::CORE_PC)),
                ("ra", r(regs::CORE_RA)),
                ("sp", r(regs::CORE_SP)),
                ("mode", r(regs::CORE_MODE)),
            ])
            .bank("a", &a)
            .finish()
    }
}
