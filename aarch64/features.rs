//! Which CPU features an arm64 guest gets: what the user asked for, met
//! with what the host's KVM offers. Pure, so it is tested on every host;
//! aarch64/machine.rs asks KVM and applies the result.

use super::error::Error;

/// `KVM_ARM_VCPU_*` feature bits of `kvm_vcpu_init.features[0]` (uapi).
const VCPU_POWER_OFF: u32 = 0;
const VCPU_PSCI_0_2: u32 = 2;
const VCPU_PMU_V3: u32 = 3;
const VCPU_SVE: u32 = 4;
const VCPU_PTRAUTH_ADDRESS: u32 = 5;
const VCPU_PTRAUTH_GENERIC: u32 = 6;

/// KVM's default IPA size; larger ones must be asked for in the VM type.
const DEFAULT_IPA_BITS: u32 = 40;

/// What the command line asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// `--pmu`: required.
    pub pmu: bool,
    /// `--sve-max-vl`: SVE required.
    pub sve_limit: bool,
    /// Stolen time, unless `--no-pvtime`; taken where the host has it.
    pub pvtime: bool,
}

/// What the host's KVM offers guests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostCaps {
    pub pmu: bool,
    pub sve: bool,
    /// Both address and generic pointer authentication.
    pub ptrauth: bool,
    pub steal_time: bool,
}

/// What every vCPU gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    pub pmu: bool,
    pub sve: bool,
    pub ptrauth: bool,
    pub pvtime: bool,
}

impl Wanted {
    /// SVE and pointer authentication whenever the host has them (as
    /// kvmtool), the PMU only when asked, and a clear error for what was
    /// asked for and is missing.
    pub fn decide(self, host: HostCaps) -> Result<Features, Error> {
        if self.pmu && !host.pmu {
            return Err(Error::NoPmu);
        }
        if self.sve_limit && !host.sve {
            return Err(Error::NoSve);
        }
        Ok(Features {
            pmu: self.pmu,
            sve: host.sve,
            ptrauth: host.ptrauth,
            pvtime: self.pvtime && host.steal_time,
        })
    }
}

impl Features {
    /// `kvm_vcpu_init.features[0]` for vCPU `id`: PSCI 0.2 always, and
    /// secondaries powered off until the guest starts them (PSCI CPU_ON).
    pub fn vcpu_init_bits(self, id: u32) -> u32 {
        let mut bits = 1 << VCPU_PSCI_0_2;
        if id > 0 {
            bits |= 1 << VCPU_POWER_OFF;
        }
        if self.pmu {
            bits |= 1 << VCPU_PMU_V3;
        }
        if self.sve {
            bits |= 1 << VCPU_SVE;
        }
        if self.ptrauth {
            bits |= (1 << VCPU_PTRAUTH_ADDRESS) | (1 << VCPU_PTRAUTH_GENERIC);
        }
        bits
    }
}

/// `KVM_CREATE_VM`'s machine type for RAM at `base` of `size` bytes: 0 for
/// KVM's default 40-bit IPA space, else the bits RAM needs, if the host
/// (`max_ipa`, `KVM_CAP_ARM_VM_IPA_SIZE`) allows them.
pub fn vm_type(base: u64, size: u64, max_ipa: impl FnOnce() -> i32) -> Result<u64, Error> {
    let end = base.saturating_add(size);
    let bits = 64 - end.saturating_sub(1).leading_zeros();
    if bits <= DEFAULT_IPA_BITS {
        return Ok(0);
    }
    let max = max_ipa();
    if max < bits as i32 {
        return Err(Error::IpaTooSmall { end, bits, max });
    }
    Ok(u64::from(bits))
}

/// `--sve-max-vl`: a multiple of 128 bits, at most 2048.
pub fn valid_sve_length(bits: u32) -> bool {
    bits != 0 && bits % 128 == 0 && bits <= 2048
}

/// Clears from `KVM_REG_ARM64_SVE_VLS` (bit n-1: a vector length of n x
/// 128 bits is offered) every length above `max_bits`.
pub fn limit_vector_lengths(vls: &mut [u8; 64], max_bits: u32) {
    let max_quads = (max_bits / 128) as usize;
    for bit in max_quads..512 {
        vls[bit / 8] &= !(1 << (bit % 8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: HostCaps = HostCaps {
        pmu: true,
        sve: true,
        ptrauth: true,
        steal_time: true,
    };

    #[test]
    fn features_follow_the_host_and_asked_for_ones_must_exist() {
        let plain = Wanted {
            pvtime: true,
            ..Default::default()
        };
        assert_eq!(
            plain.decide(ALL).unwrap(),
            Features {
                pmu: false,
                sve: true,
                ptrauth: true,
                pvtime: true
            }
        );
        let bare = plain.decide(HostCaps::default()).unwrap();
        assert_eq!(bare, Features::default());
        let pmu = Wanted { pmu: true, ..plain };
        assert!(matches!(pmu.decide(HostCaps::default()), Err(Error::NoPmu)));
        assert!(pmu.decide(ALL).unwrap().pmu);
        let sve = Wanted {
            sve_limit: true,
            ..plain
        };
        assert!(matches!(sve.decide(HostCaps::default()), Err(Error::NoSve)));
        let no_pvtime = Wanted::default().decide(ALL).unwrap();
        assert!(!no_pvtime.pvtime, "--no-pvtime wins over the host");
    }

    #[test]
    fn secondaries_start_powered_off_with_the_same_features() {
        let f = Features {
            pmu: true,
            sve: false,
            ptrauth: true,
            pvtime: true,
        };
        assert_eq!(f.vcpu_init_bits(0), 0b110_1100);
        assert_eq!(f.vcpu_init_bits(1), 0b110_1101);
        assert_eq!(Features::default().vcpu_init_bits(0), 0b100);
    }

    #[test]
    fn ram_above_the_default_ipa_space_needs_a_vm_type_the_host_allows() {
        let never = || -> i32 { panic!("not asked") };
        assert_eq!(vm_type(0x8000_0000, 1 << 30, never).unwrap(), 0);
        assert_eq!(vm_type(1 << 40, 1 << 30, || 44).unwrap(), 41);
        assert!(matches!(
            vm_type(1 << 40, 1 << 30, || 40),
            Err(Error::IpaTooSmall {
                bits: 41,
                max: 40,
                ..
            })
        ));
        assert!(vm_type(u64::MAX - 10, 100, || 52).is_err(), "no overflow");
    }

    #[test]
    fn vector_lengths_above_the_limit_are_withdrawn() {
        assert!(valid_sve_length(512) && !valid_sve_length(0) && !valid_sve_length(200));
        assert!(!valid_sve_length(4096));
        let mut vls = [0xff; 64];
        limit_vector_lengths(&mut vls, 512);
        assert_eq!(vls[0], 0x0f, "128..512 bits stay");
        assert!(vls[1..].iter().all(|b| *b == 0));
    }
}
