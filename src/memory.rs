//! Guest RAM on vm-memory, the KVM memory-slot table, and the policy that
//! decides which host memory features are safe for this host.
//!
//! Whether KVM mirrors changes of the host mapping into the guest
//! (`KVM_CAP_SYNC_MMU`, i.e. MMU notifiers) decides whether lkvm may let the
//! host change pages under the guest: KSM merging, hugetlbfs/file backing and
//! balloon discards. Without it those features would silently corrupt the
//! guest, so they are refused (or, for KSM which users never ask for
//! explicitly, left off).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, GuestRegionMmap, MmapRegion,
};

use crate::kvm::{self, MemoryRegion, Vm, MEM_LOG_DIRTY_PAGES, MEM_READONLY};

/// Guest physical memory as the rest of lkvm sees it.
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;

const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;
/// The block size KVM maps THP-backed guest RAM with.
const HUGE_PAGE: usize = 2 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("memory slot at {addr:#x} has size 0")]
    EmptySlot { addr: u64 },
    #[error("memory slot {addr:#x}+{size:#x} wraps around the address space")]
    SlotOverflow { addr: u64, size: u64 },
    #[error(
        "memory slot {addr:#x}+{size:#x} overlaps slot {other} at {other_addr:#x}+{other_size:#x}"
    )]
    SlotOverlap {
        addr: u64,
        size: u64,
        other: u32,
        other_addr: u64,
        other_size: u64,
    },
    #[error("KVM allows {max} memory slots and all are in use")]
    NoFreeSlot { max: usize },
    #[error("--hugetlbfs {path}: {source}")]
    HugetlbfsStat {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("--hugetlbfs {path}: not a hugetlbfs mount")]
    NotHugetlbfs { path: PathBuf },
    #[error("--hugetlbfs: this host's KVM lacks KVM_CAP_SYNC_MMU (no MMU notifiers), so hugetlbfs-backed guest RAM is unsafe here")]
    HugetlbfsNeedsSyncMmu,
    #[error("--hugetlbfs {path}: guest RAM region of {size:#x} bytes is not a multiple of the {page:#x}-byte huge page size")]
    HugePageMisaligned { path: PathBuf, size: u64, page: u64 },
    #[error("--hugetlbfs {path}: cannot create the backing file: {source}")]
    HugetlbfsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot allocate {size} MiB of guest RAM: {source}")]
    Allocate {
        size: u64,
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    #[error("cannot allocate {size} MiB of guest RAM: {source}")]
    AllocateAligned {
        size: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot register guest RAM with KVM: {0}")]
    Register(#[source] kvm::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// What a slot is for; turned into `KVM_MEM_*` flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotFlags {
    pub readonly: bool,
    pub dirty_log: bool,
}

impl SlotFlags {
    pub fn bits(self) -> u32 {
        let mut bits = 0;
        if self.readonly {
            bits |= MEM_READONLY;
        }
        if self.dirty_log {
            bits |= MEM_LOG_DIRTY_PAGES;
        }
        bits
    }
}

/// One KVM memory slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemSlot {
    pub slot: u32,
    pub guest_addr: u64,
    pub size: u64,
    pub host_addr: u64,
    pub flags: SlotFlags,
}

impl MemSlot {
    fn end(&self) -> u64 {
        self.guest_addr + self.size
    }

    pub fn region(&self) -> MemoryRegion {
        MemoryRegion {
            slot: self.slot,
            flags: self.flags.bits(),
            guest_phys_addr: self.guest_addr,
            memory_size: self.size,
            userspace_addr: self.host_addr,
        }
    }
}

/// The slots of one VM: ids allocated lowest-free-first, guest ranges never
/// overlapping (KVM rejects overlaps with a bare EEXIST; this says which).
#[derive(Debug)]
pub struct SlotTable {
    slots: Vec<MemSlot>,
    max_slots: usize,
}

impl SlotTable {
    pub fn new(max_slots: usize) -> Self {
        SlotTable {
            slots: Vec::new(),
            max_slots,
        }
    }

    /// Adds a slot and returns it with its id.
    pub fn add(
        &mut self,
        guest_addr: u64,
        size: u64,
        host_addr: u64,
        flags: SlotFlags,
    ) -> Result<MemSlot> {
        if size == 0 {
            return Err(Error::EmptySlot { addr: guest_addr });
        }
        let end = guest_addr.checked_add(size).ok_or(Error::SlotOverflow {
            addr: guest_addr,
            size,
        })?;
        if let Some(other) = self
            .slots
            .iter()
            .find(|s| guest_addr < s.end() && s.guest_addr < end)
        {
            return Err(Error::SlotOverlap {
                addr: guest_addr,
                size,
                other: other.slot,
                other_addr: other.guest_addr,
                other_size: other.size,
            });
        }
        let slot = (0..self.max_slots as u32)
            .find(|id| self.slots.iter().all(|s| s.slot != *id))
            .ok_or(Error::NoFreeSlot {
                max: self.max_slots,
            })?;
        let entry = MemSlot {
            slot,
            guest_addr,
            size,
            host_addr,
            flags,
        };
        self.slots.push(entry);
        self.slots.sort_by_key(|s| s.guest_addr);
        Ok(entry)
    }

    /// Slots in guest-address order.
    pub fn iter(&self) -> impl Iterator<Item = &MemSlot> {
        self.slots.iter()
    }

    /// The slot containing a guest address.
    pub fn find(&self, addr: u64) -> Option<&MemSlot> {
        self.slots
            .iter()
            .find(|s| s.guest_addr <= addr && addr < s.end())
    }
}

/// How guest RAM is backed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    Anonymous,
    Hugetlbfs(PathBuf),
}

/// Host memory features lkvm may use, decided once per VM from
/// `KVM_CAP_SYNC_MMU`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryPolicy {
    pub sync_mmu: bool,
}

/// What to do to guest RAM after mapping it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamAdvice {
    /// `MADV_MERGEABLE` (KSM).
    pub mergeable: bool,
    /// `MADV_HUGEPAGE` (transparent huge pages).
    pub hugepage: bool,
}

impl MemoryPolicy {
    /// Checks a requested backing and says how to advise the mapping.
    /// `want_thp` is the architecture's wish for transparent huge pages.
    pub fn plan(&self, backing: &Backing, want_thp: bool) -> Result<RamAdvice> {
        if matches!(backing, Backing::Hugetlbfs(_)) && !self.sync_mmu {
            return Err(Error::HugetlbfsNeedsSyncMmu);
        }
        Ok(RamAdvice {
            // Merging rewrites host PTEs behind the guest's back.
            mergeable: self.sync_mmu,
            // THP only changes the host page size, never the contents, but
            // it is pointless on hugetlbfs.
            hugepage: want_thp && *backing == Backing::Anonymous,
        })
    }

    /// Whether pages may be given back to the host with `MADV_DONTNEED`
    /// (balloon, free-page reporting).
    pub fn allows_discard(&self) -> bool {
        self.sync_mmu
    }
}

/// Checks that `path` is on hugetlbfs and returns its huge page size.
pub fn hugetlbfs_page_size(path: &Path) -> Result<u64> {
    let st = nix::sys::statfs::statfs(path).map_err(|source| Error::HugetlbfsStat {
        path: path.to_path_buf(),
        source,
    })?;
    #[allow(clippy::unnecessary_cast)] // f_type's width differs per target
    let magic = st.filesystem_type().0 as i64;
    if magic != HUGETLBFS_MAGIC {
        return Err(Error::NotHugetlbfs {
            path: path.to_path_buf(),
        });
    }
    Ok(st.block_size() as u64)
}

/// A guest RAM range (guest physical base, bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRange {
    pub base: u64,
    pub size: u64,
}

/// An anonymous mapping placed at an `align`-aligned host address, so that
/// transparent huge pages can back it and KVM can map guest RAM with block
/// (2 MiB) entries: that needs host and guest addresses congruent modulo
/// the block size. Unmapped on drop.
#[derive(Debug)]
pub struct AlignedMapping {
    addr: std::ptr::NonNull<std::ffi::c_void>,
    size: usize,
}

// SAFETY: the mapping is plain memory owned by this value; the pointer is
// never dereferenced through it, only handed to munmap on drop.
unsafe impl Send for AlignedMapping {}
// SAFETY: as above; shared references give no access to the memory.
unsafe impl Sync for AlignedMapping {}

impl AlignedMapping {
    /// The host address of the mapping.
    pub fn host_addr(&self) -> u64 {
        self.addr.as_ptr() as u64
    }

    /// `size` bytes of zeroed anonymous memory at an `align`-aligned address.
    pub fn new(size: usize, align: usize) -> std::io::Result<Self> {
        let len = std::num::NonZeroUsize::new(size + align)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: a fresh anonymous private mapping overlaps nothing.
        let base = unsafe {
            nix::sys::mman::mmap_anonymous(
                None,
                len,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_PRIVATE | nix::sys::mman::MapFlags::MAP_NORESERVE,
            )
        }?;
        let start = base.as_ptr() as usize;
        let aligned = start.next_multiple_of(align);
        let head = aligned - start;
        let tail = align - head;
        if head > 0 {
            // SAFETY: [start, aligned) is the unused head of our own mapping.
            unsafe { nix::sys::mman::munmap(base, head) }?;
        }
        let addr = std::ptr::NonNull::new(aligned as *mut std::ffi::c_void)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        if tail > 0 {
            let end = std::ptr::NonNull::new((aligned + size) as *mut std::ffi::c_void)
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
            // SAFETY: [aligned + size, start + size + align) is the unused
            // tail of our own mapping.
            unsafe { nix::sys::mman::munmap(end, tail) }?;
        }
        Ok(AlignedMapping { addr, size })
    }
}

impl Drop for AlignedMapping {
    fn drop(&mut self) {
        // SAFETY: this value owns exactly this mapping, and the vm-memory
        // region viewing it (not owning it) has been dropped before us.
        if let Err(e) = unsafe { nix::sys::mman::munmap(self.addr, self.size) } {
            log::debug!("munmap of guest RAM failed: {e}");
        }
    }
}

/// Guest RAM: the mappings, and the slots they were registered as.
#[derive(Debug)]
pub struct GuestRam {
    // Declared before `_mappings` so the views are dropped before the
    // mappings they point into are unmapped.
    mem: GuestMemory,
    _mappings: Vec<AlignedMapping>,
    slots: SlotTable,
    advice: RamAdvice,
}

impl GuestRam {
    /// Maps guest RAM per `ranges` with the given backing and advice.
    /// Anonymous RAM that is to be advised `MADV_HUGEPAGE` is mapped 2 MiB
    /// aligned.
    pub fn new(ranges: &[RamRange], backing: &Backing, advice: RamAdvice) -> Result<GuestRam> {
        let total: u64 = ranges.iter().map(|r| r.size).sum();
        let mut aligned = Vec::new();
        let mem = match backing {
            Backing::Anonymous if advice.hugepage => {
                Self::map_aligned(ranges, total, HUGE_PAGE, &mut aligned)?
            }
            Backing::Anonymous => GuestMemory::from_ranges(
                &ranges
                    .iter()
                    .map(|r| (GuestAddress(r.base), r.size as usize))
                    .collect::<Vec<_>>(),
            )
            .map_err(|source| Error::Allocate {
                size: total >> 20,
                source,
            })?,
            Backing::Hugetlbfs(dir) => Self::map_hugetlbfs(dir, ranges, total)?,
        };
        let ram = GuestRam {
            mem,
            _mappings: aligned,
            slots: SlotTable::new(usize::MAX),
            advice,
        };
        ram.advise();
        Ok(ram)
    }

    fn map_aligned(
        ranges: &[RamRange],
        total: u64,
        align: usize,
        keep: &mut Vec<AlignedMapping>,
    ) -> Result<GuestMemory> {
        let alloc_err = |e: std::io::Error| Error::AllocateAligned {
            size: total >> 20,
            source: e,
        };
        let mut regions = Vec::new();
        for r in ranges {
            let size = usize::try_from(r.size).map_err(|_| Error::SlotOverflow {
                addr: r.base,
                size: r.size,
            })?;
            let mapping = AlignedMapping::new(size, align).map_err(alloc_err)?;
            let prot = libc::PROT_READ | libc::PROT_WRITE;
            let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
            // SAFETY: `mapping` is a live private anonymous mapping of
            // exactly `size` bytes with these protections; it is kept in
            // `keep` (owned by GuestRam) and outlives the view built here.
            let view = unsafe {
                MmapRegion::<()>::build_raw(mapping.addr.as_ptr().cast(), size, prot, flags)
            }
            .map_err(|e| alloc_err(std::io::Error::other(e.to_string())))?;
            keep.push(mapping);
            let region =
                GuestRegionMmap::new(view, GuestAddress(r.base)).ok_or(Error::Allocate {
                    size: total >> 20,
                    source: vm_memory::mmap::FromRangesError::InvalidGuestRegion,
                })?;
            regions.push(region);
        }
        GuestMemory::from_regions(regions).map_err(|e| Error::Allocate {
            size: total >> 20,
            source: e.into(),
        })
    }

    fn map_hugetlbfs(dir: &Path, ranges: &[RamRange], total: u64) -> Result<GuestMemory> {
        let page = hugetlbfs_page_size(dir)?;
        if let Some(r) = ranges.iter().find(|r| r.size % page != 0) {
            return Err(Error::HugePageMisaligned {
                path: dir.to_path_buf(),
                size: r.size,
                page,
            });
        }
        let file_err = |source| Error::HugetlbfsFile {
            path: dir.to_path_buf(),
            source,
        };
        let file = tempfile_in(dir).map_err(file_err)?;
        file.set_len(total).map_err(file_err)?;
        let mut offset = 0;
        let mut regions = Vec::new();
        for r in ranges {
            let fo = FileOffset::new(file.try_clone().map_err(file_err)?, offset);
            let mapping =
                MmapRegion::<()>::from_file(fo, r.size as usize).map_err(|e| Error::Allocate {
                    size: total >> 20,
                    source: e.into(),
                })?;
            let region =
                GuestRegionMmap::new(mapping, GuestAddress(r.base)).ok_or(Error::Allocate {
                    size: total >> 20,
                    source: vm_memory::mmap::FromRangesError::InvalidGuestRegion,
                })?;
            regions.push(region);
            offset += r.size;
        }
        GuestMemory::from_regions(regions).map_err(|e| Error::Allocate {
            size: total >> 20,
            source: e.into(),
        })
    }

    fn advise(&self) {
        for region in self.mem.iter() {
            let len = region.len() as usize;
            let addr = region.as_ptr();
            if self.advice.mergeable {
                madvise(
                    addr,
                    len,
                    nix::sys::mman::MmapAdvise::MADV_MERGEABLE,
                    "MADV_MERGEABLE",
                );
            }
            if self.advice.hugepage {
                madvise(
                    addr,
                    len,
                    nix::sys::mman::MmapAdvise::MADV_HUGEPAGE,
                    "MADV_HUGEPAGE",
                );
            }
        }
    }

    /// Registers every RAM region as a KVM memory slot.
    pub fn register(&mut self, vm: &Vm) -> Result<()> {
        for region in self.mem.iter() {
            let slot = self.slots.add(
                region.start_addr().0,
                region.len(),
                region.as_ptr() as u64,
                SlotFlags::default(),
            )?;
            // SAFETY: the region is a live mapping owned by `self.mem`, which
            // the VMM keeps until the VM is torn down.
            unsafe { vm.set_user_memory_region(slot.region()) }.map_err(Error::Register)?;
        }
        Ok(())
    }

    pub fn memory(&self) -> &GuestMemory {
        &self.mem
    }

    pub fn slots(&self) -> &SlotTable {
        &self.slots
    }

    pub fn advice(&self) -> RamAdvice {
        self.advice
    }
}

fn madvise(addr: *mut u8, len: usize, advice: nix::sys::mman::MmapAdvise, name: &str) {
    let Some(ptr) = std::ptr::NonNull::new(addr.cast()) else {
        return;
    };
    // SAFETY: addr/len describe exactly one guest RAM mapping owned by
    // vm-memory; advice never changes its contents (MERGEABLE/HUGEPAGE).
    if let Err(e) = unsafe { nix::sys::mman::madvise(ptr, len, advice) } {
        // EINVAL means the host kernel lacks KSM/THP: a missed optimisation.
        log::debug!("{name} on guest RAM failed: {e}");
    }
}

/// An unlinked file in `dir` (hugetlbfs does not support O_TMPFILE everywhere).
fn tempfile_in(dir: &Path) -> std::io::Result<File> {
    let template = dir.join("lkvm-ram-XXXXXX");
    let (fd, path) = nix::unistd::mkstemp(&template).map_err(std::io::Error::from)?;
    let file = File::from(fd);
    std::fs::remove_file(&path)?;
    debug_assert!(file.as_raw_fd() >= 0);
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn slots_get_lowest_free_ids_and_flags() {
        let mut t = SlotTable::new(8);
        let a = t
            .add(0x1000_0000, 0x1000, 0x7000_0000, SlotFlags::default())
            .unwrap();
        let b = t
            .add(
                0,
                0x1000,
                0x8000_0000,
                SlotFlags {
                    readonly: true,
                    dirty_log: true,
                },
            )
            .unwrap();
        assert_eq!((a.slot, b.slot), (0, 1));
        assert_eq!(b.region().flags, MEM_READONLY | MEM_LOG_DIRTY_PAGES);
        assert_eq!(a.region().flags, 0);
        // iteration is in guest-address order
        let addrs: Vec<u64> = t.iter().map(|s| s.guest_addr).collect();
        assert_eq!(addrs, vec![0, 0x1000_0000]);
        assert_eq!(t.find(0x1000_0fff).map(|s| s.slot), Some(0));
        assert_eq!(t.find(0x1000_1000), None);
    }

    #[test]
    fn overlapping_empty_wrapping_and_exhausted_slots_are_rejected() {
        let mut t = SlotTable::new(2);
        t.add(0x10000, 0x10000, 0, SlotFlags::default()).unwrap();
        let err = t.add(0x1ffff, 0x10, 0, SlotFlags::default()).unwrap_err();
        assert!(matches!(err, Error::SlotOverlap { other: 0, .. }), "{err}");
        let err = t.add(0x0, 0x10001, 0, SlotFlags::default()).unwrap_err();
        assert!(matches!(err, Error::SlotOverlap { .. }));
        assert!(matches!(
            t.add(0x50000, 0, 0, SlotFlags::default()),
            Err(Error::EmptySlot { .. })
        ));
        assert!(matches!(
            t.add(u64::MAX - 1, 4, 0, SlotFlags::default()),
            Err(Error::SlotOverflow { .. })
        ));
        // adjacent is fine
        t.add(0x20000, 0x1000, 0, SlotFlags::default()).unwrap();
        assert!(matches!(
            t.add(0x90000, 0x1000, 0, SlotFlags::default()),
            Err(Error::NoFreeSlot { max: 2 })
        ));
    }

    #[test]
    fn policy_with_sync_mmu_allows_everything() {
        let p = MemoryPolicy { sync_mmu: true };
        let anon = p.plan(&Backing::Anonymous, true).unwrap();
        assert_eq!(
            anon,
            RamAdvice {
                mergeable: true,
                hugepage: true
            }
        );
        let huge = p
            .plan(&Backing::Hugetlbfs("/mnt/huge".into()), true)
            .unwrap();
        assert!(huge.mergeable && !huge.hugepage);
        assert!(p.allows_discard());
        assert!(!p.plan(&Backing::Anonymous, false).unwrap().hugepage);
    }

    #[test]
    fn policy_without_sync_mmu_refuses_hugetlbfs_and_never_merges() {
        let p = MemoryPolicy { sync_mmu: false };
        let err = p
            .plan(&Backing::Hugetlbfs("/mnt/huge".into()), false)
            .unwrap_err();
        assert!(matches!(err, Error::HugetlbfsNeedsSyncMmu));
        assert!(err.to_string().contains("KVM_CAP_SYNC_MMU"));
        let anon = p.plan(&Backing::Anonymous, true).unwrap();
        assert!(!anon.mergeable);
        assert!(anon.hugepage, "THP does not depend on MMU notifiers");
        assert!(!p.allows_discard());
    }

    #[test]
    fn hugetlbfs_check_rejects_ordinary_directories() {
        let err = hugetlbfs_page_size(Path::new("/tmp")).unwrap_err();
        assert!(matches!(err, Error::NotHugetlbfs { .. }));
        assert_eq!(err.to_string(), "--hugetlbfs /tmp: not a hugetlbfs mount");
        let err = hugetlbfs_page_size(Path::new("/nonexistent/lkvm")).unwrap_err();
        assert!(matches!(err, Error::HugetlbfsStat { .. }));
    }

    #[test]
    fn anonymous_ram_maps_every_range() {
        let ranges = [
            RamRange {
                base: 0,
                size: 0x10_0000,
            },
            RamRange {
                base: 0x1_0000_0000,
                size: 0x20_0000,
            },
        ];
        let advice = MemoryPolicy { sync_mmu: true }
            .plan(&Backing::Anonymous, false)
            .unwrap();
        let ram = GuestRam::new(&ranges, &Backing::Anonymous, advice).unwrap();
        assert_eq!(ram.memory().num_regions(), 2);
        let thp = MemoryPolicy { sync_mmu: true }
            .plan(&Backing::Anonymous, true)
            .unwrap();
        let aligned = GuestRam::new(&ranges, &Backing::Anonymous, thp).unwrap();
        for region in aligned.memory().iter() {
            assert_eq!(
                region.as_ptr() as usize % HUGE_PAGE,
                0,
                "host address 2 MiB aligned"
            );
        }
        aligned
            .memory()
            .write_obj(0xabu8, GuestAddress(0x1_001f_ffff))
            .unwrap();
        assert!(ram.memory().address_in_range(GuestAddress(0x1_001f_ffff)));
        assert!(!ram.memory().address_in_range(GuestAddress(0x10_0000)));
    }
}
