//! A running VM as the control socket sees it: what `lkvm stop/pause/
//! resume/stat/balloon/debug` do to it.

use std::fmt::Write as _;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::control::{GuestExit, VmControl};
use crate::ipc::server::GuestOps;
use crate::kvm::Vcpu;
use crate::term::ConsoleSink;
use crate::virtio::balloon::{tags, BalloonControl};
use crate::virtio::net::spec::format_mac;
use crate::virtio::net::NetCard;

/// How long a vCPU may take to answer a request (it answers between two
/// `KVM_RUN`s, or when a paused vCPU wakes for queued work).
const VCPU_ANSWER: Duration = Duration::from_secs(2);

pub type VcpuFn<T> = Arc<dyn Fn(&Vcpu) -> T + Send + Sync>;

pub struct VmHandle {
    pub name: String,
    pub cpus: u32,
    pub ram_mib: u64,
    pub ctl: Arc<VmControl>,
    pub dump: VcpuFn<String>,
    pub nmi: VcpuFn<Result<(), String>>,
    /// The memory map, as `lkvm debug --dump` prints it.
    pub memory_map: String,
    pub balloon: Option<BalloonControl>,
    pub console: Arc<dyn ConsoleSink>,
    /// The network cards, for `lkvm stat`.
    pub nets: Vec<NetCard>,
}

/// The cards' counters as the control socket sends them: `netN.mode`,
/// `netN.mac`, then `netN.COUNTER` for each counter.
pub fn net_fields(cards: &[NetCard]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, c) in cards.iter().enumerate() {
        out.push((format!("net{i}.mode"), c.mode.to_string()));
        out.push((format!("net{i}.mac"), format_mac(&c.mac)));
        for (name, v) in c.stats.fields(c.mode) {
            out.push((format!("net{i}.{name}"), v.to_string()));
        }
    }
    out
}

/// The balloon's statistic names, as `lkvm stat -m` prints them.
pub fn stat_name(tag: u16) -> String {
    match tag {
        tags::SWAP_IN => "swap_in".into(),
        tags::SWAP_OUT => "swap_out".into(),
        tags::MAJOR_FAULTS => "major_faults".into(),
        tags::MINOR_FAULTS => "minor_faults".into(),
        tags::FREE_MEMORY => "free_memory".into(),
        tags::TOTAL_MEMORY => "total_memory".into(),
        tags::AVAILABLE_MEMORY => "available_memory".into(),
        tags::DISK_CACHES => "disk_caches".into(),
        other => format!("tag_{other}"),
    }
}

/// Where a thread of this process is, as the kernel sees it: its state,
/// the system call it is in, the kernel function it sleeps in and, where
/// readable (root), its kernel stack. Tells a vCPU stuck in `KVM_RUN` from
/// one stuck in the VMM.
fn thread_state(tid: libc::pid_t) -> String {
    let dir = format!("/proc/self/task/{tid}");
    let read = |name: &str| std::fs::read_to_string(format!("{dir}/{name}")).ok();
    let mut out = format!("  thread {tid}:\n");
    // The state letter follows the parenthesised command name.
    let state = read("stat")
        .and_then(|s| {
            s.rsplit_once(") ")
                .map(|(_, rest)| rest.chars().take(1).collect())
        })
        .unwrap_or_else(|| "?".to_string());
    let _ = writeln!(out, "    state: {state}");
    for name in ["syscall", "wchan"] {
        if let Some(v) = read(name) {
            let _ = writeln!(out, "    {name}: {}", v.trim());
        }
    }
    if let Some(stack) = read("stack") {
        let _ = writeln!(out, "    kernel stack:");
        for line in stack.lines() {
            let _ = writeln!(out, "      {line}");
        }
    }
    out
}

impl VmHandle {
    fn balloon(&self) -> Result<&BalloonControl, String> {
        self.balloon
            .as_ref()
            .ok_or_else(|| "the guest has no balloon device (start it with --balloon)".to_string())
    }

    /// Runs `f` on vCPU `id`'s thread and waits for its answer.
    fn on_vcpu<T: Send + 'static>(&self, id: u32, f: VcpuFn<T>) -> Option<T> {
        let (tx, rx) = mpsc::channel();
        self.ctl.run_on_vcpu(
            id,
            Box::new(move |v| {
                let _ = tx.send(f(v));
            }),
        );
        rx.recv_timeout(VCPU_ANSWER).ok()
    }
}

impl GuestOps for VmHandle {
    fn info(&self) -> Vec<(&'static str, String)> {
        let state = if self.ctl.is_paused() {
            "paused"
        } else {
            "running"
        };
        vec![
            ("name", self.name.clone()),
            ("pid", std::process::id().to_string()),
            ("state", state.into()),
            ("cpus", self.cpus.to_string()),
            ("mem_mib", self.ram_mib.to_string()),
        ]
    }

    fn stop(&self) {
        log::info!("stopped by 'lkvm stop'");
        self.ctl.request_exit(GuestExit::Stopped);
    }

    fn pause(&self) -> Result<usize, String> {
        let parked = self.ctl.pause(VCPU_ANSWER);
        log::info!("paused ({parked} vCPUs parked)");
        Ok(parked)
    }

    fn resume(&self) -> Result<(), String> {
        if !self.ctl.is_paused() {
            return Err("the guest is not paused".into());
        }
        self.ctl.resume();
        log::info!("resumed");
        Ok(())
    }

    fn memory_stats(&self) -> Result<Vec<(String, u64)>, String> {
        let b = self.balloon()?;
        // A guest that does not answer still has its last report.
        let stats = b.refresh_stats(VCPU_ANSWER).unwrap_or_else(|| b.stats());
        let mut out: Vec<(String, u64)> = stats
            .into_iter()
            .map(|(tag, value)| (stat_name(tag), value))
            .collect();
        out.push(("balloon_target_mib".into(), b.target_mib()));
        out.push(("balloon_actual_mib".into(), b.actual_mib()));
        Ok(out)
    }

    fn net_stats(&self) -> Vec<(String, String)> {
        net_fields(&self.nets)
    }

    fn inflate(&self, mib: u64) -> Result<u64, String> {
        self.balloon()?.inflate_mib(mib).map_err(|e| e.to_string())
    }

    fn deflate(&self, mib: u64) -> Result<u64, String> {
        self.balloon()?.deflate_mib(mib).map_err(|e| e.to_string())
    }

    fn dump(&self) -> String {
        let mut out = String::new();
        let mut ids = self.ctl.vcpu_ids();
        ids.sort_unstable();
        for id in ids {
            match self.on_vcpu(id, self.dump.clone()) {
                Some(regs) => {
                    let _ = writeln!(out, "vCPU {id}:\n{regs}");
                }
                None => {
                    let _ = writeln!(out, "vCPU {id}: not answering (held outside KVM_RUN)");
                    if let Some(tid) = self.ctl.vcpu_tid(id) {
                        out.push_str(&thread_state(tid));
                    }
                }
            }
        }
        let _ = write!(out, "memory map:\n{}", self.memory_map);
        out
    }

    fn nmi(&self, cpu: u32) -> Result<(), String> {
        if !self.ctl.vcpu_ids().contains(&cpu) {
            return Err(format!("the guest has no vCPU {cpu}"));
        }
        self.on_vcpu(cpu, self.nmi.clone())
            .unwrap_or_else(|| Err(format!("vCPU {cpu} is not answering")))
    }

    fn sysrq(&self, key: u8) -> Result<(), String> {
        if self.console.sysrq(key) {
            Ok(())
        } else {
            Err("this console cannot carry SysRq".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_state_shows_a_blocked_thread_asleep_in_a_syscall() {
        let (tid_tx, tid_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let _ = tid_tx.send(nix::unistd::gettid().as_raw());
            let _ = go_rx.recv();
        });
        let tid = tid_rx.recv().expect("the thread reports its id");
        // Until the thread is asleep in recv, its state is R.
        let mut s = String::new();
        for _ in 0..500 {
            s = thread_state(tid);
            if s.contains("    state: S\n") {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = go_tx.send(());
        let _ = t.join();
        assert!(
            s.starts_with(&format!("  thread {tid}:\n    state: S\n")),
            "{s}"
        );
        assert!(s.contains("    syscall: "), "{s}");
        assert!(!s.contains("    syscall: running"), "{s}");
        assert!(s.contains("    wchan: "), "{s}");
    }

    #[test]
    fn net_fields_name_each_card() {
        use crate::virtio::net::{Counter, NetStats};
        let stats = Arc::new(NetStats::default());
        stats.add(Counter::FramesFromGuest, 7);
        let cards = [
            NetCard {
                mode: "user",
                mac: [2, 0x15, 0x15, 0x15, 0x15, 0x15],
                stats,
            },
            NetCard {
                mode: "tap",
                mac: [2, 0x15, 0x15, 0x15, 0x15, 0x16],
                stats: Arc::new(NetStats::default()),
            },
        ];
        let f = net_fields(&cards);
        assert_eq!(f[0], ("net0.mode".into(), "user".into()));
        assert_eq!(f[1], ("net0.mac".into(), "02:15:15:15:15:15".into()));
        assert!(f.contains(&("net0.frames_from_guest".into(), "7".into())));
        assert!(f.contains(&("net0.drop_fragment".into(), "0".into())));
        assert!(f.contains(&("net1.mode".into(), "tap".into())));
        assert!(!f.iter().any(|(k, _)| k == "net1.tcp_flows"));
    }

    #[test]
    fn thread_state_of_a_missing_thread_says_so() {
        let s = thread_state(-1);
        assert_eq!(s, "  thread -1:\n    state: ?\n");
    }
}
