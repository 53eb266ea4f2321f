"""What the boot lab's modules share: paths, the pinned inputs, errors,
logging and subprocesses."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CACHE = Path(os.environ.get("LKVM_CACHE", str(Path.home() / ".cache" / "lkvm")))
PINS = tomllib.loads((HERE / "pins.toml").read_text())
ALL_ARCHES = list(PINS)


class LabError(Exception):
    pass


def log(msg):
    print(f"lab: {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)
