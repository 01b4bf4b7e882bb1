//! End-to-end tests against a real kube-apiserver and etcd (see `tests/support`), with the
//! real controller running in-process, limited to each test's own namespaces.

mod gwsupport;
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use routerpolicy::api::ImageVariationPolicy;
use routerpolicy::operator::controller::{self, Settings};
use routerpolicy::operator::metrics::Metrics;
use routerpolicy::render::render_policy;
use serde_json::json;
use support::{control_plane, eventually};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(30);

/// The controller, running until dropped.
struct Operator {
    metrics: Arc<Metrics>,
    _stop: oneshot::Sender<()>,
}

fn start_operator(client: &Client, namespaces: &[&str]) -> Operator {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let metrics = Arc::new(Metrics::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let settings = Settings { namespaces: namespaces.iter().map(|s| s.to_string()).collect(), ..Settings::default() };
    tokio::spawn(controller::run(client.clone(), settings, metrics.clone(), async move {
        let _ = stopped.await;
    }));
    Operator { metrics, _stop: stop }
}

/// Target reconciles the operator has finished successfully.
fn successful_reconciles(operator: &Operator) -> f64 {
    let text = operator.metrics.encode();
    let line =
        text.lines().find(|l| l.starts_with("routerpolicy_reconciles_total{") && l.contains("outcome=\"success\""));
    line.and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
}

fn policy_yaml(namespace: &str, name: &str, spec: serde_json::Value) -> String {
    serde_json::to_string(&json!({
        "apiVersion": "routerpolicy.io/v1alpha1",
        "kind": "ImageVariationPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }))
    .expect("json")
}

fn apply_ok(yaml: &str) {
    let out = control_plane().apply(yaml);
    assert!(out.status.success(), "kubectl apply failed: {}", String::from_utf8_lossy(&out.stderr));
}

async fn configmap_data(client: &Client, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    api.get_opt(name).await.ok().flatten().map(|cm| cm.data.unwrap_or_default())
}

async fn wait_for_key(client: &Client, namespace: &str, cm: &str, key: &str, value: &str) {
    eventually(WAIT, &format!("{namespace}/{cm} to hold {key} = {value}"), || async {
        let data = configmap_data(client, namespace, cm).await?;
        (data.get(key).map(String::as_str) == Some(value)).then_some(())
    })
    .await
}

async fn wait_for_no_key(client: &Client, namespace: &str, cm: &str, key: &str) {
    eventually(WAIT, &format!("{namespace}/{cm} to drop {key}"), || async {
        let data = configmap_data(client, namespace, cm).await.unwrap_or_default();
        (!data.contains_key(key)).then_some(())
    })
    .await
}

async fn get_policy(client: &Client, namespace: &str, name: &str) -> ImageVariationPolicy {
    Api::<ImageVariationPolicy>::namespaced(client.clone(), namespace).get(name).await.expect("get policy")
}

async fn wait_for_condition(
    client: &Client,
    namespace: &str,
    name: &str,
    type_: &str,
    status: &str,
    reason: Option<&str>,
) -> ImageVariationPolicy {
    eventually(WAIT, &format!("{namespace}/{name} to have {type_}={status} ({reason:?})"), || async {
        let p = get_policy(client, namespace, name).await;
        let c = p.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?.clone();
        (c.status == status && reason.is_none_or(|r| c.reason == r)).then_some(p)
    })
    .await
}

/// Edits a ConfigMap by hand, as a person with kubectl would.
fn patch_configmap(namespace: &str, name: &str, patch_type: &str, patch: &str) {
    let patch_type = format!("--type={patch_type}");
    control_plane().kubectl_ok(&["patch", "-n", namespace, "configmap", name, &patch_type, "-p", patch]);
}

/// The document a spec renders to (the same for every policy name).
fn rendered(spec: serde_json::Value) -> String {
    let spec = serde_json::from_value(spec).expect("spec");
    render_policy(&spec).json.to_string()
}

fn retry_spec(target: &str, count: i64) -> serde_json::Value {
    json!({"targetRefs": [{"name": target}], "retry": {"count": count, "onCodes": [429, 503]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_is_established_and_kubectl_explain_shows_descriptions() {
    let cp = control_plane();
    // The API server publishes a new CRD's OpenAPI a little after it is Established.
    let explain = |field: &'static str| async move {
        eventually(WAIT, &format!("kubectl explain {field}"), || async {
            let out = cp.kubectl(&["explain", field]);
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        })
        .await
    };
    let text = explain("ivp").await;
    assert!(text.contains("How a team's LLM image-variation calls are routed by orq"), "explain output: {text}");
    assert!(!text.contains("Auto-generated derived type"), "explain output: {text}");
    let text = explain("imagevariationpolicies.spec.retry.count").await;
    assert!(text.contains("Number of retries, 1 to 5"), "explain output: {text}");
    let text = explain("ivp.spec.loadBalancer.models.weight").await;
    assert!(text.contains("orq normalizes weights"), "explain output: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_policy_reaches_its_configmap_with_the_rendered_bytes_and_becomes_ready() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "sync").await;
    let _operator = start_operator(&client, &[&ns]);

    let full = std::fs::read_to_string(support::repo_root().join("examples/full.yaml")).expect("example");
    let mut policy: serde_json::Value = serde_norway::from_str(&full).expect("yaml");
    policy["metadata"]["namespace"] = json!(ns);
    apply_ok(&policy.to_string());

    let expected = rendered(policy["spec"].clone());
    let key = format!("{ns}.avatars.json");
    wait_for_key(&client, &ns, "image-gateway-policies", &key, &expected).await;
    // Its spec.callers goes beside the document, never into it.
    let callers = r#"[{"namespace":"team-b","serviceAccount":"thumbnailer"}]"#;
    wait_for_key(&client, &ns, "image-gateway-policies", &format!("{ns}.avatars.callers"), callers).await;
    assert!(!expected.contains("thumbnailer"), "the callers list is not in orq's document");

    let out = cp.kubectl(&["wait", "-n", &ns, "--for=condition=Ready", "--timeout=60s", "ivp/avatars"]);
    assert!(out.status.success(), "kubectl wait: {}", String::from_utf8_lossy(&out.stderr));

    let p = get_policy(&client, &ns, "avatars").await;
    let status = p.status.expect("status");
    assert_eq!(status.observed_generation, p.metadata.generation);
    assert_eq!(status.synced_targets.as_deref(), Some("1/1"));
    let hash = routerpolicy::hash::policy_hash(expected.as_bytes(), Some(callers.as_bytes()));
    assert_eq!(status.config_hash, Some(hash), "the hash covers the document and its callers");
    assert_eq!(status.targets.len(), 1);
    assert!(status.targets[0].synced);
    assert_eq!(status.targets[0].key, key);
    for (type_, value) in [("Accepted", "True"), ("Synced", "True"), ("Served", "Unknown"), ("Ready", "True")] {
        let c = status.conditions.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("condition {type_}"));
        assert_eq!(c.status, value, "{type_}: {c:?}");
    }
    let served = status.conditions.iter().find(|c| c.type_ == "Served").expect("Served");
    assert_eq!(served.reason, "NoGatewayReports", "no gateway reports here: Ready follows Accepted and Synced");
    for type_ in ["Reconciling", "Stalled"] {
        assert!(status.conditions.iter().all(|c| c.type_ != type_), "{type_} is written only while True");
    }

    let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns).get("image-gateway-policies").await.expect("cm");
    let labels = cm.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("routerpolicy"));
    let annotations = cm.metadata.annotations.unwrap_or_default();
    assert!(annotations.contains_key("routerpolicy.io/config-hash"));
    assert!(
        cm.metadata
            .managed_fields
            .unwrap_or_default()
            .iter()
            .any(|m| m.manager.as_deref() == Some("routerpolicy") && m.operation.as_deref() == Some("Apply"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_not_rewritten_when_nothing_changed() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "noop").await;
    let operator = start_operator(&client, &[&ns]);
    apply_ok(&policy_yaml(&ns, "quiet", retry_spec("gw", 2)));
    wait_for_condition(&client, &ns, "quiet", "Ready", "True", None).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = get_policy(&client, &ns, "quiet").await.metadata.resource_version;
    let reconciles = successful_reconciles(&operator);

    // Another writer's key in the ConfigMap (it counts toward the 1 MiB, so the target is
    // planned again) does not touch the policy's key: wait until the plan has run (the operator
    // counts it) and its work queues are empty, then look. (A label-only change is not even
    // planned: the operator's view of a ConfigMap keeps only the labels it reads.)
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    cms.patch("gw", &PatchParams::default(), &Patch::Merge(json!({"data": {"notes.txt": "someone else's key"}})))
        .await
        .expect("touch cm");
    eventually(WAIT, "the touch is reconciled and the queues are empty", || async {
        let idle = operator
            .metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("routerpolicy_work_pending{"))
            .all(|l| l.ends_with(" 0"));
        (successful_reconciles(&operator) > reconciles && idle).then_some(())
    })
    .await;
    let after = get_policy(&client, &ns, "quiet").await.metadata.resource_version;
    assert_eq!(before, after, "status was rewritten without a change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_policy_keeps_last_good_config_and_reports_stalled() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "lastgood").await;
    let _operator = start_operator(&client, &[&ns]);
    let key = format!("{ns}.p.json");

    apply_ok(&policy_yaml(&ns, "p", retry_spec("gw", 2)));
    let good = rendered(retry_spec("gw", 2));
    wait_for_key(&client, &ns, "gw", &key, &good).await;

    // Duplicate targets once the default namespace is resolved: the CRD's CEL rule cannot see
    // the policy's namespace, so only the controller refuses this.
    let invalid = json!({"targetRefs": [{"name": "gw"}, {"name": "gw", "namespace": ns}], "retry": {"count": 4}});
    apply_ok(&policy_yaml(&ns, "p", invalid));
    let p = wait_for_condition(&client, &ns, "p", "Stalled", "True", Some("ValidationFailed")).await;
    let status = p.status.expect("status");
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").expect("Ready");
    assert_eq!(ready.status, "False");
    let accepted = status.conditions.iter().find(|c| c.type_ == "Accepted").expect("Accepted");
    assert!(accepted.message.contains("spec.targetRefs: duplicate value"), "{}", accepted.message);
    let out = cp.kubectl(&["wait", "-n", &ns, "--for=condition=Ready", "--timeout=2s", "ivp/p"]);
    assert!(!out.status.success(), "kubectl wait must not succeed on an invalid policy");

    tokio::time::sleep(Duration::from_secs(2)).await;
    let data = configmap_data(&client, &ns, "gw").await.expect("cm");
    assert_eq!(data.get(&key), Some(&good), "the last good document must stay");

    // Valid again: the new document is written.
    apply_ok(&policy_yaml(&ns, "p", retry_spec("gw", 5)));
    wait_for_key(&client, &ns, "gw", &key, &rendered(retry_spec("gw", 5))).await;
    wait_for_condition(&client, &ns, "p", "Ready", "True", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_policy_removes_only_its_key() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "delete").await;
    let _operator = start_operator(&client, &[&ns]);

    apply_ok(&policy_yaml(&ns, "one", retry_spec("gw", 1)));
    apply_ok(&policy_yaml(&ns, "two", retry_spec("gw", 2)));
    wait_for_key(&client, &ns, "gw", &format!("{ns}.one.json"), &rendered(retry_spec("gw", 1))).await;
    wait_for_key(&client, &ns, "gw", &format!("{ns}.two.json"), &rendered(retry_spec("gw", 2))).await;

    // Another writer's key in the same ConfigMap.
    patch_configmap(&ns, "gw", "merge", r#"{"data":{"hand-written.txt":"keep me"}}"#);

    cp.kubectl_ok(&["delete", "-n", &ns, "ivp", "one", "--timeout=60s"]);
    wait_for_no_key(&client, &ns, "gw", &format!("{ns}.one.json")).await;
    let data = configmap_data(&client, &ns, "gw").await.expect("the ConfigMap is never deleted");
    assert_eq!(data.get("hand-written.txt").map(String::as_str), Some("keep me"));
    assert_eq!(data.get(&format!("{ns}.two.json")), Some(&rendered(retry_spec("gw", 2))));
    let gone = Api::<ImageVariationPolicy>::namespaced(client.clone(), &ns).get_opt("one").await.expect("get");
    assert!(gone.is_none(), "deletion must not wait for anything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_is_not_blocked_by_a_missing_target_namespace() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "missing").await;
    let _operator = start_operator(&client, &[&ns]);
    let spec = json!({"targetRefs": [{"name": "gw", "namespace": "no-such-namespace"}]});
    apply_ok(&policy_yaml(&ns, "lost", spec));
    wait_for_condition(&client, &ns, "lost", "Accepted", "False", Some("RefNotPermitted")).await;
    cp.kubectl_ok(&["delete", "-n", &ns, "ivp", "lost", "--timeout=30s"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_namespace_target_needs_consent_and_withdrawn_consent_removes_the_key() {
    let cp = control_plane();
    let client = cp.client().await;
    let team = cp.namespace(&client, "team").await;
    let gateway = cp.namespace(&client, "gateway").await;
    let _operator = start_operator(&client, &[&team, &gateway]);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &gateway);
    let cm = ConfigMap {
        metadata: ObjectMeta { name: Some("shared".into()), ..Default::default() },
        data: Some([("other.json".to_string(), "{}".to_string())].into()),
        ..Default::default()
    };
    cms.create(&PostParams::default(), &cm).await.expect("create gateway cm");
    let before = cms.get("shared").await.expect("cm").metadata.resource_version;

    let spec = json!({"targetRefs": [{"name": "shared", "namespace": gateway}], "timeout": {"callTimeout": 20000}});
    apply_ok(&policy_yaml(&team, "p", spec.clone()));
    let p = wait_for_condition(&client, &team, "p", "Accepted", "False", Some("RefNotPermitted")).await;
    assert_eq!(p.status.expect("status").targets[0].reason.as_str(), "RefNotPermitted");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        cms.get("shared").await.expect("cm").metadata.resource_version,
        before,
        "nothing may be written without consent"
    );

    // Consent: label plus annotation.
    cms.patch(
        "shared",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {
            "labels": {"routerpolicy.io/gateway": "true"},
            "annotations": {"routerpolicy.io/allowed-namespaces": format!("someone-else, {team}")}
        }})),
    )
    .await
    .expect("consent");
    let key = format!("{team}.p.json");
    wait_for_key(&client, &gateway, "shared", &key, &rendered(spec.clone())).await;
    wait_for_condition(&client, &team, "p", "Ready", "True", None).await;

    // Withdrawn: the key goes, other keys stay.
    cms.patch(
        "shared",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"routerpolicy.io/allowed-namespaces": "someone-else"}}})),
    )
    .await
    .expect("withdraw");
    wait_for_no_key(&client, &gateway, "shared", &key).await;
    wait_for_condition(&client, &team, "p", "Accepted", "False", Some("RefNotPermitted")).await;
    let data = configmap_data(&client, &gateway, "shared").await.expect("cm");
    assert_eq!(data.get("other.json").map(String::as_str), Some("{}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_neither_managed_nor_opted_in_is_never_modified() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "unmanaged").await;
    let _operator = start_operator(&client, &[&ns]);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm = ConfigMap {
        metadata: ObjectMeta { name: Some("theirs".into()), ..Default::default() },
        data: Some([("app.conf".to_string(), "x=1".to_string())].into()),
        ..Default::default()
    };
    cms.create(&PostParams::default(), &cm).await.expect("create cm");
    let before = cms.get("theirs").await.expect("cm");

    apply_ok(&policy_yaml(&ns, "p", retry_spec("theirs", 3)));
    let p = wait_for_condition(&client, &ns, "p", "Accepted", "False", Some("TargetNotManaged")).await;
    assert_eq!(
        p.status.expect("status").conditions.iter().find(|c| c.type_ == "Stalled").map(|c| c.status.clone()),
        Some("True".into())
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = cms.get("theirs").await.expect("cm");
    assert_eq!(before.metadata.resource_version, after.metadata.resource_version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edits_deleted_keys_and_a_deleted_configmap_are_repaired() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "drift").await;
    let _operator = start_operator(&client, &[&ns]);
    let key = format!("{ns}.p.json");
    let good = rendered(retry_spec("gw", 3));
    apply_ok(&policy_yaml(&ns, "p", retry_spec("gw", 3)));
    wait_for_key(&client, &ns, "gw", &key, &good).await;

    patch_configmap(&ns, "gw", "merge", &json!({"data": {key.clone(): "{\"hacked\":true}"}}).to_string());
    wait_for_key(&client, &ns, "gw", &key, &good).await;

    patch_configmap(&ns, "gw", "json", &json!([{"op": "remove", "path": format!("/data/{key}")}]).to_string());
    wait_for_key(&client, &ns, "gw", &key, &good).await;

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    cms.delete("gw", &DeleteParams::default()).await.expect("delete cm");
    wait_for_key(&client, &ns, "gw", &key, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_policy_changes_to_one_target_costs_few_writes() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "burst").await;
    let operator = start_operator(&client, &[&ns]);
    const N: usize = 40;
    let api: Api<ImageVariationPolicy> = Api::namespaced(client.clone(), &ns);
    let apply_all = |count: i64| {
        let api = api.clone();
        let ns = ns.clone();
        async move {
            let patches = (0..N).map(|i| {
                let api = api.clone();
                let body: serde_json::Value =
                    serde_json::from_str(&policy_yaml(&ns, &format!("p{i}"), retry_spec("gw", count))).expect("json");
                async move {
                    api.patch(&format!("p{i}"), &PatchParams::apply("burst-test"), &Patch::Apply(&body))
                        .await
                        .expect("apply policy");
                }
            });
            futures::future::join_all(patches).await;
        }
    };
    let converged = |count: i64| {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            eventually(Duration::from_secs(60), "every policy's document in the ConfigMap", || async {
                let data = configmap_data(&client, &ns, "gw").await?;
                (0..N)
                    .all(|i| data.get(&format!("{ns}.p{i}.json")) == Some(&rendered(retry_spec("gw", count))))
                    .then_some(())
            })
            .await
        }
    };

    let started = std::time::Instant::now();
    apply_all(1).await;
    let create_spread = started.elapsed();
    converged(1).await;
    let after_create = operator.metrics.configmap_writes.get();

    // One burst of N edits, all at once. A target waits for 8 ms of quiet but at most 200 ms,
    // so a burst costs a few writes, not one per edit. How long N patches take, and how often
    // their watch events leave an 8 ms gap, depends on the machine's load: the bound grows with
    // the burst's duration (one write per 100 ms) and never exceeds N / 4.
    let started = std::time::Instant::now();
    apply_all(2).await;
    let spread = started.elapsed();
    converged(2).await;
    let burst_writes = operator.metrics.configmap_writes.get() - after_create;
    println!(
        "{N} policies created over {create_spread:?}: {after_create} ConfigMap writes; {N} edits in one burst over {spread:?}: {burst_writes} writes"
    );
    // The same rule for the creates: a few writes, plus one per 100 ms the creates took, and
    // never one per policy.
    let allowed_create = (3 + create_spread.as_millis() as u64 / 100).min(N as u64 / 2);
    assert!(
        after_create <= allowed_create,
        "{after_create} writes for {N} new policies created over {create_spread:?}: expected at most {allowed_create}"
    );
    let allowed = (3 + spread.as_millis() as u64 / 100).min(N as u64 / 4);
    assert!(
        burst_writes <= allowed,
        "{burst_writes} writes for a burst of {N} edits over {spread:?} to one target: expected at most {allowed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_applies_and_the_invalid_one_is_refused() {
    let cp = control_plane();
    let client = cp.client().await;
    for ns in ["team-a", "team-b", "team-c", "gateway"] {
        let _ = cp.kubectl(&["create", "namespace", ns]);
    }
    let _operator = start_operator(&client, &["team-a", "team-b", "gateway"]);
    let examples = support::repo_root().join("examples");
    for file in ["minimal.yaml", "full.yaml", "cross-namespace.yaml", "rollout.yaml"] {
        let path = examples.join(file);
        let out = cp.kubectl(&["apply", "-f", path.to_str().expect("utf-8")]);
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
    }
    for (ns, name) in [("team-a", "minimal"), ("team-a", "avatars"), ("team-b", "thumbnails"), ("team-a", "banners")] {
        let out = cp.kubectl(&["wait", "-n", ns, "--for=condition=Ready", "--timeout=60s", &format!("ivp/{name}")]);
        assert!(out.status.success(), "{ns}/{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let invalid = examples.join("invalid/broken.yaml");
    let out = cp.kubectl(&["apply", "-f", invalid.to_str().expect("utf-8")]);
    assert!(!out.status.success(), "the invalid example must be refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for path in
        ["spec.retry.count", "spec.retry.onCodes[0]", "spec.loadBalancer.models[1].weight", "spec.identity.logoUrl"]
    {
        assert!(stderr.contains(path), "admission error should name {path}: {stderr}");
    }
}

/// deploy/admission.yaml's targetRefs policy, bound to `namespace` only: other tests of this
/// binary make policies invalid after admission on purpose (last good, Stalled).
fn install_targetrefs_admission_policy(namespace: &str) {
    let cp = control_plane();
    let text = std::fs::read_to_string(support::repo_root().join("deploy/admission.yaml")).expect("admission.yaml");
    let policy = text
        .split("\n---\n")
        .find(|doc| doc.contains("kind: ValidatingAdmissionPolicy\n") && doc.contains("routerpolicy-targetrefs-unique"))
        .expect("the targetRefs admission policy");
    let out = cp.kubectl_with(&cp.kubeconfig, &["apply", "--server-side", "-f", "-"], Some(policy));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": format!("targetrefs-unique-{namespace}")},
        "spec": {
            "policyName": "routerpolicy-targetrefs-unique",
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
        }
    });
    let out = cp.kubectl_with(&cp.kubeconfig, &["apply", "--server-side", "-f", "-"], Some(&binding.to_string()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A new binding takes a moment to be enforced.
    let probe = policy_yaml(
        namespace,
        "probe",
        json!({"targetRefs": [{"name": "gw"}, {"name": "gw", "namespace": namespace}]}),
    );
    let deadline = std::time::Instant::now() + WAIT;
    while cp.kubectl_with(&cp.kubeconfig, &["create", "--dry-run=server", "-f", "-"], Some(&probe)).status.success() {
        assert!(std::time::Instant::now() < deadline, "the targetRefs admission policy is not enforced");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One manifest per rule of docs/reference.md (tests/fixtures/invalid): the API server refuses it at
/// admission naming the field path that `routerpolicy validate` reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rule_is_refused_at_admission_with_the_path_validate_reports() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "admission").await;
    let schema = routerpolicy::crd::openapi_schema();
    let dir = support::repo_root().join("tests/fixtures/invalid");
    let mut files: Vec<_> =
        std::fs::read_dir(&dir).expect("fixtures").filter_map(Result::ok).map(|e| e.path()).collect();
    files.sort();
    assert!(files.len() >= 40, "expected one fixture per rule, found {}", files.len());
    install_targetrefs_admission_policy(&ns);
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read fixture").replace("${NAMESPACE}", &ns);
        let expect =
            text.lines().find_map(|l| l.strip_prefix("# expect: ")).expect("# expect: line").trim().to_string();

        let docs = routerpolicy::manifests::parse_documents(&file.display().to_string(), &text);
        let checked = routerpolicy::manifests::check_document(&docs[0], &schema, &ns);
        if !checked.findings.errors.iter().any(|e| e.path == expect) {
            failures.push(format!(
                "{}: validate did not report {expect}: {:?}",
                file.display(),
                checked.findings.errors
            ));
        }

        let out = cp.kubectl_with(&cp.kubeconfig, &["apply", "-n", &ns, "-f", "-"], Some(&text));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            failures.push(format!("{}: admitted by the API server", file.display()));
        } else if !stderr.contains(&expect) {
            failures.push(format!("{}: admission error does not name {expect}: {stderr}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{} of {} rules failed:\n{}", failures.len(), files.len(), failures.join("\n"));
}

/// deploy/admission.yaml's targetRefs policy refuses a repeat with validate's first error,
/// word for word, wherever the repeat is (it indexes entries with a list literal, as CEL's
/// list `slice` needs Kubernetes 1.31, so the literal must cover the schema's maxItems).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_targetrefs_admission_message_is_validates_first_error() {
    let text = std::fs::read_to_string(support::repo_root().join("deploy/admission.yaml")).expect("admission.yaml");
    let max = routerpolicy::limits::TARGETS_MAX as usize;
    let literal = format!("[{}]", (0..max).map(|i| i.to_string()).collect::<Vec<_>>().join(", "));
    assert!(text.contains(&format!("\"{literal}.filter(")), "the index literal covers maxItems {max}");

    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "repeats").await;
    install_targetrefs_admission_policy(&ns);
    let own = |name: &str| json!({"name": name, "namespace": ns});
    let mut longest: Vec<_> = (0..max - 1).map(|i| json!({"name": format!("gw{i}")})).collect();
    longest.push(json!({"name": "gw0", "namespace": ns}));
    for refs in [
        vec![json!({"name": "a"}), json!({"name": "b"}), own("b"), own("a")],
        vec![json!({"name": "x"}), json!({"name": "gw"}), own("x"), own("gw")],
        longest,
    ] {
        let manifest = policy_yaml(&ns, "repeats", json!({"targetRefs": refs}));
        let schema = routerpolicy::crd::openapi_schema();
        let docs = routerpolicy::manifests::parse_documents("repeats.yaml", &manifest);
        let checked = routerpolicy::manifests::check_document(&docs[0], &schema, &ns);
        let first = checked.findings.errors.first().expect("validate refuses a repeat");
        let expected = format!("{}: {}", first.path, first.message);
        let out = cp.kubectl_with(&cp.kubeconfig, &["create", "--dry-run=server", "-f", "-"], Some(&manifest));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "admitted: {manifest}");
        assert!(stderr.contains(&expected), "the API server says\n{stderr}\nvalidate says\n{expected}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_target_keeps_what_it_serves_and_refuses_newcomers() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "full").await;
    let _operator = start_operator(&client, &[&ns]);
    let api: Api<ImageVariationPolicy> = Api::namespaced(client.clone(), &ns);
    // Each document is about 400 KB (16 metadata maps of 25 values of 1000 characters, within
    // the bounds), so two fit in the 1 MiB ConfigMap and a third does not.
    let big = |name: &str| {
        let map: serde_json::Map<String, serde_json::Value> =
            (0..25).map(|i| (format!("k{i}"), json!("x".repeat(1000)))).collect();
        let spec = json!({"targetRefs": [{"name": "gw"}], "identity": {"id": name, "metadata": vec![serde_json::Value::Object(map); 16]}});
        (serde_json::from_str::<serde_json::Value>(&policy_yaml(&ns, name, spec.clone())).expect("json"), spec)
    };
    for name in ["a", "b"] {
        let (body, spec) = big(name);
        api.patch(name, &PatchParams::apply("test"), &Patch::Apply(&body)).await.expect("apply");
        wait_for_key(&client, &ns, "gw", &format!("{ns}.{name}.json"), &rendered(spec)).await;
    }
    let (body, _) = big("c");
    api.patch("c", &PatchParams::apply("test"), &Patch::Apply(&body)).await.expect("apply");
    let p = wait_for_condition(&client, &ns, "c", "Synced", "False", Some("TargetFull")).await;
    assert_eq!(p.status.expect("status").targets[0].reason.as_str(), "TargetFull");
    let data = configmap_data(&client, &ns, "gw").await.expect("cm");
    assert!(data.contains_key(&format!("{ns}.a.json")) && data.contains_key(&format!("{ns}.b.json")));
    assert!(!data.contains_key(&format!("{ns}.c.json")));
    wait_for_condition(&client, &ns, "a", "Ready", "True", None).await;
    wait_for_condition(&client, &ns, "b", "Ready", "True", None).await;

    // Room again: the newcomer gets in.
    api.delete("a", &DeleteParams::default()).await.expect("delete a");
    wait_for_condition(&client, &ns, "c", "Ready", "True", None).await;
}

/// The whole product on its real traffic path: `kubectl apply` of a policy → the operator
/// writes the ConfigMap → its data is laid out as kubelet mounts it → `routerpolicy gateway`
/// puts exactly that document on a request to orq; an edit changes the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_puts_the_operators_document_on_real_requests_and_follows_an_edit() {
    use gwsupport::{FakeUpstream, GatewayProcess, KubeletDir, multipart, post_head, send};
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "gateway").await;
    let _operator = start_operator(&client, &[&ns]);
    let cm = "image-gateway-policies";
    let key = format!("{ns}.avatars.json");

    apply_ok(&policy_yaml(&ns, "avatars", retry_spec(cm, 2)));
    let first = rendered(retry_spec(cm, 2));
    wait_for_key(&client, &ns, cm, &key, &first).await;
    let ready = wait_for_condition(&client, &ns, "avatars", "Ready", "True", None).await;
    let config_hash = ready.status.and_then(|s| s.config_hash).expect("configHash");

    let dir = tempfile::tempdir().expect("tempdir");
    let mut mount = KubeletDir::new(dir.path());
    let publish = |data: BTreeMap<String, String>| data.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
    mount.publish(publish(configmap_data(&client, &ns, cm).await.expect("configmap")));
    let upstream = FakeUpstream::start(true).await;
    let gateway = GatewayProcess::start(
        dir.path(),
        &[format!("--config-dir={}", mount.path.display()), format!("--upstream={}", upstream.url())],
    );
    let policy = format!("{ns}.avatars");
    let info = format!("routerpolicy_gateway_policy_info{{policy=\"{policy}\",hash=\"{config_hash}\"}}");
    eventually(WAIT, "the gateway serves the policy with the status's configHash", || async {
        (gateway.metric(&info) == Some(1.0)).then_some(())
    })
    .await;

    let request = |policy: String| {
        let addr = gateway.addr;
        tokio::task::spawn_blocking(move || {
            let body = multipart(
                "b0",
                &[
                    ("image", Some("a.png"), Some("image/png"), &gwsupport::image(4096)),
                    ("orq", None, None, b"{\"retry\":{\"count\":5}}"),
                ],
            );
            send(
                addr,
                &post_head("/v2/router/images/variations", "b0", body.len(), &[("X-Routerpolicy-Policy", &policy)]),
                &body,
                None,
            )
            .expect("response")
        })
    };
    let r = request(policy.clone()).await.expect("task");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.last().orq(), first, "upstream's orq field is the rendered document");

    apply_ok(&policy_yaml(&ns, "avatars", retry_spec(cm, 4)));
    let second = rendered(retry_spec(cm, 4));
    wait_for_key(&client, &ns, cm, &key, &second).await;
    mount.publish(publish(configmap_data(&client, &ns, cm).await.expect("configmap")));
    eventually(WAIT, "the next request carries the edited document", || async {
        let r = request(policy.clone()).await.ok()?;
        (r.status == 200 && upstream.last().orq() == second).then_some(())
    })
    .await;
}
