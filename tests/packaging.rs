//! The Helm chart and deploy/ on the real control plane (issue 9): `helm lint`, `helm
//! template` accepted server-side, the chart's RBAC, admission policies and security
//! settings equal deploy/'s (operator and gateway), and the documented uninstall of both
//! leaves nothing stuck and no operator-written key without a policy behind it.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use support::{Instance, control_plane, eventually, repo_root};

const WAIT: Duration = Duration::from_secs(30);

/// Runs one of tests/control-plane's scripts, which print the path they built or fetched on
/// their last line.
/// The helm binary: `ROUTERPOLICY_HELM`, else built (or reused) by build-helm.sh.
fn helm_path() -> PathBuf {
    static HELM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    HELM.get_or_init(|| support::tool("ROUTERPOLICY_HELM", "tests/control-plane/build-helm.sh")).clone()
}

/// Runs helm against the test control plane, with its caches in the control plane's dir.
fn helm(args: &[&str]) -> Output {
    let cp = control_plane();
    let home = cp.dir.join("helm");
    Command::new(helm_path())
        .args(args)
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .current_dir(repo_root())
        .output()
        .expect("run helm")
}

fn helm_ok(args: &[&str]) -> String {
    let out = helm(args);
    assert!(
        out.status.success(),
        "helm {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The control plane's Kubernetes version (`1.30.14`), so helm renders for the API server
/// that checks the result.
fn kube_version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        let out = control_plane().kubectl_ok(&["version", "-o", "json"]);
        let version: Value = serde_json::from_str(&out).expect("kubectl version -o json");
        let git = version["serverVersion"]["gitVersion"].as_str().expect("serverVersion.gitVersion");
        git.trim_start_matches('v').to_string()
    })
}

/// `helm template` of the chart as release `routerpolicy` in `routerpolicy-system`.
fn template(extra: &[&str]) -> String {
    template_as("routerpolicy", "routerpolicy-system", extra)
}

/// `helm template` of the chart as `release` in `namespace`, for the control plane's version.
fn template_as(release: &str, namespace: &str, extra: &[&str]) -> String {
    let mut args = vec!["template", release, "charts/routerpolicy", "-n", namespace, "--kube-version", kube_version()];
    args.extend_from_slice(extra);
    helm_ok(&args)
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .filter_map(|d| Value::deserialize(d).ok())
        .filter(|v| v.is_object())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name).unwrap_or_else(|| {
        panic!(
            "no {kind} {name} among {:?}",
            docs.iter().map(|d| format!("{}/{}", d["kind"], d["metadata"]["name"])).collect::<Vec<_>>()
        )
    })
}

fn kustomize(dir: &str) -> Vec<Value> {
    documents(&control_plane().kubectl_ok(&["kustomize", repo_root().join(dir).to_str().expect("utf-8")]))
}

/// The chart's tools (helm-docs, helm-unittest): `ROUTERPOLICY_CHART_TOOLS`, else built (or
/// reused) by build-chart-tools.sh.
fn chart_tool(name: &str) -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| support::tool("ROUTERPOLICY_CHART_TOOLS", "tests/control-plane/build-chart-tools.sh")).join(name)
}

fn run_ok(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("{} (scripts/install.sh installs it): {e}", program.display()));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{} {args:?}:\n{text}", program.display());
    text
}

/// Debian's prometheus package ships promtool (scripts/install.sh installs it).
fn promtool() -> PathBuf {
    std::env::var_os("ROUTERPOLICY_PROMTOOL").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("promtool"))
}

#[test]
fn the_charts_unit_suites_pass() {
    let out = run_ok(&chart_tool("helm-unittest"), &["--color=false", "charts/routerpolicy"]);
    let passed = regex::Regex::new(r"Tests:\s+(\d+) passed").expect("regex");
    let count: usize = passed.captures(&out).and_then(|c| c[1].parse().ok()).unwrap_or(0);
    assert!(count >= 20, "helm-unittest ran {count} tests:\n{out}");
}

#[test]
fn every_alert_passes_its_promtool_unit_test() {
    let out = run_ok(&promtool(), &["test", "rules", "tests/prometheus/alerts.test.yaml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The PrometheusRule the chart renders holds rules promtool accepts, with the runbook base
/// the values give.
#[test]
fn the_rendered_prometheus_rule_passes_promtool_check_rules() {
    let rendered = template(&[
        "--show-only",
        "templates/monitoring.yaml",
        "--set",
        "monitoring.prometheusRule.enabled=true,monitoring.prometheusRule.runbookBaseURL=https://runbooks.example.com/rp",
    ]);
    let docs = documents(&rendered);
    let rule = find(&docs, "PrometheusRule", "routerpolicy");
    let file = std::env::temp_dir().join(format!("routerpolicy-rendered-rules-{}.yaml", std::process::id()));
    std::fs::write(&file, serde_norway::to_string(&rule["spec"]).expect("yaml")).expect("write rules");
    let out = run_ok(&promtool(), &["check", "rules", file.to_str().expect("utf-8")]);
    let _ = std::fs::remove_file(&file);
    assert!(out.contains("SUCCESS: 15 rules found"), "{out}");
    let alerts = rule["spec"]["groups"][1]["rules"].as_array().expect("alerts");
    for alert in alerts {
        let url = alert["annotations"]["runbook_url"].as_str().expect("runbook_url");
        assert!(url.starts_with("https://runbooks.example.com/rp#routerpolicy"), "{url}");
    }
}

/// Every key of values.yaml is in values.schema.json and back, at every level, each with a
/// description; objects the schema closes (`additionalProperties: false`) are compared key by key.
fn compare_keys(path: &str, values: &Value, schema: &Value) {
    assert!(schema["description"].is_string() || path.is_empty(), "{path}: no description in values.schema.json");
    if schema["additionalProperties"] != json!(false) {
        return;
    }
    let props = schema["properties"].as_object().unwrap_or_else(|| panic!("{path}: no properties"));
    let keys = values.as_object().unwrap_or_else(|| panic!("{path}: values.yaml has no object here"));
    for key in keys.keys() {
        assert!(props.contains_key(key), "values.yaml's {path}{key} is not in values.schema.json");
    }
    for (key, sub) in props {
        let value = keys.get(key).unwrap_or_else(|| panic!("values.schema.json's {path}{key} is not in values.yaml"));
        compare_keys(&format!("{path}{key}."), value, sub);
    }
}

#[test]
fn values_yaml_and_its_schema_name_the_same_keys() {
    let root = repo_root().join("charts/routerpolicy");
    let values: Value = serde_norway::from_str(&std::fs::read_to_string(root.join("values.yaml")).expect("values"))
        .expect("values.yaml");
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("values.schema.json")).expect("schema")).expect("json");
    compare_keys("", &values, &schema);
}

#[test]
fn a_mistyped_value_fails_the_install_naming_it() {
    for (set, named) in [
        ("replicaCount=3", "'replicaCount' not allowed"),
        ("gateway.enable=true", "at '/gateway': additional properties 'enable' not allowed"),
        ("logFormat=xml", "at '/logFormat'"),
        ("logLevel=infoo", "at '/logLevel'"),
        ("replicas=two", "at '/replicas': got string, want integer"),
        ("gateway.auth.mode=mtls", "at '/gateway/auth/mode'"),
    ] {
        let out = helm(&["template", "rp", "charts/routerpolicy", "--kube-version", kube_version(), "--set", set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set} was accepted");
        assert!(stderr.contains(named), "{set}: {stderr}");
    }
    helm_ok(&[
        "template",
        "rp",
        "charts/routerpolicy",
        "--kube-version",
        kube_version(),
        "--set",
        "logLevel=info\\,routerpolicy=debug",
    ]);
}

#[test]
fn helm_lint_passes_with_default_and_optional_values() {
    for extra in [
        &[][..],
        &[
            "--set",
            "gateway.enabled=true,gateway.defaultPolicy=team.a,namespaces={a,b},leaderElection.enabled=false,replicas=1,logFormat=text",
        ],
        &["-f", "docs/examples/chart-values-production.yaml"],
    ] {
        let mut args = vec!["lint", "charts/routerpolicy", "--strict", "--kube-version", kube_version()];
        args.extend_from_slice(extra);
        helm_ok(&args);
    }
}

/// Server-side dry run of rendered objects as the test's admin; the applied objects' names.
fn apply_dry_run(rendered: &str, what: &str) -> String {
    let cp = control_plane();
    let out = cp.kubectl_with(
        &cp.kubeconfig,
        &["apply", "--server-side", "--dry-run=server", "--field-manager=chart-test", "-f", "-"],
        Some(rendered),
    );
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_template_is_accepted_by_the_api_server() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "chart").await;
    for values in ["gateway.enabled=false", "gateway.enabled=true,namespaces={a,b},gateway.defaultPolicy=team.a"] {
        let rendered = template_as("rp", &ns, &["--include-crds", "--set", values]);
        let applied = apply_dry_run(&rendered, values);
        for object in ["customresourcedefinition", "deployment.apps/rp-routerpolicy", "validatingadmissionpolicy"] {
            assert!(applied.contains(object), "{values}: {object} not applied:\n{applied}");
        }
    }
}

/// The production example (HA, monitoring, NetworkPolicies) renders objects the real API
/// server accepts, the Prometheus Operator's ServiceMonitor and PrometheusRule validated
/// against that project's own CRDs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_production_values_example_is_accepted_by_the_api_server() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "chart-prod").await;
    let crds = support::last_line_of("tests/control-plane/monitoring-crds.sh");
    for kind in ["servicemonitors", "prometheusrules"] {
        let file = crds.join(format!("monitoring.coreos.com_{kind}.yaml"));
        cp.kubectl_ok(&["apply", "--server-side", "-f", file.to_str().expect("utf-8")]);
        cp.kubectl_ok(&["wait", "--for=condition=Established", &format!("crd/{kind}.monitoring.coreos.com")]);
    }
    let rendered = template_as("rp", &ns, &["-f", "docs/examples/chart-values-production.yaml"]);
    let applied = apply_dry_run(&rendered, "docs/examples/chart-values-production.yaml");
    for object in [
        "networkpolicy.networking.k8s.io/rp-routerpolicy ",
        "networkpolicy.networking.k8s.io/rp-routerpolicy-gateway ",
        "poddisruptionbudget.policy/rp-routerpolicy ",
        "poddisruptionbudget.policy/rp-routerpolicy-gateway ",
        "servicemonitor.monitoring.coreos.com/rp-routerpolicy ",
        "servicemonitor.monitoring.coreos.com/rp-routerpolicy-gateway ",
        "prometheusrule.monitoring.coreos.com/rp-routerpolicy ",
        "configmap/rp-routerpolicy-dashboard ",
    ] {
        assert!(applied.contains(object), "{object}not applied:\n{applied}");
    }
}

/// The fields of a pod template that decide its security and operation.
fn pod_settings(deployment: &Value) -> Value {
    let pod = &deployment["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    json!({
        "podSecurityContext": pod["securityContext"],
        "automountServiceAccountToken": pod["automountServiceAccountToken"],
        "terminationGracePeriodSeconds": pod["terminationGracePeriodSeconds"],
        "containerSecurityContext": c["securityContext"],
        "resources": c["resources"],
        "ports": c["ports"],
        "livenessProbe": c["livenessProbe"],
        "readinessProbe": c["readinessProbe"],
        "lifecycle": c["lifecycle"],
        "env": c["env"],
        "volumeMounts": c["volumeMounts"],
    })
}

#[test]
fn the_charts_rbac_admission_policies_and_security_settings_equal_deploy() {
    let chart = documents(&template(&[]));
    let deploy = kustomize("deploy");
    for (kind, chart_name, deploy_name) in [
        ("ClusterRole", "routerpolicy", "routerpolicy"),
        ("Role", "routerpolicy-leader-election", "routerpolicy-leader-election"),
    ] {
        assert_eq!(find(&chart, kind, chart_name)["rules"], find(&deploy, kind, deploy_name)["rules"], "{kind} rules");
    }
    for (kind, name) in [("ClusterRoleBinding", "routerpolicy"), ("RoleBinding", "routerpolicy-leader-election")] {
        assert_eq!(find(&chart, kind, name)["subjects"], find(&deploy, kind, name)["subjects"], "{kind} subjects");
        assert_eq!(find(&chart, kind, name)["roleRef"], find(&deploy, kind, name)["roleRef"], "{kind} roleRef");
    }
    for name in ["routerpolicy-configmap-writes", "routerpolicy-targetrefs-unique"] {
        assert_eq!(
            find(&chart, "ValidatingAdmissionPolicy", name)["spec"],
            find(&deploy, "ValidatingAdmissionPolicy", name)["spec"],
            "ValidatingAdmissionPolicy {name}"
        );
        assert_eq!(
            find(&chart, "ValidatingAdmissionPolicyBinding", name)["spec"],
            find(&deploy, "ValidatingAdmissionPolicyBinding", name)["spec"],
            "ValidatingAdmissionPolicyBinding {name}"
        );
    }
    let (chart_sa, deploy_sa) =
        (find(&chart, "ServiceAccount", "routerpolicy"), find(&deploy, "ServiceAccount", "routerpolicy"));
    assert_eq!(chart_sa["metadata"]["namespace"], deploy_sa["metadata"]["namespace"]);
    assert_eq!(chart_sa["automountServiceAccountToken"], deploy_sa["automountServiceAccountToken"]);

    let (chart_op, deploy_op) =
        (find(&chart, "Deployment", "routerpolicy"), find(&deploy, "Deployment", "routerpolicy"));
    assert_eq!(pod_settings(chart_op), pod_settings(deploy_op), "operator pod settings");
    assert_eq!(chart_op["spec"]["replicas"], deploy_op["spec"]["replicas"]);
    let args = chart_op["spec"]["template"]["spec"]["containers"][0]["args"].as_array().cloned().unwrap_or_default();
    for arg in deploy_op["spec"]["template"]["spec"]["containers"][0]["args"].as_array().cloned().unwrap_or_default() {
        assert!(args.contains(&arg), "the chart's operator args lack {arg}: {args:?}");
    }
    assert_eq!(
        find(&chart, "Service", "routerpolicy-metrics")["spec"]["ports"],
        find(&deploy, "Service", "routerpolicy-metrics")["spec"]["ports"]
    );
    let budget = |docs: &[Value], name: &str| {
        let spec = &find(docs, "PodDisruptionBudget", name)["spec"];
        (spec["maxUnavailable"].clone(), spec["minAvailable"].clone())
    };
    assert_eq!(budget(&chart, "routerpolicy"), budget(&deploy, "routerpolicy"), "operator PodDisruptionBudget");

    // The optional gateway equals deploy/gateway/ (names aside).
    let chart = documents(&template(&["--set", "gateway.enabled=true,gateway.namespace=image-gateway"]));
    let deploy = kustomize("deploy/gateway");
    let (chart_gw, deploy_gw) =
        (find(&chart, "Deployment", "routerpolicy-gateway"), find(&deploy, "Deployment", "routerpolicy-gateway"));
    assert_eq!(pod_settings(chart_gw), pod_settings(deploy_gw), "gateway pod settings");
    assert_eq!(chart_gw["metadata"]["namespace"], "image-gateway");
    assert_eq!(
        chart_gw["spec"]["template"]["spec"]["volumes"], deploy_gw["spec"]["template"]["spec"]["volumes"],
        "gateway volumes"
    );
    assert_eq!(
        find(&chart, "ServiceAccount", "routerpolicy-gateway")["automountServiceAccountToken"],
        find(&deploy, "ServiceAccount", "routerpolicy-gateway")["automountServiceAccountToken"],
    );
    let gw_args = chart_gw["spec"]["template"]["spec"]["containers"][0]["args"].as_array().cloned().unwrap_or_default();
    for arg in deploy_gw["spec"]["template"]["spec"]["containers"][0]["args"].as_array().cloned().unwrap_or_default() {
        assert!(gw_args.contains(&arg), "the chart's gateway args lack {arg}: {gw_args:?}");
    }
    assert_eq!(
        budget(&chart, "routerpolicy-gateway"),
        budget(&deploy, "routerpolicy-gateway"),
        "gateway PodDisruptionBudget"
    );
    assert_eq!(
        find(&chart, "PodDisruptionBudget", "routerpolicy-gateway")["spec"]["selector"],
        find(&deploy, "PodDisruptionBudget", "routerpolicy-gateway")["spec"]["selector"]
    );
    let (chart_role, deploy_role) =
        (find(&chart, "Role", "routerpolicy-gateway"), find(&deploy, "Role", "routerpolicy-gateway"));
    assert_eq!(chart_role["rules"], deploy_role["rules"], "gateway Role rules");
    assert_eq!(find(&chart, "RoleBinding", "routerpolicy-gateway")["roleRef"]["name"], "routerpolicy-gateway");
    // Who calls (--auth serviceaccount, the default of both): TokenReviews, nothing else.
    assert_eq!(
        find(&chart, "ClusterRole", "routerpolicy-gateway-tokenreview")["rules"],
        find(&deploy, "ClusterRole", "routerpolicy-gateway-tokenreview")["rules"],
        "gateway TokenReview ClusterRole rules"
    );
    let (chart_binding, deploy_binding) = (
        find(&chart, "ClusterRoleBinding", "routerpolicy-gateway-tokenreview-image-gateway"),
        find(&deploy, "ClusterRoleBinding", "routerpolicy-gateway-tokenreview"),
    );
    assert_eq!(chart_binding["subjects"], deploy_binding["subjects"], "TokenReview binding subjects");
    assert!(gw_args.contains(&serde_json::json!("--auth=serviceaccount")), "{gw_args:?}");
    let without = documents(&template(&["--set", "gateway.enabled=true,gateway.auth.mode=none"]));
    assert!(!without.iter().any(|d| d["kind"] == "ClusterRoleBinding"
        && d["metadata"]["name"].as_str().is_some_and(|n| n.contains("tokenreview"))));
    for kind in ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"] {
        assert_eq!(
            find(&chart, kind, "routerpolicy-gateway-reports")["spec"],
            find(&deploy, kind, "routerpolicy-gateway-reports")["spec"],
            "{kind} routerpolicy-gateway-reports"
        );
    }
}

#[test]
fn the_tls_overlay_equals_the_charts_cert_manager_gateway() {
    let values = "gateway.enabled=true,gateway.namespace=image-gateway,gateway.tls.certManager.enabled=true,\
                  gateway.tls.certManager.issuerRef.name=cluster-ca,gateway.tls.certManager.issuerRef.kind=ClusterIssuer";
    let chart = documents(&template(&["--set", values]));
    let deploy = kustomize("deploy/gateway-tls");
    let name = "routerpolicy-gateway";
    let (chart_gw, deploy_gw) = (find(&chart, "Deployment", name), find(&deploy, "Deployment", name));
    assert_eq!(pod_settings(chart_gw), pod_settings(deploy_gw), "TLS gateway pod settings (probes, ports, mounts)");
    let volumes = |d: &Value| d["spec"]["template"]["spec"]["volumes"].clone();
    assert_eq!(volumes(chart_gw), volumes(deploy_gw), "TLS gateway volumes");
    let args =
        |d: &Value| d["spec"]["template"]["spec"]["containers"][0]["args"].as_array().cloned().unwrap_or_default();
    for flag in ["--tls-cert-file=/var/run/secrets/tls/tls.crt", "--tls-key-file=/var/run/secrets/tls/tls.key"] {
        assert!(args(chart_gw).contains(&json!(flag)) && args(deploy_gw).contains(&json!(flag)), "{flag}");
    }
    assert_eq!(find(&chart, "Certificate", name)["spec"], find(&deploy, "Certificate", name)["spec"], "Certificate");
    assert_eq!(find(&deploy, "Certificate", name)["metadata"]["namespace"], "image-gateway");
    assert_eq!(find(&chart, "Service", name)["spec"]["ports"], find(&deploy, "Service", name)["spec"]["ports"]);
}

fn policy(namespace: &str, name: &str, target: &str) -> String {
    json!({
        "apiVersion": "routerpolicy.io/v1alpha1",
        "kind": "ImageVariationPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"targetRefs": [{"name": target}], "retry": {"count": 2, "onCodes": [429]}},
    })
    .to_string()
}

/// Every key in every routerpolicy-managed ConfigMap, with whether its policy exists.
fn orphan_keys() -> Vec<String> {
    let cp = control_plane();
    let cms: Value = serde_json::from_str(&cp.kubectl_ok(&[
        "get",
        "configmaps",
        "-A",
        "-l",
        "app.kubernetes.io/managed-by=routerpolicy",
        "-o",
        "json",
    ]))
    .expect("json");
    let has_crd = cp.kubectl(&["get", "crd", "imagevariationpolicies.routerpolicy.io"]).status.success();
    let mut orphans = Vec::new();
    for cm in cms["items"].as_array().cloned().unwrap_or_default() {
        for key in cm["data"].as_object().map(|d| d.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
            let Some((ns, rest)) = key.split_once('.') else { continue };
            let name = rest.trim_end_matches(".json");
            let exists = has_crd && cp.kubectl(&["get", "ivp", "-n", ns, name]).status.success();
            if !exists {
                orphans.push(format!("{}/{}: {key}", cm["metadata"]["namespace"], cm["metadata"]["name"]));
            }
        }
    }
    orphans
}

fn keys_of(ns: &str, cm: &str) -> String {
    let out = control_plane().kubectl(&["get", "cm", cm, "-n", ns, "-o", "jsonpath={.data}"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The README's uninstall, for one way of installing: policies deleted first (the operator
/// prunes their keys), then the operator; a namespace still holding a policy is deleted
/// afterwards; last, the gateway ConfigMaps routerpolicy created.
async fn install_use_and_uninstall(how: &str) {
    let cp = control_plane();
    let client = cp.client().await;
    let team = cp.namespace(&client, &format!("team-{how}")).await;
    let late = cp.namespace(&client, &format!("late-{how}")).await;
    let deploy = repo_root().join("deploy");
    let deploy = deploy.to_str().expect("utf-8");
    if how == "kustomize" {
        cp.kubectl_ok(&["apply", "--server-side", "-k", deploy]);
    } else {
        // deploy/ takes routerpolicy-system with it (a namespace stays Terminating here: no
        // namespace controller), so the chart goes to another.
        helm_ok(&[
            "install",
            "routerpolicy",
            "charts/routerpolicy",
            "-n",
            "routerpolicy-helm",
            "--create-namespace",
            "--skip-crds",
        ]);
    }
    cp.kubectl_ok(&["get", "clusterrole", "routerpolicy"]);
    // No kubelet here: the operator runs as a process, as the Deployment's pod would.
    let mut operator =
        Instance::start(&cp.kubeconfig, &format!("uninstall-{how}"), &[&format!("--namespaces={team},{late}")]);
    for (ns, name) in [(&team, "a"), (&team, "b"), (&late, "c")] {
        let out = cp.apply(&policy(ns, name, "gw"));
        assert!(out.status.success(), "apply: {}", String::from_utf8_lossy(&out.stderr));
    }
    eventually(WAIT, "keys written", || async {
        let (t, l) = (keys_of(&team, "gw"), keys_of(&late, "gw"));
        (t.contains(&format!("{team}.a.json"))
            && t.contains(&format!("{team}.b.json"))
            && l.contains(&format!("{late}.c.json")))
        .then_some(())
    })
    .await;

    // 1. Delete the policies while the operator runs: it prunes their keys.
    cp.kubectl_ok(&["delete", "ivp", "--all", "-n", &team, "--timeout=20s"]);
    eventually(WAIT, "the team's keys pruned", || async { (!keys_of(&team, "gw").contains(".json")).then_some(()) })
        .await;
    // 2. Remove the operator.
    operator.terminate();
    if how == "kustomize" {
        cp.kubectl_ok(&["delete", "-k", deploy, "--wait=false"]);
    } else {
        helm_ok(&["uninstall", "routerpolicy", "-n", "routerpolicy-helm"]);
    }
    for (kind, name) in [
        ("clusterrole", "routerpolicy"),
        ("clusterrolebinding", "routerpolicy"),
        ("validatingadmissionpolicy", "routerpolicy-configmap-writes"),
        ("validatingadmissionpolicybinding", "routerpolicy-targetrefs-unique"),
    ] {
        assert!(!cp.kubectl(&["get", kind, name]).status.success(), "{how}: {kind}/{name} left after uninstall");
    }
    // A namespace that still holds a policy: the namespace controller empties and finalizes
    // it with no operator installed (no finalizer on policies).
    cp.delete_namespace(&late).await;
    assert!(orphan_keys().is_empty(), "{how}: keys without a policy: {:?}", orphan_keys());
    // 3. What stays, as the README says: the emptied gateway ConfigMaps (the operator never
    // deletes); the README's last step removes them.
    assert!(cp.kubectl(&["get", "cm", "gw", "-n", &team]).status.success());
    cp.kubectl_ok(&["delete", "configmaps", "-A", "-l", "app.kubernetes.io/managed-by=routerpolicy"]);
    assert!(!cp.kubectl(&["get", "cm", "gw", "-n", &team]).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_with_kustomize_then_helm_leaves_nothing_stuck() {
    // One after the other: both install the same cluster-scoped names.
    install_use_and_uninstall("kustomize").await;
    install_use_and_uninstall("helm").await;
}

/// The Dockerfile's build stage sees only what it COPYs; the manifest must load from that
/// (cargo refuses a manifest whose declared bench or example files are missing).
#[test]
fn the_dockerfile_copies_everything_the_manifest_needs() {
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).expect("Dockerfile");
    let context = tempfile::tempdir().expect("tempdir");
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from=")) {
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        let (sources, _destination) = words.split_at(words.len() - 1);
        for source in sources {
            let status =
                Command::new("cp").arg("-r").arg(repo_root().join(source)).arg(context.path()).status().expect("cp");
            assert!(status.success(), "COPY {source}: missing in the repository");
        }
    }
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--offline", "--format-version", "1"])
        .current_dir(context.path())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "the image's build context cannot load Cargo.toml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
