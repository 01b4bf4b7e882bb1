#!/usr/bin/env bash
# Builds helm (the chart's tests run `helm lint`, `helm template`, `helm install` and
# `helm uninstall`) from the Go module proxy into target/tools/, and does nothing when it is
# already there. Prints the binary's path on its last line.
#
#   tests/control-plane/build-helm.sh
#   HELM_VERSION=3.21.4 tests/control-plane/build-helm.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/go-tool.sh"

HELM_VERSION=${HELM_VERSION:-3.22.0}
dir=${HELM_DIR:-$root/target/tools/helm-v$HELM_VERSION}
go_tool_cached build-helm.sh "$dir" "$dir/helm" helm
go_tool_start build-helm.sh "$dir"
go_tool_install helm.sh/helm/v3/cmd/helm "v$HELM_VERSION" helm \
  "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
"$dir/helm" version --short >&2
echo "$dir/helm"
