//! Flux's `wait: true` and Argo CD's generic health read a policy through kstatus
//! (sigs.k8s.io/cli-utils `pkg/kstatus`), which looks at `Reconciling`, `Stalled` and
//! `observedGeneration`, not at `Ready`. This runs the real library (built from the Go module
//! proxy by tests/control-plane/build-kstatus.sh) on the statuses the operator computes.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use routerpolicy::api::{RolloutStatus, TargetReason, TargetStatus};
use routerpolicy::operator::served::Serve;
use routerpolicy::operator::status::{StatusInput, compute_status};
use routerpolicy::rollout::Phase;
use routerpolicy::validate::{Findings, Violation};
use serde_json::json;

/// The kstatus command: `ROUTERPOLICY_KSTATUS`, else built (once, cached under target/tools).
fn kstatus() -> std::path::PathBuf {
    support::tool("ROUTERPOLICY_KSTATUS", "tests/control-plane/build-kstatus.sh")
}

fn target(synced: bool, reason: TargetReason) -> TargetStatus {
    TargetStatus {
        namespace: "gw".into(),
        name: "policies".into(),
        key: "team.p.json".into(),
        synced,
        reason,
        last_good_kept: false,
        message: String::new(),
        served_replicas: None,
        reporting_replicas: None,
    }
}

fn input(findings: Findings, synced: bool, reason: TargetReason, serve: Serve) -> StatusInput {
    StatusInput {
        generation: Some(2),
        findings,
        config_hash: Some("abc".into()),
        targets: vec![target(synced, reason)],
        serves: vec![serve],
        rollout: None,
    }
}

/// A policy whose change is rolling out (`Progressing`) or was rolled back.
fn rolling(phase: Phase) -> StatusInput {
    let (synced, reason) = match phase {
        Phase::RolledBack => (false, TargetReason::RolledBack),
        _ => (true, TargetReason::Synced),
    };
    let rollout = RolloutStatus {
        phase,
        generation: 2,
        step: 1,
        weight: 20,
        stable_hash: "old".into(),
        canary_hash: "abc".into(),
        message: "rolled back: failure ratio 0.900 (18 of 20 calls); the most common orq answer was 404".into(),
        ..Default::default()
    };
    StatusInput { rollout: Some(rollout), ..input(Findings::default(), synced, reason, Serve::Served { replicas: 2 }) }
}

/// What kstatus says of a policy at `generation` whose status the operator computed.
fn kstatus_of(cases: &[(&str, StatusInput, i64)]) -> Vec<(String, String)> {
    let now = Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).expect("time"));
    let mut stdin = String::new();
    for (_, input, generation) in cases {
        let status = compute_status(input, None, &now);
        let object = json!({"apiVersion": "routerpolicy.io/v1alpha1", "kind": "ImageVariationPolicy",
            "metadata": {"name": "p", "namespace": "team", "generation": generation}, "status": status});
        stdin.push_str(&object.to_string());
        stdin.push('\n');
    }
    let mut child = Command::new(kstatus()).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("run kstatus");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("kstatus output");
    assert!(out.status.success(), "kstatus failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            (
                v["status"].as_str().unwrap_or_default().to_string(),
                v["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn kstatus_waits_for_gateway_replicas_and_fails_fast_on_a_refusing_or_stale_one() {
    let invalid = Findings {
        errors: vec![Violation::new("spec.retry.count", "must be less than or equal to 5")],
        warnings: vec![],
    };
    let ok = || Findings::default();
    let cases = [
        (
            "served by every replica",
            input(ok(), true, TargetReason::Synced, Serve::Served { replicas: 3 }),
            2,
            "Current",
        ),
        ("no gateway reports", input(ok(), true, TargetReason::Synced, Serve::NoReports), 2, "Current"),
        (
            "replicas still loading",
            input(ok(), true, TargetReason::Synced, Serve::Pending { replicas: 3, serving: 1, since_ms: 0 }),
            2,
            "InProgress",
        ),
        (
            "a replica refuses",
            input(
                ok(),
                true,
                TargetReason::Synced,
                Serve::Rejected { replicas: 3, serving: 2, replica: "gw-1".into(), message: "too large".into() },
            ),
            2,
            "Failed",
        ),
        (
            "a replica is stale",
            input(ok(), true, TargetReason::Synced, Serve::Stale { replicas: 3, serving: 2, replica: "gw-2".into() }),
            2,
            "Failed",
        ),
        ("an invalid spec", input(invalid, false, TargetReason::ValidationFailed, Serve::NoReports), 2, "Failed"),
        ("a write being retried", input(ok(), false, TargetReason::ApplyFailed, Serve::NoReports), 2, "InProgress"),
        ("a newer generation", input(ok(), true, TargetReason::Synced, Serve::Served { replicas: 3 }), 3, "InProgress"),
        ("a change rolling out", rolling(Phase::Progressing), 2, "InProgress"),
        ("a change rolled back", rolling(Phase::RolledBack), 2, "Failed"),
        ("a change rolled out", rolling(Phase::Succeeded), 2, "Current"),
    ];
    let inputs: Vec<(&str, StatusInput, i64)> = cases.iter().map(|(n, i, g, _)| (*n, i.clone(), *g)).collect();
    let results = kstatus_of(&inputs);
    assert_eq!(results.len(), cases.len());
    for ((name, _, _, want), (got, message)) in cases.iter().zip(&results) {
        assert_eq!(got, want, "{name}: kstatus says {got} ({message})");
    }
    assert!(results[2].1.contains("waiting for the gateway replicas"), "{:?}", results[2]);
    assert!(results[3].1.contains("gw-1"), "Flux shows which replica refuses: {:?}", results[3]);
    assert!(results[8].1.contains("20% of calls"), "Flux shows the step: {:?}", results[8]);
    assert!(results[9].1.contains("404"), "Flux shows why it was rolled back: {:?}", results[9]);
}
