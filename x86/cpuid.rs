//! Per-vCPU adjustments of the CPUID KVM supports: each vCPU gets its own
//! APIC id, the topology matches `-c N`, and the guest is told it runs on a
//! hypervisor. Plain data so it is tested without KVM.

/// One CPUID leaf/subleaf (the fields of `kvm_cpuid_entry2` lkvm touches).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidEntry {
    pub function: u32,
    pub index: u32,
    pub flags: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

const LEAF_FEATURES: u32 = 1;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_EXT_TOPOLOGY_V2: u32 = 0x1f;
const ECX_VMX: u32 = 1 << 5;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
const LEAF_EXT_FEATURES: u32 = 0x8000_0001;
const ECX_SVM: u32 = 1 << 2;

/// Bits needed to number `n` things.
fn width(n: u32) -> u32 {
    32 - n.saturating_sub(1).leading_zeros()
}

/// Adjusts `entries` for vCPU `id` of `cpus`, all presented as cores of one
/// socket with one thread each.
pub fn patch(entries: &mut [CpuidEntry], id: u32, cpus: u32) {
    for e in entries.iter_mut() {
        match e.function {
            LEAF_FEATURES => {
                e.ebx = (e.ebx & 0x0000_ffff) | (id << 24) | ((cpus.min(255)) << 16);
                e.ecx = (e.ecx & !ECX_VMX) | ECX_HYPERVISOR;
                if cpus > 1 {
                    e.edx |= EDX_HTT;
                }
            }
            LEAF_EXT_TOPOLOGY | LEAF_EXT_TOPOLOGY_V2 => {
                e.edx = id;
                match e.index {
                    0 => {
                        // SMT level: one thread per core
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = (1 << 8) | e.index;
                    }
                    1 => {
                        // core level: all vCPUs in one package
                        e.eax = width(cpus);
                        e.ebx = cpus;
                        e.ecx = (2 << 8) | e.index;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            // No nested virtualization for lkvm guests.
            LEAF_EXT_FEATURES => e.ecx &= !ECX_SVM,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32) -> CpuidEntry {
        CpuidEntry {
            function,
            index,
            ebx: 0x0008_0800,
            ecx: ECX_VMX | 1,
            edx: 1,
            ..Default::default()
        }
    }

    #[test]
    fn apic_ids_topology_and_hypervisor_bit_are_set() {
        let mut e = vec![
            leaf(1, 0),
            leaf(0xb, 0),
            leaf(0xb, 1),
            leaf(0xb, 2),
            leaf(0x8000_0001, 0),
        ];
        e[4].ecx = ECX_SVM | 1;
        patch(&mut e, 3, 4);
        assert_eq!(e[0].ebx, (3 << 24) | (4 << 16) | 0x0800);
        assert_eq!(e[0].ecx, ECX_HYPERVISOR | 1);
        assert_ne!(e[0].edx & EDX_HTT, 0);
        assert_eq!((e[1].eax, e[1].ebx, e[1].ecx, e[1].edx), (0, 1, 0x100, 3));
        assert_eq!((e[2].eax, e[2].ebx, e[2].ecx, e[2].edx), (2, 4, 0x201, 3));
        assert_eq!((e[3].eax, e[3].ebx, e[3].ecx), (0, 0, 2));
        assert_eq!(e[4].ecx, 1);
    }

    #[test]
    fn single_cpu_has_no_htt_and_width_is_right() {
        let mut e = vec![leaf(1, 0)];
        e[0].edx = 0;
        patch(&mut e, 0, 1);
        assert_eq!(e[0].edx & EDX_HTT, 0);
        assert_eq!(
            (width(1), width(2), width(3), width(4), width(5)),
            (0, 1, 2, 2, 3)
        );
    }
}
