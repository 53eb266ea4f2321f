//! arm64's own `lkvm run` options (kvmtool's `arm/include/arm-common/kvm-config-arch.h` set).

use clap::{Args, ValueEnum};

use crate::arch::{ArchInfo, ArchOptions, AARCH64};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum AsyncPfMode {
    /// Enable where the host supports it
    #[default]
    Auto,
    /// Require it; fail where the host lacks it
    On,
    /// Never touch it
    Off,
}

#[derive(Clone, Debug, Default, Args, PartialEq, Eq)]
#[group(skip)]
pub struct Options {
    /// arm64: give every vCPU a PMUv3 (PPI 23)
    #[arg(long, help_heading = "Arch-specific options")]
    pub pmu: bool,
    /// arm64: limit SVE vector lengths to at most this many bits
    #[arg(long, value_name = "BITS", help_heading = "Arch-specific options")]
    pub sve_max_vl: Option<u32>,
    /// arm64: keep MTE off (it is off by default; kept for kvmtool compatibility)
    #[arg(long, help_heading = "Arch-specific options")]
    pub disable_mte: bool,
    /// arm64: no stolen-time (pvtime) region for the vCPUs
    #[arg(long, help_heading = "Arch-specific options")]
    pub no_pvtime: bool,
    /// arm64: KASLR seed for the guest (0: none; default: random)
    #[arg(long, value_name = "SEED", help_heading = "Arch-specific options")]
    pub kaslr_seed: Option<u64>,
    /// arm64: asynchronous page faults (SDEI event + PPI), where the host has them
    #[arg(
        long,
        value_enum,
        value_name = "MODE",
        help_heading = "Arch-specific options"
    )]
    pub async_pf: Option<AsyncPfMode>,

    // kvmtool arm64 options not implemented yet
    #[arg(long, hide = true)]
    pub aarch32: bool,
    #[arg(long, hide = true)]
    pub vcpu_affinity: Option<String>,
    #[arg(long, hide = true, value_name = "HZ")]
    pub override_bad_firmware_cntfrq: Option<String>,
    #[arg(long, hide = true)]
    pub force_pci: bool,
    #[arg(long, hide = true)]
    pub firmware_address: Option<String>,
}

impl ArchOptions for Options {
    const ON: &'static str = "arm64";

    fn exists_on(arch: &ArchInfo) -> bool {
        *arch == AARCH64
    }

    fn given(&self) -> Option<&'static str> {
        first([
            (self.pmu, "--pmu"),
            (self.sve_max_vl.is_some(), "--sve-max-vl"),
            (self.disable_mte, "--disable-mte"),
            (self.no_pvtime, "--no-pvtime"),
            (self.kaslr_seed.is_some(), "--kaslr-seed"),
            (self.async_pf.is_some(), "--async-pf"),
        ])
    }

    fn not_supported_yet(&self) -> Option<&'static str> {
        first([
            (self.aarch32, "--aarch32"),
            (self.vcpu_affinity.is_some(), "--vcpu-affinity"),
            (
                self.override_bad_firmware_cntfrq.is_some(),
                "--override-bad-firmware-cntfrq",
            ),
            (self.force_pci, "--force-pci"),
            (self.firmware_address.is_some(), "--firmware-address"),
        ])
    }
}

fn first<const N: usize>(given: [(bool, &'static str); N]) -> Option<&'static str> {
    given.iter().find(|(set, _)| *set).map(|(_, name)| *name)
}
