//! `explain -f`: the same question answered from manifests, with no cluster. The targets'
//! ConfigMaps are what `routerpolicy render` plans for the same files (ConfigMaps among them
//! stand for the targets' current state: labels, consent, other keys), so the answer is what
//! the cluster would say once the operator has synced them — minus the replicas, which only a
//! cluster has.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::api::ImageVariationPolicyStatus;
use crate::explain::model::Observed;
use crate::key::PolicyKey;
use crate::manifests::{Document, check_document, render_configmaps};

/// Builds what a cluster would show for `key` from `docs`; an error names why it cannot.
pub fn observe(
    docs: &[Document],
    schema: &Value,
    default_namespace: &str,
    key: &PolicyKey,
) -> Result<Observed, String> {
    let wanted = key.metric_label();
    let checked = docs
        .iter()
        .map(|d| check_document(d, schema, default_namespace))
        .find(|c| !c.skipped && c.object == wanted && c.kind == "ImageVariationPolicy")
        .ok_or_else(|| format!("no ImageVariationPolicy {wanted} in the manifests given"))?;
    let mut policy = checked.policy.ok_or_else(|| {
        format!(
            "{}: ImageVariationPolicy {wanted} cannot be read: {}",
            checked.origin,
            checked.findings.errors_summary()
        )
    })?;
    policy.metadata.namespace = Some(key.namespace.to_string());
    let rendered = render_configmaps(docs, schema, default_namespace);
    let targets = rendered.targets.get(key).cloned().unwrap_or_default();
    policy.status = (!targets.is_empty()).then(|| ImageVariationPolicyStatus { targets, ..Default::default() });
    let configmaps: BTreeMap<_, _> = policy
        .spec
        .targets(&key.namespace)
        .into_iter()
        .map(|t| {
            let cm = rendered.written.get(&t).or_else(|| rendered.inputs.get(&t)).cloned();
            (t, Ok(cm))
        })
        .collect();
    Ok(Observed { policy, configmaps, leases: None, now_ms: 0 })
}
