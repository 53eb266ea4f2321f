//! What a virtio device is to its transport.

use std::sync::Arc;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use crate::memory::GuestMemory;

/// How a device tells the driver it used buffers or changed its config.
/// The transport decides what that means (ISR bit and a line, or an MSI-X
/// vector).
pub trait Interrupt: Send + Sync {
    fn queue(&self, index: u16);
    fn config(&self);
    /// The device met an error it cannot recover from (a queue the driver
    /// made inconsistent): DEVICE_NEEDS_RESET is set in the status until
    /// the driver resets the device, and a configuration interrupt sent
    /// (virtio 1.2, 2.1.2).
    fn needs_reset(&self);
}

/// One queue the driver set up and enabled.
pub struct ActiveQueue {
    pub index: u16,
    pub queue: Queue,
    /// Readable whenever the driver notified this queue.
    pub kick: EventFd,
}

/// Everything a device gets when the driver sets DRIVER_OK.
pub struct Activation {
    pub mem: GuestMemory,
    /// The enabled queues, in index order (disabled ones are left out).
    pub queues: Vec<ActiveQueue>,
    pub irq: Arc<dyn Interrupt>,
    /// The features both sides accepted.
    pub features: u64,
}

impl Activation {
    /// Takes queue `index` out of the activation, if the driver enabled it.
    pub fn take_queue(&mut self, index: u16) -> Option<ActiveQueue> {
        let at = self.queues.iter().position(|q| q.index == index)?;
        Some(self.queues.remove(at))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: the driver did not enable queue {1}, which this device needs")]
    MissingQueue(&'static str, u16),
    #[error("{0}: cannot start its worker thread: {1}")]
    Worker(&'static str, #[source] std::io::Error),
    #[error("{0}: {1}")]
    Device(&'static str, String),
}

/// A virtio device, transport-independent.
pub trait VirtioDevice: Send {
    /// The virtio device id ([`super::ids`]).
    fn device_type(&self) -> u32;
    /// A short name for logs.
    fn name(&self) -> &'static str;
    /// The largest size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Device-specific feature bits; the transport adds VIRTIO_F_VERSION_1.
    fn features(&self) -> u64;
    /// Reads the device-specific configuration space. Bytes past its end
    /// read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space; most devices
    /// ignore it.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Starts serving the queues.
    fn activate(&mut self, act: Activation) -> Result<(), Error>;
    /// Stops serving and forgets the queues: the driver reset the device.
    fn reset(&mut self);
}

/// Copies the part of `config` that `offset..offset+data.len()` covers into
/// `data` (zero elsewhere): the usual `read_config`.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}

/// Where transports register their notification eventfds: KVM's
/// ioeventfds, so a guest notification wakes the device without an exit
/// to userspace.
pub trait IoEvents: Send + Sync {
    fn register(
        &self,
        evt: &EventFd,
        addr: crate::kvm::IoAddr,
        datamatch: Option<u32>,
    ) -> Result<(), crate::kvm::Error>;
    fn unregister(
        &self,
        evt: &EventFd,
        addr: crate::kvm::IoAddr,
        datamatch: Option<u32>,
    ) -> Result<(), crate::kvm::Error>;
}

impl IoEvents for crate::kvm::Vm {
    fn register(
        &self,
        evt: &EventFd,
        addr: crate::kvm::IoAddr,
        datamatch: Option<u32>,
    ) -> Result<(), crate::kvm::Error> {
        self.register_ioevent(evt, addr, datamatch)
    }
    fn unregister(
        &self,
        evt: &EventFd,
        addr: crate::kvm::IoAddr,
        datamatch: Option<u32>,
    ) -> Result<(), crate::kvm::Error> {
        self.unregister_ioevent(evt, addr, datamatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_clip_at_the_end() {
        let cfg = [1u8, 2, 3, 4];
        let mut d = [0xffu8; 4];
        read_config_bytes(&cfg, 2, &mut d);
        assert_eq!(d, [3, 4, 0, 0]);
        read_config_bytes(&cfg, 9, &mut d);
        assert_eq!(d, [0; 4]);
        read_config_bytes(&cfg, u64::MAX, &mut d);
        assert_eq!(d, [0; 4]);
    }
}
