//! The Intel MultiProcessor Specification 1.4 table: how a guest without ACPI
//! finds its CPUs, its IOAPIC and how ISA interrupts are wired.

use super::layout::{IOAPIC_ADDR, LAPIC_ADDR};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("x86 guests described by an MP table support at most {max} vCPUs, not {cpus}")]
    TooManyCpus { cpus: u32, max: u32 },
}

/// APIC ids are 8 bits and the IOAPIC takes the id after the last CPU.
pub const MAX_CPUS: u32 = 254;

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;
/// Family 6 signature and the FPU + APIC feature bits.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IOINT: u8 = 3;
const ENTRY_LINT: u8 = 4;

const INT_VECTORED: u8 = 0;
const INT_NMI: u8 = 1;
const INT_EXTINT: u8 = 3;

pub const PCI_BUS_ID: u8 = 0;
pub const ISA_BUS_ID: u8 = 1;
/// ISA IRQs wired one-to-one to IOAPIC pins, as KVM's default GSI routing does.
const ISA_IRQS: u8 = 16;
/// PCI INTx: active high, level triggered (MP spec flags: PO=01, EL=11).
const PCI_INT_FLAGS: u16 = 0b1101;

/// A PCI slot's INTA# and the IOAPIC pin it is wired to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciIrq {
    pub slot: u8,
    pub pin: u8,
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |s, b| s.wrapping_sub(*b))
}

/// The MP table's PCI interrupt entries: each occupied slot's INTA# pin.
pub fn pci_irqs(host: Option<&crate::fdt::PciHost>) -> Vec<PciIrq> {
    host.map_or_else(Vec::new, |h| {
        h.info
            .intx
            .iter()
            .filter_map(|&(slot, irq)| {
                Some(PciIrq {
                    slot,
                    pin: u8::try_from(irq).ok()?,
                })
            })
            .collect()
    })
}

/// Builds the floating pointer and configuration table for `cpus` CPUs and
/// the given PCI interrupt wiring, to be placed at guest physical `base`.
pub fn build(cpus: u32, base: u64, pci: &[PciIrq]) -> Result<Vec<u8>, Error> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(Error::TooManyCpus {
            cpus,
            max: MAX_CPUS,
        });
    }
    let ioapic_id = cpus as u8;
    let mut entries: Vec<u8> = Vec::new();
    let mut count = 0u16;
    for id in 0..cpus as u8 {
        let flags = CPU_ENABLED | if id == 0 { CPU_BOOTSTRAP } else { 0 };
        entries.extend([ENTRY_PROCESSOR, id, APIC_VERSION, flags]);
        entries.extend(CPU_SIGNATURE.to_le_bytes());
        entries.extend(CPU_FEATURES.to_le_bytes());
        entries.extend([0u8; 8]);
        count += 1;
    }
    for (id, name) in [(PCI_BUS_ID, b"PCI   "), (ISA_BUS_ID, b"ISA   ")] {
        entries.extend([ENTRY_BUS, id]);
        entries.extend(name);
        count += 1;
    }
    entries.extend([ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend(IOAPIC_ADDR.to_le_bytes());
    count += 1;
    for irq in 0..ISA_IRQS {
        // Flags 0: polarity and trigger conform to the ISA bus (high, edge).
        entries.extend([
            ENTRY_IOINT,
            INT_VECTORED,
            0,
            0,
            ISA_BUS_ID,
            irq,
            ioapic_id,
            irq,
        ]);
        count += 1;
    }
    for p in pci {
        // The source bus IRQ of a PCI interrupt is (device << 2) | pin, INTA# = 0.
        entries.extend([ENTRY_IOINT, INT_VECTORED]);
        entries.extend(PCI_INT_FLAGS.to_le_bytes());
        entries.extend([PCI_BUS_ID, p.slot << 2, ioapic_id, p.pin]);
        count += 1;
    }
    // LINT0 takes the 8259's ExtINT, LINT1 the NMI, on every local APIC.
    for (kind, lint) in [(INT_EXTINT, 0u8), (INT_NMI, 1u8)] {
        entries.extend([ENTRY_LINT, kind, 0, 0, ISA_BUS_ID, 0, 0xff, lint]);
        count += 1;
    }

    let mut table = Vec::with_capacity(44 + entries.len());
    table.extend(b"PCMP");
    table.extend(((44 + entries.len()) as u16).to_le_bytes());
    table.push(4); // spec revision 1.4
    table.push(0); // checksum, below
    table.extend(b"LKVM    ");
    table.extend(b"LKVM GUEST  ");
    table.extend(0u32.to_le_bytes()); // no OEM table
    table.extend(0u16.to_le_bytes());
    table.extend(count.to_le_bytes());
    table.extend(LAPIC_ADDR.to_le_bytes());
    table.extend(0u16.to_le_bytes()); // no extended table
    table.push(0);
    table.push(0);
    table.extend(&entries);
    table[7] = checksum(&table);

    let mut out = Vec::with_capacity(16 + table.len());
    out.extend(b"_MP_");
    out.extend(((base + 16) as u32).to_le_bytes());
    out.push(1); // length in 16-byte units
    out.push(4);
    out.push(0); // checksum, below
    out.extend([0u8; 5]); // feature bytes: configuration table present
    out[10] = checksum(&out[..16]);
    out.extend(table);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |s, x| s.wrapping_add(*x))
    }

    #[test]
    fn checksums_hold_and_the_pointer_points_at_the_table() {
        let t = build(4, 0x9fc00, &[]).unwrap();
        assert_eq!(&t[..4], b"_MP_");
        assert_eq!(sum(&t[..16]), 0);
        assert_eq!(u32::from_le_bytes(t[4..8].try_into().unwrap()), 0x9fc10);
        let table = &t[16..];
        assert_eq!(&table[..4], b"PCMP");
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(len, table.len());
        assert_eq!(sum(table), 0);
        assert_eq!(
            u32::from_le_bytes(table[36..40].try_into().unwrap()),
            LAPIC_ADDR
        );
        // 4 CPUs + 2 buses + IOAPIC + 16 ISA IRQs + 2 local interrupts
        assert_eq!(
            u16::from_le_bytes([table[34], table[35]]),
            4 + 2 + 1 + 16 + 2
        );
    }

    #[test]
    fn processors_are_numbered_with_cpu0_as_bootstrap() {
        let t = build(3, 0x9fc00, &[]).unwrap();
        let entries = &t[16 + 44..];
        for id in 0..3usize {
            let e = &entries[id * 20..id * 20 + 20];
            assert_eq!(e[0], ENTRY_PROCESSOR);
            assert_eq!(e[1] as usize, id);
            assert_eq!(e[3], if id == 0 { 3 } else { 1 });
        }
        let ioapic = &entries[60 + 16..60 + 24];
        assert_eq!(ioapic[..4], [ENTRY_IOAPIC, 3, IOAPIC_VERSION, 1]);
        assert_eq!(
            u32::from_le_bytes(ioapic[4..8].try_into().unwrap()),
            IOAPIC_ADDR
        );
        // the timer IRQ goes to pin 0 of the IOAPIC
        let irq0 = &entries[60 + 24..60 + 32];
        assert_eq!(irq0, [ENTRY_IOINT, INT_VECTORED, 0, 0, ISA_BUS_ID, 0, 3, 0]);
    }

    #[test]
    fn cpu_count_is_bounded_by_apic_ids() {
        assert!(build(MAX_CPUS, 0, &[]).is_ok());
        assert_eq!(
            build(255, 0, &[]),
            Err(Error::TooManyCpus {
                cpus: 255,
                max: MAX_CPUS
            })
        );
        assert!(build(0, 0, &[]).is_err());
    }

    #[test]
    fn pci_slots_get_level_interrupt_entries() {
        let t = build(
            1,
            0x9fc00,
            &[PciIrq { slot: 1, pin: 16 }, PciIrq { slot: 2, pin: 17 }],
        )
        .unwrap();
        let table = &t[16..];
        assert_eq!(sum(table), 0);
        // 1 CPU + 2 buses + IOAPIC + 16 ISA + 2 PCI + 2 LINT
        assert_eq!(u16::from_le_bytes([table[34], table[35]]), 24);
        let find = |entry: [u8; 8]| table.windows(8).any(|w| w == entry);
        assert!(find([
            ENTRY_IOINT,
            INT_VECTORED,
            0x0d,
            0,
            PCI_BUS_ID,
            1 << 2,
            1,
            16
        ]));
        assert!(find([
            ENTRY_IOINT,
            INT_VECTORED,
            0x0d,
            0,
            PCI_BUS_ID,
            2 << 2,
            1,
            17
        ]));
    }
}
