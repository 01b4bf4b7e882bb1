//! Prometheus metrics of the controller, in the text exposition format.
//!
//! One [`Metrics`] is shared by the reconciler, the target writer and the HTTP server. It
//! counts; it decides nothing. Label values are typed: each enum below is the whole set of
//! values its label takes.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::key::PolicyKey;
use crate::process::admin::registered;

/// Implements [`EncodeLabelValue`] for a label enum through its `as_str`.
macro_rules! label_value {
    ($t:ty) => {
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    };
}

/// How one target reconcile ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ReconcileOutcome {
    /// Planned, and written where needed.
    Success,
    /// Failed, with the error's metric label
    /// ([`crate::operator::target_writer::ApplyError::metric_label`]).
    Failed(&'static str),
}

impl ReconcileOutcome {
    /// The label value.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReconcileOutcome::Success => "success",
            ReconcileOutcome::Failed(label) => label,
        }
    }
}
label_value!(ReconcileOutcome);

/// A policy's `Ready` condition, as the `ready` label counts it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Readiness {
    /// `Ready=True`.
    Ready,
    /// `Ready=False`.
    NotReady,
}

impl Readiness {
    /// The label value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Readiness::Ready => "true",
            Readiness::NotReady => "false",
        }
    }
}
label_value!(Readiness);

/// The controller's work queues.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Queue {
    /// Target ConfigMaps to plan and apply.
    Targets,
    /// Policies whose status to compute and write.
    Statuses,
}

impl Queue {
    /// The label value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Queue::Targets => "targets",
            Queue::Statuses => "statuses",
        }
    }
}
label_value!(Queue);

/// Label set with one `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `success`, or an error's metric label.
    pub outcome: ReconcileOutcome,
}

/// Label set with one `ready` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabels {
    /// `true` or `false`.
    pub ready: Readiness,
}

/// Label set with one `queue` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// `targets` or `statuses`.
    pub queue: Queue,
}

/// The controller's metrics.
pub struct Metrics {
    registry: Registry,
    /// Target reconciles (plan, and apply when needed) by outcome.
    pub reconciles: Family<OutcomeLabels, Counter>,
    /// Target reconcile duration in seconds.
    pub reconcile_duration: Histogram,
    /// Policies by Ready status.
    pub policies: Family<ReadyLabels, Gauge>,
    /// Server-side applies of gateway ConfigMaps.
    pub configmap_writes: Counter,
    /// Target reconciles running now.
    pub in_flight: Gauge,
    /// Status writes (server-side apply of the status subresource).
    pub status_writes: Counter,
    /// Writes to policy objects themselves (removing the legacy finalizer).
    pub policy_writes: Counter,
    /// Events published on policies.
    pub events: Counter,
    /// Events dropped because the event queue was full.
    pub events_dropped: Counter,
    /// Work queued or in progress, by queue (`targets`, `statuses`).
    pub pending: Family<QueueLabels, Gauge>,
    /// Policies in the index (of the watched namespaces).
    pub index_policies: Gauge,
    /// Whether this replica holds the leader lease (1) or stands by (0).
    pub leader: Gauge,
    ready_by_policy: Mutex<HashMap<PolicyKey, Readiness>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("routerpolicy");
        let r = &mut registry;
        let reconciles = registered(r, "reconciles", "Target reconciles by outcome", Family::default());
        let reconcile_duration = registered(
            r,
            "reconcile_duration_seconds",
            "Duration of one target reconcile",
            Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        );
        let policies = registered(r, "policies", "Policies by Ready condition status", Family::default());
        let configmap_writes =
            registered(r, "configmap_writes", "Server-side applies of gateway ConfigMaps", Counter::default());
        let in_flight = registered(r, "reconciles_in_flight", "Target reconciles running now", Gauge::default());
        let status_writes = registered(r, "status_writes", "Status writes to policies", Counter::default());
        let policy_writes =
            registered(r, "policy_writes", "Writes to policy objects (legacy finalizer removal)", Counter::default());
        let events = registered(r, "events", "Events published on policies", Counter::default());
        let events_dropped =
            registered(r, "events_dropped", "Events dropped because the event queue was full", Counter::default());
        let pending = registered(r, "work_pending", "Work queued or in progress", Family::default());
        let index_policies = registered(r, "index_policies", "Policies in the index", Gauge::default());
        let leader = registered(r, "leader", "1 when this replica holds the leader lease", Gauge::default());
        Self {
            registry,
            reconciles,
            reconcile_duration,
            policies,
            configmap_writes,
            in_flight,
            leader,
            status_writes,
            policy_writes,
            events,
            events_dropped,
            pending,
            index_policies,
            ready_by_policy: Mutex::default(),
        }
    }
}

impl Metrics {
    /// Counts one reconcile.
    pub fn reconciled(&self, outcome: ReconcileOutcome, seconds: f64) {
        self.reconciles.get_or_create(&OutcomeLabels { outcome }).inc();
        self.reconcile_duration.observe(seconds);
    }

    /// The `work_pending` gauge of one queue.
    pub fn pending_gauge(&self, queue: Queue) -> Gauge {
        // The family's lock guard lives until this call returns; never hold two at once.
        self.pending.get_or_create(&QueueLabels { queue }).clone()
    }

    /// Records the Ready status of a policy (`None` when it is gone).
    pub fn set_ready(&self, policy: &PolicyKey, ready: Option<Readiness>) {
        let Ok(mut map) = self.ready_by_policy.lock() else {
            return;
        };
        let old = match ready {
            Some(r) => map.insert(policy.clone(), r),
            None => map.remove(policy),
        };
        if old == ready {
            return;
        }
        if let Some(old) = old {
            self.policies.get_or_create(&ReadyLabels { ready: old }).dec();
        }
        if let Some(new) = ready {
            self.policies.get_or_create(&ReadyLabels { ready: new }).inc();
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        crate::process::admin::encode(&self.registry)
    }
}
