//! Status writer: computes a policy's status from the index once every target has an outcome
//! for its current spec, writes it (server-side apply of the status subresource) only when it
//! changed, and publishes the events its transitions call for.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Client, Resource};
use serde_json::json;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::api::{ImageVariationPolicy, ImageVariationPolicyStatus};
use crate::key::PolicyKey;
use crate::operator::controller::{Controller, now_ms};
use crate::operator::decode::policy_api;
use crate::operator::events::EventReason;
use crate::operator::index::PolicyEntry;
use crate::operator::metrics::Readiness;
use crate::operator::served::Serve;
use crate::operator::status::{READY, StatusInput, StatusMemo, compute_status};
use crate::rollout::ACTION_ANNOTATION;
use crate::target::configmap::FIELD_MANAGER;

/// How often a progressing rollout is judged again at most (the replicas' counts arrive with
/// their report renewals).
const ROLLOUT_LOOK_EVERY: Duration = Duration::from_secs(1);

impl Controller {
    /// Computes, and writes when changed, the status of `key`; a failed write is retried
    /// after a backoff.
    pub(super) async fn reconcile_status(self: &Arc<Self>, key: &PolicyKey) {
        let now = now_ms();
        self.act_on_rollout(key, now);
        let stale_after = self.settings.serve_stale_after.as_millis() as i64;
        let Some((input, previous, reference, readable)) = ({
            let index = self.index();
            index.status_input(key, now, stale_after).and_then(|input| {
                let entry = index.policy(key)?;
                Some((input, entry.status.clone(), policy_reference(entry), entry.readable))
            })
        }) else {
            return; // gone, or not every target planned yet
        };
        if self.wait_for_replicas(key, &input, now) {
            return;
        }
        let span = info_span!("status", namespace = %key.namespace, name = %key.name);
        async {
            // An unreadable object's status is not in the watch event: read it once.
            let previous = match previous {
                None if !readable => read_status(&self.client, key).await.map(|s| StatusMemo::of(&s, false)),
                other => other,
            };
            let status = compute_status(&input, previous.as_ref().map(StatusMemo::as_previous).as_ref(), &time_now());
            let ready = status.conditions.iter().any(|c| c.type_ == READY && c.status == "True");
            self.metrics.set_ready(key, Some(if ready { Readiness::Ready } else { Readiness::NotReady }));
            if previous.as_ref().is_some_and(|memo| !memo.changed(&status)) {
                return;
            }
            if !self.may_write() {
                return;
            }
            match write_status(&self.client, key, &status).await {
                Ok(()) => {
                    self.metrics.status_writes.inc();
                    debug!(policy = %key, "wrote status");
                    self.index().wrote_status(key, &status);
                    self.statuses.succeeded(key);
                    self.publish_transitions(reference, previous.as_ref(), &status, &input);
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(error) => {
                    let retry_in = self.statuses.retry_later(key.clone());
                    warn!(%error, ?retry_in, "writing status failed; retrying");
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Judges the policy's rollout (docs/rollouts.md) and does what the judgement says: the
    /// targets whose content changes are re-planned, its Event is published, a handled action
    /// annotation is removed, and a progressing rollout is looked at again (at its pause's end,
    /// and every [`ROLLOUT_LOOK_EVERY`] for the replicas' new counts).
    fn act_on_rollout(self: &Arc<Self>, key: &PolicyKey, now: i64) {
        let (judged, reference) = {
            let mut index = self.index();
            let judged = index.judge_rollout(key, now);
            (judged, index.policy(key).map(policy_reference))
        };
        if let Some(again) = judged.again_in_ms {
            let wait = Duration::from_millis(again.max(0) as u64).min(ROLLOUT_LOOK_EVERY);
            self.statuses.add_after(key.clone(), wait.max(Duration::from_millis(50)));
        }
        if !judged.replan.is_empty() {
            self.targets.add_all(judged.replan);
        }
        if let (Some((reason, note)), Some(reference)) = (judged.event, reference)
            && self.may_write()
        {
            info!(policy = %key, reason = reason.as_str(), %note, "rollout");
            self.events.publish(reference, reason, note);
        }
        if judged.clear_action && self.may_write() {
            let (client, key) = (self.client.clone(), key.clone());
            tokio::spawn(async move {
                let patch = json!({"metadata": {"annotations": {ACTION_ANNOTATION: null}}});
                let api = policy_api(&client, &key.namespace);
                if let Err(error) = api.patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    warn!(policy = %key, %error, "could not remove the rollout-action annotation");
                }
            });
        }
    }

    /// While gateway replicas have not loaded a new document: within `serve_wait` of its
    /// landing the status is not written yet (true; it is looked at again when a report
    /// arrives, or when the wait is over), so the common case is one write with `Served` in
    /// it; after that it is written as pending and looked at again when it would turn stale.
    fn wait_for_replicas(self: &Arc<Self>, key: &PolicyKey, input: &StatusInput, now: i64) -> bool {
        let Some(since) = input
            .serves
            .iter()
            .filter_map(|s| match s {
                Serve::Pending { since_ms, .. } => Some(*since_ms),
                _ => None,
            })
            .min()
        else {
            return false;
        };
        let waited = now.saturating_sub(since).max(0) as u64;
        let wait = self.settings.serve_wait.as_millis() as u64;
        if waited < wait {
            self.statuses.add_after(key.clone(), Duration::from_millis(wait - waited));
            return true;
        }
        let stale = self.settings.serve_stale_after.as_millis() as u64;
        self.statuses.add_after(key.clone(), Duration::from_millis(stale.saturating_sub(waited) + 50));
        false
    }

    /// Events for what changed: Warning on validation failures, refused or full targets and
    /// failed writes, and on deprecated fields; Normal `Synced` for a new document.
    fn publish_transitions(
        &self,
        regarding: ObjectReference,
        previous: Option<&StatusMemo>,
        status: &ImageVariationPolicyStatus,
        input: &StatusInput,
    ) {
        let findings = &input.findings;
        if !findings.is_valid() {
            self.events.publish(regarding, EventReason::ValidationFailed, findings.errors_summary());
            return;
        }
        for t in &status.targets {
            // A rollback has its own Event, naming why.
            if t.synced || t.reason == crate::api::TargetReason::RolledBack || previous.is_some_and(|p| p.had_target(t))
            {
                continue;
            }
            let note = format!("{}/{}: {}", t.namespace, t.name, t.message);
            self.events.publish(regarding.clone(), EventReason::of_target(t.reason), note);
        }
        if let Some(deprecated) = findings.deprecation()
            && !previous.is_some_and(StatusMemo::deprecation_shown)
        {
            self.events.publish(regarding.clone(), EventReason::DeprecatedField, deprecated.to_string());
        }
        let all_synced = status.targets.iter().all(|t| t.synced);
        let hash_changed = previous.and_then(StatusMemo::config_hash) != status.config_hash.as_deref();
        let newly_synced = status.targets.iter().any(|t| t.synced && !previous.is_some_and(|p| p.was_synced(t)));
        if all_synced && (hash_changed || newly_synced) {
            let hash = status.config_hash.as_deref().unwrap_or("-");
            let note = format!("document {hash} written to {} target(s)", status.targets.len());
            self.events.publish(regarding, EventReason::Synced, note);
        }
    }
}

fn policy_reference(entry: &PolicyEntry) -> ObjectReference {
    ObjectReference {
        api_version: Some(ImageVariationPolicy::api_version(&()).to_string()),
        kind: Some(ImageVariationPolicy::kind(&()).to_string()),
        name: Some(entry.key.name.to_string()),
        namespace: Some(entry.key.namespace.to_string()),
        uid: entry.uid.clone(),
        resource_version: entry.resource_version.clone(),
        ..Default::default()
    }
}

async fn read_status(client: &Client, key: &PolicyKey) -> Option<ImageVariationPolicyStatus> {
    let obj = policy_api(client, &key.namespace).get_status(&key.name).await.ok()?;
    obj.data.get("status").and_then(|s| serde_json::from_value(s.clone()).ok())
}

async fn write_status(
    client: &Client,
    key: &PolicyKey,
    status: &ImageVariationPolicyStatus,
) -> Result<(), kube::Error> {
    let patch = json!({
        "apiVersion": ImageVariationPolicy::api_version(&()),
        "kind": ImageVariationPolicy::kind(&()),
        "status": status,
    });
    let request = kube::core::Request::new(ImageVariationPolicy::url_path(&(), Some(&key.namespace)))
        .patch_subresource("status", &key.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .map_err(kube::Error::BuildRequest)?;
    // The answer (the whole object, managedFields included) is not decoded: the policy watch
    // brings the object, slim, and a failure still comes back as `kube::Error::Api`.
    client.request_text(request).await.map(|_| ())
}

fn time_now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}
