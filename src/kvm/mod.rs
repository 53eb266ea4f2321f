//! The hypervisor seam: `Kvm` (system fd), `Vm` (memory slots, irq lines,
//! irqfd/ioeventfd) and `Vcpu` (`run() -> VcpuExit`).
//!
//! On x86_64, aarch64 and riscv64 the backend wraps kvm-ioctls. kvm-ioctls and
//! kvm-bindings do not build for powerpc64, which gets its own backend later;
//! until then (and on any other target) a backend that refuses every operation
//! keeps the tree compiling. Raw exits are translated into [`VcpuExit`] here
//! and nowhere else reads `kvm_run`.

pub mod caps;
mod exit;
pub(crate) mod kick;

pub use kick::VcpuKicker;

pub use exit::{SystemEvent, VcpuExit};

use std::io;

/// Errors of the hypervisor seam. Each names the KVM operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} reports KVM API version {found}, lkvm needs {expected}")]
    ApiVersion {
        path: String,
        found: i32,
        expected: i32,
    },
    #[error("{op} failed: {source}")]
    Ioctl {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an errno-style failure of the named ioctl.
    pub fn ioctl(op: &'static str, source: impl Into<io::Error>) -> Self {
        Error::Ioctl {
            op,
            source: source.into(),
        }
    }

    /// The errno behind an ioctl failure, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Ioctl { source, .. } | Error::Open { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// The KVM API version every supported kernel reports (`KVM_GET_API_VERSION`).
pub const KVM_API_VERSION: i32 = 12;

/// What both backends do around opening the KVM device: the path as the C
/// string `open(2)` takes, and the API version check on the new fd.
pub(crate) struct DevicePath<'a> {
    path: &'a std::path::Path,
}

impl<'a> DevicePath<'a> {
    pub(crate) fn new(path: &'a std::path::Path) -> Self {
        DevicePath { path }
    }

    /// The error of a failed `open(2)`.
    pub(crate) fn open_error(&self, source: io::Error) -> Error {
        Error::Open {
            path: self.path.display().to_string(),
            source,
        }
    }

    pub(crate) fn c_string(&self) -> Result<std::ffi::CString> {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::CString::new(self.path.as_os_str().as_bytes())
            .map_err(|_| self.open_error(io::Error::from(io::ErrorKind::InvalidInput)))
    }

    /// Refuses a device that reports another API version.
    pub(crate) fn check_version(&self, found: i32) -> Result<()> {
        if found == KVM_API_VERSION {
            return Ok(());
        }
        Err(Error::ApiVersion {
            path: self.path.display().to_string(),
            found,
            expected: KVM_API_VERSION,
        })
    }
}

/// Flags of a memory slot (`KVM_MEM_*`).
pub const MEM_LOG_DIRTY_PAGES: u32 = 1 << 0;
pub const MEM_READONLY: u32 = 1 << 1;

/// One `KVM_SET_USER_MEMORY_REGION` request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    pub slot: u32,
    pub flags: u32,
    pub guest_phys_addr: u64,
    pub memory_size: u64,
    pub userspace_addr: u64,
}

/// Where an ioeventfd listens: a port or a guest-physical MMIO address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoAddr {
    Pio(u64),
    Mmio(u64),
}

/// An MSI as a device sends it: the doorbell address and payload, plus the
/// requester id where the interrupt controller needs one (GICv3 ITS).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsiMessage {
    pub addr: u64,
    pub data: u32,
    pub devid: Option<u32>,
}

/// Where a GSI delivers: an interrupt controller input, or an MSI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GsiRoute {
    Irqchip { chip: u32, pin: u32 },
    Msi(MsiMessage),
}

cfg_if::cfg_if! {
    if #[cfg(any(x86, arm64, riscv))] {
        mod ioctls;
        pub use ioctls::{Device, Kvm, Vcpu, Vm};
        #[cfg(riscv)]
        pub use ioctls::InterruptLine;
    } else {
        pub use crate::powerpc::kvm_sys::backend::{Device, InterruptLine, Kvm, Vcpu, Vm};
    }
}
