//! A small ELF reader: program headers and notes, 32- and 64-bit, both byte
//! orders. Enough to load a vmlinux (x86 PVH, ppc64) or a 32-bit PVH test
//! kernel without trusting any offset in it.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("not an ELF file")]
    NotElf,
    #[error("unknown ELF class {0}")]
    BadClass(u8),
    #[error("unknown ELF byte order {0}")]
    BadByteOrder(u8),
    #[error("ELF file is truncated or has out-of-range {0}")]
    Truncated(&'static str),
    #[error("ELF machine is {found:#x}, expected {expected:#x}")]
    WrongMachine { found: u16, expected: u16 },
    #[error("ELF file has no loadable segments")]
    NoSegments,
}

pub const EM_386: u16 = 3;
pub const EM_PPC64: u16 = 21;
pub const EM_X86_64: u16 = 62;

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;

/// A `PT_LOAD` segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub paddr: u64,
    pub vaddr: u64,
    pub offset: u64,
    pub filesz: u64,
    pub memsz: u64,
}

/// A note from a `PT_NOTE` segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note<'a> {
    pub name: &'a [u8],
    pub kind: u32,
    pub desc: &'a [u8],
}

#[derive(Debug)]
pub struct Elf<'a> {
    data: &'a [u8],
    little: bool,
    /// ELFCLASS64 (else ELFCLASS32).
    pub class64: bool,
    pub machine: u16,
    pub entry: u64,
    pub segments: Vec<Segment>,
    note_ranges: Vec<(usize, usize)>,
}

fn slice<'d>(data: &'d [u8], off: u64, len: u64, what: &'static str) -> Result<&'d [u8], Error> {
    let start = usize::try_from(off).map_err(|_| Error::Truncated(what))?;
    let len = usize::try_from(len).map_err(|_| Error::Truncated(what))?;
    let end = start.checked_add(len).ok_or(Error::Truncated(what))?;
    data.get(start..end).ok_or(Error::Truncated(what))
}

impl<'a> Elf<'a> {
    /// True if `data` starts with the ELF magic.
    pub fn is_elf(data: &[u8]) -> bool {
        data.starts_with(b"\x7fELF")
    }

    pub fn parse(data: &'a [u8]) -> Result<Elf<'a>, Error> {
        if !Self::is_elf(data) {
            return Err(Error::NotElf);
        }
        let class64 = match data.get(4) {
            Some(2) => true,
            Some(1) => false,
            Some(&other) => return Err(Error::BadClass(other)),
            None => return Err(Error::Truncated("header")),
        };
        // Field offsets of the file header and of one program header.
        let (ehsize, phsize) = if class64 { (64, 56) } else { (52, 32) };
        let ident = slice(data, 0, ehsize, "header")?;
        let little = match ident[5] {
            1 => true,
            2 => false,
            other => return Err(Error::BadByteOrder(other)),
        };
        let mut elf = Elf {
            data,
            little,
            class64,
            machine: 0,
            entry: 0,
            segments: Vec::new(),
            note_ranges: Vec::new(),
        };
        elf.machine = elf.u16_at(ident, 18);
        let (phoff, phentsize, phnum) = if class64 {
            elf.entry = elf.u64_at(ident, 24);
            (
                elf.u64_at(ident, 32),
                elf.u16_at(ident, 54),
                elf.u16_at(ident, 56),
            )
        } else {
            elf.entry = u64::from(elf.u32_at(ident, 24));
            (
                u64::from(elf.u32_at(ident, 28)),
                elf.u16_at(ident, 42),
                elf.u16_at(ident, 44),
            )
        };
        if u64::from(phentsize) < phsize {
            return Err(Error::Truncated("program header size"));
        }
        for i in 0..u64::from(phnum) {
            let at = u64::from(phentsize)
                .checked_mul(i)
                .and_then(|o| o.checked_add(phoff))
                .ok_or(Error::Truncated("program headers"))?;
            let ph = slice(data, at, phsize, "program headers")?;
            let kind = elf.u32_at(ph, 0);
            // p_offset, p_vaddr, p_paddr, p_filesz, p_memsz
            let [offset, vaddr, paddr, filesz, memsz] = if class64 {
                [8, 16, 24, 32, 40].map(|o| elf.u64_at(ph, o))
            } else {
                [4, 8, 12, 16, 20].map(|o| u64::from(elf.u32_at(ph, o)))
            };
            match kind {
                PT_LOAD => {
                    let seg = Segment {
                        offset,
                        vaddr,
                        paddr,
                        filesz,
                        memsz,
                    };
                    slice(data, offset, filesz, "segment")?;
                    if seg.memsz < seg.filesz || seg.paddr.checked_add(seg.memsz).is_none() {
                        return Err(Error::Truncated("segment size"));
                    }
                    elf.segments.push(seg);
                }
                PT_NOTE => {
                    slice(data, offset, filesz, "note segment")?;
                    elf.note_ranges.push((offset as usize, filesz as usize));
                }
                _ => {}
            }
        }
        if elf.segments.is_empty() {
            return Err(Error::NoSegments);
        }
        Ok(elf)
    }

    fn u16_at(&self, b: &[u8], off: usize) -> u16 {
        let raw = [b[off], b[off + 1]];
        if self.little {
            u16::from_le_bytes(raw)
        } else {
            u16::from_be_bytes(raw)
        }
    }

    fn u32_at(&self, b: &[u8], off: usize) -> u32 {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(&b[off..off + 4]);
        if self.little {
            u32::from_le_bytes(raw)
        } else {
            u32::from_be_bytes(raw)
        }
    }

    fn u64_at(&self, b: &[u8], off: usize) -> u64 {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&b[off..off + 8]);
        if self.little {
            u64::from_le_bytes(raw)
        } else {
            u64::from_be_bytes(raw)
        }
    }

    /// Reads an integer of the file's byte order from a note descriptor.
    pub fn desc_value(&self, desc: &[u8]) -> Option<u64> {
        match desc.len() {
            4 => Some(u64::from(self.u32_at(desc, 0))),
            n if n >= 8 => Some(self.u64_at(desc, 0)),
            _ => None,
        }
    }

    pub fn is_little_endian(&self) -> bool {
        self.little
    }

    /// Every note in every `PT_NOTE` segment; malformed tails are skipped.
    pub fn notes(&self) -> Vec<Note<'a>> {
        let mut out = Vec::new();
        for &(start, len) in &self.note_ranges {
            let seg = &self.data[start..start + len];
            let mut pos = 0usize;
            while pos + 12 <= seg.len() {
                let namesz = self.u32_at(seg, pos) as usize;
                let descsz = self.u32_at(seg, pos + 4) as usize;
                let kind = self.u32_at(seg, pos + 8);
                let name_start = pos + 12;
                let desc_start = name_start + namesz.next_multiple_of(4);
                let next = desc_start.saturating_add(descsz.next_multiple_of(4));
                let (Some(name), Some(desc)) = (
                    seg.get(name_start..name_start + namesz),
                    seg.get(desc_start..desc_start.saturating_add(descsz)),
                ) else {
                    break;
                };
                let name = name.strip_suffix(b"\0").unwrap_or(name);
                out.push(Note { name, kind, desc });
                pos = next;
            }
        }
        out
    }

    /// The bytes of a segment in the file.
    pub fn segment_data(&self, seg: &Segment) -> &'a [u8] {
        &self.data[seg.offset as usize..(seg.offset + seg.filesz) as usize]
    }

    /// One past the highest physical address any segment occupies.
    pub fn phys_end(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.paddr + s.memsz)
            .max()
            .unwrap_or(0)
    }
}

/// Builds small ELF files for tests (of this module and of the loaders).
#[cfg(test)]
pub mod testing {
    /// A little-endian ELF32 file; arguments as for [`build`].
    pub fn build32(
        machine: u16,
        entry: u32,
        segments: &[(u32, &[u8], u32)],
        notes: &[(&str, u32, &[u8])],
    ) -> Vec<u8> {
        let mut note = Vec::new();
        for (name, kind, desc) in notes {
            let mut n = name.as_bytes().to_vec();
            n.push(0);
            note.extend((n.len() as u32).to_le_bytes());
            note.extend((desc.len() as u32).to_le_bytes());
            note.extend(kind.to_le_bytes());
            note.extend(&n);
            note.resize(note.len().next_multiple_of(4), 0);
            note.extend(*desc);
            note.resize(note.len().next_multiple_of(4), 0);
        }
        let phnum = segments.len() + usize::from(!notes.is_empty());
        let mut f = vec![0u8; 52 + 32 * phnum];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 1;
        f[5] = 1;
        f[6] = 1;
        f[16..18].copy_from_slice(&2u16.to_le_bytes());
        f[18..20].copy_from_slice(&machine.to_le_bytes());
        f[24..28].copy_from_slice(&entry.to_le_bytes());
        f[28..32].copy_from_slice(&52u32.to_le_bytes());
        f[42..44].copy_from_slice(&32u16.to_le_bytes());
        f[44..46].copy_from_slice(&(phnum as u16).to_le_bytes());
        let mut ph = 52;
        let put = |f: &mut Vec<u8>, ph: usize, kind: u32, paddr: u32, bytes: &[u8], memsz| {
            let off = f.len() as u32;
            let fields = [kind, off, paddr, paddr, bytes.len() as u32, memsz];
            for (i, v) in fields.iter().enumerate() {
                f[ph + 4 * i..ph + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
            }
            f.extend(bytes);
        };
        for (paddr, bytes, memsz) in segments {
            put(&mut f, ph, 1, *paddr, bytes, *memsz);
            ph += 32;
        }
        if !notes.is_empty() {
            put(&mut f, ph, 4, 0, &note, note.len() as u32);
        }
        f
    }

    /// `segments` are (paddr, bytes, memsz); `notes` are (name, type, desc).
    pub fn build(
        machine: u16,
        little: bool,
        entry: u64,
        segments: &[(u64, &[u8], u64)],
        notes: &[(&str, u32, &[u8])],
    ) -> Vec<u8> {
        let w16 = |v: u16| {
            if little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        let w32 = |v: u32| {
            if little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        let w64 = |v: u64| {
            if little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        let mut note = Vec::new();
        for (name, kind, desc) in notes {
            let mut n = name.as_bytes().to_vec();
            n.push(0);
            note.extend(w32(n.len() as u32));
            note.extend(w32(desc.len() as u32));
            note.extend(w32(*kind));
            note.extend(&n);
            note.resize(note.len().next_multiple_of(4), 0);
            note.extend(*desc);
            note.resize(note.len().next_multiple_of(4), 0);
        }
        let phnum = segments.len() + usize::from(!notes.is_empty());
        let mut f = vec![0u8; 64 + 56 * phnum];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = if little { 1 } else { 2 };
        f[6] = 1;
        f[16..18].copy_from_slice(&w16(2));
        f[18..20].copy_from_slice(&w16(machine));
        f[24..32].copy_from_slice(&w64(entry));
        f[32..40].copy_from_slice(&w64(64));
        f[54..56].copy_from_slice(&w16(56));
        f[56..58].copy_from_slice(&w16(phnum as u16));
        let mut ph = 64;
        for (paddr, bytes, memsz) in segments {
            let off = f.len() as u64;
            f[ph..ph + 4].copy_from_slice(&w32(1));
            f[ph + 8..ph + 16].copy_from_slice(&w64(off));
            f[ph + 16..ph + 24].copy_from_slice(&w64(*paddr));
            f[ph + 24..ph + 32].copy_from_slice(&w64(*paddr));
            f[ph + 32..ph + 40].copy_from_slice(&w64(bytes.len() as u64));
            f[ph + 40..ph + 48].copy_from_slice(&w64(*memsz));
            f.extend(*bytes);
            ph += 56;
        }
        if !notes.is_empty() {
            let off = f.len() as u64;
            f[ph..ph + 4].copy_from_slice(&w32(4));
            f[ph + 8..ph + 16].copy_from_slice(&w64(off));
            f[ph + 32..ph + 40].copy_from_slice(&w64(note.len() as u64));
            f.extend(&note);
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{build, build32};
    use super::*;

    #[test]
    fn elf32_headers_segments_and_notes_are_read() {
        let file = build32(
            EM_386,
            0x10_0040,
            &[(0x10_0000, b"abcd", 0x2000)],
            &[("Xen", 18, &[0x40, 0, 0x10, 0])],
        );
        let elf = Elf::parse(&file).unwrap();
        assert!(!elf.class64);
        assert_eq!((elf.machine, elf.entry), (EM_386, 0x10_0040));
        assert_eq!(elf.segments.len(), 1);
        assert_eq!(elf.segment_data(&elf.segments[0]), b"abcd");
        assert_eq!(elf.phys_end(), 0x10_2000);
        assert_eq!(elf.notes()[0].desc, &[0x40, 0, 0x10, 0]);
        // a program header size too small for ELF32
        let mut f = file.clone();
        f[42..44].copy_from_slice(&16u16.to_le_bytes());
        assert_eq!(
            Elf::parse(&f).unwrap_err(),
            Error::Truncated("program header size")
        );
    }

    #[test]
    fn segments_notes_and_entry_are_read_in_both_byte_orders() {
        for little in [true, false] {
            let file = build(
                EM_PPC64,
                little,
                0xc000_0000_0000_0000,
                &[(0, b"abcd", 0x1000), (0x2000, b"ef", 2)],
                &[("Xen", 18, &[0x10, 0, 0x10, 0]), ("GNU", 3, b"id")],
            );
            let elf = Elf::parse(&file).unwrap();
            assert_eq!(elf.machine, EM_PPC64);
            assert_eq!(elf.is_little_endian(), little);
            assert_eq!(elf.entry, 0xc000_0000_0000_0000);
            assert_eq!(elf.segments.len(), 2);
            assert_eq!(elf.segment_data(&elf.segments[0]), b"abcd");
            assert_eq!(elf.phys_end(), 0x2002);
            let notes = elf.notes();
            assert_eq!(notes.len(), 2);
            assert_eq!(notes[0].name, b"Xen");
            assert_eq!(notes[0].kind, 18);
            assert_eq!(notes[1].desc, b"id");
        }
    }

    #[test]
    fn garbage_and_lies_are_errors_not_panics() {
        assert_eq!(Elf::parse(b"MZ\x90\x00").unwrap_err(), Error::NotElf);
        assert_eq!(
            Elf::parse(b"\x7fELF").unwrap_err(),
            Error::Truncated("header")
        );
        let mut f = build(EM_X86_64, true, 0, &[(0x100000, b"x", 1)], &[]);
        f[4] = 3;
        assert_eq!(Elf::parse(&f).unwrap_err(), Error::BadClass(3));
        // a 32-bit header cut short
        let f = build32(EM_386, 0, &[(0x100000, b"x", 1)], &[]);
        assert_eq!(
            Elf::parse(&f[..40]).unwrap_err(),
            Error::Truncated("header")
        );
        let mut f = build(EM_X86_64, true, 0, &[(0x100000, b"x", 1)], &[]);
        f[5] = 7;
        assert_eq!(Elf::parse(&f).unwrap_err(), Error::BadByteOrder(7));
        // segment offset beyond the file
        let mut f = build(EM_X86_64, true, 0, &[(0x100000, b"x", 1)], &[]);
        f[64 + 8..64 + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(Elf::parse(&f), Err(Error::Truncated(_))));
        // program headers beyond the file
        let mut f = build(EM_X86_64, true, 0, &[(0x100000, b"x", 1)], &[]);
        f[56..58].copy_from_slice(&1000u16.to_le_bytes());
        assert!(matches!(Elf::parse(&f), Err(Error::Truncated(_))));
        // memsz smaller than filesz
        let f = build(EM_X86_64, true, 0, &[(0x100000, b"xyz", 1)], &[]);
        assert!(matches!(Elf::parse(&f), Err(Error::Truncated(_))));
        let f = build(EM_X86_64, true, 0, &[], &[("Xen", 1, b"")]);
        assert_eq!(Elf::parse(&f).unwrap_err(), Error::NoSegments);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        for len in [0usize, 4, 63, 64, 200, 4096] {
            for _ in 0..50 {
                let mut buf: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed as u8
                    })
                    .collect();
                if buf.len() >= 6 {
                    buf[..4].copy_from_slice(b"\x7fELF");
                    buf[4] = 1 + (seed & 1) as u8;
                    buf[5] = 1;
                }
                if let Ok(elf) = Elf::parse(&buf) {
                    let _ = elf.notes();
                }
            }
        }
    }
}
