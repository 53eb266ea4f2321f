//! Root filesystems made by `lkvm setup NAME`: a directory under ~/.lkvm
//! with a static busybox, lkvm's own guest init, and the few files a shell
//! wants. `lkvm run -d NAME` shares it with the guest over virtio-9p as its
//! root. The one named `default` is what `lkvm run` boots when given no
//! disk and no initrd, as kvmtool does, with the host's `/` shared beside
//! it as `hostfs` and mounted at `/host`; `lkvm sandbox CMD` runs CMD in it
//! (from the caller's directory, seen through /host) and returns CMD's exit
//! status. Its `lib`, `lib64` and `usr/lib` lead into /host, so dynamically
//! linked host programs find their loader and libraries.

use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::ipc;

/// Marks a directory as an lkvm rootfs.
pub const MARKER: &str = ".lkvm-rootfs";
/// The 9p mount tag of a root shared this way, and the kernel parameters
/// that mount it.
pub const ROOT_TAG: &str = "/dev/root";
pub const ROOT_PARAMS: &str =
    "root=/dev/root rootfstype=9p rootflags=trans=virtio,version=9p2000.L rw init=/virt/init";
/// The rootfs `lkvm run` and `lkvm sandbox` use when none is named.
pub const DEFAULT_ROOTFS: &str = "default";
/// The 9p tag of the host's `/` beside the default rootfs (kvmtool's).
pub const HOSTFS_TAG: &str = "hostfs";
const SANDBOX_SCRIPT: &str = "virt/sandbox.sh";
const SANDBOX_STATUS: &str = "virt/sandbox.status";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Home(#[from] ipc::Error),
    #[error("'{0}' is not a valid rootfs name (letters, digits, '-', '_', '.')")]
    BadName(String),
    #[error("rootfs '{0}' already exists ({1})")]
    Exists(String, PathBuf),
    #[error("lkvm setup needs a statically linked busybox for the guest; none found at {0} (Debian: apt install busybox-static)")]
    NoBusybox(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the sandboxed command left no exit status: the guest ended first")]
    NoStatus,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a static busybox may be found on the host.
const BUSYBOX: &[&str] = &["/bin/busybox", "/usr/bin/busybox", "/usr/sbin/busybox"];

/// Whether an ELF file needs no dynamic loader (no PT_INTERP header).
pub fn is_static_elf(data: &[u8]) -> bool {
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 {
        return false;
    }
    let le = data[5] == 1;
    let u16_at = |o: usize| -> Option<u16> {
        let b: [u8; 2] = data.get(o..o + 2)?.try_into().ok()?;
        Some(if le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    };
    let u32_at = |o: usize| -> Option<u32> {
        let b: [u8; 4] = data.get(o..o + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let u64_at = |o: usize| -> Option<u64> {
        let b: [u8; 8] = data.get(o..o + 8)?.try_into().ok()?;
        Some(if le {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..u64::from(phnum)).all(|i| {
        let at = phoff + i * u64::from(phentsize);
        usize::try_from(at)
            .ok()
            .and_then(u32_at)
            .is_some_and(|p_type| p_type != 3)
    })
}

fn find_busybox() -> Result<PathBuf, Error> {
    for p in BUSYBOX {
        if let Ok(data) = std::fs::read(p) {
            if is_static_elf(&data) {
                return Ok(PathBuf::from(p));
            }
        }
    }
    Err(Error::NoBusybox(BUSYBOX.join(", ")))
}

/// The host's static busybox, for a guest's initramfs.
pub fn static_busybox() -> Result<Vec<u8>, Error> {
    let path = find_busybox()?;
    std::fs::read(&path).map_err(io_err(&path))
}

/// lkvm's guest init: mount the kernel filesystems and the host's `/` when
/// it is shared, then run the sandbox command (recording its status in the
/// rootfs) or a shell, then end the VM. A reset ends lkvm on every
/// architecture, so it stands for power-off. Host programs that busybox
/// does not provide are found through /host, after busybox's.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev 2>/dev/null
/bin/busybox mount -t tmpfs tmp /tmp
/bin/busybox mkdir -p /host
/bin/busybox mount -t 9p -o trans=virtio,version=9p2000.L hostfs /host 2>/dev/null
export PATH=/bin:/sbin:/usr/bin:/usr/sbin:/host/usr/local/bin:/host/usr/bin:/host/bin:/host/usr/sbin:/host/sbin HOME=/root
hostname -F /etc/hostname
if [ -f /virt/sandbox.sh ]; then
    sh /virt/sandbox.sh
    echo $? > /virt/sandbox.status
    sync
else
    echo "lkvm guest $(hostname): type 'exit' to end it"
    setsid cttyhack sh -l
fi
reboot -f
"#;

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `lkvm setup NAME`: creates ~/.lkvm/NAME.
pub fn setup(name: &str) -> Result<PathBuf, Error> {
    if !valid_name(name) {
        return Err(Error::BadName(name.to_string()));
    }
    let dir = ipc::home()?.join(name);
    if dir.exists() {
        return Err(Error::Exists(name.to_string(), dir));
    }
    let busybox = find_busybox()?;
    // Built aside and renamed into place, so two lkvm processes making
    // the same rootfs at once (two guests booting the default one) never
    // see it half made: the rename of the second one fails, and its copy
    // goes.
    let tmp = dir.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let made = populate(&tmp, name, &busybox).and_then(|()| {
        std::fs::rename(&tmp, &dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })
    });
    if made.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
        if dir.join(MARKER).is_file() {
            return Err(Error::Exists(name.to_string(), dir));
        }
    }
    made.map(|()| dir)
}

fn populate(dir: &Path, name: &str, busybox: &Path) -> Result<(), Error> {
    for sub in [
        "bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "mnt", "var", "virt", "home",
        "host", "usr/bin", "usr/sbin",
    ] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).map_err(io_err(&p))?;
    }
    // The host's loader and libraries, for its dynamically linked programs.
    for (link, target) in [
        ("lib", "/host/lib"),
        ("lib64", "/host/lib64"),
        ("usr/lib", "/host/usr/lib"),
    ] {
        let p = dir.join(link);
        symlink(target, &p).map_err(io_err(&p))?;
    }
    let bb = dir.join("bin/busybox");
    std::fs::copy(busybox, &bb).map_err(io_err(&bb))?;
    std::fs::set_permissions(&bb, std::fs::Permissions::from_mode(0o755)).map_err(io_err(&bb))?;
    // The applets this busybox has; a few essentials if it will not say.
    let listed = Command::new(busybox).arg("--list").output().ok();
    let applets: Vec<String> = match listed {
        Some(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
            .map(str::to_string)
            .collect(),
        _ => [
            "sh", "mount", "reboot", "poweroff", "hostname", "setsid", "cttyhack", "sync", "ls",
            "cat",
        ]
        .map(String::from)
        .to_vec(),
    };
    for a in &applets {
        let link = dir.join("bin").join(a);
        symlink("busybox", &link).map_err(io_err(&link))?;
    }
    let hostname = format!("{name}\n");
    let files: [(&str, &str, u32); 6] = [
        ("virt/init", INIT, 0o755),
        ("etc/hostname", &hostname, 0o644),
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644),
        ("etc/group", "root:x:0:\n", 0o644),
        ("etc/hosts", "127.0.0.1 localhost\n", 0o644),
        (MARKER, "made by lkvm setup\n", 0o644),
    ];
    for (rel, content, mode) in files {
        let p = dir.join(rel);
        std::fs::write(&p, content).map_err(io_err(&p))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).map_err(io_err(&p))?;
    }
    Ok(())
}

/// What `-d ARG` names when it is a root filesystem rather than a disk
/// image: a directory, or the name of a rootfs under ~/.lkvm.
pub fn resolve(arg: &str) -> Option<PathBuf> {
    let path = Path::new(arg);
    if path.is_dir() {
        return Some(path.to_path_buf());
    }
    if path.exists() || !valid_name(arg) {
        return None;
    }
    let dir = ipc::home().ok()?.join(arg);
    dir.join(MARKER).is_file().then_some(dir)
}

/// The default rootfs's directory (it may not exist yet).
pub fn default_dir() -> Result<PathBuf, Error> {
    Ok(ipc::home()?.join(DEFAULT_ROOTFS))
}

/// Makes the default rootfs if it does not exist yet; returns it.
pub fn ensure_default() -> Result<PathBuf, Error> {
    let dir = default_dir()?;
    if dir.join(MARKER).is_file() {
        return Ok(dir);
    }
    log::info!("making the default rootfs in {}", dir.display());
    match setup(DEFAULT_ROOTFS) {
        // Made by another lkvm meanwhile.
        Err(Error::Exists(..)) if dir.join(MARKER).is_file() => Ok(dir),
        other => other,
    }
}

/// Makes the rootfs run `command` at its next boot, from `cwd` on the
/// host as the guest sees it under /host.
pub fn arm_sandbox(root: &Path, command: &[String], cwd: &Path) -> Result<(), Error> {
    let script = root.join(SANDBOX_SCRIPT);
    let quoted: Vec<String> = command.iter().map(|a| shell_quote(a)).collect();
    let host_cwd = Path::new("/host").join(cwd.strip_prefix("/").unwrap_or(cwd));
    let text = format!(
        "#!/bin/sh\ncd {} 2>/dev/null || cd /\n{}\n",
        shell_quote(&host_cwd.to_string_lossy()),
        quoted.join(" ")
    );
    std::fs::write(&script, text).map_err(io_err(&script))?;
    let status = root.join(SANDBOX_STATUS);
    match std::fs::remove_file(&status) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(&status)(e)),
    }
}

/// Reads the sandboxed command's exit status and disarms the rootfs.
pub fn sandbox_status(root: &Path) -> Result<i32, Error> {
    let _ = std::fs::remove_file(root.join(SANDBOX_SCRIPT));
    let status = root.join(SANDBOX_STATUS);
    let text = std::fs::read_to_string(&status).map_err(|_| Error::NoStatus)?;
    let _ = std::fs::remove_file(&status);
    text.trim().parse().map_err(|_| Error::NoStatus)
}

/// `'...'` with embedded quotes escaped, for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_elves_are_told_from_dynamic_ones() {
        let bb = BUSYBOX.iter().find_map(|p| std::fs::read(p).ok());
        if let Some(data) = bb {
            // Debian's busybox-static (make deps installs it) is static.
            assert!(is_static_elf(&data));
        }
        let ls = std::fs::read("/bin/ls").unwrap();
        assert!(!is_static_elf(&ls), "/bin/ls is dynamically linked");
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        assert!(!is_static_elf(&[0x7f, b'E', b'L', b'F', 2, 1]));
    }

    #[test]
    fn names_and_quoting() {
        assert!(valid_name("default"));
        assert!(!valid_name("../x"));
        assert!(!valid_name(".hidden"));
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn sandbox_scripts_and_status() {
        let root = std::env::temp_dir().join(format!("lkvm-rootfs-{}", std::process::id()));
        std::fs::create_dir_all(root.join("virt")).unwrap();
        arm_sandbox(
            &root,
            &["echo".into(), "a b".into()],
            Path::new("/work/x y"),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join(SANDBOX_SCRIPT)).unwrap(),
            "#!/bin/sh\ncd '/host/work/x y' 2>/dev/null || cd /\n'echo' 'a b'\n"
        );
        assert!(matches!(sandbox_status(&root), Err(Error::NoStatus)));
        arm_sandbox(&root, &["true".into()], Path::new("/")).unwrap();
        std::fs::write(root.join(SANDBOX_STATUS), "7\n").unwrap();
        assert_eq!(sandbox_status(&root).unwrap(), 7);
        assert!(!root.join(SANDBOX_SCRIPT).exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
