//! The operational docs are tested: the Argo CD health check runs (real Lua) on statuses the
//! operator's own status code produces, and the Prometheus alerts only use metrics the
//! operator serves.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use mlua::{Lua, LuaSerdeExt};
use routerpolicy::api::{TargetReason, TargetStatus};
use routerpolicy::key::PolicyKey;
use routerpolicy::operator::served::Serve;
use routerpolicy::operator::status::{StatusInput, compute_status};
use routerpolicy::validate::{Report, Violation};
use serde_json::{Value, json};

fn health(obj: &Value) -> (String, String) {
    let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/argocd/health.lua")).expect("lua");
    let lua = Lua::new();
    lua.globals().set("obj", lua.to_value(obj).expect("to lua")).expect("set obj");
    let hs: mlua::Table = lua.load(&script).eval().expect("health check runs");
    (hs.get("status").expect("status"), hs.get("message").expect("message"))
}

fn policy_with(input: StatusInput, generation: i64) -> Value {
    let now = Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).expect("time"));
    let status = compute_status(&input, None, &now);
    json!({"metadata": {"name": "p", "generation": generation}, "status": status})
}

fn target(synced: bool, reason: TargetReason, message: &str) -> TargetStatus {
    TargetStatus {
        namespace: "ns".into(),
        name: "gw".into(),
        key: "ns.p.json".into(),
        synced,
        reason,
        last_good_kept: false,
        message: message.into(),
        served_replicas: None,
        reporting_replicas: None,
    }
}

#[test]
fn argocd_health_is_healthy_when_ready() {
    let obs = StatusInput {
        generation: Some(1),
        report: Report::default(),
        config_hash: Some("h".into()),
        targets: vec![target(true, TargetReason::Synced, "")],
        serves: vec![],
    };
    let (status, message) = health(&policy_with(obs, 1));
    assert_eq!(status, "Healthy");
    assert!(message.contains("1/1"), "{message}");
}

#[test]
fn argocd_health_is_degraded_with_the_field_path_when_invalid() {
    let report = Report {
        errors: vec![Violation::new("spec.retry.count", "must be less than or equal to 5")],
        warnings: vec![],
    };
    let obs = StatusInput { generation: Some(3), report, config_hash: None, targets: vec![], serves: vec![] };
    let (status, message) = health(&policy_with(obs, 3));
    assert_eq!(status, "Degraded");
    assert!(message.starts_with("ValidationFailed: spec.retry.count: must be less than or equal to 5"), "{message}");
}

#[test]
fn argocd_health_is_degraded_when_a_target_refuses() {
    let obs = StatusInput {
        generation: Some(1),
        report: Report::default(),
        config_hash: Some("h".into()),
        targets: vec![target(false, TargetReason::RefNotPermitted, "no consent")],
        serves: vec![],
    };
    let (status, message) = health(&policy_with(obs, 1));
    assert_eq!(status, "Degraded");
    assert!(message.starts_with("RefNotPermitted"), "{message}");
}

#[test]
fn argocd_health_is_progressing_while_retrying_or_not_yet_observed() {
    let obs = StatusInput {
        generation: Some(1),
        report: Report::default(),
        config_hash: Some("h".into()),
        targets: vec![target(false, TargetReason::ApplyFailed, "timeout")],
        serves: vec![],
    };
    assert_eq!(health(&policy_with(obs.clone(), 1)).0, "Progressing");
    let ready = StatusInput { targets: vec![target(true, TargetReason::Synced, "")], ..obs.clone() };
    assert_eq!(health(&policy_with(ready, 2)).0, "Progressing", "an old observedGeneration is not healthy yet");
    assert_eq!(health(&json!({"metadata": {"generation": 1}})).0, "Progressing");
    let pending = StatusInput {
        targets: vec![target(true, TargetReason::Synced, "")],
        serves: vec![Serve::Pending { replicas: 2, serving: 1, since_ms: 0 }],
        ..obs
    };
    let (status, message) = health(&policy_with(pending, 1));
    assert_eq!(status, "Progressing", "waiting for gateway replicas");
    assert!(message.starts_with("ServePending"), "{message}");
}

#[test]
fn prometheus_alerts_only_use_metrics_the_operator_and_gateway_serve() {
    let metrics = routerpolicy::operator::metrics::Metrics::default();
    metrics.reconciled(routerpolicy::operator::metrics::ReconcileOutcome::Success, 0.01);
    metrics.set_ready(&PolicyKey::new("ns", "p"), Some(routerpolicy::operator::metrics::Readiness::NotReady));
    let gateway = routerpolicy::gateway::GatewayMetrics::default();
    let policy = routerpolicy::gateway::PolicyLabels { policy: PolicyKey::new("ns", "p") };
    gateway.reload_errors.get_or_create(&policy).inc();
    gateway.upstream_duration.get_or_create(&policy).observe(0.1);
    gateway
        .requests
        .get_or_create(&routerpolicy::gateway::RequestLabels { policy: Some(PolicyKey::new("ns", "p")), code: 502 })
        .inc();
    let exposition = format!("{}{}", metrics.encode(), gateway.encode());
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/prometheus-alerts.yaml")).expect("alerts");
    let alerts: Value = serde_norway::from_str(&text).expect("yaml");
    let rules = alerts["spec"]["groups"][0]["rules"].as_array().expect("rules");
    assert!(!rules.is_empty());
    let name = regex::Regex::new(r"routerpolicy_[a-z_]+").expect("regex");
    for rule in rules {
        let expr = rule["expr"].as_str().expect("expr");
        for m in name.find_iter(expr) {
            assert!(
                exposition.contains(m.as_str()),
                "alert {} uses {} which /metrics does not serve",
                rule["alert"],
                m.as_str()
            );
        }
    }
}

/// Every path that docs/architecture.md names (`src/…`, `deploy/…`, `scripts/…`, …) exists.
#[test]
fn the_architecture_page_names_only_files_that_exist() {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(format!("{root}/docs/architecture.md")).expect("docs/architecture.md");
    let path = regex::Regex::new(r"`((?:src|tests|deploy|scripts|docs|examples|crds|charts)/[A-Za-z0-9_./-]+)`")
        .expect("regex");
    let named: Vec<&str> = path.captures_iter(&text).filter_map(|c| c.get(1)).map(|m| m.as_str()).collect();
    assert!(named.len() > 30, "the page names the files of both wings ({} found)", named.len());
    for file in named {
        assert!(
            std::path::Path::new(root).join(file).exists(),
            "docs/architecture.md names {file}, which does not exist"
        );
    }
    for wing in ["src/operator", "src/gateway"] {
        for entry in std::fs::read_dir(format!("{root}/{wing}")).expect("wing") {
            let name = entry.expect("entry").file_name().to_string_lossy().to_string();
            if name != "mod.rs" {
                assert!(text.contains(&format!("{wing}/{name}")), "docs/architecture.md does not place {wing}/{name}");
            }
        }
    }
}

/// The gateway wing uses the leaves and its own files, never the operator's.
#[test]
fn the_gateway_imports_nothing_of_the_operator() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/gateway");
    for entry in std::fs::read_dir(dir).expect("src/gateway") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("source");
        for forbidden in ["crate::operator", "routerpolicy::operator", "super::super::operator"] {
            assert!(!text.contains(forbidden), "{} uses {forbidden}", path.display());
        }
    }
}
