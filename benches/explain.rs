//! Explain benchmark: `routerpolicy explain` (the release binary, its own process) against the
//! real control plane, with the operator and two gateway replicas in API mode, on a namespace
//! that holds one policy and then `EXPLAIN_POLICIES` (1,000). Prints, in one run:
//!
//! 1. Baseline: the three `kubectl get` a user runs today to answer the same (the policy, the
//!    ConfigMap, the report Leases), each its own process, p50/p99 of their sum.
//! 2. `routerpolicy explain NS/p -o json` with 1 policy in the namespace, p50/p99.
//! 3. The same with `EXPLAIN_POLICIES` policies in the namespace, once all are Ready (target:
//!    no slower but for the larger ConfigMap it reads, since it reads one policy, never a list
//!    of them), p50/p99, and the ratio to 2.
//! 4. The LIST requests on policies the API server counted during every explain (target: 0).
//!
//! `EXPLAIN_POLICIES` (1000) and `EXPLAIN_RUNS` (30) change the sizes. Nothing is asserted.

#[path = "../tests/gwsupport/mod.rs"]
mod gwsupport;
#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use gwsupport::GatewayProcess;
use kube::api::PostParams;
use kube::{Api, Client};
use routerpolicy::api::ImageVariationPolicy;
use serde_json::{Value, json};
use support::{Instance, control_plane};

const CONFIGMAP: &str = "image-gateway-policies";
const BINARY: &str = env!("CARGO_BIN_EXE_routerpolicy");

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

fn policy(name: &str, count: usize) -> ImageVariationPolicy {
    serde_json::from_value(json!({"apiVersion": "routerpolicy.io/v1alpha1", "kind": "ImageVariationPolicy",
        "metadata": {"name": name},
        "spec": {"targetRefs": [{"name": CONFIGMAP}], "retry": {"count": 1 + count % 5}, "name": format!("policy-{count}")}}))
    .expect("policy")
}

/// LIST requests the API server counted for policies.
async fn policy_lists(client: &Client) -> f64 {
    let request = http::Request::get("/metrics").body(Vec::new()).expect("request");
    let text = client.request_text(request).await.expect("apiserver /metrics");
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{") && l.contains("verb=\"LIST\""))
        .filter(|l| l.contains("resource=\"imagevariationpolicies\""))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// Runs `program args` to completion; its wall time and stdout.
fn timed(program: &str, args: &[&str]) -> (Duration, String) {
    let started = Instant::now();
    let out = Command::new(program).args(args).env_remove("KUBECONFIG").output().expect("run");
    let took = started.elapsed();
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    (took, String::from_utf8_lossy(&out.stdout).into_owned())
}

struct Bench {
    client: Client,
    ns: String,
    kubeconfig: String,
    runs: usize,
}

impl Bench {
    fn explain(&self) -> Vec<Duration> {
        let kubeconfig = format!("--kubeconfig={}", self.kubeconfig);
        let policy = format!("{}/p", self.ns);
        (0..self.runs).map(|_| timed(BINARY, &["explain", &policy, "-o", "json", &kubeconfig]).0).collect()
    }

    fn kubectl_gets(&self) -> Vec<Duration> {
        let kubectl = control_plane().kubectl_path();
        let kubectl = kubectl.to_str().expect("utf-8");
        let kubeconfig = format!("--kubeconfig={}", self.kubeconfig);
        let ns = self.ns.as_str();
        let gets: [&[&str]; 3] = [
            &["get", "imagevariationpolicies", "p", "-n", ns, "-o", "json"],
            &["get", "configmap", CONFIGMAP, "-n", ns, "-o", "json"],
            &["get", "leases", "-n", ns, "-l", "routerpolicy.io/gateway-replica=true", "-o", "json"],
        ];
        (0..self.runs)
            .map(|_| gets.iter().map(|args| timed(kubectl, &[&[kubeconfig.as_str()][..], args].concat()).0).sum())
            .collect()
    }

    /// Waits until explain says both replicas serve `p`'s current document.
    async fn both_serve(&self) {
        let kubeconfig = format!("--kubeconfig={}", self.kubeconfig);
        let policy = format!("{}/p", self.ns);
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let (_, out) = timed(BINARY, &["explain", &policy, "-o", "json", &kubeconfig]);
            let answer: Value = serde_json::from_str(&out).expect("json");
            let replicas = answer["targets"][0]["replicas"].as_array().cloned().unwrap_or_default();
            if replicas.len() == 2 && replicas.iter().all(|r| r["serves"] == "current") {
                return;
            }
            assert!(Instant::now() < deadline, "the replicas never served the policy: {answer}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Waits until all `count` policies are Ready, so the operator is idle while explain is timed.
async fn all_ready(api: &Api<ImageVariationPolicy>, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let ready = api.list(&Default::default()).await.map_or(0, |list| {
            let ready = |p: &ImageVariationPolicy| {
                p.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            };
            list.items.iter().filter(|p| ready(p)).count()
        });
        if ready >= count {
            return;
        }
        assert!(Instant::now() < deadline, "only {ready} of {count} policies became Ready");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn line(what: &str, mut times: Vec<Duration>) -> f64 {
    let (p50, p99) = (percentile(&mut times, 0.5), percentile(&mut times, 0.99));
    println!("{what:<64} p50 {p50:>7.1} ms  p99 {p99:>7.1} ms");
    p50
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let many = env_usize("EXPLAIN_POLICIES", 1000).max(2);
    let runs = env_usize("EXPLAIN_RUNS", 30).max(1);
    let cp = control_plane();
    let client = cp.client().await;
    println!("routerpolicy explain benchmark: 1 and {many} policies in one namespace, {runs} runs each");
    println!("explain, operator and gateways: {BINARY} (release build, each its own process)");
    let ns = cp.namespace(&client, "explain-bench").await;
    let kubeconfig = cp.kubeconfig.to_str().expect("utf-8").to_string();
    let _operator = Instance::start(&cp.kubeconfig, "explain-bench-op", &[&format!("--namespaces={ns}")]);
    let _gateways: Vec<GatewayProcess> = (0..2)
        .map(|i| {
            let args = vec![
                format!("--config-map={ns}/{CONFIGMAP}"),
                format!("--identity=explain-gw-{i}"),
                "--upstream=http://127.0.0.1:9".to_string(),
            ];
            GatewayProcess::start_with_env(&cp.dir, &args, &[("KUBECONFIG", &kubeconfig)])
        })
        .collect();
    let api: Api<ImageVariationPolicy> = Api::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &policy("p", 0)).await.expect("create p");
    let bench = Bench { client: client.clone(), ns, kubeconfig, runs };
    bench.both_serve().await;
    let (_, text) = timed(BINARY, &["explain", &format!("{}/p", bench.ns), "--kubeconfig", &bench.kubeconfig]);
    println!("the answer timed below, as text:\n{text}");

    let lists_before = policy_lists(&bench.client).await;
    let baseline = line("baseline  3 × kubectl get (policy, ConfigMap, Leases), summed", bench.kubectl_gets());
    let one = line("explain   1 policy in the namespace", bench.explain());
    let mut lists = policy_lists(&bench.client).await - lists_before;

    futures::stream::iter(1..many)
        .map(|i| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &policy(&format!("p{i}"), i)).await.expect("create") }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    bench.both_serve().await;
    all_ready(&api, many).await;
    let lists_before = policy_lists(&bench.client).await;
    let at_many = line(&format!("explain   {many} policies in the namespace"), bench.explain());
    lists += policy_lists(&bench.client).await - lists_before;
    println!(
        "ratio     explain at {many} / at 1: {:.2}×   explain / the 3 kubectl gets: {:.2}×",
        at_many / one,
        at_many / baseline
    );
    println!(
        "lists     LIST requests on policies the API server counted during the explain runs: {lists:.0}  (target 0)"
    );
}
