//! Status: conditions and per-target entries computed from what reconcile found. Pure.
//!
//! Condition types are constants; [`compute_status`] takes the previous status and an injected
//! clock value, keeps `lastTransitionTime` when a condition's status did not change, and
//! [`StatusMemo::changed`] compares statuses without timestamps so no-op writes are skipped.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{ImageVariationPolicyStatus, TargetReason, TargetStatus};
use crate::validate::Report;

/// Valid and every target permitted.
pub const ACCEPTED: &str = "Accepted";
/// Written to every target.
pub const SYNCED: &str = "Synced";
/// Accepted and Synced.
pub const READY: &str = "Ready";
/// kstatus: work is pending.
pub const RECONCILING: &str = "Reconciling";
/// kstatus: cannot progress without a change to the spec (or to the targets' consent).
pub const STALLED: &str = "Stalled";

/// What reconcile learnt about one policy.
#[derive(Clone, Debug)]
pub struct Observation {
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The rule book's verdict (errors and warnings).
    pub report: Report,
    /// Hash of the rendered document (valid policies only).
    pub config_hash: Option<String>,
    /// One entry per target, in spec order (built from the planner's typed outcomes).
    pub targets: Vec<TargetStatus>,
}

fn condition(type_: &str, ok: bool, reason: &str, message: String, generation: Option<i64>, now: &Time) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message,
        last_transition_time: now.clone(),
        observed_generation: generation,
    }
}

/// The most telling non-synced target reason, in order of severity.
fn first_reason<'a>(targets: &'a [TargetStatus], reasons: &[TargetReason]) -> Option<&'a TargetStatus> {
    reasons.iter().find_map(|r| targets.iter().find(|t| !t.synced && t.reason == *r))
}

/// Computes the new status from an observation and the previous status.
pub fn compute_status(
    observation: &Observation,
    previous: Option<&ImageVariationPolicyStatus>,
    now: &Time,
) -> ImageVariationPolicyStatus {
    let generation = observation.generation;
    let report = &observation.report;
    let targets = &observation.targets;
    let total = targets.len();
    let synced = targets.iter().filter(|t| t.synced).count();
    let warnings =
        if report.warnings.is_empty() { String::new() } else { format!(" Warnings: {}", report.warnings_summary()) };

    let refused = first_reason(targets, &[TargetReason::RefNotPermitted, TargetReason::TargetNotManaged]);
    let (accepted, accepted_reason, accepted_msg) = if !report.is_valid() {
        (false, "ValidationFailed", report.errors_summary())
    } else if let Some(t) = refused {
        (false, t.reason.as_str(), format!("target {}/{}: {}", t.namespace, t.name, t.message))
    } else {
        (true, "Accepted", format!("valid; all {total} target(s) permitted.{warnings}").trim().to_string())
    };

    let failing = first_reason(
        targets,
        &[
            TargetReason::ValidationFailed,
            TargetReason::RefNotPermitted,
            TargetReason::TargetNotManaged,
            TargetReason::TargetFull,
            TargetReason::ApplyFailed,
        ],
    );
    let (synced_ok, synced_reason, synced_msg) = if !report.is_valid() {
        let kept = targets.iter().filter(|t| t.last_good_kept).count();
        (
            false,
            "ValidationFailed",
            format!("not written: the spec is invalid; the last good document stays in {kept} target(s)"),
        )
    } else if let Some(t) = failing {
        (
            false,
            t.reason.as_str(),
            format!("{synced}/{total} targets synced; {}/{}: {}", t.namespace, t.name, t.message),
        )
    } else {
        (
            true,
            "Synced",
            format!(
                "document {} written to {synced}/{total} target(s)",
                observation.config_hash.as_deref().unwrap_or("-")
            ),
        )
    };

    let ready = accepted && synced_ok;
    let transient = targets.iter().any(|t| !t.synced && t.reason == TargetReason::ApplyFailed);
    let stalled_reason = if !report.is_valid() {
        Some(("ValidationFailed", accepted_msg.clone()))
    } else if !accepted {
        Some((accepted_reason, accepted_msg.clone()))
    } else if !synced_ok && !transient {
        Some((synced_reason, synced_msg.clone()))
    } else {
        None
    };

    let mut conditions = vec![
        condition(ACCEPTED, accepted, accepted_reason, accepted_msg, generation, now),
        condition(SYNCED, synced_ok, synced_reason, synced_msg, generation, now),
        condition(
            READY,
            ready,
            if ready {
                "Ready"
            } else if !accepted {
                accepted_reason
            } else {
                synced_reason
            },
            if ready {
                format!("served by {synced}/{total} target(s).{warnings}").trim().to_string()
            } else {
                "see the Accepted and Synced conditions".to_string()
            },
            generation,
            now,
        ),
        condition(
            RECONCILING,
            transient,
            if transient { "ApplyFailed" } else { "Idle" },
            if transient { "retrying writes to the targets".to_string() } else { "no work pending".to_string() },
            generation,
            now,
        ),
        match stalled_reason {
            Some((reason, message)) => condition(STALLED, true, reason, message, generation, now),
            None => condition(STALLED, false, "Progressing", "nothing blocks progress".to_string(), generation, now),
        },
    ];

    if let Some(previous) = previous {
        for c in &mut conditions {
            if let Some(old) = previous.conditions.iter().find(|o| o.type_ == c.type_)
                && old.status == c.status
            {
                c.last_transition_time = old.last_transition_time.clone();
            }
        }
    }

    ImageVariationPolicyStatus {
        observed_generation: generation,
        conditions,
        targets: targets.clone(),
        config_hash: if report.is_valid() {
            observation.config_hash.clone()
        } else {
            previous.and_then(|p| p.config_hash.clone())
        },
        synced_targets: Some(format!("{synced}/{total}")),
    }
}

/// What the controller keeps of a policy's last status: enough to compute the next one and
/// to tell whether it changed, in about a fifth of the memory of the status itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusMemo {
    /// Digest of the status without timestamps and with conditions in type order.
    digest: u64,
    /// Each condition's type, status and last transition.
    transitions: Vec<(Box<str>, bool, Time)>,
    /// `status.configHash`.
    config_hash: Option<Box<str>>,
    /// Per target: digest of (namespace, name), digest of the whole entry, synced.
    targets: Vec<(u64, u64, bool)>,
    /// Whether a condition already warns about the deprecated `contact`.
    deprecated_warned: bool,
}

fn digest<T: std::hash::Hash + ?Sized>(value: &T) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(value)
}

fn time_insensitive_digest(status: &ImageVariationPolicyStatus) -> u64 {
    let mut stripped = status.clone();
    for c in &mut stripped.conditions {
        c.last_transition_time = Time(Default::default());
    }
    stripped.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    digest(&serde_json::to_vec(&stripped).unwrap_or_default())
}

fn target_identity(t: &TargetStatus) -> u64 {
    digest(&(t.namespace.as_str(), t.name.as_str()))
}

impl StatusMemo {
    /// The memo of `status`.
    pub fn of(status: &ImageVariationPolicyStatus) -> Self {
        StatusMemo {
            digest: time_insensitive_digest(status),
            transitions: status
                .conditions
                .iter()
                .map(|c| (c.type_.as_str().into(), c.status == "True", c.last_transition_time.clone()))
                .collect(),
            config_hash: status.config_hash.as_deref().map(Into::into),
            targets: status
                .targets
                .iter()
                .map(|t| (target_identity(t), digest(&serde_json::to_vec(t).unwrap_or_default()), t.synced))
                .collect(),
            deprecated_warned: status.conditions.iter().any(|c| c.message.contains("spec.contact: is deprecated")),
        }
    }

    /// Whether `status` differs from the remembered one in anything but timestamps.
    pub fn changed(&self, status: &ImageVariationPolicyStatus) -> bool {
        self.digest != time_insensitive_digest(status)
    }

    /// The part of the previous status that [`compute_status`] reads: each condition's type,
    /// status and transition time, and the config hash.
    pub fn as_previous(&self) -> ImageVariationPolicyStatus {
        ImageVariationPolicyStatus {
            conditions: self
                .transitions
                .iter()
                .map(|(type_, ok, time)| Condition {
                    type_: type_.to_string(),
                    status: if *ok { "True" } else { "False" }.to_string(),
                    last_transition_time: time.clone(),
                    reason: String::new(),
                    message: String::new(),
                    observed_generation: None,
                })
                .collect(),
            config_hash: self.config_hash.as_deref().map(Into::into),
            ..Default::default()
        }
    }

    /// The remembered config hash.
    pub fn config_hash(&self) -> Option<&str> {
        self.config_hash.as_deref()
    }

    /// Whether the previous status had exactly this target entry.
    pub fn had_target(&self, target: &TargetStatus) -> bool {
        let whole = digest(&serde_json::to_vec(target).unwrap_or_default());
        self.targets.iter().any(|(_, d, _)| *d == whole)
    }

    /// Whether the previous status had this target synced.
    pub fn was_synced(&self, target: &TargetStatus) -> bool {
        let id = target_identity(target);
        self.targets.iter().any(|(i, _, synced)| *i == id && *synced)
    }

    /// Whether the previous status already warned about the deprecated `contact`.
    pub fn deprecated_warned(&self) -> bool {
        self.deprecated_warned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::Violation;

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).expect("timestamp"))
    }

    fn target(synced: bool, reason: TargetReason) -> TargetStatus {
        TargetStatus {
            namespace: "ns".into(),
            name: "gw".into(),
            key: "ns.p.json".into(),
            synced,
            reason,
            last_good_kept: false,
            message: "m".into(),
        }
    }

    fn observe(report: Report, targets: Vec<TargetStatus>) -> Observation {
        Observation { generation: Some(2), report, config_hash: Some("abc".into()), targets }
    }

    fn get<'a>(s: &'a ImageVariationPolicyStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).expect("condition")
    }

    #[test]
    fn synced_everywhere_is_ready() {
        let s = compute_status(&observe(Report::default(), vec![target(true, TargetReason::Synced)]), None, &at(1));
        assert_eq!(get(&s, READY).status, "True");
        assert_eq!(get(&s, STALLED).status, "False");
        assert_eq!(s.synced_targets.as_deref(), Some("1/1"));
        assert_eq!(s.observed_generation, Some(2));
    }

    #[test]
    fn invalid_spec_is_stalled_and_keeps_the_previous_hash() {
        let report = Report {
            errors: vec![Violation::new("spec.retry.count", "must be less than or equal to 5")],
            warnings: vec![],
        };
        let previous = ImageVariationPolicyStatus { config_hash: Some("old".into()), ..Default::default() };
        let s = compute_status(&observe(report, vec![]), Some(&previous), &at(1));
        assert_eq!(get(&s, ACCEPTED).reason, "ValidationFailed");
        assert!(get(&s, ACCEPTED).message.contains("spec.retry.count: must be less than or equal to 5"));
        assert_eq!(get(&s, STALLED).status, "True");
        assert_eq!(get(&s, READY).status, "False");
        assert_eq!(s.config_hash.as_deref(), Some("old"));
    }

    #[test]
    fn refused_target_is_not_accepted_and_full_target_is_not_synced() {
        let s = compute_status(
            &observe(Report::default(), vec![target(false, TargetReason::RefNotPermitted)]),
            None,
            &at(1),
        );
        assert_eq!(get(&s, ACCEPTED).reason, "RefNotPermitted");
        let s = compute_status(
            &observe(
                Report::default(),
                vec![target(true, TargetReason::Synced), target(false, TargetReason::TargetFull)],
            ),
            None,
            &at(1),
        );
        assert_eq!(get(&s, ACCEPTED).status, "True");
        assert_eq!(get(&s, SYNCED).reason, "TargetFull");
        assert_eq!(s.synced_targets.as_deref(), Some("1/2"));
    }

    #[test]
    fn a_failed_write_is_reconciling_not_stalled() {
        let s =
            compute_status(&observe(Report::default(), vec![target(false, TargetReason::ApplyFailed)]), None, &at(1));
        assert_eq!(get(&s, RECONCILING).status, "True");
        assert_eq!(get(&s, STALLED).status, "False");
    }

    #[test]
    fn transition_time_is_kept_while_the_status_holds_and_no_change_means_no_write() {
        let obs = observe(Report::default(), vec![target(true, TargetReason::Synced)]);
        let first = compute_status(&obs, None, &at(100));
        let second = compute_status(&obs, Some(&first), &at(200));
        assert_eq!(get(&second, READY).last_transition_time, at(100));
        assert!(!StatusMemo::of(&first).changed(&second));
        let broken = observe(Report::default(), vec![target(false, TargetReason::TargetFull)]);
        let third = compute_status(&broken, Some(&second), &at(300));
        assert_eq!(get(&third, READY).last_transition_time, at(300));
        assert!(StatusMemo::of(&second).changed(&third));
    }

    #[test]
    fn a_memo_keeps_transition_times_and_tells_changes_like_the_full_status() {
        let obs = observe(Report::default(), vec![target(true, TargetReason::Synced)]);
        let first = compute_status(&obs, None, &at(100));
        let memo = StatusMemo::of(&first);
        let second = compute_status(&obs, Some(&memo.as_previous()), &at(200));
        assert_eq!(get(&second, READY).last_transition_time, at(100));
        assert!(!memo.changed(&second));
        assert!(memo.had_target(&second.targets[0]) && memo.was_synced(&second.targets[0]));
        let broken = observe(Report::default(), vec![target(false, TargetReason::TargetFull)]);
        let third = compute_status(&broken, Some(&memo.as_previous()), &at(300));
        assert!(memo.changed(&third));
        assert!(!memo.had_target(&third.targets[0]));
        assert_eq!(memo.config_hash(), Some("abc"));
    }
}
