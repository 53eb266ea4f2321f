//! vCPU registers as text, for crash reports and `lkvm debug --dump`: every
//! architecture lists its own registers, this formats them the same way.

use std::fmt::Write as _;

/// Values per line in a register bank (`x0`..`x30`, `r0`..`r31`).
const PER_LINE: usize = 4;

/// Collects lines of `name value` pairs; an unreadable value shows as `?`.
#[derive(Default)]
pub struct RegisterDump {
    out: String,
}

impl RegisterDump {
    /// One line of named 64-bit registers, zero-padded so columns align.
    pub fn line(&mut self, regs: &[(&str, Option<u64>)]) -> &mut Self {
        self.words(regs, hex)
    }

    /// One line of control or segment state, unpadded (`cr0 0x11`).
    pub fn short_line(&mut self, regs: &[(&str, Option<u64>)]) -> &mut Self {
        self.words(regs, |v| {
            v.map_or_else(|| "?".to_string(), |v| format!("{v:#x}"))
        })
    }

    fn words(&mut self, regs: &[(&str, Option<u64>)], fmt: fn(Option<u64>) -> String) -> &mut Self {
        let words: Vec<String> = regs
            .iter()
            .map(|(name, value)| format!("{name} {}", fmt(*value)))
            .collect();
        let _ = writeln!(self.out, "{}", words.join(" "));
        self
    }

    /// A numbered bank (`x0`, `x1`, ...), four to a line.
    pub fn bank(&mut self, prefix: &str, values: &[Option<u64>]) -> &mut Self {
        for (i, chunk) in values.chunks(PER_LINE).enumerate() {
            let words: Vec<String> = chunk
                .iter()
                .enumerate()
                .map(|(j, v)| {
                    let name = format!("{prefix}{}", i * PER_LINE + j);
                    format!("{name:<3} {}", hex(*v))
                })
                .collect();
            let _ = writeln!(self.out, "{}", words.join(" "));
        }
        self
    }

    /// A line saying why some registers are missing.
    pub fn unavailable(&mut self, what: &str, why: impl std::fmt::Display) -> &mut Self {
        let _ = writeln!(self.out, "{what} unavailable: {why}");
        self
    }

    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.out)
    }
}

fn hex(value: Option<u64>) -> String {
    value.map_or_else(|| "?".to_string(), |v| format!("{v:#018x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_banks_read_like_a_register_file() {
        let text = RegisterDump::default()
            .line(&[("pc", Some(0x8000_0000)), ("sp", None)])
            .short_line(&[("cr0", Some(0x11))])
            .bank("x", &[Some(1), Some(2), Some(3), Some(4), Some(5)])
            .unavailable("special registers", "EIO")
            .finish();
        assert_eq!(
            text,
            "pc 0x0000000080000000 sp ?\n\
             cr0 0x11\n\
             x0  0x0000000000000001 x1  0x0000000000000002 x2  0x0000000000000003 x3  0x0000000000000004\n\
             x4  0x0000000000000005\n\
             special registers unavailable: EIO\n"
        );
    }
}
