#!/usr/bin/env python3
"""The boot lab: the static, cross-built lkvm boots a Linux guest on every
architecture.

An L1 Linux of the target architecture boots under QEMU (TCG, with that
architecture's virtualisation extension), loads KVM, proves it can create a VM
and a vCPU, and runs lkvm on an L2 Linux whose init prints a marker line with
`uname -m`, `nproc`, a token read back from /proc/cmdline and its uptime. A
boot passes only on that marker with the expected architecture, CPU count and
token, and lkvm exiting 0.

    lab.py test [ARCH ...]        boot matrix; one JSON line per boot
    lab.py boot ARCH [-c N] ...   one boot; one JSON line
    lab.py bench [ARCH ...]       median L2 boot time of 5 boots per arch
    lab.py run ARCH               interactive: a shell in L2 inside L1
    lab.py run-host               the default guest on this machine's /dev/kvm
    lab.py kut [ARCH ...]         kvm-unit-tests in L1; one JSON line per case
    lab.py ab ARCH [--runs N]     the same boot with lkvm and kvmtool, alternately
    lab.py fetch [ARCH ...]       download and cache the pinned guest inputs

Only the Python standard library is used. Downloads are cached in
~/.cache/lkvm (or $LKVM_CACHE), outside the repository.
"""

import argparse
import hashlib
import json
import os
import re
import secrets
import select
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import compat
import kut
import monitor
import refvmm
from common import ALL_ARCHES, CACHE, HERE, PINS, ROOT, WORK, LabError, log, run
from checks import (MARKER, NETBENCH_LINE, USERNET_LINE, VIRTIO_LINE, failure_kind,
                    sandbox_problems, virtio_problems)
from inputs import (KNOWN_BIN, NINEP_ROOT_MODULES, SHARE_TEXT, Inputs, add_module_tree,
                    add_modules, base_initramfs, disk_image, l2_initramfs, root_disk)
from matrix import MATRIX, RETRY_ONCE

TAIL_LINES = 40
# --- tools built for the guest ---------------------------------------------------

def build_kvmcheck(arch):
    src = HERE / "kvmcheck.c"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    out = CACHE / "tools" / f"kvmcheck-{arch}-{digest}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        run([PINS[arch]["cc"], "-static", "-O2", "-o", str(out), str(src)])
    return out


def build_hostprog(arch):
    src = HERE / "hostprog.c"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    out = CACHE / "tools" / f"hostprog-{arch}-{digest}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        run([PINS[arch]["cc"], "-static", "-O2", "-o", str(out), str(src)])
    return out


def build_netprobe(arch):
    src = HERE / "netprobe.c"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    out = CACHE / "tools" / f"netprobe-{arch}-{digest}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        run([PINS[arch]["cc"], "-static", "-O2", "-o", str(out), str(src)])
    return out


def build_lkvm(arch):
    target = PINS[arch]["rust_target"]
    env = dict(os.environ, RUSTFLAGS="-C target-feature=+crt-static")
    run(["cargo", "build", "--release", "--quiet", "--target", target], cwd=ROOT, env=env)
    return ROOT / "target" / target / "release" / "lkvm"


def l1_initramfs(arch, inputs, reference=False):
    """L1's initramfs; with `reference`, kvmtool beside lkvm (`lab.py ab`)."""
    p = PINS[arch]
    c = base_initramfs(inputs.busybox, (HERE / "l1-init.sh").read_text())
    if reference:
        c.file("kvmtool", refvmm.build(arch).read_bytes(), 0o755)
    # tun: lkvm's virtio-net creates a tap in L1.
    add_modules(c, inputs.kernel_root, p["modules"], optional=["tun"])
    c.file("l2/disk.img", disk_image().read_bytes())
    c.file("share/hello.txt", SHARE_TEXT.encode())
    c.file("kvmcheck", build_kvmcheck(arch).read_bytes(), 0o755)
    c.file("lkvm", build_lkvm(arch).read_bytes(), 0o755)
    c.file("l2/kernel", inputs.l2_kernel.read_bytes())
    c.file("l2/initrd-test.cpio.gz", l2_initramfs(arch, inputs, "l2-init.sh"))
    # The network probe (UDP, DNS, timed TCP) for L1 and the virtio L2;
    # known.bin for L1's HTTP server.
    netprobe = build_netprobe(arch).read_bytes()
    c.file("netprobe", netprobe, 0o755)
    c.file("www/known.bin", KNOWN_BIN)
    c.file("l2/initrd-virtio.cpio.gz",
           l2_initramfs(arch, inputs, "l2-init.sh", modules=True,
                        files=[("netprobe", netprobe, 0o755)]))
    c.file("l2/initrd-shell.cpio.gz", l2_initramfs(arch, inputs, "shell-init.sh"))
    c.file("l2/initrd-sandbox.cpio.gz",
           l2_initramfs(arch, inputs, "sandbox-init.sh", modules=True))
    # The compat stages: a root disk and the initrd that mounts it, a
    # static program for L2 to run through /host, and the kernel's own
    # modules where a host keeps them.
    c.file("l2/root.img", root_disk(arch, inputs).read_bytes())
    c.file("l2/initrd-rootdisk.cpio.gz",
           l2_initramfs(arch, inputs, "rootdisk-initrd.sh", modules=True))
    c.file("hostprog", build_hostprog(arch).read_bytes(), 0o755)
    add_module_tree(c, inputs.kernel_root, NINEP_ROOT_MODULES)
    c.file("l2/params", (p["l2_params"] + "\n").encode())
    out = WORK / arch / ("l1-ab.cpio.gz" if reference else "l1.cpio.gz")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(c.finish(level=1))
    return out


# --- booting ------------------------------------------------------------------------

def require_lkvm_support(arch):
    if arch not in PINS:
        raise LabError(f"unknown architecture {arch} (known: {', '.join(ALL_ARCHES)})")
    if not PINS[arch]["lkvm"]:
        raise LabError(f"lkvm does not support {arch} yet")


def qemu_cmd(arch, inputs, initrd, append, interactive=False, variant=None):
    # The default L1 machine is the arch's own table; a variant has its own.
    machine = PINS[arch]
    if variant is not None:
        variants = PINS[arch].get("variants", {})
        if variant not in variants:
            raise LabError(f"{arch} has no L1 variant {variant!r} (known: {', '.join(variants)})")
        machine = variants[variant]
    cmd = list(machine["qemu"])
    append = f"{append} {machine.get('append', '')}".strip()
    cmd += ["-nographic", "-nic", "none", "-no-reboot",
            "-kernel", str(inputs.l1_kernel), "-initrd", str(initrd), "-append", append]
    if interactive:
        # Ctrl-B for QEMU's own escape, so Ctrl-A reaches lkvm inside L1.
        cmd += ["-echr", "0x02"]
    return cmd


def boot(arch, cpus, extra, mem=256, timeout=300, inputs=None, initrd=None, variant=None,
         kparams="", expect=None, reject=None, virtio=False, bench=False, irqs=None,
         sandbox=False, compat_run=False, vmm="lkvm", netbench=False):
    """One boot. Returns the result record (also on failure)."""
    require_lkvm_support(arch)
    inputs = inputs or Inputs(arch)
    initrd = initrd or l1_initramfs(arch, inputs)
    p = PINS[arch]
    token = secrets.token_hex(6)
    # compat: one token per stage that prints one (the second is typed).
    tokens = {"rootdisk": token, "defaultrootfs": secrets.token_hex(6),
              "sandbox-prog": secrets.token_hex(6)}
    mode = "sandbox" if sandbox else "compat" if compat_run else "test"
    append = (f"console={p['l1_console']} panic=-1 lkvm.mode={mode} lkvm.cpus={cpus} "
              f"lkvm.mem={mem} lkvm.token={token} lkvm.extra={','.join(extra)} "
              f"lkvm.kparams={','.join(kparams.split())}")
    if virtio:
        append += " lkvm.virtio=1"
    if bench:
        append += " lkvm.bench=1"
    if netbench:
        append += " lkvm.netbench=1"
    if compat_run:
        append += f" lkvm.token3={tokens['sandbox-prog']}"
    if vmm != "lkvm":
        append += f" lkvm.vmm={vmm}"
    # L1 prints lkvm's vCPU state if L2 still runs this long after L1 boots.
    append += f" lkvm.dump_after={timeout * 2 // 3}"
    cmd = qemu_cmd(arch, inputs, initrd, append, variant=variant)
    tag = "-".join([f"c{cpus}", *([variant] if variant else []), *[e.strip("-") for e in extra],
                    *kparams.split(), *([vmm] if vmm != "lkvm" else []),
                    *([f"m{mem}"] if str(mem) != "256" else [])])
    tag = re.sub(r"[^A-Za-z0-9=.,_-]", "_", tag)
    # QEMU logs an L1 triple fault here; with -no-reboot it would
    # otherwise just exit 0, as after an orderly power-off.
    workdir = WORK / arch
    qemu_log = workdir / f"qemu-{tag}.log"
    qemu_log.unlink(missing_ok=True)
    cmd += ["-d", "cpu_reset", "-D", str(qemu_log)]
    # A short path: unix socket names are limited to 108 bytes.
    mon_dir = tempfile.mkdtemp(prefix="lkvm-lab-")
    mon_sock = Path(mon_dir) / "monitor"
    cmd += monitor.qemu_args(mon_sock)
    rec = {"arch": arch, "vmm": vmm, "cpus": cpus, "extra": " ".join(extra),
           "l1": variant or "default",
           "kparams": kparams, "mem_mib": mem, "kernel": inputs.kernel_version, "result": "fail"}
    if virtio:
        rec["virtio"] = True
    if sandbox:
        rec["sandbox"] = True
    if compat_run:
        rec["compat"] = True
    typed_into_shell = False
    lines, marks = [], {}
    disk_dump, in_dump = [], False
    t0 = time.monotonic()
    # QEMU's stdin is L1's console: the L2 init's input line comes from here.
    reply = secrets.token_hex(4)
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    pending = b""
    reason = None
    l1_text = []
    deadline = t0 + timeout
    try:
        while True:
            now = time.monotonic()
            if now > deadline:
                reason = f"timeout after {timeout} s"
                break
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if not ready:
                if proc.poll() is not None:
                    reason = reason or f"QEMU exited ({proc.returncode}) before lkvm finished"
                    break
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                if proc.wait() is not None and "lkvm_exit" not in rec:
                    reason = reason or f"QEMU exited ({proc.returncode}) before lkvm finished"
                break
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                line = raw.decode(errors="replace").rstrip("\r")
                t = round(time.monotonic() - t0, 3)
                if "LKVM-L1-DISK-END" in line:
                    in_dump = False
                if in_dump:
                    disk_dump.append(line.strip())
                    continue
                if "LKVM-L1-DISK-BEGIN" in line:
                    in_dump = True
                lines.append(f"{t:8.3f} | {line}")
                m = VIRTIO_LINE.search(line)
                if m:
                    rec.update(l2_rng=m.group(1), l2_blk=m.group(2), l2_9p=m.group(3),
                               l2_net=m.group(4))
                m = USERNET_LINE.search(line)
                if m:
                    rec.update(zip(("l2_user_dhcp", "l2_user_http", "l2_user_udp",
                                    "l2_user_dns", "l2_user_fwd"), m.groups()))
                m = NETBENCH_LINE.search(line)
                if m:
                    rec.setdefault("netbench", []).append(
                        {"via": m.group(1), "bytes": int(m.group(2)),
                         "seconds": float(m.group(3))})
                m = re.search(r"LKVM-L1-HOSTFWD (\S*)", line)
                if m:
                    rec["l1_hostfwd"] = m.group(1)
                m = re.search(r"LKVM-L2-BLKREAD bytes=(\d+) seconds=([0-9.]+)", line)
                if m:
                    rec.update(blk_read_bytes=int(m.group(1)), blk_read_s=float(m.group(2)))
                m = re.search(r"LKVM-L2-IRQS (.*)", line)
                if m:
                    rec["l2_irqs"] = m.group(1).strip()
                if "LKVM-L1-TEXT" in line:
                    l1_text = monitor.text_ranges(line)
                m = re.search(r"LKVM-L1-9P (\S*)", line)
                if m:
                    rec["l1_9p"] = m.group(1)
                m = re.search(r"LKVM-L1-DISK-SHA256 ([0-9a-f]{64})", line)
                if m:
                    rec["l1_disk_sha256"] = m.group(1)
                for key, pat in (("l1_ready", "LKVM-L1-READY"), ("lkvm_start", "LKVM-START"),
                                 ("no_kvm", "LKVM-L1-NOKVM")):
                    if pat in line and key not in marks:
                        marks[key] = t
                if (compat_run and compat.SHELL_BANNER in line and not typed_into_shell):
                    typed_into_shell = True
                    try:
                        proc.stdin.write(compat.typed_line(tokens["defaultrootfs"]).encode())
                        proc.stdin.flush()
                    except OSError as e:
                        reason = reason or f"cannot type into L1's console: {e}"
                if "LKVM-L2-ASK" in line and "ask" not in marks:
                    marks["ask"] = t
                    try:
                        proc.stdin.write(f"{reply}\r".encode())
                        proc.stdin.flush()
                    except OSError as e:
                        reason = reason or f"cannot type into L1's console: {e}"
                m = MARKER.search(line)
                if m and "marker" not in marks:
                    marks["marker"] = t
                    rec.update(l2_arch=m.group(1), l2_cpus=int(m.group(2)),
                               l2_token=m.group(3), l2_input=m.group(4),
                               l2_uptime_s=float(m.group(5)))
                m = re.search(r"LKVM-EXIT rc=(\d+)", line)
                if m:
                    rec["lkvm_exit"] = int(m.group(1))
                if "Kernel panic" in line and "marker" not in marks:
                    reason = reason or "kernel panic: " + line.strip()
            if "no_kvm" in marks:
                reason = "KVM is not usable in L1"
                break
            if "lkvm_exit" in rec:
                break
        if reason and reason.startswith("timeout") and proc.poll() is None:
            reason += l1_cpu_state(mon_sock, workdir / f"monitor-{tag}.log", l1_text)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        shutil.rmtree(mon_dir, ignore_errors=True)
    if reason and reason.startswith("QEMU exited"):
        try:
            said = [l.strip() for l in qemu_log.read_text(errors="replace").splitlines()
                    if "fault" in l.lower()]
        except OSError:
            said = []
        reason += f"; QEMU's log: {said[-1]}" if said else "; QEMU logged no triple fault"
    console_log = workdir / f"console-{tag}.log"
    console_log.write_text("\n".join(lines) + "\n")
    rec["console_log"] = str(console_log)
    rec["qemu_to_l1_ready_s"] = marks.get("l1_ready")
    rec["qemu_to_lkvm_start_s"] = marks.get("lkvm_start")
    rec["qemu_to_marker_s"] = marks.get("marker")
    if "ask" in marks and "lkvm_start" in marks:
        # Boot time without the wait for the typed reply.
        rec["lkvm_start_to_marker_s"] = round(marks["ask"] - marks["lkvm_start"], 3)
    problems = []
    if compat_run:
        stages = compat.split([l.split("| ", 1)[-1] for l in lines])
        rec["compat_stages"] = {k: v["rc"] for k, v in stages.items()}
        problems = compat.problems(stages, p["uname"], tokens)
        if "lkvm_exit" not in rec:
            problems.insert(0, reason or "L1 never finished the compat stages")
    elif sandbox:
        problems = sandbox_problems(rec, lines, p["uname"], reason)
    elif "marker" not in marks:
        problems.append(reason or "no L2 marker line")
    else:
        if rec["l2_arch"] != p["uname"]:
            problems.append(f"L2 reports arch {rec['l2_arch']}, expected {p['uname']}")
        if rec["l2_cpus"] != cpus:
            problems.append(f"L2 reports {rec['l2_cpus']} CPUs, expected {cpus}")
        if rec["l2_token"] != token:
            problems.append(f"L2 read back token {rec['l2_token']!r}, expected {token!r}")
        if rec["l2_input"] != reply:
            problems.append(f"L2 read {rec['l2_input']!r} from its console, expected {reply!r}")
        start = next((i for i, l in enumerate(lines) if "LKVM-START" in l), 0)
        # L1's own kernel messages, printed at the end, are not L2's.
        l2_lines = [l for l in lines[start + 1:] if "LKVM-L1-KMSG" not in l]
        if expect is not None and not any(expect in l for l in l2_lines):
            problems.append(f"L2's console never showed {expect!r}")
        if reject is not None and any(reject in l for l in l2_lines if "LKVM-START" not in l):
            problems.append(f"L2's console showed {reject!r}, which it must not")
        if rec.get("lkvm_exit") != 0:
            problems.append(reason or f"lkvm exited with {rec.get('lkvm_exit')}")
        if virtio:
            problems += virtio_problems(rec, token, disk_dump)
        if irqs is not None and irqs not in rec.get("l2_irqs", ""):
            problems.append(f"L2's virtio interrupts {rec.get('l2_irqs')!r} do not show {irqs!r}")
    if problems:
        rec["error"] = "; ".join(problems)
        log(f"{arch} -c {cpus} {' '.join(extra)} (L1 {rec['l1']}): FAILED: {rec['error']}")
        print_tail(lines)
    else:
        rec["result"] = "pass"
    return rec


def kut_suite(arch, variant, inputs, tree, only=None, bench=False):
    """The kvm-unit-tests cases of one L1 machine, all in one L1 boot (see
    kut.py). Returns (failures as (what, log or None), the cases' outputs
    by name)."""
    l1 = variant or "default"
    t0 = time.monotonic()
    nodefault = ("micro-bench",) if bench else ()
    chosen, skipped = kut.cases(arch, variant, tree, only=only, want_nodefault=nodefault)
    if not chosen:
        raise LabError(f"{kut.SUITE} {arch}: no case matches")
    p = PINS[arch]
    c = base_initramfs(inputs.busybox, (HERE / "l1-init.sh").read_text())
    add_modules(c, inputs.kernel_root, p["modules"])
    c.file("kvmcheck", build_kvmcheck(arch).read_bytes(), 0o755)
    c.file("lkvm", build_lkvm(arch).read_bytes(), 0o755)
    for name, data in kut.l1_files(tree, arch, chosen, kut.uname_r(inputs.l1_kernel)).items():
        c.file(name, data)
    workdir = WORK / arch
    workdir.mkdir(parents=True, exist_ok=True)
    initrd = workdir / f"kut-{l1}.cpio.gz"
    initrd.write_bytes(c.finish(level=1))
    qemu_log = workdir / f"qemu-kut-{l1}.log"
    qemu_log.unlink(missing_ok=True)
    cmd = qemu_cmd(arch, inputs, initrd, f"console={p['l1_console']} panic=-1 lkvm.mode=kut",
                   variant=variant) + ["-d", "cpu_reset", "-D", str(qemu_log)]
    log(f"{kut.SUITE} {arch} (L1 {l1}): {len(chosen)} case(s) in one L1 boot")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        lines, reason = kut.watch(proc, chosen)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    console_log = workdir / f"console-kut-{l1}.log"
    console_log.write_text("".join(f"{t:8.3f} | {l}\n" for t, l in lines))
    suite_error = None
    if not any("LKVM-KUT-DONE" in l for _, l in lines):
        suite_error = f"{reason or 'L1 never finished the case list'} (console: {console_log})"
        print_tail([f"{t:8.3f} | {l}" for t, l in lines])
    outputs = kut.case_outputs(lines)
    failures = kut.report(arch, l1, chosen, outputs, skipped, suite_error,
                          time.monotonic() - t0, workdir)
    return failures, outputs


def kut_all(arches, inputs_of, l1=None, only=None):
    """Every L1 machine of every architecture kvm-unit-tests runs on.
    Returns the failures; an absent tarball is one only with CI=true."""
    tar = kut.tarball()
    if tar is None:
        if os.environ.get("CI") == "true":
            return [(f"{kut.absent_message()}; CI=true requires it", None)]
        log(f"{kut.absent_message()}; the suite is skipped")
        return []
    failures = []
    for arch in [a for a in arches if a in kut.ARCHES]:
        try:
            require_lkvm_support(arch)
            tree = kut.build(arch, tar)
            inputs = inputs_of(arch)
            for variant, _ in kut.MACHINES[arch]:
                if l1 is None or (variant or "default") == l1:
                    failures += kut_suite(arch, variant, inputs, tree, only=only)[0]
        except LabError as e:
            log(f"{kut.SUITE} {arch}: {e}")
            failures.append((f"{kut.SUITE} {arch}: {e}", None))
    return failures


def kut_bench(arch, inputs):
    """kvm-unit-tests' micro-bench (a nodefault case, so only here) on the
    default L1 machine: one JSON line per figure. Returns the failures."""
    tar = kut.tarball()
    if tar is None:
        ci = os.environ.get("CI") == "true"
        log(f"{kut.absent_message()}; " + ("CI=true requires it" if ci else "micro-bench skipped"))
        return 1 if ci else 0
    tree = kut.build(arch, tar)
    chosen, _ = kut.cases(arch, None, tree, only="micro-bench", want_nodefault=("micro-bench",))
    if not chosen:
        return 0
    failures, outputs = kut_suite(arch, None, inputs, tree, only="micro-bench", bench=True)
    figures = kut.bench_figures(outputs.get("micro-bench", ([],))[0])
    for name, total, avg in figures:
        print(json.dumps({"bench": "kut_micro_bench", "arch": arch, "name": name, "unit": "ns",
                          "avg": avg, "total": total,
                          "what": "kvm-unit-tests micro-bench in L2 (lkvm in L1 under QEMU TCG)"}),
              flush=True)
    if not figures:
        log(f"{kut.SUITE} {arch}: micro-bench printed no figures")
    return len(failures) + (0 if figures else 1)


def print_failures(failures):
    """Failures again at the very end, each with its log's tail, then one
    line each, so a log cut to its last lines still names them."""
    for what, case_log in failures:
        log(f"FAILED {what}")
        if case_log:
            print_tail(Path(case_log).read_text(errors="replace").splitlines())
    for what, _ in failures:
        log(f"failed: {what}")


def l1_cpu_state(sock, keep, l1_text):
    """For a boot that timed out: where QEMU's CPUs (L1's) are, kept in
    full in `keep`, one entry per CPU for the error line."""
    try:
        said = monitor.ask(sock, ["info registers -a"])
    except monitor.MonitorError as e:
        return f"; {e}"
    registers = said["info registers -a"]
    keep.write_text(registers)
    summary = monitor.cpu_summary(registers, l1_text)
    return f"; L1's CPUs: {', '.join(summary) or 'none listed'} (registers in {keep})"


def print_tail(lines):
    """The last console lines, and lkvm's vCPU dump from L1's watchdog
    when it came earlier than those."""
    tail_from = max(len(lines) - TAIL_LINES, 0)
    dog = next((i for i, l in enumerate(lines) if "LKVM-L1-WATCHDOG" in l), None)
    if dog is not None and dog < tail_from:
        log("L1's watchdog dump of lkvm's vCPUs:")
        for line in lines[dog:min(dog + TAIL_LINES, tail_from)]:
            print(f"    {line}", file=sys.stderr)
    log(f"last {TAIL_LINES} console lines:")
    for line in lines[tail_from:]:
        print(f"    {line}", file=sys.stderr)


def cmd_test(args):
    arches = args.arch or ALL_ARCHES
    if args.supported:
        arches = [a for a in arches if PINS[a]["lkvm"]]
        log(f"architectures lkvm supports: {', '.join(arches)}")
    failed, retried, boots = [], [], 0
    for arch in arches:
        try:
            require_lkvm_support(arch)
            inputs = Inputs(arch)
            initrd = l1_initramfs(arch, inputs)
        except LabError as e:
            log(f"{arch}: {e}")
            failed.append((f"{arch}: {e}", None))
            continue
        for case in MATRIX[arch]:
            def attempt():
                return boot(arch, case.cpus, case.extra, mem=case.mem, timeout=args.timeout,
                            inputs=inputs, initrd=initrd, variant=case.l1, kparams=case.kparams,
                            expect=case.expect, reject=case.reject, virtio=case.virtio,
                            irqs=case.irqs, sandbox=case.sandbox, compat_run=case.compat)
            rec = attempt()
            what = " ".join([arch, f"-c {case.cpus}", *case.extra,
                             *([f"-m {case.mem}"] if case.mem != 256 else []),
                             *(["virtio"] if case.virtio else []),
                             *(["sandbox"] if case.sandbox else []),
                             *(["compat"] if case.compat else []), f"(L1 {rec['l1']})"])
            if rec["result"] != "pass" and arch in RETRY_ONCE:
                first = Path(rec["console_log"])
                kept = first.with_name(first.stem + "-attempt1.log")
                first.replace(kept)
                retried.append((f"{what}: {rec.get('error')}", str(kept)))
                log(f"{what}: retrying once (see RETRY_ONCE)")
                rec = attempt()
                rec["first_attempt_error"] = retried[-1][0]
                rec["first_attempt_console_log"] = str(kept)
            print(json.dumps(rec), flush=True)
            boots += 1
            if rec["result"] != "pass":
                failed.append((f"{what}: {rec.get('error')}", rec["console_log"]))
    # kvm-unit-tests after the matrix: one L1 boot per L1 machine.
    kut_failed = [] if args.no_kut else kut_all(arches, Inputs)
    # Repeated at the end so that a log cut to its tail still says what
    # broke: console tails first, then one line per problem, then the count.
    for what, console_log in retried:
        log(f"RETRIED {what}")
        print_tail(Path(console_log).read_text(errors="replace").splitlines())
    for what, console_log in failed:
        log(f"FAILED {what}")
        if console_log:
            print_tail(Path(console_log).read_text(errors="replace").splitlines())
    for what, _ in retried:
        log(f"retried: {what}")
    for what, _ in failed:
        log(f"failed: {what}")
    print_failures(kut_failed)
    log(f"{boots - sum(1 for _, c in failed if c)} of {boots} boots passed; "
        f"{len(retried)} needed a second attempt"
        + ("" if args.no_kut else f"; {len(kut_failed)} {kut.SUITE} failures"))
    return 1 if failed or kut_failed else 0


def cmd_kut(args):
    arches = args.arch or list(kut.ARCHES)
    for arch in arches:
        if arch not in kut.ARCHES:
            raise LabError(f"{kut.SUITE} runs on {', '.join(kut.ARCHES)}, not {arch}")
    failures = kut_all(arches, Inputs, l1=args.l1, only=args.only)
    print_failures(failures)
    return 1 if failures else 0


def cmd_boot(args):
    extra = shlex.split(args.lkvm_args)
    if any("," in a for a in extra):
        raise LabError("lkvm options passed through the lab may not contain commas")
    rec = boot(args.arch, args.cpus, extra, mem=args.mem, timeout=args.timeout,
               variant=args.l1, kparams=args.kparams, expect=args.expect, virtio=args.virtio,
               sandbox=args.sandbox, compat_run=args.compat)
    print(json.dumps(rec), flush=True)
    return 0 if rec["result"] == "pass" else 1


def cmd_ab(args):
    """The same boot, alternately with lkvm and with kvmtool (the reference
    VMM) in the same L1, `runs` times each: one JSON line per boot, then
    the counts. Settles whether a lab failure is lkvm's or the lab's."""
    require_lkvm_support(args.arch)
    inputs = Inputs(args.arch)
    initrd = l1_initramfs(args.arch, inputs, reference=True)
    extra = shlex.split(args.lkvm_args)
    counts = {v: {"pass": 0, "fail": 0, "kinds": {}} for v in ("lkvm", "kvmtool")}
    for i in range(args.runs):
        order = ("lkvm", "kvmtool") if i % 2 == 0 else ("kvmtool", "lkvm")
        for vmm in order:
            rec = boot(args.arch, args.cpus, extra, timeout=args.timeout, inputs=inputs,
                       initrd=initrd, kparams=args.kparams, vmm=vmm)
            rec["run"] = i
            c = counts[vmm]
            if rec["result"] == "pass":
                c["pass"] += 1
            else:
                c["fail"] += 1
                kind = failure_kind(rec.get("error"))
                c["kinds"][kind] = c["kinds"].get(kind, 0) + 1
                kept = Path(rec["console_log"])
                saved = kept.with_name(f"{kept.stem}-ab{i}-{vmm}.log")
                shutil.copy(kept, saved)
                rec["console_log"] = str(saved)
            print(json.dumps(rec), flush=True)
    print(json.dumps({"ab": args.arch, "cpus": args.cpus, "kparams": args.kparams,
                      "runs_each": args.runs, **counts}), flush=True)
    return 0


def net_bench(arch, inputs, initrd, timeout):
    """TCP throughput from L2 to L1 over user-mode networking and over a
    tap, in the same boot (3 rounds of 8 MiB each, alternating): one JSON
    line with the median MB/s of each and their ratio. Returns failures."""
    rec = boot(arch, 1, [], timeout=timeout, inputs=inputs, initrd=initrd, netbench=True)
    runs = rec.get("netbench", [])
    rates = {via: [r["bytes"] / r["seconds"] / 1e6 for r in runs
                   if r["via"] == via and r["seconds"] > 0 and r["bytes"] == 8 << 20]
             for via in ("user", "tap")}
    if rec["result"] != "pass" or not rates["user"] or not rates["tap"]:
        log(f"{arch}: net_tcp_guest_to_host: {rec.get('error') or 'no complete rounds'}")
        return 1
    user, tap = statistics.median(rates["user"]), statistics.median(rates["tap"])
    print(json.dumps({"bench": "net_tcp_guest_to_host", "arch": arch, "unit": "MB/s",
                      "user": round(user, 2), "tap": round(tap, 2),
                      "ratio_user_to_tap": round(user / tap, 3),
                      "runs": {k: [round(x, 2) for x in v] for k, v in rates.items()},
                      "what": "8 MiB over TCP from L2 to a sink in L1, timed by L2's clock: "
                              "-n mode=user to 192.168.33.1 (L1's loopback) and "
                              "-n mode=tap to L1's tap address, same boot"}),
          flush=True)
    return 0


def cmd_bench(args):
    failed = 0
    for arch in args.arch or [a for a in ALL_ARCHES if PINS[a]["lkvm"]]:
        require_lkvm_support(arch)
        inputs = Inputs(arch)
        initrd = l1_initramfs(arch, inputs)
        if args.net_only:
            failed += net_bench(arch, inputs, initrd, args.timeout)
            continue
        times = []
        for _ in range(5):
            rec = boot(arch, 1, [], timeout=args.timeout, inputs=inputs, initrd=initrd)
            if rec["result"] != "pass":
                failed += 1
                continue
            times.append(rec["lkvm_start_to_marker_s"])
        if times:
            print(json.dumps({"bench": "l2_boot", "arch": arch, "unit": "s",
                              "median": round(statistics.median(times), 3),
                              "min": min(times), "max": max(times), "runs": len(times),
                              "what": "lkvm start inside L1 to the L2 marker, -c 1 -m 256"}),
                  flush=True)
        rates = []
        for _ in range(3):
            rec = boot(arch, 1, [], timeout=args.timeout, inputs=inputs, initrd=initrd,
                       bench=True)
            secs, n = rec.get("blk_read_s"), rec.get("blk_read_bytes")
            if rec["result"] != "pass" or not secs or n != 64 << 20:
                failed += 1
                continue
            rates.append(n / secs / 1e6)
        if rates:
            print(json.dumps({"bench": "virtio_blk_seq_read", "arch": arch, "unit": "MB/s",
                              "median": round(statistics.median(rates), 1),
                              "min": round(min(rates), 1), "max": round(max(rates), 1),
                              "runs": len(rates),
                              "what": "dd of a 64 MiB virtio-blk disk in L2 (bs=1M), "
                                      "image in L1's tmpfs, default transport"}),
                  flush=True)
        failed += net_bench(arch, inputs, initrd, args.timeout)
        if arch in kut.ARCHES:
            failed += kut_bench(arch, inputs)
    return 1 if failed else 0


def cmd_run(args):
    require_lkvm_support(args.arch)
    inputs = Inputs(args.arch)
    initrd = l1_initramfs(args.arch, inputs)
    p = PINS[args.arch]
    extra = ",".join(shlex.split(args.lkvm_args))
    append = (f"console={p['l1_console']} panic=-1 quiet lkvm.mode=shell lkvm.cpus={args.cpus} "
              f"lkvm.mem={args.mem} lkvm.token=interactive lkvm.extra={extra}")
    log("L1 boots under QEMU, then lkvm boots L2 to a shell. Ctrl-A x quits lkvm; "
        "Ctrl-B x quits QEMU.")
    return subprocess.call(qemu_cmd(args.arch, inputs, initrd, append, interactive=True,
                                    variant=args.l1))


def host_arch():
    machine = os.uname().machine
    return {"ppc64le": "ppc64le", "x86_64": "x86_64", "aarch64": "aarch64",
            "riscv64": "riscv64"}.get(machine, machine)


def cmd_run_host(args):
    arch = host_arch()
    require_lkvm_support(arch)
    inputs = Inputs(arch)
    initrd = WORK / arch / "shell.cpio.gz"
    initrd.parent.mkdir(parents=True, exist_ok=True)
    initrd.write_bytes(l2_initramfs(arch, inputs, "shell-init.sh"))
    lkvm = build_lkvm(arch)
    cmd = [str(lkvm), "run", "-k", str(inputs.l2_kernel), "-i", str(initrd),
           "-c", str(args.cpus), "-m", str(args.mem)]
    log(" ".join(cmd))
    return subprocess.call(cmd)


def cmd_fetch(args):
    for arch in args.arch or ALL_ARCHES:
        inputs = Inputs(arch)
        log(f"{arch}: kernel {inputs.kernel_version} ({inputs.l1_kernel.name}), "
            f"busybox {inputs.busybox_version}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("test")
    t.add_argument("arch", nargs="*")
    t.add_argument("--supported", action="store_true",
                   help="only the architectures lkvm supports today")
    t.add_argument("--timeout", type=int, default=300)
    t.add_argument("--no-kut", action="store_true", help="leave out kvm-unit-tests")
    k = sub.add_parser("kut", help="kvm-unit-tests inside L1")
    k.add_argument("arch", nargs="*")
    k.add_argument("--l1", default=None, help="only this L1 machine (default, aia)")
    k.add_argument("--only", default=None, help="only cases whose name matches this regex")
    b = sub.add_parser("boot")
    b.add_argument("arch")
    b.add_argument("-c", "--cpus", type=int, default=1)
    b.add_argument("-m", "--mem", default="256", help="lkvm's -m (SIZE or, on arm64, SIZE@ADDR)")
    b.add_argument("--timeout", type=int, default=300)
    b.add_argument("--lkvm-args", default="", help="extra lkvm options, e.g. '--irqchip gicv3'")
    b.add_argument("--l1", default=None, help="L1 machine variant from pins.toml")
    b.add_argument("--kparams", default="", help="extra L2 kernel parameters")
    b.add_argument("--expect", default=None, help="text L2's console must show")
    b.add_argument("--virtio", action="store_true",
                   help="give L2 a virtio disk, 9p share and rng, and check them")
    b.add_argument("--sandbox", action="store_true",
                   help="run `lkvm sandbox -- uname -m` in L1 instead of a boot")
    b.add_argument("--compat", action="store_true",
                   help="run kvmtool's workflows in L1 (compat.py) instead of a boot")
    ab = sub.add_parser("ab", help="alternate boots with lkvm and kvmtool, count failures")
    ab.add_argument("arch")
    ab.add_argument("-c", "--cpus", type=int, default=2)
    ab.add_argument("--runs", type=int, default=60, help="boots per VMM")
    ab.add_argument("--timeout", type=int, default=300)
    ab.add_argument("--kparams", default="", help="extra L2 kernel parameters")
    ab.add_argument("--lkvm-args", default="", help="extra options for both VMMs")
    be = sub.add_parser("bench")
    be.add_argument("arch", nargs="*")
    be.add_argument("--timeout", type=int, default=300)
    be.add_argument("--net-only", action="store_true",
                    help="only the network throughput (user-mode vs tap)")
    r = sub.add_parser("run")
    r.add_argument("arch")
    r.add_argument("-c", "--cpus", type=int, default=2)
    r.add_argument("-m", "--mem", type=int, default=256)
    r.add_argument("--lkvm-args", default="", help="extra lkvm options")
    r.add_argument("--l1", default=None, help="L1 machine variant from pins.toml")
    rh = sub.add_parser("run-host")
    rh.add_argument("-c", "--cpus", type=int, default=2)
    rh.add_argument("-m", "--mem", type=int, default=512)
    f = sub.add_parser("fetch")
    f.add_argument("arch", nargs="*")
    args = ap.parse_args()
    handler = {"test": cmd_test, "kut": cmd_kut, "boot": cmd_boot, "bench": cmd_bench,
               "ab": cmd_ab, "run": cmd_run, "run-host": cmd_run_host,
               "fetch": cmd_fetch}[args.cmd]
    try:
        return handler(args)
    except LabError as e:
        log(f"error: {e}")
        return 1
    except subprocess.CalledProcessError as e:
        log(f"error: {' '.join(map(str, e.cmd))} failed with {e.returncode}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
