//! Bad input from the user: every case gets exactly one `lkvm: error:` line
//! on stderr naming the problem, nothing on stdout, and a non-zero exit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(x86)]

mod common;

use std::fs;
use std::path::PathBuf;

use common::{guest, kvm_available, lkvm, run, text};

struct Case {
    name: &'static str,
    args: Vec<String>,
    code: i32,
    message: String,
}

fn scratch() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bad-input-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn case(name: &'static str, args: &[&str], code: i32, message: impl Into<String>) -> Case {
    Case {
        name,
        args: args.iter().map(|s| s.to_string()).collect(),
        code,
        message: message.into(),
    }
}

#[test]
fn each_bad_input_gets_one_clear_line_and_a_nonzero_exit() {
    if !kvm_available() {
        return;
    }
    let dir = scratch();
    let good = guest("hello");
    let good = good.to_str().unwrap();
    let empty = dir.join("empty");
    fs::write(&empty, b"").unwrap();
    let random = dir.join("random");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let bytes: Vec<u8> = (0..65536)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    fs::write(&random, bytes).unwrap();
    let big_initrd = dir.join("big-initrd");
    fs::File::create(&big_initrd)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let no_pvh = dir.join("no-pvh.elf");
    let mut elf = fs::read(good).unwrap();
    // turn the PT_NOTE program header into PT_NULL: an ELF without PVH entry
    let phoff = u64::from_le_bytes(elf[32..40].try_into().unwrap()) as usize;
    elf[phoff + 56..phoff + 60].copy_from_slice(&0u32.to_le_bytes());
    fs::write(&no_pvh, elf).unwrap();
    let p = |p: &PathBuf| p.to_str().unwrap().to_string();
    let qcow2 = dir.join("disk.qcow2");
    let mut header = b"QFI\xfb\0\0\0\x02".to_vec();
    header.resize(65536, 0);
    fs::write(&qcow2, header).unwrap();
    let gzip = dir.join("vmlinuz.gz");
    fs::write(&gzip, b"\x1f\x8b\x08\0\0\0\0\0\0\x03").unwrap();
    let disk = dir.join("disk.img");
    fs::write(&disk, [0u8; 4096]).unwrap();
    let big_flat = dir.join("big.flat");
    fs::write(&big_flat, vec![0xf4u8; 600 << 10]).unwrap();
    // kvmtool's search may find this host's own kernel under /boot.
    let release = nix_release();
    let host_kernel = ["vmlinuz", "vmlinux", "bzImage"]
        .iter()
        .any(|s| std::path::Path::new(&format!("/boot/{s}-{release}")).is_file());

    let cases = vec![
        case(
            "missing kernel file",
            &["-k", "/nonexistent/bzImage"],
            1,
            "kernel /nonexistent/bzImage: No such file or directory",
        ),
        case(
            "empty kernel",
            &["-k", &p(&empty)],
            1,
            format!("kernel {} is empty", p(&empty)),
        ),
        case(
            "directory as kernel",
            &["-k", &p(&dir)],
            1,
            format!("kernel {} is a directory", p(&dir)),
        ),
        // Random bytes are a flat real-mode binary (kvmtool's rule), which
        // takes no initrd.
        case(
            "flat binary with an initrd",
            &["-k", &p(&random), "-i", good],
            1,
            "--initrd cannot be used with a flat binary kernel",
        ),
        case(
            "flat binary too big for real mode",
            &["-k", &p(&big_flat)],
            1,
            "flat binary of 614400 bytes does not fit between 0x10000 and the EBDA at 0x9fc00",
        ),
        case(
            "gzip-compressed kernel",
            &["-k", &p(&gzip)],
            1,
            "kernel image is a gzip-compressed file; boot the uncompressed kernel image",
        ),
        case(
            "empty kernel given as the first argument",
            &[&p(&empty)],
            1,
            format!("kernel {} is empty", p(&empty)),
        ),
        case(
            "empty initrd",
            &["-k", good, "-i", &p(&empty)],
            1,
            format!("initrd {} is empty", p(&empty)),
        ),
        case(
            "two kernels",
            &["-k", good, good],
            2,
            format!("two kernels given: -k {good} and {good}"),
        ),
        case(
            "a qcow2 disk",
            &["-k", good, "-d", &p(&qcow2)],
            1,
            format!("disk image {} is a QCOW2 image; QCOW images are not supported yet", p(&qcow2)),
        ),
        case(
            "-m SIZE@ADDR on x86",
            &["-k", good, "-m", "1G@0x1000"],
            1,
            "-m 1G@0x1000: a RAM address (@ADDR) is only available on arm64",
        ),
        case(
            "a hostfwd rule without a guest port",
            &["-k", good, "-n", "mode=user,hostfwd=tcp::2222"],
            1,
            "--network: hostfwd \"tcp::2222\" is not tcp:[ADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT: no '-'",
        ),
        case(
            "a macvtap device as tapif",
            &["-k", good, "-n", "mode=tap,tapif=/dev/tap9"],
            1,
            "--network: tapif=/dev/tap9 (a macvtap device node) is not supported yet",
        ),
        case(
            "a SCSI disk",
            &["-k", good, "-d", "scsi:x"],
            1,
            "--disk 'scsi:x': SCSI disks (scsi:WWPN:TPGT, vhost-scsi) are not supported yet",
        ),
        case(
            "kvmtool's arm64 CNTFRQ override, with its value",
            &["-k", good, "--override-bad-firmware-cntfrq", "100000000"],
            1,
            "option --override-bad-firmware-cntfrq is not supported yet",
        ),
        case(
            "a command line longer than the kernel takes",
            &["-k", good, "-d", &p(&disk), "-p", &"x".repeat(2100)],
            1,
            "x86_64 kernels take at most 2047",
        ),
        case(
            "--hostfs-rw without the default rootfs",
            &["-k", good, "-d", &p(&disk), "--hostfs-rw"],
            1,
            "--hostfs-rw: the host's / is only shared with the default rootfs",
        ),
        case(
            "ELF without PVH entry",
            &["-k", &p(&no_pvh)],
            1,
            "ELF kernel has no PVH entry point",
        ),
        case(
            "initrd larger than RAM",
            &["-k", good, "-m", "4", "-i", &p(&big_initrd)],
            1,
            format!(
                "initrd {} (8388608 bytes) is larger than guest RAM (4194304 bytes)",
                p(&big_initrd)
            ),
        ),
        case(
            "missing initrd",
            &["-k", good, "-i", "/nonexistent/initrd"],
            1,
            "initrd /nonexistent/initrd: No such file or directory",
        ),
        case(
            "-m 0",
            &["-k", good, "-m", "0"],
            1,
            "-m/--mem must be larger than 0",
        ),
        case(
            "-m garbage",
            &["-k", good, "-m", "lots"],
            1,
            "invalid size 'lots'",
        ),
        case(
            "-m 1T on a small host",
            &["-k", good, "-m", "1T"],
            1,
            "-m 1048576 MiB is more than this host's",
        ),
        case(
            "-c 0",
            &["-k", good, "-c", "0"],
            1,
            "-c/--cpus must be at least 1",
        ),
        case(
            "-c 100000",
            &["-k", good, "-c", "100000"],
            1,
            "-c 100000: this host's KVM allows at most",
        ),
        case(
            "unknown --console",
            &["-k", good, "--console", "bogus"],
            2,
            "invalid value 'bogus' for '--console <CONSOLE>'",
        ),
        case(
            "--console hv on x86",
            &["-k", good, "--console", "hv"],
            1,
            "--console hv is only available on PowerPC",
        ),
        case(
            "unreadable --dev",
            &["-k", good, "--dev", "/nonexistent/kvm"],
            1,
            "cannot open /nonexistent/kvm: No such file or directory",
        ),
        case(
            "--dev that is not KVM",
            &["-k", good, "--dev", "/dev/null"],
            1,
            "/dev/null",
        ),
        case(
            "--hugetlbfs on a non-hugetlbfs path",
            &["-k", good, "--hugetlbfs", "/tmp"],
            1,
            "--hugetlbfs /tmp: not a hugetlbfs mount",
        ),
        case(
            "unknown option",
            &["-k", good, "--bogus"],
            2,
            "unexpected argument '--bogus' found",
        ),
        case(
            "no kernel",
            &["--dev", "/nonexistent/kvm"],
            1,
            if host_kernel {
                "cannot open /nonexistent/kvm".to_string()
            } else {
                format!("no kernel given and none found in ./bzImage, arch/x86/boot/bzImage, ../../arch/x86/boot/bzImage, /boot/vmlinuz-{release}")
            },
        ),
        case(
            "kvmtool option not implemented yet",
            &["-k", good, "--vfio-pci", "00:01.0"],
            1,
            "option --vfio-pci is not supported yet",
        ),
        case(
            "missing disk image",
            &["-k", good, "-d", "/nonexistent/x.img"],
            1,
            "disk image /nonexistent/x.img: no such file",
        ),
        case(
            "unknown disk option",
            &["-k", good, "-d", "x.img,bogus"],
            1,
            "unknown option 'bogus'",
        ),
        case(
            "user-mode addresses in two nets",
            &["-k", good, "-n", "mode=user,guest_ip=10.0.0.2"],
            1,
            "--network: guest_ip 10.0.0.2 and host_ip 192.168.33.1 are not in the same /24",
        ),
        case(
            "bad MAC address",
            &["-k", good, "-n", "mode=tap,guest_mac=zz"],
            1,
            "is not a MAC address",
        ),
        case(
            "9p share of a missing directory",
            &["-k", good, "--9p", "/nonexistent/share,tag"],
            1,
            "/nonexistent/share",
        ),
        case(
            "legacy virtio transport",
            &["-k", good, "--virtio-transport", "pci-legacy"],
            1,
            "the legacy virtio interface is not supported yet",
        ),
        case(
            "virtio-mmio on x86",
            &["-k", good, "--virtio-transport", "mmio"],
            1,
            "--virtio-transport mmio is only available on arm64 and riscv64",
        ),
        case(
            "bad --name",
            &["-k", good, "--name", "../x"],
            1,
            "--name must be non-empty",
        ),
    ];
    assert!(cases.len() >= 12);
    // A private HOME: cases that get as far as the default rootfs make it
    // there, not in the caller's.
    let home = dir.join("home");
    fs::create_dir_all(&home).unwrap();
    for c in &cases {
        let out = run(lkvm()
            .env("HOME", &home)
            .arg("run")
            .args(&c.args)
            .args(["--loglevel", "error"]));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(c.code), "{}: stderr {err}", c.name);
        assert!(
            out.stdout.is_empty(),
            "{}: stdout {}",
            c.name,
            text(&out.stdout)
        );
        assert_eq!(err.lines().count(), 1, "{}: not one line: {err}", c.name);
        assert!(err.starts_with("lkvm: error: "), "{}: {err}", c.name);
        assert!(
            err.contains(&c.message),
            "{}: expected '{}' in: {err}",
            c.name,
            c.message
        );
    }
    fs::remove_dir_all(&dir).unwrap();
}

/// The running kernel's release, as kvmtool's search uses it.
fn nix_release() -> String {
    let out = std::process::Command::new("uname")
        .arg("-r")
        .output()
        .unwrap();
    text(&out.stdout).trim().to_string()
}

#[test]
fn client_commands_name_the_problem() {
    for (args, code, message) in [
        (
            &["stop", "-n", "no-such-guest"][..],
            1,
            "no guest named 'no-such-guest' is running",
        ),
        (
            &["pause", "-n", "no-such-guest"],
            1,
            "no guest named 'no-such-guest' is running",
        ),
        (
            &["debug", "-n", "no-such-guest", "-d"],
            1,
            "no guest named 'no-such-guest' is running",
        ),
        (&["stop"], 2, "required"),
        (&["balloon", "-n", "x"], 2, "required"),
        (
            &["balloon", "-n", "x", "-i", "1", "-d", "1"],
            2,
            "cannot be used with",
        ),
        (&["setup", "a/b"], 1, "not a valid rootfs name"),
        // A usage error names what is missing.
        (
            &["sandbox"],
            2,
            "required arguments were not provided: <COMMAND>...",
        ),
        (&["sandbox", "-c", "1", "--"], 2, "<COMMAND>..."),
        (&["debug", "-d"], 2, "--name <NAME>"),
    ] {
        let out = run(lkvm().args(args));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
    }
}

#[test]
fn version_and_help_work() {
    let out = run(lkvm().arg("version"));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        format!("lkvm version {}\n", env!("CARGO_PKG_VERSION"))
    );
    let help = run(lkvm().args(["help", "run"]));
    assert_eq!(help.status.code(), Some(0));
    let h = text(&help.stdout);
    for opt in [
        "--kernel",
        "--initrd",
        "--params",
        "--cpus",
        "--mem",
        "--console",
        "--debug-ioport",
        "--hugetlbfs",
    ] {
        assert!(h.contains(opt), "help lacks {opt}");
    }
}
