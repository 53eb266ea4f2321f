//! The exits only RISC-V has: SBI calls and CSR accesses KVM forwards to
//! userspace, and the handler that answers them.

use std::io::Read;
use std::sync::{Arc, Mutex};

use super::sbi::{self, SbiCall, SbiConsole};
use crate::arch::ExitHandler;
use crate::bus::lock;
use crate::control::GuestExit;
use crate::hw::serial::Serial8250;
use crate::memory::GuestMemory;
use crate::term::ConsoleOut;

/// The Zkr `seed` CSR; reads return entropy with status ES16.
const CSR_SEED: u64 = 0x015;
const SEED_OPST_ES16: u64 = 0b10 << 30;

/// A RISC-V exit as the hypervisor backend decodes it; the answer goes
/// into `ret`, which points into the vCPU's `kvm_run`.
#[derive(Debug)]
pub enum Exit<'a> {
    /// `KVM_EXIT_RISCV_SBI`: the reply is (a0, a1).
    Sbi {
        ext: u64,
        func: u64,
        args: [u64; 6],
        ret: &'a mut [u64; 2],
    },
    /// `KVM_EXIT_RISCV_CSR` (the Zkr `seed` CSR): the value read.
    Csr {
        csr: u64,
        new_value: u64,
        write_mask: u64,
        ret: &'a mut u64,
    },
}

/// Answers SBI calls (the console ones on `console`) and CSR reads.
pub struct Exits {
    console: Box<dyn SbiConsole>,
    mem: GuestMemory,
}

impl Exits {
    pub fn new(console: Box<dyn SbiConsole>, mem: GuestMemory) -> Self {
        Exits { console, mem }
    }
}

impl<'a> ExitHandler<Exit<'a>> for Exits {
    fn handle(&self, _vcpu: u32, exit: Exit<'a>) -> Option<GuestExit> {
        match exit {
            Exit::Sbi {
                ext,
                func,
                args,
                ret,
            } => {
                let reply = sbi::handle(&SbiCall { ext, func, args }, &*self.console, &self.mem);
                *ret = reply.ret;
                reply.end
            }
            Exit::Csr { csr, ret, .. } => {
                *ret = read_csr(csr);
                None
            }
        }
    }
}

fn read_csr(csr: u64) -> u64 {
    if csr != CSR_SEED {
        log::debug!("unhandled CSR {csr:#x} access; reads as 0");
        return 0;
    }
    let mut buf = [0u8; 2];
    let entropy = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map(|_| u64::from(u16::from_le_bytes(buf)))
        .unwrap_or(0);
    SEED_OPST_ES16 | entropy
}

/// The SBI console: output to lkvm's stdout, input from the UART's queue
/// (a guest uses one console or the other for input, not both).
pub struct UartSbiConsole(pub Arc<Mutex<Serial8250>>);

impl SbiConsole for UartSbiConsole {
    fn write(&self, bytes: &[u8]) {
        use std::io::Write;
        if let Err(e) = ConsoleOut.write_all(bytes) {
            log::debug!("SBI console: {e}");
        }
    }
    fn read_byte(&self) -> Option<u8> {
        lock(&self.0).read_input_byte()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    struct Captured(Mutex<Vec<u8>>);

    impl SbiConsole for Arc<Captured> {
        fn write(&self, bytes: &[u8]) {
            lock(&self.0).extend_from_slice(bytes);
        }
        fn read_byte(&self) -> Option<u8> {
            Some(b'k')
        }
    }

    fn exits() -> (Exits, Arc<Captured>) {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0x8000_0000), 0x10000)]).unwrap();
        let out = Arc::new(Captured(Mutex::new(Vec::new())));
        (Exits::new(Box::new(out.clone()), mem), out)
    }

    #[test]
    fn sbi_calls_are_answered_in_place_and_may_end_the_vm() {
        let (exits, out) = exits();
        let mut ret = [9u64; 2];
        let put = Exit::Sbi {
            ext: sbi::EXT_LEGACY_PUTCHAR,
            func: 0,
            args: [u64::from(b'x'), 0, 0, 0, 0, 0],
            ret: &mut ret,
        };
        assert_eq!(exits.handle(0, put), None);
        assert_eq!((ret[0], lock(&out.0).as_slice()), (0, &b"x"[..]));
        let get = Exit::Sbi {
            ext: sbi::EXT_LEGACY_GETCHAR,
            func: 0,
            args: [0; 6],
            ret: &mut ret,
        };
        exits.handle(0, get);
        assert_eq!(ret[0], u64::from(b'k'));
        let shutdown = Exit::Sbi {
            ext: sbi::EXT_SRST,
            func: 0,
            args: [0; 6],
            ret: &mut ret,
        };
        assert_eq!(exits.handle(0, shutdown), Some(GuestExit::PowerOff));
    }

    #[test]
    fn only_the_seed_csr_reads_as_entropy() {
        let (exits, _) = exits();
        let mut value = 7;
        fn csr(csr: u64, ret: &mut u64) -> Exit<'_> {
            Exit::Csr {
                csr,
                new_value: 0,
                write_mask: 0,
                ret,
            }
        }
        assert_eq!(exits.handle(0, csr(CSR_SEED, &mut value)), None);
        assert_eq!(value >> 30, 0b10, "status ES16");
        exits.handle(0, csr(0x100, &mut value));
        assert_eq!(value, 0);
    }
}
