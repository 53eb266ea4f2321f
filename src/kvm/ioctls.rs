//! kvm-ioctls backend of the seam (x86_64, aarch64, riscv64).

use std::io;
use std::path::Path;

use kvm_ioctls::{IoEventAddress, Kvm as KvmFd, NoDatamatch, VcpuExit as RawExit, VcpuFd, VmFd};
use vmm_sys_util::eventfd::EventFd;

use super::{
    DevicePath, Error, GsiRoute, IoAddr, MemoryRegion, MsiMessage, Result, SystemEvent, VcpuExit,
};

const KVM_EXIT_IO_OUT: u8 = 1;
const KVM_EXIT_INTERNAL_ERROR: u32 = 17;
#[cfg(riscv)]
const KVM_EXIT_RISCV_SBI: u32 = 35;
#[cfg(riscv)]
const KVM_EXIT_RISCV_CSR: u32 = 36;

fn errno(e: kvm_ioctls::Error) -> io::Error {
    io::Error::from_raw_os_error(e.errno())
}

/// The system fd (`/dev/kvm` or `--dev`).
#[derive(Debug)]
pub struct Kvm {
    fd: KvmFd,
}

impl Kvm {
    /// Opens the KVM device and checks its API version.
    pub fn open(path: &Path) -> Result<Kvm> {
        let dev = DevicePath::new(path);
        let fd = KvmFd::new_with_path(dev.c_string()?).map_err(|e| dev.open_error(errno(e)))?;
        dev.check_version(fd.get_api_version())?;
        Ok(Kvm { fd })
    }

    /// `KVM_CHECK_EXTENSION` on the system fd: 0 means absent.
    pub fn check_extension(&self, cap: u32) -> i32 {
        self.fd.check_extension_raw(cap.into())
    }

    /// The most vCPUs one VM may have on this host.
    pub fn max_vcpus(&self) -> usize {
        self.fd.get_max_vcpus()
    }

    /// Creates a VM of the given machine type (0 = default).
    pub fn create_vm(&self, vm_type: u64) -> Result<Vm> {
        let fd = self
            .fd
            .create_vm_with_type(vm_type)
            .map_err(|e| Error::ioctl("KVM_CREATE_VM", errno(e)))?;
        Ok(Vm { fd })
    }

    /// The CPUID leaves KVM can give guests (`KVM_GET_SUPPORTED_CPUID`).
    #[cfg(x86)]
    pub fn supported_cpuid(&self, max_entries: usize) -> Result<kvm_bindings::CpuId> {
        self.fd
            .get_supported_cpuid(max_entries)
            .map_err(|e| Error::ioctl("KVM_GET_SUPPORTED_CPUID", errno(e)))
    }
}

/// A device KVM emulates (vGIC, ITS, AIA, XICS), configured through its
/// attributes.
#[derive(Debug)]
pub struct Device {
    fd: kvm_ioctls::DeviceFd,
}

impl Device {
    /// `KVM_SET_DEVICE_ATTR`: `addr` is where in lkvm's memory the value
    /// is, or the value itself for attributes that take none (as KVM
    /// defines per attribute). `op` names the attribute in errors.
    pub fn set_attr(&self, op: &'static str, group: u32, attr: u64, addr: u64) -> Result<()> {
        let a = kvm_bindings::kvm_device_attr {
            flags: 0,
            group,
            attr,
            addr,
        };
        self.fd
            .set_device_attr(&a)
            .map_err(|e| Error::ioctl(op, errno(e)))
    }

    /// Sets an attribute whose value is a `u64` in lkvm's memory.
    pub fn set_attr_u64(&self, op: &'static str, group: u32, attr: u64, value: u64) -> Result<()> {
        self.set_attr(op, group, attr, std::ptr::addr_of!(value) as u64)
    }

    /// Sets an attribute whose value is a `u32` in lkvm's memory.
    pub fn set_attr_u32(&self, op: &'static str, group: u32, attr: u64, value: u32) -> Result<()> {
        self.set_attr(op, group, attr, std::ptr::addr_of!(value) as u64)
    }

    /// The device's fd number, for the ioctls that name a device by it
    /// (`KVM_CAP_IRQ_XICS`).
    pub fn raw_fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.fd.as_raw_fd()
    }
}

/// A VM fd. Shared between threads (`Arc<Vm>`): every method takes `&self`.
#[derive(Debug)]
pub struct Vm {
    fd: VmFd,
}

impl Vm {
    /// `KVM_CHECK_EXTENSION` on the VM fd (answers per VM type where the host
    /// supports `KVM_CAP_CHECK_EXTENSION_VM`, else the system answer).
    pub fn check_extension(&self, cap: u32) -> i32 {
        self.fd.check_extension_raw(cap.into())
    }

    /// Registers one memory slot.
    ///
    /// # Safety
    /// `region.userspace_addr .. + memory_size` must be a mapping that stays
    /// valid (and is not reused for anything else) for the life of the VM.
    pub unsafe fn set_user_memory_region(&self, region: MemoryRegion) -> Result<()> {
        let raw = kvm_bindings::kvm_userspace_memory_region {
            slot: region.slot,
            flags: region.flags,
            guest_phys_addr: region.guest_phys_addr,
            memory_size: region.memory_size,
            userspace_addr: region.userspace_addr,
        };
        // SAFETY: the caller guarantees the host range stays mapped for the
        // VM's lifetime, which is all KVM requires of it.
        unsafe { self.fd.set_user_memory_region(raw) }
            .map_err(|e| Error::ioctl("KVM_SET_USER_MEMORY_REGION", errno(e)))
    }

    /// Drives an interrupt controller input (`KVM_IRQ_LINE`).
    pub fn set_irq_line(&self, line: u32, level: bool) -> Result<()> {
        self.fd
            .set_irq_line(line, level)
            .map_err(|e| Error::ioctl("KVM_IRQ_LINE", errno(e)))
    }

    /// Routes an eventfd to a GSI (`KVM_IRQFD`).
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<()> {
        self.fd
            .register_irqfd(evt, gsi)
            .map_err(|e| Error::ioctl("KVM_IRQFD", errno(e)))
    }

    /// Makes KVM signal `evt` on a guest write to `addr` (of any length,
    /// or only a 4-byte write of `datamatch`) instead of exiting to us.
    pub fn register_ioevent(
        &self,
        evt: &EventFd,
        addr: IoAddr,
        datamatch: Option<u32>,
    ) -> Result<()> {
        let a = match addr {
            IoAddr::Pio(p) => IoEventAddress::Pio(p),
            IoAddr::Mmio(m) => IoEventAddress::Mmio(m),
        };
        match datamatch {
            Some(v) => self.fd.register_ioevent(evt, &a, v),
            None => self.fd.register_ioevent(evt, &a, NoDatamatch),
        }
        .map_err(|e| Error::ioctl("KVM_IOEVENTFD", errno(e)))
    }

    /// Undoes [`Vm::register_ioevent`] (same arguments).
    pub fn unregister_ioevent(
        &self,
        evt: &EventFd,
        addr: IoAddr,
        datamatch: Option<u32>,
    ) -> Result<()> {
        let a = match addr {
            IoAddr::Pio(p) => IoEventAddress::Pio(p),
            IoAddr::Mmio(m) => IoEventAddress::Mmio(m),
        };
        match datamatch {
            Some(v) => self.fd.unregister_ioevent(evt, &a, v),
            None => self.fd.unregister_ioevent(evt, &a, NoDatamatch),
        }
        .map_err(|e| Error::ioctl("KVM_IOEVENTFD(deassign)", errno(e)))
    }

    /// Replaces the VM's GSI routing table (`KVM_SET_GSI_ROUTING`).
    pub fn set_gsi_routing(&self, routes: &[(u32, GsiRoute)]) -> Result<()> {
        use kvm_bindings::{
            kvm_irq_routing_entry__bindgen_ty_1 as Union, kvm_irq_routing_irqchip,
            kvm_irq_routing_msi, kvm_irq_routing_msi__bindgen_ty_1 as MsiUnion, KvmIrqRouting,
            KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI, KVM_MSI_VALID_DEVID,
        };
        let mut table = KvmIrqRouting::new(routes.len()).map_err(|_| {
            Error::ioctl(
                "KVM_SET_GSI_ROUTING",
                io::Error::from_raw_os_error(libc::E2BIG),
            )
        })?;
        for (entry, (gsi, route)) in table.as_mut_slice().iter_mut().zip(routes) {
            entry.gsi = *gsi;
            match route {
                GsiRoute::Irqchip { chip, pin } => {
                    entry.type_ = KVM_IRQ_ROUTING_IRQCHIP;
                    entry.u = Union {
                        irqchip: kvm_irq_routing_irqchip {
                            irqchip: *chip,
                            pin: *pin,
                        },
                    };
                }
                GsiRoute::Msi(m) => {
                    entry.type_ = KVM_IRQ_ROUTING_MSI;
                    if m.devid.is_some() {
                        entry.flags = KVM_MSI_VALID_DEVID;
                    }
                    entry.u = Union {
                        msi: kvm_irq_routing_msi {
                            address_lo: m.addr as u32,
                            address_hi: (m.addr >> 32) as u32,
                            data: m.data,
                            __bindgen_anon_1: MsiUnion {
                                devid: m.devid.unwrap_or(0),
                            },
                        },
                    };
                }
            }
        }
        self.fd
            .set_gsi_routing(&table)
            .map_err(|e| Error::ioctl("KVM_SET_GSI_ROUTING", errno(e)))
    }

    /// Undoes [`Vm::register_irqfd`].
    pub fn unregister_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<()> {
        self.fd
            .unregister_irqfd(evt, gsi)
            .map_err(|e| Error::ioctl("KVM_IRQFD(deassign)", errno(e)))
    }

    /// Injects one MSI (`KVM_SIGNAL_MSI`).
    pub fn signal_msi(&self, msg: MsiMessage) -> Result<()> {
        let mut msi = kvm_bindings::kvm_msi {
            address_lo: msg.addr as u32,
            address_hi: (msg.addr >> 32) as u32,
            data: msg.data,
            ..Default::default()
        };
        if let Some(id) = msg.devid {
            msi.flags = kvm_bindings::KVM_MSI_VALID_DEVID;
            msi.devid = id;
        }
        self.fd
            .signal_msi(msi)
            .map(|_| ())
            .map_err(|e| Error::ioctl("KVM_SIGNAL_MSI", errno(e)))
    }

    /// Creates vCPU `id`.
    pub fn create_vcpu(&self, id: u32) -> Result<Vcpu> {
        let fd = self
            .fd
            .create_vcpu(id.into())
            .map_err(|e| Error::ioctl("KVM_CREATE_VCPU", errno(e)))?;
        Ok(Vcpu { fd, id })
    }

    /// Creates a KVM device of `kind` (`KVM_DEV_TYPE_*`).
    pub fn create_device(&self, kind: u32) -> Result<Device> {
        let mut dev = kvm_bindings::kvm_create_device {
            type_: kind,
            fd: 0,
            flags: 0,
        };
        let fd = self
            .fd
            .create_device(&mut dev)
            .map_err(|e| Error::ioctl("KVM_CREATE_DEVICE", errno(e)))?;
        Ok(Device { fd })
    }

    /// Whether KVM could create a device of `kind` (`KVM_CREATE_DEVICE_TEST`).
    pub fn can_create_device(&self, kind: u32) -> bool {
        let mut dev = kvm_bindings::kvm_create_device {
            type_: kind,
            fd: 0,
            flags: kvm_bindings::KVM_CREATE_DEVICE_TEST,
        };
        match self.fd.create_device(&mut dev) {
            Ok(fd) => {
                // A test creates nothing and leaves `fd` at 0, but
                // kvm-ioctls still wraps it: dropping that handle would
                // close lkvm's stdin.
                std::mem::forget(fd);
                true
            }
            Err(_) => false,
        }
    }

    /// The vCPU target KVM prefers on this host (`KVM_ARM_PREFERRED_TARGET`).
    #[cfg(arm64)]
    pub fn preferred_target(&self) -> Result<kvm_bindings::kvm_vcpu_init> {
        let mut kvi = kvm_bindings::kvm_vcpu_init::default();
        self.fd
            .get_preferred_target(&mut kvi)
            .map_err(|e| Error::ioctl("KVM_ARM_PREFERRED_TARGET", errno(e)))?;
        Ok(kvi)
    }

    /// The out-of-tree `KVM_ARM_ASYNC_PF_COMMAND` on the VM fd.
    #[cfg(arm64)]
    pub fn async_pf_command(
        &self,
        cmd: &mut crate::aarch64::asyncpf::AsyncPfCmd,
    ) -> io::Result<()> {
        async_pf_ioctl(&self.fd, cmd)
    }

    /// The in-kernel PIC and IOAPIC (`KVM_CREATE_IRQCHIP`).
    #[cfg(x86)]
    pub fn create_irqchip(&self) -> Result<()> {
        self.fd
            .create_irq_chip()
            .map_err(|e| Error::ioctl("KVM_CREATE_IRQCHIP", errno(e)))
    }

    /// The in-kernel PIT (`KVM_CREATE_PIT2`) with `flags`.
    #[cfg(x86)]
    pub fn create_pit2(&self, flags: u32) -> Result<()> {
        let pit = kvm_bindings::kvm_pit_config {
            flags,
            ..Default::default()
        };
        self.fd
            .create_pit2(pit)
            .map_err(|e| Error::ioctl("KVM_CREATE_PIT2", errno(e)))
    }

    /// Where KVM puts the TSS real-mode emulation needs (`KVM_SET_TSS_ADDR`).
    #[cfg(x86)]
    pub fn set_tss_address(&self, addr: u64) -> Result<()> {
        let addr = usize::try_from(addr).map_err(|_| {
            Error::ioctl(
                "KVM_SET_TSS_ADDR",
                io::Error::from_raw_os_error(libc::EINVAL),
            )
        })?;
        self.fd
            .set_tss_address(addr)
            .map_err(|e| Error::ioctl("KVM_SET_TSS_ADDR", errno(e)))
    }
}

/// A vCPU fd plus its `kvm_run` mapping.
#[derive(Debug)]
pub struct Vcpu {
    fd: VcpuFd,
    id: u32,
}

enum Decoded {
    Ready(VcpuExit<'static>),
    Io,
    Mmio,
    Internal,
    Raw(u32),
}

impl Vcpu {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Points the kick handler at this vCPU's `immediate_exit`. Call on the
    /// thread that will run the vCPU.
    pub fn bind_to_current_thread(&mut self) -> Result<()> {
        super::kick::bind(&mut self.fd.get_kvm_run().immediate_exit)
    }

    /// Re-arms `KVM_RUN` after a kick.
    pub fn clear_immediate_exit(&mut self) {
        self.fd.set_kvm_immediate_exit(0);
    }

    /// Runs the vCPU until the next exit that needs userspace.
    pub fn run(&mut self) -> Result<VcpuExit<'_>> {
        let decoded = match self.fd.run() {
            Ok(RawExit::IoIn(..) | RawExit::IoOut(..)) => Decoded::Io,
            Ok(RawExit::MmioRead(..) | RawExit::MmioWrite(..)) => Decoded::Mmio,
            Ok(RawExit::InternalError) => Decoded::Internal,
            Ok(RawExit::Hlt) => Decoded::Ready(VcpuExit::Hlt),
            Ok(RawExit::Shutdown) => Decoded::Ready(VcpuExit::Shutdown),
            Ok(RawExit::Intr) => Decoded::Ready(VcpuExit::Interrupted),
            Ok(RawExit::SystemEvent(kind, _)) => {
                Decoded::Ready(VcpuExit::SystemEvent(SystemEvent::from_raw(kind)))
            }
            Ok(RawExit::FailEntry(reason, cpu)) => {
                Decoded::Ready(VcpuExit::FailEntry { reason, cpu })
            }
            Ok(RawExit::Unsupported(n)) => Decoded::Raw(n),
            Ok(_) => Decoded::Raw(self.fd.get_kvm_run().exit_reason),
            Err(e) if matches!(e.errno(), libc::EINTR | libc::EAGAIN) => {
                Decoded::Ready(VcpuExit::Interrupted)
            }
            Err(e) => return Err(Error::ioctl("KVM_RUN", errno(e))),
        };
        let run = self.fd.get_kvm_run();
        Ok(match decoded {
            Decoded::Ready(exit) => exit,
            #[cfg(riscv)]
            Decoded::Raw(KVM_EXIT_RISCV_SBI) => {
                // SAFETY: exit_reason is KVM_EXIT_RISCV_SBI, so the kernel
                // filled the `riscv_sbi` member of the union.
                let sbi = unsafe { &mut run.__bindgen_anon_1.riscv_sbi };
                VcpuExit::Arch(crate::riscv::exit::Exit::Sbi {
                    ext: sbi.extension_id,
                    func: sbi.function_id,
                    args: sbi.args,
                    ret: &mut sbi.ret,
                })
            }
            #[cfg(riscv)]
            Decoded::Raw(KVM_EXIT_RISCV_CSR) => {
                // SAFETY: exit_reason is KVM_EXIT_RISCV_CSR, so the kernel
                // filled the `riscv_csr` member of the union.
                let csr = unsafe { &mut run.__bindgen_anon_1.riscv_csr };
                VcpuExit::Arch(crate::riscv::exit::Exit::Csr {
                    csr: csr.csr_num,
                    new_value: csr.new_value,
                    write_mask: csr.write_mask,
                    ret: &mut csr.ret_value,
                })
            }
            Decoded::Raw(n) => VcpuExit::Other(n),
            Decoded::Internal => {
                debug_assert_eq!(run.exit_reason, KVM_EXIT_INTERNAL_ERROR);
                // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so the kernel
                // filled the `internal` member of the union.
                let suberror = unsafe { run.__bindgen_anon_1.internal.suberror };
                VcpuExit::InternalError { suberror }
            }
            Decoded::Mmio => {
                // SAFETY: kvm-ioctls decoded KVM_EXIT_MMIO, so `mmio` is the
                // live member of the union.
                let mmio = unsafe { &mut run.__bindgen_anon_1.mmio };
                let len = usize::try_from(mmio.len).unwrap_or(0).min(mmio.data.len());
                let addr = mmio.phys_addr;
                let data = &mut mmio.data[..len];
                if mmio.is_write != 0 {
                    VcpuExit::MmioWrite { addr, data }
                } else {
                    VcpuExit::MmioRead { addr, data }
                }
            }
            Decoded::Io => {
                // SAFETY: kvm-ioctls decoded KVM_EXIT_IO, so `io` is the live
                // member of the union.
                let io = unsafe { run.__bindgen_anon_1.io };
                let size = usize::from(io.size);
                let total = size * io.count as usize;
                let base: *mut u8 = (run as *mut kvm_bindings::kvm_run).cast();
                // SAFETY: the kernel places `count * size` bytes of port data
                // at `data_offset` inside the kvm_run mapping, which this
                // vCPU keeps mapped for as long as the returned borrow lives.
                let data = unsafe {
                    std::slice::from_raw_parts_mut(base.add(io.data_offset as usize), total)
                };
                if io.direction == KVM_EXIT_IO_OUT {
                    VcpuExit::IoOut {
                        port: io.port,
                        size,
                        data,
                    }
                } else {
                    VcpuExit::IoIn {
                        port: io.port,
                        size,
                        data,
                    }
                }
            }
        })
    }

    /// A 64-bit register (`KVM_GET_ONE_REG`).
    pub fn get_one_reg(&self, id: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        self.get_one_reg_bytes(id, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Sets a 64-bit register (`KVM_SET_ONE_REG`).
    pub fn set_one_reg(&self, id: u64, value: u64) -> Result<()> {
        self.set_one_reg_bytes(id, &value.to_le_bytes())
    }

    /// A register of any size, its bytes in `buf`.
    pub fn get_one_reg_bytes(&self, id: u64, buf: &mut [u8]) -> Result<()> {
        self.fd
            .get_one_reg(id, buf)
            .map(|_| ())
            .map_err(|e| Error::ioctl("KVM_GET_ONE_REG", errno(e)))
    }

    /// Sets a register of any size from `buf`.
    pub fn set_one_reg_bytes(&self, id: u64, buf: &[u8]) -> Result<()> {
        self.fd
            .set_one_reg(id, buf)
            .map(|_| ())
            .map_err(|e| Error::ioctl("KVM_SET_ONE_REG", errno(e)))
    }

    /// `KVM_SET_DEVICE_ATTR` on the vCPU (PMU, stolen time): as
    /// [`Device::set_attr`].
    #[cfg(arm64)]
    pub fn set_device_attr(
        &self,
        op: &'static str,
        group: u32,
        attr: u64,
        addr: u64,
    ) -> Result<()> {
        let a = kvm_bindings::kvm_device_attr {
            flags: 0,
            group,
            attr,
            addr,
        };
        self.fd
            .set_device_attr(&a)
            .map_err(|e| Error::ioctl(op, errno(e)))
    }

    /// A second handle on this vCPU for the thread that raises and lowers
    /// its external interrupt (RISC-V's userspace PLIC).
    #[cfg(riscv)]
    pub fn interrupt_line(&self) -> Result<InterruptLine> {
        use std::os::fd::{AsRawFd, BorrowedFd};
        // SAFETY: the vCPU fd stays open for the borrow, which only lives
        // long enough to duplicate it.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd.as_raw_fd()) };
        let fd = fd
            .try_clone_to_owned()
            .map_err(|e| Error::ioctl("dup(vCPU fd)", e))?;
        Ok(InterruptLine { fd })
    }

    /// The vCPU's multiprocessing state (`KVM_GET_MP_STATE`).
    #[cfg(any(x86, riscv))]
    pub fn mp_state(&self) -> Result<u32> {
        self.fd
            .get_mp_state()
            .map(|s| s.mp_state)
            .map_err(|e| Error::ioctl("KVM_GET_MP_STATE", errno(e)))
    }

    /// Initialises the vCPU with `features` (`KVM_ARM_VCPU_INIT`).
    #[cfg(arm64)]
    pub fn vcpu_init(&self, kvi: &kvm_bindings::kvm_vcpu_init) -> Result<()> {
        self.fd
            .vcpu_init(kvi)
            .map_err(|e| Error::ioctl("KVM_ARM_VCPU_INIT", errno(e)))
    }

    /// Freezes a configured feature (`KVM_ARM_VCPU_FINALIZE`).
    #[cfg(arm64)]
    pub fn vcpu_finalize(&self, feature: i32) -> Result<()> {
        self.fd
            .vcpu_finalize(&feature)
            .map_err(|e| Error::ioctl("KVM_ARM_VCPU_FINALIZE", errno(e)))
    }

    /// The out-of-tree `KVM_ARM_ASYNC_PF_COMMAND` on this vCPU.
    #[cfg(arm64)]
    pub fn async_pf_command(
        &self,
        cmd: &mut crate::aarch64::asyncpf::AsyncPfCmd,
    ) -> io::Result<()> {
        async_pf_ioctl(&self.fd, cmd)
    }
}

/// x86's register files.
#[cfg(x86)]
impl Vcpu {
    pub fn regs(&self) -> Result<kvm_bindings::kvm_regs> {
        self.fd
            .get_regs()
            .map_err(|e| Error::ioctl("KVM_GET_REGS", errno(e)))
    }

    pub fn set_regs(&self, r: &kvm_bindings::kvm_regs) -> Result<()> {
        self.fd
            .set_regs(r)
            .map_err(|e| Error::ioctl("KVM_SET_REGS", errno(e)))
    }

    pub fn sregs(&self) -> Result<kvm_bindings::kvm_sregs> {
        self.fd
            .get_sregs()
            .map_err(|e| Error::ioctl("KVM_GET_SREGS", errno(e)))
    }

    pub fn set_sregs(&self, s: &kvm_bindings::kvm_sregs) -> Result<()> {
        self.fd
            .set_sregs(s)
            .map_err(|e| Error::ioctl("KVM_SET_SREGS", errno(e)))
    }

    pub fn set_fpu(&self, f: &kvm_bindings::kvm_fpu) -> Result<()> {
        self.fd
            .set_fpu(f)
            .map_err(|e| Error::ioctl("KVM_SET_FPU", errno(e)))
    }

    /// Sets MSRs; returns how many KVM took.
    pub fn set_msrs(&self, msrs: &kvm_bindings::Msrs) -> Result<usize> {
        self.fd
            .set_msrs(msrs)
            .map_err(|e| Error::ioctl("KVM_SET_MSRS", errno(e)))
    }

    pub fn lapic(&self) -> Result<kvm_bindings::kvm_lapic_state> {
        self.fd
            .get_lapic()
            .map_err(|e| Error::ioctl("KVM_GET_LAPIC", errno(e)))
    }

    pub fn set_lapic(&self, l: &kvm_bindings::kvm_lapic_state) -> Result<()> {
        self.fd
            .set_lapic(l)
            .map_err(|e| Error::ioctl("KVM_SET_LAPIC", errno(e)))
    }

    pub fn set_cpuid(&self, c: &kvm_bindings::CpuId) -> Result<()> {
        self.fd
            .set_cpuid2(c)
            .map_err(|e| Error::ioctl("KVM_SET_CPUID2", errno(e)))
    }

    /// Injects an NMI (`KVM_NMI`).
    pub fn nmi(&self) -> Result<()> {
        self.fd.nmi().map_err(|e| Error::ioctl("KVM_NMI", errno(e)))
    }
}

impl Drop for Vcpu {
    fn drop(&mut self) {
        super::kick::unbind(&mut self.fd.get_kvm_run().immediate_exit);
    }
}

/// `KVM_ARM_ASYNC_PF_COMMAND` (Gavin Shan's series, not in Linux) on a VM
/// or vCPU fd.
#[cfg(arm64)]
fn async_pf_ioctl<F: std::os::fd::AsRawFd>(
    fd: &F,
    cmd: &mut crate::aarch64::asyncpf::AsyncPfCmd,
) -> io::Result<()> {
    use crate::aarch64::asyncpf::KVM_ARM_ASYNC_PF_COMMAND;
    // SAFETY: KVM_ARM_ASYNC_PF_COMMAND reads and writes exactly one 16-byte
    // `struct kvm_arm_async_pf_cmd`, which `cmd` is (size asserted at compile
    // time) and which lives across the call. It is only issued once the VM
    // reported KVM_CAP_ASYNC_PF_INT; elsewhere the kernel answers ENOTTY.
    let rc =
        unsafe { vmm_sys_util::ioctl::ioctl_with_mut_ref(fd, KVM_ARM_ASYNC_PF_COMMAND as _, cmd) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A vCPU's external interrupt input (`KVM_INTERRUPT`), which on RISC-V
/// any thread may drive, not only the vCPU's own.
#[cfg(riscv)]
pub struct InterruptLine {
    fd: std::os::fd::OwnedFd,
}

#[cfg(riscv)]
impl InterruptLine {
    /// `KVM_INTERRUPT` with `irq` (RISC-V: raise or lower VS external).
    pub fn set(&self, irq: u32) -> Result<()> {
        /// `_IOW(KVMIO, 0x86, struct kvm_interrupt)`.
        const KVM_INTERRUPT: u64 = 0x4004_ae86;
        // SAFETY: KVM_INTERRUPT reads one `struct kvm_interrupt { __u32 irq; }`
        // from `&irq`, which lives across the call; `fd` is a vCPU fd.
        let rc = unsafe { vmm_sys_util::ioctl::ioctl_with_ref(&self.fd, KVM_INTERRUPT as _, &irq) };
        if rc < 0 {
            return Err(Error::ioctl(
                "KVM_INTERRUPT",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
}
