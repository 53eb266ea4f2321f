//! riscv's own `lkvm run` options, and kvmtool's per-extension spellings
//! of them (`--disable-zbb`, `--disable-sbi-dbcn`).

use std::ffi::OsString;

use clap::Args;

use super::isa::{isa_ext_id, sbi_ext_id};
use crate::arch::{ArchInfo, ArchOptions, RISCV64};
use crate::cli::parse_u64;

#[derive(Clone, Debug, Default, Args, PartialEq, Eq)]
#[group(skip)]
pub struct Options {
    /// riscv: hide ISA extension EXT from the guest (kvmtool's --disable-EXT works too)
    #[arg(
        long = "disable-ext",
        value_name = "EXT",
        help_heading = "Arch-specific options"
    )]
    pub disable_ext: Vec<String>,
    /// riscv: turn off SBI extension EXT (kvmtool's --disable-sbi-EXT works too)
    #[arg(
        long = "disable-sbi",
        value_name = "EXT",
        help_heading = "Arch-specific options"
    )]
    pub disable_sbi: Vec<String>,
    /// riscv: mvendorid the guest sees
    #[arg(long, value_name = "ID", value_parser = parse_u64, help_heading = "Arch-specific options")]
    pub custom_mvendorid: Option<u64>,
    /// riscv: marchid the guest sees
    #[arg(long, value_name = "ID", value_parser = parse_u64, help_heading = "Arch-specific options")]
    pub custom_marchid: Option<u64>,
    /// riscv: mimpid the guest sees
    #[arg(long, value_name = "ID", value_parser = parse_u64, help_heading = "Arch-specific options")]
    pub custom_mimpid: Option<u64>,
}

impl ArchOptions for Options {
    const ON: &'static str = "riscv";

    fn exists_on(arch: &ArchInfo) -> bool {
        *arch == RISCV64
    }

    fn given(&self) -> Option<&'static str> {
        [
            (!self.disable_ext.is_empty(), "--disable-<ext>"),
            (!self.disable_sbi.is_empty(), "--disable-sbi-<ext>"),
            (self.custom_mvendorid.is_some(), "--custom-mvendorid"),
            (self.custom_marchid.is_some(), "--custom-marchid"),
            (self.custom_mimpid.is_some(), "--custom-mimpid"),
        ]
        .iter()
        .find(|(set, _)| *set)
        .map(|(_, name)| *name)
    }

    /// Only names of known extensions are rewritten, so `--disable-mte`
    /// and typos reach the parser unchanged.
    fn respell(arg: &str) -> Option<[OsString; 2]> {
        if let Some(name) = arg
            .strip_prefix("--disable-sbi-")
            .filter(|n| sbi_ext_id(n).is_some())
        {
            return Some(["--disable-sbi".into(), name.into()]);
        }
        arg.strip_prefix("--disable-")
            .filter(|n| isa_ext_id(n).is_some())
            .map(|name| ["--disable-ext".into(), name.into()])
    }
}
