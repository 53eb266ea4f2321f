//! Interrupt lines as devices see them. A device holds an [`IrqLine`] and
//! never learns which controller (IOAPIC/PIC, GIC, PLIC/AIA, XICS) is behind.

use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot set interrupt line {line}: {source}")]
    Set {
        line: u32,
        #[source]
        source: crate::kvm::Error,
    },
    #[error("cannot send MSI {data:#x} to {addr:#x}: {source}")]
    Msi {
        addr: u64,
        data: u32,
        #[source]
        source: crate::kvm::Error,
    },
    #[error("MSI to {addr:#x} reaches no interrupt controller")]
    MsiTarget { addr: u64 },
}

/// Something that can drive numbered interrupt inputs.
pub trait IrqChip: Send + Sync {
    fn set_level(&self, line: u32, level: bool) -> Result<(), Error>;
}

impl IrqChip for crate::kvm::Vm {
    fn set_level(&self, line: u32, level: bool) -> Result<(), Error> {
        self.set_irq_line(line, level)
            .map_err(|source| Error::Set { line, source })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Edge,
    Level,
}

/// One interrupt input of the platform's interrupt controller.
#[derive(Clone)]
pub struct IrqLine {
    chip: Arc<dyn IrqChip>,
    line: u32,
    trigger: Trigger,
}

impl std::fmt::Debug for IrqLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IrqLine({}, {:?})", self.line, self.trigger)
    }
}

impl IrqLine {
    pub fn new(chip: Arc<dyn IrqChip>, line: u32, trigger: Trigger) -> Self {
        IrqLine {
            chip,
            line,
            trigger,
        }
    }

    pub fn line(&self) -> u32 {
        self.line
    }

    pub fn trigger(&self) -> Trigger {
        self.trigger
    }

    /// Signals the interrupt: one pulse for an edge line, asserted for a
    /// level line until [`IrqLine::lower`].
    pub fn raise(&self) -> Result<(), Error> {
        self.chip.set_level(self.line, true)?;
        if self.trigger == Trigger::Edge {
            self.chip.set_level(self.line, false)?;
        }
        Ok(())
    }

    /// Deasserts a level line (no-op for edge lines).
    pub fn lower(&self) -> Result<(), Error> {
        if self.trigger == Trigger::Level {
            self.chip.set_level(self.line, false)?;
        }
        Ok(())
    }
}

/// Somewhere message-signalled interrupts go: the in-kernel irqchip
/// (`KVM_SIGNAL_MSI`: x86 LAPIC, GICv3 ITS, RISC-V IMSIC) or an
/// architecture's own translation (a GICv2m frame turns them into SPIs).
pub trait MsiSink: Send + Sync {
    fn send(&self, msg: crate::kvm::MsiMessage) -> Result<(), Error>;
    /// Where vectors can get irqfds instead (KVM routes their MSIs).
    fn router(&self) -> Option<std::sync::Arc<crate::msi::MsiRouter>> {
        None
    }
}

/// MSIs into an in-kernel irqchip: through irqfds routed by `router`,
/// with `KVM_SIGNAL_MSI` as the fallback.
pub struct RoutedMsi {
    pub vm: std::sync::Arc<crate::kvm::Vm>,
    pub router: std::sync::Arc<crate::msi::MsiRouter>,
    /// The controller identifies senders (GICv3 ITS).
    pub with_devid: bool,
}

impl MsiSink for RoutedMsi {
    fn send(&self, msg: crate::kvm::MsiMessage) -> Result<(), Error> {
        let msg = crate::kvm::MsiMessage {
            devid: if self.with_devid { msg.devid } else { None },
            ..msg
        };
        self.vm.signal_msi(msg).map_err(|source| Error::Msi {
            addr: msg.addr,
            data: msg.data,
            source,
        })
    }

    fn router(&self) -> Option<std::sync::Arc<crate::msi::MsiRouter>> {
        Some(self.router.clone())
    }
}

/// The in-kernel irqchip of x86 (LAPIC) and RISC-V (IMSIC), which take
/// no requester id. (A GICv3 ITS does; arm64 wraps the VM for it.)
impl MsiSink for crate::kvm::Vm {
    fn send(&self, msg: crate::kvm::MsiMessage) -> Result<(), Error> {
        let msg = crate::kvm::MsiMessage { devid: None, ..msg };
        self.signal_msi(msg).map_err(|source| Error::Msi {
            addr: msg.addr,
            data: msg.data,
            source,
        })
    }
}

// Test code (also built for the fuzz targets, which clippy does not take
// for tests): unwrap is fine here.
#[cfg(any(test, fuzzing))]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub mod testing {
    use super::*;
    use std::sync::Mutex;

    /// Records every level change, for device tests.
    #[derive(Default)]
    pub struct RecordingChip {
        pub events: Mutex<Vec<(u32, bool)>>,
    }

    impl IrqChip for RecordingChip {
        fn set_level(&self, line: u32, level: bool) -> Result<(), Error> {
            self.events.lock().unwrap().push((line, level));
            Ok(())
        }
    }

    impl RecordingChip {
        pub fn take(&self) -> Vec<(u32, bool)> {
            std::mem::take(&mut *self.events.lock().unwrap())
        }
    }

    /// Records every MSI sent.
    #[derive(Default)]
    pub struct RecordingMsi {
        pub sent: Mutex<Vec<crate::kvm::MsiMessage>>,
    }

    impl MsiSink for RecordingMsi {
        fn send(&self, msg: crate::kvm::MsiMessage) -> Result<(), Error> {
            self.sent.lock().unwrap().push(msg);
            Ok(())
        }
    }

    impl RecordingMsi {
        pub fn take(&self) -> Vec<crate::kvm::MsiMessage> {
            std::mem::take(&mut *self.sent.lock().unwrap())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::RecordingChip;
    use super::*;

    #[test]
    fn edge_lines_pulse_and_level_lines_hold() {
        let chip = Arc::new(RecordingChip::default());
        let edge = IrqLine::new(chip.clone(), 4, Trigger::Edge);
        let level = IrqLine::new(chip.clone(), 33, Trigger::Level);
        edge.raise().unwrap();
        edge.lower().unwrap();
        assert_eq!(chip.take(), vec![(4, true), (4, false)]);
        level.raise().unwrap();
        assert_eq!(chip.take(), vec![(33, true)]);
        level.lower().unwrap();
        assert_eq!(chip.take(), vec![(33, false)]);
    }
}
