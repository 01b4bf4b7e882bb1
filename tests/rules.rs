//! The rule book, rule by rule: for each rule of docs/reference.md one value that is accepted and one
//! that is refused (with its field path), through both the Rust rules and the offline schema
//! check; the semantic warnings; and property tests (no panics, render round-trips).

use proptest::prelude::*;
use routerpolicy::api::ImageVariationPolicySpec;
use routerpolicy::manifests::{Document, Origin, check_document};
use routerpolicy::render::{OrqConfig, render_policy};
use routerpolicy::validate::validate_spec;
use serde_json::{Value, json};

/// A valid base spec; each case merges a fragment into it.
fn spec_with(fragment: Value) -> Value {
    let mut spec = json!({"targetRefs": [{"name": "gw"}]});
    if let (Value::Object(base), Value::Object(extra)) = (&mut spec, fragment) {
        base.extend(extra);
    }
    spec
}

fn manifest(spec: Value) -> Value {
    json!({
        "apiVersion": "routerpolicy.io/v1alpha1",
        "kind": "ImageVariationPolicy",
        "metadata": {"name": "p", "namespace": "team-a"},
        "spec": spec,
    })
}

/// Errors from the full offline check (schema + Rust rules).
fn offline_errors(spec: Value) -> Vec<String> {
    let schema = routerpolicy::crd::openapi_schema();
    let doc = Document::from_value(Origin { file: "t".into(), document: 1 }, manifest(spec));
    check_document(&doc, &schema, "default").findings.errors.iter().map(|v| v.path.clone()).collect()
}

/// Errors from the Rust rules alone (what the reconcile loop checks), when the spec parses.
fn rust_errors(spec: Value) -> Option<Vec<String>> {
    let spec: ImageVariationPolicySpec = serde_json::from_value(spec).ok()?;
    Some(validate_spec(&spec, "team-a").errors.into_iter().map(|v| v.path).collect())
}

fn warnings(spec: Value) -> Vec<String> {
    let spec: ImageVariationPolicySpec = serde_json::from_value(spec).expect("spec parses");
    validate_spec(&spec, "team-a").warnings.into_iter().map(|v| v.to_string()).collect()
}

struct Case {
    rule: &'static str,
    accept: Value,
    reject: Value,
    path: &'static str,
}

fn cases() -> Vec<Case> {
    let models = |n: usize| (0..n).map(|i| json!({"model": format!("openai/m{i}")})).collect::<Vec<_>>();
    vec![
        Case {
            rule: "targetRefs 1..16 (min)",
            accept: json!({"targetRefs": [{"name": "gw"}]}),
            reject: json!({"targetRefs": []}),
            path: "spec.targetRefs",
        },
        Case {
            rule: "targetRefs 1..16 (max)",
            accept: json!({"targetRefs": (0..16).map(|i| json!({"name": format!("gw{i}")})).collect::<Vec<_>>()}),
            reject: json!({"targetRefs": (0..17).map(|i| json!({"name": format!("gw{i}")})).collect::<Vec<_>>()}),
            path: "spec.targetRefs",
        },
        Case {
            rule: "targetRefs[].name DNS-1123 subdomain",
            accept: json!({"targetRefs": [{"name": "gw.policies-1"}]}),
            reject: json!({"targetRefs": [{"name": "GW"}]}),
            path: "spec.targetRefs[0].name",
        },
        Case {
            rule: "targetRefs[].namespace DNS-1123 label",
            accept: json!({"targetRefs": [{"name": "gw", "namespace": "gateway-1"}]}),
            reject: json!({"targetRefs": [{"name": "gw", "namespace": "gate.way"}]}),
            path: "spec.targetRefs[0].namespace",
        },
        Case {
            rule: "targetRefs unique (namespace, name)",
            accept: json!({"targetRefs": [{"name": "gw"}, {"name": "gw", "namespace": "other"}]}),
            reject: json!({"targetRefs": [{"name": "gw"}, {"name": "gw", "namespace": "team-a"}]}),
            path: "spec.targetRefs",
        },
        Case {
            rule: "name 1..128",
            accept: json!({"name": "n".repeat(128)}),
            reject: json!({"name": "n".repeat(129)}),
            path: "spec.name",
        },
        Case {
            rule: "name no control characters",
            accept: json!({"name": "avatar variations é"}),
            reject: json!({"name": "tab\there"}),
            path: "spec.name",
        },
        Case {
            rule: "retry.count >= 1",
            accept: json!({"retry": {"count": 1}}),
            reject: json!({"retry": {"count": 0}}),
            path: "spec.retry.count",
        },
        Case {
            rule: "retry.count <= 5",
            accept: json!({"retry": {"count": 5}}),
            reject: json!({"retry": {"count": 6}}),
            path: "spec.retry.count",
        },
        Case {
            rule: "retry.onCodes 1..16 (min)",
            accept: json!({"retry": {"onCodes": [429]}}),
            reject: json!({"retry": {"onCodes": []}}),
            path: "spec.retry.onCodes",
        },
        Case {
            rule: "retry.onCodes 1..16 (max)",
            accept: json!({"retry": {"onCodes": (500..516).collect::<Vec<_>>()}}),
            reject: json!({"retry": {"onCodes": (500..517).collect::<Vec<_>>()}}),
            path: "spec.retry.onCodes",
        },
        Case {
            rule: "retry.onCodes >= 400",
            accept: json!({"retry": {"onCodes": [400]}}),
            reject: json!({"retry": {"onCodes": [399]}}),
            path: "spec.retry.onCodes[0]",
        },
        Case {
            rule: "retry.onCodes <= 599",
            accept: json!({"retry": {"onCodes": [599]}}),
            reject: json!({"retry": {"onCodes": [600]}}),
            path: "spec.retry.onCodes[0]",
        },
        Case {
            rule: "retry.onCodes unique",
            accept: json!({"retry": {"onCodes": [500, 502]}}),
            reject: json!({"retry": {"onCodes": [500, 500]}}),
            path: "spec.retry.onCodes[1]",
        },
        Case {
            rule: "fallbacks 0..10",
            accept: json!({"fallbacks": models(10)}),
            reject: json!({"fallbacks": models(11)}),
            path: "spec.fallbacks",
        },
        Case {
            rule: "fallbacks unique",
            accept: json!({"fallbacks": [{"model": "openai/a"}, {"model": "openai/b"}]}),
            reject: json!({"fallbacks": [{"model": "openai/a"}, {"model": "openai/a"}]}),
            path: "spec.fallbacks[1]",
        },
        Case {
            rule: "model provider/model",
            accept: json!({"fallbacks": [{"model": "aws-bedrock/anthropic.claude-3:v1/x_y"}]}),
            reject: json!({"fallbacks": [{"model": "Openai/gpt-4o"}]}),
            path: "spec.fallbacks[0].model",
        },
        Case {
            rule: "model 1..256",
            accept: json!({"fallbacks": [{"model": format!("openai/{}", "m".repeat(249))}]}),
            reject: json!({"fallbacks": [{"model": format!("openai/{}", "m".repeat(250))}]}),
            path: "spec.fallbacks[0].model",
        },
        Case {
            rule: "prompt.id characters",
            accept: json!({"prompt": {"id": "prompt_01-AZ", "version": "latest"}}),
            reject: json!({"prompt": {"id": "prompt.01", "version": "latest"}}),
            path: "spec.prompt.id",
        },
        Case {
            rule: "prompt.id 1..128",
            accept: json!({"prompt": {"id": "p".repeat(128), "version": "latest"}}),
            reject: json!({"prompt": {"id": "p".repeat(129), "version": "latest"}}),
            path: "spec.prompt.id",
        },
        Case {
            rule: "prompt.id required",
            accept: json!({"prompt": {"id": "p", "version": "latest"}}),
            reject: json!({"prompt": {"version": "latest"}}),
            path: "spec.prompt.id",
        },
        Case {
            rule: "prompt.version latest",
            accept: json!({"prompt": {"id": "p", "version": "latest"}}),
            reject: json!({"prompt": {"id": "p", "version": "1"}}),
            path: "spec.prompt.version",
        },
        Case {
            rule: "identity.id required",
            accept: json!({"identity": {"id": "u"}}),
            reject: json!({"identity": {"email": "a@b.co"}}),
            path: "spec.identity.id",
        },
        Case {
            rule: "identity.id 1..128",
            accept: json!({"identity": {"id": "i".repeat(128)}}),
            reject: json!({"identity": {"id": ""}}),
            path: "spec.identity.id",
        },
        Case {
            rule: "identity.displayName 1..256",
            accept: json!({"identity": {"id": "u", "displayName": "d".repeat(256)}}),
            reject: json!({"identity": {"id": "u", "displayName": "d".repeat(257)}}),
            path: "spec.identity.displayName",
        },
        Case {
            rule: "identity.email valid",
            accept: json!({"identity": {"id": "u", "email": "jane.doe+ai@mail.example.com"}}),
            reject: json!({"identity": {"id": "u", "email": "jane@localhost"}}),
            path: "spec.identity.email",
        },
        Case {
            rule: "identity.logoUrl http(s)",
            accept: json!({"identity": {"id": "u", "logoUrl": "http://cdn.example.com/a.png"}}),
            reject: json!({"identity": {"id": "u", "logoUrl": "javascript:alert(1)"}}),
            path: "spec.identity.logoUrl",
        },
        Case {
            rule: "identity.logoUrl absolute",
            accept: json!({"identity": {"id": "u", "logoUrl": "https://example.com"}}),
            reject: json!({"identity": {"id": "u", "logoUrl": "https:///nohost"}}),
            path: "spec.identity.logoUrl",
        },
        Case {
            rule: "identity.tags 0..32",
            accept: json!({"identity": {"id": "u", "tags": (0..32).map(|i| format!("t{i}")).collect::<Vec<_>>()}}),
            reject: json!({"identity": {"id": "u", "tags": (0..33).map(|i| format!("t{i}")).collect::<Vec<_>>()}}),
            path: "spec.identity.tags",
        },
        Case {
            rule: "identity.tags[] 1..64",
            accept: json!({"identity": {"id": "u", "tags": ["t".repeat(64)]}}),
            reject: json!({"identity": {"id": "u", "tags": ["t".repeat(65)]}}),
            path: "spec.identity.tags[0]",
        },
        Case {
            rule: "identity.tags unique",
            accept: json!({"identity": {"id": "u", "tags": ["a", "b"]}}),
            reject: json!({"identity": {"id": "u", "tags": ["a", "a"]}}),
            path: "spec.identity.tags[1]",
        },
        Case {
            rule: "identity.metadata 0..16",
            accept: json!({"identity": {"id": "u", "metadata": vec![json!({"k": "v"}); 16]}}),
            reject: json!({"identity": {"id": "u", "metadata": vec![json!({"k": "v"}); 17]}}),
            path: "spec.identity.metadata",
        },
        Case {
            rule: "identity.metadata string values",
            accept: json!({"identity": {"id": "u", "metadata": [{"level": "3"}]}}),
            reject: json!({"identity": {"id": "u", "metadata": [{"level": 3}]}}),
            path: "spec.identity.metadata[0].level",
        },
        Case {
            rule: "identity.metadata at most 32 entries per map",
            accept: json!({"identity": {"id": "u", "metadata": [entries(32)]}}),
            reject: json!({"identity": {"id": "u", "metadata": [entries(33)]}}),
            path: "spec.identity.metadata[0]",
        },
        Case {
            rule: "identity.metadata keys 1..128",
            accept: json!({"identity": {"id": "u", "metadata": [{"k".repeat(128): "v"}]}}),
            reject: json!({"identity": {"id": "u", "metadata": [{"k".repeat(129): "v"}]}}),
            path: "spec.identity.metadata[0]",
        },
        Case {
            rule: "identity.metadata empty key",
            accept: json!({"identity": {"id": "u", "metadata": [{"k": "v"}]}}),
            reject: json!({"identity": {"id": "u", "metadata": [{"": "v"}]}}),
            path: "spec.identity.metadata[0]",
        },
        Case {
            rule: "identity.metadata values at most 1024",
            accept: json!({"identity": {"id": "u", "metadata": [{"k": "v".repeat(1024)}]}}),
            reject: json!({"identity": {"id": "u", "metadata": [{"k": "v".repeat(1025)}]}}),
            path: "spec.identity.metadata[0].k",
        },
        Case {
            rule: "contact same shape as identity",
            accept: json!({"contact": {"id": "u", "email": "a@b.co"}}),
            reject: json!({"contact": {"id": "u", "email": "nope"}}),
            path: "spec.contact.email",
        },
        Case {
            rule: "identity xor contact",
            accept: json!({"identity": {"id": "u"}}),
            reject: json!({"identity": {"id": "u"}, "contact": {"id": "u"}}),
            path: "spec.contact",
        },
        Case {
            rule: "cache.type required",
            accept: json!({"cache": {"type": "exact_match"}}),
            reject: json!({"cache": {"ttl": 10}}),
            path: "spec.cache.type",
        },
        Case {
            rule: "cache.type exact_match",
            accept: json!({"cache": {"type": "exact_match"}}),
            reject: json!({"cache": {"type": "semantic"}}),
            path: "spec.cache.type",
        },
        Case {
            rule: "cache.ttl >= 1",
            accept: json!({"cache": {"type": "exact_match", "ttl": 1}}),
            reject: json!({"cache": {"type": "exact_match", "ttl": 0}}),
            path: "spec.cache.ttl",
        },
        Case {
            rule: "cache.ttl <= 259200",
            accept: json!({"cache": {"type": "exact_match", "ttl": 259200}}),
            reject: json!({"cache": {"type": "exact_match", "ttl": 259201}}),
            path: "spec.cache.ttl",
        },
        Case {
            rule: "loadBalancer.type required",
            accept: json!({"loadBalancer": {"type": "weight_based", "models": [{"model": "openai/a"}]}}),
            reject: json!({"loadBalancer": {"models": [{"model": "openai/a"}]}}),
            path: "spec.loadBalancer.type",
        },
        Case {
            rule: "loadBalancer.type weight_based",
            accept: json!({"loadBalancer": {"type": "weight_based", "models": [{"model": "openai/a"}]}}),
            reject: json!({"loadBalancer": {"type": "least_busy", "models": [{"model": "openai/a"}]}}),
            path: "spec.loadBalancer.type",
        },
        Case {
            rule: "loadBalancer.models 1..16 (min)",
            accept: json!({"loadBalancer": {"type": "weight_based", "models": models(1)}}),
            reject: json!({"loadBalancer": {"type": "weight_based", "models": []}}),
            path: "spec.loadBalancer.models",
        },
        Case {
            rule: "loadBalancer.models 1..16 (max)",
            accept: json!({"loadBalancer": {"type": "weight_based", "models": models(16)}}),
            reject: json!({"loadBalancer": {"type": "weight_based", "models": models(17)}}),
            path: "spec.loadBalancer.models",
        },
        Case {
            rule: "loadBalancer.models unique",
            accept: json!({"loadBalancer": {"type": "weight_based", "models": [{"model": "openai/a"}, {"model": "openai/b"}]}}),
            reject: json!({"loadBalancer": {"type": "weight_based", "models": [{"model": "openai/a"}, {"model": "openai/a"}]}}),
            path: "spec.loadBalancer.models[1]",
        },
        Case {
            rule: "weight >= 0.001",
            accept: json!({"loadBalancer": {"type": "weight_based", "models": [{"model": "openai/a", "weight": 0.001}]}}),
            reject: json!({"loadBalancer": {"type": "weight_based", "models": [{"model": "openai/a", "weight": 0.0009}]}}),
            path: "spec.loadBalancer.models[0].weight",
        },
        Case {
            rule: "weight <= 1",
            accept: json!({"loadBalancer": {"type": "weight_based", "models": [{"model": "openai/a", "weight": 1}]}}),
            reject: json!({"loadBalancer": {"type": "weight_based", "models": [{"model": "openai/a", "weight": 1.01}]}}),
            path: "spec.loadBalancer.models[0].weight",
        },
        Case {
            rule: "timeout.callTimeout required",
            accept: json!({"timeout": {"callTimeout": 1}}),
            reject: json!({"timeout": {}}),
            path: "spec.timeout.callTimeout",
        },
        Case {
            rule: "timeout.callTimeout >= 1",
            accept: json!({"timeout": {"callTimeout": 1}}),
            reject: json!({"timeout": {"callTimeout": 0}}),
            path: "spec.timeout.callTimeout",
        },
        Case {
            rule: "timeout.callTimeout <= 600000",
            accept: json!({"timeout": {"callTimeout": 600000}}),
            reject: json!({"timeout": {"callTimeout": 600001}}),
            path: "spec.timeout.callTimeout",
        },
        Case {
            rule: "rollout.steps 1..10 (min)",
            accept: json!({"rollout": {"steps": [{"weight": 20, "pause": "5s"}]}}),
            reject: json!({"rollout": {"steps": []}}),
            path: "spec.rollout.steps",
        },
        Case {
            rule: "rollout.steps 1..10 (max)",
            accept: json!({"rollout": {"steps": (1..=10).map(|i| json!({"weight": i * 9, "pause": "5s"})).collect::<Vec<_>>()}}),
            reject: json!({"rollout": {"steps": (1..=11).map(|i| json!({"weight": i * 9, "pause": "5s"})).collect::<Vec<_>>()}}),
            path: "spec.rollout.steps",
        },
        Case {
            rule: "rollout.steps[].weight >= 1",
            accept: json!({"rollout": {"steps": [{"weight": 1, "pause": "1m"}]}}),
            reject: json!({"rollout": {"steps": [{"weight": 0, "pause": "1m"}]}}),
            path: "spec.rollout.steps[0].weight",
        },
        Case {
            rule: "rollout.steps[].weight <= 99",
            accept: json!({"rollout": {"steps": [{"weight": 99, "pause": "1m"}]}}),
            reject: json!({"rollout": {"steps": [{"weight": 100, "pause": "1m"}]}}),
            path: "spec.rollout.steps[0].weight",
        },
        Case {
            rule: "rollout.steps weights increase",
            accept: json!({"rollout": {"steps": [{"weight": 20, "pause": "1m"}, {"weight": 21, "pause": "1m"}]}}),
            reject: json!({"rollout": {"steps": [{"weight": 20, "pause": "1m"}, {"weight": 20, "pause": "1m"}]}}),
            path: "spec.rollout.steps",
        },
        Case {
            rule: "rollout.steps[].pause >= 5s",
            accept: json!({"rollout": {"steps": [{"weight": 20, "pause": "5s"}]}}),
            reject: json!({"rollout": {"steps": [{"weight": 20, "pause": "4s"}]}}),
            path: "spec.rollout.steps[0].pause",
        },
        Case {
            rule: "rollout.steps[].pause <= 24h",
            accept: json!({"rollout": {"steps": [{"weight": 20, "pause": "24h"}]}}),
            reject: json!({"rollout": {"steps": [{"weight": 20, "pause": "24h1s"}]}}),
            path: "spec.rollout.steps[0].pause",
        },
        Case {
            rule: "rollout.steps[].pause hours, minutes, seconds",
            accept: json!({"rollout": {"steps": [{"weight": 20, "pause": "1h30m"}]}}),
            reject: json!({"rollout": {"steps": [{"weight": 20, "pause": "30m1h"}]}}),
            path: "spec.rollout.steps[0].pause",
        },
        Case {
            rule: "rollout.minRequests >= 1",
            accept: json!({"rollout": {"steps": [{"weight": 20, "pause": "1m"}], "minRequests": 1}}),
            reject: json!({"rollout": {"steps": [{"weight": 20, "pause": "1m"}], "minRequests": 0}}),
            path: "spec.rollout.minRequests",
        },
        Case {
            rule: "rollout.maxFailureRatio <= 1",
            accept: json!({"rollout": {"steps": [{"weight": 20, "pause": "1m"}], "maxFailureRatio": 1}}),
            reject: json!({"rollout": {"steps": [{"weight": 20, "pause": "1m"}], "maxFailureRatio": 1.01}}),
            path: "spec.rollout.maxFailureRatio",
        },
        Case {
            rule: "unknown fields rejected",
            accept: json!({"retry": {"count": 1}}),
            reject: json!({"retry": {"count": 1, "jitter": true}}),
            path: "spec.retry.jitter",
        },
    ]
}

#[test]
fn every_rule_accepts_its_boundary_and_refuses_the_value_past_it() {
    let mut failures = Vec::new();
    for case in cases() {
        let accepted = offline_errors(spec_with(case.accept.clone()));
        if !accepted.is_empty() {
            failures.push(format!("{}: accept case refused: {accepted:?}", case.rule));
        }
        let refused = offline_errors(spec_with(case.reject.clone()));
        if !refused.iter().any(|p| p == case.path) {
            failures.push(format!("{}: reject case not refused at {}: {refused:?}", case.rule, case.path));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The reconcile loop runs the Rust rules on whatever the API server stored (an older or
/// looser CRD): every rule whose value still parses must be refused by Rust alone too.
#[test]
fn rust_rules_alone_refuse_every_rule_whose_value_parses() {
    let mut failures = Vec::new();
    for case in cases() {
        if let Some(errors) = rust_errors(spec_with(case.accept.clone()))
            && !errors.is_empty()
        {
            failures.push(format!("{}: accept case refused by Rust rules: {errors:?}", case.rule));
        }
        match rust_errors(spec_with(case.reject.clone())) {
            // Wrong types, unknown fields and missing required fields never reach the rules:
            // the object does not deserialize, which the controller reports as invalid too.
            None => {}
            Some(errors) if errors.iter().any(|p| p == case.path) => {}
            Some(errors) => failures.push(format!("{}: Rust rules miss {}: {errors:?}", case.rule, case.path)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_full_example_is_valid_with_no_warnings() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/full.yaml")).expect("example");
    let value: Value = serde_norway::from_str(&text).expect("yaml");
    assert!(offline_errors(value["spec"].clone()).is_empty());
    assert!(warnings(value["spec"].clone()).is_empty());
}

#[test]
fn fallback_that_is_also_a_load_balancer_model_warns() {
    let w = warnings(spec_with(json!({
        "fallbacks": [{"model": "openai/a"}],
        "loadBalancer": {"type": "weight_based", "models": [{"model": "openai/a", "weight": 1}]}
    })));
    assert!(
        w.iter().any(|w| w.starts_with("spec.fallbacks[0].model: openai/a is also a load-balancer model")),
        "{w:?}"
    );
}

#[test]
fn more_than_three_fallbacks_warns() {
    let three = (0..3).map(|i| json!({"model": format!("openai/m{i}")})).collect::<Vec<_>>();
    let four = (0..4).map(|i| json!({"model": format!("openai/m{i}")})).collect::<Vec<_>>();
    assert!(warnings(spec_with(json!({"fallbacks": three}))).is_empty());
    let w = warnings(spec_with(json!({"fallbacks": four})));
    assert!(w.iter().any(|w| w.starts_with("spec.fallbacks: 4 fallbacks")), "{w:?}");
}

#[test]
fn weights_not_summing_to_one_warn_with_the_effective_shares() {
    let w = warnings(spec_with(json!({"loadBalancer": {"type": "weight_based", "models": [
        {"model": "openai/a", "weight": 0.4}, {"model": "openai/b", "weight": 0.8}
    ]}})));
    assert_eq!(
        w,
        ["spec.loadBalancer.models: weights sum to 1.2, not 1; orq normalizes them to: openai/a 33.3%, openai/b 66.7%"]
    );
    let exact = warnings(spec_with(json!({"loadBalancer": {"type": "weight_based", "models": [
        {"model": "openai/a", "weight": 0.7}, {"model": "openai/b", "weight": 0.3}
    ]}})));
    assert!(exact.is_empty(), "{exact:?}");
}

#[test]
fn partly_unset_weights_warn_with_the_effective_shares() {
    let w = warnings(spec_with(json!({"loadBalancer": {"type": "weight_based", "models": [
        {"model": "openai/a", "weight": 0.5}, {"model": "openai/b"}, {"model": "openai/c", "weight": 1}
    ]}})));
    assert_eq!(
        w,
        [
            "spec.loadBalancer.models: some weights are unset (orq uses 0.5 for them); orq normalizes them to: openai/a 25.0%, openai/b 25.0%, openai/c 50.0%"
        ]
    );
}

#[test]
fn a_call_timeout_under_one_second_warns() {
    assert!(warnings(spec_with(json!({"timeout": {"callTimeout": 1000}}))).is_empty());
    let w = warnings(spec_with(json!({"timeout": {"callTimeout": 999}})));
    assert!(w.iter().any(|w| w.starts_with("spec.timeout.callTimeout: 999 ms is shorter than 1000 ms")), "{w:?}");
}

#[test]
fn retry_without_429_or_5xx_warns() {
    assert!(warnings(spec_with(json!({"retry": {"onCodes": [429]}}))).is_empty());
    assert!(warnings(spec_with(json!({"retry": {"onCodes": [503]}}))).is_empty());
    let w = warnings(spec_with(json!({"retry": {"onCodes": [408, 409]}})));
    assert!(w.iter().any(|w| w.starts_with("spec.retry.onCodes: retries on no 429 or 5xx code")), "{w:?}");
}

#[test]
fn contact_is_accepted_rendered_and_flagged_as_deprecated() {
    let spec = spec_with(json!({"contact": {"id": "u1", "displayName": "Jane"}}));
    assert!(offline_errors(spec.clone()).is_empty());
    let w = warnings(spec.clone());
    assert_eq!(w, ["spec.contact: is deprecated: rename it to spec.identity (same fields)"]);
    let parsed: ImageVariationPolicySpec = serde_json::from_value(spec).expect("spec");
    assert_eq!(&*render_policy(&parsed).json, r#"{"contact":{"id":"u1","display_name":"Jane"}}"#);
}

#[test]
fn metadata_name_too_long_for_a_data_key_is_refused() {
    let schema = routerpolicy::crd::openapi_schema();
    let mut m = manifest(spec_with(json!({})));
    m["metadata"]["name"] = json!("a".repeat(250));
    let doc = Document::from_value(Origin { file: "t".into(), document: 1 }, m);
    let findings = check_document(&doc, &schema, "default").findings;
    assert!(
        findings.errors.iter().any(|e| e.path == "metadata.name" && e.message.contains("data key")),
        "{findings:?}"
    );
}

// ---- property tests ----

fn model() -> impl Strategy<Value = String> {
    ("[a-z0-9][a-z0-9-]{0,10}", "[A-Za-z0-9._:/-]{1,20}").prop_map(|(p, m)| format!("{p}/{m}"))
}

prop_compose! {
    fn valid_spec()(
        target in "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?",
        name in proptest::option::of("[^\\p{Cc}]{1,40}"),
        retry in proptest::option::of((proptest::option::of(1i64..=5), proptest::option::of(proptest::collection::btree_set(400i64..=599, 1..8)))),
        fallbacks in proptest::option::of(proptest::collection::btree_set(model(), 0..4)),
        prompt in proptest::option::of("[A-Za-z0-9_-]{1,40}"),
        identity in proptest::option::of(("[^\\p{Cc}]{1,30}", proptest::option::of("[a-z]{1,10}@[a-z]{1,10}\\.(com|io)"), proptest::option::of(proptest::collection::btree_set("[a-z]{1,10}", 0..5)), proptest::option::of(proptest::collection::vec(proptest::collection::btree_map("[a-z]{1,5}", "[^\\p{Cc}]{0,10}", 0..3), 0..3)))),
        ttl in proptest::option::of(proptest::option::of(1i64..=259_200)),
        lb in proptest::option::of(proptest::collection::btree_map(model(), proptest::option::of(1u32..=1000), 1..5)),
        timeout in proptest::option::of(1i64..=600_000),
    ) -> Value {
        let mut spec = json!({"targetRefs": [{"name": target}]});
        if let Some(n) = name { spec["name"] = json!(n); }
        if let Some((count, codes)) = retry {
            let mut r = json!({});
            if let Some(c) = count { r["count"] = json!(c); }
            if let Some(c) = codes { r["onCodes"] = json!(c.into_iter().collect::<Vec<_>>()); }
            spec["retry"] = r;
        }
        if let Some(f) = fallbacks { spec["fallbacks"] = json!(f.into_iter().map(|m| json!({"model": m})).collect::<Vec<_>>()); }
        if let Some(p) = prompt { spec["prompt"] = json!({"id": p, "version": "latest"}); }
        if let Some((id, email, tags, metadata)) = identity {
            let mut i = json!({"id": id, "logoUrl": "https://example.com/a.png"});
            if let Some(e) = email { i["email"] = json!(e); }
            if let Some(t) = tags { i["tags"] = json!(t.into_iter().collect::<Vec<_>>()); }
            if let Some(m) = metadata { i["metadata"] = json!(m); }
            spec["identity"] = i;
        }
        if let Some(t) = ttl {
            spec["cache"] = match t { Some(t) => json!({"type": "exact_match", "ttl": t}), None => json!({"type": "exact_match"}) };
        }
        if let Some(models) = lb {
            let models: Vec<Value> = models.into_iter().map(|(m, w)| match w {
                Some(w) => json!({"model": m, "weight": f64::from(w) / 1000.0}),
                None => json!({"model": m}),
            }).collect();
            spec["loadBalancer"] = json!({"type": "weight_based", "models": models});
        }
        if let Some(t) = timeout { spec["timeout"] = json!({"callTimeout": t}); }
        spec
    }
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("targetRefs".to_string()),
                    Just("retry".to_string()),
                    Just("count".to_string()),
                    Just("onCodes".to_string()),
                    Just("loadBalancer".to_string()),
                    Just("models".to_string()),
                    Just("weight".to_string()),
                    Just("identity".to_string()),
                    Just("name".to_string()),
                    "[a-z]{1,8}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_valid_policy_renders_to_a_document_that_parses_back_to_the_same_configuration(spec in valid_spec()) {
        let errors = offline_errors(spec.clone());
        prop_assert!(errors.is_empty(), "generated spec refused: {errors:?}\n{spec}");
        let parsed: ImageVariationPolicySpec = serde_json::from_value(spec).expect("spec");
        let doc = render_policy(&parsed);
        let back: OrqConfig = serde_json::from_str(&doc.json).expect("document parses");
        prop_assert_eq!(&back, &OrqConfig::from(&parsed));
        // Stable bytes: rendering again, or from the parsed document, gives the same text.
        prop_assert_eq!(serde_json::to_string(&back).expect("json"), doc.json.to_string());
        prop_assert_eq!(render_policy(&parsed), doc);
    }

    #[test]
    fn arbitrary_input_never_panics_the_validator(spec in arbitrary_json()) {
        let _ = offline_errors(spec.clone());
        let _ = rust_errors(spec.clone());
        let schema = routerpolicy::crd::openapi_schema();
        let doc = Document::from_value(Origin { file: "t".into(), document: 1 }, spec);
        let _ = check_document(&doc, &schema, "default");
    }

    #[test]
    fn arbitrary_yaml_text_never_panics_the_loader(text in ".{0,200}") {
        for doc in routerpolicy::manifests::parse_documents("t", &text) {
            let _ = check_document(&doc, &routerpolicy::crd::openapi_schema(), "default");
        }
    }
}

/// A metadata map with `n` entries.
fn entries(n: usize) -> serde_json::Value {
    serde_json::Value::Object((0..n).map(|i| (format!("k{i}"), json!("v"))).collect())
}
