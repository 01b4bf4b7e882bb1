//! Ready means served (docs/gateway.md), on the real control plane with real processes: the
//! operator (`routerpolicy run`) and gateway replicas (`routerpolicy gateway --config-map`)
//! running under a token of deploy/gateway's ServiceAccount (TokenRequest), each reporting
//! what it serves in a Lease, and the policy's `Served` and `Ready` conditions following.

mod gwsupport;
mod support;

use std::time::Duration;

use gwsupport::GatewayProcess;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::ListParams;
use kube::{Api, Client};
use routerpolicy::api::ImageVariationPolicy;
use serde_json::json;
use support::{Instance, control_plane, eventually};

const WAIT: Duration = Duration::from_secs(60);
const CONFIGMAP: &str = "image-gateway-policies";

/// A gateway replica in API mode, reporting every second.
fn gateway(kubeconfig: &std::path::Path, ns: &str, identity: &str, extra: &[&str]) -> GatewayProcess {
    gateway_with_env(kubeconfig, ns, identity, extra, &[])
}

fn gateway_with_env(
    kubeconfig: &std::path::Path,
    ns: &str,
    identity: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> GatewayProcess {
    let mut args = vec![
        format!("--config-map={ns}/{CONFIGMAP}"),
        format!("--identity={identity}"),
        "--upstream=http://127.0.0.1:9".to_string(),
        "--report-interval=1s".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let kubeconfig = kubeconfig.to_str().expect("utf-8");
    let env = [&[("KUBECONFIG", kubeconfig)][..], env].concat();
    GatewayProcess::start_with_env(&control_plane().dir, &args, &env)
}

/// The operator, for this namespace only, with `extra` flags.
fn operator(ns: &str, name: &str, extra: &[&str]) -> Instance {
    let mut flags = vec![format!("--namespaces={ns}")];
    flags.extend(extra.iter().map(|s| s.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Instance::start(&control_plane().kubeconfig, name, &flags)
}

fn apply_policy(ns: &str, name: &str, spec: serde_json::Value) {
    let yaml = json!({
        "apiVersion": "routerpolicy.io/v1alpha1",
        "kind": "ImageVariationPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    });
    let out = control_plane().apply(&yaml.to_string());
    assert!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
}

fn spec(extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({"targetRefs": [{"name": CONFIGMAP}], "retry": {"count": 2}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    spec
}

fn condition(policy: &ImageVariationPolicy, type_: &str) -> Option<Condition> {
    policy.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_).cloned()
}

/// Waits until `type_` has `status` (and `reason`) at the policy's current generation.
async fn wait_for(
    client: &Client,
    ns: &str,
    name: &str,
    type_: &str,
    status: &str,
    reason: Option<&str>,
) -> ImageVariationPolicy {
    let api: Api<ImageVariationPolicy> = Api::namespaced(client.clone(), ns);
    eventually(WAIT, &format!("{ns}/{name} {type_}={status} {reason:?}"), || async {
        let p = api.get(name).await.ok()?;
        let c = condition(&p, type_)?;
        let current = p.status.as_ref()?.observed_generation == p.metadata.generation;
        (current && c.status == status && reason.is_none_or(|r| c.reason == r)).then_some(p)
    })
    .await
}

async fn report_leases(client: &Client, ns: &str) -> Vec<String> {
    let api: Api<Lease> = Api::namespaced(client.clone(), ns);
    let list = api.list(&ListParams::default().labels("routerpolicy.io/gateway-replica=true")).await.expect("leases");
    list.items.into_iter().filter_map(|l| l.metadata.name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_means_every_gateway_replica_serves_the_current_document() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "served").await;
    let kubeconfig = control_plane().gateway_credentials(&ns);
    let _operator = operator(&ns, "served-op", &[]);
    let replicas = [gateway(&kubeconfig, &ns, "gw-0", &[]), gateway(&kubeconfig, &ns, "gw-1", &[])];
    eventually(WAIT, "both replicas report", || async { (report_leases(&client, &ns).await.len() == 2).then_some(()) })
        .await;

    for (round, count) in [(1, 2), (2, 4)] {
        apply_policy(&ns, "p", spec(json!({"retry": {"count": count}})));
        let p = wait_for(&client, &ns, "p", "Ready", "True", None).await;
        let hash = p.status.as_ref().and_then(|s| s.config_hash.clone()).expect("configHash");
        // Ready says traffic uses it: every replica serves this very document right now.
        for replica in &replicas {
            assert_eq!(
                replica.served_hash(&format!("{ns}.p")),
                Some(hash.clone()),
                "round {round}:\n{}",
                replica.log()
            );
        }
        let served = condition(&p, "Served").expect("Served");
        assert_eq!(served.status, "True");
        assert_eq!(served.message, format!("served by 2/2 gateway replicas of {ns}/{CONFIGMAP}"));
        let target = &p.status.as_ref().expect("status").targets[0];
        assert_eq!((target.served_replicas, target.reporting_replicas), (Some(2), Some(2)));
        assert!(condition(&p, "Reconciling").is_none() && condition(&p, "Stalled").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_refuses_a_document_is_named_and_keeps_serving_the_last_good_one() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "rejected").await;
    let kubeconfig = control_plane().gateway_credentials(&ns);
    let _operator = operator(&ns, "rejected-op", &[]);
    let accepting = gateway(&kubeconfig, &ns, "gw-big", &[]);
    let refusing = gateway(&kubeconfig, &ns, "gw-small", &["--max-document-bytes=64"]);

    apply_policy(&ns, "p", spec(json!({})));
    let good = wait_for(&client, &ns, "p", "Ready", "True", None).await;
    let good_hash = good.status.and_then(|s| s.config_hash).expect("hash");

    apply_policy(&ns, "p", spec(json!({"name": "a trace name long enough to pass the small replica's bound"})));
    let p = wait_for(&client, &ns, "p", "Served", "False", Some("ServeRejected")).await;
    let served = condition(&p, "Served").expect("Served");
    assert!(served.message.contains("gw-small"), "{}", served.message);
    assert!(served.message.contains("exceeds --max-document-bytes (64)"), "{}", served.message);
    assert_eq!(condition(&p, "Stalled").map(|c| (c.status, c.reason)), Some(("True".into(), "ServeRejected".into())));
    assert_eq!(condition(&p, "Ready").map(|c| c.status), Some("False".into()));
    let new_hash = p.status.and_then(|s| s.config_hash).expect("hash");
    assert_eq!(accepting.served_hash(&format!("{ns}.p")), Some(new_hash));
    assert_eq!(refusing.served_hash(&format!("{ns}.p")), Some(good_hash), "the last good document stays served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_replica_turns_stale_and_recovers_when_it_thaws() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "stale").await;
    let kubeconfig = control_plane().gateway_credentials(&ns);
    let _operator = operator(&ns, "stale-op", &["--serve-wait=1", "--serve-stale-after=3"]);
    let lively = gateway(&kubeconfig, &ns, "gw-lively", &[]);
    let frozen = gateway(&kubeconfig, &ns, "gw-frozen", &["--report-lease-duration=60s"]);
    apply_policy(&ns, "p", spec(json!({})));
    wait_for(&client, &ns, "p", "Ready", "True", None).await;

    frozen.signal("STOP");
    apply_policy(&ns, "p", spec(json!({"retry": {"count": 5}})));
    let p = wait_for(&client, &ns, "p", "Served", "False", Some("ServeStale")).await;
    assert!(condition(&p, "Served").is_some_and(|c| c.message.contains("gw-frozen")));
    assert_eq!(condition(&p, "Stalled").map(|c| c.reason), Some("ServeStale".into()));
    let hash = p.status.and_then(|s| s.config_hash).expect("hash");
    assert_eq!(lively.served_hash(&format!("{ns}.p")), Some(hash.clone()));

    frozen.signal("CONT");
    wait_for(&client, &ns, "p", "Ready", "True", None).await;
    assert_eq!(frozen.served_hash(&format!("{ns}.p")), Some(hash));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_dying_or_the_operator_restarting_write_no_status() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "quiet").await;
    let kubeconfig = control_plane().gateway_credentials(&ns);
    let mut first_operator = operator(&ns, "quiet-op", &[]);
    let short = ["--report-lease-duration=4s"];
    let dying = gateway(&kubeconfig, &ns, "gw-dying", &short);
    let leaving = gateway(&kubeconfig, &ns, "gw-leaving", &short);
    apply_policy(&ns, "p", spec(json!({})));
    let p = wait_for(&client, &ns, "p", "Ready", "True", None).await;
    assert_eq!(condition(&p, "Served").map(|c| c.reason), Some("Served".into()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let api: Api<ImageVariationPolicy> = Api::namespaced(client.clone(), &ns);
    // A status write changes the object's resourceVersion: the API server's own record.
    let before = api.get("p").await.expect("policy").metadata.resource_version;

    // A third replica starts, one dies without releasing its Lease, one leaves on SIGTERM.
    let third = gateway(&kubeconfig, &ns, "gw-third", &short);
    eventually(WAIT, "the third replica reports", || async {
        report_leases(&client, &ns).await.iter().any(|l| l.ends_with("gw-third")).then_some(())
    })
    .await;
    dying.signal("KILL");
    drop(leaving);
    eventually(WAIT, "the leaving replica released its Lease", || async {
        (!report_leases(&client, &ns).await.iter().any(|l| l.ends_with("gw-leaving"))).then_some(())
    })
    .await;
    // The dead replica's Lease stays (outside a pod no owner collects it; with a pod the
    // garbage collector does, see a_dead_replicas_report_goes_with_its_pod); the operator stops
    // counting it when it expires (4 s), at its next sweep (2 s).
    tokio::time::sleep(Duration::from_secs(8)).await;

    // The operator restarts; nothing changed.
    first_operator.terminate();
    let second_operator = operator(&ns, "quiet-op-2", &[]);
    eventually(WAIT, "the new operator has planned its targets", || async {
        (second_operator.metric("routerpolicy_reconciles_total").unwrap_or(0.0) >= 1.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let p = api.get("p").await.expect("policy");
    assert_eq!(
        p.metadata.resource_version, before,
        "no status write for replica start, death, leave or an operator restart"
    );
    assert_eq!(second_operator.metric("routerpolicy_status_writes_total"), Some(0.0));
    assert_eq!(condition(&p, "Ready").map(|c| c.status), Some("True".into()));
    assert_eq!(third.served_hash(&format!("{ns}.p")), p.status.and_then(|s| s.config_hash));
}

/// A replica in a pod owns its report Lease through that Pod: when the replica dies without
/// releasing it and its Pod is deleted, the garbage collector of the test control plane's
/// kube-controller-manager deletes the report, as in a real cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_report_goes_with_its_pod() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "podgc").await;
    let kubeconfig = control_plane().gateway_credentials(&ns);
    let _operator = operator(&ns, "podgc-op", &[]);
    apply_policy(&ns, "p", spec(json!({})));
    // The replica's Pod (nothing schedules it here; it only has to exist and own the report).
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "gw-pod", "namespace": ns},
        "spec": {"containers": [{"name": "gateway", "image": "routerpolicy/routerpolicy"}]}});
    let out = cp.apply(&pod.to_string());
    assert!(out.status.success(), "create pod: {}", String::from_utf8_lossy(&out.stderr));
    let uid = cp.kubectl_ok(&["get", "pod", "gw-pod", "-n", &ns, "-o", "jsonpath={.metadata.uid}"]);
    let replica = gateway_with_env(&kubeconfig, &ns, "gw-pod", &[], &[("POD_NAME", "gw-pod"), ("POD_UID", uid.trim())]);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let owned = || async {
        let list = leases.list(&ListParams::default().labels("routerpolicy.io/gateway-replica=true")).await.ok()?;
        let owners: Vec<String> = list
            .items
            .iter()
            .flat_map(|l| l.metadata.owner_references.clone().unwrap_or_default())
            .map(|o| format!("{}/{}/{}", o.kind, o.name, o.uid))
            .collect();
        Some(owners)
    };
    eventually(WAIT, "the replica reports, its Lease owned by its Pod", || async {
        owned().await.filter(|o| o.contains(&format!("Pod/gw-pod/{}", uid.trim())))
    })
    .await;

    replica.signal("KILL");
    cp.kubectl_ok(&["delete", "pod", "gw-pod", "-n", &ns]);
    eventually(WAIT, "the garbage collector deleted the dead replica's report with its Pod", || async {
        owned().await.filter(|o| o.is_empty())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_token_reads_only_its_configmap_and_writes_only_report_leases() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "gwrbac").await;
    let kubeconfig = control_plane().gateway_credentials(&ns);
    let can = |args: &[&str]| {
        let out = cp.kubectl_with(&kubeconfig, &[&["auth", "can-i"][..], args, &["-n", &ns]].concat(), None);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(can(&["get", &format!("configmaps/{CONFIGMAP}")]), "yes");
    assert_eq!(can(&["watch", &format!("configmaps/{CONFIGMAP}")]), "yes");
    assert_eq!(can(&["get", "configmaps/another"]), "no");
    assert_eq!(can(&["list", "configmaps"]), "no", "only with the field selector naming its ConfigMap");
    assert_eq!(can(&["get", "secrets"]), "no");
    assert_eq!(can(&["create", "leases"]), "yes");

    // A gateway started on another ConfigMap is refused by the API server and never ready.
    let mut args = vec![format!("--config-map={ns}/another"), "--upstream=http://127.0.0.1:9".into()];
    args.push("--identity=gw-another".into());
    let kube = kubeconfig.to_str().expect("utf-8");
    let elsewhere = GatewayProcess::start_with_env(&cp.dir, &args, &[("KUBECONFIG", kube)]);
    eventually(WAIT, "the API server refuses the other ConfigMap's watch", || async {
        let log = elsewhere.log();
        (log.contains("forbidden") || log.contains("Forbidden")).then_some(())
    })
    .await;
    assert_eq!(gwsupport::get(elsewhere.addr, "/readyz").map(|r| r.status), Some(503), "{}", elsewhere.log());

    // RBAC allows Leases; the admission policy keeps them to report Leases.
    let foreign = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "routerpolicy-leader", "namespace": ns}, "spec": {"holderIdentity": "me"}});
    let denied = eventually(WAIT, "the admission policy is enforced", || async {
        let out = cp.kubectl_with(&kubeconfig, &["create", "-f", "-"], Some(&foreign.to_string()));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (!out.status.success() && stderr.contains("routerpolicy-gateway-reports")).then_some(stderr)
    })
    .await;
    assert!(denied.contains("may only write report Leases"), "{denied}");
    let report = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "routerpolicy-gateway-by-hand", "namespace": ns,
                     "labels": {"routerpolicy.io/gateway-replica": "true"}},
        "spec": {"holderIdentity": "me"}});
    let out = cp.kubectl_with(&kubeconfig, &["create", "-f", "-"], Some(&report.to_string()));
    assert!(out.status.success(), "a report Lease is allowed: {}", String::from_utf8_lossy(&out.stderr));
}
