//! Events: what the operator tells users on their policies (README.md, "Status"), best effort.
//!
//! Like client-go's event broadcaster: [`Recorder::publish`] never waits; events go to a
//! bounded queue, a writer task sends them a few at a time, and when the queue is full an
//! event is dropped and counted (`routerpolicy_events_dropped_total`), so events never hold up
//! a status or grow memory during a cold start of thousands of policies. While more than
//! [`STATUS_BACKLOG`] statuses are pending, the writer waits: status writes get the API
//! server's write rate first.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::api::TargetReason;
use crate::operator::metrics::{Metrics, Queue};

/// Events queued at most; beyond this they are dropped (counted).
const QUEUE: usize = 1024;
/// Events being written at once.
const WRITERS: usize = 2;
/// Statuses pending (queued or being written) above which events wait: status writes go
/// first, since the API server's write rate is what a cold start of many policies waits on.
const STATUS_BACKLOG: i64 = 64;
/// How often a waiting event looks at the status backlog again.
const BACKLOG_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// `Normal` or `Warning`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Something went as intended.
    Normal,
    /// Something the user should look at.
    Warning,
}

impl EventType {
    /// As the Event API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Why an event is published: the whole set of event reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventReason {
    /// The spec breaks a rule.
    ValidationFailed,
    /// A cross-namespace target did not consent.
    RefNotPermitted,
    /// A same-namespace ConfigMap is not routerpolicy's.
    TargetNotManaged,
    /// The document does not fit in the target.
    TargetFull,
    /// Writing a target failed.
    ApplyFailed,
    /// A deprecated field is used.
    DeprecatedField,
    /// A new document is in every target.
    Synced,
    /// A rollout began or went to its next step.
    RolloutStep,
    /// A rollout finished: the new document gets every call.
    RolloutPromoted,
    /// A rollout was rolled back: only the document in service before it remains.
    RolledBack,
}

impl EventReason {
    /// As events show it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::ValidationFailed => "ValidationFailed",
            EventReason::RefNotPermitted => "RefNotPermitted",
            EventReason::TargetNotManaged => "TargetNotManaged",
            EventReason::TargetFull => "TargetFull",
            EventReason::ApplyFailed => "ApplyFailed",
            EventReason::DeprecatedField => "DeprecatedField",
            EventReason::Synced => "Synced",
            EventReason::RolloutStep => "RolloutStep",
            EventReason::RolloutPromoted => "RolloutPromoted",
            EventReason::RolledBack => "RolledBack",
        }
    }

    /// `Normal` for a new document, `Warning` for everything else.
    pub fn event_type(self) -> EventType {
        match self {
            EventReason::Synced | EventReason::RolloutStep | EventReason::RolloutPromoted => EventType::Normal,
            _ => EventType::Warning,
        }
    }

    /// The event for a target that refused or failed a policy.
    pub fn of_target(reason: TargetReason) -> Self {
        match reason {
            TargetReason::RefNotPermitted => EventReason::RefNotPermitted,
            TargetReason::TargetNotManaged => EventReason::TargetNotManaged,
            TargetReason::TargetFull => EventReason::TargetFull,
            TargetReason::RolledBack => EventReason::RolledBack,
            _ => EventReason::ApplyFailed,
        }
    }
}

/// An event to publish on a policy.
#[derive(Clone, Debug)]
pub struct PolicyEvent {
    /// The policy.
    pub regarding: ObjectReference,
    /// Why.
    pub reason: EventReason,
    /// What happened, for people.
    pub note: String,
}

/// Publishes events without waiting: see the module doc.
#[derive(Clone)]
pub struct Recorder {
    queue: mpsc::Sender<PolicyEvent>,
    metrics: Arc<Metrics>,
}

impl Recorder {
    /// A recorder and the writer task that sends its events as `instance`, until `stop`
    /// turns true (then it sends what is queued and ends).
    pub fn start(
        client: Client,
        instance: String,
        metrics: Arc<Metrics>,
        stop: watch::Receiver<bool>,
        tasks: &mut JoinSet<()>,
    ) -> Recorder {
        let (queue, events) = mpsc::channel(QUEUE);
        tasks.spawn(write_events(client, instance, metrics.clone(), events, stop));
        Recorder { queue, metrics }
    }

    /// Queues `reason` on `regarding`, or drops it (counted) when the queue is full.
    pub fn publish(&self, regarding: ObjectReference, reason: EventReason, note: String) {
        if self.queue.try_send(PolicyEvent { regarding, reason, note }).is_err() {
            self.metrics.events_dropped.inc();
            debug!("event queue full; dropping an event");
        }
    }
}

/// The writer task: a few events at a time, off the hot path.
async fn write_events(
    client: Client,
    instance: String,
    metrics: Arc<Metrics>,
    mut events: mpsc::Receiver<PolicyEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(WRITERS));
    let mut running = JoinSet::new();
    let backlog = metrics.pending_gauge(Queue::Statuses);
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = stop.wait_for(|s| *s) => events.try_recv().ok(),
        };
        let Some(event) = event else { break };
        // Statuses first: while a backlog of them waits, the event waits (and the queue, full,
        // drops what comes meanwhile).
        while backlog.get() > STATUS_BACKLOG && !*stop.borrow() {
            tokio::time::sleep(BACKLOG_POLL).await;
        }
        let Ok(slot) = slots.clone().acquire_owned().await else { break };
        let (client, instance, metrics) = (client.clone(), instance.clone(), metrics.clone());
        running.spawn(async move {
            send_event(&client, &metrics, &instance, event).await;
            drop(slot);
        });
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
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
        reason: Some(event.reason.as_str().into()),
        note: Some(event.note.chars().take(1024).collect()),
        type_: Some(event.reason.event_type().as_str().into()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_new_document_is_a_normal_event() {
        assert_eq!(EventReason::Synced.event_type(), EventType::Normal);
        for reason in [EventReason::ValidationFailed, EventReason::TargetFull, EventReason::DeprecatedField] {
            assert_eq!(reason.event_type(), EventType::Warning, "{reason:?}");
        }
    }

    #[test]
    fn a_refused_target_publishes_its_own_reason_and_anything_else_is_a_failed_write() {
        assert_eq!(EventReason::of_target(TargetReason::TargetFull), EventReason::TargetFull);
        assert_eq!(EventReason::of_target(TargetReason::RefNotPermitted), EventReason::RefNotPermitted);
        assert_eq!(EventReason::of_target(TargetReason::ApplyFailed), EventReason::ApplyFailed);
        assert_eq!(EventReason::of_target(TargetReason::Synced), EventReason::ApplyFailed);
    }
}
