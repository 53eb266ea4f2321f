"""The boot lab's kvm-unit-tests suite: upstream's tests, built from the
tarball in ../shared/third_party for --target=kvmtool, run by the static
lkvm inside an L1 Linux under QEMU, all cases of one L1 machine in one
boot. See docs/testing.md.

This module builds the tests, writes the case list L1's init runs, reads
L1's console and turns each case's own output into one result; lab.py
builds L1 and starts QEMU."""

import hashlib
import json
import os
import re
import select
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import kutcfg
from common import CACHE, PINS, ROOT, LabError, log, run

TARBALL_NAME = "kvm-unit-tests-1da1819e.tar.gz"
# Overrides the tarball's path (a file).
TARBALL_ENV = "LKVM_KUT_TARBALL"
SUITE = "kvm-unit-tests"
# Lab architecture -> (KUT's --arch, cross prefix, KUT's test directory).
ARCHES = {"aarch64": ("arm64", "aarch64-linux-gnu-", "arm"),
          "riscv64": ("riscv64", "riscv64-linux-gnu-", "riscv")}
# The L1 machines each architecture's cases run on (a pins.toml variant,
# None for the default) and the lkvm options added to a case whose
# kvmtool_params name no irqchip. riscv64: the default L1 has no AIA, so
# lkvm's userspace PLIC; the aia L1 gives L2 an in-kernel AIA.
MACHINES = {"aarch64": [(None, [])],
            "riscv64": [(None, ["--irqchip", "plic"]), ("aia", ["--irqchip", "aia"])]}
# Where the .flat files are in L1, and the environ every case gets as
# its initrd, as upstream's run scripts give one (kutcfg.environ).
FLAT_DIR = "/kut"
ENVIRON = f"{FLAT_DIR}/environ"


class Expected:
    """An understood failure of one case. `why` starts "L1 lacks it:",
    "L1 flaw:" (L1's emulation misbehaves; shown with kvmtool too), "lkvm
    gap:" (a known missing lkvm feature) or "lkvm bug:" (with the case's
    output in the report that added it). The failure counts as expected
    only when the case's output or error shows `shows` and each of its
    FAIL: lines matches `fails` (without `fails`, no FAIL: line at all),
    so the case failing in any other way still fails. A `flaky` case
    fails only sometimes; any other listed case that passes is reported
    so its entry can go."""

    def __init__(self, why, shows, fails=None, flaky=False):
        self.why, self.shows, self.fails, self.flaky = why, shows, fails, flaky

    def matches(self, error, body):
        if not any(self.shows in line for line in [error, *body]):
            return f"never showed {self.shows!r}"
        for line in body:
            line = line.strip()
            if line.startswith("FAIL:") and not (self.fails and re.fullmatch(self.fails, line)):
                return f"also failed otherwise: {line!r}"
        return None


NO_VGICV2 = Expected(
    "L1 lacks it: the default arm64 L1 is QEMU virt with gic-version=3 and no GICv2 "
    "compatibility, so KVM in L1 cannot create a vGICv2; lkvm refuses --irqchip=gicv2 "
    "saying so", "cannot give guests that interrupt controller")
# Seen in about 1 run in 10 on either riscv64 L1 (7 of about 70); kvmtool b48735e on the
# same L1 fails it as often (3 of 20 runs, the timer up to 3.9 ms early).
SBI_TIMER = Expected(
    "L1 flaw: sbi's set_timer checks that the timer interrupt comes 200-400 ms after it was "
    "set; on these TCG L1s it sometimes comes up to 4 ms early (or, on a loaded host, late), "
    "with kvmtool as with lkvm; lkvm takes no part in SBI TIME (L1's KVM serves it)",
    "FAIL: sbi: time: set_timer: timer delay honored",
    fails=r"FAIL: sbi: time: set_timer: timer delay honored( for mask irq test)?", flaky=True)
# Keyed by (arch, L1 machine, case).
XFAIL = {
    **{("aarch64", "default", c): NO_VGICV2
       for c in ("gicv2-ipi", "gicv2-mmio", "gicv2-mmio-up", "gicv2-mmio-3p", "gicv2-active")},
    ("aarch64", "default", "pmu-event-introspection"): Expected(
        "L1 lacks it: the test requires events 0x8 (INST_RETIRED) and 0x1b (INST_SPEC); KVM "
        "in L1 offers only the events of L1's PMU, and QEMU's TCG PMU has INST_RETIRED only "
        "with -icount and no INST_SPEC",
        "event 0x1b is not supported",
        fails=r"FAIL: pmu: pmu-event-introspection: Check required events are implemented"),
    ("riscv64", "default", "sbi"): SBI_TIMER,
    ("riscv64", "aia", "sbi"): SBI_TIMER,
}
# How long L1 may take from QEMU's start to its first case, and from one
# case's end to the next one's start, before the lab gives up.
L1_BOOT_S = 300
BETWEEN_CASES_S = 60
# A case may run this much longer than its own timeout (L1's `timeout`
# kills lkvm, then the end line must still come) before L1 counts as stuck.
CASE_GRACE_S = 60
BEGIN = re.compile(r"LKVM-KUT-BEGIN (\S+)")
END = re.compile(r"LKVM-KUT-END (\S+) rc=(\d+)")
# KUT's exit line (lib/libcflat exit()); upstream takes the first one.
EXIT = re.compile(r"^EXIT: STATUS=(\d+)")
# micro-bench's figure lines: name, total ns, average ns.
FIGURE = re.compile(r"^(\w+)\s+(\d+)\.(\d+)\s+(\d+)\.(\d+)\s*$")


def tarball():
    """The tarball's path, or None where it is absent (a clone without
    ../shared)."""
    path = Path(os.environ.get(TARBALL_ENV) or ROOT.parent / "shared" / "third_party"
                / TARBALL_NAME)
    return path if path.is_file() else None


def absent_message():
    where = os.environ.get(TARBALL_ENV) or ROOT.parent / "shared" / "third_party" / TARBALL_NAME
    return f"{SUITE}: {where} not found (set {TARBALL_ENV} to use another file)"


def build(arch, tar):
    """KUT built for `arch` with --target=kvmtool in the lab cache, keyed
    by the tarball's sha256 and the architecture, so a second run reuses
    it. Returns the built tree (kvm-unit-tests/)."""
    kut_arch, cross, _ = ARCHES[arch]
    digest = hashlib.sha256(tar.read_bytes()).hexdigest()
    top = CACHE / "kut" / f"{digest[:16]}-{kut_arch}"
    tree = top / "kvm-unit-tests"
    if (top / ".done").exists():
        return tree
    shutil.rmtree(top, ignore_errors=True)
    top.mkdir(parents=True)
    build_log = top / "build.log"
    log(f"{SUITE}: building for {kut_arch} in {top}")
    try:
        with open(build_log, "w") as out:
            run(["tar", "-xzf", str(tar), "-C", str(top)], stdout=out, stderr=out)
            run(["./configure", f"--arch={kut_arch}", f"--cross-prefix={cross}",
                 "--target=kvmtool"], cwd=tree, stdout=out, stderr=out)
            run(["make", f"-j{os.cpu_count() or 1}"], cwd=tree, stdout=out, stderr=out)
    except (subprocess.CalledProcessError, OSError) as e:
        tail = build_log.read_text(errors="replace").splitlines()[-20:]
        raise LabError(f"{SUITE} build for {kut_arch} failed ({e}); log {build_log}:\n"
                       + "\n".join(tail)) from e
    (top / ".done").write_text(digest + "\n")
    return tree


def l1_cpus(variant_pins):
    """MAX_SMP as upstream probes it inside L1: L1's CPU count (-smp)."""
    qemu = variant_pins["qemu"]
    return int(qemu[qemu.index("-smp") + 1].split(",")[0])


def machine_pins(arch, variant):
    return PINS[arch] if variant is None else PINS[arch]["variants"][variant]


def cases(arch, variant, tree, only=None, want_nodefault=()):
    """(cases, {name: why not run}) of one L1 machine, with the machine's
    default irqchip added where kvmtool_params name none."""
    kut_arch, _, test_dir = ARCHES[arch]
    entries = kutcfg.parse((tree / test_dir / "unittests.cfg").read_text())
    try:
        chosen, skipped = kutcfg.select(entries, kut_arch, l1_cpus(machine_pins(arch, variant)),
                                        FLAT_DIR, want_nodefault)
    except kutcfg.CfgError as e:
        raise LabError(f"{SUITE}: {test_dir}/unittests.cfg: {e}") from e
    extra = dict(MACHINES[arch])[variant]
    for c in chosen:
        if extra and not any(a == "--irqchip" or a.startswith("--irqchip=") for a in c.args):
            c.args += extra
        # run_test() puts the environ last: `"${@}" $INITRD`.
        c.args += ["--initrd", ENVIRON]
    if only:
        chosen = [c for c in chosen if re.fullmatch(only, c.name)]
    return chosen, skipped


def cases_script(chosen):
    """The list L1's init sources: one run_case line per case (name,
    timeout in seconds, the lkvm command)."""
    lines = ["# Written by tests/boot/kut.py; sourced by l1-init.sh (lkvm.mode=kut)."]
    for c in chosen:
        cmd = ["/lkvm", "run", *c.args]
        lines.append(f"run_case {shlex.quote(c.name)} {c.timeout} "
                     + " ".join(shlex.quote(a) for a in cmd))
    return "\n".join(lines) + "\n"


def uname_r(l1_kernel):
    """L1's `uname -r`, from its kernel's file name (boot/vmlinuz-RELEASE
    in the Debian package)."""
    return Path(l1_kernel).name.split("-", 1)[1]


def l1_files(tree, arch, chosen, l1_release):
    """{path in L1's initramfs: bytes}: the .flat files the cases use, the
    environ for L1's kernel release and the case list."""
    _, _, test_dir = ARCHES[arch]
    files = {f"kut/{flat}": (tree / test_dir / flat).read_bytes()
             for flat in sorted({c.flat for c in chosen})}
    env = kutcfg.environ((tree / "errata.txt").read_text(), l1_release)
    files[ENVIRON.lstrip("/")] = env.encode()
    files["kut/cases.sh"] = cases_script(chosen).encode()
    return files


def watch(proc, chosen):
    """Reads L1's console until its init says it is done, L1 stops, or a
    deadline passes. Returns ([(seconds since start, line)], reason or
    None); the deadline moves with each case's begin and end line."""
    timeouts = {c.name: c.timeout for c in chosen}
    t0 = time.monotonic()
    deadline, waiting_for = t0 + L1_BOOT_S, "L1's first case"
    lines, pending, reason = [], b"", None
    while True:
        now = time.monotonic()
        if now > deadline:
            return lines, f"no progress: timed out waiting for {waiting_for}"
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if not ready:
            if proc.poll() is not None:
                return lines, reason or f"QEMU exited ({proc.returncode}) before L1 finished"
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            proc.wait()
            return lines, reason or f"QEMU exited ({proc.returncode}) before L1 finished"
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            line = raw.decode(errors="replace").rstrip("\r")
            t = time.monotonic() - t0
            lines.append((round(t, 3), line))
            m = BEGIN.search(line)
            if m:
                deadline = time.monotonic() + timeouts.get(m.group(1), 0) + CASE_GRACE_S
                waiting_for = f"the end of case {m.group(1)}"
            elif END.search(line):
                deadline = time.monotonic() + BETWEEN_CASES_S
                waiting_for = "the next case"
            elif "LKVM-L1-NOKVM" in line:
                reason = "KVM is not usable in L1"
            elif "Kernel panic" in line:
                reason = reason or "L1 kernel panic: " + line.strip()
            elif "LKVM-EXIT" in line:
                return lines, reason


def case_outputs(lines):
    """{case: (its lines, lkvm's exit status or None, seconds)} from L1's
    console: only the lines between a case's begin and end lines."""
    out, cur, start, buf = {}, None, 0.0, []
    for t, line in lines:
        m = BEGIN.search(line)
        if m:
            cur, start, buf = m.group(1), t, []
            continue
        m = END.search(line)
        if m and cur == m.group(1):
            out[cur] = (buf, int(m.group(2)), round(t - start, 3))
            cur = None
            continue
        if cur is not None:
            buf.append(line)
    if cur is not None:
        # Begun, never ended: L1 stopped inside it.
        out[cur] = (buf, None, None)
    return out


def judge(case, output, arch, l1):
    """One case's result record. Upstream's rule (scripts/arch-run.bash,
    kvmtool_fixup_return_code): lkvm exiting 0 or 1 hands over to the
    case's own first `EXIT: STATUS=N` line, 1 passing and 77 skipping;
    any other exit status of lkvm (124/143/137: killed by `timeout`) is
    a failure as is. No EXIT line is a failure: no status is invented."""
    rec = {"suite": SUITE, "arch": arch, "l1": l1, "case": case.name, "status": None,
           "lkvm_exit": None, "seconds": None, "timeout_s": case.timeout,
           "cmdline": " ".join(["lkvm", "run", *map(shlex.quote, case.args)])}
    if output is None:
        rec.update(result="fail", error="never started (L1 stopped before it)")
        return rec
    body, rc, secs = output
    rec.update(lkvm_exit=rc, seconds=secs)
    status = next((int(m.group(1)) for m in (EXIT.match(l.strip()) for l in body) if m), None)
    rec["status"] = status
    summary = next((l.strip() for l in reversed(body) if l.strip().startswith("SUMMARY:")), None)
    if summary:
        rec["summary"] = summary
    if rc is None:
        error = "no end line: L1 stopped during the case"
    elif rc in (124, 137, 143):
        error = f"killed by L1's timeout after {case.timeout} s (lkvm exit {rc})"
    elif rc not in (0, 1):
        error = f"lkvm exited {rc}"
    elif status is None:
        error = f"no EXIT: STATUS line (lkvm exited {rc})"
    elif status == 1:
        error = None
    elif status == 77:
        rec["result"] = "skip"
        return rec
    else:
        error = f"EXIT: STATUS={status}"
    said = next((l.strip() for l in body if "lkvm: error:" in l), None)
    if error is not None and said:
        # lkvm's own error line says more than its exit status.
        error += f": {said}"
    if error is None:
        rec["result"] = "pass"
    else:
        rec["error"] = error
        expected = XFAIL.get((arch, l1, case.name))
        unmatched = expected.matches(error, body) if expected else None
        if unmatched:
            rec["xfail_unmatched"] = f"listed as an expected failure, but {unmatched}"
            rec["error"] += f"; {rec['xfail_unmatched']}"
        rec["result"] = "xfail" if expected and not unmatched else "fail"
        if rec["result"] == "xfail":
            rec["xfail_reason"] = expected.why
    expected = XFAIL.get((arch, l1, case.name))
    if expected and not expected.flaky and rec["result"] in ("pass", "skip"):
        rec["xfail_stale"] = True
    return rec


def bench_figures(body):
    """micro-bench's figures: [(name, total ns, average ns)]."""
    figures = []
    for line in body:
        m = FIGURE.match(line.strip())
        if m:
            figures.append((m.group(1), float(f"{m.group(2)}.{m.group(3)}"),
                            float(f"{m.group(4)}.{m.group(5)}")))
    return figures


def report(arch, l1, chosen, outputs, skipped, suite_error, seconds, workdir):
    """Prints one JSON line per case, then one summary line; logs each
    failing case's own output. Returns [(what, log file or None)] of the
    failures (an xfail is not one)."""
    failures, counts = [], {"pass": 0, "skip": 0, "fail": 0, "xfail": 0}
    for c in chosen:
        out = outputs.get(c.name)
        rec = judge(c, out, arch, l1)
        counts[rec["result"]] += 1
        what = f"{SUITE} {arch} (L1 {l1}) {c.name}"
        if rec.get("xfail_stale"):
            now = "passed" if rec["result"] == "pass" else "skipped"
            log(f"{what}: listed in kut.XFAIL but {now}; remove its entry")
        if out is not None and rec["result"] in ("fail", "xfail"):
            case_log = workdir / f"kut-{l1}-{c.name}.log"
            case_log.write_text("\n".join(out[0]) + "\n")
            rec["case_log"] = str(case_log)
        print(json.dumps(rec), flush=True)
        if rec["result"] == "xfail":
            log(f"{what}: expected failure ({rec['error']}): {rec['xfail_reason']}")
        if rec["result"] == "fail":
            log(f"{what}: FAILED: {rec['error']}; its output:")
            for line in (out[0] if out else [])[-40:]:
                log(f"    {line}")
            failures.append((f"{what}: {rec['error']}", rec.get("case_log")))
    if suite_error:
        failures.append((f"{SUITE} {arch} (L1 {l1}): {suite_error}", None))
    summary = {"suite": SUITE, "arch": arch, "l1": l1, "summary": True, **counts,
               "not_run": skipped, "seconds": round(seconds, 1),
               "result": "fail" if failures else "pass"}
    if suite_error:
        summary["error"] = suite_error
    print(json.dumps(summary), flush=True)
    log(f"{SUITE} {arch} (L1 {l1}): {counts['pass']} passed, {counts['skip']} skipped, "
        f"{counts['fail']} failed, {counts['xfail']} expected failures, {len(skipped)} not run "
        f"by upstream's rules, in {seconds:.0f} s")
    return failures
