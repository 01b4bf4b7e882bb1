//! The operational docs are tested: the Argo CD health check runs (real Lua) on statuses the
//! operator's own status code produces, and the Prometheus alerts only use metrics the
//! operator serves.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use mlua::{Lua, LuaSerdeExt};
use routerpolicy::api::{TargetReason, TargetStatus};
use routerpolicy::key::PolicyKey;
use routerpolicy::operator::served::Serve;
use routerpolicy::operator::status::{StatusInput, compute_status};
use routerpolicy::validate::{Findings, Violation};
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
        findings: Findings::default(),
        config_hash: Some("h".into()),
        targets: vec![target(true, TargetReason::Synced, "")],
        serves: vec![],
        rollout: None,
    };
    let (status, message) = health(&policy_with(obs, 1));
    assert_eq!(status, "Healthy");
    assert!(message.contains("1/1"), "{message}");
}

#[test]
fn argocd_health_is_degraded_with_the_field_path_when_invalid() {
    let findings = Findings {
        errors: vec![Violation::new("spec.retry.count", "must be less than or equal to 5")],
        warnings: vec![],
    };
    let obs = StatusInput {
        generation: Some(3),
        findings,
        config_hash: None,
        targets: vec![],
        serves: vec![],
        rollout: None,
    };
    let (status, message) = health(&policy_with(obs, 3));
    assert_eq!(status, "Degraded");
    assert!(message.starts_with("ValidationFailed: spec.retry.count: must be less than or equal to 5"), "{message}");
}

#[test]
fn argocd_health_is_degraded_when_a_target_refuses() {
    let obs = StatusInput {
        generation: Some(1),
        findings: Findings::default(),
        config_hash: Some("h".into()),
        targets: vec![target(false, TargetReason::RefNotPermitted, "no consent")],
        serves: vec![],
        rollout: None,
    };
    let (status, message) = health(&policy_with(obs, 1));
    assert_eq!(status, "Degraded");
    assert!(message.starts_with("RefNotPermitted"), "{message}");
}

#[test]
fn argocd_health_is_progressing_while_retrying_or_not_yet_observed() {
    let obs = StatusInput {
        generation: Some(1),
        findings: Findings::default(),
        config_hash: Some("h".into()),
        targets: vec![target(false, TargetReason::ApplyFailed, "timeout")],
        serves: vec![],
        rollout: None,
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

/// The sample names the operator's and the gateway's /metrics serve, every family populated.
fn served_metric_names() -> std::collections::BTreeSet<String> {
    use routerpolicy::gateway::{GatewayMetrics, PolicyInfoLabels, PolicyLabels, RequestLabels};
    use routerpolicy::operator::metrics::{Metrics, Queue, QueueLabels, Readiness, ReconcileOutcome};
    let metrics = Metrics::default();
    metrics.reconciled(ReconcileOutcome::Success, 0.01);
    metrics.set_ready(&PolicyKey::new("ns", "p"), Some(Readiness::NotReady));
    metrics.pending.get_or_create(&QueueLabels { queue: Queue::Targets }).set(1);
    let gateway = GatewayMetrics::default();
    let policy = PolicyLabels { policy: PolicyKey::new("ns", "p") };
    gateway.reload_errors.get_or_create(&policy).inc();
    gateway.upstream_duration.get_or_create(&policy).observe(0.1);
    gateway.policy_info.get_or_create(&PolicyInfoLabels { policy: PolicyKey::new("ns", "p"), hash: "h".into() }).set(1);
    gateway.requests.get_or_create(&RequestLabels { policy: Some(PolicyKey::new("ns", "p")), code: 502 }).inc();
    let outcome = routerpolicy::gateway::auth::AuthOutcome::Unavailable;
    gateway.auth.get_or_create(&routerpolicy::gateway::metrics::AuthLabels { outcome }).inc();
    let exposition = format!("{}{}", metrics.encode(), gateway.encode());
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `expr` string anywhere in a YAML or JSON document.
fn expressions(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(e) if k == "expr" || k == "query" => out.push(e.clone()),
                    _ => expressions(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| expressions(v, out)),
        _ => {}
    }
}

/// The alerts, the recording rules and the Grafana dashboard use only metrics the binaries
/// serve (histograms by their `_bucket` series, counters by `_total`) and recording rules
/// that the rule file defines.
#[test]
fn alerts_recording_rules_and_dashboard_only_use_metrics_the_binaries_serve() {
    let served = served_metric_names();
    let rules: Value = serde_norway::from_str(&read("charts/routerpolicy/files/prometheus-rules.yaml")).expect("rules");
    assert_eq!(
        read("docs/prometheus-alerts.yaml"),
        read("charts/routerpolicy/files/prometheus-rules.yaml"),
        "one source"
    );
    let groups = rules["groups"].as_array().expect("groups");
    let recorded: Vec<&str> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .filter_map(|r| r["record"].as_str())
        .collect();
    assert!(recorded.len() >= 6, "recording rules for the dashboard's heavy queries");
    let dashboard: Value =
        serde_json::from_str(&read("charts/routerpolicy/files/grafana-dashboard.json")).expect("json");
    let mut exprs = Vec::new();
    expressions(&rules, &mut exprs);
    let from_rules = exprs.len();
    expressions(&dashboard, &mut exprs);
    assert!(
        from_rules >= 15 && exprs.len() > from_rules + 15,
        "{} rule and {} dashboard expressions",
        from_rules,
        exprs.len() - from_rules
    );
    let name = regex::Regex::new(r"routerpolicy[a-zA-Z0-9_:]*").expect("regex");
    let mut checked = 0;
    for expr in &exprs {
        for m in name.find_iter(expr).map(|m| m.as_str()) {
            checked += 1;
            if m.contains(':') {
                assert!(recorded.contains(&m), "`{expr}` uses {m}, which no recording rule defines");
            } else {
                assert!(served.contains(m), "`{expr}` uses {m}, which /metrics does not serve: {served:?}");
            }
        }
    }
    assert!(checked > 30, "{checked} metric names checked");
}

/// Every alert has a runbook_url whose anchor is a section of docs/runbooks.md.
#[test]
fn every_alert_links_a_runbook_section_that_exists() {
    let rules: Value = serde_norway::from_str(&read("charts/routerpolicy/files/prometheus-rules.yaml")).expect("rules");
    let runbooks = read("docs/runbooks.md");
    let sections: Vec<String> =
        runbooks.lines().filter_map(|l| l.strip_prefix("## ")).map(|h| h.trim().to_lowercase()).collect();
    let alerts: Vec<&Value> = rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .filter(|r| r.get("alert").is_some())
        .collect();
    assert!(alerts.len() >= 9, "{} alerts", alerts.len());
    for alert in alerts {
        let name = alert["alert"].as_str().expect("alert name");
        let url = alert["annotations"]["runbook_url"].as_str().unwrap_or_else(|| panic!("{name} has no runbook_url"));
        let (base, anchor) = url.split_once('#').unwrap_or_else(|| panic!("{name}: {url} has no anchor"));
        assert!(base.ends_with("docs/runbooks.md"), "{name}: {url}");
        assert_eq!(anchor, name.to_lowercase(), "{name}: the anchor is the alert's name");
        assert!(sections.contains(&anchor.to_string()), "docs/runbooks.md has no section `## {name}`");
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

/// Below the wings nothing reaches up: the rule book, the target planner and the leaves
/// (every file of `src/` outside `src/operator`, `src/gateway` and the binary) import neither
/// wing, so the arrows of docs/architecture.md run one way without exceptions.
#[test]
fn nothing_below_the_wings_imports_a_wing() {
    fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let below: Vec<_> = files
        .iter()
        .filter(|p| {
            let rel = p.strip_prefix(&src).expect("under src");
            !(rel.starts_with("operator") || rel.starts_with("gateway") || rel == std::path::Path::new("main.rs"))
                && rel != std::path::Path::new("lib.rs")
        })
        .collect();
    assert!(below.iter().any(|p| p.ends_with("target/plan.rs")), "the planner is below the wings");
    for path in below {
        let text = std::fs::read_to_string(path).expect("source");
        for forbidden in ["crate::operator", "crate::gateway"] {
            assert!(!text.contains(forbidden), "{} uses {forbidden}", path.display());
        }
    }
}

/// Every file of the source tree is one git would commit: an ignore rule that catches a source
/// file (a `target/` pattern once hid `src/target/mod.rs`) breaks the clean clone CI builds.
#[test]
fn git_ignores_no_file_of_the_source_tree() {
    let root = env!("CARGO_MANIFEST_DIR");
    if !std::path::Path::new(root).join(".git").exists() {
        // An unpacked source archive has no index to compare against; CI runs from a clone.
        return;
    }
    let out = std::process::Command::new("git")
        .args(["ls-files", "--others", "--ignored", "--exclude-standard", "--"])
        .args(["src", "tests", "benches", "docs", "deploy", "charts", "scripts", "crds", "examples", ".ci"])
        .current_dir(root)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git ls-files: {}", String::from_utf8_lossy(&out.stderr));
    let ignored = String::from_utf8_lossy(&out.stdout);
    assert!(ignored.trim().is_empty(), "git ignores these files of the source tree:\n{ignored}");
}

/// Every document the repository refers to is in it: a `*.md` named in a source, a doc, a
/// manifest or a script resolves (from the repository's root or from the referring file's
/// directory), and nothing cites a specification the repository does not contain.
#[test]
fn every_document_the_repository_refers_to_is_in_it() {
    fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                files(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all: Vec<_> =
        ["README.md", "CHANGELOG.md", "Cargo.toml", "Dockerfile"].iter().map(|f| root.join(f)).collect();
    for dir in ["src", "tests", "benches", "docs", "deploy", "charts", "scripts", "examples", "crds", ".ci"] {
        files(&root.join(dir), &mut all);
    }
    let reference = regex::Regex::new(r"[A-Za-z0-9_./-]+\.md\b").expect("regex");
    let outside = regex::Regex::new(&format!(r"{}{}(\.md|\s*§)", "PROD", "UCT")).expect("regex");
    let mut checked = 0;
    for path in all {
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let here = path.parent().expect("a file has a directory");
        assert!(!outside.is_match(&text), "{} cites a specification that is not in the repository", path.display());
        for m in reference.find_iter(&text).map(|m| m.as_str()).filter(|m| !m.starts_with('/')) {
            let found = root.join(m).exists() || here.join(m).exists();
            assert!(found, "{} refers to {m}, which is not in the repository", path.display());
            checked += 1;
        }
    }
    assert!(checked > 50, "the docs refer to each other ({checked} references found)");
}

#[test]
fn argocd_health_follows_a_rollout_progressing_then_degraded_when_rolled_back() {
    use routerpolicy::api::RolloutStatus;
    use routerpolicy::rollout::Phase;
    let with = |phase: Phase, synced: bool, reason: TargetReason| StatusInput {
        generation: Some(2),
        findings: Findings::default(),
        config_hash: Some("new".into()),
        targets: vec![target(synced, reason, "")],
        serves: vec![],
        rollout: Some(RolloutStatus {
            phase,
            step: 1,
            weight: 20,
            message: "rolled back: failure ratio 0.900; the most common orq answer was 404".into(),
            ..Default::default()
        }),
    };
    let (status, message) = health(&policy_with(with(Phase::Progressing, true, TargetReason::Synced), 2));
    assert_eq!(status, "Progressing");
    assert!(message.starts_with("RolloutProgressing: "), "{message}");
    let (status, message) = health(&policy_with(with(Phase::RolledBack, false, TargetReason::RolledBack), 2));
    assert_eq!(status, "Degraded");
    assert!(message.starts_with("RolledBack: ") && message.contains("404"), "{message}");
    assert_eq!(health(&policy_with(with(Phase::Succeeded, true, TargetReason::Synced), 2)).0, "Healthy");
}
