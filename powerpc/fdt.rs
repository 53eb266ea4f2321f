//! The device tree of an sPAPR (pSeries) guest, built in one pass with the
//! RTAS memory reservation: root, chosen, memory, cpus (one thread per
//! core), the XICS presentation node, /rtas with its tokens, /vdevice with
//! the hypervisor console.

use vm_fdt::{FdtReserveEntry, FdtWriter};

use super::cpu_table::{CpuModel, CLOCK_HZ, TIMEBASE_HZ};
use super::kvm_sys::{KvmPpcSmmuInfo, KVM_PPC_1T_SEGMENTS, KVM_PPC_PAGE_SIZES_REAL};
use super::rtas::{self, TOKEN_BASE};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building the device tree: {0}")]
    Fdt(#[from] vm_fdt::Error),
}

/// The hypervisor console's vio unit address, also its terminal number.
pub const VTY_REG: u32 = 0x3000_0000;
const PHANDLE_XICS: u32 = 1;

use super::pci;
use crate::fdt::{begin_chosen, memory_node, DeviceTree};

/// The guest's MMU mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mmu {
    Radix,
    /// A hashed page table of 2^`order` bytes.
    Hash {
        order: u32,
    },
}

#[derive(Debug)]
pub struct FdtInputs<'a> {
    pub cpus: u32,
    pub pvr: u32,
    pub model: &'a CpuModel,
    pub ram_size: u64,
    pub cmdline: &'a str,
    pub initrd: Option<(u64, u64)>,
    /// (base, size) of the RTAS blob.
    pub rtas: (u64, u64),
    pub mmu: Mmu,
    /// What KVM's hash MMU offers; `None` means 4K and 16M pages only.
    pub smmu: Option<&'a KvmPpcSmmuInfo>,
    /// Host page size, for filtering page sizes KVM can only back with it.
    pub backing_page_shift: u32,
    /// The devices: sPAPR has no platform devices in the tree, only the
    /// PHB and its functions when the guest has PCI devices.
    pub devices: &'a DeviceTree,
}

/// `ibm,segment-page-sizes`: for each segment size, its SLB encoding and
/// the page sizes (with their PTE encodings) usable in it.
pub fn segment_page_sizes(smmu: Option<&KvmPpcSmmuInfo>, backing_page_shift: u32) -> Vec<u32> {
    let Some(info) = smmu else {
        // Without KVM's answer: 4K pages in 4K segments, 16M in 16M.
        return vec![12, 0x0, 1, 12, 0x0, 24, 0x100, 1, 24, 0x0];
    };
    let real = info.flags & KVM_PPC_PAGE_SIZES_REAL != 0;
    let usable = |shift: u32| shift != 0 && (!real || shift <= backing_page_shift);
    let mut out = Vec::new();
    for sps in info.sps.iter().filter(|s| usable(s.page_shift)) {
        let encs: Vec<_> = sps.enc.iter().filter(|e| usable(e.page_shift)).collect();
        if encs.is_empty() {
            continue;
        }
        out.extend([sps.page_shift, sps.slb_enc, encs.len() as u32]);
        for e in encs {
            out.extend([e.page_shift, e.pte_enc]);
        }
    }
    out
}

/// `ibm,architecture-vec-5` telling the guest to use radix with GTSE.
fn arch_vec5_radix() -> Vec<u8> {
    let mut v = vec![0u8; 27];
    v[24] = 0x40; // OV5_MMU_RADIX
    v[26] = 0x40; // OV5_RADIX_GTSE
    v
}

pub fn build(inp: &FdtInputs<'_>) -> Result<Vec<u8>, Error> {
    let reserve = [FdtReserveEntry::new(inp.rtas.0, inp.rtas.1)?];
    let mut fdt = FdtWriter::new_with_mem_reserv(&reserve)?;
    let root = fdt.begin_node("")?;
    fdt.property_string("device_type", "chrp")?;
    fdt.property_string("model", "IBM pSeries (lkvm)")?;
    fdt.property_string("compatible", "lkvm,pseries")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;

    let chosen = begin_chosen(&mut fdt, inp.cmdline, inp.initrd, None)?;
    let vty = format!("/vdevice/vty@{VTY_REG:x}");
    fdt.property_string("linux,stdout-path", &vty)?;
    fdt.property_string("stdout-path", &vty)?;
    if inp.mmu == Mmu::Radix {
        fdt.property("ibm,architecture-vec-5", &arch_vec5_radix())?;
    }
    fdt.end_node(chosen)?;

    memory_node(&mut fdt, 0, inp.ram_size)?;

    let m = inp.model;
    let sps = segment_page_sizes(inp.smmu, inp.backing_page_shift);
    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    for cpu in 0..inp.cpus {
        let node = fdt.begin_node(&format!("{}@{cpu:x}", m.name))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_u32("reg", cpu)?;
        fdt.property_u32("cpu-version", inp.pvr)?;
        fdt.property_u32("clock-frequency", CLOCK_HZ)?;
        fdt.property_u32("timebase-frequency", TIMEBASE_HZ)?;
        for (prop, value) in [
            ("d-cache-size", m.d_cache_size),
            ("d-cache-line-size", m.cache_line),
            ("d-cache-block-size", m.cache_line),
            ("i-cache-size", m.i_cache_size),
            ("i-cache-line-size", m.cache_line),
            ("i-cache-block-size", m.cache_line),
        ] {
            fdt.property_u32(prop, value)?;
        }
        // One hardware thread per core: sibling threads would make Linux
        // send doorbell IPIs (msgsndp) KVM does not let it use here.
        fdt.property_u32("ibm,ppc-interrupt-server#s", cpu)?;
        fdt.property_array_u32("ibm,ppc-interrupt-gserver#s", &[cpu, 0])?;
        fdt.property_u32("ibm,vmx", m.vmx)?;
        fdt.property_u32("ibm,dfp", m.dfp)?;
        fdt.property_u32("ibm,purr", 1)?;
        fdt.property_u32("ibm,spurr", 1)?;
        fdt.property_null("64-bit")?;
        let slb = inp.smmu.map_or(m.slb_size, |s| s.slb_size);
        fdt.property_u32("ibm,slb-size", slb)?;
        fdt.property_array_u32("ibm,segment-page-sizes", &sps)?;
        if inp.smmu.is_some_and(|s| s.flags & KVM_PPC_1T_SEGMENTS != 0) {
            fdt.property_array_u32("ibm,processor-segment-sizes", &[28, 40])?;
        }
        // Radix guests get no `ibm,processor-radix-AP-encodings`: at 32
        // characters the name breaks the device-tree limit vm-fdt enforces,
        // and without it Linux assumes 4K and 64K pages, which every radix
        // MMU has.
        if let Mmu::Hash { order } = inp.mmu {
            fdt.property_array_u32("ibm,pft-size", &[0, order])?;
        }
        fdt.property_string("status", "okay")?;
        fdt.end_node(node)?;
    }
    fdt.end_node(cpus)?;

    let xics = fdt.begin_node("interrupt-controller")?;
    fdt.property_string("device_type", "PowerPC-External-Interrupt-Presentation")?;
    fdt.property_string("compatible", "IBM,ppc-xicp")?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_u32("#interrupt-cells", 2)?;
    // For the PHB's interrupt-map entries that point here.
    fdt.property_u32("#address-cells", 0)?;
    fdt.property_array_u32("ibm,interrupt-server-ranges", &[0, inp.cpus])?;
    fdt.property_phandle(PHANDLE_XICS)?;
    fdt.end_node(xics)?;

    let rtas_node = fdt.begin_node("rtas")?;
    fdt.property_string_list(
        "ibm,hypertas-functions",
        [
            "hcall-pft",
            "hcall-term",
            "hcall-dabr",
            "hcall-interrupt",
            "hcall-tce",
            // H_STUFF_TCE and H_PUT_TCE_INDIRECT. Without them Linux clears
            // the 1 GiB DMA window at boot with one H_PUT_TCE per 4 KiB
            // page: 262144 exits to lkvm, about 100 s under nested HV.
            "hcall-multi-tce",
            "hcall-vio",
            "hcall-splpar",
            "hcall-bulk",
            "hcall-set-mode",
        ]
        .map(String::from)
        .to_vec(),
    )?;
    fdt.property_u32("linux,rtas-base", inp.rtas.0 as u32)?;
    fdt.property_u32("linux,rtas-entry", inp.rtas.0 as u32)?;
    fdt.property_u32("rtas-size", inp.rtas.1 as u32)?;
    fdt.property_u32("rtas-version", 1)?;
    for (i, name) in rtas::CALLS.iter().enumerate() {
        fdt.property_u32(name, TOKEN_BASE + i as u32)?;
    }
    fdt.end_node(rtas_node)?;

    let vdevice = fdt.begin_node("vdevice")?;
    fdt.property_string("device_type", "vdevice")?;
    fdt.property_string("compatible", "IBM,vdevice")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_u32("#interrupt-cells", 2)?;
    let vty_node = fdt.begin_node(&format!("vty@{VTY_REG:x}"))?;
    fdt.property_string("device_type", "serial")?;
    fdt.property_string("compatible", "hvterm1")?;
    fdt.property_u32("reg", VTY_REG)?;
    fdt.end_node(vty_node)?;
    fdt.end_node(vdevice)?;

    if let Some(host) = &inp.devices.pci {
        pci::write_fdt(&mut fdt, &host.info, &host.functions, PHANDLE_XICS)?;
    }

    fdt.end_node(root)?;
    Ok(fdt.finish()?)
}

#[cfg(test)]
mod tests {
    use super::super::cpu_table::lookup;
    use super::super::kvm_sys::{PageEncoding, SegmentPageSizes};
    use super::*;
    use crate::fdt::testing::{assert_golden, decompile};
    use crate::fdt::PciHost;
    use crate::hw::pci::FunctionInfo;
    use crate::virtio::setup::PciHostInfo;

    const POWER9: u32 = 0x004e_1202;

    /// What a POWER9 KVM-HV host reports (4K, 64K and 16M pages).
    fn power9_smmu() -> KvmPpcSmmuInfo {
        let mut info = KvmPpcSmmuInfo {
            flags: KVM_PPC_1T_SEGMENTS,
            slb_size: 32,
            ..Default::default()
        };
        let enc = |list: &[(u32, u32)]| {
            let mut e = [PageEncoding::default(); 8];
            for (i, (shift, pte)) in list.iter().enumerate() {
                e[i] = PageEncoding {
                    page_shift: *shift,
                    pte_enc: *pte,
                };
            }
            e
        };
        info.sps[0] = SegmentPageSizes {
            page_shift: 12,
            slb_enc: 0,
            enc: enc(&[(12, 0), (16, 7), (24, 0x38)]),
        };
        info.sps[1] = SegmentPageSizes {
            page_shift: 16,
            slb_enc: 0x110,
            enc: enc(&[(16, 1), (24, 8)]),
        };
        info.sps[2] = SegmentPageSizes {
            page_shift: 24,
            slb_enc: 0x100,
            enc: enc(&[(24, 0)]),
        };
        info
    }

    fn blob(cpus: u32, mmu: Mmu, initrd: bool) -> Vec<u8> {
        blob_pci(cpus, mmu, initrd, None)
    }

    fn blob_pci(cpus: u32, mmu: Mmu, initrd: bool, pci: Option<PciHost>) -> Vec<u8> {
        let model = lookup(POWER9).unwrap();
        let smmu = power9_smmu();
        build(&FdtInputs {
            cpus,
            pvr: POWER9,
            model: &model,
            ram_size: 256 << 20,
            cmdline: "console=hvc0 lkvm.token=golden",
            initrd: initrd.then_some((0x290_0000, 0x12_3456)),
            rtas: (0xffe_0000, 0x14),
            mmu,
            smmu: Some(&smmu),
            backing_page_shift: 16,
            devices: &DeviceTree {
                pci,
                ..Default::default()
            },
        })
        .unwrap()
    }

    #[test]
    fn golden_2cpu_radix_virtio_pci() {
        let info = PciHostInfo {
            mem_base: pci::MEM_PCI_BASE,
            mem_size: pci::MEM_SIZE,
            cpu_base: pci::MEM_CPU_BASE,
            intx: vec![(1, pci::FIRST_LSI), (2, pci::FIRST_LSI + 1)],
            msi: false,
        };
        let f = |slot: u8, device: u16, addr: u64| FunctionInfo {
            slot,
            vendor: 0x1af4,
            device,
            revision: 1,
            class: 0x01_80_00,
            subsystem_vendor: 0x1af4,
            subsystem: 0x40,
            pin: 1,
            bars: vec![(0, addr, 0x8000)],
        };
        let functions = vec![f(1, 0x1042, 0x8000_0000), f(2, 0x1049, 0x8000_8000)];
        assert_golden(
            "ppc64le/2cpu-radix-virtio-pci",
            &blob_pci(2, Mmu::Radix, false, Some(PciHost { info, functions })),
        );
    }

    #[test]
    fn golden_1cpu_radix() {
        assert_golden("ppc64le/1cpu-radix", &blob(1, Mmu::Radix, false));
    }

    #[test]
    fn golden_2cpu_radix_initrd() {
        assert_golden("ppc64le/2cpu-radix-initrd", &blob(2, Mmu::Radix, true));
    }

    #[test]
    fn golden_8cpu_radix() {
        assert_golden("ppc64le/8cpu-radix", &blob(8, Mmu::Radix, false));
    }

    #[test]
    fn golden_1cpu_hash_initrd() {
        assert_golden(
            "ppc64le/1cpu-hash-initrd",
            &blob(1, Mmu::Hash { order: 21 }, true),
        );
    }

    #[test]
    fn golden_2cpu_hash() {
        assert_golden(
            "ppc64le/2cpu-hash",
            &blob(2, Mmu::Hash { order: 21 }, false),
        );
    }

    #[test]
    fn rtas_memory_is_reserved_and_radix_is_announced_only_for_radix() {
        let radix = decompile(&blob(1, Mmu::Radix, false));
        assert!(
            radix.contains("/memreserve/\t0x000000000ffe0000 0x0000000000000014;"),
            "{radix}"
        );
        assert!(radix.contains("ibm,architecture-vec-5"));
        let hash = decompile(&blob(1, Mmu::Hash { order: 21 }, false));
        assert!(!hash.contains("ibm,architecture-vec-5"));
        assert!(hash.contains("ibm,pft-size = <0x00 0x15>;"));
    }

    #[test]
    fn multi_tce_hcalls_are_announced_because_tce_rs_serves_them() {
        let dts = decompile(&blob(1, Mmu::Radix, false));
        assert!(dts.contains("hcall-tce\\0hcall-multi-tce\\0"), "{dts}");
    }

    #[test]
    fn page_sizes_the_backing_cannot_hold_are_dropped_when_kvm_says_so() {
        let mut info = power9_smmu();
        info.flags |= KVM_PPC_PAGE_SIZES_REAL;
        let sps = segment_page_sizes(Some(&info), 16);
        // 16M pages and segments need a 16M backing page: gone
        assert_eq!(sps, vec![12, 0, 2, 12, 0, 16, 7, 16, 0x110, 1, 16, 1]);
        assert_eq!(segment_page_sizes(None, 16).len(), 10);
    }
}
