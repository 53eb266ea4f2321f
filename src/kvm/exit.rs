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
    /// RISC-V: an SBI call KVM forwards to userspace; the reply goes in
    /// `ret` (a0, a1).
    Sbi {
        ext: u64,
        func: u64,
        args: [u64; 6],
        ret: &'a mut [u64; 2],
    },
    /// PowerPC: a PAPR hypercall KVM forwards (`sc 1`): `nr` is r3, `args`
    /// r4..r12 (hcalls return values in them too), `ret` goes to r3.
    Hcall {
        nr: u64,
        args: &'a mut [u64; 9],
        ret: &'a mut u64,
    },
    /// RISC-V: a CSR access KVM forwards (`seed`); the value read goes in
    /// `ret`.
    Csr {
        csr: u64,
        new_value: u64,
        write_mask: u64,
        ret: &'a mut u64,
    },
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
