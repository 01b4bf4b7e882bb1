//! Served benchmark (docs/gateway.md, "Ready means served"): the release binary as the operator (`routerpolicy run`) and
//! as 10 gateway replicas in API mode (`routerpolicy gateway --config-map`), each its own
//! process, against the real control plane. Prints, in one run:
//!
//! 1. Scale-out: 3 replicas serve a Ready policy, 7 more start; status writes the API server
//!    counts meanwhile (target: 0).
//! 2. Baseline: one direct server-side apply of a ConfigMap (its round trip), p50/p99.
//! 3. One policy edit at a time: from the operator's ConfigMap write (seen by the harness's
//!    watch) until every one of the 10 replicas serves the new document (its
//!    `routerpolicy_gateway_policy_info` hash), p50/p99 (target p50 ≤ 1 s, p99 ≤ 3 s); from the
//!    `kubectl apply` until then; and until the policy is `Ready` at its generation; and the
//!    status writes per edit.
//!
//! `SERVED_REPLICAS` (10) and `SERVED_EDITS` (30) change the sizes. Nothing is asserted.

#[path = "../tests/gwsupport/mod.rs"]
mod gwsupport;
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use gwsupport::GatewayProcess;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use routerpolicy::api::{ImageVariationPolicy, ImageVariationPolicySpec};
use routerpolicy::hash::short_hash;
use routerpolicy::render::render_policy;
use serde_json::{Value, json};
use support::{Instance, control_plane};

const CONFIGMAP: &str = "image-gateway-policies";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn spec(round: usize) -> Value {
    json!({"targetRefs": [{"name": CONFIGMAP}], "name": format!("round-{round}"), "retry": {"count": 2}})
}

fn hash_of(spec: &Value) -> String {
    let spec: ImageVariationPolicySpec = serde_json::from_value(spec.clone()).expect("spec");
    short_hash(render_policy(&spec).json.as_bytes())
}

fn percentile(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

/// Status writes to policies, as the API server counts them (this run is alone on it).
async fn status_writes(client: &Client) -> f64 {
    support::apiserver_writes(client).await.get("imagevariationpolicies/status").copied().unwrap_or(0.0)
}

struct Bench {
    client: Client,
    ns: String,
    policies: Api<ImageVariationPolicy>,
    /// The value of the policy's key in the ConfigMap, and when the harness's watch saw it.
    seen: Arc<Mutex<(String, Instant)>>,
    gateways: Vec<GatewayProcess>,
}

impl Bench {
    fn start_gateway(&mut self, i: usize) {
        let args = vec![
            format!("--config-map={}/{CONFIGMAP}", self.ns),
            format!("--identity=bench-gw-{i}"),
            "--upstream=http://127.0.0.1:9".to_string(),
        ];
        let kubeconfig = control_plane().kubeconfig.to_str().expect("utf-8").to_string();
        let gateway = GatewayProcess::start_with_env(&control_plane().dir, &args, &[("KUBECONFIG", &kubeconfig)]);
        self.gateways.push(gateway);
    }

    fn apply(&self, round: usize) -> Instant {
        let body = json!({"apiVersion": "routerpolicy.io/v1alpha1", "kind": "ImageVariationPolicy",
            "metadata": {"name": "p", "namespace": self.ns}, "spec": spec(round)});
        let started = Instant::now();
        let out = control_plane().apply(&body.to_string());
        assert!(out.status.success(), "apply: {}", String::from_utf8_lossy(&out.stderr));
        started
    }

    async fn ready_at_generation(&self) -> bool {
        let Ok(p) = self.policies.get("p").await else { return false };
        let status = p.status.as_ref();
        status.is_some_and(|s| s.observed_generation == p.metadata.generation)
            && status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.ready_at_generation().await {
            assert!(Instant::now() < deadline, "the policy never became Ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn all_serve(&self, hash: &str) -> bool {
        let policy = format!("{}.p", self.ns);
        self.gateways.iter().all(|g| g.served_hash(&policy).as_deref() == Some(hash))
    }
}

fn watch_configmap(client: &Client, ns: &str, seen: Arc<Mutex<(String, Instant)>>) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let key = format!("{ns}.p.json");
    let config = watcher::Config::default().fields(&format!("metadata.name={CONFIGMAP}"));
    tokio::spawn(async move {
        let mut events = watcher::watcher(api, config).applied_objects().boxed();
        while let Some(Ok(cm)) = events.next().await {
            let value = cm.data.and_then(|d| d.get(&key).cloned()).unwrap_or_default();
            let mut slot = seen.lock().expect("lock");
            if slot.0 != value {
                *slot = (value, Instant::now());
            }
        }
    });
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let replicas = env_usize("SERVED_REPLICAS", 10).max(4);
    let edits = env_usize("SERVED_EDITS", 30).max(1);
    let cp = control_plane();
    let client = cp.client().await;
    println!("routerpolicy served benchmark: {replicas} gateway replicas (API mode), {edits} edits");
    println!("operator and gateways: {} (release build, each its own process)", env!("CARGO_BIN_EXE_routerpolicy"));
    let ns = cp.namespace(&client, "served-bench").await;
    let _operator = Instance::start(&cp.kubeconfig, "served-bench-op", &[&format!("--namespaces={ns}")]);
    let seen = Arc::new(Mutex::new((String::new(), Instant::now())));
    watch_configmap(&client, &ns, seen.clone());
    let policies = Api::namespaced(client.clone(), &ns);
    let mut bench = Bench { client: client.clone(), ns, policies, seen, gateways: Vec::new() };
    for i in 0..3 {
        bench.start_gateway(i);
    }
    bench.apply(0);
    bench.wait_ready().await;
    tokio::time::sleep(Duration::from_secs(6)).await;

    scale_out(&mut bench, replicas).await;
    direct_writes(&bench).await;
    edits_until_served(&bench, edits).await;
}

/// 1. Scale-out from 3 replicas: the status writes it costs.
async fn scale_out(bench: &mut Bench, replicas: usize) {
    let before = status_writes(&bench.client).await;
    let started = Instant::now();
    for i in 3..replicas {
        bench.start_gateway(i);
    }
    let hash = hash_of(&spec(0));
    while !bench.all_serve(&hash) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = started.elapsed();
    // Their reports reach the operator; give it a few report intervals.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let writes = status_writes(&bench.client).await - before;
    println!(
        "scale-out 3 → {replicas} replicas (all serving after {:.2} s): status writes {writes:.0}  (target 0)",
        all.as_secs_f64()
    );
}

/// 2. The baseline: one direct ConfigMap server-side apply.
async fn direct_writes(bench: &Bench) {
    let api: Api<ConfigMap> = Api::namespaced(bench.client.clone(), &bench.ns);
    let mut direct = Vec::new();
    for i in 0..30 {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "direct-write"}, "data": {"probe": i.to_string()}});
        let started = Instant::now();
        api.patch("direct-write", &PatchParams::apply("bench"), &Patch::Apply(body)).await.expect("direct write");
        direct.push(started.elapsed());
    }
    let (p50, p99) = (percentile(&mut direct, 0.5), percentile(&mut direct, 0.99));
    println!(
        "baseline  one direct ConfigMap server-side apply (round trip):      p50 {p50:>7.1} ms  p99 {p99:>7.1} ms"
    );
}

/// 3. Edits, one at a time, until every replica serves the new document and the policy is Ready.
async fn edits_until_served(bench: &Bench, edits: usize) {
    let (mut write_to_served, mut apply_to_served, mut apply_to_ready) = (Vec::new(), Vec::new(), Vec::new());
    let mut seen_late = 0;
    let before = status_writes(&bench.client).await;
    for round in 1..=edits {
        let hash = hash_of(&spec(round));
        let want = {
            let spec: ImageVariationPolicySpec = serde_json::from_value(spec(round)).expect("spec");
            render_policy(&spec).json.to_string()
        };
        let applied = bench.apply(round);
        let deadline = applied + Duration::from_secs(60);
        while !bench.all_serve(&hash) {
            assert!(Instant::now() < deadline, "edit {round} was never served by every replica");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let served = Instant::now();
        // When the harness's own watch saw the operator's write: wait for it rather than count
        // 0 ms. An edit the watch delivered only after every replica served it has no
        // write → served figure; it is counted apart, not as 0.
        let written = loop {
            let slot = bench.seen.lock().expect("lock").clone();
            if slot.0 == want {
                break slot.1;
            }
            assert!(Instant::now() < deadline, "edit {round}: the harness never saw the write");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        bench.wait_ready().await;
        apply_to_ready.push(applied.elapsed());
        match served.checked_duration_since(written) {
            Some(took) => write_to_served.push(took),
            None => seen_late += 1,
        }
        apply_to_served.push(served.saturating_duration_since(applied));
    }
    let writes = status_writes(&bench.client).await - before;
    let measured = write_to_served.len();
    let (w50, w99) = if measured == 0 {
        (f64::NAN, f64::NAN)
    } else {
        (percentile(&mut write_to_served, 0.5), percentile(&mut write_to_served, 0.99))
    };
    let (a50, a99) = (percentile(&mut apply_to_served, 0.5), percentile(&mut apply_to_served, 0.99));
    let (r50, r99) = (percentile(&mut apply_to_ready, 0.5), percentile(&mut apply_to_ready, 0.99));
    let n = bench.gateways.len();
    println!(
        "served    ConfigMap write → served by all {n} replicas:              p50 {w50:>7.1} ms  p99 {w99:>7.1} ms  (target p50 ≤ 1000, p99 ≤ 3000; {measured} of {edits} edits; {seen_late} seen by the harness only after they were served)"
    );
    println!(
        "served    kubectl apply → served by all {n} replicas:                p50 {a50:>7.1} ms  p99 {a99:>7.1} ms"
    );
    println!(
        "ready     kubectl apply → Ready (Served) at the new generation:     p50 {r50:>7.1} ms  p99 {r99:>7.1} ms"
    );
    println!("writes    status writes per edit: {:.2}  (target ≤ 1)", writes / edits as f64);
}
