//! The explanation of one policy from what was observed. Pure: the shells ([`super::live`],
//! [`super::offline`]) gather the objects and the clock; this file judges them.
//!
//! The JSON form (`explain -o json`) is this file's serde form and a documented interface
//! (docs/explain.md, "The JSON answer"): fields are added, never renamed.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use serde::Serialize;
use serde_json::Value;

use crate::api::{ImageVariationPolicy, TargetStatus};
use crate::explain::subject::{CallerVerdict, Subject, verdict};
use crate::hash::policy_hash;
use crate::key::{PolicyKey, TargetKey, VARIATIONS_PATH};
use crate::render::{GatewayDocument, render_policy};
use crate::serving::LeaseReport;
use crate::validate::{Violation, validate_policy};

/// What the shells observed, for one policy.
#[derive(Clone, Debug)]
pub struct Observed {
    /// The policy, with `metadata.namespace` and `metadata.name` set (and its status when read
    /// from the cluster).
    pub policy: ImageVariationPolicy,
    /// Each target of its spec: the ConfigMap (`None`: it does not exist), or why it could not
    /// be read. A target missing from the map was not looked at.
    pub configmaps: BTreeMap<TargetKey, Result<Option<ConfigMap>, String>>,
    /// The report Leases of the gateway replicas, per namespace of a target, or why they could
    /// not be read; `None` offline (there are no replicas to ask).
    pub leases: Option<BTreeMap<String, Result<Vec<Lease>, String>>>,
    /// Now, Unix milliseconds (a report older than its Lease is stale).
    pub now_ms: i64,
}

/// Everything `explain` says about one policy.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// Where the answer comes from: `cluster` or `manifests`.
    pub source: &'static str,
    /// The policy and its current document.
    pub policy: PolicyView,
    /// The verdict on `--as`, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<CallerVerdict>,
    /// The request a client sends to use the policy.
    pub request: RequestView,
    /// One entry per target of the spec, in `spec.targetRefs` order.
    pub targets: Vec<TargetView>,
    /// Remarks that change how to read the rest.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The policy: what it is now and what the operator last said of it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.generation` (cluster only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// `status.observedGeneration` (cluster only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `status.configHash`: the hash the operator last reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// The hash of the current document as the rule book renders the spec now (`None` while
    /// the spec is invalid).
    pub hash: Option<String>,
    /// Whether the spec passes every rule.
    pub valid: bool,
    /// The broken rules, with their field paths.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Finding>,
    /// Advice that does not stop the policy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Finding>,
    /// `status.conditions` (cluster only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ConditionView>,
    /// The current document (orq's router configuration), unless `--show-document=false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<Value>,
}

/// One rule finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The field path.
    pub path: String,
    /// The rule.
    pub message: String,
}

/// One status condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConditionView {
    /// `Accepted`, `Synced`, `Served`, `Ready`, `Reconciling`, `Stalled`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// The reason.
    pub reason: String,
    /// The message.
    pub message: String,
}

/// How a client asks for the policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestView {
    /// `POST`.
    pub method: &'static str,
    /// The gateway's path.
    pub path: &'static str,
    /// The header that selects the policy.
    pub header: &'static str,
    /// Its value, `<namespace>.<name>`.
    pub value: String,
    /// A complete example (`$GATEWAY_URL`: the gateway Service that serves a target).
    pub example: String,
}

/// The policy in one target ConfigMap.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetView {
    /// `<namespace>/<name>` of the ConfigMap.
    pub config_map: String,
    /// The policy's data key there.
    pub key: String,
    /// The data key of its callers entry (present when the policy has `spec.callers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callers_key: Option<String>,
    /// Whether the ConfigMap exists (`None` when it could not be read: see `error`).
    pub exists: Option<bool>,
    /// Why the ConfigMap could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The operator's reason for this target (`status.targets[].reason`, or the plan's offline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The operator's message for this target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The hash of what the ConfigMap holds for the policy (`None`: it holds nothing).
    pub hash: Option<String>,
    /// Whether that is the policy's current document.
    pub current: bool,
    /// Whether it holds an earlier document of the policy (kept while the current spec cannot
    /// be written, or not yet replaced).
    pub last_good: bool,
    /// What the ConfigMap holds for the policy, unless `--show-document=false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<Value>,
    /// Every gateway replica that reports serving this ConfigMap (cluster only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Vec<ReplicaView>>,
    /// Why the replicas' reports could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas_error: Option<String>,
}

/// What one gateway replica serves of the policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaView {
    /// The replica (its Lease's holder).
    pub name: String,
    /// Seconds since it last renewed its report.
    pub age_seconds: i64,
    /// The ConfigMap resourceVersion it has loaded.
    pub loaded_resource_version: String,
    /// `current`, `older`, `rejected` or `stale`.
    pub serves: Serves,
    /// Why, in a sentence.
    pub reason: String,
}

/// What a replica serves of the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Serves {
    /// The policy's current document.
    Current,
    /// Another document: it has not loaded the ConfigMap's latest revision, or the ConfigMap
    /// does not hold the current document.
    Older,
    /// It refused the policy's entry and keeps its last good document.
    Rejected,
    /// Its report expired: it stopped renewing (stopped, frozen or cut off from the API server).
    Stale,
}

/// Explains the observed policy; `subject` is `--as`, `show_document` keeps the documents.
pub fn explain(observed: &Observed, subject: Option<&Subject>, show_document: bool) -> Explanation {
    let policy = &observed.policy;
    let namespace = policy.metadata.namespace.clone().unwrap_or_default();
    let name = policy.metadata.name.clone().unwrap_or_default();
    let key = PolicyKey::new(&namespace, &name);
    let report = validate_policy(&namespace, &name, &policy.spec);
    let current = report.is_valid().then(|| render_policy(&policy.spec));
    let targets: Vec<TargetView> = policy
        .spec
        .targets(&namespace)
        .iter()
        .map(|target| target_view(observed, target, &key, current.as_ref(), show_document))
        .collect();
    let status = policy.status.clone().unwrap_or_default();
    let view = PolicyView {
        namespace: namespace.clone(),
        name,
        generation: policy.metadata.generation,
        observed_generation: status.observed_generation,
        config_hash: status.config_hash.clone(),
        hash: current.as_ref().map(|d| d.hash.clone()),
        valid: report.is_valid(),
        errors: report.errors.iter().map(Finding::from).collect(),
        warnings: report.warnings.iter().map(Finding::from).collect(),
        conditions: status.conditions.iter().map(ConditionView::from).collect(),
        document: current.as_ref().filter(|_| show_document).and_then(|d| serde_json::from_str(&d.json).ok()),
    };
    let mut explanation = Explanation {
        source: if observed.leases.is_some() { "cluster" } else { "manifests" },
        caller: subject.map(|s| verdict(&namespace, &policy.spec, s)),
        request: request_view(&key),
        notes: Vec::new(),
        policy: view,
        targets,
    };
    explanation.notes = notes(&explanation);
    explanation
}

fn target_view(
    observed: &Observed,
    target: &TargetKey,
    key: &PolicyKey,
    current: Option<&GatewayDocument>,
    show_document: bool,
) -> TargetView {
    let status = observed
        .policy
        .status
        .as_ref()
        .and_then(|s| s.targets.iter().find(|t| *t.namespace == *target.namespace && *t.name == *target.name));
    let has_callers = observed.policy.spec.callers.as_ref().is_some_and(|c| !c.is_empty());
    let mut view = TargetView {
        config_map: format!("{}/{}", target.namespace, target.name),
        key: key.data_key(),
        callers_key: has_callers.then(|| key.callers_key()),
        exists: None,
        error: None,
        reason: status.map(|s| s.reason.to_string()),
        message: status.map(|s: &TargetStatus| s.message.clone()).filter(|m| !m.is_empty()),
        hash: None,
        current: false,
        last_good: false,
        document: None,
        replicas: None,
        replicas_error: None,
    };
    let configmap = match observed.configmaps.get(target) {
        Some(Ok(Some(cm))) => Some(cm),
        Some(Ok(None)) => {
            view.exists = Some(false);
            None
        }
        Some(Err(e)) => {
            view.error = Some(e.clone());
            None
        }
        None => None,
    };
    if let Some(cm) = configmap {
        view.exists = Some(true);
        let data = cm.data.clone().unwrap_or_default();
        if let Some(held) = data.get(&key.data_key()) {
            let hash = policy_hash(held.as_bytes(), data.get(&key.callers_key()).map(|c| c.as_bytes()));
            view.current = current.is_some_and(|c| c.hash == hash);
            view.last_good = !view.current;
            view.hash = Some(hash);
            view.document = show_document.then(|| serde_json::from_str(held).unwrap_or(Value::String(held.clone())));
        }
    }
    if let Some(by_namespace) = &observed.leases {
        match by_namespace.get(&*target.namespace) {
            Some(Ok(leases)) => {
                let revision = configmap.and_then(|cm| cm.metadata.resource_version.clone()).unwrap_or_default();
                let judge = Judged { target, key, revision: &revision, current: view.current, now_ms: observed.now_ms };
                view.replicas =
                    Some(leases.iter().filter_map(LeaseReport::of).filter_map(|r| judge.replica(r)).collect());
            }
            Some(Err(e)) => view.replicas_error = Some(e.clone()),
            None => view.replicas = Some(Vec::new()),
        }
    }
    view
}

/// What a replica's report is judged against: the target and its ConfigMap as read now.
struct Judged<'a> {
    target: &'a TargetKey,
    key: &'a PolicyKey,
    /// The ConfigMap's resourceVersion now.
    revision: &'a str,
    /// Whether the ConfigMap holds the current document.
    current: bool,
    now_ms: i64,
}

impl Judged<'_> {
    /// The view of one report, or `None` when it is about another ConfigMap.
    fn replica(&self, lease: LeaseReport) -> Option<ReplicaView> {
        // A volume-mode replica's report carries rollout counts only: it cannot say what it loaded.
        if lease.report.target().as_ref() != Some(self.target) || lease.report.volume {
            return None;
        }
        let loaded = lease.report.resource_version.clone();
        let age_seconds = (self.now_ms - lease.renewed_ms).max(0) / 1000;
        let rejected = [self.key.data_key(), self.key.callers_key()]
            .into_iter()
            .find_map(|k| lease.report.rejected.get(&k).map(|why| format!("it refused {k}: {why}")));
        let behind = self.revision.parse::<u64>().ok().filter(|now| lease.report.revision() < *now);
        let (serves, reason) = if lease.expires_ms() <= self.now_ms {
            let ago = (self.now_ms - lease.expires_ms()) / 1000;
            (Serves::Stale, format!("its report expired {ago}s ago: it stopped renewing (stopped, frozen or cut off)"))
        } else if let Some(why) = rejected {
            (Serves::Rejected, format!("{why}; it keeps serving its last good document"))
        } else if let Some(now) = behind {
            (Serves::Older, format!("it has loaded resourceVersion {loaded:?}; the ConfigMap is at {now}"))
        } else if self.current {
            (Serves::Current, format!("it has loaded the ConfigMap's latest resourceVersion {loaded:?}"))
        } else {
            (Serves::Older, "it serves what the ConfigMap holds, which is not the policy's current document".into())
        };
        Some(ReplicaView { name: lease.identity, age_seconds, loaded_resource_version: loaded, serves, reason })
    }
}

/// [`crate::key::POLICY_HEADER`] as the docs spell it (header names are case-insensitive).
const POLICY_HEADER_SPELLED: &str = "X-Routerpolicy-Policy";

fn request_view(key: &PolicyKey) -> RequestView {
    let example = format!(
        "curl \"$GATEWAY_URL{VARIATIONS_PATH}\" \\\n  -H \"Authorization: Bearer $(cat /var/run/secrets/routerpolicy/token)\" \\\n  -H '{POLICY_HEADER_SPELLED}: {key}' \\\n  -F image=@image.png -F model=<model>"
    );
    RequestView {
        method: "POST",
        path: VARIATIONS_PATH,
        header: POLICY_HEADER_SPELLED,
        value: key.to_string(),
        example,
    }
}

/// Remarks on the whole answer: what a reader would otherwise misread.
fn notes(e: &Explanation) -> Vec<String> {
    let mut notes = Vec::new();
    let p = &e.policy;
    if let (Some(reported), Some(hash)) = (&p.config_hash, &p.hash)
        && p.observed_generation == p.generation
        && reported != hash
    {
        notes.push(format!(
            "this binary renders the spec to {hash}, the operator reported {reported}: their versions differ, so `current` compares with this binary's rendering"
        ));
    }
    if p.generation.is_some() && p.observed_generation != p.generation {
        notes.push("the operator has not yet observed the latest generation: status is about an earlier spec".into());
    }
    if e.caller.is_some() {
        notes.push("the caller verdict applies where the gateway checks callers (--auth serviceaccount, the default); with --auth none anyone who reaches it may use any policy it serves".into());
    }
    notes
}

impl From<&Violation> for Finding {
    fn from(v: &Violation) -> Self {
        Finding { path: v.path.clone(), message: v.message.clone() }
    }
}

impl From<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> for ConditionView {
    fn from(c: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition) -> Self {
        ConditionView {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
    use serde_json::json;

    use super::*;
    use crate::serving::{GATEWAY_REPLICA_LABEL, SERVING_ANNOTATION, ServingReport};

    const NOW_MS: i64 = 1_800_000_000_000;

    fn policy(spec: Value) -> ImageVariationPolicy {
        let mut policy = ImageVariationPolicy::new("avatars", serde_json::from_value(spec).expect("spec"));
        policy.metadata.namespace = Some("team-a".into());
        policy.metadata.generation = Some(3);
        policy
    }

    fn good() -> ImageVariationPolicy {
        policy(json!({"targetRefs": [{"name": "gw"}], "retry": {"count": 2, "onCodes": [429]}}))
    }

    fn target() -> TargetKey {
        TargetKey::new("team-a", "gw")
    }

    /// The ConfigMap at `revision` holding `document` (as rendered from `spec`) for team-a/avatars.
    fn configmap(revision: &str, held: Option<&ImageVariationPolicy>) -> ConfigMap {
        let mut data = BTreeMap::new();
        if let Some(p) = held {
            data.insert(PolicyKey::new("team-a", "avatars").data_key(), render_policy(&p.spec).json.to_string());
        }
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("gw".into()),
                namespace: Some("team-a".into()),
                resource_version: Some(revision.into()),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        }
    }

    /// A report Lease of `identity`, renewed `ago_s` seconds before now, having loaded `revision`.
    fn lease(identity: &str, ago_s: i64, revision: &str, rejected: &[(&str, &str)]) -> Lease {
        let report = ServingReport {
            config_map: "team-a/gw".into(),
            resource_version: revision.into(),
            rejected: rejected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        };
        let renewed = k8s_openapi::jiff::Timestamp::from_millisecond(NOW_MS - ago_s * 1000).expect("time");
        Lease {
            metadata: ObjectMeta {
                name: Some(crate::serving::lease_name(identity)),
                labels: Some([(GATEWAY_REPLICA_LABEL.to_string(), "true".to_string())].into()),
                annotations: Some(
                    [(SERVING_ANNOTATION.to_string(), serde_json::to_string(&report).expect("json"))].into(),
                ),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(identity.into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(renewed)),
                ..Default::default()
            }),
        }
    }

    fn observed(policy: ImageVariationPolicy, cm: Option<ConfigMap>, leases: Vec<Lease>) -> Observed {
        Observed {
            policy,
            configmaps: [(target(), Ok(cm))].into(),
            leases: Some([("team-a".to_string(), Ok(leases))].into()),
            now_ms: NOW_MS,
        }
    }

    fn serves(e: &Explanation) -> Vec<(String, Serves)> {
        e.targets[0].replicas.as_ref().expect("replicas").iter().map(|r| (r.name.clone(), r.serves)).collect()
    }

    #[test]
    fn a_replica_is_current_rejected_stale_or_older_by_its_report() {
        let p = good();
        let key = PolicyKey::new("team-a", "avatars").data_key();
        let leases = vec![
            lease("gw-a", 2, "40", &[]),
            lease("gw-b", 2, "40", &[(key.as_str(), "unknown field `x`")]),
            lease("gw-c", 60, "40", &[]),
            lease("gw-d", 2, "31", &[]),
        ];
        let e = explain(&observed(p.clone(), Some(configmap("40", Some(&p))), leases), None, true);
        assert_eq!(
            serves(&e),
            vec![
                ("gw-a".into(), Serves::Current),
                ("gw-b".into(), Serves::Rejected),
                ("gw-c".into(), Serves::Stale),
                ("gw-d".into(), Serves::Older),
            ]
        );
        let replicas = e.targets[0].replicas.as_ref().expect("replicas");
        assert!(replicas[1].reason.contains("unknown field `x`"), "{}", replicas[1].reason);
        assert!(replicas[2].reason.contains("expired 45s ago"), "{}", replicas[2].reason);
        assert!(replicas[3].reason.contains("\"31\"") && replicas[3].reason.contains("40"), "{}", replicas[3].reason);
        assert_eq!(replicas[0].age_seconds, 2);
        assert!(e.targets[0].current);
        assert_eq!(e.targets[0].hash, e.policy.hash);
    }

    #[test]
    fn reports_about_another_configmap_are_not_listed() {
        let p = good();
        let mut other = lease("gw-x", 1, "40", &[]);
        let report =
            ServingReport { config_map: "team-a/other".into(), resource_version: "40".into(), ..Default::default() };
        other.metadata.annotations =
            Some([(SERVING_ANNOTATION.to_string(), serde_json::to_string(&report).expect("json"))].into());
        let e = explain(&observed(p.clone(), Some(configmap("40", Some(&p))), vec![other]), None, true);
        assert_eq!(serves(&e), vec![]);
    }

    #[test]
    fn an_invalid_policy_shows_its_errors_and_the_last_good_document_held() {
        let last_good = good();
        let broken = policy(json!({"targetRefs": [{"name": "gw"}], "retry": {"count": 0, "onCodes": [429]}}));
        let e = explain(
            &observed(broken, Some(configmap("40", Some(&last_good))), vec![lease("gw-a", 1, "40", &[])]),
            None,
            true,
        );
        assert!(!e.policy.valid);
        assert_eq!(e.policy.hash, None);
        assert!(e.policy.errors.iter().any(|f| f.path.starts_with("spec.retry.count")), "{:?}", e.policy.errors);
        let t = &e.targets[0];
        assert!(!t.current && t.last_good, "{t:?}");
        assert_eq!(t.hash.as_deref(), Some(render_policy(&last_good.spec).hash.as_str()));
        assert_eq!(serves(&e), vec![("gw-a".into(), Serves::Older)]);
        let text = super::super::text::format(&e);
        assert!(text.contains("INVALID") && text.contains("spec.retry.count"), "{text}");
        assert!(text.contains("holds an earlier document"), "{text}");
    }

    #[test]
    fn a_target_that_does_not_exist_or_holds_nothing_is_said_so() {
        let p = good();
        let missing = explain(&observed(p.clone(), None, vec![]), None, false);
        assert_eq!(missing.targets[0].exists, Some(false));
        assert!(super::super::text::format(&missing).contains("does not exist"));
        let empty = explain(&observed(p, Some(configmap("7", None)), vec![]), None, false);
        assert_eq!(
            (empty.targets[0].exists, empty.targets[0].hash.clone(), empty.targets[0].current),
            (Some(true), None, false)
        );
        assert!(super::super::text::format(&empty).contains("holds nothing for this policy"));
        assert!(super::super::text::format(&empty).contains("none reports for this ConfigMap"));
    }

    #[test]
    fn documents_are_left_out_when_not_asked_for() {
        let p = good();
        let e = explain(&observed(p.clone(), Some(configmap("40", Some(&p))), vec![]), None, false);
        assert_eq!((e.policy.document.clone(), e.targets[0].document.clone()), (None, None));
        let shown = explain(&observed(p.clone(), Some(configmap("40", Some(&p))), vec![]), None, true);
        assert_eq!(shown.policy.document, Some(serde_json::from_str(&render_policy(&p.spec).json).expect("json")));
    }

    #[test]
    fn the_request_names_the_header_and_key_a_client_sends() {
        let e = explain(&observed(good(), None, vec![]), None, false);
        assert_eq!(e.request.value, "team-a.avatars");
        assert!(crate::key::POLICY_HEADER.eq_ignore_ascii_case(e.request.header));
        assert!(e.request.example.contains("X-Routerpolicy-Policy: team-a.avatars"), "{}", e.request.example);
        assert!(e.request.example.contains(VARIATIONS_PATH));
    }

    #[test]
    fn the_json_shape_carries_the_documented_fields() {
        let p = good();
        let subject = Subject::parse("team-b/app").expect("subject");
        let e = explain(
            &observed(p.clone(), Some(configmap("40", Some(&p))), vec![lease("gw-a", 1, "40", &[])]),
            Some(&subject),
            false,
        );
        let v = serde_json::to_value(&e).expect("json");
        assert_eq!(v["source"], "cluster");
        assert_eq!(v["caller"]["subject"], "system:serviceaccount:team-b:app");
        assert_eq!(v["caller"]["allowed"], false);
        assert!(v["caller"]["reason"].as_str().is_some_and(|r| !r.is_empty()));
        assert_eq!(v["targets"][0]["configMap"], "team-a/gw");
        assert_eq!(v["targets"][0]["key"], "team-a.avatars.json");
        assert_eq!(v["targets"][0]["current"], true);
        assert_eq!(v["targets"][0]["hash"], v["policy"]["hash"]);
        assert_eq!(v["targets"][0]["replicas"][0]["name"], "gw-a");
        assert_eq!(v["targets"][0]["replicas"][0]["serves"], "current");
        assert_eq!(v["policy"]["generation"], 3);
    }

    #[test]
    fn a_status_about_an_earlier_generation_is_noted() {
        let mut p = good();
        p.status = Some(crate::api::ImageVariationPolicyStatus { observed_generation: Some(2), ..Default::default() });
        let e = explain(&observed(p, None, vec![]), None, false);
        assert!(e.notes.iter().any(|n| n.contains("latest generation")), "{:?}", e.notes);
    }
}
