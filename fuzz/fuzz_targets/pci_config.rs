//! PCI configuration as a guest reaches it: x86's mechanism #1 (ports
//! 0xcf8-0xcff with the reset control at 0xcf9), ECAM (arm64, RISC-V),
//! PowerPC's RTAS configuration calls, and the memory window where the
//! functions' BARs decode wherever the guest moved them. On the bus: the
//! host bridge, a virtio-pci function with MSI-X and a scratch function.
//!
//! Input: `mode u8` (bit 0 lkvm assigns the BARs first, as firmware),
//! then operations `op u8`: `op % 4` 0 CF8/CFC (`kind u8`, 1-byte offset
//! in the 8 ports), 1 ECAM (`kind u8`, 4-byte offset within 256 buses),
//! 2 the memory window (`kind u8`, 4-byte offset into the 1 MiB of PCI
//! space from 0x4000_0000), 3 an RTAS call (`addr u32, size u8, write
//! u8, value u32`). `kind` is as in `lkvm_fuzz::regs::access`.
#![no_main]

use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use lkvm::bus::BusDevice;
use lkvm::control::VmControl;
use lkvm::hw::pci::ecam::PciEcam;
use lkvm::hw::pci::testing::Scratch;
use lkvm::hw::pci::{PciConfigIo, PciMmioWindow, PciRoot};
use lkvm::irq::{IrqLine, MsiSink, Trigger};
use lkvm::virtio::common::VirtioState;
use lkvm::virtio::device::IoEvents;
use lkvm::virtio::pci::VirtioPci;
use lkvm_fuzz::driver::memory;
use lkvm_fuzz::input::Input;
use lkvm_fuzz::regs::{access, Access, Dev, NoIo, NoIrq, Sink};

const WINDOW_BASE: u64 = 0x4000_0000;
const WINDOW_SIZE: u64 = 0x10_0000;

fn rw(dev: &mut dyn BusDevice, a: Access) {
    match a {
        Access::Read { offset, len } => dev.read(offset, &mut vec![0u8; len]),
        Access::Write { offset, data } => dev.write(offset, &data),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let Some(mode) = inp.u8() else { return };
    let mut root = PciRoot::new();
    let dev = Dev {
        kind: 1,
        features: 1 << 32,
        queues: vec![16, 16],
        config: vec![0; 8],
        irq: Default::default(),
    };
    let Ok(state) = VirtioState::new(Box::new(dev), memory()) else {
        return;
    };
    let Ok(vpci) = VirtioPci::new(
        state,
        IrqLine::new(Arc::new(NoIrq), 41, Trigger::Level),
        41,
        Some(Arc::new(Sink::new(true, false)) as Arc<dyn MsiSink>),
        0x8,
        Some(Arc::new(NoIo) as Arc<dyn IoEvents>),
    ) else {
        return;
    };
    if root.add(Arc::new(Mutex::new(vpci))).is_err()
        || root.add(Arc::new(Mutex::new(Scratch::new(0x100)))).is_err()
    {
        return;
    }
    let root = Arc::new(root);
    if mode & 1 != 0 && root.assign_bars(WINDOW_BASE, WINDOW_SIZE).is_err() {
        return;
    }
    let Ok(ctl) = VmControl::new() else { return };
    let mut cf8 = PciConfigIo::new(root.clone(), Arc::new(ctl));
    let mut ecam = PciEcam(root.clone());
    let mut window = PciMmioWindow {
        root: root.clone(),
        base: WINDOW_BASE,
    };
    while let Some(op) = inp.u8() {
        match op % 4 {
            0 => {
                let Some(kind) = inp.u8() else { break };
                let Some(a) = access(&mut inp, kind, 1, 8) else {
                    break;
                };
                rw(&mut cf8, a);
            }
            1 => {
                let Some(kind) = inp.u8() else { break };
                let Some(a) = access(&mut inp, kind, 4, 256 << 20) else {
                    break;
                };
                rw(&mut ecam, a);
            }
            2 => {
                let Some(kind) = inp.u8() else { break };
                let Some(a) = access(&mut inp, kind, 4, WINDOW_SIZE) else {
                    break;
                };
                rw(&mut window, a);
            }
            _ => {
                let (Some(addr), Some(size), Some(write), Some(v)) =
                    (inp.u32(), inp.u8(), inp.u8(), inp.u32())
                else {
                    break;
                };
                if write & 1 != 0 {
                    lkvm::powerpc::pci::config_write(&root, addr, u32::from(size), v);
                } else {
                    let _ = lkvm::powerpc::pci::config_read(&root, addr, u32::from(size));
                }
            }
        }
    }
    let _ = root.describe();
});
