//! The modules a distribution kernel needs for a 9p root, in an initramfs
//! lkvm makes itself.
//!
//! kvmtool's zero-config boot (the default rootfs over virtio-9p) needs a
//! kernel with virtio-pci and 9p built in; distribution kernels have them
//! as modules, so under kvmtool they panic for want of a root. When lkvm
//! boots a 9p root without an initrd and finds the kernel's own modules on
//! the host (`/lib/modules/RELEASE`, RELEASE read from the kernel image),
//! it gives the guest a small initramfs: the host's static busybox, the
//! modules that the 9p root needs with their dependencies (from each
//! module's own `.modinfo`, so no `modules.dep` is needed), decompressed
//! (xz, zstd), and an init that loads them, mounts the root and hands over
//! to the rootfs's `/virt/init`.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// What a 9p root over virtio needs: either transport, the 9p transport
/// and file system. Their dependencies come from `.modinfo`.
pub const WANTED: &[&str] = &["virtio_pci", "virtio_mmio", "9pnet_virtio", "9p"];
/// The most modules one initramfs carries: a dependency chain longer than
/// this is a broken module tree, not a kernel.
const MAX_MODULES: usize = 64;
/// The largest module lkvm unpacks.
const MAX_MODULE_SIZE: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kernel module {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel module {0}: cannot unpack it ({1})")]
    Unpack(PathBuf, String),
    #[error("kernel module {0} is larger than {MAX_MODULE_SIZE} bytes unpacked")]
    TooBig(PathBuf),
    #[error("kernel modules under {0}: more than {MAX_MODULES} needed for a 9p root")]
    TooMany(PathBuf),
    #[error(transparent)]
    Busybox(#[from] crate::rootfs::Error),
}

/// The release a kernel image was built as: a bzImage's version string,
/// or the `Linux version R ` banner of an uncompressed image.
pub fn release_of(kernel: &[u8]) -> Option<String> {
    if crate::x86::bzimage::BzImage::is_bzimage(kernel) {
        // The setup header's kernel_version: an offset from 0x200 to a
        // NUL-terminated string in the setup code.
        let at = usize::from(u16::from_le_bytes([
            *kernel.get(0x20e)?,
            *kernel.get(0x20f)?,
        ]));
        let text = kernel.get(at.checked_add(0x200)?..)?;
        return first_word(text);
    }
    const BANNER: &[u8] = b"Linux version ";
    let mut from = 0;
    while let Some(i) = find(&kernel[from..], BANNER) {
        let text = &kernel[from + i + BANNER.len()..];
        if text.first().is_some_and(u8::is_ascii_digit) {
            return first_word(text);
        }
        from += i + 1;
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn first_word(text: &[u8]) -> Option<String> {
    let word: Vec<u8> = text
        .iter()
        .take(256)
        .take_while(|b| b.is_ascii_graphic())
        .copied()
        .collect();
    (!word.is_empty()).then(|| String::from_utf8_lossy(&word).into_owned())
}

/// A module's name as the kernel knows it: the file name without `.ko`
/// and compression suffix, `-` read as `_`.
pub fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = file.split(".ko").next().filter(|_| file.contains(".ko"))?;
    Some(stem.replace('-', "_"))
}

/// Every module file under `dir`, by name.
fn index(dir: &Path) -> HashMap<String, PathBuf> {
    let mut found = HashMap::new();
    let mut todo = vec![dir.join("kernel"), dir.join("updates"), dir.join("extra")];
    // Bounded: a module tree is a few thousand directories.
    let mut budget = 100_000usize;
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            budget = budget.saturating_sub(1);
            if budget == 0 {
                return found;
            }
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(p),
                Ok(_) => {
                    if let Some(name) = module_name(&p) {
                        found.entry(name).or_insert(p);
                    }
                }
                Err(_) => {}
            }
        }
    }
    found
}

/// Names of the modules built into the kernel (`modules.builtin`).
fn builtin(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| module_name(Path::new(l.trim())))
        .collect()
}

/// A module file's contents, unpacked.
fn unpack(path: &Path) -> Result<Vec<u8>, Error> {
    let read_err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(read_err)?;
    let name = path.to_string_lossy();
    let mut out = Vec::new();
    let limit = MAX_MODULE_SIZE + 1;
    if name.ends_with(".xz") {
        let mut input = std::io::BufReader::new(&raw[..]);
        lzma_rs::xz_decompress(&mut input, &mut out)
            .map_err(|e| Error::Unpack(path.to_path_buf(), e.to_string()))?;
    } else if name.ends_with(".zst") {
        let dec = ruzstd::decoding::StreamingDecoder::new(&raw[..])
            .map_err(|e| Error::Unpack(path.to_path_buf(), e.to_string()))?;
        dec.take(limit)
            .read_to_end(&mut out)
            .map_err(|e| Error::Unpack(path.to_path_buf(), e.to_string()))?;
    } else if name.ends_with(".ko") {
        out = raw;
    } else {
        let why = "only .ko, .ko.xz and .ko.zst are understood".to_string();
        return Err(Error::Unpack(path.to_path_buf(), why));
    }
    if out.len() as u64 > MAX_MODULE_SIZE {
        return Err(Error::TooBig(path.to_path_buf()));
    }
    Ok(out)
}

/// The `depends=` of a module's `.modinfo` section.
pub fn depends(module: &[u8]) -> Vec<String> {
    let Some(info) = elf_section(module, b".modinfo") else {
        return Vec::new();
    };
    info.split(|b| *b == 0)
        .filter_map(|entry| entry.strip_prefix(b"depends="))
        .flat_map(|list| list.split(|b| *b == b','))
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).replace('-', "_"))
        .collect()
}

/// The contents of section `name` of an ELF64 relocatable file (a
/// module), either byte order; `None` for anything malformed.
pub fn elf_section<'a>(elf: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    if elf.get(..4)? != b"\x7fELF" || *elf.get(4)? != 2 {
        return None;
    }
    let little = *elf.get(5)? == 1;
    let num = |at: usize, len: usize| -> Option<u64> {
        let b = elf.get(at..at.checked_add(len)?)?;
        let mut v = 0u64;
        for i in 0..len {
            let byte = if little { b[len - 1 - i] } else { b[i] };
            v = (v << 8) | u64::from(byte);
        }
        Some(v)
    };
    let shoff = usize::try_from(num(0x28, 8)?).ok()?;
    let shentsize = usize::try_from(num(0x3a, 2)?).ok()?;
    let shnum = usize::try_from(num(0x3c, 2)?).ok()?;
    let shstrndx = usize::try_from(num(0x3e, 2)?).ok()?;
    if shentsize < 64 {
        return None;
    }
    let header = |i: usize| -> Option<(usize, usize, usize)> {
        let at = shoff.checked_add(i.checked_mul(shentsize)?)?;
        let name = usize::try_from(num(at, 4)?).ok()?;
        let off = usize::try_from(num(at + 24, 8)?).ok()?;
        let size = usize::try_from(num(at + 32, 8)?).ok()?;
        Some((name, off, size))
    };
    let (_, str_off, str_size) = header(shstrndx)?;
    let strtab = elf.get(str_off..str_off.checked_add(str_size)?)?;
    (0..shnum).find_map(|i| {
        let (n, off, size) = header(i)?;
        let sname = strtab.get(n..)?.split(|b| *b == 0).next()?;
        (sname == name).then(|| elf.get(off..off.checked_add(size)?))?
    })
}

/// The modules to load, dependencies first, each unpacked: the wanted
/// ones that are neither built in nor missing, and what they depend on.
/// `dir` is `/lib/modules/RELEASE`.
pub fn plan(dir: &Path, wanted: &[&str]) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let files = index(dir);
    let built_in = builtin(dir);
    let mut order: Vec<(String, Vec<u8>)> = Vec::new();
    // Depth-first, dependencies before dependents; `visiting` breaks cycles.
    fn visit(
        name: &str,
        files: &HashMap<String, PathBuf>,
        built_in: &[String],
        visiting: &mut Vec<String>,
        order: &mut Vec<(String, Vec<u8>)>,
        dir: &Path,
    ) -> Result<(), Error> {
        if order.iter().any(|(n, _)| n == name)
            || visiting.iter().any(|n| n == name)
            || built_in.iter().any(|n| n == name)
        {
            return Ok(());
        }
        let Some(path) = files.get(name) else {
            log::debug!(
                "modules: {name} is neither built in nor under {}",
                dir.display()
            );
            return Ok(());
        };
        if order.len() + visiting.len() >= MAX_MODULES {
            return Err(Error::TooMany(dir.to_path_buf()));
        }
        let data = unpack(path)?;
        visiting.push(name.to_string());
        for dep in depends(&data) {
            visit(&dep, files, built_in, visiting, order, dir)?;
        }
        visiting.pop();
        order.push((name.to_string(), data));
        Ok(())
    }
    let mut visiting = Vec::new();
    for name in wanted {
        visit(name, &files, &built_in, &mut visiting, &mut order, dir)?;
    }
    Ok(order)
}

/// The init of the initramfs: load the modules in order, mount the 9p
/// root the kernel's command line names, switch to its `/virt/init`.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /dev /newroot
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev
for m in /modules/*.ko; do
    /bin/busybox insmod "$m" || echo "lkvm initramfs: cannot load $m"
done
if ! /bin/busybox mount -t 9p -o trans=virtio,version=9p2000.L,rw /dev/root /newroot; then
    echo "lkvm initramfs: cannot mount the 9p root"
    /bin/busybox poweroff -f
fi
/bin/busybox umount /dev /proc
exec /bin/busybox switch_root /newroot /virt/init
"#;

/// A `newc` cpio archive (what the kernel unpacks as an initramfs).
#[derive(Default)]
pub struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let namesize = name.len() + 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            namesize,
            0
        );
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }

    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, &[]);
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | mode, data);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

/// The initramfs for a 9p root: busybox, the modules in load order, and
/// the init above.
pub fn initramfs(busybox: &[u8], modules: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut c = Cpio::default();
    c.dir("bin");
    c.file("bin/busybox", 0o755, busybox);
    c.file("init", 0o755, INIT.as_bytes());
    c.dir("modules");
    for (i, (name, data)) in modules.iter().enumerate() {
        c.file(&format!("modules/{i:02}-{name}.ko"), 0o644, data);
    }
    c.finish()
}

/// Where the host keeps the modules of kernel `release`.
pub fn module_dir(release: &str) -> Option<PathBuf> {
    if release.contains('/') || release.starts_with('.') {
        return None;
    }
    ["/lib/modules", "/usr/lib/modules"]
        .iter()
        .map(|base| Path::new(base).join(release))
        .find(|d| d.join("kernel").is_dir())
}

/// The initramfs a kernel needs for a 9p root, if its modules are on the
/// host and any of what it needs is a module; `None` when the kernel must
/// manage alone (its release unknown, no modules on the host, or 9p built
/// in).
pub fn for_9p_root(kernel: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    let Some(release) = release_of(kernel) else {
        log::debug!("modules: the kernel's release is not in its image");
        return Ok(None);
    };
    let Some(dir) = module_dir(&release) else {
        log::debug!("modules: none for kernel {release} on this host");
        return Ok(None);
    };
    let modules = plan(&dir, WANTED)?;
    if modules.is_empty() {
        return Ok(None);
    }
    let busybox = crate::rootfs::static_busybox()?;
    let names: Vec<&str> = modules.iter().map(|(n, _)| n.as_str()).collect();
    log::info!(
        "kernel {release} has its 9p root support as modules: loading {} from {} in an initramfs",
        names.join(", "),
        dir.display()
    );
    Ok(Some(initramfs(&busybox, &modules)))
}

#[cfg(test)]
pub mod testing {
    /// A minimal ELF64 relocatable file with a `.modinfo` section.
    pub fn module(modinfo: &str, little: bool) -> Vec<u8> {
        let strtab = b"\0.shstrtab\0.modinfo\0";
        let info = modinfo.replace(';', "\0").into_bytes();
        let mut f = vec![0u8; 64];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = if little { 1 } else { 2 };
        let str_off = f.len();
        f.extend_from_slice(strtab);
        let info_off = f.len();
        f.extend_from_slice(&info);
        while f.len() % 8 != 0 {
            f.push(0);
        }
        let shoff = f.len();
        let put = |v: u64, len: usize| -> Vec<u8> {
            let b = v.to_be_bytes();
            let mut s = b[8 - len..].to_vec();
            if little {
                s.reverse();
            }
            s
        };
        // null, .shstrtab, .modinfo
        for (name, off, size) in [
            (0u64, 0u64, 0u64),
            (1, str_off as u64, strtab.len() as u64),
            (11, info_off as u64, info.len() as u64),
        ] {
            let mut h = vec![0u8; 64];
            h[0..4].copy_from_slice(&put(name, 4));
            h[24..32].copy_from_slice(&put(off, 8));
            h[32..40].copy_from_slice(&put(size, 8));
            f.extend_from_slice(&h);
        }
        f[0x28..0x30].copy_from_slice(&put(shoff as u64, 8));
        f[0x3a..0x3c].copy_from_slice(&put(64, 2));
        f[0x3c..0x3e].copy_from_slice(&put(3, 2));
        f[0x3e..0x40].copy_from_slice(&put(1, 2));
        f
    }
}

#[cfg(test)]
mod tests {
    use super::testing::module;
    use super::*;

    #[test]
    fn the_release_comes_from_the_image() {
        let mut bz = crate::x86::bzimage::test_image(0x020f, 1, 4096);
        bz[0x20e..0x210].copy_from_slice(&0x300u16.to_le_bytes());
        bz[0x500..0x520].copy_from_slice(b"6.1.0-50-amd64 (debian@x) #1 SM\0");
        assert_eq!(release_of(&bz).as_deref(), Some("6.1.0-50-amd64"));
        let mut image = vec![0u8; 256];
        image.extend_from_slice(b"Linux version %s\0Linux version 6.12.107+deb13-riscv64 (x)");
        assert_eq!(
            release_of(&image).as_deref(),
            Some("6.12.107+deb13-riscv64")
        );
        assert_eq!(release_of(&[0u8; 300]), None);
        assert_eq!(
            module_name(Path::new("a/9pnet_virtio.ko.xz")).as_deref(),
            Some("9pnet_virtio")
        );
        assert_eq!(
            module_name(Path::new("virtio-pci.ko")).as_deref(),
            Some("virtio_pci")
        );
        assert_eq!(module_name(Path::new("README")), None);
        assert_eq!(module_dir("../../etc"), None);
    }

    #[test]
    fn modinfo_depends_are_read_in_either_byte_order() {
        for little in [true, false] {
            let m = module("license=GPL;depends=9pnet,netfs;vermagic=6.1", little);
            assert_eq!(depends(&m), ["9pnet", "netfs"]);
        }
        assert_eq!(depends(&module("depends=", true)), Vec::<String>::new());
        assert!(depends(b"\x7fELF").is_empty());
        let mut bad = module("depends=a", true);
        bad[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(depends(&bad).is_empty());
    }

    #[test]
    fn the_plan_loads_dependencies_first_skips_built_ins_and_unpacks() {
        let dir = std::env::temp_dir().join(format!("lkvm-modinit-{}", std::process::id()));
        let kernel = dir.join("kernel/x");
        std::fs::create_dir_all(&kernel).unwrap();
        std::fs::write(kernel.join("9p.ko"), module("depends=9pnet,netfs", true)).unwrap();
        let mut xz = Vec::new();
        let raw = module("depends=", true);
        lzma_rs::xz_compress(&mut &raw[..], &mut xz).unwrap();
        std::fs::write(kernel.join("9pnet.ko.xz"), xz).unwrap();
        let zst = ruzstd::encoding::compress_to_vec(
            &module("depends=9pnet", true)[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        std::fs::write(kernel.join("9pnet_virtio.ko.zst"), zst).unwrap();
        // A cycle must not loop.
        std::fs::write(kernel.join("netfs.ko"), module("depends=9p", true)).unwrap();
        std::fs::write(
            dir.join("modules.builtin"),
            "kernel/drivers/virtio/virtio_pci.ko\n",
        )
        .unwrap();
        let plan = plan(&dir, WANTED).unwrap();
        let names: Vec<&str> = plan.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["9pnet", "9pnet_virtio", "netfs", "9p"]);
        assert_eq!(plan[0].1, raw, "unpacked from xz");
        let cpio = initramfs(b"BB", &plan);
        assert!(cpio.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&cpio);
        for name in [
            "bin/busybox",
            "init",
            "modules/00-9pnet.ko",
            "modules/03-9p.ko",
            "TRAILER!!!",
        ] {
            assert!(text.contains(name), "{name}");
        }
        assert_eq!(cpio.len() % 4, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
