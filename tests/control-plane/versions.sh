# The Kubernetes versions the test control plane is built at; sourced by build.sh,
# scripts/test.sh, scripts/test-k8s-versions.sh and scripts/install.sh. The default (the
# newest served by the Go module proxy) runs the whole suite; the matrix runs the API-server
# suites (scripts/test-k8s-versions.sh) on the other supported versions.
K8S_OLDEST=1.30.14   # the oldest supported minor: ValidatingAdmissionPolicy v1 is GA in 1.30
K8S_NEWEST=1.37.2
K8S_DEFAULT=$K8S_NEWEST
K8S_MATRIX="$K8S_OLDEST"
