"""kvmtool's workflows, run unchanged on lkvm inside one L1 boot: the
kernel as `run`'s first argument with a disk that is the root (and no
root= from the user), `lkvm run -k K` with neither disk nor initrd (the
default rootfs, the host's / at /host, a distribution kernel's modules
found on the host), `lkvm sandbox ./prog` from a working directory, and
`lkvm sandbox -- CMD` with an initrd.

L1's init runs the stages in order (l1-init.sh, mode compat), each
between `LKVM-COMPAT-BEGIN name` and `LKVM-COMPAT-END name rc=N`. This
module knows what each stage must show; the lab types one line into the
default rootfs's shell."""

import re

STAGES = ("rootdisk", "defaultrootfs", "sandbox-prog", "sandbox-dashes")
BEGIN = re.compile(r"LKVM-COMPAT-BEGIN (\S+)")
END = re.compile(r"LKVM-COMPAT-END (\S+) rc=(\d+)")
ROOTDISK = re.compile(r"LKVM-ROOTDISK root=(\S*) mounted=(\S*) token=(\S*) arch=(\S*)")
HOSTPROG = re.compile(r"LKVM-HOSTPROG arch=(\S*) token=(\S*) cwd=(\S*) root=(\S*)")
# lkvm's rootfs init greets on the console once its shell is about to start.
SHELL_BANNER = "type 'exit' to end it"
# What lkvm says when it gives a distribution kernel its 9p modules.
MODULES_LINE = "has its 9p root support as modules"


def typed_line(token):
    """What the lab types into the default rootfs's shell: run L1's static
    program through /host, try to write the read-only host, end."""
    # The answer is built at run time, so the shell's echo of this line
    # never reads as the answer.
    return (f"/host/hostprog {token} 0; "
            "touch /host/lkvm-rw-probe 2>/dev/null && w=rw || w=ro; echo LKVM-HOSTFS=$w; "
            "exit\r")


def split(lines):
    """Each stage's console lines and lkvm's exit status, by name."""
    out, current = {}, None
    for line in lines:
        m = BEGIN.search(line)
        if m:
            current = m.group(1)
            out[current] = {"lines": [], "rc": None}
            continue
        m = END.search(line)
        if m and m.group(1) in out:
            out[m.group(1)]["rc"] = int(m.group(2))
            current = None
            continue
        if current is not None:
            out[current]["lines"].append(line)
    return out


def _find(pattern, lines):
    for line in lines:
        m = pattern.search(line)
        if m:
            return m
    return None


def problems(stages, arch, tokens):
    """What is wrong with the stages' results (empty when all passed).
    `tokens` has one fresh token per stage that prints one."""
    found = []
    missing = [s for s in STAGES if s not in stages or stages[s]["rc"] is None]
    if missing:
        found.append(f"stages that never finished: {', '.join(missing)}")
    st = stages.get("rootdisk")
    if st and st["rc"] is not None:
        m = _find(ROOTDISK, st["lines"])
        if not m:
            found.append("rootdisk: L2's init on the disk never reported")
        else:
            root, mounted, token, a = m.groups()
            if root != "/dev/vda":
                found.append(f"rootdisk: the kernel was told root={root!r}, expected /dev/vda")
            if not mounted.startswith("/dev/vda:ext4:rw"):
                found.append(f"rootdisk: / is {mounted!r}, expected /dev/vda as ext4, read-write")
            if token != tokens["rootdisk"] or a != arch:
                found.append(f"rootdisk: token {token!r} arch {a!r}")
        if st["rc"] != 0:
            found.append(f"rootdisk: lkvm exited {st['rc']}")
    st = stages.get("defaultrootfs")
    if st and st["rc"] is not None:
        m = _find(HOSTPROG, st["lines"])
        if not m:
            found.append("defaultrootfs: L1's program never ran in L2 through /host")
        else:
            a, token, _cwd, root = m.groups()
            if (a, token, root) != (arch, tokens["defaultrootfs"], "/dev/root"):
                found.append(f"defaultrootfs: the program saw arch={a} token={token} root={root}")
        if not any(l.split("| ", 1)[-1].strip() == "LKVM-HOSTFS=ro" for l in st["lines"]):
            found.append("defaultrootfs: the host's / was not read-only in the guest")
        if not any(MODULES_LINE in l for l in st["lines"]):
            found.append("defaultrootfs: lkvm did not give the kernel its 9p modules")
        if st["rc"] != 0:
            found.append(f"defaultrootfs: lkvm exited {st['rc']}")
    st = stages.get("sandbox-prog")
    if st and st["rc"] is not None:
        m = _find(HOSTPROG, st["lines"])
        if not m:
            found.append("sandbox-prog: ./prog never ran")
        else:
            a, token, cwd, root = m.groups()
            if (a, token, cwd, root) != (arch, tokens["sandbox-prog"], "/host/work", "/dev/root"):
                found.append(f"sandbox-prog: ./prog saw arch={a} token={token} cwd={cwd} "
                             f"root={root}")
        if st["rc"] != 7:
            found.append(f"sandbox-prog: lkvm sandbox returned {st['rc']}, expected ./prog's 7")
    st = stages.get("sandbox-dashes")
    if st and st["rc"] is not None:
        said = [l.split("| ", 1)[-1].strip() for l in st["lines"]]
        if arch not in said:
            found.append(f"sandbox-dashes: uname -m never printed {arch!r}")
        if st["rc"] != 3:
            found.append(f"sandbox-dashes: lkvm sandbox returned {st['rc']}, expected 3")
    return found
