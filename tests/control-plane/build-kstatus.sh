#!/usr/bin/env bash
# Builds a small command around sigs.k8s.io/cli-utils' kstatus (what Flux's `wait: true` and
# Argo CD's generic health compute) from the Go module proxy into target/tools/, and does
# nothing when it is already there. Prints the binary's path on its last line.
#
#   tests/control-plane/build-kstatus.sh
#   CLI_UTILS_VERSION=0.37.2 tests/control-plane/build-kstatus.sh
set -euo pipefail

CLI_UTILS_VERSION=${CLI_UTILS_VERSION:-0.37.2}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dir=${KSTATUS_DIR:-$root/target/tools/kstatus-v$CLI_UTILS_VERSION}
if [ -x "$dir/kstatus" ]; then
  echo "kstatus already built in $dir" >&2
  echo "$dir/kstatus"
  exit 0
fi
command -v go >/dev/null || { echo "build-kstatus.sh: Go is required to build kstatus" >&2; exit 2; }
echo "==> kstatus (sigs.k8s.io/cli-utils v$CLI_UTILS_VERSION)" >&2
mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp "$here/kstatus/main.go" "$tmp/"
(cd "$tmp" && GOTOOLCHAIN=local go mod init routerpolicy.test/kstatus >/dev/null 2>&1 \
  && GOTOOLCHAIN=local go mod edit -require="sigs.k8s.io/cli-utils@v$CLI_UTILS_VERSION" \
  && GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod tidy >/dev/null \
  && GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o kstatus .)
mv "$tmp/kstatus" "$dir/kstatus"
echo "$dir/kstatus"
