//! Stand-in backend for targets without a KVM backend in lkvm yet (the
//! PowerPC bindings arrive with the PowerPC port). Every operation fails with
//! a clear error instead of the tree not compiling.

use std::path::Path;

use vmm_sys_util::eventfd::EventFd;

use super::{Error, MemoryRegion, Result, VcpuExit};

#[derive(Debug)]
pub struct Kvm;

impl Kvm {
    pub fn open(_path: &Path) -> Result<Kvm> {
        Err(Error::Unsupported)
    }
    pub fn check_extension(&self, _cap: u32) -> i32 {
        0
    }
    pub fn max_vcpus(&self) -> usize {
        0
    }
    pub fn create_vm(&self, _vm_type: u64) -> Result<Vm> {
        Err(Error::Unsupported)
    }
}

#[derive(Debug)]
pub struct Vm;

impl Vm {
    pub fn check_extension(&self, _cap: u32) -> i32 {
        0
    }
    /// # Safety
    /// Same contract as the real backends; this one never registers anything.
    pub unsafe fn set_user_memory_region(&self, _region: MemoryRegion) -> Result<()> {
        Err(Error::Unsupported)
    }
    pub fn set_irq_line(&self, _line: u32, _level: bool) -> Result<()> {
        Err(Error::Unsupported)
    }
    pub fn register_irqfd(&self, _evt: &EventFd, _gsi: u32) -> Result<()> {
        Err(Error::Unsupported)
    }
    pub fn register_ioevent(
        &self,
        _evt: &EventFd,
        _addr: super::IoAddr,
        _datamatch: Option<u32>,
    ) -> Result<()> {
        Err(Error::Unsupported)
    }
    pub fn unregister_ioevent(
        &self,
        _evt: &EventFd,
        _addr: super::IoAddr,
        _datamatch: Option<u32>,
    ) -> Result<()> {
        Err(Error::Unsupported)
    }
    pub fn set_gsi_routing(&self, _routes: &[(u32, super::GsiRoute)]) -> Result<()> {
        Err(Error::Unsupported)
    }
    pub fn unregister_irqfd(&self, _evt: &EventFd, _gsi: u32) -> Result<()> {
        Err(Error::Unsupported)
    }
    pub fn signal_msi(&self, _msg: super::MsiMessage) -> Result<()> {
        Err(Error::Unsupported)
    }
    pub fn create_vcpu(&self, _id: u32) -> Result<Vcpu> {
        Err(Error::Unsupported)
    }
}

#[derive(Debug)]
pub struct Vcpu;

impl Vcpu {
    pub fn id(&self) -> u32 {
        0
    }
    pub fn bind_to_current_thread(&mut self) -> Result<()> {
        Err(Error::Unsupported)
    }
    pub fn clear_immediate_exit(&mut self) {}
    pub fn run(&mut self) -> Result<VcpuExit<'_>> {
        Err(Error::Unsupported)
    }
}
