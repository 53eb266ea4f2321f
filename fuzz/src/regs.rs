//! What the register-file targets share: guest accesses read from the
//! input, a virtio device that lets the fuzzer raise its interrupts, and
//! stand-ins for KVM (MSI sink with an optional irqfd router, ioeventfd
//! registry, interrupt lines).

use std::sync::{Arc, Mutex};

use lkvm::irq::{IrqChip, MsiSink};
use lkvm::kvm::{GsiRoute, IoAddr, MsiMessage};
use lkvm::msi::testing::FakeTable;
use lkvm::msi::MsiRouter;
use lkvm::virtio::device::{read_config_bytes, IoEvents};
use lkvm::virtio::{Activation, Interrupt, VirtioDevice};
use vmm_sys_util::eventfd::EventFd;

use crate::input::Input;

/// One guest access.
pub enum Access {
    Read { offset: u64, len: usize },
    Write { offset: u64, data: Vec<u8> },
}

/// Reads an access: `kind u8` (bit 0 write, bits 1-2 size 1/2/4/8),
/// `offset` (`offset_bytes` bytes, little-endian, reduced modulo
/// `window`), then for a write the value (8 bytes, the first `size`
/// used).
pub fn access(inp: &mut Input, kind: u8, offset_bytes: usize, window: u64) -> Option<Access> {
    let len = 1usize << ((kind >> 1) & 3);
    let mut raw = [0u8; 8];
    raw[..offset_bytes].copy_from_slice(inp.bytes(offset_bytes)?);
    let offset = u64::from_le_bytes(raw) % window.max(1);
    if kind & 1 == 0 {
        return Some(Access::Read { offset, len });
    }
    let v = inp.u64()?.to_le_bytes();
    Some(Access::Write {
        offset,
        data: v[..len].to_vec(),
    })
}

/// Interrupt lines that go nowhere.
pub struct NoIrq;

impl IrqChip for NoIrq {
    fn set_level(&self, _line: u32, _level: bool) -> Result<(), lkvm::irq::Error> {
        Ok(())
    }
}

/// MSIs accepted and dropped; with a router, vectors get (fake) irqfds.
pub struct Sink(pub Option<Arc<MsiRouter>>);

impl Sink {
    pub fn new(with_router: bool, with_devid: bool) -> Sink {
        Sink(with_router.then(|| {
            // The routes KVM keeps by default (whatever they are) come
            // before the MSI routes in every table the router sets.
            let defaults = (0..24)
                .map(|pin| (pin, GsiRoute::Irqchip { chip: 2, pin }))
                .collect();
            MsiRouter::new(Arc::new(FakeTable::default()), defaults, with_devid)
        }))
    }
}

impl MsiSink for Sink {
    fn send(&self, _msg: MsiMessage) -> Result<(), lkvm::irq::Error> {
        Ok(())
    }
    fn router(&self) -> Option<Arc<MsiRouter>> {
        self.0.clone()
    }
}

/// ioeventfds registered with nobody.
pub struct NoIo;

impl IoEvents for NoIo {
    fn register(&self, _: &EventFd, _: IoAddr, _: Option<u32>) -> Result<(), lkvm::kvm::Error> {
        Ok(())
    }
    fn unregister(&self, _: &EventFd, _: IoAddr, _: Option<u32>) -> Result<(), lkvm::kvm::Error> {
        Ok(())
    }
}

/// The interrupt a running [`Dev`] was given, for the fuzzer to raise.
pub type DevIrq = Arc<Mutex<Option<Arc<dyn Interrupt>>>>;

/// A virtio device of any type, features, queue sizes and config space,
/// that keeps the interrupt its transport hands it at activation.
pub struct Dev {
    pub kind: u32,
    pub features: u64,
    pub queues: Vec<u16>,
    pub config: Vec<u8>,
    pub irq: DevIrq,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Dev {
    /// A device from `kind u8, features u64, nq u8, nq x size u8`, config
    /// space of 24 bytes.
    pub fn from_input(inp: &mut Input) -> Option<(Dev, DevIrq)> {
        let kind = u32::from(inp.u8()? % 10);
        let features = inp.u64()?;
        let nq = usize::from(inp.u8()? % 4) + 1;
        let queues = (0..nq)
            .map(|_| inp.u8().map(crate::driver::queue_size))
            .collect::<Option<Vec<u16>>>()?;
        let irq: DevIrq = Arc::default();
        Some((
            Dev {
                kind,
                features,
                queues,
                config: (0..24u8).collect(),
                irq: irq.clone(),
            },
            irq,
        ))
    }

    /// Raises what `what` says on a running device: 0 a queue's
    /// interrupt (queue `q`), 1 a config change, 2 DEVICE_NEEDS_RESET.
    pub fn raise(irq: &DevIrq, what: u8, q: u16) {
        let Some(i) = lock(irq).clone() else { return };
        match what % 3 {
            0 => i.queue(q),
            1 => i.config(),
            _ => i.needs_reset(),
        }
    }
}

impl VirtioDevice for Dev {
    fn device_type(&self) -> u32 {
        self.kind
    }
    fn name(&self) -> &'static str {
        "fuzz-dev"
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        self.queues.clone()
    }
    fn features(&self) -> u64 {
        self.features
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let Ok(at) = usize::try_from(offset) else {
            return;
        };
        for (i, b) in data.iter().enumerate() {
            if let Some(slot) = at.checked_add(i).and_then(|j| self.config.get_mut(j)) {
                *slot = *b;
            }
        }
    }
    fn activate(&mut self, act: Activation) -> Result<(), lkvm::virtio::device::Error> {
        *lock(&self.irq) = Some(act.irq);
        Ok(())
    }
    fn reset(&mut self) {
        *lock(&self.irq) = None;
    }
}
