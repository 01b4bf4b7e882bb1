//! What the controller's watches decode: only what the index needs, nothing else kept.
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
