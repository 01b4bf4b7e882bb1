//! The plan for one gateway ConfigMap: which policy documents it should hold. Pure.
//!
//! Given what the ConfigMap looks like now (or that it does not exist) and every policy that
//! aims at it, [`plan_target`] decides the complete set of operator-owned data keys to apply
//! and the outcome for each policy: the ownership and consent rules of PRODUCT §4, last-good
//! retention for invalid policies (§5) and the 1 MiB limit (§3). Both the controller and
//! `routerpolicy render` call it, so a preview shows what the cluster will get.

use std::collections::{BTreeMap, BTreeSet};

use crate::limits::CONFIGMAP_MAX_BYTES;
use crate::render::entries_hash;

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

/// A ConfigMap, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for TargetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the operator needs to know of an existing ConfigMap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExistingTarget {
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// All data entries (the operator's and everyone else's).
    pub data: BTreeMap<String, String>,
    /// Size of `binaryData` (keys and values), which counts against the 1 MiB limit too.
    pub binary_bytes: usize,
    /// Data keys the operator's field manager owns.
    pub owned_keys: BTreeSet<String>,
}

impl ExistingTarget {
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
            .is_some_and(|list| {
                list.split(',')
                    .map(str::trim)
                    .any(|n| n == "*" || n == namespace)
            })
    }
}

/// A policy aiming at the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyAtTarget {
    /// The policy's namespace.
    pub namespace: String,
    /// The policy's name.
    pub name: String,
    /// Its data key.
    pub key: String,
    /// What it wants there.
    pub content: Content,
}

/// What a policy wants in the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// A valid policy's rendered document.
    Document(String),
    /// An invalid policy: keep whatever good document is there already.
    KeepLastGood,
}

/// The outcome for one policy at one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The current document is written (or will be by this plan's apply).
    Synced,
    /// The policy is invalid; its last good document (if any) stays.
    Retained {
        /// Whether a last good document is there.
        has_last_good: bool,
    },
    /// Cross-namespace target without consent.
    RefNotPermitted(String),
    /// Same-namespace ConfigMap that the operator neither created nor was opted into.
    TargetNotManaged(String),
    /// The document does not fit in the 1 MiB ConfigMap limit.
    TargetFull(String),
}

impl Outcome {
    /// The status reason string.
    pub fn reason(&self) -> &'static str {
        match self {
            Outcome::Synced => "Synced",
            Outcome::Retained { .. } => "ValidationFailed",
            Outcome::RefNotPermitted(_) => "RefNotPermitted",
            Outcome::TargetNotManaged(_) => "TargetNotManaged",
            Outcome::TargetFull(_) => "TargetFull",
        }
    }

    /// Whether the target permits the policy at all (Accepted).
    pub fn permitted(&self) -> bool {
        !matches!(
            self,
            Outcome::RefNotPermitted(_) | Outcome::TargetNotManaged(_)
        )
    }
}

/// What to do with one ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetPlan {
    /// The complete set of operator-owned data entries to apply, or `None` when the operator
    /// must not write to this ConfigMap at all.
    pub apply: Option<BTreeMap<String, String>>,
    /// Hash of `apply`'s entries, for the config-hash annotation.
    pub config_hash: String,
    /// Outcome per policy (namespace, name).
    pub outcomes: BTreeMap<(String, String), Outcome>,
}

impl TargetPlan {
    /// Whether applying would change nothing the operator owns: the owned keys and their
    /// values are already exactly `apply`, and the hash annotation is current.
    pub fn is_noop(&self, existing: Option<&ExistingTarget>) -> bool {
        let (Some(apply), Some(existing)) = (&self.apply, existing) else {
            return self.apply.is_none();
        };
        existing.is_managed()
            && existing.annotations.get(CONFIG_HASH_ANNOTATION) == Some(&self.config_hash)
            && existing.owned_keys.iter().all(|k| apply.contains_key(k))
            && apply.iter().all(|(k, v)| existing.data.get(k) == Some(v))
    }
}

/// Size of one data entry as the API server counts it.
fn entry_size(key: &str, value: &str) -> usize {
    key.len() + value.len()
}

/// Plans one target. `policies` are all live policies that name this target in their spec;
/// policies being deleted, or that no longer name it, are simply absent (their keys go).
pub fn plan_target(
    target: &TargetKey,
    existing: Option<&ExistingTarget>,
    policies: &[PolicyAtTarget],
) -> TargetPlan {
    let mut outcomes = BTreeMap::new();
    let mut permitted = Vec::new();

    for policy in policies {
        let id = (policy.namespace.clone(), policy.name.clone());
        let same_namespace = policy.namespace == target.namespace;
        let verdict = match existing {
            None if same_namespace => Ok(()),
            None => Err(Outcome::RefNotPermitted(format!(
                "ConfigMap {target} does not exist; a target in another namespace must exist and be opted in by its owner"
            ))),
            Some(cm) if same_namespace => {
                if cm.is_managed() || cm.is_opted_in() {
                    Ok(())
                } else {
                    Err(Outcome::TargetNotManaged(format!(
                        "ConfigMap {target} exists but was not created by routerpolicy and is not labelled {GATEWAY_LABEL}=\"true\"; refusing to modify it"
                    )))
                }
            }
            Some(cm) => {
                if !cm.is_opted_in() {
                    Err(Outcome::RefNotPermitted(format!(
                        "ConfigMap {target} is in another namespace and is not labelled {GATEWAY_LABEL}=\"true\""
                    )))
                } else if !cm.allows_namespace(&policy.namespace) {
                    Err(Outcome::RefNotPermitted(format!(
                        "ConfigMap {target} does not list namespace {:?} in its {ALLOWED_NAMESPACES_ANNOTATION} annotation",
                        policy.namespace
                    )))
                } else {
                    Ok(())
                }
            }
        };
        match verdict {
            Ok(()) => permitted.push(policy),
            Err(outcome) => {
                outcomes.insert(id, outcome);
            }
        }
    }

    let writable = match existing {
        None => !permitted.is_empty(),
        Some(cm) => cm.is_managed() || cm.is_opted_in(),
    };
    if !writable {
        return TargetPlan {
            apply: None,
            config_hash: entries_hash([]),
            outcomes,
        };
    }

    // Start from what other writers hold: their keys count against the size limit too.
    let owned: BTreeSet<&str> = existing
        .map(|e| e.owned_keys.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let mut used: usize = existing
        .map(|e| {
            e.binary_bytes
                + e.data
                    .iter()
                    .filter(|(k, _)| !owned.contains(k.as_str()))
                    .map(|(k, v)| entry_size(k, v))
                    .sum::<usize>()
        })
        .unwrap_or(0);
    let current = |key: &str| {
        existing.and_then(|e| {
            if owned.contains(key) {
                e.data.get(key)
            } else {
                None
            }
        })
    };

    let mut apply = BTreeMap::new();
    // First pass: what already lives there stays (at its current value), so nothing served is
    // dropped; second pass: updates and newcomers, in key order, while they fit.
    for policy in &permitted {
        if let Some(value) = current(&policy.key) {
            used += entry_size(&policy.key, value);
            apply.insert(policy.key.clone(), value.clone());
        }
    }
    for policy in &permitted {
        let id = (policy.namespace.clone(), policy.name.clone());
        let outcome = match &policy.content {
            Content::KeepLastGood => Outcome::Retained {
                has_last_good: apply.contains_key(&policy.key),
            },
            Content::Document(doc) => {
                let old = apply
                    .get(&policy.key)
                    .map(|v| entry_size(&policy.key, v))
                    .unwrap_or(0);
                let new = entry_size(&policy.key, doc);
                if used - old + new <= CONFIGMAP_MAX_BYTES {
                    used = used - old + new;
                    apply.insert(policy.key.clone(), doc.clone());
                    Outcome::Synced
                } else {
                    Outcome::TargetFull(format!(
                        "ConfigMap {target} would exceed the {CONFIGMAP_MAX_BYTES}-byte limit with this document ({new} bytes); {}",
                        if old > 0 {
                            "the previous document stays"
                        } else {
                            "it was not added"
                        }
                    ))
                }
            }
        };
        outcomes.insert(id, outcome);
    }

    let config_hash = entries_hash(apply.iter());
    TargetPlan {
        apply: Some(apply),
        config_hash,
        outcomes,
    }
}
