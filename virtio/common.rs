//! The register state every virtio transport shares: device status,
//! feature negotiation, queue configuration, and the step from DRIVER_OK to
//! a running device and back through reset.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::device::{Activation, ActiveQueue, Interrupt, VirtioDevice};
use super::{features, status};
use crate::memory::GuestMemory;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: cannot create a queue of {1} entries: {2:?}")]
    Queue(&'static str, u16, virtio_queue::Error),
    #[error("{0}: cannot create a kick eventfd: {1}")]
    EventFd(&'static str, #[source] std::io::Error),
}

/// A device plus the transport-independent half of its registers.
pub struct VirtioState {
    dev: Box<dyn VirtioDevice>,
    mem: GuestMemory,
    status: u8,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u16,
    queues: Vec<Queue>,
    kicks: Vec<EventFd>,
    config_generation: u32,
    active: bool,
}

impl VirtioState {
    pub fn new(dev: Box<dyn VirtioDevice>, mem: GuestMemory) -> Result<Self, Error> {
        let name = dev.name();
        let mut queues = Vec::new();
        let mut kicks = Vec::new();
        for size in dev.queue_max_sizes() {
            queues.push(Queue::new(size).map_err(|e| Error::Queue(name, size, e))?);
            kicks.push(EventFd::new(EFD_NONBLOCK).map_err(|e| Error::EventFd(name, e))?);
        }
        Ok(VirtioState {
            dev,
            mem,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues,
            kicks,
            config_generation: 0,
            active: false,
        })
    }

    pub fn name(&self) -> &'static str {
        self.dev.name()
    }

    pub fn device_type(&self) -> u32 {
        self.dev.device_type()
    }

    pub fn num_queues(&self) -> u16 {
        self.queues.len() as u16
    }

    /// The eventfd that stands for a notification of queue `index`; the
    /// transport registers it as an ioeventfd, or writes it itself.
    pub fn kick(&self, index: u16) -> Option<&EventFd> {
        self.kicks.get(index as usize)
    }

    pub fn device_features(&self) -> u64 {
        self.dev.features() | features::VERSION_1
    }

    pub fn status(&self) -> u8 {
        self.status
    }

    pub fn config_generation(&self) -> u32 {
        self.config_generation
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// `DeviceFeatures` for the current selector.
    pub fn device_features_word(&self) -> u32 {
        match self.device_features_sel {
            0 => self.device_features() as u32,
            1 => (self.device_features() >> 32) as u32,
            _ => 0,
        }
    }

    pub fn set_device_features_sel(&mut self, v: u32) {
        self.device_features_sel = v;
    }

    pub fn device_features_sel(&self) -> u32 {
        self.device_features_sel
    }

    pub fn set_driver_features_sel(&mut self, v: u32) {
        self.driver_features_sel = v;
    }

    pub fn driver_features_sel(&self) -> u32 {
        self.driver_features_sel
    }

    pub fn driver_features_word(&self) -> u32 {
        match self.driver_features_sel {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        }
    }

    /// `DriverFeatures` for the current selector; ignored once FEATURES_OK
    /// is set, as the spec requires.
    pub fn set_driver_features_word(&mut self, v: u32) {
        if self.status & status::FEATURES_OK != 0 {
            log::debug!("{}: driver features written after FEATURES_OK", self.name());
            return;
        }
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v),
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32),
            _ => {}
        }
    }

    pub fn queue_sel(&self) -> u16 {
        self.queue_sel
    }

    pub fn set_queue_sel(&mut self, v: u16) {
        self.queue_sel = v;
    }

    /// The selected queue, if it exists.
    pub fn queue(&self) -> Option<&Queue> {
        self.queues.get(self.queue_sel as usize)
    }

    /// The selected queue for configuration: none once the device runs
    /// (the driver must reset first), or if the selector is out of range.
    pub fn queue_mut(&mut self) -> Option<&mut Queue> {
        if self.active {
            log::debug!("{}: queue configured while the device runs", self.name());
            return None;
        }
        self.queues.get_mut(self.queue_sel as usize)
    }

    pub fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.dev.read_config(offset, data);
    }

    pub fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.dev.write_config(offset, data);
    }

    /// A config change the device made: the next read of the generation
    /// tells the driver to read again.
    pub fn bump_generation(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
    }

    /// Writes the device status. 0 resets the device. Returns true when
    /// the write reset it, so the transport clears its own state too.
    pub fn set_status(&mut self, v: u8, irq: &Arc<dyn Interrupt>) -> bool {
        if v == 0 {
            self.reset();
            return true;
        }
        let newly = v & !self.status;
        let mut v = v;
        if newly & status::FEATURES_OK != 0 && !self.features_acceptable() {
            log::debug!(
                "{}: driver features {:#x} refused (device offers {:#x})",
                self.name(),
                self.driver_features,
                self.device_features()
            );
            v &= !status::FEATURES_OK;
        }
        self.status = v;
        if newly & status::DRIVER_OK != 0 && v & status::FEATURES_OK != 0 && !self.active {
            self.activate(irq.clone());
        }
        false
    }

    /// Drivers may only accept what the device offered, and lkvm speaks
    /// only the modern interface.
    fn features_acceptable(&self) -> bool {
        self.driver_features & !self.device_features() == 0
            && self.driver_features & features::VERSION_1 != 0
    }

    fn activate(&mut self, irq: Arc<dyn Interrupt>) {
        let mut queues = Vec::new();
        for (i, q) in self.queues.iter().enumerate() {
            if !q.ready() {
                continue;
            }
            if !q.is_valid(&self.mem) {
                log::warn!(
                    "{}: queue {i} is outside guest RAM; device not started",
                    self.name()
                );
                self.status |= status::NEEDS_RESET;
                return;
            }
            let kick = match self.kicks[i].try_clone() {
                Ok(k) => k,
                Err(e) => {
                    log::error!("{}: {e}", self.name());
                    self.status |= status::NEEDS_RESET;
                    return;
                }
            };
            let mut queue = match Queue::try_from(q.state()) {
                Ok(q) => q,
                Err(e) => {
                    log::warn!("{}: queue {i}: {e:?}", self.name());
                    self.status |= status::NEEDS_RESET;
                    return;
                }
            };
            queue.set_event_idx(self.driver_features & features::RING_EVENT_IDX != 0);
            queues.push(ActiveQueue {
                index: i as u16,
                queue,
                kick,
            });
        }
        let act = Activation {
            mem: self.mem.clone(),
            queues,
            irq,
            features: self.driver_features,
        };
        match self.dev.activate(act) {
            Ok(()) => {
                self.active = true;
                log::debug!(
                    "{}: started with features {:#x}",
                    self.name(),
                    self.driver_features
                );
            }
            Err(e) => {
                log::warn!("{e}");
                self.status |= status::NEEDS_RESET;
            }
        }
    }

    fn reset(&mut self) {
        if self.active {
            self.dev.reset();
        }
        self.active = false;
        self.status = 0;
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        for q in &mut self.queues {
            q.reset();
        }
        for k in &self.kicks {
            let _ = k.read();
        }
    }
}

impl Drop for VirtioState {
    fn drop(&mut self) {
        if self.active {
            self.dev.reset();
        }
    }
}

// Test code (also built for the fuzz targets, which clippy does not take
// for tests): unwrap is fine here.
#[cfg(any(test, fuzzing))]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub mod testing {
    //! A device that records what the transport did to it.

    use std::sync::{Arc, Mutex};

    use super::super::device::{Activation, Error, VirtioDevice};

    #[derive(Default)]
    pub struct Log {
        pub activations: Vec<(Vec<u16>, u64)>,
        pub resets: usize,
        pub config_writes: Vec<(u64, Vec<u8>)>,
    }

    pub struct Probe {
        pub log: Arc<Mutex<Log>>,
        pub features: u64,
        pub config: Vec<u8>,
        pub queues: Vec<u16>,
    }

    impl Probe {
        pub fn new(queues: &[u16]) -> (Self, Arc<Mutex<Log>>) {
            let log = Arc::new(Mutex::new(Log::default()));
            (
                Probe {
                    log: log.clone(),
                    features: 1 << 5,
                    config: vec![0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88],
                    queues: queues.to_vec(),
                },
                log,
            )
        }
    }

    impl VirtioDevice for Probe {
        fn device_type(&self) -> u32 {
            4
        }
        fn name(&self) -> &'static str {
            "probe"
        }
        fn queue_max_sizes(&self) -> Vec<u16> {
            self.queues.clone()
        }
        fn features(&self) -> u64 {
            self.features
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            super::super::device::read_config_bytes(&self.config, offset, data);
        }
        fn write_config(&mut self, offset: u64, data: &[u8]) {
            self.log
                .lock()
                .unwrap()
                .config_writes
                .push((offset, data.to_vec()));
        }
        fn activate(&mut self, act: Activation) -> Result<(), Error> {
            self.log
                .lock()
                .unwrap()
                .activations
                .push((act.queues.iter().map(|q| q.index).collect(), act.features));
            Ok(())
        }
        fn reset(&mut self) {
            self.log.lock().unwrap().resets += 1;
        }
    }
}
