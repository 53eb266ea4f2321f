//! RISC-V guests. The port (AIA/PLIC, SBI console, FDT, Image loading) has
//! not landed yet; until it does, the architecture refuses to run with a
//! clear error.

crate::arch_not_implemented!(Riscv64, "riscv64");
