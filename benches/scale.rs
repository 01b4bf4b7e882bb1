//! Scale benchmark against the real control plane (PRODUCT §9). Prints figures and ratios;
//! asserts nothing about time.
//!
//! ```sh
//! cargo bench --bench scale                                    # 2000 policies over 20 targets
//! SCALE_POLICIES=10000 SCALE_TARGETS=100 cargo bench --bench scale
//! ```
//!
//! 1. Baseline: `kubectl apply --server-side` of the pre-rendered ConfigMaps (what the operator
//!    must end up writing), timed.
//! 2. Cold start: N policies exist, the operator starts; time until every target holds every
//!    document; ConfigMap writes; resident memory of the operator process.
//! 3. One edit: time until the edited document is in its ConfigMap, next to the time of one
//!    direct ConfigMap patch (the API server's own write latency).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use routerpolicy::api::ImageVariationPolicy;
use routerpolicy::controller::{self, Settings};
use routerpolicy::metrics::Metrics;
use routerpolicy::render::render_policy;
use serde_json::{Value, json};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn spec(target: usize, variant: i64) -> Value {
    json!({
        "targetRefs": [{"name": format!("gw-{target}")}],
        "retry": {"count": 1 + variant % 5, "onCodes": [429, 500, 503]},
        "fallbacks": [{"model": "openai/gpt-4o-mini"}],
        "loadBalancer": {"type": "weight_based", "models": [{"model": "openai/gpt-4o", "weight": 0.5}, {"model": "anthropic/claude-3-5-sonnet", "weight": 0.5}]},
        "timeout": {"callTimeout": 30000}
    })
}

async fn converged(client: &Client, ns: &str, expected: &BTreeMap<String, BTreeMap<String, String>>) -> bool {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let Ok(list) = cms.list(&ListParams::default().labels("app.kubernetes.io/managed-by=routerpolicy")).await else {
        return false;
    };
    let actual: BTreeMap<String, BTreeMap<String, String>> =
        list.items.into_iter().map(|cm| (cm.metadata.name.unwrap_or_default(), cm.data.unwrap_or_default())).collect();
    expected.iter().all(|(name, data)| actual.get(name) == Some(data))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let policies = env_usize("SCALE_POLICIES", 2000);
    let targets = env_usize("SCALE_TARGETS", 20).max(1);
    let cp = support::control_plane();
    let client = cp.client().await;
    let version = client.apiserver_version().await.map(|v| v.git_version).unwrap_or_default();
    println!("routerpolicy scale benchmark: {policies} policies over {targets} targets (kube-apiserver {version})");

    // Expected ConfigMaps: what the operator must produce.
    let ns_base = cp.namespace(&client, "bench-baseline").await;
    let ns = cp.namespace(&client, "bench").await;
    let mut expected: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut baseline_expected: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for i in 0..policies {
        let t = i % targets;
        let s: routerpolicy::api::ImageVariationPolicySpec = serde_json::from_value(spec(t, i as i64)).expect("spec");
        let doc = render_policy(&ns, &format!("p{i}"), &s);
        expected.entry(format!("gw-{t}")).or_default().insert(doc.key, doc.json.clone());
        let base = render_policy(&ns_base, &format!("p{i}"), &s);
        baseline_expected.entry(format!("gw-{t}")).or_default().insert(base.key, base.json);
    }

    // 1. Baseline: kubectl apply --server-side of the pre-rendered ConfigMaps.
    let mut yaml = String::new();
    for (name, data) in &baseline_expected {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns_base, "labels": {"app.kubernetes.io/managed-by": "routerpolicy"}}, "data": data});
        yaml.push_str("---\n");
        yaml.push_str(&serde_norway::to_string(&cm).expect("yaml"));
    }
    let started = Instant::now();
    let out = cp.kubectl_with(
        &cp.kubeconfig,
        &["apply", "--server-side", "--field-manager=baseline", "-f", "-"],
        Some(&yaml),
    );
    assert!(out.status.success(), "baseline apply failed: {}", String::from_utf8_lossy(&out.stderr));
    let baseline = started.elapsed();
    println!(
        "baseline  kubectl apply --server-side of {targets} pre-rendered ConfigMaps: {:>8.2} s",
        baseline.as_secs_f64()
    );

    // 2. Cold start: create the policies first, then start the operator.
    let api: Api<ImageVariationPolicy> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    futures::stream::iter(0..policies)
        .map(|i| {
            let api = api.clone();
            let ns = ns.clone();
            async move {
                let body = json!({"apiVersion": "routerpolicy.io/v1alpha1", "kind": "ImageVariationPolicy", "metadata": {"name": format!("p{i}"), "namespace": ns}, "spec": spec(i % targets, i as i64)});
                api.patch(&format!("p{i}"), &PatchParams::apply("bench"), &Patch::Apply(&body)).await.expect("create policy");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    println!(
        "setup     creating {policies} policies through the API:                {:>8.2} s",
        started.elapsed().as_secs_f64()
    );

    let pid = std::process::id().to_string();
    let rss_before = rss_kib(&pid);
    let metrics = Arc::new(Metrics::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let operator = tokio::spawn(controller::run(
        client.clone(),
        Settings { namespaces: vec![ns.clone()], ..Settings::default() },
        metrics.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let deadline = Instant::now() + Duration::from_secs(1800);
    while !converged(&client, &ns, &expected).await {
        assert!(Instant::now() < deadline, "no convergence within 30 minutes");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let cold = started.elapsed();
    let writes = metrics.configmap_writes.get();
    let rss_after = rss_kib(&pid);
    let all_ready = || async {
        let list = api.list(&ListParams::default()).await.ok()?;
        let ready = list
            .items
            .iter()
            .filter(|p| {
                p.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        (ready == policies).then_some(())
    };
    while all_ready().await.is_none() {
        assert!(Instant::now() < deadline, "not all Ready within 30 minutes");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ready = started.elapsed();
    println!(
        "operator  cold start to every document in every target:          {:>8.2} s  (ratio to baseline {:.1}x)",
        cold.as_secs_f64(),
        cold.as_secs_f64() / baseline.as_secs_f64()
    );
    println!("operator  cold start to every policy Ready=True (status written):  {:>8.2} s", ready.as_secs_f64());
    println!(
        "operator  ConfigMap writes during cold start:                   {writes:>8}  ({:.2} per target)",
        writes as f64 / targets as f64
    );
    println!(
        "operator  resident memory growth (operator + test client):       {:>8.1} MiB (process RSS {:.1} MiB)",
        (rss_after.saturating_sub(rss_before)) as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );

    // 3. One edit, next to one direct ConfigMap patch.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns_base);
    let mut direct = Vec::new();
    for i in 0..5 {
        let started = Instant::now();
        cms.patch("gw-0", &PatchParams::apply("baseline"), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gw-0"}, "data": {"probe": i.to_string()}})))
            .await
            .expect("direct patch");
        direct.push(started.elapsed());
    }
    let mut edits = Vec::new();
    let target_cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    for round in 0..5i64 {
        let variant = 1000 + round;
        let body = json!({"apiVersion": "routerpolicy.io/v1alpha1", "kind": "ImageVariationPolicy", "metadata": {"name": "p0", "namespace": ns}, "spec": spec(0, variant)});
        let s: routerpolicy::api::ImageVariationPolicySpec = serde_json::from_value(spec(0, variant)).expect("spec");
        let want = render_policy(&ns, "p0", &s).json;
        let key = format!("{ns}.p0.json");
        let started = Instant::now();
        api.patch("p0", &PatchParams::apply("bench"), &Patch::Apply(&body)).await.expect("edit");
        loop {
            let cm = target_cms.get("gw-0").await.expect("cm");
            if cm.data.unwrap_or_default().get(&key) == Some(&want) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        edits.push(started.elapsed());
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let direct = median(&mut direct);
    let edit = median(&mut edits);
    println!(
        "baseline  one direct ConfigMap server-side apply (median of 5):   {:>8.1} ms",
        direct.as_secs_f64() * 1000.0
    );
    println!(
        "operator  one policy edit until its ConfigMap holds it (median):  {:>8.1} ms  (+{:.1} ms over the direct write, ratio {:.1}x)",
        edit.as_secs_f64() * 1000.0,
        (edit.as_secs_f64() - direct.as_secs_f64()) * 1000.0,
        edit.as_secs_f64() / direct.as_secs_f64()
    );
    let _ = stop.send(());
    let _ = operator.await;
}
