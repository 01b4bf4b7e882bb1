#!/usr/bin/env bash
# Builds krew (sigs.k8s.io/krew, the kubectl plugin manager) from the Go module proxy into
# target/tools/, and does nothing when it is already there. tests/krew.rs installs the archive
# scripts/krew-pack.sh makes with it. Prints the binary's path on its last line.
#
#   tests/control-plane/build-krew.sh
#   KREW_VERSION=0.4.3 tests/control-plane/build-krew.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/go-tool.sh"

KREW_VERSION=${KREW_VERSION:-0.4.3}
dir=${KREW_DIR:-$root/target/tools/krew-v$KREW_VERSION}
go_tool_cached build-krew.sh "$dir" "$dir/krew" krew
go_tool_start build-krew.sh "$dir"
go_tool_install sigs.k8s.io/krew/cmd/krew "v$KREW_VERSION" krew
echo "$dir/krew"
