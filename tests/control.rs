//! The control plane against tiny guests on the host's /dev/kvm: list,
//! stop, pause/resume, debug, balloon and stat through ~/.lkvm/NAME.sock,
//! stale sockets, duplicate names, and a client that sends garbage.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(x86)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{guest, kvm_available, lkvm, run, text, Interactive};

/// A private HOME, so tests never see each other's guests.
fn home(test: &str) -> PathBuf {
    let h = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("control-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&h);
    std::fs::create_dir_all(&h).unwrap();
    h
}

fn cmd(home: &Path, args: &[&str]) -> Command {
    let mut c = lkvm();
    c.env("HOME", home).args(args);
    c
}

fn start(home: &Path, name: &str, guest_name: &str, extra: &[&str]) -> Interactive {
    let g = guest(guest_name);
    let mut c = cmd(
        home,
        &[
            "run",
            "--nodefaults",
            "-k",
            g.to_str().unwrap(),
            "--name",
            name,
            "-m",
            "64",
            "-c",
            "1",
        ],
    );
    c.args(extra);
    let mut vm = Interactive::spawn(&mut c);
    vm.wait_for(b"lkvm test guest", Duration::from_secs(20));
    wait_listed(home, name);
    vm
}

fn wait_listed(home: &Path, name: &str) {
    let start = Instant::now();
    while !home.join(".lkvm").join(format!("{name}.sock")).exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no socket for {name}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs an lkvm client command: (exit code, stdout, stderr).
fn client(home: &Path, args: &[&str]) -> (i32, String, String) {
    let out = run(&mut cmd(home, args));
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

fn dots(vm: &Interactive) -> usize {
    vm.output().iter().filter(|b| **b == b'.').count()
}

#[test]
fn list_shows_the_guest_and_stop_ends_it_with_status_0() {
    if !kvm_available() {
        return;
    }
    let h = home("list");
    let vm = start(&h, "ctl-list", "counter", &[]);
    let (code, out, err) = client(&h, &["list"]);
    assert_eq!(code, 0, "{err}");
    let row = out
        .lines()
        .find(|l| l.contains("ctl-list"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("running"), "{row}");
    assert!(row.contains(&vm.pid().to_string()), "{row}");
    let (code, json, _) = client(&h, &["list", "--run", "--json"]);
    assert_eq!(code, 0);
    assert!(
        json.contains("\"name\": \"ctl-list\"") && json.contains("\"state\": \"running\""),
        "{json}"
    );
    let mode = std::fs::metadata(h.join(".lkvm/ctl-list.sock")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(h.join(".lkvm"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let (code, _, err) = client(&h, &["stop", "-n", "ctl-list"]);
    assert_eq!(code, 0, "{err}");
    let (status, _, _) = vm.finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert!(!h.join(".lkvm/ctl-list.sock").exists(), "socket removed");
    let (_, out, _) = client(&h, &["list", "-i"]);
    assert!(!out.contains("ctl-list"));
}

#[test]
fn pause_stops_the_guest_and_resume_continues_it() {
    if !kvm_available() {
        return;
    }
    let h = home("pause");
    let vm = start(&h, "ctl-pause", "counter", &[]);
    let t = Instant::now();
    while dots(&vm) < 5 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "guest prints no dots"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (code, out, err) = client(&h, &["pause", "-n", "ctl-pause"]);
    assert_eq!((code, out.trim()), (0, "Guest ctl-pause paused"), "{err}");
    std::thread::sleep(Duration::from_millis(100));
    let paused_at = dots(&vm);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(dots(&vm), paused_at, "output went on while paused");
    let (_, out, _) = client(&h, &["list"]);
    assert!(
        out.lines()
            .any(|l| l.contains("ctl-pause") && l.contains("paused")),
        "{out}"
    );
    let (code, out, _) = client(&h, &["resume", "-n", "ctl-pause"]);
    assert_eq!((code, out.trim()), (0, "Guest ctl-pause resumed"));
    let t = Instant::now();
    while dots(&vm) <= paused_at + 3 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "output did not continue"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (code, _, err) = client(&h, &["resume", "-n", "ctl-pause"]);
    assert_eq!(code, 1);
    assert!(err.contains("not paused"), "{err}");
    client(&h, &["stop", "-a"]);
    assert_eq!(vm.finish(Duration::from_secs(10)).0.code(), Some(0));
}

#[test]
fn stale_sockets_are_cleaned_and_live_names_refused() {
    if !kvm_available() {
        return;
    }
    let h = home("stale");
    let dir = h.join(".lkvm");
    std::fs::create_dir_all(&dir).unwrap();
    // What a killed lkvm leaves: a socket file nobody listens on.
    drop(UnixListener::bind(dir.join("ctl-stale.sock")).unwrap());
    drop(UnixListener::bind(dir.join("ghost.sock")).unwrap());
    let vm = start(&h, "ctl-stale", "counter", &[]);
    let (code, _, err) = client(&h, &["list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !dir.join("ghost.sock").exists(),
        "list removes stale sockets"
    );
    let g = guest("hello");
    let (code, _, err) = client(
        &h,
        &[
            "run",
            "--nodefaults",
            "-k",
            g.to_str().unwrap(),
            "--name",
            "ctl-stale",
            "--loglevel",
            "error",
        ],
    );
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        "lkvm: error: a guest named 'ctl-stale' is already running; pick another --name"
    );
    let (code, _, err) = client(&h, &["stop", "-n", "nobody"]);
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        "lkvm: error: no guest named 'nobody' is running"
    );
    client(&h, &["stop", "-n", "ctl-stale"]);
    assert_eq!(vm.finish(Duration::from_secs(10)).0.code(), Some(0));
}

#[test]
fn a_client_sending_garbage_gets_an_error_and_the_guest_runs_on() {
    if !kvm_available() {
        return;
    }
    let h = home("garbage");
    let vm = start(&h, "ctl-garbage", "counter", &[]);
    for junk in [
        &b"\x00\xff\xfe\n"[..],
        b"reboot now\n",
        &[b'z'; 5000][..],
        b"",
    ] {
        let mut s = UnixStream::connect(h.join(".lkvm/ctl-garbage.sock")).unwrap();
        let _ = s.write_all(junk);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.starts_with("error "), "{junk:?} got {answer:?}");
    }
    let before = dots(&vm);
    std::thread::sleep(Duration::from_millis(300));
    assert!(dots(&vm) > before, "the guest stopped running");
    let (code, out, _) = client(&h, &["list", "-i"]);
    assert_eq!(code, 0);
    assert!(out.contains("ctl-garbage"));
    client(&h, &["stop", "-n", "ctl-garbage"]);
    assert_eq!(vm.finish(Duration::from_secs(10)).0.code(), Some(0));
}

#[test]
fn debug_dumps_registers_sends_nmis_and_sysrq() {
    if !kvm_available() {
        return;
    }
    let h = home("debug");
    let mut vm = start(&h, "ctl-debug", "echo", &[]);
    let (code, out, err) = client(&h, &["debug", "-n", "ctl-debug", "--dump"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("vCPU 0:") && out.contains("rip 0x"), "{out}");
    assert!(
        out.contains("memory map:") && out.contains("slot 0: guest 0x0-"),
        "{out}"
    );
    // On the 8250, SysRq is a break (read as a zero byte) and the key; the
    // echo guest upper-cases what it reads.
    let (code, _, err) = client(&h, &["debug", "-n", "ctl-debug", "-s", "h"]);
    assert_eq!(code, 0, "{err}");
    vm.wait_for(b"\x00H", Duration::from_secs(10));
    let (code, _, err) = client(&h, &["debug", "-n", "ctl-debug", "-m", "7"]);
    assert_eq!(code, 1);
    assert!(err.contains("has no vCPU 7"), "{err}");
    // The tiny guest has no IDT: an NMI that reaches it triple-faults it,
    // which lkvm reports as a guest crash (status 3).
    let (code, out, err) = client(&h, &["debug", "-n", "ctl-debug", "-m", "0"]);
    assert_eq!(
        (code, out.trim()),
        (0, "Guest ctl-debug: NMI sent to vCPU 0"),
        "{err}"
    );
    let (status, _, err) = vm.finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(3), "{err}");
}

#[test]
fn balloon_and_memory_stats() {
    if !kvm_available() {
        return;
    }
    let h = home("balloon");
    let vm = start(&h, "ctl-nob", "counter", &[]);
    let (code, _, err) = client(&h, &["stat", "-n", "ctl-nob", "-m"]);
    assert_eq!(code, 1);
    assert!(err.contains("no balloon device"), "{err}");
    let (code, out, _) = client(&h, &["stat", "-n", "ctl-nob", "--json"]);
    assert_eq!(code, 0);
    assert!(out.contains("\"mem_mib\": 64"), "{out}");
    client(&h, &["stop", "-n", "ctl-nob"]);
    assert_eq!(vm.finish(Duration::from_secs(10)).0.code(), Some(0));

    let vm = start(&h, "ctl-bal", "counter", &["--balloon"]);
    let (code, out, err) = client(&h, &["balloon", "-n", "ctl-bal", "-i", "16"]);
    assert_eq!(
        (code, out.trim()),
        (0, "Guest ctl-bal: balloon target 16 MiB"),
        "{err}"
    );
    let (_, out, _) = client(&h, &["balloon", "-n", "ctl-bal", "-d", "4"]);
    assert_eq!(out.trim(), "Guest ctl-bal: balloon target 12 MiB");
    let (code, out, err) = client(&h, &["stat", "-n", "ctl-bal", "-m"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("balloon target mib") && out.contains("12"),
        "{out}"
    );
    client(&h, &["stop", "-n", "ctl-bal"]);
    assert_eq!(vm.finish(Duration::from_secs(10)).0.code(), Some(0));
}

#[test]
fn setup_makes_a_rootfs_once() {
    let h = home("setup");
    let (code, out, err) = client(&h, &["setup", "box1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("lkvm run -k KERNEL -d box1"), "{out}");
    let root = h.join(".lkvm/box1");
    for f in [
        "bin/busybox",
        "bin/sh",
        "virt/init",
        "etc/hostname",
        ".lkvm-rootfs",
    ] {
        assert!(root.join(f).symlink_metadata().is_ok(), "{f} missing");
    }
    let (code, _, err) = client(&h, &["setup", "box1"]);
    assert_eq!(code, 1);
    assert!(err.contains("rootfs 'box1' already exists"), "{err}");
    let (code, _, err) = client(&h, &["setup", "../escape"]);
    assert_eq!(code, 1);
    assert!(err.contains("not a valid rootfs name"), "{err}");
    let (_, out, _) = client(&h, &["list", "-r"]);
    assert!(
        out.lines()
            .any(|l| l.contains("box1") && l.contains("shut off")),
        "{out}"
    );
}

/// `lkvm run -k K` with no disk and no initrd: kvmtool's default rootfs,
/// made on first use (by two guests at once without a clash), shared as the
/// guest's 9p root with the host's / beside it (read-only unless
/// --hostfs-rw), and the kernel told where its root is.
#[test]
fn run_without_disk_or_initrd_boots_the_default_rootfs() {
    if !kvm_available() {
        return;
    }
    let h = home("default-rootfs");
    let g = guest("hello");
    let spawn = |extra: &[&str]| {
        let mut args = vec!["run", "-k", g.to_str().unwrap(), "-m", "64", "-c", "1"];
        args.extend(extra);
        args.extend(["--loglevel", "debug"]);
        cmd(&h, &args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(&[]), spawn(&["--hostfs-rw"]));
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(
            err.contains("root=/dev/root rootfstype=9p rootflags=trans=virtio,version=9p2000.L rw init=/virt/init"),
            "{err}"
        );
    }
    let root = h.join(".lkvm/default");
    for f in ["virt/init", "bin/busybox", ".lkvm-rootfs", "host"] {
        assert!(root.join(f).exists(), "{f} missing");
    }
    assert_eq!(
        std::fs::read_link(root.join("lib")).unwrap(),
        PathBuf::from("/host/lib")
    );
    let leftovers: Vec<_> = std::fs::read_dir(h.join(".lkvm"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // --nodefaults: no rootfs, no root parameters.
    let out = run(&mut cmd(
        &h,
        &[
            "run",
            "--nodefaults",
            "-k",
            g.to_str().unwrap(),
            "-m",
            "64",
            "--loglevel",
            "debug",
        ],
    ));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("kernel command line:"))
        .unwrap_or_else(|| panic!("no command line logged: {err}"));
    assert!(line.trim_end().ends_with("kernel command line:"), "{line}");
}

#[test]
fn stat_shows_each_network_cards_counters() {
    if !kvm_available() {
        return;
    }
    let h = home("netstat");
    // Two user-mode cards (each with its own stack and thread, under its
    // seccomp list); the tiny guest never drives them, so counters are 0.
    let vm = start(
        &h,
        "ctl-net",
        "counter",
        &[
            "-n",
            "mode=user",
            "-n",
            "mode=user,guest_ip=10.9.8.7,host_ip=10.9.8.1",
        ],
    );
    let (code, out, err) = client(&h, &["stat", "-n", "ctl-net"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Network card 0 (user, 02:15:15:15:15:15):"),
        "{out}"
    );
    assert!(
        out.contains("Network card 1 (user, 02:15:15:15:15:16):"),
        "{out}"
    );
    assert!(out.contains("  frames from guest    0"), "{out}");
    assert!(out.contains("  drop bad checksum    0"), "{out}");
    let (code, out, _) = client(&h, &["stat", "-n", "ctl-net", "--json"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("\"net\": [{\"mode\": \"user\", \"mac\": \"02:15:15:15:15:15\", \"frames_from_guest\": 0"),
        "{out}"
    );
    assert!(out.contains("\"tcp_flows\": 0"), "{out}");
    client(&h, &["stop", "-n", "ctl-net"]);
    assert_eq!(vm.finish(Duration::from_secs(10)).0.code(), Some(0));
}
