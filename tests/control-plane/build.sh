#!/usr/bin/env bash
# Builds the test control plane (kube-apiserver, kube-controller-manager,
# kubectl, etcd) from the Go module proxy into a cache directory, one
# directory per version, and does nothing when it is already there. Only the
# binaries that are missing are built. Prints the bin directory on its last
# line.
#
#   tests/control-plane/build.sh            # build (or reuse) the pinned default
#   K8S_VERSION=1.30.14 tests/control-plane/build.sh
#
# The go.mod files are generated here, not committed: the list of staging
# modules that k8s.io/kubernetes requires at v0.0.0 is read from that
# version's own go.mod, so other versions work without edits.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=versions.sh
. "$here/versions.sh"
# shellcheck source=go-tool.sh
. "$here/go-tool.sh"
K8S_VERSION=${K8S_VERSION:-$K8S_DEFAULT}
ETCD_VERSION=${ETCD_VERSION:-3.6.16}
out=${CONTROL_PLANE_DIR:-$root/target/control-plane/v$K8S_VERSION-etcd$ETCD_VERSION}
bin=$out/bin
kube_bins="kube-apiserver kube-controller-manager kubectl"

missing() {
  for b in "$@"; do [ -x "$bin/$b" ] || { echo "$b"; }; done
}

kube_missing=$(missing $kube_bins)
etcd_missing=$(missing etcd)
if [ -z "$kube_missing" ] && [ -z "$etcd_missing" ]; then
  echo "control plane v$K8S_VERSION already built in $bin" >&2
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: Go is required to build the test control plane" >&2; exit 2; }

major=${K8S_VERSION%%.*}
rest=${K8S_VERSION#*.}
minor=${rest%%.*}
patch=${rest#*.}
staging_version="v0.$minor.$patch"
work=$out/src
mkdir -p "$bin" "$work"
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local

if [ -n "$kube_missing" ]; then
  echo "==> $(echo $kube_missing) v$K8S_VERSION" >&2
  go_tool_module "$here/kube" "$work/kube" kube k8s.io/kubernetes "v$K8S_VERSION"
  upstream_gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [ -f "$upstream_gomod" ] || { echo "build.sh: could not download k8s.io/kubernetes@v$K8S_VERSION" >&2; exit 1; }
  staging=$(awk '/^require[[:space:]]*\(/{inreq=1; next} inreq && /^\)/{inreq=0} inreq && $2=="v0.0.0" {print $1} /^require[[:space:]]+k8s.io\/[^ ]+ v0.0.0/{print $2}' "$upstream_gomod" | grep '^k8s.io/' | sort -u)
  count=0
  for m in $staging; do
    go mod edit -replace "$m=$m@$staging_version"
    count=$((count + 1))
  done
  echo "    replaced $count staging modules with $staging_version" >&2
  go mod tidy
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  for b in $kube_missing; do
    go build -trimpath -ldflags "$ldflags" -o "$bin/$b.tmp" "./cmd/$b"
    # Installed one by one and atomically, so an interrupted build is never
    # mistaken for a finished one and a finished binary is never rebuilt.
    mv "$bin/$b.tmp" "$bin/$b"
  done
fi

if [ -n "$etcd_missing" ]; then
  echo "==> etcd v$ETCD_VERSION" >&2
  go_tool_module "$here/etcd" "$work/etcd" etcd go.etcd.io/etcd/server/v3 "v$ETCD_VERSION"
  go mod tidy
  go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" .
  mv "$bin/etcd.tmp" "$bin/etcd"
fi

"$bin/kube-apiserver" --version >&2
"$bin/etcd" --version 2>&1 | sed -n 1p >&2  # sed reads it all: no SIGPIPE under pipefail
echo "$bin"
