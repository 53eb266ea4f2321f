"""The boot lab's guest inputs: the pinned Debian packages (fetched with a
private apt state and cached), kernel modules in load order, and the cpio
archives and disk image the boots use."""

import base64
import gzip
import hashlib
import lzma
import re
import shutil
import stat
import subprocess
import zlib

from common import CACHE, HERE, PINS, WORK, LabError, log, run

# Loaded by the L2 init for virtio checks (those built in are skipped).
L2_MODULES = ["virtio_pci", "virtio_mmio", "virtio_blk", "virtio_rng", "virtio_console",
              "9pnet_virtio", "9p", "crc32c_generic", "ext4", "virtio_net", "virtio_balloon"]
# What the L2 finds on its virtio-blk disk and in its 9p share.
KNOWN_BIN = b"".join(hashlib.sha256(b"lkvm-known-%d" % i).digest() for i in range(2048))
SHARE_TEXT = "hello-from-the-l1-share"


# --- fetching --------------------------------------------------------------

class Apt:
    """apt with private state, so foreign-architecture packages can be
    downloaded without touching the host's configuration."""

    def __init__(self, suite, deb_arch):
        self.suite = suite
        self.arch = deb_arch
        self.dir = CACHE / "apt" / f"{suite}-{deb_arch}"
        self.updated = False

    def opts(self):
        d = self.dir
        return [
            "-o", f"Dir::Etc::sourcelist={d / 'sources.list'}",
            "-o", "Dir::Etc::sourceparts=-",
            "-o", f"Dir::State::Lists={d / 'lists'}",
            "-o", f"Dir::State::status={d / 'status'}",
            "-o", f"Dir::Cache={d / 'cache'}",
            "-o", "APT::Architectures::=amd64",
            "-o", f"APT::Architectures::={self.arch}",
            "-o", "Acquire::Languages=none",
            "-o", "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false",
            "-o", "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false",
            "-o", "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false",
            "-o", "Debug::NoLocking=1",
            "-o", "APT::Sandbox::User=root",
            "-q",
        ]

    def update(self):
        if self.updated:
            return
        (self.dir / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (self.dir / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        (self.dir / "status").touch()
        (self.dir / "sources.list").write_text(
            f"deb [arch={self.arch}] http://deb.debian.org/debian {self.suite} main\n")
        log(f"apt update ({self.suite}, {self.arch})")
        run(["apt-get", *self.opts(), "update"], stdout=subprocess.DEVNULL)
        self.updated = True

    def candidate(self, pkg):
        out = run(["apt-cache", *self.opts(), "show", f"{pkg}:{self.arch}"],
                  capture_output=True, text=True, check=False).stdout
        versions = re.findall(r"^Version: (\S+)", out, re.M)
        return versions[0] if versions else None

    def download(self, pkg, version):
        """Returns (path of the .deb, version actually fetched)."""
        for v in (version, None):
            if v is not None:
                dest = CACHE / "debs" / self.arch / pkg / v.replace(":", "%3a")
                found = sorted(dest.glob("*.deb")) if dest.is_dir() else []
                if found:
                    return found[0], v
            self.update()
            if v is None:
                v = self.candidate(pkg)
                if v is None:
                    raise LabError(f"{pkg}:{self.arch} is not in Debian {self.suite}")
                log(f"WARNING: pinned {pkg} {version} is no longer in the mirror; "
                    f"using {v} (update tests/boot/pins.toml)")
            dest = CACHE / "debs" / self.arch / pkg / v.replace(":", "%3a")
            tmp = dest.with_name(dest.name + ".part")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            log(f"downloading {pkg}:{self.arch} {v}")
            res = run(["apt-get", *self.opts(), "download", f"{pkg}:{self.arch}={v}"],
                      cwd=tmp, check=False, capture_output=True, text=True)
            if res.returncode == 0 and list(tmp.glob("*.deb")):
                shutil.rmtree(dest, ignore_errors=True)
                tmp.rename(dest)
                return sorted(dest.glob("*.deb"))[0], v
            shutil.rmtree(tmp, ignore_errors=True)
            if version is None or v != version:
                raise LabError(f"cannot download {pkg}:{self.arch} {v}: {res.stderr.strip()}")
        raise LabError(f"cannot download {pkg}")


def extract(deb):
    dest = CACHE / "extract" / deb.parent.relative_to(CACHE / "debs")
    if (dest / ".done").exists():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    run(["dpkg-deb", "-x", str(deb), str(dest)])
    (dest / ".done").touch()
    return dest


class Inputs:
    """The fetched and unpacked guest inputs of one architecture."""

    def __init__(self, arch):
        p = PINS[arch]
        apt = Apt(p["suite"], p["deb_arch"])
        kdeb, self.kernel_version = apt.download(p["kernel_pkg"], p["kernel_version"])
        bdeb, self.busybox_version = apt.download("busybox-static", p["busybox_version"])
        self.kernel_root = extract(kdeb)
        bb = extract(bdeb)
        # bookworm ships bin/busybox, trixie (merged /usr) usr/bin/busybox
        self.busybox = next((p for p in (bb / "bin" / "busybox", bb / "usr" / "bin" / "busybox")
                             if p.exists()), bb / "bin" / "busybox")
        self.l1_kernel = one(self.kernel_root, p["l1_kernel"])
        self.l2_kernel = one(self.kernel_root, p["l2_kernel"])


def one(root, pattern):
    found = sorted(root.glob(pattern))
    if len(found) != 1:
        raise LabError(f"expected one {pattern} in {root}, found {len(found)}")
    return found[0]


# --- kernel modules ----------------------------------------------------------

def module_index(root):
    index = {}
    # bookworm ships lib/modules, trixie (merged /usr) usr/lib/modules
    for path in [*root.glob("lib/modules/*/kernel/**/*.ko*"),
                 *root.glob("usr/lib/modules/*/kernel/**/*.ko*")]:
        name = path.name.split(".ko")[0].replace("-", "_")
        index[name] = path
    return index


def module_bytes(path):
    data = path.read_bytes()
    return lzma.decompress(data) if path.name.endswith(".xz") else data


def module_order(root, wanted, skip_missing=False):
    """Modules to insmod, dependencies first, from each .ko's .modinfo.
    With skip_missing, wanted modules the package lacks (built in) are left
    out; a missing dependency is always an error."""
    index = module_index(root)
    order, seen = [], set()

    def visit(name, top=False):
        name = name.replace("-", "_")
        if name in seen:
            return
        seen.add(name)
        if name not in index:
            if top and skip_missing:
                return
            raise LabError(f"module {name} not found in the kernel package")
        m = re.search(rb"depends=([^\x00]*)\x00", module_bytes(index[name]))
        for dep in (m.group(1).decode().split(",") if m and m.group(1) else []):
            visit(dep)
        order.append(name)

    for w in wanted:
        visit(w, top=True)
    return [(n, index[n]) for n in order]


# --- initramfs -----------------------------------------------------------------

class Cpio:
    """A newc cpio archive, written without root (device nodes included)."""

    def __init__(self):
        self.buf = bytearray()
        self.ino = 1
        self.dirs = set()

    def _entry(self, name, mode, data=b"", rdev=(0, 0)):
        name_b = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0]
        self.ino += 1
        self.buf += b"070701" + b"".join(b"%08x" % f for f in fields) + name_b
        self.buf += b"\0" * (-len(self.buf) % 4)
        self.buf += data
        self.buf += b"\0" * (-len(self.buf) % 4)

    def parents(self, name):
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and d not in self.dirs:
                self.dirs.add(d)
                self._entry(d, stat.S_IFDIR | 0o755)

    def file(self, name, data, mode=0o644):
        self.parents(name)
        self._entry(name, stat.S_IFREG | mode, data)

    def dir(self, name):
        self.parents(name + "/x")

    def chardev(self, name, major, minor):
        self.parents(name)
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self, level=6):
        self._entry("TRAILER!!!", 0)
        return gzip.compress(bytes(self.buf), compresslevel=level, mtime=0)


def base_initramfs(busybox, init):
    c = Cpio()
    c.file("bin/busybox", busybox.read_bytes(), 0o755)
    c.chardev("dev/console", 5, 1)
    c.dir("proc")
    c.dir("sys")
    c.dir("tmp")
    c.file("init", init.encode(), 0o755)
    return c


def add_modules(c, root, wanted, skip_missing=False, optional=()):
    """Adds modules and their load order; `optional` ones may be built in."""
    names = []
    mods = module_order(root, wanted, skip_missing)
    have = {n for n, _ in mods}
    mods += [m for m in module_order(root, optional, True) if m[0] not in have]
    for name, path in mods:
        c.file(f"modules/{name}.ko", module_bytes(path))
        names.append(f"{name}.ko")
    c.file("modules.order", ("\n".join(names) + "\n").encode())


def l2_initramfs(arch, inputs, template, modules=False, files=()):
    """An L2 initramfs; with `modules`, the virtio and 9p drivers too (only
    the cases that use them carry them: every byte is unpacked twice under
    emulation); `files`: (name, bytes, mode) to add."""
    init = (HERE / template).read_text().replace("@END@", PINS[arch]["l2_end"])
    c = base_initramfs(inputs.busybox, init)
    for name, data, mode in files:
        c.file(name, data, mode)
    if modules:
        add_modules(c, inputs.kernel_root, L2_MODULES, skip_missing=True)
    else:
        c.file("modules.order", b"")
    return c.finish()


def disk_image():
    """An ext2 image holding known.bin, for L2's virtio-blk."""
    out = WORK / "disk.img"
    src = WORK / "disk-src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    (src / "known.bin").write_bytes(KNOWN_BIN)
    out.unlink(missing_ok=True)
    # mke2fs -d names each file it copies on stdout, where the JSON goes.
    run(["mke2fs", "-q", "-F", "-t", "ext2", "-d", str(src), str(out), "8M"],
        stdout=subprocess.DEVNULL)
    return out


# What lkvm gives a distribution kernel for a 9p root (src/modinit.rs).
NINEP_ROOT_MODULES = ["virtio_pci", "virtio_mmio", "9pnet_virtio", "9p"]


def add_module_tree(c, root, wanted):
    """The package's modules directory as a host has it, reduced to
    `wanted` and what they depend on (files as shipped, compressed or not)
    plus modules.builtin: what lkvm reads to boot the host's own kernel.
    Returns the kernel release (the directory's name)."""
    dirs = sorted([*root.glob("lib/modules/*"), *root.glob("usr/lib/modules/*")])
    if len(dirs) != 1:
        raise LabError(f"expected one modules directory in {root}, found {len(dirs)}")
    moddir = dirs[0]
    release = moddir.name
    for _, path in module_order(root, wanted, skip_missing=True):
        rel = path.relative_to(moddir)
        c.file(f"lib/modules/{release}/{rel}", path.read_bytes())
    builtin = moddir / "modules.builtin"
    c.file(f"lib/modules/{release}/modules.builtin",
           builtin.read_bytes() if builtin.exists() else b"")
    return release


def root_disk(arch, inputs):
    """An ext4 image whose /sbin/init reports what the guest booted from:
    for `lkvm run KERNEL -d root.img` with no root= of the user's."""
    out = WORK / arch / "root.img"
    src = WORK / arch / "root-src"
    shutil.rmtree(src, ignore_errors=True)
    for d in ("bin", "sbin", "proc", "dev", "sys", "tmp"):
        (src / d).mkdir(parents=True)
    shutil.copy(inputs.busybox, src / "bin" / "busybox")
    (src / "bin" / "busybox").chmod(0o755)
    init = (HERE / "rootdisk-init.sh").read_text().replace("@END@", PINS[arch]["l2_end"])
    (src / "sbin" / "init").write_text(init)
    (src / "sbin" / "init").chmod(0o755)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(src), str(out), "8M"],
        stdout=subprocess.DEVNULL)
    return out


class DumpError(Exception):
    """The disk image L1 printed did not arrive intact."""


def read_back(image_b64, path, sha256):
    """A file's contents from a gzip+base64 dump of an ext2 image, after
    checking the image against the checksum L1 printed with it."""
    if not image_b64:
        raise DumpError("L1 printed no dump")
    if not sha256:
        raise DumpError("L1 printed no checksum with the dump")
    try:
        data = gzip.decompress(base64.b64decode(image_b64))
    except (OSError, EOFError, ValueError, zlib.error) as e:
        raise DumpError(f"the dump does not decode ({e})") from e
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise DumpError(f"sha256 {got} of the dump, L1 printed {sha256}: damaged on the way")
    img = WORK / "disk-back.img"
    img.write_bytes(data)
    out = subprocess.run(["debugfs", "-R", f"cat {path}", str(img)], capture_output=True)
    return out.stdout.decode(errors="replace")
