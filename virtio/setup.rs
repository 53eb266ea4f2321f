//! From the command line to devices on a guest's bus: the virtio part of
//! the configuration, the construction of the devices, and the placement
//! steps every architecture shares (a virtio-mmio window with its
//! interrupt and device-tree node; a function on the PCI root bus).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::balloon::{Balloon, BalloonControl};
use super::blk::{Block, DiskSpec};
use super::common::{self, VirtioState};
use super::console::{Console, ConsoleInput};
use super::device::{IoEvents, VirtioDevice};
use super::mmio::{self, MmioTransport};
use super::net::{Net, NetSpec};
use super::p9::{ShareSpec, Virtio9p};
use super::pci::{self, VirtioPci};
use crate::arch::{ArchInfo, Platform, VirtioSet};
use crate::cli::{ConsoleKind, RunArgs};
use crate::fdt::{DeviceNode, DeviceTree, PciHost};
use crate::hw::pci::{PciMmioWindow, PciRoot};
use crate::irq::{IrqLine, MsiSink, Trigger};
use crate::kvm::IoAddr;
use crate::term::ConsoleOut;

/// `--virtio-transport`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    #[default]
    Pci,
    Mmio,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "--virtio-transport {0}: the legacy virtio interface is not supported yet; use pci or mmio"
    )]
    Legacy(String),
    #[error("unknown --virtio-transport '{0}' (pci, mmio)")]
    UnknownTransport(String),
    #[error("--virtio-transport mmio is only available on arm64 and riscv64 (device-tree platforms); use pci")]
    MmioNotHere,
    #[error("{0}")]
    Disk(String),
    #[error("{0}")]
    Share(String),
    #[error("{0}")]
    Network(String),
    #[error("-d {0}: only one root filesystem per guest (the first was {1})")]
    TwoRoots(String, String),
    #[error("the default rootfs: {0}")]
    DefaultRootfs(String),
    #[error("--hostfs-rw: the host's / is only shared with the default rootfs (lkvm run without -d, -i and --nodefaults, or lkvm sandbox)")]
    NoHostfs,
}

impl Transport {
    pub fn parse(s: &str, arch: &ArchInfo) -> Result<Self, ConfigError> {
        match s {
            "pci" => Ok(Transport::Pci),
            "mmio" if arch.virtio_mmio => Ok(Transport::Mmio),
            "mmio" => Err(ConfigError::MmioNotHere),
            "pci-legacy" | "mmio-legacy" => Err(ConfigError::Legacy(s.to_string())),
            _ => Err(ConfigError::UnknownTransport(s.to_string())),
        }
    }
}

/// The virtio devices a VM gets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VirtioConfig {
    pub transport: Transport,
    pub rng: bool,
    pub disks: Vec<DiskSpec>,
    pub shares: Vec<ShareSpec>,
    pub nets: Vec<NetSpec>,
    pub balloon: bool,
    /// A directory shared over 9p as the guest's root (`-d DIR|NAME`, or
    /// the default rootfs).
    pub rootfs: Option<PathBuf>,
    /// The root is lkvm's default rootfs, made on first use.
    pub default_rootfs: bool,
    /// The host's `/` shared as `hostfs` (the default rootfs mounts it at
    /// /host); `Some(true)` when writable.
    pub hostfs: Option<bool>,
    /// `--console virtio`: the guest's console is a virtio-console.
    pub console: bool,
}

/// The cards `-n` asks for; with no `-n` at all, kvmtool's user-mode card
/// unless `--nodefaults`. Each card's default MAC counts up from
/// 02:15:15:15:15:15 (`mode=none` takes no number).
fn net_specs(args: &[String], nodefaults: bool) -> Result<Vec<NetSpec>, ConfigError> {
    if args.is_empty() && !nodefaults {
        return Ok(vec![NetSpec::User(super::net::spec::UserSpec::new(0))]);
    }
    let mut specs = Vec::new();
    for a in args {
        let cards = specs.iter().filter(|s| **s != NetSpec::None).count();
        specs.push(NetSpec::parse(a, cards).map_err(|e| ConfigError::Network(e.to_string()))?);
    }
    Ok(specs)
}

impl VirtioConfig {
    pub fn from_args(
        args: &RunArgs,
        arch: &ArchInfo,
        console: ConsoleKind,
    ) -> Result<Self, ConfigError> {
        let disks: Vec<DiskSpec> = args
            .disk
            .iter()
            .filter(|d| crate::rootfs::resolve(d).is_none())
            .map(|d| DiskSpec::parse(d).map_err(|e| ConfigError::Disk(e.to_string())))
            .collect::<Result<_, _>>()?;
        let mut roots = args
            .disk
            .iter()
            .filter_map(|d| crate::rootfs::resolve(d).map(|p| (d, p)));
        let first = roots.next();
        if let (Some((a, _)), Some((b, _))) = (&first, roots.next()) {
            return Err(ConfigError::TwoRoots(b.to_string(), a.to_string()));
        }
        let mut rootfs = first.map(|(_, p)| p);
        // kvmtool boots its default rootfs, with the host's / beside it,
        // when it is given nothing else to boot; a sandbox always runs in
        // it, unless given a rootfs of its own, and needs the host's files.
        let default_rootfs = rootfs.is_none()
            && (args.sandbox_mode
                || (!args.nodefaults && disks.is_empty() && args.initrd.is_none()));
        if default_rootfs {
            let dir = crate::rootfs::default_dir()
                .map_err(|e| ConfigError::DefaultRootfs(e.to_string()))?;
            rootfs = Some(dir);
        }
        let hostfs = (default_rootfs || args.sandbox_mode).then_some(args.hostfs_rw);
        if args.hostfs_rw && hostfs.is_none() {
            return Err(ConfigError::NoHostfs);
        }
        Ok(VirtioConfig {
            transport: match &args.virtio_transport {
                Some(t) => Transport::parse(t, arch)?,
                None => Transport::default(),
            },
            rng: args.rng,
            disks,
            rootfs,
            default_rootfs,
            hostfs,
            shares: args
                .ninep
                .iter()
                .map(|s| ShareSpec::parse(s).map_err(|e| ConfigError::Share(e.to_string())))
                .collect::<Result<_, _>>()?,
            nets: net_specs(&args.network, args.nodefaults)?,
            balloon: args.balloon,
            console: console == ConsoleKind::Virtio,
        })
    }

    /// Whether the guest's root is its first virtio-blk disk (`/dev/vda`):
    /// a disk is given and no 9p root is.
    pub fn root_on_disk(&self) -> bool {
        self.rootfs.is_none() && !self.disks.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Disk(#[from] super::blk::Error),
    #[error(transparent)]
    Share(#[from] super::p9::Error),
    #[error(transparent)]
    Network(#[from] super::net::Error),
    #[error("--balloon: this host's KVM does not mirror host page tables into the guest (no KVM_CAP_SYNC_MMU), so pages cannot be given back safely")]
    BalloonNeedsSyncMmu,
    #[error(transparent)]
    State(#[from] common::Error),
    #[error(transparent)]
    Pci(#[from] pci::Error),
    #[error(transparent)]
    PciBus(#[from] crate::hw::pci::Error),
    #[error(transparent)]
    Bus(#[from] crate::bus::Error),
    #[error("too many virtio devices for the {0} window")]
    NoRoom(&'static str),
    #[error("too many devices: the interrupt controller has no line left")]
    NoIrq,
}

/// The configured devices, the console's input side when the guest's
/// console is a virtio-console, and the balloon's controls.
pub struct Devices {
    pub devices: Vec<Box<dyn VirtioDevice>>,
    pub console: Option<ConsoleInput>,
    pub balloon: Option<BalloonControl>,
    /// The network cards, for `lkvm stat`.
    pub nets: Vec<super::net::NetCard>,
}

/// Builds (and opens the files and taps of) the configured devices.
/// `discard_ok` is the memory policy's word on giving guest pages back to
/// the host, which the balloon needs.
pub fn build_devices(cfg: &VirtioConfig, discard_ok: bool) -> Result<Devices, Error> {
    if cfg.balloon && !discard_ok {
        return Err(Error::BalloonNeedsSyncMmu);
    }
    let mut devices: Vec<Box<dyn VirtioDevice>> = Vec::new();
    let mut console = None;
    if cfg.console {
        let (dev, input) = Console::new(Box::new(ConsoleOut));
        devices.push(Box::new(dev));
        console = Some(input);
    }
    for (i, spec) in cfg.disks.iter().enumerate() {
        devices.push(Box::new(Block::open(spec, i)?));
    }
    if let Some(dir) = &cfg.rootfs {
        let root = ShareSpec {
            dir: dir.clone(),
            tag: crate::rootfs::ROOT_TAG.to_string(),
            read_only: false,
        };
        devices.push(Box::new(Virtio9p::new(&root)?));
    }
    if let Some(writable) = cfg.hostfs {
        let host = ShareSpec {
            dir: PathBuf::from("/"),
            tag: crate::rootfs::HOSTFS_TAG.to_string(),
            read_only: !writable,
        };
        devices.push(Box::new(Virtio9p::new(&host)?));
    }
    for spec in &cfg.shares {
        devices.push(Box::new(Virtio9p::new(spec)?));
    }
    let mut nets = Vec::new();
    for spec in &cfg.nets {
        if let Some(net) = Net::new(spec)? {
            nets.push(net.card());
            devices.push(Box::new(net));
        }
    }
    let mut balloon = None;
    if cfg.balloon {
        let (dev, control) = Balloon::new();
        devices.push(Box::new(dev));
        balloon = Some(control);
    }
    if cfg.rng {
        devices.push(Box::new(super::rng::Rng::new()));
    }
    Ok(Devices {
        devices,
        console,
        balloon,
        nets,
    })
}

/// Puts `dev` behind a virtio-mmio window at `base`, interrupting on
/// `line`, and describes it for the device tree.
pub fn place_mmio(
    p: &mut Platform,
    tree: &mut DeviceTree,
    dev: Box<dyn VirtioDevice>,
    base: u64,
    line: IrqLine,
) -> Result<(), Error> {
    let state = VirtioState::new(dev, p.mem.clone())?;
    let name = state.name();
    for q in 0..state.num_queues() {
        if let Some(kick) = state.kick(q) {
            // Without it the notify write still reaches the transport.
            if let Err(e) =
                p.vm.register(kick, IoAddr::Mmio(base + mmio::NOTIFY), Some(u32::from(q)))
            {
                log::warn!("{name}: {e}");
            }
        }
    }
    let irq = line.line();
    let t = MmioTransport::new(state, line);
    p.mmio
        .insert(name, base, mmio::WINDOW, Arc::new(Mutex::new(t)))?;
    tree.nodes.push(DeviceNode {
        name: "virtio",
        compatible: vec!["virtio,mmio"],
        reg_base: base,
        reg_size: mmio::WINDOW,
        irq: Some(irq),
        trigger: Trigger::Level,
        u32_props: Vec::new(),
    });
    Ok(())
}

/// Where a device-tree platform (arm64, RISC-V) puts virtio devices.
#[derive(Clone, Copy, Debug)]
pub struct FdtPlatformLayout {
    pub mmio_base: u64,
    pub mmio_size: u64,
    pub ecam_base: u64,
    pub pci_mem_base: u64,
    pub pci_mem_size: u64,
}

/// Places `virtio` on a device-tree platform: virtio-mmio windows, or
/// functions behind an ECAM host bridge, described in `tree`. Each device
/// gets a level line from `irqs` (`None` when the platform has no more);
/// `msi` is where MSI-X goes, if anywhere.
pub fn place_on_fdt_platform(
    p: &mut Platform,
    tree: &mut DeviceTree,
    virtio: VirtioSet,
    layout: &FdtPlatformLayout,
    chip: Arc<dyn crate::irq::IrqChip>,
    mut irqs: impl FnMut() -> Option<u32>,
    msi: Option<Arc<dyn MsiSink>>,
) -> Result<(), Error> {
    let VirtioSet { devices, transport } = virtio;
    if devices.is_empty() {
        return Ok(());
    }
    let mut line = || {
        irqs()
            .map(|irq| IrqLine::new(chip.clone(), irq, Trigger::Level))
            .ok_or(Error::NoIrq)
    };
    match transport {
        Transport::Mmio => {
            for (i, dev) in devices.into_iter().enumerate() {
                let base = layout.mmio_base + i as u64 * mmio::WINDOW;
                if base + mmio::WINDOW > layout.mmio_base + layout.mmio_size {
                    return Err(Error::NoRoom("virtio-mmio"));
                }
                place_mmio(p, tree, dev, base, line()?)?;
            }
            Ok(())
        }
        Transport::Pci => {
            let mut host = PciHostBuilder::new(layout.pci_mem_base, layout.pci_mem_size);
            for dev in devices {
                let l = line()?;
                let reg = l.line() as u8;
                host.add_virtio(p, dev, l, reg, msi.clone())?;
            }
            let (root, host) = host.finish(p)?;
            p.mmio.insert(
                "pci-ecam",
                layout.ecam_base,
                crate::hw::pci::ecam::BUS_SIZE,
                Arc::new(Mutex::new(crate::hw::pci::ecam::PciEcam(root))),
            )?;
            tree.pci = Some(host);
            Ok(())
        }
    }
}

/// What the device tree or firmware tables say about the PCI host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PciHostInfo {
    /// The memory window as PCI bus addresses (what BARs hold).
    pub mem_base: u64,
    pub mem_size: u64,
    /// Where the window appears to the CPU (the same unless translated).
    pub cpu_base: u64,
    /// Each occupied slot's INTA# as the platform's interrupt number.
    pub intx: Vec<(u8, u32)>,
    /// Whether the functions offer MSI-X.
    pub msi: bool,
}

/// Collects PCI functions, then places their BARs and maps the window.
pub struct PciHostBuilder {
    root: PciRoot,
    info: PciHostInfo,
}

impl PciHostBuilder {
    pub fn new(mem_base: u64, mem_size: u64) -> Self {
        PciHostBuilder {
            root: PciRoot::new(),
            info: PciHostInfo {
                mem_base,
                mem_size,
                cpu_base: mem_base,
                ..Default::default()
            },
        }
    }

    /// Makes the window appear to the CPU at `cpu_base` (PowerPC's PHB
    /// translates; the others map PCI addresses one to one).
    pub fn with_cpu_base(mut self, cpu_base: u64) -> Self {
        self.info.cpu_base = cpu_base;
        self
    }

    /// The slot the next device will get.
    pub fn next_slot(&self) -> Option<u8> {
        self.root.next_slot().map(|s| s as u8)
    }

    /// Adds a virtio device as a function in the next slot. `intx` is its
    /// INTA# (`line_register` what the interrupt line register reads);
    /// `msi` is where its MSI-X vectors go, if the platform has MSIs.
    pub fn add_virtio(
        &mut self,
        p: &Platform,
        dev: Box<dyn VirtioDevice>,
        intx: IrqLine,
        line_register: u8,
        msi: Option<Arc<dyn MsiSink>>,
    ) -> Result<(), Error> {
        let slot = self.next_slot().ok_or(Error::NoRoom("PCI"))?;
        let irq = intx.line();
        let state = VirtioState::new(dev, p.mem.clone())?;
        let io: Arc<dyn IoEvents> = p.vm.clone();
        self.info.msi |= msi.is_some();
        let f = VirtioPci::new(
            state,
            intx,
            line_register,
            msi,
            u32::from(slot) << 3,
            Some(io),
        )?;
        self.root.add(Arc::new(Mutex::new(f)))?;
        self.info.intx.push((slot, irq));
        Ok(())
    }

    /// Assigns every BAR inside the memory window, maps the window on the
    /// MMIO bus (if any function has BARs), and returns the bus for the
    /// configuration mechanism and the host's description.
    pub fn finish(self, p: &mut Platform) -> Result<(Arc<PciRoot>, PciHost), Error> {
        let PciHostBuilder { root, info } = self;
        root.assign_bars(info.mem_base, info.mem_size)?;
        let root = Arc::new(root);
        let host = PciHost {
            functions: root.describe(),
            info,
        };
        if host.info.intx.is_empty() {
            return Ok((root, host));
        }
        let info = &host.info;
        p.mmio.insert(
            "pci-mem",
            info.cpu_base,
            info.mem_size,
            Arc::new(Mutex::new(PciMmioWindow {
                root: root.clone(),
                base: info.mem_base,
            })),
        )?;
        Ok((root, host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_card_unless_told_otherwise() {
        use super::super::net::spec::{default_mac, UserSpec};
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            net_specs(&[], false).unwrap(),
            vec![NetSpec::User(UserSpec::new(0))]
        );
        assert_eq!(net_specs(&[], true).unwrap(), vec![]);
        assert_eq!(
            net_specs(&args(&["mode=none"]), false).unwrap(),
            vec![NetSpec::None]
        );
        // -n given: only what it says, with or without --nodefaults; the
        // second card gets the next MAC, mode=none takes no number.
        let got = net_specs(&args(&["none", "", "mode=tap,tapif=t0"]), true).unwrap();
        assert_eq!(
            got,
            vec![
                NetSpec::None,
                NetSpec::User(UserSpec::new(0)),
                NetSpec::Tap {
                    ifname: Some("t0".into()),
                    mac: default_mac(1)
                }
            ]
        );
        assert!(net_specs(&args(&["mode=bridge"]), false).is_err());
    }

    #[test]
    fn transports_parse_per_architecture() {
        use crate::arch::{AARCH64, POWERPC64, RISCV64, X86_64};
        assert_eq!(Transport::parse("pci", &X86_64), Ok(Transport::Pci));
        assert_eq!(Transport::parse("mmio", &AARCH64), Ok(Transport::Mmio));
        assert_eq!(Transport::parse("mmio", &RISCV64), Ok(Transport::Mmio));
        assert_eq!(
            Transport::parse("mmio", &X86_64),
            Err(ConfigError::MmioNotHere)
        );
        assert_eq!(
            Transport::parse("mmio", &POWERPC64),
            Err(ConfigError::MmioNotHere)
        );
        assert_eq!(
            Transport::parse("pci-legacy", &X86_64),
            Err(ConfigError::Legacy("pci-legacy".into()))
        );
        assert_eq!(
            Transport::parse("virtio", &X86_64),
            Err(ConfigError::UnknownTransport("virtio".into()))
        );
    }
}
