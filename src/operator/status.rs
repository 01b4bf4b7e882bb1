//! Status: conditions and per-target entries computed from what reconcile found. Pure.
//!
//! Condition types are constants; [`compute_status`] takes the previous status and an injected
//! clock value, keeps `lastTransitionTime` when a condition's status did not change, and
//! [`StatusMemo::changed`] compares statuses without timestamps (and without the replica
//! counts, so replicas starting or stopping cause no write) so no-op writes are skipped.
//!
//! `Accepted`, `Synced`, `Served` and `Ready` are always present; kstatus's `Reconciling` and
//! `Stalled` only while True (the kstatus/Flux convention for abnormal-true conditions).

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{ImageVariationPolicyStatus, RolloutStatus, TargetReason, TargetStatus};
use crate::operator::served::Serve;
use crate::rollout::Phase;
use crate::validate::Findings;

/// Valid and every target permitted.
pub const ACCEPTED: &str = "Accepted";
/// Written to every target.
pub const SYNCED: &str = "Synced";
/// Every live gateway replica that reports for a target serves the current document.
pub const SERVED: &str = "Served";
/// Accepted, Synced, and Served where gateways report.
pub const READY: &str = "Ready";
/// kstatus: work is pending.
pub const RECONCILING: &str = "Reconciling";
/// kstatus: cannot progress without a change to the spec (or to the targets' consent).
pub const STALLED: &str = "Stalled";

/// What reconcile learnt about one policy: the input of [`compute_status`].
#[derive(Clone, Debug)]
pub struct StatusInput {
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The rule book's verdict (errors and warnings).
    pub findings: Findings,
    /// Hash of the rendered document (valid policies only).
    pub config_hash: Option<String>,
    /// One entry per target, in spec order (built from the planner's typed outcomes).
    pub targets: Vec<TargetStatus>,
    /// What the gateway replicas of each target say about the current document, in the order
    /// of `targets` (missing entries: no reports).
    pub serves: Vec<Serve>,
    /// The rollout of the current document (`spec.rollout`), with the replicas' counts.
    pub rollout: Option<RolloutStatus>,
}

/// One condition's verdict before it is stamped with a type, generation and time.
#[derive(Clone, Debug)]
struct Verdict {
    ok: bool,
    /// Neither True nor False (`Served` without reports).
    unknown: bool,
    reason: &'static str,
    message: String,
}

impl Verdict {
    fn new(ok: bool, reason: &'static str, message: impl Into<String>) -> Self {
        Verdict { ok, unknown: false, reason, message: message.into() }
    }

    fn unknown(reason: &'static str, message: impl Into<String>) -> Self {
        Verdict { ok: false, unknown: true, reason, message: message.into() }
    }

    /// True, or Unknown: what does not hold Ready back.
    fn not_false(&self) -> bool {
        self.ok || self.unknown
    }

    fn condition(self, type_: &str, generation: Option<i64>, now: &Time) -> Condition {
        Condition {
            type_: type_.to_string(),
            status: if self.unknown {
                "Unknown"
            } else if self.ok {
                "True"
            } else {
                "False"
            }
            .to_string(),
            reason: self.reason.to_string(),
            message: self.message,
            last_transition_time: now.clone(),
            observed_generation: generation,
        }
    }
}

/// The most telling non-synced target reason, in order of severity.
fn first_reason<'a>(targets: &'a [TargetStatus], reasons: &[TargetReason]) -> Option<&'a TargetStatus> {
    reasons.iter().find_map(|r| targets.iter().find(|t| !t.synced && t.reason == *r))
}

/// `" Warnings: …"`, or nothing.
fn warnings_suffix(findings: &Findings) -> String {
    if findings.warnings.is_empty() { String::new() } else { format!(" Warnings: {}", findings.warnings_summary()) }
}

/// Valid, and every target permits the policy.
fn accepted(input: &StatusInput, warnings: &str) -> Verdict {
    let refused = first_reason(&input.targets, &[TargetReason::RefNotPermitted, TargetReason::TargetNotManaged]);
    if !input.findings.is_valid() {
        Verdict::new(false, "ValidationFailed", input.findings.errors_summary())
    } else if let Some(t) = refused {
        Verdict::new(false, t.reason.as_str(), format!("target {}/{}: {}", t.namespace, t.name, t.message))
    } else {
        let total = input.targets.len();
        Verdict::new(true, "Accepted", format!("valid; all {total} target(s) permitted.{warnings}").trim())
    }
}

/// The current document is in every target.
fn synced(input: &StatusInput) -> Verdict {
    let targets = &input.targets;
    let (synced, total) = (targets.iter().filter(|t| t.synced).count(), targets.len());
    let failing = first_reason(
        targets,
        &[
            TargetReason::ValidationFailed,
            TargetReason::RefNotPermitted,
            TargetReason::TargetNotManaged,
            TargetReason::TargetFull,
            TargetReason::ApplyFailed,
            TargetReason::RolledBack,
        ],
    );
    if !input.findings.is_valid() {
        let kept = targets.iter().filter(|t| t.last_good_kept).count();
        Verdict::new(
            false,
            "ValidationFailed",
            format!("not written: the spec is invalid; the last good document stays in {kept} target(s)"),
        )
    } else if let Some(t) = failing {
        let message = format!("{synced}/{total} targets synced; {}/{}: {}", t.namespace, t.name, t.message);
        Verdict::new(false, t.reason.as_str(), message)
    } else {
        let hash = input.config_hash.as_deref().unwrap_or("-");
        Verdict::new(true, "Synced", format!("document {hash} written to {synced}/{total} target(s)"))
    }
}

/// Every live gateway replica of every target serves the current document; Unknown where
/// no replica reports (then `Ready` follows `Accepted` and `Synced` alone).
fn served(input: &StatusInput, synced: &Verdict) -> Verdict {
    if !synced.ok {
        return Verdict::unknown("NotSynced", "the current document is not in every target yet");
    }
    let at = |i: usize| input.targets.get(i).map(|t| format!("{}/{}", t.namespace, t.name)).unwrap_or_default();
    let reported: Vec<(usize, &Serve)> =
        input.serves.iter().enumerate().filter(|(_, s)| **s != Serve::NoReports).collect();
    if reported.is_empty() {
        return Verdict::unknown("NoGatewayReports", "no gateway replica reports what it serves for any target");
    }
    for (i, serve) in &reported {
        if let Serve::Rejected { replica, message, .. } = serve {
            let text = format!(
                "gateway replica {replica} of {} rejected the document: {message}; it keeps serving the last good one",
                at(*i)
            );
            return Verdict::new(false, "ServeRejected", text);
        }
    }
    for (i, serve) in &reported {
        if let Serve::Stale { replica, .. } = serve {
            let text =
                format!("gateway replica {replica} of {} has not loaded the document within the stale bound", at(*i));
            return Verdict::new(false, "ServeStale", text);
        }
    }
    if let Some((i, _)) = reported.iter().find(|(_, s)| matches!(s, Serve::Pending { .. })) {
        let text = format!("waiting for the gateway replicas of {} to load the document", at(*i));
        return Verdict::new(false, "ServePending", text);
    }
    let parts: Vec<String> = reported
        .iter()
        .filter_map(|(i, s)| s.counts().map(|(serving, all)| format!("{serving}/{all} gateway replicas of {}", at(*i))))
        .collect();
    Verdict::new(true, "Served", format!("served by {}", parts.join(", ")))
}

/// While a rollout progresses: what it does now (it holds `Ready` back, and is `Reconciling`).
fn rollout_progressing(input: &StatusInput) -> Option<Verdict> {
    let rollout = input.rollout.as_ref().filter(|r| r.phase == Phase::Progressing)?;
    let message = format!(
        "rolling out {} over {}: step {}, {}% of calls on the new document ({} calls, {} failures). {}",
        rollout.canary_hash,
        rollout.stable_hash,
        rollout.step,
        rollout.weight,
        rollout.canary.calls,
        rollout.canary.failures,
        rollout.message
    );
    Some(Verdict::new(true, "RolloutProgressing", message.trim_end()))
}

/// After a rollback: why (it stalls until the spec changes).
fn rolled_back(input: &StatusInput) -> Option<Verdict> {
    let rollout = input.rollout.as_ref().filter(|r| r.phase == Phase::RolledBack)?;
    Some(Verdict::new(true, "RolledBack", format!("{} is not served; {}", rollout.canary_hash, rollout.message)))
}

/// Accepted, Synced, and Served where gateways report, and no rollout under way.
fn ready(accepted: &Verdict, synced: &Verdict, served: &Verdict, input: &StatusInput, warnings: &str) -> Verdict {
    if let Some(progressing) = rollout_progressing(input) {
        return Verdict::new(false, "RolloutProgressing", progressing.message);
    }
    if accepted.ok && synced.ok && served.not_false() {
        let (done, total) = (input.targets.iter().filter(|t| t.synced).count(), input.targets.len());
        return Verdict::new(true, "Ready", format!("served by {done}/{total} target(s).{warnings}").trim());
    }
    let reason = if !accepted.ok {
        accepted.reason
    } else if !synced.ok {
        synced.reason
    } else {
        served.reason
    };
    Verdict::new(false, reason, "see the Accepted, Synced and Served conditions")
}

/// kstatus `Reconciling`, present only while True: a failed write is being retried, or the
/// gateway replicas have not loaded the document yet.
fn reconciling(transient: bool, served: &Verdict) -> Option<Verdict> {
    if transient {
        Some(Verdict::new(true, "ApplyFailed", "retrying writes to the targets"))
    } else if served.reason == "ServePending" {
        Some(Verdict::new(true, "ServePending", served.message.clone()))
    } else {
        None
    }
}

/// kstatus `Stalled`, present only while True: nothing changes without a spec or consent
/// change, or a gateway replica refuses or does not load the document.
fn stalled(
    input: &StatusInput,
    accepted: &Verdict,
    synced: &Verdict,
    served: &Verdict,
    transient: bool,
) -> Option<Verdict> {
    if !input.findings.is_valid() {
        Some(Verdict::new(true, "ValidationFailed", accepted.message.clone()))
    } else if !accepted.ok {
        Some(Verdict::new(true, accepted.reason, accepted.message.clone()))
    } else if !synced.ok && !transient {
        Some(Verdict::new(true, synced.reason, synced.message.clone()))
    } else if matches!(served.reason, "ServeRejected" | "ServeStale") {
        Some(Verdict::new(true, served.reason, served.message.clone()))
    } else {
        None
    }
}

/// Computes the new status from its input and the previous status.
pub fn compute_status(
    input: &StatusInput,
    previous: Option<&ImageVariationPolicyStatus>,
    now: &Time,
) -> ImageVariationPolicyStatus {
    let generation = input.generation;
    let warnings = warnings_suffix(&input.findings);
    let accepted = accepted(input, &warnings);
    let synced = synced(input);
    let transient = input.targets.iter().any(|t| !t.synced && t.reason == TargetReason::ApplyFailed);
    let served = served(input, &synced);
    let ready = ready(&accepted, &synced, &served, input, &warnings);
    let reconciling = rollout_progressing(input).or_else(|| reconciling(transient, &served));
    let stalled = rolled_back(input).or_else(|| stalled(input, &accepted, &synced, &served, transient));
    let mut conditions = vec![
        accepted.condition(ACCEPTED, generation, now),
        synced.condition(SYNCED, generation, now),
        served.condition(SERVED, generation, now),
        ready.condition(READY, generation, now),
    ];
    conditions.extend(reconciling.map(|v| v.condition(RECONCILING, generation, now)));
    conditions.extend(stalled.map(|v| v.condition(STALLED, generation, now)));
    for c in &mut conditions {
        if let Some(old) = previous.and_then(|p| p.conditions.iter().find(|o| o.type_ == c.type_))
            && old.status == c.status
        {
            c.last_transition_time = old.last_transition_time.clone();
        }
    }
    let (done, total) = (input.targets.iter().filter(|t| t.synced).count(), input.targets.len());
    let mut targets = input.targets.clone();
    for (target, serve) in targets.iter_mut().zip(&input.serves) {
        if let Some((serving, reporting)) = serve.counts() {
            target.served_replicas = Some(serving);
            target.reporting_replicas = Some(reporting);
        }
    }
    ImageVariationPolicyStatus {
        observed_generation: generation,
        conditions,
        targets,
        config_hash: if input.findings.is_valid() {
            input.config_hash.clone()
        } else {
            previous.and_then(|p| p.config_hash.clone())
        },
        synced_targets: Some(format!("{done}/{total}")),
        rollout: input.rollout.clone(),
    }
}

/// What the controller keeps of a policy's last status: enough to compute the next one and
/// to tell whether it changed, in about a fifth of the memory of the status itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusMemo {
    /// Digest of the status without timestamps and with conditions in type order.
    digest: u64,
    /// Each condition's type (one of the six this operator writes is not copied), status and
    /// last transition.
    transitions: Vec<(Cow<'static, str>, bool, Time)>,
    /// `status.configHash`.
    config_hash: Option<Box<str>>,
    /// Per target: digest of (namespace, name), digest of the whole entry, synced.
    targets: Vec<(u64, u64, bool)>,
    /// Whether the status already shows the deprecation warning of the policy's report.
    deprecation_shown: bool,
}

fn digest<T: std::hash::Hash + ?Sized>(value: &T) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(value)
}

/// The digest that tells a change worth a write: without timestamps, and without the replica
/// counts (`status.targets[].servedReplicas`/`reportingReplicas` and the message of a True
/// `Served`), so replicas starting, stopping or scaling change nothing.
fn time_insensitive_digest(status: &ImageVariationPolicyStatus) -> u64 {
    let mut stripped = status.clone();
    for c in &mut stripped.conditions {
        c.last_transition_time = Time(Default::default());
        if c.type_ == SERVED && c.status == "True" {
            c.message.clear();
        }
    }
    for t in &mut stripped.targets {
        t.served_replicas = None;
        t.reporting_replicas = None;
    }
    stripped.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    digest(&serde_json::to_vec(&stripped).unwrap_or_default())
}

/// A condition type as the memo keeps it: the operator's own types without a copy.
fn condition_type(type_: &str) -> Cow<'static, str> {
    [ACCEPTED, SYNCED, SERVED, READY, RECONCILING, STALLED]
        .into_iter()
        .find(|known| *known == type_)
        .map_or_else(|| Cow::Owned(type_.to_string()), Cow::Borrowed)
}

fn target_identity(t: &TargetStatus) -> u64 {
    digest(&(t.namespace.as_str(), t.name.as_str()))
}

impl StatusMemo {
    /// The memo of `status`; `deprecation_shown` from [`StatusMemo::deprecation_shown`].
    pub fn of(status: &ImageVariationPolicyStatus, deprecation_shown: bool) -> Self {
        StatusMemo {
            digest: time_insensitive_digest(status),
            transitions: status
                .conditions
                .iter()
                .map(|c| (condition_type(&c.type_), c.status == "True", c.last_transition_time.clone()))
                .collect(),
            config_hash: status.config_hash.as_deref().map(Into::into),
            targets: status
                .targets
                .iter()
                .map(|t| (target_identity(t), digest(&serde_json::to_vec(t).unwrap_or_default()), t.synced))
                .collect(),
            deprecation_shown,
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

    /// Whether the previous status already warned about a deprecated field.
    pub fn deprecation_shown(&self) -> bool {
        self.deprecation_shown
    }

    /// Whether `status` shows the deprecation warning of `report`: it is about the same
    /// generation and its `Accepted` condition is True (whose message lists the warnings).
    pub fn shows_deprecation(
        status: &ImageVariationPolicyStatus,
        generation: Option<i64>,
        findings: &Findings,
    ) -> bool {
        findings.deprecation().is_some()
            && status.observed_generation == generation
            && status.conditions.iter().any(|c| c.type_ == ACCEPTED && c.status == "True")
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
            served_replicas: None,
            reporting_replicas: None,
        }
    }

    fn observe(findings: Findings, targets: Vec<TargetStatus>) -> StatusInput {
        let serves = vec![Serve::NoReports; targets.len()];
        StatusInput { generation: Some(2), findings, config_hash: Some("abc".into()), targets, serves, rollout: None }
    }

    fn get<'a>(s: &'a ImageVariationPolicyStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).expect("condition")
    }

    fn has(s: &ImageVariationPolicyStatus, t: &str) -> bool {
        s.conditions.iter().any(|c| c.type_ == t)
    }

    fn serving(serve: Serve) -> StatusInput {
        StatusInput { serves: vec![serve], ..observe(Findings::default(), vec![target(true, TargetReason::Synced)]) }
    }

    #[test]
    fn served_by_every_replica_is_ready_and_says_how_many() {
        let s = compute_status(&serving(Serve::Served { replicas: 3 }), None, &at(1));
        assert_eq!(get(&s, SERVED).status, "True");
        assert_eq!(get(&s, SERVED).message, "served by 3/3 gateway replicas of ns/gw");
        assert_eq!(get(&s, READY).status, "True");
        assert_eq!((s.targets[0].served_replicas, s.targets[0].reporting_replicas), (Some(3), Some(3)));
    }

    #[test]
    fn pending_replicas_hold_ready_back_and_reconcile() {
        let s = compute_status(&serving(Serve::Pending { replicas: 3, serving: 1, since_ms: 0 }), None, &at(1));
        assert_eq!((get(&s, SERVED).status.as_str(), get(&s, SERVED).reason.as_str()), ("False", "ServePending"));
        assert_eq!(get(&s, READY).status, "False");
        assert_eq!(get(&s, RECONCILING).reason, "ServePending");
        assert!(!has(&s, STALLED));
    }

    #[test]
    fn a_rejecting_or_stale_replica_stalls_the_policy() {
        let rejected = Serve::Rejected { replicas: 2, serving: 1, replica: "gw-1".into(), message: "too large".into() };
        let s = compute_status(&serving(rejected), None, &at(1));
        assert_eq!(get(&s, STALLED).reason, "ServeRejected");
        assert!(get(&s, SERVED).message.contains("gw-1") && get(&s, SERVED).message.contains("too large"));
        let s =
            compute_status(&serving(Serve::Stale { replicas: 2, serving: 1, replica: "gw-2".into() }), None, &at(1));
        assert_eq!(get(&s, STALLED).reason, "ServeStale");
        assert_eq!(get(&s, READY).status, "False");
    }

    fn rolling(phase: Phase, synced: bool, reason: TargetReason) -> StatusInput {
        let rollout = RolloutStatus {
            phase,
            step: 1,
            weight: 20,
            stable_hash: "old".into(),
            canary_hash: "abc".into(),
            message: "rolled back: failure ratio 0.950; the most common orq answer was 404".into(),
            ..Default::default()
        };
        StatusInput { rollout: Some(rollout), ..serving(Serve::Served { replicas: 2 }) }.with_target(synced, reason)
    }

    impl StatusInput {
        fn with_target(mut self, synced: bool, reason: TargetReason) -> Self {
            self.targets = vec![target(synced, reason)];
            self
        }
    }

    #[test]
    fn a_progressing_rollout_holds_ready_back_and_reconciles() {
        let s = compute_status(&rolling(Phase::Progressing, true, TargetReason::Synced), None, &at(1));
        assert_eq!((get(&s, READY).status.as_str(), get(&s, READY).reason.as_str()), ("False", "RolloutProgressing"));
        assert_eq!(get(&s, RECONCILING).reason, "RolloutProgressing");
        assert!(get(&s, RECONCILING).message.contains("20% of calls"), "{}", get(&s, RECONCILING).message);
        assert!(!has(&s, STALLED));
        assert_eq!(s.rollout.as_ref().map(|r| r.phase), Some(Phase::Progressing));
        let done = compute_status(&rolling(Phase::Succeeded, true, TargetReason::Synced), None, &at(1));
        assert_eq!(get(&done, READY).status, "True");
    }

    #[test]
    fn a_rolled_back_change_stalls_naming_why() {
        let s = compute_status(&rolling(Phase::RolledBack, false, TargetReason::RolledBack), None, &at(1));
        assert_eq!((get(&s, READY).status.as_str(), get(&s, READY).reason.as_str()), ("False", "RolledBack"));
        assert_eq!(get(&s, STALLED).reason, "RolledBack");
        assert!(get(&s, STALLED).message.contains("0.950") && get(&s, STALLED).message.contains("404"));
        assert!(!has(&s, RECONCILING));
    }

    #[test]
    fn replica_counts_alone_are_no_reason_to_write() {
        let three = compute_status(&serving(Serve::Served { replicas: 3 }), None, &at(1));
        let four = compute_status(&serving(Serve::Served { replicas: 4 }), Some(&three), &at(2));
        assert!(!StatusMemo::of(&three, false).changed(&four), "a replica scaled in: no write");
        let pending = compute_status(&serving(Serve::Pending { replicas: 4, serving: 3, since_ms: 0 }), None, &at(3));
        assert!(StatusMemo::of(&three, false).changed(&pending), "a new document not yet served: a write");
    }

    #[test]
    fn synced_everywhere_is_ready() {
        let s = compute_status(&observe(Findings::default(), vec![target(true, TargetReason::Synced)]), None, &at(1));
        assert_eq!(get(&s, READY).status, "True");
        assert!(!has(&s, STALLED) && !has(&s, RECONCILING), "abnormal-true conditions only while True");
        assert_eq!(get(&s, SERVED).status, "Unknown");
        assert_eq!(get(&s, SERVED).reason, "NoGatewayReports");
        assert_eq!(s.synced_targets.as_deref(), Some("1/1"));
        assert_eq!(s.observed_generation, Some(2));
    }

    #[test]
    fn invalid_spec_is_stalled_and_keeps_the_previous_hash() {
        let findings = Findings {
            errors: vec![Violation::new("spec.retry.count", "must be less than or equal to 5")],
            warnings: vec![],
        };
        let previous = ImageVariationPolicyStatus { config_hash: Some("old".into()), ..Default::default() };
        let s = compute_status(&observe(findings, vec![]), Some(&previous), &at(1));
        assert_eq!(get(&s, ACCEPTED).reason, "ValidationFailed");
        assert!(get(&s, ACCEPTED).message.contains("spec.retry.count: must be less than or equal to 5"));
        assert_eq!(get(&s, STALLED).status, "True");
        assert_eq!(get(&s, READY).status, "False");
        assert_eq!(s.config_hash.as_deref(), Some("old"));
    }

    #[test]
    fn refused_target_is_not_accepted_and_full_target_is_not_synced() {
        let s = compute_status(
            &observe(Findings::default(), vec![target(false, TargetReason::RefNotPermitted)]),
            None,
            &at(1),
        );
        assert_eq!(get(&s, ACCEPTED).reason, "RefNotPermitted");
        let s = compute_status(
            &observe(
                Findings::default(),
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
            compute_status(&observe(Findings::default(), vec![target(false, TargetReason::ApplyFailed)]), None, &at(1));
        assert_eq!(get(&s, RECONCILING).status, "True");
        assert!(!has(&s, STALLED));
    }

    #[test]
    fn transition_time_is_kept_while_the_status_holds_and_no_change_means_no_write() {
        let obs = observe(Findings::default(), vec![target(true, TargetReason::Synced)]);
        let first = compute_status(&obs, None, &at(100));
        let second = compute_status(&obs, Some(&first), &at(200));
        assert_eq!(get(&second, READY).last_transition_time, at(100));
        assert!(!StatusMemo::of(&first, false).changed(&second));
        let broken = observe(Findings::default(), vec![target(false, TargetReason::TargetFull)]);
        let third = compute_status(&broken, Some(&second), &at(300));
        assert_eq!(get(&third, READY).last_transition_time, at(300));
        assert!(StatusMemo::of(&second, false).changed(&third));
    }

    #[test]
    fn a_memo_keeps_transition_times_and_tells_changes_like_the_full_status() {
        let obs = observe(Findings::default(), vec![target(true, TargetReason::Synced)]);
        let first = compute_status(&obs, None, &at(100));
        let memo = StatusMemo::of(&first, false);
        let second = compute_status(&obs, Some(&memo.as_previous()), &at(200));
        assert_eq!(get(&second, READY).last_transition_time, at(100));
        assert!(!memo.changed(&second));
        assert!(memo.had_target(&second.targets[0]) && memo.was_synced(&second.targets[0]));
        let broken = observe(Findings::default(), vec![target(false, TargetReason::TargetFull)]);
        let third = compute_status(&broken, Some(&memo.as_previous()), &at(300));
        assert!(memo.changed(&third));
        assert!(!memo.had_target(&third.targets[0]));
        assert_eq!(memo.config_hash(), Some("abc"));
    }
}

#[cfg(test)]
mod deprecation {
    use super::*;
    use crate::validate::Violation;

    fn accepted_at(generation: i64) -> ImageVariationPolicyStatus {
        ImageVariationPolicyStatus {
            observed_generation: Some(generation),
            conditions: vec![Condition {
                type_: ACCEPTED.into(),
                status: "True".into(),
                reason: "Accepted".into(),
                message: String::new(),
                last_transition_time: Time(Default::default()),
                observed_generation: Some(generation),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_status_shows_a_deprecation_only_for_its_generation_and_when_accepted() {
        let findings =
            Findings { errors: vec![], warnings: vec![Violation::deprecated("spec.contact", "is deprecated")] };
        assert!(StatusMemo::shows_deprecation(&accepted_at(3), Some(3), &findings));
        assert!(!StatusMemo::shows_deprecation(&accepted_at(2), Some(3), &findings), "about another spec");
        assert!(!StatusMemo::shows_deprecation(&accepted_at(3), Some(3), &Findings::default()), "nothing deprecated");
        let mut refused = accepted_at(3);
        refused.conditions[0].status = "False".into();
        assert!(!StatusMemo::shows_deprecation(&refused, Some(3), &findings), "warnings are shown only when accepted");
    }
}
