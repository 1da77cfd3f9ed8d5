#!/usr/bin/env bash
# Install what zt-agent needs on Debian 12 (root), skipping what is present:
# the pinned Rust toolchain, Debian's LLVM 22 and bpf-linker for the eBPF build,
# test and benchmark tools (promtool, bpftool, nftables, iptables, dnsmasq as the tests'
# upstream DNS server, the official SPIFFE client for Python in a virtualenv the
# tests' unprivileged workloads can read), container runtimes for the container tests
# (Docker, Podman, runc, busybox-static for their root filesystem), systemd-analyze and
# man-db for the unit and package tests, cargo-deb, the aarch64 cross toolchain and
# qemu-user for the arm64 build, kubernetes-validate (PyPI) for the manifests, and the
# bpffs and tracefs mounts.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLCHAIN=1.98.0
BPF_LINKER_VERSION=0.13.0
APT_PACKAGES=(llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev prometheus iproute2 python3 python3-venv openssl bpftool nftables iptables dnsmasq-base
    docker.io podman runc busybox-static systemd man-db
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static)
# The tests' Python: Debian's interpreter (workloads run as nobody, who cannot read a
# root-only pyenv) with the `spiffe` client (PyJWT comes with it) and
# kubernetes-validate for the manifests.
TEST_VENV=/opt/zt-agent/test-venv
PY_PACKAGES=(spiffe kubernetes-validate)
CARGO_DEB_VERSION=3.8.0

say() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
    say "must run as root (it installs packages and mounts bpffs); try: sudo $0"
    exit 77
fi
export PATH="$HOME/.cargo/bin:$PATH"

# Debian packages.
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    # The prometheus package ships a server we only want promtool from.
    if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
        systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
fi

# The tests' Python packages, world-readable.
if ! "$TEST_VENV/bin/python3" -c 'import spiffe, jwt, cryptography, kubernetes_validate' >/dev/null 2>&1; then
    say "installing ${PY_PACKAGES[*]} (PyPI) into $TEST_VENV"
    rm -rf "$TEST_VENV"
    mkdir -p "$(dirname "$TEST_VENV")"
    /usr/bin/python3 -m venv "$TEST_VENV"
    "$TEST_VENV/bin/pip" install -q "${PY_PACKAGES[@]}"
    chmod -R a+rX "$TEST_VENV"
fi

# The pinned toolchain (RUSTUP_AUTO_INSTALL may be off).
if ! rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1; then
    say "installing Rust $TOOLCHAIN"
    rustup toolchain install "$TOOLCHAIN" --profile minimal --component rust-src,clippy,rustfmt
else
    for c in rust-src clippy rustfmt; do
        rustup component list --toolchain "$TOOLCHAIN" --installed 2>/dev/null | grep -q "^$c" \
            || rustup component add --toolchain "$TOOLCHAIN" "$c"
    done
fi

# bpf-linker built against Debian's LLVM 22, the LLVM of the pinned Rust 1.98: a
# toolchain whose LLVM is newer than bpf-linker's fails at link time.
if ! bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
    say "building bpf-linker $BPF_LINKER_VERSION (about 2 minutes)"
    LLVM_SYS_221_PREFIX=/usr/lib/llvm-22 LLVM_PREFIX=/usr/lib/llvm-22 \
        cargo +"$TOOLCHAIN" install bpf-linker --locked --version "$BPF_LINKER_VERSION" \
        --no-default-features --features llvm-22
fi

# The arm64 cross build (`./x dist`) needs the standard library for aarch64.
rustup target list --toolchain "$TOOLCHAIN" --installed 2>/dev/null | grep -q '^aarch64-unknown-linux-gnu$' \
    || { say "adding the aarch64 target"; rustup target add --toolchain "$TOOLCHAIN" aarch64-unknown-linux-gnu; }

# Packages are made by cargo-deb.
if ! cargo-deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
    say "installing cargo-deb $CARGO_DEB_VERSION"
    cargo +"$TOOLCHAIN" install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi

# Mounts the agent and the tests need.
mountpoint -q /sys/fs/bpf || { say "mounting bpffs"; mount -t bpf bpf /sys/fs/bpf; }
mountpoint -q /sys/kernel/tracing || { say "mounting tracefs"; mount -t tracefs tracefs /sys/kernel/tracing; }
