//! Putting boot images into guest RAM: the last step of every
//! architecture's `load`, with the one error every architecture reports.

use std::path::{Path, PathBuf};

use vm_memory::{Bytes, GuestAddress};

use super::place::Placement;
use crate::arch::BootImages;
use crate::memory::GuestMemory;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write {what} into guest memory: {source}")]
    Write {
        what: &'static str,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    #[error("--dump-dtb {path}: {source}")]
    DumpDtb {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes `data` (the kernel, the initrd, ...) at guest address `addr`.
pub fn write(mem: &GuestMemory, what: &'static str, addr: u64, data: &[u8]) -> Result<(), Error> {
    mem.write_slice(data, GuestAddress(addr))
        .map_err(|source| Error::Write { what, source })
}

/// Writes the kernel and, when there is one, the initrd at the addresses
/// the architecture's placement chose.
pub fn write_placed(
    mem: &GuestMemory,
    at: &Placement,
    images: &BootImages<'_>,
) -> Result<(), Error> {
    write(mem, "kernel", at.kernel, images.kernel)?;
    match at.initrd.zip(images.initrd) {
        Some(((addr, _), data)) => write(mem, "initrd", addr, data),
        None => Ok(()),
    }
}

/// Writes the device tree blob at `addr`, and to `--dump-dtb`'s file first
/// when one was given.
pub fn write_fdt(
    mem: &GuestMemory,
    addr: u64,
    blob: &[u8],
    dump: Option<&Path>,
) -> Result<(), Error> {
    if let Some(path) = dump {
        std::fs::write(path, blob).map_err(|source| Error::DumpDtb {
            path: path.to_path_buf(),
            source,
        })?;
    }
    write(mem, "device tree", addr, blob)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0x1000), 0x1000)]).unwrap()
    }

    fn placed(
        kernel: &'static [u8],
        initrd: (u64, &'static [u8]),
    ) -> (Placement, BootImages<'static>) {
        let at = Placement {
            kernel: 0x1000,
            kernel_end: 0x1000 + kernel.len() as u64,
            fdt: 0x1f00,
            initrd: Some((initrd.0, initrd.1.len() as u64)),
        };
        let images = BootImages {
            kernel,
            initrd: Some(initrd.1),
            cmdline: "",
        };
        (at, images)
    }

    #[test]
    fn images_land_where_placed_and_outside_ram_is_one_error() {
        let m = mem();
        let (at, images) = placed(b"kern", (0x1800, b"rd"));
        write_placed(&m, &at, &images).unwrap();
        let mut buf = [0u8; 4];
        m.read_slice(&mut buf, GuestAddress(0x1000)).unwrap();
        assert_eq!(&buf, b"kern");
        m.read_slice(&mut buf[..2], GuestAddress(0x1800)).unwrap();
        assert_eq!(&buf[..2], b"rd");
        let (at, images) = placed(b"k", (0x3000, b"rd"));
        let e = write_placed(&m, &at, &images).unwrap_err();
        assert!(e.to_string().starts_with("cannot write initrd"), "{e}");
    }

    #[test]
    fn the_dumped_blob_is_the_written_one() {
        let m = mem();
        let dir = std::env::temp_dir().join(format!("lkvm-dtb-{}", std::process::id()));
        write_fdt(&m, 0x1100, b"\xd0\x0d\xfe\xed", Some(&dir)).unwrap();
        assert_eq!(std::fs::read(&dir).unwrap(), b"\xd0\x0d\xfe\xed");
        let _ = std::fs::remove_file(&dir);
        let e = write_fdt(&m, 0x1100, b"x", Some(Path::new("/nonexistent/x.dtb"))).unwrap_err();
        assert!(
            e.to_string().starts_with("--dump-dtb /nonexistent/x.dtb"),
            "{e}"
        );
    }
}
