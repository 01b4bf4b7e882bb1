//! The operational docs are tested: the Argo CD health check runs (real Lua) on statuses the
//! operator's own status code produces, and the Prometheus alerts only use metrics the
//! operator serves.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use mlua::{Lua, LuaSerdeExt};
use routerpolicy::api::{TargetReason, TargetStatus};
use routerpolicy::status::{Observation, compute_status};
use routerpolicy::validate::{Report, Violation};
use serde_json::{Value, json};

fn health(obj: &Value) -> (String, String) {
    let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/argocd/health.lua")).expect("lua");
    let lua = Lua::new();
    lua.globals().set("obj", lua.to_value(obj).expect("to lua")).expect("set obj");
    let hs: mlua::Table = lua.load(&script).eval().expect("health check runs");
    (hs.get("status").expect("status"), hs.get("message").expect("message"))
}

fn policy_with(observation: Observation, generation: i64) -> Value {
    let now = Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).expect("time"));
    let status = compute_status(&observation, None, &now);
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
    }
}

#[test]
fn argocd_health_is_healthy_when_ready() {
    let obs = Observation {
        generation: Some(1),
        report: Report::default(),
        config_hash: Some("h".into()),
        targets: vec![target(true, TargetReason::Synced, "")],
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
    let obs = Observation { generation: Some(3), report, config_hash: None, targets: vec![] };
    let (status, message) = health(&policy_with(obs, 3));
    assert_eq!(status, "Degraded");
    assert!(message.starts_with("ValidationFailed: spec.retry.count: must be less than or equal to 5"), "{message}");
}

#[test]
fn argocd_health_is_degraded_when_a_target_refuses() {
    let obs = Observation {
        generation: Some(1),
        report: Report::default(),
        config_hash: Some("h".into()),
        targets: vec![target(false, TargetReason::RefNotPermitted, "no consent")],
    };
    let (status, message) = health(&policy_with(obs, 1));
    assert_eq!(status, "Degraded");
    assert!(message.starts_with("RefNotPermitted"), "{message}");
}

#[test]
fn argocd_health_is_progressing_while_retrying_or_not_yet_observed() {
    let obs = Observation {
        generation: Some(1),
        report: Report::default(),
        config_hash: Some("h".into()),
        targets: vec![target(false, TargetReason::ApplyFailed, "timeout")],
    };
    assert_eq!(health(&policy_with(obs.clone(), 1)).0, "Progressing");
    let ready = Observation { targets: vec![target(true, TargetReason::Synced, "")], ..obs };
    assert_eq!(health(&policy_with(ready, 2)).0, "Progressing", "an old observedGeneration is not healthy yet");
    assert_eq!(health(&json!({"metadata": {"generation": 1}})).0, "Progressing");
}

#[test]
fn prometheus_alerts_only_use_metrics_the_operator_and_gateway_serve() {
    let metrics = routerpolicy::metrics::Metrics::default();
    metrics.reconciled("success", 0.01);
    metrics.set_ready("ns/p", Some("false"));
    let gateway = routerpolicy::gateway::GatewayMetrics::default();
    let policy = routerpolicy::gateway::PolicyLabels { policy: "ns.p".into() };
    gateway.reload_errors.get_or_create(&policy).inc();
    gateway.upstream_duration.get_or_create(&policy).observe(0.1);
    gateway
        .requests
        .get_or_create(&routerpolicy::gateway::RequestLabels { policy: "ns.p".into(), code: "502".into() })
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
