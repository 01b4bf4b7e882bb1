#!/usr/bin/env bash
# Runs every check and every test, the same on a laptop and in CI:
# formatting, clippy, generated-file drift, unit/property/CLI tests, and the end-to-end
# tests against a real kube-apiserver + etcd + kube-controller-manager (built once by
# tests/control-plane/build.sh) at the default Kubernetes version, then the API-server suites
# at the other supported versions (scripts/test-k8s-versions.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "test control plane"
export ROUTERPOLICY_CONTROL_PLANE_BIN="${ROUTERPOLICY_CONTROL_PLANE_BIN:-$(tests/control-plane/build.sh | tail -n 1)}"
"$ROUTERPOLICY_CONTROL_PLANE_BIN/kube-apiserver" --version
export ROUTERPOLICY_HELM="${ROUTERPOLICY_HELM:-$(tests/control-plane/build-helm.sh | tail -n 1)}"
"$ROUTERPOLICY_HELM" version --short
export ROUTERPOLICY_KSTATUS="${ROUTERPOLICY_KSTATUS:-$(tests/control-plane/build-kstatus.sh | tail -n 1)}"
export ROUTERPOLICY_KREW="${ROUTERPOLICY_KREW:-$(tests/control-plane/build-krew.sh | tail -n 1)}"
export ROUTERPOLICY_CHART_TOOLS="${ROUTERPOLICY_CHART_TOOLS:-$(tests/control-plane/build-chart-tools.sh | tail -n 1)}"

step "cargo fmt --check"
cargo fmt --all -- --check

step "no function over 80 lines, no impl block over 250 (scripts/check-sizes.py)"
python3 scripts/check-sizes.py

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings

step "crds/ is generated from the Rust types"
cargo build --locked --release --bin routerpolicy --example fake-orq
diff -u crds/imagevariationpolicies.routerpolicy.io.yaml <(target/release/routerpolicy crd) \
  || { echo "crds/ drifted: run 'target/release/routerpolicy crd > crds/imagevariationpolicies.routerpolicy.io.yaml'" >&2; exit 1; }
diff -u crds/imagevariationpolicies.routerpolicy.io.yaml charts/routerpolicy/crds/imagevariationpolicies.routerpolicy.io.yaml \
  || { echo "the chart's CRD drifted: run 'target/release/routerpolicy crd > charts/routerpolicy/crds/imagevariationpolicies.routerpolicy.io.yaml'" >&2; exit 1; }

step "charts/routerpolicy/README.md is generated from values.yaml (helm-docs)"
scripts/gen-chart-docs.sh --check

step "cargo test (unit, property, CLI, end-to-end on the real control plane)"
cargo test --locked --lib --bins --tests -- --test-threads="${TEST_THREADS:-4}"

step "API-server suites on the other supported Kubernetes versions"
scripts/test-k8s-versions.sh
