//! PAPR hypercalls as KVM forwards them (`hcall::dispatch`): the hvterm
//! console, H_SET_MODE, H_REGISTER_PROC_TBL, cache-inhibited loads and
//! stores, H_RTAS (RTAS calls read from and answered into guest memory:
//! time of day, CPU start/stop, XICS sources, PCI configuration), the
//! TCE hypercalls on the PHB's DMA window, the XICS hypercalls, and
//! unknown numbers. The firmware glue is a stand-in for
//! `powerpc/machine.rs`'s (which builds only for powerpc64): the same
//! calls into lkvm, with KVM's part (LPCR, MMU setup) accepted.
//!
//! Input: `mode u8` (bit 0 userspace XICS, bit 1 a PHB with PCI), `now
//! u64` (the host clock), `cpus u8` (1 to 8), `n u8, bytes` (console
//! input), then operations `op u8`: op 0xff is `addr u32, n u16, bytes`
//! written into guest memory (RTAS arguments, TCE lists); otherwise
//! `caller u8`, `k u8` and `k % 10` argument words (the rest zero), and
//! the hypercall is `HCALLS[op % len]` (the last entry: a raw number from
//! the first argument).
#![no_main]

use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use lkvm::control::GuestExit;
use lkvm::hw::pci::testing::Scratch;
use lkvm::hw::pci::PciRoot;
use lkvm::memory::GuestMemory;
use lkvm::powerpc::hcall::{self, HcallHost, Unknown, XicsHcalls};
use lkvm::powerpc::hvterm::HvTerm;
use lkvm::powerpc::rtas::{self, RtasHost, XicsRtas};
use lkvm::powerpc::tce::{self, TceTable};
use lkvm::powerpc::xics::Xics;
use lkvm::term::ConsoleSink;
use lkvm_fuzz::driver::memory;
use lkvm_fuzz::input::Input;
use vm_memory::{Bytes, GuestAddress};

const HCALLS: &[u64] = &[
    hcall::H_PUT_TERM_CHAR,
    hcall::H_GET_TERM_CHAR,
    hcall::H_SET_MODE,
    hcall::H_REGISTER_PROC_TBL,
    hcall::H_LOGICAL_CI_LOAD,
    hcall::H_LOGICAL_CI_STORE,
    hcall::KVMPPC_H_RTAS,
    tce::H_GET_TCE,
    tce::H_PUT_TCE,
    tce::H_PUT_TCE_INDIRECT,
    tce::H_STUFF_TCE,
    hcall::H_CPPR,
    hcall::H_IPI,
    hcall::H_XIRR,
    hcall::H_XIRR_X,
    hcall::H_EOI,
    hcall::H_IPOLL,
    u64::MAX,
];

struct Firmware {
    hvterm: HvTerm,
    mem: GuestMemory,
    now: u64,
    stopped: Mutex<Vec<bool>>,
    xics: Option<Arc<Xics>>,
    pci: Option<Arc<PciRoot>>,
    tce: TceTable,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl HcallHost for Firmware {
    fn console_write(&self, _termno: u64, _bytes: &[u8]) {}
    fn console_read(&self, termno: u64, max: usize) -> Vec<u8> {
        if termno == 0 {
            self.hvterm.read(max)
        } else {
            Vec::new()
        }
    }
    fn set_interrupt_endianness(&self, _little: bool) {}
    fn configure_v3_mmu(&self, _radix: bool, _gtse: bool, _table: u64) -> bool {
        true
    }
    fn ci_load(&self, addr: u64, size: usize) -> Option<u64> {
        let mut b = [0u8; 8];
        self.mem
            .read_slice(&mut b[..size], GuestAddress(addr))
            .ok()?;
        Some(b[..size].iter().fold(0u64, |v, x| (v << 8) | u64::from(*x)))
    }
    fn ci_store(&self, addr: u64, size: usize, value: u64) -> bool {
        let bytes = value.to_be_bytes();
        self.mem
            .write_slice(&bytes[8 - size..], GuestAddress(addr))
            .is_ok()
    }
    fn rtas(&self, caller: u32, args: u64) -> Option<GuestExit> {
        rtas::call(&self.mem, args, caller, self)
    }
    fn xics(&self) -> Option<&dyn XicsHcalls> {
        self.xics.as_deref().map(|x| x as &dyn XicsHcalls)
    }
    fn tce(&self, nr: u64, args: &mut [u64; 9]) -> Option<i64> {
        self.pci.as_ref()?;
        Some(self.tce.hcall(nr, args, &self.mem))
    }
}

impl RtasHost for Firmware {
    fn console_write(&self, _bytes: &[u8]) {}
    fn now(&self) -> u64 {
        self.now
    }
    fn cpu_running(&self, cpu: u32) -> Option<bool> {
        lock(&self.stopped).get(cpu as usize).map(|s| !s)
    }
    fn start_cpu(&self, cpu: u32, _entry: u64, _r3: u64) -> bool {
        match lock(&self.stopped).get_mut(cpu as usize) {
            Some(s) if *s => {
                *s = false;
                true
            }
            _ => false,
        }
    }
    fn stop_self(&self, caller: u32) {
        if let Some(s) = lock(&self.stopped).get_mut(caller as usize) {
            *s = true;
        }
    }
    fn xics(&self) -> Option<&dyn XicsRtas> {
        self.xics.as_deref().map(|x| x as &dyn XicsRtas)
    }
    fn pci(&self) -> Option<&PciRoot> {
        self.pci.as_deref()
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let (Some(mode), Some(now), Some(cpus), Some(n)) = (inp.u8(), inp.u64(), inp.u8(), inp.u8())
    else {
        return;
    };
    let cpus = u32::from(cpus % 8) + 1;
    let pci = (mode & 2 != 0).then(|| {
        let mut root = PciRoot::new();
        let _ = root.add(Arc::new(Mutex::new(Scratch::new(0x100))));
        Arc::new(root)
    });
    let fw = Firmware {
        hvterm: HvTerm::default(),
        mem: memory(),
        now,
        stopped: Mutex::new(vec![false; cpus as usize]),
        xics: (mode & 1 != 0).then(|| Xics::new(cpus)),
        pci,
        tce: TceTable::default(),
    };
    fw.hvterm.queue_input(inp.up_to(usize::from(n)));
    let unknown = Unknown::default();
    while let Some(op) = inp.u8() {
        if op == 0xff {
            let (Some(addr), Some(n)) = (inp.u32(), inp.u16()) else {
                break;
            };
            let _ = fw
                .mem
                .write_slice(inp.up_to(usize::from(n)), GuestAddress(u64::from(addr)));
            continue;
        }
        let (Some(caller), Some(k)) = (inp.u8(), inp.u8()) else {
            break;
        };
        let mut args = [0u64; 9];
        for a in args.iter_mut().take(usize::from(k % 10)) {
            let Some(v) = inp.u64() else { break };
            *a = v;
        }
        let mut nr = HCALLS[usize::from(op) % HCALLS.len()];
        if nr == u64::MAX {
            nr = args[0];
        }
        let _ = hcall::dispatch(u32::from(caller) % cpus, nr, &mut args, &fw, &unknown);
    }
});
