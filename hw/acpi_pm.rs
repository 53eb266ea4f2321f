//! The ACPI PM1a event and control registers (fixed hardware, no ACPI
//! tables needed to drive them): writing SLP_TYP=5 with SLP_EN to PM1a_CNT
//! powers the machine off. lkvm's tiny test guests power off this way, and
//! it is the register an ACPI FADT would point Linux at.

use std::sync::Arc;

use crate::bus::BusDevice;
use crate::control::{GuestExit, VmControl};

/// PM1a_EVT_BLK at 0x600 (status, enable), PM1a_CNT_BLK at 0x604.
pub const ACPI_PM_PORT: u64 = 0x600;
pub const ACPI_PM_LEN: u64 = 8;

const PM1_CNT: u64 = 4;
const SCI_EN: u16 = 1 << 0;
const SLP_EN: u16 = 1 << 13;
const SLP_TYP_SHIFT: u16 = 10;
/// The sleep type lkvm assigns to S5 (soft off).
pub const SLP_TYP_S5: u16 = 5;

pub struct AcpiPm {
    regs: [u8; ACPI_PM_LEN as usize],
    ctl: Arc<VmControl>,
}

impl AcpiPm {
    pub fn new(ctl: Arc<VmControl>) -> Self {
        let mut regs = [0; ACPI_PM_LEN as usize];
        // Hardware-reduced style: always in ACPI mode.
        regs[PM1_CNT as usize..][..2].copy_from_slice(&SCI_EN.to_le_bytes());
        AcpiPm { regs, ctl }
    }

    fn control_written(&mut self) {
        let cnt = u16::from_le_bytes([self.regs[4], self.regs[5]]);
        if cnt & SLP_EN == 0 {
            return;
        }
        let typ = (cnt >> SLP_TYP_SHIFT) & 7;
        // SLP_EN is write-only: it reads back as zero.
        self.regs[5] &= !((SLP_EN >> 8) as u8);
        if typ == SLP_TYP_S5 {
            self.ctl.request_exit(GuestExit::PowerOff);
        } else {
            log::debug!("acpi: sleep type {typ} requested; only S5 (off) is supported");
        }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| self.regs.get(o + i))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        for (i, b) in data.iter().enumerate() {
            let reg = start + i;
            match reg {
                // PM1 status: write one to clear.
                0 | 1 => self.regs[reg] &= !b,
                2..=7 => self.regs[reg] = *b,
                _ => {}
            }
        }
        if (start..start + data.len()).any(|r| r == 4 || r == 5) {
            self.control_written();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s5_with_slp_en_powers_off() {
        let ctl = Arc::new(VmControl::new().unwrap());
        let mut pm = AcpiPm::new(ctl.clone());
        let mut cnt = [0u8; 2];
        pm.read(PM1_CNT, &mut cnt);
        assert_eq!(u16::from_le_bytes(cnt), SCI_EN);
        // sleep type alone does nothing
        pm.write(PM1_CNT, &(SLP_TYP_S5 << SLP_TYP_SHIFT).to_le_bytes());
        assert!(!ctl.is_stopping());
        pm.write(
            PM1_CNT,
            &((SLP_TYP_S5 << SLP_TYP_SHIFT) | SLP_EN).to_le_bytes(),
        );
        assert_eq!(ctl.exit_reason(), Some(GuestExit::PowerOff));
    }

    #[test]
    fn other_sleep_states_are_ignored() {
        let ctl = Arc::new(VmControl::new().unwrap());
        let mut pm = AcpiPm::new(ctl.clone());
        pm.write(PM1_CNT, &((3 << SLP_TYP_SHIFT) | SLP_EN).to_le_bytes());
        assert!(!ctl.is_stopping());
        let mut cnt = [0u8; 2];
        pm.read(PM1_CNT, &mut cnt);
        assert_eq!(u16::from_le_bytes(cnt) & SLP_EN, 0);
        pm.write(100, &[1, 2, 3]);
        pm.read(7, &mut [0u8; 4]);
    }
}
