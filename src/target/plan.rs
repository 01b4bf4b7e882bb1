//! The plan for one gateway ConfigMap: which policy documents it should hold. Pure.
//!
//! Given what the ConfigMap looks like now (or that it does not exist) and every policy that
//! aims at it, [`plan_target`] decides the complete set of operator-owned data keys to apply
//! and the outcome for each policy, in three steps: consent ([`consent`]), what may be written
//! at all, then fitting the documents into 1 MiB ([`fill`]) while invalid policies keep their
//! last good document: the rules of README.md, "Targets, ownership and consent". Both the controller and `routerpolicy render`
//! call it, so a preview shows what the cluster will get.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::{TargetReason, TargetStatus};
use crate::hash::entries_hash;
use crate::key::{PolicyKey, TargetKey};
use crate::limits::CONFIGMAP_MAX_BYTES;
use crate::render::GatewayDocument;
use crate::target::configmap::{
    ALLOWED_NAMESPACES_ANNOTATION, CONFIG_HASH_ANNOTATION, ExistingTarget, GATEWAY_LABEL, entry_size,
};

/// A policy aiming at the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyAtTarget {
    /// The policy.
    pub policy: PolicyKey,
    /// Its document's data key (`policy.data_key()`, made once); its callers entry, if any,
    /// is under `policy.callers_key()`.
    pub key: String,
    /// What it wants there.
    pub content: Content,
}

impl PolicyAtTarget {
    /// `policy` wanting `content` at the target.
    pub fn new(policy: PolicyKey, content: Content) -> Self {
        PolicyAtTarget { key: policy.data_key(), policy, content }
    }

    /// The data keys the policy may hold: its document's, its callers entry's and its canary
    /// entry's.
    fn keys(&self) -> [String; 3] {
        [self.key.clone(), self.policy.callers_key(), self.policy.canary_key()]
    }
}

/// What a policy wants in the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// A valid policy's rendered document (and callers entry).
    Document(GatewayDocument),
    /// An invalid policy: keep whatever good document is there already.
    KeepLastGood,
    /// A rollout step (`spec.rollout`): the document in service stays, and the new one goes
    /// beside it as the canary entry with the step's weight. Where no document is in service
    /// yet, the new one goes out whole.
    Canary {
        /// The new document.
        document: GatewayDocument,
        /// Percent of calls it gets (1 to 99).
        weight: u8,
    },
    /// A rolled-back change: the document in service stays, the new one is not written.
    RolledBack,
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
    /// The change was rolled back; the document in service before it stays (if there was one).
    RolledBack {
        /// Whether a document of the policy stays.
        has_last_good: bool,
    },
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
            Outcome::RolledBack { .. } => TargetReason::RolledBack,
        }
    }

    /// Whether the target permits the policy at all (Accepted).
    pub fn permitted(&self) -> bool {
        !matches!(self, Outcome::RefNotPermitted(_) | Outcome::TargetNotManaged(_))
    }

    /// Whether an earlier good document of the policy stays in the target.
    pub fn last_good_kept(&self) -> bool {
        matches!(
            self,
            Outcome::Retained { has_last_good: true }
                | Outcome::TargetFull { has_last_good: true, .. }
                | Outcome::RolledBack { has_last_good: true }
        )
    }

    /// Human-readable detail for status and events.
    pub fn message(&self) -> String {
        match self {
            Outcome::Synced => String::new(),
            Outcome::Retained { has_last_good: true } => "invalid spec; the last good document stays".to_string(),
            Outcome::Retained { has_last_good: false } => "invalid spec; no earlier document to keep".to_string(),
            Outcome::RefNotPermitted(m) | Outcome::TargetNotManaged(m) | Outcome::ApplyFailed(m) => m.clone(),
            Outcome::TargetFull { message, .. } => message.clone(),
            Outcome::RolledBack { has_last_good: true } => {
                "the change was rolled back; the document in service before it stays".to_string()
            }
            Outcome::RolledBack { has_last_good: false } => "the change was rolled back".to_string(),
        }
    }

    /// The policy's entry in `status.targets` for `target`.
    pub fn target_status(&self, target: &TargetKey, policy: &PolicyKey) -> TargetStatus {
        TargetStatus {
            namespace: target.namespace.to_string(),
            name: target.name.to_string(),
            key: policy.data_key(),
            synced: *self == Outcome::Synced,
            reason: self.reason(),
            last_good_kept: self.last_good_kept(),
            message: self.message(),
            served_replicas: None,
            reporting_replicas: None,
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
    /// Outcome per policy.
    pub outcomes: BTreeMap<PolicyKey, Outcome>,
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
            && apply.iter().all(|(k, v)| existing.owned.get(k).is_some_and(|o| **o == **v))
    }
}

/// Whether `existing` (or its absence) permits `policy` to be written there (README.md,
/// "Targets, ownership and consent").
pub fn consent(target: &TargetKey, existing: Option<&ExistingTarget>, policy: &PolicyKey) -> Result<(), Outcome> {
    let same_namespace = *policy.namespace == *target.namespace;
    match existing {
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
        Some(cm) if !cm.is_opted_in() => Err(Outcome::RefNotPermitted(format!(
            "ConfigMap {target} is in another namespace and is not labelled {GATEWAY_LABEL}=\"true\""
        ))),
        Some(cm) if !cm.allows_namespace(&policy.namespace) => Err(Outcome::RefNotPermitted(format!(
            "ConfigMap {target} does not list namespace {:?} in its {ALLOWED_NAMESPACES_ANNOTATION} annotation",
            policy.namespace
        ))),
        Some(_) => Ok(()),
    }
}

/// Plans one target. `policies` are all live policies that name this target in their spec;
/// policies being deleted, or that no longer name it, are simply absent (their keys go).
pub fn plan_target(target: &TargetKey, existing: Option<&ExistingTarget>, policies: &[PolicyAtTarget]) -> TargetPlan {
    let mut outcomes = BTreeMap::new();
    let mut permitted = Vec::new();
    for policy in policies.iter().filter(|p| p.content != Content::NotWatched) {
        match consent(target, existing, &policy.policy) {
            Ok(()) => permitted.push(policy),
            Err(outcome) => {
                outcomes.insert(policy.policy.clone(), outcome);
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
    let apply = fill(target, existing, policies, &permitted, &mut outcomes);
    let config_hash = entries_hash(apply.iter());
    TargetPlan { apply: Some(apply), config_hash, outcomes }
}

/// The data entries of a writable target: keys of unwatched namespaces as they are, then
/// what already lives there, then updates and newcomers while they fit in 1 MiB. Records
/// each permitted policy's outcome.
fn fill(
    target: &TargetKey,
    existing: Option<&ExistingTarget>,
    policies: &[PolicyAtTarget],
    permitted: &[&PolicyAtTarget],
    outcomes: &mut BTreeMap<PolicyKey, Outcome>,
) -> BTreeMap<String, String> {
    // Keys of policies this instance does not watch stay exactly as they are.
    let mut apply = BTreeMap::new();
    let keep = |apply: &mut BTreeMap<String, String>, policy: &PolicyAtTarget| {
        for key in policy.keys() {
            if let Some(value) = existing.and_then(|e| e.owned.get(&key)) {
                apply.insert(key, value.to_string());
            }
        }
    };
    for policy in policies.iter().filter(|p| p.content == Content::NotWatched) {
        keep(&mut apply, policy);
    }
    // First pass: what already lives there stays (at its current value), so nothing served is
    // dropped; second pass: updates and newcomers, in key order, while they fit.
    for policy in permitted {
        keep(&mut apply, policy);
    }
    let mut used = foreign_bytes(existing, permitted) + apply.iter().map(|(k, v)| entry_size(k, v)).sum::<usize>();
    for policy in permitted {
        let outcome = match &policy.content {
            Content::NotWatched => continue,
            Content::KeepLastGood => {
                drop_canary(&mut apply, &mut used, policy);
                Outcome::Retained { has_last_good: apply.contains_key(&policy.key) }
            }
            Content::RolledBack => {
                drop_canary(&mut apply, &mut used, policy);
                Outcome::RolledBack { has_last_good: apply.contains_key(&policy.key) }
            }
            Content::Document(doc) => {
                drop_canary(&mut apply, &mut used, policy);
                place(target, &mut apply, &mut used, policy, doc)
            }
            Content::Canary { document, weight } if in_service(&apply, policy).is_some_and(|h| h != document.hash) => {
                place_canary(target, &mut apply, &mut used, policy, document, *weight)
            }
            // Nothing in service here yet (or this very document): it goes out whole.
            Content::Canary { document, .. } => {
                drop_canary(&mut apply, &mut used, policy);
                place(target, &mut apply, &mut used, policy, document)
            }
        };
        outcomes.insert(policy.policy.clone(), outcome);
    }
    apply
}

/// The hash of the policy's document in service here (with its callers entry), if any.
fn in_service(apply: &BTreeMap<String, String>, policy: &PolicyAtTarget) -> Option<String> {
    let document = apply.get(&policy.key)?;
    let callers = apply.get(&policy.policy.callers_key());
    Some(crate::hash::policy_hash(document.as_bytes(), callers.map(String::as_bytes)))
}

/// Takes the policy's canary entry out (a rollout that ended, or none).
fn drop_canary(apply: &mut BTreeMap<String, String>, used: &mut usize, policy: &PolicyAtTarget) {
    let key = policy.policy.canary_key();
    if let Some(old) = apply.remove(&key) {
        *used -= entry_size(&key, &old);
    }
}

/// Puts the canary entry of a rollout step beside the document in service, if it fits.
fn place_canary(
    target: &TargetKey,
    apply: &mut BTreeMap<String, String>,
    used: &mut usize,
    policy: &PolicyAtTarget,
    doc: &GatewayDocument,
    weight: u8,
) -> Outcome {
    let key = policy.policy.canary_key();
    let entry = crate::rollout::CanaryEntry { weight, document: doc.json.to_string(), callers: doc.callers.clone() };
    let text = entry.to_text();
    let old = apply.get(&key).map(|v| entry_size(&key, v)).unwrap_or(0);
    let new = entry_size(&key, &text);
    if *used - old + new <= CONFIGMAP_MAX_BYTES {
        *used = *used - old + new;
        apply.insert(key, text);
        return Outcome::Synced;
    }
    Outcome::TargetFull {
        has_last_good: true,
        message: format!(
            "ConfigMap {target} would exceed the {CONFIGMAP_MAX_BYTES}-byte limit with this rollout's canary entry ({new} bytes); the document in service stays"
        ),
    }
}

/// What other writers hold: their keys count against the size limit too (a key this plan
/// writes is the operator's after the apply, whoever held it before).
fn foreign_bytes(existing: Option<&ExistingTarget>, permitted: &[&PolicyAtTarget]) -> usize {
    let writes: BTreeSet<String> = permitted.iter().flat_map(|p| p.keys()).collect();
    existing
        .map(|e| {
            e.binary_bytes
                + e.foreign.iter().filter(|(k, _)| !writes.contains(k.as_str())).map(|(_, size)| size).sum::<usize>()
        })
        .unwrap_or(0)
}

/// Puts the policy's document (and its callers entry, or no entry) in place of what it has
/// there, both or neither, if they fit in what is left of 1 MiB (`used` bytes are taken).
fn place(
    target: &TargetKey,
    apply: &mut BTreeMap<String, String>,
    used: &mut usize,
    policy: &PolicyAtTarget,
    doc: &GatewayDocument,
) -> Outcome {
    let key = &policy.key;
    let callers_key = policy.policy.callers_key();
    let size_of = |apply: &BTreeMap<String, String>, k: &str| apply.get(k).map(|v| entry_size(k, v)).unwrap_or(0);
    let had_document = apply.contains_key(key);
    let old = size_of(apply, key) + size_of(apply, &callers_key);
    let new = entry_size(key, &doc.json) + doc.callers.as_deref().map(|c| entry_size(&callers_key, c)).unwrap_or(0);
    if *used - old + new <= CONFIGMAP_MAX_BYTES {
        *used = *used - old + new;
        apply.insert(key.clone(), doc.json.to_string());
        match &doc.callers {
            Some(callers) => apply.insert(callers_key, callers.clone()),
            None => apply.remove(&callers_key),
        };
        return Outcome::Synced;
    }
    Outcome::TargetFull {
        has_last_good: had_document,
        message: format!(
            "ConfigMap {target} would exceed the {CONFIGMAP_MAX_BYTES}-byte limit with this document ({new} bytes); {}",
            if had_document { "the previous document stays" } else { "it was not added" }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::target::configmap::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};

    fn target() -> TargetKey {
        TargetKey::new("gateway", "gw")
    }

    fn policy(namespace: &str, name: &str, doc: &str) -> PolicyAtTarget {
        let document =
            GatewayDocument { json: doc.into(), callers: None, hash: crate::hash::short_hash(doc.as_bytes()) };
        PolicyAtTarget::new(PolicyKey::new(namespace, name), Content::Document(document))
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
        plan.outcomes[&PolicyKey::new(ns, name)].clone()
    }

    fn canary(namespace: &str, name: &str, doc: &str, weight: u8) -> PolicyAtTarget {
        let Content::Document(document) = policy(namespace, name, doc).content else { unreachable!() };
        PolicyAtTarget { content: Content::Canary { document, weight }, ..policy(namespace, name, doc) }
    }

    #[test]
    fn a_rollout_step_keeps_the_stable_document_and_adds_the_canary_entry() {
        let cm = owning(with_label(existing(), MANAGED_BY_LABEL, MANAGED_BY_VALUE), "gateway.p.json", "{\"old\":1}");
        let plan = plan_target(&target(), Some(&cm), &[canary("gateway", "p", "{\"new\":1}", 20)]);
        let apply = plan.apply.expect("writable");
        assert_eq!(apply["gateway.p.json"], "{\"old\":1}");
        let entry = crate::rollout::CanaryEntry::parse(apply["gateway.p.canary"].as_bytes()).expect("entry");
        assert_eq!((entry.weight, entry.document.as_str()), (20, "{\"new\":1}"));
        assert_eq!(
            outcome(&plan_target(&target(), Some(&cm), &[canary("gateway", "p", "{}", 20)]), "gateway", "p"),
            Outcome::Synced
        );
        // Nothing in service: the document goes out whole.
        let fresh = plan_target(&target(), None, &[canary("gateway", "p", "{\"new\":1}", 20)]).apply.expect("writable");
        assert!(fresh.contains_key("gateway.p.json") && !fresh.contains_key("gateway.p.canary"));
        // A promotion (the whole document) or a rollback takes the canary entry out.
        let during = owning(cm, "gateway.p.canary", &apply["gateway.p.canary"]);
        let promoted =
            plan_target(&target(), Some(&during), &[policy("gateway", "p", "{\"new\":1}")]).apply.expect("w");
        assert!(!promoted.contains_key("gateway.p.canary") && promoted["gateway.p.json"] == "{\"new\":1}");
        let back = PolicyAtTarget { content: Content::RolledBack, ..policy("gateway", "p", "") };
        let plan = plan_target(&target(), Some(&during), &[back]);
        assert_eq!(outcome(&plan, "gateway", "p"), Outcome::RolledBack { has_last_good: true });
        let apply = plan.apply.expect("writable");
        assert!(!apply.contains_key("gateway.p.canary") && apply["gateway.p.json"] == "{\"old\":1}");
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
