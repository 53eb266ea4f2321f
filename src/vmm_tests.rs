//! `build` and `run` driven with a fake architecture: the core's staging,
//! device placement and teardown without any real platform. The fake runs
//! a few real-mode instructions, so it needs an x86 host with /dev/kvm.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use super::*;
use crate::arch::{Devices, NoExits};
use crate::bus::BusDevice;
use crate::fdt::DeviceTree;
use crate::memory::{GuestMemory, RamRange};

/// The port the fake guest reports on.
const REPORT_PORT: u64 = 0x501;

/// `mov dx, 0x501; mov al, 42; out dx, al; hlt`, at 0000:1000.
const GUEST: &[u8] = &[0xba, 0x01, 0x05, 0xb0, 0x2a, 0xee, 0xf4];
const GUEST_AT: u64 = 0x1000;

#[derive(Debug, thiserror::Error)]
#[error("fake: {0}")]
struct FakeError(String);

impl From<crate::kvm::Error> for FakeError {
    fn from(e: crate::kvm::Error) -> Self {
        FakeError(e.to_string())
    }
}

/// Records the byte the guest reports and ends the VM.
struct Report {
    seen: Arc<AtomicU8>,
    ctl: Arc<VmControl>,
}

impl BusDevice for Report {
    fn read(&mut self, _offset: u64, _data: &mut [u8]) {}
    fn write(&mut self, _offset: u64, data: &[u8]) {
        self.seen
            .store(data.first().copied().unwrap_or(0), Ordering::SeqCst);
        self.ctl.request_exit(GuestExit::PowerOff);
    }
}

struct NullConsole;

impl ConsoleSink for NullConsole {
    fn queue_input(&self, _bytes: &[u8]) {}
}

/// An architecture with nothing but guest RAM and one port.
struct Fake {
    seen: Arc<AtomicU8>,
}

/// What the fake's stages hand each other, to check the core passes them on.
struct FakeChipset(&'static str);
struct FakeTopology(usize);

impl Arch for Fake {
    type Error = FakeError;
    type Exit<'a> = crate::arch::NoExit;
    type Chipset = FakeChipset;
    type Topology = FakeTopology;
    type Boot = u64;

    fn new(_cfg: &VmConfig) -> Result<Self, FakeError> {
        Ok(Fake {
            seen: Arc::new(AtomicU8::new(0)),
        })
    }
    fn max_cpus(&self) -> u32 {
        1
    }
    fn vm_type(&self, _kvm: &Kvm) -> Result<u64, FakeError> {
        Ok(0)
    }
    fn ram_ranges(&self, ram_size: u64) -> Result<Vec<RamRange>, FakeError> {
        Ok(vec![RamRange {
            base: 0,
            size: ram_size,
        }])
    }
    fn wants_thp(&self) -> bool {
        false
    }
    fn setup_vm(&self, _kvm: &Kvm, _vm: &kvm::Vm) -> Result<FakeChipset, FakeError> {
        Ok(FakeChipset("chip"))
    }
    fn setup_devices(
        &self,
        chip: &FakeChipset,
        p: &mut Platform,
        virtio: VirtioSet,
    ) -> Result<Devices, FakeError> {
        assert_eq!(chip.0, "chip");
        if !virtio.devices.is_empty() {
            return Err(FakeError("the fake places no virtio devices".into()));
        }
        let report = Report {
            seen: self.seen.clone(),
            ctl: p.ctl.clone(),
        };
        p.pio
            .insert("report", REPORT_PORT, 1, Arc::new(Mutex::new(report)))
            .map_err(|e| FakeError(e.to_string()))?;
        Ok(Devices {
            console: Arc::new(NullConsole),
            exits: Arc::new(NoExits),
            tree: DeviceTree::default(),
        })
    }
    fn default_cmdline(&self) -> &'static str {
        ""
    }
    fn init_vcpus(
        &self,
        _chip: &FakeChipset,
        _kvm: &Kvm,
        _vm: &kvm::Vm,
        vcpus: &[Vcpu],
    ) -> Result<FakeTopology, FakeError> {
        Ok(FakeTopology(vcpus.len()))
    }
    fn load(
        &self,
        _chip: &FakeChipset,
        topology: &FakeTopology,
        _devices: &DeviceTree,
        mem: &GuestMemory,
        images: &BootImages<'_>,
    ) -> Result<u64, FakeError> {
        assert_eq!(topology.0, 1);
        crate::loader::write::write(mem, "kernel", GUEST_AT, images.kernel)
            .map_err(|e| FakeError(e.to_string()))?;
        Ok(GUEST_AT)
    }
    fn boot_vcpu(&self, vcpu: &Vcpu, entry: &u64) -> Result<(), FakeError> {
        let mut s = vcpu.sregs()?;
        s.cs.base = 0;
        s.cs.selector = 0;
        vcpu.set_sregs(&s)?;
        let mut r = vcpu.regs()?;
        r.rip = *entry;
        r.rflags = 2;
        vcpu.set_regs(&r)?;
        Ok(())
    }
    fn dump_vcpu(&self, _vcpu: &Vcpu) -> String {
        String::new()
    }
}

fn config(kernel: &std::path::Path, name: &str) -> VmConfig {
    use crate::cli::{Cli, Command};
    use clap::Parser;
    let argv = [
        "lkvm",
        "run",
        "--nodefaults",
        "-m",
        "16",
        "-c",
        "1",
        "--name",
        name,
        "-k",
    ];
    let cli = Cli::try_parse_from(argv.iter().map(|s| s.as_ref()).chain([kernel.as_os_str()]))
        .expect("arguments parse");
    let Command::Run(run) = cli.command else {
        panic!("not run");
    };
    let host = config::Host {
        cpus: 1,
        ram: None,
        kernel: Err(vec![]),
    };
    VmConfig::from_args(&run.into_args().expect("run arguments"), host).expect("config")
}

#[test]
fn a_fake_architecture_is_built_run_and_torn_down_by_the_core() {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        eprintln!("skipped: no usable /dev/kvm");
        return;
    }
    let dir = std::env::temp_dir().join(format!("lkvm-fake-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kernel = dir.join("guest.bin");
    std::fs::write(&kernel, GUEST).unwrap();
    let name = format!("fake-{}", std::process::id());
    let vm = build::<Fake>(&config(&kernel, &name)).expect("build");
    let seen = vm.arch.seen.clone();
    let exit = vm.run().expect("run");
    assert_eq!(exit, GuestExit::PowerOff);
    assert_eq!(seen.load(Ordering::SeqCst), 42, "the guest ran from RAM");
    let socket = crate::ipc::socket_path(&crate::ipc::home().unwrap(), &name);
    assert!(!socket.exists(), "the control socket is gone");
    let _ = std::fs::remove_dir_all(&dir);
}
