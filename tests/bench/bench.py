#!/usr/bin/env python3
"""lkvm's VMM-overhead benchmarks on the host's /dev/kvm, as JSON lines.

Measures, with the static release binary and the tiny PVH test guests:
  startup_to_exit   process start to reaped exit, 1 vCPU, 256 MiB (median of 20)
  peak_rss          the child's peak RSS over those runs
  pio_exits         port-write exits per second (guest loop of 100000 writes)
Each with lkvm's seccomp filters on (the default) and off (`"seccomp"` in
every line). Benchmarks report numbers; they never pass or fail.
"""
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "target", "bench")
LKVM = os.path.join(ROOT, "target", "x86_64-unknown-linux-gnu", "release", "lkvm")
LOOP_WRITES = 100000


def sh(*cmd):
    subprocess.run(cmd, check=True)


def build():
    os.makedirs(OUT, exist_ok=True)
    sh("cc", "-O2", "-static", "-o", os.path.join(OUT, "runner"),
       os.path.join(ROOT, "tests", "bench", "runner.c"))
    src = os.path.join(ROOT, "tests", "guests")
    for guest in ("hello", "loop"):
        obj = os.path.join(OUT, guest + ".o")
        sh("as", "--64", "-I", src, "-o", obj, os.path.join(src, guest + ".s"))
        sh("ld", "--no-warn-rwx-segments", "-m", "elf_x86_64", "-T",
           os.path.join(src, "guest.ld"), "-o", os.path.join(OUT, guest + ".elf"), obj)
    if not os.path.exists(LKVM):
        sys.exit("build the static release binary first (make build)")


def runs(n, guest, seccomp):
    out = subprocess.run(
        [os.path.join(OUT, "runner"), str(n), LKVM, "run", "--nodefaults", "--seccomp", seccomp,
         "-k", os.path.join(OUT, guest + ".elf"), "-m", "256", "-c", "1", "--loglevel", "error"],
        check=True, capture_output=True, text=True).stdout
    results = [json.loads(line) for line in out.splitlines()]
    bad = [r for r in results if r["status"] != 0]
    if bad:
        sys.exit(f"lkvm failed during the benchmark: {bad[0]}")
    return results


def emit(name, unit, values, **extra):
    rec = {"bench": name, "unit": unit, "median": round(statistics.median(values), 3),
           "min": round(min(values), 3), "max": round(max(values), 3), "runs": len(values)}
    rec.update(extra)
    print(json.dumps(rec), flush=True)


def main():
    build()
    runs(3, "hello", "on")  # warm caches
    for seccomp in ("on", "off"):
        hello = runs(20, "hello", seccomp)
        ms = [r["ms"] for r in hello]
        emit("startup_to_exit", "ms", ms, vcpus=1, mem_mib=256, target_max=25, seccomp=seccomp)
        emit("peak_rss", "KiB", [r["maxrss_kib"] for r in hello], target_max=3072,
             seccomp=seccomp)
        loop = [r["ms"] for r in runs(5, "loop", seccomp)]
        extra = statistics.median(loop) - statistics.median(ms)
        rate = LOOP_WRITES / (extra / 1000.0)
        print(json.dumps({"bench": "pio_exits", "unit": "exits/s", "median": round(rate),
                          "loop_ms_median": round(statistics.median(loop), 3),
                          "writes": LOOP_WRITES, "seccomp": seccomp}), flush=True)


if __name__ == "__main__":
    main()
