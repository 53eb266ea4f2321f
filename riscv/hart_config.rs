//! What lkvm writes into each hart's KVM registers before it boots: the
//! `--custom-*` ids, the extensions `--disable-*` turns off, and the SBI
//! debug console KVM leaves to the VMM. Pure, so it is tested on every
//! host; riscv/machine.rs performs the writes.

use super::error::Error;
use super::isa::{self, isa_ext_id, sbi_ext_id};
use super::options::Options;
use super::regs;

/// One register write and what a failure means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegWrite {
    pub reg: u64,
    pub value: u64,
    pub on_error: OnError,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnError {
    /// `--custom-NAME`: the VM cannot start without it.
    Fail(&'static str),
    /// `--disable-NAME`: said once (on hart 0), then the boot goes on;
    /// `ENOENT` means KVM does not offer it, so it is off already.
    Report(String),
    /// Later harts repeat hart 0's writes silently; turning the debug
    /// console on is best effort.
    Ignore,
}

/// The validated hart options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HartConfig {
    custom_ids: Vec<(u64, u64, &'static str)>,
    disabled_exts: Vec<(String, u64)>,
    disabled_sbi: Vec<(String, u64)>,
}

impl HartConfig {
    /// Checks the extension names against what lkvm knows.
    pub fn new(o: &Options) -> Result<Self, Error> {
        let disabled_exts = o
            .disable_ext
            .iter()
            .map(|n| {
                isa_ext_id(n)
                    .map(|id| (n.clone(), id))
                    .ok_or_else(|| Error::UnknownExtension(n.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let disabled_sbi = o
            .disable_sbi
            .iter()
            .map(|n| {
                sbi_ext_id(n)
                    .map(|id| (n.clone(), id))
                    .ok_or_else(|| Error::UnknownSbiExtension(n.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let custom_ids = [
            (regs::CONFIG_MVENDORID, o.custom_mvendorid, "mvendorid"),
            (regs::CONFIG_MARCHID, o.custom_marchid, "marchid"),
            (regs::CONFIG_MIMPID, o.custom_mimpid, "mimpid"),
        ]
        .into_iter()
        .filter_map(|(reg, value, name)| Some((reg, value?, name)))
        .collect();
        Ok(HartConfig {
            custom_ids,
            disabled_exts,
            disabled_sbi,
        })
    }

    /// The writes for hart `id`, in order.
    pub fn writes(&self, id: u32) -> Vec<RegWrite> {
        let mut out: Vec<RegWrite> = self
            .custom_ids
            .iter()
            .map(|&(reg, value, name)| RegWrite {
                reg,
                value,
                on_error: OnError::Fail(name),
            })
            .collect();
        let report = |what: String| match id {
            0 => OnError::Report(what),
            _ => OnError::Ignore,
        };
        for (name, ext) in &self.disabled_exts {
            out.push(RegWrite {
                reg: regs::isa_ext(*ext),
                value: 0,
                on_error: report(name.clone()),
            });
        }
        for (name, ext) in &self.disabled_sbi {
            out.push(RegWrite {
                reg: regs::sbi_ext(*ext),
                value: 0,
                on_error: report(format!("sbi-{name}")),
            });
        }
        // KVM leaves the debug console off: only the VMM can serve it.
        if !self.disabled_sbi.iter().any(|(_, e)| *e == isa::SBI_DBCN) {
            out.push(RegWrite {
                reg: regs::sbi_ext(isa::SBI_DBCN),
                value: 1,
                on_error: OnError::Ignore,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(ext: &[&str], sbi: &[&str]) -> Options {
        Options {
            disable_ext: ext.iter().map(|s| s.to_string()).collect(),
            disable_sbi: sbi.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn unknown_names_are_refused() {
        assert!(matches!(
            HartConfig::new(&opts(&["bogus"], &[])),
            Err(Error::UnknownExtension(n)) if n == "bogus"
        ));
        assert!(matches!(
            HartConfig::new(&opts(&[], &["nope"])),
            Err(Error::UnknownSbiExtension(n)) if n == "nope"
        ));
    }

    #[test]
    fn the_debug_console_is_turned_on_unless_disabled() {
        let plain = HartConfig::new(&Options::default()).unwrap().writes(0);
        assert_eq!(
            plain,
            vec![RegWrite {
                reg: regs::sbi_ext(isa::SBI_DBCN),
                value: 1,
                on_error: OnError::Ignore
            }]
        );
        let off = HartConfig::new(&opts(&[], &["dbcn"])).unwrap().writes(0);
        assert_eq!(off.len(), 1);
        assert_eq!(off[0].value, 0);
        assert_eq!(off[0].on_error, OnError::Report("sbi-dbcn".into()));
    }

    #[test]
    fn custom_ids_must_stick_and_only_hart_0_reports_disabling() {
        let o = Options {
            custom_marchid: Some(7),
            ..opts(&["zbb"], &[])
        };
        let c = HartConfig::new(&o).unwrap();
        let w0 = c.writes(0);
        assert_eq!(
            w0[0],
            RegWrite {
                reg: regs::CONFIG_MARCHID,
                value: 7,
                on_error: OnError::Fail("marchid")
            }
        );
        assert_eq!(w0[1].on_error, OnError::Report("zbb".into()));
        let w1 = c.writes(1);
        assert_eq!(w1[0].on_error, OnError::Fail("marchid"));
        assert_eq!(w1[1].on_error, OnError::Ignore);
        assert_eq!(w0.len(), w1.len());
    }
}
