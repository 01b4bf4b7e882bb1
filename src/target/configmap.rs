//! A gateway ConfigMap as the operator sees and writes it: the labels and annotations of
//! README.md ("Quickstart", "Targets, ownership and consent"), the stripped [`ExistingTarget`] view the index keeps, and the object a plan
//! server-side applies. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ObjectMeta;

use crate::key::TargetKey;

/// Label on every ConfigMap the operator writes.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "routerpolicy";
/// Label by which a gateway owner opts a ConfigMap in.
pub const GATEWAY_LABEL: &str = "routerpolicy.io/gateway";
/// Annotation listing the namespaces allowed to write into a gateway ConfigMap (`*` for all).
pub const ALLOWED_NAMESPACES_ANNOTATION: &str = "routerpolicy.io/allowed-namespaces";
/// Annotation with the hash of all operator-owned keys.
pub const CONFIG_HASH_ANNOTATION: &str = "routerpolicy.io/config-hash";
/// The server-side apply field manager.
pub const FIELD_MANAGER: &str = "routerpolicy";

/// The ConfigMap's namespace and name.
pub fn target_of(cm: &ConfigMap) -> TargetKey {
    TargetKey::new(cm.metadata.namespace.clone().unwrap_or_default(), cm.metadata.name.clone().unwrap_or_default())
}

/// What the operator needs to know of an existing ConfigMap, and no more: the two labels and
/// two annotations it reads, the values of the data keys its field manager owns, and only the
/// size of everything else (other writers' data is never cached).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExistingTarget {
    /// The labels the operator reads ([`MANAGED_BY_LABEL`], [`GATEWAY_LABEL`]).
    pub labels: BTreeMap<String, String>,
    /// The annotations the operator reads ([`ALLOWED_NAMESPACES_ANNOTATION`],
    /// [`CONFIG_HASH_ANNOTATION`]).
    pub annotations: BTreeMap<String, String>,
    /// Data entries owned by the operator's field manager: key → value.
    pub owned: BTreeMap<String, Arc<str>>,
    /// Every other data entry: key → its size (key and value), which counts against 1 MiB.
    pub foreign: BTreeMap<String, usize>,
    /// Size of `binaryData` (keys and values), which counts against the 1 MiB limit too.
    pub binary_bytes: usize,
}

impl ExistingTarget {
    /// The view of a live ConfigMap: owned keys are those the operator's field manager holds
    /// in `managedFields` (server-side apply).
    pub fn from_configmap(cm: &ConfigMap) -> Self {
        let owned = owned_keys(cm);
        Self::with_owned(cm, |key| owned.contains(key))
    }

    /// The view of a ConfigMap manifest (no `managedFields`): keys that look like policy keys
    /// (documents, callers and canary entries) are taken as the operator's, so last-good and size rules apply to them.
    pub fn from_manifest(cm: &ConfigMap) -> Self {
        Self::with_owned(cm, |key| key.ends_with(".json") || crate::key::PolicyKey::owner_of_data_key(key).is_some())
    }

    fn with_owned(cm: &ConfigMap, is_owned: impl Fn(&str) -> bool) -> Self {
        let pick = |map: &Option<BTreeMap<String, String>>, keys: &[&str]| -> BTreeMap<String, String> {
            map.iter()
                .flatten()
                .filter(|(k, _)| keys.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let mut owned = BTreeMap::new();
        let mut foreign = BTreeMap::new();
        for (key, value) in cm.data.iter().flatten() {
            if is_owned(key) {
                owned.insert(key.clone(), value.as_str().into());
            } else {
                foreign.insert(key.clone(), entry_size(key, value));
            }
        }
        ExistingTarget {
            labels: pick(&cm.metadata.labels, &[MANAGED_BY_LABEL, GATEWAY_LABEL]),
            annotations: pick(&cm.metadata.annotations, &[ALLOWED_NAMESPACES_ANNOTATION, CONFIG_HASH_ANNOTATION]),
            owned,
            foreign,
            binary_bytes: cm.binary_data.iter().flatten().map(|(k, v)| k.len() + v.0.len()).sum(),
        }
    }

    /// Created by the operator (carries the managed-by label).
    pub fn is_managed(&self) -> bool {
        self.labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE)
    }

    /// Opted in by its owner with `routerpolicy.io/gateway: "true"`.
    pub fn is_opted_in(&self) -> bool {
        self.labels.get(GATEWAY_LABEL).map(String::as_str) == Some("true")
    }

    /// Whether the allowed-namespaces annotation lists `namespace` (or `*`).
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        self.annotations
            .get(ALLOWED_NAMESPACES_ANNOTATION)
            .is_some_and(|list| list.split(',').map(str::trim).any(|n| n == "*" || n == namespace))
    }

    /// Whether the operator owns `key` here.
    pub fn holds(&self, key: &str) -> bool {
        self.owned.contains_key(key)
    }
}

/// The data keys the operator's field manager owns in a ConfigMap (from `managedFields`).
pub fn owned_keys(cm: &ConfigMap) -> BTreeSet<String> {
    let mut owned = BTreeSet::new();
    for entry in cm.metadata.managed_fields.iter().flatten() {
        if entry.manager.as_deref() != Some(FIELD_MANAGER) || entry.operation.as_deref() != Some("Apply") {
            continue;
        }
        if let Some(data) = entry.fields_v1.as_ref().and_then(|f| f.0.get("f:data")).and_then(|d| d.as_object()) {
            owned.extend(data.keys().filter_map(|k| k.strip_prefix("f:")).map(str::to_string));
        }
    }
    owned
}

/// The ConfigMap the operator server-side applies for a plan: only the fields it owns (the
/// managed-by label, the config-hash annotation and its data keys).
pub fn applied_configmap(target: &TargetKey, data: BTreeMap<String, String>, config_hash: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(target.name.to_string()),
            namespace: Some(target.namespace.to_string()),
            labels: Some([(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string())].into()),
            annotations: Some([(CONFIG_HASH_ANNOTATION.to_string(), config_hash.to_string())].into()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

/// Size of one data entry as the API server counts it.
pub fn entry_size(key: &str, value: &str) -> usize {
    key.len() + value.len()
}

/// The two label-selected ConfigMap watches the operator runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfigMapWatch {
    /// ConfigMaps the operator wrote ([`MANAGED_BY_LABEL`]): drift (hand edits, deleted keys,
    /// a deleted ConfigMap) is repaired by re-planning the target.
    Managed,
    /// Gateway ConfigMaps opted in by their owners ([`GATEWAY_LABEL`]): consent given or
    /// withdrawn takes effect.
    OptedIn,
}

impl ConfigMapWatch {
    /// Both watches.
    pub const ALL: [ConfigMapWatch; 2] = [ConfigMapWatch::Managed, ConfigMapWatch::OptedIn];

    /// The label selector of the watch.
    pub fn label_selector(self) -> String {
        match self {
            ConfigMapWatch::Managed => format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"),
            ConfigMapWatch::OptedIn => format!("{GATEWAY_LABEL}=true"),
        }
    }
}
