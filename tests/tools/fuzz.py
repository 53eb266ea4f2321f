#!/usr/bin/env python3
"""Runs lkvm's fuzz targets (fuzz/fuzz_targets/*.rs) for a given time each
and says what each did: executions, executions per second, coverage, and
whether it crashed, timed out or ran out of memory.

    tests/tools/fuzz.py run   [--seconds N] [--jobs J] [TARGET...]
    tests/tools/fuzz.py smoke [--seconds N] [--jobs J] [TARGET...]

The targets must be built (`cargo +nightly fuzz build` in fuzz/, which
`make fuzz` and `make fuzz-smoke` do first). Every run reads the
committed seeds in fuzz/corpus/TARGET and never writes there:

- `run` keeps what it finds in $FUZZ_WORK/corpus/TARGET (default
  fuzz/target/fuzz-work), so a later run goes on from there;
- `smoke` starts from the committed seeds alone, in a scratch corpus
  that is removed afterwards.

Each target runs with libFuzzer's -rss_limit_mb=2048 -timeout=10; a
crash, a timeout, an out-of-memory, a leak or an escape the 9p oracle
saw fails the target, its input is kept in $FUZZ_WORK/artifacts/TARGET/
and its log in $FUZZ_WORK/logs/TARGET.log (the last lines are printed).
The exit status is 1 if any target failed. A summary goes to stdout as a
table and to $FUZZ_WORK/summary-MODE.json.
"""

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FUZZ = os.path.join(ROOT, "fuzz")
BIN_DIR = os.path.join(FUZZ, "target", "x86_64-unknown-linux-gnu", "release")
LIBFUZZER_FLAGS = ["-rss_limit_mb=2048", "-timeout=10", "-max_len=8192", "-print_final_stats=1"]


def all_targets():
    d = os.path.join(FUZZ, "fuzz_targets")
    return sorted(f[:-3] for f in os.listdir(d) if f.endswith(".rs"))


def parse_log(text):
    """Figures from a libFuzzer log."""
    out = {}
    for key in ("number_of_executed_units", "average_exec_per_sec", "new_units_added", "peak_rss_mb"):
        m = re.search(r"stat::%s:\s+(\d+)" % key, text)
        if m:
            out[key] = int(m.group(1))
    status = re.findall(r"^#\d+\s+\S+\s+cov: (\d+) ft: (\d+) corp: (\d+)/", text, re.M)
    if status:
        cov, ft, corp = status[-1]
        out.update(cov=int(cov), ft=int(ft), corpus=int(corp))
    m = re.search(r"^Done (\d+) runs in (\d+) second", text, re.M)
    if m:
        out.setdefault("number_of_executed_units", int(m.group(1)))
    return out


def failure(text, rc):
    for pat, what in (
        (r"9p ESCAPE: (.*)", "9p escape: {}"),
        (r"ERROR: libFuzzer: timeout", "timeout"),
        (r"ERROR: libFuzzer: out-of-memory", "out of memory"),
        (r"ERROR: libFuzzer: (?:malloc|fuzz target exited)", "libFuzzer error"),
        (r"ERROR: LeakSanitizer", "leak"),
        (r"ERROR: AddressSanitizer: (\S+)", "AddressSanitizer: {}"),
        (r"panicked at (.*)", "panic at {}"),
        (r"ERROR: libFuzzer: deadly signal", "crash (deadly signal)"),
    ):
        m = re.search(pat, text)
        if m:
            return what.format(*m.groups())
    return f"exit status {rc}"


def run_one(target, mode, seconds, work):
    binary = os.path.join(BIN_DIR, target)
    seeds = os.path.join(FUZZ, "corpus", target)
    logs = os.path.join(work, "logs")
    artifacts = os.path.join(work, "artifacts", target)
    os.makedirs(logs, exist_ok=True)
    os.makedirs(artifacts, exist_ok=True)
    scratch = None
    if mode == "run":
        corpus = os.path.join(work, "corpus", target)
        os.makedirs(corpus, exist_ok=True)
    else:
        corpus = scratch = tempfile.mkdtemp(prefix=f"lkvm-fuzz-smoke-{target}-")
    cmd = [binary, corpus] + ([seeds] if os.path.isdir(seeds) else [])
    cmd += LIBFUZZER_FLAGS + [f"-max_total_time={seconds}", f"-artifact_prefix={artifacts}/"]
    env = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "detect_odr_violation=0"))
    log_path = os.path.join(logs, f"{target}.log")
    start = time.monotonic()
    try:
        with open(log_path, "w") as log:
            # A hung target is killed well after libFuzzer's own limits.
            p = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=seconds + 120)
            rc = p.returncode
    except FileNotFoundError:
        rc = 127
        with open(log_path, "a") as log:
            log.write(f"{binary} is missing: build the targets first (make fuzz-build)\n")
    except subprocess.TimeoutExpired:
        rc = 124
        with open(log_path, "a") as log:
            log.write(f"killed after {seconds + 120} s\n")
    elapsed = time.monotonic() - start
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    with open(log_path, errors="replace") as f:
        text = f.read()
    r = {"target": target, "seconds": round(elapsed, 1), "exit": rc}
    r.update(parse_log(text))
    if rc != 0:
        r["failure"] = failure(text, rc)
        r["log"] = log_path
        r["tail"] = text.splitlines()[-30:]
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["run", "smoke"])
    ap.add_argument("--seconds", type=int, default=None, help="per target (run: 60, smoke: 10)")
    ap.add_argument("--jobs", type=int, default=1, help="targets fuzzed at once")
    ap.add_argument("targets", nargs="*")
    a = ap.parse_intermixed_args()
    seconds = a.seconds or (60 if a.mode == "run" else 10)
    known = all_targets()
    targets = a.targets or known
    unknown = [t for t in targets if t not in known]
    if unknown:
        sys.exit(f"fuzz: unknown target(s) {' '.join(unknown)}; known: {' '.join(known)}")
    work = os.environ.get("FUZZ_WORK") or os.path.join(FUZZ, "target", "fuzz-work")
    os.makedirs(work, exist_ok=True)
    print(f"fuzz {a.mode}: {len(targets)} targets, {seconds} s each, {a.jobs} at a time", flush=True)
    start = time.monotonic()
    results = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        futures = {pool.submit(run_one, t, a.mode, seconds, work): t for t in targets}
        for fut in concurrent.futures.as_completed(futures):
            r = fut.result()
            results.append(r)
            state = "FAILED: " + r["failure"] if "failure" in r else "ok"
            print(f"  {r['target']:16} {r.get('number_of_executed_units', 0):>10} execs "
                  f"{r.get('average_exec_per_sec', 0):>7}/s cov {r.get('cov', 0):>5} {state}", flush=True)
    results.sort(key=lambda r: r["target"])
    total = time.monotonic() - start
    print()
    print(f"{'target':16} {'seconds':>8} {'executions':>11} {'exec/s':>8} {'cov':>6} {'ft':>6} {'corpus':>6}  result")
    for r in results:
        print(f"{r['target']:16} {r['seconds']:>8} {r.get('number_of_executed_units', 0):>11} "
              f"{r.get('average_exec_per_sec', 0):>8} {r.get('cov', 0):>6} {r.get('ft', 0):>6} "
              f"{r.get('corpus', 0):>6}  {r.get('failure', 'ok')}")
    failed = [r for r in results if "failure" in r]
    for r in failed:
        print(f"\n== {r['target']}: {r['failure']} (log {r['log']}, input in "
              f"{os.path.join(work, 'artifacts', r['target'])}/)")
        print("\n".join(r["tail"]))
    with open(os.path.join(work, f"summary-{a.mode}.json"), "w") as f:
        json.dump({"mode": a.mode, "seconds_each": seconds, "wall_seconds": round(total, 1),
                   "results": results}, f, indent=1)
    print(f"\nfuzz {a.mode}: {len(results) - len(failed)}/{len(results)} targets passed in {total:.0f} s")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
