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

#[cfg(test)]
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
