//! Checking one document: the CRD schema check (what admission checks), then the Rust rules
//! (what the controller checks), and the YAML 1.1 boolean words `kubectl apply -f` misreads. Pure.

use serde_json::Value;

use super::load::{Document, Origin};
use crate::api::ImageVariationPolicy;
use crate::validate::{Findings, Violation, validate_object_name};

/// How `validate` treats an unquoted YAML 1.1 boolean word in a string field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BooleanWords {
    /// An error, as `kubectl apply -f` refuses it (the default).
    #[default]
    Error,
    /// A warning (for pipelines that apply only through kustomize, which keeps the string).
    Warning,
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
    pub findings: Findings,
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
                findings: Findings { errors: vec![Violation::new("<document>", e.clone())], warnings: vec![] },
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
            findings: Findings::default(),
            policy: None,
        };
    }

    // What the API server does before it validates: nulls of non-nullable fields pruned,
    // integral floats in integer fields read as integers.
    let mut normalized = value.clone();
    crate::schema::normalize(schema, &mut normalized);
    let value = &normalized;
    let mut findings = Findings::default();
    if api_version != "routerpolicy.io/v1alpha1" {
        findings
            .errors
            .push(Violation::new("apiVersion", format!("{api_version:?} is not served; use routerpolicy.io/v1alpha1")));
    }
    findings.errors.extend(crate::schema::check(schema, value));
    report_boolean_words(doc, value, words, &mut findings);
    if name.is_empty() {
        findings.errors.push(Violation::new("metadata.name", "is required"));
    } else {
        findings.errors.extend(validate_object_name(&name, &namespace));
    }
    let policy = match serde_json::from_value::<ImageVariationPolicy>(normalized) {
        Ok(policy) => {
            let mut rules = crate::validate::validate_policy(&namespace, &name, &policy.spec);
            // The object-name rule is already in the report.
            rules.errors.retain(|v| v.path != "metadata.name");
            findings.merge(rules);
            Some(policy)
        }
        Err(e) => {
            if findings.errors.is_empty() {
                findings.errors.push(Violation::new("<document>", e.to_string()));
            }
            None
        }
    };
    Checked { origin: doc.origin.clone(), kind, object, skipped: false, findings, policy }
}

/// Unquoted YAML 1.1 boolean words that stayed strings in `value` (so `kubectl apply -f`
/// would read them as booleans): an error, or a warning with `--unquoted-booleans warning`.
fn report_boolean_words(doc: &Document, value: &Value, words: BooleanWords, findings: &mut Findings) {
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
                BooleanWords::Error => findings.errors.push(finding),
                BooleanWords::Warning => findings.warnings.push(finding),
            }
        }
    }
}
