//! The RISC-V implementation of the architecture hooks: the part that talks
//! to KVM.

use std::fmt::Write as _;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_device_type_KVM_DEV_TYPE_RISCV_AIA, KVM_DEV_RISCV_AIA_ADDR_APLIC,
    KVM_DEV_RISCV_AIA_CONFIG_HART_BITS, KVM_DEV_RISCV_AIA_CONFIG_IDS,
    KVM_DEV_RISCV_AIA_CONFIG_SRCS, KVM_DEV_RISCV_AIA_CTRL_INIT, KVM_DEV_RISCV_AIA_GRP_ADDR,
    KVM_DEV_RISCV_AIA_GRP_CONFIG, KVM_DEV_RISCV_AIA_GRP_CTRL, KVM_MP_STATE_STOPPED,
};
use vm_memory::{Bytes, GuestAddress};

use super::exit::{Exits, UartSbiConsole};
use super::fdt::{self, CpuInfo, FdtInputs};
use super::image;
use super::irqchip::{self, imsic_addr, index_bits, IrqchipKind, IMSIC_IDS};
use super::isa::{self, HartIsa, ISA_EXTENSIONS};
use super::layout::{
    APLIC_BASE, KERNEL_OFFSET, LEGACY, NR_SOURCES, PLIC_BASE, PLIC_SIZE, RAM_BASE,
};
use super::plic::{HartLines, Plic, PlicMmio};
use super::regs;
use crate::arch::{Arch, Platform};
use crate::bus;
use crate::config::VmConfig;
use crate::fdt::DeviceNode;
use crate::hw::serial::SerialConsole;
use crate::irq::IrqChip;
use crate::kvm::{Device, Kvm, Vcpu, Vm};
use crate::loader::place;
use crate::memory::{GuestMemory, RamRange};
use crate::term::{ConsoleOut, ConsoleSink};

/// `_IOW(KVMIO, 0x86, struct kvm_interrupt)`.
const KVM_INTERRUPT: u64 = 0x4004_ae86;
/// `KVM_INTERRUPT` values: raise / lower the VS external interrupt.
const KVM_INTERRUPT_SET: u32 = -1i32 as u32;
const KVM_INTERRUPT_UNSET: u32 = -2i32 as u32;
/// Most vCPUs KVM gives a RISC-V VM.
const MAX_CPUS: u32 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} failed: {source}")]
    Kvm {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Irqchip(#[from] irqchip::Error),
    #[error(transparent)]
    Devices(#[from] crate::virtio::setup::Error),
    #[error(transparent)]
    Image(#[from] image::Error),
    #[error(transparent)]
    Place(#[from] place::Error),
    #[error(transparent)]
    Fdt(#[from] fdt::Error),
    #[error("cannot place a device: {0}")]
    Bus(#[from] bus::Error),
    #[error("--disable-{0}: unknown RISC-V ISA extension")]
    UnknownExtension(String),
    #[error("--disable-sbi-{0}: unknown SBI extension")]
    UnknownSbiExtension(String),
    #[error("--irqchip aia: this host's KVM has no in-kernel AIA")]
    NoAia,
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
    #[error("hart 0 was not initialised before loading")]
    NoCpuInfo,
}

fn kvm_err(op: &'static str) -> impl FnOnce(crate::kvm::Error) -> Error {
    move |e| Error::Kvm {
        op,
        source: std::io::Error::from_raw_os_error(e.errno().unwrap_or(libc::EIO)),
    }
}

/// What the boot hart starts with.
#[derive(Clone, Copy, Debug)]
pub struct Boot {
    pub entry: u64,
    pub fdt: u64,
}

pub struct Riscv64 {
    cpus: u32,
    ram_size: u64,
    requested: Option<IrqchipKind>,
    kind: IrqchipKind,
    aia: Option<Device>,
    plic: Option<Arc<Plic>>,
    disabled_exts: Vec<(String, u64)>,
    disabled_sbi: Vec<(String, u64)>,
    custom_ids: [(u64, Option<u64>, &'static str); 3],
    cpu_info: Option<CpuInfo>,
    dump_dtb: Option<PathBuf>,
    pci: Option<crate::virtio::setup::PciHostInfo>,
}

impl std::fmt::Debug for Riscv64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Riscv64")
            .field("cpus", &self.cpus)
            .field("irqchip", &self.kind)
            .finish()
    }
}

/// Every hart's VS external interrupt, through `KVM_INTERRUPT` on a copy of
/// its vCPU fd (the ioctl is asynchronous on RISC-V: any thread may call it).
struct VcpuExtLines {
    fds: Vec<OwnedFd>,
}

impl HartLines for VcpuExtLines {
    fn set_external(&self, hart: u32, level: bool) {
        let Some(fd) = self.fds.get(hart as usize) else {
            return;
        };
        let irq = if level {
            KVM_INTERRUPT_SET
        } else {
            KVM_INTERRUPT_UNSET
        };
        // SAFETY: KVM_INTERRUPT reads one `struct kvm_interrupt { __u32 irq; }`
        // from `&irq`, which lives across the call; `fd` is a vCPU fd.
        let rc = unsafe { vmm_sys_util::ioctl::ioctl_with_ref(fd, KVM_INTERRUPT as _, &irq) };
        if rc < 0 {
            log::debug!(
                "KVM_INTERRUPT on hart {hart}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

fn set_attr(fd: &Device, op: &'static str, group: u32, attr: u64, addr: u64) -> Result<(), Error> {
    fd.set_attr(op, group, attr, addr).map_err(kvm_err(op))
}

impl Riscv64 {
    fn get(vcpu: &Vcpu, id: u64) -> Option<u64> {
        vcpu.get_one_reg(id).ok()
    }

    fn set(vcpu: &Vcpu, id: u64, value: u64) -> crate::kvm::Result<()> {
        vcpu.set_one_reg(id, value)
    }

    fn read_cpu_info(vcpu: &Vcpu) -> Result<CpuInfo, Error> {
        let letters = Self::get(vcpu, regs::CONFIG_ISA).ok_or(Error::Kvm {
            op: "KVM_GET_ONE_REG(config.isa)",
            source: std::io::Error::last_os_error(),
        })?;
        let timebase = Self::get(vcpu, regs::TIMER_FREQUENCY).ok_or(Error::Kvm {
            op: "KVM_GET_ONE_REG(timer.frequency)",
            source: std::io::Error::last_os_error(),
        })?;
        let extensions: Vec<&'static str> = ISA_EXTENSIONS
            .iter()
            .filter(|(_, id)| Self::get(vcpu, regs::isa_ext(*id)) == Some(1))
            .map(|(name, _)| *name)
            .collect();
        let has = |name: &str| extensions.contains(&name);
        let block = |on: bool, id| {
            on.then(|| Self::get(vcpu, id))
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
            mmu_type: Self::get(vcpu, regs::CONFIG_SATP_MODE).and_then(regs::mmu_type),
            timebase_frequency: u32::try_from(timebase).unwrap_or(u32::MAX),
        })
    }

    fn init_aia(&self, vcpus: &[Vcpu]) -> Result<(), Error> {
        let Some(fd) = &self.aia else {
            return Ok(());
        };
        let config = [
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
        ];
        for (attr, value, op) in config {
            set_attr(
                fd,
                op,
                KVM_DEV_RISCV_AIA_GRP_CONFIG,
                attr.into(),
                &value as *const u32 as u64,
            )?;
        }
        let aplic: u64 = APLIC_BASE;
        set_attr(
            fd,
            "KVM_SET_DEVICE_ATTR(APLIC address)",
            KVM_DEV_RISCV_AIA_GRP_ADDR,
            KVM_DEV_RISCV_AIA_ADDR_APLIC.into(),
            &aplic as *const u64 as u64,
        )?;
        for vcpu in vcpus {
            let addr = imsic_addr(vcpu.id());
            set_attr(
                fd,
                "KVM_SET_DEVICE_ATTR(IMSIC address)",
                KVM_DEV_RISCV_AIA_GRP_ADDR,
                // KVM_DEV_RISCV_AIA_ADDR_IMSIC(hart)
                1 + u64::from(vcpu.id()),
                &addr as *const u64 as u64,
            )?;
        }
        set_attr(
            fd,
            "KVM_SET_DEVICE_ATTR(AIA CTRL_INIT)",
            KVM_DEV_RISCV_AIA_GRP_CTRL,
            KVM_DEV_RISCV_AIA_CTRL_INIT.into(),
            0,
        )
    }

    fn attach_plic(&self, vcpus: &[Vcpu]) -> Result<(), Error> {
        let Some(plic) = &self.plic else {
            return Ok(());
        };
        let mut fds = Vec::with_capacity(vcpus.len());
        for vcpu in vcpus {
            fds.push(vcpu.dup_fd().map_err(kvm_err("dup(vCPU fd)"))?);
        }
        plic.attach(Arc::new(VcpuExtLines { fds }));
        Ok(())
    }
}

impl Arch for Riscv64 {
    type Error = Error;
    type Boot = Boot;
    type Exit<'a> = super::exit::Exit<'a>;

    fn new(cfg: &VmConfig) -> Result<Self, Error> {
        let (a, dt) = (&cfg.arch.riscv, &cfg.arch.dt);
        let disabled_exts = a
            .disable_ext
            .iter()
            .map(|n| {
                isa::isa_ext_id(n)
                    .map(|id| (n.clone(), id))
                    .ok_or_else(|| Error::UnknownExtension(n.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let disabled_sbi = a
            .disable_sbi
            .iter()
            .map(|n| {
                isa::sbi_ext_id(n)
                    .map(|id| (n.clone(), id))
                    .ok_or_else(|| Error::UnknownSbiExtension(n.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Riscv64 {
            cpus: cfg.cpus,
            ram_size: cfg.ram_size,
            requested: dt.irqchip.as_deref().map(str::parse).transpose()?,
            kind: IrqchipKind::Plic,
            aia: None,
            plic: None,
            disabled_exts,
            disabled_sbi,
            custom_ids: [
                (regs::CONFIG_MVENDORID, a.custom_mvendorid, "mvendorid"),
                (regs::CONFIG_MARCHID, a.custom_marchid, "marchid"),
                (regs::CONFIG_MIMPID, a.custom_mimpid, "mimpid"),
            ],
            cpu_info: None,
            dump_dtb: dt.dump_dtb.clone(),
            pci: None,
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

    fn setup_vm(&mut self, _kvm: &Kvm, vm: &Vm) -> Result<(), Error> {
        let try_aia = self.requested != Some(IrqchipKind::Plic);
        let aia = if !try_aia {
            None
        } else if vm.can_create_device(kvm_device_type_KVM_DEV_TYPE_RISCV_AIA) {
            Some(
                vm.create_device(kvm_device_type_KVM_DEV_TYPE_RISCV_AIA)
                    .map_err(kvm_err("KVM_CREATE_DEVICE(AIA)"))?,
            )
        } else if self.requested == Some(IrqchipKind::Aia) {
            return Err(Error::NoAia);
        } else {
            None
        };
        self.kind = if aia.is_some() {
            IrqchipKind::Aia
        } else {
            IrqchipKind::Plic
        };
        self.aia = aia;
        log::debug!("riscv: interrupt controller {}", self.kind);
        Ok(())
    }

    fn setup_devices(&mut self, p: &mut Platform) -> Result<Arc<dyn ConsoleSink>, Error> {
        let chip: Arc<dyn IrqChip> = match self.kind {
            // In-kernel AIA takes APLIC source numbers through KVM_IRQ_LINE.
            IrqchipKind::Aia => p.vm.clone(),
            IrqchipKind::Plic => {
                let plic = Plic::new(NR_SOURCES, self.cpus);
                p.mmio.insert(
                    "plic",
                    PLIC_BASE,
                    PLIC_SIZE,
                    Arc::new(Mutex::new(PlicMmio(plic.clone()))),
                )?;
                self.plic = Some(plic.clone());
                plic
            }
        };
        let serial = LEGACY.attach(&mut p.mmio, &chip, Box::new(ConsoleOut))?;
        p.fdt_nodes.extend(LEGACY.nodes());
        p.exits = Arc::new(Exits::new(
            Box::new(UartSbiConsole(serial.clone())),
            p.mem.clone(),
        ));
        self.pci = super::devices::place_virtio(p, self.kind, chip)?;
        Ok(Arc::new(SerialConsole(serial)))
    }

    fn default_cmdline(&self) -> &'static str {
        super::DEFAULT_CMDLINE
    }

    fn init_vcpu(&mut self, _kvm: &Kvm, _vm: &Vm, vcpu: &mut Vcpu) -> Result<(), Error> {
        for (reg, value, name) in self.custom_ids {
            if let Some(v) = value {
                Self::set(vcpu, reg, v).map_err(|e| Error::Kvm {
                    op: match name {
                        "mvendorid" => "KVM_SET_ONE_REG(--custom-mvendorid)",
                        "marchid" => "KVM_SET_ONE_REG(--custom-marchid)",
                        _ => "KVM_SET_ONE_REG(--custom-mimpid)",
                    },
                    source: std::io::Error::from_raw_os_error(e.errno().unwrap_or(libc::EIO)),
                })?;
            }
        }
        let disable = |what: &str, reg| match Self::set(vcpu, reg, 0) {
            Ok(()) => {}
            // ENOENT: KVM does not offer it here, so it is off already.
            Err(e) if e.errno() == Some(libc::ENOENT) => {
                log::info!(
                    "--disable-{what}: this host's KVM does not offer it; nothing to turn off"
                )
            }
            Err(e) => log::warn!("--disable-{what}: this host's KVM cannot turn it off ({e})"),
        };
        if vcpu.id() == 0 || self.disabled_exts.is_empty() && self.disabled_sbi.is_empty() {
            for (name, id) in &self.disabled_exts {
                disable(name, regs::isa_ext(*id));
            }
            for (name, id) in &self.disabled_sbi {
                disable(&format!("sbi-{name}"), regs::sbi_ext(*id));
            }
        } else {
            for (_, id) in &self.disabled_exts {
                let _ = Self::set(vcpu, regs::isa_ext(*id), 0);
            }
            for (_, id) in &self.disabled_sbi {
                let _ = Self::set(vcpu, regs::sbi_ext(*id), 0);
            }
        }
        // KVM leaves the debug console off: only the VMM can serve it.
        if !self.disabled_sbi.iter().any(|(_, id)| *id == isa::SBI_DBCN) {
            if let Err(e) = Self::set(vcpu, regs::sbi_ext(isa::SBI_DBCN), 1) {
                log::debug!("cannot turn on SBI DBCN: {e}");
            }
        }
        if vcpu.id() == 0 {
            self.cpu_info = Some(Self::read_cpu_info(vcpu)?);
        }
        Ok(())
    }

    fn finish_vcpus(&mut self, _vm: &Vm, vcpus: &[Vcpu]) -> Result<(), Error> {
        self.init_aia(vcpus)?;
        self.attach_plic(vcpus)
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
        let (format, size) = image::parse(kernel)?;
        log::debug!(
            "riscv64: kernel format {format:?}, {size} bytes from RAM + {KERNEL_OFFSET:#x}"
        );
        let at = place::place(
            RAM_BASE,
            self.ram_size,
            KERNEL_OFFSET,
            size,
            initrd.map(|i| i.len() as u64),
        )?;
        let write = |what, addr, data: &[u8]| {
            mem.write_slice(data, GuestAddress(addr))
                .map_err(|source| Error::Write { what, source })
        };
        write("kernel", at.kernel, kernel)?;
        if let (Some(data), Some((addr, _))) = (initrd, at.initrd) {
            write("initrd", addr, data)?;
        }
        let cpu = self.cpu_info.as_ref().ok_or(Error::NoCpuInfo)?;
        let blob = fdt::build(&FdtInputs {
            harts: self.cpus,
            cpu,
            ram_base: RAM_BASE,
            ram_size: self.ram_size,
            cmdline,
            initrd: at.initrd,
            irqchip: self.kind,
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
        write("device tree", at.fdt, &blob)?;
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

    fn boot_vcpu(&self, vcpu: &mut Vcpu, boot: &Boot) -> Result<(), Error> {
        // With SBI HSM in the kernel, secondary harts start stopped and the
        // boot hart starts them itself.
        let state = vcpu.mp_state().map_err(kvm_err("KVM_GET_MP_STATE"))?;
        if state == KVM_MP_STATE_STOPPED {
            return Ok(());
        }
        Self::set(vcpu, regs::CORE_PC, boot.entry).map_err(kvm_err("KVM_SET_ONE_REG(pc)"))?;
        Self::set(vcpu, regs::core_a(0), u64::from(vcpu.id()))
            .map_err(kvm_err("KVM_SET_ONE_REG(a0)"))?;
        Self::set(vcpu, regs::core_a(1), boot.fdt).map_err(kvm_err("KVM_SET_ONE_REG(a1)"))
    }

    fn dump_vcpu(&self, vcpu: &Vcpu) -> String {
        let mut out = String::new();
        let r = |id| Self::get(vcpu, id).map_or("?".to_string(), |v| format!("{v:#018x}"));
        let _ = writeln!(
            out,
            "pc {} ra {} sp {} mode {}",
            r(regs::CORE_PC),
            r(regs::CORE_RA),
            r(regs::CORE_SP),
            r(regs::CORE_MODE)
        );
        for n in 0..8u64 {
            let _ = write!(
                out,
                "a{n} {}{}",
                r(regs::core_a(n)),
                if n % 4 == 3 { "\n" } else { " " }
            );
        }
        out
    }
}
