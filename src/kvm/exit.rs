//! The one exit enum the rest of lkvm sees.

/// Why a vCPU left `KVM_RUN`, already decoded. Borrowed slices point into the
/// vCPU's shared `kvm_run` page and must be filled before the next `run()`.
#[derive(Debug)]
pub enum VcpuExit<'a> {
    /// Port input: `data` holds `count` accesses of `size` bytes each.
    IoIn {
        port: u16,
        size: usize,
        data: &'a mut [u8],
    },
    /// Port output: `data` holds `count` accesses of `size` bytes each.
    IoOut {
        port: u16,
        size: usize,
        data: &'a [u8],
    },
    MmioRead {
        addr: u64,
        data: &'a mut [u8],
    },
    MmioWrite {
        addr: u64,
        data: &'a [u8],
    },
    /// The guest halted with no in-kernel irqchip to wake it.
    Hlt,
    /// x86: the guest triple-faulted.
    Shutdown,
    /// PSCI/SBI/... power state requests the kernel forwards.
    SystemEvent(SystemEvent),
    /// VM entry failed in hardware.
    FailEntry {
        reason: u64,
        cpu: u32,
    },
    /// KVM could not emulate something (`KVM_EXIT_INTERNAL_ERROR`).
    InternalError {
        suberror: u32,
    },
    /// `KVM_RUN` returned early because of a signal or `immediate_exit`.
    Interrupted,
    /// An exit only this architecture has (RISC-V SBI, PowerPC hcalls),
    /// answered by the architecture's [`crate::arch::ExitHandler`].
    Arch(crate::arch::HostExit<'a>),
    /// Any other exit reason, by number.
    Other(u32),
}

/// `KVM_EXIT_SYSTEM_EVENT` types that matter to a VMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SystemEvent {
    Shutdown,
    Reset,
    Crash,
    Other(u32),
}

impl SystemEvent {
    /// Decodes `kvm_run.system_event.type`.
    pub fn from_raw(kind: u32) -> Self {
        match kind {
            1 => SystemEvent::Shutdown,
            2 => SystemEvent::Reset,
            3 => SystemEvent::Crash,
            other => SystemEvent::Other(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_event_numbers_match_the_uapi() {
        assert_eq!(SystemEvent::from_raw(1), SystemEvent::Shutdown);
        assert_eq!(SystemEvent::from_raw(2), SystemEvent::Reset);
        assert_eq!(SystemEvent::from_raw(3), SystemEvent::Crash);
        assert_eq!(SystemEvent::from_raw(9), SystemEvent::Other(9));
    }
}
