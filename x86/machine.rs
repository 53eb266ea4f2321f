//! The x86_64 implementation of the architecture hooks: the part that talks
//! to KVM.

use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES,
    KVM_PIT_SPEAKER_DUMMY,
};

use super::cpuid::{self, CpuidEntry};
use super::devices;
use super::kernel::{self, BootPlan, Entry};
use super::layout::{self, BOOT_STACK_TOP, TSS_ADDR};
use super::mptable;
use super::regs::{self, BootSregs, Segment};
use crate::arch::{Arch, BootImages, Devices, NoExits, Platform, VirtioSet};
use crate::bus::{self, SharedDevice};
use crate::config::VmConfig;
use crate::fdt::DeviceTree;
use crate::hw::acpi_pm::{AcpiPm, ACPI_PM_LEN, ACPI_PM_PORT};
use crate::hw::i8042::{I8042, I8042_LEN, I8042_PORT, KBD_IRQ};
use crate::hw::legacy::{attach_uarts, ISA_UARTS};
use crate::hw::pci::{PciConfigIo, PCI_CONFIG_LEN, PCI_CONFIG_PORT};
use crate::hw::rtc::{Rtc, RTC_LEN, RTC_PORT};
use crate::hw::serial::SerialConsole;
use crate::hw::IgnoredPorts;
use crate::irq::{IrqChip, IrqLine, Trigger};
use crate::kvm::{Kvm, Vcpu, Vm};
use crate::memory::{GuestMemory, RamRange};
use crate::regdump::RegisterDump;
use crate::term::ConsoleOut;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kvm(#[from] crate::kvm::Error),
    #[error(transparent)]
    Kernel(#[from] kernel::Error),
    #[error("cannot place a device: {0}")]
    Bus(#[from] bus::Error),
    #[error(transparent)]
    Devices(#[from] devices::Error),
    #[error("KVM accepted only {done} of {total} boot MSRs")]
    Msrs { done: usize, total: usize },
    #[error("building the CPUID table for KVM: {0}")]
    Cpuid(String),
}

#[derive(Debug)]
pub struct X86 {
    cpus: u32,
    ram_size: u64,
}

/// What `setup_vm` learns: the CPUID leaves this host's KVM supports,
/// which every vCPU's table starts from.
pub struct Chipset {
    supported_cpuid: Vec<CpuidEntry>,
}

// MSRs every vCPU starts with; mostly zero, as after a reset.
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MISC_ENABLE_FAST_STRING: u64 = 1;

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn kvm_segment(s: &Segment) -> kvm_segment {
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: s.present,
        dpl: s.dpl,
        db: s.db,
        s: s.s,
        l: s.l,
        g: s.g,
        avl: s.avl,
        unusable: 0,
        padding: 0,
    }
}

impl X86 {
    fn set_cpuid(&self, chip: &Chipset, vcpu: &Vcpu) -> Result<(), Error> {
        let mut entries = chip.supported_cpuid.clone();
        cpuid::patch(&mut entries, vcpu.id(), self.cpus);
        let raw: Vec<kvm_bindings::kvm_cpuid_entry2> = entries
            .iter()
            .map(|e| kvm_bindings::kvm_cpuid_entry2 {
                function: e.function,
                index: e.index,
                flags: e.flags,
                eax: e.eax,
                ebx: e.ebx,
                ecx: e.ecx,
                edx: e.edx,
                ..Default::default()
            })
            .collect();
        let cpuid = CpuId::from_entries(&raw).map_err(|e| Error::Cpuid(format!("{e:?}")))?;
        Ok(vcpu.set_cpuid(&cpuid)?)
    }

    fn set_msrs(vcpu: &Vcpu) -> Result<(), Error> {
        let boot = [
            (MSR_IA32_SYSENTER_CS, 0),
            (MSR_IA32_SYSENTER_ESP, 0),
            (MSR_IA32_SYSENTER_EIP, 0),
            (MSR_STAR, 0),
            (MSR_CSTAR, 0),
            (MSR_KERNEL_GS_BASE, 0),
            (MSR_SYSCALL_MASK, 0),
            (MSR_LSTAR, 0),
            (MSR_IA32_TSC, 0),
            (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        ];
        let entries: Vec<kvm_msr_entry> = boot
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let msrs = Msrs::from_entries(&entries).map_err(|e| Error::Cpuid(format!("{e:?}")))?;
        let done = vcpu.set_msrs(&msrs)?;
        if done < entries.len() {
            // KVM stops at the first MSR it rejects. Some backends (PVM)
            // refuse a few of these; none is needed to boot, so log it.
            log::debug!(
                "vCPU {}: KVM set {done} of {} boot MSRs (stopped at {:#x})",
                vcpu.id(),
                entries.len(),
                entries[done].index
            );
        }
        Ok(())
    }

    fn set_fpu(vcpu: &Vcpu) -> Result<(), Error> {
        let fpu = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        Ok(vcpu.set_fpu(&fpu)?)
    }

    fn set_lint(vcpu: &Vcpu) -> Result<(), Error> {
        let mut lapic = vcpu.lapic()?;
        for (reg, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
            let mut raw = [0u8; 4];
            for (i, b) in raw.iter_mut().enumerate() {
                *b = lapic.regs[reg + i] as u8;
            }
            let v = (u32::from_le_bytes(raw) & !0x700) | (mode << 8);
            for (i, b) in v.to_le_bytes().iter().enumerate() {
                lapic.regs[reg + i] = *b as _;
            }
        }
        Ok(vcpu.set_lapic(&lapic)?)
    }

    /// A flat binary starts in the real mode KVM resets a vCPU to, with
    /// every segment at `cs`.
    fn set_real_mode(vcpu: &Vcpu, cs: u16, ip: u16, sp: u16) -> Result<(), Error> {
        let mut sregs = vcpu.sregs()?;
        for seg in [
            &mut sregs.cs,
            &mut sregs.ds,
            &mut sregs.es,
            &mut sregs.fs,
            &mut sregs.gs,
            &mut sregs.ss,
        ] {
            seg.selector = cs;
            seg.base = u64::from(cs) << 4;
        }
        vcpu.set_sregs(&sregs)?;
        let regs = kvm_regs {
            rip: u64::from(ip),
            rsp: u64::from(sp),
            rbp: u64::from(sp),
            rflags: 0x2,
            ..Default::default()
        };
        Ok(vcpu.set_regs(&regs)?)
    }

    fn set_boot_registers(vcpu: &Vcpu, plan: &BootPlan) -> Result<(), Error> {
        let (boot, mut regs): (BootSregs, kvm_regs) = match plan.entry {
            Entry::Linux64 { rip, zero_page } => (
                regs::long_mode_sregs(),
                kvm_regs {
                    rip,
                    rsi: zero_page,
                    ..Default::default()
                },
            ),
            Entry::Pvh { rip, start_info } => (
                regs::protected_mode_sregs(),
                kvm_regs {
                    rip,
                    rbx: start_info,
                    ..Default::default()
                },
            ),
            Entry::RealMode { cs, ip, sp } => return Self::set_real_mode(vcpu, cs, ip, sp),
        };
        regs.rflags = 0x2;
        regs.rsp = BOOT_STACK_TOP;
        regs.rbp = BOOT_STACK_TOP;
        let mut sregs = vcpu.sregs()?;
        let code = kvm_segment(&boot.code);
        let data = kvm_segment(&boot.data);
        sregs.cs = code;
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.tr = kvm_segment(&boot.tss);
        sregs.gdt.base = boot.gdt_base;
        sregs.gdt.limit = boot.gdt_limit;
        // An empty IDT: any exception before the kernel sets its own is a
        // triple fault, reported as a crash instead of running wild.
        sregs.idt.base = 0;
        sregs.idt.limit = 0;
        sregs.cr0 = boot.cr0;
        sregs.cr3 = boot.cr3;
        sregs.cr4 = boot.cr4;
        sregs.efer = boot.efer;
        vcpu.set_sregs(&sregs)?;
        Ok(vcpu.set_regs(&regs)?)
    }
}

impl Arch for X86 {
    type Error = Error;
    type Exit<'a> = crate::arch::NoExit;
    type Chipset = Chipset;
    type Topology = ();
    type Boot = BootPlan;

    fn new(cfg: &VmConfig) -> Result<Self, Error> {
        Ok(X86 {
            cpus: cfg.cpus,
            ram_size: cfg.ram_size,
        })
    }

    fn max_cpus(&self) -> u32 {
        mptable::MAX_CPUS
    }

    fn vm_type(&self, _kvm: &Kvm) -> Result<u64, Error> {
        Ok(0)
    }

    fn ram_ranges(&self, ram_size: u64) -> Result<Vec<RamRange>, Error> {
        Ok(layout::ram_ranges(ram_size))
    }

    fn wants_thp(&self) -> bool {
        false
    }

    fn setup_vm(&self, kvm: &Kvm, vm: &Vm) -> Result<Chipset, Error> {
        vm.set_tss_address(TSS_ADDR)?;
        vm.create_irqchip()?;
        vm.create_pit2(KVM_PIT_SPEAKER_DUMMY)?;
        let cpuid = kvm.supported_cpuid(KVM_MAX_CPUID_ENTRIES)?;
        let supported_cpuid = cpuid
            .as_slice()
            .iter()
            .map(|e| CpuidEntry {
                function: e.function,
                index: e.index,
                flags: e.flags,
                eax: e.eax,
                ebx: e.ebx,
                ecx: e.ecx,
                edx: e.edx,
            })
            .collect();
        Ok(Chipset { supported_cpuid })
    }

    fn setup_devices(
        &self,
        _chip: &Chipset,
        p: &mut Platform,
        virtio: VirtioSet,
    ) -> Result<Devices, Error> {
        let (root, pci) = devices::place_virtio(p, virtio)?;
        // The in-kernel PIC/IOAPIC take ISA IRQ numbers as KVM_IRQ_LINE lines.
        let chip: Arc<dyn IrqChip> = p.vm.clone();
        let edge = |line| IrqLine::new(chip.clone(), line, Trigger::Edge);
        let serial = attach_uarts(&mut p.pio, &chip, &ISA_UARTS, Box::new(ConsoleOut))?;
        let i8042: SharedDevice = Arc::new(Mutex::new(I8042::new(edge(KBD_IRQ), p.ctl.clone())));
        p.pio.insert("i8042", I8042_PORT, I8042_LEN, i8042)?;
        p.pio.insert(
            "rtc",
            RTC_PORT,
            RTC_LEN,
            Arc::new(Mutex::new(Rtc::default())),
        )?;
        p.pio.insert(
            "pci-config",
            PCI_CONFIG_PORT,
            PCI_CONFIG_LEN,
            Arc::new(Mutex::new(PciConfigIo::new(root, p.ctl.clone()))),
        )?;
        p.pio.insert(
            "acpi-pm",
            ACPI_PM_PORT,
            ACPI_PM_LEN,
            Arc::new(Mutex::new(AcpiPm::new(p.ctl.clone()))),
        )?;
        let ignored: SharedDevice = Arc::new(Mutex::new(IgnoredPorts));
        p.pio.insert("post", 0x80, 1, ignored.clone())?;
        p.pio.insert("io-delay", 0xed, 1, ignored)?;
        Ok(Devices {
            console: Arc::new(SerialConsole(serial)),
            exits: Arc::new(NoExits),
            tree: DeviceTree {
                pci: Some(pci),
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
    ) -> Result<(), Error> {
        for vcpu in vcpus {
            self.set_cpuid(chip, vcpu)?;
            Self::set_msrs(vcpu)?;
            Self::set_fpu(vcpu)?;
            Self::set_lint(vcpu)?;
        }
        Ok(())
    }

    fn load(
        &self,
        _chip: &Chipset,
        _topology: &(),
        devices: &DeviceTree,
        mem: &GuestMemory,
        images: &BootImages<'_>,
    ) -> Result<BootPlan, Error> {
        let plan = kernel::load(
            mem,
            self.ram_size,
            self.cpus,
            images.kernel,
            images.initrd,
            images.cmdline,
            &mptable::pci_irqs(devices.pci.as_ref()),
        )?;
        log::debug!(
            "x86: kernel at {:#x}..{:#x}, initrd {:?}, entry {:?}",
            plan.kernel_start,
            plan.kernel_end,
            plan.initrd,
            plan.entry
        );
        Ok(plan)
    }

    fn boot_vcpu(&self, vcpu: &Vcpu, boot: &BootPlan) -> Result<(), Error> {
        // Secondary vCPUs wait for INIT/SIPI from the boot CPU, in the reset
        // state KVM gave them.
        if vcpu.id() == 0 {
            Self::set_boot_registers(vcpu, boot)?;
        }
        Ok(())
    }

    fn inject_nmi(&self, vcpu: &Vcpu) -> Result<(), String> {
        vcpu.nmi().map_err(|e| e.to_string())
    }

    fn dump_vcpu(&self, vcpu: &Vcpu) -> String {
        let mut d = RegisterDump::default();
        match vcpu.regs() {
            Ok(r) => {
                d.line(&[
                    ("rip", Some(r.rip)),
                    ("rsp", Some(r.rsp)),
                    ("rflags", Some(r.rflags)),
                ])
                .line(&[
                    ("rax", Some(r.rax)),
                    ("rbx", Some(r.rbx)),
                    ("rcx", Some(r.rcx)),
                    ("rdx", Some(r.rdx)),
                ])
                .line(&[
                    ("rsi", Some(r.rsi)),
                    ("rdi", Some(r.rdi)),
                    ("rbp", Some(r.rbp)),
                ])
                .line(&[
                    ("r8", Some(r.r8)),
                    ("r9", Some(r.r9)),
                    ("r10", Some(r.r10)),
                    ("r11", Some(r.r11)),
                ])
                .line(&[
                    ("r12", Some(r.r12)),
                    ("r13", Some(r.r13)),
                    ("r14", Some(r.r14)),
                    ("r15", Some(r.r15)),
                ]);
            }
            Err(e) => {
                d.unavailable("registers", e);
            }
        }
        match vcpu.sregs() {
            Ok(s) => {
                d.short_line(&[
                    ("cs", Some(s.cs.selector.into())),
                    ("base", Some(s.cs.base)),
                    ("l", Some(s.cs.l.into())),
                    ("db", Some(s.cs.db.into())),
                    ("ss", Some(s.ss.selector.into())),
                    ("ds", Some(s.ds.selector.into())),
                ])
                .short_line(&[
                    ("cr0", Some(s.cr0)),
                    ("cr2", Some(s.cr2)),
                    ("cr3", Some(s.cr3)),
                    ("cr4", Some(s.cr4)),
                    ("efer", Some(s.efer)),
                ])
                .short_line(&[
                    ("gdt", Some(s.gdt.base)),
                    ("limit", Some(s.gdt.limit.into())),
                    ("idt", Some(s.idt.base)),
                    ("limit", Some(s.idt.limit.into())),
                ]);
            }
            Err(e) => {
                d.unavailable("special registers", e);
            }
        }
        d.finish()
    }
}
