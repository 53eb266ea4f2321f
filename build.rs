//! Names each host architecture once, by its kernel `arch/` directory, so
//! the sources say `#[cfg(arm64)]` and the mapping from Rust's target names
//! lives here and in `src/arch.rs` only.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(x86, arm64, riscv, powerpc)");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let name = match arch.as_str() {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        "riscv64" => "riscv",
        "powerpc64" => "powerpc",
        // src/arch.rs refuses other hosts with a compile error.
        _ => return,
    };
    println!("cargo::rustc-cfg={name}");
    println!("cargo::rerun-if-changed=build.rs");
}
