//! Asynchronous page faults for arm64 guests, in the form of Gavin Shan's
//! series (v4, never merged upstream): a page-not-present notification is
//! the KVM-private SDEI event 0x40400001, page-ready is a PPI the VMM picks.
//!
//! lkvm enables it only where the host proves it has it: the VM fd reports
//! `KVM_CAP_ASYNC_PF_INT` (183) *and* `KVM_ARM_ASYNC_PF_COMMAND` answers
//! `GET_VERSION` with at least 1.0.0. Upstream kernels fail the first check
//! (the capability is x86-only there). The old SDEI capability numbers are
//! never probed: upstream has reused every one of them.
//!
//! The logic runs against [`AsyncPfHost`], so it is tested with a fake host.

use std::io;

use super::options::AsyncPfMode;

pub const KVM_CAP_ASYNC_PF_INT: u32 = 183;
/// `_IOWR(KVMIO, 0xcf, struct kvm_arm_async_pf_cmd)` (16 bytes).
pub const KVM_ARM_ASYNC_PF_COMMAND: u64 = 0xc010_aecf;

pub const CMD_GET_VERSION: u32 = 0;
pub const CMD_GET_SDEI: u32 = 1;
pub const CMD_GET_IRQ: u32 = 2;
pub const CMD_GET_CONTROL: u32 = 3;
pub const CMD_SET_SDEI: u32 = 4;
pub const CMD_SET_IRQ: u32 = 5;

/// The oldest interface version lkvm speaks (1.0.0).
pub const MIN_VERSION: u32 = 0x01_0000;
/// `KVM_SDEI_ASYNC_PF_NUM`: private, critical-priority event.
pub const SDEI_EVENT: u64 = 0x4040_0001;
/// The page-ready PPI (INTID 20, PPI 4). lkvm reserves it: no device, timer
/// or PMU interrupt uses it (checked at compile time in `aarch64/mod.rs`).
pub const PAGE_READY_PPI: u32 = 20;

/// `struct kvm_arm_async_pf_cmd { __u32 cmd; union { __u32 version; __u64
/// sdei; __u32 irq; __u64 control; }; }`: the union sits at offset 8 and
/// its 32-bit members in its low bytes (arm64 is little-endian).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AsyncPfCmd {
    pub cmd: u32,
    pub pad: u32,
    pub value: u64,
}

const _: () = assert!(std::mem::size_of::<AsyncPfCmd>() == 16);

impl AsyncPfCmd {
    pub fn new(cmd: u32, value: u64) -> Self {
        AsyncPfCmd { cmd, pad: 0, value }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--async-pf on: this host's KVM has no arm64 asynchronous page faults ({0})")]
    Unsupported(String),
    #[error("async PF: {what} on vCPU {vcpu} failed: {source}")]
    Vcpu {
        what: &'static str,
        vcpu: u32,
        #[source]
        source: io::Error,
    },
}

/// The KVM operations async PF needs, on the VM and its vCPUs.
pub trait AsyncPfHost {
    /// `KVM_CHECK_EXTENSION` on the VM fd.
    fn check_vm_extension(&self, cap: u32) -> i32;
    /// `KVM_ARM_ASYNC_PF_COMMAND` on the VM fd.
    fn vm_command(&self, cmd: &mut AsyncPfCmd) -> io::Result<()>;
    /// `KVM_ARM_ASYNC_PF_COMMAND` on vCPU `vcpu`'s fd.
    fn vcpu_command(&self, vcpu: u32, cmd: &mut AsyncPfCmd) -> io::Result<()>;
}

/// What the host offers, without changing anything.
pub fn probe(host: &dyn AsyncPfHost) -> Result<u32, String> {
    match host.check_vm_extension(KVM_CAP_ASYNC_PF_INT) {
        1 => {}
        n => return Err(format!("KVM_CAP_ASYNC_PF_INT is {n}")),
    }
    let mut cmd = AsyncPfCmd::new(CMD_GET_VERSION, 0);
    host.vm_command(&mut cmd)
        .map_err(|e| format!("KVM_ARM_ASYNC_PF_COMMAND(GET_VERSION): {e}"))?;
    let version = cmd.value as u32;
    if version < MIN_VERSION {
        return Err(format!(
            "interface version {version:#x} is older than 1.0.0"
        ));
    }
    Ok(version)
}

/// Applies `--async-pf` to a VM with `cpus` vCPUs. Returns the interface
/// version when async PF is on (the device tree then gets `/firmware/sdei`).
pub fn configure(
    host: &dyn AsyncPfHost,
    mode: AsyncPfMode,
    cpus: u32,
) -> Result<Option<u32>, Error> {
    if mode == AsyncPfMode::Off {
        return Ok(None);
    }
    let version = match probe(host) {
        Ok(v) => v,
        Err(why) if mode == AsyncPfMode::Auto => {
            log::info!("asynchronous page faults not available: {why}");
            return Ok(None);
        }
        Err(why) => return Err(Error::Unsupported(why)),
    };
    // The guest may enable the feature as soon as it runs; KVM refuses the
    // enable unless the event and PPI are already set.
    for vcpu in 0..cpus {
        for (what, cmd, value) in [
            ("SET_SDEI", CMD_SET_SDEI, SDEI_EVENT),
            ("SET_IRQ", CMD_SET_IRQ, u64::from(PAGE_READY_PPI)),
        ] {
            host.vcpu_command(vcpu, &mut AsyncPfCmd::new(cmd, value))
                .map_err(|source| Error::Vcpu { what, vcpu, source })?;
        }
    }
    log::info!(
        "asynchronous page faults on: interface {}.{}.{}, SDEI event {SDEI_EVENT:#x}, PPI {PAGE_READY_PPI}",
        version >> 16,
        (version >> 8) & 0xff,
        version & 0xff
    );
    Ok(Some(version))
}

/// One vCPU's async-PF state, as `lkvm debug` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuState {
    pub sdei: u64,
    pub irq: u32,
    pub control: u64,
}

/// Reads every vCPU's state back through the `GET_*` commands.
pub fn report(host: &dyn AsyncPfHost, cpus: u32) -> Result<Vec<VcpuState>, Error> {
    (0..cpus)
        .map(|vcpu| {
            let get = |what, cmd| {
                let mut c = AsyncPfCmd::new(cmd, 0);
                host.vcpu_command(vcpu, &mut c)
                    .map(|_| c.value)
                    .map_err(|source| Error::Vcpu { what, vcpu, source })
            };
            Ok(VcpuState {
                sdei: get("GET_SDEI", CMD_GET_SDEI)?,
                irq: get("GET_IRQ", CMD_GET_IRQ)? as u32,
                control: get("GET_CONTROL", CMD_GET_CONTROL)?,
            })
        })
        .collect()
}

#[cfg(test)]
pub mod fake {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// A host that records every call, in order.
    pub struct FakeHost {
        pub cap: i32,
        pub version: Option<u32>,
        pub fail_vcpu: Option<u32>,
        pub calls: RefCell<Vec<String>>,
        pub state: RefCell<HashMap<(u32, u32), u64>>,
    }

    impl FakeHost {
        pub fn supporting(version: u32) -> Self {
            FakeHost {
                cap: 1,
                version: Some(version),
                fail_vcpu: None,
                calls: RefCell::new(Vec::new()),
                state: RefCell::new(HashMap::new()),
            }
        }

        pub fn upstream() -> Self {
            FakeHost {
                cap: 0,
                version: None,
                ..Self::supporting(0)
            }
        }
    }

    impl AsyncPfHost for FakeHost {
        fn check_vm_extension(&self, cap: u32) -> i32 {
            self.calls
                .borrow_mut()
                .push(format!("check_extension({cap})"));
            if cap == KVM_CAP_ASYNC_PF_INT {
                self.cap
            } else {
                0
            }
        }
        fn vm_command(&self, cmd: &mut AsyncPfCmd) -> io::Result<()> {
            self.calls
                .borrow_mut()
                .push(format!("vm cmd {} {:#x}", cmd.cmd, cmd.value));
            match (cmd.cmd, self.version) {
                (CMD_GET_VERSION, Some(v)) => {
                    cmd.value = u64::from(v);
                    Ok(())
                }
                _ => Err(io::Error::from_raw_os_error(libc::ENOTTY)),
            }
        }
        fn vcpu_command(&self, vcpu: u32, cmd: &mut AsyncPfCmd) -> io::Result<()> {
            self.calls
                .borrow_mut()
                .push(format!("vcpu{vcpu} cmd {} {:#x}", cmd.cmd, cmd.value));
            if self.fail_vcpu == Some(vcpu) {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            let mut state = self.state.borrow_mut();
            match cmd.cmd {
                CMD_SET_SDEI | CMD_SET_IRQ => {
                    state.insert((vcpu, cmd.cmd - 3), cmd.value);
                }
                CMD_GET_SDEI | CMD_GET_IRQ | CMD_GET_CONTROL => {
                    cmd.value = state.get(&(vcpu, cmd.cmd)).copied().unwrap_or(0);
                }
                _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeHost;
    use super::*;

    #[test]
    fn supported_host_gets_sdei_then_irq_on_every_vcpu_in_order() {
        let host = FakeHost::supporting(0x01_0000);
        assert_eq!(
            configure(&host, AsyncPfMode::Auto, 2).unwrap(),
            Some(0x01_0000)
        );
        assert_eq!(
            *host.calls.borrow(),
            vec![
                "check_extension(183)",
                "vm cmd 0 0x0",
                "vcpu0 cmd 4 0x40400001",
                "vcpu0 cmd 5 0x14",
                "vcpu1 cmd 4 0x40400001",
                "vcpu1 cmd 5 0x14",
            ]
        );
        let state = report(&host, 2).unwrap();
        assert_eq!(
            state[1],
            VcpuState {
                sdei: SDEI_EVENT,
                irq: 20,
                control: 0
            }
        );
    }

    #[test]
    fn upstream_host_is_left_alone_in_auto_and_refused_in_on() {
        let host = FakeHost::upstream();
        assert_eq!(configure(&host, AsyncPfMode::Auto, 4).unwrap(), None);
        // only the capability was asked: no async-PF ioctl on a host without it
        assert_eq!(*host.calls.borrow(), vec!["check_extension(183)"]);
        let err = configure(&host, AsyncPfMode::On, 4).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--async-pf on: this host's KVM has no arm64 asynchronous page faults (KVM_CAP_ASYNC_PF_INT is 0)"
        );
    }

    #[test]
    fn off_never_touches_kvm() {
        let host = FakeHost::supporting(0x01_0000);
        assert_eq!(configure(&host, AsyncPfMode::Off, 4).unwrap(), None);
        assert!(host.calls.borrow().is_empty());
    }

    #[test]
    fn capability_without_the_ioctl_or_too_old_an_interface_is_not_enough() {
        let mut host = FakeHost::supporting(0);
        host.version = None; // the capability answers but the ioctl does not exist
        assert!(matches!(
            configure(&host, AsyncPfMode::On, 1),
            Err(Error::Unsupported(why)) if why.contains("GET_VERSION")
        ));
        let old = FakeHost::supporting(0x00_0900);
        assert!(matches!(
            configure(&old, AsyncPfMode::On, 1),
            Err(Error::Unsupported(why)) if why.contains("older than 1.0.0")
        ));
        assert_eq!(configure(&old, AsyncPfMode::Auto, 1).unwrap(), None);
    }

    #[test]
    fn a_vcpu_refusing_the_setup_is_an_error_naming_it() {
        let mut host = FakeHost::supporting(0x01_0000);
        host.fail_vcpu = Some(1);
        let err = configure(&host, AsyncPfMode::Auto, 3).unwrap_err();
        assert_eq!(
            err.to_string(),
            "async PF: SET_SDEI on vCPU 1 failed: Operation not permitted (os error 1)"
        );
    }
}
