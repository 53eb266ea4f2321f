"""kvmtool, the reference VMM, built from ../shared/third_party for the boot
lab's A/B comparisons (`lab.py ab`): the same L1, the same L2 and command
line, with kvmtool instead of lkvm inside L1. Built static, in the lab
cache, keyed by the tarball's checksum; never part of lkvm."""

import hashlib
import os
import shutil
import subprocess
import tarfile

from common import CACHE, PINS, ROOT, LabError, log

TARBALL = "kvmtool-b48735e.tar.gz"
# kvmtool's ARCH names; x86 needs no libfdt, the others would.
KVMTOOL_ARCH = {"x86_64": "x86"}


def tarball():
    base = os.environ.get("LKVM_THIRD_PARTY", str(ROOT.parent / "shared" / "third_party"))
    path = os.path.join(base, TARBALL)
    return path if os.path.exists(path) else None


def build(arch):
    """The static kvmtool binary for `arch`."""
    if arch not in KVMTOOL_ARCH:
        raise LabError(f"the reference kvmtool is built for {', '.join(KVMTOOL_ARCH)} only")
    tar = tarball()
    if tar is None:
        raise LabError(f"{TARBALL} not found (LKVM_THIRD_PARTY or ../shared/third_party)")
    with open(tar, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    out = CACHE / "tools" / f"kvmtool-{arch}-{digest}"
    if out.exists():
        return out
    tree = CACHE / "build" / f"kvmtool-{arch}-{digest}"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    with tarfile.open(tar) as t:
        t.extractall(tree, filter="data")
    src = tree / "kvmtool"
    cc = PINS[arch]["cc"]
    log(f"building kvmtool for {arch} (reference VMM)")
    logfile = tree / "build.log"
    with open(logfile, "w") as lf:
        res = subprocess.run(["make", f"-j{os.cpu_count() or 2}", f"ARCH={KVMTOOL_ARCH[arch]}",
                              f"CC={cc}", "lkvm-static"], cwd=src, stdout=lf, stderr=lf)
    if res.returncode != 0:
        raise LabError(f"kvmtool did not build; see {logfile}")
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "lkvm-static", out)
    return out
