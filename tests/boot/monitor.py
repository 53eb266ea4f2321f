"""QEMU's human monitor on a unix socket: when a boot times out, the lab
asks it where L1's CPUs are before killing QEMU, so a hang says whether
L1 itself stopped (an L1 CPU spinning or halted for good) or only L2."""

import re
import socket

PROMPT = b"(qemu) "
# The monitor's line editor echoes input with terminal control sequences.
ESCAPES = re.compile(rb"\x1b\[[0-9;]*[A-Za-z]|\r")
# The program counter as `info registers` names it on x86_64, arm64,
# riscv64 and ppc64.
PC = re.compile(r"\b(RIP|PC|pc|NIP)\s*[=:]?\s*([0-9a-fA-F]{8,16})\b")
CPU_HEADER = re.compile(r"^CPU#(\d+)", re.M)
# L1's `LKVM-L1-TEXT vmlinux=0xS-0xE kvm=0xS+SIZE ...` line.
TEXT_RANGE = re.compile(r"([\w-]+)=0x([0-9a-fA-F]+)([-+])(?:0x([0-9a-fA-F]+)|(\d+))")


class MonitorError(Exception):
    pass


def qemu_args(path):
    return ["-monitor", f"unix:{path},server=on,wait=off"]


def _until_prompt(sock):
    buf = b""
    while not buf.endswith(PROMPT):
        chunk = sock.recv(65536)
        if not chunk:
            raise MonitorError("QEMU closed its monitor")
        buf += chunk
    return ESCAPES.sub(b"", buf[: -len(PROMPT)]).decode(errors="replace")


def ask(path, commands, timeout=15):
    """Runs monitor commands in order; returns each one's output."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            _until_prompt(sock)
            out = {}
            for command in commands:
                sock.sendall(command.encode() + b"\n")
                text = _until_prompt(sock)
                # Drop the echoed command line.
                out[command] = text.split("\n", 1)[1] if "\n" in text else ""
            return out
    except OSError as e:
        raise MonitorError(f"QEMU's monitor at {path}: {e}") from e


def text_ranges(line):
    """[(name, start, end)] from L1's LKVM-L1-TEXT line."""
    ranges = []
    for m in TEXT_RANGE.finditer(line):
        start = int(m.group(2), 16)
        end = int(m.group(4), 16) if m.group(3) == "-" else start + int(m.group(5))
        ranges.append((m.group(1), start, end))
    return ranges


def locate(pc, ranges):
    """`name+0xoffset` for a program counter inside L1's text or a module."""
    for name, start, end in ranges:
        if start <= pc < end:
            return f"{name}+{pc - start:#x}"
    return None


def cpu_summary(registers, ranges=()):
    """One short entry per CPU from `info registers -a`: its program
    counter (and where in L1 that is), and `halted` where x86 says HLT=1."""
    heads = list(CPU_HEADER.finditer(registers))
    summary = []
    for i, head in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(registers)
        block = registers[head.start():end]
        pc = PC.search(block)
        entry = f"#{head.group(1)} " + (f"{pc.group(1)}={pc.group(2)}" if pc else "pc unknown")
        where = pc and locate(int(pc.group(2), 16), ranges)
        if where:
            entry += f" ({where})"
        if "HLT=1" in block:
            entry += " halted"
        summary.append(entry)
    return summary
