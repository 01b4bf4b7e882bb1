//! `routerpolicy explain` on the real control plane with real processes: the operator and two
//! gateway replicas in API mode, the live answer for an allowed and a refused caller, a frozen
//! replica named as not serving a new document, the offline answer (`-f`) agreeing with the
//! live one, the documented read-only ClusterRole being enough, and the plugin form run through
//! the real kubectl.

mod gwsupport;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use gwsupport::GatewayProcess;
use kube::{Api, Client};
use routerpolicy::api::ImageVariationPolicy;
use serde_json::{Value, json};
use support::{Instance, control_plane, eventually, kubeconfig_yaml};

const WAIT: Duration = Duration::from_secs(60);
const CONFIGMAP: &str = "image-gateway-policies";
const BINARY: &str = env!("CARGO_BIN_EXE_routerpolicy");

/// A gateway replica in API mode, reporting every second, its report expiring after 3 s.
fn gateway(kubeconfig: &Path, ns: &str, identity: &str) -> GatewayProcess {
    let args = vec![
        format!("--config-map={ns}/{CONFIGMAP}"),
        format!("--identity={identity}"),
        "--upstream=http://127.0.0.1:9".to_string(),
        "--report-interval=1s".to_string(),
        "--report-lease-duration=3s".to_string(),
    ];
    let kubeconfig = kubeconfig.to_str().expect("utf-8");
    GatewayProcess::start_with_env(&control_plane().dir, &args, &[("KUBECONFIG", kubeconfig)])
}

/// The policy `ns/p` as a manifest: one target, and `spec.callers` admitting `caller_ns/app`.
fn manifest(ns: &str, caller_ns: &str, count: u32) -> Value {
    json!({
        "apiVersion": "routerpolicy.io/v1alpha1",
        "kind": "ImageVariationPolicy",
        "metadata": {"name": "p", "namespace": ns},
        "spec": {
            "targetRefs": [{"name": CONFIGMAP}],
            "retry": {"count": count, "onCodes": [429]},
            "callers": [{"namespace": caller_ns, "serviceAccount": "app"}],
        },
    })
}

fn apply(manifest: &Value) {
    let out = control_plane().apply(&manifest.to_string());
    assert!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs `routerpolicy` with `args`; `path` goes first on PATH when given.
fn run(program: &Path, args: &[&str], path: Option<&Path>) -> Output {
    let mut command = Command::new(program);
    command.args(args);
    if let Some(dir) = path {
        let inherited = std::env::var_os("PATH").unwrap_or_default();
        let joined = std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&inherited)))
            .expect("PATH");
        command.env("PATH", joined);
    }
    command.env_remove("KUBECONFIG").output().expect("run")
}

/// `explain -o json` with `args`: its exit code and the parsed answer.
fn explain_json(kubeconfig: &Path, args: &[&str]) -> (i32, Value) {
    let kubeconfig = format!("--kubeconfig={}", kubeconfig.display());
    let all = [&["explain", "-o", "json", kubeconfig.as_str()][..], args].concat();
    let out = run(Path::new(BINARY), &all, None);
    parsed(&out)
}

fn parsed(out: &Output) -> (i32, Value) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("explain printed no JSON ({e}): {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
    });
    (out.status.code().unwrap_or(-1), value)
}

/// What each replica of the first target serves, by name.
fn serves(answer: &Value) -> Vec<(String, String)> {
    let replicas = answer["targets"][0]["replicas"].as_array().cloned().unwrap_or_default();
    let mut serves: Vec<_> = replicas
        .iter()
        .map(|r| (r["name"].as_str().unwrap_or("").to_string(), r["serves"].as_str().unwrap_or("").to_string()))
        .collect();
    serves.sort();
    serves
}

async fn synced_at_current_generation(client: &Client, ns: &str) -> ImageVariationPolicy {
    let api: Api<ImageVariationPolicy> = Api::namespaced(client.clone(), ns);
    eventually(WAIT, "the policy is synced at its current generation", || async {
        let p = api.get("p").await.ok()?;
        let status = p.status.as_ref()?;
        let synced = status.conditions.iter().any(|c| c.type_ == "Synced" && c.status == "True");
        (synced && status.observed_generation == p.metadata.generation).then_some(p)
    })
    .await
}

/// A kubeconfig for ServiceAccount `ns/sa` (bound to the documented explain ClusterRole) whose
/// current context points nowhere: only `--context test` reaches the cluster.
fn member_kubeconfig(ns: &str, sa: &str) -> PathBuf {
    let cp = control_plane();
    let role = support::repo_root().join("deploy/explain/clusterrole.yaml");
    cp.kubectl_ok(&["apply", "--server-side", "-f", role.to_str().expect("utf-8")]);
    cp.kubectl_ok(&["create", "serviceaccount", sa, "-n", ns]);
    let subject = format!("{ns}:{sa}");
    let binding =
        ["create", "rolebinding", sa, "--clusterrole=routerpolicy-explain", "--serviceaccount", &subject, "-n", ns];
    cp.kubectl_ok(&binding);
    let token = cp.kubectl_ok(&["create", "token", sa, "-n", ns, "--duration=1h"]);
    let good = kubeconfig_yaml(&cp.server, token.trim(), "default");
    let nowhere = "- name: nowhere\n  cluster:\n    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\n";
    let with_nowhere = good
        .replacen("clusters:\n", &format!("clusters:\n{nowhere}"), 1)
        .replacen("contexts:\n", "contexts:\n- name: nowhere\n  context:\n    cluster: nowhere\n    user: test\n", 1)
        .replace("current-context: test", "current-context: nowhere");
    let path = cp.dir.join(format!("member-{ns}.kubeconfig"));
    std::fs::write(&path, with_nowhere).expect("write kubeconfig");
    path
}

/// The field paths of an answer as docs/explain.md names them (`targets[].replicas[].name`):
/// documents and the entries of the policy's lists are not walked into.
fn field_paths(value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(fields) => {
            for (name, field) in fields {
                let at = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
                if name == "document" {
                    out.push(at);
                } else {
                    field_paths(field, &at, out);
                }
            }
        }
        Value::Array(items) if path == "targets" || path == "targets[].replicas" => {
            for item in items {
                field_paths(item, &format!("{path}[]"), out);
            }
        }
        Value::Array(_) => out.push(format!("{path}[]")),
        _ => out.push(path.to_string()),
    }
}

/// Every field of `answer` is in the JSON table of docs/explain.md.
fn assert_documented(answer: &Value) {
    let docs = std::fs::read_to_string(support::repo_root().join("docs/explain.md")).expect("docs/explain.md");
    let mut paths = Vec::new();
    field_paths(answer, "", &mut paths);
    for path in paths {
        assert!(docs.contains(&format!("`{path}`")), "docs/explain.md does not document `{path}` of {answer}");
    }
}

/// LIST requests the API server counted for `resource`.
async fn lists_of(client: &Client, resource: &str) -> f64 {
    let request = http::Request::get("/metrics").body(Vec::new()).expect("request");
    let text = client.request_text(request).await.expect("apiserver /metrics");
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{") && l.contains("verb=\"LIST\""))
        .filter(|l| l.contains(&format!("resource=\"{resource}\"")))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_answers_for_callers_names_a_frozen_replica_and_agrees_offline() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "explain").await;
    let caller_ns = format!("{ns}-b");
    let kubeconfig = cp.gateway_credentials(&ns);
    let _operator = Instance::start(&cp.kubeconfig, "explain-op", &[&format!("--namespaces={ns}")]);
    let replicas = [gateway(&kubeconfig, &ns, "gw-0"), gateway(&kubeconfig, &ns, "gw-1")];
    apply(&manifest(&ns, &caller_ns, 2));
    let policy = synced_at_current_generation(&client, &ns).await;
    let hash = policy.status.as_ref().and_then(|s| s.config_hash.clone()).expect("configHash");
    let policy_ref = format!("{ns}/p");
    let both_current = vec![("gw-0".to_string(), "current".to_string()), ("gw-1".to_string(), "current".to_string())];

    // An allowed caller: the entry of spec.callers that admits it, the target, both replicas.
    let allowed = format!("system:serviceaccount:{caller_ns}:app");
    let answer = eventually(WAIT, "both replicas serve the document", || async {
        let (code, answer) = explain_json(&cp.kubeconfig, &[&policy_ref, "--as", &allowed]);
        assert_eq!(code, 0, "{answer}");
        (serves(&answer) == both_current).then_some(answer)
    })
    .await;
    assert_eq!(answer["source"], "cluster");
    assert_eq!(answer["caller"]["subject"], allowed.as_str());
    assert_eq!(answer["caller"]["allowed"], true);
    assert!(answer["caller"]["reason"].as_str().is_some_and(|r| r.contains("spec.callers[0]")), "{answer}");
    assert_eq!(answer["policy"]["hash"], hash.as_str());
    assert_eq!(answer["policy"]["configHash"], hash.as_str());
    let target = &answer["targets"][0];
    assert_eq!(target["configMap"], format!("{ns}/{CONFIGMAP}"));
    assert_eq!(target["key"], format!("{ns}.p.json"));
    assert_eq!((&target["hash"], &target["current"]), (&json!(hash), &json!(true)));
    assert_eq!(answer["request"]["value"], format!("{ns}.p"));
    assert_documented(&answer);

    // A refused caller: exit code 1, and why.
    let (code, refused) = explain_json(&cp.kubeconfig, &[&policy_ref, "--as", &format!("{caller_ns}/worker")]);
    assert_eq!(code, 1, "{refused}");
    assert_eq!(refused["caller"]["allowed"], false);
    let reason = refused["caller"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains(&format!("{caller_ns}/app")) && reason.contains("no spec.callers entry"), "{reason}");
    assert_documented(&refused);

    // Freeze gw-1, change the policy: gw-0 serves the new document, gw-1 is named as not.
    replicas[1].signal("STOP");
    apply(&manifest(&ns, &caller_ns, 4));
    let changed = synced_at_current_generation(&client, &ns).await;
    let new_hash = changed.status.as_ref().and_then(|s| s.config_hash.clone()).expect("configHash");
    assert_ne!(new_hash, hash);
    let answer = eventually(WAIT, "gw-0 serves the new document, gw-1 does not", || async {
        let (_, answer) = explain_json(&cp.kubeconfig, &[&policy_ref, "--as", &allowed, "--show-document=false"]);
        let s = serves(&answer);
        let frozen_behind = s.get(1).is_some_and(|(name, serves)| name == "gw-1" && serves != "current");
        (s.first() == Some(&("gw-0".into(), "current".into())) && frozen_behind).then_some(answer)
    })
    .await;
    assert_eq!(answer["policy"]["hash"], new_hash.as_str());
    assert!(answer["policy"].get("document").is_none(), "--show-document=false leaves the document out");
    let text =
        run(Path::new(BINARY), &["explain", &policy_ref, &format!("--kubeconfig={}", cp.kubeconfig.display())], None);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("replicas: 1/2 serve the current document") && text.contains("gw-1"), "{text}");
    replicas[1].signal("CONT");

    // Offline, from the manifest alone: the same document, target, key, hash and verdict.
    let file = cp.dir.join(format!("explain-{ns}.yaml"));
    std::fs::write(&file, manifest(&ns, &caller_ns, 4).to_string()).expect("write manifest");
    let out = run(
        Path::new(BINARY),
        &["explain", "-o", "json", "-f", file.to_str().expect("utf-8"), &policy_ref, "--as", &allowed],
        None,
    );
    let (code, offline) = parsed(&out);
    assert_eq!(code, 0, "{offline}");
    assert_eq!(offline["source"], "manifests");
    for pointer in [
        "/policy/hash",
        "/policy/document",
        "/caller",
        "/request",
        "/targets/0/configMap",
        "/targets/0/key",
        "/targets/0/hash",
        "/targets/0/current",
    ] {
        let live = explain_json(&cp.kubeconfig, &[&policy_ref, "--as", &allowed]).1;
        assert_eq!(offline.pointer(pointer), live.pointer(pointer), "{pointer} differs offline");
    }

    // A team member with only the documented ClusterRole, bound in the namespace, gets the
    // answer; and explain reads the one policy, never a list of them.
    let member = member_kubeconfig(&ns, "member");
    let lists = lists_of(&client, "imagevariationpolicies").await;
    let (code, answer) = explain_json(&member, &["p", "-n", &ns, "--context", "test"]);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(serves(&answer).len(), 2, "{answer}");
    assert!(answer["targets"][0].get("replicasError").is_none(), "{answer}");
    assert_eq!(lists_of(&client, "imagevariationpolicies").await, lists, "explain listed policies");
    let kubeconfig = format!("--kubeconfig={}", member.display());
    let nowhere = run(Path::new(BINARY), &["explain", "p", "-n", &ns, &kubeconfig], None);
    let stderr = String::from_utf8_lossy(&nowhere.stderr);
    assert_eq!(nowhere.status.code(), Some(2), "the current context points nowhere: {stderr}");
    assert!(stderr.contains(&format!("cannot read ImageVariationPolicy {ns}/p")), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_is_a_kubectl_plugin() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "plugin").await;
    apply(&manifest(&ns, "elsewhere", 2));
    let bin = cp.dir.join(format!("plugin-{ns}"));
    std::fs::create_dir_all(&bin).expect("plugin dir");
    std::os::unix::fs::symlink(BINARY, bin.join("kubectl-routerpolicy")).expect("link the plugin");
    let kubectl = cp.kubectl_path();
    let kubeconfig = format!("--kubeconfig={}", cp.kubeconfig.display());

    let listed = run(&kubectl, &["plugin", "list"], Some(&bin));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("kubectl-routerpolicy"), "{listed:?}");
    let out = run(
        &kubectl,
        &["routerpolicy", "explain", "p", "-n", &ns, "-o", "json", &kubeconfig, "--context", "test"],
        Some(&bin),
    );
    let (code, answer) = parsed(&out);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["policy"]["namespace"], ns.as_str());
    assert_eq!(answer["targets"][0]["configMap"], format!("{ns}/{CONFIGMAP}"));
    let out = run(
        &kubectl,
        &["routerpolicy", "explain", "p", "-n", &ns, "--as", "elsewhere/worker", &kubeconfig],
        Some(&bin),
    );
    assert_eq!(out.status.code(), Some(1), "a refused caller's exit code comes through kubectl: {out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("REFUSED"), "{out:?}");
    // The other subcommands work through kubectl too.
    let file = cp.dir.join(format!("plugin-{ns}.yaml"));
    std::fs::write(&file, manifest(&ns, "elsewhere", 2).to_string()).expect("write manifest");
    let out = run(&kubectl, &["routerpolicy", "validate", "-f", file.to_str().expect("utf-8")], Some(&bin));
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("p"), "{out:?}");
    let out = run(&kubectl, &["routerpolicy", "--version"], Some(&bin));
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")),
        "{out:?}"
    );
}
