//! The two interrupt controllers a RISC-V guest can get: in-kernel AIA
//! (APLIC + one IMSIC file per hart, `KVM_DEV_TYPE_RISCV_AIA`) where the
//! host has it, or lkvm's userspace PLIC. Here: which, where, and how the
//! device tree describes it.

use std::str::FromStr;

use vm_fdt::FdtWriter;

use super::layout::{
    APLIC_BASE, APLIC_SIZE, IMSIC_BASE, IMSIC_PER_HART, NR_SOURCES, PLIC_BASE, PLIC_SIZE,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("unknown --irqchip '{0}' (riscv: aia, plic)")]
    Unknown(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqchipKind {
    Aia,
    Plic,
}

impl FromStr for IrqchipKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "aia" => Ok(IrqchipKind::Aia),
            "plic" => Ok(IrqchipKind::Plic),
            other => Err(Error::Unknown(other.to_string())),
        }
    }
}

impl std::fmt::Display for IrqchipKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IrqchipKind::Aia => "aia",
            IrqchipKind::Plic => "plic",
        })
    }
}

pub const PHANDLE_IRQCHIP: u32 = 1;
pub const PHANDLE_IMSIC: u32 = 2;
/// Hart `n`'s local interrupt controller.
pub const fn phandle_cpu_intc(hart: u32) -> u32 {
    0x100 + hart
}

/// Supervisor external interrupt, as the hart-local controller numbers it.
pub const IRQ_S_EXT: u32 = 9;
/// IMSIC interrupt identities per file: 2^n - 1, at least 63.
pub const IMSIC_IDS: u32 = 255;

/// Bits needed to number `n` things (at least 1: KVM wants hart bits > 0).
pub fn index_bits(n: u32) -> u32 {
    (32 - n.saturating_sub(1).leading_zeros()).max(1)
}

/// The IMSIC region: one S-level file per hart.
pub fn imsic_region(harts: u32) -> (u64, u64) {
    (IMSIC_BASE, IMSIC_PER_HART * u64::from(harts))
}

pub fn imsic_addr(hart: u32) -> u64 {
    IMSIC_BASE + IMSIC_PER_HART * u64::from(hart)
}

/// Writes the interrupt controller node(s) for `harts` harts.
pub fn write_fdt(fdt: &mut FdtWriter, kind: IrqchipKind, harts: u32) -> Result<(), vm_fdt::Error> {
    match kind {
        IrqchipKind::Plic => {
            let node = fdt.begin_node(&format!("plic@{PLIC_BASE:x}"))?;
            fdt.property_string_list(
                "compatible",
                vec!["sifive,plic-1.0.0".into(), "riscv,plic0".into()],
            )?;
            fdt.property_u32("#interrupt-cells", 1)?;
            fdt.property_null("interrupt-controller")?;
            fdt.property_u32("#address-cells", 0)?;
            fdt.property_array_u64("reg", &[PLIC_BASE, PLIC_SIZE])?;
            fdt.property_u32("riscv,ndev", NR_SOURCES)?;
            let ext: Vec<u32> = (0..harts)
                .flat_map(|h| [phandle_cpu_intc(h), IRQ_S_EXT])
                .collect();
            fdt.property_array_u32("interrupts-extended", &ext)?;
            fdt.property_phandle(PHANDLE_IRQCHIP)?;
            fdt.end_node(node)
        }
        IrqchipKind::Aia => {
            let (base, size) = imsic_region(harts);
            let imsic = fdt.begin_node(&format!("imsics@{base:x}"))?;
            fdt.property_string("compatible", "riscv,imsics")?;
            fdt.property_null("interrupt-controller")?;
            fdt.property_u32("#interrupt-cells", 0)?;
            fdt.property_null("msi-controller")?;
            fdt.property_u32("#msi-cells", 0)?;
            fdt.property_array_u64("reg", &[base, size])?;
            let ext: Vec<u32> = (0..harts)
                .flat_map(|h| [phandle_cpu_intc(h), IRQ_S_EXT])
                .collect();
            fdt.property_array_u32("interrupts-extended", &ext)?;
            fdt.property_u32("riscv,num-ids", IMSIC_IDS)?;
            fdt.property_phandle(PHANDLE_IMSIC)?;
            fdt.end_node(imsic)?;
            let aplic = fdt.begin_node(&format!("aplic@{APLIC_BASE:x}"))?;
            fdt.property_string("compatible", "riscv,aplic")?;
            fdt.property_null("interrupt-controller")?;
            fdt.property_u32("#interrupt-cells", 2)?;
            // Needed by PCI interrupt-map entries that point here.
            fdt.property_u32("#address-cells", 0)?;
            fdt.property_u32("msi-parent", PHANDLE_IMSIC)?;
            fdt.property_array_u64("reg", &[APLIC_BASE, APLIC_SIZE])?;
            fdt.property_u32("riscv,num-sources", NR_SOURCES)?;
            fdt.property_phandle(PHANDLE_IRQCHIP)?;
            fdt.end_node(aplic)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_bits_cover_the_harts() {
        assert_eq!("aia".parse::<IrqchipKind>(), Ok(IrqchipKind::Aia));
        assert_eq!("plic".parse::<IrqchipKind>(), Ok(IrqchipKind::Plic));
        assert_eq!(
            "gicv3".parse::<IrqchipKind>().unwrap_err().to_string(),
            "unknown --irqchip 'gicv3' (riscv: aia, plic)"
        );
        assert_eq!(
            (index_bits(1), index_bits(2), index_bits(4), index_bits(5)),
            (1, 1, 2, 3)
        );
        assert_eq!(imsic_region(4), (0x2800_0000, 0x4000));
        assert_eq!(imsic_addr(3), 0x2800_3000);
    }
}
