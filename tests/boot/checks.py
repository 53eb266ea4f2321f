"""What a boot must show: the lines L2 prints and the checks each kind of
boot makes of them."""

import hashlib
import re

from inputs import KNOWN_BIN, SHARE_TEXT, DumpError, read_back

MARKER = re.compile(
    r"LKVM-L2-MARKER arch=(\S+) cpus=(\d+) token=(\S*) input=(\S*) uptime=([0-9.]+)")
VIRTIO_LINE = re.compile(r"LKVM-L2-VIRTIO rng=(\S+) blk=(\S+) 9p=(\S+) net=(\S+)")
USERNET_LINE = re.compile(
    r"LKVM-L2-USERNET dhcp=(\S+) http=(\S+) udp=(\S+) dns=(\S+) fwd=(\S+)")
NETBENCH_LINE = re.compile(r"LKVM-L2-NETBENCH via=(\w+) bytes=(\d+) seconds=([0-9.]+)")
# What L2's user-mode card must get from lkvm's DHCP server.
USERNET_GUEST_IP = "192.168.33.15"


def sandbox_problems(rec, lines, uname, reason):
    """lkvm sandbox ran `uname -m; exit 3` in the guest: the architecture
    must be printed on a line of its own and 3 must come back."""
    start = next((i for i, l in enumerate(lines) if "LKVM-START" in l), len(lines))
    said = [l.split("| ", 1)[-1].strip() for l in lines[start + 1:]]
    rec["sandbox_uname"] = next((s for s in said if s == uname), None)
    problems = []
    if "lkvm_exit" not in rec:
        return [reason or "lkvm sandbox never finished"]
    if rec["sandbox_uname"] is None:
        problems.append(f"the sandboxed uname -m never printed {uname!r}")
    if rec["lkvm_exit"] != 3:
        problems.append(f"lkvm sandbox returned {rec['lkvm_exit']}, expected the command's 3")
    return problems


def virtio_problems(rec, token, disk_dump):
    """The virtio checks: 64 bytes of entropy, the known file's checksum,
    the written file read back from the image, the 9p read and write, a
    ping from L2 to L1 through virtio-net on a tap."""
    problems = []
    if "l2_rng" not in rec:
        return ["L2 printed no LKVM-L2-VIRTIO line"]
    if rec["l2_rng"] != "64":
        problems.append(f"L2 read {rec['l2_rng']} bytes from /dev/hwrng, expected 64")
    if rec["l2_blk"] != hashlib.sha256(KNOWN_BIN).hexdigest():
        problems.append(f"L2's sha256 of known.bin on virtio-blk is {rec['l2_blk']}")
    if rec["l2_9p"] != SHARE_TEXT:
        problems.append(f"L2 read {rec['l2_9p']!r} from the 9p share, expected {SHARE_TEXT!r}")
    if rec["l2_net"] != "ok":
        problems.append(f"L2 could not ping L1 through virtio-net on a tap ({rec['l2_net']})")
    problems += usernet_problems(rec, token)
    if rec.get("l1_9p") != token:
        problems.append(f"L1 found {rec.get('l1_9p')!r} in the file L2 wrote through 9p")
    try:
        written = read_back("".join(disk_dump), "/written.txt", rec.get("l1_disk_sha256"))
    except DumpError as e:
        problems.append(f"the disk image could not be checked: {e}")
        return problems
    rec["blk_written"] = written.strip()
    if rec["blk_written"] != token:
        problems.append(f"the disk image holds {rec['blk_written']!r} in written.txt, "
                        "expected the token")
    return problems


def usernet_problems(rec, token):
    """User-mode networking from inside L2: its DHCP address, the sha256 of
    a file fetched over HTTP from L1's loopback through the gateway, a UDP
    exchange and a DNS answer through the gateway, and the token L1 read
    from L2's server through hostfwd."""
    if "l2_user_dhcp" not in rec:
        return ["L2 printed no LKVM-L2-USERNET line"]
    problems = []
    if rec["l2_user_dhcp"] != USERNET_GUEST_IP:
        problems.append(f"L2's user-mode card got {rec['l2_user_dhcp']} by DHCP, "
                        f"expected {USERNET_GUEST_IP}")
    if rec["l2_user_http"] != hashlib.sha256(KNOWN_BIN).hexdigest():
        problems.append(f"L2's sha256 of known.bin over HTTP through 192.168.33.1 is "
                        f"{rec['l2_user_http']}")
    for key, what in (("l2_user_udp", "a UDP exchange with L1"),
                      ("l2_user_dns", "a DNS query through the gateway"),
                      ("l2_user_fwd", "L1 reading L2's token through hostfwd")):
        if rec[key] != "ok":
            problems.append(f"user-mode networking: {what}: {rec[key]}")
    if rec.get("l1_hostfwd") != token:
        problems.append(f"L1 read {rec.get('l1_hostfwd')!r} through hostfwd, expected the token")
    return problems


def failure_kind(error):
    """How an A/B boot failed, in a word, for the counts."""
    e = error or ""
    for word, pattern in (("triple-fault", "triple"), ("l1-panic", "Kernel panic"),
                          ("timeout", "timeout"), ("qemu-exit", "QEMU exited")):
        if pattern in e:
            return word
    return "other"
