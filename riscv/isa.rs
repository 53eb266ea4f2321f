//! RISC-V ISA extensions: KVM's ids for them, the names the device tree and
//! kvmtool's `--disable-<ext>` / `--disable-sbi-<ext>` options use.

/// Multi-letter ISA extensions KVM reports through `KVM_REG_RISCV_ISA_EXT`,
/// with their uapi ids, in the order lkvm lists them. The single-letter ones
/// come from `config.isa` instead.
pub const ISA_EXTENSIONS: &[(&str, u64)] = &[
    ("smstateen", 23),
    ("ssaia", 14),
    ("sscofpmf", 54),
    ("sstc", 8),
    ("svinval", 9),
    ("svnapot", 16),
    ("svpbmt", 7),
    ("zacas", 53),
    ("zba", 17),
    ("zbb", 13),
    ("zbc", 25),
    ("zbkb", 26),
    ("zbkc", 27),
    ("zbkx", 28),
    ("zbs", 18),
    ("zfa", 51),
    ("zfh", 46),
    ("zfhmin", 47),
    ("zicbom", 11),
    ("zicboz", 12),
    ("zicntr", 19),
    ("zicond", 24),
    ("zicsr", 20),
    ("zifencei", 21),
    ("zihintntl", 48),
    ("zihintpause", 10),
    ("zihpm", 22),
    ("zknd", 29),
    ("zkne", 30),
    ("zknh", 31),
    ("zkr", 32),
    ("zksed", 33),
    ("zksh", 34),
    ("zkt", 35),
    ("ztso", 52),
    ("zvbb", 36),
    ("zvbc", 37),
    ("zvfh", 49),
    ("zvfhmin", 50),
    ("zvkb", 38),
    ("zvkg", 39),
    ("zvkned", 40),
    ("zvknha", 41),
    ("zvknhb", 42),
    ("zvksed", 43),
    ("zvksh", 44),
    ("zvkt", 45),
];

/// SBI extensions KVM implements and lets the VMM turn off, with their ids.
pub const SBI_EXTENSIONS: &[(&str, u64)] = &[
    ("legacy", 0),
    ("time", 1),
    ("ipi", 2),
    ("rfence", 3),
    ("srst", 4),
    ("hsm", 5),
    ("pmu", 6),
    ("experimental", 7),
    ("vendor", 8),
    ("dbcn", 9),
    ("sta", 10),
];

/// KVM's id for SBI DBCN, which lkvm turns on unless disabled: KVM leaves it
/// off by default since only the VMM can implement the console.
pub const SBI_DBCN: u64 = 9;

pub fn isa_ext_id(name: &str) -> Option<u64> {
    ISA_EXTENSIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, id)| *id)
}

pub fn sbi_ext_id(name: &str) -> Option<u64> {
    SBI_EXTENSIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, id)| *id)
}

/// The order single-letter extensions appear in an ISA string.
const LETTER_ORDER: &str = "iemafdqclbjtpvnsuhkorwxyzg";

/// What a hart offers, as the device tree describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HartIsa {
    /// `config.isa`: bit n set means letter 'a' + n.
    pub letters: u64,
    /// Multi-letter extensions that are on, in [`ISA_EXTENSIONS`] order.
    pub extensions: Vec<&'static str>,
}

impl HartIsa {
    fn letters(&self) -> impl Iterator<Item = char> + '_ {
        LETTER_ORDER
            .chars()
            .filter(|c| self.letters & (1 << (*c as u8 - b'a')) != 0)
    }

    /// `riscv,isa`: "rv64imafdc_zicsr_zifencei...".
    pub fn isa_string(&self) -> String {
        let mut s = String::from("rv64");
        s.extend(self.letters());
        for ext in &self.extensions {
            s.push('_');
            s.push_str(ext);
        }
        s
    }

    /// `riscv,isa-extensions`: every extension by name.
    pub fn extension_list(&self) -> Vec<String> {
        self.letters()
            .map(|c| c.to_string())
            .chain(self.extensions.iter().map(|e| e.to_string()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_have_unique_names_and_ids() {
        for table in [ISA_EXTENSIONS, SBI_EXTENSIONS] {
            for (i, (name, id)) in table.iter().enumerate() {
                for (other, other_id) in &table[i + 1..] {
                    assert_ne!(name, other);
                    assert_ne!(id, other_id, "{name} and {other}");
                }
            }
        }
        assert_eq!(isa_ext_id("zbb"), Some(13));
        assert_eq!(isa_ext_id("ssaia"), Some(14));
        assert_eq!(sbi_ext_id("dbcn"), Some(SBI_DBCN));
        assert_eq!(isa_ext_id("mte"), None);
    }

    #[test]
    fn isa_string_and_list_follow_the_canonical_order() {
        let letters = ['i', 'm', 'a', 'f', 'd', 'c', 'v']
            .iter()
            .fold(0u64, |m, c| m | 1 << (*c as u8 - b'a'));
        let isa = HartIsa {
            letters,
            extensions: vec!["sstc", "zicsr", "zifencei"],
        };
        assert_eq!(isa.isa_string(), "rv64imafdcv_sstc_zicsr_zifencei");
        assert_eq!(
            isa.extension_list(),
            vec!["i", "m", "a", "f", "d", "c", "v", "sstc", "zicsr", "zifencei"]
        );
    }
}
