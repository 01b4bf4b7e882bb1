//! Decode: what the controller's policy watch decodes, and the [`DecodedPolicy`] the index
//! takes. Only what the index needs is kept.
//!
//! A watch event carries the whole object, `managedFields` included, and most policy events
//! are the echo of the operator's own status write. [`WatchedPolicy`] decodes just the
//! metadata the index reads and keeps `spec` and `status` as raw JSON, parsed only when the
//! index needs them (a new generation, or a policy it has not seen). An object whose spec
//! cannot be read still decodes (its spec fails to parse later), so one malformed object
//! never stalls the watch.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Resource;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::api::ImageVariationPolicy;
use crate::key::PolicyKey;
use crate::rollout::ACTION_ANNOTATION;

/// The finalizer earlier versions added to every policy; removed wherever it is found.
pub const LEGACY_FINALIZER: &str = "routerpolicy.io/cleanup";

/// The metadata fields the controller reads (everything else, `managedFields` first, is
/// skipped while decoding).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlimMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    generation: Option<i64>,
    resource_version: Option<String>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    annotations: Option<std::collections::BTreeMap<String, String>>,
}

impl From<SlimMeta> for ObjectMeta {
    fn from(m: SlimMeta) -> Self {
        ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            generation: m.generation,
            resource_version: m.resource_version,
            deletion_timestamp: m.deletion_timestamp,
            finalizers: m.finalizers,
            // Only the annotation the controller reads is kept.
            annotations: m.annotations.and_then(|mut a| a.remove_entry(ACTION_ANNOTATION)).map(|entry| [entry].into()),
            ..Default::default()
        }
    }
}

/// An `ImageVariationPolicy` as the watch delivers it: slim metadata, raw spec and status.
#[derive(Clone, Debug)]
pub struct WatchedPolicy {
    /// Name, namespace, uid, generation, resourceVersion, deletionTimestamp, finalizers.
    pub metadata: ObjectMeta,
    /// `spec`, unparsed.
    pub spec: Option<Box<RawValue>>,
    /// `status`, unparsed.
    pub status: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct WirePolicy {
    metadata: SlimMeta,
    spec: Option<Box<RawValue>>,
    status: Option<Box<RawValue>>,
}

impl<'de> Deserialize<'de> for WatchedPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WirePolicy::deserialize(deserializer)?;
        Ok(WatchedPolicy { metadata: wire.metadata.into(), spec: wire.spec, status: wire.status })
    }
}

impl Resource for WatchedPolicy {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        ImageVariationPolicy::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        ImageVariationPolicy::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        ImageVariationPolicy::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        ImageVariationPolicy::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A policy as a watch event shows it, reduced to what the index needs.
#[derive(Clone, Debug)]
pub struct DecodedPolicy {
    /// The policy.
    pub key: PolicyKey,
    /// `metadata.uid`.
    pub uid: Option<String>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `metadata.resourceVersion`.
    pub resource_version: Option<String>,
    /// The spec as raw JSON, parsed only when the generation is new to the index.
    pub spec: Option<Box<RawValue>>,
    /// The stored status as raw JSON, parsed only for a policy new to the index (later
    /// events carry the status the operator wrote itself).
    pub status: Option<Box<RawValue>>,
    /// Whether `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// Its finalizers (the legacy one is removed; others are kept).
    pub finalizers: Vec<String>,
    /// The `routerpolicy.io/rollout-action` annotation (`promote` or `abort`), when set.
    pub rollout_action: Option<String>,
}

impl DecodedPolicy {
    /// Whether it still carries the legacy `routerpolicy.io/cleanup` finalizer.
    pub fn has_legacy_finalizer(&self) -> bool {
        self.finalizers.iter().any(|f| f == LEGACY_FINALIZER)
    }
}

/// The policy a watched object is.
pub fn policy_key(policy: &WatchedPolicy) -> PolicyKey {
    let meta = &policy.metadata;
    PolicyKey::new(meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

/// Reduces a watched policy to what the index needs.
pub fn decode(policy: WatchedPolicy) -> DecodedPolicy {
    let key = policy_key(&policy);
    let meta = policy.metadata;
    DecodedPolicy {
        key,
        uid: meta.uid,
        generation: meta.generation,
        resource_version: meta.resource_version,
        spec: policy.spec,
        status: policy.status,
        deleting: meta.deletion_timestamp.is_some(),
        finalizers: meta.finalizers.unwrap_or_default(),
        rollout_action: meta.annotations.and_then(|mut a| a.remove(ACTION_ANNOTATION)),
    }
}

/// The policies of `namespace`, as dynamic objects (status reads and writes, patches): the
/// policy as the API gives it, which is what this file decodes.
pub fn policy_api(client: &kube::Client, namespace: &str) -> kube::Api<kube::api::DynamicObject> {
    kube::Api::namespaced_with(
        client.clone(),
        namespace,
        &kube::api::ApiResource::erase::<crate::api::ImageVariationPolicy>(&()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_fields_are_skipped_and_spec_and_status_stay_raw() {
        let text = r#"{"apiVersion":"routerpolicy.io/v1alpha1","kind":"ImageVariationPolicy",
            "metadata":{"name":"p","namespace":"a","generation":3,"resourceVersion":"42","finalizers":["x"],
              "managedFields":[{"manager":"kubectl","fieldsV1":{"f:spec":{}}}]},
            "spec":{"targetRefs":[{"name":"gw"}],"retry":{"count":"not a number"}},
            "status":{"configHash":"abc"}}"#;
        let p: WatchedPolicy = serde_json::from_str(text).expect("decodes even with an unreadable spec");
        assert_eq!(p.metadata.generation, Some(3));
        assert_eq!(p.metadata.finalizers, Some(vec!["x".to_string()]));
        assert!(p.metadata.managed_fields.is_none());
        assert!(p.spec.expect("spec").get().contains("not a number"));
        assert_eq!(p.status.expect("status").get(), r#"{"configHash":"abc"}"#);
    }
}
