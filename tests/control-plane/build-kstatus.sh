#!/usr/bin/env bash
# Builds a small command around sigs.k8s.io/cli-utils' kstatus (what Flux's `wait: true` and
# Argo CD's generic health compute) from the Go module proxy into target/tools/, and does
# nothing when it is already there. Prints the binary's path on its last line.
#
#   tests/control-plane/build-kstatus.sh
#   CLI_UTILS_VERSION=0.37.2 tests/control-plane/build-kstatus.sh
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/go-tool.sh"

CLI_UTILS_VERSION=${CLI_UTILS_VERSION:-0.37.2}
dir=${KSTATUS_DIR:-$root/target/tools/kstatus-v$CLI_UTILS_VERSION}
go_tool_cached build-kstatus.sh "$dir" "$dir/kstatus" kstatus
go_tool_start build-kstatus.sh "$dir"
echo "==> kstatus (sigs.k8s.io/cli-utils v$CLI_UTILS_VERSION)" >&2
cp "$here/kstatus/main.go" "$go_tool_tmp/"
(cd "$go_tool_tmp" && go mod init routerpolicy.test/kstatus >/dev/null 2>&1 \
  && go mod edit -require="sigs.k8s.io/cli-utils@v$CLI_UTILS_VERSION" \
  && GOFLAGS=-mod=mod go mod tidy >/dev/null \
  && go build -trimpath -ldflags "-s -w" -o kstatus .)
mv "$go_tool_tmp/kstatus" "$dir/kstatus"
echo "$dir/kstatus"
