#!/usr/bin/env bash
# Runs the suites that exercise API-server behaviour against other Kubernetes versions than the
# default (which runs the whole suite in scripts/test.sh): the CRD and its CEL rules with every
# fixture at admission, the differential test, the admission policies and RBAC of deploy/
# (operations), the chart and deploy/ server-side, an end-to-end sync + status round trip, and
# the suites that need Leases and TokenReviews (served, auth).
#
#   scripts/test-k8s-versions.sh                 # the versions of tests/control-plane/versions.sh
#   scripts/test-k8s-versions.sh 1.30.14 1.36.3  # any versions from 1.30 on
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/control-plane/versions.sh
versions=("$@")
[ "${#versions[@]}" -gt 0 ] || read -r -a versions <<<"$K8S_MATRIX"

for version in "${versions[@]}"; do
  printf '\n==> Kubernetes v%s: API-server suites\n' "$version"
  bin=$(K8S_VERSION=$version tests/control-plane/build.sh | tail -n 1)
  "$bin/kube-apiserver" --version
  export ROUTERPOLICY_CONTROL_PLANE_BIN=$bin
  cargo test --locked --test differential --test operations -- --test-threads="${TEST_THREADS:-4}"
  # Leases (the gateway replicas' reports, Ready means served, rollouts judged from them) and
  # TokenReviews (who calls).
  cargo test --locked --test served --test auth --test rollouts -- --test-threads="${TEST_THREADS:-4}"
  cargo test --locked --test e2e -- --test-threads="${TEST_THREADS:-4}" \
    crd_is_established_and_kubectl_explain_shows_descriptions \
    each_rule_is_refused_at_admission_with_the_path_validate_reports \
    every_example_applies_and_the_invalid_one_is_refused \
    valid_policy_reaches_its_configmap_with_the_rendered_bytes_and_becomes_ready \
    invalid_policy_keeps_last_good_config_and_reports_stalled \
    the_targetrefs_admission_message_is_validates_first_error
  cargo test --locked --test packaging -- --test-threads="${TEST_THREADS:-4}" \
    helm_template_is_accepted_by_the_api_server \
    the_production_values_example_is_accepted_by_the_api_server \
    uninstall_with_kustomize_then_helm_leaves_nothing_stuck
done
