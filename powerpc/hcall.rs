//! PAPR hypercalls that KVM forwards to userspace (`KVM_EXIT_PAPR_HCALL`):
//! the hvterm console, H_SET_MODE (interrupt endianness),
//! H_REGISTER_PROC_TBL (radix/hash v3 MMU setup, forwarded to KVM),
//! cache-inhibited loads and stores, H_RTAS, and the XICS hypercalls when
//! XICS is emulated in userspace. Anything else is answered `H_FUNCTION`
//! and counted; a guest's bad hypercall is never fatal.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::control::GuestExit;

/// A PAPR hypercall KVM forwards (`sc 1`, `KVM_EXIT_PAPR_HCALL`): `nr` is
/// r3, `args` r4..r12 (hcalls return values in them too), `ret` goes back
/// to r3. The slices point into the vCPU's `kvm_run`.
#[derive(Debug)]
pub struct Hcall<'a> {
    pub nr: u64,
    pub args: &'a mut [u64; 9],
    pub ret: &'a mut u64,
}

pub const H_SUCCESS: i64 = 0;
pub const H_HARDWARE: i64 = -1;
pub const H_FUNCTION: i64 = -2;
pub const H_PARAMETER: i64 = -4;
pub const H_P2: i64 = -55;
pub const H_P3: i64 = -56;
pub const H_P4: i64 = -57;
pub const H_UNSUPPORTED_FLAG: i64 = -256;

pub const H_LOGICAL_CI_LOAD: u64 = 0x3c;
pub const H_LOGICAL_CI_STORE: u64 = 0x40;
pub const H_GET_TERM_CHAR: u64 = 0x54;
pub const H_PUT_TERM_CHAR: u64 = 0x58;
pub const H_EOI: u64 = 0x64;
pub const H_CPPR: u64 = 0x68;
pub const H_IPI: u64 = 0x6c;
pub const H_IPOLL: u64 = 0x70;
pub const H_XIRR: u64 = 0x74;
pub const H_XIRR_X: u64 = 0x2fc;
pub const H_SET_MODE: u64 = 0x31c;
pub const H_REGISTER_PROC_TBL: u64 = 0x37c;
pub const KVMPPC_H_RTAS: u64 = 0xf000;

pub const H_SET_MODE_RESOURCE_LE: u64 = 4;

const PROC_TABLE_OP_MASK: u64 = 0x18;
const PROC_TABLE_NEW: u64 = 0x18;
const PROC_TABLE_RADIX: u64 = 0x04;
const PROC_TABLE_GTSE: u64 = 0x01;
/// PATB_GR: the partition-table entry's "guest uses radix" bit, which KVM
/// checks against the radix flag.
const PATB_GR: u64 = 1 << 63;

/// The userspace XICS, as the XICS hypercalls see it.
pub trait XicsHcalls {
    fn cppr(&self, server: u32, cppr: u8);
    fn ipi(&self, server: u32, mfrr: u8) -> bool;
    /// Accepts the pending interrupt: returns XIRR.
    fn xirr(&self, server: u32) -> u32;
    fn eoi(&self, server: u32, xirr: u32);
    /// (XIRR, MFRR) without accepting.
    fn ipoll(&self, server: u32) -> Option<(u32, u8)>;
}

/// What the hypercalls act on.
pub trait HcallHost {
    fn console_write(&self, termno: u64, bytes: &[u8]);
    /// Up to `max` bytes of console input.
    fn console_read(&self, termno: u64, max: usize) -> Vec<u8>;
    /// Interrupts on every vCPU are taken little-endian (or not).
    fn set_interrupt_endianness(&self, little: bool);
    /// `KVM_PPC_CONFIGURE_V3_MMU`.
    fn configure_v3_mmu(&self, radix: bool, gtse: bool, process_table: u64) -> bool;
    /// A cache-inhibited access to guest physical memory or a device.
    fn ci_load(&self, addr: u64, size: usize) -> Option<u64>;
    fn ci_store(&self, addr: u64, size: usize, value: u64) -> bool;
    /// H_RTAS: the RTAS call whose arguments are at `args`.
    fn rtas(&self, caller: u32, args: u64) -> Option<GuestExit>;
    fn xics(&self) -> Option<&dyn XicsHcalls>;
    /// A TCE hypercall (the PHB's DMA window), when there is a PHB:
    /// returns the status.
    fn tce(&self, _nr: u64, _args: &mut [u64; 9]) -> Option<i64> {
        None
    }
}

/// Hypercalls nobody answered, for `lkvm debug`.
#[derive(Debug, Default)]
pub struct Unknown {
    pub count: AtomicU64,
    pub last: AtomicU64,
}

/// Packs bytes into registers big-endian, first byte in the top byte of the
/// first register, as H_GET_TERM_CHAR returns them.
pub fn pack_be(bytes: &[u8]) -> [u64; 2] {
    let mut buf = [0u8; 16];
    let n = bytes.len().min(16);
    buf[..n].copy_from_slice(&bytes[..n]);
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&buf[..8]);
    lo.copy_from_slice(&buf[8..]);
    [u64::from_be_bytes(hi), u64::from_be_bytes(lo)]
}

/// The inverse of [`pack_be`]: `len` bytes from two registers.
pub fn unpack_be(regs: [u64; 2], len: usize) -> Vec<u8> {
    let mut out: Vec<u8> = regs[0]
        .to_be_bytes()
        .into_iter()
        .chain(regs[1].to_be_bytes())
        .collect();
    out.truncate(len.min(16));
    out
}

fn ok() -> u64 {
    H_SUCCESS as u64
}

fn code(c: i64) -> u64 {
    c as u64
}

/// Handles hypercall `nr` from vCPU `caller`; results beyond r3 go to `args`.
pub fn dispatch(
    caller: u32,
    nr: u64,
    args: &mut [u64; 9],
    host: &dyn HcallHost,
    unknown: &Unknown,
) -> (u64, Option<GuestExit>) {
    let ret = match nr {
        H_PUT_TERM_CHAR => {
            let len = args[1] as usize;
            if len > 16 {
                code(H_PARAMETER)
            } else {
                host.console_write(args[0], &unpack_be([args[2], args[3]], len));
                ok()
            }
        }
        H_GET_TERM_CHAR => {
            let bytes = host.console_read(args[0], 16);
            let [hi, lo] = pack_be(&bytes);
            args[0] = bytes.len() as u64;
            args[1] = hi;
            args[2] = lo;
            ok()
        }
        H_SET_MODE => set_mode(args, host),
        H_REGISTER_PROC_TBL => {
            let flags = args[0];
            let radix = flags & PROC_TABLE_RADIX != 0;
            // Base | size field, plus GR for radix guests.
            let entry = args[1] | args[3] | if radix { PATB_GR } else { 0 };
            if flags & PROC_TABLE_OP_MASK != PROC_TABLE_NEW {
                // Deregistration and no-ops: nothing for KVM to do.
                ok()
            } else if host.configure_v3_mmu(radix, flags & PROC_TABLE_GTSE != 0, entry) {
                ok()
            } else {
                code(H_HARDWARE)
            }
        }
        H_LOGICAL_CI_LOAD => match args[0] as usize {
            size @ (1 | 2 | 4 | 8) => match host.ci_load(args[1], size) {
                Some(v) => {
                    args[0] = v;
                    ok()
                }
                None => code(H_PARAMETER),
            },
            _ => code(H_PARAMETER),
        },
        H_LOGICAL_CI_STORE => match args[0] as usize {
            size @ (1 | 2 | 4 | 8) if host.ci_store(args[1], size, args[2]) => ok(),
            _ => code(H_PARAMETER),
        },
        KVMPPC_H_RTAS => {
            let end = host.rtas(caller, args[0]);
            return (ok(), end);
        }
        super::tce::H_GET_TCE
        | super::tce::H_PUT_TCE
        | super::tce::H_PUT_TCE_INDIRECT
        | super::tce::H_STUFF_TCE => match host.tce(nr, args) {
            Some(status) => code(status),
            None => code(H_FUNCTION),
        },
        H_CPPR | H_IPI | H_XIRR | H_XIRR_X | H_EOI | H_IPOLL => match host.xics() {
            Some(x) => xics(caller, nr, args, x),
            None => code(H_FUNCTION),
        },
        other => {
            let n = unknown.count.fetch_add(1, Ordering::Relaxed) + 1;
            unknown.last.store(other, Ordering::Relaxed);
            log::debug!("hcall {other:#x} from vCPU {caller} is not implemented ({n} so far)");
            code(H_FUNCTION)
        }
    };
    (ret, None)
}

fn set_mode(args: &[u64; 9], host: &dyn HcallHost) -> u64 {
    let (mflags, resource, value1, value2) = (args[0], args[1], args[2], args[3]);
    if resource != H_SET_MODE_RESOURCE_LE {
        return code(H_P2);
    }
    if value1 != 0 {
        return code(H_P3);
    }
    if value2 != 0 {
        return code(H_P4);
    }
    match mflags {
        0 | 1 => {
            host.set_interrupt_endianness(mflags == 1);
            ok()
        }
        _ => code(H_UNSUPPORTED_FLAG),
    }
}

fn xics(caller: u32, nr: u64, args: &mut [u64; 9], x: &dyn XicsHcalls) -> u64 {
    match nr {
        H_CPPR => {
            x.cppr(caller, args[0] as u8);
            ok()
        }
        H_IPI => {
            if x.ipi(args[0] as u32, args[1] as u8) {
                ok()
            } else {
                code(H_PARAMETER)
            }
        }
        H_XIRR | H_XIRR_X => {
            args[0] = u64::from(x.xirr(caller));
            ok()
        }
        H_EOI => {
            x.eoi(caller, args[0] as u32);
            ok()
        }
        _ => match x.ipoll(args[0] as u32) {
            Some((xirr, mfrr)) => {
                args[0] = u64::from(xirr);
                args[1] = u64::from(mfrr);
                ok()
            }
            None => code(H_PARAMETER),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Default)]
    struct Host {
        out: RefCell<Vec<(u64, Vec<u8>)>>,
        input: RefCell<Vec<u8>>,
        le: RefCell<Option<bool>>,
        mmu: RefCell<Option<(bool, bool, u64)>>,
        stores: RefCell<Vec<(u64, usize, u64)>>,
    }

    impl HcallHost for Host {
        fn console_write(&self, termno: u64, bytes: &[u8]) {
            self.out.borrow_mut().push((termno, bytes.to_vec()));
        }
        fn console_read(&self, _termno: u64, max: usize) -> Vec<u8> {
            let mut i = self.input.borrow_mut();
            let n = i.len().min(max);
            i.drain(..n).collect()
        }
        fn set_interrupt_endianness(&self, little: bool) {
            *self.le.borrow_mut() = Some(little);
        }
        fn configure_v3_mmu(&self, radix: bool, gtse: bool, table: u64) -> bool {
            *self.mmu.borrow_mut() = Some((radix, gtse, table));
            true
        }
        fn ci_load(&self, addr: u64, size: usize) -> Option<u64> {
            (addr < 0x1000).then_some(0xab * size as u64)
        }
        fn ci_store(&self, addr: u64, size: usize, value: u64) -> bool {
            self.stores.borrow_mut().push((addr, size, value));
            addr < 0x1000
        }
        fn rtas(&self, _caller: u32, args: u64) -> Option<GuestExit> {
            (args == 0x99).then_some(GuestExit::PowerOff)
        }
        fn xics(&self) -> Option<&dyn XicsHcalls> {
            None
        }
    }

    fn hc(
        nr: u64,
        a: &[u64],
        host: &Host,
        unknown: &Unknown,
    ) -> (u64, [u64; 9], Option<GuestExit>) {
        let mut args = [0u64; 9];
        args[..a.len()].copy_from_slice(a);
        let (r, end) = dispatch(0, nr, &mut args, host, unknown);
        (r, args, end)
    }

    #[test]
    fn term_chars_are_packed_big_endian() {
        let (h, u) = (Host::default(), Unknown::default());
        let regs = pack_be(b"hello, world!!!!");
        assert_eq!(regs[0], u64::from_be_bytes(*b"hello, w"));
        let (r, _, _) = hc(H_PUT_TERM_CHAR, &[0x3000_0000, 5, regs[0], regs[1]], &h, &u);
        assert_eq!(r, 0);
        assert_eq!(h.out.borrow()[0], (0x3000_0000, b"hello".to_vec()));
        h.input.borrow_mut().extend(b"xyz");
        let (r, a, _) = hc(H_GET_TERM_CHAR, &[0x3000_0000], &h, &u);
        assert_eq!((r, a[0]), (0, 3));
        assert_eq!(unpack_be([a[1], a[2]], 3), b"xyz");
        let (r, _, _) = hc(H_PUT_TERM_CHAR, &[0, 17, 0, 0], &h, &u);
        assert_eq!(r, H_PARAMETER as u64);
    }

    #[test]
    fn set_mode_switches_interrupt_endianness_and_rejects_the_rest() {
        let (h, u) = (Host::default(), Unknown::default());
        assert_eq!(hc(H_SET_MODE, &[1, 4, 0, 0], &h, &u).0, 0);
        assert_eq!(*h.le.borrow(), Some(true));
        assert_eq!(hc(H_SET_MODE, &[0, 4, 0, 0], &h, &u).0, 0);
        assert_eq!(*h.le.borrow(), Some(false));
        assert_eq!(
            hc(H_SET_MODE, &[2, 4, 0, 0], &h, &u).0,
            H_UNSUPPORTED_FLAG as u64
        );
        assert_eq!(hc(H_SET_MODE, &[1, 4, 1, 0], &h, &u).0, H_P3 as u64);
        assert_eq!(hc(H_SET_MODE, &[1, 4, 0, 1], &h, &u).0, H_P4 as u64);
        assert_eq!(hc(H_SET_MODE, &[3, 3, 0, 0], &h, &u).0, H_P2 as u64);
    }

    #[test]
    fn register_proc_tbl_is_forwarded_as_configure_v3_mmu() {
        let (h, u) = (Host::default(), Unknown::default());
        // what Linux passes for radix: NEW | RADIX | GTSE, base, 0, size
        let r = hc(
            H_REGISTER_PROC_TBL,
            &[0x18 | 0x4 | 0x1, 0x1f0_0000, 0, 4],
            &h,
            &u,
        )
        .0;
        assert_eq!(r, 0);
        assert_eq!(*h.mmu.borrow(), Some((true, true, PATB_GR | 0x1f0_0004)));
        hc(H_REGISTER_PROC_TBL, &[0x18 | 0x1, 0x1f0_0000, 0, 4], &h, &u);
        assert_eq!(
            *h.mmu.borrow(),
            Some((false, true, 0x1f0_0004)),
            "no GR for hash"
        );
        *h.mmu.borrow_mut() = None;
        assert_eq!(hc(H_REGISTER_PROC_TBL, &[0x08, 0, 0, 0], &h, &u).0, 0);
        assert_eq!(*h.mmu.borrow(), None, "deregistration is not forwarded");
    }

    #[test]
    fn ci_load_store_rtas_and_unknown_calls() {
        let (h, u) = (Host::default(), Unknown::default());
        let (r, a, _) = hc(H_LOGICAL_CI_LOAD, &[4, 0x10], &h, &u);
        assert_eq!((r, a[0]), (0, 0xab * 4));
        assert_eq!(
            hc(H_LOGICAL_CI_LOAD, &[3, 0x10], &h, &u).0,
            H_PARAMETER as u64
        );
        assert_eq!(
            hc(H_LOGICAL_CI_LOAD, &[8, 0x5000], &h, &u).0,
            H_PARAMETER as u64
        );
        assert_eq!(hc(H_LOGICAL_CI_STORE, &[1, 0x20, 0x41], &h, &u).0, 0);
        assert_eq!(h.stores.borrow()[0], (0x20, 1, 0x41));
        assert_eq!(
            hc(KVMPPC_H_RTAS, &[0x99], &h, &u).2,
            Some(GuestExit::PowerOff)
        );
        assert_eq!(
            hc(H_XIRR, &[], &h, &u).0,
            H_FUNCTION as u64,
            "no userspace XICS"
        );
        assert_eq!(hc(0x380, &[], &h, &u).0, H_FUNCTION as u64);
        assert_eq!(hc(0x1234, &[], &h, &u).0, H_FUNCTION as u64);
        assert_eq!(u.count.load(Ordering::Relaxed), 2);
        assert_eq!(u.last.load(Ordering::Relaxed), 0x1234);
    }
}
