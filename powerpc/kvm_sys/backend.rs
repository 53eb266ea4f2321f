//! The hypervisor seam on powerpc64: `Kvm`, `Vm` and `Vcpu` over raw ioctls
//! with the PowerPC numbers of `super`, offering what the kvm-ioctls backend
//! offers plus the book3s/sPAPR operations lkvm needs.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::ptr::NonNull;

use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::ioctl::{ioctl, ioctl_with_mut_ref, ioctl_with_ref, ioctl_with_val};

use super::*;
use crate::kvm::{
    DevicePath, Error, IoAddr, MemoryRegion, MsiMessage, Result, SystemEvent, VcpuExit,
};

fn last(op: &'static str) -> Error {
    Error::ioctl(op, io::Error::last_os_error())
}

fn check(rc: i32, op: &'static str) -> Result<i32> {
    if rc < 0 {
        Err(last(op))
    } else {
        Ok(rc)
    }
}

#[derive(Debug)]
pub struct Kvm {
    fd: File,
    run_size: usize,
}

impl Kvm {
    pub fn open(path: &Path) -> Result<Kvm> {
        let dev = DevicePath::new(path);
        let cpath = dev.c_string()?;
        // SAFETY: a NUL-terminated path; the returned fd is checked.
        let raw = unsafe { libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if raw < 0 {
            return Err(dev.open_error(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a freshly opened fd nobody else owns.
        let fd = unsafe { File::from_raw_fd(raw) };
        // SAFETY: KVM_GET_API_VERSION takes no argument.
        dev.check_version(unsafe { ioctl(&fd, KVM_GET_API_VERSION as _) })?;
        // SAFETY: KVM_GET_VCPU_MMAP_SIZE takes no argument.
        let size = unsafe { ioctl(&fd, KVM_GET_VCPU_MMAP_SIZE as _) };
        let run_size = usize::try_from(check(size, "KVM_GET_VCPU_MMAP_SIZE")?)
            .map_err(|_| last("KVM_GET_VCPU_MMAP_SIZE"))?;
        Ok(Kvm { fd, run_size })
    }

    pub fn check_extension(&self, cap: u32) -> i32 {
        // SAFETY: KVM_CHECK_EXTENSION takes the capability number by value.
        unsafe { ioctl_with_val(&self.fd, KVM_CHECK_EXTENSION as _, cap.into()) }.max(0)
    }

    pub fn max_vcpus(&self) -> usize {
        const KVM_CAP_NR_VCPUS: u32 = 9;
        const KVM_CAP_MAX_VCPUS: u32 = 66;
        match self.check_extension(KVM_CAP_MAX_VCPUS) {
            0 => self.check_extension(KVM_CAP_NR_VCPUS).max(4) as usize,
            n => n as usize,
        }
    }

    pub fn create_vm(&self, vm_type: u64) -> Result<Vm> {
        // SAFETY: KVM_CREATE_VM takes the machine type by value.
        let raw = unsafe { ioctl_with_val(&self.fd, KVM_CREATE_VM as _, vm_type as _) };
        check(raw, "KVM_CREATE_VM")?;
        // SAFETY: the ioctl returned a new fd we now own.
        let fd = unsafe { File::from_raw_fd(raw) };
        Ok(Vm {
            fd,
            run_size: self.run_size,
        })
    }
}

#[derive(Debug)]
pub struct Vm {
    fd: File,
    run_size: usize,
}

impl Vm {
    pub fn check_extension(&self, cap: u32) -> i32 {
        // SAFETY: KVM_CHECK_EXTENSION takes the capability number by value.
        unsafe { ioctl_with_val(&self.fd, KVM_CHECK_EXTENSION as _, cap.into()) }.max(0)
    }

    /// # Safety
    /// `region.userspace_addr .. + memory_size` must stay mapped for the
    /// life of the VM.
    pub unsafe fn set_user_memory_region(&self, region: MemoryRegion) -> Result<()> {
        let raw = KvmUserspaceMemoryRegion {
            slot: region.slot,
            flags: region.flags,
            guest_phys_addr: region.guest_phys_addr,
            memory_size: region.memory_size,
            userspace_addr: region.userspace_addr,
        };
        // SAFETY: the struct is the ioctl's exact argument; the caller
        // guarantees the host range it names.
        let rc = unsafe { ioctl_with_ref(&self.fd, KVM_SET_USER_MEMORY_REGION as _, &raw) };
        check(rc, "KVM_SET_USER_MEMORY_REGION").map(|_| ())
    }

    pub fn set_irq_line(&self, line: u32, level: bool) -> Result<()> {
        let arg = KvmIrqLevel {
            irq: line,
            level: u32::from(level),
        };
        // SAFETY: the struct is the ioctl's exact argument.
        let rc = unsafe { ioctl_with_ref(&self.fd, KVM_IRQ_LINE as _, &arg) };
        check(rc, "KVM_IRQ_LINE").map(|_| ())
    }

    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<()> {
        let arg = KvmIrqfd {
            fd: evt.as_raw_fd() as u32,
            gsi,
            ..Default::default()
        };
        // SAFETY: the struct is the ioctl's exact argument.
        let rc = unsafe { ioctl_with_ref(&self.fd, KVM_IRQFD as _, &arg) };
        check(rc, "KVM_IRQFD").map(|_| ())
    }

    pub fn register_ioevent(
        &self,
        evt: &EventFd,
        addr: IoAddr,
        datamatch: Option<u32>,
    ) -> Result<()> {
        self.ioeventfd(evt, addr, datamatch, 0, "KVM_IOEVENTFD")
    }

    pub fn unregister_ioevent(
        &self,
        evt: &EventFd,
        addr: IoAddr,
        datamatch: Option<u32>,
    ) -> Result<()> {
        self.ioeventfd(
            evt,
            addr,
            datamatch,
            KVM_IOEVENTFD_FLAG_DEASSIGN,
            "KVM_IOEVENTFD(deassign)",
        )
    }

    fn ioeventfd(
        &self,
        evt: &EventFd,
        addr: IoAddr,
        datamatch: Option<u32>,
        flags: u32,
        op: &'static str,
    ) -> Result<()> {
        let (addr, mut flags) = match addr {
            IoAddr::Pio(p) => (p, flags | KVM_IOEVENTFD_FLAG_PIO),
            IoAddr::Mmio(m) => (m, flags),
        };
        let (len, datamatch) = match datamatch {
            Some(v) => {
                flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
                (4, u64::from(v))
            }
            None => (0, 0),
        };
        let arg = KvmIoeventfd {
            datamatch,
            addr,
            len,
            fd: evt.as_raw_fd(),
            flags,
            pad: [0; 36],
        };
        // SAFETY: the struct is the ioctl's exact argument.
        let rc = unsafe { ioctl_with_ref(&self.fd, KVM_IOEVENTFD as _, &arg) };
        check(rc, op).map(|_| ())
    }

    /// sPAPR guests get no MSIs from lkvm, so no MSI routes either.
    pub fn set_gsi_routing(&self, _routes: &[(u32, crate::kvm::GsiRoute)]) -> Result<()> {
        Err(Error::ioctl(
            "KVM_SET_GSI_ROUTING",
            std::io::Error::from_raw_os_error(libc::ENOTTY),
        ))
    }

    pub fn unregister_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<()> {
        const KVM_IRQFD_FLAG_DEASSIGN: u32 = 1;
        let arg = KvmIrqfd {
            fd: evt.as_raw_fd() as u32,
            gsi,
            flags: KVM_IRQFD_FLAG_DEASSIGN,
            ..Default::default()
        };
        // SAFETY: the struct is the ioctl's exact argument.
        let rc = unsafe { ioctl_with_ref(&self.fd, KVM_IRQFD as _, &arg) };
        check(rc, "KVM_IRQFD(deassign)").map(|_| ())
    }

    pub fn signal_msi(&self, msg: MsiMessage) -> Result<()> {
        let arg = KvmMsi {
            address_lo: msg.addr as u32,
            address_hi: (msg.addr >> 32) as u32,
            data: msg.data,
            flags: if msg.devid.is_some() {
                KVM_MSI_VALID_DEVID
            } else {
                0
            },
            devid: msg.devid.unwrap_or(0),
            pad: [0; 12],
        };
        // SAFETY: the struct is the ioctl's exact argument.
        let rc = unsafe { ioctl_with_ref(&self.fd, KVM_SIGNAL_MSI as _, &arg) };
        check(rc, "KVM_SIGNAL_MSI").map(|_| ())
    }

    pub fn create_vcpu(&self, id: u32) -> Result<Vcpu> {
        // SAFETY: KVM_CREATE_VCPU takes the id by value.
        let raw = unsafe { ioctl_with_val(&self.fd, KVM_CREATE_VCPU as _, id.into()) };
        check(raw, "KVM_CREATE_VCPU")?;
        // SAFETY: the ioctl returned a new fd we now own.
        let fd = unsafe { File::from_raw_fd(raw) };
        let len =
            std::num::NonZeroUsize::new(self.run_size).ok_or_else(|| last("mmap(kvm_run)"))?;
        // SAFETY: mapping the vCPU fd's kvm_run area of the size KVM
        // reported; the mapping is owned by the Vcpu and unmapped on drop.
        let run = unsafe {
            nix::sys::mman::mmap(
                None,
                len,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_SHARED,
                &fd,
                0,
            )
        }
        .map_err(|e| Error::ioctl("mmap(kvm_run)", io::Error::from(e)))?;
        Ok(Vcpu {
            fd,
            id,
            run: run.cast(),
            run_size: self.run_size,
        })
    }

    /// `KVM_PPC_GET_SMMU_INFO`.
    pub fn smmu_info(&self) -> Result<KvmPpcSmmuInfo> {
        let mut info = KvmPpcSmmuInfo::default();
        // SAFETY: KVM fills exactly one struct kvm_ppc_smmu_info.
        let rc = unsafe { ioctl_with_mut_ref(&self.fd, KVM_PPC_GET_SMMU_INFO as _, &mut info) };
        check(rc, "KVM_PPC_GET_SMMU_INFO").map(|_| info)
    }

    /// `KVM_PPC_GET_RMMU_INFO`.
    pub fn rmmu_info(&self) -> Result<KvmPpcRmmuInfo> {
        let mut info = KvmPpcRmmuInfo::default();
        // SAFETY: KVM fills exactly one struct kvm_ppc_rmmu_info.
        let rc = unsafe { ioctl_with_mut_ref(&self.fd, KVM_PPC_GET_RMMU_INFO as _, &mut info) };
        check(rc, "KVM_PPC_GET_RMMU_INFO").map(|_| info)
    }

    /// `KVM_PPC_ALLOCATE_HTAB`: returns the order KVM allocated.
    pub fn allocate_htab(&self, order: u32) -> Result<u32> {
        let mut o = order;
        // SAFETY: the argument is one u32, read and written by KVM.
        let rc = unsafe { ioctl_with_mut_ref(&self.fd, KVM_PPC_ALLOCATE_HTAB as _, &mut o) };
        check(rc, "KVM_PPC_ALLOCATE_HTAB").map(|_| o)
    }

    /// `KVM_PPC_CONFIGURE_V3_MMU`.
    pub fn configure_v3_mmu(&self, flags: u64, process_table: u64) -> Result<()> {
        let cfg = KvmPpcMmuv3Cfg {
            flags,
            process_table,
        };
        // SAFETY: the struct is the ioctl's exact argument.
        let rc = unsafe { ioctl_with_ref(&self.fd, KVM_PPC_CONFIGURE_V3_MMU as _, &cfg) };
        check(rc, "KVM_PPC_CONFIGURE_V3_MMU").map(|_| ())
    }

    /// `KVM_PPC_RTAS_DEFINE_TOKEN`: KVM answers this RTAS call itself.
    pub fn rtas_define_token(&self, name: &str, token: u32) -> Result<()> {
        let arg = KvmRtasTokenArgs::new(name, token);
        // SAFETY: the struct is the ioctl's exact argument.
        let rc = unsafe { ioctl_with_ref(&self.fd, KVM_PPC_RTAS_DEFINE_TOKEN as _, &arg) };
        check(rc, "KVM_PPC_RTAS_DEFINE_TOKEN").map(|_| ())
    }

    /// `KVM_CREATE_DEVICE`.
    pub fn create_device(&self, kind: u32) -> Result<Device> {
        let mut dev = KvmCreateDevice {
            kind,
            fd: 0,
            flags: 0,
        };
        // SAFETY: KVM reads the type and writes the new fd into the struct.
        let rc = unsafe { ioctl_with_mut_ref(&self.fd, KVM_CREATE_DEVICE as _, &mut dev) };
        check(rc, "KVM_CREATE_DEVICE")?;
        // SAFETY: on success `dev.fd` is a new fd we now own.
        let fd = unsafe { OwnedFd::from_raw_fd(dev.fd as RawFd) };
        Ok(Device { fd })
    }
}

/// A device KVM emulates (the XICS), configured through its attributes:
/// the same shape as the kvm-ioctls backend's.
#[derive(Debug)]
pub struct Device {
    fd: OwnedFd,
}

impl Device {
    /// `KVM_SET_DEVICE_ATTR`: `addr` is where in lkvm's memory the value
    /// is. `op` names the attribute in errors.
    pub fn set_attr(&self, op: &'static str, group: u32, attr: u64, addr: u64) -> Result<()> {
        let arg = KvmDeviceAttr {
            flags: 0,
            group,
            attr,
            addr,
        };
        // SAFETY: the attribute struct lives across the call; the value it
        // points at is the caller's, alive across the call too.
        let rc = unsafe { ioctl_with_ref(&self.fd, KVM_SET_DEVICE_ATTR as _, &arg) };
        check(rc, op).map(|_| ())
    }

    /// Sets an attribute whose value is a `u64` in lkvm's memory.
    pub fn set_attr_u64(&self, op: &'static str, group: u32, attr: u64, value: u64) -> Result<()> {
        self.set_attr(op, group, attr, std::ptr::addr_of!(value) as u64)
    }

    /// The device's fd number, for the ioctls that name a device by it
    /// (`KVM_CAP_IRQ_XICS`).
    pub fn raw_fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.fd.as_raw_fd()
    }
}

/// A vCPU fd and its mapped `kvm_run`.
#[derive(Debug)]
pub struct Vcpu {
    fd: File,
    id: u32,
    run: NonNull<u8>,
    run_size: usize,
}

// SAFETY: the kvm_run mapping belongs to this Vcpu and is only accessed
// through it (and by the kick handler on the thread it is bound to).
unsafe impl Send for Vcpu {}

impl Vcpu {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// A second handle on this vCPU for the threads that raise and lower
    /// its external interrupt (the userspace XICS).
    pub fn interrupt_line(&self) -> Result<InterruptLine> {
        use std::os::fd::AsFd;
        let fd = self
            .fd
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| crate::kvm::Error::ioctl("dup(vCPU fd)", e))?;
        Ok(InterruptLine { fd })
    }

    fn immediate_exit(&self) -> *mut u8 {
        // SAFETY: immediate_exit is byte 1 of the mapped kvm_run.
        unsafe { self.run.as_ptr().add(1) }
    }

    pub fn bind_to_current_thread(&mut self) -> Result<()> {
        crate::kvm::kick::bind(self.immediate_exit())
    }

    pub fn clear_immediate_exit(&mut self) {
        // SAFETY: byte 1 of our own kvm_run mapping.
        unsafe { std::ptr::write_volatile(self.immediate_exit(), 0) };
    }

    fn head(&self) -> KvmRunHead {
        // SAFETY: kvm_run starts with this head and is at least that big.
        unsafe { std::ptr::read_volatile(self.run.as_ptr().cast::<KvmRunHead>()) }
    }

    fn exit_member<T>(&mut self) -> &mut T {
        // SAFETY: the exit union starts at KVM_RUN_EXIT_OFFSET, is 256
        // bytes (every T used here is smaller, as asserted in `super`),
        // suitably aligned (offset 32 of a page-aligned mapping), and the
        // returned borrow ties it to this vCPU.
        unsafe { &mut *self.run.as_ptr().add(KVM_RUN_EXIT_OFFSET).cast::<T>() }
    }

    pub fn run(&mut self) -> Result<VcpuExit<'_>> {
        // SAFETY: KVM_RUN takes no argument.
        let rc = unsafe { ioctl(&self.fd, KVM_RUN as _) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EINTR | libc::EAGAIN) => Ok(VcpuExit::Interrupted),
                _ => Err(Error::ioctl("KVM_RUN", e)),
            };
        }
        let reason = self.head().exit_reason;
        Ok(match reason {
            KVM_EXIT_MMIO => {
                let m = self.exit_member::<KvmRunMmio>();
                let len = (m.len as usize).min(8);
                let addr = m.phys_addr;
                if m.is_write != 0 {
                    VcpuExit::MmioWrite {
                        addr,
                        data: &m.data[..len],
                    }
                } else {
                    VcpuExit::MmioRead {
                        addr,
                        data: &mut m.data[..len],
                    }
                }
            }
            KVM_EXIT_PAPR_HCALL => {
                let h = self.exit_member::<KvmRunPaprHcall>();
                VcpuExit::Arch(crate::powerpc::hcall::Hcall {
                    nr: h.nr,
                    args: &mut h.args,
                    ret: &mut h.ret,
                })
            }
            KVM_EXIT_INTR => VcpuExit::Interrupted,
            KVM_EXIT_SHUTDOWN => VcpuExit::Shutdown,
            KVM_EXIT_FAIL_ENTRY => {
                let f = *self.exit_member::<KvmRunFailEntry>();
                VcpuExit::FailEntry {
                    reason: f.hardware_entry_failure_reason,
                    cpu: f.cpu,
                }
            }
            KVM_EXIT_INTERNAL_ERROR => VcpuExit::InternalError {
                suberror: *self.exit_member::<u32>(),
            },
            KVM_EXIT_SYSTEM_EVENT => {
                VcpuExit::SystemEvent(SystemEvent::from_raw(*self.exit_member::<u32>()))
            }
            other => VcpuExit::Other(other),
        })
    }

    pub fn get_regs(&self) -> Result<KvmRegs> {
        let mut r = KvmRegs::default();
        // SAFETY: KVM fills exactly one struct kvm_regs.
        let rc = unsafe { ioctl_with_mut_ref(&self.fd, KVM_GET_REGS as _, &mut r) };
        check(rc, "KVM_GET_REGS").map(|_| r)
    }

    pub fn set_regs(&self, r: &KvmRegs) -> Result<()> {
        // SAFETY: the struct is the ioctl's exact argument.
        let rc = unsafe { ioctl_with_ref(&self.fd, KVM_SET_REGS as _, r) };
        check(rc, "KVM_SET_REGS").map(|_| ())
    }

    pub fn get_sregs(&self) -> Result<KvmSregs> {
        let mut s = KvmSregs::default();
        // SAFETY: KVM fills exactly one struct kvm_sregs.
        let rc = unsafe { ioctl_with_mut_ref(&self.fd, KVM_GET_SREGS as _, &mut s) };
        check(rc, "KVM_GET_SREGS").map(|_| s)
    }

    pub fn set_sregs(&self, s: &KvmSregs) -> Result<()> {
        // SAFETY: the struct is the ioctl's exact argument.
        let rc = unsafe { ioctl_with_ref(&self.fd, KVM_SET_SREGS as _, s) };
        check(rc, "KVM_SET_SREGS").map(|_| ())
    }

    pub fn get_one_reg(&self, id: u64) -> Result<u64> {
        let mut value = 0u64;
        let reg = KvmOneReg {
            id,
            addr: &mut value as *mut u64 as u64,
        };
        // SAFETY: KVM writes one 64-bit register to `value`, alive across
        // the call (every id lkvm uses is 64 bits wide).
        let rc = unsafe { ioctl_with_ref(&self.fd, KVM_GET_ONE_REG as _, &reg) };
        check(rc, "KVM_GET_ONE_REG").map(|_| value)
    }

    pub fn set_one_reg(&self, id: u64, value: u64) -> Result<()> {
        let reg = KvmOneReg {
            id,
            addr: &value as *const u64 as u64,
        };
        // SAFETY: KVM reads one 64-bit register from `value`.
        let rc = unsafe { ioctl_with_ref(&self.fd, KVM_SET_ONE_REG as _, &reg) };
        check(rc, "KVM_SET_ONE_REG").map(|_| ())
    }

    pub fn enable_cap(&self, cap: u32, args: [u64; 4]) -> Result<()> {
        let arg = KvmEnableCap::new(cap, args);
        // SAFETY: the struct is the ioctl's exact argument.
        let rc = unsafe { ioctl_with_ref(&self.fd, KVM_ENABLE_CAP as _, &arg) };
        check(rc, "KVM_ENABLE_CAP").map(|_| ())
    }
}

/// A vCPU's external interrupt input (`KVM_INTERRUPT`), which on PowerPC
/// any thread may drive, not only the vCPU's own.
pub struct InterruptLine {
    fd: OwnedFd,
}

impl InterruptLine {
    /// `KVM_INTERRUPT` with `irq` (`KVM_INTERRUPT_SET_LEVEL` / `_UNSET`).
    pub fn set(&self, irq: u32) -> Result<()> {
        let arg = KvmInterrupt { irq };
        // SAFETY: the struct is the ioctl's exact argument; `fd` is a vCPU fd.
        let rc = unsafe { ioctl_with_ref(&self.fd, KVM_INTERRUPT as _, &arg) };
        check(rc, "KVM_INTERRUPT").map(|_| ())
    }
}

impl Drop for Vcpu {
    fn drop(&mut self) {
        crate::kvm::kick::unbind(self.immediate_exit());
        // SAFETY: we own this mapping of exactly run_size bytes.
        if let Err(e) = unsafe { nix::sys::mman::munmap(self.run.cast(), self.run_size) } {
            log::debug!("munmap(kvm_run): {e}");
        }
    }
}
