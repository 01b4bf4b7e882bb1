//! Index: the operator's in-memory state. Pure: no client, no clock, no I/O.
//!
//! Watch events go in ([`Index::apply_policy`], [`Index::delete_policy`],
//! [`Index::apply_target`], [`Index::delete_target`]); what each event touches comes out (the
//! targets to re-plan). The index holds:
//! - each policy's compiled form ([`crate::operator::compile`], once per spec change), the
//!   targets its spec names, the outcome each target's last plan gave it, and what is kept of
//!   its last known status;
//! - for each target ConfigMap: which policies name it, and what the ConfigMap holds (the
//!   stripped [`ExistingTarget`] view fed by the ConfigMap watches);
//! - which targets hold each policy's key, so a deleted or retargeted policy finds them;
//! - the gateway replicas' reports ([`Reports`]) and, per policy and target, where its
//!   current document landed ([`Landed`]): together they say whether it is served.
//!
//! Planning one target ([`Index::plan_input`]) costs O(policies at that target), never
//! O(all policies). The namespace [`Boundary`] is enforced here: a policy of another
//! namespace never enters, and an owned key of another namespace is left as it is.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Display;

use crate::api::ImageVariationPolicyStatus;
use crate::key::{PolicyKey, TargetKey};
use crate::operator::boundary::Boundary;
use crate::operator::compile::compile;
use crate::operator::decode::DecodedPolicy;
use crate::operator::served::{Landed, Replica, ReplicaKey, Reports, Serve};
use crate::operator::status::{StatusInput, StatusMemo};
use crate::render::GatewayDocument;
use crate::rollout::{Phase, Plan, State};
use crate::target::configmap::{ConfigMapWatch, ExistingTarget};
use crate::target::plan::{Content, Outcome, PolicyAtTarget, TargetPlan};
use crate::validate::Findings;

mod rollouts;

pub use rollouts::Judged;

/// One policy in the index.
#[derive(Clone, Debug)]
pub struct PolicyEntry {
    /// The policy.
    pub key: PolicyKey,
    /// `metadata.uid`.
    pub uid: Option<String>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `metadata.resourceVersion` of the last event seen.
    pub resource_version: Option<String>,
    /// Whether the object could be read at all.
    pub readable: bool,
    /// The rule book's verdict (errors and warnings).
    pub findings: Findings,
    /// The rendered document, for a valid policy.
    pub document: Option<GatewayDocument>,
    /// The targets the spec names (resolved, de-duplicated, in spec order).
    pub targets: Vec<TargetKey>,
    /// Bumped on every spec change; an outcome computed for an older revision is dropped.
    pub revision: u64,
    /// The outcome of each target's last plan for the current revision (a policy names at
    /// most 16 targets: a small list, not a map, keeps 10,000 policies small).
    pub outcomes: Vec<(TargetKey, Outcome)>,
    /// What is kept of the last known status (from the watch, or as the operator last
    /// wrote it).
    pub status: Option<StatusMemo>,
    /// Where the current document landed in each target (kept across spec changes that
    /// leave the document as it is).
    pub landed: Vec<(TargetKey, Landed)>,
    /// How a change goes out (`spec.rollout`), for a valid policy that sets it.
    pub rollout_plan: Option<Plan>,
    /// The rollout of the current document (once settled), or the one before it (while
    /// `rollout_pending`). Boxed: most policies have none, and a state is ~200 bytes.
    pub rollout: Option<Box<State>>,
    /// Whether the rollout of a new generation is still to be settled against what the targets
    /// hold (it is, when one of its targets is planned next: every watch has listed by then).
    pub rollout_pending: bool,
    /// The `routerpolicy.io/rollout-action` annotation, not acted on yet.
    pub rollout_action: Option<String>,
}

impl PolicyEntry {
    /// The targets this policy's status reports on: those its spec names, or, for an object
    /// that cannot be read, those that hold its key.
    pub fn status_targets(&self, holders: Option<&Vec<TargetKey>>) -> Vec<TargetKey> {
        if self.readable { self.targets.clone() } else { holders.into_iter().flatten().cloned().collect() }
    }

    fn outcome(&self, target: &TargetKey) -> Option<&Outcome> {
        self.outcomes.iter().find(|(t, _)| t == target).map(|(_, o)| o)
    }

    /// The document `hash` is in `target` at `revision`: remember where it first landed.
    fn landed_at(&mut self, target: &TargetKey, hash: &str, revision: u64, now_ms: i64) {
        match self.landed.iter_mut().find(|(t, _)| t == target) {
            Some((_, landed)) if landed.hash == hash => {}
            Some((_, landed)) => *landed = Landed { hash: hash.to_string(), revision, at_ms: now_ms },
            None => {
                // A policy names few targets, most often one: no room for more is kept.
                self.landed.reserve_exact(1);
                self.landed.push((target.clone(), Landed { hash: hash.to_string(), revision, at_ms: now_ms }));
            }
        }
    }
}

/// Which ConfigMap watches currently show a target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeenBy {
    managed: bool,
    opted_in: bool,
}

impl SeenBy {
    fn slot(&mut self, watch: ConfigMapWatch) -> &mut bool {
        match watch {
            ConfigMapWatch::Managed => &mut self.managed,
            ConfigMapWatch::OptedIn => &mut self.opted_in,
        }
    }

    /// Whether `watch` shows the target.
    pub fn by(&self, watch: ConfigMapWatch) -> bool {
        match watch {
            ConfigMapWatch::Managed => self.managed,
            ConfigMapWatch::OptedIn => self.opted_in,
        }
    }

    /// Whether any watch shows the target.
    pub fn any(&self) -> bool {
        self.managed || self.opted_in
    }
}

/// One target ConfigMap in the index.
#[derive(Clone, Debug, Default)]
pub struct TargetEntry {
    /// What the ConfigMap holds, as the ConfigMap watches last showed it; `None` when no
    /// watch shows it (missing, or neither managed nor opted in).
    pub live: Option<ExistingTarget>,
    /// `metadata.resourceVersion` of `live`.
    pub resource_version: Option<String>,
    /// Which ConfigMap watches currently show it.
    pub seen_by: SeenBy,
    /// The policies whose spec names this target.
    pub wanted_by: BTreeSet<PolicyKey>,
}

/// What one event touched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    /// Targets to re-plan.
    pub targets: BTreeSet<TargetKey>,
    /// Whether the policy carries the legacy finalizer, which must be removed.
    pub legacy_finalizer: bool,
    /// Whether the policy left the index (deleted, or being deleted).
    pub removed: bool,
    /// Whether it carries a rollout action to act on (its status is looked at).
    pub rollout_action: bool,
}

/// The input of one target's plan, and the policy revisions it was taken at.
#[derive(Clone, Debug)]
pub struct PlanInput {
    /// What the ConfigMap holds now (`None`: not known to the watches).
    pub live: Option<ExistingTarget>,
    /// Every policy that wants something there.
    pub policies: Vec<PolicyAtTarget>,
    /// The revision of each policy the plan used.
    pub revisions: BTreeMap<PolicyKey, u64>,
}

/// The index.
#[derive(Debug, Default)]
pub struct Index {
    boundary: Boundary,
    /// Boxed: a map slot is then a pointer, not the whole entry (most of a map's slots are
    /// empty or hold a key that is about to be overwritten; an entry is ~600 bytes).
    policies: HashMap<PolicyKey, Box<PolicyEntry>>,
    targets: HashMap<TargetKey, TargetEntry>,
    /// Policy → the targets holding its data key (almost always one: a list).
    holders: HashMap<PolicyKey, Vec<TargetKey>>,
    /// The gateway replicas' reports.
    reports: Reports,
}

/// Whether resource version `new` is not older than `old` (both etcd revisions; anything that
/// does not parse counts as newer, so a foreign server never freezes the cache).
fn not_older(old: Option<&str>, new: Option<&str>) -> bool {
    match (old.and_then(|o| o.parse::<u64>().ok()), new.and_then(|n| n.parse::<u64>().ok())) {
        (Some(old), Some(new)) => new >= old,
        _ => true,
    }
}

// ---- reading the index ----------------------------------------------------------------------

impl Index {
    /// An empty index for the namespaces of `boundary`.
    pub fn new(boundary: Boundary) -> Self {
        Index { boundary, ..Default::default() }
    }

    /// The boundary.
    pub fn boundary(&self) -> &Boundary {
        &self.boundary
    }

    /// Number of policies in the index.
    pub fn policy_count(&self) -> usize {
        self.policies.len()
    }

    /// A policy by key.
    pub fn policy(&self, key: &PolicyKey) -> Option<&PolicyEntry> {
        self.policies.get(key).map(|entry| &**entry)
    }

    /// A target by key.
    pub fn target(&self, target: &TargetKey) -> Option<&TargetEntry> {
        self.targets.get(target)
    }

    /// The targets whose ConfigMap holds the policy's key as an operator-owned key.
    pub fn holders(&self, key: &PolicyKey) -> Option<&Vec<TargetKey>> {
        self.holders.get(key)
    }

    /// Every target the index knows: named by a policy or holding operator keys.
    pub fn all_targets(&self) -> Vec<TargetKey> {
        self.targets.keys().cloned().collect()
    }

    /// The policies in `namespace` (all policies for `None`).
    pub fn policy_keys(&self, namespace: Option<&str>) -> Vec<PolicyKey> {
        self.policies.keys().filter(|k| namespace.is_none_or(|n| &*k.namespace == n)).cloned().collect()
    }

    /// The targets that ConfigMap watch `watch` shows.
    pub fn targets_seen_by(&self, watch: ConfigMapWatch) -> Vec<TargetKey> {
        self.targets.iter().filter(|(_, t)| t.seen_by.by(watch)).map(|(k, _)| k.clone()).collect()
    }

    /// Whether planning `target` can matter to this instance: a watched policy names it, it
    /// holds a key of a watched namespace, or the index no longer knows it (a last plan
    /// settles its outcomes). A ConfigMap holding only other namespaces' keys is left alone.
    pub fn concerns(&self, target: &TargetKey) -> bool {
        self.targets.get(target).is_none_or(|entry| {
            !entry.wanted_by.is_empty()
                || entry.live.as_ref().is_some_and(|live| live.owned.keys().any(|k| self.boundary.contains_data_key(k)))
        })
    }
}

// ---- watch events in ------------------------------------------------------------------------

impl Index {
    /// A policy was added or changed. Its spec is compiled here, once per change.
    pub fn apply_policy(&mut self, decoded: DecodedPolicy) -> Touched {
        if !self.boundary.contains(&decoded.key.namespace) {
            return Touched::default();
        }
        let legacy_finalizer = decoded.has_legacy_finalizer();
        if decoded.deleting {
            return Touched { legacy_finalizer, ..self.delete_policy(&decoded.key) };
        }
        if let Some(entry) = self.policies.get_mut(&decoded.key)
            && entry.uid == decoded.uid
            && entry.generation.is_some()
            && entry.generation == decoded.generation
        {
            // Same spec (status, labels or finalizers changed; most often the echo of the
            // operator's own status write): nothing to plan, nothing to parse.
            if not_older(entry.resource_version.as_deref(), decoded.resource_version.as_deref()) {
                entry.resource_version = decoded.resource_version;
            }
            entry.rollout_action = decoded.rollout_action;
            let rollout_action = entry.rollout_action.is_some();
            return Touched { legacy_finalizer, rollout_action, ..Default::default() };
        }
        let mut compiled = compile(&decoded.key, decoded.spec.as_deref());
        if let Some(document) = compiled.document.as_mut() {
            self.share_held(&decoded.key, document);
        }
        let key = self.share_names(&decoded.key, &mut compiled.targets);
        let previous = self.policies.remove(&key);
        let mut touched = Touched { legacy_finalizer, ..Default::default() };
        for t in previous.iter().flat_map(|old| &old.targets) {
            self.unwant(t, &key);
            touched.targets.insert(t.clone());
        }
        for t in &compiled.targets {
            self.targets.entry(t.clone()).or_default().wanted_by.insert(key.clone());
            touched.targets.insert(t.clone());
        }
        touched.targets.extend(self.holders.get(&key).into_iter().flatten().cloned());
        // A policy new to the index (the operator started, or took over) brings its stored
        // status: what the next one is compared with, and the rollout it continues.
        let stored = match &previous {
            Some(_) => None,
            None => decoded
                .status
                .as_ref()
                .and_then(|raw| serde_json::from_str::<ImageVariationPolicyStatus>(raw.get()).ok()),
        };
        let status = previous.as_ref().and_then(|p| p.status.clone()).or_else(|| {
            let stored = stored.as_ref()?;
            Some(StatusMemo::of(stored, StatusMemo::shows_deprecation(stored, decoded.generation, &compiled.findings)))
        });
        let prior_rollout = match &previous {
            Some(p) => p.rollout.clone(),
            None => stored.as_ref().and_then(|s| s.rollout.as_ref()).map(|s| Box::new(State::of_status(s))),
        };
        let rollout_pending = compiled.rollout.is_some() && compiled.document.is_some();
        touched.rollout_action = decoded.rollout_action.is_some();
        self.policies.insert(
            key.clone(),
            Box::new(PolicyEntry {
                key,
                uid: decoded.uid,
                generation: decoded.generation,
                resource_version: decoded.resource_version,
                readable: compiled.readable,
                findings: compiled.findings,
                document: compiled.document,
                targets: compiled.targets,
                revision: previous.as_ref().map(|p| p.revision + 1).unwrap_or(0),
                outcomes: Vec::new(),
                status,
                landed: previous.map(|p| p.landed).unwrap_or_default(),
                rollout_plan: compiled.rollout,
                rollout: prior_rollout.filter(|_| rollout_pending),
                rollout_pending,
                rollout_action: decoded.rollout_action,
            }),
        );
        touched
    }

    /// A policy is gone (or being deleted): the targets that named it or hold its key are
    /// re-planned, and its key goes from them.
    pub fn delete_policy(&mut self, key: &PolicyKey) -> Touched {
        let mut touched = Touched { removed: true, ..Default::default() };
        if let Some(old) = self.policies.remove(key) {
            for t in &old.targets {
                self.unwant(t, key);
                touched.targets.insert(t.clone());
            }
        }
        touched.targets.extend(self.holders.get(key).into_iter().flatten().cloned());
        touched
    }

    fn unwant(&mut self, target: &TargetKey, key: &PolicyKey) {
        if let Some(entry) = self.targets.get_mut(target) {
            entry.wanted_by.remove(key);
            if entry.wanted_by.is_empty() && entry.live.is_none() {
                self.targets.remove(target);
            }
        }
    }

    fn set_live(&mut self, target: &TargetKey, mut live: Option<ExistingTarget>) {
        let new_keys = live.as_mut().map(|live| self.share_documents(live)).unwrap_or_default();
        let entry = self.targets.entry(target.clone()).or_default();
        let old_keys: Vec<PolicyKey> =
            entry.live.iter().flat_map(|l| l.owned.keys()).filter_map(|k| PolicyKey::owner_of_data_key(k)).collect();
        entry.live = live;
        for key in old_keys {
            if let Some(set) = self.holders.get_mut(&key) {
                set.retain(|t| t != target);
                if set.is_empty() {
                    self.holders.remove(&key);
                }
            }
        }
        for key in new_keys {
            let set = self.holders.entry(key).or_default();
            if !set.contains(target) {
                // Almost always the one holder: no room for more is kept.
                set.reserve_exact(1);
                set.push(target.clone());
            }
        }
    }

    /// The policies whose keys `live` holds, each as the index's own key where it has the
    /// policy (its names shared, not copied); on the way, a held document that is its
    /// policy's current document shares the policy's bytes, so the index holds each document
    /// once, not once more per ConfigMap view.
    fn share_documents(&self, live: &mut ExistingTarget) -> Vec<PolicyKey> {
        let mut owners = Vec::new();
        for (key, value) in live.owned.iter_mut() {
            let Some(owner) = PolicyKey::owner_of_data_key(key) else { continue };
            let Some((held, entry)) = self.policies.get_key_value(&owner) else {
                owners.push(owner);
                continue;
            };
            if let Some(document) = entry.document.as_ref()
                && *key == owner.data_key()
                && document.json == *value
            {
                *value = document.json.clone();
            }
            owners.push(held.clone());
        }
        owners
    }

    /// The targets' keys as the index already holds them (their names shared, not copied per
    /// policy), and the policy's key with its namespace shared with a target of its own
    /// namespace: 100,000 policies over 1,000 targets hold 1,000 target names, not 100,000.
    fn share_names(&mut self, key: &PolicyKey, targets: &mut [TargetKey]) -> PolicyKey {
        for t in targets.iter_mut() {
            match self.targets.get_key_value(t) {
                Some((held, _)) => *t = held.clone(),
                None => {
                    self.targets.insert(t.clone(), TargetEntry::default());
                }
            }
        }
        match targets.iter().find(|t| t.namespace == key.namespace) {
            Some(t) => PolicyKey { namespace: t.namespace.clone(), name: key.name.clone() },
            None => key.clone(),
        }
    }

    /// The reverse of [`Index::share_documents`], for a policy compiled after its target was
    /// seen (a restart lists ConfigMaps and policies in either order): a new document that a
    /// holder already holds takes the held bytes.
    fn share_held(&self, key: &PolicyKey, document: &mut GatewayDocument) {
        let data_key = key.data_key();
        let held = self.holders.get(key).into_iter().flatten().filter_map(|t| self.targets.get(t)?.live.as_ref());
        if let Some(value) = held.filter_map(|live| live.owned.get(&data_key)).find(|v| **v == document.json) {
            document.json = value.clone();
        }
    }

    /// ConfigMap watch `watch` shows `live` at `resource_version`. Returns whether the target
    /// must be re-planned (its view changed).
    pub fn apply_target(
        &mut self,
        watch: ConfigMapWatch,
        target: &TargetKey,
        live: ExistingTarget,
        resource_version: Option<String>,
    ) -> bool {
        let entry = self.targets.entry(target.clone()).or_default();
        *entry.seen_by.slot(watch) = true;
        if !not_older(entry.resource_version.as_deref(), resource_version.as_deref()) {
            return false;
        }
        entry.resource_version = resource_version;
        if entry.live.as_ref() == Some(&live) {
            return false;
        }
        self.set_live(target, Some(live));
        true
    }

    /// The operator's own write returned `live` at `resource_version`: the cache takes it at
    /// once, so a plan that runs before the watch event arrives starts from the truth.
    pub fn wrote_target(&mut self, target: &TargetKey, live: ExistingTarget, resource_version: Option<String>) {
        let entry = self.targets.entry(target.clone()).or_default();
        if !not_older(entry.resource_version.as_deref(), resource_version.as_deref()) {
            return;
        }
        entry.resource_version = resource_version;
        self.set_live(target, Some(live));
    }

    /// ConfigMap watch `watch` no longer shows the target (deleted, or labels gone). Returns
    /// whether the target must be re-planned.
    pub fn delete_target(&mut self, watch: ConfigMapWatch, target: &TargetKey) -> bool {
        let Some(entry) = self.targets.get_mut(target) else {
            return false;
        };
        *entry.seen_by.slot(watch) = false;
        if entry.seen_by.any() {
            return false;
        }
        entry.resource_version = None;
        self.set_live(target, None);
        if let Some(entry) = self.targets.get(target)
            && entry.wanted_by.is_empty()
        {
            self.targets.remove(target);
        }
        true
    }
}

// ---- plans and statuses out -----------------------------------------------------------------

impl Index {
    /// What the planner needs for `target`: every policy that names it (its document, or keep
    /// the last good one if invalid), every policy whose key it holds (keep or prune), and
    /// the keys of unwatched namespaces (kept as they are). O(policies at the target).
    pub fn plan_input(&self, target: &TargetKey) -> PlanInput {
        let entry = self.targets.get(target);
        let live = entry.and_then(|e| e.live.clone());
        let mut keys: BTreeSet<PolicyKey> = entry.map(|e| e.wanted_by.iter().cloned().collect()).unwrap_or_default();
        keys.extend(live.iter().flat_map(|l| l.owned.keys()).filter_map(|k| PolicyKey::owner_of_data_key(k)));
        let mut policies = Vec::new();
        let mut revisions = BTreeMap::new();
        for key in keys {
            let holds = live.as_ref().is_some_and(|l| l.holds(&key.data_key()) || l.holds(&key.callers_key()));
            if !self.boundary.contains(&key.namespace) {
                if holds {
                    policies.push(PolicyAtTarget::new(key, Content::NotWatched));
                }
                continue;
            }
            let Some(policy) = self.policies.get(&key) else {
                continue; // deleted: its key goes
            };
            let named = policy.targets.contains(target);
            let content = match &policy.document {
                Some(doc) if named => policy.content_of(doc),
                Some(_) => continue, // retargeted: its key goes
                None if named || holds => Content::KeepLastGood,
                None => continue,
            };
            revisions.insert(key.clone(), policy.revision);
            policies.push(PolicyAtTarget::new(key, content));
        }
        policies.extend(self.unparsable_keys_outside(live.as_ref()));
        PlanInput { live, policies, revisions }
    }

    /// Owned keys that name no policy, of namespaces this instance does not watch: kept as
    /// they are (a key of a watched namespace that names no policy is pruned).
    fn unparsable_keys_outside(&self, live: Option<&ExistingTarget>) -> Vec<PolicyAtTarget> {
        live.iter()
            .flat_map(|l| l.owned.keys())
            .filter(|k| PolicyKey::owner_of_data_key(k).is_none() && !self.boundary.contains_data_key(k))
            .map(|k| PolicyAtTarget {
                policy: PolicyKey::new(PolicyKey::namespace_of_data_key(k), ""),
                key: k.clone(),
                content: Content::NotWatched,
            })
            .collect()
    }

    /// Records the outcomes of `target`'s plan (or of its failed write, `failed`) for the
    /// policies still at the revision the plan used, and where a new document landed (the
    /// target's resourceVersion now, at `now_ms`). Returns the policies whose status must be
    /// recomputed.
    pub fn record_plan(
        &mut self,
        target: &TargetKey,
        input: &PlanInput,
        plan: &TargetPlan,
        failed: Option<&dyn Display>,
        now_ms: i64,
    ) -> Vec<PolicyKey> {
        let revision = self.targets.get(target).and_then(|t| t.resource_version.as_deref()?.parse().ok()).unwrap_or(0);
        let mut dirty = Vec::new();
        for (key, outcome) in &plan.outcomes {
            let Some(entry) = self.policies.get_mut(key) else { continue };
            if input.revisions.get(key) != Some(&entry.revision) {
                continue;
            }
            let outcome = match (failed, outcome) {
                (Some(error), Outcome::Synced) => {
                    Outcome::ApplyFailed(format!("writing ConfigMap {target} failed: {error}"))
                }
                _ => outcome.clone(),
            };
            if outcome == Outcome::Synced
                && let Some(hash) = entry.document.as_ref().map(|d| d.hash.clone())
            {
                entry.landed_at(target, &hash, revision, now_ms);
            }
            match entry.outcomes.iter_mut().find(|(t, _)| t == target) {
                Some(slot) => slot.1 = outcome,
                None => {
                    entry.outcomes.reserve_exact(1);
                    entry.outcomes.push((target.clone(), outcome));
                }
            }
            dirty.push(key.clone());
        }
        dirty
    }

    /// What a status is computed from, once every target the status reports on has an
    /// outcome for the policy's current revision (`None` until then); a replica that has not
    /// loaded the document `stale_after_ms` after it landed is stale.
    pub fn status_input(&self, key: &PolicyKey, now_ms: i64, stale_after_ms: i64) -> Option<StatusInput> {
        let entry = self.policies.get(key)?;
        let targets = entry.status_targets(self.holders.get(key));
        let mut statuses = Vec::with_capacity(targets.len());
        let mut serves = Vec::with_capacity(targets.len());
        let data_key = key.data_key();
        for t in &targets {
            let outcome = entry.outcome(t)?;
            statuses.push(outcome.target_status(t, key));
            let landed = entry.landed.iter().find(|(l, _)| l == t).map(|(_, l)| l);
            serves.push(match outcome {
                // Nothing new was written: there is nothing for the replicas to load.
                Outcome::RolledBack { .. } => Serve::NoReports,
                _ => self.reports.serve(t, &data_key, landed, now_ms, stale_after_ms),
            });
        }
        let rollout = match (&entry.rollout, &entry.rollout_plan, &entry.document) {
            (Some(state), Some(plan), Some(doc)) if !entry.rollout_pending && state.canary_hash == doc.hash => {
                // While it progresses, the replicas' counts now; once it ended, as last judged
                // (the replicas count only documents under rollout).
                Some(match state.phase {
                    Phase::Progressing => {
                        let canary = self.calls_of(key, &state.canary_hash, now_ms);
                        let stable = self.calls_of(key, &state.stable_hash, now_ms);
                        state.to_status(plan, &canary, &stable)
                    }
                    _ => state.to_status(plan, &state.canary, &state.stable),
                })
            }
            _ => None,
        };
        Some(StatusInput {
            rollout,
            generation: entry.generation,
            findings: entry.findings.clone(),
            config_hash: entry.document.as_ref().map(|d| d.hash.clone()),
            targets: statuses,
            serves,
        })
    }

    /// A gateway replica's report Lease was created or renewed: the policies whose `Served`
    /// may change (none for a renewal that reports what it reported before).
    pub fn apply_report(&mut self, key: ReplicaKey, replica: Replica) -> Vec<PolicyKey> {
        let touched = self.reports.apply(key, replica);
        self.policies_at(&touched)
    }

    /// A report Lease was released or deleted: the policies whose `Served` may change.
    pub fn delete_report(&mut self, key: &ReplicaKey) -> Vec<PolicyKey> {
        let touched: Vec<TargetKey> = self.reports.delete(key).into_iter().collect();
        self.policies_at(&touched)
    }

    /// Drops the reports whose Lease expired by `now_ms`: the policies whose `Served` may
    /// change.
    pub fn expire_reports(&mut self, now_ms: i64) -> Vec<PolicyKey> {
        let touched = self.reports.expire(now_ms);
        self.policies_at(&touched)
    }

    /// The report Leases known.
    pub fn report_keys(&self) -> Vec<ReplicaKey> {
        self.reports.keys()
    }

    fn policies_at(&self, targets: &[TargetKey]) -> Vec<PolicyKey> {
        let mut keys = BTreeSet::new();
        for target in targets {
            keys.extend(self.targets.get(target).into_iter().flat_map(|t| t.wanted_by.iter().cloned()));
        }
        keys.into_iter().collect()
    }

    /// The operator wrote `status` for the policy: it is the previous status from now on.
    pub fn wrote_status(&mut self, key: &PolicyKey, status: &ImageVariationPolicyStatus) {
        if let Some(entry) = self.policies.get_mut(key) {
            let shown = StatusMemo::shows_deprecation(status, entry.generation, &entry.findings);
            entry.status = Some(StatusMemo::of(status, shown));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;
    use crate::api::ImageVariationPolicySpec;
    use crate::operator::decode::LEGACY_FINALIZER;
    use crate::operator::events::EventReason;
    use crate::render::render_policy;
    use crate::rollout::CallCounts;
    use crate::target::configmap::ConfigMapWatch::{Managed, OptedIn};
    use crate::target::configmap::{GATEWAY_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
    use crate::target::plan::plan_target;

    fn pk(ns: &str, name: &str) -> PolicyKey {
        PolicyKey::new(ns, name)
    }

    fn spec(targets: &[(&str, Option<&str>)], count: i64) -> ImageVariationPolicySpec {
        let refs: Vec<serde_json::Value> = targets
            .iter()
            .map(|(name, ns)| match ns {
                Some(ns) => serde_json::json!({"name": name, "namespace": ns}),
                None => serde_json::json!({"name": name}),
            })
            .collect();
        serde_json::from_value(serde_json::json!({"targetRefs": refs, "retry": {"count": count}})).expect("spec")
    }

    fn decoded(ns: &str, name: &str, generation: i64, spec: ImageVariationPolicySpec) -> DecodedPolicy {
        DecodedPolicy {
            key: pk(ns, name),
            uid: Some(format!("uid-{name}")),
            generation: Some(generation),
            resource_version: Some(generation.to_string()),
            spec: Some(serde_json::value::to_raw_value(&spec).expect("raw spec")),
            status: None,
            deleting: false,
            finalizers: Vec::new(),
            rollout_action: None,
        }
    }

    fn t(ns: &str, name: &str) -> TargetKey {
        TargetKey { namespace: ns.into(), name: name.into() }
    }

    fn managed(owned: &[(&str, &str)]) -> ExistingTarget {
        ExistingTarget {
            labels: [(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string())].into(),
            owned: owned.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect(),
            ..Default::default()
        }
    }

    fn contents(input: &PlanInput) -> Vec<(String, Content)> {
        input.policies.iter().map(|p| (p.key.clone(), p.content.clone())).collect()
    }

    /// Whether the policy's document and the target's held value are one allocation.
    fn held_once(index: &Index, key: &PolicyKey, target: &TargetKey) -> bool {
        let document = index.policy(key).and_then(|p| p.document.as_ref()).map(|d| d.json.clone());
        let held = index.target(target).and_then(|t| t.live.as_ref()?.owned.get(&key.data_key()).cloned());
        matches!((document, held), (Some(d), Some(h)) if std::sync::Arc::ptr_eq(&d, &h))
    }

    #[test]
    fn a_document_its_target_holds_is_held_once_whichever_comes_first() {
        let (key, gw) = (pk("a", "p"), t("a", "gw"));
        let json = render_policy(&spec(&[("gw", None)], 1)).json.to_string();
        // The policy first, then the ConfigMap that holds its document.
        let mut index = Index::default();
        index.apply_policy(decoded("a", "p", 1, spec(&[("gw", None)], 1)));
        index.apply_target(Managed, &gw, managed(&[("a.p.json", &json)]), Some("5".into()));
        assert!(held_once(&index, &key, &gw));
        // The ConfigMap first (a restart), then the policy.
        let mut index = Index::default();
        index.apply_target(Managed, &gw, managed(&[("a.p.json", &json)]), Some("5".into()));
        index.apply_policy(decoded("a", "p", 1, spec(&[("gw", None)], 1)));
        assert!(held_once(&index, &key, &gw));
        // An edit: the target still holds the old document, unshared, until it is rewritten.
        index.apply_policy(decoded("a", "p", 2, spec(&[("gw", None)], 2)));
        assert!(!held_once(&index, &key, &gw));
        let held = index.target(&gw).and_then(|t| t.live.as_ref()?.owned.get("a.p.json").cloned());
        assert_eq!(held.as_deref(), Some(json.as_str()));
    }

    #[test]
    fn a_new_policy_touches_the_targets_it_names() {
        let mut index = Index::default();
        let touched = index.apply_policy(decoded("a", "p", 1, spec(&[("gw", None), ("gw2", Some("b"))], 1)));
        assert_eq!(touched.targets, [t("a", "gw"), t("b", "gw2")].into());
        assert!(index.policy(&pk("a", "p")).expect("entry").document.is_some());
    }

    fn raw_status(hash: &str) -> Option<Box<RawValue>> {
        let status = ImageVariationPolicyStatus { config_hash: Some(hash.into()), ..Default::default() };
        Some(serde_json::value::to_raw_value(&status).expect("raw status"))
    }

    #[test]
    fn the_stored_status_is_read_once_and_a_status_only_change_touches_nothing() {
        let mut index = Index::default();
        let mut first = decoded("a", "p", 1, spec(&[("gw", None)], 1));
        first.status = raw_status("stored");
        index.apply_policy(first);
        let hash = |index: &Index| {
            index.policy(&pk("a", "p")).and_then(|p| p.status.as_ref()?.config_hash().map(str::to_string))
        };
        assert_eq!(hash(&index), Some("stored".into()));
        let ours = ImageVariationPolicyStatus { config_hash: Some("ours".into()), ..Default::default() };
        index.wrote_status(&pk("a", "p"), &ours);
        let mut echo = decoded("a", "p", 1, spec(&[("gw", None)], 1));
        echo.resource_version = Some("7".into());
        echo.status = raw_status("ours");
        assert_eq!(index.apply_policy(echo), Touched::default());
        assert_eq!(hash(&index), Some("ours".into()));
    }

    #[test]
    fn retargeting_touches_the_old_and_the_new_target_and_prunes_the_old_key() {
        let mut index = Index::default();
        index.apply_policy(decoded("a", "p", 1, spec(&[("old", None)], 1)));
        assert!(index.apply_target(Managed, &t("a", "old"), managed(&[("a.p.json", "{}")]), Some("5".into())));
        let touched = index.apply_policy(decoded("a", "p", 2, spec(&[("new", None)], 1)));
        assert_eq!(touched.targets, [t("a", "old"), t("a", "new")].into());
        assert!(index.plan_input(&t("a", "old")).policies.is_empty(), "the old target must drop the key");
        assert_eq!(index.plan_input(&t("a", "new")).policies.len(), 1);
    }

    #[test]
    fn deleting_a_policy_touches_every_target_holding_its_key() {
        let mut index = Index::default();
        index.apply_policy(decoded("a", "p", 1, spec(&[("gw", None)], 1)));
        index.apply_target(Managed, &t("z", "elsewhere"), managed(&[("a.p.json", "{}")]), Some("3".into()));
        let touched = index.delete_policy(&pk("a", "p"));
        assert_eq!(touched.targets, [t("a", "gw"), t("z", "elsewhere")].into());
        assert!(index.plan_input(&t("z", "elsewhere")).policies.is_empty());
    }

    #[test]
    fn an_invalid_policy_keeps_its_last_good_document_where_it_is() {
        let mut index = Index::default();
        index.apply_policy(decoded("a", "p", 1, spec(&[("gw", None)], 1)));
        index.apply_target(Managed, &t("a", "gw"), managed(&[("a.p.json", "{\"good\":1}")]), Some("3".into()));
        index.apply_policy(decoded("a", "p", 2, spec(&[("gw", None)], 9)));
        let input = index.plan_input(&t("a", "gw"));
        assert_eq!(contents(&input), [("a.p.json".to_string(), Content::KeepLastGood)]);
        let plan = plan_target(&t("a", "gw"), input.live.as_ref(), &input.policies);
        assert_eq!(plan.apply.as_ref().and_then(|a| a.get("a.p.json")).map(String::as_str), Some("{\"good\":1}"));
        index.record_plan(&t("a", "gw"), &input, &plan, None, 0);
        let input = index.status_input(&pk("a", "p"), 0, 10_000).expect("complete");
        assert!(input.targets[0].last_good_kept);
        assert!(!input.findings.is_valid());
    }

    /// A spec with a two-step rollout (20 % then 50 %, 10 s each, judged on 10 calls).
    fn rolling(count: i64) -> ImageVariationPolicySpec {
        let mut spec = spec(&[("gw", None)], count);
        spec.rollout = serde_json::from_value(serde_json::json!({
            "steps": [{"weight": 20, "pause": "10s"}, {"weight": 50, "pause": "10s"}],
            "minRequests": 10, "maxFailureRatio": 0.1
        }))
        .expect("rollout");
        spec
    }

    /// Plans `gw` as the controller does (settle, plan, record, write back): its new data.
    fn plan_and_write(index: &mut Index, revision: &str) -> BTreeMap<String, String> {
        index.settle_rollouts(&t("a", "gw"));
        let input = index.plan_input(&t("a", "gw"));
        let plan = plan_target(&t("a", "gw"), input.live.as_ref(), &input.policies);
        let data = plan.apply.clone().expect("writable");
        let owned: Vec<(&str, &str)> = data.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        index.wrote_target(&t("a", "gw"), managed(&owned), Some(revision.into()));
        index.record_plan(&t("a", "gw"), &input, &plan, None, 0);
        data
    }

    /// A replica of `gw` reporting `calls` per hash.
    fn counting(index: &mut Index, calls: &[(&str, u64, u64)]) {
        let report = Replica {
            identity: "gw-0".into(),
            target: t("a", "gw"),
            revision: 1,
            rejected: BTreeMap::new(),
            expires_ms: i64::MAX,
            volume: false,
            calls: calls
                .iter()
                .map(|(hash, calls, failures)| {
                    let answers = [("404".to_string(), *failures)].into_iter().filter(|(_, n)| *n > 0).collect();
                    (hash.to_string(), CallCounts { calls: *calls, failures: *failures, answers })
                })
                .collect(),
        };
        let key = ReplicaKey { namespace: "a".into(), name: "gw-0".into() };
        index.apply_report(key, report);
    }

    #[test]
    fn a_change_rolls_out_step_by_step_and_the_first_document_goes_whole() {
        let mut index = Index::default();
        index.apply_policy(decoded("a", "p", 1, rolling(1)));
        let first = plan_and_write(&mut index, "1");
        assert!(first.contains_key("a.p.json") && !first.contains_key("a.p.canary"), "{first:?}");
        let stable = index.policy(&pk("a", "p")).and_then(|p| p.document.clone()).expect("doc").hash;
        assert_eq!(index.judge_rollout(&pk("a", "p"), 0), Judged::default(), "a first document has no rollout");

        index.apply_policy(decoded("a", "p", 2, rolling(2)));
        let step1 = plan_and_write(&mut index, "2");
        assert_eq!(step1["a.p.json"], first["a.p.json"], "the stable document stays");
        let canary = crate::rollout::CanaryEntry::parse(step1["a.p.canary"].as_bytes()).expect("canary entry");
        assert_eq!(canary.weight, 20);
        let new = canary.hash();
        // The clock starts at the first judgement; the pause holds.
        let judged = index.judge_rollout(&pk("a", "p"), 1_000);
        assert_eq!(judged.event.map(|e| e.0), Some(EventReason::RolloutStep));
        counting(&mut index, &[(&new, 30, 1), (&stable, 100, 0)]);
        assert!(index.judge_rollout(&pk("a", "p"), 5_000).replan.is_empty());
        let status = index.status_input(&pk("a", "p"), 5_000, 10_000).and_then(|i| i.rollout).expect("rollout");
        assert_eq!((status.step, status.weight, status.canary.calls, status.stable.calls), (1, 20, 30, 100));
        // After the pause it advances; after the last step it promotes.
        let advanced = index.judge_rollout(&pk("a", "p"), 11_000);
        assert_eq!(advanced.replan, [t("a", "gw")]);
        let step2 = plan_and_write(&mut index, "3");
        assert_eq!(crate::rollout::CanaryEntry::parse(step2["a.p.canary"].as_bytes()).map(|c| c.weight), Ok(50));
        counting(&mut index, &[(&new, 45, 1), (&stable, 120, 0)]);
        let promoted = index.judge_rollout(&pk("a", "p"), 22_000);
        assert_eq!(promoted.event.map(|e| e.0), Some(EventReason::RolloutPromoted));
        assert!(index.status_input(&pk("a", "p"), 22_000, 10_000).is_none(), "status waits for the promotion's plan");
        let done = plan_and_write(&mut index, "4");
        assert_eq!(done["a.p.json"], canary.document);
        assert!(!done.contains_key("a.p.canary"));
        let status = index.status_input(&pk("a", "p"), 22_000, 10_000).and_then(|i| i.rollout).expect("rollout");
        assert_eq!(status.phase, Phase::Succeeded);
    }

    #[test]
    fn failures_roll_a_change_back_and_it_is_not_served_again_for_its_generation() {
        let mut index = Index::default();
        index.apply_policy(decoded("a", "p", 1, rolling(1)));
        let first = plan_and_write(&mut index, "1");
        index.apply_policy(decoded("a", "p", 2, rolling(2)));
        let step1 = plan_and_write(&mut index, "2");
        let new = crate::rollout::CanaryEntry::parse(step1["a.p.canary"].as_bytes()).expect("canary").hash();
        index.judge_rollout(&pk("a", "p"), 1_000);
        counting(&mut index, &[(&new, 10, 9)]);
        let judged = index.judge_rollout(&pk("a", "p"), 2_000);
        let (reason, note) = judged.event.expect("an event");
        assert_eq!(reason, EventReason::RolledBack);
        assert!(note.contains("9 of 10") && note.contains("404"), "{note}");
        let after = plan_and_write(&mut index, "3");
        assert_eq!(after, first, "only the stable document remains");
        let input = index.status_input(&pk("a", "p"), 2_000, 10_000).expect("complete");
        assert_eq!(input.targets[0].reason, crate::api::TargetReason::RolledBack);
        // Nothing new to load: the status does not wait for the replicas.
        assert_eq!(input.serves, [Serve::NoReports]);
        assert_eq!(input.rollout.as_ref().map(|r| (r.canary.calls, r.canary.failures)), Some((10, 9)));
        // A restart of the operator reads the rollback back from status and keeps it.
        let mut restarted = Index::default();
        restarted.apply_target(Managed, &t("a", "gw"), managed(&[("a.p.json", &after["a.p.json"])]), Some("3".into()));
        let status = crate::api::ImageVariationPolicyStatus { rollout: input.rollout.clone(), ..Default::default() };
        let mut again = decoded("a", "p", 2, rolling(2));
        again.status = Some(serde_json::value::to_raw_value(&status).expect("raw"));
        restarted.apply_policy(again);
        assert_eq!(plan_and_write(&mut restarted, "4"), first);
    }

    #[test]
    fn the_action_annotation_promotes_or_aborts_at_once() {
        for (action, phase) in [("promote", Phase::Succeeded), ("abort", Phase::RolledBack)] {
            let mut index = Index::default();
            index.apply_policy(decoded("a", "p", 1, rolling(1)));
            plan_and_write(&mut index, "1");
            index.apply_policy(decoded("a", "p", 2, rolling(2)));
            plan_and_write(&mut index, "2");
            index.judge_rollout(&pk("a", "p"), 1_000);
            let mut annotated = decoded("a", "p", 2, rolling(2));
            annotated.rollout_action = Some(action.into());
            assert!(index.apply_policy(annotated).rollout_action);
            let judged = index.judge_rollout(&pk("a", "p"), 1_500);
            assert!(judged.clear_action && !judged.replan.is_empty(), "{action}");
            assert_eq!(index.policy(&pk("a", "p")).and_then(|p| p.rollout.as_ref()).map(|r| r.phase), Some(phase));
        }
    }

    #[test]
    fn outcomes_of_an_older_revision_are_dropped_and_status_waits_for_every_target() {
        let mut index = Index::default();
        index.apply_policy(decoded("a", "p", 1, spec(&[("gw", None), ("gw2", None)], 1)));
        let input = index.plan_input(&t("a", "gw"));
        let plan = plan_target(&t("a", "gw"), input.live.as_ref(), &input.policies);
        index.apply_policy(decoded("a", "p", 2, spec(&[("gw", None), ("gw2", None)], 2)));
        assert!(index.record_plan(&t("a", "gw"), &input, &plan, None, 0).is_empty(), "stale plan recorded");
        for name in ["gw", "gw2"] {
            assert!(index.status_input(&pk("a", "p"), 0, 10_000).is_none(), "status before every target was planned");
            let input = index.plan_input(&t("a", name));
            let plan = plan_target(&t("a", name), input.live.as_ref(), &input.policies);
            assert_eq!(index.record_plan(&t("a", name), &input, &plan, None, 0), [pk("a", "p")]);
        }
        let input = index.status_input(&pk("a", "p"), 0, 10_000).expect("complete");
        assert_eq!(input.generation, Some(2));
        assert!(input.targets.iter().all(|t| t.synced));
    }

    #[test]
    fn a_failed_write_reports_apply_failed_for_the_documents_it_carried() {
        let mut index = Index::default();
        index.apply_policy(decoded("a", "p", 1, spec(&[("gw", None)], 1)));
        let input = index.plan_input(&t("a", "gw"));
        let plan = plan_target(&t("a", "gw"), input.live.as_ref(), &input.policies);
        index.record_plan(&t("a", "gw"), &input, &plan, Some(&"connection refused"), 0);
        let input = index.status_input(&pk("a", "p"), 0, 10_000).expect("complete");
        assert_eq!(input.targets[0].reason, crate::api::TargetReason::ApplyFailed);
        assert!(input.targets[0].message.contains("connection refused"));
    }

    #[test]
    fn policies_outside_the_boundary_never_enter_and_their_keys_stay() {
        let mut index = Index::new(Boundary::new(&["team".into(), "gw".into()]));
        assert_eq!(
            index.apply_policy(decoded("other", "p", 1, spec(&[("shared", Some("gw"))], 1))),
            Touched::default()
        );
        assert_eq!(index.policy_count(), 0);
        let mut shared = managed(&[("other.p.json", "{\"theirs\":1}")]);
        shared.labels.insert(GATEWAY_LABEL.into(), "true".into());
        index.apply_target(OptedIn, &t("gw", "shared"), shared, Some("4".into()));
        index.apply_policy(decoded("team", "q", 1, spec(&[("shared", Some("gw"))], 1)));
        let input = index.plan_input(&t("gw", "shared"));
        assert_eq!(
            input.policies.iter().find(|p| p.key == "other.p.json").map(|p| p.content.clone()),
            Some(Content::NotWatched)
        );
        let plan = plan_target(&t("gw", "shared"), input.live.as_ref(), &input.policies);
        let apply = plan.apply.expect("apply");
        assert_eq!(apply.get("other.p.json").map(String::as_str), Some("{\"theirs\":1}"));
        assert!(!plan.outcomes.contains_key(&pk("other", "p")));
    }

    #[test]
    fn a_configmap_holding_only_other_namespaces_keys_does_not_concern_this_instance() {
        let mut index = Index::new(Boundary::new(&["team".into()]));
        index.apply_target(Managed, &t("gw", "theirs"), managed(&[("other.p.json", "{}")]), Some("1".into()));
        index.apply_target(Managed, &t("gw", "ours"), managed(&[("team.p.json", "{}")]), Some("1".into()));
        assert!(!index.concerns(&t("gw", "theirs")));
        assert!(index.concerns(&t("gw", "ours")));
        index.apply_policy(decoded("team", "q", 1, spec(&[("theirs", Some("gw"))], 1)));
        assert!(index.concerns(&t("gw", "theirs")), "a watched policy names it now");
    }

    #[test]
    fn an_older_configmap_event_does_not_replace_the_operators_own_write() {
        let mut index = Index::default();
        index.wrote_target(&t("a", "gw"), managed(&[("a.p.json", "new")]), Some("10".into()));
        assert!(!index.apply_target(Managed, &t("a", "gw"), managed(&[("a.p.json", "old")]), Some("9".into())));
        assert!(!index.apply_target(Managed, &t("a", "gw"), managed(&[("a.p.json", "new")]), Some("10".into())));
        assert_eq!(index.holders(&pk("a", "p")), Some(&vec![t("a", "gw")]));
        assert!(index.delete_target(Managed, &t("a", "gw")));
        assert_eq!(index.holders(&pk("a", "p")), None);
    }

    #[test]
    fn a_configmap_stays_known_while_any_watch_shows_it() {
        let mut index = Index::default();
        index.apply_target(Managed, &t("a", "gw"), managed(&[]), Some("1".into()));
        index.apply_target(OptedIn, &t("a", "gw"), managed(&[]), Some("1".into()));
        assert!(!index.delete_target(Managed, &t("a", "gw")));
        assert!(index.target(&t("a", "gw")).and_then(|e| e.live.as_ref()).is_some());
        assert!(index.delete_target(OptedIn, &t("a", "gw")));
        assert!(index.target(&t("a", "gw")).is_none());
    }

    #[test]
    fn an_unreadable_policy_reports_on_the_targets_holding_its_key() {
        let mut index = Index::default();
        index.apply_target(Managed, &t("a", "gw"), managed(&[("a.p.json", "{}")]), Some("1".into()));
        let mut broken = decoded("a", "p", 3, spec(&[("gw", None)], 1));
        broken.spec = Some(RawValue::from_string(r#"{"targetRefs":"not a list"}"#.into()).expect("raw"));
        let touched = index.apply_policy(broken);
        assert_eq!(touched.targets, [t("a", "gw")].into());
        let input = index.plan_input(&t("a", "gw"));
        assert_eq!(contents(&input), [("a.p.json".to_string(), Content::KeepLastGood)]);
        let plan = plan_target(&t("a", "gw"), input.live.as_ref(), &input.policies);
        index.record_plan(&t("a", "gw"), &input, &plan, None, 0);
        let input = index.status_input(&pk("a", "p"), 0, 10_000).expect("complete");
        assert_eq!(input.targets.len(), 1);
        assert!(input.findings.errors[0].message.contains("cannot be read"));
    }

    #[test]
    fn a_policy_being_deleted_leaves_the_index_and_asks_for_its_legacy_finalizer() {
        let mut index = Index::default();
        index.apply_policy(decoded("a", "p", 1, spec(&[("gw", None)], 1)));
        let mut deleting = decoded("a", "p", 1, spec(&[("gw", None)], 1));
        deleting.deleting = true;
        deleting.finalizers = vec![LEGACY_FINALIZER.into()];
        let touched = index.apply_policy(deleting);
        assert!(touched.removed && touched.legacy_finalizer);
        assert_eq!(touched.targets, [t("a", "gw")].into());
        assert_eq!(index.policy_count(), 0);
    }

    #[test]
    fn a_new_document_lands_at_the_targets_revision_and_replicas_past_it_serve_it() {
        use crate::operator::served::{Replica, ReplicaKey, Serve};
        let mut index = Index::default();
        index.apply_policy(decoded("a", "p", 1, spec(&[("gw", None)], 1)));
        index.wrote_target(&t("a", "gw"), managed(&[]), Some("40".into()));
        let input = index.plan_input(&t("a", "gw"));
        let plan = plan_target(&t("a", "gw"), input.live.as_ref(), &input.policies);
        index.record_plan(&t("a", "gw"), &input, &plan, None, 1_000);
        let replica = |revision| Replica {
            calls: BTreeMap::new(),
            volume: false,
            identity: "gw-0".into(),
            target: t("a", "gw"),
            revision,
            rejected: Default::default(),
            expires_ms: 60_000,
        };
        let key = ReplicaKey { namespace: "a".into(), name: "routerpolicy-gateway-gw-0".into() };
        assert_eq!(index.apply_report(key.clone(), replica(39)), [pk("a", "p")]);
        let serves = |index: &Index| index.status_input(&pk("a", "p"), 2_000, 10_000).expect("complete").serves;
        assert_eq!(serves(&index), [Serve::Pending { replicas: 1, serving: 0, since_ms: 1_000 }]);
        index.apply_report(key.clone(), replica(40));
        assert_eq!(serves(&index), [Serve::Served { replicas: 1 }]);
        index.wrote_target(&t("a", "gw"), managed(&[("a.p.json", "{}")]), Some("41".into()));
        let input = index.plan_input(&t("a", "gw"));
        let plan = plan_target(&t("a", "gw"), input.live.as_ref(), &input.policies);
        index.record_plan(&t("a", "gw"), &input, &plan, None, 3_000);
        assert_eq!(serves(&index), [Serve::Served { replicas: 1 }], "the same document: where it landed stays");
        assert_eq!(index.delete_report(&key), [pk("a", "p")]);
        assert_eq!(serves(&index), [Serve::NoReports]);
    }
}
