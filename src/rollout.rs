//! Rollouts (docs/rollouts.md): a policy change goes to a growing share of calls and is rolled
//! back from what orq answers. A leaf both wings use, pure: the canary entry of a gateway
//! ConfigMap, what counts as a failure, the counts a replica reports, and the operator's
//! judgement of one step.
//!
//! During a rollout a target holds the stable document where it always does
//! (`<namespace>.<name>.json`, and its callers entry) and, beside it, the canary entry
//! `<namespace>.<name>.canary`: a JSON object with the step's weight and the new document's
//! exact text (and its callers entry), so a gateway hashes it as the operator does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hash::policy_hash;

/// The shortest `pause` of a step.
pub const PAUSE_MIN_SECONDS: u64 = 5;
/// The longest `pause` of a step.
pub const PAUSE_MAX_SECONDS: u64 = 24 * 3600;
/// `minRequests` when unset.
pub const DEFAULT_MIN_REQUESTS: u32 = 20;
/// `maxFailureRatio` when unset.
pub const DEFAULT_MAX_FAILURE_RATIO: f64 = 0.05;
/// How long a step waits for `minRequests` calls beyond its pause before it says so in status
/// (it keeps waiting; a rollout never advances on too few calls).
pub const TOO_FEW_CALLS_AFTER_SECONDS: u64 = 60;
/// Annotation by which a platform engineer finishes (`promote`) or stops (`abort`) a rollout.
pub const ACTION_ANNOTATION: &str = "routerpolicy.io/rollout-action";

/// A step's `pause` in seconds: `90s`, `1m`, `1m30s`, `2h` (hours, minutes, seconds, in that
/// order, each at most once); `None` when it is not one.
pub fn parse_pause(text: &str) -> Option<u64> {
    let mut rest = text;
    let mut total: u64 = 0;
    let mut last_unit = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 || digits > 6 {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        let (unit, scale) = match rest[digits..].chars().next()? {
            'h' => (1, 3600),
            'm' => (2, 60),
            's' => (3, 1),
            _ => return None,
        };
        if unit <= last_unit {
            return None;
        }
        last_unit = unit;
        total = total.checked_add(value.checked_mul(scale)?)?;
        rest = &rest[digits + 1..];
    }
    Some(total)
}

/// The canary entry of a target: the share of calls, and the new document with its callers
/// entry, as text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryEntry {
    /// Percent of calls that get the new document (1 to 99).
    pub weight: u8,
    /// The new document, exactly as rendered.
    pub document: String,
    /// Its callers entry, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callers: Option<String>,
}

impl CanaryEntry {
    /// The entry's text, as the ConfigMap holds it.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads an entry; why not, when it is not one.
    pub fn parse(bytes: &[u8]) -> Result<CanaryEntry, String> {
        let entry: CanaryEntry = serde_json::from_slice(bytes).map_err(|e| format!("canary entry: {e}"))?;
        if !(1..=99).contains(&entry.weight) {
            return Err(format!("canary entry: weight {} is not between 1 and 99", entry.weight));
        }
        Ok(entry)
    }

    /// The new document's hash, as the operator computes `status.configHash`.
    pub fn hash(&self) -> String {
        policy_hash(self.document.as_bytes(), self.callers.as_deref().map(str::as_bytes))
    }
}

/// What one forwarded call says about the document it used: `Some(answer)` for a failure —
/// orq's 5xx, 400, 404 or 422 — `None` for anything else (401, 403 and 429 are about the caller
/// or the quota, not the document).
pub fn failure_of_status(status: u16) -> Option<String> {
    matches!(status, 400 | 404 | 422 | 500..=599).then(|| status.to_string())
}

/// The answer recorded for the gateway's own upstream timeout.
pub const TIMEOUT_ANSWER: &str = "timeout";

/// Calls and failures on one document, as a replica reports them and the operator sums them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallCounts {
    /// Calls forwarded with the document.
    pub calls: u64,
    /// Of those, failures.
    pub failures: u64,
    /// Failures by answer (`"404"`, `"timeout"`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub answers: BTreeMap<String, u64>,
}

impl CallCounts {
    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &CallCounts) {
        self.calls = self.calls.saturating_add(other.calls);
        self.failures = self.failures.saturating_add(other.failures);
        for (answer, n) in &other.answers {
            let slot = self.answers.entry(answer.clone()).or_default();
            *slot = slot.saturating_add(*n);
        }
    }

    /// Failures over calls (0 without calls).
    pub fn ratio(&self) -> f64 {
        if self.calls == 0 { 0.0 } else { self.failures as f64 / self.calls as f64 }
    }

    /// The most common failing answer, if any failed.
    pub fn most_common_answer(&self) -> Option<&str> {
        self.answers.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(answer, _)| answer.as_str())
    }
}

/// Where a rollout is (`status.rollout.phase`; the type lives with the API's).
pub use crate::api::RolloutPhase as Phase;

/// A rollout's spec, read: each step's weight and pause (seconds), and the bounds of its
/// judgement.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// `(weight, pause seconds)` per step.
    pub steps: Vec<(u8, u64)>,
    /// Calls on the new document in a step before the step may be judged.
    pub min_requests: u64,
    /// Failures over calls on the new document above which it is rolled back.
    pub max_failure_ratio: f64,
}

/// The state of one rollout: what the cluster keeps in `status.rollout`.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    /// The generation it rolls out.
    pub generation: i64,
    /// Where it is.
    pub phase: Phase,
    /// The current step (0-based).
    pub step: usize,
    /// When the current step began (Unix milliseconds).
    pub step_started_ms: i64,
    /// The document in service before the change.
    pub stable_hash: String,
    /// The new document.
    pub canary_hash: String,
    /// The new document's calls (all replicas) when the step began.
    pub step_start_calls: u64,
    /// What the last decision said.
    pub message: String,
    /// The counts of the new document as last judged (what a finished rollout shows).
    pub canary: CallCounts,
    /// The counts of the stable document as last judged.
    pub stable: CallCounts,
}

/// What a judgement decides.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Nothing yet; look again in at most this many milliseconds. `waiting` says why, when a
    /// step is past its pause without enough calls.
    Wait {
        /// Milliseconds until the pause ends (0 when it has).
        in_ms: i64,
        /// Why it waits past its pause, if it does.
        waiting: Option<String>,
    },
    /// Go to step `step` (0-based).
    Advance {
        /// The next step.
        step: usize,
    },
    /// The new document becomes the only one.
    Promote,
    /// Only the stable document remains.
    RollBack {
        /// Why.
        message: String,
    },
}

/// Judges a progressing rollout at `now_ms` from the new document's counts over every live
/// replica: above the ratio (with `minRequests` seen) it rolls back at once; after the pause,
/// with `minRequests` calls in this step and the ratio held, it advances (or, after the last
/// step, promotes); otherwise it waits.
pub fn judge(plan: &Plan, state: &State, canary: &CallCounts, now_ms: i64) -> Decision {
    let min = plan.min_requests.max(1);
    if canary.calls >= min && canary.ratio() > plan.max_failure_ratio {
        let answer = canary.most_common_answer().unwrap_or("none");
        return Decision::RollBack {
            message: format!(
                "failure ratio {:.3} ({} of {} calls) is above maxFailureRatio {}; the most common orq answer was {answer}",
                canary.ratio(),
                canary.failures,
                canary.calls,
                plan.max_failure_ratio
            ),
        };
    }
    let pause_ms = plan.steps.get(state.step).map(|(_, pause)| *pause as i64 * 1000).unwrap_or(0);
    let ends = state.step_started_ms.saturating_add(pause_ms);
    if now_ms < ends {
        return Decision::Wait { in_ms: ends - now_ms, waiting: None };
    }
    let in_step = canary.calls.saturating_sub(state.step_start_calls);
    if in_step < min {
        let late = now_ms - ends >= TOO_FEW_CALLS_AFTER_SECONDS as i64 * 1000;
        let waiting = late.then(|| {
            format!("step {} waits for minRequests: {in_step} of {min} calls on the new document", state.step + 1)
        });
        return Decision::Wait { in_ms: 0, waiting };
    }
    if state.step + 1 < plan.steps.len() { Decision::Advance { step: state.step + 1 } } else { Decision::Promote }
}

/// The share of calls the new document gets in `state` (0 when it is not progressing).
pub fn weight_of(plan: &Plan, state: &State) -> u8 {
    match state.phase {
        Phase::Progressing => plan.steps.get(state.step).map(|(w, _)| *w).unwrap_or(0),
        _ => 0,
    }
}

/// Which of `n`-th call (counted per policy from 0) gets the new document at `weight` percent:
/// exactly `weight` of every 100 consecutive calls, spread over the hundred (37 is prime to
/// 100, so `n * 37 mod 100` visits every residue once per hundred calls).
pub fn is_canary_call(n: u64, weight: u8) -> bool {
    (n.wrapping_mul(37) % 100) < u64::from(weight)
}

impl Plan {
    /// The plan of `spec.rollout` (a valid one: the rule book checked it).
    pub fn of(spec: &crate::api::Rollout) -> Plan {
        Plan {
            steps: spec
                .steps
                .iter()
                .map(|s| (s.weight.clamp(1, 99) as u8, parse_pause(&s.pause).unwrap_or(PAUSE_MIN_SECONDS)))
                .collect(),
            min_requests: spec.min_requests.map(|m| m.max(1) as u64).unwrap_or(u64::from(DEFAULT_MIN_REQUESTS)),
            max_failure_ratio: spec.max_failure_ratio.unwrap_or(DEFAULT_MAX_FAILURE_RATIO),
        }
    }
}

/// The rollout a new spec starts, or the one it continues, given the previous state (kept by
/// the operator, or read back from `status.rollout` after a restart) and the hash of the
/// document in service (`None`: nothing in service, so it goes out whole):
/// - the same new document as before continues (a restart, a handover, or a generation that
///   changed only `spec.rollout` mid-way), and a finished one stays finished for its
///   generation (a rolled-back document is not served again);
/// - a document already in service needs no rollout;
/// - anything else starts at step 1 (its clock starts when the operator first judges it).
pub fn begin(previous: Option<&State>, generation: i64, new_hash: &str, in_service: Option<&str>) -> Option<State> {
    if let Some(p) = previous
        && p.canary_hash == new_hash
        && (p.generation == generation || p.phase == Phase::Progressing)
    {
        return Some(State { generation, ..p.clone() });
    }
    let stable = in_service.filter(|s| *s != new_hash)?;
    Some(State {
        generation,
        phase: Phase::Progressing,
        step: 0,
        step_started_ms: 0,
        stable_hash: stable.to_string(),
        canary_hash: new_hash.to_string(),
        step_start_calls: 0,
        message: String::new(),
        canary: CallCounts::default(),
        stable: CallCounts::default(),
    })
}

/// Counts as status holds them (without the answers).
fn counts_of(counts: &crate::api::RolloutCounts) -> CallCounts {
    CallCounts { calls: counts.calls.max(0) as u64, failures: counts.failures.max(0) as u64, answers: BTreeMap::new() }
}

impl State {
    /// The state `status.rollout` holds.
    pub fn of_status(status: &crate::api::RolloutStatus) -> State {
        let started =
            status.step_started_at.parse::<k8s_openapi::jiff::Timestamp>().map(|t| t.as_millisecond()).unwrap_or(0);
        State {
            generation: status.generation,
            phase: status.phase,
            step: status.step.max(1) as usize - 1,
            step_started_ms: started,
            stable_hash: status.stable_hash.clone(),
            canary_hash: status.canary_hash.clone(),
            step_start_calls: status.step_start_calls.max(0) as u64,
            message: status.message.clone(),
            canary: counts_of(&status.canary),
            stable: counts_of(&status.stable),
        }
    }

    /// `status.rollout` for this state, with the counts over the live replicas.
    pub fn to_status(&self, plan: &Plan, canary: &CallCounts, stable: &CallCounts) -> crate::api::RolloutStatus {
        let count = |c: &CallCounts| crate::api::RolloutCounts {
            calls: c.calls.min(i64::MAX as u64) as i64,
            failures: c.failures.min(i64::MAX as u64) as i64,
        };
        let started = k8s_openapi::jiff::Timestamp::from_millisecond(self.step_started_ms)
            .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        crate::api::RolloutStatus {
            phase: self.phase,
            generation: self.generation,
            step: self.step as i64 + 1,
            weight: i64::from(weight_of(plan, self)),
            stable_hash: self.stable_hash.clone(),
            canary_hash: self.canary_hash.clone(),
            step_started_at: started,
            step_start_calls: self.step_start_calls.min(i64::MAX as u64) as i64,
            canary: count(canary),
            stable: count(stable),
            message: self.message.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan { steps: vec![(20, 60), (50, 60)], min_requests: 20, max_failure_ratio: 0.05 }
    }

    fn state(step: usize, start_calls: u64) -> State {
        State {
            generation: 2,
            phase: Phase::Progressing,
            step,
            step_started_ms: 1_000_000,
            stable_hash: "s".into(),
            canary_hash: "c".into(),
            step_start_calls: start_calls,
            message: String::new(),
            canary: CallCounts::default(),
            stable: CallCounts::default(),
        }
    }

    fn counts(calls: u64, failures: u64) -> CallCounts {
        let answers = if failures > 0 { [("404".to_string(), failures)].into() } else { BTreeMap::new() };
        CallCounts { calls, failures, answers }
    }

    #[test]
    fn pauses_read_hours_minutes_and_seconds_in_order() {
        assert_eq!(parse_pause("1m"), Some(60));
        assert_eq!(parse_pause("90s"), Some(90));
        assert_eq!(parse_pause("1h30m5s"), Some(5405));
        for bad in ["", "1", "m", "1m1h", "1s1s", "1.5m", "-1m", "1d", "1m 2s", "9999999s"] {
            assert_eq!(parse_pause(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_step_waits_for_its_pause_then_advances_and_the_last_one_promotes() {
        let at = |s: i64| 1_000_000 + s * 1000;
        assert_eq!(
            judge(&plan(), &state(0, 0), &counts(30, 0), at(10)),
            Decision::Wait { in_ms: 50_000, waiting: None }
        );
        assert_eq!(judge(&plan(), &state(0, 0), &counts(30, 1), at(60)), Decision::Advance { step: 1 });
        assert_eq!(judge(&plan(), &state(1, 30), &counts(60, 1), at(61)), Decision::Promote);
    }

    #[test]
    fn too_many_failures_roll_back_at_once_naming_the_ratio_and_the_answer() {
        let Decision::RollBack { message } = judge(&plan(), &state(0, 0), &counts(20, 19), 1_000_001) else {
            panic!("not rolled back");
        };
        assert!(message.contains("0.950") && message.contains("19 of 20") && message.contains("404"), "{message}");
        // Below minRequests nothing is judged, however bad it looks.
        assert!(matches!(judge(&plan(), &state(0, 0), &counts(19, 19), 1_000_001), Decision::Wait { .. }));
        // At the ratio exactly it holds.
        assert_eq!(judge(&plan(), &state(0, 0), &counts(100, 5), 2_000_000), Decision::Advance { step: 1 });
    }

    #[test]
    fn a_step_without_enough_calls_waits_and_says_so_after_a_bound() {
        let end = 1_000_000 + 60_000;
        assert_eq!(judge(&plan(), &state(0, 10), &counts(20, 0), end), Decision::Wait { in_ms: 0, waiting: None });
        let late = end + TOO_FEW_CALLS_AFTER_SECONDS as i64 * 1000;
        let Decision::Wait { waiting: Some(why), .. } = judge(&plan(), &state(0, 10), &counts(20, 0), late) else {
            panic!("does not say why it waits");
        };
        assert!(why.contains("10 of 20"), "{why}");
    }

    #[test]
    fn the_call_choice_gives_exactly_the_weight_in_every_hundred_calls() {
        for weight in [1u8, 20, 50, 99] {
            for start in [0u64, 7, 100, 12_345] {
                let chosen = (start..start + 100).filter(|n| is_canary_call(*n, weight)).count();
                assert_eq!(chosen, usize::from(weight), "weight {weight} from {start}");
            }
        }
    }

    #[test]
    fn a_canary_entry_round_trips_and_its_hash_is_the_documents() {
        let entry = CanaryEntry { weight: 20, document: r#"{"retry":{"count":2}}"#.into(), callers: None };
        let parsed = CanaryEntry::parse(entry.to_text().as_bytes()).expect("parses");
        assert_eq!(parsed, entry);
        assert_eq!(parsed.hash(), crate::hash::short_hash(br#"{"retry":{"count":2}}"#));
        assert!(CanaryEntry::parse(br#"{"weight":0,"document":"{}"}"#).expect_err("weight 0").contains("weight 0"));
        assert!(CanaryEntry::parse(b"[1]").is_err());
    }

    #[test]
    fn a_change_of_a_document_in_service_starts_at_step_one_and_a_first_document_goes_whole() {
        assert_eq!(begin(None, 1, "new", None), None);
        assert_eq!(begin(None, 2, "same", Some("same")), None);
        let started = begin(None, 2, "new", Some("old")).expect("a rollout");
        assert_eq!((started.phase, started.step, started.stable_hash.as_str()), (Phase::Progressing, 0, "old"));
        // A restart continues it; a finished one stays finished for its generation.
        let mut moved = State { step: 1, step_started_ms: 5, ..started.clone() };
        assert_eq!(begin(Some(&moved), 2, "new", Some("old")), Some(moved.clone()));
        moved.phase = Phase::RolledBack;
        assert_eq!(begin(Some(&moved), 2, "new", Some("old")).map(|s| s.phase), Some(Phase::RolledBack));
        // The next generation with the same document tries again; another document starts over.
        assert_eq!(
            begin(Some(&moved), 3, "new", Some("old")).map(|s| (s.phase, s.step)),
            Some((Phase::Progressing, 0))
        );
        assert_eq!(begin(Some(&started), 3, "third", Some("old")).map(|s| s.canary_hash), Some("third".to_string()));
    }

    #[test]
    fn the_state_survives_its_status() {
        let state = State {
            step: 1,
            step_started_ms: 1_700_000_000_000,
            step_start_calls: 40,
            canary: CallCounts { calls: 50, failures: 1, answers: BTreeMap::new() },
            stable: counts(200, 0),
            ..state(1, 40)
        };
        let status = state.to_status(&plan(), &state.canary, &state.stable);
        assert_eq!((status.step, status.weight, status.canary.calls), (2, 50, 50));
        assert_eq!(State::of_status(&status), state);
    }

    #[test]
    fn failures_are_about_the_document_not_the_caller() {
        for status in [400u16, 404, 422, 500, 502, 503] {
            assert_eq!(failure_of_status(status), Some(status.to_string()));
        }
        for status in [200u16, 201, 401, 403, 429, 413] {
            assert_eq!(failure_of_status(status), None, "{status}");
        }
    }

    #[test]
    fn counts_add_up_and_name_their_most_common_answer() {
        let mut total = counts(10, 2);
        total.add(&CallCounts { calls: 5, failures: 3, answers: [("500".to_string(), 3)].into() });
        assert_eq!((total.calls, total.failures), (15, 5));
        assert_eq!(total.most_common_answer(), Some("500"));
        assert_eq!(CallCounts::default().ratio(), 0.0);
    }
}
