//! PowerPC's own `lkvm run` options.

use clap::Args;

use crate::arch::{ArchInfo, ArchOptions, POWERPC64};

#[derive(Clone, Debug, Default, Args, PartialEq, Eq)]
#[group(skip)]
pub struct Options {
    /// powerpc: guest MMU mode radix|hash|auto (default: radix where the host can)
    #[arg(long, value_name = "MODE", help_heading = "Arch-specific options")]
    pub mmu: Option<String>,
}

impl ArchOptions for Options {
    const ON: &'static str = "powerpc";

    fn exists_on(arch: &ArchInfo) -> bool {
        *arch == POWERPC64
    }

    fn given(&self) -> Option<&'static str> {
        self.mmu.as_ref().map(|_| "--mmu")
    }
}
