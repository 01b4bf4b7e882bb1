//! The index's part of rollouts (docs/rollouts.md): settling a new generation's rollout
//! against what its targets hold, what its document means for a target during one, and the
//! judgement of a step with the replicas' counts. Pure, like the rest of the index.

use super::{Index, PolicyEntry};
use crate::hash::policy_hash;
use crate::key::{PolicyKey, TargetKey};
use crate::operator::events::EventReason;
use crate::render::GatewayDocument;
use crate::rollout::{ACTION_ANNOTATION, CallCounts, Decision, Phase, begin, judge, weight_of};
use crate::target::plan::Content;

/// What judging a policy's rollout did: the Event to publish, the targets to re-plan, whether
/// the action annotation is done with, and when to look again.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Judged {
    /// The Event for a step, a promotion or a rollback.
    pub event: Option<(EventReason, String)>,
    /// Targets whose content changes (a new weight, a promotion, a rollback).
    pub replan: Vec<TargetKey>,
    /// Whether the annotation was acted on (the controller removes it).
    pub clear_action: bool,
    /// While it progresses: look again in at most this many milliseconds.
    pub again_in_ms: Option<i64>,
}

impl PolicyEntry {
    /// What its valid document means for a target: the whole document, or, during a rollout
    /// of it, the canary entry at the step's weight (rolled back: the document in service).
    pub(super) fn content_of(&self, doc: &GatewayDocument) -> Content {
        match (&self.rollout, &self.rollout_plan) {
            (Some(state), Some(plan)) if !self.rollout_pending && state.canary_hash == doc.hash => match state.phase {
                Phase::Progressing => Content::Canary { document: doc.clone(), weight: weight_of(plan, state) },
                Phase::RolledBack => Content::RolledBack,
                Phase::Succeeded => Content::Document(doc.clone()),
            },
            _ => Content::Document(doc.clone()),
        }
    }
}

impl Index {
    /// Settles the rollouts of the policies that name `target` and changed since: whether the
    /// new document rolls out depends on what the targets hold, which is complete once every
    /// watch has listed (the workers, which call this before planning, start only then).
    pub fn settle_rollouts(&mut self, target: &TargetKey) {
        let pending: Vec<PolicyKey> = self
            .targets
            .get(target)
            .into_iter()
            .flat_map(|t| t.wanted_by.iter())
            .filter(|k| self.policies.get(*k).is_some_and(|p| p.rollout_pending))
            .cloned()
            .collect();
        for key in pending {
            let in_service = self.hash_in_service(&key);
            let Some(entry) = self.policies.get_mut(&key) else { continue };
            entry.rollout_pending = false;
            let (Some(doc), Some(generation)) = (&entry.document, entry.generation) else {
                entry.rollout = None;
                continue;
            };
            entry.rollout = begin(entry.rollout.as_deref(), generation, &doc.hash, in_service.as_deref()).map(Box::new);
        }
    }

    /// The hash of the policy's document in the first of its targets that holds one.
    pub(super) fn hash_in_service(&self, key: &PolicyKey) -> Option<String> {
        let entry = self.policies.get(key)?;
        let (data_key, callers_key) = (key.data_key(), key.callers_key());
        entry.targets.iter().find_map(|t| {
            let live = self.targets.get(t)?.live.as_ref()?;
            let document = live.owned.get(&data_key)?;
            Some(policy_hash(document.as_bytes(), live.owned.get(&callers_key).map(|c| c.as_bytes())))
        })
    }

    /// The calls and failures the live replicas of the policy's targets report for `hash`.
    pub(super) fn calls_of(&self, key: &PolicyKey, hash: &str, now_ms: i64) -> CallCounts {
        let mut total = CallCounts::default();
        for t in self.policies.get(key).into_iter().flat_map(|p| &p.targets) {
            total.add(&self.reports.calls(t, hash, now_ms));
        }
        total
    }

    /// Judges the policy's rollout at `now_ms` (and acts on its action annotation): a step's
    /// clock starts the first time it is judged; an advance, a promotion or a rollback changes
    /// what its targets get. Nothing for a policy that is not rolling out.
    pub fn judge_rollout(&mut self, key: &PolicyKey, now_ms: i64) -> Judged {
        let Some(canary_hash) = self.policies.get(key).and_then(|p| {
            let state = p.rollout.as_ref().filter(|_| !p.rollout_pending)?;
            Some(state.canary_hash.clone())
        }) else {
            let had_action = self.policies.get_mut(key).and_then(|p| p.rollout_action.take()).is_some();
            return Judged { clear_action: had_action, ..Default::default() };
        };
        let canary = self.calls_of(key, &canary_hash, now_ms);
        let stable_hash = self.policies.get(key).and_then(|p| p.rollout.as_ref()).map(|r| r.stable_hash.clone());
        let stable = stable_hash.map(|h| self.calls_of(key, &h, now_ms)).unwrap_or_default();
        let Some(entry) = self.policies.get_mut(key) else { return Judged::default() };
        let action = entry.rollout_action.take();
        let mut judged = Judged { clear_action: action.is_some(), ..Default::default() };
        let (Some(plan), Some(state)) = (entry.rollout_plan.as_ref(), entry.rollout.as_deref_mut()) else {
            return judged;
        };
        if state.phase != Phase::Progressing {
            return judged;
        }
        (state.canary, state.stable) = (canary.clone(), stable);
        if state.step_started_ms == 0 {
            state.step_started_ms = now_ms;
            state.step_start_calls = canary.calls;
            let weight = weight_of(plan, state);
            state.message = format!("step 1 of {}: {weight}% of calls on the new document", plan.steps.len());
            judged.event = Some((EventReason::RolloutStep, state.message.clone()));
        }
        let decision = match action.as_deref() {
            Some("promote") => Decision::Promote,
            Some("abort") => Decision::RollBack { message: format!("aborted by the {ACTION_ANNOTATION} annotation") },
            _ => judge(plan, state, &canary, now_ms),
        };
        match decision {
            Decision::Wait { in_ms, waiting } => {
                if let Some(why) = waiting {
                    state.message = why;
                }
                judged.again_in_ms = Some(in_ms);
                return judged;
            }
            Decision::Advance { step } => {
                state.step = step;
                state.step_started_ms = now_ms;
                state.step_start_calls = canary.calls;
                let weight = weight_of(plan, state);
                state.message =
                    format!("step {} of {}: {weight}% of calls on the new document", step + 1, plan.steps.len());
                judged.event = Some((EventReason::RolloutStep, state.message.clone()));
                judged.again_in_ms = Some(0);
            }
            Decision::Promote => {
                state.phase = Phase::Succeeded;
                state.message = format!(
                    "promoted: the new document gets every call ({} calls, {} failures on it)",
                    canary.calls, canary.failures
                );
                if action.as_deref() == Some("promote") {
                    state.message = format!("promoted by the {ACTION_ANNOTATION} annotation");
                }
                judged.event = Some((EventReason::RolloutPromoted, state.message.clone()));
            }
            Decision::RollBack { message } => {
                state.phase = Phase::RolledBack;
                state.message = format!("rolled back: {message}");
                judged.event = Some((EventReason::RolledBack, state.message.clone()));
            }
        }
        if state.phase != Phase::Progressing {
            // The targets change for good: the status waits for their new plans.
            entry.landed.clear();
            entry.outcomes.clear();
            entry.revision += 1;
        }
        judged.replan = entry.targets.clone();
        judged
    }
}
