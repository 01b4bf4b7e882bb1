//! Report, API mode: this replica's Lease saying what it serves (docs/gateway.md, "Ready means served"), which the
//! operator folds into each policy's `Served` condition.
//!
//! The Lease (`coordination.k8s.io/v1`, in the replica's namespace, labelled
//! `routerpolicy.io/gateway-replica: "true"`) is created after the first complete load,
//! renewed every `--report-interval` (with the calls and failures of the documents under
//! rollout), rewritten at once when what is served changes, owned by
//! the replica's Pod where the downward API names it (`POD_NAME`, `POD_UID`), and deleted on
//! shutdown. Nothing is written per request.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::gateway::Serving;
use crate::gateway::reload::first_time;
use crate::key::TargetKey;
use crate::rollout::CallCounts;
use crate::serving::{GATEWAY_FIELD_MANAGER, GATEWAY_REPLICA_LABEL, SERVING_ANNOTATION, ServingReport, lease_name};

/// Where and how this replica reports.
#[derive(Clone, Debug)]
pub struct Reporter {
    /// The report Leases of the replica's namespace.
    pub api: Api<Lease>,
    /// The Lease's name.
    pub name: String,
    /// The replica's identity.
    pub identity: String,
    /// Its Pod, when known.
    pub owner: Option<OwnerReference>,
    /// The ConfigMap served.
    pub config_map: TargetKey,
    /// How long a report stays valid without renewal.
    pub lease_duration: Duration,
    /// How often it is renewed.
    pub interval: Duration,
    /// Whether this is a volume-mode replica (`--report-for`).
    pub volume: bool,
}

impl Reporter {
    /// The reporter of replica `identity` in `namespace`.
    pub fn new(client: Client, namespace: &str, identity: String, config_map: TargetKey) -> Reporter {
        Reporter {
            api: Api::namespaced(client, namespace),
            name: lease_name(&identity),
            owner: pod_owner(),
            identity,
            config_map,
            lease_duration: Duration::from_secs(30),
            interval: Duration::from_secs(5),
            volume: false,
        }
    }

    fn lease(&self, serving: &Serving, calls: CallsByHash, acquired: &MicroTime) -> Lease {
        let report = ServingReport {
            config_map: self.config_map.to_string(),
            resource_version: serving.resource_version.clone(),
            rejected: serving.rejected.clone(),
            calls,
            volume: self.volume,
        };
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some([(GATEWAY_REPLICA_LABEL.to_string(), "true".to_string())].into()),
                annotations: Some(
                    [(SERVING_ANNOTATION.to_string(), serde_json::to_string(&report).unwrap_or_default())].into(),
                ),
                owner_references: self.owner.clone().map(|o| vec![o]),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.lease_duration.as_secs().clamp(1, i32::MAX as u64) as i32),
                acquire_time: Some(acquired.clone()),
                renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
                ..Default::default()
            }),
        }
    }

    async fn write(&self, serving: &Serving, calls: CallsByHash, acquired: &MicroTime) -> Result<(), kube::Error> {
        let mut lease = serde_json::to_value(self.lease(serving, calls, acquired)).map_err(kube::Error::SerdeError)?;
        lease["apiVersion"] = "coordination.k8s.io/v1".into();
        lease["kind"] = "Lease".into();
        let params = PatchParams::apply(GATEWAY_FIELD_MANAGER).force();
        self.api.patch(&self.name, &params, &Patch::Apply(&lease)).await.map(|_| ())
    }
}

/// The replica's Pod as an owner, from the downward API (`POD_NAME`, `POD_UID`).
fn pod_owner() -> Option<OwnerReference> {
    let name = std::env::var("POD_NAME").ok().filter(|s| !s.is_empty())?;
    let uid = std::env::var("POD_UID").ok().filter(|s| !s.is_empty())?;
    Some(OwnerReference { api_version: "v1".into(), kind: "Pod".into(), name, uid, ..Default::default() })
}

/// Calls and failures per document hash under rollout.
type CallsByHash = BTreeMap<String, CallCounts>;

/// Keeps the report Lease until `stop` turns true, then deletes it. Every renewal carries the
/// calls and failures of the documents under rollout as `calls()` gives them then.
pub async fn report(
    reporter: Reporter,
    mut serving: watch::Receiver<Serving>,
    calls: impl Fn() -> CallsByHash,
    mut stop: watch::Receiver<bool>,
) {
    tokio::select! {
        loaded = serving.wait_for(|s| s.loaded) => if loaded.is_err() { return },
        _ = stop.wait_for(|s| *s) => return,
    }
    let acquired = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let mut last_error: Option<String> = None;
    info!(lease = %reporter.name, "reporting what this replica serves");
    loop {
        let current = serving.borrow_and_update().clone();
        match reporter.write(&current, calls(), &acquired).await {
            Ok(()) => {
                if last_error.take().is_some() {
                    info!(lease = %reporter.name, "report Lease written again");
                }
            }
            Err(e) => {
                if first_time(&mut last_error, e.to_string()) {
                    warn!(lease = %reporter.name, error = %e, "cannot write the report Lease");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(reporter.interval) => {}
            changed = serving.changed() => if changed.is_err() { break },
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    match reporter.api.delete(&reporter.name, &DeleteParams::default()).await {
        Ok(_) => info!(lease = %reporter.name, "report Lease released"),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => warn!(lease = %reporter.name, error = %e, "could not release the report Lease"),
    }
}
