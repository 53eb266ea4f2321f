//! arm64 guests. The port (GIC, PSCI, FDT, Image loading, async-PF SDEI/PPI
//! wiring) has not landed yet; until it does, the architecture refuses to run
//! with a clear error.

crate::arch_not_implemented!(Aarch64, "arm64");

#[cfg(test)]
mod tests {
    use super::Aarch64;
    use crate::arch::Arch;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn refuses_with_a_clear_error() {
        let Command::Run(args) = Cli::parse_from(["lkvm", "run", "-k", "Image"]).command else {
            unreachable!()
        };
        let cfg =
            crate::config::VmConfig::from_args(&args, crate::config::Host { cpus: 1, ram: None })
                .unwrap();
        let err = Aarch64::new(&cfg).unwrap_err();
        assert_eq!(
            err.to_string(),
            "lkvm does not support arm64 guests yet (not implemented for this architecture yet)"
        );
    }
}
