//! Offline checks of manifests for GitOps pipelines: `routerpolicy validate` and
//! `routerpolicy render`.
//!
//! [`load`] reads files, directories (recursively, `*.yaml`, `*.yml`, `*.json`) and stdin
//! (`-`), splitting multi-document YAML. [`check_document`] runs the CRD schema check and the
//! Rust rules on one document. [`render_configmaps`] plans every target with the same planner
//! the controller uses. Reading files is the only I/O here; everything else is pure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::ConfigMap;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{ImageVariationPolicy, TargetStatus};
use crate::key::{PolicyKey, TargetKey};
use crate::render::render_policy;
use crate::target::configmap::{ExistingTarget, applied_configmap};
use crate::target::plan::{Content, Outcome, PolicyAtTarget, plan_target};
use crate::validate::{Report, Violation, validate_object_name};

/// Where a document came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// File path, or `<stdin>`.
    pub file: String,
    /// 1-based index of the document in the file.
    pub document: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.file, self.document)
    }
}

/// One parsed document, or why it could not be parsed.
#[derive(Clone, Debug)]
pub struct Document {
    /// Where it came from.
    pub origin: Origin,
    /// Its content, or the YAML error.
    pub value: Result<Value, String>,
    /// Unquoted YAML 1.1 boolean words in it (`off`, `yes`, …), which `kubectl apply -f` reads
    /// as booleans.
    pub boolean_words: Vec<crate::yaml11::BooleanWord>,
}

impl Document {
    /// A document with a value already parsed (no YAML source to inspect).
    pub fn from_value(origin: Origin, value: Value) -> Self {
        Document { origin, value: Ok(value), boolean_words: Vec::new() }
    }
}

/// How `validate` treats an unquoted YAML 1.1 boolean word in a string field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BooleanWords {
    /// An error, as `kubectl apply -f` refuses it (the default).
    #[default]
    Error,
    /// A warning (for pipelines that apply only through kustomize, which keeps the string).
    Warning,
}

/// Reading the inputs failed (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct LoadError {
    path: String,
    #[source]
    source: std::io::Error,
}

/// Reads every document from `paths` (files, directories, `-` for stdin).
pub fn load(paths: &[PathBuf]) -> Result<Vec<Document>, LoadError> {
    let mut docs = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| LoadError { path: "<stdin>".into(), source })?;
            docs.extend(parse_documents("<stdin>", &text));
            continue;
        }
        for file in files_under(path)? {
            let text = std::fs::read_to_string(&file)
                .map_err(|source| LoadError { path: file.display().to_string(), source })?;
            docs.extend(parse_documents(&file.display().to_string(), &text));
        }
    }
    Ok(docs)
}

fn files_under(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let meta = std::fs::metadata(path).map_err(|source| LoadError { path: path.display().to_string(), source })?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(path)
        .map_err(|source| LoadError { path: path.display().to_string(), source })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            out.extend(files_under(&entry)?);
        } else if matches!(entry.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
            out.push(entry);
        }
    }
    Ok(out)
}

/// Splits a multi-document YAML text into documents (empty documents are skipped).
pub fn parse_documents(file: &str, text: &str) -> Vec<Document> {
    let mut out = Vec::new();
    let mut words = crate::yaml11::unquoted_boolean_words(text);
    for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let origin = Origin { file: file.to_string(), document: i + 1 };
        let boolean_words = words.remove(&(i + 1)).unwrap_or_default();
        match Value::deserialize(de) {
            Ok(Value::Null) => {}
            Ok(value) => out.push(Document { origin, value: Ok(value), boolean_words }),
            Err(e) => {
                out.push(Document { origin, value: Err(format!("not valid YAML: {e}")), boolean_words });
                // The parser cannot resume after a syntax error.
                break;
            }
        }
    }
    out
}

/// The verdict on one document.
#[derive(Clone, Debug)]
pub struct Checked {
    /// Where it came from.
    pub origin: Origin,
    /// `ImageVariationPolicy`, another kind (skipped), or empty when unreadable.
    pub kind: String,
    /// `namespace/name` of the object.
    pub object: String,
    /// Whether it was checked (only policies are).
    pub skipped: bool,
    /// Errors and warnings.
    pub report: Report,
    /// The policy as the API server would store it (normalized), when it could be read.
    pub policy: Option<ImageVariationPolicy>,
}

/// Checks one document: the CRD schema (what admission checks), then the Rust rules (what
/// the controller checks). `default_namespace` stands in for a missing `metadata.namespace`.
pub fn check_document(doc: &Document, schema: &Value, default_namespace: &str) -> Checked {
    check_document_with(doc, schema, default_namespace, BooleanWords::Error)
}

/// [`check_document`], choosing how unquoted YAML 1.1 boolean words are reported.
pub fn check_document_with(doc: &Document, schema: &Value, default_namespace: &str, words: BooleanWords) -> Checked {
    let value = match &doc.value {
        Ok(v) => v,
        Err(e) => {
            return Checked {
                origin: doc.origin.clone(),
                kind: String::new(),
                object: String::new(),
                skipped: false,
                report: Report { errors: vec![Violation::new("<document>", e.clone())], warnings: vec![] },
                policy: None,
            };
        }
    };
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
    let api_version = value.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let namespace =
        value.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or(default_namespace).to_string();
    let name = value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let object = format!("{namespace}/{name}");
    let is_policy = kind == "ImageVariationPolicy" && api_version.starts_with("routerpolicy.io/");
    if !is_policy {
        return Checked {
            origin: doc.origin.clone(),
            kind,
            object,
            skipped: true,
            report: Report::default(),
            policy: None,
        };
    }

    // What the API server does before it validates: nulls of non-nullable fields pruned,
    // integral floats in integer fields read as integers.
    let mut normalized = value.clone();
    crate::schema::normalize(schema, &mut normalized);
    let value = &normalized;
    let mut report = Report::default();
    if api_version != "routerpolicy.io/v1alpha1" {
        report
            .errors
            .push(Violation::new("apiVersion", format!("{api_version:?} is not served; use routerpolicy.io/v1alpha1")));
    }
    report.errors.extend(crate::schema::check(schema, value));
    report_boolean_words(doc, value, words, &mut report);
    if name.is_empty() {
        report.errors.push(Violation::new("metadata.name", "is required"));
    } else {
        report.errors.extend(validate_object_name(&name, &namespace));
    }
    let policy = match serde_json::from_value::<ImageVariationPolicy>(normalized) {
        Ok(policy) => {
            let mut rules = crate::validate::validate_policy(&namespace, &name, &policy.spec);
            // The object-name rule is already in the report.
            rules.errors.retain(|v| v.path != "metadata.name");
            report.merge(rules);
            Some(policy)
        }
        Err(e) => {
            if report.errors.is_empty() {
                report.errors.push(Violation::new("<document>", e.to_string()));
            }
            None
        }
    };
    Checked { origin: doc.origin.clone(), kind, object, skipped: false, report, policy }
}

/// Unquoted YAML 1.1 boolean words that stayed strings in `value` (so `kubectl apply -f`
/// would read them as booleans): an error, or a warning with `--unquoted-booleans warning`.
fn report_boolean_words(doc: &Document, value: &Value, words: BooleanWords, report: &mut Report) {
    for word in &doc.boolean_words {
        if value.pointer(&word.pointer).and_then(Value::as_str) == Some(word.word.as_str()) {
            let finding = Violation::new(
                word.path.clone(),
                format!(
                    "unquoted {w} is the boolean {b} to `kubectl apply -f` (YAML 1.1), not the string {w:?}; quote it: {w:?}",
                    w = word.word,
                    b = matches!(word.word.as_str(), "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON"),
                ),
            );
            match words {
                BooleanWords::Error => report.errors.push(finding),
                BooleanWords::Warning => report.warnings.push(finding),
            }
        }
    }
}

/// Output format of `validate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per finding.
    Text,
    /// One JSON object with every result.
    Json,
    /// GitHub Actions workflow annotations.
    Github,
}

/// Formats the results of `validate`.
pub fn format_results(results: &[Checked], format: Format) -> String {
    let mut out = String::new();
    let invalid = results.iter().filter(|r| !r.report.is_valid()).count();
    let checked = results.iter().filter(|r| !r.skipped).count();
    match format {
        Format::Text => {
            for r in results {
                if r.skipped {
                    let _ = writeln!(
                        out,
                        "{}: skipped {} {} (not an ImageVariationPolicy)",
                        r.origin,
                        kind_or_unknown(&r.kind),
                        r.object
                    );
                    continue;
                }
                let subject =
                    if r.kind.is_empty() { String::new() } else { format!(" ImageVariationPolicy {}:", r.object) };
                if r.report.is_valid() {
                    let _ = writeln!(out, "{}:{subject} valid", r.origin);
                }
                for e in &r.report.errors {
                    let _ = writeln!(out, "{}:{subject} error: {e}", r.origin);
                }
                for w in &r.report.warnings {
                    let _ = writeln!(out, "{}:{subject} warning: {w}", r.origin);
                }
            }
            let _ = writeln!(out, "{checked} policies checked, {invalid} invalid");
        }
        Format::Json => {
            let items: Vec<Value> = results
                .iter()
                .map(|r| {
                    json!({
                        "file": r.origin.file,
                        "document": r.origin.document,
                        "kind": r.kind,
                        "object": r.object,
                        "skipped": r.skipped,
                        "valid": r.report.is_valid(),
                        "errors": r.report.errors.iter().map(|v| json!({"path": v.path, "message": v.message})).collect::<Vec<_>>(),
                        "warnings": r.report.warnings.iter().map(|v| json!({"path": v.path, "message": v.message})).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let doc = json!({"checked": checked, "invalid": invalid, "results": items});
            out = serde_json::to_string_pretty(&doc).unwrap_or_default();
            out.push('\n');
        }
        Format::Github => {
            for r in results.iter().filter(|r| !r.skipped) {
                for (level, list) in [("error", &r.report.errors), ("warning", &r.report.warnings)] {
                    for v in list.iter() {
                        let _ = writeln!(
                            out,
                            "::{level} file={},title=ImageVariationPolicy {} (document {})::{}",
                            escape_property(&r.origin.file),
                            escape_property(&r.object),
                            r.origin.document,
                            escape_data(&v.to_string())
                        );
                    }
                }
            }
            let _ = writeln!(out, "{checked} policies checked, {invalid} invalid");
        }
    }
    out
}

fn kind_or_unknown(kind: &str) -> &str {
    if kind.is_empty() { "document without kind" } else { kind }
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// Result of `render`: the ConfigMaps, and notes on policies that were left out.
#[derive(Clone, Debug, Default)]
pub struct Rendered {
    /// One multi-document YAML text of ConfigMaps.
    pub yaml: String,
    /// The same ConfigMaps as objects, in the same order.
    pub configmaps: Vec<Value>,
    /// Why some policies are not (fully) in the output.
    pub notes: Vec<String>,
    /// Whether any policy was invalid.
    pub any_invalid: bool,
    /// The ConfigMaps among the inputs (the targets' current state), by target.
    pub inputs: BTreeMap<TargetKey, ConfigMap>,
    /// The ConfigMaps the operator would write, by target.
    pub written: BTreeMap<TargetKey, ConfigMap>,
    /// Each rendered policy's `status.targets` as the operator would report it.
    pub targets: BTreeMap<PolicyKey, Vec<TargetStatus>>,
}

/// What `render` plans from: the targets' current state and the policies aiming at each.
#[derive(Default)]
struct Inputs {
    existing: BTreeMap<TargetKey, ExistingTarget>,
    by_target: BTreeMap<TargetKey, Vec<PolicyAtTarget>>,
}

/// Renders the gateway ConfigMaps the operator would write for the policies in `docs`.
/// ConfigMaps among the inputs stand for the targets' current state (labels, consent,
/// existing data); other targets are taken not to exist yet.
pub fn render_configmaps(docs: &[Document], schema: &Value, default_namespace: &str) -> Rendered {
    let mut rendered = Rendered::default();
    let inputs = collect_inputs(docs, schema, default_namespace, &mut rendered);
    let mut out = String::new();
    for (target, policies) in &inputs.by_target {
        let current = inputs.existing.get(target);
        let plan = plan_target(target, current, policies);
        for (policy, outcome) in &plan.outcomes {
            rendered.targets.entry(policy.clone()).or_default().push(outcome.target_status(target, policy));
            if !matches!(outcome, Outcome::Synced) {
                rendered.notes.push(format!(
                    "ImageVariationPolicy {}/{} → {target}: {}: {}",
                    policy.namespace,
                    policy.name,
                    outcome.reason(),
                    outcome.message()
                ));
            }
        }
        let Some(data) = plan.apply else { continue };
        let cm = applied_configmap(target, data, &plan.config_hash);
        let mut value = serde_json::to_value(&cm).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            map.insert("apiVersion".into(), json!("v1"));
            map.insert("kind".into(), json!("ConfigMap"));
        }
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&value).unwrap_or_default());
        rendered.configmaps.push(value);
        rendered.written.insert(target.clone(), cm);
    }
    rendered.yaml = out;
    rendered
}

/// Sorts the documents into the targets' state and the policies aiming at each; records
/// unreadable and invalid documents in `rendered`.
fn collect_inputs(docs: &[Document], schema: &Value, default_namespace: &str, rendered: &mut Rendered) -> Inputs {
    let mut inputs = Inputs::default();
    for doc in docs {
        let Ok(value) = &doc.value else {
            rendered.any_invalid = true;
            rendered.notes.push(format!("{}: not valid YAML", doc.origin));
            continue;
        };
        if value.get("kind").and_then(Value::as_str) == Some("ConfigMap")
            && let Ok(mut cm) = serde_json::from_value::<ConfigMap>(value.clone())
        {
            let namespace = cm.metadata.namespace.clone().unwrap_or_else(|| default_namespace.to_string());
            cm.metadata.namespace = Some(namespace.clone());
            let key = TargetKey::new(namespace, cm.metadata.name.clone().unwrap_or_default());
            inputs.existing.insert(key.clone(), ExistingTarget::from_manifest(&cm));
            rendered.inputs.insert(key, cm);
            continue;
        }
        let checked = check_document(doc, schema, default_namespace);
        if checked.skipped {
            continue;
        }
        if !checked.report.is_valid() {
            rendered.any_invalid = true;
            rendered.notes.push(format!(
                "{}: ImageVariationPolicy {} is invalid and not rendered: {}",
                doc.origin,
                checked.object,
                checked.report.errors_summary()
            ));
            continue;
        }
        let Some(mut policy) = checked.policy else {
            continue;
        };
        let namespace = policy.metadata.namespace.clone().unwrap_or_else(|| default_namespace.to_string());
        policy.metadata.namespace = Some(namespace.clone());
        let name = policy.metadata.name.clone().unwrap_or_default();
        let document = render_policy(&policy.spec);
        // With `spec.rollout`, a change of a document in service (a ConfigMap among the
        // manifests holds another one) shows as the rollout's first step.
        let first_weight =
            policy.spec.rollout.as_ref().map(crate::rollout::Plan::of).and_then(|p| p.steps.first().map(|s| s.0));
        for target in policy.spec.targets(&namespace) {
            let content = match first_weight {
                Some(weight) => Content::Canary { document: document.clone(), weight },
                None => Content::Document(document.clone()),
            };
            let at = PolicyAtTarget::new(PolicyKey::new(&namespace, &name), content);
            inputs.by_target.entry(target).or_default().push(at);
        }
    }
    inputs
}

impl Rendered {
    /// The ConfigMaps as one JSON `v1` `List`, as `kubectl get -o json` prints several objects.
    pub fn json(&self) -> String {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": self.configmaps});
        serde_json::to_string_pretty(&list).unwrap_or_default() + "\n"
    }
}
