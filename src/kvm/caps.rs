//! Capability numbers from `include/uapi/linux/kvm.h` that lkvm's generic code
//! asks about. Kept as plain numbers so they mean the same on every backend,
//! including the PowerPC one that has no kvm-bindings.

pub const KVM_CAP_IRQCHIP: u32 = 0;
pub const KVM_CAP_USER_MEMORY: u32 = 3;
pub const KVM_CAP_SET_TSS_ADDR: u32 = 4;
pub const KVM_CAP_EXT_CPUID: u32 = 7;
pub const KVM_CAP_NR_VCPUS: u32 = 9;
pub const KVM_CAP_NR_MEMSLOTS: u32 = 10;
pub const KVM_CAP_SYNC_MMU: u32 = 16;
pub const KVM_CAP_PIT2: u32 = 33;
pub const KVM_CAP_IRQFD: u32 = 32;
pub const KVM_CAP_IOEVENTFD: u32 = 36;
pub const KVM_CAP_MAX_VCPUS: u32 = 66;
pub const KVM_CAP_CHECK_EXTENSION_VM: u32 = 105;
pub const KVM_CAP_IMMEDIATE_EXIT: u32 = 136;
