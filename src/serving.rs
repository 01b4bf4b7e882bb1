//! What a gateway replica reports about what it serves (docs/gateway.md, "Ready means served"): the contract between the
//! gateway wing, which keeps one Lease per replica with this report in an annotation, and the
//! operator wing, which folds the reports into each policy's `Served` condition. A leaf.
//!
//! The marker of what a replica has loaded is the ConfigMap's `resourceVersion`: the operator
//! remembers, per policy and target, the resourceVersion at which the current document first
//! landed, and a replica that has loaded that resourceVersion or a later one, and does not
//! reject the policy's key, serves the document.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use serde::{Deserialize, Serialize};

use crate::key::TargetKey;

/// Label on every gateway replica's report Lease.
pub const GATEWAY_REPLICA_LABEL: &str = "routerpolicy.io/gateway-replica";
/// Annotation of a report Lease holding the [`ServingReport`] as JSON.
pub const SERVING_ANNOTATION: &str = "routerpolicy.io/serving";
/// Prefix of a report Lease's name; the replica's identity follows.
pub const LEASE_PREFIX: &str = "routerpolicy-gateway-";
/// The field manager of the gateway's writes.
pub const GATEWAY_FIELD_MANAGER: &str = "routerpolicy-gateway";

/// What one replica serves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServingReport {
    /// The ConfigMap served, `<namespace>/<name>`.
    pub config_map: String,
    /// Its `metadata.resourceVersion` as last loaded (empty while it does not exist).
    pub resource_version: String,
    /// Data keys the replica refused, with why (it keeps serving their last good document).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rejected: BTreeMap<String, String>,
    /// Calls and failures per document hash, only for documents under rollout (so the report
    /// stays small however many policies the replica serves).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub calls: BTreeMap<String, crate::rollout::CallCounts>,
    /// A volume-mode replica (`--report-for`): it cannot see the resourceVersion it loaded, so
    /// `Served` does not count it; its calls count in rollouts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub volume: bool,
}

impl ServingReport {
    /// The ConfigMap the report is about.
    pub fn target(&self) -> Option<TargetKey> {
        let (namespace, name) = self.config_map.split_once('/')?;
        (!namespace.is_empty() && !name.is_empty()).then(|| TargetKey::new(namespace, name))
    }

    /// The loaded resourceVersion as a number (etcd revisions are), or 0.
    pub fn revision(&self) -> u64 {
        self.resource_version.parse().unwrap_or(0)
    }
}

/// A report Lease read: who reports, what, and when it expires unless renewed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseReport {
    /// The replica (the Lease's `holderIdentity`, or its name).
    pub identity: String,
    /// What it serves.
    pub report: ServingReport,
    /// When it last renewed (or acquired) the Lease, Unix milliseconds.
    pub renewed_ms: i64,
    /// How long the Lease holds without a renewal (`leaseDurationSeconds`, default 15).
    pub duration_seconds: i64,
}

impl LeaseReport {
    /// The report of `lease`; `None` when it has no readable report or was never renewed.
    pub fn of(lease: &Lease) -> Option<LeaseReport> {
        let annotation = lease.metadata.annotations.as_ref()?.get(SERVING_ANNOTATION)?;
        let report: ServingReport = serde_json::from_str(annotation).ok()?;
        let spec = lease.spec.as_ref()?;
        let renewed_ms = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?.0.as_millisecond();
        let identity = spec.holder_identity.clone().or_else(|| lease.metadata.name.clone()).unwrap_or_default();
        let duration_seconds = i64::from(spec.lease_duration_seconds.unwrap_or(15));
        Some(LeaseReport { identity, report, renewed_ms, duration_seconds })
    }

    /// When the Lease expires unless renewed (Unix milliseconds).
    pub fn expires_ms(&self) -> i64 {
        self.renewed_ms.saturating_add(self.duration_seconds.max(1).saturating_mul(1000))
    }
}

/// The name of a replica's report Lease: the prefix and the identity, made a DNS-1123
/// subdomain (lower case; anything else becomes `-`), at most 253 characters.
pub fn lease_name(identity: &str) -> String {
    let cleaned: String = identity
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c.to_ascii_lowercase() } else { '-' })
        .collect();
    let mut name = format!("{LEASE_PREFIX}{}", cleaned.trim_matches(|c| c == '-' || c == '.'));
    name.truncate(253);
    name.trim_end_matches(['-', '.']).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_names_its_configmap_and_revision() {
        let report =
            ServingReport { config_map: "gw/policies".into(), resource_version: "42".into(), ..Default::default() };
        assert_eq!(report.target(), Some(TargetKey::new("gw", "policies")));
        assert_eq!(report.revision(), 42);
        let json = serde_json::to_string(&report).expect("json");
        assert_eq!(json, r#"{"configMap":"gw/policies","resourceVersion":"42"}"#);
        assert_eq!(serde_json::from_str::<ServingReport>(&json).expect("parse"), report);
        assert_eq!(ServingReport { config_map: "nonsense".into(), ..Default::default() }.target(), None);
    }

    #[test]
    fn a_report_carries_rollout_counts_and_the_volume_mark_only_when_it_has_them() {
        let counts = crate::rollout::CallCounts { calls: 3, failures: 1, answers: [("404".to_string(), 1)].into() };
        let report = ServingReport {
            config_map: "gw/policies".into(),
            calls: [("abc".to_string(), counts)].into(),
            volume: true,
            ..Default::default()
        };
        let json = serde_json::to_string(&report).expect("json");
        assert_eq!(
            json,
            r#"{"configMap":"gw/policies","resourceVersion":"","calls":{"abc":{"calls":3,"failures":1,"answers":{"404":1}}},"volume":true}"#
        );
        assert_eq!(serde_json::from_str::<ServingReport>(&json).expect("parse"), report);
    }

    #[test]
    fn lease_names_are_dns_subdomains() {
        assert_eq!(lease_name("gateway-7d9f-abcde"), "routerpolicy-gateway-gateway-7d9f-abcde");
        assert_eq!(lease_name("My_Host-123"), "routerpolicy-gateway-my-host-123");
        assert!(lease_name(&"x".repeat(400)).len() <= 253);
    }
}
