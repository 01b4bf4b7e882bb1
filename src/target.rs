//! The plan for one gateway ConfigMap: which policy documents it should hold. Pure.
//!
//! Given what the ConfigMap looks like now (or that it does not exist) and every policy that
//! aims at it, [`plan_target`] decides the complete set of operator-owned data keys to apply
//! and the outcome for each policy: the ownership and consent rules of PRODUCT §4, last-good
//! retention for invalid policies (§5) and the 1 MiB limit (§3). Both the controller and
//! `routerpolicy render` call it, so a preview shows what the cluster will get.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ObjectMeta;

use crate::api::{ImageVariationPolicySpec, TargetReason, TargetStatus};
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
    pub owned: BTreeMap<String, String>,
    /// Every other data entry: key → its size (key and value), which counts against 1 MiB.
    pub foreign: BTreeMap<String, usize>,
    /// Size of `binaryData` (keys and values), which counts against the 1 MiB limit too.
    pub binary_bytes: usize,
}

impl ExistingTarget {
    /// The view of a live ConfigMap: owned keys are those the operator's field manager holds
    /// in `managedFields` (server-side apply).
    pub fn observe(cm: &ConfigMap) -> Self {
        let owned = owned_keys(cm);
        Self::with_owned(cm, |key| owned.contains(key))
    }

    /// The view of a ConfigMap manifest (no `managedFields`): keys that look like policy keys
    /// are taken as the operator's, so last-good and size rules apply to them.
    pub fn from_manifest(cm: &ConfigMap) -> Self {
        Self::with_owned(cm, |key| key.ends_with(".json"))
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
                owned.insert(key.clone(), value.clone());
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

/// The resolved, de-duplicated targets of a policy spec in `namespace`.
pub fn spec_targets(namespace: &str, spec: &ImageVariationPolicySpec) -> Vec<TargetKey> {
    let mut seen = BTreeSet::new();
    spec.target_refs
        .iter()
        .map(|t| TargetKey { namespace: t.resolved_namespace(namespace).to_string(), name: t.name.clone() })
        .filter(|t| seen.insert(t.clone()))
        .collect()
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
    /// A key of a policy in a namespace this operator instance does not watch: kept at its
    /// current value, neither judged nor pruned (never prune from an incomplete picture).
    NotWatched,
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
    TargetFull {
        /// Whether the policy's previous document stays.
        has_last_good: bool,
        /// Detail.
        message: String,
    },
    /// The write of the plan failed (decided by the controller, not the planner).
    ApplyFailed(String),
}

impl Outcome {
    /// The status reason.
    pub fn reason(&self) -> TargetReason {
        match self {
            Outcome::Synced => TargetReason::Synced,
            Outcome::Retained { .. } => TargetReason::ValidationFailed,
            Outcome::RefNotPermitted(_) => TargetReason::RefNotPermitted,
            Outcome::TargetNotManaged(_) => TargetReason::TargetNotManaged,
            Outcome::TargetFull { .. } => TargetReason::TargetFull,
            Outcome::ApplyFailed(_) => TargetReason::ApplyFailed,
        }
    }

    /// Whether the target permits the policy at all (Accepted).
    pub fn permitted(&self) -> bool {
        !matches!(self, Outcome::RefNotPermitted(_) | Outcome::TargetNotManaged(_))
    }

    /// Whether an earlier good document of the policy stays in the target.
    pub fn last_good_kept(&self) -> bool {
        matches!(self, Outcome::Retained { has_last_good: true } | Outcome::TargetFull { has_last_good: true, .. })
    }

    /// Human-readable detail for status and events.
    pub fn message(&self) -> String {
        match self {
            Outcome::Synced => String::new(),
            Outcome::Retained { has_last_good: true } => "invalid spec; the last good document stays".to_string(),
            Outcome::Retained { has_last_good: false } => "invalid spec; no earlier document to keep".to_string(),
            Outcome::RefNotPermitted(m) | Outcome::TargetNotManaged(m) | Outcome::ApplyFailed(m) => m.clone(),
            Outcome::TargetFull { message, .. } => message.clone(),
        }
    }

    /// The policy's entry in `status.targets` for `target`.
    pub fn target_status(&self, target: &TargetKey, key: &str) -> TargetStatus {
        TargetStatus {
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            key: key.to_string(),
            synced: *self == Outcome::Synced,
            reason: self.reason(),
            last_good_kept: self.last_good_kept(),
            message: self.message(),
        }
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
            && existing.owned.keys().all(|k| apply.contains_key(k))
            && apply.iter().all(|(k, v)| existing.owned.get(k) == Some(v))
    }
}

/// The ConfigMap the operator server-side applies for a plan: only the fields it owns (the
/// managed-by label, the config-hash annotation and its data keys).
pub fn applied_configmap(target: &TargetKey, data: BTreeMap<String, String>, config_hash: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(target.name.clone()),
            namespace: Some(target.namespace.clone()),
            labels: Some([(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string())].into()),
            annotations: Some([(CONFIG_HASH_ANNOTATION.to_string(), config_hash.to_string())].into()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

/// Size of one data entry as the API server counts it.
fn entry_size(key: &str, value: &str) -> usize {
    key.len() + value.len()
}

/// Plans one target. `policies` are all live policies that name this target in their spec;
/// policies being deleted, or that no longer name it, are simply absent (their keys go).
pub fn plan_target(target: &TargetKey, existing: Option<&ExistingTarget>, policies: &[PolicyAtTarget]) -> TargetPlan {
    let mut outcomes = BTreeMap::new();
    let mut permitted = Vec::new();

    for policy in policies.iter().filter(|p| p.content != Content::NotWatched) {
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
        return TargetPlan { apply: None, config_hash: entries_hash([]), outcomes };
    }

    // Keys of policies this instance does not watch stay exactly as they are.
    let mut apply = BTreeMap::new();
    for policy in policies.iter().filter(|p| p.content == Content::NotWatched) {
        if let Some(value) = existing.and_then(|e| e.owned.get(&policy.key)) {
            apply.insert(policy.key.clone(), value.clone());
        }
    }
    // Start from what other writers hold: their keys count against the size limit too (a key
    // this plan writes is the operator's after the apply, whoever held it before).
    let writes: BTreeSet<&str> = permitted.iter().map(|p| p.key.as_str()).collect();
    let mut used: usize = existing
        .map(|e| {
            e.binary_bytes
                + e.foreign.iter().filter(|(k, _)| !writes.contains(k.as_str())).map(|(_, size)| size).sum::<usize>()
        })
        .unwrap_or(0)
        + apply.iter().map(|(k, v)| entry_size(k, v)).sum::<usize>();
    let current = |key: &str| existing.and_then(|e| e.owned.get(key));

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
            Content::NotWatched => continue,
            Content::KeepLastGood => Outcome::Retained { has_last_good: apply.contains_key(&policy.key) },
            Content::Document(doc) => {
                let old = apply.get(&policy.key).map(|v| entry_size(&policy.key, v)).unwrap_or(0);
                let new = entry_size(&policy.key, doc);
                if used - old + new <= CONFIGMAP_MAX_BYTES {
                    used = used - old + new;
                    apply.insert(policy.key.clone(), doc.clone());
                    Outcome::Synced
                } else {
                    Outcome::TargetFull {
                        has_last_good: old > 0,
                        message: format!(
                            "ConfigMap {target} would exceed the {CONFIGMAP_MAX_BYTES}-byte limit with this document ({new} bytes); {}",
                            if old > 0 { "the previous document stays" } else { "it was not added" }
                        ),
                    }
                }
            }
        };
        outcomes.insert(id, outcome);
    }

    let config_hash = entries_hash(apply.iter());
    TargetPlan { apply: Some(apply), config_hash, outcomes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> TargetKey {
        TargetKey { namespace: "gateway".into(), name: "gw".into() }
    }

    fn policy(namespace: &str, name: &str, doc: &str) -> PolicyAtTarget {
        PolicyAtTarget {
            namespace: namespace.into(),
            name: name.into(),
            key: crate::render::data_key(namespace, name),
            content: Content::Document(doc.into()),
        }
    }

    fn invalid(namespace: &str, name: &str) -> PolicyAtTarget {
        PolicyAtTarget { content: Content::KeepLastGood, ..policy(namespace, name, "") }
    }

    fn existing() -> ExistingTarget {
        ExistingTarget::default()
    }

    fn with_label(mut e: ExistingTarget, key: &str, value: &str) -> ExistingTarget {
        e.labels.insert(key.into(), value.into());
        e
    }

    fn owning(mut e: ExistingTarget, key: &str, value: &str) -> ExistingTarget {
        e.owned.insert(key.into(), value.into());
        e
    }

    fn outcome(plan: &TargetPlan, ns: &str, name: &str) -> Outcome {
        plan.outcomes[&(ns.to_string(), name.to_string())].clone()
    }

    #[test]
    fn missing_configmap_in_the_policys_namespace_is_created() {
        let plan = plan_target(&target(), None, &[policy("gateway", "p", "{}")]);
        assert_eq!(plan.apply, Some([("gateway.p.json".to_string(), "{}".to_string())].into()));
        assert_eq!(outcome(&plan, "gateway", "p"), Outcome::Synced);
    }

    #[test]
    fn missing_configmap_in_another_namespace_is_not_created() {
        let plan = plan_target(&target(), None, &[policy("team", "p", "{}")]);
        assert_eq!(plan.apply, None);
        assert!(matches!(outcome(&plan, "team", "p"), Outcome::RefNotPermitted(_)));
    }

    #[test]
    fn unlabelled_configmap_in_the_same_namespace_is_not_managed() {
        let plan = plan_target(&target(), Some(&existing()), &[policy("gateway", "p", "{}")]);
        assert_eq!(plan.apply, None);
        assert!(matches!(outcome(&plan, "gateway", "p"), Outcome::TargetNotManaged(_)));
    }

    #[test]
    fn opted_in_configmap_in_the_same_namespace_needs_no_annotation() {
        let cm = with_label(existing(), GATEWAY_LABEL, "true");
        let plan = plan_target(&target(), Some(&cm), &[policy("gateway", "p", "{}")]);
        assert_eq!(outcome(&plan, "gateway", "p"), Outcome::Synced);
    }

    #[test]
    fn cross_namespace_needs_the_label_and_the_namespace_in_the_annotation() {
        let labelled = with_label(existing(), GATEWAY_LABEL, "true");
        let plan = plan_target(&target(), Some(&labelled), &[policy("team", "p", "{}")]);
        assert!(matches!(outcome(&plan, "team", "p"), Outcome::RefNotPermitted(m) if m.contains("annotation")));

        let mut allowed = labelled.clone();
        allowed.annotations.insert(ALLOWED_NAMESPACES_ANNOTATION.into(), "other, team".into());
        let plan = plan_target(&target(), Some(&allowed), &[policy("team", "p", "{}")]);
        assert_eq!(outcome(&plan, "team", "p"), Outcome::Synced);

        let mut star = labelled;
        star.annotations.insert(ALLOWED_NAMESPACES_ANNOTATION.into(), "*".into());
        assert_eq!(
            outcome(&plan_target(&target(), Some(&star), &[policy("team", "p", "{}")]), "team", "p"),
            Outcome::Synced
        );

        let mut annotated_only = existing();
        annotated_only.annotations.insert(ALLOWED_NAMESPACES_ANNOTATION.into(), "*".into());
        let plan = plan_target(&target(), Some(&annotated_only), &[policy("team", "p", "{}")]);
        assert!(matches!(outcome(&plan, "team", "p"), Outcome::RefNotPermitted(m) if m.contains("not labelled")));
        assert_eq!(plan.apply, None);
    }

    #[test]
    fn withdrawn_consent_drops_the_key_from_a_managed_configmap() {
        let cm = owning(with_label(existing(), MANAGED_BY_LABEL, MANAGED_BY_VALUE), "team.p.json", "{}");
        let plan = plan_target(&target(), Some(&cm), &[policy("team", "p", "{}")]);
        assert_eq!(plan.apply, Some(BTreeMap::new()));
        assert!(matches!(outcome(&plan, "team", "p"), Outcome::RefNotPermitted(_)));
    }

    #[test]
    fn invalid_policy_keeps_its_last_good_document() {
        let cm = owning(with_label(existing(), MANAGED_BY_LABEL, MANAGED_BY_VALUE), "gateway.p.json", "{\"good\":1}");
        let plan = plan_target(&target(), Some(&cm), &[invalid("gateway", "p")]);
        assert_eq!(plan.apply, Some([("gateway.p.json".to_string(), "{\"good\":1}".to_string())].into()));
        assert_eq!(outcome(&plan, "gateway", "p"), Outcome::Retained { has_last_good: true });
        assert!(plan.is_noop(Some(&ExistingTarget {
            annotations: [(CONFIG_HASH_ANNOTATION.into(), plan.config_hash.clone())].into(),
            ..cm
        })));
    }

    #[test]
    fn keys_of_other_writers_are_neither_applied_nor_dropped() {
        let mut cm = with_label(existing(), MANAGED_BY_LABEL, MANAGED_BY_VALUE);
        cm.foreign.insert("theirs.json".into(), 12);
        let plan = plan_target(&target(), Some(&cm), &[policy("gateway", "p", "{}")]);
        assert_eq!(plan.apply, Some([("gateway.p.json".to_string(), "{}".to_string())].into()));
    }

    #[test]
    fn newcomers_that_do_not_fit_get_target_full_and_residents_stay() {
        let big = "x".repeat(CONFIGMAP_MAX_BYTES / 2);
        let cm = owning(with_label(existing(), MANAGED_BY_LABEL, MANAGED_BY_VALUE), "gateway.a.json", &big);
        let policies = [policy("gateway", "a", &big), policy("gateway", "b", &big), policy("gateway", "c", "{}")];
        let plan = plan_target(&target(), Some(&cm), &policies);
        assert_eq!(outcome(&plan, "gateway", "a"), Outcome::Synced);
        assert!(matches!(outcome(&plan, "gateway", "b"), Outcome::TargetFull { has_last_good: false, .. }));
        assert_eq!(outcome(&plan, "gateway", "c"), Outcome::Synced);
        let apply = plan.apply.expect("apply");
        assert!(
            apply.contains_key("gateway.a.json")
                && apply.contains_key("gateway.c.json")
                && !apply.contains_key("gateway.b.json")
        );
        assert!(apply.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() <= CONFIGMAP_MAX_BYTES);
    }

    #[test]
    fn a_resident_that_grows_too_big_keeps_its_previous_document() {
        let cm = owning(with_label(existing(), MANAGED_BY_LABEL, MANAGED_BY_VALUE), "gateway.a.json", "{\"v\":1}");
        let plan = plan_target(&target(), Some(&cm), &[policy("gateway", "a", &"x".repeat(CONFIGMAP_MAX_BYTES))]);
        assert!(
            matches!(outcome(&plan, "gateway", "a"), Outcome::TargetFull { has_last_good: true, message } if message.contains("previous document stays"))
        );
        assert_eq!(plan.apply.expect("apply")["gateway.a.json"], "{\"v\":1}");
    }

    #[test]
    fn an_up_to_date_configmap_needs_no_write() {
        let plan = plan_target(&target(), None, &[policy("gateway", "p", "{}")]);
        let mut cm = owning(with_label(existing(), MANAGED_BY_LABEL, MANAGED_BY_VALUE), "gateway.p.json", "{}");
        cm.annotations.insert(CONFIG_HASH_ANNOTATION.into(), plan.config_hash.clone());
        assert!(plan.is_noop(Some(&cm)));
        let stale = owning(cm.clone(), "gateway.gone.json", "{}");
        assert!(!plan.is_noop(Some(&stale)), "an owned key of a deleted policy must be removed");
        let edited = owning(cm, "gateway.p.json", "{\"hand\":1}");
        assert!(!plan.is_noop(Some(&edited)), "a hand edit must be repaired");
        assert!(!plan.is_noop(None), "a deleted ConfigMap must be recreated");
    }
}
