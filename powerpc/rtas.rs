//! RTAS, the firmware runtime services a pSeries guest calls: lkvm places a
//! five-instruction stub in guest memory that turns every call into the
//! `H_RTAS` hypercall, and answers the calls here. RTAS runs big-endian:
//! the stub is stored big-endian and `struct rtas_args` is big-endian.

use vm_memory::{Bytes, GuestAddress};

use super::pci;
use crate::control::GuestExit;
use crate::hw::rtc::utc_from_unix;
use crate::memory::GuestMemory;

/// `mr r4,r3; lis r3,0; ori r3,r3,0xf000 (KVMPPC_H_RTAS); sc 1; blr`.
pub const RTAS_STUB: [u32; 5] = [
    0x7c64_1b78,
    0x3c60_0000,
    0x6063_f000,
    0x4400_0022,
    0x4e80_0020,
];

/// The stub as it goes into guest memory.
pub fn stub_bytes() -> Vec<u8> {
    RTAS_STUB.iter().flat_map(|w| w.to_be_bytes()).collect()
}

pub const TOKEN_BASE: u32 = 0x2000;

/// The RTAS calls lkvm offers, by name; a call's token is `TOKEN_BASE` plus
/// its index here.
pub const CALLS: &[&str] = &[
    "display-character",
    "get-time-of-day",
    "set-time-of-day",
    "power-off",
    "system-reboot",
    "query-cpu-stopped-state",
    "start-cpu",
    "stop-self",
    "ibm,set-xive",
    "ibm,get-xive",
    "ibm,int-off",
    "ibm,int-on",
    "set-indicator",
    "read-pci-config",
    "write-pci-config",
    "ibm,read-pci-config",
    "ibm,write-pci-config",
];

/// The XICS calls KVM can answer itself when the in-kernel XICS is used.
pub const XICS_CALLS: &[&str] = &["ibm,set-xive", "ibm,get-xive", "ibm,int-off", "ibm,int-on"];

pub fn token(name: &str) -> Option<u32> {
    CALLS
        .iter()
        .position(|c| *c == name)
        .map(|i| TOKEN_BASE + i as u32)
}

// RTAS status codes.
pub const SUCCESS: i32 = 0;
pub const HARDWARE_ERROR: i32 = -1;
pub const PARAMETER_ERROR: i32 = -3;

/// `query-cpu-stopped-state` answers.
pub const CPU_STOPPED: u32 = 0;
pub const CPU_RUNNING: u32 = 2;

/// At most this many arguments and results are read or written.
const MAX_WORDS: u32 = 16;

/// What RTAS calls act on.
pub trait RtasHost {
    fn console_write(&self, bytes: &[u8]);
    /// Seconds since the Unix epoch.
    fn now(&self) -> u64;
    /// Whether `cpu` is running, `None` if there is no such CPU.
    fn cpu_running(&self, cpu: u32) -> Option<bool>;
    /// Starts a stopped CPU at `entry` with r3 = `r3`.
    fn start_cpu(&self, cpu: u32, entry: u64, r3: u64) -> bool;
    /// Stops the calling CPU until a `start-cpu` names it.
    fn stop_self(&self, caller: u32);
    /// The userspace XICS, when it is the interrupt controller.
    fn xics(&self) -> Option<&dyn XicsRtas>;
    /// The PHB's bus, when the guest has PCI devices.
    fn pci(&self) -> Option<&crate::hw::pci::PciRoot>;
}

/// The XICS source controls RTAS offers.
pub trait XicsRtas {
    fn set_xive(&self, irq: u32, server: u32, priority: u8) -> bool;
    fn get_xive(&self, irq: u32) -> Option<(u32, u8)>;
    fn int_off(&self, irq: u32) -> bool;
    fn int_on(&self, irq: u32) -> bool;
}

fn phb_buid(hi: u32, lo: u32) -> bool {
    (u64::from(hi) << 32 | u64::from(lo)) == pci::BUID
}

/// Handles one call whose `struct rtas_args` is at `args` in guest memory.
/// Returns how the VM ends, if the call ends it.
pub fn call(mem: &GuestMemory, args: u64, caller: u32, host: &dyn RtasHost) -> Option<GuestExit> {
    let word = |i: u64| -> Option<u32> {
        let v: u32 = mem.read_obj(GuestAddress(args.checked_add(i * 4)?)).ok()?;
        Some(u32::from_be(v))
    };
    let (Some(tok), Some(nargs), Some(nret)) = (word(0), word(1), word(2)) else {
        log::debug!("RTAS: arguments at {args:#x} are outside guest RAM");
        return None;
    };
    if nargs > MAX_WORDS || nret > MAX_WORDS {
        log::debug!("RTAS: token {tok:#x} with {nargs} args / {nret} rets");
        return None;
    }
    let input: Vec<u32> = (0..u64::from(nargs)).filter_map(|i| word(3 + i)).collect();
    let arg = |i: usize| input.get(i).copied().unwrap_or(0);
    let mut rets = vec![0u32; nret as usize];
    let mut end = None;
    let name = tok
        .checked_sub(TOKEN_BASE)
        .and_then(|i| CALLS.get(i as usize))
        .copied();
    let status: i32 = match name {
        Some("display-character") => {
            host.console_write(&[arg(0) as u8]);
            SUCCESS
        }
        Some("get-time-of-day") => {
            let t = utc_from_unix(host.now());
            let fields = [
                t.year,
                u32::from(t.month),
                u32::from(t.day),
                u32::from(t.hour),
                u32::from(t.minute),
                u32::from(t.second),
                0,
            ];
            for (slot, v) in rets.iter_mut().skip(1).zip(fields) {
                *slot = v;
            }
            SUCCESS
        }
        // The clock follows the host; the guest's setting is accepted.
        Some("set-time-of-day") => SUCCESS,
        Some("power-off") => {
            end = Some(GuestExit::PowerOff);
            SUCCESS
        }
        Some("system-reboot") => {
            end = Some(GuestExit::Reset);
            SUCCESS
        }
        Some("query-cpu-stopped-state") => match host.cpu_running(arg(0)) {
            Some(running) => {
                if let Some(r) = rets.get_mut(1) {
                    *r = if running { CPU_RUNNING } else { CPU_STOPPED };
                }
                SUCCESS
            }
            None => PARAMETER_ERROR,
        },
        Some("start-cpu") => {
            if host.start_cpu(arg(0), u64::from(arg(1)), u64::from(arg(2))) {
                SUCCESS
            } else {
                HARDWARE_ERROR
            }
        }
        Some("stop-self") => {
            host.stop_self(caller);
            SUCCESS
        }
        Some("ibm,set-xive") => xics(host, |x| x.set_xive(arg(0), arg(1), arg(2) as u8)),
        Some("ibm,get-xive") => match host.xics().and_then(|x| x.get_xive(arg(0))) {
            Some((server, priority)) => {
                if rets.len() >= 3 {
                    rets[1] = server;
                    rets[2] = u32::from(priority);
                }
                SUCCESS
            }
            None => PARAMETER_ERROR,
        },
        Some("ibm,int-off") => xics(host, |x| x.int_off(arg(0))),
        Some("ibm,int-on") => xics(host, |x| x.int_on(arg(0))),
        // Indicators (surveillance, LEDs) are accepted and ignored.
        Some("set-indicator") => SUCCESS,
        // The ibm, forms name the PHB by its BUID; there is one.
        Some(n @ ("read-pci-config" | "ibm,read-pci-config")) => {
            let (size, buid_ok) = match n {
                "read-pci-config" => (arg(1), true),
                _ => (arg(3), phb_buid(arg(1), arg(2))),
            };
            let value = host
                .pci()
                .filter(|_| buid_ok)
                .map(|root| pci::config_read(root, arg(0), size));
            match value {
                Some(Some(v)) => {
                    if let Some(r) = rets.get_mut(1) {
                        *r = v;
                    }
                    SUCCESS
                }
                Some(None) => PARAMETER_ERROR,
                None => {
                    if let Some(r) = rets.get_mut(1) {
                        *r = u32::MAX;
                    }
                    if buid_ok {
                        SUCCESS
                    } else {
                        PARAMETER_ERROR
                    }
                }
            }
        }
        Some(n @ ("write-pci-config" | "ibm,write-pci-config")) => {
            let (size, value, buid_ok) = match n {
                "write-pci-config" => (arg(1), arg(2), true),
                _ => (arg(3), arg(4), phb_buid(arg(1), arg(2))),
            };
            match host.pci().filter(|_| buid_ok) {
                Some(root) if pci::config_write(root, arg(0), size, value) => SUCCESS,
                Some(_) => PARAMETER_ERROR,
                None if buid_ok => SUCCESS,
                None => PARAMETER_ERROR,
            }
        }
        _ => {
            log::debug!("RTAS: unknown token {tok:#x}");
            PARAMETER_ERROR
        }
    };
    if let Some(r) = rets.first_mut() {
        *r = status as u32;
    }
    let base = args + 12 + 4 * u64::from(nargs);
    for (i, r) in rets.iter().enumerate() {
        if mem
            .write_obj(r.to_be(), GuestAddress(base + 4 * i as u64))
            .is_err()
        {
            log::debug!("RTAS: results at {base:#x} are outside guest RAM");
            break;
        }
    }
    end
}

fn xics(host: &dyn RtasHost, f: impl FnOnce(&dyn XicsRtas) -> bool) -> i32 {
    match host.xics() {
        Some(x) if f(x) => SUCCESS,
        _ => PARAMETER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Host {
        out: Mutex<Vec<u8>>,
        started: Mutex<Vec<(u32, u64, u64)>>,
        stopped: Mutex<Vec<u32>>,
        pci: Option<crate::hw::pci::PciRoot>,
    }

    impl RtasHost for Host {
        fn console_write(&self, bytes: &[u8]) {
            self.out.lock().unwrap().extend_from_slice(bytes);
        }
        fn now(&self) -> u64 {
            951_827_696 // 2000-02-29 12:34:56
        }
        fn cpu_running(&self, cpu: u32) -> Option<bool> {
            (cpu < 2).then_some(cpu == 0)
        }
        fn start_cpu(&self, cpu: u32, entry: u64, r3: u64) -> bool {
            self.started.lock().unwrap().push((cpu, entry, r3));
            cpu == 1
        }
        fn stop_self(&self, caller: u32) {
            self.stopped.lock().unwrap().push(caller);
        }
        fn xics(&self) -> Option<&dyn XicsRtas> {
            None
        }
        fn pci(&self) -> Option<&crate::hw::pci::PciRoot> {
            self.pci.as_ref()
        }
    }

    const ARGS: u64 = 0x1000;

    fn mem() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    fn rtas(
        mem: &GuestMemory,
        host: &Host,
        name: &str,
        args: &[u32],
        nret: u32,
    ) -> (Vec<u32>, Option<GuestExit>) {
        let mut words = vec![token(name).unwrap_or(0x1fff), args.len() as u32, nret];
        words.extend(args);
        for (i, w) in words.iter().enumerate() {
            mem.write_obj(w.to_be(), GuestAddress(ARGS + 4 * i as u64))
                .unwrap();
        }
        let end = call(mem, ARGS, 0, host);
        let base = ARGS + 12 + 4 * args.len() as u64;
        let rets = (0..u64::from(nret))
            .map(|i| u32::from_be(mem.read_obj(GuestAddress(base + 4 * i)).unwrap()))
            .collect();
        (rets, end)
    }

    #[test]
    fn stub_is_big_endian_and_tokens_are_stable() {
        let b = stub_bytes();
        assert_eq!(b.len(), 20);
        assert_eq!(&b[..4], &[0x7c, 0x64, 0x1b, 0x78]);
        assert_eq!(&b[16..], &[0x4e, 0x80, 0x00, 0x20]);
        assert_eq!(token("display-character"), Some(0x2000));
        assert_eq!(token("ibm,set-xive"), Some(0x2008));
        assert_eq!(token("nonsense"), None);
    }

    #[test]
    fn time_console_and_power_calls() {
        let (m, h) = (mem(), Host::default());
        let (rets, end) = rtas(&m, &h, "get-time-of-day", &[], 8);
        assert_eq!(rets, vec![0, 2000, 2, 29, 12, 34, 56, 0]);
        assert_eq!(end, None);
        rtas(&m, &h, "display-character", &[u32::from(b'Z')], 1);
        assert_eq!(*h.out.lock().unwrap(), b"Z");
        assert_eq!(
            rtas(&m, &h, "power-off", &[0, 0], 1).1,
            Some(GuestExit::PowerOff)
        );
        assert_eq!(
            rtas(&m, &h, "system-reboot", &[], 1).1,
            Some(GuestExit::Reset)
        );
    }

    #[test]
    fn cpu_state_start_and_stop() {
        let (m, h) = (mem(), Host::default());
        assert_eq!(
            rtas(&m, &h, "query-cpu-stopped-state", &[0], 2).0,
            vec![0, CPU_RUNNING]
        );
        assert_eq!(
            rtas(&m, &h, "query-cpu-stopped-state", &[1], 2).0,
            vec![0, CPU_STOPPED]
        );
        assert_eq!(
            rtas(&m, &h, "query-cpu-stopped-state", &[7], 2).0[0],
            PARAMETER_ERROR as u32
        );
        assert_eq!(rtas(&m, &h, "start-cpu", &[1, 0x1234, 9], 1).0, vec![0]);
        assert_eq!(
            rtas(&m, &h, "start-cpu", &[0, 0x1234, 9], 1).0,
            vec![HARDWARE_ERROR as u32]
        );
        assert_eq!(h.started.lock().unwrap()[0], (1, 0x1234, 9));
        rtas(&m, &h, "stop-self", &[], 1);
        assert_eq!(*h.stopped.lock().unwrap(), vec![0]);
    }

    #[test]
    fn bad_tokens_and_bad_pointers_are_survived() {
        let (m, h) = (mem(), Host::default());
        assert_eq!(
            rtas(&m, &h, "bogus", &[1, 2], 1).0,
            vec![PARAMETER_ERROR as u32]
        );
        // no XICS in userspace: XICS calls fail cleanly
        assert_eq!(
            rtas(&m, &h, "ibm,int-on", &[0x1000], 1).0,
            vec![PARAMETER_ERROR as u32]
        );
        // arguments outside RAM, and absurd counts
        assert_eq!(call(&m, 0xffff_0000, 0, &h), None);
        m.write_obj(100u32.to_be(), GuestAddress(ARGS + 4)).unwrap();
        assert_eq!(call(&m, ARGS, 0, &h), None);
        assert_eq!(
            rtas(&m, &h, "read-pci-config", &[0, 4], 2).0,
            vec![0, u32::MAX]
        );
    }

    #[test]
    fn pci_config_calls_reach_the_phb() {
        use std::sync::Arc;
        let mut root = crate::hw::pci::PciRoot::new();
        root.add(Arc::new(Mutex::new(crate::hw::pci::testing::Scratch::new(
            0x1000,
        ))))
        .unwrap();
        let h = Host {
            pci: Some(root),
            ..Default::default()
        };
        let m = mem();
        let (hi, lo) = ((pci::BUID >> 32) as u32, pci::BUID as u32);
        let dev1 = 1 << 11;
        assert_eq!(
            rtas(&m, &h, "ibm,read-pci-config", &[dev1, hi, lo, 4], 2).0,
            vec![0, 0x5678_1234]
        );
        assert_eq!(
            rtas(&m, &h, "read-pci-config", &[dev1 + 2, 2], 2).0,
            vec![0, 0x5678]
        );
        assert_eq!(
            rtas(&m, &h, "ibm,read-pci-config", &[dev1, hi, lo + 1, 4], 2).0[0],
            PARAMETER_ERROR as u32,
            "wrong BUID"
        );
        assert_eq!(
            rtas(
                &m,
                &h,
                "ibm,write-pci-config",
                &[dev1 + 0x10, hi, lo, 4, 0x8000_0000],
                1
            )
            .0,
            vec![0]
        );
        assert_eq!(
            rtas(&m, &h, "read-pci-config", &[dev1 + 0x10, 4], 2).0,
            vec![0, 0x8000_0000]
        );
        assert_eq!(
            rtas(&m, &h, "write-pci-config", &[dev1 + 1, 4, 0], 1).0,
            vec![PARAMETER_ERROR as u32],
            "misaligned"
        );
    }
}
