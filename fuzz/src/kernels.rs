//! What the kernel-image targets share: each architecture's loading step
//! as its `machine.rs` does it (parse, place, write into guest RAM), on
//! guest RAM made once per process (what a load writes never changes
//! what the next input's load does).

use std::sync::OnceLock;

use lkvm::memory::GuestMemory;
use lkvm::x86::mptable::PciIrq;
use vm_memory::{Bytes, GuestAddress};

const MIB: u64 = 1 << 20;
/// The most guest RAM a target gives the kernel.
pub const MAX_RAM: u64 = 64 * MIB;

/// The loading parameters the first input byte picks.
pub struct Setup {
    pub ram: u64,
    pub cpus: u32,
    pub initrd: Option<Vec<u8>>,
    pub cmdline: &'static str,
    pub pci_irqs: Vec<PciIrq>,
}

impl Setup {
    /// Bits 0-2: RAM 4, 8, 16, 32 or 64 MiB; bit 3: an initrd; bit 4:
    /// two CPUs; bit 5: a long command line; bit 6: PCI interrupts.
    pub fn from_byte(b: u8) -> Setup {
        Setup {
            ram: [4, 8, 16, 32, 64][usize::from(b & 7) % 5] * MIB,
            cpus: if b & 0x10 != 0 { 2 } else { 1 },
            initrd: (b & 8 != 0).then(|| b"initrd!\n".repeat(64)),
            cmdline: if b & 0x20 != 0 {
                "console=ttyS0 root=/dev/vda rw quiet loglevel=8 init=/sbin/init panic=-1 \
                 earlyprintk=serial,ttyS0,115200 nokaslr"
            } else {
                "console=ttyS0"
            },
            pci_irqs: if b & 0x40 != 0 {
                vec![PciIrq { slot: 1, pin: 0 }, PciIrq { slot: 2, pin: 1 }]
            } else {
                Vec::new()
            },
        }
    }
}

fn ram(base: u64) -> GuestMemory {
    match GuestMemory::from_ranges(&[(GuestAddress(base), MAX_RAM as usize)]) {
        Ok(m) => m,
        Err(e) => panic!("guest RAM: {e}"),
    }
}

/// Guest RAM from 0 (x86, PowerPC).
pub fn low_ram() -> &'static GuestMemory {
    static M: OnceLock<GuestMemory> = OnceLock::new();
    M.get_or_init(|| ram(0))
}

/// Guest RAM from 2 GiB (arm64, RISC-V).
pub fn high_ram() -> &'static GuestMemory {
    static M: OnceLock<GuestMemory> = OnceLock::new();
    M.get_or_init(|| ram(lkvm::aarch64::layout::RAM_BASE))
}

/// x86_64: `x86::kernel::load` (bzImage, PVH ELF or flat binary), and the
/// release lkvm reads from the image for a 9p root's modules.
pub fn x86(kernel: &[u8], s: &Setup) {
    let _ = lkvm::x86::kernel::load(
        low_ram(),
        s.ram,
        s.cpus,
        kernel,
        s.initrd.as_deref(),
        s.cmdline,
        &s.pci_irqs,
    );
    let _ = lkvm::modinit::release_of(kernel);
}

/// arm64: the Image header (or a flat binary) and its placement.
pub fn arm64(kernel: &[u8], s: &Setup) {
    use lkvm::aarch64::image::{self, Image};
    let Ok(img) = Image::parse(kernel) else {
        return;
    };
    let initrd = s.initrd.as_deref();
    let base = lkvm::aarch64::layout::RAM_BASE;
    let Ok(at) = image::place(base, s.ram, &img, initrd.map(|i| i.len() as u64)) else {
        return;
    };
    let mem = high_ram();
    let _ = mem.write_slice(kernel, GuestAddress(at.kernel));
    if let (Some(data), Some((addr, _))) = (initrd, at.initrd) {
        let _ = mem.write_slice(data, GuestAddress(addr));
    }
}

/// RISC-V: the Image header (or a flat binary) and its placement.
pub fn riscv(kernel: &[u8], s: &Setup) {
    use lkvm::riscv::layout::{KERNEL_OFFSET, RAM_BASE};
    let Ok((_, size)) = lkvm::riscv::image::parse(kernel) else {
        return;
    };
    let initrd = s.initrd.as_deref();
    let Ok(at) = lkvm::loader::place::place(
        RAM_BASE,
        s.ram,
        KERNEL_OFFSET,
        size,
        initrd.map(|i| i.len() as u64),
    ) else {
        return;
    };
    let mem = high_ram();
    let _ = mem.write_slice(kernel, GuestAddress(at.kernel));
    if let (Some(data), Some((addr, _))) = (initrd, at.initrd) {
        let _ = mem.write_slice(data, GuestAddress(addr));
    }
}

/// PowerPC: an ELF vmlinux by its `PT_LOAD` segments, or a flat image.
pub fn powerpc(kernel: &[u8], s: &Setup) {
    use lkvm::powerpc::layout;
    let Ok(k) = layout::parse_kernel(kernel) else {
        return;
    };
    let initrd = s.initrd.as_deref();
    let Ok(at) = layout::place(s.ram, k.end, initrd.map(|i| i.len() as u64)) else {
        return;
    };
    let mem = low_ram();
    for (addr, bytes) in &k.pieces {
        let _ = mem.write_slice(bytes, GuestAddress(*addr));
    }
    if let (Some(data), Some((addr, _))) = (initrd, at.initrd) {
        let _ = mem.write_slice(data, GuestAddress(addr));
    }
}
