//! The `routerpolicy` binary as users and pipelines run it: exit codes, output formats,
//! golden renders of the examples.

#[path = "cmd/mod.rs"]
mod cmd;

use std::path::PathBuf;
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn routerpolicy(args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_routerpolicy"));
    cmd::output(command.args(args).current_dir(root()), stdin)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Compares with a golden file; `UPDATE_GOLDEN=1` rewrites it.
fn golden(name: &str, actual: &str) {
    let path = root().join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing {}; run with UPDATE_GOLDEN=1", path.display()));
    assert!(expected == actual, "{} differs from the output (UPDATE_GOLDEN=1 regenerates):\n{actual}", path.display());
}

#[test]
fn crd_subcommand_prints_the_committed_crd() {
    let out = routerpolicy(&["crd"], None);
    assert!(out.status.success());
    let committed =
        std::fs::read_to_string(root().join("crds/imagevariationpolicies.routerpolicy.io.yaml")).expect("crds/");
    assert_eq!(stdout(&out), committed);
}

#[test]
fn validate_examples_exits_1_only_because_of_the_invalid_example() {
    let out = routerpolicy(&["validate", "-f", "examples/"], None);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let errors: Vec<&str> = text.lines().filter(|l| l.contains(": error: ")).collect();
    assert!(!errors.is_empty());
    assert!(
        errors
            .iter()
            .all(|l| l.starts_with("examples/invalid/broken.yaml#1: ImageVariationPolicy team-a/broken: error: ")),
        "{text}"
    );
    for path in
        ["spec.retry.count", "spec.retry.onCodes[0]", "spec.loadBalancer.models[1].weight", "spec.identity.logoUrl"]
    {
        assert!(errors.iter().any(|l| l.contains(&format!("error: {path}: "))), "{path} missing in:\n{text}");
    }
    assert!(text.contains("skipped ConfigMap gateway/shared-image-gateway"));
    assert!(text.ends_with("5 policies checked, 1 invalid\n"), "{text}");
}

#[test]
fn validate_valid_examples_exits_0() {
    let out = routerpolicy(
        &[
            "validate",
            "-f",
            "examples/minimal.yaml",
            "-f",
            "examples/full.yaml",
            "-f",
            "examples/cross-namespace.yaml",
            "-f",
            "examples/rollout.yaml",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn every_single_rule_manifest_exits_1_and_names_its_path() {
    let dir = root().join("tests/fixtures/invalid");
    let mut files: Vec<_> =
        std::fs::read_dir(&dir).expect("fixtures").filter_map(Result::ok).map(|e| e.path()).collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("fixture").replace("${NAMESPACE}", "default");
        let expect = text.lines().find_map(|l| l.strip_prefix("# expect: ")).expect("expect line").trim();
        let out = routerpolicy(&["validate", "-o", "json", "-n", "default", "-f", "-"], Some(&text));
        assert_eq!(out.status.code(), Some(1), "{}", file.display());
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json output");
        let paths: Vec<&str> = report["results"][0]["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e["path"].as_str())
            .collect();
        assert!(paths.contains(&expect), "{}: {expect} not in {paths:?}", file.display());
    }
}

#[test]
fn validate_reads_stdin_and_multi_document_yaml() {
    let input = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\napiVersion: routerpolicy.io/v1alpha1\nkind: ImageVariationPolicy\nmetadata: {name: a}\nspec: {targetRefs: [{name: gw}], timeout: {callTimeout: 10}}\n";
    let out = routerpolicy(&["validate", "-f", "-"], Some(input));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("<stdin>#1: skipped Namespace"), "{text}");
    assert!(text.contains("<stdin>#2: ImageVariationPolicy default/a: valid"), "{text}");
    assert!(text.contains("warning: spec.timeout.callTimeout: 10 ms is shorter than 1000 ms"), "{text}");
}

#[test]
fn validate_github_format_emits_workflow_annotations() {
    let out = routerpolicy(&["validate", "-o", "github", "-f", "examples/invalid/broken.yaml"], None);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("::error file=examples/invalid/broken.yaml,title=ImageVariationPolicy team-a/broken (document 1)::spec.retry.count: must be less than or equal to 5"),
        "{text}"
    );
}

#[test]
fn validate_exits_2_on_a_missing_file_and_on_bad_usage() {
    let out = routerpolicy(&["validate", "-f", "no/such/file.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/file.yaml"));
    let out = routerpolicy(&["validate"], None);
    assert_eq!(out.status.code(), Some(2));
    let out = routerpolicy(&["validate", "-f", "examples/", "-o", "xml"], None);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn validate_reports_broken_yaml_with_file_and_document() {
    let out = routerpolicy(&["validate", "-f", "-"], Some("a: [1, 2\n"));
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("<stdin>#1: error: <document>: not valid YAML"), "{}", stdout(&out));
}

#[test]
fn render_examples_matches_the_golden_configmaps() {
    let out = routerpolicy(
        &["render", "-f", "examples/minimal.yaml", "-f", "examples/full.yaml", "-f", "examples/cross-namespace.yaml"],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    golden("examples.configmaps.yaml", &stdout(&out));
}

#[test]
fn render_documents_are_the_orq_wire_object_under_namespace_name_keys() {
    let out = routerpolicy(&["render", "-f", "examples/full.yaml"], None);
    let docs: Vec<serde_json::Value> = serde_norway::Deserializer::from_slice(&out.stdout)
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml"))
        .collect();
    assert_eq!(docs.len(), 1);
    let data = docs[0]["data"].as_object().expect("data");
    let doc = data["team-a.avatars.json"].as_str().expect("key team-a.avatars.json");
    golden("full.orq.json", doc);
    let parsed: serde_json::Value = serde_json::from_str(doc).expect("json");
    for key in ["retry", "fallbacks", "prompt", "identity", "cache", "load_balancer", "timeout"] {
        assert!(parsed.get(key).is_some(), "{key} missing");
    }
    assert_eq!(parsed["retry"]["on_codes"], serde_json::json!([429, 500, 502, 503, 504]));
    assert_eq!(parsed["timeout"]["call_timeout"], 30000);
    assert_eq!(parsed["identity"]["display_name"], "Jane Doe");
    assert_eq!(parsed["identity"]["logo_url"], "https://example.com/avatars/jane-doe.jpg");
}

#[test]
fn render_output_json_is_one_list_of_the_same_configmaps() {
    let args = ["render", "-f", "examples/minimal.yaml", "-f", "examples/full.yaml"];
    let yaml = routerpolicy(&args, None);
    let json = routerpolicy(&[&args[..], &["-o", "json"]].concat(), None);
    assert_eq!(json.status.code(), Some(0), "{}", String::from_utf8_lossy(&json.stderr));
    let list: serde_json::Value = serde_json::from_slice(&json.stdout).expect("one JSON document");
    assert_eq!((list["apiVersion"].as_str(), list["kind"].as_str()), (Some("v1"), Some("List")));
    let docs: Vec<serde_json::Value> = serde_norway::Deserializer::from_slice(&yaml.stdout)
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml"))
        .collect();
    assert_eq!(list["items"].as_array(), Some(&docs), "the same ConfigMaps as the YAML output");
    let bad = routerpolicy(&["render", "-o", "xml"], None);
    assert_eq!(bad.status.code(), Some(2), "an unknown format is a usage error");
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    for (shell, marker) in
        [("bash", "complete -F"), ("zsh", "#compdef routerpolicy"), ("fish", "complete -c routerpolicy")]
    {
        let out = routerpolicy(&["completions", shell], None);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: {script}");
        for subcommand in ["run", "gateway", "validate", "render", "crd", "explain"] {
            assert!(script.contains(subcommand), "{shell} completes {subcommand}");
        }
    }
    // The bash script loads in bash and registers the completion.
    let script = stdout(&routerpolicy(&["completions", "bash"], None));
    let out =
        cmd::output(Command::new("bash").args(["-c", "source /dev/stdin && complete -p routerpolicy"]), Some(&script));
    assert!(String::from_utf8_lossy(&out.stdout).contains("routerpolicy"), "bash registers it");
}

#[test]
fn explain_help_shows_examples_and_the_exit_codes() {
    let out = routerpolicy(&["explain", "--help"], None);
    assert_eq!(out.status.code(), Some(0));
    let help = stdout(&out);
    for shown in [
        "routerpolicy explain team-a/avatars --as system:serviceaccount:team-b:app",
        "routerpolicy explain -f policies/ team-a/avatars",
        "kubectl routerpolicy explain avatars -n team-a",
        "Exit codes: 0 answered",
    ] {
        assert!(help.contains(shown), "explain --help lacks {shown:?}:\n{help}");
    }
}

#[test]
fn explain_offline_refuses_a_caller_and_exits_1() {
    let out = routerpolicy(
        &["explain", "-f", "examples/minimal.yaml", "team-a/minimal", "--as", "team-z/app", "-o", "json"],
        None,
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("explain -o json prints JSON");
    assert_eq!(out.status.code(), Some(1), "{answer}");
    assert_eq!(answer["caller"]["allowed"], false, "{answer}");
    assert_eq!(answer["caller"]["subject"], "system:serviceaccount:team-z:app", "{answer}");
    let own = routerpolicy(
        &["explain", "-f", "examples/minimal.yaml", "team-a/minimal", "--as", "team-a/app", "-o", "json"],
        None,
    );
    assert_eq!(own.status.code(), Some(0), "{}", stdout(&own));
    let missing = routerpolicy(&["explain", "-f", "examples/minimal.yaml", "team-a/nothing"], None);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("team-a/nothing"), "{missing:?}");
}

#[test]
fn render_without_files_uses_the_built_in_example() {
    let out = routerpolicy(&["render"], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("team-a.avatars.json"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("built-in example"));
}

#[test]
fn render_refuses_a_cross_namespace_target_without_consent() {
    let input = std::fs::read_to_string(root().join("examples/cross-namespace.yaml"))
        .expect("example")
        .replace("team-b,team-c", "team-c");
    let out = routerpolicy(&["render", "-f", "-"], Some(&input));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("team-b/thumbnails → gateway/shared-image-gateway: RefNotPermitted"), "{stderr}");
    assert!(!stdout(&out).contains("team-b.thumbnails.json"));
}

#[test]
fn run_without_a_cluster_exits_with_a_hint_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_routerpolicy"))
        .args(["run", "--metrics-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", dir.path().join("missing-kubeconfig"))
        .env("HOME", dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error: ") && stderr.contains("hint: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn docs_reference_matches_the_crd_schema() {
    let markdown = routerpolicy::reference::markdown(&routerpolicy::crd::openapi_schema());
    let path = root().join("docs/reference.md");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &markdown).expect("write docs/reference.md");
    }
    let committed = std::fs::read_to_string(&path).expect("docs/reference.md");
    assert!(
        committed == markdown,
        "docs/reference.md drifted from the schema: UPDATE_GOLDEN=1 cargo test --test cli docs_reference"
    );
}

#[test]
fn render_shows_a_rollouts_first_step_beside_the_document_in_service() {
    let policy = "apiVersion: routerpolicy.io/v1alpha1\nkind: ImageVariationPolicy\nmetadata: {name: p, namespace: team-a}\n\
        spec:\n  targetRefs: [{name: gw}]\n  retry: {count: 3}\n  rollout:\n    steps: [{weight: 20, pause: 1m}, {weight: 50, pause: 1m}]\n";
    let in_service = "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: gw\n  namespace: team-a\n  labels: {app.kubernetes.io/managed-by: routerpolicy}\n\
        data:\n  team-a.p.json: '{\"retry\":{\"count\":2}}'\n";
    let out = routerpolicy(&["render", "-f", "-", "-o", "json"], Some(&format!("{policy}{in_service}")));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let data = &list["items"][0]["data"];
    assert_eq!(data["team-a.p.json"], r#"{"retry":{"count":2}}"#, "the document in service stays");
    let canary = data["team-a.p.canary"].as_str().expect("a canary entry");
    let entry = routerpolicy::rollout::CanaryEntry::parse(canary.as_bytes()).expect("canary entry");
    assert_eq!((entry.weight, entry.document.as_str()), (20, r#"{"retry":{"count":3}}"#));
    // Without a document in service, the first one goes out whole.
    let out = routerpolicy(&["render", "-f", "-", "-o", "json"], Some(policy));
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(list["items"][0]["data"]["team-a.p.json"], r#"{"retry":{"count":3}}"#);
    assert!(list["items"][0]["data"].get("team-a.p.canary").is_none());
}
