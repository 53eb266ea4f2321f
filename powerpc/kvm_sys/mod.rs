//! lkvm's own KVM bindings for 64-bit PowerPC (book3s, sPAPR guests):
//! kvm-ioctls and kvm-bindings have none. Numbers and layouts come from
//! `arch/powerpc/include/uapi/asm/kvm.h` and `include/uapi/linux/kvm.h`.
//!
//! PowerPC encodes ioctls differently from the asm-generic layout: the
//! direction takes 3 bits at 29..31 (none = 1, read = 2, write = 4) and the
//! size 13 bits at 16. Everything here compiles (and its layout asserts are
//! checked) on every host; the backend that issues the ioctls only on
//! powerpc64.

#[cfg(powerpc)]
pub mod backend;

const IOC_NONE: u64 = 1;
const IOC_READ: u64 = 2;
const IOC_WRITE: u64 = 4;
const KVMIO: u64 = 0xae;

/// PowerPC `_IOC(dir, KVMIO, nr, size)`.
pub const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    assert!(size < (1 << 13));
    (dir << 29) | ((size as u64) << 16) | (KVMIO << 8) | nr
}

const fn io(nr: u64) -> u64 {
    ioc(IOC_NONE, nr, 0)
}
const fn ior<T>(nr: u64) -> u64 {
    ioc(IOC_READ, nr, std::mem::size_of::<T>())
}
const fn iow<T>(nr: u64) -> u64 {
    ioc(IOC_WRITE, nr, std::mem::size_of::<T>())
}
const fn iowr<T>(nr: u64) -> u64 {
    ioc(IOC_READ | IOC_WRITE, nr, std::mem::size_of::<T>())
}

// System ioctls.
pub const KVM_GET_API_VERSION: u64 = io(0x00);
pub const KVM_CREATE_VM: u64 = io(0x01);
pub const KVM_CHECK_EXTENSION: u64 = io(0x03);
pub const KVM_GET_VCPU_MMAP_SIZE: u64 = io(0x04);
// VM ioctls.
pub const KVM_CREATE_VCPU: u64 = io(0x41);
pub const KVM_SET_USER_MEMORY_REGION: u64 = iow::<KvmUserspaceMemoryRegion>(0x46);
pub const KVM_IRQ_LINE: u64 = iow::<KvmIrqLevel>(0x61);
pub const KVM_IRQFD: u64 = iow::<KvmIrqfd>(0x76);
pub const KVM_IOEVENTFD: u64 = iow::<KvmIoeventfd>(0x79);
pub const KVM_SIGNAL_MSI: u64 = iow::<KvmMsi>(0xa5);
pub const KVM_PPC_GET_SMMU_INFO: u64 = ior::<KvmPpcSmmuInfo>(0xa6);
pub const KVM_PPC_ALLOCATE_HTAB: u64 = iowr::<u32>(0xa7);
pub const KVM_PPC_RTAS_DEFINE_TOKEN: u64 = iow::<KvmRtasTokenArgs>(0xac);
pub const KVM_PPC_CONFIGURE_V3_MMU: u64 = iow::<KvmPpcMmuv3Cfg>(0xaf);
pub const KVM_PPC_GET_RMMU_INFO: u64 = iow::<KvmPpcRmmuInfo>(0xb0);
pub const KVM_CREATE_DEVICE: u64 = iowr::<KvmCreateDevice>(0xe0);
pub const KVM_SET_DEVICE_ATTR: u64 = iow::<KvmDeviceAttr>(0xe1);
// vCPU ioctls.
pub const KVM_RUN: u64 = io(0x80);
pub const KVM_GET_REGS: u64 = ior::<KvmRegs>(0x81);
pub const KVM_SET_REGS: u64 = iow::<KvmRegs>(0x82);
pub const KVM_GET_SREGS: u64 = ior::<KvmSregs>(0x83);
pub const KVM_SET_SREGS: u64 = iow::<KvmSregs>(0x84);
pub const KVM_INTERRUPT: u64 = iow::<KvmInterrupt>(0x86);
pub const KVM_ENABLE_CAP: u64 = iow::<KvmEnableCap>(0xa3);
pub const KVM_GET_ONE_REG: u64 = iow::<KvmOneReg>(0xab);
pub const KVM_SET_ONE_REG: u64 = iow::<KvmOneReg>(0xac);

// Capabilities (include/uapi/linux/kvm.h).
pub const KVM_CAP_PPC_GET_PVINFO: u32 = 57;
pub const KVM_CAP_PPC_IRQ_LEVEL: u32 = 58;
pub const KVM_CAP_PPC_SMT: u32 = 64;
pub const KVM_CAP_PPC_PAPR: u32 = 68;
pub const KVM_CAP_PPC_GET_SMMU_INFO: u32 = 78;
pub const KVM_CAP_PPC_ALLOC_HTAB: u32 = 80;
pub const KVM_CAP_PPC_RTAS: u32 = 91;
pub const KVM_CAP_IRQ_XICS: u32 = 92;
pub const KVM_CAP_PPC_MMU_RADIX: u32 = 134;
pub const KVM_CAP_PPC_MMU_HASH_V3: u32 = 135;
pub const KVM_CAP_PPC_UNSET_IRQ: u32 = 53;

/// `KVM_CREATE_DEVICE` type of the in-kernel XICS.
pub const KVM_DEV_TYPE_XICS: u32 = 3;
/// The XICS device's source attributes: one u64 per interrupt number.
pub const KVM_XICS_LEVEL_SENSITIVE: u64 = 1 << 40;
pub const KVM_DEV_XICS_GRP_SOURCES: u32 = 1;
pub const KVM_XICS_PRIORITY_SHIFT: u64 = 32;
pub const KVM_XICS_MASKED: u64 = 1 << 41;
/// `KVM_IRQ_LINE` levels and `KVM_INTERRUPT` values on PowerPC.
pub const KVM_INTERRUPT_SET: u32 = -1i32 as u32;
pub const KVM_INTERRUPT_UNSET: u32 = -2i32 as u32;
pub const KVM_INTERRUPT_SET_LEVEL: u32 = -3i32 as u32;

pub const KVM_PPC_PAGE_SIZES_REAL: u64 = 1;
pub const KVM_PPC_1T_SEGMENTS: u64 = 2;
pub const KVM_PPC_MMUV3_RADIX: u64 = 1;
pub const KVM_PPC_MMUV3_GTSE: u64 = 2;

// ONE_REG ids.
pub const KVM_REG_PPC_HIOR: u64 = 0x1030_0000_0000_0001;
pub const KVM_REG_PPC_LPCR_64: u64 = 0x1030_0000_0000_00b5;
/// LPCR[ILE]: interrupts are taken in little-endian mode.
pub const LPCR_ILE: u64 = 1 << (63 - 38);

// kvm_run exit reasons lkvm handles on PowerPC.
pub const KVM_EXIT_MMIO: u32 = 6;
pub const KVM_EXIT_SHUTDOWN: u32 = 8;
pub const KVM_EXIT_FAIL_ENTRY: u32 = 9;
pub const KVM_EXIT_INTR: u32 = 10;
pub const KVM_EXIT_INTERNAL_ERROR: u32 = 17;
pub const KVM_EXIT_PAPR_HCALL: u32 = 19;
pub const KVM_EXIT_SYSTEM_EVENT: u32 = 24;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmUserspaceMemoryRegion {
    pub slot: u32,
    pub flags: u32,
    pub guest_phys_addr: u64,
    pub memory_size: u64,
    pub userspace_addr: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmIrqLevel {
    pub irq: u32,
    pub level: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmIrqfd {
    pub fd: u32,
    pub gsi: u32,
    pub flags: u32,
    pub resamplefd: u32,
    pub pad: [u8; 16],
}

/// `struct kvm_ioeventfd`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KvmIoeventfd {
    pub datamatch: u64,
    pub addr: u64,
    pub len: u32,
    pub fd: i32,
    pub flags: u32,
    pub pad: [u8; 36],
}

pub const KVM_IOEVENTFD_FLAG_DATAMATCH: u32 = 1 << 0;
pub const KVM_IOEVENTFD_FLAG_PIO: u32 = 1 << 1;
pub const KVM_IOEVENTFD_FLAG_DEASSIGN: u32 = 1 << 2;

/// `struct kvm_msi`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmMsi {
    pub address_lo: u32,
    pub address_hi: u32,
    pub data: u32,
    pub flags: u32,
    pub devid: u32,
    pub pad: [u8; 12],
}

pub const KVM_MSI_VALID_DEVID: u32 = 1 << 0;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmInterrupt {
    pub irq: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KvmEnableCap {
    pub cap: u32,
    pub flags: u32,
    pub args: [u64; 4],
    pub pad: [u8; 64],
}

impl KvmEnableCap {
    pub fn new(cap: u32, args: [u64; 4]) -> Self {
        KvmEnableCap {
            cap,
            flags: 0,
            args,
            pad: [0; 64],
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmOneReg {
    pub id: u64,
    pub addr: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmCreateDevice {
    pub kind: u32,
    pub fd: u32,
    pub flags: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmDeviceAttr {
    pub flags: u32,
    pub group: u32,
    pub attr: u64,
    pub addr: u64,
}

/// Book3s general registers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmRegs {
    pub pc: u64,
    pub cr: u64,
    pub ctr: u64,
    pub lr: u64,
    pub xer: u64,
    pub msr: u64,
    pub srr0: u64,
    pub srr1: u64,
    pub pid: u64,
    pub sprg: [u64; 8],
    pub gpr: [u64; 32],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SlbEntry {
    pub slbe: u64,
    pub slbv: u64,
}

/// `struct kvm_sregs`, book3s view: PVR, then (in a union) SDR1 and the SLB;
/// the rest of the union (32-bit and BookE views) is kept as bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KvmSregs {
    pub pvr: u32,
    pub pad: u32,
    pub sdr1: u64,
    pub slb: [SlbEntry; 64],
    pub rest: [u8; 192],
}

impl Default for KvmSregs {
    fn default() -> Self {
        KvmSregs {
            pvr: 0,
            pad: 0,
            sdr1: 0,
            slb: [SlbEntry::default(); 64],
            rest: [0; 192],
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PageEncoding {
    pub page_shift: u32,
    pub pte_enc: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SegmentPageSizes {
    pub page_shift: u32,
    pub slb_enc: u32,
    pub enc: [PageEncoding; 8],
}

/// `KVM_PPC_GET_SMMU_INFO`: what the hash MMU offers guests.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmPpcSmmuInfo {
    pub flags: u64,
    pub slb_size: u32,
    pub data_keys: u16,
    pub instr_keys: u16,
    pub sps: [SegmentPageSizes; 8],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RadixGeometry {
    pub page_shift: u32,
    pub level_bits: [u8; 4],
}

/// `KVM_PPC_GET_RMMU_INFO`: radix page sizes and their AP encodings.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmPpcRmmuInfo {
    pub geometries: [RadixGeometry; 8],
    pub ap_encodings: [u32; 8],
}

/// `KVM_PPC_CONFIGURE_V3_MMU`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmPpcMmuv3Cfg {
    pub flags: u64,
    pub process_table: u64,
}

/// `KVM_PPC_RTAS_DEFINE_TOKEN`: an RTAS call KVM implements in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KvmRtasTokenArgs {
    pub name: [u8; 120],
    pub token: u64,
}

impl KvmRtasTokenArgs {
    pub fn new(name: &str, token: u32) -> Self {
        let mut n = [0u8; 120];
        let len = name.len().min(119);
        n[..len].copy_from_slice(&name.as_bytes()[..len]);
        KvmRtasTokenArgs {
            name: n,
            token: u64::from(token),
        }
    }
}

/// The fixed head of `struct kvm_run`; the exit union follows at
/// [`KVM_RUN_EXIT_OFFSET`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmRunHead {
    pub request_interrupt_window: u8,
    pub immediate_exit: u8,
    pub padding1: [u8; 6],
    pub exit_reason: u32,
    pub ready_for_interrupt_injection: u8,
    pub if_flag: u8,
    pub flags: u16,
    pub cr8: u64,
    pub apic_base: u64,
}

pub const KVM_RUN_EXIT_OFFSET: usize = 32;

/// The exit union's `mmio` member.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmRunMmio {
    pub phys_addr: u64,
    pub data: [u8; 8],
    pub len: u32,
    pub is_write: u8,
}

/// The exit union's `papr_hcall` member: number (r3), return value, r4..r12.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmRunPaprHcall {
    pub nr: u64,
    pub ret: u64,
    pub args: [u64; 9],
}

/// The exit union's `fail_entry` member.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmRunFailEntry {
    pub hardware_entry_failure_reason: u64,
    pub cpu: u32,
}

// Layouts, as the uapi headers define them for 64-bit little-endian.
const _: () = {
    assert!(std::mem::size_of::<KvmRunFailEntry>() == 16);
    use std::mem::{offset_of, size_of};
    assert!(size_of::<KvmUserspaceMemoryRegion>() == 32);
    assert!(size_of::<KvmIrqLevel>() == 8);
    assert!(size_of::<KvmIrqfd>() == 32);
    assert!(size_of::<KvmInterrupt>() == 4);
    assert!(size_of::<KvmIoeventfd>() == 64);
    assert!(offset_of!(KvmIoeventfd, fd) == 20);
    assert!(size_of::<KvmMsi>() == 32);
    assert!(size_of::<KvmEnableCap>() == 104);
    assert!(size_of::<KvmOneReg>() == 16);
    assert!(size_of::<KvmCreateDevice>() == 12);
    assert!(size_of::<KvmDeviceAttr>() == 24);
    assert!(size_of::<KvmRegs>() == 392);
    assert!(offset_of!(KvmRegs, gpr) == 136);
    assert!(size_of::<KvmSregs>() == 1232);
    assert!(offset_of!(KvmSregs, sdr1) == 8);
    assert!(offset_of!(KvmSregs, slb) == 16);
    assert!(size_of::<SegmentPageSizes>() == 72);
    assert!(size_of::<KvmPpcSmmuInfo>() == 592);
    assert!(offset_of!(KvmPpcSmmuInfo, sps) == 16);
    assert!(size_of::<KvmPpcRmmuInfo>() == 96);
    assert!(size_of::<KvmPpcMmuv3Cfg>() == 16);
    assert!(size_of::<KvmRtasTokenArgs>() == 128);
    assert!(size_of::<KvmRunHead>() == KVM_RUN_EXIT_OFFSET);
    assert!(offset_of!(KvmRunHead, immediate_exit) == 1);
    assert!(offset_of!(KvmRunHead, exit_reason) == 8);
    assert!(size_of::<KvmRunMmio>() == 24);
    assert!(offset_of!(KvmRunMmio, len) == 16);
    assert!(offset_of!(KvmRunMmio, is_write) == 20);
    assert!(size_of::<KvmRunPaprHcall>() == 88);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_use_the_powerpc_encoding() {
        // values from the uapi headers as compiled for powerpc64le
        let expected = [
            (KVM_GET_API_VERSION, 0x2000_ae00),
            (KVM_CREATE_VM, 0x2000_ae01),
            (KVM_CHECK_EXTENSION, 0x2000_ae03),
            (KVM_GET_VCPU_MMAP_SIZE, 0x2000_ae04),
            (KVM_CREATE_VCPU, 0x2000_ae41),
            (KVM_SET_USER_MEMORY_REGION, 0x8020_ae46),
            (KVM_RUN, 0x2000_ae80),
            (KVM_GET_REGS, 0x4188_ae81),
            (KVM_SET_REGS, 0x8188_ae82),
            (KVM_GET_SREGS, 0x44d0_ae83),
            (KVM_SET_SREGS, 0x84d0_ae84),
            (KVM_INTERRUPT, 0x8004_ae86),
            (KVM_ENABLE_CAP, 0x8068_aea3),
            (KVM_GET_ONE_REG, 0x8010_aeab),
            (KVM_SET_ONE_REG, 0x8010_aeac),
            (KVM_PPC_GET_SMMU_INFO, 0x4250_aea6),
            (KVM_PPC_ALLOCATE_HTAB, 0xc004_aea7),
            (KVM_PPC_RTAS_DEFINE_TOKEN, 0x8080_aeac),
            (KVM_PPC_CONFIGURE_V3_MMU, 0x8010_aeaf),
            (KVM_PPC_GET_RMMU_INFO, 0x8060_aeb0),
            (KVM_IRQ_LINE, 0x8008_ae61),
            (KVM_IRQFD, 0x8020_ae76),
            (KVM_CREATE_DEVICE, 0xc00c_aee0),
            (KVM_SET_DEVICE_ATTR, 0x8018_aee1),
        ];
        for (got, want) in expected {
            assert_eq!(got, want, "{got:#x} != {want:#x}");
        }
    }

    #[test]
    fn rtas_token_names_are_nul_terminated_and_truncated() {
        let t = KvmRtasTokenArgs::new("ibm,set-xive", 0x2008);
        assert_eq!(&t.name[..13], b"ibm,set-xive\0");
        assert_eq!(t.token, 0x2008);
        let long = KvmRtasTokenArgs::new(&"x".repeat(200), 1);
        assert_eq!(long.name[119], 0);
        assert_eq!(LPCR_ILE, 0x0000_0000_0200_0000);
    }
}
