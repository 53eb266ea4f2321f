//! The generic interrupt controller: which flavour, where its frames live,
//! its device-tree node, and the GICv2m MSI frame (emulated by lkvm; the
//! distributor, CPU interfaces, redistributors and ITS are KVM's).

use std::str::FromStr;
use std::sync::Arc;

use vm_fdt::FdtWriter;

use super::layout::GIC_DIST_BASE;
use crate::bus::BusDevice;
use crate::irq::IrqChip;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("unknown --irqchip '{0}' (arm64: auto, gicv2, gicv2m, gicv3, gicv3-its)")]
    Unknown(String),
    #[error("{kind} supports at most 8 vCPUs, not {cpus}")]
    TooManyCpus { kind: GicKind, cpus: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicKind {
    V2,
    V2m,
    V3,
    V3Its,
}

impl std::fmt::Display for GicKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GicKind::V2 => "gicv2",
            GicKind::V2m => "gicv2m",
            GicKind::V3 => "gicv3",
            GicKind::V3Its => "gicv3-its",
        })
    }
}

impl FromStr for GicKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "gicv2" => Ok(GicKind::V2),
            "gicv2m" => Ok(GicKind::V2m),
            "gicv3" => Ok(GicKind::V3),
            "gicv3-its" => Ok(GicKind::V3Its),
            other => Err(Error::Unknown(other.to_string())),
        }
    }
}

impl GicKind {
    pub fn is_v3(self) -> bool {
        matches!(self, GicKind::V3 | GicKind::V3Its)
    }

    /// `--irqchip`: a kind, or `None` for `auto`.
    pub fn parse_option(s: &str) -> Result<Option<GicKind>, Error> {
        match s {
            "auto" => Ok(None),
            other => other.parse().map(Some),
        }
    }

    /// kvmtool's automatic choice: the first of gicv3-its, gicv3,
    /// gicv2m, gicv2 the host can create. `can` answers whether KVM can
    /// create a vGICv3, an ITS, a vGICv2 (gicv2m is a vGICv2 with lkvm's
    /// MSI frame).
    pub fn auto(can: impl Fn(GicKind) -> bool) -> Option<GicKind> {
        [GicKind::V3Its, GicKind::V3, GicKind::V2m, GicKind::V2]
            .into_iter()
            .find(|k| match k {
                GicKind::V3Its => can(GicKind::V3) && can(GicKind::V3Its),
                GicKind::V2m => can(GicKind::V2),
                other => can(*other),
            })
    }
}

// Interrupt specifier cells.
pub const GIC_SPI: u32 = 0;
pub const GIC_PPI: u32 = 1;
pub const IRQ_TYPE_EDGE_RISING: u32 = 1;
pub const IRQ_TYPE_LEVEL_HIGH: u32 = 4;

/// SPIs for devices start at INTID 32; 96 SPIs in all.
pub const NR_IRQS: u32 = 128;
/// The GICv2m frame turns MSIs into SPIs 64..127.
pub const V2M_FIRST_SPI: u32 = 64;
pub const V2M_NUM_SPIS: u32 = 64;

pub const PHANDLE_GIC: u32 = 1;
pub const PHANDLE_MSI: u32 = 2;

const GICV3_DIST_SIZE: u64 = 0x1_0000;
const GICV3_REDIST_SIZE: u64 = 0x2_0000; // RD + SGI frames per vCPU
const GICV3_ITS_SIZE: u64 = 0x2_0000;
const GICV2_DIST_SIZE: u64 = 0x1000;
const GICV2_CPU_SIZE: u64 = 0x2000;
const GICV2M_SIZE: u64 = 0x1000;

/// Guest physical frames of the chosen GIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GicLayout {
    pub kind: GicKind,
    pub dist: (u64, u64),
    /// GICv2 CPU interface.
    pub cpu: Option<(u64, u64)>,
    /// GICv3 redistributors, one pair of 64K frames per vCPU.
    pub redist: Option<(u64, u64)>,
    pub its: Option<(u64, u64)>,
    pub v2m: Option<(u64, u64)>,
}

impl GicLayout {
    /// Frames grow down from the distributor at [`GIC_DIST_BASE`].
    pub fn new(kind: GicKind, cpus: u32) -> Result<GicLayout, Error> {
        if !kind.is_v3() && cpus > 8 {
            return Err(Error::TooManyCpus { kind, cpus });
        }
        Ok(if kind.is_v3() {
            let redist_size = GICV3_REDIST_SIZE * u64::from(cpus);
            let redist = GIC_DIST_BASE - redist_size;
            GicLayout {
                kind,
                dist: (GIC_DIST_BASE, GICV3_DIST_SIZE),
                cpu: None,
                redist: Some((redist, redist_size)),
                its: (kind == GicKind::V3Its).then_some((redist - GICV3_ITS_SIZE, GICV3_ITS_SIZE)),
                v2m: None,
            }
        } else {
            let cpu = GIC_DIST_BASE - 0x2_0000;
            GicLayout {
                kind,
                dist: (GIC_DIST_BASE, GICV2_DIST_SIZE),
                cpu: Some((cpu, GICV2_CPU_SIZE)),
                redist: None,
                its: None,
                v2m: (kind == GicKind::V2m).then_some((cpu - 0x1_0000, GICV2M_SIZE)),
            }
        })
    }

    /// The flags cell of a PPI: on GICv2 it names the CPUs the PPI reaches.
    pub fn ppi_flags(&self, cpus: u32, trigger: u32) -> u32 {
        if self.kind.is_v3() {
            trigger
        } else {
            ((1u32 << cpus.min(8)) - 1) << 8 | trigger
        }
    }

    /// Writes the interrupt controller node (and its MSI frame) into `fdt`.
    pub fn write_fdt(&self, fdt: &mut FdtWriter) -> Result<(), vm_fdt::Error> {
        let node = fdt.begin_node(&format!("intc@{:x}", self.dist.0))?;
        let mut reg = vec![self.dist.0, self.dist.1];
        if self.kind.is_v3() {
            fdt.property_string("compatible", "arm,gic-v3")?;
            if let Some((base, size)) = self.redist {
                reg.extend([base, size]);
            }
        } else {
            fdt.property_string("compatible", "arm,cortex-a15-gic")?;
            if let Some((base, size)) = self.cpu {
                reg.extend([base, size]);
            }
        }
        fdt.property_u32("#interrupt-cells", 3)?;
        fdt.property_null("interrupt-controller")?;
        fdt.property_array_u64("reg", &reg)?;
        fdt.property_u32("#address-cells", 2)?;
        fdt.property_u32("#size-cells", 2)?;
        fdt.property_null("ranges")?;
        fdt.property_phandle(PHANDLE_GIC)?;
        if let Some((base, size)) = self.its {
            let its = fdt.begin_node(&format!("msic@{base:x}"))?;
            fdt.property_string("compatible", "arm,gic-v3-its")?;
            fdt.property_null("msi-controller")?;
            fdt.property_u32("#msi-cells", 1)?;
            fdt.property_array_u64("reg", &[base, size])?;
            fdt.property_phandle(PHANDLE_MSI)?;
            fdt.end_node(its)?;
        }
        if let Some((base, size)) = self.v2m {
            let v2m = fdt.begin_node(&format!("msic@{base:x}"))?;
            fdt.property_string("compatible", "arm,gic-v2m-frame")?;
            fdt.property_null("msi-controller")?;
            fdt.property_array_u64("reg", &[base, size])?;
            fdt.property_u32("arm,msi-base-spi", V2M_FIRST_SPI)?;
            fdt.property_u32("arm,msi-num-spis", V2M_NUM_SPIS)?;
            fdt.property_phandle(PHANDLE_MSI)?;
            fdt.end_node(v2m)?;
        }
        fdt.end_node(node)
    }
}

/// SPIs as numbered interrupt lines: `KVM_IRQ_LINE` wants the type in bits
/// 24-31 and the INTID below.
pub struct SpiLines(pub Arc<dyn SpiSink>);

/// Something that raises or lowers an SPI by INTID.
pub trait SpiSink: Send + Sync {
    fn set_spi(&self, intid: u32, level: bool) -> Result<(), crate::irq::Error>;
}

impl IrqChip for SpiLines {
    fn set_level(&self, line: u32, level: bool) -> Result<(), crate::irq::Error> {
        self.0.set_spi(line, level)
    }
}

/// `KVM_IRQ_LINE`'s encoding of an SPI.
pub fn kvm_irq_line_spi(intid: u32) -> u32 {
    (1 << 24) | intid
}

const V2M_MSI_TYPER: u64 = 0x008;
pub const V2M_MSI_SETSPI_NS: u64 = 0x040;
const V2M_MSI_IIDR: u64 = 0xfcc;

/// The GICv2m MSI frame: a write of an SPI number to `MSI_SETSPI_NS`
/// raises that SPI (edge). Writes of SPIs outside the frame's range are a
/// guest error and are ignored.
pub struct V2mFrame {
    spis: Arc<dyn SpiSink>,
}

impl V2mFrame {
    pub fn new(spis: Arc<dyn SpiSink>) -> Self {
        V2mFrame { spis }
    }
}

impl BusDevice for V2mFrame {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value: u32 = match offset {
            V2M_MSI_TYPER => (V2M_FIRST_SPI << 16) | V2M_NUM_SPIS,
            // Implementer "lkvm"-ish: product 0, arm's JEP106 code for v2m.
            V2M_MSI_IIDR => 0x0000_043b,
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(i).copied().unwrap_or(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset != V2M_MSI_SETSPI_NS || data.len() < 2 {
            return;
        }
        let mut raw = [0u8; 4];
        raw[..data.len().min(4)].copy_from_slice(&data[..data.len().min(4)]);
        let spi = u32::from_le_bytes(raw) & 0x3ff;
        if !(V2M_FIRST_SPI..V2M_FIRST_SPI + V2M_NUM_SPIS).contains(&spi) {
            log::debug!("gicv2m: guest signalled SPI {spi}, outside the frame");
            return;
        }
        let pulse = self
            .spis
            .set_spi(spi, true)
            .and_then(|_| self.spis.set_spi(spi, false));
        if let Err(e) = pulse {
            log::debug!("gicv2m: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn kinds_parse_and_print() {
        for k in ["gicv2", "gicv2m", "gicv3", "gicv3-its"] {
            assert_eq!(k.parse::<GicKind>().unwrap().to_string(), k);
        }
        assert_eq!(
            "gicv4".parse::<GicKind>().unwrap_err().to_string(),
            "unknown --irqchip 'gicv4' (arm64: auto, gicv2, gicv2m, gicv3, gicv3-its)"
        );
    }

    #[test]
    fn frames_grow_down_from_the_distributor() {
        let v3 = GicLayout::new(GicKind::V3Its, 4).unwrap();
        assert_eq!(v3.dist, (0x3fff_0000, 0x1_0000));
        assert_eq!(v3.redist, Some((0x3ff7_0000, 0x8_0000)));
        assert_eq!(v3.its, Some((0x3ff5_0000, 0x2_0000)));
        let v2 = GicLayout::new(GicKind::V2m, 2).unwrap();
        assert_eq!(v2.cpu, Some((0x3ffd_0000, 0x2000)));
        assert_eq!(v2.v2m, Some((0x3ffc_0000, 0x1000)));
        assert_eq!(
            GicLayout::new(GicKind::V2, 9).unwrap_err(),
            Error::TooManyCpus {
                kind: GicKind::V2,
                cpus: 9
            }
        );
        assert!(GicLayout::new(GicKind::V3, 512).is_ok());
    }

    #[test]
    fn gicv2_ppis_carry_a_cpu_mask() {
        let v2 = GicLayout::new(GicKind::V2, 4).unwrap();
        assert_eq!(v2.ppi_flags(4, IRQ_TYPE_LEVEL_HIGH), 0xf04);
        let v3 = GicLayout::new(GicKind::V3, 4).unwrap();
        assert_eq!(v3.ppi_flags(4, IRQ_TYPE_LEVEL_HIGH), 4);
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u32, bool)>>);
    impl SpiSink for Recorder {
        fn set_spi(&self, intid: u32, level: bool) -> Result<(), crate::irq::Error> {
            self.0.lock().unwrap().push((intid, level));
            Ok(())
        }
    }

    #[test]
    fn v2m_frame_turns_setspi_writes_into_spi_pulses() {
        let rec = Arc::new(Recorder::default());
        let mut f = V2mFrame::new(rec.clone());
        let mut typer = [0u8; 4];
        f.read(V2M_MSI_TYPER, &mut typer);
        assert_eq!(u32::from_le_bytes(typer), (64 << 16) | 64);
        f.write(V2M_MSI_SETSPI_NS, &70u32.to_le_bytes());
        f.write(V2M_MSI_SETSPI_NS, &200u32.to_le_bytes()); // out of range
        f.write(V2M_MSI_SETSPI_NS, &[1]); // too short
        f.write(0x100, &70u32.to_le_bytes()); // wrong register
        assert_eq!(*rec.0.lock().unwrap(), vec![(70, true), (70, false)]);
        assert_eq!(kvm_irq_line_spi(33), 0x0100_0021);
    }

    #[test]
    fn auto_takes_the_first_the_host_can_create() {
        let host = |kinds: &'static [GicKind]| move |k: GicKind| kinds.contains(&k);
        const ALL: &[GicKind] = &[GicKind::V3, GicKind::V3Its, GicKind::V2];
        assert_eq!(GicKind::auto(host(ALL)), Some(GicKind::V3Its));
        assert_eq!(GicKind::auto(host(&[GicKind::V3])), Some(GicKind::V3));
        // An ITS without a GICv3 is no choice.
        assert_eq!(
            GicKind::auto(host(&[GicKind::V3Its, GicKind::V2])),
            Some(GicKind::V2m)
        );
        assert_eq!(GicKind::auto(host(&[])), None);
        assert_eq!(GicKind::parse_option("auto"), Ok(None));
        assert_eq!(GicKind::parse_option("gicv2"), Ok(Some(GicKind::V2)));
        assert!(GicKind::parse_option("gicv4").is_err());
    }
}
