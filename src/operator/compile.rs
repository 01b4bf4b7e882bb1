//! Compile: a policy's raw spec → its verdict, its document and the targets it names. Pure.
//!
//! Runs once per spec change (a new generation), never per event: the index keeps the result.
//! Validation ([`crate::validate`]) and rendering ([`crate::render`]) are the rule book's; this
//! step only ties them to one policy and turns an unreadable spec into a report.

use serde_json::value::RawValue;

use crate::api::ImageVariationPolicySpec;
use crate::key::{PolicyKey, TargetKey};
use crate::render::{GatewayDocument, render_policy};
use crate::rollout::Plan;
use crate::validate::{Findings, Violation, validate_policy};

/// What one spec compiles to.
#[derive(Clone, Debug)]
pub struct CompiledPolicy {
    /// Whether the spec could be read at all.
    pub readable: bool,
    /// The rule book's verdict (errors and warnings).
    pub findings: Findings,
    /// The rendered document, for a valid policy.
    pub document: Option<GatewayDocument>,
    /// The targets the spec names (resolved, de-duplicated, in spec order).
    pub targets: Vec<TargetKey>,
    /// How a change goes out (`spec.rollout`, of a valid policy).
    pub rollout: Option<Plan>,
}

/// Compiles the spec of `policy` (raw JSON as the watch delivered it, or missing).
pub fn compile(policy: &PolicyKey, spec: Option<&RawValue>) -> CompiledPolicy {
    let parsed = match spec {
        Some(raw) => serde_json::from_str::<ImageVariationPolicySpec>(raw.get()).map_err(|e| e.to_string()),
        None => Err("spec is missing".to_string()),
    };
    match parsed {
        Ok(spec) => {
            let findings = validate_policy(&policy.namespace, &policy.name, &spec);
            let document = findings.is_valid().then(|| render_policy(&spec));
            let rollout = spec.rollout.as_ref().filter(|_| findings.is_valid()).map(Plan::of);
            CompiledPolicy { readable: true, findings, document, targets: spec.targets(&policy.namespace), rollout }
        }
        Err(error) => CompiledPolicy {
            readable: false,
            findings: Findings {
                errors: vec![Violation::new("spec", format!("cannot be read: {error}"))],
                warnings: vec![],
            },
            document: None,
            targets: Vec::new(),
            rollout: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_string()).expect("raw")
    }

    #[test]
    fn a_valid_spec_compiles_to_its_document_and_targets() {
        let key = PolicyKey::new("a", "p");
        let compiled = compile(&key, Some(&raw(r#"{"targetRefs":[{"name":"gw"}],"retry":{"count":2}}"#)));
        assert!(compiled.readable && compiled.findings.is_valid());
        assert_eq!(compiled.document.map(|d| d.json.to_string()), Some(r#"{"retry":{"count":2}}"#.to_string()));
        assert_eq!(compiled.targets, [TargetKey::new("a", "gw")]);
    }

    #[test]
    fn an_invalid_spec_has_no_document_and_an_unreadable_one_says_why() {
        let key = PolicyKey::new("a", "p");
        let invalid = compile(&key, Some(&raw(r#"{"targetRefs":[{"name":"gw"}],"retry":{"count":9}}"#)));
        assert!(invalid.readable && !invalid.findings.is_valid() && invalid.document.is_none());
        let unreadable = compile(&key, Some(&raw(r#"{"targetRefs":"not a list"}"#)));
        assert!(!unreadable.readable && unreadable.targets.is_empty());
        assert_eq!(unreadable.findings.errors[0].path, "spec");
        assert!(!compile(&key, None).readable);
    }
}
