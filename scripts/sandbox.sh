#!/usr/bin/env bash
# The main job on a machine without a cluster (README.md, "The two commands"): the whole product, locally.
#
# Starts etcd, kube-apiserver and kube-controller-manager (the test control plane, built from the Go module proxy and
# cached under target/control-plane/), installs the CRD, runs the release operator as its own
# process with its normal flags, runs team-a's gateway (`routerpolicy gateway`) in API mode
# under its own ServiceAccount token in front of a fake orq, applies examples/ (and shows the
# invalid one being refused), waits until the policies are Ready (team-a's: served by the
# gateway), prints their status, who serves them, and one rendered ConfigMap, shows one proxied
# request and what orq received, then prints a line `export KUBECONFIG=<path>`, and stays up:
# apply or edit policies meanwhile (the gateway follows within about a second). Ctrl-C (SIGINT) or SIGTERM stops every process it started and removes its
# temporary files.
#
#   scripts/sandbox.sh
#
# Environment: ROUTERPOLICY_TEST_ADVERTISE_ADDRESS on a machine without a default route (as for
# the tests); SANDBOX_DIR to choose the scratch directory (default: a new temporary one).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

say() { printf '==> %s\n' "$*"; }

bin=$(tests/control-plane/build.sh | tail -n 1)
kubectl="$bin/kubectl"
operator=target/release/routerpolicy
fake=target/release/examples/fake-orq
if [ ! -x "$operator" ] || [ ! -x "$fake" ]; then
  say "building the release binary and the fake orq (once)"
  cargo build --release --locked --bin routerpolicy --example fake-orq
fi

work=${SANDBOX_DIR:-$(mktemp -d -t routerpolicy-sandbox-XXXXXX)}
mkdir -p "$work"
pids=()
stopping=0
stop() { # stop PID...: SIGTERM, then SIGKILL after 4 s
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 40); do
    alive=0
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && return
    sleep 0.1
  done
  for pid in "$@"; do kill -KILL "$pid" 2>/dev/null || true; done
}
cleanup() {
  stopping=1
  trap - INT TERM EXIT
  # The operator first (it lets go of its watches), then the API server and etcd: well
  # within 10 s.
  [ "${#pids[@]}" -gt 2 ] && stop "${pids[@]:2}"
  [ "${#pids[@]}" -gt 0 ] && stop "${pids[@]:0:2}"
  rm -rf "$work"
  echo "sandbox stopped; removed $work"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# Ports below the kernel's ephemeral range, so an outgoing connection cannot take a chosen
# port before its server binds it.
ephemeral_low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[ "$ephemeral_low" -gt 21024 ] 2>/dev/null || ephemeral_low=32768
free_port() {
  local port
  while :; do
    port=$(( 20000 + RANDOM % (ephemeral_low - 20000) ))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}
ready() { # ready PORT: GET /readyz answers 200
  local line
  { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
  printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3
  read -r line <&3 || true
  exec 3<&- 3>&-
  [[ "$line" == *" 200 "* ]]
}
wait_ready() { # wait_ready PORT PID NAME LOG: until /readyz answers, or fail fast if PID exits
  for _ in $(seq 1 300); do
    ready "$1" && return 0
    if ! kill -0 "$2" 2>/dev/null; then
      echo "the $3 exited while starting; its log ($4):" >&2
      tail -n 20 "$4" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "the $3 did not become ready in 30 s; see $4" >&2
  exit 1
}

etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port); metrics_port=$(free_port)
server="https://127.0.0.1:$api_port"

say "starting etcd and kube-apiserver ($server) in $work"
"$bin/etcd" --data-dir="$work/etcd" \
  --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
  --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
  --initial-cluster="default=http://127.0.0.1:$peer_port" --unsafe-no-fsync --log-level=warn \
  >"$work/etcd.log" 2>&1 &
pids+=($!)

openssl genrsa -out "$work/sa.key" 2048 2>/dev/null
openssl rsa -pubout -in "$work/sa.key" -out "$work/sa.pub" 2>/dev/null
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$token,sandbox-admin,1,\"system:masters\"" >"$work/tokens.csv"
advertise=()
[ -n "${ROUTERPOLICY_TEST_ADVERTISE_ADDRESS:-}" ] && advertise=("--advertise-address=$ROUTERPOLICY_TEST_ADVERTISE_ADDRESS")
"$bin/kube-apiserver" --etcd-servers="http://127.0.0.1:$etcd_port" --cert-dir="$work/certs" \
  --secure-port="$api_port" --bind-address=127.0.0.1 --service-cluster-ip-range=10.0.0.0/24 \
  --authorization-mode=RBAC --disable-admission-plugins=ServiceAccount \
  --service-account-issuer="$server" --service-account-key-file="$work/sa.pub" \
  --service-account-signing-key-file="$work/sa.key" --token-auth-file="$work/tokens.csv" \
  --allow-privileged=true --profiling=false "${advertise[@]}" >"$work/kube-apiserver.log" 2>&1 &
pids+=($!)

export KUBECONFIG="$work/kubeconfig"
cat >"$KUBECONFIG" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sandbox
  cluster: {server: "$server", insecure-skip-tls-verify: true}
users:
- name: sandbox
  user: {token: "$token"}
contexts:
- name: sandbox
  context: {cluster: sandbox, user: sandbox, namespace: default}
current-context: sandbox
EOF
chmod 600 "$KUBECONFIG"

for _ in $(seq 1 600); do
  "$kubectl" get --raw /readyz >/dev/null 2>&1 && "$kubectl" get namespace default >/dev/null 2>&1 && break
  [ "$stopping" = 1 ] && exit 0
  sleep 0.1
done
"$kubectl" get --raw /readyz >/dev/null || { echo "kube-apiserver did not start; see $work/kube-apiserver.log" >&2; tail -20 "$work/kube-apiserver.log" >&2; exit 1; }

# Namespace lifecycle and garbage collection, as in a real cluster: a deleted namespace is
# emptied and goes; a gateway replica's report Lease goes with its Pod.
say "starting kube-controller-manager (namespace, garbage collector)"
"$bin/kube-controller-manager" --kubeconfig="$KUBECONFIG" --controllers=namespace,garbagecollector \
  --leader-elect=false --secure-port=0 >"$work/kube-controller-manager.log" 2>&1 &
pids+=($!)

say "installing the CRD"
"$kubectl" apply --server-side -f crds/ >/dev/null
"$kubectl" wait --for=condition=Established --timeout=60s crd/imagevariationpolicies.routerpolicy.io >/dev/null

say "starting the operator: routerpolicy run --metrics-addr=127.0.0.1:$metrics_port (log: $work/operator.log)"
"$operator" run --metrics-addr="127.0.0.1:$metrics_port" >"$work/operator.log" 2>&1 &
pids+=($!)
wait_ready "$metrics_port" "$!" operator "$work/operator.log"

for ns in team-a team-b gateway; do "$kubectl" create namespace "$ns" >/dev/null; done

# The gateway of team-a, as deploy/gateway runs it: in API mode (--config-map), under its own
# ServiceAccount's token (deploy/gateway's Role: its one ConfigMap, its report Lease), in
# front of a fake orq. It reports what it serves, so team-a's policies are Ready only once it
# serves them (Served); team-b's have no reporting gateway (Served Unknown). It runs with
# --auth none, chosen here on purpose: the sandbox's callers (`fake-orq send`) carry no
# ServiceAccount token. deploy/gateway and the chart run --auth serviceaccount.
for file in serviceaccount.yaml rbac.yaml admission.yaml; do
  "$kubectl" apply --server-side -n team-a -f "deploy/gateway/$file" >/dev/null
done
gateway_token=$("$kubectl" create token routerpolicy-gateway -n team-a --duration=24h)
sed -e "s|user: {token: \"$token\"}|user: {token: \"$gateway_token\"}|" -e "s|namespace: default|namespace: team-a|" \
  "$KUBECONFIG" >"$work/gateway.kubeconfig"
chmod 600 "$work/gateway.kubeconfig"
fake_port=$(free_port); gateway_port=$(free_port)
"$fake" serve "127.0.0.1:$fake_port" >"$work/fake-orq.jsonl" 2>"$work/fake-orq.log" &
pids+=($!)
printf 'sk-sandbox-not-a-real-key\n' >"$work/orq-api-key"
say "starting the gateway: routerpolicy gateway --config-map=team-a/image-gateway-policies --listen=127.0.0.1:$gateway_port --upstream=http://127.0.0.1:$fake_port (a fake orq) --auth=none (the sandbox's callers send no token)"
KUBECONFIG="$work/gateway.kubeconfig" "$operator" gateway --listen="127.0.0.1:$gateway_port" \
  --config-map=team-a/image-gateway-policies --identity=sandbox-gateway --auth=none \
  --upstream="http://127.0.0.1:$fake_port" --api-key-file="$work/orq-api-key" >"$work/gateway.log" 2>&1 &
pids+=($!)
wait_ready "$gateway_port" "${pids[-1]}" gateway "$work/gateway.log"

say "applying examples/"
for file in examples/minimal.yaml examples/full.yaml examples/cross-namespace.yaml; do
  "$kubectl" apply -f "$file"
done
say "the invalid example is refused at admission:"
if "$kubectl" apply -f examples/invalid/broken.yaml 2>"$work/refused.txt"; then
  echo "unexpected: examples/invalid/broken.yaml was accepted" >&2
  exit 1
fi
sed 's/^/    /' "$work/refused.txt"

say "waiting until every policy is Ready (team-a's: served by the gateway)"
for ns in team-a team-b; do
  if ! "$kubectl" wait -n "$ns" --for=condition=Ready --timeout=120s ivp --all >/dev/null; then
    echo "the policies of $ns did not become Ready; their status and the operator's last log lines:" >&2
    "$kubectl" get ivp -A -o yaml >&2 || true
    tail -n 40 "$work/operator.log" >&2 || true
    exit 1
  fi
done
"$kubectl" get ivp -A
"$kubectl" get ivp -A -o custom-columns='NAMESPACE:.metadata.namespace,NAME:.metadata.name,SERVED:.status.conditions[?(@.type=="Served")].status,WHY:.status.conditions[?(@.type=="Served")].message'
say "the gateway ConfigMap team-a/image-gateway-policies (one key per policy):"
"$kubectl" get configmap -n team-a image-gateway-policies \
  -o go-template='{{range $key, $doc := .data}}{{$key}}: {{$doc}}{{"\n"}}{{end}}'

say "one request through the gateway: policy team-a.avatars, with the caller's own orq field and Authorization"
"$fake" send "http://127.0.0.1:$gateway_port" team-a.avatars | sed 's/^/    /'
for _ in $(seq 1 20); do [ -s "$work/fake-orq.jsonl" ] && break; sleep 0.1; done
say "what orq received (the policy's document as the orq field; the gateway's key, not the caller's):"
sed 's/^/    /' "$work/fake-orq.jsonl"

echo
echo "The sandbox is up. In another shell:"
echo "export KUBECONFIG=$KUBECONFIG"
echo "    $kubectl get ivp -A"
echo "    metrics: http://127.0.0.1:$metrics_port/metrics     operator log: $work/operator.log"
echo "    gateway: http://127.0.0.1:$gateway_port/v2/router/images/variations (X-Routerpolicy-Policy: team-a.<name>)"
echo "    $fake send http://127.0.0.1:$gateway_port team-a.avatars    # what orq receives: $work/fake-orq.jsonl"
echo "Ctrl-C stops everything."

# Stay up until a signal, or until a process dies.
while :; do
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "a sandbox process ($pid) exited; stopping. Last log lines:" >&2
      tail -n 5 "$work"/*.log >&2 || true
      exit 1
    fi
  done
  sleep 1 &
  wait $! || true
done
