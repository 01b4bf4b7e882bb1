//! The `routerpolicy.io/v1alpha1` `ImageVariationPolicy` API: spec and status types.
//!
//! The doc comments here become the CRD's schema descriptions (`kubectl explain`), and the
//! bounds come from [`crate::limits`], which [`crate::validate`] reads too. This module holds
//! types only: no rules beyond what the schema can express, no client code.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::limits::*;

/// The routing policy of one team's LLM image-variation traffic: retry, fallbacks, cache,
/// weighted load balancing, timeout, prompt and identity. The operator validates it and writes
/// it, in orq's router-configuration wire format, into every gateway ConfigMap in
/// `targetRefs`, under the key `<namespace>.<name>.json`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "routerpolicy.io",
    version = "v1alpha1",
    kind = "ImageVariationPolicy",
    plural = "imagevariationpolicies",
    shortname = "ivp",
    category = "routerpolicy",
    namespaced,
    doc = "How a team's LLM image-variation calls are routed by orq: retry, fallbacks, cache, weighted load balancing, timeout, prompt and identity. routerpolicy validates it and writes it, as orq's router configuration, into the gateway ConfigMaps that spec.targetRefs names; status says whether it was accepted, written (Synced) and served by every reporting gateway replica (Served), and Ready when all hold.",
    status = "ImageVariationPolicyStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Targets","type":"string","description":"Targets synced / targets in spec","jsonPath":".status.syncedTargets"}"#,
    printcolumn = r#"{"name":"Hash","type":"string","description":"Short hash of the rendered document","jsonPath":".status.configHash"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!(has(self.identity) && has(self.contact))",
    "message": "must not be set together with spec.identity (contact is the deprecated name of identity)",
    "fieldPath": ".contact",
    "reason": "FieldValueForbidden"
}]))]
pub struct ImageVariationPolicySpec {
    /// Gateway ConfigMaps to sync this policy into (1 to 16, no duplicates). A ConfigMap in the
    /// policy's own namespace is created when missing; one in another namespace must exist,
    /// carry the label `routerpolicy.io/gateway: "true"` and list this namespace in the
    /// annotation `routerpolicy.io/allowed-namespaces`.
    #[schemars(length(min = TARGETS_MIN, max = TARGETS_MAX))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(x, self.exists_one(y, y.name == x.name && (has(y.__namespace__) ? y.__namespace__ : '') == (has(x.__namespace__) ? x.__namespace__ : '')))",
        "message": "must not contain duplicate (namespace, name) pairs",
        "reason": "FieldValueDuplicate"
    }]))]
    pub target_refs: Vec<TargetRef>,

    /// Optional trace name sent with each request (1 to 128 characters, no control
    /// characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = TRACE_NAME_MAX), regex(pattern = NO_CONTROL_CHARS_PATTERN))]
    pub name: Option<String>,

    /// Retry the call on the given HTTP status codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,

    /// Models to try, in order, when the primary call fails (0 to 10, unique; more than 3 is
    /// allowed with a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = FALLBACKS_MAX))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["model"]))]
    pub fallbacks: Option<Vec<Fallback>>,

    /// The orq prompt to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<Prompt>,

    /// The end user the requests are made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,

    /// Deprecated: the former name of `identity`, same shape. Accepted with a warning; do not
    /// set both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Identity>,

    /// Response cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<Cache>,

    /// Weighted load balancing over models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,

    /// Per-attempt timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Timeout>,

    /// Who else may use this policy through a gateway that checks callers (`routerpolicy
    /// gateway --auth serviceaccount`): ServiceAccounts of other namespaces (1 to 32 entries,
    /// no duplicates). Callers of the policy's own namespace may always use it. The list
    /// reaches the gateway beside the document, never inside what orq receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = CALLERS_MAX))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(x, self.exists_one(y, y.__namespace__ == x.__namespace__ && (has(y.serviceAccount) ? y.serviceAccount : '') == (has(x.serviceAccount) ? x.serviceAccount : '')))",
        "message": "must not contain duplicate (namespace, serviceAccount) pairs",
        "reason": "FieldValueDuplicate"
    }]))]
    pub callers: Option<Vec<Caller>>,

    /// Roll a change of this policy out gradually: a new document first gets a share of the
    /// calls, step by step, and is rolled back by itself when orq fails too many of them
    /// (docs/rollouts.md). Absent: a change goes to every call at once. A first document (none
    /// in service yet) always goes out whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// How a change of the policy goes out: the steps, and when it is rolled back.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rollout {
    /// The share of calls the new document gets, step by step (1 to 10 steps, weights 1 to 99
    /// percent and increasing); after the last step it gets every call.
    #[schemars(length(min = ROLLOUT_STEPS_MIN, max = ROLLOUT_STEPS_MAX))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.map(s, s.weight).isSorted() && self.all(x, self.exists_one(y, y.weight == x.weight))",
        "message": "weights must increase from step to step",
        "reason": "FieldValueInvalid"
    }]))]
    pub steps: Vec<RolloutStep>,
    /// Calls on the new document in a step before the step may be judged (1 to 1000000,
    /// default 20). A step past its pause with fewer calls waits, and says so in status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = ROLLOUT_MIN_REQUESTS_MIN, max = ROLLOUT_MIN_REQUESTS_MAX))]
    pub min_requests: Option<i64>,
    /// Failures over calls on the new document above which it is rolled back (0 to 1, default
    /// 0.05). A failure is orq's 5xx, 400, 404 or 422, or the gateway's upstream timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_failure_ratio: Option<f64>,
}

/// One step of a rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutStep {
    /// Percent of calls that get the new document in this step (1 to 99).
    #[schemars(range(min = ROLLOUT_WEIGHT_MIN, max = ROLLOUT_WEIGHT_MAX))]
    pub weight: i64,
    /// How long the step holds before it is judged: hours, minutes and seconds (`30s`, `1m`,
    /// `1h30m`), 5s to 24h.
    #[schemars(length(min = 2, max = 24), regex(pattern = PAUSE_PATTERN))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "duration(self) >= duration('5s') && duration(self) <= duration('24h')",
        "message": "must be between 5s and 24h",
        "reason": "FieldValueInvalid"
    }]))]
    pub pause: String,
}

/// A caller admitted to a policy: every ServiceAccount of a namespace, or one of them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Caller {
    /// Namespace of the calling ServiceAccounts (a DNS-1123 label).
    #[schemars(length(min = 1, max = DNS1123_LABEL_MAX), regex(pattern = DNS1123_LABEL_PATTERN))]
    pub namespace: String,
    /// Only this ServiceAccount of the namespace (a DNS-1123 subdomain); every one when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = DNS1123_SUBDOMAIN_MAX), regex(pattern = DNS1123_SUBDOMAIN_PATTERN))]
    pub service_account: Option<String>,
}

/// A gateway ConfigMap to write this policy into.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRef {
    /// Name of the ConfigMap (a DNS-1123 subdomain).
    #[schemars(length(min = 1, max = DNS1123_SUBDOMAIN_MAX), regex(pattern = DNS1123_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// Namespace of the ConfigMap (a DNS-1123 label); defaults to the policy's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = DNS1123_LABEL_MAX), regex(pattern = DNS1123_LABEL_PATTERN))]
    pub namespace: Option<String>,
}

/// Retry behaviour.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retry {
    /// Number of retries, 1 to 5 (orq uses 3 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = RETRY_COUNT_MIN, max = RETRY_COUNT_MAX))]
    pub count: Option<i64>,
    /// HTTP status codes that trigger a retry: 1 to 16 unique codes in 400..599 (retrying a
    /// success or a redirect is refused on purpose).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = RETRY_CODES_MAX), inner(range(min = RETRY_CODE_MIN, max = RETRY_CODE_MAX)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub on_codes: Option<Vec<i64>>,
}

/// A fallback model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fallback {
    /// Model identifier, `provider/model` (for example `openai/gpt-4o-mini`).
    #[schemars(length(min = 1, max = MODEL_MAX), regex(pattern = MODEL_PATTERN))]
    pub model: String,
}

/// The orq prompt to use.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Prompt {
    /// Prompt id (1 to 128 letters, digits, `_` or `-`), e.g.
    /// `prompt_01ARZ3NDEKTSV4RRFFQ69G5FAV`.
    #[schemars(length(min = 1, max = PROMPT_ID_MAX), regex(pattern = PROMPT_ID_PATTERN))]
    pub id: String,
    /// Prompt version; `latest` is the only value orq accepts today.
    pub version: PromptVersion,
}

/// Prompt version.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PromptVersion {
    /// The latest version of the prompt.
    #[serde(rename = "latest")]
    Latest,
}

/// The end user the requests are made for (also the shape of the deprecated `contact`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Identity {
    /// Unique identifier of the end user, 1 to 128 characters.
    #[schemars(length(min = 1, max = IDENTITY_ID_MAX))]
    pub id: String,
    /// Display name, 1 to 256 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = DISPLAY_NAME_MAX))]
    pub display_name: Option<String>,
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = EMAIL_MAX), regex(pattern = EMAIL_PATTERN))]
    pub email: Option<String>,
    /// Extra information: 0 to 16 maps of string to string, each with at most 32 entries,
    /// keys of 1 to 128 characters and values of at most 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "metadata_schema")]
    pub metadata: Option<Vec<BTreeMap<String, String>>>,
    /// Avatar URL: an absolute `https://` or `http://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = LOGO_URL_MAX), regex(pattern = LOGO_URL_PATTERN))]
    pub logo_url: Option<String>,
    /// Tags: 0 to 32 unique strings of 1 to 64 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = TAGS_MAX), inner(length(min = 1, max = TAG_MAX)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub tags: Option<Vec<String>>,
}

/// Response cache.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cache {
    /// Time to live in seconds, 1 to 259200 (orq uses 1800 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = CACHE_TTL_MIN, max = CACHE_TTL_MAX))]
    pub ttl: Option<i64>,
    /// Cache type; `exact_match` is the only one.
    #[serde(rename = "type")]
    pub type_: CacheType,
}

/// Cache type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CacheType {
    /// Serve a cached response for an identical request.
    #[serde(rename = "exact_match")]
    ExactMatch,
}

/// Weighted load balancing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancer {
    /// Balancing strategy; `weight_based` is the only one.
    #[serde(rename = "type")]
    pub type_: LoadBalancerType,
    /// Models to spread calls over: 1 to 16, unique.
    #[schemars(length(min = 1, max = LB_MODELS_MAX))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["model"]))]
    pub models: Vec<WeightedModel>,
}

/// Load-balancing strategy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum LoadBalancerType {
    /// Pick a model with probability proportional to its weight.
    #[serde(rename = "weight_based")]
    WeightBased,
}

/// A model and its share of the traffic.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightedModel {
    /// Model identifier, `provider/model`.
    #[schemars(length(min = 1, max = MODEL_MAX), regex(pattern = MODEL_PATTERN))]
    pub model: String,
    /// Weight in 0.001..1 (orq uses 0.5 when unset). orq normalizes weights, so weights that
    /// do not sum to 1 are accepted with a warning stating the effective shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = WEIGHT_MIN, max = WEIGHT_MAX))]
    // The API server compares an integer value (`0`) with a fractional `minimum` after
    // truncating the bound to an integer, so `0` would pass `minimum: 0.001`; CEL compares as
    // numbers.
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self >= 0.001",
        "message": "must be greater than or equal to 0.001"
    }]))]
    pub weight: Option<f64>,
}

/// Per-attempt timeout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeout {
    /// Timeout of each attempt in milliseconds, 1 to 600000; it applies to every attempt,
    /// fallbacks included, not to the whole request.
    #[schemars(range(min = CALL_TIMEOUT_MIN, max = CALL_TIMEOUT_MAX))]
    pub call_timeout: i64,
}

/// What the operator observed and did for this policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageVariationPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`, `Synced`, `Ready`, `Reconciling` and `Stalled` (kstatus).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// One entry per target ConfigMap.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetStatus>,
    /// Short hash (first 16 hex digits of SHA-256) of the rendered gateway document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Targets synced out of targets in spec, e.g. `2/2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_targets: Option<String>,
    /// The rollout of the current generation, while `spec.rollout` is set and a change went
    /// out gradually.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
}

/// Where a rollout is, and what orq answered.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// `Progressing`, `Succeeded` or `RolledBack`.
    pub phase: RolloutPhase,
    /// The generation rolled out.
    pub generation: i64,
    /// The current step, from 1 (the last step once it succeeded).
    pub step: i64,
    /// Percent of calls on the new document now (0 once it succeeded or was rolled back).
    pub weight: i64,
    /// Hash of the document in service before the change.
    pub stable_hash: String,
    /// Hash of the new document.
    pub canary_hash: String,
    /// When the current step began (RFC 3339).
    pub step_started_at: String,
    /// The new document's calls (all replicas) when the current step began.
    #[serde(default)]
    pub step_start_calls: i64,
    /// Calls and failures on the new document, over the live gateway replicas.
    pub canary: RolloutCounts,
    /// Calls and failures on the stable document, over the live gateway replicas.
    pub stable: RolloutCounts,
    /// What the last decision said.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Where a rollout is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RolloutPhase {
    /// The new document gets the current step's share.
    #[default]
    Progressing,
    /// The new document is the only one.
    Succeeded,
    /// Only the stable document remains; the new one is not served again for this generation.
    RolledBack,
}

impl RolloutPhase {
    /// The phase as status spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutPhase::Progressing => "Progressing",
            RolloutPhase::Succeeded => "Succeeded",
            RolloutPhase::RolledBack => "RolledBack",
        }
    }
}

/// Calls and failures on one document.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutCounts {
    /// Calls forwarded with the document.
    pub calls: i64,
    /// Of those, failures.
    pub failures: i64,
}

/// The state of the policy in one target ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    /// Namespace of the ConfigMap.
    pub namespace: String,
    /// Name of the ConfigMap.
    pub name: String,
    /// Data key of this policy in the ConfigMap.
    pub key: String,
    /// Whether the current document is written there.
    pub synced: bool,
    /// Machine-readable reason.
    pub reason: TargetReason,
    /// Whether an earlier good document of this policy stays in the ConfigMap while the current
    /// spec cannot be written (invalid spec, or a document that does not fit).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub last_good_kept: bool,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Gateway replicas of this ConfigMap that serve the current document, as of the last
    /// status write (absent while no replica reports for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_replicas: Option<u32>,
    /// Live gateway replicas of this ConfigMap that report what they serve, as of the last
    /// status write (absent while none reports). Replicas starting or stopping do not cause a
    /// status write by themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_replicas: Option<u32>,
}

/// Why a policy is, or is not, in one target ConfigMap.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
pub enum TargetReason {
    /// The current document is written.
    #[default]
    Synced,
    /// The spec is invalid; nothing new is written (the last good document, if any, stays).
    ValidationFailed,
    /// Cross-namespace target without consent (missing, not labelled, or namespace not listed).
    RefNotPermitted,
    /// Same-namespace ConfigMap that routerpolicy neither created nor was opted into.
    TargetNotManaged,
    /// The document does not fit in the ConfigMap's 1 MiB.
    TargetFull,
    /// Writing the ConfigMap failed; retried with backoff.
    ApplyFailed,
    /// The change was rolled back (`spec.rollout`): the document in service before it stays.
    RolledBack,
}

impl TargetReason {
    /// The reason as it appears in status, conditions and events.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetReason::Synced => "Synced",
            TargetReason::ValidationFailed => "ValidationFailed",
            TargetReason::RefNotPermitted => "RefNotPermitted",
            TargetReason::TargetNotManaged => "TargetNotManaged",
            TargetReason::TargetFull => "TargetFull",
            TargetReason::ApplyFailed => "ApplyFailed",
            TargetReason::RolledBack => "RolledBack",
        }
    }
}

impl std::fmt::Display for TargetReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The schema of `identity.metadata` (bounded: a map schema attribute cannot say it).
fn metadata_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": METADATA_MAX,
        "items": {
            "type": "object",
            "maxProperties": METADATA_ENTRIES_MAX,
            "additionalProperties": {"type": "string", "maxLength": METADATA_VALUE_MAX},
            "x-kubernetes-validations": [{"rule": METADATA_KEY_RULE, "message": METADATA_KEY_MESSAGE}]
        }
    })
}

impl ImageVariationPolicySpec {
    /// The resolved, de-duplicated targets of this spec for a policy in `namespace`, in the
    /// order of `targetRefs`.
    pub fn targets(&self, namespace: &str) -> Vec<crate::key::TargetKey> {
        let mut seen = std::collections::BTreeSet::new();
        self.target_refs
            .iter()
            .map(|t| crate::key::TargetKey::new(t.resolved_namespace(namespace), t.name.clone()))
            .filter(|t| seen.insert(t.clone()))
            .collect()
    }
}

impl TargetRef {
    /// The namespace this ref points into, given the policy's own namespace.
    pub fn resolved_namespace<'a>(&'a self, policy_namespace: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(policy_namespace)
    }
}
