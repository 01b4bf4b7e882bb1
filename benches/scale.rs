//! Scale benchmark (the targets: docs/benchmarks.md, "Results"): the release binary `routerpolicy run` as its own process
//! against the real kube-apiserver + etcd, next to floors measured in the same run. Prints
//! figures and ratios; asserts nothing about time.
//!
//! ```sh
//! cargo bench --bench scale                                    # 10,000 policies over 100 targets
//! SCALE_SIZES=10000/100,30000/300,100000/1000 cargo bench --bench scale   # the cost curve, one run
//! ```
//!
//! Each size runs in a namespace of its own, one after the other:
//! 1. Create floor: the harness's lean client (`scale/lean.rs`: keep-alive connections, bodies
//!    encoded beforehand, the fastest of a few writer counts) creates the N policies, its
//!    watches already running.
//! 2. Cold start: the operator starts with the N policies stored; time until every target
//!    holds every document, and until every policy is `Ready=True` at its current generation
//!    (seen through the harness's own watches); writes by kind, counted by the API server
//!    (`apiserver_request_total`), and by the operator's metrics.
//! 3. Edit latency in steady state: one policy edit at a time, each to another target, until
//!    the harness's ConfigMap watch sees the new document; next to one direct ConfigMap
//!    server-side apply (its round trip), p50 and p99. Then a burst: one edit in each of up to
//!    1,000 targets at once (the lean client), until every new document is seen; its rate
//!    next to the create floor's. Then, until every policy is Ready at its generation again
//!    (with reports: served), so what follows starts from a settled cluster.
//! 4. Peak resident memory of the operator process (`VmHWM`).
//! 5. Warm restart: the operator is stopped (SIGTERM) and started again with nothing
//!    changed; writes until it has planned every target and is idle.
//! 6. Status floor: the lean client applies the operator's status to each of N copies of the
//!    policies, with no operator: what the status writes alone cost.
//!
//! With `SCALE_REPORTS=R` every target also has R gateway replicas that report what they serve
//! (docs/gateway.md, "Ready means served"), simulated by the harness: R report Leases per target, created before the
//! operator starts (an empty ConfigMap loaded) and rewritten with the ConfigMap's
//! resourceVersion each time the harness's watch sees it change, as a replica in API mode
//! does. Ready then includes `Served`. After the edits every replica renews its Lease once
//! (the same report, a new renewTime): the operator's writes meanwhile are printed (none is
//! expected) with its resident memory before and after.

#[path = "scale/lean.rs"]
mod lean;
#[path = "scale/spec.rs"]
mod spec;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use routerpolicy::api::{ImageVariationPolicy, ImageVariationPolicySpec};
use routerpolicy::key::PolicyKey;
use routerpolicy::operator::decode::WatchedPolicy;
use routerpolicy::render::render_policy;
use serde_json::{Value, json};
use spec::spec;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn policy_body(i: usize, targets: usize) -> Value {
    json!({"apiVersion": "routerpolicy.io/v1alpha1", "kind": "ImageVariationPolicy", "metadata": {"name": format!("p{i}")}, "spec": spec(i % targets, i as i64)})
}

/// The lean client's creates of policies `p{from}..p{to}` (spread over `targets` targets) in `ns`.
fn create_calls(ns: &str, from: usize, to: usize, targets: usize) -> Vec<lean::Call> {
    let path = format!("/apis/routerpolicy.io/v1alpha1/namespaces/{ns}/imagevariationpolicies");
    (from..to).map(|i| lean::Call::create(path.clone(), &policy_body(i, targets))).collect()
}

fn document(ns: &str, name: &str, spec: &Value) -> (String, String) {
    let s: ImageVariationPolicySpec = serde_json::from_value(spec.clone()).expect("spec");
    (PolicyKey::new(ns, name).data_key(), render_policy(&s).json.to_string())
}

/// What the harness's own watches see.
#[derive(Default)]
struct Seen {
    /// (ConfigMap, key) → (value, when it was first seen with that value).
    docs: HashMap<(String, String), (String, Instant)>,
    /// Policy → Ready=True at its current generation.
    ready: HashMap<String, bool>,
}

impl Seen {
    /// Whether all `policies` are known and each is Ready at its current generation.
    fn all_ready(&self, policies: usize) -> bool {
        self.ready.len() == policies && self.ready.values().all(|r| *r)
    }
}

/// Simulated gateway replica `replica`'s report Lease for ConfigMap `cm` at `resource_version`.
async fn report(leases: &Api<Lease>, ns: &str, cm: &str, replica: usize, resource_version: &str) {
    let serving = json!({"configMap": format!("{ns}/{cm}"), "resourceVersion": resource_version}).to_string();
    let name = format!("routerpolicy-gateway-sim-{cm}-{replica}");
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name,
                     "labels": {"routerpolicy.io/gateway-replica": "true"},
                     "annotations": {"routerpolicy.io/serving": serving}},
        "spec": {"holderIdentity": format!("sim-{cm}-{replica}"), "leaseDurationSeconds": 3600,
                 "renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now())}});
    let params = PatchParams::apply("bench-replicas").force();
    leases.patch(&name, &params, &Patch::Apply(&lease)).await.expect("report lease");
}

/// What the simulated replicas are told.
enum ToReplicas {
    /// The harness's watch saw ConfigMap `.0` at resourceVersion `.1`: every replica loads it.
    Loaded(String, String),
    /// Every replica renews its Lease (the same report, a new renewTime); answered with how
    /// many Leases were renewed.
    Renew(tokio::sync::oneshot::Sender<usize>),
}

/// `replicas` simulated replicas per target: each reports an empty ConfigMap now, then every
/// new resourceVersion the harness's ConfigMap watch sends, and renews when told.
fn simulate_replicas(
    client: &Client,
    ns: &str,
    targets: usize,
    replicas: usize,
) -> tokio::sync::mpsc::UnboundedSender<ToReplicas> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ToReplicas>();
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let ns = ns.to_string();
    let mut loaded: BTreeMap<String, String> = (0..targets).map(|t| (format!("gw-{t}"), String::new())).collect();
    tokio::spawn(async move {
        for cm in loaded.keys() {
            for replica in 0..replicas {
                report(&leases, &ns, cm, replica, "").await;
            }
        }
        while let Some(told) = rx.recv().await {
            match told {
                ToReplicas::Loaded(cm, rv) => {
                    for replica in 0..replicas {
                        report(&leases, &ns, &cm, replica, &rv).await;
                    }
                    loaded.insert(cm, rv);
                }
                ToReplicas::Renew(done) => {
                    for (cm, rv) in &loaded {
                        for replica in 0..replicas {
                            report(&leases, &ns, cm, replica, rv).await;
                        }
                    }
                    let _ = done.send(loaded.len() * replicas);
                }
            }
        }
    });
    tx
}

fn watch_cluster(
    client: &Client,
    ns: &str,
    seen: Arc<Mutex<Seen>>,
    replicas: Option<tokio::sync::mpsc::UnboundedSender<ToReplicas>>,
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
                let _ = replicas.send(ToReplicas::Loaded(name.clone(), rv.clone()));
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

/// One size's figures, for the table of the cost curve at the end.
#[derive(Default)]
struct Figures {
    policies: usize,
    targets: usize,
    create_floor: f64,
    documents: f64,
    ready: f64,
    status_floor: f64,
    status_writes: f64,
    configmap_writes: f64,
    warm_writes: u64,
    direct_p50: f64,
    edit_p50: f64,
    edit_p99: f64,
    burst_ratio: f64,
    burst_floor: f64,
    peak_rss: f64,
}

/// The writer counts the lean client's floors try (the fastest is kept).
const WRITER_COUNTS: [usize; 4] = [8, 16, 32, 64];
/// Writes per writer-count trial of a floor; the full floor then runs with the fastest count.
const PROBE_WRITES: usize = 2000;

/// The sizes this run measures: `SCALE_SIZES=policies/targets,...`, else `SCALE_POLICIES` over
/// `SCALE_TARGETS` (10,000 over 100).
fn sizes() -> Vec<(usize, usize)> {
    let parse = |size: &str| {
        let (p, t) = size.trim().split_once('/')?;
        Some((p.parse().ok()?, t.parse::<usize>().ok()?.max(1)))
    };
    match std::env::var("SCALE_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|s| parse(s).unwrap_or_else(|| panic!("SCALE_SIZES: {s:?} is not policies/targets")))
            .collect(),
        Err(_) => vec![(env_usize("SCALE_POLICIES", 10_000), env_usize("SCALE_TARGETS", 100).max(1))],
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cp = support::control_plane();
    let client = cp.client().await;
    let version = client.apiserver_version().await.map(|v| v.git_version).unwrap_or_default();
    println!("routerpolicy scale benchmark (kube-apiserver {version})");
    println!("operator: {} (release build, its own process)", operator_binary().display());
    let lean = lean::Lean::new(&cp.server, support::ADMIN_TOKEN);
    let mut curve = Vec::new();
    for (policies, targets) in sizes() {
        let bench = Bench::setup(cp, &client, policies, targets).await;
        curve.push(bench.run(&lean).await);
    }
    print_curve(&curve);
}

fn print_curve(curve: &[Figures]) {
    println!("\nthe cost curve (one row per size, this run):");
    println!(
        "| policies / targets | create floor | documents | Ready | status floor | Ready / status floor | status writes / policy | CM writes / target | warm writes | edit p50 (direct) | edit p99 | burst / create rate | burst / ConfigMap floor | peak RSS | per policy |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for f in curve {
        println!(
            "| {} / {} | {:.1} s | {:.1} s ({:.2}x) | {:.1} s | {:.1} s | {:.2}x | {:.2} | {:.2} | {} | {:.1} ms ({:.1}) | {:.1} ms | {:.2}x | {:.2}x | {:.1} MiB | {:.2} KiB |",
            f.policies,
            f.targets,
            f.create_floor,
            f.documents,
            f.documents / f.create_floor,
            f.ready,
            f.status_floor,
            f.ready / f.status_floor,
            f.status_writes,
            f.configmap_writes,
            f.warm_writes,
            f.edit_p50,
            f.direct_p50,
            f.edit_p99,
            f.burst_ratio,
            f.burst_floor,
            f.peak_rss,
            f.peak_rss * 1024.0 / f.policies as f64
        );
    }
}

/// One size's fixed parts: the control plane, the namespace, the expected documents and
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
    /// The simulated replicas (`SCALE_REPORTS`), if any.
    replicas: Option<tokio::sync::mpsc::UnboundedSender<ToReplicas>>,
}

impl Bench {
    async fn setup(cp: &'static support::ControlPlane, client: &Client, policies: usize, targets: usize) -> Bench {
        let edits = env_usize("SCALE_EDITS", 100);
        println!("\n== {policies} policies over {targets} targets");
        let ns = cp.namespace(client, "bench").await;
        let mut expected: BTreeMap<(String, String), String> = BTreeMap::new();
        for i in 0..policies {
            let (key, json) = document(&ns, &format!("p{i}"), &spec(i % targets, i as i64));
            expected.insert((format!("gw-{}", i % targets), key), json);
        }
        // The harness's watches run from here on, through the floor and the operator's run alike.
        let seen = Arc::new(Mutex::new(Seen::default()));
        let reports = env_usize("SCALE_REPORTS", 0);
        let replicas = (reports > 0).then(|| simulate_replicas(client, &ns, targets, reports));
        if reports > 0 {
            println!("with {reports} simulated gateway replica(s) reporting for each target (SCALE_REPORTS={reports})");
        }
        watch_cluster(client, &ns, seen.clone(), replicas.clone());
        tokio::time::sleep(Duration::from_secs(1)).await;
        let api: Api<ImageVariationPolicy> = Api::namespaced(client.clone(), &ns);
        Bench { cp, client: client.clone(), ns, api, seen, expected, policies, targets, edits, replicas }
    }

    async fn run(&self, lean: &lean::Lean) -> Figures {
        let mut figures = Figures { policies: self.policies, targets: self.targets, ..Figures::default() };
        let writers = self.create_floor(lean, &mut figures).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut operator = self.cold_start(&mut figures).await;
        self.edit_latency(&mut figures).await;
        self.edit_burst(lean, writers, &mut figures).await;
        self.settle(&operator).await;
        self.renewals(&operator).await;
        figures.peak_rss = operator.peak_rss_mib();
        println!(
            "operator  peak resident memory (VmHWM) after cold start and edits:  {:>8.1} MiB ({:.2} KiB per policy)",
            figures.peak_rss,
            figures.peak_rss * 1024.0 / self.policies as f64
        );
        operator.stop();
        figures.warm_writes = self.warm_restart().await;
        self.status_floor(lean, writers, &mut figures).await;
        figures
    }

    /// 1. Create floor: the lean client creates the policies with the fastest of a few writer
    ///    counts (tried on as many other policies in a scratch namespace); returns that count.
    async fn create_floor(&self, lean: &lean::Lean, figures: &mut Figures) -> usize {
        let scratch = self.cp.namespace(&self.client, "bench-create-probe").await;
        let probe = PROBE_WRITES.min(self.policies);
        let (writers, _) = lean
            .fastest("creates", &WRITER_COUNTS, |trial| {
                create_calls(&scratch, trial * probe, (trial + 1) * probe, self.targets)
            })
            .await;
        let took = lean.run(Arc::new(create_calls(&self.ns, 0, self.policies, self.targets)), writers).await;
        figures.create_floor = took.as_secs_f64();
        println!(
            "floor     create {} policies, lean client, {writers} writers:         {:>8.2} s",
            self.policies, figures.create_floor
        );
        writers
    }

    /// 2. Cold start: until every document is in place and every policy Ready.
    async fn cold_start(&self, figures: &mut Figures) -> Operator {
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
                if ready_at.is_none() && s.all_ready(self.policies) {
                    ready_at = Some(started.elapsed().as_secs_f64());
                    operator.print_usage("at every Ready");
                }
            }
            assert!(Instant::now() < deadline, "no convergence within 30 minutes; see {}", operator.0.log.display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        operator.wait_idle(self.policies, self.targets).await;
        let cold = delta(&support::apiserver_writes(&self.client).await, &writes_before);
        figures.documents = documents_at.unwrap_or_default();
        figures.ready = ready_at.unwrap_or_default();
        println!(
            "operator  cold start to every document in every target:             {:>8.2} s  ({:.2}x the create floor)",
            figures.documents,
            figures.documents / figures.create_floor
        );
        println!("operator  cold start to every policy Ready at its generation:       {:>8.2} s", figures.ready);
        self.print_cold_writes(&operator, &cold, figures);
        operator
    }

    fn print_cold_writes(&self, operator: &Operator, cold: &BTreeMap<String, u64>, figures: &mut Figures) {
        print_writes("operator  writes during the cold start (API server's count):", cold);
        let status_writes = cold.get("imagevariationpolicies/status").copied().unwrap_or(0);
        let policy_writes = cold.get("imagevariationpolicies").copied().unwrap_or(0);
        let cm_writes = cold.get("configmaps").copied().unwrap_or(0);
        figures.status_writes = status_writes as f64 / self.policies as f64;
        figures.configmap_writes = cm_writes as f64 / self.targets as f64;
        println!(
            "operator  per policy: {:.2} status + {:.2} object writes; per target: {:.2} ConfigMap writes",
            figures.status_writes,
            policy_writes as f64 / self.policies as f64,
            figures.configmap_writes
        );
        println!(
            "operator  its own count: {} status writes, {} ConfigMap writes, {} policy writes",
            operator.metric("routerpolicy_status_writes_total"),
            operator.metric("routerpolicy_configmap_writes_total"),
            operator.metric("routerpolicy_policy_writes_total"),
        );
    }
}

impl Bench {
    /// 3. Edit latency in steady state (before the restart, so RSS covers it too), next to
    ///    one direct ConfigMap write.
    async fn edit_latency(&self, figures: &mut Figures) {
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
        (figures.direct_p50, figures.edit_p50, figures.edit_p99) = (d50, e50, e99);
        println!(
            "baseline  one direct ConfigMap server-side apply (round trip):     p50 {d50:>6.1} ms  p99 {d99:>6.1} ms"
        );
        println!(
            "operator  one policy edit until its ConfigMap holds it ({} edits): p50 {e50:>6.1} ms  p99 {e99:>6.1} ms  (p50 = direct + {:.1} ms)",
            self.edits,
            e50 - d50
        );
    }

    /// The edited spec of policy `i` in round `round`.
    fn edited(&self, i: usize, round: i64) -> (Value, (String, String), String) {
        let t = i % self.targets;
        let edited = spec(t, 100_000 + round);
        let (key, want) = document(&self.ns, &format!("p{i}"), &edited);
        let body = json!({"apiVersion": "routerpolicy.io/v1alpha1", "kind": "ImageVariationPolicy", "metadata": {"name": format!("p{i}")}, "spec": edited});
        (body, (format!("gw-{t}"), key), want)
    }

    /// One edit, until the harness's ConfigMap watch shows the new document.
    async fn one_edit(&self, round: usize) -> Duration {
        let i = (round * 7919) % self.policies;
        let (body, slot, want) = self.edited(i, round as i64);
        let started = Instant::now();
        self.api
            .patch(&format!("p{i}"), &PatchParams::apply("bench").force(), &Patch::Apply(&body))
            .await
            .expect("edit");
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

    /// 3b. A burst: one edit in each of up to 1,000 targets, sent at once by the lean client,
    ///     until the harness's ConfigMap watch shows every new document; its rate next to the
    ///     create floor's.
    async fn edit_burst(&self, lean: &lean::Lean, writers: usize, figures: &mut Figures) {
        let count = self.targets.min(1000);
        let floor = self.configmap_floor(lean, writers, count).await;
        let path =
            |i: usize| format!("/apis/routerpolicy.io/v1alpha1/namespaces/{}/imagevariationpolicies/p{i}", self.ns);
        let edits: Vec<_> = (0..count).map(|t| (t, self.edited(t, 200_000))).collect();
        let calls = edits.iter().map(|(i, (body, _, _))| lean::Call::apply(path(*i), "bench", body)).collect();
        let started = Instant::now();
        let sent = lean.run(Arc::new(calls), writers).await.as_secs_f64();
        let deadline = started + Duration::from_secs(600);
        loop {
            let done = {
                let seen = self.seen.lock().expect("lock");
                edits.iter().all(|(_, (_, slot, want))| seen.docs.get(slot).is_some_and(|(v, _)| v == want))
            };
            if done {
                break;
            }
            assert!(Instant::now() < deadline, "the burst of {count} edits did not converge");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = started.elapsed().as_secs_f64();
        let create_rate = self.policies as f64 / figures.create_floor;
        figures.burst_ratio = (count as f64 / took) / create_rate;
        figures.burst_floor = floor / took;
        println!(
            "operator  a burst of {count} edits in {count} targets (sent in {sent:.2} s), until every document: {took:>6.2} s ({:.0}/s; {:.2}x the create floor's rate, {:.2}x the target-sized ConfigMap floor's)",
            count as f64 / took,
            figures.burst_ratio,
            figures.burst_floor
        );
    }

    /// The floor of a burst: the lean client server-side applies one changed key in each of
    /// `count` ConfigMaps holding what a target holds (not labelled: the operator ignores them),
    /// created beforehand. Returns the seconds the changes took.
    async fn configmap_floor(&self, lean: &lean::Lean, writers: usize, count: usize) -> f64 {
        let data: Vec<BTreeMap<String, String>> = {
            let seen = self.seen.lock().expect("lock");
            (0..count)
                .map(|t| {
                    let cm = format!("gw-{t}");
                    seen.docs
                        .iter()
                        .filter(|((c, _), _)| *c == cm)
                        .map(|((_, k), (v, _))| (k.clone(), v.clone()))
                        .collect()
                })
                .collect()
        };
        let calls = |round: usize| -> Vec<lean::Call> {
            data.iter()
                .enumerate()
                .map(|(t, data)| {
                    let mut data = data.clone();
                    if let Some(value) = data.values_mut().next() {
                        value.push_str(&" ".repeat(round));
                    }
                    let name = format!("floor-cm-{t}");
                    let body =
                        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data});
                    lean::Call::apply(format!("/api/v1/namespaces/{}/configmaps/{name}", self.ns), "bench", &body)
                })
                .collect()
        };
        lean.run(Arc::new(calls(0)), writers).await;
        let took = lean.run(Arc::new(calls(1)), writers).await.as_secs_f64();
        let keys = data.iter().map(BTreeMap::len).sum::<usize>() as f64 / count.max(1) as f64;
        println!(
            "floor     the lean client changes one key in each of {count} ConfigMaps of {keys:.0} keys, {writers} writers: {took:>6.2} s ({:.0}/s)",
            count as f64 / took
        );
        took
    }

    /// 5. Warm restart: nothing changed, nothing written. Returns the writes.
    async fn warm_restart(&self) -> u64 {
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
        warm.values().sum()
    }

    /// 6. Status floor: the lean client applies a status the operator wrote to each of N
    ///    copies of the policies, with no operator (the fastest of a few writer counts, tried
    ///    on the first copies with a trial's own transition time).
    async fn status_floor(&self, lean: &lean::Lean, create_writers: usize, figures: &mut Figures) {
        let copy = self.cp.namespace(&self.client, "bench-status-floor").await;
        lean.run(Arc::new(create_calls(&copy, 0, self.policies, self.targets)), create_writers).await;
        let sample = self.api.get_status("p1").await.expect("a status the operator wrote").status.expect("status");
        let sample = serde_json::to_value(sample).expect("status");
        let calls = |from: usize, to: usize, trial: usize| -> Vec<lean::Call> {
            let status = json!({"apiVersion": "routerpolicy.io/v1alpha1", "kind": "ImageVariationPolicy", "status": vary(&sample, trial)});
            (from..to)
                .map(|i| {
                    let path =
                        format!("/apis/routerpolicy.io/v1alpha1/namespaces/{copy}/imagevariationpolicies/p{i}/status");
                    let mut body = status.clone();
                    body["metadata"] = json!({"name": format!("p{i}")});
                    lean::Call::apply(path, "bench-status", &body)
                })
                .collect()
        };
        let probe = PROBE_WRITES.min(self.policies);
        let (writers, _) = lean.fastest("statuses", &WRITER_COUNTS, |trial| calls(0, probe, trial + 1)).await;
        let took = lean.run(Arc::new(calls(0, self.policies, 0)), writers).await;
        figures.status_floor = took.as_secs_f64();
        println!(
            "floor     the lean client applies {} statuses (the operator's), {writers} writers: {:>8.2} s  (cold start to Ready = {:.2}x this)",
            self.policies,
            figures.status_floor,
            figures.ready / figures.status_floor
        );
    }
}

impl Bench {
    /// 3c. Until every policy is Ready at its generation again after the edits (with reports:
    ///     every simulated replica serves the edited ConfigMaps) and the operator is idle, so
    ///     the warm restart starts from a settled cluster.
    async fn settle(&self, operator: &Operator) {
        let started = Instant::now();
        let cpu = operator.cpu_seconds();
        let deadline = started + Duration::from_secs(600);
        while !self.seen.lock().expect("lock").all_ready(self.policies) {
            assert!(Instant::now() < deadline, "the edited policies were not Ready within 10 minutes");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ready = started.elapsed().as_secs_f64();
        operator.wait_idle(self.policies, self.targets).await;
        println!(
            "operator  every policy Ready at its generation again after the edits: {ready:>6.2} s (operator CPU {:.1} s)",
            operator.cpu_seconds() - cpu
        );
    }

    /// 3d. With simulated replicas: each renews its report Lease once (nothing else changes);
    ///     the operator's writes meanwhile (none expected) and its resident memory.
    async fn renewals(&self, operator: &Operator) {
        let Some(replicas) = &self.replicas else { return };
        let writes_before = support::apiserver_writes(&self.client).await;
        let statuses_before = operator.metric("routerpolicy_status_writes_total");
        let rss_before = operator.rss_mib();
        let (done, renewed) = tokio::sync::oneshot::channel();
        replicas.send(ToReplicas::Renew(done)).expect("the simulated replicas run");
        let renewed = renewed.await.expect("the renewals");
        operator.wait_idle(self.policies, self.targets).await;
        let writes = delta(&support::apiserver_writes(&self.client).await, &writes_before);
        print_writes(&format!("operator  writes while {renewed} report Leases renew (API server's):"), &writes);
        println!(
            "operator  its own count: {} status writes; RSS {rss_before:.1} MiB before the renewals, {:.1} MiB after",
            operator.metric("routerpolicy_status_writes_total") - statuses_before,
            operator.rss_mib()
        );
    }
}

/// `status` with every condition's `lastTransitionTime` moved by `trial` seconds: a status
/// of the same size that differs from the one before.
fn vary(status: &Value, trial: usize) -> Value {
    let mut status = status.clone();
    if let Some(conditions) = status.get_mut("conditions").and_then(Value::as_array_mut) {
        for condition in conditions {
            condition["lastTransitionTime"] = json!(format!("2026-01-01T00:{:02}:{:02}Z", trial / 60, trial % 60));
        }
    }
    status
}
