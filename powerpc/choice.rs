//! The guest MMU and interrupt controller a PowerPC guest gets: what
//! `--mmu` and `--irqchip` ask for, met with what the host's KVM offers.
//! Pure, so it is tested on every host.

use super::error::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmuChoice {
    Auto,
    Radix,
    Hash,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XicsChoice {
    Auto,
    Kernel,
    User,
}

impl MmuChoice {
    /// `--mmu`.
    pub fn parse(s: Option<&str>) -> Result<Self, Error> {
        match s {
            None | Some("auto") => Ok(MmuChoice::Auto),
            Some("radix") => Ok(MmuChoice::Radix),
            Some("hash") => Ok(MmuChoice::Hash),
            Some(other) => Err(Error::UnknownMmu(other.to_string())),
        }
    }

    /// Whether the guest runs radix: where the host can (`radix`,
    /// `KVM_CAP_PPC_MMU_RADIX`) unless hash is asked for. A host that
    /// reports neither capability is older than POWER9: hash only.
    pub fn radix(self, radix: bool, hash_v3: bool) -> Result<bool, Error> {
        let hash = hash_v3 || !radix;
        match self {
            MmuChoice::Auto => Ok(radix),
            MmuChoice::Radix if radix => Ok(true),
            MmuChoice::Radix => Err(Error::MmuUnavailable("radix")),
            MmuChoice::Hash if hash => Ok(false),
            MmuChoice::Hash => Err(Error::MmuUnavailable("hash")),
        }
    }
}

impl XicsChoice {
    /// `--irqchip` on PowerPC.
    pub fn parse(s: Option<&str>) -> Result<Self, Error> {
        match s {
            None => Ok(XicsChoice::Auto),
            Some("xics-kernel") => Ok(XicsChoice::Kernel),
            Some("xics-user") => Ok(XicsChoice::User),
            Some(other) => Err(Error::UnknownIrqchip(other.to_string())),
        }
    }

    /// Whether KVM's XICS is used (else lkvm's own).
    pub fn in_kernel(self, available: bool) -> Result<bool, Error> {
        match self {
            XicsChoice::Auto => Ok(available),
            XicsChoice::Kernel if available => Ok(true),
            XicsChoice::Kernel => Err(Error::NoKernelXics),
            XicsChoice::User => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mmu_is_radix_where_the_host_can_and_asked_for_modes_must_exist() {
        assert!(MmuChoice::Auto.radix(true, true).unwrap());
        assert!(!MmuChoice::Auto.radix(false, false).unwrap(), "POWER8");
        assert!(!MmuChoice::Hash.radix(true, true).unwrap());
        assert!(matches!(
            MmuChoice::Hash.radix(true, false),
            Err(Error::MmuUnavailable("hash"))
        ));
        assert!(matches!(
            MmuChoice::Radix.radix(false, false),
            Err(Error::MmuUnavailable("radix"))
        ));
        assert_eq!(MmuChoice::parse(None).unwrap(), MmuChoice::Auto);
        assert!(matches!(MmuChoice::parse(Some("4k")), Err(Error::UnknownMmu(s)) if s == "4k"));
    }

    #[test]
    fn the_kernel_xics_is_used_where_it_exists_unless_refused() {
        assert!(XicsChoice::Auto.in_kernel(true).unwrap());
        assert!(!XicsChoice::Auto.in_kernel(false).unwrap());
        assert!(!XicsChoice::User.in_kernel(true).unwrap());
        assert!(matches!(
            XicsChoice::Kernel.in_kernel(false),
            Err(Error::NoKernelXics)
        ));
        assert!(matches!(
            XicsChoice::parse(Some("gicv3")),
            Err(Error::UnknownIrqchip(_))
        ));
    }
}
