//! The controller: watch events → [`Index`] → computed writes. The imperative shell.
//!
//! ```text
//! policy watch(es) ──┐                      ┌─▶ target queue ─▶ plan_target ─▶ ConfigMap apply
//!                    ├─▶ Index (pure) ──────┤                          │ outcomes
//! ConfigMap watches ─┘  touched targets     └─▶ status queue ◀─────────┘ ─▶ status apply, events
//! ```
//!
//! - **Watches** feed the [`Index`]: policies (one watch per namespace of `--namespaces`, or
//!   one cluster-wide) and the two label-selected ConfigMap watches (written by the operator;
//!   opted in by a gateway owner). Each policy is validated and rendered once per change;
//!   each ConfigMap is reduced to the [`ExistingTarget`] view before it is kept.
//! - **Targets are reconciled as targets.** An event schedules exactly the targets it touches;
//!   the target queue coalesces requests (a target is never planned twice at once, and a
//!   target that keeps being touched waits for a quiet moment, up to a bound), so a burst of
//!   N edits to one ConfigMap costs O(1) applies. The pure [`plan_target`] decides.
//! - **Status from outcomes.** A plan records a typed [`crate::target::Outcome`] per policy;
//!   once every target of a policy has one for its current spec, the status queue computes
//!   its status and writes it only when it changed. The echo of that write changes nothing
//!   in the index, so it causes no further work.
//! - **No finalizer.** Deletion is level-triggered: a deleted policy leaves the index and the
//!   targets that named it or hold its key are re-planned without it. Nothing is written
//!   before every watch has delivered its first complete list; then every known target is
//!   re-planned once, which prunes keys of policies deleted while no operator ran. Objects
//!   that still carry the legacy `routerpolicy.io/cleanup` finalizer get it removed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{BoxStream, SelectAll};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{ApiResource, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde_json::json;
use tokio::sync::{Notify, Semaphore, mpsc, watch as signal};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::api::{ImageVariationPolicy, ImageVariationPolicyStatus, TargetReason};
use crate::index::{Boundary, Index, ObservedPolicy};
use crate::metrics::Metrics;
use crate::render::data_key;
use crate::status::{Observation, READY, StatusMemo, compute_status};
use crate::target::{ExistingTarget, FIELD_MANAGER, GATEWAY_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, TargetKey};
use crate::target::{applied_configmap, plan_target};

/// The finalizer earlier versions added to every policy; removed wherever it is found.
pub const LEGACY_FINALIZER: &str = "routerpolicy.io/cleanup";

/// Bit of the ConfigMap watch on [`MANAGED_BY_LABEL`].
const MANAGED_WATCH: u8 = 1;
/// Bit of the ConfigMap watch on [`GATEWAY_LABEL`].
const GATEWAY_WATCH: u8 = 2;

type Policy = crate::watched::WatchedPolicy;

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespaces to watch for policies; empty means all.
    pub namespaces: Vec<String>,
    /// Maximum target plans, and status writes, at once.
    pub concurrency: u16,
    /// A target that is touched again within this time waits for quiet before it is planned.
    pub batch_window: Duration,
    /// The longest a target waits for quiet.
    pub batch_max: Duration,
    /// Every this often every target is re-planned (a safety net; no-op plans write nothing).
    pub resync: Duration,
    /// Name of this instance, for events.
    pub instance: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            concurrency: 32,
            batch_window: Duration::from_millis(8),
            batch_max: Duration::from_millis(200),
            resync: Duration::from_secs(300),
            instance: None,
        }
    }
}

/// Delay before retry number `failures` (1-based): 1 s, 2 s, 4 s, … capped at 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(8)).min(Duration::from_secs(300))
}

/// A de-duplicating work queue: an item is queued at most once and processed by one worker
/// at a time; touching an item while it is processed queues it again afterwards.
struct WorkQueue<K> {
    state: Mutex<QueueState<K>>,
    notify: Notify,
    pending: prometheus_client::metrics::gauge::Gauge,
}

struct QueueState<K> {
    order: VecDeque<K>,
    queued: HashSet<K>,
    /// Items being processed, with the number of touches since they were taken.
    running: HashMap<K, u64>,
    failures: HashMap<K, u32>,
}

impl<K: Clone + Eq + Hash> WorkQueue<K> {
    fn new(pending: prometheus_client::metrics::gauge::Gauge) -> Self {
        WorkQueue {
            state: Mutex::new(QueueState {
                order: VecDeque::new(),
                queued: HashSet::new(),
                running: HashMap::new(),
                failures: HashMap::new(),
            }),
            notify: Notify::new(),
            pending,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState<K>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish_depth(&self, state: &QueueState<K>) {
        self.pending.set((state.queued.len() + state.running.len()) as i64);
    }

    fn add(&self, item: K) {
        let mut state = self.lock();
        if let Some(touches) = state.running.get_mut(&item) {
            *touches += 1;
            return;
        }
        if state.queued.insert(item.clone()) {
            state.order.push_back(item);
            self.publish_depth(&state);
            drop(state);
            self.notify.notify_one();
        }
    }

    fn add_all(&self, items: impl IntoIterator<Item = K>) {
        for item in items {
            self.add(item);
        }
    }

    /// The next item, or `None` once `stop` fires.
    async fn next(&self, stop: &mut signal::Receiver<bool>) -> Option<K> {
        loop {
            let notified = self.notify.notified();
            {
                let mut state = self.lock();
                if let Some(item) = state.order.pop_front() {
                    state.queued.remove(&item);
                    state.running.insert(item.clone(), 0);
                    let more = !state.order.is_empty();
                    drop(state);
                    if more {
                        self.notify.notify_one();
                    }
                    return Some(item);
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = stop.wait_for(|s| *s) => return None,
            }
        }
    }

    /// Touches of a running item since it was taken (or since [`WorkQueue::settle`]).
    fn touches(&self, item: &K) -> u64 {
        self.lock().running.get(item).copied().unwrap_or(0)
    }

    /// The worker is about to read the index: every touch so far will be seen.
    fn settle(&self, item: &K) {
        if let Some(touches) = self.lock().running.get_mut(item) {
            *touches = 0;
        }
    }

    /// The worker is done with `item`; touched meanwhile → queued again.
    fn done(&self, item: &K) {
        let again = {
            let mut state = self.lock();
            let touches = state.running.remove(item).unwrap_or(0);
            self.publish_depth(&state);
            touches > 0
        };
        if again {
            self.add(item.clone());
        }
    }

    /// Records a success (`None`) or a failure; on failure returns the delay before retry.
    fn outcome(&self, item: &K, failed: bool) -> Option<Duration> {
        let mut state = self.lock();
        if failed {
            let n = state.failures.entry(item.clone()).or_insert(0);
            *n += 1;
            Some(backoff(*n))
        } else {
            state.failures.remove(item);
            None
        }
    }
}

/// An event to publish on a policy.
struct PolicyEvent {
    regarding: ObjectReference,
    warning: bool,
    reason: String,
    note: String,
}

/// The controller's shared state.
struct Shared {
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    index: Mutex<Index>,
    targets: WorkQueue<TargetKey>,
    statuses: WorkQueue<String>,
    events: mpsc::Sender<PolicyEvent>,
    finalizer_slots: Arc<Semaphore>,
}

impl Shared {
    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Schedules the targets that concern this instance: named by a watched policy, or
    /// holding an operator key of a watched namespace.
    fn schedule(&self, targets: impl IntoIterator<Item = TargetKey>) {
        let concerned: Vec<TargetKey> = {
            let index = self.index();
            targets.into_iter().filter(|t| index.concerns(t)).collect()
        };
        self.targets.add_all(concerned);
    }

    /// Runs `then` after `delay` (a retry with backoff), without holding up the caller.
    fn after(self: &Arc<Self>, delay: Duration, then: impl FnOnce(&Shared) + Send + 'static) {
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            then(&this);
        });
    }

    fn publish(&self, regarding: ObjectReference, warning: bool, reason: &str, note: String) {
        let event = PolicyEvent { regarding, warning, reason: reason.to_string(), note };
        if self.events.try_send(event).is_err() {
            self.metrics.events_dropped.inc();
            debug!("event queue full; dropping an event");
        }
    }

    // ---- watch events → index -------------------------------------------------------------

    fn on_policy(self: &Arc<Self>, guard: Policy) {
        let (observed, finalizers) = observe_policy(guard);
        let meta = (observed.namespace.clone(), observed.name.clone(), observed.resource_version.clone());
        let touched = self.index().apply_policy(observed);
        if touched.removed {
            self.metrics.set_ready(&format!("{}/{}", meta.0, meta.1), None);
        }
        if touched.legacy_finalizer {
            self.remove_legacy_finalizer(meta.0, meta.1, meta.2, finalizers);
        }
        self.schedule(touched.targets);
    }

    fn on_policy_gone(&self, key: &str) {
        let touched = self.index().delete_policy(key);
        if let Some((namespace, rest)) = key.split_once('.') {
            self.metrics.set_ready(&format!("{namespace}/{}", rest.trim_end_matches(".json")), None);
        }
        self.schedule(touched.targets);
    }

    fn on_configmap(&self, watch: u8, cm: &ConfigMap) {
        let target = configmap_target(cm);
        let view = ExistingTarget::observe(cm);
        if self.index().apply_target(watch, &target, view, cm.metadata.resource_version.clone()) {
            self.schedule([target]);
        }
    }

    fn on_configmap_gone(&self, watch: u8, target: TargetKey) {
        if self.index().delete_target(watch, &target) {
            self.schedule([target]);
        }
    }

    fn remove_legacy_finalizer(
        self: &Arc<Self>,
        namespace: String,
        name: String,
        resource_version: Option<String>,
        finalizers: Vec<String>,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let Ok(_slot) = this.finalizer_slots.clone().acquire_owned().await else { return };
            let remaining: Vec<&String> = finalizers.iter().filter(|f| *f != LEGACY_FINALIZER).collect();
            let patch = json!({"metadata": {"finalizers": remaining, "resourceVersion": resource_version}});
            match dynamic_api(&this.client, &namespace)
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    this.metrics.policy_writes.inc();
                    info!(namespace, name, "removed the legacy finalizer {LEGACY_FINALIZER}");
                }
                // Gone, or changed since: the newer version arrives as a watch event.
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => warn!(namespace, name, error = %e, "could not remove the legacy finalizer"),
            }
        });
    }

    // ---- targets ---------------------------------------------------------------------------

    /// Waits while the target keeps being touched (a burst), at most `batch_max`.
    async fn settle_target(&self, target: &TargetKey) {
        let started = Instant::now();
        loop {
            let before = self.targets.touches(target);
            tokio::time::sleep(self.settings.batch_window).await;
            if self.targets.touches(target) == before || started.elapsed() >= self.settings.batch_max {
                break;
            }
        }
        self.targets.settle(target);
    }

    async fn reconcile_target(self: &Arc<Self>, target: &TargetKey) {
        self.metrics.in_flight.inc();
        let started = Instant::now();
        let result = self.sync_target(target).await;
        self.metrics.in_flight.dec();
        let outcome = match &result {
            Ok(()) => "success",
            Err(_) => "apply_error",
        };
        self.metrics.reconciled(outcome, started.elapsed().as_secs_f64());
        if let Some(delay) = self.targets.outcome(target, result.is_err()) {
            warn!(target = %target, error = %result.err().unwrap_or_default(), retry_in = ?delay, "writing the target failed; retrying");
            let target = target.clone();
            self.after(delay, move |shared| shared.targets.add(target));
        }
    }

    async fn sync_target(self: &Arc<Self>, target: &TargetKey) -> Result<(), String> {
        let input = self.index().plan_input(target);
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &target.namespace);
        // A ConfigMap the watches do not show is missing or neither managed nor opted in:
        // look once, so an unlabelled one is never taken for missing and overwritten.
        let live = match &input.live {
            Some(live) => Ok(Some(live.clone())),
            None if input.policies.is_empty() => Ok(None),
            None => match api.get_opt(&target.name).await {
                Ok(cm) => Ok(cm.as_ref().map(ExistingTarget::observe)),
                Err(e) => Err(e.to_string()),
            },
        };
        let (live, mut failed) = match live {
            Ok(live) => (live, None),
            Err(e) => (None, Some(e)),
        };
        let plan = plan_target(target, live.as_ref(), &input.policies);
        if failed.is_none()
            && let Some(data) = &plan.apply
            && !plan.is_noop(live.as_ref())
            && !(live.is_none() && data.is_empty())
        {
            let cm = applied_configmap(target, data.clone(), &plan.config_hash);
            let params = PatchParams::apply(FIELD_MANAGER).force();
            match api.patch(&target.name, &params, &Patch::Apply(&cm)).await {
                Ok(written) => {
                    self.metrics.configmap_writes.inc();
                    self.index().wrote_target(
                        target,
                        ExistingTarget::observe(&written),
                        written.metadata.resource_version.clone(),
                    );
                    info!(target = %target, keys = data.len(), hash = %plan.config_hash, "applied gateway ConfigMap");
                }
                // Its namespace is gone: nothing can be served there.
                Err(kube::Error::Api(e)) if e.code == 404 && data.is_empty() => {}
                Err(e) => failed = Some(e.to_string()),
            }
        }
        let dirty = self.index().record_plan(target, &input, &plan, failed.as_deref());
        self.statuses.add_all(dirty);
        failed.map_or(Ok(()), Err)
    }

    // ---- status ----------------------------------------------------------------------------

    async fn reconcile_status(self: &Arc<Self>, key: &str) {
        let Some((observation, previous, reference, readable)) = ({
            let index = self.index();
            index.observation(key).and_then(|o| {
                let entry = index.policy(key)?;
                Some((o, entry.status.clone(), policy_reference(entry), entry.readable))
            })
        }) else {
            return; // gone, or not every target planned yet
        };
        let namespace = reference.namespace.clone().unwrap_or_default();
        let name = reference.name.clone().unwrap_or_default();
        let span = info_span!("status", namespace = %namespace, name = %name);
        async {
            // An unreadable object's status is not in the watch event: read it once.
            let previous = match previous {
                None if !readable => read_status(&self.client, &namespace, &name).await.map(|s| StatusMemo::of(&s)),
                other => other,
            };
            let status = compute_status(&observation, previous.as_ref().map(StatusMemo::as_previous).as_ref(), &now());
            let ready = status.conditions.iter().any(|c| c.type_ == READY && c.status == "True");
            self.metrics.set_ready(&format!("{namespace}/{name}"), Some(if ready { "true" } else { "false" }));
            if previous.as_ref().is_some_and(|memo| !memo.changed(&status)) {
                return;
            }
            match write_status(&self.client, &namespace, &name, &status).await {
                Ok(()) => {
                    self.metrics.status_writes.inc();
                    self.index().wrote_status(key, &status);
                    self.statuses.outcome(&key.to_string(), false);
                    self.publish_transitions(reference, previous.as_ref(), &status, &observation);
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    if let Some(delay) = self.statuses.outcome(&key.to_string(), true) {
                        warn!(error = %e, retry_in = ?delay, "writing status failed; retrying");
                        let key = key.to_string();
                        self.after(delay, move |shared| shared.statuses.add(key));
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Events for what changed: Warning on validation failures, refused or full targets and
    /// failed writes, and on the deprecated `contact`; Normal `Synced` for a new document.
    fn publish_transitions(
        &self,
        regarding: ObjectReference,
        previous: Option<&StatusMemo>,
        status: &ImageVariationPolicyStatus,
        observation: &Observation,
    ) {
        let report = &observation.report;
        if !report.is_valid() {
            self.publish(regarding, true, "ValidationFailed", report.errors_summary());
            return;
        }
        for t in &status.targets {
            if t.synced || previous.is_some_and(|p| p.had_target(t)) {
                continue;
            }
            let reason = match t.reason {
                TargetReason::RefNotPermitted | TargetReason::TargetNotManaged | TargetReason::TargetFull => t.reason,
                _ => TargetReason::ApplyFailed,
            };
            self.publish(
                regarding.clone(),
                true,
                reason.as_str(),
                format!("{}/{}: {}", t.namespace, t.name, t.message),
            );
        }
        if let Some(deprecated) = report.warnings.iter().find(|w| w.path == "spec.contact")
            && !previous.is_some_and(StatusMemo::deprecated_warned)
        {
            self.publish(regarding.clone(), true, "DeprecatedField", deprecated.to_string());
        }
        let all_synced = status.targets.iter().all(|t| t.synced);
        let hash_changed = previous.and_then(StatusMemo::config_hash) != status.config_hash.as_deref();
        let newly_synced = status.targets.iter().any(|t| t.synced && !previous.is_some_and(|p| p.was_synced(t)));
        if all_synced && (hash_changed || newly_synced) {
            self.publish(
                regarding,
                false,
                "Synced",
                format!(
                    "document {} written to {} target(s)",
                    status.config_hash.as_deref().unwrap_or("-"),
                    status.targets.len()
                ),
            );
        }
    }
}

/// Reduces a watched policy to what the index needs, and its finalizers.
fn observe_policy(policy: Policy) -> (ObservedPolicy, Vec<String>) {
    let meta = policy.metadata;
    let finalizers = meta.finalizers.unwrap_or_default();
    let observed = ObservedPolicy {
        namespace: meta.namespace.unwrap_or_default(),
        name: meta.name.unwrap_or_default(),
        uid: meta.uid,
        generation: meta.generation,
        resource_version: meta.resource_version,
        spec: policy.spec,
        status: policy.status,
        deleting: meta.deletion_timestamp.is_some(),
        legacy_finalizer: finalizers.iter().any(|f| f == LEGACY_FINALIZER),
    };
    (observed, finalizers)
}

fn policy_key(policy: &Policy) -> String {
    let meta = &policy.metadata;
    data_key(meta.namespace.as_deref().unwrap_or_default(), meta.name.as_deref().unwrap_or_default())
}

fn configmap_target(cm: &ConfigMap) -> TargetKey {
    TargetKey {
        namespace: cm.metadata.namespace.clone().unwrap_or_default(),
        name: cm.metadata.name.clone().unwrap_or_default(),
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

fn dynamic_api(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &ApiResource::erase::<ImageVariationPolicy>(&()))
}

fn policy_reference(entry: &crate::index::PolicyEntry) -> ObjectReference {
    ObjectReference {
        api_version: Some(ImageVariationPolicy::api_version(&()).to_string()),
        kind: Some(ImageVariationPolicy::kind(&()).to_string()),
        name: Some(entry.name.clone()),
        namespace: Some(entry.namespace.clone()),
        uid: entry.uid.clone(),
        resource_version: entry.resource_version.clone(),
        ..Default::default()
    }
}

async fn read_status(client: &Client, namespace: &str, name: &str) -> Option<ImageVariationPolicyStatus> {
    let obj = dynamic_api(client, namespace).get_status(name).await.ok()?;
    obj.data.get("status").and_then(|s| serde_json::from_value(s.clone()).ok())
}

async fn write_status(
    client: &Client,
    namespace: &str,
    name: &str,
    status: &ImageVariationPolicyStatus,
) -> Result<(), kube::Error> {
    let patch = json!({
        "apiVersion": ImageVariationPolicy::api_version(&()),
        "kind": ImageVariationPolicy::kind(&()),
        "status": status,
    });
    dynamic_api(client, namespace)
        .patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map(|_| ())
}

async fn send_event(client: &Client, metrics: &Metrics, instance: &str, event: PolicyEvent) {
    let namespace = event.regarding.namespace.clone().unwrap_or_default();
    let stamp = k8s_openapi::jiff::Timestamp::now();
    let object = KubeEvent {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}.{:x}",
                event.regarding.name.as_deref().unwrap_or("routerpolicy"),
                stamp.as_nanosecond()
            )),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        action: Some("Reconcile".into()),
        reason: Some(event.reason),
        note: Some(event.note.chars().take(1024).collect()),
        type_: Some(if event.warning { "Warning" } else { "Normal" }.into()),
        event_time: Some(MicroTime(stamp)),
        regarding: Some(event.regarding),
        reporting_controller: Some("routerpolicy".into()),
        reporting_instance: Some(instance.into()),
        ..Default::default()
    };
    let api: Api<KubeEvent> = Api::namespaced(client.clone(), &namespace);
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => {
            metrics.events.inc();
        }
        Err(e) => warn!(error = %e, "could not publish event"),
    }
}

/// Which watch an event came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Source {
    /// The policy watch with this index into the boundary's namespaces (or 0 for all).
    Policies(usize),
    /// A ConfigMap watch, by bit.
    ConfigMaps(u8),
}

enum Observed {
    Policy(Box<Event<Policy>>),
    ConfigMap(Box<Event<ConfigMap>>),
}

fn policy_event(event: Event<Policy>) -> Observed {
    Observed::Policy(Box::new(event))
}

fn configmap_event(event: Event<ConfigMap>) -> Observed {
    Observed::ConfigMap(Box::new(event))
}

type Tagged = (Source, Result<Observed, watcher::Error>);

fn tagged<S, K: 'static>(source: Source, stream: S, wrap: fn(Event<K>) -> Observed) -> BoxStream<'static, Tagged>
where
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
{
    stream.map(move |r| (source, r.map(wrap))).boxed()
}

/// Relist bookkeeping: what each watch has shown since its last `Init`.
#[derive(Default)]
struct Relists {
    policies: HashMap<Source, HashSet<String>>,
    configmaps: HashMap<Source, HashSet<TargetKey>>,
    done: HashSet<Source>,
}

/// Builds and runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let boundary = Boundary::new(&settings.namespaces);
    let concurrency = usize::from(settings.concurrency.max(1));
    // Like client-go's event broadcaster: a bounded queue, and events beyond it are dropped
    // (counted) rather than holding up statuses or memory.
    let (events_tx, mut events_rx) = mpsc::channel::<PolicyEvent>(1024);
    let shared = Arc::new(Shared {
        client: client.clone(),
        metrics: metrics.clone(),
        index: Mutex::new(Index::new(boundary.clone())),
        targets: WorkQueue::new(metrics.pending_gauge("targets")),
        statuses: WorkQueue::new(metrics.pending_gauge("statuses")),
        events: events_tx,
        finalizer_slots: Arc::new(Semaphore::new(concurrency.min(16))),
        settings: settings.clone(),
    });

    // Watches. Lists come from the API server's watch cache; objects are reduced as they
    // arrive, and nothing but the index keeps them.
    // Lists are paginated (500 a page), so memory stays bounded while thousands of policies
    // are listed.
    let wc = watcher::Config::default();
    let mut streams: SelectAll<BoxStream<'static, Tagged>> = SelectAll::new();
    match boundary.namespaces() {
        // Only the namespaces of --namespaces are read, each by its own watch.
        Some(namespaces) => {
            for (i, ns) in namespaces.iter().enumerate() {
                let api: Api<Policy> = Api::namespaced(client.clone(), ns);
                streams.push(tagged(
                    Source::Policies(i),
                    watcher::watcher(api, wc.clone()).default_backoff(),
                    policy_event,
                ));
            }
        }
        None => {
            let api: Api<Policy> = Api::all(client.clone());
            streams.push(tagged(
                Source::Policies(0),
                watcher::watcher(api, wc.clone()).default_backoff(),
                policy_event,
            ));
        }
    }
    let configmaps: Api<ConfigMap> = Api::all(client.clone());
    // ConfigMaps the operator wrote: drift (hand edits, deleted keys, a deleted ConfigMap) is
    // repaired by re-planning the target.
    streams.push(tagged(
        Source::ConfigMaps(MANAGED_WATCH),
        watcher::watcher(configmaps.clone(), wc.clone().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")))
            .default_backoff(),
        configmap_event,
    ));
    // Gateway ConfigMaps opted in by their owners: consent given or withdrawn takes effect.
    streams.push(tagged(
        Source::ConfigMaps(GATEWAY_WATCH),
        watcher::watcher(configmaps, wc.labels(&format!("{GATEWAY_LABEL}=true"))).default_backoff(),
        configmap_event,
    ));
    let sources = streams.len();

    let (stop_tx, stop_rx) = signal::channel(false);
    let mut workers = tokio::task::JoinSet::new();
    // Events are best effort and never hold up a status: a few at a time, off the hot path.
    {
        let client = client.clone();
        let instance = settings.instance.clone().unwrap_or_else(|| "routerpolicy".into());
        let metrics = metrics.clone();
        let mut stop = stop_rx.clone();
        workers.spawn(async move {
            let slots = Arc::new(Semaphore::new(2));
            let mut running = tokio::task::JoinSet::new();
            loop {
                let event = tokio::select! {
                    event = events_rx.recv() => event,
                    _ = stop.wait_for(|s| *s) => events_rx.try_recv().ok(),
                };
                let Some(event) = event else { break };
                let Ok(slot) = slots.clone().acquire_owned().await else { break };
                let (client, instance, metrics) = (client.clone(), instance.clone(), metrics.clone());
                running.spawn(async move {
                    send_event(&client, &metrics, &instance, event).await;
                    drop(slot);
                });
                while running.try_join_next().is_some() {}
            }
            while running.join_next().await.is_some() {}
        });
    }

    let mut shutdown: Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>> = Box::pin(shutdown);
    let mut relists = Relists::default();
    let mut started = false;
    let mut resync = tokio::time::interval(settings.resync);
    resync.tick().await;
    info!(namespaces = ?boundary.namespaces(), "watching policies and gateway ConfigMaps");
    loop {
        let (source, item) = tokio::select! {
            _ = &mut shutdown => break,
            _ = resync.tick(), if started => {
                let all = shared.index().all_targets();
                shared.schedule(all);
                continue;
            }
            next = streams.next() => match next {
                Some(next) => next,
                None => break,
            },
        };
        let observed = match item {
            Ok(observed) => observed,
            Err(e) => {
                warn!(?source, error = %e, "watch failed; retrying with backoff");
                continue;
            }
        };
        match observed {
            Observed::Policy(event) => match *event {
                Event::Init => {
                    relists.policies.insert(source, HashSet::new());
                }
                Event::InitApply(guard) => {
                    relists.policies.entry(source).or_default().insert(policy_key(&guard));
                    shared.on_policy(guard);
                }
                Event::Apply(guard) => shared.on_policy(guard),
                Event::Delete(guard) => shared.on_policy_gone(&policy_key(&guard)),
                Event::InitDone => {
                    // What the new list did not show was deleted while the watch was away.
                    let seen = relists.policies.remove(&source).unwrap_or_default();
                    let scope = match (source, boundary.namespaces()) {
                        (Source::Policies(i), Some(namespaces)) => namespaces.iter().nth(i).cloned(),
                        _ => None,
                    };
                    let gone: Vec<String> = shared
                        .index()
                        .policy_keys(scope.as_deref())
                        .into_iter()
                        .filter(|k| !seen.contains(k))
                        .collect();
                    for key in gone {
                        shared.on_policy_gone(&key);
                    }
                    relists.done.insert(source);
                }
            },
            Observed::ConfigMap(event) => {
                let Source::ConfigMaps(bit) = source else { continue };
                match *event {
                    Event::Init => {
                        relists.configmaps.insert(source, HashSet::new());
                    }
                    Event::InitApply(cm) => {
                        relists.configmaps.entry(source).or_default().insert(configmap_target(&cm));
                        shared.on_configmap(bit, &cm);
                    }
                    Event::Apply(cm) => shared.on_configmap(bit, &cm),
                    Event::Delete(cm) => shared.on_configmap_gone(bit, configmap_target(&cm)),
                    Event::InitDone => {
                        let seen = relists.configmaps.remove(&source).unwrap_or_default();
                        let gone: Vec<TargetKey> =
                            shared.index().targets_seen_by(bit).into_iter().filter(|t| !seen.contains(t)).collect();
                        for target in gone {
                            shared.on_configmap_gone(bit, target);
                        }
                        relists.done.insert(source);
                    }
                }
            }
        }
        if !started && relists.done.len() == sources {
            // Every watch has listed once: the picture is complete. Plan every target now
            // (this prunes keys of policies deleted while no operator ran), then keep up.
            started = true;
            let (policies, targets) = {
                let index = shared.index();
                (index.policy_count(), index.all_targets())
            };
            metrics.index_policies.set(policies as i64);
            info!(policies, targets = targets.len(), "initial lists complete; planning every target");
            for _ in 0..concurrency {
                let (worker, mut stop) = (shared.clone(), stop_rx.clone());
                workers.spawn(async move {
                    while let Some(target) = worker.targets.next(&mut stop).await {
                        worker.settle_target(&target).await;
                        worker.reconcile_target(&target).await;
                        worker.targets.done(&target);
                    }
                });
                let (worker, mut stop) = (shared.clone(), stop_rx.clone());
                workers.spawn(async move {
                    while let Some(key) = worker.statuses.next(&mut stop).await {
                        worker.reconcile_status(&key).await;
                        worker.statuses.done(&key);
                    }
                });
            }
            shared.schedule(targets);
        }
        if started {
            metrics.index_policies.set(shared.index().policy_count() as i64);
        }
    }

    info!("controller stopping");
    let _ = stop_tx.send(true);
    drop(shared);
    // Workers finish the write in hand; the event sender goes with the last of them.
    let drain = async { while workers.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain).await.is_err() {
        warn!("workers did not stop within 10 s");
    }
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

    #[tokio::test]
    async fn a_work_queue_holds_an_item_once_and_requeues_it_when_touched_while_running() {
        let queue: WorkQueue<&str> = WorkQueue::new(Default::default());
        let (_tx, mut stop) = signal::channel(false);
        queue.add("a");
        queue.add("a");
        queue.add("b");
        assert_eq!(queue.next(&mut stop).await, Some("a"));
        queue.add("a");
        assert_eq!(queue.touches(&"a"), 1);
        assert_eq!(queue.next(&mut stop).await, Some("b"));
        queue.done(&"b");
        queue.done(&"a");
        assert_eq!(queue.next(&mut stop).await, Some("a"), "touched while running: queued again");
        queue.settle(&"a");
        queue.done(&"a");
        let (tx, mut stop) = signal::channel(false);
        let _ = tx.send(true);
        assert_eq!(queue.next(&mut stop).await, None, "nothing left, and stopped");
    }
}
