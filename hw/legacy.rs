//! The PC-style devices every kvmtool guest has: four 8250 UARTs (ttyS0 to
//! ttyS3) and the MC146818 RTC. x86 finds them at their ISA ports; arm64
//! and RISC-V at MMIO addresses their device tree names. ttyS0 is the
//! console; ttyS1-3 exist so a guest (or a test) that probes them finds
//! what it would under kvmtool without `--tty`: output goes nowhere and
//! no input ever arrives.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::bus::{self, Bus};
use crate::fdt::DeviceNode;
use crate::hw::rtc::{Rtc, RTC_LEN};
use crate::hw::serial::{Serial8250, UART_LEN};
use crate::irq::{IrqChip, IrqLine, Trigger};

/// How many 8250s a guest gets.
pub const UARTS: usize = 4;

/// kvmtool's legacy ports for ttyS0..ttyS3 and their ISA interrupts.
pub const ISA_UARTS: [(u64, u32); UARTS] = [(0x3f8, 4), (0x2f8, 3), (0x3e8, 4), (0x2e8, 3)];

/// Where a device-tree platform puts the UARTs and the RTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioLegacy {
    /// ttyS`i` is at `uart_base + i * uart_stride`.
    pub uart_base: u64,
    pub uart_stride: u64,
    /// ttyS`i` raises the platform interrupt `first_irq + i`.
    pub first_irq: u32,
    pub rtc_base: u64,
}

impl MmioLegacy {
    fn uarts(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        (0..UARTS as u64).map(|i| {
            (
                self.uart_base + i * self.uart_stride,
                self.first_irq + i as u32,
            )
        })
    }

    /// The first interrupt after the UARTs', for the devices that follow.
    pub fn next_irq(&self) -> u32 {
        self.first_irq + UARTS as u32
    }

    /// The device-tree nodes, ttyS0 first (it is `stdout-path`).
    pub fn nodes(&self) -> Vec<DeviceNode> {
        let mut nodes: Vec<DeviceNode> = self
            .uarts()
            .map(|(base, irq)| DeviceNode::ns16550a(base, UART_LEN, irq))
            .collect();
        nodes.push(DeviceNode {
            name: "rtc",
            compatible: vec!["motorola,mc146818"],
            reg_base: self.rtc_base,
            reg_size: RTC_LEN,
            irq: None,
            trigger: Trigger::Edge,
            u32_props: vec![],
        });
        nodes
    }

    /// Maps the UARTs and the RTC on `mmio`; returns ttyS0.
    pub fn attach(
        &self,
        mmio: &mut Bus,
        chip: &Arc<dyn IrqChip>,
        console: Box<dyn Write + Send>,
    ) -> Result<Arc<Mutex<Serial8250>>, bus::Error> {
        let mut ports = [(0, 0); UARTS];
        for (slot, port) in ports.iter_mut().zip(self.uarts()) {
            *slot = port;
        }
        let tty0 = attach_uarts(mmio, chip, &ports, console)?;
        let rtc = Arc::new(Mutex::new(Rtc::default()));
        mmio.insert("rtc", self.rtc_base, RTC_LEN, rtc)?;
        Ok(tty0)
    }
}

fn uart(chip: &Arc<dyn IrqChip>, irq: u32, out: Box<dyn Write + Send>) -> Arc<Mutex<Serial8250>> {
    let line = IrqLine::new(chip.clone(), irq, Trigger::Edge);
    Arc::new(Mutex::new(Serial8250::new(line, out)))
}

/// Maps ttyS0..ttyS3 at `ports` (base, interrupt) on `bus`, ttyS0 writing
/// to `console`; returns ttyS0.
pub fn attach_uarts(
    bus: &mut Bus,
    chip: &Arc<dyn IrqChip>,
    ports: &[(u64, u32); UARTS],
    console: Box<dyn Write + Send>,
) -> Result<Arc<Mutex<Serial8250>>, bus::Error> {
    let (base, irq) = ports[0];
    let tty0 = uart(chip, irq, console);
    bus.insert("serial0", base, UART_LEN, tty0.clone())?;
    for (i, &(base, irq)) in ports.iter().enumerate().skip(1) {
        let dev = uart(chip, irq, Box::new(std::io::sink()));
        bus.insert(&format!("serial{i}"), base, UART_LEN, dev)?;
    }
    Ok(tty0)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoIrq;
    impl IrqChip for NoIrq {
        fn set_level(&self, _line: u32, _level: bool) -> Result<(), crate::irq::Error> {
            Ok(())
        }
    }

    #[test]
    fn four_uarts_and_an_rtc_are_mapped_and_described() {
        let layout = MmioLegacy {
            uart_base: 0x100_0000,
            uart_stride: 0x1000,
            first_irq: 32,
            rtc_base: 0x100_4000,
        };
        let chip: Arc<dyn IrqChip> = Arc::new(NoIrq);
        let mut mmio = Bus::new("mmio");
        let out = Arc::new(Mutex::new(Vec::new()));
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        layout
            .attach(&mut mmio, &chip, Box::new(Shared(out.clone())))
            .unwrap();
        let names: Vec<_> = mmio.ranges().map(|(n, b, _)| (n.to_string(), b)).collect();
        assert_eq!(
            names,
            [
                ("serial0".to_string(), 0x100_0000),
                ("serial1".into(), 0x100_1000),
                ("serial2".into(), 0x100_2000),
                ("serial3".into(), 0x100_3000),
                ("rtc".into(), 0x100_4000),
            ]
        );
        // Only ttyS0 reaches the console.
        assert!(mmio.write(0x100_1000, b"x"));
        assert!(mmio.write(0x100_0000, b"y"));
        assert_eq!(*out.lock().unwrap(), b"y");
        // The RTC answers at its index/data pair: register 0x0d says the
        // time is valid.
        assert!(mmio.write(0x100_4000, &[0x0d]));
        let mut v = [0u8];
        assert!(mmio.read(0x100_4001, &mut v));
        assert_eq!(v[0], 0x80);
        let nodes = layout.nodes();
        assert_eq!(nodes.len(), 5);
        assert_eq!(nodes[3].irq, Some(35));
        assert_eq!(nodes[4].compatible, ["motorola,mc146818"]);
        assert_eq!(nodes[4].irq, None);
        assert_eq!(layout.next_irq(), 36);
    }
}
