#!/usr/bin/env bash
# Install what zt-agent needs on Debian 12 (root), skipping what is present:
# the pinned Rust toolchain, Debian's LLVM 22 and bpf-linker for the eBPF build,
# test and benchmark tools (promtool, bpftool, nftables, iptables, dnsmasq as the tests'
# upstream DNS server, the official SPIFFE client for Python in a virtualenv the
# tests' unprivileged workloads can read), and the bpffs and tracefs mounts.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLCHAIN=1.98.0
BPF_LINKER_VERSION=0.13.0
APT_PACKAGES=(llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev prometheus iproute2 python3 python3-venv openssl bpftool nftables iptables dnsmasq-base)
# The SPIFFE tests' Python: Debian's interpreter (workloads run as nobody, who cannot
# read a root-only pyenv), the `spiffe` client and PyJWT (which it brings).
TEST_VENV=/opt/zt-agent/test-venv
PY_PACKAGES=(spiffe)

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

# The SPIFFE client for Python, world-readable.
if ! "$TEST_VENV/bin/python3" -c 'import spiffe, jwt, cryptography' >/dev/null 2>&1; then
    say "installing the SPIFFE client for Python into $TEST_VENV"
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

# Mounts the agent and the tests need.
mountpoint -q /sys/fs/bpf || { say "mounting bpffs"; mount -t bpf bpf /sys/fs/bpf; }
mountpoint -q /sys/kernel/tracing || { say "mounting tracefs"; mount -t tracefs tracefs /sys/kernel/tracing; }
