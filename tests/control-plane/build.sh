#!/usr/bin/env bash
# Builds the test control plane (kube-apiserver, kubectl, etcd) from the Go
# module proxy into a cache directory, and does nothing when it is already
# there. Prints the bin directory on its last line.
#
#   tests/control-plane/build.sh            # build (or reuse) the pinned versions
#   K8S_VERSION=1.36.3 tests/control-plane/build.sh
#
# The go.mod files are generated here, not committed: the list of staging
# modules that k8s.io/kubernetes requires at v0.0.0 is read from that
# version's own go.mod, so other versions work without edits.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-1.35.4}
ETCD_VERSION=${ETCD_VERSION:-3.6.16}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${CONTROL_PLANE_DIR:-$root/target/control-plane/v$K8S_VERSION-etcd$ETCD_VERSION}
bin=$out/bin

if [ -x "$bin/kube-apiserver" ] && [ -x "$bin/kubectl" ] && [ -x "$bin/etcd" ]; then
  echo "control plane already built in $bin" >&2
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

echo "==> kube-apiserver and kubectl v$K8S_VERSION" >&2
rm -rf "$work/kube"
cp -r "$here/kube" "$work/kube"
cd "$work/kube"
cat > go.mod <<GOMOD
module routerpolicy.test/controlplane/kube

go 1.24

require k8s.io/kubernetes v$K8S_VERSION
GOMOD
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
go build -trimpath -ldflags "$ldflags" -o "$bin/kube-apiserver.tmp" ./cmd/kube-apiserver
go build -trimpath -ldflags "$ldflags" -o "$bin/kubectl.tmp" ./cmd/kubectl

echo "==> etcd v$ETCD_VERSION" >&2
rm -rf "$work/etcd"
cp -r "$here/etcd" "$work/etcd"
cd "$work/etcd"
cat > go.mod <<GOMOD
module routerpolicy.test/controlplane/etcd

go 1.24

require go.etcd.io/etcd/server/v3 v$ETCD_VERSION
GOMOD
go mod tidy
go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" .

# Install atomically, so an interrupted build is never mistaken for a finished one.
for b in kube-apiserver kubectl etcd; do mv "$bin/$b.tmp" "$bin/$b"; done
"$bin/kube-apiserver" --version >&2
"$bin/etcd" --version >&2 | head -1
echo "$bin"
