#!/usr/bin/env bash
# Sets up a fresh machine for routerpolicy development: the Rust components the checks use,
# the system tools the tests use (openssl, a C compiler, nginx, HAProxy, wrk, promtool), the test control
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
# Debian packages whose tools the tests and benches run as their own processes, with their
# own configs: nginx and HAProxy (the plain reverse proxies the gateway benchmark runs next to
# the gateway), wrk (the C load generator that drives it) and promtool (Debian's prometheus
# package: the alerts' unit tests and the rendered PrometheusRule's check). Their services are
# never started: a policy-rc.d that denies every start stands while apt installs them (and an
# existing one is put back), so nothing already running on the machine is touched.
apt_install() {
  local policy=/usr/sbin/policy-rc.d saved=""
  if [ -e "$policy" ]; then saved=$(mktemp) && cp -p "$policy" "$saved"; fi
  printf '#!/bin/sh\n# scripts/install.sh: install packages without starting their services\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  local rc=0
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; } || rc=$?
  if [ -n "$saved" ]; then mv "$saved" "$policy"; else rm -f "$policy"; fi
  return "$rc"
}
have_tool() { [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ] || need "$1"; }
can_apt() { need apt-get && [ "$(id -u)" = 0 ]; }

for tool in nginx haproxy wrk; do
  have_tool "$tool" && continue
  if can_apt; then
    apt_install "$tool" || echo "install.sh: could not install $tool: cargo bench --bench gateway will skip what needs it" >&2
  else
    echo "install.sh: $tool is not installed: cargo bench --bench gateway will skip what needs it" >&2
  fi
done
if ! need promtool; then
  if can_apt; then
    apt_install prometheus
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
