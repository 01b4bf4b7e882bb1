//! `render`: every target planned with the planner the controller uses, as ConfigMaps. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{Value, json};

use super::check::check_document;
use super::load::Document;
use crate::api::TargetStatus;
use crate::key::{PolicyKey, TargetKey};
use crate::render::render_policy;
use crate::target::configmap::{ExistingTarget, applied_configmap};
use crate::target::plan::{Content, Outcome, PolicyAtTarget, plan_target};

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
        if !checked.findings.is_valid() {
            rendered.any_invalid = true;
            rendered.notes.push(format!(
                "{}: ImageVariationPolicy {} is invalid and not rendered: {}",
                doc.origin,
                checked.object,
                checked.findings.errors_summary()
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
