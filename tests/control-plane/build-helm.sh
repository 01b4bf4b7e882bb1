#!/usr/bin/env bash
# Builds helm (the chart's tests run `helm lint`, `helm template`, `helm install` and
# `helm uninstall`) from the Go module proxy into target/tools/, and does nothing when it is
# already there. Prints the binary's path on its last line.
#
#   tests/control-plane/build-helm.sh
#   HELM_VERSION=3.21.4 tests/control-plane/build-helm.sh
set -euo pipefail

HELM_VERSION=${HELM_VERSION:-3.22.0}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dir=${HELM_DIR:-$root/target/tools/helm-v$HELM_VERSION}
if [ -x "$dir/helm" ]; then
  echo "helm already built in $dir" >&2
  echo "$dir/helm"
  exit 0
fi
command -v go >/dev/null || { echo "build-helm.sh: Go is required to build helm" >&2; exit 2; }
echo "==> helm v$HELM_VERSION" >&2
mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# `go install module@version` builds in module mode outside any go.mod.
(cd "$tmp" && GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION" \
  "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION")
mv "$tmp/helm" "$dir/helm"
"$dir/helm" version --short >&2
echo "$dir/helm"
