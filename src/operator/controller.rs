//! Controller: the watches' events into the index, and the workers that act on what they
//! touch. The imperative shell around the pure core; see [`crate::operator`] for the flow.
//!
//! Nothing is written before every watch has delivered its first complete list; then every
//! known target is planned once (which prunes keys of policies deleted while no operator ran)
//! and the workers start.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use kube::Client;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::key::{PolicyKey, TargetKey};
use crate::operator::boundary::Boundary;
use crate::operator::decode::{WatchedPolicy, decode, policy_key};
use crate::operator::events::Recorder;
use crate::operator::fence::Fence;
use crate::operator::index::Index;
use crate::operator::metrics::{Metrics, Queue};
use crate::operator::queue::WorkQueue;
use crate::operator::served::{ReplicaKey, replica_of};
use crate::operator::watch::{Relists, Sink, WatchEvent, WatchSource, drive, streams};
use crate::target::configmap::{ConfigMapWatch, ExistingTarget, target_of};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;

/// How often expired report Leases (replicas that died without releasing theirs) are looked
/// for.
const REPORT_SWEEP: Duration = Duration::from_secs(2);
/// How long a status waits at most for pending target work ([`Controller::targets_first`]).
const TARGETS_FIRST_MAX: Duration = Duration::from_secs(1);
/// How often a waiting status looks at the target queue again.
const TARGETS_FIRST_POLL: Duration = Duration::from_millis(5);

/// The wall clock in Unix milliseconds (report Leases carry wall-clock times).
pub(super) fn now_ms() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond()
}

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
    /// How long a status write waits for gateway replicas to load a new document, so that
    /// it carries `Served` (the common case: one write per change).
    pub serve_wait: Duration,
    /// A replica that has not loaded a document this long after it landed is stale.
    pub serve_stale_after: Duration,
    /// With leader election: writes stop once this fence breaks ([`Fence`]); `None` without.
    pub fence: Option<Arc<Fence>>,
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
            serve_wait: Duration::from_secs(5),
            serve_stale_after: Duration::from_secs(10),
            fence: None,
        }
    }
}

/// The controller's state, shared by the watch loop and the workers.
pub(super) struct Controller {
    pub(super) client: Client,
    pub(super) settings: Settings,
    pub(super) metrics: Arc<Metrics>,
    pub(super) index: Mutex<Index>,
    pub(super) targets: Arc<WorkQueue<TargetKey>>,
    pub(super) statuses: Arc<WorkQueue<PolicyKey>>,
    pub(super) events: Recorder,
    pub(super) finalizer_slots: Arc<Semaphore>,
}

/// Builds and runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let controller = Arc::new(Controller::new(client, settings, metrics, stop_rx.clone(), &mut tasks));
    controller.watch_until(shutdown, &stop_rx, &mut tasks).await;
    info!("controller stopping");
    let _ = stop_tx.send(true);
    drop(controller);
    // Workers finish the write in hand; the event writer sends what is queued.
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain).await.is_err() {
        warn!("workers did not stop within 10 s");
    }
}

impl Controller {
    /// Whether this replica may write: always without leader election; as the leader, until
    /// its fence breaks.
    pub(super) fn may_write(&self) -> bool {
        self.settings.fence.as_ref().is_none_or(|fence| fence.holds())
    }

    fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        stop: watch::Receiver<bool>,
        tasks: &mut JoinSet<()>,
    ) -> Controller {
        let concurrency = usize::from(settings.concurrency.max(1));
        let instance = settings.instance.clone().unwrap_or_else(|| "routerpolicy".into());
        Controller {
            events: Recorder::start(client.clone(), instance, metrics.clone(), stop, tasks),
            client,
            index: Mutex::new(Index::new(Boundary::new(&settings.namespaces))),
            targets: Arc::new(WorkQueue::new(metrics.pending_gauge(Queue::Targets))),
            statuses: Arc::new(WorkQueue::new(metrics.pending_gauge(Queue::Statuses))),
            finalizer_slots: Arc::new(Semaphore::new(concurrency.min(16))),
            metrics,
            settings,
        }
    }

    pub(super) fn index(&self) -> MutexGuard<'_, Index> {
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

    /// The watch loop: every event into the index until `shutdown`; the workers start once
    /// every watch has listed.
    async fn watch_until(
        self: &Arc<Self>,
        shutdown: impl std::future::Future<Output = ()>,
        stop: &watch::Receiver<bool>,
        tasks: &mut JoinSet<()>,
    ) {
        let boundary = self.index().boundary().clone();
        let mut streams = streams(&self.client, &boundary);
        let sources = streams.len();
        let mut relists = Relists::default();
        let mut started = false;
        let mut resync = tokio::time::interval(self.settings.resync);
        resync.tick().await;
        let mut sweep = tokio::time::interval(REPORT_SWEEP);
        tokio::pin!(shutdown);
        info!(namespaces = ?boundary.namespaces(), "watching policies and gateway ConfigMaps");
        loop {
            let (source, item) = tokio::select! {
                _ = &mut shutdown => break,
                _ = resync.tick(), if started => {
                    let all = self.index().all_targets();
                    self.schedule(all);
                    continue;
                }
                _ = sweep.tick(), if started => {
                    let expired = self.index().expire_reports(now_ms());
                    self.statuses.add_all(expired);
                    continue;
                }
                next = streams.next() => match next {
                    Some(next) => next,
                    None => break,
                },
            };
            match item {
                Ok(event) => self.on_watch_event(source, event, &mut relists),
                Err(e) => warn!(?source, error = %e, "watch failed; retrying with backoff"),
            }
            if !started && relists.listed_count() == sources {
                started = true;
                self.start_workers(stop, tasks);
            }
            if started {
                self.metrics.index_policies.set(self.index().policy_count() as i64);
            }
        }
    }

    /// Every watch has listed once: the picture is complete. Plan every target now (this
    /// prunes keys of policies deleted while no operator ran), then keep up.
    fn start_workers(self: &Arc<Self>, stop: &watch::Receiver<bool>, tasks: &mut JoinSet<()>) {
        let (policies, targets) = {
            let index = self.index();
            (index.policy_count(), index.all_targets())
        };
        self.metrics.index_policies.set(policies as i64);
        info!(policies, targets = targets.len(), "initial lists complete; planning every target");
        for _ in 0..self.settings.concurrency.max(1) {
            let (worker, mut worker_stop) = (self.clone(), stop.clone());
            tasks.spawn(async move {
                while let Some(target) = worker.targets.next(&mut worker_stop).await {
                    let (window, max) = (worker.settings.batch_window, worker.settings.batch_max);
                    worker.targets.wait_for_quiet(&target, window, max).await;
                    worker.reconcile_target(&target).await;
                    worker.targets.done(&target);
                }
            });
            let (worker, mut worker_stop) = (self.clone(), stop.clone());
            tasks.spawn(async move {
                while let Some(key) = worker.statuses.next(&mut worker_stop).await {
                    worker.targets_first().await;
                    worker.reconcile_status(&key).await;
                    worker.statuses.done(&key);
                }
            });
        }
        self.schedule(targets);
    }

    /// Target writes go first: a status waits, at most [`TARGETS_FIRST_MAX`], while target work
    /// is pending, so a burst of edits reaches the ConfigMaps (what traffic uses) before the
    /// API server's write rate goes to the statuses that report it.
    async fn targets_first(&self) {
        let started = tokio::time::Instant::now();
        while self.targets.depth() > 0 && started.elapsed() < TARGETS_FIRST_MAX {
            tokio::time::sleep(TARGETS_FIRST_POLL).await;
        }
    }

    /// One watch event into the index, through the one driver of [`drive`].
    fn on_watch_event(self: &Arc<Self>, source: WatchSource, event: WatchEvent, relists: &mut Relists) {
        let listed = match (&source, event) {
            (WatchSource::Policies(namespace), WatchEvent::Policy(event)) => {
                let sink = Sink {
                    key_of: policy_key,
                    apply: &|policy| self.on_policy(policy),
                    delete: &|key| self.on_policy_gone(&key),
                    known: &|| self.index().policy_keys(namespace.as_deref()),
                };
                drive(*event, relists.policies(&source), sink)
            }
            (WatchSource::ConfigMaps(watch), WatchEvent::ConfigMap(event)) => {
                let watch = *watch;
                let sink = Sink {
                    key_of: target_of,
                    apply: &|cm: ConfigMap| self.on_configmap(watch, &cm),
                    delete: &|target| self.on_configmap_gone(watch, target),
                    known: &|| self.index().targets_seen_by(watch),
                };
                drive(*event, relists.configmaps(&source), sink)
            }
            (WatchSource::Reports, WatchEvent::Report(event)) => {
                let sink = Sink {
                    key_of: ReplicaKey::of,
                    apply: &|lease: Lease| self.on_report(&lease),
                    delete: &|key| self.on_report_gone(&key),
                    known: &|| self.index().report_keys(),
                };
                drive(*event, relists.reports(), sink)
            }
            _ => false,
        };
        if listed {
            relists.listed(source);
        }
    }

    fn on_policy(self: &Arc<Self>, policy: WatchedPolicy) {
        let decoded = decode(policy);
        let key = decoded.key.clone();
        let legacy =
            decoded.has_legacy_finalizer().then(|| (decoded.resource_version.clone(), decoded.finalizers.clone()));
        let touched = self.index().apply_policy(decoded);
        if touched.removed {
            self.metrics.set_ready(&key, None);
        }
        if touched.rollout_action {
            self.statuses.add(key.clone());
        }
        if touched.legacy_finalizer
            && let Some((resource_version, finalizers)) = legacy
        {
            self.remove_legacy_finalizer(key, resource_version, finalizers);
        }
        self.schedule(touched.targets);
    }

    fn on_policy_gone(&self, key: &PolicyKey) {
        let touched = self.index().delete_policy(key);
        self.metrics.set_ready(key, None);
        self.schedule(touched.targets);
    }

    fn on_configmap(&self, watch: ConfigMapWatch, cm: &ConfigMap) {
        let target = target_of(cm);
        let view = ExistingTarget::from_configmap(cm);
        if self.index().apply_target(watch, &target, view, cm.metadata.resource_version.clone()) {
            self.schedule([target]);
        }
    }

    /// A replica reported (or renewed its report): only a report that says something new
    /// touches the statuses of the policies at its target.
    fn on_report(&self, lease: &Lease) {
        let key = ReplicaKey::of(lease);
        let touched = match replica_of(lease) {
            Some(replica) => self.index().apply_report(key, replica),
            None => self.index().delete_report(&key),
        };
        self.statuses.add_all(touched);
    }

    fn on_report_gone(&self, key: &ReplicaKey) {
        let touched = self.index().delete_report(key);
        self.statuses.add_all(touched);
    }

    fn on_configmap_gone(&self, watch: ConfigMapWatch, target: TargetKey) {
        if self.index().delete_target(watch, &target) {
            self.schedule(BTreeSet::from([target]));
        }
    }
}
