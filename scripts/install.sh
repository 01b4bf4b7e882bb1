#!/usr/bin/env bash
# Sets up a fresh machine for routerpolicy development: the Rust components the checks use,
# the system tools the tests use (openssl, a C compiler, nginx, wrk, promtool), the test control
# plane (kube-apiserver, kube-controller-manager, etcd, kubectl built from the Go module proxy,
# cached under target/control-plane/), helm, helm-docs and helm-unittest for the chart's tests
# and the kstatus check (cached under target/tools/), and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }

need cargo || { echo "install.sh: Rust (cargo) is required: https://rustup.rs" >&2; exit 2; }
need go || { echo "install.sh: Go 1.24 or newer is required to build the test control plane" >&2; exit 2; }
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  need rustup && rustup component add rustfmt clippy
fi
if ! need openssl || ! need cc; then
  if need apt-get && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq openssl gcc >/dev/null
  else
    echo "install.sh: please install openssl and a C compiler" >&2
    exit 2
  fi
fi
# nginx: the plain reverse proxy the gateway benchmark runs next to the gateway (its own
# process, its own config; the package's service is not used), and wrk, the C load generator
# that drives the benchmark's nginx table.
for tool in nginx wrk; do
  if [ -x "/usr/sbin/$tool" ] || [ -x "/usr/bin/$tool" ] || need "$tool"; then
    continue
  fi
  if need apt-get && [ "$(id -u)" = 0 ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null; } \
      || echo "install.sh: could not install $tool: cargo bench --bench gateway will skip what needs it" >&2
    [ "$tool" = nginx ] && { pkill -x nginx 2>/dev/null || true; }
  else
    echo "install.sh: $tool is not installed: cargo bench --bench gateway will skip what needs it" >&2
  fi
done

# promtool (Debian's prometheus package): the alerts' unit tests and the rendered
# PrometheusRule's check. Only the tool is used; the package's server is not started.
if ! need promtool; then
  if need apt-get && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    pkill -x prometheus 2>/dev/null || true
  else
    echo "install.sh: please install promtool (Debian: apt-get install prometheus)" >&2
    exit 2
  fi
fi

# The default control plane (the whole suite runs on it); the other supported versions
# (tests/control-plane/versions.sh) build in the background while the release build compiles.
tests/control-plane/build.sh >/dev/null
. tests/control-plane/versions.sh
mkdir -p target
( for version in $K8S_MATRIX; do K8S_VERSION=$version tests/control-plane/build.sh || exit 1; done ) \
  >target/control-plane-matrix.log 2>&1 &
matrix=$!
tests/control-plane/build-helm.sh >/dev/null
tests/control-plane/build-chart-tools.sh >/dev/null
tests/control-plane/build-kstatus.sh >/dev/null
cargo build --release --locked --bin routerpolicy --example fake-orq
wait "$matrix" || { echo "install.sh: a matrix control plane did not build; see target/control-plane-matrix.log" >&2; exit 1; }
echo "ready: target/release/routerpolicy"
