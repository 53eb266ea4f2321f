//! The RISC-V guest's device tree, in one pass: root, chosen, memory, cpus
//! (ISA from KVM, MMU type from satp mode, timebase from the timer, a local
//! interrupt controller per hart), then under `/soc` the interrupt
//! controller and every registered device.

use vm_fdt::FdtWriter;

use super::irqchip::{self, phandle_cpu_intc, IrqchipKind, PHANDLE_IMSIC, PHANDLE_IRQCHIP};
use super::isa::HartIsa;
use super::layout::PCI_ECAM_BASE;
use crate::fdt::{begin_chosen, memory_node, DeviceTree, MsiParent, PciHostNode};
use crate::hw::pci::ecam;
use crate::irq::Trigger;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building the device tree: {0}")]
    Fdt(#[from] vm_fdt::Error),
}

/// What every hart reports (lkvm gives them all the same).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuInfo {
    pub isa: HartIsa,
    /// `riscv,sv39` / `sv48` / `sv57`, from `config.satp_mode`.
    pub mmu_type: Option<&'static str>,
    pub timebase_frequency: u32,
    pub cbom_block_size: Option<u32>,
    pub cboz_block_size: Option<u32>,
}

#[derive(Debug)]
pub struct FdtInputs<'a> {
    pub harts: u32,
    pub cpu: &'a CpuInfo,
    pub ram_base: u64,
    pub ram_size: u64,
    pub cmdline: &'a str,
    pub initrd: Option<(u64, u64)>,
    pub irqchip: IrqchipKind,
    /// The platform devices and the PCI host.
    pub devices: &'a DeviceTree,
}

/// The APLIC's interrupt specifier `type` cell.
const IRQ_TYPE_EDGE_RISING: u32 = 1;
const IRQ_TYPE_LEVEL_HIGH: u32 = 4;

pub fn build(inp: &FdtInputs<'_>) -> Result<Vec<u8>, Error> {
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_string("compatible", "linux,dummy-virt")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;

    let stdout = inp
        .devices
        .stdout_node()
        .map(|dev| format!("/soc/{}", dev.node_name()));
    let chosen = begin_chosen(&mut fdt, inp.cmdline, inp.initrd, stdout.as_deref())?;
    fdt.end_node(chosen)?;
    memory_node(&mut fdt, inp.ram_base, inp.ram_size)?;

    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    fdt.property_u32("timebase-frequency", inp.cpu.timebase_frequency)?;
    for hart in 0..inp.harts {
        let cpu = fdt.begin_node(&format!("cpu@{hart:x}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_u32("reg", hart)?;
        fdt.property_string("status", "okay")?;
        fdt.property_string("compatible", "riscv")?;
        fdt.property_string("riscv,isa", &inp.cpu.isa.isa_string())?;
        fdt.property_string("riscv,isa-base", "rv64i")?;
        fdt.property_string_list("riscv,isa-extensions", inp.cpu.isa.extension_list())?;
        if let Some(mmu) = inp.cpu.mmu_type {
            fdt.property_string("mmu-type", mmu)?;
        }
        if let Some(size) = inp.cpu.cbom_block_size {
            fdt.property_u32("riscv,cbom-block-size", size)?;
        }
        if let Some(size) = inp.cpu.cboz_block_size {
            fdt.property_u32("riscv,cboz-block-size", size)?;
        }
        let intc = fdt.begin_node("interrupt-controller")?;
        fdt.property_string("compatible", "riscv,cpu-intc")?;
        fdt.property_u32("#interrupt-cells", 1)?;
        fdt.property_null("interrupt-controller")?;
        fdt.property_phandle(phandle_cpu_intc(hart))?;
        fdt.end_node(intc)?;
        fdt.end_node(cpu)?;
    }
    fdt.end_node(cpus)?;

    let soc = fdt.begin_node("soc")?;
    fdt.property_string("compatible", "simple-bus")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_null("ranges")?;
    fdt.property_u32("interrupt-parent", PHANDLE_IRQCHIP)?;
    irqchip::write_fdt(&mut fdt, inp.irqchip, inp.harts)?;
    for dev in &inp.devices.nodes {
        let spec = dev.irq.map(|irq| match inp.irqchip {
            IrqchipKind::Plic => vec![irq],
            IrqchipKind::Aia => {
                let kind = match dev.trigger {
                    Trigger::Edge => IRQ_TYPE_EDGE_RISING,
                    Trigger::Level => IRQ_TYPE_LEVEL_HIGH,
                };
                vec![irq, kind]
            }
        });
        dev.write(&mut fdt, spec.as_deref())?;
    }
    if let Some(info) = inp.devices.pci.as_ref().map(|h| &h.info) {
        let spec = |irq: u32| match inp.irqchip {
            IrqchipKind::Plic => vec![irq],
            IrqchipKind::Aia => vec![irq, IRQ_TYPE_LEVEL_HIGH],
        };
        PciHostNode {
            ecam_base: PCI_ECAM_BASE,
            ecam_size: ecam::BUS_SIZE,
            info,
            parent: PHANDLE_IRQCHIP,
            parent_address_cells: 0,
            irq_spec: &spec,
            msi: (info.msi && inp.irqchip == IrqchipKind::Aia)
                .then_some(MsiParent::Plain(PHANDLE_IMSIC)),
        }
        .write(&mut fdt)?;
    }
    fdt.end_node(soc)?;

    fdt.end_node(root)?;
    Ok(fdt.finish()?)
}

#[cfg(test)]
mod tests {
    use super::super::layout::{LEGACY, RAM_BASE};
    use super::*;
    use crate::fdt::testing::{assert_golden, decompile};
    use crate::fdt::{DeviceNode, PciHost};
    use crate::virtio::setup::PciHostInfo;

    fn cpu(extensions: Vec<&'static str>) -> CpuInfo {
        let letters = "imafdc".bytes().fold(0u64, |m, c| m | 1 << (c - b'a'));
        CpuInfo {
            isa: HartIsa {
                letters,
                extensions,
            },
            mmu_type: Some("riscv,sv57"),
            timebase_frequency: 10_000_000,
            cbom_block_size: Some(64),
            cboz_block_size: Some(64),
        }
    }

    fn blob(harts: u32, irqchip: IrqchipKind, cpu: &CpuInfo, initrd: bool) -> Vec<u8> {
        blob_with(harts, irqchip, cpu, initrd, vec![], None)
    }

    fn blob_with(
        harts: u32,
        irqchip: IrqchipKind,
        cpu: &CpuInfo,
        initrd: bool,
        virtio: Vec<DeviceNode>,
        pci: Option<PciHostInfo>,
    ) -> Vec<u8> {
        let mut devices = DeviceTree::default();
        devices.extend(LEGACY.nodes(), true);
        devices.extend(virtio, false);
        devices.pci = pci.map(|info| PciHost {
            info,
            functions: vec![],
        });
        build(&FdtInputs {
            harts,
            cpu,
            ram_base: RAM_BASE,
            ram_size: 256 << 20,
            cmdline: "console=ttyS0 earlycon lkvm.token=golden",
            initrd: initrd.then_some((0x8f00_0000, 0x12_3456)),
            irqchip,
            devices: &devices,
        })
        .unwrap()
    }

    fn pci(msi: bool) -> Option<PciHostInfo> {
        Some(PciHostInfo {
            mem_base: super::super::layout::PCI_MEM_BASE,
            mem_size: super::super::layout::PCI_MEM_SIZE,
            cpu_base: super::super::layout::PCI_MEM_BASE,
            intx: vec![(1, LEGACY.next_irq()), (2, LEGACY.next_irq() + 1)],
            msi,
        })
    }

    #[test]
    fn golden_2hart_plic_virtio_pci() {
        let c = cpu(FULL.to_vec());
        assert_golden(
            "riscv64/2hart-plic-virtio-pci",
            &blob_with(2, IrqchipKind::Plic, &c, false, vec![], pci(false)),
        );
    }

    #[test]
    fn golden_2hart_aia_virtio_pci_msi() {
        let c = cpu(FULL.to_vec());
        assert_golden(
            "riscv64/2hart-aia-virtio-pci",
            &blob_with(2, IrqchipKind::Aia, &c, false, vec![], pci(true)),
        );
    }

    #[test]
    fn golden_1hart_aia_virtio_mmio() {
        let c = cpu(FULL.to_vec());
        let dev = DeviceNode {
            name: "virtio",
            compatible: vec!["virtio,mmio"],
            reg_base: super::super::layout::VIRTIO_MMIO_BASE,
            reg_size: 0x200,
            irq: Some(LEGACY.next_irq()),
            trigger: Trigger::Level,
            u32_props: vec![],
        };
        assert_golden(
            "riscv64/1hart-aia-virtio-mmio",
            &blob_with(1, IrqchipKind::Aia, &c, false, vec![dev], None),
        );
    }

    const FULL: &[&str] = &[
        "sstc", "svinval", "svpbmt", "zba", "zbb", "zicbom", "zicboz", "zicsr", "zifencei",
    ];

    #[test]
    fn golden_1hart_plic() {
        assert_golden(
            "riscv64/1hart-plic",
            &blob(1, IrqchipKind::Plic, &cpu(FULL.to_vec()), false),
        );
    }

    #[test]
    fn golden_4hart_plic_with_initrd() {
        assert_golden(
            "riscv64/4hart-plic-initrd",
            &blob(4, IrqchipKind::Plic, &cpu(FULL.to_vec()), true),
        );
    }

    #[test]
    fn golden_1hart_aia() {
        assert_golden(
            "riscv64/1hart-aia",
            &blob(1, IrqchipKind::Aia, &cpu(FULL.to_vec()), false),
        );
    }

    #[test]
    fn golden_4hart_aia_with_initrd() {
        assert_golden(
            "riscv64/4hart-aia-initrd",
            &blob(4, IrqchipKind::Aia, &cpu(FULL.to_vec()), true),
        );
    }

    #[test]
    fn golden_4hart_aia_with_extensions_disabled() {
        // as after --disable-zbb --disable-svpbmt --disable-zicboz
        let mut c = cpu(vec![
            "sstc", "svinval", "zba", "zicbom", "zicsr", "zifencei",
        ]);
        c.cboz_block_size = None;
        assert_golden(
            "riscv64/4hart-aia-disabled-exts",
            &blob(4, IrqchipKind::Aia, &c, false),
        );
    }

    #[test]
    fn disabled_extensions_vanish_from_both_isa_properties() {
        let dts = decompile(&blob(1, IrqchipKind::Plic, &cpu(vec!["zicsr"]), false));
        assert!(dts.contains("riscv,isa = \"rv64imafdc_zicsr\";"), "{dts}");
        assert!(!dts.contains("zbb"));
    }
}
