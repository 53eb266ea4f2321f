//! The SBI calls KVM forwards to lkvm: legacy putchar/getchar, the debug
//! console (DBCN write, read and write-byte with any length and guest
//! address), system reset, and every other extension and function.
//!
//! Input: `input n u8, bytes` (console input waiting), then calls `ext
//! u8, func u64, args 6 x u64`: `ext % 5` picks legacy putchar, legacy
//! getchar, DBCN, SRST or a raw extension id (then `ext u64` follows).
#![no_main]

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use lkvm::riscv::sbi::{
    handle, SbiCall, SbiConsole, EXT_DBCN, EXT_LEGACY_GETCHAR, EXT_LEGACY_PUTCHAR, EXT_SRST,
};
use lkvm_fuzz::driver::memory;
use lkvm_fuzz::input::Input;

struct Console(Mutex<Vec<u8>>);

impl SbiConsole for Console {
    fn write(&self, _bytes: &[u8]) {}
    fn read_byte(&self) -> Option<u8> {
        match self.0.lock() {
            Ok(mut v) if !v.is_empty() => Some(v.remove(0)),
            _ => None,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let Some(n) = inp.u8() else { return };
    let console = Console(Mutex::new(inp.up_to(usize::from(n)).to_vec()));
    let mem = memory();
    while let (Some(e), Some(func)) = (inp.u8(), inp.u64()) {
        let ext = match e % 5 {
            0 => EXT_LEGACY_PUTCHAR,
            1 => EXT_LEGACY_GETCHAR,
            2 => EXT_DBCN,
            3 => EXT_SRST,
            _ => {
                let Some(x) = inp.u64() else { break };
                x
            }
        };
        let mut args = [0u64; 6];
        for a in &mut args {
            let Some(v) = inp.u64() else { return };
            *a = v;
        }
        let _ = handle(&SbiCall { ext, func, args }, &console, &mem);
    }
});
