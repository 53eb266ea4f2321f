//! kvmtool's search for a kernel when `lkvm run` is given none: a kernel
//! built in the current directory (or the kernel tree around it), then the
//! running host kernel's image under /boot.

use std::path::{Path, PathBuf};

use crate::arch::ArchInfo;

/// Where to look, in order, for a host running kernel `release`.
pub fn candidates(arch: &ArchInfo, release: &str) -> Vec<PathBuf> {
    let built = if arch.image_at_top {
        PathBuf::from(arch.image)
    } else {
        Path::new("arch")
            .join(arch.kbuild)
            .join("boot")
            .join(arch.image)
    };
    let mut list = vec![
        Path::new(".").join(arch.image),
        built.clone(),
        // kvmtool's own place in a kernel tree, tools/kvm.
        Path::new("../..").join(&built),
    ];
    for stem in ["vmlinuz", "vmlinux", "bzImage"] {
        list.push(PathBuf::from(format!("/boot/{stem}-{release}")));
    }
    let mut seen = Vec::new();
    list.retain(|p| {
        let key = p.strip_prefix(".").unwrap_or(p).to_path_buf();
        let new = !seen.contains(&key);
        seen.push(key);
        new
    });
    list
}

/// The first candidate that is a regular file, or the list searched.
pub fn find(
    arch: &ArchInfo,
    release: &str,
    is_file: impl Fn(&Path) -> bool,
) -> Result<PathBuf, Vec<PathBuf>> {
    let list = candidates(arch, release);
    list.iter().find(|p| is_file(p)).cloned().ok_or(list)
}

/// [`find`] on this host: its files and its running kernel's release.
pub fn find_on_host(arch: &ArchInfo) -> Result<PathBuf, Vec<PathBuf>> {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    find(arch, &release, |p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{AARCH64, POWERPC64, X86_64};

    fn names(list: &[PathBuf]) -> Vec<String> {
        list.iter().map(|p| p.display().to_string()).collect()
    }

    #[test]
    fn the_search_order_is_kvmtools() {
        assert_eq!(
            names(&candidates(&X86_64, "6.1.0-50-amd64")),
            [
                "./bzImage",
                "arch/x86/boot/bzImage",
                "../../arch/x86/boot/bzImage",
                "/boot/vmlinuz-6.1.0-50-amd64",
                "/boot/vmlinux-6.1.0-50-amd64",
                "/boot/bzImage-6.1.0-50-amd64",
            ]
        );
        assert_eq!(
            names(&candidates(&AARCH64, "r"))[..2],
            ["./Image", "arch/arm64/boot/Image"]
        );
        // PowerPC boots the vmlinux at the top of the tree.
        assert_eq!(
            names(&candidates(&POWERPC64, "r"))[..2],
            ["./vmlinux", "../../vmlinux"]
        );
    }

    #[test]
    fn the_first_file_found_wins_and_a_miss_lists_the_places() {
        let found = find(&X86_64, "r", |p| {
            p.starts_with("/boot") || p.ends_with("x86/boot/bzImage")
        });
        assert_eq!(found, Ok(PathBuf::from("arch/x86/boot/bzImage")));
        let missed = find(&X86_64, "r", |_| false).unwrap_err();
        assert_eq!(missed.len(), 6);
    }
}
