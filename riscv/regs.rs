//! RISC-V `KVM_{GET,SET}_ONE_REG` ids (arch/riscv/include/uapi/asm/kvm.h),
//! for rv64.

const KVM_REG_RISCV: u64 = 0x8000_0000_0000_0000;
const KVM_REG_SIZE_U64: u64 = 0x0030_0000_0000_0000;
const TYPE_CONFIG: u64 = 0x01 << 24;
const TYPE_CORE: u64 = 0x02 << 24;
const TYPE_TIMER: u64 = 0x04 << 24;
const TYPE_ISA_EXT: u64 = 0x07 << 24;
const TYPE_SBI_EXT: u64 = 0x08 << 24;
/// The `SINGLE` subtype: one register per extension, 1 = on.
const SUBTYPE_SINGLE: u64 = 0;

const fn reg(kind: u64, index: u64) -> u64 {
    KVM_REG_RISCV | KVM_REG_SIZE_U64 | kind | index
}

// struct kvm_riscv_config
pub const CONFIG_ISA: u64 = reg(TYPE_CONFIG, 0);
pub const CONFIG_ZICBOM_BLOCK_SIZE: u64 = reg(TYPE_CONFIG, 1);
pub const CONFIG_MVENDORID: u64 = reg(TYPE_CONFIG, 2);
pub const CONFIG_MARCHID: u64 = reg(TYPE_CONFIG, 3);
pub const CONFIG_MIMPID: u64 = reg(TYPE_CONFIG, 4);
pub const CONFIG_ZICBOZ_BLOCK_SIZE: u64 = reg(TYPE_CONFIG, 5);
pub const CONFIG_SATP_MODE: u64 = reg(TYPE_CONFIG, 6);

// struct kvm_riscv_core: regs.pc, ra, sp, gp, tp, t0-t2, s0-s1, a0-a7, ...
pub const CORE_PC: u64 = reg(TYPE_CORE, 0);
pub const CORE_RA: u64 = reg(TYPE_CORE, 1);
pub const CORE_SP: u64 = reg(TYPE_CORE, 2);
pub const fn core_a(n: u64) -> u64 {
    reg(TYPE_CORE, 10 + n)
}
pub const CORE_MODE: u64 = reg(TYPE_CORE, 32);

// struct kvm_riscv_timer
pub const TIMER_FREQUENCY: u64 = reg(TYPE_TIMER, 0);

pub const fn isa_ext(id: u64) -> u64 {
    reg(TYPE_ISA_EXT, SUBTYPE_SINGLE | id)
}

pub const fn sbi_ext(id: u64) -> u64 {
    reg(TYPE_SBI_EXT, SUBTYPE_SINGLE | id)
}

/// satp modes as `config.satp_mode` reports them.
pub fn mmu_type(satp_mode: u64) -> Option<&'static str> {
    match satp_mode {
        8 => Some("riscv,sv39"),
        9 => Some("riscv,sv48"),
        10 => Some("riscv,sv57"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_the_uapi_encoding() {
        assert_eq!(CONFIG_ISA, 0x8030_0000_0100_0000);
        assert_eq!(CONFIG_SATP_MODE, 0x8030_0000_0100_0006);
        assert_eq!(CORE_PC, 0x8030_0000_0200_0000);
        assert_eq!(core_a(0), 0x8030_0000_0200_000a);
        assert_eq!(core_a(1), 0x8030_0000_0200_000b);
        assert_eq!(TIMER_FREQUENCY, 0x8030_0000_0400_0000);
        assert_eq!(isa_ext(13), 0x8030_0000_0700_000d);
        assert_eq!(sbi_ext(9), 0x8030_0000_0800_0009);
        assert_eq!(mmu_type(9), Some("riscv,sv48"));
        assert_eq!(mmu_type(0), None);
    }
}
