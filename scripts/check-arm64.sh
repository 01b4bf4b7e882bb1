#!/usr/bin/env bash
# The arm64 image's target compiles: `cargo check` of the binary for aarch64-unknown-linux-musl
# (what the Dockerfile builds for TARGETARCH=arm64). ring's C and assembly need a C compiler for
# aarch64; Debian's gcc-aarch64-linux-gnu with libc6-dev-arm64-cross (its headers) compiles
# them (`check` does not link). Installs the
# Rust target with rustup when missing. Not part of scripts/test.sh (it needs rustup's
# distribution server); run it before a release.
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-musl
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
if ! command -v aarch64-linux-gnu-gcc >/dev/null || [ ! -d /usr/aarch64-linux-gnu/include ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get install -y --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross
fi
CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc \
  AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar \
  cargo check --locked --release --target "$target" --bin routerpolicy
echo "arm64 ($target): the binary compiles"
