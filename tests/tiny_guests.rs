//! Tiny x86 guests on the host's /dev/kvm: console output, input and the
//! ways a VM ends. The guests are assembled from `tests/guests/*.s`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(x86)]

mod common;

use std::time::Duration;

use common::{
    guest, guest_as, kvm_available, lkvm, run, run_with_input, text, Format, Interactive,
};

/// Tiny guests boot with `--nodefaults`: they need no rootfs (and the
/// default one would add 9p devices to their PCI bus).
fn boot(name: &str, extra: &[&str]) -> std::process::Command {
    let mut cmd = lkvm();
    cmd.arg("run")
        .arg("--nodefaults")
        .arg("-k")
        .arg(guest(name))
        .args(["-m", "256"])
        .args(extra);
    if !extra.contains(&"-c") {
        cmd.args(["-c", "1"]);
    }
    cmd
}

#[test]
fn serial_output_reaches_stdout_byte_for_byte_and_poweroff_exits_0() {
    if !kvm_available() {
        return;
    }
    let out = run(&mut boot("hello", &["--loglevel", "error"]));
    let mut expected = b"lkvm test guest: hello\r\n".to_vec();
    expected.extend(1..=255u8);
    assert_eq!(out.stdout, expected, "stderr: {}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stderr.is_empty(), "stderr: {}", text(&out.stderr));
}

#[test]
fn i8042_reset_exits_0() {
    if !kvm_available() {
        return;
    }
    let out = run(&mut boot("reset", &["--loglevel", "debug"]));
    assert_eq!(text(&out.stdout), "lkvm test guest: resetting\r\n");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("VM ending: Reset"));
}

/// kvmtool's flat real-mode layout: raw bytes at 1000:0000, every segment
/// 0x1000, the stack at 1000:8000.
#[test]
fn flat_real_mode_binary_runs_at_1000_0000_and_resets() {
    if !kvm_available() {
        return;
    }
    let mut cmd = lkvm();
    cmd.arg("run")
        .arg("--nodefaults")
        .arg("-k")
        .arg(guest_as("realmode", Format::Flat))
        .args(["-m", "64", "-c", "1", "--loglevel", "debug"]);
    let out = run(&mut cmd);
    assert_eq!(
        text(&out.stdout),
        "lkvm flat guest: real mode, sp=8000\r\n",
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("kernel format flat binary"),
        "{}",
        text(&out.stderr)
    );
}

/// A PVH kernel in an ELF32 container boots like an ELF64 one.
#[test]
fn pvh_elf32_guest_boots() {
    if !kvm_available() {
        return;
    }
    let mut cmd = lkvm();
    cmd.arg("run")
        .arg("--nodefaults")
        .arg("-k")
        .arg(guest_as("reset", Format::Pvh32))
        .args(["-m", "64", "-c", "1", "--loglevel", "debug"]);
    let out = run(&mut cmd);
    assert_eq!(text(&out.stdout), "lkvm test guest: resetting\r\n");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("kernel format ELF32"));
}

#[test]
fn triple_fault_exits_3_with_a_readable_message_and_registers_at_debug() {
    if !kvm_available() {
        return;
    }
    let out = run(&mut boot("triple", &[]));
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(
        err.contains("lkvm: error: vCPU 0: the guest triple-faulted (KVM_EXIT_SHUTDOWN)"),
        "{err}"
    );
    assert!(
        !err.contains("rip "),
        "registers only at debug level: {err}"
    );
    let dbg = run(&mut boot("triple", &["--loglevel", "debug"]));
    assert_eq!(dbg.status.code(), Some(3));
    let err = text(&dbg.stderr);
    assert!(err.contains("vCPU 0 state:"), "{err}");
    // the guest stopped on its ud2, just after writing its message
    assert!(err.contains("rip 0x0000000000100"), "{err}");
    assert!(err.contains("cr0 0x11"), "{err}");
}

#[test]
fn debug_ioport_logs_the_port_accesses_no_device_handles() {
    if !kvm_available() {
        return;
    }
    let out = run(&mut boot(
        "ports",
        &["--debug-ioport", "--loglevel", "error"],
    ));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "lkvm test guest: ports\r\n");
    let err = text(&out.stderr);
    assert!(
        err.contains("ioport: vCPU 0 unhandled out 0x0510 size 1 data 5a"),
        "{err}"
    );
    assert!(
        err.contains("ioport: vCPU 0 unhandled in  0x0511 size 1"),
        "{err}"
    );
    // COM1 and the ACPI power-off are handled: kvmtool logs only the rest.
    assert_eq!(err.matches("ioport:").count(), 2, "{err}");
    let without = run(&mut boot("ports", &["--loglevel", "error"]));
    assert!(!text(&without.stderr).contains("ioport:"));
}

/// A guest can make lkvm log as often as it likes; each log statement
/// writes at most a burst per second and counts the rest.
#[test]
fn log_output_a_guest_causes_is_rate_limited() {
    if !kvm_available() {
        return;
    }
    let start = std::time::Instant::now();
    let out = run(&mut boot(
        "flood",
        &["--debug-ioport", "--loglevel", "error"],
    ));
    let secs = start.elapsed().as_secs() + 1;
    assert_eq!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    // Unlimited, this is 100000 lines.
    let lines = err.matches("unhandled out 0x0510").count() as u64;
    assert!(
        lines >= 1 && lines <= 20 * secs,
        "{lines} lines in {secs} s"
    );
}

#[test]
fn console_input_reaches_the_guest() {
    if !kvm_available() {
        return;
    }
    let out = run_with_input(
        &mut boot("echo", &["--loglevel", "error"]),
        b"Hello, lkvm! q",
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "lkvm test guest: echo\r\nHELLO, LKVM! \r\nbye\r\n"
    );
}

#[test]
fn ctrl_a_x_quits_and_ctrl_a_ctrl_a_sends_one_ctrl_a() {
    if !kvm_available() {
        return;
    }
    let mut vm = Interactive::spawn(&mut boot("echo", &[]));
    vm.wait_for(b"echo\r\n", Duration::from_secs(10));
    vm.send(b"ab\x01\x01c");
    vm.wait_for(b"AB\x01C", Duration::from_secs(10));
    vm.send(b"\x01x");
    let (status, out, err) = vm.finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(text(&out), "lkvm test guest: echo\r\nAB\x01C");
    assert!(err.contains("escape sequence typed"), "{err}");
}

#[test]
fn idle_secondary_vcpus_never_hang_the_exit() {
    if !kvm_available() {
        return;
    }
    // The guest never starts its APs; they sit in KVM_RUN until lkvm kicks
    // them. The C kvmtool hangs here in a fifth of runs.
    for _ in 0..10 {
        let out = run_with_input(
            &mut boot("hello", &["-c", "4", "--loglevel", "error"]),
            b"",
            Duration::from_secs(10),
        );
        assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    }
}

#[test]
fn sigterm_stops_the_guest_with_143() {
    if !kvm_available() {
        return;
    }
    let mut child = boot("echo", &[])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "lkvm ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143));
    assert!(text(&out.stderr).contains("received signal 15"));
}

#[test]
fn mmio_accesses_exit_to_lkvm_and_debug_mmio_logs_them() {
    if !kvm_available() {
        return;
    }
    let out = run(&mut boot("mmio", &["--debug-mmio", "--loglevel", "error"]));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    // nothing is mapped there: the write is dropped and the read is zero
    assert_eq!(text(&out.stdout), "lkvm test guest: mmio read 0\r\n");
    let err = text(&out.stderr);
    assert!(
        err.contains("mmio: vCPU 0 unhandled write 0xd0000000 size 4 data 44332211"),
        "{err}"
    );
    assert!(
        err.contains("mmio: vCPU 0 unhandled read  0xd0000000 size 4"),
        "{err}"
    );
}

/// Mounts a private hugetlbfs with enough huge pages for a 64 MiB guest and
/// boots the tiny guest on it. Needs root (CI runs as root); elsewhere it
/// fails unless LKVM_SKIP_KVM_TESTS=1 outside CI.
#[test]
fn hugetlbfs_backed_guest_ram_boots() {
    if !kvm_available() {
        return;
    }
    let is_root =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    if !is_root {
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
        if !in_ci && std::env::var("LKVM_SKIP_KVM_TESTS").is_ok_and(|v| v == "1") {
            eprintln!("SKIPPED: mounting hugetlbfs needs root");
            return;
        }
        panic!("this test mounts hugetlbfs and needs root");
    }
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("hugetlbfs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let nr = std::path::Path::new("/proc/sys/vm/nr_hugepages");
    let before: u64 = std::fs::read_to_string(nr).unwrap().trim().parse().unwrap();
    // 64 MiB of 2 MiB pages, plus what is already reserved for others
    std::fs::write(nr, format!("{}", before + 32)).unwrap();
    let mount = std::process::Command::new("mount")
        .args(["-t", "hugetlbfs", "-o", "pagesize=2M", "none"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(mount.success(), "mount hugetlbfs");
    let out = run(lkvm()
        .arg("run")
        .arg("--nodefaults")
        .arg("-k")
        .arg(guest("hello"))
        .args(["-m", "64", "-c", "1", "--loglevel", "error", "--hugetlbfs"])
        .arg(&dir));
    let misaligned = run(lkvm()
        .arg("run")
        .arg("--nodefaults")
        .arg("-k")
        .arg(guest("hello"))
        .args(["-m", "3M", "-c", "1", "--hugetlbfs"])
        .arg(&dir));
    let _ = std::process::Command::new("umount").arg(&dir).status();
    let _ = std::fs::write(nr, format!("{before}"));
    let _ = std::fs::remove_dir(&dir);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("lkvm test guest: hello\r\n"));
    assert_eq!(misaligned.status.code(), Some(1));
    assert!(
        text(&misaligned.stderr).contains("is not a multiple of the 0x200000-byte huge page size")
    );
}

/// `lkvm run` raises its soft descriptor limit to the hard one, so the
/// quarter of it a guest may fill (9p files, network flows) is taken from
/// the larger limit (`src/fdlimit.rs`).
#[test]
fn run_raises_the_soft_descriptor_limit_to_the_hard_one() {
    if !kvm_available() {
        return;
    }
    let inner = boot("counter", &[]);
    // Start it from a shell with the soft limit lowered, as a login
    // session's 1024 would be.
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "ulimit -S -n 64 && exec \"$0\" \"$@\""])
        .arg(inner.get_program())
        .args(inner.get_args());
    let mut vm = Interactive::spawn(&mut cmd);
    vm.wait_for(b"counter", Duration::from_secs(10));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", vm.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no open-files line in {limits}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields.len(), 6, "{line}");
    assert_ne!(fields[3], "64", "{line}");
    assert_eq!(fields[3], fields[4], "soft limit not raised: {line}");
}

/// Every thread of a running guest is filtered (seccomp mode 2), and a
/// device path that steps outside its thread's list ends lkvm with one line
/// naming the thread and the call; with `--seccomp log` the call is allowed.
#[test]
fn seccomp_filters_every_thread_and_names_a_call_outside_its_list() {
    if !kvm_available() {
        return;
    }
    let mut vm = Interactive::spawn(&mut boot("counter", &["-c", "2"]));
    vm.wait_for(b"counter", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(200));
    let tasks = format!("/proc/{}/task", vm.pid());
    let mut modes = Vec::new();
    for t in std::fs::read_dir(&tasks).unwrap().flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let mode = status
            .lines()
            .find(|l| l.starts_with("Seccomp:"))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string());
        modes.push((comm.trim().to_string(), mode));
    }
    let names: Vec<&str> = modes.iter().map(|(c, _)| c.as_str()).collect();
    for want in ["lkvm", "vcpu0", "vcpu1", "control", "spawner"] {
        assert!(names.contains(&want), "{want} missing from {modes:?}");
    }
    assert!(
        modes.iter().all(|(_, m)| m.as_deref() == Some("2")),
        "{modes:?}"
    );
    drop(vm);

    // A driver setting DRIVER_OK starts the device on the vCPU thread
    // that wrote the status: the device's thread is created through an
    // epoll instance made there. Take epoll_create1 from the vCPU list.
    let started = run(&mut boot("virtio-activate", &["--rng"]));
    assert_eq!(started.status.code(), Some(0), "{}", text(&started.stderr));
    assert!(text(&started.stdout).contains("virtio device started"));
    let deny = ("LKVM_SECCOMP_DENY", "vcpu:epoll_create1");
    let out = run(boot("virtio-activate", &["--rng"]).env(deny.0, deny.1));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let line = format!(
        "lkvm: error: seccomp: thread vcpu0 made system call {} (epoll_create1), which its allow-list does not have",
        libc::SYS_epoll_create1
    );
    assert!(err.contains(&line), "{err}");
    assert_eq!(err.matches("lkvm: error:").count(), 1, "{err}");
    let logged = run(boot("virtio-activate", &["--rng", "--seccomp", "log"]).env(deny.0, deny.1));
    assert_eq!(logged.status.code(), Some(0), "{}", text(&logged.stderr));
    assert!(text(&logged.stdout).contains("virtio device started"));
    let off = run(boot("virtio-activate", &["--rng", "--seccomp", "off"]).env(deny.0, deny.1));
    assert_eq!(off.status.code(), Some(0));
}
