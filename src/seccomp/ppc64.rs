//! The BPF of a plain allow-list, for the one architecture seccompiler
//! does not know (PowerPC): check the architecture, then the call number
//! against each allowed one.

use super::{sock_filter, BpfProgram, Mode};

/// `AUDIT_ARCH_PPC64LE`: EM_PPC64 | 64-bit | little-endian.
pub const AUDIT_ARCH_PPC64LE: u32 = 21 | 0x8000_0000 | 0x4000_0000;
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const RET_K: u16 = 0x06;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_TRAP: u32 = 0x0003_0000;
const SECCOMP_RET_LOG: u32 = 0x7ffc_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
/// `struct seccomp_data`: nr at 0, arch at 4.
const NR: u32 = 0;
const ARCH: u32 = 4;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jeq(k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: JEQ_K,
        jt,
        jf,
        k,
    }
}

/// Jumps are 8-bit: a list this long no longer fits.
pub const MAX_CALLS: usize = 250;

pub fn program(nrs: &[i64], m: Mode) -> Result<BpfProgram, String> {
    if nrs.len() > MAX_CALLS {
        return Err(format!("{} calls, at most {MAX_CALLS}", nrs.len()));
    }
    let miss = if m == Mode::Log {
        SECCOMP_RET_LOG
    } else {
        SECCOMP_RET_TRAP
    };
    let mut p = vec![
        stmt(LD_W_ABS, ARCH),
        jeq(AUDIT_ARCH_PPC64LE, 1, 0),
        stmt(RET_K, SECCOMP_RET_KILL_PROCESS),
        stmt(LD_W_ABS, NR),
    ];
    for nr in nrs {
        // A match jumps over the instructions to "allow" at the end.
        p.push(jeq(*nr as u32, 0, 0));
    }
    let n = nrs.len();
    for (i, ins) in p.iter_mut().skip(4).enumerate() {
        // From instruction 4+i, the miss return is n-i-1 ahead, the
        // allow return one further.
        ins.jt = u8::try_from(n - i).unwrap_or(u8::MAX);
    }
    p.push(stmt(RET_K, miss));
    p.push(stmt(RET_K, SECCOMP_RET_ALLOW));
    Ok(p)
}
