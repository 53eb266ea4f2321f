//! A function's 256-byte configuration space: a type-0 header whose
//! registers are writable only where a mask says so, memory BARs that
//! answer the sizing protocol by themselves, and a capability list.

/// Standard header offsets.
pub const VENDOR_ID: usize = 0x00;
pub const COMMAND: usize = 0x04;
pub const STATUS: usize = 0x06;
pub const BAR0: usize = 0x10;
pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
pub const CAPABILITIES: usize = 0x34;
pub const INTERRUPT_LINE: usize = 0x3c;
pub const INTERRUPT_PIN: usize = 0x3d;

pub const COMMAND_MEMORY: u16 = 1 << 1;
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
const STATUS_CAP_LIST: u16 = 1 << 4;
/// Capabilities start after the header.
const FIRST_CAP: usize = 0x40;
const SPACE: usize = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("BAR {0} is taken or out of range")]
    Bar(usize),
    #[error("BAR size {0:#x} is not a power of two of at least 16 bytes")]
    BarSize(u64),
    #[error("capability of {0} bytes does not fit in configuration space")]
    NoRoom(usize),
}

/// A memory BAR as programmed by the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemBar {
    pub index: usize,
    pub size: u64,
    pub is64: bool,
}

#[derive(Clone)]
pub struct ConfigSpace {
    bytes: [u8; SPACE],
    writable: [u8; SPACE],
    bars: Vec<MemBar>,
    next_cap: usize,
    last_cap: Option<usize>,
}

impl std::fmt::Debug for ConfigSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ConfigSpace({:04x}:{:04x})",
            self.read16(0),
            self.read16(2)
        )
    }
}

impl ConfigSpace {
    /// A type-0 header with the given identity.
    pub fn new(vendor: u16, device: u16, class: u32, revision: u8) -> Self {
        let mut c = ConfigSpace {
            bytes: [0; SPACE],
            writable: [0; SPACE],
            bars: Vec::new(),
            next_cap: FIRST_CAP,
            last_cap: None,
        };
        c.bytes[0..2].copy_from_slice(&vendor.to_le_bytes());
        c.bytes[2..4].copy_from_slice(&device.to_le_bytes());
        c.bytes[8] = revision;
        c.bytes[9..12].copy_from_slice(&class.to_le_bytes()[..3]);
        // Command register: I/O, memory, bus master, INTx disable.
        c.writable[COMMAND] = 0x07;
        c.writable[COMMAND + 1] = 0x04;
        c.writable[0x0c] = 0xff; // cache line size
        c.writable[0x0d] = 0xff; // latency timer
        c
    }

    pub fn set_subsystem(&mut self, vendor: u16, id: u16) {
        self.bytes[SUBSYSTEM_VENDOR_ID..SUBSYSTEM_VENDOR_ID + 2]
            .copy_from_slice(&vendor.to_le_bytes());
        self.bytes[SUBSYSTEM_VENDOR_ID + 2..SUBSYSTEM_VENDOR_ID + 4]
            .copy_from_slice(&id.to_le_bytes());
    }

    /// INTA# wired to platform interrupt `line` (what firmware would have
    /// written into the interrupt line register).
    pub fn set_intx(&mut self, line: u8) {
        self.bytes[INTERRUPT_PIN] = 1;
        self.bytes[INTERRUPT_LINE] = line;
        self.writable[INTERRUPT_LINE] = 0xff;
    }

    /// Declares memory BAR `index` of `size` bytes (a 64-bit BAR also takes
    /// `index + 1`). The guest writes its address; the bits below the size
    /// stay zero, which is how sizing works.
    pub fn add_mem_bar(&mut self, index: usize, size: u64, is64: bool) -> Result<(), Error> {
        if !size.is_power_of_two() || size < 16 {
            return Err(Error::BarSize(size));
        }
        let slots = if is64 { 2 } else { 1 };
        if index + slots > 6
            || self.bars.iter().any(|b| {
                b.index == index
                    || (b.is64 && b.index + 1 == index)
                    || (is64 && b.index == index + 1)
            })
        {
            return Err(Error::Bar(index));
        }
        if !is64 && size > 1 << 31 {
            return Err(Error::BarSize(size));
        }
        let off = BAR0 + 4 * index;
        let mask = !(size - 1);
        self.bytes[off] = if is64 { 0x4 } else { 0x0 };
        self.writable[off..off + 4].copy_from_slice(&((mask as u32) & !0xf).to_le_bytes());
        if is64 {
            self.writable[off + 4..off + 8].copy_from_slice(&((mask >> 32) as u32).to_le_bytes());
        }
        self.bars.push(MemBar { index, size, is64 });
        Ok(())
    }

    /// Programs a BAR's address as firmware would.
    pub fn set_bar_address(&mut self, index: usize, addr: u64) {
        let Some(bar) = self.bars.iter().find(|b| b.index == index).copied() else {
            return;
        };
        let off = BAR0 + 4 * index;
        let low = (addr as u32 & !0xf) | (self.bytes[off] as u32 & 0xf);
        self.bytes[off..off + 4].copy_from_slice(&low.to_le_bytes());
        if bar.is64 {
            self.bytes[off + 4..off + 8].copy_from_slice(&((addr >> 32) as u32).to_le_bytes());
        }
    }

    /// Where BAR `index` currently decodes, if memory decoding is on.
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        let bar = self.bars.iter().find(|b| b.index == index)?;
        if self.read16(COMMAND) & COMMAND_MEMORY == 0 {
            return None;
        }
        let off = BAR0 + 4 * index;
        let mut addr = u64::from(self.read32(off) & !0xf);
        if bar.is64 {
            addr |= u64::from(self.read32(off + 4)) << 32;
        }
        (addr != 0).then_some(addr)
    }

    pub fn bars(&self) -> &[MemBar] {
        &self.bars
    }

    /// Appends a capability (`id`, then `body` after the two list bytes)
    /// and returns its offset.
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> Result<usize, Error> {
        let len = (2 + body.len()).next_multiple_of(4);
        let at = self.next_cap;
        if at + len > SPACE {
            return Err(Error::NoRoom(len));
        }
        self.bytes[at] = id;
        self.bytes[at + 2..at + 2 + body.len()].copy_from_slice(body);
        match self.last_cap {
            Some(prev) => self.bytes[prev + 1] = at as u8,
            None => {
                self.bytes[CAPABILITIES] = at as u8;
                let status = self.read16(STATUS) | STATUS_CAP_LIST;
                self.bytes[STATUS..STATUS + 2].copy_from_slice(&status.to_le_bytes());
            }
        }
        self.last_cap = Some(at);
        self.next_cap = at + len;
        Ok(at)
    }

    /// Lets the guest write the bits of `mask` at `offset`.
    pub fn set_writable(&mut self, offset: usize, mask: &[u8]) {
        if let Some(w) = self.writable.get_mut(offset..offset + mask.len()) {
            w.copy_from_slice(mask);
        }
    }

    pub fn read(&self, offset: usize, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.bytes.get(offset + i).copied().unwrap_or(0xff);
        }
    }

    /// Applies a guest write through the writable mask.
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        for (i, v) in data.iter().enumerate() {
            if let (Some(b), Some(m)) = (
                self.bytes.get_mut(offset + i),
                self.writable.get(offset + i),
            ) {
                *b = (*b & !m) | (v & m);
            }
        }
    }

    /// Direct access for the device model (read-only fields it updates).
    pub fn bytes_mut(&mut self) -> &mut [u8; SPACE] {
        &mut self.bytes
    }

    pub fn read16(&self, offset: usize) -> u16 {
        let mut b = [0u8; 2];
        self.read(offset, &mut b);
        u16::from_le_bytes(b)
    }

    pub fn read32(&self, offset: usize) -> u32 {
        let mut b = [0u8; 4];
        self.read(offset, &mut b);
        u32::from_le_bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w32(c: &mut ConfigSpace, off: usize, v: u32) {
        c.write(off, &v.to_le_bytes());
    }

    #[test]
    fn bar_sizing_and_placement() {
        let mut c = ConfigSpace::new(0x1af4, 0x1041, 0x02_00_00, 1);
        c.add_mem_bar(0, 0x4000, false).unwrap();
        c.add_mem_bar(2, 0x10_0000, true).unwrap();
        assert_eq!(c.add_mem_bar(3, 0x1000, false), Err(Error::Bar(3)));
        assert_eq!(c.add_mem_bar(1, 0x1001, false), Err(Error::BarSize(0x1001)));
        w32(&mut c, BAR0, u32::MAX);
        assert_eq!(c.read32(BAR0), 0xffff_c000);
        w32(&mut c, BAR0 + 8, u32::MAX);
        w32(&mut c, BAR0 + 12, u32::MAX);
        assert_eq!(c.read32(BAR0 + 8), 0xfff0_0004);
        assert_eq!(c.read32(BAR0 + 12), u32::MAX);
        w32(&mut c, BAR0, 0xd000_0000);
        w32(&mut c, BAR0 + 8, 0x4000_0000);
        w32(&mut c, BAR0 + 12, 0x1);
        assert_eq!(c.bar_address(0), None, "memory decoding off");
        c.write(COMMAND, &[0x02]);
        assert_eq!(c.bar_address(0), Some(0xd000_0000));
        assert_eq!(c.bar_address(2), Some(0x1_4000_0000));
        assert_eq!(c.bar_address(1), None);
    }

    #[test]
    fn capabilities_chain_and_read_only_identity() {
        let mut c = ConfigSpace::new(0x1af4, 0x1042, 0x01_00_00, 1);
        let a = c.add_capability(0x09, &[16, 1, 0]).unwrap();
        let b = c.add_capability(0x11, &[0; 10]).unwrap();
        assert_eq!((a, b), (0x40, 0x48), "dword aligned");
        assert_eq!(c.read16(STATUS) & STATUS_CAP_LIST, STATUS_CAP_LIST);
        assert_eq!(c.bytes[CAPABILITIES], 0x40);
        assert_eq!(c.bytes[0x41], 0x48);
        assert_eq!(c.bytes[0x49], 0);
        w32(&mut c, VENDOR_ID, 0);
        assert_eq!(c.read16(VENDOR_ID), 0x1af4);
        let mut big = ConfigSpace::new(0, 0, 0, 0);
        assert_eq!(big.add_capability(9, &[0; 250]), Err(Error::NoRoom(252)));
    }
}
