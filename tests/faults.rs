//! Faults, on the real control plane (its own etcd + kube-apiserver, shared by the tests of
//! this binary, which run one at a time because some restart the API server). Each fault
//! happens during a burst of edits, and each test ends with every document in its target
//! and every policy `Ready` at its current generation. The operator is the real binary.

mod gwsupport;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use gwsupport::{FakeUpstream, GatewayProcess};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use routerpolicy::api::ImageVariationPolicy;
use routerpolicy::render::render_policy;
use serde_json::{Value, json};
use support::{Instance, control_plane, eventually};

const WAIT: Duration = Duration::from_secs(90);
const POLICIES: usize = 12;

/// One test at a time: some restart the shared API server.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn spec(round: i64) -> Value {
    json!({"targetRefs": [{"name": "gw"}], "retry": {"count": 1 + round % 5, "onCodes": [429, 503]}, "timeout": {"callTimeout": 1000 + round}})
}

fn name(i: usize) -> String {
    format!("p{i}")
}

/// Applies round `round` to policies `0..count`, all at once; each write is retried until
/// the API server takes it (it may be restarting).
async fn burst(client: &Client, ns: &str, count: usize, round: i64) {
    let api: Api<ImageVariationPolicy> = Api::namespaced(client.clone(), ns);
    let writes = (0..count).map(|i| {
        let api = api.clone();
        let body = json!({"apiVersion": "routerpolicy.io/v1alpha1", "kind": "ImageVariationPolicy", "metadata": {"name": name(i), "namespace": ns}, "spec": spec(round)});
        async move {
            eventually(WAIT, "a policy write to be accepted", || async {
                api.patch(&name(i), &PatchParams::apply("fault-test").force(), &Patch::Apply(&body)).await.ok().map(|_| ())
            })
            .await
        }
    });
    futures::future::join_all(writes).await;
}

fn rendered(round: i64) -> String {
    render_policy(&serde_json::from_value(spec(round)).expect("spec")).json.to_string()
}

async fn data(client: &Client, ns: &str, cm: &str) -> Option<BTreeMap<String, String>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    api.get_opt(cm).await.ok().flatten().map(|cm| cm.data.unwrap_or_default())
}

/// Every policy `0..count` at round `round` in `gw`, every policy of `ns` Ready at its
/// generation, and none of `gone` left in the ConfigMap.
async fn converged(client: &Client, ns: &str, count: usize, round: i64, gone: &[usize], log: impl Fn() -> String) {
    let api: Api<ImageVariationPolicy> = Api::namespaced(client.clone(), ns);
    let what = format!("{count} documents at round {round} in {ns}/gw, all Ready at their generation");
    let done = tokio::time::timeout(WAIT, async {
        loop {
            let ok = async {
                let data = data(client, ns, "gw").await?;
                let documents =
                    (0..count).all(|i| data.get(&format!("{ns}.{}.json", name(i))) == Some(&rendered(round)));
                let pruned = gone.iter().all(|i| !data.contains_key(&format!("{ns}.{}.json", name(*i))));
                let list = api.list(&Default::default()).await.ok()?;
                let ready = list.items.len() >= count
                    && list.items.iter().all(|p| {
                        p.status.as_ref().is_some_and(|s| {
                            s.conditions.iter().any(|c| {
                                c.type_ == "Ready"
                                    && c.status == "True"
                                    && c.observed_generation == p.metadata.generation
                            })
                        })
                    });
                (documents && pruned && ready).then_some(())
            };
            if ok.await.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(done.is_ok(), "timed out waiting for: {what}\noperator log:\n{}", log());
}

/// One `routerpolicy run` without leader election, watching `namespaces` (comma-separated).
fn single_operator(name: &str, namespaces: &str) -> Instance {
    let cp = control_plane();
    Instance::start(&cp.kubeconfig, name, &[&format!("--namespaces={namespaces}"), "--leader-elect=false"])
}

fn leader_flags(ns: &str, lease: &str) -> Vec<String> {
    vec![
        format!("--namespaces={ns}"),
        "--leader-elect=true".into(),
        "--lease-namespace=routerpolicy-system".into(),
        format!("--lease-name={lease}"),
        "--lease-duration=4".into(),
    ]
}

/// Two replicas `<name>-a` and `<name>-b` electing a leader on Lease `fault-<name>`, with
/// `extra` flags: (the leader, the standby) once exactly one leads.
async fn two_replicas(ns: &str, name: &str, extra: &[&str]) -> (Instance, Instance) {
    let cp = control_plane();
    let _ = cp.kubectl(&["create", "namespace", "routerpolicy-system"]);
    let flags = leader_flags(ns, &format!("fault-{name}"));
    let flags: Vec<&str> = flags.iter().map(String::as_str).chain(extra.iter().copied()).collect();
    let a = Instance::start(&cp.kubeconfig, &format!("{name}-a"), &flags);
    let b = Instance::start(&cp.kubeconfig, &format!("{name}-b"), &flags);
    eventually(WAIT, "one leader", || async { (a.is_leader() ^ b.is_leader()).then_some(()) }).await;
    if a.is_leader() { (a, b) } else { (b, a) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_leader_during_a_burst_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "kill").await;
    let (leader, standby) = two_replicas(&ns, "kill", &[]).await;

    burst(&client, &ns, POLICIES, 1).await;
    converged(&client, &ns, POLICIES, 1, &[], || leader.log()).await;

    // SIGKILL mid-burst: no lease release, no graceful stop.
    let edits = burst(&client, &ns, POLICIES, 2);
    let kill = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        leader.signal("KILL");
    };
    futures::join!(edits, kill);
    burst(&client, &ns, POLICIES / 2, 3).await;
    eventually(WAIT, "the standby to lead", || async { standby.is_leader().then_some(()) }).await;
    burst(&client, &ns, POLICIES, 3).await;
    converged(&client, &ns, POLICIES, 3, &[], || standby.log()).await;
}

/// The writes an operator's log records (ConfigMap applies, status writes) after byte `from`.
fn writes_logged_after(log: &str, from: usize) -> Vec<String> {
    let after = log.get(from..).unwrap_or("");
    after
        .lines()
        .filter(|l| l.contains("applied gateway ConfigMap") || l.contains("wrote status"))
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_past_its_lease_writes_nothing_after_it_thaws() {
    let _serial = SERIAL.lock().await;
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "split").await;
    let debug_status = "--log-level=info,routerpolicy::operator::status_writer=debug";
    let (leader, standby) = two_replicas(&ns, "split", &[debug_status]).await;
    burst(&client, &ns, POLICIES, 1).await;
    converged(&client, &ns, POLICIES, 1, &[], || leader.log()).await;
    assert!(!writes_logged_after(&leader.log(), 0).is_empty(), "the leader's writes are logged");

    // Frozen past its lease (4 s): the standby takes over and serves edits meanwhile.
    leader.signal("STOP");
    let frozen_at = leader.log().len();
    eventually(WAIT, "the standby to lead", || async { standby.is_leader().then_some(()) }).await;
    burst(&client, &ns, POLICIES, 2).await;
    converged(&client, &ns, POLICIES, 2, &[], || standby.log()).await;

    // Thawed, with edits arriving: the old leader stands down and writes nothing.
    leader.signal("CONT");
    burst(&client, &ns, POLICIES, 3).await;
    converged(&client, &ns, POLICIES, 3, &[], || standby.log()).await;
    // Standing down (leader gauge 0, or the process gone) ends its controller: what it could
    // write, it wrote before this.
    eventually(WAIT, "the thawed replica to stand down", || async { (!leader.is_leader()).then_some(()) }).await;
    let stale = writes_logged_after(&leader.log(), frozen_at);
    assert!(stale.is_empty(), "the thawed leader wrote with a stale view:\n{}", stale.join("\n"));
    // Its fence saw the gap: whatever woke first, nothing was written and it stood down.
    eventually(WAIT, "the thawed leader's fence to say why it stands down", || async {
        leader.log().contains("did not run for longer than its lease allows").then_some(())
    })
    .await;
    assert!(standby.is_leader(), "the standby still leads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_restart_during_a_burst_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "restart").await;
    let operator = single_operator("restart", &ns);
    burst(&client, &ns, POLICIES, 1).await;
    converged(&client, &ns, POLICIES, 1, &[], || operator.log()).await;

    let edits = burst(&client, &ns, POLICIES, 2);
    let restart = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        tokio::task::spawn_blocking(|| control_plane().restart_apiserver()).await.expect("restart");
    };
    futures::join!(edits, restart);
    let client = cp.client().await;
    burst(&client, &ns, POLICIES, 3).await;
    converged(&client, &ns, POLICIES, 3, &[], || operator.log()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_operator_resumes_after_compaction_with_410_gone_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "frozen").await;
    let operator = single_operator("frozen", &ns);
    burst(&client, &ns, POLICIES + 2, 1).await;
    converged(&client, &ns, POLICIES + 2, 1, &[], || operator.log()).await;

    // Frozen: edits and deletions happen, history is compacted, the API server restarts
    // (its watch cache starts after the compaction), then the operator resumes from resource
    // versions that no longer exist.
    operator.signal("STOP");
    burst(&client, &ns, POLICIES, 2).await;
    let api: Api<ImageVariationPolicy> = Api::namespaced(client.clone(), &ns);
    for i in [POLICIES, POLICIES + 1] {
        api.delete(&name(i), &DeleteParams::default()).await.expect("delete while frozen");
    }
    let revision = tokio::task::spawn_blocking(|| {
        let revision = control_plane().compact_etcd();
        control_plane().restart_apiserver();
        revision
    })
    .await
    .expect("compact and restart");
    let client = cp.client().await;
    burst(&client, &ns, POLICIES, 3).await;
    operator.signal("CONT");
    converged(&client, &ns, POLICIES, 3, &[POLICIES, POLICIES + 1], || operator.log()).await;
    println!("resumed after compaction at etcd revision {revision}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_deleted_while_no_operator_runs_are_pruned_after_start() {
    let _serial = SERIAL.lock().await;
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "pruned").await;
    let mut first = single_operator("pruned-1", &ns);
    burst(&client, &ns, POLICIES + 3, 1).await;
    converged(&client, &ns, POLICIES + 3, 1, &[], || first.log()).await;
    first.terminate();

    // Nobody runs: deletions complete at once (no finalizer), edits pile up.
    let gone = [POLICIES, POLICIES + 1, POLICIES + 2];
    for i in gone {
        cp.kubectl_ok(&["delete", "-n", &ns, "ivp", &name(i), "--timeout=10s"]);
    }
    burst(&client, &ns, POLICIES, 2).await;
    let stale = data(&client, &ns, "gw").await.expect("cm");
    assert!(gone.iter().all(|i| stale.contains_key(&format!("{ns}.{}.json", name(*i)))), "nothing pruned yet");

    let second = single_operator("pruned-2", &ns);
    burst(&client, &ns, POLICIES, 3).await;
    converged(&client, &ns, POLICIES, 3, &gone, || second.log()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_holding_policies_is_deleted_with_no_operator_installed() {
    let _serial = SERIAL.lock().await;
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "nsdelete").await;
    let mut operator = single_operator("nsdelete", &ns);
    burst(&client, &ns, POLICIES, 1).await;
    burst(&client, &ns, POLICIES, 2).await;
    converged(&client, &ns, POLICIES, 2, &[], || operator.log()).await;
    operator.terminate();

    cp.delete_namespace(&ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_finalizer_is_removed_so_deletion_completes() {
    let _serial = SERIAL.lock().await;
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "legacy").await;
    // As an earlier version left it: the policy carries routerpolicy.io/cleanup.
    let api: Api<ImageVariationPolicy> = Api::namespaced(client.clone(), &ns);
    let mut policy: ImageVariationPolicy = serde_json::from_value(json!({
        "apiVersion": "routerpolicy.io/v1alpha1", "kind": "ImageVariationPolicy",
        "metadata": {"name": name(0), "finalizers": ["routerpolicy.io/cleanup", "example.com/keep"]},
        "spec": spec(1)
    }))
    .expect("policy");
    policy.metadata.namespace = Some(ns.clone());
    api.create(&PostParams::default(), &policy).await.expect("create");
    let operator = single_operator("legacy", &ns);
    burst(&client, &ns, POLICIES, 2).await;
    converged(&client, &ns, POLICIES, 2, &[], || operator.log()).await;
    let finalizers = eventually(WAIT, "the legacy finalizer to be removed", || async {
        let p = api.get(&name(0)).await.ok()?;
        let f = p.metadata.finalizers.unwrap_or_default();
        (!f.iter().any(|f| f == "routerpolicy.io/cleanup")).then_some(f)
    })
    .await;
    assert_eq!(finalizers, ["example.com/keep"], "other finalizers stay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_scoped_instance_never_writes_a_policy_of_another_namespace() {
    let _serial = SERIAL.lock().await;
    let cp = control_plane();
    let client = cp.client().await;
    let team = cp.namespace(&client, "scoped-team").await;
    let gw = cp.namespace(&client, "scoped-gw").await;
    let other = cp.namespace(&client, "scoped-other").await;
    let shared = ConfigMap {
        metadata: ObjectMeta {
            name: Some("shared".into()),
            labels: Some([("routerpolicy.io/gateway".to_string(), "true".to_string())].into()),
            annotations: Some([("routerpolicy.io/allowed-namespaces".to_string(), "*".to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), &gw).create(&PostParams::default(), &shared).await.expect("cm");
    let target = json!({"targetRefs": [{"name": "shared", "namespace": gw}], "retry": {"count": 2}});
    for ns in [&other, &team] {
        let body = json!({"apiVersion": "routerpolicy.io/v1alpha1", "kind": "ImageVariationPolicy", "metadata": {"name": "p", "namespace": ns}, "spec": target});
        Api::<ImageVariationPolicy>::namespaced(client.clone(), ns)
            .patch("p", &PatchParams::apply("fault-test"), &Patch::Apply(&body))
            .await
            .expect("policy");
    }
    let operator = single_operator("scoped", &format!("{team},{gw}"));
    burst(&client, &team, POLICIES, 1).await;
    converged(&client, &team, POLICIES, 1, &[], || operator.log()).await;
    eventually(WAIT, "the team's policy in the shared gateway ConfigMap", || async {
        data(&client, &gw, "shared").await?.contains_key(&format!("{team}.p.json")).then_some(())
    })
    .await;
    burst(&client, &team, POLICIES, 2).await;
    converged(&client, &team, POLICIES, 2, &[], || operator.log()).await;
    let shared = data(&client, &gw, "shared").await.expect("cm");
    assert!(!shared.contains_key(&format!("{other}.p.json")), "a policy outside --namespaces was written: {shared:?}");
    let foreign = Api::<ImageVariationPolicy>::namespaced(client.clone(), &other).get("p").await.expect("policy");
    assert!(foreign.status.is_none(), "the instance wrote status on a policy outside --namespaces");
}

/// One call through `gateway` for `policy` (`<namespace>.<name>`): its status and the hash of
/// the document it applied.
async fn call(gateway: &GatewayProcess, policy: &str) -> (u16, Option<String>) {
    let (addr, policy) = (gateway.addr, policy.to_string());
    tokio::task::spawn_blocking(move || gwsupport::call_policy(addr, &policy, 1024).expect("a response"))
        .await
        .expect("call task")
}

/// A gateway replica in API mode for `ns`'s ConfigMap, in front of `upstream`, reporting
/// every second, with the gateway ServiceAccount's `kubeconfig`.
fn api_mode_gateway(ns: &str, kubeconfig: &std::path::Path, upstream: &FakeUpstream) -> GatewayProcess {
    let args = vec![
        format!("--config-map={ns}/image-gateway-policies"),
        format!("--upstream={}", upstream.url()),
        "--auth=none".to_string(),
        "--report-interval=1s".to_string(),
    ];
    GatewayProcess::start_with_env(&control_plane().dir, &args, &[("KUBECONFIG", kubeconfig.to_str().expect("utf-8"))])
}

/// The policy `ns/p` aiming at the gateway's ConfigMap, Ready at its generation: its hash.
async fn served_policy(client: &Client, ns: &str, count: u32, operator: &Instance) -> String {
    let manifest = json!({"apiVersion": "routerpolicy.io/v1alpha1", "kind": "ImageVariationPolicy",
        "metadata": {"name": "p", "namespace": ns},
        "spec": {"targetRefs": [{"name": "image-gateway-policies"}], "retry": {"count": count}}});
    let out = control_plane().apply(&manifest.to_string());
    assert!(out.status.success(), "apply: {}", String::from_utf8_lossy(&out.stderr));
    let api: Api<ImageVariationPolicy> = Api::namespaced(client.clone(), ns);
    let done = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(p) = api.get("p").await
                && let Some(status) = &p.status
                && status.observed_generation == p.metadata.generation
                && status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                && let Some(hash) = &status.config_hash
            {
                return hash.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    done.unwrap_or_else(|_| panic!("p never became Ready (served) at its generation\n{}", operator.log()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_mode_gateway_serves_through_an_api_server_outage_and_follows_its_configmap() {
    let _serial = SERIAL.lock().await;
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "outage").await;
    let kubeconfig = cp.gateway_credentials(&ns);
    let mut operator = single_operator("outage", &ns);
    let upstream = FakeUpstream::start(false).await;
    let gateway = api_mode_gateway(&ns, &kubeconfig, &upstream);
    let policy = format!("{ns}.p");
    let first = served_policy(&client, &ns, 1, &operator).await;
    assert_eq!(call(&gateway, &policy).await, (200, Some(first.clone())));
    let source_up = || gateway.metric("routerpolicy_gateway_source_up");

    // The API server goes away: the gateway says so, stays ready and keeps serving what it has.
    tokio::task::spawn_blocking(|| control_plane().stop_apiserver()).await.expect("stop");
    eventually(WAIT, "the gateway marks its source down", || async { (source_up() == Some(0.0)).then_some(()) }).await;
    assert_eq!(call(&gateway, &policy).await, (200, Some(first.clone())), "served through the outage");
    assert_eq!(gwsupport::get(gateway.addr, "/readyz").map(|r| r.status), Some(200), "ready through the outage");
    tokio::task::spawn_blocking(|| control_plane().start_apiserver()).await.expect("start");

    // Back: the watch resumes without a restart, the next edit is served, and the replica's
    // report counts again (Ready means every reporting replica serves it).
    eventually(WAIT, "the gateway's source is up again", || async { (source_up() == Some(1.0)).then_some(()) }).await;
    let client = cp.client().await;
    let second = served_policy(&client, &ns, 2, &operator).await;
    assert_ne!(second, first);
    eventually(WAIT, "the edit is served", || async {
        (call(&gateway, &policy).await == (200, Some(second.clone()))).then_some(())
    })
    .await;

    // Its ConfigMap deleted (no operator to repair it): the policy is no longer served;
    // re-created: it is served again.
    operator.terminate();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    configmaps.delete("image-gateway-policies", &DeleteParams::default()).await.expect("delete the ConfigMap");
    eventually(WAIT, "a deleted ConfigMap's policy is not served", || async {
        (call(&gateway, &policy).await.0 == 404).then_some(())
    })
    .await;
    let operator = single_operator("outage-2", &ns);
    let third = served_policy(&client, &ns, 2, &operator).await;
    assert_eq!(third, second, "the same document, written again");
    eventually(WAIT, "the re-created ConfigMap is served", || async {
        (call(&gateway, &policy).await == (200, Some(second.clone()))).then_some(())
    })
    .await;
    assert!(gateway.metric("routerpolicy_gateway_source_up") == Some(1.0), "{}", gateway.log());
}

/// The gateway's own token refused (its RoleBinding gone when the API server comes back, so
/// every watch and read is 403): it keeps serving what it has, stays ready, marks its source
/// down, and resumes on its own once the binding is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_mode_gateway_whose_token_is_refused_keeps_serving_and_resumes() {
    let _serial = SERIAL.lock().await;
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "refused").await;
    let kubeconfig = cp.gateway_credentials(&ns);
    let operator = single_operator("refused", &ns);
    let upstream = FakeUpstream::start(false).await;
    let gateway = api_mode_gateway(&ns, &kubeconfig, &upstream);
    let policy = format!("{ns}.p");
    let first = served_policy(&client, &ns, 1, &operator).await;
    assert_eq!(call(&gateway, &policy).await, (200, Some(first.clone())));
    let source_up = || gateway.metric("routerpolicy_gateway_source_up");

    // The binding goes, and the API server restarts so the open watch must be made again.
    let binding = cp.kubectl_ok(&["get", "rolebinding", "routerpolicy-gateway", "-n", &ns, "-o", "json"]);
    cp.kubectl_ok(&["delete", "rolebinding", "routerpolicy-gateway", "-n", &ns]);
    tokio::task::spawn_blocking(|| control_plane().restart_apiserver()).await.expect("restart");
    eventually(WAIT, "the gateway marks its refused source down", || async {
        (source_up() == Some(0.0)).then_some(())
    })
    .await;
    assert!(gateway.log().contains("forbidden") || gateway.log().contains("Forbidden"), "{}", gateway.log());
    assert_eq!(call(&gateway, &policy).await, (200, Some(first.clone())), "served while refused");
    assert_eq!(gwsupport::get(gateway.addr, "/readyz").map(|r| r.status), Some(200), "ready while refused");

    // The binding is back: the source comes up without a restart and the next edit is served.
    let out = cp.kubectl_with(&cp.kubeconfig, &["create", "-f", "-"], Some(&strip_server_fields(&binding)));
    assert!(out.status.success(), "re-create the binding: {}", String::from_utf8_lossy(&out.stderr));
    eventually(WAIT, "the gateway's source is up again", || async { (source_up() == Some(1.0)).then_some(()) }).await;
    let client = cp.client().await;
    let second = served_policy(&client, &ns, 2, &operator).await;
    eventually(WAIT, "the edit is served", || async {
        (call(&gateway, &policy).await == (200, Some(second.clone()))).then_some(())
    })
    .await;
}

/// An object as `kubectl get -o json` prints it, without what the server set (so it can be
/// created again).
fn strip_server_fields(json: &str) -> String {
    let mut value: Value = serde_json::from_str(json).expect("json");
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in ["resourceVersion", "uid", "creationTimestamp", "managedFields"] {
            meta.remove(field);
        }
    }
    value.to_string()
}
