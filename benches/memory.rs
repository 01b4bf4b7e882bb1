//! What each of the operator's in-memory structures costs per policy: the index, the targets'
//! views, the outcomes, the status memos, the Ready metric, a full status queue and the gateway
//! replicas' reports (3 per target), built in this process from the same objects the scale
//! benchmark creates, with a counting allocator (bytes requested and still held after each
//! step, not RSS). Prints a table; asserts nothing.
//!
//! ```sh
//! cargo bench --bench memory                 # 100,000 policies over 1,000 targets
//! MEMORY_POLICIES=10000 MEMORY_TARGETS=100 MEMORY_REPORTS=3 cargo bench --bench memory
//! ```

use std::alloc::System;

use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

use routerpolicy::key::{PolicyKey, TargetKey};
use routerpolicy::operator::boundary::Boundary;
use routerpolicy::operator::decode::{WatchedPolicy, decode};
use routerpolicy::operator::index::Index;
use routerpolicy::operator::metrics::{Metrics, Readiness};
use routerpolicy::operator::queue::WorkQueue;
use routerpolicy::operator::served::{Replica, ReplicaKey};
use routerpolicy::operator::status::compute_status;
use routerpolicy::target::configmap::{ExistingTarget, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use routerpolicy::target::plan::plan_target;
use serde_json::json;

#[path = "scale/spec.rs"]
mod spec;

/// The system allocator, counting.
#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes requested and not yet freed, and how many allocations hold them.
fn held() -> (isize, isize) {
    let stats = ALLOCATOR.stats();
    (
        stats.bytes_allocated as isize - stats.bytes_deallocated as isize,
        stats.allocations as isize - stats.deallocations as isize,
    )
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Policy `i` as the API server's watch sends it (the scale benchmark's spec, a real-sized uid,
/// resourceVersion and managedFields entry).
fn watched(ns: &str, i: usize, targets: usize) -> WatchedPolicy {
    let object = json!({
        "apiVersion": "routerpolicy.io/v1alpha1", "kind": "ImageVariationPolicy",
        "metadata": {"name": format!("p{i}"), "namespace": ns, "uid": format!("{:08x}-5b1c-4d2e-9f3a-{:012x}", i, i),
                     "resourceVersion": (1_000_000 + i).to_string(), "generation": 1,
                     "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]},
        "spec": spec::spec(i % targets, i as i64)
    });
    serde_json::from_str(&object.to_string()).expect("a watched policy")
}

struct Table {
    policies: usize,
    last: (isize, isize),
    rows: Vec<(String, (isize, isize))>,
}

impl Table {
    fn step(&mut self, what: &str) {
        let now = held();
        self.rows.push((what.to_string(), (now.0 - self.last.0, now.1 - self.last.1)));
        self.last = now;
    }

    fn print(&self) {
        println!("| structure | held | per policy | allocations per policy |");
        println!("|---|---|---|---|");
        let n = self.policies as f64;
        let row = |what: &str, (bytes, count): (isize, isize)| {
            println!(
                "| {what} | {:.1} MiB | {:.0} B | {:.1} |",
                bytes as f64 / 1048576.0,
                bytes as f64 / n,
                count as f64 / n
            );
        };
        for (what, held) in &self.rows {
            row(what, *held);
        }
        let total = self.rows.iter().fold((0, 0), |(b, c), (_, (rb, rc))| (b + rb, c + rc));
        row("total", total);
    }
}

fn main() {
    let policies = env_usize("MEMORY_POLICIES", 100_000);
    let targets = env_usize("MEMORY_TARGETS", 1_000).max(1);
    let ns = "bench-memory";
    println!(
        "the operator's structures at {policies} policies over {targets} targets (bytes held, counting allocator)"
    );
    let mut table = Table { policies, last: held(), rows: Vec::new() };
    let mut index = Index::new(Boundary::new(&[]));
    for i in 0..policies {
        index.apply_policy(decode(watched(ns, i, targets)));
    }
    table.step("policy entries (decoded, compiled: document, hash, findings, targets) and each target's wanted-by set");
    let all: Vec<TargetKey> = (0..targets).map(|t| TargetKey::new(ns, format!("gw-{t}"))).collect();
    for (t, target) in all.iter().enumerate() {
        let input = index.plan_input(target);
        let plan = plan_target(target, None, &input.policies);
        let live = ExistingTarget {
            labels: [(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string())].into(),
            owned: plan.apply.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into())).collect(),
            ..Default::default()
        };
        index.wrote_target(target, live, Some((2_000_000 + t).to_string()));
    }
    table.step("targets' views of their ConfigMaps (each owned key and value)");
    for target in &all {
        let input = index.plan_input(target);
        let live = index.target(target).and_then(|t| t.live.clone());
        let plan = plan_target(target, live.as_ref(), &input.policies);
        index.record_plan(target, &input, &plan, None, 0);
    }
    table.step("outcomes and where each document landed");
    let keys: Vec<PolicyKey> = (0..policies).map(|i| PolicyKey::new(ns, format!("p{i}"))).collect();
    table.step("(the list of keys this bench walks; not the operator's)");
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    for key in &keys {
        if let Some(input) = index.status_input(key, 0, 60_000) {
            let status = compute_status(&input, None, &now);
            index.wrote_status(key, &status);
        }
    }
    table.step("status memos (what a status is compared with)");
    let metrics = Metrics::default();
    for key in &keys {
        metrics.set_ready(key, Some(Readiness::Ready));
    }
    table.step("the Ready metric's per-policy map");
    let queue: WorkQueue<PolicyKey> = WorkQueue::new(prometheus_client::metrics::gauge::Gauge::default());
    queue.add_all(keys.iter().cloned());
    table.step("the status queue holding every policy (a cold start's peak)");
    let reports = env_usize("MEMORY_REPORTS", 3);
    for (t, target) in all.iter().enumerate() {
        for r in 0..reports {
            let name = format!("routerpolicy-gateway-gw-{t}-{r:05}-7d9c8b6f5-x2k4q");
            let replica = Replica {
                identity: name.clone(),
                target: target.clone(),
                revision: (2_000_000 + t) as u64,
                rejected: Default::default(),
                expires_ms: i64::MAX,
                calls: Default::default(),
                volume: false,
            };
            std::hint::black_box(index.apply_report(ReplicaKey { namespace: ns.to_string(), name }, replica));
        }
    }
    table.step(&format!("report Leases of {reports} gateway replicas per target"));
    table.print();
    if let Some((_, (bytes, _))) = table.rows.last()
        && reports > 0
    {
        let leases = reports * targets;
        println!(
            "report Leases: {leases}, {:.0} B each, {:.2} MiB in all",
            *bytes as f64 / leases as f64,
            *bytes as f64 / 1048576.0
        );
    }
    std::hint::black_box((&index, &metrics, &queue));
}
