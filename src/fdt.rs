//! What the device-tree architectures (arm64, RISC-V, PowerPC) share: how a
//! registered device describes itself, so each architecture's FDT builder
//! emits every device in one pass (vm-fdt cannot edit a finished blob).

use crate::irq::Trigger;

/// A device as a device tree node, independent of the interrupt controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceNode {
    /// Node name without the unit address ("uart", "virtio_mmio").
    pub name: &'static str,
    pub compatible: Vec<&'static str>,
    pub reg_base: u64,
    pub reg_size: u64,
    /// The platform's number for the interrupt: GIC INTID, PLIC source,
    /// XICS source. The architecture turns it into its specifier.
    pub irq: Option<u32>,
    pub trigger: Trigger,
    /// Extra single-cell properties (`clock-frequency`, ...).
    pub u32_props: Vec<(&'static str, u32)>,
}

impl DeviceNode {
    /// `name@base`, the node's full name.
    pub fn node_name(&self) -> String {
        format!("{}@{:x}", self.name, self.reg_base)
    }

    /// Writes the node under the current one, `interrupts` being the
    /// interrupt controller's specifier for `irq`.
    pub fn write(
        &self,
        fdt: &mut vm_fdt::FdtWriter,
        interrupts: Option<&[u32]>,
    ) -> Result<(), vm_fdt::Error> {
        let node = fdt.begin_node(&self.node_name())?;
        fdt.property_string_list(
            "compatible",
            self.compatible.iter().map(|s| s.to_string()).collect(),
        )?;
        fdt.property_array_u64("reg", &[self.reg_base, self.reg_size])?;
        if let Some(cells) = interrupts {
            fdt.property_array_u32("interrupts", cells)?;
        }
        for (name, value) in &self.u32_props {
            fdt.property_u32(name, *value)?;
        }
        fdt.end_node(node)
    }

    /// An 8250 UART of `len` registers at `base`.
    pub fn ns16550a(base: u64, len: u64, irq: u32) -> Self {
        DeviceNode {
            name: "uart",
            compatible: vec!["ns16550a"],
            reg_base: base,
            reg_size: len,
            irq: Some(irq),
            trigger: Trigger::Edge,
            u32_props: vec![("clock-frequency", 1_843_200)],
        }
    }
}

/// What the device tree says about the devices an architecture placed:
/// the one list every device-tree builder walks, PCI included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceTree {
    /// Platform devices (UARTs, RTC, virtio-mmio windows) in placement order.
    pub nodes: Vec<DeviceNode>,
    /// Which of `nodes` is the console (`stdout-path`).
    pub stdout: Option<usize>,
    /// The PCI host bridge, when devices sit on PCI.
    pub pci: Option<PciHost>,
}

impl DeviceTree {
    /// The console's node.
    pub fn stdout_node(&self) -> Option<&DeviceNode> {
        self.stdout.and_then(|i| self.nodes.get(i))
    }

    /// Adds `nodes`; the first becomes the console when `console` is set.
    pub fn extend(&mut self, nodes: Vec<DeviceNode>, console: bool) {
        if console && !nodes.is_empty() {
            self.stdout = Some(self.nodes.len());
        }
        self.nodes.extend(nodes);
    }
}

/// A PCI host bridge: its windows and interrupts, and the functions on it
/// (PowerPC's PHB lists them in the tree).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PciHost {
    pub info: crate::virtio::setup::PciHostInfo,
    pub functions: Vec<crate::hw::pci::FunctionInfo>,
}

/// Opens `/chosen` with what every boot has: the command line, the initrd
/// (start, size) and the console's path. The caller adds its own
/// properties and ends the node.
pub fn begin_chosen(
    fdt: &mut vm_fdt::FdtWriter,
    cmdline: &str,
    initrd: Option<(u64, u64)>,
    stdout: Option<&str>,
) -> Result<vm_fdt::FdtWriterNode, vm_fdt::Error> {
    let chosen = fdt.begin_node("chosen")?;
    fdt.property_string("bootargs", cmdline)?;
    if let Some((start, size)) = initrd {
        fdt.property_u64("linux,initrd-start", start)?;
        fdt.property_u64("linux,initrd-end", start + size)?;
    }
    if let Some(path) = stdout {
        fdt.property_string("stdout-path", path)?;
    }
    Ok(chosen)
}

/// `memory@BASE`: one RAM range.
pub fn memory_node(fdt: &mut vm_fdt::FdtWriter, base: u64, size: u64) -> Result<(), vm_fdt::Error> {
    let memory = fdt.begin_node(&format!("memory@{base:x}"))?;
    fdt.property_string("device_type", "memory")?;
    fdt.property_array_u64("reg", &[base, size])?;
    fdt.end_node(memory)
}

/// Where a `pci-host-ecam-generic` bridge sits and how its slots' INTA#
/// reach the interrupt controller.
pub struct PciHostNode<'a> {
    pub ecam_base: u64,
    pub ecam_size: u64,
    pub info: &'a crate::virtio::setup::PciHostInfo,
    /// The interrupt controller's phandle and `#address-cells`.
    pub parent: u32,
    pub parent_address_cells: u32,
    /// The controller's specifier for a platform interrupt number.
    pub irq_spec: &'a dyn Fn(u32) -> Vec<u32>,
    pub msi: Option<MsiParent>,
}

/// How a PCI host's functions reach their MSI controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsiParent {
    /// A controller that needs no sender id (`msi-parent`).
    Plain(u32),
    /// A controller that identifies senders (GICv3 ITS): requester id
    /// maps one to one onto its device id (`msi-map`).
    ById(u32),
}

/// PCI address space code of 32-bit non-prefetchable memory in `ranges`.
pub const PCI_SPACE_MEM32: u32 = 0x0200_0000;

impl PciHostNode<'_> {
    /// Writes the host bridge node under the current (root) node, whose
    /// `#address-cells` and `#size-cells` are 2.
    pub fn write(&self, fdt: &mut vm_fdt::FdtWriter) -> Result<(), vm_fdt::Error> {
        let node = fdt.begin_node(&format!("pci@{:x}", self.ecam_base))?;
        fdt.property_string("compatible", "pci-host-ecam-generic")?;
        fdt.property_string("device_type", "pci")?;
        fdt.property_u32("#address-cells", 3)?;
        fdt.property_u32("#size-cells", 2)?;
        fdt.property_u32("#interrupt-cells", 1)?;
        fdt.property_array_u32("bus-range", &[0, 0])?;
        fdt.property_array_u64("reg", &[self.ecam_base, self.ecam_size])?;
        let [mh, ml] = cells64(self.info.mem_base);
        let [ch, cl] = cells64(self.info.cpu_base);
        let [sh, sl] = cells64(self.info.mem_size);
        fdt.property_array_u32("ranges", &[PCI_SPACE_MEM32, mh, ml, ch, cl, sh, sl])?;
        // Slot (device number) and pin select the entry.
        fdt.property_array_u32("interrupt-map-mask", &[0xf800, 0, 0, 7])?;
        let mut map = Vec::new();
        for (slot, irq) in &self.info.intx {
            map.extend([u32::from(*slot) << 11, 0, 0, 1, self.parent]);
            map.extend(std::iter::repeat_n(0, self.parent_address_cells as usize));
            map.extend((self.irq_spec)(*irq));
        }
        fdt.property_array_u32("interrupt-map", &map)?;
        fdt.property_null("dma-coherent")?;
        match self.msi {
            Some(MsiParent::Plain(p)) => fdt.property_u32("msi-parent", p)?,
            Some(MsiParent::ById(p)) => fdt.property_array_u32("msi-map", &[0, p, 0, 0x1_0000])?,
            None => {}
        }
        fdt.end_node(node)
    }
}

/// Splits a 64-bit value into two cells, high first.
pub fn cells64(v: u64) -> [u32; 2] {
    [(v >> 32) as u32, v as u32]
}

/// `reg` of one (address, size) pair with two cells each.
pub fn reg64(base: u64, size: u64) -> Vec<u64> {
    vec![base, size]
}

/// Golden device-tree tests: a blob is decompiled with `dtc` and compared
/// to a reviewed `.dts` under `tests/golden/`. `LKVM_BLESS=1` rewrites the
/// file instead (review the diff before committing it).
#[cfg(test)]
pub mod testing {
    use std::io::Write;
    use std::path::PathBuf;
    use std::process::{Command, Stdio};

    pub fn decompile(blob: &[u8]) -> String {
        let mut child = Command::new("dtc")
            .args(["-q", "-I", "dtb", "-O", "dts", "-o", "-", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dtc (package device-tree-compiler, `make deps`) is needed for FDT tests");
        child.stdin.take().unwrap().write_all(blob).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "dtc rejected the blob: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn assert_golden(name: &str, blob: &[u8]) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(format!("{name}.dts"));
        let dts = decompile(blob);
        if std::env::var("LKVM_BLESS").is_ok_and(|v| v == "1") {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &dts).unwrap();
            return;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with LKVM_BLESS=1 to create it)",
                path.display()
            )
        });
        if want != dts {
            let got = path.with_extension("dts.new");
            std::fs::write(&got, &dts).unwrap();
            panic!(
                "{name}: device tree differs from {}; got {} (diff them; LKVM_BLESS=1 accepts)",
                path.display(),
                got.display()
            );
        }
    }
}
