//! Where a device-tree architecture's kernel, device tree and initrd go in
//! guest RAM (arm64, RISC-V).

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error(
        "kernel needs {needed} MiB of RAM from the start of RAM, guest has {ram} MiB; raise -m"
    )]
    KernelTooBig { needed: u64, ram: u64 },
    #[error("initrd of {size} bytes does not fit in guest RAM above the kernel and device tree; raise -m")]
    InitrdDoesNotFit { size: u64 },
}

const SZ_2M: u64 = 2 << 20;
/// Room reserved for the device tree (arm64 booting.rst: at most 2 MiB).
pub const FDT_MAX_SIZE: u64 = SZ_2M;
/// The device tree and initrd stay in the first 256 MiB of RAM when they can.
const LOW_LIMIT: u64 = 256 << 20;

/// Where everything goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub kernel: u64,
    pub kernel_end: u64,
    pub fdt: u64,
    pub initrd: Option<(u64, u64)>,
}

/// The kernel at `ram_base + kernel_offset` occupying `kernel_size` bytes;
/// the device tree at the top of the first 256 MiB of RAM (2 MiB aligned);
/// the initrd just below the device tree, or at the top of RAM if it is too
/// big for that.
pub fn place(
    ram_base: u64,
    ram_size: u64,
    kernel_offset: u64,
    kernel_size: u64,
    initrd_size: Option<u64>,
) -> Result<Placement, Error> {
    // The offset and size come from the image's header: a sum past the
    // end of the address space is a kernel too big for any RAM, not an
    // address that wraps to a small one and passes the checks below.
    let kernel = ram_base.saturating_add(kernel_offset);
    let kernel_end = kernel.saturating_add(kernel_size);
    let ram_end = ram_base.saturating_add(ram_size);
    let too_big = Error::KernelTooBig {
        needed: kernel_end
            .saturating_add(FDT_MAX_SIZE)
            .saturating_sub(ram_base)
            .div_ceil(1 << 20),
        ram: ram_size >> 20,
    };
    let top = ram_end.min(ram_base + LOW_LIMIT);
    let fdt = top
        .checked_sub(FDT_MAX_SIZE)
        .map(|a| a & !(SZ_2M - 1))
        .filter(|a| *a >= kernel_end)
        .ok_or(too_big)?;
    let initrd = match initrd_size {
        None => None,
        Some(size) => {
            let below_fdt = fdt.checked_sub(size).map(|a| a & !0xfff);
            let at_top = ram_end.checked_sub(size).map(|a| a & !0xfff);
            let start = below_fdt
                .filter(|a| *a >= kernel_end)
                .or(at_top.filter(|a| *a >= fdt + FDT_MAX_SIZE))
                .ok_or(Error::InitrdDoesNotFit { size })?;
            Some((start, size))
        }
    };
    Ok(Placement {
        kernel,
        kernel_end,
        fdt,
        initrd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: u64 = 0x8000_0000;

    #[test]
    fn kernel_fdt_and_initrd_do_not_overlap() {
        let p = place(RAM, 256 << 20, 0, 40 << 20, Some(10 << 20)).unwrap();
        assert_eq!(p.kernel, RAM);
        assert_eq!(p.fdt, RAM + (254 << 20));
        let (start, size) = p.initrd.unwrap();
        assert_eq!(start + size, p.fdt);
        assert!(start >= p.kernel_end);
        // 1 GiB of RAM: still below 256 MiB
        let p = place(RAM, 1 << 30, 2 << 20, 40 << 20, None).unwrap();
        assert_eq!(p.kernel, RAM + (2 << 20));
        assert_eq!(p.fdt, RAM + (254 << 20));
        assert_eq!(p.initrd, None);
    }

    #[test]
    fn big_initrds_go_to_the_top_of_ram() {
        let p = place(RAM, 1 << 30, 0, 40 << 20, Some(300 << 20)).unwrap();
        let (start, size) = p.initrd.unwrap();
        assert_eq!(start + size, RAM + (1 << 30));
        assert!(start >= p.fdt + FDT_MAX_SIZE);
        assert_eq!(
            place(RAM, 256 << 20, 0, 40 << 20, Some(300 << 20)).unwrap_err(),
            Error::InitrdDoesNotFit { size: 300 << 20 }
        );
    }

    /// Found by the kernel_image fuzz target: an Image header whose size
    /// or text offset reaches past the end of the address space made the
    /// kernel's end wrap to a small address (a panic in debug builds, a
    /// kernel overlapping its device tree in release builds).
    #[test]
    fn header_fields_past_the_address_space_are_too_big() {
        for (offset, size) in [(0, u64::MAX), (u64::MAX, 0x1000), (1 << 63, 1 << 63)] {
            assert!(matches!(
                place(RAM, 256 << 20, offset, size, Some(1 << 20)),
                Err(Error::KernelTooBig { ram: 256, .. })
            ));
        }
    }

    #[test]
    fn small_ram_is_refused_with_the_needed_size() {
        assert_eq!(
            place(RAM, 32 << 20, 0x8_0000, 40 << 20, None).unwrap_err(),
            Error::KernelTooBig {
                needed: 43,
                ram: 32
            }
        );
    }
}
