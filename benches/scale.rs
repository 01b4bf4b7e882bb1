//! Scale benchmark (the targets: docs/benchmarks.md, "Results"): the release binary `routerpolicy run` as its own process
//! against the real kube-apiserver + etcd, next to a floor measured in the same run. Prints
//! figures and ratios; asserts nothing about time.
//!
//! ```sh
//! cargo bench --bench scale                                    # 2000 policies over 20 targets
//! SCALE_POLICIES=10000 SCALE_TARGETS=100 cargo bench --bench scale
//! ```
//!
//! 1. Floor: the harness creates the N policies with 16 parallel writers (one write per
//!    object: the least one status write per policy can cost), its watches already running.
//! 2. Cold start: the operator starts with the N policies stored; time until every target
//!    holds every document, and until every policy is `Ready=True` at its current generation
//!    (seen through the harness's own watches); writes by kind, counted by the API server
//!    (`apiserver_request_total`), and by the operator's metrics.
//! 3. Warm restart: the operator is stopped (SIGTERM) and started again with nothing
//!    changed; writes until it has planned every target and is idle.
//! 4. Edit latency in steady state: one policy edit at a time, each to another target, until
//!    the harness's ConfigMap watch sees the new document; next to one direct ConfigMap
//!    server-side apply (its round trip), p50 and p99.
//! 5. Peak resident memory of the operator process (`VmHWM`).
//!
//! With `SCALE_REPORTS=1` every target also has a gateway replica that reports what it serves
//! (docs/gateway.md, "Ready means served"), simulated by the harness: one report Lease per target, created before the
//! operator starts (an empty ConfigMap loaded) and rewritten with the ConfigMap's
//! resourceVersion each time the harness's watch sees it change, as a replica in API mode
//! does. Ready then includes `Served`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use routerpolicy::api::{ImageVariationPolicy, ImageVariationPolicySpec};
use routerpolicy::key::PolicyKey;
use routerpolicy::operator::decode::WatchedPolicy;
use routerpolicy::render::render_policy;
use serde_json::{Value, json};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn spec(target: usize, variant: i64) -> Value {
    json!({
        "targetRefs": [{"name": format!("gw-{target}")}],
        "retry": {"count": 1 + variant % 5, "onCodes": [429, 500, 503]},
        "fallbacks": [{"model": "openai/gpt-4o-mini"}],
        "loadBalancer": {"type": "weight_based", "models": [{"model": "openai/gpt-4o", "weight": 0.5}, {"model": "anthropic/claude-3-5-sonnet", "weight": 0.5}]},
        "timeout": {"callTimeout": 30000 + variant}
    })
}

/// Creates policies `p0..p{count}` (spread over `targets` targets) with 16 parallel writers.
async fn create_policies(api: &Api<ImageVariationPolicy>, count: usize, targets: usize) {
    futures::stream::iter(0..count)
        .map(|i| async move {
            let body: ImageVariationPolicy = serde_json::from_value(json!({"apiVersion": "routerpolicy.io/v1alpha1", "kind": "ImageVariationPolicy", "metadata": {"name": format!("p{i}")}, "spec": spec(i % targets, i as i64)})).expect("policy");
            api.create(&PostParams::default(), &body).await.expect("create policy");
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

fn document(ns: &str, name: &str, spec: &Value) -> (String, String) {
    let s: ImageVariationPolicySpec = serde_json::from_value(spec.clone()).expect("spec");
    (PolicyKey::new(ns, name).data_key(), render_policy(&s).json)
}

/// What the harness's own watches see.
#[derive(Default)]
struct Seen {
    /// (ConfigMap, key) → (value, when it was first seen with that value).
    docs: HashMap<(String, String), (String, Instant)>,
    /// Policy → Ready=True at its current generation.
    ready: HashMap<String, bool>,
}

/// A simulated gateway replica's report Lease for ConfigMap `cm` at `resource_version`.
async fn report(leases: &Api<Lease>, ns: &str, cm: &str, resource_version: &str) {
    let serving = json!({"configMap": format!("{ns}/{cm}"), "resourceVersion": resource_version}).to_string();
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": format!("routerpolicy-gateway-sim-{cm}"),
                     "labels": {"routerpolicy.io/gateway-replica": "true"},
                     "annotations": {"routerpolicy.io/serving": serving}},
        "spec": {"holderIdentity": format!("sim-{cm}"), "leaseDurationSeconds": 3600,
                 "renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now())}});
    let params = PatchParams::apply("bench-replicas").force();
    leases
        .patch(&format!("routerpolicy-gateway-sim-{cm}"), &params, &Patch::Apply(&lease))
        .await
        .expect("report lease");
}

/// One simulated replica per target: reports an empty ConfigMap now, then every new
/// resourceVersion the harness's ConfigMap watch sends.
fn simulate_replicas(
    client: &Client,
    ns: &str,
    targets: usize,
) -> tokio::sync::mpsc::UnboundedSender<(String, String)> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let ns = ns.to_string();
    let initial: Vec<String> = (0..targets).map(|t| format!("gw-{t}")).collect();
    tokio::spawn(async move {
        for cm in &initial {
            report(&leases, &ns, cm, "").await;
        }
        while let Some((cm, rv)) = rx.recv().await {
            report(&leases, &ns, &cm, &rv).await;
        }
    });
    tx
}

fn watch_cluster(
    client: &Client,
    ns: &str,
    seen: Arc<Mutex<Seen>>,
    replicas: Option<tokio::sync::mpsc::UnboundedSender<(String, String)>>,
) {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let state = seen.clone();
    tokio::spawn(async move {
        let mut stream = watcher::watcher(cms, watcher::Config::default()).boxed();
        while let Some(event) = stream.next().await {
            let (Ok(Event::Apply(cm)) | Ok(Event::InitApply(cm))) = event else { continue };
            let now = Instant::now();
            let name = cm.metadata.name.clone().unwrap_or_default();
            if let (Some(replicas), Some(rv)) = (&replicas, &cm.metadata.resource_version)
                && name.starts_with("gw-")
            {
                let _ = replicas.send((name.clone(), rv.clone()));
            }
            let mut seen = state.lock().expect("lock");
            for (key, value) in cm.data.unwrap_or_default() {
                let slot = seen.docs.entry((name.clone(), key)).or_insert_with(|| (String::new(), now));
                if slot.0 != value {
                    *slot = (value, now);
                }
            }
        }
    });
    // Slim decoding (the operator's own watched type): the harness reads only the Ready
    // condition, so it costs the machine little while the operator works.
    let policies: Api<WatchedPolicy> = Api::namespaced(client.clone(), ns);
    tokio::spawn(async move {
        let mut stream = watcher::watcher(policies, watcher::Config::default()).boxed();
        while let Some(event) = stream.next().await {
            let (Ok(Event::Apply(p)) | Ok(Event::InitApply(p))) = event else { continue };
            let generation = p.metadata.generation;
            let ready = p.status.and_then(|raw| serde_json::from_str::<ReadyOnly>(raw.get()).ok()).is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True" && c.observed_generation == generation)
            });
            seen.lock().expect("lock").ready.insert(p.metadata.name.clone().unwrap_or_default(), ready);
        }
    });
}

#[derive(serde::Deserialize)]
struct ReadyOnly {
    #[serde(default)]
    conditions: Vec<ConditionOnly>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConditionOnly {
    #[serde(rename = "type")]
    type_: String,
    status: String,
    observed_generation: Option<i64>,
}

fn delta(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), (v - before.get(k).copied().unwrap_or(0.0)).round() as u64))
        .filter(|(k, v)| *v > 0 && k != "leases" && k != "tokenreviews" && k != "subjectaccessreviews")
        .collect()
}

/// `routerpolicy run` as its own process (the release binary, through the tests' `Instance`;
/// `SCALE_BINARY` runs another build instead, e.g. a baseline's).
struct Operator(support::Instance);

/// The operator binary the bench runs.
fn operator_binary() -> std::path::PathBuf {
    std::env::var_os("SCALE_BINARY").map(Into::into).unwrap_or_else(|| env!("CARGO_BIN_EXE_routerpolicy").into())
}

impl Operator {
    fn start(kubeconfig: &std::path::Path, ns: &str, name: &str) -> Operator {
        let flags = ["--leader-elect=false", &format!("--namespaces={ns}")];
        Operator(support::Instance::start_binary(&operator_binary(), kubeconfig, name, &flags))
    }

    fn metric(&self, prefix: &str) -> f64 {
        self.0.metric(prefix).unwrap_or(0.0)
    }

    /// CPU seconds the process has used (user + system).
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0.child.id())).unwrap_or_default();
        let fields: Vec<&str> =
            stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
        let ticks: f64 =
            fields.get(11..13).map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()).unwrap_or(0.0);
        ticks / 100.0
    }

    fn status_kib(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.child.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0.0)
    }

    fn rss_mib(&self) -> f64 {
        self.status_kib("VmRSS:") / 1024.0
    }

    fn peak_rss_mib(&self) -> f64 {
        self.status_kib("VmHWM:") / 1024.0
    }

    fn print_usage(&self, moment: &str) {
        println!(
            "          ({moment}: operator CPU {:.1} s, RSS {:.1} MiB, peak {:.1} MiB)",
            self.cpu_seconds(),
            self.rss_mib(),
            self.peak_rss_mib()
        );
    }

    fn stop(&mut self) {
        self.0.terminate();
    }

    /// Waits until every policy is indexed, every target planned and no work is pending.
    async fn wait_idle(&self, policies: usize, targets: usize) {
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut quiet_since: Option<Instant> = None;
        loop {
            let idle = self.metric("routerpolicy_index_policies ") as usize == policies
                && self.metric("routerpolicy_reconciles_total") as usize >= targets
                && self.metric("routerpolicy_work_pending") == 0.0;
            match (idle, quiet_since) {
                (true, Some(t)) if t.elapsed() > Duration::from_secs(3) => return,
                (true, None) => quiet_since = Some(Instant::now()),
                (false, _) => quiet_since = None,
                _ => {}
            }
            assert!(Instant::now() < deadline, "the operator did not become idle");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn percentile(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

fn print_writes(label: &str, writes: &BTreeMap<String, u64>) {
    let parts: Vec<String> = writes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("{label:<64} {}", if parts.is_empty() { "none".to_string() } else { parts.join(", ") });
}

/// The benchmark's fixed parts: the control plane, the namespace, the expected documents and
/// what the harness's own watches see.
struct Bench {
    cp: &'static support::ControlPlane,
    client: kube::Client,
    ns: String,
    api: Api<ImageVariationPolicy>,
    seen: Arc<Mutex<Seen>>,
    expected: BTreeMap<(String, String), String>,
    policies: usize,
    targets: usize,
    edits: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let bench = Bench::setup().await;
    let floor = bench.create_floor().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mut operator, ready_at) = bench.cold_start(floor).await;
    bench.edit_latency(&operator).await;
    operator.stop();
    bench.warm_restart().await;
    bench.status_floor(ready_at).await;
}

impl Bench {
    async fn setup() -> Bench {
        let policies = env_usize("SCALE_POLICIES", 2000);
        let targets = env_usize("SCALE_TARGETS", 20).max(1);
        let edits = env_usize("SCALE_EDITS", 100);
        let cp = support::control_plane();
        let client = cp.client().await;
        let version = client.apiserver_version().await.map(|v| v.git_version).unwrap_or_default();
        println!("routerpolicy scale benchmark: {policies} policies over {targets} targets (kube-apiserver {version})");
        println!("operator: {} (release build, its own process)", operator_binary().display());
        let ns = cp.namespace(&client, "bench").await;
        let mut expected: BTreeMap<(String, String), String> = BTreeMap::new();
        for i in 0..policies {
            let (key, json) = document(&ns, &format!("p{i}"), &spec(i % targets, i as i64));
            expected.insert((format!("gw-{}", i % targets), key), json);
        }
        // The harness's watches run from here on, through the floor and the operator's run alike.
        let seen = Arc::new(Mutex::new(Seen::default()));
        let reports = env_usize("SCALE_REPORTS", 0) == 1;
        let replicas = reports.then(|| simulate_replicas(&client, &ns, targets));
        if reports {
            println!("with a simulated gateway replica reporting for each target (SCALE_REPORTS=1)");
        }
        watch_cluster(&client, &ns, seen.clone(), replicas);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let api: Api<ImageVariationPolicy> = Api::namespaced(client.clone(), &ns);
        Bench { cp, client, ns, api, seen, expected, policies, targets, edits }
    }

    /// 1. Floor: create the policies, 16 writers in parallel.
    async fn create_floor(&self) -> f64 {
        let started = Instant::now();
        create_policies(&self.api, self.policies, self.targets).await;
        let floor = started.elapsed().as_secs_f64();
        println!("floor     create {} policies, 16 parallel writers:                {floor:>8.2} s", self.policies);
        floor
    }

    /// 2. Cold start: until every document is in place and every policy Ready.
    async fn cold_start(&self, floor: f64) -> (Operator, f64) {
        let writes_before = support::apiserver_writes(&self.client).await;
        let started = Instant::now();
        let operator = Operator::start(&self.cp.kubeconfig, &self.ns, "bench-cold");
        let deadline = Instant::now() + Duration::from_secs(1800);
        let (mut documents_at, mut ready_at) = (None, None);
        while documents_at.is_none() || ready_at.is_none() {
            {
                let s = self.seen.lock().expect("lock");
                if documents_at.is_none()
                    && self.expected.iter().all(|(k, v)| s.docs.get(k).is_some_and(|(d, _)| d == v))
                {
                    documents_at = Some(started.elapsed().as_secs_f64());
                    operator.print_usage("at every document");
                }
                if ready_at.is_none() && s.ready.len() == self.policies && s.ready.values().all(|r| *r) {
                    ready_at = Some(started.elapsed().as_secs_f64());
                    operator.print_usage("at every Ready");
                }
            }
            assert!(Instant::now() < deadline, "no convergence within 30 minutes; see {}", operator.0.log.display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        operator.wait_idle(self.policies, self.targets).await;
        let cold = delta(&support::apiserver_writes(&self.client).await, &writes_before);
        let (documents_at, ready_at) = (documents_at.unwrap_or_default(), ready_at.unwrap_or_default());
        println!(
            "operator  cold start to every document in every target:             {documents_at:>8.2} s  ({:.2}x the floor)",
            documents_at / floor
        );
        println!(
            "operator  cold start to every policy Ready at its generation:       {ready_at:>8.2} s  ({:.2}x the floor)",
            ready_at / floor
        );
        self.print_cold_writes(&operator, &cold);
        (operator, ready_at)
    }

    fn print_cold_writes(&self, operator: &Operator, cold: &BTreeMap<String, u64>) {
        print_writes("operator  writes during the cold start (API server's count):", cold);
        let status_writes = cold.get("imagevariationpolicies/status").copied().unwrap_or(0);
        let policy_writes = cold.get("imagevariationpolicies").copied().unwrap_or(0);
        let cm_writes = cold.get("configmaps").copied().unwrap_or(0);
        println!(
            "operator  per policy: {:.2} status + {:.2} object writes; per target: {:.2} ConfigMap writes",
            status_writes as f64 / self.policies as f64,
            policy_writes as f64 / self.policies as f64,
            cm_writes as f64 / self.targets as f64
        );
        println!(
            "operator  its own count: {} status writes, {} ConfigMap writes, {} policy writes",
            operator.metric("routerpolicy_status_writes_total"),
            operator.metric("routerpolicy_configmap_writes_total"),
            operator.metric("routerpolicy_policy_writes_total"),
        );
    }

    /// 4. Edit latency in steady state (before the restart, so RSS covers it too), next to
    ///    one direct ConfigMap write.
    async fn edit_latency(&self, operator: &Operator) {
        let direct_api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.ns);
        let mut direct = Vec::new();
        for i in 0..self.edits.min(50) {
            let started = Instant::now();
            direct_api
                .patch("direct-write", &PatchParams::apply("bench"), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "direct-write"}, "data": {"probe": i.to_string()}})))
                .await
                .expect("direct write");
            direct.push(started.elapsed());
        }
        let mut latencies = Vec::new();
        for round in 0..self.edits {
            latencies.push(self.one_edit(round).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (d50, d99) = (percentile(&mut direct, 0.5), percentile(&mut direct, 0.99));
        let (e50, e99) = (percentile(&mut latencies, 0.5), percentile(&mut latencies, 0.99));
        println!(
            "baseline  one direct ConfigMap server-side apply (round trip):     p50 {d50:>6.1} ms  p99 {d99:>6.1} ms"
        );
        println!(
            "operator  one policy edit until its ConfigMap holds it ({} edits): p50 {e50:>6.1} ms  p99 {e99:>6.1} ms  (p50 = direct + {:.1} ms)",
            self.edits,
            e50 - d50
        );
        println!(
            "operator  peak resident memory (VmHWM) after cold start and edits:  {:>8.1} MiB",
            operator.peak_rss_mib()
        );
    }

    /// One edit, until the harness's ConfigMap watch shows the new document.
    async fn one_edit(&self, round: usize) -> Duration {
        let i = (round * 7919) % self.policies;
        let t = i % self.targets;
        let edited = spec(t, 100_000 + round as i64);
        let (key, want) = document(&self.ns, &format!("p{i}"), &edited);
        let body = json!({"apiVersion": "routerpolicy.io/v1alpha1", "kind": "ImageVariationPolicy", "metadata": {"name": format!("p{i}")}, "spec": edited});
        let started = Instant::now();
        self.api
            .patch(&format!("p{i}"), &PatchParams::apply("bench").force(), &Patch::Apply(&body))
            .await
            .expect("edit");
        let slot = (format!("gw-{t}"), key);
        let seen_at = loop {
            if let Some((value, at)) = self.seen.lock().expect("lock").docs.get(&slot)
                && *value == want
            {
                break *at;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "edit {round} never arrived");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        seen_at.saturating_duration_since(started)
    }

    /// 3. Warm restart: nothing changed, nothing written.
    async fn warm_restart(&self) {
        let writes_before = support::apiserver_writes(&self.client).await;
        let restarted = Instant::now();
        let operator = Operator::start(&self.cp.kubeconfig, &self.ns, "bench-warm");
        operator.wait_idle(self.policies, self.targets).await;
        let warm = delta(&support::apiserver_writes(&self.client).await, &writes_before);
        print_writes("operator  writes during a warm restart (API server's count):", &warm);
        println!(
            "operator  warm restart idle after {:.2} s (incl. 3 s of observed quiet); peak RSS {:.1} MiB",
            restarted.elapsed().as_secs_f64(),
            operator.peak_rss_mib()
        );
    }

    /// 6. A second floor, for the record: the harness itself writes one status per policy
    ///    (server-side apply, 16 writers) on a copy of the same policies, with no operator.
    async fn status_floor(&self, ready_at: f64) {
        let copy = self.cp.namespace(&self.client, "bench-status-floor").await;
        let copies: Api<ImageVariationPolicy> = Api::namespaced(self.client.clone(), &copy);
        create_policies(&copies, self.policies, self.targets).await;
        let sample = self.api.get_status("p1").await.expect("a status the operator wrote").status.expect("status");
        let started = Instant::now();
        futures::stream::iter(0..self.policies)
            .map(|i| {
                let api = copies.clone();
                let status =
                    json!({"apiVersion": "routerpolicy.io/v1alpha1", "kind": "ImageVariationPolicy", "status": sample});
                async move {
                    api.patch_status(
                        &format!("p{i}"),
                        &PatchParams::apply("bench-status").force(),
                        &Patch::Apply(&status),
                    )
                    .await
                    .expect("status write");
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        let status_floor = started.elapsed().as_secs_f64();
        println!(
            "floor 2   the harness writes {} statuses (the operator's), 16 writers: {status_floor:>8.2} s  (cold start to Ready = {:.2}x this)",
            self.policies,
            ready_at / status_floor
        );
    }
}
