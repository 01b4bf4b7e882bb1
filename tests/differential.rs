//! Differential test: `routerpolicy validate` and the real kube-apiserver (server-side dry-run
//! create, strict field validation) give the same verdict on every generated manifest, and
//! the same field path on every single-fault one.
//!
//! The generator starts from a manifest that sets every field and changes one thing at a
//! time: every bound ±1 (numbers, string lengths, list lengths), wrong types, `null`s,
//! integral floats, duplicates, unknown fields, bad enum values and patterns, missing
//! required fields; then pairs of those (multi-fault). A few YAML texts check what
//! `kubectl apply -f` reads differently from YAML 1.2 (unquoted `off`, `no`, `on`).
//!
//! Not generated, on purpose: `targetRefs` that repeat once the policy's own namespace is
//! filled in (`[{name: gw}, {name: gw, namespace: <own>}]`): the CRD's CEL cannot see the
//! namespace; deploy/admission.yaml's policy refuses it (tests/e2e.rs checks that), and this
//! test runs on the CRD alone.

mod support;

use futures::StreamExt;
use routerpolicy::manifests::{check_document, parse_documents};
use serde_json::{Value, json};
use support::control_plane;

/// A manifest that sets every field.
fn base() -> Value {
    json!({
        "apiVersion": "routerpolicy.io/v1alpha1",
        "kind": "ImageVariationPolicy",
        "metadata": {"name": "p"},
        "spec": {
            "targetRefs": [{"name": "gw"}, {"name": "shared", "namespace": "gateway"}],
            "name": "avatar-variations",
            "retry": {"count": 3, "onCodes": [429, 500, 503]},
            "fallbacks": [{"model": "openai/gpt-4o-mini"}],
            "prompt": {"id": "prompt_01ARZ3NDEKTSV4RRFFQ69G5FAV", "version": "latest"},
            "identity": {
                "id": "contact_01",
                "displayName": "Jane Doe",
                "email": "jane.doe@example.com",
                "metadata": [{"department": "Engineering"}],
                "logoUrl": "https://example.com/a.jpg",
                "tags": ["hr", "engineering"]
            },
            "cache": {"ttl": 3600, "type": "exact_match"},
            "loadBalancer": {"type": "weight_based", "models": [
                {"model": "openai/gpt-4o", "weight": 0.7},
                {"model": "anthropic/claude-3-5-sonnet", "weight": 0.3}
            ]},
            "timeout": {"callTimeout": 30000},
            "rollout": {"steps": [{"weight": 20, "pause": "1m"}, {"weight": 50, "pause": "1h30m"}],
                "minRequests": 20, "maxFailureRatio": 0.05}
        }
    })
}

/// One change to the base manifest: a JSON pointer and the new value (`None`: removed).
type Edit = (String, Option<Value>);

/// One generated case.
struct Case {
    label: String,
    manifest: Value,
    single_fault: bool,
}

fn set(value: &mut Value, pointer: &str, new: Option<Value>) {
    let (parent, last) = pointer.rsplit_once('/').expect("pointer");
    let Some(parent) = value.pointer_mut(parent) else { return };
    match (parent, new) {
        (Value::Object(map), Some(v)) => {
            map.insert(last.to_string(), v);
        }
        (Value::Object(map), None) => {
            map.remove(last);
        }
        (Value::Array(items), Some(v)) => {
            let i: usize = last.parse().expect("index");
            if i < items.len() {
                items[i] = v;
            } else {
                items.push(v);
            }
        }
        (Value::Array(items), None) => {
            let i: usize = last.parse().expect("index");
            if i < items.len() {
                items.remove(i);
            }
        }
        _ => {}
    }
}

/// A string of `len` characters that satisfies the field's pattern.
fn string_of(kind: &str, len: usize) -> String {
    let fill = |prefix: &str, suffix: &str| {
        let n = len.saturating_sub(prefix.len() + suffix.len());
        format!("{prefix}{}{suffix}", "a".repeat(n))
    };
    match kind {
        "model" => fill("openai/", ""),
        "email" => fill("", "@example.com"),
        "url" => fill("https://e.com/", ""),
        _ => "a".repeat(len),
    }
}

fn cases() -> Vec<Case> {
    let mut out: Vec<(String, Vec<Edit>)> = Vec::new();
    let mut one =
        |label: String, pointer: &str, value: Option<Value>| out.push((label, vec![(pointer.to_string(), value)]));

    // Strings: lengths at and beyond their bounds.
    let strings: [(&str, &str, usize, usize); 11] = [
        ("/spec/name", "plain", 1, 128),
        ("/spec/prompt/id", "plain", 1, 128),
        ("/spec/identity/id", "plain", 1, 128),
        ("/spec/identity/displayName", "plain", 1, 256),
        ("/spec/identity/email", "email", 14, 254),
        ("/spec/identity/logoUrl", "url", 15, 2048),
        ("/spec/identity/tags/0", "plain", 1, 64),
        ("/spec/fallbacks/0/model", "model", 8, 256),
        ("/spec/loadBalancer/models/0/model", "model", 8, 256),
        ("/spec/targetRefs/0/name", "plain", 1, 253),
        ("/spec/targetRefs/1/namespace", "plain", 1, 63),
    ];
    for (pointer, kind, min, max) in strings {
        for len in [min.saturating_sub(1), min, max, max + 1] {
            if len == 0 && kind != "plain" {
                continue;
            }
            one(format!("{pointer} length {len}"), pointer, Some(json!(string_of(kind, len))));
        }
        // Wrong types and null.
        for (what, v) in
            [("integer", json!(7)), ("boolean", json!(true)), ("object", json!({})), ("list", json!(["a"]))]
        {
            one(format!("{pointer} as {what}"), pointer, Some(v));
        }
        one(format!("{pointer} null"), pointer, Some(Value::Null));
    }
    // Patterns.
    for (pointer, bad) in [
        ("/spec/name", "tab\there"),
        ("/spec/prompt/id", "has space"),
        ("/spec/identity/email", "not-an-email"),
        ("/spec/identity/logoUrl", "javascript:alert(1)"),
        ("/spec/identity/logoUrl", "ftp://example.com/a"),
        ("/spec/fallbacks/0/model", "gpt-4o"),
        ("/spec/fallbacks/0/model", "OpenAI/gpt-4o"),
        ("/spec/loadBalancer/models/0/model", "openai/"),
        ("/spec/targetRefs/0/name", "Upper"),
        ("/spec/targetRefs/0/name", "a..b"),
        ("/spec/targetRefs/1/namespace", "a.b"),
    ] {
        one(format!("{pointer} = {bad:?}"), pointer, Some(json!(bad)));
    }
    // Integers: bounds ±1, integral and fractional floats, wrong types, null.
    for (pointer, min, max) in [
        ("/spec/retry/count", 1i64, 5i64),
        ("/spec/retry/onCodes/0", 400, 599),
        ("/spec/cache/ttl", 1, 259_200),
        ("/spec/timeout/callTimeout", 1, 600_000),
    ] {
        for v in [min - 1, min, max, max + 1] {
            one(format!("{pointer} = {v}"), pointer, Some(json!(v)));
        }
        one(format!("{pointer} = {min}.0"), pointer, Some(json!(min as f64)));
        one(format!("{pointer} = {max}.0"), pointer, Some(json!(max as f64)));
        one(format!("{pointer} = {min}.5"), pointer, Some(json!(min as f64 + 0.5)));
        one(format!("{pointer} as string"), pointer, Some(json!("3")));
        one(format!("{pointer} null"), pointer, Some(Value::Null));
    }
    // Weight: a number in 0.001..1.
    for v in [
        json!(0),
        json!(0.0),
        json!(0.0005),
        json!(0.001),
        json!(1),
        json!(1.0),
        json!(1.001),
        json!(-0.5),
        json!("0.5"),
        Value::Null,
    ] {
        one(format!("weight = {v}"), "/spec/loadBalancer/models/0/weight", Some(v));
    }
    // Enums and required fields.
    for (pointer, bad) in
        [("/spec/prompt/version", "v1"), ("/spec/cache/type", "semantic"), ("/spec/loadBalancer/type", "round_robin")]
    {
        one(format!("{pointer} = {bad}"), pointer, Some(json!(bad)));
        one(format!("{pointer} missing"), pointer, None);
        one(format!("{pointer} null"), pointer, Some(Value::Null));
    }
    for pointer in [
        "/spec/targetRefs",
        "/spec/prompt/id",
        "/spec/identity/id",
        "/spec/timeout/callTimeout",
        "/spec/loadBalancer/models",
        "/spec/fallbacks/0/model",
        "/spec/loadBalancer/models/0/model",
        "/spec/targetRefs/0/name",
    ] {
        one(format!("{pointer} missing"), pointer, None);
    }
    // Whole optional sections: null (pruned), empty, wrong type.
    for pointer in [
        "/spec/name",
        "/spec/retry",
        "/spec/fallbacks",
        "/spec/prompt",
        "/spec/identity",
        "/spec/cache",
        "/spec/loadBalancer",
        "/spec/timeout",
        "/spec/retry/onCodes",
        "/spec/identity/tags",
        "/spec/identity/metadata",
        "/spec/identity/email",
    ] {
        one(format!("{pointer} null"), pointer, Some(Value::Null));
        one(format!("{pointer} as string"), pointer, Some(json!("x")));
    }
    one("metadata value null".into(), "/spec/identity/metadata/0/department", Some(Value::Null));
    for (label, map) in [
        ("metadata map of 32 entries", Value::Object((0..32).map(|i| (format!("k{i}"), json!("v"))).collect())),
        ("metadata map of 33 entries", Value::Object((0..33).map(|i| (format!("k{i}"), json!("v"))).collect())),
        ("metadata key of 128", json!({"k".repeat(128): "v"})),
        ("metadata key of 129", json!({"k".repeat(129): "v"})),
        ("metadata empty key", json!({"": "v"})),
        ("metadata value of 1024", json!({"k": "v".repeat(1024)})),
        ("metadata value of 1025", json!({"k": "v".repeat(1025)})),
    ] {
        one(label.to_string(), "/spec/identity/metadata/0", Some(map));
    }
    one("metadata value integer".into(), "/spec/identity/metadata/0/department", Some(json!(1)));
    one("tag null".into(), "/spec/identity/tags/0", Some(Value::Null));
    one("spec null".into(), "/spec", Some(Value::Null));
    // Lists: lengths and duplicates.
    let repeat = |n: usize, f: &dyn Fn(usize) -> Value| Value::Array((0..n).map(f).collect());
    for (label, pointer, items) in [
        ("targetRefs 16", "/spec/targetRefs", repeat(16, &|i| json!({"name": format!("gw{i}")}))),
        ("targetRefs 17", "/spec/targetRefs", repeat(17, &|i| json!({"name": format!("gw{i}")}))),
        ("targetRefs empty", "/spec/targetRefs", json!([])),
        ("targetRefs duplicate", "/spec/targetRefs", json!([{"name": "gw"}, {"name": "gw"}])),
        ("onCodes 16", "/spec/retry/onCodes", repeat(16, &|i| json!(500 + i))),
        ("onCodes 17", "/spec/retry/onCodes", repeat(17, &|i| json!(500 + i))),
        ("onCodes empty", "/spec/retry/onCodes", json!([])),
        ("onCodes duplicate", "/spec/retry/onCodes", json!([429, 429])),
        ("fallbacks 10", "/spec/fallbacks", repeat(10, &|i| json!({"model": format!("openai/m{i}")}))),
        ("fallbacks 11", "/spec/fallbacks", repeat(11, &|i| json!({"model": format!("openai/m{i}")}))),
        ("fallbacks empty", "/spec/fallbacks", json!([])),
        ("fallbacks duplicate", "/spec/fallbacks", json!([{"model": "openai/a"}, {"model": "openai/a"}])),
        ("tags 32", "/spec/identity/tags", repeat(32, &|i| json!(format!("t{i}")))),
        ("tags 33", "/spec/identity/tags", repeat(33, &|i| json!(format!("t{i}")))),
        ("tags duplicate", "/spec/identity/tags", json!(["a", "a"])),
        ("metadata 16", "/spec/identity/metadata", repeat(16, &|i| json!({"k": format!("v{i}")}))),
        ("metadata 17", "/spec/identity/metadata", repeat(17, &|i| json!({"k": format!("v{i}")}))),
        ("models 16", "/spec/loadBalancer/models", repeat(16, &|i| json!({"model": format!("openai/m{i}")}))),
        ("models 17", "/spec/loadBalancer/models", repeat(17, &|i| json!({"model": format!("openai/m{i}")}))),
        ("models empty", "/spec/loadBalancer/models", json!([])),
        ("models duplicate", "/spec/loadBalancer/models", json!([{"model": "openai/a"}, {"model": "openai/a"}])),
    ] {
        one(label.to_string(), pointer, Some(items));
    }
    // Unknown fields at every level, and identity next to contact.
    for pointer in [
        "/spec/unknown",
        "/spec/retry/backoff",
        "/spec/identity/phone",
        "/spec/loadBalancer/models/0/priority",
        "/spec/targetRefs/0/kind",
        "/spec/cache/size",
    ] {
        one(format!("unknown field {pointer}"), pointer, Some(json!("x")));
    }
    one("identity and contact".into(), "/spec/contact", Some(json!({"id": "c"})));
    one("contact alone (deprecated, accepted)".into(), "/spec/identity", None);

    let singles = out.clone();
    let mut cases: Vec<Case> = Vec::new();
    for (label, edits) in &singles {
        let mut manifest = base();
        for (pointer, value) in edits {
            set(&mut manifest, pointer, value.clone());
        }
        cases.push(Case { label: label.clone(), manifest, single_fault: true });
    }
    // "contact alone": the identity removed, a contact added.
    if let Some(case) = cases.iter_mut().find(|c| c.label.starts_with("contact alone")) {
        set(&mut case.manifest, "/spec/contact", Some(json!({"id": "c", "email": "a@example.com"})));
    }
    // Pairs (multi-fault), spread deterministically over the single cases.
    let n = singles.len();
    for k in 0..120 {
        let (a, b) = ((k * 7) % n, (k * 13 + 5) % n);
        if a == b || singles[a].1[0].0 == singles[b].1[0].0 {
            continue;
        }
        let mut manifest = base();
        for (pointer, value) in singles[a].1.iter().chain(&singles[b].1) {
            set(&mut manifest, pointer, value.clone());
        }
        cases.push(Case { label: format!("{} + {}", singles[a].0, singles[b].0), manifest, single_fault: false });
    }
    for (i, case) in cases.iter_mut().enumerate() {
        case.manifest["metadata"]["name"] = json!(format!("case-{i}"));
    }
    cases
}

/// The API server's verdict: `Ok` if it would create the object, else its message.
async fn server_verdict(client: &kube::Client, ns: &str, manifest: &Value) -> Result<(), String> {
    let uri = format!(
        "/apis/routerpolicy.io/v1alpha1/namespaces/{ns}/imagevariationpolicies?dryRun=All&fieldValidation=Strict"
    );
    let mut body = manifest.clone();
    body["metadata"]["namespace"] = json!(ns);
    let request = http::Request::post(uri)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).expect("json"))
        .expect("request");
    match client.request_text(request).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) => Err(e.message),
        Err(e) => panic!("dry-run request failed: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_and_the_api_server_agree_on_every_generated_manifest() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "differential").await;
    let schema = routerpolicy::crd::openapi_schema();
    let cases = cases();
    assert!(cases.len() >= 300, "only {} cases", cases.len());

    let verdicts: Vec<Result<(), String>> = futures::stream::iter(cases.iter())
        .map(|case| server_verdict(&client, &ns, &case.manifest))
        .buffered(8)
        .collect()
        .await;

    let mut failures = Vec::new();
    let (mut refused, mut accepted) = (0, 0);
    for (case, server) in cases.iter().zip(&verdicts) {
        // What `routerpolicy validate -f case.json` does with the same text.
        let text = serde_json::to_string_pretty(&case.manifest).expect("json");
        let docs = parse_documents("case.json", &text);
        let checked = check_document(&docs[0], &schema, &ns);
        let offline = &checked.findings.errors;
        match (offline.is_empty(), server) {
            (true, Ok(())) => accepted += 1,
            (false, Err(message)) => {
                refused += 1;
                if case.single_fault && !offline.iter().any(|e| message.contains(&e.path)) {
                    failures.push(format!(
                        "{}: paths differ\n  validate: {offline:?}\n  API server: {message}\n  manifest: {text}",
                        case.label
                    ));
                }
            }
            (true, Err(message)) => failures.push(format!(
                "{}: validate accepts, the API server refuses: {message}\n  manifest: {text}",
                case.label
            )),
            (false, Ok(())) => failures.push(format!(
                "{}: validate refuses ({offline:?}), the API server accepts\n  manifest: {text}",
                case.label
            )),
        }
    }
    println!("{} manifests: {accepted} accepted and {refused} refused by both", cases.len());
    assert!(failures.is_empty(), "{} of {} disagree:\n{}", failures.len(), cases.len(), failures.join("\n\n"));
}

/// `kubectl apply -f` reads YAML 1.1: unquoted `off`, `no`, `on` are booleans there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unquoted_yaml_1_1_booleans_are_refused_like_kubectl_apply_does() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "yaml11").await;
    let schema = routerpolicy::crd::openapi_schema();
    let manifest = |name: &str, spec: &str| {
        format!(
            "apiVersion: routerpolicy.io/v1alpha1\nkind: ImageVariationPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  targetRefs: [{{name: gw}}]\n{spec}"
        )
    };
    for (name, spec, refused_at) in [
        ("name-off", "  name: off\n", Some("spec.name")),
        ("name-quoted", "  name: 'off'\n", None),
        ("tags", "  identity:\n    id: x\n    tags: [a, no, \"on\"]\n", Some("spec.identity.tags[1]")),
        ("tags-quoted", "  identity:\n    id: x\n    tags: [a, \"no\", 'on']\n", None),
        ("prompt", "  prompt: {id: yes, version: latest}\n", Some("spec.prompt.id")),
    ] {
        let text = manifest(name, spec);
        let out = cp.kubectl_with(&cp.kubeconfig, &["create", "--dry-run=server", "-f", "-"], Some(&text));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let docs = parse_documents("case.yaml", &text);
        let errors = check_document(&docs[0], &schema, &ns).findings.errors;
        match refused_at {
            Some(path) => {
                assert!(!out.status.success(), "{name}: kubectl accepted it");
                assert!(stderr.contains(path), "{name}: kubectl's error does not name {path}: {stderr}");
                assert!(errors.iter().any(|e| e.path == path && e.message.contains("quote it")), "{name}: {errors:?}");
            }
            None => {
                assert!(out.status.success(), "{name}: kubectl refused it: {stderr}");
                assert!(errors.is_empty(), "{name}: {errors:?}");
            }
        }
    }
}
