//! Operating the real binary on the real control plane: `deploy/` is accepted, the shipped
//! RBAC is sufficient (the operator runs under the deploy/ ServiceAccount's token), leader
//! election hands over without losing anything, and `/metrics`, `/healthz`, `/readyz` work.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{Instance, control_plane, eventually, kubeconfig_yaml};

const WAIT: Duration = Duration::from_secs(60);

fn apply_ok(yaml: &str) {
    let out = control_plane().apply(yaml);
    assert!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
}

fn policy(namespace: &str, name: &str, spec: serde_json::Value) -> String {
    json!({
        "apiVersion": "routerpolicy.io/v1alpha1",
        "kind": "ImageVariationPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
    .to_string()
}

/// deploy/ applied server-side, once per test binary; returns a kubeconfig holding a token of
/// the deploy/ ServiceAccount obtained from the TokenRequest API.
fn install_deploy() -> PathBuf {
    static KUBECONFIG: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    KUBECONFIG
        .get_or_init(|| {
            let cp = control_plane();
            let deploy = support::repo_root().join("deploy");
            control_plane().kubectl_ok(&["apply", "--server-side", "-k", deploy.to_str().expect("utf-8")]);
            let token = control_plane().kubectl_ok(&[
                "create",
                "token",
                "routerpolicy",
                "-n",
                "routerpolicy-system",
                "--duration=2h",
            ]);
            let server = cp.kubectl(&["config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"]);
            let server = String::from_utf8_lossy(&server.stdout).into_owned();
            let path = cp.dir.join("operator-sa.kubeconfig");
            std::fs::write(&path, kubeconfig_yaml(&server, token.trim(), "routerpolicy-system"))
                .expect("write kubeconfig");
            path
        })
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_kustomization_is_accepted_by_the_api_server() {
    install_deploy();
    let deployment =
        control_plane().kubectl_ok(&["get", "deployment", "routerpolicy", "-n", "routerpolicy-system", "-o", "json"]);
    let deployment: serde_json::Value = serde_json::from_str(&deployment).expect("json");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(container["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(deployment["spec"]["template"]["spec"]["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert!(container["resources"]["limits"]["memory"].is_string());
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    control_plane().kubectl_ok(&["get", "service", "routerpolicy-metrics", "-n", "routerpolicy-system"]);
    // The ServiceAccount may do what the operator needs and nothing it does not.
    for (verb, resource, expected) in [
        ("patch", "imagevariationpolicies.routerpolicy.io", "yes"),
        ("patch", "configmaps", "yes"),
        ("create", "configmaps", "yes"),
        ("delete", "configmaps", "no"),
        ("get", "secrets", "no"),
        ("create", "events.events.k8s.io", "yes"),
    ] {
        let out = control_plane().kubectl(&[
            "auth",
            "can-i",
            verb,
            resource,
            "--all-namespaces",
            "--as=system:serviceaccount:routerpolicy-system:routerpolicy",
        ]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected, "can-i {verb} {resource}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_rbac_is_sufficient_for_everything_the_operator_does() {
    let cp = control_plane();
    let sa_kubeconfig = install_deploy();
    let client = cp.client().await;
    let team = cp.namespace(&client, "rbac-team").await;
    let gateway = cp.namespace(&client, "rbac-gateway").await;
    let namespaces = format!("--namespaces={team},{gateway}");
    let instance = Instance::start(
        &sa_kubeconfig,
        "rbac",
        &[&namespaces, "--leader-elect=true", "--lease-namespace=routerpolicy-system", "--lease-name=rbac-test"],
    );

    // Same-namespace target, created by the operator.
    apply_ok(&policy(&team, "local", json!({"targetRefs": [{"name": "gw"}], "retry": {"count": 2}})));
    // Cross-namespace target with consent.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &gateway);
    let shared = ConfigMap {
        metadata: ObjectMeta {
            name: Some("shared".into()),
            labels: Some([("routerpolicy.io/gateway".to_string(), "true".to_string())].into()),
            annotations: Some([("routerpolicy.io/allowed-namespaces".to_string(), team.clone())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    cms.create(&PostParams::default(), &shared).await.expect("gateway cm");
    apply_ok(&policy(
        &team,
        "remote",
        json!({"targetRefs": [{"name": "shared", "namespace": gateway}], "cache": {"type": "exact_match"}}),
    ));

    for name in ["local", "remote"] {
        let out = cp.kubectl(&["wait", "-n", &team, "--for=condition=Ready", "--timeout=60s", &format!("ivp/{name}")]);
        assert!(
            out.status.success(),
            "{name}: {}\noperator log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            instance.log()
        );
    }
    let events = control_plane().kubectl_ok(&["get", "events", "-n", &team, "-o", "json"]);
    assert!(events.contains("\"reason\": \"Synced\""), "no Synced event: {events}");

    // Drift repair goes through the admission policy too: a hand edit of the operator's key in
    // the ConfigMap it created is repaired under the ServiceAccount's token.
    let local = Api::<ConfigMap>::namespaced(client.clone(), &team);
    let good = local.get("gw").await.expect("gw").data.unwrap_or_default()[&format!("{team}.local.json")].clone();
    local
        .patch(
            "gw",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {format!("{team}.local.json"): "tampered"}})),
        )
        .await
        .expect("hand edit");
    eventually(WAIT, "the hand edit to be repaired", || async {
        let data = local.get("gw").await.ok()?.data?;
        (data.get(&format!("{team}.local.json")) == Some(&good)).then_some(())
    })
    .await;

    // Deletion completes at once (no finalizer); the key goes from the target right after.
    let out = cp.kubectl(&["delete", "-n", &team, "ivp", "remote", "--timeout=10s"]);
    assert!(out.status.success(), "{}\noperator log:\n{}", String::from_utf8_lossy(&out.stderr), instance.log());
    eventually(WAIT, "the deleted policy's key to leave the shared ConfigMap", || async {
        let data = cms.get("shared").await.ok()?.data.unwrap_or_default();
        (!data.contains_key(&format!("{team}.remote.json"))).then_some(())
    })
    .await;
    assert!(!instance.log().contains("Forbidden"), "the operator hit a permission error:\n{}", instance.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes_and_a_standby_takes_over_without_losing_anything() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "leader").await;
    let _ = cp.kubectl(&["create", "namespace", "routerpolicy-system"]);
    let flags = [
        format!("--namespaces={ns}"),
        "--leader-elect=true".into(),
        "--lease-namespace=routerpolicy-system".into(),
        "--lease-name=leader-test".into(),
        "--lease-duration=6".into(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let a = Instance::start(&cp.kubeconfig, "instance-a", &flags);
    let b = Instance::start(&cp.kubeconfig, "instance-b", &flags);

    // Both become healthy and ready; exactly one leads.
    eventually(WAIT, "both instances ready and exactly one leader", || async {
        let ready = a.get("/readyz")?.0 == 200 && b.get("/readyz")?.0 == 200;
        let healthy = a.get("/healthz")?.0 == 200 && b.get("/healthz")?.0 == 200;
        (ready && healthy && (a.is_leader() ^ b.is_leader())).then_some(())
    })
    .await;
    let (mut leader, standby) = if a.is_leader() { (a, b) } else { (b, a) };

    apply_ok(&policy(&ns, "p1", json!({"targetRefs": [{"name": "gw"}], "retry": {"count": 1}})));
    cp.kubectl_ok(&["wait", "-n", &ns, "--for=condition=Ready", "--timeout=60s", "ivp/p1"]);
    eventually(WAIT, "reconcile counters on the leader", || async {
        (leader.metric("routerpolicy_reconciles_total{outcome=\"success\"}")? >= 1.0).then_some(())
    })
    .await;
    assert!(leader.metric("routerpolicy_configmap_writes_total").unwrap_or(0.0) >= 1.0);
    assert_eq!(standby.metric("routerpolicy_configmap_writes_total"), Some(0.0), "the standby must not write");
    assert_eq!(standby.metric("routerpolicy_reconciles_total"), None, "the standby must not reconcile");

    // SIGTERM the leader: it releases the lease; the standby takes over and picks up a change
    // made while nobody led.
    let stopped_at = Instant::now();
    leader.terminate();
    apply_ok(&policy(&ns, "p2", json!({"targetRefs": [{"name": "gw"}], "retry": {"count": 2}})));
    eventually(WAIT, "the standby to lead", || async { standby.is_leader().then_some(()) }).await;
    let took = stopped_at.elapsed();
    let out = cp.kubectl(&["wait", "-n", &ns, "--for=condition=Ready", "--timeout=60s", "ivp/p2"]);
    assert!(out.status.success(), "{}\nlog:\n{}", String::from_utf8_lossy(&out.stderr), standby.log());
    println!("standby led {took:?} after the leader got SIGTERM (lease duration 6 s)");
    assert!(leader.log().contains("released the leader lease"), "SIGTERM must release the lease:\n{}", leader.log());
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let data = cms.get("gw").await.expect("cm").data.unwrap_or_default();
    assert!(data.contains_key(&format!("{ns}.p1.json")) && data.contains_key(&format!("{ns}.p2.json")), "{data:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_when_reconciles_happen() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "metrics").await;
    let instance = Instance::start(&cp.kubeconfig, "metrics", &[&format!("--namespaces={ns}"), "--leader-elect=false"]);
    eventually(WAIT, "/readyz", || async { (instance.get("/readyz")?.0 == 200).then_some(()) }).await;
    let (_, text) = instance.get("/metrics").expect("metrics");
    assert!(text.contains("# TYPE routerpolicy_reconcile_duration_seconds histogram"), "{text}");
    let before = instance.metric("routerpolicy_reconciles_total{outcome=\"success\"}").unwrap_or(0.0);

    apply_ok(&policy(&ns, "p", json!({"targetRefs": [{"name": "gw"}]})));
    // Not Ready: a cross-namespace target nobody consented to.
    apply_ok(&policy(&ns, "bad", json!({"targetRefs": [{"name": "gw", "namespace": "nobody-consented"}]})));
    eventually(WAIT, "reconcile counters to move", || async {
        let after = instance.metric("routerpolicy_reconciles_total{outcome=\"success\"}")?;
        (after > before
            && instance.metric("routerpolicy_policies{ready=\"true\"}")? >= 1.0
            && instance.metric("routerpolicy_policies{ready=\"false\"}")? >= 1.0
            && instance.metric("routerpolicy_configmap_writes_total")? >= 1.0)
            .then_some(())
    })
    .await;
    assert!(instance.metric("routerpolicy_reconcile_duration_seconds_count").unwrap_or(0.0) >= 1.0);
    assert_eq!(instance.metric("routerpolicy_reconciles_in_flight"), Some(0.0));

    // Touching the policy is not needed for drift: the ConfigMap watch repairs it.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    cms.patch("gw", &PatchParams::default(), &Patch::Merge(json!({"data": {format!("{ns}.p.json"): "tampered"}})))
        .await
        .expect("tamper");
    eventually(WAIT, "drift repaired by the binary", || async {
        let data = cms.get("gw").await.ok()?.data?;
        (data.get(&format!("{ns}.p.json")).map(String::as_str) != Some("tampered")).then_some(())
    })
    .await;
}

/// deploy/'s admission policy bounds what the operator's credential can do to ConfigMaps,
/// whatever its ClusterRole allows: the attacks are refused naming the policy, the operator's
/// real writes pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_service_account_cannot_rewrite_configmaps_it_does_not_manage() {
    let cp = control_plane();
    install_deploy();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "blast").await;
    cp.kubectl_ok(&["create", "configmap", "unrelated", "-n", &ns, "--from-literal=app.conf=x=1"]);
    cp.kubectl_ok(&["create", "configmap", "opted-in", "-n", &ns, "--from-literal=other.json={}"]);
    cp.kubectl_ok(&["label", "configmap", "opted-in", "-n", &ns, "routerpolicy.io/gateway=true"]);
    cp.kubectl_ok(&["create", "configmap", "cluster-config", "-n", "kube-system", "--from-literal=k=v"]);
    let operator = "--as=system:serviceaccount:routerpolicy-system:routerpolicy";
    let as_operator = |args: &[&str]| {
        let mut all = vec![operator];
        all.extend_from_slice(args);
        cp.kubectl(&all)
    };
    let managed = |name: &str, value: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app.kubernetes.io/managed-by: routerpolicy\ndata:\n  {ns}.p.json: '{value}'\n"
        )
    };

    // A new admission policy takes a moment to be enforced: probe it on a throwaway ConfigMap,
    // so the objects checked below are touched only by the attacks themselves.
    cp.kubectl_ok(&["create", "configmap", "probe", "-n", &ns, "--from-literal=k=v"]);
    eventually(WAIT, "the admission policy to refuse the operator a foreign ConfigMap", || async {
        (!as_operator(&["patch", "configmap", "probe", "-n", &ns, "--type=merge", "-p", r#"{"data":{"x":"1"}}"#])
            .status
            .success())
        .then_some(())
    })
    .await;

    let attacks: [(&str, Vec<&str>); 4] = [
        (
            "patch an unrelated ConfigMap",
            vec!["patch", "configmap", "unrelated", "-n", &ns, "--type=merge", "-p", r#"{"data":{"x":"1"}}"#],
        ),
        (
            "rewrite one in kube-system",
            vec![
                "patch",
                "configmap",
                "cluster-config",
                "-n",
                "kube-system",
                "--type=merge",
                "-p",
                r#"{"data":{"k":"evil"}}"#,
            ],
        ),
        (
            "label an unmanaged ConfigMap as managed",
            vec!["label", "configmap", "unrelated", "-n", &ns, "app.kubernetes.io/managed-by=routerpolicy"],
        ),
        ("create an unlabelled ConfigMap", vec!["create", "configmap", "planted", "-n", &ns, "--from-literal=k=v"]),
    ];
    for (what, args) in &attacks {
        let out = as_operator(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: allowed");
        assert!(
            stderr.contains("routerpolicy-configmap-writes"),
            "{what}: the refusal does not name the policy: {stderr}"
        );
    }
    let unrelated = cp.kubectl_ok(&["get", "configmap", "unrelated", "-n", &ns, "-o", "json"]);
    assert!(!unrelated.contains("managed-by") && !unrelated.contains("\"x\""), "{unrelated}");

    // The operator's real work: create a managed target by server-side apply, apply again,
    // patch an opted-in gateway ConfigMap.
    for (what, yaml) in [("create", managed("gw", "{}")), ("update", managed("gw", "{\"retry\":{}}"))] {
        let out = cp.kubectl_with(
            &cp.kubeconfig,
            &[operator, "apply", "--server-side", "--field-manager=routerpolicy", "-f", "-"],
            Some(&yaml),
        );
        assert!(out.status.success(), "{what} a managed ConfigMap: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = as_operator(&[
        "patch",
        "configmap",
        "opted-in",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"data":{"team.p.json":"{}"}}"#,
    ]);
    assert!(out.status.success(), "patch an opted-in ConfigMap: {}", String::from_utf8_lossy(&out.stderr));
    // Other users are not affected.
    cp.kubectl_ok(&["create", "configmap", "someone-elses", "-n", &ns, "--from-literal=k=v"]);
}

/// Outside a pod, `routerpolicy run` needs no leader-election flags: it is off (no Lease
/// namespace needed) and the operator syncs (`--namespaces` only keeps it out of the other
/// tests' namespaces); asked for leader election with a Lease namespace that does
/// not exist, it says so with a hint instead of a bare API error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_outside_a_pod_needs_no_leader_election_flags_and_a_missing_lease_namespace_is_explained() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "noflags").await;
    let instance = Instance::start(&cp.kubeconfig, "noflags", &[&format!("--namespaces={ns}")]);
    apply_ok(&policy(&ns, "p", json!({"targetRefs": [{"name": "gw"}]})));
    let out = cp.kubectl(&["wait", "-n", &ns, "--for=condition=Ready", "--timeout=60s", "ivp/p"]);
    assert!(out.status.success(), "{}\nlog:\n{}", String::from_utf8_lossy(&out.stderr), instance.log());
    assert!(instance.log().contains("leader election is off"), "{}", instance.log());

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_routerpolicy"))
        .args(["run", "--leader-elect=true", "--lease-namespace=no-such-namespace", "--metrics-addr=127.0.0.1:0"])
        .env("KUBECONFIG", &cp.kubeconfig)
        .output()
        .expect("run routerpolicy");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the Lease namespace \"no-such-namespace\" does not exist"), "{stderr}");
    assert!(stderr.contains("hint: create it"), "{stderr}");
}
