//! The SBI calls KVM forwards to userspace: the legacy console
//! (putchar/getchar), the debug console (DBCN) and, when not handled in the
//! kernel, system reset. Anything else is answered `SBI_ERR_NOT_SUPPORTED`.

use vm_memory::{Bytes, GuestAddress};

use crate::control::GuestExit;
use crate::memory::GuestMemory;

pub const EXT_LEGACY_PUTCHAR: u64 = 0x01;
pub const EXT_LEGACY_GETCHAR: u64 = 0x02;
pub const EXT_DBCN: u64 = 0x4442_434e;
pub const EXT_SRST: u64 = 0x5352_5354;

pub const DBCN_WRITE: u64 = 0;
pub const DBCN_READ: u64 = 1;
pub const DBCN_WRITE_BYTE: u64 = 2;

pub const SBI_SUCCESS: i64 = 0;
pub const SBI_ERR_FAILURE: i64 = -1;
pub const SBI_ERR_NOT_SUPPORTED: i64 = -2;
pub const SBI_ERR_INVALID_PARAM: i64 = -3;

/// A DBCN transfer is served in pieces of at most this size: the spec lets
/// the call move fewer bytes than asked, and a guest asking for 2^63 bytes
/// must not make lkvm allocate them.
const DBCN_CHUNK: u64 = 4096;

/// One SBI call as the guest made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SbiCall {
    pub ext: u64,
    pub func: u64,
    pub args: [u64; 6],
}

/// What goes back into `a0`/`a1`, and whether the VM ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SbiReply {
    pub ret: [u64; 2],
    pub end: Option<GuestExit>,
}

impl SbiReply {
    fn ok(value: u64) -> Self {
        SbiReply {
            ret: [SBI_SUCCESS as u64, value],
            end: None,
        }
    }

    fn err(code: i64) -> Self {
        SbiReply {
            ret: [code as u64, 0],
            end: None,
        }
    }
}

/// Where the SBI console reads and writes.
pub trait SbiConsole: Send + Sync {
    fn write(&self, bytes: &[u8]);
    /// One byte of console input, if there is any.
    fn read_byte(&self) -> Option<u8>;
}

pub fn handle(call: &SbiCall, console: &dyn SbiConsole, mem: &GuestMemory) -> SbiReply {
    match call.ext {
        EXT_LEGACY_PUTCHAR => {
            console.write(&[call.args[0] as u8]);
            SbiReply::err(SBI_SUCCESS)
        }
        // Legacy getchar returns the character itself in a0, or -1.
        EXT_LEGACY_GETCHAR => SbiReply::err(console.read_byte().map_or(SBI_ERR_FAILURE, i64::from)),
        EXT_DBCN => dbcn(call, console, mem),
        EXT_SRST if call.func == 0 => match call.args[0] {
            0 => SbiReply {
                ret: [0, 0],
                end: Some(GuestExit::PowerOff),
            },
            1 | 2 => SbiReply {
                ret: [0, 0],
                end: Some(GuestExit::Reset),
            },
            _ => SbiReply::err(SBI_ERR_INVALID_PARAM),
        },
        other => {
            log::debug!(
                "SBI: extension {other:#x} function {:#x} is not supported",
                call.func
            );
            SbiReply::err(SBI_ERR_NOT_SUPPORTED)
        }
    }
}

fn dbcn(call: &SbiCall, console: &dyn SbiConsole, mem: &GuestMemory) -> SbiReply {
    match call.func {
        DBCN_WRITE | DBCN_READ => {
            let len = call.args[0].min(DBCN_CHUNK);
            if len == 0 {
                return SbiReply::ok(0);
            }
            // rv64: the whole address is in the low word.
            let addr = GuestAddress(call.args[1]);
            if call.func == DBCN_WRITE {
                let mut buf = vec![0u8; len as usize];
                if mem.read_slice(&mut buf, addr).is_err() {
                    return SbiReply::err(SBI_ERR_INVALID_PARAM);
                }
                console.write(&buf);
                SbiReply::ok(len)
            } else {
                let mut buf = Vec::new();
                while (buf.len() as u64) < len {
                    match console.read_byte() {
                        Some(b) => buf.push(b),
                        None => break,
                    }
                }
                if mem.write_slice(&buf, addr).is_err() {
                    return SbiReply::err(SBI_ERR_INVALID_PARAM);
                }
                SbiReply::ok(buf.len() as u64)
            }
        }
        DBCN_WRITE_BYTE => {
            console.write(&[call.args[0] as u8]);
            SbiReply::ok(0)
        }
        _ => SbiReply::err(SBI_ERR_NOT_SUPPORTED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Console {
        out: Mutex<Vec<u8>>,
        input: Mutex<VecDeque<u8>>,
    }

    impl SbiConsole for Console {
        fn write(&self, bytes: &[u8]) {
            self.out.lock().unwrap().extend_from_slice(bytes);
        }
        fn read_byte(&self) -> Option<u8> {
            self.input.lock().unwrap().pop_front()
        }
    }

    fn mem() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0x8000_0000), 0x10000)]).unwrap()
    }

    fn call(ext: u64, func: u64, args: &[u64]) -> SbiCall {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        SbiCall { ext, func, args: a }
    }

    #[test]
    fn legacy_console_puts_and_gets() {
        let (c, m) = (Console::default(), mem());
        assert_eq!(
            handle(&call(EXT_LEGACY_PUTCHAR, 0, &[b'X' as u64]), &c, &m).ret,
            [0, 0]
        );
        assert_eq!(*c.out.lock().unwrap(), b"X");
        assert_eq!(
            handle(&call(EXT_LEGACY_GETCHAR, 0, &[]), &c, &m).ret[0],
            u64::MAX
        );
        c.input.lock().unwrap().push_back(b'q');
        assert_eq!(
            handle(&call(EXT_LEGACY_GETCHAR, 0, &[]), &c, &m).ret[0],
            u64::from(b'q')
        );
    }

    #[test]
    fn dbcn_write_read_and_write_byte_move_guest_memory() {
        let (c, m) = (Console::default(), mem());
        m.write_slice(b"hello", GuestAddress(0x8000_1000)).unwrap();
        let r = handle(&call(EXT_DBCN, DBCN_WRITE, &[5, 0x8000_1000]), &c, &m);
        assert_eq!(r.ret, [0, 5]);
        assert_eq!(*c.out.lock().unwrap(), b"hello");
        c.input.lock().unwrap().extend(b"ab");
        let r = handle(&call(EXT_DBCN, DBCN_READ, &[10, 0x8000_2000]), &c, &m);
        assert_eq!(r.ret, [0, 2]);
        let mut got = [0u8; 2];
        m.read_slice(&mut got, GuestAddress(0x8000_2000)).unwrap();
        assert_eq!(&got, b"ab");
        assert_eq!(
            handle(&call(EXT_DBCN, DBCN_WRITE_BYTE, &[b'!' as u64]), &c, &m).ret,
            [0, 0]
        );
        assert!(c.out.lock().unwrap().ends_with(b"!"));
    }

    #[test]
    fn bad_addresses_and_lengths_are_answered_not_obeyed() {
        let (c, m) = (Console::default(), mem());
        // outside guest RAM
        let r = handle(&call(EXT_DBCN, DBCN_WRITE, &[4, 0x1000]), &c, &m);
        assert_eq!(r.ret[0], SBI_ERR_INVALID_PARAM as u64);
        // running off the end of RAM
        let r = handle(&call(EXT_DBCN, DBCN_WRITE, &[64, 0x8000_fff0]), &c, &m);
        assert_eq!(r.ret[0], SBI_ERR_INVALID_PARAM as u64);
        // an absurd length is served in one chunk at most
        m.write_slice(&[b'z'; 4096], GuestAddress(0x8000_0000))
            .unwrap();
        let r = handle(
            &call(EXT_DBCN, DBCN_WRITE, &[u64::MAX, 0x8000_0000]),
            &c,
            &m,
        );
        assert_eq!(r.ret, [0, 4096]);
        assert_eq!(
            handle(&call(EXT_DBCN, 9, &[]), &c, &m).ret[0],
            SBI_ERR_NOT_SUPPORTED as u64
        );
    }

    #[test]
    fn reset_ends_the_vm_and_unknown_calls_are_not_supported() {
        let (c, m) = (Console::default(), mem());
        assert_eq!(
            handle(&call(EXT_SRST, 0, &[0, 0]), &c, &m).end,
            Some(GuestExit::PowerOff)
        );
        assert_eq!(
            handle(&call(EXT_SRST, 0, &[1, 0]), &c, &m).end,
            Some(GuestExit::Reset)
        );
        assert_eq!(
            handle(&call(EXT_SRST, 0, &[7, 0]), &c, &m).ret[0],
            SBI_ERR_INVALID_PARAM as u64
        );
        let r = handle(&call(0x0a00_0000, 3, &[]), &c, &m);
        assert_eq!((r.ret[0], r.end), (SBI_ERR_NOT_SUPPORTED as u64, None));
    }
}
