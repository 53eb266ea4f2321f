//! The arm64 guest's device tree, built in one pass: root, cpus, memory,
//! chosen, psci, the GIC, timer, PMU, SDEI firmware and every registered
//! device.

use vm_fdt::FdtWriter;

use super::gic::{
    GicKind, GicLayout, GIC_PPI, GIC_SPI, IRQ_TYPE_EDGE_RISING, IRQ_TYPE_LEVEL_HIGH, PHANDLE_GIC,
    PHANDLE_MSI,
};
use super::layout::PCI_ECAM_BASE;
use super::regs::MPIDR_HWID_MASK;
use crate::fdt::{begin_chosen, memory_node, DeviceTree, MsiParent, PciHostNode};
use crate::hw::pci::ecam;
use crate::irq::Trigger;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building the device tree: {0}")]
    Fdt(#[from] vm_fdt::Error),
    #[error("device {0} has interrupt {1}, which is not an SPI")]
    NotSpi(String, u32),
}

/// The arch timer's PPIs (secure, non-secure, virtual, hypervisor physical),
/// as PPI numbers (INTID - 16).
const TIMER_PPIS: [u32; 4] = [13, 14, 11, 10];
/// PMUv3 overflow interrupt: PPI 7, INTID 23.
pub const PMU_PPI: u32 = 7;

/// Everything the device tree describes.
#[derive(Debug)]
pub struct FdtInputs<'a> {
    /// MPIDR of each vCPU, as KVM assigned them.
    pub mpidrs: &'a [u64],
    pub ram_base: u64,
    pub ram_size: u64,
    pub cmdline: &'a str,
    pub initrd: Option<(u64, u64)>,
    pub gic: &'a GicLayout,
    pub pmu: bool,
    /// Async PF is on: emit `/firmware/sdei`.
    pub sdei: bool,
    pub kaslr_seed: Option<u64>,
    /// The platform devices and the PCI host.
    pub devices: &'a DeviceTree,
}

pub fn build(inp: &FdtInputs<'_>) -> Result<Vec<u8>, Error> {
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_string("compatible", "linux,dummy-virt")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_u32("interrupt-parent", PHANDLE_GIC)?;

    let stdout = inp
        .devices
        .stdout_node()
        .map(|dev| format!("/{}", dev.node_name()));
    let chosen = begin_chosen(&mut fdt, inp.cmdline, inp.initrd, stdout.as_deref())?;
    if let Some(seed) = inp.kaslr_seed {
        fdt.property_u64("kaslr-seed", seed)?;
    }
    fdt.end_node(chosen)?;
    memory_node(&mut fdt, inp.ram_base, inp.ram_size)?;

    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    for mpidr in inp.mpidrs {
        let hwid = (mpidr & MPIDR_HWID_MASK) as u32;
        let cpu = fdt.begin_node(&format!("cpu@{hwid:x}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_string("compatible", "arm,arm-v8")?;
        fdt.property_string("enable-method", "psci")?;
        fdt.property_u32("reg", hwid)?;
        fdt.end_node(cpu)?;
    }
    fdt.end_node(cpus)?;

    // PSCI 0.2 is implemented by KVM; its function ids are the standard ones.
    let psci = fdt.begin_node("psci")?;
    fdt.property_string("compatible", "arm,psci-0.2")?;
    fdt.property_string("method", "hvc")?;
    fdt.end_node(psci)?;

    inp.gic.write_fdt(&mut fdt)?;

    let ncpus = inp.mpidrs.len() as u32;
    let ppi_flags = inp.gic.ppi_flags(ncpus, IRQ_TYPE_LEVEL_HIGH);
    let timer = fdt.begin_node("timer")?;
    fdt.property_string("compatible", "arm,armv8-timer")?;
    let irqs: Vec<u32> = TIMER_PPIS
        .iter()
        .flat_map(|ppi| [GIC_PPI, *ppi, ppi_flags])
        .collect();
    fdt.property_array_u32("interrupts", &irqs)?;
    fdt.property_null("always-on")?;
    fdt.end_node(timer)?;

    if inp.pmu {
        let pmu = fdt.begin_node("pmu")?;
        fdt.property_string("compatible", "arm,armv8-pmuv3")?;
        fdt.property_array_u32("interrupts", &[GIC_PPI, PMU_PPI, ppi_flags])?;
        fdt.end_node(pmu)?;
    }

    if inp.sdei {
        let firmware = fdt.begin_node("firmware")?;
        let sdei = fdt.begin_node("sdei")?;
        fdt.property_string("compatible", "arm,sdei-1.0")?;
        fdt.property_string("method", "hvc")?;
        fdt.end_node(sdei)?;
        fdt.end_node(firmware)?;
    }

    for dev in &inp.devices.nodes {
        let spec = match dev.irq {
            Some(irq) => {
                let spi = irq
                    .checked_sub(32)
                    .ok_or_else(|| Error::NotSpi(dev.node_name(), irq))?;
                let trigger = match dev.trigger {
                    Trigger::Edge => IRQ_TYPE_EDGE_RISING,
                    Trigger::Level => IRQ_TYPE_LEVEL_HIGH,
                };
                Some([GIC_SPI, spi, trigger])
            }
            None => None,
        };
        dev.write(&mut fdt, spec.as_ref().map(|s| &s[..]))?;
    }

    if let Some(info) = inp.devices.pci.as_ref().map(|h| &h.info) {
        let spec = |intid: u32| vec![GIC_SPI, intid.saturating_sub(32), IRQ_TYPE_LEVEL_HIGH];
        PciHostNode {
            ecam_base: PCI_ECAM_BASE,
            ecam_size: ecam::BUS_SIZE,
            info,
            parent: PHANDLE_GIC,
            parent_address_cells: 2,
            irq_spec: &spec,
            msi: match (info.msi, inp.gic.kind) {
                (false, _) => None,
                (true, GicKind::V3Its) => Some(MsiParent::ById(PHANDLE_MSI)),
                (true, _) => Some(MsiParent::Plain(PHANDLE_MSI)),
            },
        }
        .write(&mut fdt)?;
    }

    fdt.end_node(root)?;
    Ok(fdt.finish()?)
}

#[cfg(test)]
mod tests {
    use super::super::layout::{
        LEGACY, PCI_MEM_BASE, PCI_MEM_SIZE, RAM_BASE, UART_BASE, UART_LEN, VIRTIO_MMIO_BASE,
    };
    use super::super::regs::kvm_mpidr;
    use super::*;
    use crate::fdt::testing::assert_golden;
    use crate::fdt::{DeviceNode, PciHost};
    use crate::virtio::setup::{PciHostInfo, Transport};

    struct Case {
        cpus: u32,
        gic: GicKind,
        initrd: bool,
        sdei: bool,
        pmu: bool,
        virtio: Option<Transport>,
    }

    /// Two virtio devices (the SPIs after the UARTs') as each transport
    /// shows them.
    fn virtio_parts(c: &Case) -> (Vec<DeviceNode>, Option<PciHostInfo>) {
        match c.virtio {
            Some(Transport::Mmio) => (
                (0..2)
                    .map(|i| DeviceNode {
                        name: "virtio",
                        compatible: vec!["virtio,mmio"],
                        reg_base: VIRTIO_MMIO_BASE + 0x200 * i,
                        reg_size: 0x200,
                        irq: Some(LEGACY.next_irq() + i as u32),
                        trigger: Trigger::Level,
                        u32_props: vec![],
                    })
                    .collect(),
                None,
            ),
            Some(Transport::Pci) => (
                vec![],
                Some(PciHostInfo {
                    mem_base: PCI_MEM_BASE,
                    mem_size: PCI_MEM_SIZE,
                    cpu_base: PCI_MEM_BASE,
                    intx: vec![(1, LEGACY.next_irq()), (2, LEGACY.next_irq() + 1)],
                    msi: matches!(c.gic, GicKind::V3Its | GicKind::V2m),
                }),
            ),
            None => (vec![], None),
        }
    }

    fn blob(c: &Case) -> Vec<u8> {
        let mpidrs: Vec<u64> = (0..c.cpus).map(kvm_mpidr).collect();
        let gic = GicLayout::new(c.gic, c.cpus).unwrap();
        let (virtio, pci) = virtio_parts(c);
        let mut devices = DeviceTree::default();
        devices.extend(LEGACY.nodes(), true);
        devices.extend(virtio, false);
        devices.pci = pci.map(|info| PciHost {
            info,
            functions: vec![],
        });
        build(&FdtInputs {
            mpidrs: &mpidrs,
            ram_base: RAM_BASE,
            ram_size: 256 << 20,
            cmdline: "console=ttyS0 earlycon lkvm.token=golden",
            initrd: c.initrd.then_some((0x8f00_0000, 0x12_3456)),
            gic: &gic,
            pmu: c.pmu,
            sdei: c.sdei,
            kaslr_seed: Some(0x0123_4567_89ab_cdef),
            devices: &devices,
        })
        .unwrap()
    }

    fn case(cpus: u32, gic: GicKind) -> Case {
        Case {
            cpus,
            gic,
            initrd: false,
            sdei: false,
            pmu: false,
            virtio: None,
        }
    }

    #[test]
    fn golden_2cpu_gicv3_virtio_mmio() {
        let c = Case {
            virtio: Some(Transport::Mmio),
            ..case(2, GicKind::V3)
        };
        assert_golden("aarch64/2cpu-gicv3-virtio-mmio", &blob(&c));
    }

    #[test]
    fn golden_2cpu_gicv3_its_virtio_pci() {
        let c = Case {
            virtio: Some(Transport::Pci),
            ..case(2, GicKind::V3Its)
        };
        assert_golden("aarch64/2cpu-gicv3-its-virtio-pci", &blob(&c));
    }

    #[test]
    fn golden_1cpu_gicv3_virtio_pci_without_msi() {
        let c = Case {
            virtio: Some(Transport::Pci),
            ..case(1, GicKind::V3)
        };
        assert_golden("aarch64/1cpu-gicv3-virtio-pci-intx", &blob(&c));
    }

    #[test]
    fn golden_1cpu_gicv3() {
        assert_golden("aarch64/1cpu-gicv3", &blob(&case(1, GicKind::V3)));
    }

    #[test]
    fn golden_4cpu_gicv3() {
        assert_golden("aarch64/4cpu-gicv3", &blob(&case(4, GicKind::V3)));
    }

    #[test]
    fn golden_4cpu_gicv3_its_with_initrd_and_pmu() {
        let c = Case {
            initrd: true,
            pmu: true,
            ..case(4, GicKind::V3Its)
        };
        assert_golden("aarch64/4cpu-gicv3-its-initrd-pmu", &blob(&c));
    }

    #[test]
    fn golden_1cpu_gicv2() {
        assert_golden("aarch64/1cpu-gicv2", &blob(&case(1, GicKind::V2)));
    }

    #[test]
    fn golden_4cpu_gicv2m_with_initrd() {
        let c = Case {
            initrd: true,
            ..case(4, GicKind::V2m)
        };
        assert_golden("aarch64/4cpu-gicv2m-initrd", &blob(&c));
    }

    #[test]
    fn golden_1cpu_gicv3_async_pf_on() {
        let c = Case {
            sdei: true,
            ..case(1, GicKind::V3)
        };
        assert_golden("aarch64/1cpu-gicv3-asyncpf", &blob(&c));
    }

    #[test]
    fn sdei_node_is_present_only_with_async_pf() {
        let on = crate::fdt::testing::decompile(&blob(&Case {
            sdei: true,
            ..case(2, GicKind::V3)
        }));
        let off = crate::fdt::testing::decompile(&blob(&case(2, GicKind::V3)));
        assert!(on.contains("compatible = \"arm,sdei-1.0\""));
        assert!(on.contains("method = \"hvc\""));
        assert!(!off.contains("sdei"));
    }

    #[test]
    fn device_interrupts_must_be_spis() {
        let gic = GicLayout::new(GicKind::V3, 1).unwrap();
        let bad = DeviceNode::ns16550a(UART_BASE, UART_LEN, 20);
        let err = build(&FdtInputs {
            mpidrs: &[kvm_mpidr(0)],
            ram_base: RAM_BASE,
            ram_size: 64 << 20,
            cmdline: "",
            initrd: None,
            gic: &gic,
            pmu: false,
            sdei: false,
            kaslr_seed: None,
            devices: &DeviceTree {
                nodes: vec![bad],
                ..Default::default()
            },
        })
        .unwrap_err();
        assert!(matches!(err, Error::NotSpi(_, 20)));
    }
}
