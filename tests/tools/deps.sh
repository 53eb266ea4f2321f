#!/usr/bin/env bash
# Installs everything the build, the tests and the boot lab need on a Debian 12
# host: apt packages (QEMU 10 from bookworm-backports), cross linkers, rustup
# targets. Idempotent, so CI and developers can run it every time.
set -euo pipefail

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo

backports=/etc/apt/sources.list.d/lkvm-backports.sources
if [ ! -f "$backports" ]; then
    $SUDO tee "$backports" >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    $SUDO apt-get update -q
fi

host_pkgs=(device-tree-compiler cpio xz-utils zstd e2fsprogs binutils make busybox-static)
# The cross compilers also build kvm-unit-tests for the boot lab
# (tests/boot/kut.py); it needs nothing else but make.
cross_pkgs=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross
            gcc-riscv64-linux-gnu libc6-dev-riscv64-cross
            gcc-powerpc64le-linux-gnu libc6-dev-ppc64el-cross)
qemu_pkgs=(qemu-system-x86 qemu-system-arm qemu-system-misc qemu-system-ppc opensbi)

missing=()
for p in "${host_pkgs[@]}" "${cross_pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    $SUDO apt-get update -q || true
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# QEMU 10 from backports: bookworm's 7.2 works but is markedly slower under TCG.
if ! qemu-system-x86_64 --version 2>/dev/null | grep -q 'version 10\.'; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -t bookworm-backports "${qemu_pkgs[@]}"
fi

for t in aarch64-unknown-linux-gnu riscv64gc-unknown-linux-gnu powerpc64le-unknown-linux-gnu; do
    rustup target list --installed | grep -qx "$t" || rustup target add "$t"
done
rustup component list --installed | grep -q '^clippy' || rustup component add clippy
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt

# Fuzzing (make fuzz, make fuzz-smoke): cargo-fuzz needs a nightly toolchain
# (sanitizers) and is built from crates.io once (about 40 s on 2 cores).
rustup run nightly rustc --version >/dev/null 2>&1 || rustup toolchain install nightly --profile minimal
cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
