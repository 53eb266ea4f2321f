//! Reading boot images from the host, and the format parsers that more than
//! one architecture needs.

pub mod elf;
pub mod flat;
pub mod place;
pub mod search;
pub mod write;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} is empty")]
    Empty { what: &'static str, path: PathBuf },
    #[error("{what} {path} is a directory")]
    Directory { what: &'static str, path: PathBuf },
    #[error("{what} {path} ({size} bytes) is larger than guest RAM ({ram} bytes)")]
    LargerThanRam {
        what: &'static str,
        path: PathBuf,
        size: u64,
        ram: u64,
    },
}

/// Reads a whole boot file (kernel, initrd), refusing empty files, directories
/// and files larger than `limit` (guest RAM) before reading them.
pub fn read_image(what: &'static str, path: &Path, limit: u64) -> Result<Vec<u8>, Error> {
    let err = |source| Error::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(err)?;
    let meta = file.metadata().map_err(err)?;
    if meta.is_dir() {
        return Err(Error::Directory {
            what,
            path: path.to_path_buf(),
        });
    }
    if meta.len() == 0 {
        return Err(Error::Empty {
            what,
            path: path.to_path_buf(),
        });
    }
    if meta.len() > limit {
        return Err(Error::LargerThanRam {
            what,
            path: path.to_path_buf(),
            size: meta.len(),
            ram: limit,
        });
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut data).map_err(err)?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_empty_directory_and_oversized_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("lkvm-loader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, b"").unwrap();
        let big = dir.join("big");
        std::fs::write(&big, [0u8; 100]).unwrap();

        let e = read_image("kernel", &dir.join("nope"), 1 << 20).unwrap_err();
        assert!(e.to_string().starts_with("kernel "), "{e}");
        assert!(e.to_string().contains("No such file"), "{e}");
        assert!(matches!(
            read_image("kernel", &empty, 1 << 20),
            Err(Error::Empty { .. })
        ));
        assert!(matches!(
            read_image("initrd", &dir, 1 << 20),
            Err(Error::Directory { .. })
        ));
        assert!(matches!(
            read_image("initrd", &big, 99),
            Err(Error::LargerThanRam {
                size: 100,
                ram: 99,
                ..
            })
        ));
        assert_eq!(read_image("initrd", &big, 100).unwrap().len(), 100);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
