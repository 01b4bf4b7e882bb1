//! The reconcile loop: gathers, applies, reports.
//!
//! `policy reconcile → validate → request target syncs → compute status → patch status`.
//! Target writes go through [`TargetWriter`], which coalesces every request for one ConfigMap
//! that arrives while a write is pending or running into a single server-side apply of the
//! complete set of operator-owned keys (a burst of N policy changes costs O(1) writes to the
//! target). What a target should hold is decided by the pure [`crate::target::plan_target`].
//!
//! The policy watch uses [`DeserializeGuard`], so an object that cannot be read (stored under
//! a looser CRD) becomes a per-object `ValidationFailed` status instead of stalling the watch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, future::join_all};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ApiResource, DynamicObject, ObjectMeta, Patch, PatchParams};
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::oneshot;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::api::{ImageVariationPolicy, ImageVariationPolicyStatus, TargetStatus};
use crate::metrics::Metrics;
use crate::render::{data_key, render_policy};
use crate::status::{Observation, READY, compute_status, status_changed};
use crate::target::{
    Content, ExistingTarget, FIELD_MANAGER, GATEWAY_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, Outcome, PolicyAtTarget,
    TargetKey, applied_configmap, plan_target,
};
use crate::validate::{Report, Violation, validate_object_name, validate_spec};

/// The finalizer that removes a policy's keys before the policy goes.
pub const FINALIZER: &str = "routerpolicy.io/cleanup";

type Policy = DeserializeGuard<ImageVariationPolicy>;

/// Reconcile errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("Kubernetes API error: {0}")]
    Kube(#[source] kube::Error),
    /// One or more target writes failed.
    #[error("writing targets failed: {0}")]
    Targets(String),
}

impl Error {
    /// Short label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "api_error",
            Error::Targets(_) => "target_error",
        }
    }
}

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespaces to watch for policies; empty means all.
    pub namespaces: Vec<String>,
    /// Maximum reconciles at once (0: unbounded).
    pub concurrency: u16,
    /// How long a target write waits to gather more requests.
    pub batch_window: Duration,
    /// Re-check interval for healthy policies.
    pub resync: Duration,
    /// Name of this instance, for events.
    pub instance: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            concurrency: 64,
            batch_window: Duration::from_millis(20),
            resync: Duration::from_secs(600),
            instance: None,
        }
    }
}

/// Shared state of the reconciler.
pub struct Context {
    client: Client,
    /// Namespaces to act in; empty means all.
    namespaces: Vec<String>,
    writer: Arc<TargetWriter>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    resync: Duration,
    /// Consecutive failures per policy (`namespace/name`), for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

/// The result of one target write, shared by every request it served.
#[derive(Clone, Debug)]
pub struct TargetResult {
    /// Outcome per policy (namespace, name).
    pub outcomes: BTreeMap<(String, String), Outcome>,
}

type SyncResult = Arc<Result<TargetResult, String>>;

#[derive(Default)]
struct Slot {
    waiters: Vec<oneshot::Sender<SyncResult>>,
    running: bool,
}

/// Writes gateway ConfigMaps: one server-side apply per batch of requests per target.
pub struct TargetWriter {
    client: Client,
    policies: Store<Policy>,
    metrics: Arc<Metrics>,
    window: Duration,
    slots: Mutex<HashMap<TargetKey, Slot>>,
    /// Data keys the operator owns in each ConfigMap it has seen (from watch events and its own
    /// applies): lets a deleted or retargeted policy find every ConfigMap that holds its key.
    owned: Mutex<HashMap<TargetKey, BTreeSet<String>>>,
}

impl TargetWriter {
    fn new(client: Client, policies: Store<Policy>, metrics: Arc<Metrics>, window: Duration) -> Self {
        Self { client, policies, metrics, window, slots: Mutex::default(), owned: Mutex::default() }
    }

    /// Requests a sync of `target` and waits for the batch that includes it.
    pub async fn sync(self: &Arc<Self>, target: TargetKey) -> SyncResult {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let slot = slots.entry(target.clone()).or_default();
            slot.waiters.push(tx);
            !std::mem::replace(&mut slot.running, true)
        };
        if start {
            let this = self.clone();
            tokio::spawn(async move { this.run(target).await });
        }
        rx.await.unwrap_or_else(|_| Arc::new(Err("target writer stopped".to_string())))
    }

    async fn run(self: Arc<Self>, target: TargetKey) {
        loop {
            tokio::time::sleep(self.window).await;
            let waiters = {
                let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
                let Some(slot) = slots.get_mut(&target) else {
                    return;
                };
                if slot.waiters.is_empty() {
                    slots.remove(&target);
                    return;
                }
                std::mem::take(&mut slot.waiters)
            };
            let result = Arc::new(self.sync_once(&target).await.map_err(|e| e.to_string()));
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
        }
    }

    /// Targets whose ConfigMap holds `key` as an operator-owned key.
    fn targets_holding(&self, key: &str) -> Vec<TargetKey> {
        let owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
        owned.iter().filter(|(_, keys)| keys.contains(key)).map(|(t, _)| t.clone()).collect()
    }

    fn record_owned(&self, target: &TargetKey, keys: Option<BTreeSet<String>>) {
        let mut owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
        match keys {
            Some(keys) if !keys.is_empty() => {
                owned.insert(target.clone(), keys);
            }
            _ => {
                owned.remove(target);
            }
        }
    }

    /// Notes what a watched ConfigMap holds.
    fn observe(&self, cm: &ConfigMap) {
        let target = TargetKey { namespace: cm.namespace().unwrap_or_default(), name: cm.name_any() };
        self.record_owned(&target, Some(owned_keys(cm)));
    }

    async fn sync_once(&self, target: &TargetKey) -> Result<TargetResult, kube::Error> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &target.namespace);
        let live = api.get_opt(&target.name).await?;
        let existing = live.as_ref().map(existing_target);
        let policies = policies_at(&self.policies.state(), target, existing.as_ref());
        let plan = plan_target(target, existing.as_ref(), &policies);

        if let Some(data) = &plan.apply
            && !plan.is_noop(existing.as_ref())
        {
            let cm = applied_configmap(target, data.clone(), &plan.config_hash);
            let params = PatchParams::apply(FIELD_MANAGER).force();
            match api.patch(&target.name, &params, &Patch::Apply(&cm)).await {
                Ok(_) => {}
                // A missing namespace with nothing to write there is not an error.
                Err(kube::Error::Api(e)) if e.code == 404 && data.is_empty() => {}
                Err(e) => return Err(e),
            }
            self.metrics.configmap_writes.inc();
            info!(target = %target, keys = data.len(), hash = %plan.config_hash, "applied gateway ConfigMap");
        } else {
            debug!(target = %target, "gateway ConfigMap already up to date");
        }
        self.record_owned(target, plan.apply.as_ref().map(|d| d.keys().cloned().collect()));
        Ok(TargetResult { outcomes: plan.outcomes })
    }
}

/// The data keys the operator's field manager owns in a ConfigMap (from `managedFields`).
pub fn owned_keys(cm: &ConfigMap) -> BTreeSet<String> {
    let mut owned = BTreeSet::new();
    for entry in cm.metadata.managed_fields.iter().flatten() {
        if entry.manager.as_deref() != Some(FIELD_MANAGER) || entry.operation.as_deref() != Some("Apply") {
            continue;
        }
        if let Some(data) = entry.fields_v1.as_ref().and_then(|f| f.0.get("f:data")).and_then(|d| d.as_object()) {
            owned.extend(data.keys().filter_map(|k| k.strip_prefix("f:")).map(str::to_string));
        }
    }
    owned
}

/// The view of a live ConfigMap that the planner needs, including the data keys owned by the
/// operator's field manager.
pub fn existing_target(cm: &ConfigMap) -> ExistingTarget {
    ExistingTarget {
        labels: cm.metadata.labels.clone().unwrap_or_default(),
        annotations: cm.metadata.annotations.clone().unwrap_or_default(),
        data: cm.data.clone().unwrap_or_default(),
        binary_bytes: cm.binary_data.iter().flatten().map(|(k, v)| k.len() + v.0.len()).sum(),
        owned_keys: owned_keys(cm),
    }
}

/// The resolved, de-duplicated targets of a policy spec.
pub fn spec_targets(policy: &ImageVariationPolicy) -> Vec<TargetKey> {
    let namespace = policy.namespace().unwrap_or_default();
    let mut seen = BTreeSet::new();
    policy
        .spec
        .target_refs
        .iter()
        .map(|t| TargetKey { namespace: t.resolved_namespace(&namespace).to_string(), name: t.name.clone() })
        .filter(|t| seen.insert(t.clone()))
        .collect()
}

/// Whether the policy's spec names `target` (without allocating: this runs for every policy
/// in the store on every target sync and every ConfigMap event).
pub fn aims_at(policy: &ImageVariationPolicy, target: &TargetKey) -> bool {
    let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
    policy.spec.target_refs.iter().any(|t| t.name == target.name && t.resolved_namespace(namespace) == target.namespace)
}

/// Validates a policy: the object name and the spec.
pub fn check_policy(policy: &ImageVariationPolicy) -> Report {
    let namespace = policy.namespace().unwrap_or_default();
    let mut report = validate_spec(&policy.spec, &namespace);
    report.errors.splice(0..0, validate_object_name(&policy.name_any(), &namespace));
    report
}

/// Every live policy that wants something in `target`: valid ones that name it in their spec
/// (their document), invalid ones whose key it already holds (keep the last good one).
fn policies_at(all: &[Arc<Policy>], target: &TargetKey, existing: Option<&ExistingTarget>) -> Vec<PolicyAtTarget> {
    let holds = |key: &str| existing.is_some_and(|e| e.owned_keys.contains(key));
    let mut out = Vec::new();
    for guard in all {
        match &guard.0 {
            Ok(policy) => {
                if policy.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let namespace = policy.namespace().unwrap_or_default();
                let name = policy.name_any();
                let key = data_key(&namespace, &name);
                // Cheap checks first: most policies in the store aim elsewhere.
                let aims_here = aims_at(policy, target);
                if !aims_here && !holds(&key) {
                    continue;
                }
                let content = if check_policy(policy).is_valid() {
                    if !aims_here {
                        continue;
                    }
                    Content::Document(render_policy(&namespace, &name, &policy.spec).json)
                } else if holds(&key) {
                    Content::KeepLastGood
                } else {
                    continue;
                };
                out.push(PolicyAtTarget { namespace, name, key, content });
            }
            Err(invalid) => {
                if invalid.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let namespace = invalid.metadata.namespace.clone().unwrap_or_default();
                let name = invalid.metadata.name.clone().unwrap_or_default();
                let key = data_key(&namespace, &name);
                if holds(&key) {
                    out.push(PolicyAtTarget { namespace, name, key, content: Content::KeepLastGood });
                }
            }
        }
    }
    out
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

fn policy_api_resource() -> ApiResource {
    ApiResource::erase::<ImageVariationPolicy>(&())
}

fn dynamic_api(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &policy_api_resource())
}

fn object_reference(meta: &ObjectMeta) -> k8s_openapi::api::core::v1::ObjectReference {
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(ImageVariationPolicy::api_version(&()).to_string()),
        kind: Some(ImageVariationPolicy::kind(&()).to_string()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..Default::default()
    }
}

impl Context {
    async fn event(&self, meta: &ObjectMeta, type_: EventType, reason: &str, note: String) {
        let event = KubeEvent {
            type_,
            reason: reason.to_string(),
            note: Some(note.chars().take(1024).collect()),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &object_reference(meta)).await {
            warn!(error = %e, "could not publish event");
        }
    }

    async fn write_status(&self, meta: &ObjectMeta, status: &ImageVariationPolicyStatus) -> Result<(), Error> {
        let namespace = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let patch = json!({
            "apiVersion": ImageVariationPolicy::api_version(&()),
            "kind": ImageVariationPolicy::kind(&()),
            "status": status,
        });
        dynamic_api(&self.client, &namespace)
            .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
            .map_err(Error::Kube)?;
        Ok(())
    }

    /// Sets or removes the finalizer with a merge patch guarded by resourceVersion.
    async fn set_finalizers(&self, meta: &ObjectMeta, finalizers: Vec<String>) -> Result<(), Error> {
        let namespace = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": meta.resource_version}});
        match dynamic_api(&self.client, &namespace).patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(()),
            // Gone, or changed since we read it: the newer version arrives as a watch event
            // and is reconciled from scratch.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(Error::Kube(e)),
        }
    }

    async fn sync_all(&self, targets: &[TargetKey]) -> Vec<(TargetKey, SyncResult)> {
        let results = join_all(targets.iter().map(|t| self.writer.sync(t.clone()))).await;
        targets.iter().cloned().zip(results).collect()
    }
}

/// Reconciles one policy.
pub async fn reconcile(guard: Arc<Policy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let meta = match &guard.0 {
        Ok(p) => p.metadata.clone(),
        Err(invalid) => invalid.metadata.clone(),
    };
    let namespace = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let span = info_span!("reconcile", namespace = %namespace, name = %name);
    async move {
        ctx.metrics.in_flight.inc();
        let started = Instant::now();
        let result = reconcile_inner(&guard, &meta, &ctx).await;
        ctx.metrics.in_flight.dec();
        let outcome = match &result {
            Ok(_) => {
                ctx.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&format!("{namespace}/{name}"));
                "success"
            }
            Err(e) => e.category(),
        };
        ctx.metrics.reconciled(outcome, started.elapsed().as_secs_f64());
        result
    }
    .instrument(span)
    .await
}

async fn reconcile_inner(guard: &Policy, meta: &ObjectMeta, ctx: &Context) -> Result<Action, Error> {
    let namespace = meta.namespace.clone().unwrap_or_default();
    if !ctx.namespaces.is_empty() && !ctx.namespaces.contains(&namespace) {
        return Ok(Action::await_change());
    }
    let name = meta.name.clone().unwrap_or_default();
    let key = data_key(&namespace, &name);
    let policy_id = format!("{namespace}/{name}");
    let finalizers = meta.finalizers.clone().unwrap_or_default();
    let has_finalizer = finalizers.iter().any(|f| f == FINALIZER);
    debug!(deleting = meta.deletion_timestamp.is_some(), has_finalizer, generation = ?meta.generation, "reconciling");

    if meta.deletion_timestamp.is_some() {
        if !has_finalizer {
            return Ok(Action::await_change());
        }
        // Cleanup: every ConfigMap that holds the key or that the spec names drops the key
        // (the planner leaves out policies being deleted). A missing target is fine.
        let mut targets: BTreeSet<TargetKey> = ctx.writer.targets_holding(&key).into_iter().collect();
        if let Ok(policy) = &guard.0 {
            targets.extend(spec_targets(policy));
            targets.extend(status_targets(policy.status.as_ref()));
        }
        let targets: Vec<_> = targets.into_iter().collect();
        let failures: Vec<String> = ctx
            .sync_all(&targets)
            .await
            .into_iter()
            .filter_map(|(t, r)| r.as_ref().as_ref().err().map(|e| format!("{t}: {e}")))
            .collect();
        if !failures.is_empty() {
            return Err(Error::Targets(failures.join("; ")));
        }
        let remaining = finalizers.into_iter().filter(|f| f != FINALIZER).collect();
        ctx.set_finalizers(meta, remaining).await?;
        ctx.metrics.set_ready(&policy_id, None);
        info!(targets = targets.len(), "policy deleted; its keys were removed from its targets");
        return Ok(Action::await_change());
    }

    if !has_finalizer {
        let mut with = finalizers;
        with.push(FINALIZER.to_string());
        ctx.set_finalizers(meta, with).await?;
        // The patch triggers another reconcile with the finalizer in place.
        return Ok(Action::await_change());
    }

    let policy = match &guard.0 {
        Ok(policy) => policy,
        Err(invalid) => {
            // Unreadable object: its last good document stays wherever it is.
            let report = Report {
                errors: vec![Violation::new("spec", format!("cannot be read: {}", invalid.error))],
                warnings: vec![],
            };
            let previous = read_status(ctx, meta).await;
            let observation = Observation {
                generation: meta.generation,
                report,
                config_hash: None,
                targets: retained_targets(previous.as_ref(), &ctx.writer, &key),
            };
            let status = compute_status(&observation, previous.as_ref(), &now());
            if status_changed(previous.as_ref(), &status) {
                ctx.write_status(meta, &status).await?;
                ctx.event(meta, EventType::Warning, "ValidationFailed", observation.report.errors_summary()).await;
            }
            ctx.metrics.set_ready(&policy_id, Some("false"));
            return Ok(Action::await_change());
        }
    };

    let report = check_policy(policy);
    let previous = policy.status.clone();
    let observation = if report.is_valid() {
        let document = render_policy(&namespace, &name, &policy.spec);
        let wanted = spec_targets(policy);
        // Also sync targets the policy has left, so they drop its key.
        let mut all: BTreeSet<TargetKey> = wanted.iter().cloned().collect();
        all.extend(ctx.writer.targets_holding(&key));
        all.extend(status_targets(previous.as_ref()));
        let all: Vec<_> = all.into_iter().collect();
        let results: BTreeMap<TargetKey, SyncResult> = ctx.sync_all(&all).await.into_iter().collect();
        let id = (namespace.clone(), name.clone());
        let targets = wanted
            .iter()
            .map(|t| {
                let (synced, reason, message) = match results.get(t).map(|r| r.as_ref()) {
                    Some(Ok(result)) => match result.outcomes.get(&id) {
                        Some(Outcome::Synced) => (true, "Synced".to_string(), String::new()),
                        Some(other) => (false, other.reason().to_string(), outcome_message(other)),
                        None => (
                            false,
                            "ApplyFailed".to_string(),
                            "the target's plan did not include this policy".to_string(),
                        ),
                    },
                    Some(Err(e)) => (false, "ApplyFailed".to_string(), e.clone()),
                    None => (false, "ApplyFailed".to_string(), "not synced".to_string()),
                };
                TargetStatus {
                    namespace: t.namespace.clone(),
                    name: t.name.clone(),
                    key: key.clone(),
                    synced,
                    reason,
                    message,
                }
            })
            .collect();
        Observation { generation: meta.generation, report, config_hash: Some(document.hash), targets }
    } else {
        Observation {
            generation: meta.generation,
            config_hash: None,
            targets: retained_targets(previous.as_ref(), &ctx.writer, &key),
            report,
        }
    };

    let status = compute_status(&observation, previous.as_ref(), &now());
    let ready = status.conditions.iter().find(|c| c.type_ == READY).map(|c| c.status == "True").unwrap_or(false);
    ctx.metrics.set_ready(&policy_id, Some(if ready { "true" } else { "false" }));
    if status_changed(previous.as_ref(), &status) {
        ctx.write_status(meta, &status).await?;
        publish_transition_events(ctx, meta, previous.as_ref(), &status, &observation).await;
    }

    let transient: Vec<_> = observation
        .targets
        .iter()
        .filter(|t| t.reason == "ApplyFailed")
        .map(|t| format!("{}/{}: {}", t.namespace, t.name, t.message))
        .collect();
    if !transient.is_empty() {
        return Err(Error::Targets(transient.join("; ")));
    }
    if !observation.report.is_valid() {
        return Ok(Action::await_change());
    }
    Ok(Action::requeue(ctx.resync))
}

fn outcome_message(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Synced => String::new(),
        Outcome::Retained { has_last_good: true } => "invalid spec; the last good document stays".to_string(),
        Outcome::Retained { has_last_good: false } => "invalid spec; no earlier document to keep".to_string(),
        Outcome::RefNotPermitted(m) | Outcome::TargetNotManaged(m) | Outcome::TargetFull(m) => m.clone(),
    }
}

fn status_targets(status: Option<&ImageVariationPolicyStatus>) -> Vec<TargetKey> {
    status
        .map(|s| s.targets.iter().map(|t| TargetKey { namespace: t.namespace.clone(), name: t.name.clone() }).collect())
        .unwrap_or_default()
}

/// Per-target status of an invalid policy: the targets that still hold its last good
/// document (from the writer's index), or those of the previous status.
fn retained_targets(
    previous: Option<&ImageVariationPolicyStatus>,
    writer: &TargetWriter,
    key: &str,
) -> Vec<TargetStatus> {
    let holding: BTreeSet<TargetKey> = writer.targets_holding(key).into_iter().collect();
    let mut targets: BTreeSet<TargetKey> = holding.clone();
    targets.extend(status_targets(previous));
    targets
        .into_iter()
        .map(|t| {
            let kept = holding.contains(&t)
                || previous.is_some_and(|p| {
                    p.targets.iter().any(|s| {
                        s.namespace == t.namespace && s.name == t.name && (s.synced || s.message.contains("last good"))
                    })
                });
            TargetStatus {
                namespace: t.namespace,
                name: t.name,
                key: key.to_string(),
                synced: false,
                reason: "ValidationFailed".to_string(),
                message: if kept {
                    "invalid spec; the last good document stays".to_string()
                } else {
                    "invalid spec; no earlier document to keep".to_string()
                },
            }
        })
        .collect()
}

async fn read_status(ctx: &Context, meta: &ObjectMeta) -> Option<ImageVariationPolicyStatus> {
    let api = dynamic_api(&ctx.client, meta.namespace.as_deref().unwrap_or_default());
    let obj = api.get_status(meta.name.as_deref().unwrap_or_default()).await.ok()?;
    obj.data.get("status").and_then(|s| serde_json::from_value(s.clone()).ok())
}

async fn publish_transition_events(
    ctx: &Context,
    meta: &ObjectMeta,
    previous: Option<&ImageVariationPolicyStatus>,
    status: &ImageVariationPolicyStatus,
    observation: &Observation,
) {
    let report = &observation.report;
    if !report.is_valid() {
        ctx.event(meta, EventType::Warning, "ValidationFailed", report.errors_summary()).await;
        return;
    }
    let previous_targets = previous.map(|p| p.targets.clone()).unwrap_or_default();
    for t in &status.targets {
        if t.synced || previous_targets.contains(t) {
            continue;
        }
        let reason = match t.reason.as_str() {
            "RefNotPermitted" | "TargetNotManaged" | "TargetFull" => t.reason.clone(),
            _ => "ApplyFailed".to_string(),
        };
        ctx.event(meta, EventType::Warning, &reason, format!("{}/{}: {}", t.namespace, t.name, t.message)).await;
    }
    if let Some(deprecated) = report.warnings.iter().find(|w| w.path == "spec.contact") {
        let already =
            previous.is_some_and(|p| p.conditions.iter().any(|c| c.message.contains("spec.contact: is deprecated")));
        if !already {
            ctx.event(meta, EventType::Warning, "DeprecatedField", deprecated.to_string()).await;
        }
    }
    let all_synced = status.targets.iter().all(|t| t.synced);
    let hash_changed = previous.and_then(|p| p.config_hash.clone()) != status.config_hash;
    let newly_synced = status.targets.iter().any(|t| {
        t.synced && !previous_targets.iter().any(|p| p.namespace == t.namespace && p.name == t.name && p.synced)
    });
    if all_synced && (hash_changed || newly_synced) {
        ctx.event(
            meta,
            EventType::Normal,
            "Synced",
            format!(
                "document {} written to {} target(s)",
                status.config_hash.as_deref().unwrap_or("-"),
                status.targets.len()
            ),
        )
        .await;
    }
}

/// Delay before retry number `failures` (1-based): 1 s, 2 s, 4 s, … capped at 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(8)).min(Duration::from_secs(300))
}

/// What to do after a failed reconcile. Invalid specs never get here (they are reported in
/// status and wait for a change); API and write errors retry with exponential backoff.
pub fn error_policy(guard: Arc<Policy>, error: &Error, ctx: Arc<Context>) -> Action {
    let meta = match &guard.0 {
        Ok(p) => &p.metadata,
        Err(i) => &i.metadata,
    };
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    let name = meta.name.as_deref().unwrap_or_default();
    let failures = {
        let mut map = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(format!("{namespace}/{name}")).or_insert(0);
        *n += 1;
        *n
    };
    let delay = backoff(failures);
    warn!(namespace, name, error = %error, failures, retry_in = ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// The ConfigMap → policies mapping for the ConfigMap watches: every policy that names the
/// ConfigMap, or whose key it holds.
fn configmap_mapper(
    store: Store<Policy>,
    writer: Arc<TargetWriter>,
) -> impl Fn(ConfigMap) -> Vec<ObjectRef<Policy>> + Send + Sync + 'static {
    move |cm: ConfigMap| {
        writer.observe(&cm);
        let target = TargetKey { namespace: cm.namespace().unwrap_or_default(), name: cm.name_any() };
        let keys: BTreeSet<&String> = cm.data.as_ref().map(|d| d.keys().collect()).unwrap_or_default();
        store
            .state()
            .iter()
            .filter(|guard| match &guard.0 {
                Ok(p) => {
                    aims_at(p, &target) || keys.contains(&data_key(&p.namespace().unwrap_or_default(), &p.name_any()))
                }
                Err(i) => keys.contains(&data_key(
                    i.metadata.namespace.as_deref().unwrap_or_default(),
                    i.metadata.name.as_deref().unwrap_or_default(),
                )),
            })
            .map(|guard| ObjectRef::from_obj(guard.as_ref()))
            .collect()
    }
}

/// Builds and runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let policies: Api<Policy> = match settings.namespaces.as_slice() {
        [one] => Api::namespaced(client.clone(), one),
        _ => Api::all(client.clone()),
    };
    let wc = watcher::Config::default().any_semantic();
    let controller = Controller::new(policies, wc.clone())
        .with_config(ControllerConfig::default().concurrency(settings.concurrency));
    let store = controller.store();
    let writer = Arc::new(TargetWriter::new(client.clone(), store.clone(), metrics.clone(), settings.batch_window));
    let recorder = Recorder::new(
        client.clone(),
        Reporter { controller: "routerpolicy".to_string(), instance: settings.instance.clone() },
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        namespaces: settings.namespaces.clone(),
        writer: writer.clone(),
        recorder,
        metrics,
        resync: settings.resync,
        failures: Mutex::default(),
    });
    let configmaps: Api<ConfigMap> = Api::all(client.clone());
    controller
        // ConfigMaps the operator wrote: drift (hand edits, deleted keys, a deleted ConfigMap)
        // is repaired by re-reconciling the policies that live there.
        .watches(
            configmaps.clone(),
            wc.clone().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")),
            configmap_mapper(store.clone(), writer.clone()),
        )
        // Gateway ConfigMaps opted in by their owners: consent given or withdrawn takes effect.
        .watches(configmaps, wc.labels(&format!("{GATEWAY_LABEL}=true")), configmap_mapper(store, writer))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "controller event");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_and_is_capped() {
        let delays: Vec<u64> = (1..=12).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 256, 256, 256]);
        assert!(backoff(u32::MAX) <= Duration::from_secs(300));
    }
}
