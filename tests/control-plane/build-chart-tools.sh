#!/usr/bin/env bash
# Builds the chart's tools from the Go module proxy into target/tools/, and does nothing when
# they are already there: helm-docs (the chart README is generated from values.yaml's `# --`
# comments) and helm-unittest (the chart's unit suites in charts/routerpolicy/tests/). Prints
# the directory holding both binaries on its last line.
#
#   tests/control-plane/build-chart-tools.sh
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/go-tool.sh"

HELM_DOCS_VERSION=${HELM_DOCS_VERSION:-1.14.2}
HELM_UNITTEST_VERSION=${HELM_UNITTEST_VERSION:-1.1.2}
dir=${CHART_TOOLS_DIR:-$root/target/tools/chart-tools-docs$HELM_DOCS_VERSION-unittest$HELM_UNITTEST_VERSION}
go_tool_cached build-chart-tools.sh "$dir" "$dir" helm-docs helm-unittest
go_tool_start build-chart-tools.sh "$dir"
tmp=$go_tool_tmp

if ! [ -x "$dir/helm-docs" ]; then
  go_tool_install github.com/norwoodj/helm-docs/cmd/helm-docs "v$HELM_DOCS_VERSION" helm-docs
fi

if ! [ -x "$dir/helm-unittest" ]; then
  # `go install` refuses helm-unittest (its go.mod has a replace directive): a wrapper module
  # requires it and repeats that directive, read from the version's own go.mod.
  echo "==> helm-unittest v$HELM_UNITTEST_VERSION" >&2
  module=github.com/helm-unittest/helm-unittest
  mkdir -p "$tmp/unittest"
  cd "$tmp/unittest"
  cat > go.mod <<GOMOD
module routerpolicy.test/charttools/unittest

go 1.24

require $module v$HELM_UNITTEST_VERSION
GOMOD
  upstream_gomod=$(go mod download -json "$module@v$HELM_UNITTEST_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [ -f "$upstream_gomod" ] || { echo "build-chart-tools.sh: could not download $module@v$HELM_UNITTEST_VERSION" >&2; exit 1; }
  sed -n 's/^replace[[:space:]]\{1,\}\([^ ]*\) \([^ ]*\) => \([^ ]*\) \([^ ]*\)$/\1@\2=\3@\4/p' "$upstream_gomod" |
    while read -r r; do go mod edit -replace "$r"; done
  cat > tools.go <<'GO'
//go:build tools

package tools

import _ "github.com/helm-unittest/helm-unittest/cmd/helm-unittest"
GO
  GOFLAGS=-mod=mod go mod tidy
  GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$tmp/helm-unittest" "$module/cmd/helm-unittest"
  mv "$tmp/helm-unittest" "$dir/helm-unittest"
fi
echo "built helm-docs v$HELM_DOCS_VERSION and helm-unittest v$HELM_UNITTEST_VERSION" >&2
echo "$dir"
