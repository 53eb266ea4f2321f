#!/usr/bin/env python3
"""Writes the committed seed corpora: fuzz/corpus/<target>/<name>.

Deterministic (running it again gives the same bytes) and small: a
handful of hand-built inputs per target, each a few hundred bytes, in the
input formats the targets document at their top (fuzz/fuzz_targets/*.rs
and fuzz/src/driver.rs for the virtqueue language). Run it after changing
an input format:

    python3 fuzz/seeds.py

Files in corpus/<target>/ whose name starts with "regress-" are inputs
that once found a bug; they are kept as they are.
"""

import os
import struct
import sys

import seeds_net as net_seeds

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

u8 = lambda v: struct.pack("<B", v & 0xFF)
u16 = lambda v: struct.pack("<H", v & 0xFFFF)
u32 = lambda v: struct.pack("<I", v & 0xFFFFFFFF)
u64 = lambda v: struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF)

# ---------------------------------------------------------------- driver

DATA = 0x10000
F_NEXT, F_WRITE, F_INDIRECT = 1, 2, 4
Q16 = 4  # queue_size(4) == 16
Q256 = 8


def desc(q, i, addr, length, flags, nxt):
    return u8(0) + u8(q) + u16(i) + u32(addr) + u32(length) + u16(flags) + u16(nxt)


def offer(q, head):
    return u8(1) + u8(q) + u16(head)


def _elems(elems):
    out = u8(len(elems) - 1)
    for w, addr, length in elems:
        out += u8(1 if w else 0) + u32(addr) + u32(length)
    return out


def chain(q, elems):
    """elems: (device-writable, addr, len)"""
    return u8(2) + u8(q) + _elems(elems)


def poke(addr, data):
    return u8(3) + u32(addr) + u16(len(data)) + data


def avail_idx(q, v):
    return u8(4) + u8(q) + u16(v)


def used_event(q, v):
    return u8(5) + u8(q) + u16(v)


def avail_flags(q, v):
    return u8(6) + u8(q) + u16(v)


def indirect(q, table, elems):
    return u8(7) + u8(q) + u32(table) + _elems(elems)


def kick(q):
    return u8(8) + u8(q)


def malformed(q):
    """Chains a driver should never send: a loop, a next index out of
    range, writable before readable, outside RAM, straddling RAM regions
    and the hole, an indirect table inside an indirect table."""
    b = b""
    b += desc(q, 100, DATA, 16, F_NEXT, 101) + desc(q, 101, DATA, 16, F_NEXT, 100) + offer(q, 100)
    b += desc(q, 102, DATA, 16, F_NEXT, 999) + offer(q, 102)
    b += desc(q, 103, DATA, 16, F_WRITE | F_NEXT, 104) + desc(q, 104, DATA, 16, 0, 0) + offer(q, 103)
    b += desc(q, 105, 0xFFFF0000, 16, 0, 0) + offer(q, 105)
    b += desc(q, 106, 0x3FF00, 0x200, F_WRITE, 0) + offer(q, 106)
    b += desc(q, 107, 0x5FF00, 0x200, F_WRITE, 0) + offer(q, 107)
    inner = struct.pack("<QIHH", DATA + 0x3000, 16, F_INDIRECT, 0)
    b += poke(DATA + 0x3000, inner) + desc(q, 108, DATA + 0x3000, 16, F_INDIRECT, 0) + offer(q, 108)
    return b + kick(q)


# ------------------------------------------------------------------ blk

def blk_header(kind, sector):
    return struct.pack("<IIQ", kind, 0, sector)


def blk_request(kind, sector, data_elems, hdr_at=DATA, status=DATA + 0x100):
    return poke(hdr_at, blk_header(kind, sector)) + chain(
        0, [(False, hdr_at, 16)] + data_elems + [(True, status, 1)]
    ) + kick(0)


def seeds_virtio_blk():
    IN, OUT, FLUSH, GET_ID, DISCARD, WZ = 0, 1, 4, 8, 11, 13
    buf = DATA + 0x1000
    s = {}
    s["read"] = bytes([Q16, 0]) + blk_request(IN, 1, [(True, buf, 512), (True, buf + 0x800, 1024)])
    s["write-read"] = bytes([Q16, 0]) + poke(buf, b"W" * 64) + blk_request(
        OUT, 2, [(False, buf, 512)]
    ) + blk_request(IN, 2, [(True, buf + 0x1000, 512)])
    s["last-sector"] = bytes([Q16, 2]) + blk_request(IN, 128, [(True, buf, 512)]) + blk_request(
        OUT, 128, [(False, buf, 512)]
    )
    s["flush-getid"] = bytes([Q16, 0]) + blk_request(FLUSH, 0, []) + blk_request(
        GET_ID, 0, [(True, buf, 20)]
    )
    segs = struct.pack("<QII", 0, 8, 0) + struct.pack("<QII", 16, 8, 1)
    s["discard-zeroes"] = bytes([Q16, 0]) + poke(buf, segs) + blk_request(
        DISCARD, 0, [(False, buf, 16)]
    ) + blk_request(WZ, 0, [(False, buf, 32)])
    s["read-only"] = bytes([Q16, 1]) + blk_request(OUT, 0, [(False, buf, 512)]) + blk_request(
        WZ, 0, [(False, buf, 16)]
    )
    s["malformed"] = bytes([Q256, 0]) + malformed(0)
    s["indirect"] = bytes([Q16, 0]) + poke(DATA, blk_header(IN, 3)) + indirect(
        0, DATA + 0x2000, [(False, DATA, 16), (True, buf, 512), (True, DATA + 0x100, 1)]
    ) + kick(0)
    s["avail-ahead"] = bytes([Q16, 2]) + blk_request(IN, 0, [(True, buf, 512)]) + avail_idx(
        0, 40
    ) + kick(0)
    return s


# ------------------------------------------------------------------- 9p

NOFID = 0xFFFFFFFF


def p9s(b):
    if isinstance(b, str):
        b = b.encode()
    return u16(len(b)) + b


def p9msg(kind, tag, body):
    return u32(7 + len(body)) + u8(kind) + u16(tag) + body


TVERSION, TATTACH, TWALK, TLOPEN, TLCREATE, TSYMLINK, TMKNOD = 100, 104, 110, 12, 14, 16, 18
TRENAME, TREADLINK, TGETATTR, TSETATTR, TREADDIR, TFSYNC = 20, 22, 24, 26, 40, 50
TLOCK, TGETLOCK, TLINK, TMKDIR, TRENAMEAT, TUNLINKAT = 52, 54, 70, 72, 74, 76
TREAD, TWRITE, TCLUNK, TREMOVE, TSTATFS, TFLUSH, TXATTRWALK = 116, 118, 120, 122, 8, 108, 30


def version(msize=8192):
    return (TVERSION, u32(msize) + p9s("9P2000.L"))


def attach(fid=0):
    return (TATTACH, u32(fid) + u32(NOFID) + p9s("fuzz") + p9s("") + u32(0))


def walk(fid, newfid, *names):
    b = u32(fid) + u32(newfid) + u16(len(names))
    for n in names:
        b += p9s(n)
    return (TWALK, b)


def lopen(fid, flags):
    return (TLOPEN, u32(fid) + u32(flags))


def lcreate(fid, name, flags=0o102, mode=0o644):
    return (TLCREATE, u32(fid) + p9s(name) + u32(flags) + u32(mode) + u32(0))


def symlink(fid, name, target):
    return (TSYMLINK, u32(fid) + p9s(name) + p9s(target) + u32(0))


def mknod(fid, name, mode, major=0, minor=0):
    return (TMKNOD, u32(fid) + p9s(name) + u32(mode) + u32(major) + u32(minor) + u32(0))


def mkdir(fid, name):
    return (TMKDIR, u32(fid) + p9s(name) + u32(0o755) + u32(0))


def rename(fid, dfid, name):
    return (TRENAME, u32(fid) + u32(dfid) + p9s(name))


def renameat(od, on, nd, nn):
    return (TRENAMEAT, u32(od) + p9s(on) + u32(nd) + p9s(nn))


def unlinkat(d, name, flags=0):
    return (TUNLINKAT, u32(d) + p9s(name) + u32(flags))


def link(dfid, fid, name):
    return (TLINK, u32(dfid) + u32(fid) + p9s(name))


def readlink(fid):
    return (TREADLINK, u32(fid))


def getattr(fid):
    return (TGETATTR, u32(fid) + u64(0x3FFF))


def setattr(fid, valid, mode=0, uid=0, gid=0, size=0):
    return (TSETATTR, u32(fid) + u32(valid) + u32(mode) + u32(uid) + u32(gid) + u64(size) + u64(0) * 4)


def readdir(fid, off=0, count=4096):
    return (TREADDIR, u32(fid) + u64(off) + u32(count))


def read(fid, off=0, count=4096):
    return (TREAD, u32(fid) + u64(off) + u32(count))


def write(fid, data, off=0):
    return (TWRITE, u32(fid) + u64(off) + u32(len(data)) + data)


def clunk(fid):
    return (TCLUNK, u32(fid))


def remove(fid):
    return (TREMOVE, u32(fid))


def statfs(fid):
    return (TSTATFS, u32(fid))


def fsync(fid):
    return (TFSYNC, u32(fid) + u32(0))


def lock(fid):
    return (TLOCK, u32(fid) + u8(1) + u32(0) + u64(0) + u64(0) + u32(1) + p9s("fuzz"))


def getlock(fid):
    return (TGETLOCK, u32(fid) + u8(1) + u64(0) + u64(0) + u32(1) + p9s("fuzz"))


def records(reqs, room=8192):
    """p9_escape's request records."""
    out = b""
    for i, (kind, body) in enumerate(reqs):
        out += u16(room) + u8(kind) + u16(i + 2) + u16(len(body)) + body
    return out


O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_DIRECTORY = 0, 1, 2, 0o100, 0o1000, 0o200000

P9_SCENARIOS = {
    "dotdot": [walk(0, 1, "..", "..", "outside"), walk(0, 2, "dir", "..", "..", ".."), getattr(2),
               lopen(2, O_DIRECTORY), readdir(2), walk(0, 3, "dir", "deeper", "upup"),
               renameat(0, "file", 0, ".."), unlinkat(0, "..", 0x200), symlink(0, "..", "x")],
    "symlinks-read": [walk(0, 1, "rel"), readlink(1), lopen(1, O_RDONLY), walk(0, 2, "rel", "x"),
                      walk(0, 3, "relsecret"), lopen(3, O_RDONLY), read(3), walk(0, 4, "root", "etc", "passwd"),
                      walk(0, 5, "abssecret"), getattr(5), walk(0, 6, "dir", "up2"), readlink(6)],
    "symlinks-write": [walk(0, 1, "rel"), lcreate(1, "pwned"), mkdir(1, "pwned"), symlink(1, "pwned", "/"),
                       walk(0, 2, "tmp"), lcreate(2, "lkvm-fuzz-pwned"), walk(0, 3, "relsecret"),
                       lopen(3, O_RDWR | O_TRUNC), write(3, b"overwritten"), setattr(3, 1, mode=0o777),
                       setattr(3, 8, size=0), walk(0, 4, "etc"), link(4, 0, "pwned")],
    "create-and-escape": [lcreate(0, "new", O_RDWR | O_CREAT), write(0, b"data"), walk(0, 1), walk(1, 2, "file"),
                          symlink(1, "out", "../outside"), walk(1, 3, "out"), lcreate(3, "x"),
                          mkdir(1, "d"), walk(1, 4, "d"), rename(4, 3, "moved"), renameat(1, "file", 3, "moved"),
                          link(3, 2, "hardout"), mknod(1, "fifo", 0o10644), mknod(1, "dev", 0o20644, 1, 3),
                          walk(1, 5, "fifo"), lopen(5, O_RDONLY)],
    "rename-swap": [walk(0, 1, "dir"), walk(0, 2, "file"), renameat(0, "dir", 0, "rel"),
                    renameat(0, "rel", 0, "dir2"), walk(0, 3, "dir2"), lcreate(3, "x"), rename(2, 3, "f"),
                    unlinkat(0, "rel", 0), unlinkat(0, "dir2", 0x200), remove(1), walk(0, 4, "abs"), remove(4)],
    "absolute-names": [walk(0, 1, "/etc"), walk(0, 2, "/"), lcreate(0, "/tmp/lkvm-fuzz-abs"),
                       mkdir(0, "a/b"), symlink(0, "x/y", "z"), renameat(0, "file", 0, "/tmp/lkvm-fuzz-ren"),
                       walk(0, 3, "self", "self", "rel"), walk(0, 4, "loop"), lopen(4, O_RDONLY)],
    "session": [statfs(0), getattr(0), lopen(0, O_DIRECTORY), readdir(0), readdir(0, 3, 64),
                walk(0, 1, "file"), lopen(1, O_RDWR), lock(1), getlock(1), write(1, b"x" * 40, 4),
                read(1, 0, 16), fsync(1), clunk(1), (TFLUSH, u16(5)), (TXATTRWALK, u32(0) + u32(9) + p9s("user.x")),
                clunk(0), walk(0, 1)],
}


def seeds_p9_escape():
    s = {}
    for i, (name, reqs) in enumerate(P9_SCENARIOS.items()):
        flags = [0, 0, 2, 0, 2, 0, 1][i % 7]
        s[name] = u8(flags) + records(reqs)
    s["fallback-dotdot"] = u8(2) + records(P9_SCENARIOS["dotdot"])
    s["read-only-writes"] = u8(1) + records(P9_SCENARIOS["symlinks-write"])
    s["own-session"] = u8(4) + records([version(512), attach(7), walk(7, 8, "dir"), version(1 << 20),
                                        attach(7), walk(7, 9, "rel")])
    return s


def seeds_virtio_9p():
    s = {}

    def script(reqs, room=0x2000):
        b = b""
        for i, (kind, body) in enumerate([version(), attach()] + reqs):
            m = p9msg(kind, i, body)
            b += poke(DATA, m) + chain(0, [(False, DATA, len(m)), (True, DATA + 0x4000, room)]) + kick(0)
        return b

    s["session"] = bytes([Q16, 0]) + script(P9_SCENARIOS["session"])
    s["escape"] = bytes([Q16, 2]) + script(P9_SCENARIOS["symlinks-read"])
    # A request split over three descriptors, the reply over two.
    m = p9msg(TWALK, 3, walk(0, 1, "dir", "inner")[1])
    v, a = p9msg(*((TVERSION, 0) + (version()[1],))), p9msg(TATTACH, 1, attach()[1])
    s["split"] = bytes([Q16, 4]) + poke(DATA, v) + chain(0, [(False, DATA, len(v)), (True, DATA + 0x4000, 64)]) \
        + kick(0) + poke(DATA, a) + chain(0, [(False, DATA, len(a)), (True, DATA + 0x4000, 64)]) + kick(0) \
        + poke(DATA, m) + chain(0, [(False, DATA, 5), (False, DATA + 5, 4), (False, DATA + 9, len(m) - 9),
                                    (True, DATA + 0x4000, 20), (True, DATA + 0x5000, 100)]) + kick(0)
    bad = u32(3) + u8(TVERSION) + u16(0) + u32(0xFFFFFF) + u8(TWALK) + b"\xff" * 9
    s["bad-framing"] = bytes([Q16, 0]) + poke(DATA, bad) + chain(0, [(False, DATA, len(bad)), (True, DATA + 0x4000, 7)]) \
        + kick(0) + chain(0, [(False, DATA, 4), (True, DATA + 0x4000, 0)]) + kick(0) + malformed(0)
    s["read-only"] = bytes([Q16, 1]) + script(P9_SCENARIOS["create-and-escape"])
    return s


# -------------------------------------------------------- other devices

def seeds_virtio_console():
    s = {}
    out = b"hello, world\n"
    s["output"] = bytes([Q16, Q16, 0]) + poke(DATA, out) + chain(1, [(False, DATA, 5), (False, DATA + 5, 8)]) \
        + kick(1) + chain(1, [(False, 0xFFFFF000, 8)]) + kick(1)
    s["input"] = bytes([Q16, Q16, 0]) + u8(9) + u16(3) + b"abc" + chain(0, [(True, DATA, 2)]) + kick(0) \
        + chain(0, [(True, DATA + 0x100, 2)]) + kick(0) + u8(10) + b"h" + chain(0, [(True, DATA + 0x200, 8)]) + kick(0)
    s["input-bound"] = bytes([Q16, Q16, 1]) + u8(11) + u16(0x9000) + chain(0, [(True, DATA, 0x8000)]) + kick(0) \
        + chain(0, [(True, DATA + 0x8000, 0x10000)]) + kick(0)
    s["malformed"] = bytes([Q256, Q256, 0]) + u8(9) + u16(4) + b"wxyz" + malformed(0) + malformed(1)
    return s


def seeds_virtio_rng():
    return {
        "fill": bytes([Q16, 0]) + chain(0, [(True, DATA, 64)]) + kick(0)
        + chain(0, [(True, DATA + 0x1000, 0x80000)]) + kick(0),
        "event-idx": bytes([Q16, 1]) + used_event(0, 0) + chain(0, [(True, DATA, 16), (True, DATA + 64, 16)])
        + kick(0) + avail_flags(0, 1) + chain(0, [(True, DATA, 16)]) + kick(0),
        "malformed": bytes([Q256, 0]) + malformed(0),
    }


def seeds_virtio_balloon():
    s = {}
    pfns = b"".join(u32(p) for p in [0x20, 0x21, 0x22, 0x40, 0x100, 0x120, 0xFFFFF])
    s["inflate-deflate"] = bytes([Q16] * 4) + u8(0xF) + u8(0) + poke(DATA, pfns) \
        + chain(0, [(False, DATA, len(pfns))]) + kick(0) + chain(1, [(False, DATA, len(pfns))]) + kick(1)
    stats = b"".join(u16(t) + u64(v) for t, v in [(4, 1 << 20), (5, 1 << 24), (6, 1 << 21)])
    s["stats"] = bytes([Q16] * 4) + u8(0xF) + u8(1) + poke(DATA, stats) + chain(2, [(False, DATA, len(stats))]) \
        + kick(2) + u8(9) + chain(2, [(False, DATA, len(stats))]) + kick(2) + u8(10) + u8(8) + u8(13) + u8(0) + u8(8) \
        + u8(12) + u8(4) + u8(4) + u32(512) + u8(11) + u8(3)
    s["report"] = bytes([Q16] * 4) + u8(0xF) + u8(3) + chain(3, [(True, 0x20000, 0x10000), (True, 0x3F000, 0x3000)]) \
        + kick(3) + chain(2, [(False, DATA, 10)]) + kick(2)
    s["missing-queues"] = bytes([Q16] * 4) + u8(0x5) + u8(2) + kick(0)
    s["malformed"] = bytes([Q256] * 4) + u8(0xF) + u8(4) + malformed(0) + malformed(1)
    return s


def seeds_virtio_net():
    s = {}
    hdr = bytes(12)
    frame = hdr + b"\xff" * 6 + b"\x02" * 6 + b"\x08\x00" + b"payload" * 8
    s["tx"] = bytes([Q16, Q16, 0]) + poke(DATA, frame) + chain(1, [(False, DATA, 12), (False, DATA + 12, len(frame) - 12)]) \
        + kick(1) + chain(1, [(False, DATA, 8)]) + kick(1) + u8(13) + chain(1, [(False, DATA, len(frame))]) + kick(1)
    s["rx"] = bytes([Q16, Q16, 0]) + chain(0, [(True, DATA, 2048)]) + kick(0) + u8(9) + u16(len(frame)) + frame \
        + u8(9) + u16(len(frame)) + frame + chain(0, [(True, DATA + 0x1000, 2048)]) + kick(0)
    s["rx-mergeable"] = bytes([Q16, Q16, 1]) + chain(0, [(True, DATA, 64)]) + chain(0, [(True, DATA + 0x100, 64)]) \
        + kick(0) + u8(10) + hdr + u16(1500) + u8(0x55) + chain(0, [(True, DATA + 0x1000, 4096)]) + kick(0) + u8(11)
    s["rx-gso-error"] = bytes([Q16, Q16, 2]) + chain(0, [(True, DATA, 2048)]) + kick(0) + u8(10) + b"\x00\x01" + bytes(10) \
        + u16(100) + u8(1) + u8(9) + u16(4) + b"shrt" + u8(12) + chain(0, [(True, DATA + 0x1000, 2048)]) + kick(0)
    s["malformed"] = bytes([Q256, Q256, 1]) + malformed(0) + u8(10) + hdr + u16(60000) + u8(7) + malformed(1)
    return s


# -------------------------------------------------------- register files

def acc_read(size_log, off, nbytes):
    return u8(size_log << 1) + off.to_bytes(nbytes, "little")


def acc_write(size_log, off, nbytes, v):
    return u8((size_log << 1) | 1) + off.to_bytes(nbytes, "little") + u64(v)


def dev_header(kind=4, features=(1 << 32) | (1 << 29) | (1 << 28), queues=(Q16, Q16)):
    return u8(kind) + u64(features) + u8(len(queues) - 1) + bytes(queues)


def seeds_virtio_mmio():
    w = lambda off, v: acc_write(2, off, 2, v)
    r = lambda off: acc_read(2, off, 2)
    up = b"".join([w(0x70, 1), w(0x70, 3), w(0x24, 0), r(0x10), w(0x20, 0x30000000), w(0x14, 1), r(0x10),
                   w(0x24, 1), w(0x20, 1), w(0x70, 11), r(0x70), w(0x30, 0), r(0x34), w(0x38, 16),
                   w(0x80, 0x1000), w(0x84, 0), w(0x90, 0x2000), w(0x94, 0), w(0xA0, 0x3000), w(0xA4, 0),
                   w(0x44, 1), w(0x70, 15), r(0x70)])
    raise_ = lambda what, q: u8(0xFF) + u8(what) + u16(q)
    return {
        "bring-up": dev_header() + r(0) + r(4) + r(8) + up + w(0x50, 0) + raise_(0, 0) + r(0x60) + w(0x64, 1)
        + raise_(1, 0) + raise_(2, 0) + r(0x70) + r(0xFC) + w(0x70, 0) + r(0x70),
        "bad-queue": dev_header() + w(0x70, 3) + w(0x24, 1) + w(0x20, 1) + w(0x70, 11) + w(0x30, 0) + w(0x38, 16)
        + w(0x80, 0xFFFF0000) + w(0x84, 0xFFFF) + w(0x44, 1) + w(0x70, 15) + r(0x70) + w(0x30, 9) + r(0x34),
        "config": dev_header() + acc_read(0, 0x100, 2) + acc_read(3, 0x104, 2) + acc_write(1, 0x102, 2, 0xBEEF)
        + acc_read(2, 0x1FE, 2) + acc_read(0, 0x13, 2) + acc_write(0, 0x13, 2, 1),
    }


def seeds_virtio_pci():
    cw = lambda sz, off, v: u8(8 | (sz << 1) | 1) + u16(off) + u64(v)
    cr = lambda sz, off: u8(8 | (sz << 1)) + u16(off)
    bw = lambda sz, off, v: u8((sz << 1) | 1) + u16(off) + u64(v)
    br = lambda sz, off: u8(sz << 1) + u16(off)
    raise_ = lambda what, q: u8(0xFF) + u8(what) + u16(q)
    caps = b"".join(cr(2, o) for o in range(0, 0x100, 4))
    up = b"".join([cw(1, 4, 6), cw(2, 0x10, 0x40000000), bw(0, 0x14, 1), bw(0, 0x14, 3), bw(2, 0x08, 1),
                   bw(2, 0x0C, 1), bw(0, 0x14, 11), bw(1, 0x16, 0), br(1, 0x18), bw(1, 0x18, 16),
                   bw(3, 0x20, 0x1000), bw(3, 0x28, 0x2000), bw(3, 0x30, 0x3000), bw(1, 0x1A, 1), bw(1, 0x10, 0),
                   bw(1, 0x1C, 1), bw(0, 0x14, 15), br(0, 0x14)])
    msix = b"".join([bw(2, 0x4000, 0xFEE00000), bw(2, 0x4004, 0), bw(2, 0x4008, 0x41), bw(2, 0x400C, 0),
                     bw(3, 0x4010, 0xFEE00000), bw(2, 0x4018, 0x42), bw(2, 0x401C, 0), br(2, 0x4000), br(3, 0x4008),
                     br(0, 0x5000)])
    # The capabilities: common 0x40, notify 0x50, ISR 0x64, device 0x74,
    # PCI configuration access 0x84 (bar +4, offset +8, length +12, data
    # +16), MSI-X 0x98 (message control +2: enable is bit 15).
    enable = cw(1, 0x9A, 0x8000)
    return {
        "intx": u8(0) + dev_header(kind=2) + caps + up + bw(0, 0x3000, 0) + bw(1, 0x3004, 1) + raise_(0, 0) + br(0, 0x1000)
        + raise_(1, 0) + br(0, 0x1000) + raise_(2, 0) + br(0, 0x14) + br(3, 0x2000) + bw(1, 0x2002, 7),
        "msix": u8(3) + dev_header(kind=1) + caps + up + msix + enable + raise_(0, 0) + raise_(0, 1) + raise_(1, 0)
        + bw(2, 0x400C, 1) + raise_(0, 0) + br(0, 0x5000) + bw(2, 0x400C, 0) + bw(0, 0x14, 0),
        "pci-cfg-window": u8(1) + dev_header(kind=9) + caps + cw(0, 0x88, 0) + cw(2, 0x8C, 0x14) + cw(2, 0x90, 1)
        + cw(0, 0x94, 3) + cr(0, 0x94) + cw(2, 0x8C, 0x2000) + cw(2, 0x90, 4) + cr(2, 0x94) + cw(1, 0x9A, 0xC000),
        "bar-move": u8(7) + dev_header(kind=3) + cw(2, 0x10, 0xFFFFFFFF) + cr(2, 0x10) + cw(2, 0x10, 0x80000000)
        + cw(1, 4, 2) + cw(2, 0x10, 0x90000000) + cw(1, 4, 0),
    }


def seeds_msix():
    w = lambda off, v, sz=2: u8(1) + u16(off) + u8(sz) + u64(v)
    r = lambda off, sz=2: u8(0) + u16(off) + u8(sz)
    pba = lambda off: u8(2) + u16(off) + u8(0)
    ctl = lambda v: u8(3) + u16(v)
    fire = lambda v: u8(4) + u16(v)
    prog = w(0, 0xFEE00000) + w(4, 0) + w(8, 0x30) + w(16, 0xFEE01000, 3) + w(24, 0x31) + w(28, 0)
    return {
        "direct": u8(3) + u8(0) + prog + ctl(0x8000) + fire(1) + fire(0) + pba(0) + w(12, 0) + fire(0) + fire(9)
        + r(0) + r(8, 3) + r(1, 0) + ctl(0xC000) + fire(1) + ctl(0x8000),
        "irqfd": u8(4) + u8(3) + prog + w(12, 0) + ctl(0x8000) + fire(0) + w(8, 0x99) + fire(0) + ctl(0)
        + fire(0) + ctl(0x8000),
        "empty": u8(0) + u8(1) + ctl(0xFFFF) + fire(0) + r(0) + pba(0),
    }


def seeds_pci_config():
    cf8_addr = lambda bus, dev, fn, reg: u8(0) + u8((2 << 1) | 1) + u8(0) + u64(
        0x80000000 | bus << 16 | dev << 11 | fn << 8 | reg)
    cf8_read = lambda port, sz: u8(0) + u8(sz << 1) + u8(port)
    cf8_write = lambda port, sz, v: u8(0) + u8((sz << 1) | 1) + u8(port) + u64(v)
    ecam = lambda dev, reg, sz, v=None: u8(1) + (u8(sz << 1) + u32(dev << 15 | reg) if v is None
                                                  else u8((sz << 1) | 1) + u32(dev << 15 | reg) + u64(v))
    win = lambda off, sz, v=None: u8(2) + (u8(sz << 1) + u32(off) if v is None else u8((sz << 1) | 1) + u32(off) + u64(v))
    rtas = lambda addr, size, write, v: u8(3) + u32(addr) + u8(size) + u8(write) + u32(v)
    probe = b"".join(cf8_addr(0, d, 0, 0) + cf8_read(4, 2) for d in range(4))
    return {
        "cf8": u8(0) + probe + cf8_addr(0, 1, 0, 4) + cf8_write(4, 1, 6) + cf8_addr(0, 1, 0, 0x10)
        + cf8_write(4, 2, 0xFFFFFFFF) + cf8_read(4, 2) + cf8_write(4, 2, 0x40000000) + cf8_read(6, 0)
        + u8(0) + u8(1) + u8(1) + u64(6) + cf8_read(0, 2) + cf8_read(1, 0),
        "ecam": u8(1) + ecam(1, 0, 2) + ecam(1, 0x34, 0) + ecam(1, 4, 1, 6) + ecam(1, 0x10, 2, 0x40000000)
        + ecam(2, 0x10, 2) + ecam(31, 0xFFC, 2) + u8(1) + u8(4) + u32(0x100000),
        "window": u8(1) + win(0, 2) + win(0x14, 0, 1) + win(0x14, 0, 3) + win(0x8000, 2) + win(0x4000, 2, 0xFEE00000)
        + win(0x3000, 1, 0) + win(0xFFFFC, 2),
        "rtas": u8(1) + rtas(0x800, 4, 0, 0) + rtas(0x804, 2, 1, 6) + rtas(0x802, 4, 0, 0) + rtas(0x810, 4, 1, 0x1000)
        + rtas(0x10000000 | 0x800, 4, 0, 0) + rtas(0x801, 2, 0, 0),
    }


def seeds_serial_8250():
    w = lambda reg, v: u8(0) + u8(1) + u8(reg) + u64(v)
    r = lambda reg: u8(0) + u8(0) + u8(reg)
    return {
        "init": w(3, 0x80) + w(0, 1) + w(1, 0) + w(3, 3) + w(2, 0xC7) + w(4, 0x0B) + w(1, 0x0F) + r(2) + r(5)
        + w(0, ord("A")) + r(2) + r(6) + w(7, 0x55) + r(7),
        "input": w(1, 1) + u8(1) + u16(100) + bytes(range(100)) + r(5) + r(0) + r(0) + u8(2) + b"b" + r(5) + r(0)
        + r(0) + u8(3) + u8(3) + w(2, 6),
        "loopback": w(4, 0x10) + w(0, 0x42) + r(0) + r(6) + w(4, 0x1F) + r(6) + u8(0) + u8(7) + u8(0) + u64(0),
    }


def seeds_rtc():
    w = lambda off, v: u8(1) + u8(off) + u64(v)
    r = lambda off: u8(0) + u8(off)
    regs = b"".join(w(0, i) + r(1) for i in [0, 2, 4, 6, 7, 8, 9, 0x32, 0x0A, 0x0B, 0x0C, 0x0D])
    return {
        "bcd-24h": u64(1_700_000_000) + regs + w(0, 0x0B) + w(1, 0x02) + w(0, 4) + r(1),
        "binary-12h": u64(1_700_050_000) + w(0, 0x0B) + w(1, 0x04) + regs + w(0, 0x8F) + w(1, 0x11) + r(0) + r(1),
        "far-future": u64((1 << 64) - 1) + regs,
    }


def seeds_i8042():
    w = lambda off, v: u8(1) + u8(off) + u64(v)
    r = lambda off: u8(0) + u8(off)
    return {
        "init": w(4, 0xAA) + r(4) + r(0) + w(4, 0x20) + r(0) + w(4, 0x60) + w(0, 0x47) + w(4, 0xAB) + r(0)
        + w(0, 0xFF) + r(0) + r(0) + w(0, 0xF2) + r(0) + r(0) + r(0),
        "flood": b"".join(w(0, 0xEE) for _ in range(40)) + r(4),
        "reset": w(4, 0xD1) + w(0, 0xFE) + w(4, 0xFE) + w(4, 0xD2) + w(0, 0x61) + r(0) + w(4, 0xD4) + w(0, 0xF4),
    }


def seeds_acpi_pm():
    w = lambda sz, off, v: u8((sz << 1) | 1) + u8(off) + u64(v)
    r = lambda sz, off: u8(sz << 1) + u8(off)
    return {
        "s5": r(1, 4) + w(1, 4, 5 << 10) + w(1, 4, (5 << 10) | (1 << 13)) + r(1, 4),
        "other": w(1, 0, 0xFFFF) + r(1, 0) + w(1, 2, 0x0121) + r(1, 2) + w(1, 4, (3 << 10) | (1 << 13)) + w(2, 6, 1)
        + r(3, 0),
    }


def seeds_plic():
    w = lambda off, v: u8(0) + u8(5) + u32(off) + u64(v)
    r = lambda off: u8(0) + u8(4) + u32(off)
    line = lambda src, lvl: u8(1) + u8(src) + u8(lvl)
    ctx = lambda c: 0x200000 + 0x1000 * c
    return {
        "claim": u8(1) + u8(0) + w(4 * 5, 3) + w(0x2000, 1 << 5) + w(ctx(0), 1) + line(5, 1) + r(0x1000) + r(ctx(0) + 4)
        + line(5, 0) + w(ctx(0) + 4, 5) + r(ctx(0) + 4),
        "level": u8(3) + u8(0) + w(4 * 10, 7) + w(0x2080, 1 << 10) + line(10, 1) + r(ctx(1) + 4) + w(ctx(1) + 4, 10)
        + r(ctx(1) + 4) + w(ctx(1), 7) + line(63, 1) + line(64, 1) + line(0, 1),
        "late": u8(0) + u8(1) + w(4, 1) + w(0x2000, 2) + line(1, 1) + u8(2) + r(ctx(0) + 4) + r(ctx(9))
        + u8(0) + u8(2) + u32(ctx(0) + 2),
    }


def seeds_xics():
    op = lambda o, s, rest=b"": u8(o) + u8(s) + rest
    IRQ = 0x1000
    return {
        "ipi": u8(1) + u8(0) + u8(0) + op(0, 0, u8(0xFF)) + op(1, 1, u8(5)) + op(2, 1) + op(3, 1, u32(0xFF000002))
        + op(4, 1),
        "source": u8(1) + u8(1) + u8(0) + op(0, 0, u8(0xFF)) + op(5, 0, u32(IRQ) + u8(5)) + op(9, 0, u16(0x10) + u8(1))
        + op(2, 0) + op(3, 0, u32(0xFF000000 | IRQ)) + op(9, 0, u16(0x10) + u8(0)) + op(6, 0, u32(IRQ))
        + op(7, 0, u32(IRQ)) + op(9, 0, u16(0x14) + u8(1)) + op(8, 0, u32(IRQ)),
        "late": u8(2) + u8(0) + u8(1) + op(5, 1, u32(IRQ + 4) + u8(3)) + op(9, 0, u16(0x14) + u8(1)) + op(10, 0)
        + op(2, 1) + op(0, 1, u8(1)) + op(0, 1, u8(0xFF)) + op(5, 7, u32(0xFFFFFFFF) + u8(1)),
    }


def seeds_sbi():
    call = lambda e, func, args, raw=None: u8(e) + u64(func) + (u64(raw) if raw is not None else b"") + b"".join(
        u64(a) for a in args)
    z = [0] * 6
    return {
        "console": u8(3) + b"abc" + call(0, 0, [ord("x")] + z[1:]) + call(1, 0, z) + call(2, 0, [16, DATA] + z[2:])
        + call(2, 1, [4, DATA + 0x100] + z[2:]) + call(2, 2, [ord("y")] + z[1:]),
        "bad": u8(0) + call(2, 0, [1 << 63, 0xFFFFFFFFFFFF0000] + z[2:]) + call(2, 1, [8, 0x80000] + z[2:])
        + call(2, 9, z) + call(4, 0, z, raw=0x10) + call(3, 1, z),
        "reset": u8(0) + call(3, 0, [1] + z[1:]) + call(3, 0, [5] + z[1:]) + call(3, 0, z),
    }


def seeds_papr_hcall():
    hc = {n: i for i, n in enumerate(["put_term", "get_term", "set_mode", "proc_tbl", "ci_load", "ci_store", "rtas",
                                      "get_tce", "put_tce", "put_tce_ind", "stuff_tce", "cppr", "ipi", "xirr",
                                      "xirr_x", "eoi", "ipoll", "raw"])}
    call = lambda name, caller, *args: u8(hc[name]) + u8(caller) + u8(len(args)) + b"".join(u64(a) for a in args)
    mem = lambda addr, data: u8(0xFF) + u32(addr) + u16(len(data)) + data

    def rtas_args(token, nargs, nret, args):
        return struct.pack(">III", token, nargs, nret) + b"".join(struct.pack(">I", a) for a in args) + bytes(4 * nret)

    T = 0x2000
    rtas = b""
    for i, (tok, nargs, nret, args) in enumerate([
            (T + 0, 1, 1, [ord("R")]), (T + 1, 0, 8, []), (T + 5, 1, 2, [1]), (T + 7, 0, 1, []),
            (T + 5, 1, 2, [0]), (T + 6, 3, 1, [0, 0x100, 7]), (T + 8, 3, 1, [0x1000, 0, 5]), (T + 9, 1, 3, [0x1000]),
            (T + 10, 1, 1, [0x1000]), (T + 11, 1, 1, [0x1000]), (T + 13, 2, 2, [0x800, 4]),
            (T + 14, 3, 1, [0x804, 2, 6]), (T + 15, 4, 2, [0x800, 0x8000_0000 >> 32, 0, 4]),
            (T + 12, 3, 1, [9005, 0, 1]), (0x1234, 0, 1, []), (T + 1, 17, 1, []), (T + 3, 0, 1, [])]):
        a = 0x20000 + 0x100 * i
        rtas += mem(a, rtas_args(tok, nargs, nret, args)) + call("rtas", 0, a)
    tces = b"".join(struct.pack(">Q", 0x1000 * k | 3) for k in range(8))
    LIOBN = 0x80000000
    return {
        "console": u8(0) + u64(1_700_000_000) + u8(1) + u8(5) + b"input" + call("put_term", 0, 0, 5, 0x68656c6c6f000000, 0)
        + call("get_term", 0, 0) + call("put_term", 0, 0, 17) + call("set_mode", 0, 1, 4, 0, 0)
        + call("set_mode", 0, 0, 3) + call("proc_tbl", 0, 0x1C, 0x1000, 0, 5) + call("proc_tbl", 0, 0x10),
        "ci": u8(0) + u64(0) + u8(0) + u8(0) + call("ci_store", 0, 4, 0x1000, 0xDEADBEEF) + call("ci_load", 0, 4, 0x1000)
        + call("ci_load", 0, 3, 0x1000) + call("ci_load", 0, 8, 0xFFFFFFFFFFFFFFF0) + call("raw", 0, 0x1234),
        "rtas": u8(3) + u64(1_700_000_000) + u8(1) + u8(0) + rtas,
        "tce": u8(2) + u64(0) + u8(0) + u8(0) + mem(0x30000, tces) + call("put_tce", 0, LIOBN, 0x1000, 0x5003)
        + call("get_tce", 0, LIOBN, 0x1000) + call("put_tce_ind", 0, LIOBN, 0x2000, 0x30000, 8)
        + call("stuff_tce", 0, LIOBN, 0x10000, 0, 16) + call("stuff_tce", 0, LIOBN, 0, 1, 1 << 52)
        + call("put_tce", 0, 5, 0, 0) + call("get_tce", 0, LIOBN, (1 << 30) - 0x1000),
        "xics": u8(1) + u64(0) + u8(1) + u8(0) + call("cppr", 0, 0xFF) + call("ipi", 0, 1, 5) + call("xirr", 1)
        + call("eoi", 1, 0xFF000002) + call("ipoll", 0, 1) + call("xirr_x", 0) + call("ipi", 0, 9, 5),
    }


# ---------------------------------------------------------------- images

def setup_byte(ram_index=2, initrd=False, cpus2=False, long_cmdline=False, pci=False):
    return ram_index | (8 if initrd else 0) | (0x10 if cpus2 else 0) | (0x20 if long_cmdline else 0) | (0x40 if pci else 0)


def bzimage(version=0x020F, xloadflags=1, payload=1024, init_size=0x100000, pref=0x100000, setup_sects=4,
            kver=b"6.1.0-fuzz (fuzz@lkvm) #1 SMP"):
    img = bytearray((setup_sects + 1) * 512 + payload)
    img[0x1F1] = setup_sects
    img[0x1FE:0x200] = b"\x55\xaa"
    img[0x200] = 0xEB
    img[0x201] = 0x6A
    img[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", img, 0x206, version)
    struct.pack_into("<H", img, 0x20E, 0x200)
    img[0x400:0x400 + len(kver) + 1] = kver + b"\0"
    img[0x211] = 1  # LOADED_HIGH
    struct.pack_into("<I", img, 0x22C, 0x37FFFFFF)
    struct.pack_into("<I", img, 0x230, 0x200000)
    img[0x234] = 1
    struct.pack_into("<H", img, 0x236, xloadflags)
    struct.pack_into("<I", img, 0x238, 2047)
    struct.pack_into("<Q", img, 0x258, pref)
    struct.pack_into("<I", img, 0x260, init_size)
    return bytes(img)


def elf64(machine, little=True, entry=0x1000000, segments=((0x1000000, b"\x90" * 64, 0x2000),), notes=(), etype=2):
    e = "<" if little else ">"
    note = b""
    for name, kind, d in notes:
        n = name.encode() + b"\0"
        note += struct.pack(e + "III", len(n), len(d), kind) + n + bytes(-len(n) % 4) + d + bytes(-len(d) % 4)
    phnum = len(segments) + (1 if notes else 0)
    f = bytearray(64 + 56 * phnum)
    f[0:4] = b"\x7fELF"
    f[4], f[5], f[6] = 2, 1 if little else 2, 1
    struct.pack_into(e + "HHIQQQIHHHHHH", f, 16, etype, machine, 1, entry, 64, 0, 0, 64, 56, phnum, 64, 0, 0)
    ph = 64

    def put(kind, paddr, data, memsz):
        nonlocal f
        off = len(f)
        struct.pack_into(e + "IIQQQQQQ", f, ph, kind, 7, off, paddr, paddr, len(data), memsz, 0x1000)
        f += data

    for paddr, data, memsz in segments:
        put(1, paddr, data, memsz)
        ph += 56
    if notes:
        put(4, 0, note, len(note))
    return bytes(f)


def elf32(machine, entry, segments, notes=()):
    note = b""
    for name, kind, d in notes:
        n = name.encode() + b"\0"
        note += struct.pack("<III", len(n), len(d), kind) + n + bytes(-len(n) % 4) + d + bytes(-len(d) % 4)
    phnum = len(segments) + (1 if notes else 0)
    f = bytearray(52 + 32 * phnum)
    f[0:4] = b"\x7fELF"
    f[4], f[5], f[6] = 1, 1, 1
    struct.pack_into("<HHIIIIIHHHHHH", f, 16, 2, machine, 1, entry, 52, 0, 0, 52, 32, phnum, 40, 0, 0)
    ph = 52

    def put(kind, paddr, data, memsz):
        nonlocal f
        off = len(f)
        struct.pack_into("<IIIIIIII", f, ph, kind, off, paddr, paddr, len(data), memsz, 7, 0x1000)
        f += data

    for paddr, data, memsz in segments:
        put(1, paddr, data, memsz)
        ph += 32
    if notes:
        put(4, 0, note, len(note))
    return bytes(f)


def module(modinfo, little=True):
    """An ELF64 relocatable with .shstrtab and .modinfo sections."""
    e = "<" if little else ">"
    shstr = b"\0.shstrtab\0.modinfo\0"
    body = shstr + modinfo
    shoff = 64 + len(body)
    f = bytearray(64)
    f[0:4] = b"\x7fELF"
    f[4], f[5], f[6] = 2, 1 if little else 2, 1
    struct.pack_into(e + "HHIQQQIHHHHHH", f, 16, 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 3, 1)
    f += body
    sh = lambda name, off, size: struct.pack(e + "IIQQQQIIQQ", name, 3, 0, 0, off, size, 0, 0, 1, 0)
    f += bytes(64) + sh(1, 64, len(shstr)) + sh(11, 64 + len(shstr), len(modinfo))
    return bytes(f)


PVH_NOTE = ("Xen", 18, struct.pack("<I", 0x1000000))


def seeds_kernel_bzimage():
    return {
        "good": u8(setup_byte()) + bzimage(),
        "initrd-pci": u8(setup_byte(4, initrd=True, cpus2=True, long_cmdline=True, pci=True)) + bzimage(payload=2048),
        "too-big": u8(setup_byte(0)) + bzimage(init_size=0x7FFFFFFF, pref=0xFFFFFFFFFFFF0000),
        "old-protocol": u8(setup_byte()) + bzimage(version=0x0206, xloadflags=0),
        "zero-setup-sects": u8(setup_byte()) + bzimage(setup_sects=0, payload=4096),
    }


def seeds_kernel_elf():
    return {
        "pvh64": u8(setup_byte()) + elf64(62, notes=[PVH_NOTE]),
        "pvh32": u8(setup_byte(3, initrd=True)) + elf32(3, 0x1000000, [(0x1000000, b"\xf4" * 32, 0x1000)], [PVH_NOTE]),
        "ppc64le": u8(setup_byte(4, initrd=True)) + elf64(21, entry=0xC000000000000000,
                                                            segments=[(0, b"\x00" * 64, 0x10000)]),
        "ppc64be": u8(setup_byte()) + elf64(21, little=False, segments=[(0, b"\x00" * 16, 0x100)]),
        "no-pvh-note": u8(setup_byte()) + elf64(62, notes=[("GNU", 3, b"\x01\x02\x03\x04")]),
        "huge-segment": u8(setup_byte()) + elf64(21, segments=[(0xFFFFFFFFFFFF0000, b"", 0xFFFF)]),
        "module": u8(0) + module(b"license=GPL\0depends=virtio,9pnet-virtio,netfs\0name=9p\0"),
        "module-be": u8(0) + module(b"depends=a,b\0", little=False),
    }


def arm64_image(text_offset=0, image_size=0x200000, flags=2, length=256):
    img = bytearray(max(length, 64))
    struct.pack_into("<QQQ", img, 8, text_offset, image_size, flags)
    img[0x38:0x3C] = b"ARM\x64"
    return bytes(img)


def riscv_image(image_size=0x200000, length=256, old=True, new=True):
    img = bytearray(max(length, 64))
    struct.pack_into("<QQ", img, 8, 0x200000, image_size)
    if old:
        img[0x30:0x38] = b"RISCV\0\0\0"
    if new:
        img[0x38:0x3C] = b"RSC\x05"
    return bytes(img)


def seeds_kernel_image():
    return {
        "arm64": u8(setup_byte(4, initrd=True)) + arm64_image(),
        "arm64-old": u8(setup_byte()) + arm64_image(image_size=0),
        "arm64-be": u8(setup_byte()) + arm64_image(flags=1),
        "arm64-big": u8(setup_byte(0, initrd=True)) + arm64_image(text_offset=0x7FF00000, image_size=1 << 40),
        "riscv": u8(setup_byte(3, initrd=True)) + riscv_image(),
        "riscv-old-magic": u8(setup_byte()) + riscv_image(new=False),
        "riscv-huge": u8(setup_byte()) + riscv_image(image_size=(1 << 64) - 1),
    }


def seeds_kernel_flat():
    return {
        "flat": u8(setup_byte()) + b"\xfa\xf4" * 64,
        "linux-banner": u8(setup_byte()) + b"\0" * 32 + b"Linux version x" + b"Linux version 6.1.0-fuzz (x)" + b"\0" * 8,
        "gzip": u8(0) + b"\x1f\x8b\x08\x00" + bytes(16),
        "zboot": u8(0) + b"MZ\0\0zimg" + bytes(56),
        "uimage": u8(0) + b"\x27\x05\x19\x56" + bytes(60),
        "big-flat": u8(setup_byte(0)) + bytes(4000),
    }


GENERATORS = {name[len("seeds_"):]: fn for name, fn in globals().items() if name.startswith("seeds_")}
GENERATORS["usernet"] = net_seeds.seeds_usernet


def main():
    total = 0
    for target, fn in sorted(GENERATORS.items()):
        d = os.path.join(CORPUS, target)
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            if not f.startswith("regress-"):
                os.remove(os.path.join(d, f))
        for name, data in fn().items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
            total += len(data)
    print(f"seeds: {len(GENERATORS)} targets, {total} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
