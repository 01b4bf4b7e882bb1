#!/usr/bin/env bash
# Generates charts/routerpolicy/README.md from values.yaml's `# --` comments and
# README.md.gotmpl (helm-docs, built by tests/control-plane/build-chart-tools.sh).
#   scripts/gen-chart-docs.sh           # write the README
#   scripts/gen-chart-docs.sh --check   # fail when the committed README drifted
set -euo pipefail
cd "$(dirname "$0")/.."
tools=${ROUTERPOLICY_CHART_TOOLS:-$(tests/control-plane/build-chart-tools.sh | tail -n 1)}
args=(--chart-search-root charts --skip-version-footer --sort-values-order file)
if [ "${1:-}" = "--check" ]; then
  "$tools/helm-docs" "${args[@]}" --dry-run --log-level warning > "${TMPDIR:-/tmp}/routerpolicy-chart-readme.md"
  diff -u charts/routerpolicy/README.md "${TMPDIR:-/tmp}/routerpolicy-chart-readme.md" \
    || { echo "charts/routerpolicy/README.md drifted from values.yaml: run scripts/gen-chart-docs.sh" >&2; exit 1; }
  # Every value is documented: a row of the values table with an empty description names a
  # key that lacks its `# --` comment.
  if grep -nE '^\| [^|]+ \| [^|]+ \| .* \|  \|$' charts/routerpolicy/README.md >&2; then
    echo "these values lack a '# --' comment in charts/routerpolicy/values.yaml" >&2
    exit 1
  fi
else
  "$tools/helm-docs" "${args[@]}" --log-level warning
fi
