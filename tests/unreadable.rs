//! Objects the admission schema no longer guards: this test binary replaces the CRD with a
//! looser one (as an older CRD version or a hand-edited CRD would be), stores policies the
//! strict CRD refuses, and checks that the controller refuses them itself, keeps the last good
//! document, and that one unreadable object does not stall the others.

mod support;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::DynamicObject;
use routerpolicy::api::ImageVariationPolicy;
use routerpolicy::operator::controller::{self, Settings};
use routerpolicy::operator::metrics::Metrics;
use serde_json::{Value, json};
use support::{control_plane, eventually};

const WAIT: Duration = Duration::from_secs(30);

/// Installs the CRD with an open schema: spec and status accept anything.
fn install_looser_crd() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut crd = serde_json::to_value(routerpolicy::crd::crd()).expect("crd");
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = json!({
            "type": "object",
            "properties": {
                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }
        });
        let cp = control_plane();
        let out = cp.kubectl_with(
            &cp.kubeconfig,
            &["apply", "--server-side", "--force-conflicts", "--field-manager=looser", "-f", "-"],
            Some(&crd.to_string()),
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // Wait until the looser schema is served: a weight of 5 is admitted.
        let probe = r#"{"apiVersion":"routerpolicy.io/v1alpha1","kind":"ImageVariationPolicy","metadata":{"name":"probe","namespace":"default"},"spec":{"targetRefs":[{"name":"x"}],"loadBalancer":{"type":"weight_based","models":[{"model":"openai/a","weight":5}]}}}"#;
        for _ in 0..100 {
            let out = cp.kubectl_with(&cp.kubeconfig, &["apply", "--dry-run=server", "-f", "-"], Some(probe));
            if out.status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("the looser CRD was not served in time");
    });
}

fn start_operator(client: &kube::Client, ns: &str) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let settings = Settings { namespaces: vec![ns.to_string()], ..Settings::default() };
    tokio::spawn(controller::run(client.clone(), settings, Arc::new(Metrics::default()), async move {
        let _ = stopped.await;
    }));
    stop
}

fn apply(ns: &str, name: &str, spec: Value) {
    let doc = json!({"apiVersion": "routerpolicy.io/v1alpha1", "kind": "ImageVariationPolicy", "metadata": {"name": name, "namespace": ns}, "spec": spec});
    let out = control_plane().apply(&doc.to_string());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

async fn condition(client: &kube::Client, ns: &str, name: &str, type_: &str) -> Option<(String, String, String)> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &kube::api::ApiResource::erase::<ImageVariationPolicy>(&()));
    let obj = api.get(name).await.ok()?;
    let conditions = obj.data.get("status")?.get("conditions")?.as_array()?.clone();
    conditions.iter().find(|c| c["type"] == type_).map(|c| {
        (
            c["status"].as_str().unwrap_or_default().to_string(),
            c["reason"].as_str().unwrap_or_default().to_string(),
            c["message"].as_str().unwrap_or_default().to_string(),
        )
    })
}

async fn key_value(client: &kube::Client, ns: &str, key: &str) -> Option<String> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    cms.get_opt("gw").await.ok()??.data?.get(key).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_object_keeps_last_good_and_does_not_stall_the_watch() {
    install_looser_crd();
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "unreadable").await;
    let _stop = start_operator(&client, &ns);
    let key = format!("{ns}.p.json");

    apply(&ns, "p", json!({"targetRefs": [{"name": "gw"}], "retry": {"count": 2}}));
    let good = eventually(WAIT, "the good document", || async { key_value(&client, &ns, &key).await }).await;
    assert_eq!(good, r#"{"retry":{"count":2}}"#);

    // A type the Rust types cannot read, and an unknown field.
    apply(&ns, "p", json!({"targetRefs": [{"name": "gw"}], "retry": {"count": "three"}, "surprise": true}));
    let (_, reason, message) = eventually(WAIT, "Stalled=True on the unreadable object", || async {
        condition(&client, &ns, "p", "Stalled").await.filter(|c| c.0 == "True")
    })
    .await;
    assert_eq!(reason, "ValidationFailed");
    assert!(message.contains("cannot be read"), "{message}");

    // The watch goes on: another policy still syncs, and the unreadable one's document stays.
    apply(&ns, "q", json!({"targetRefs": [{"name": "gw"}], "cache": {"type": "exact_match"}}));
    eventually(WAIT, "the other policy synced", || async { key_value(&client, &ns, &format!("{ns}.q.json")).await })
        .await;
    assert_eq!(key_value(&client, &ns, &key).await.as_deref(), Some(good.as_str()));

    // Deleting the unreadable object still removes its key.
    let out = cp.kubectl(&["delete", "-n", &ns, "ivp", "p", "--timeout=30s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually(WAIT, "its key removed", || async { key_value(&client, &ns, &key).await.is_none().then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_the_schema_would_refuse_are_refused_by_the_controller() {
    install_looser_crd();
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "loose").await;
    let _stop = start_operator(&client, &ns);
    let key = format!("{ns}.w.json");

    apply(
        &ns,
        "w",
        json!({"targetRefs": [{"name": "gw"}], "loadBalancer": {"type": "weight_based", "models": [{"model": "openai/a", "weight": 1}]}}),
    );
    let good = eventually(WAIT, "the good document", || async { key_value(&client, &ns, &key).await }).await;

    apply(
        &ns,
        "w",
        json!({"targetRefs": [{"name": "gw"}], "loadBalancer": {"type": "weight_based", "models": [{"model": "openai/a", "weight": 5}]}}),
    );
    let (_, reason, message) = eventually(WAIT, "Accepted=False", || async {
        condition(&client, &ns, "w", "Accepted").await.filter(|c| c.0 == "False")
    })
    .await;
    assert_eq!(reason, "ValidationFailed");
    assert!(message.contains("spec.loadBalancer.models[0].weight: must be less than or equal to 1"), "{message}");
    let (ready, _, _) = condition(&client, &ns, "w", "Ready").await.expect("Ready");
    assert_eq!(ready, "False");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(key_value(&client, &ns, &key).await, Some(good), "the last good document must stay");
}
