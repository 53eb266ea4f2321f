//! Hashed page table sizing for hash-MMU guests.

/// `KVM_PPC_ALLOCATE_HTAB` accepts orders 18 (256 KiB) to 46.
pub const MIN_ORDER: u32 = 18;
pub const MAX_ORDER: u32 = 46;

/// The HPT order for `ram_size` bytes of guest RAM: the table is 1/128 of
/// RAM rounded up to a power of two, as PAPR recommends and QEMU does.
pub fn order_for_ram(ram_size: u64) -> u32 {
    let pow2 = ram_size
        .max(1)
        .checked_next_power_of_two()
        .unwrap_or(1 << 63);
    (pow2.trailing_zeros().saturating_sub(7)).clamp(MIN_ORDER, MAX_ORDER)
}

/// SDR1 for a userspace HPT at `base` (PR KVM): the table address (256 KiB
/// aligned) with the size field HTABSIZE = order - 18.
pub fn sdr1(base: u64, order: u32) -> u64 {
    (base & !0x3_ffff) | u64::from(order.saturating_sub(MIN_ORDER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_a_128th_of_ram_within_limits() {
        assert_eq!(order_for_ram(256 << 20), 21);
        assert_eq!(order_for_ram(300 << 20), 22);
        assert_eq!(order_for_ram(4 << 30), 25);
        assert_eq!(order_for_ram(1 << 20), MIN_ORDER);
        assert_eq!(order_for_ram(u64::MAX), MAX_ORDER);
    }

    #[test]
    fn sdr1_encodes_base_and_size() {
        assert_eq!(sdr1(0x1_0004_0000, 24), 0x1_0004_0006);
        assert_eq!(sdr1(0x1_0004_1234, 18), 0x1_0004_0000);
    }
}
