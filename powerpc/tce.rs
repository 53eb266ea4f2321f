//! The PHB's DMA window: a TCE table the guest programs with the TCE
//! hypercalls. A pSeries Linux expects every PCI device below a window
//! (`ibm,dma-window`) and clears or fills it at boot; lkvm keeps the table
//! as the guest writes it. Virtio devices do not translate through it: they
//! address guest memory directly, as drivers do unless VIRTIO_F_ACCESS_PLATFORM
//! is negotiated, which lkvm never offers.

use std::collections::HashMap;
use std::sync::Mutex;

use vm_memory::{Bytes, GuestAddress};

use super::hcall::{H_P2, H_P3, H_P4, H_PARAMETER, H_SUCCESS};
use crate::bus::lock;
use crate::memory::GuestMemory;

pub const H_GET_TCE: u64 = 0x1c;
pub const H_PUT_TCE: u64 = 0x20;
pub const H_PUT_TCE_INDIRECT: u64 = 0x134;
pub const H_STUFF_TCE: u64 = 0x138;

/// The first PHB's logical I/O bus number, as QEMU numbers them.
pub const LIOBN: u32 = 0x8000_0000;
/// A 1 GiB window of 4 KiB pages at bus address 0.
pub const WINDOW_SIZE: u64 = 1 << 30;
const PAGE_SHIFT: u32 = 12;
/// H_PUT_TCE_INDIRECT takes at most one 4 KiB page of TCEs.
const MAX_INDIRECT: u64 = 512;

/// The table, sparse: pages never mapped are not stored. Every index is
/// checked against the window first, so it never holds more than
/// `WINDOW_SIZE >> PAGE_SHIFT` (262144) entries.
#[derive(Default)]
pub struct TceTable {
    entries: Mutex<HashMap<u64, u64>>,
}

impl TceTable {
    fn index(&self, liobn: u64, ioba: u64, pages: u64) -> Result<u64, i64> {
        if liobn != u64::from(LIOBN) {
            return Err(H_PARAMETER);
        }
        if ioba % (1 << PAGE_SHIFT) != 0 {
            return Err(H_P2);
        }
        // A multiplication, not a shift: a shift drops the high bits of a
        // page count like 2^52 instead of overflowing.
        let end = pages
            .checked_mul(1 << PAGE_SHIFT)
            .and_then(|len| ioba.checked_add(len))
            .ok_or(H_P2)?;
        if end > WINDOW_SIZE {
            return Err(H_P2);
        }
        Ok(ioba >> PAGE_SHIFT)
    }

    fn store(map: &mut HashMap<u64, u64>, index: u64, tce: u64) {
        if tce == 0 {
            map.remove(&index);
        } else {
            map.insert(index, tce);
        }
    }

    /// Handles one TCE hypercall: `args` are r4.., results go back there.
    /// Returns the hcall status.
    pub fn hcall(&self, nr: u64, args: &mut [u64; 9], mem: &GuestMemory) -> i64 {
        let (liobn, ioba) = (args[0], args[1]);
        let result = match nr {
            H_PUT_TCE => self.index(liobn, ioba, 1).map(|i| {
                Self::store(&mut lock(&self.entries), i, args[2]);
            }),
            H_GET_TCE => self.index(liobn, ioba, 1).map(|i| {
                args[0] = lock(&self.entries).get(&i).copied().unwrap_or(0);
            }),
            H_STUFF_TCE => {
                let (value, pages) = (args[2], args[3]);
                self.index(liobn, ioba, pages).map(|first| {
                    let mut map = lock(&self.entries);
                    if value == 0 {
                        map.retain(|i, _| !(first..first + pages).contains(i));
                    } else {
                        for i in first..first + pages {
                            map.insert(i, value);
                        }
                    }
                })
            }
            H_PUT_TCE_INDIRECT => {
                let (list, pages) = (args[2], args[3]);
                if pages > MAX_INDIRECT {
                    Err(H_P4)
                } else if list % (1 << PAGE_SHIFT) != 0 {
                    Err(H_P3)
                } else {
                    self.index(liobn, ioba, pages).and_then(|first| {
                        let mut tces = Vec::with_capacity(pages as usize);
                        for k in 0..pages {
                            let at = GuestAddress(list + 8 * k);
                            let tce: u64 = mem.read_obj(at).map_err(|_| H_P3)?;
                            tces.push(u64::from_be(tce));
                        }
                        let mut map = lock(&self.entries);
                        for (k, tce) in tces.into_iter().enumerate() {
                            Self::store(&mut map, first + k as u64, tce);
                        }
                        Ok(())
                    })
                }
            }
            _ => Err(H_PARAMETER),
        };
        match result {
            Ok(()) => H_SUCCESS,
            Err(e) => {
                log::debug!("TCE hcall {nr:#x} ({liobn:#x}, {ioba:#x}) refused: {e}");
                e
            }
        }
    }

    /// How many pages are mapped (for tests and `lkvm debug`).
    pub fn mapped(&self) -> usize {
        lock(&self.entries).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[u64]) -> [u64; 9] {
        let mut r = [0u64; 9];
        r[..a.len()].copy_from_slice(a);
        r
    }

    #[test]
    fn put_get_stuff_and_indirect() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let t = TceTable::default();
        let l = u64::from(LIOBN);
        assert_eq!(
            t.hcall(H_PUT_TCE, &mut args(&[l, 0x3000, 0xabc003]), &mem),
            H_SUCCESS
        );
        let mut a = args(&[l, 0x3000]);
        assert_eq!(t.hcall(H_GET_TCE, &mut a, &mem), H_SUCCESS);
        assert_eq!(a[0], 0xabc003);
        assert_eq!(
            t.hcall(H_STUFF_TCE, &mut args(&[l, 0, 7, 16]), &mem),
            H_SUCCESS
        );
        assert_eq!(t.mapped(), 16);
        assert_eq!(
            t.hcall(H_STUFF_TCE, &mut args(&[l, 0, 0, 16]), &mem),
            H_SUCCESS
        );
        assert_eq!(t.mapped(), 0);
        for (k, v) in [0x1003u64, 0x2003].iter().enumerate() {
            mem.write_obj(v.to_be(), GuestAddress(0x8000 + 8 * k as u64))
                .unwrap();
        }
        assert_eq!(
            t.hcall(
                H_PUT_TCE_INDIRECT,
                &mut args(&[l, 0x10_0000, 0x8000, 2]),
                &mem
            ),
            H_SUCCESS
        );
        let mut a = args(&[l, 0x10_1000]);
        t.hcall(H_GET_TCE, &mut a, &mem);
        assert_eq!(a[0], 0x2003);
    }

    #[test]
    fn bad_arguments_are_refused() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let t = TceTable::default();
        let l = u64::from(LIOBN);
        assert_eq!(t.hcall(H_PUT_TCE, &mut args(&[7, 0, 1]), &mem), H_PARAMETER);
        assert_eq!(t.hcall(H_PUT_TCE, &mut args(&[l, 0x123, 1]), &mem), H_P2);
        assert_eq!(
            t.hcall(H_PUT_TCE, &mut args(&[l, WINDOW_SIZE, 1]), &mem),
            H_P2
        );
        assert_eq!(
            t.hcall(H_STUFF_TCE, &mut args(&[l, 0, 1, u64::MAX]), &mem),
            H_P2
        );
        // 2^52 pages: the byte length wraps under a shift; must be refused
        // before a single entry is stored.
        for pages in [1u64 << 52, 1 << 63, (1 << 52) + 1] {
            assert_eq!(
                t.hcall(H_STUFF_TCE, &mut args(&[l, 0, 1, pages]), &mem),
                H_P2,
                "{pages:#x}"
            );
        }
        // The whole window is the most one call can fill.
        assert_eq!(
            t.hcall(
                H_STUFF_TCE,
                &mut args(&[l, 0x1000, 1, WINDOW_SIZE >> 12]),
                &mem
            ),
            H_P2
        );
        assert_eq!(
            t.hcall(H_PUT_TCE_INDIRECT, &mut args(&[l, 0, 0x8000, 513]), &mem),
            H_P4
        );
        assert_eq!(
            t.hcall(H_PUT_TCE_INDIRECT, &mut args(&[l, 0, 0xfff_f000, 2]), &mem),
            H_P3,
            "list outside guest RAM"
        );
        assert_eq!(t.mapped(), 0);
    }
}
