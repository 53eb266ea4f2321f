//! arm64 `KVM_{GET,SET}_ONE_REG` ids (arch/arm64/include/uapi/asm/kvm.h).

const KVM_REG_ARM64: u64 = 0x6000_0000_0000_0000;
const KVM_REG_SIZE_U64: u64 = 0x0030_0000_0000_0000;
const KVM_REG_ARM_CORE: u64 = 0x0010 << 16;
const KVM_REG_ARM64_SYSREG: u64 = 0x0013 << 16;

/// A core register at byte offset `off` of `struct kvm_regs`.
const fn core(off: u64) -> u64 {
    KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | (off / 4)
}

/// `x0`..`x30` live at the start of `struct user_pt_regs`.
pub const fn x(n: u64) -> u64 {
    core(n * 8)
}

pub const SP: u64 = core(31 * 8);
pub const PC: u64 = core(32 * 8);
pub const PSTATE: u64 = core(33 * 8);
/// `sp_el1`, right after `user_pt_regs` in `struct kvm_regs`.
pub const SP_EL1: u64 = core(34 * 8);

/// A system register by its encoding.
pub const fn sysreg(op0: u64, op1: u64, crn: u64, crm: u64, op2: u64) -> u64 {
    KVM_REG_ARM64
        | KVM_REG_SIZE_U64
        | KVM_REG_ARM64_SYSREG
        | (op0 << 14)
        | (op1 << 11)
        | (crn << 7)
        | (crm << 3)
        | op2
}

pub const MPIDR_EL1: u64 = sysreg(3, 0, 0, 0, 5);

/// EL1h with D, A, I and F masked: how booting.rst wants the kernel entered.
pub const PSTATE_EL1H_DAIF: u64 = 0x3c5;

/// The affinity fields of an MPIDR, as device tree `cpu` nodes use them.
pub const MPIDR_HWID_MASK: u64 = 0xff_00ff_ffff;

/// The MPIDR KVM gives vCPU `id` (16 per cluster at affinity level 0).
pub fn kvm_mpidr(id: u32) -> u64 {
    let id = u64::from(id);
    (1 << 31) | (id & 0xf) | (((id >> 4) & 0xff) << 8) | (((id >> 12) & 0xff) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_the_uapi_encoding() {
        assert_eq!(x(0), 0x6030_0000_0010_0000);
        assert_eq!(x(1), 0x6030_0000_0010_0002);
        assert_eq!(PC, 0x6030_0000_0010_0040);
        assert_eq!(PSTATE, 0x6030_0000_0010_0042);
        assert_eq!(MPIDR_EL1, 0x6030_0000_0013_c005);
    }

    #[test]
    fn mpidrs_group_16_vcpus_per_cluster() {
        assert_eq!(kvm_mpidr(0) & MPIDR_HWID_MASK, 0);
        assert_eq!(kvm_mpidr(15) & MPIDR_HWID_MASK, 0xf);
        assert_eq!(kvm_mpidr(16) & MPIDR_HWID_MASK, 0x100);
        assert_eq!(kvm_mpidr(0x1234) & MPIDR_HWID_MASK, 0x01_2304);
    }
}
