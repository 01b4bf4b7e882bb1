#!/usr/bin/env bash
# Fetches the Prometheus Operator's CRDs (ServiceMonitor, PrometheusRule, …) from its Go
# module, so the chart's monitoring objects are checked by a real API server against their real
# schemas (tests/packaging.rs). Prints the directory holding the CRD files on its last line.
#
#   tests/control-plane/monitoring-crds.sh
#   PROMETHEUS_OPERATOR_VERSION=0.85.0 tests/control-plane/monitoring-crds.sh
set -euo pipefail
PROMETHEUS_OPERATOR_VERSION=${PROMETHEUS_OPERATOR_VERSION:-0.85.0}
command -v go >/dev/null || { echo "monitoring-crds.sh: Go is required" >&2; exit 2; }
dir=$(GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod download -json \
  "github.com/prometheus-operator/prometheus-operator@v$PROMETHEUS_OPERATOR_VERSION" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
crds=$dir/example/prometheus-operator-crd
[ -f "$crds/monitoring.coreos.com_servicemonitors.yaml" ] || { echo "monitoring-crds.sh: no CRDs in $crds" >&2; exit 1; }
echo "$crds"
