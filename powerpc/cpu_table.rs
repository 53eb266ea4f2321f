//! What lkvm tells a guest about its POWER processor, by PVR family: the
//! device-tree name, cache geometry and the VMX/VSX/DFP levels. The values
//! are those of the real processors; lkvm only knows the 64-bit server
//! families that can run little-endian Linux under KVM-HV (POWER7 and up).

/// One processor family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuModel {
    pub name: &'static str,
    /// `ibm,vmx`: 2 = VMX and VSX.
    pub vmx: u32,
    /// `ibm,dfp`: decimal floating point.
    pub dfp: u32,
    pub d_cache_size: u32,
    pub i_cache_size: u32,
    pub cache_line: u32,
    pub slb_size: u32,
    /// Hardware threads per core (lkvm describes one per core).
    pub smt: u32,
}

const fn model(name: &'static str, d: u32, i: u32) -> CpuModel {
    CpuModel {
        name,
        vmx: 2,
        dfp: 1,
        d_cache_size: d,
        i_cache_size: i,
        cache_line: 128,
        slb_size: 32,
        smt: 1,
    }
}

/// Timebase frequency of every POWER server processor.
pub const TIMEBASE_HZ: u32 = 512_000_000;
/// Nominal core clock reported in `clock-frequency`.
pub const CLOCK_HZ: u32 = 3_000_000_000;

/// The model for a PVR, by its upper 16 bits (the family).
pub fn lookup(pvr: u32) -> Option<CpuModel> {
    Some(match pvr >> 16 {
        0x003f => model("PowerPC,POWER7", 0x8000, 0x8000),
        0x004a => model("PowerPC,POWER7+", 0x8000, 0x8000),
        0x004b => model("PowerPC,POWER8E", 0x10000, 0x8000),
        0x004c => model("PowerPC,POWER8NVL", 0x10000, 0x8000),
        0x004d => model("PowerPC,POWER8", 0x10000, 0x8000),
        0x004e => model("PowerPC,POWER9", 0x8000, 0x8000),
        0x0080 => model("PowerPC,POWER10", 0x10000, 0xc000),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_through_power10_are_known_with_vsx() {
        for (pvr, name) in [
            (0x003f_0201, "PowerPC,POWER7"),
            (0x004b_0201, "PowerPC,POWER8E"),
            (0x004c_0100, "PowerPC,POWER8NVL"),
            (0x004d_0200, "PowerPC,POWER8"),
            (0x004e_1202, "PowerPC,POWER9"),
            (0x0080_0200, "PowerPC,POWER10"),
        ] {
            let m = lookup(pvr).unwrap();
            assert_eq!(m.name, name);
            assert_eq!(m.vmx, 2, "{name}: static busybox needs VSX");
        }
        assert_eq!(lookup(0x0070_0000), None);
    }
}
