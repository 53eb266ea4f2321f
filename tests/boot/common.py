"""What the boot lab's modules share: paths, the pinned inputs, errors,
logging and subprocesses."""

import hashlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CACHE = Path(os.environ.get("LKVM_CACHE", str(Path.home() / ".cache" / "lkvm")))
# What one lab run builds and writes (L1 initramfs, disks, console logs):
# per checkout, so labs run from two worktrees at once keep apart; the
# downloads above it are shared.
WORK = CACHE / "work" / hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
PINS = tomllib.loads((HERE / "pins.toml").read_text())
ALL_ARCHES = list(PINS)


class LabError(Exception):
    pass


def log(msg):
    print(f"lab: {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)
