//! The MC146818 CMOS real-time clock at ports 0x70 (index) and 0x71 (data),
//! reporting the host's UTC time in the format the guest selected in
//! status register B (BCD or binary, 12 or 24 hour).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::bus::BusDevice;

pub const RTC_PORT: u64 = 0x70;
pub const RTC_LEN: u64 = 2;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;

const B_24H: u8 = 1 << 1;
const B_BINARY: u8 = 1 << 2;
const D_VALID_RAM_TIME: u8 = 1 << 7;

/// A calendar time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime {
    pub year: u32,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    /// 1 = Sunday, as the CMOS counts.
    pub weekday: u8,
}

/// Converts seconds since the Unix epoch to a UTC calendar date (proleptic
/// Gregorian, days-from-civil inverted).
pub fn utc_from_unix(secs: u64) -> DateTime {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // 1970-01-01 was a Thursday (weekday 5 with Sunday = 1).
    let weekday = ((days + 4) % 7) as u8 + 1;
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as u32;
    DateTime {
        year,
        month,
        day,
        hour: (rem / 3600) as u8,
        minute: (rem % 3600 / 60) as u8,
        second: (rem % 60) as u8,
        weekday,
    }
}

fn bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

pub struct Rtc {
    index: u8,
    cmos: [u8; 128],
    now: fn() -> u64,
}

fn host_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Default for Rtc {
    fn default() -> Self {
        Self::with_clock(host_now)
    }
}

impl Rtc {
    /// Fuzzing hook: an RTC whose clock is `now` (seconds since the
    /// Unix epoch) rather than the host's.
    #[cfg(fuzzing)]
    pub fn fuzz_with_clock(now: fn() -> u64) -> Self {
        Self::with_clock(now)
    }

    fn with_clock(now: fn() -> u64) -> Self {
        let mut cmos = [0u8; 128];
        cmos[REG_A as usize] = 0x26; // 32.768 kHz base, 1024 Hz rate
        cmos[REG_B as usize] = B_24H;
        cmos[REG_D as usize] = D_VALID_RAM_TIME;
        Rtc {
            index: 0,
            cmos,
            now,
        }
    }

    fn encode(&self, v: u8) -> u8 {
        if self.cmos[REG_B as usize] & B_BINARY != 0 {
            v
        } else {
            bcd(v)
        }
    }

    fn hours(&self, h: u8) -> u8 {
        if self.cmos[REG_B as usize] & B_24H != 0 {
            return self.encode(h);
        }
        let pm = h >= 12;
        let h12 = match h % 12 {
            0 => 12,
            x => x,
        };
        self.encode(h12) | if pm { 0x80 } else { 0 }
    }

    fn register(&self, reg: u8) -> u8 {
        let t = utc_from_unix((self.now)());
        match reg {
            REG_SECONDS => self.encode(t.second),
            REG_MINUTES => self.encode(t.minute),
            REG_HOURS => self.hours(t.hour),
            REG_WEEKDAY => self.encode(t.weekday),
            REG_DAY => self.encode(t.day),
            REG_MONTH => self.encode(t.month),
            REG_YEAR => self.encode((t.year % 100) as u8),
            REG_CENTURY => self.encode((t.year / 100) as u8),
            // Update-in-progress is never reported: reads are consistent.
            REG_A => self.cmos[REG_A as usize] & 0x7f,
            REG_C => 0,
            r => self.cmos[usize::from(r & 0x7f)],
        }
    }
}

impl BusDevice for Rtc {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = match offset {
            0 => self.index,
            1 => self.register(self.index),
            _ => 0xff,
        };
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else {
            return;
        };
        match offset {
            // Bit 7 of the index port masks NMIs; KVM has no use for it.
            0 => self.index = v & 0x7f,
            1 => match self.index {
                // The clock follows the host; time writes are dropped.
                REG_SECONDS..=REG_YEAR | REG_CENTURY | REG_C | REG_D => {}
                REG_A => self.cmos[REG_A as usize] = v & 0x7f,
                r => self.cmos[usize::from(r)] = v,
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_times_convert_to_utc_dates() {
        let epoch = utc_from_unix(0);
        assert_eq!(
            (epoch.year, epoch.month, epoch.day, epoch.weekday),
            (1970, 1, 1, 5)
        );
        // 2000-02-29 12:34:56 UTC, a Tuesday
        let leap = utc_from_unix(951_827_696);
        assert_eq!(
            leap,
            DateTime {
                year: 2000,
                month: 2,
                day: 29,
                hour: 12,
                minute: 34,
                second: 56,
                weekday: 3
            }
        );
        // 2026-11-21 23:59:59 UTC, a Saturday
        let t = utc_from_unix(1_795_305_599);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second, t.weekday),
            (2026, 11, 21, 23, 59, 59, 7)
        );
    }

    fn fixed() -> u64 {
        951_827_696 // 2000-02-29 12:34:56
    }

    fn read_reg(rtc: &mut Rtc, reg: u8) -> u8 {
        rtc.write(0, &[reg | 0x80]);
        let mut b = [0u8];
        rtc.read(1, &mut b);
        b[0]
    }

    #[test]
    fn registers_are_bcd_by_default_and_binary_on_request() {
        let mut rtc = Rtc::with_clock(fixed);
        assert_eq!(read_reg(&mut rtc, REG_SECONDS), 0x56);
        assert_eq!(read_reg(&mut rtc, REG_HOURS), 0x12);
        assert_eq!(read_reg(&mut rtc, REG_DAY), 0x29);
        assert_eq!(read_reg(&mut rtc, REG_MONTH), 0x02);
        assert_eq!(read_reg(&mut rtc, REG_YEAR), 0x00);
        assert_eq!(read_reg(&mut rtc, REG_CENTURY), 0x20);
        assert_eq!(read_reg(&mut rtc, REG_D), D_VALID_RAM_TIME);
        rtc.write(0, &[REG_B]);
        rtc.write(1, &[B_BINARY]); // binary, 12-hour
        assert_eq!(read_reg(&mut rtc, REG_SECONDS), 56);
        assert_eq!(read_reg(&mut rtc, REG_HOURS), 0x80 | 12);
    }

    #[test]
    fn cmos_ram_keeps_what_the_guest_writes_but_not_the_time() {
        let mut rtc = Rtc::with_clock(fixed);
        rtc.write(0, &[0x40]);
        rtc.write(1, &[0xab]);
        assert_eq!(read_reg(&mut rtc, 0x40), 0xab);
        rtc.write(0, &[REG_SECONDS]);
        rtc.write(1, &[0x11]);
        assert_eq!(read_reg(&mut rtc, REG_SECONDS), 0x56);
        rtc.write(5, &[1]);
        rtc.read(7, &mut [0u8; 2]);
    }
}
