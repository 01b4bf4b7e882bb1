//! Queue: the controller's de-duplicating work queues, with retry after backoff.
//!
//! An item (a target, or a policy whose status is due) is queued at most once and worked on by
//! one worker at a time; touching it while it is worked on queues it again afterwards. A
//! failure queues it again after a doubling delay ([`backoff`]); a success resets that.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, watch};

/// Delay before retry number `failures` (1-based): 1 s, 2 s, 4 s, … capped at 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(8)).min(Duration::from_secs(300))
}

/// A de-duplicating work queue.
pub struct WorkQueue<K> {
    state: Mutex<QueueState<K>>,
    notify: Notify,
    pending: Gauge,
}

struct QueueState<K> {
    order: VecDeque<K>,
    queued: HashSet<K>,
    /// Items being processed, with the number of touches since they were taken.
    running: HashMap<K, u64>,
    failures: HashMap<K, u32>,
}

impl<K> QueueState<K> {
    /// Queued and running: the depth `pending` publishes.
    fn depth(&self) -> usize {
        self.queued.len() + self.running.len()
    }
}

impl<K: Clone + Eq + Hash> WorkQueue<K> {
    /// An empty queue whose depth (queued and running) is published on `pending`.
    pub fn new(pending: Gauge) -> Self {
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

    fn lock(&self) -> MutexGuard<'_, QueueState<K>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Items queued or being worked on.
    pub fn depth(&self) -> usize {
        self.lock().depth()
    }

    fn publish_depth(&self, state: &QueueState<K>) {
        self.pending.set(state.depth() as i64);
    }

    /// Queues `item`, unless it is queued already; an item being worked on is queued again
    /// once its worker is done.
    pub fn add(&self, item: K) {
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

    /// Queues every item.
    pub fn add_all(&self, items: impl IntoIterator<Item = K>) {
        for item in items {
            self.add(item);
        }
    }

    /// The next item, or `None` once `stop` turns true.
    pub async fn next(&self, stop: &mut watch::Receiver<bool>) -> Option<K> {
        loop {
            let notified = self.notify.notified();
            if let Some(item) = self.take() {
                return Some(item);
            }
            tokio::select! {
                _ = notified => {}
                _ = stop.wait_for(|s| *s) => return None,
            }
        }
    }

    fn take(&self) -> Option<K> {
        let mut state = self.lock();
        let item = state.order.pop_front()?;
        state.queued.remove(&item);
        state.running.insert(item.clone(), 0);
        let more = !state.order.is_empty();
        drop(state);
        if more {
            self.notify.notify_one();
        }
        Some(item)
    }

    /// Touches of a running item since it was taken (or since [`WorkQueue::settle`]).
    pub fn touches(&self, item: &K) -> u64 {
        self.lock().running.get(item).copied().unwrap_or(0)
    }

    /// The worker is about to read the index: every touch so far will be seen.
    pub fn settle(&self, item: &K) {
        if let Some(touches) = self.lock().running.get_mut(item) {
            *touches = 0;
        }
    }

    /// Waits while a running item keeps being touched (a burst): until `window` passes with
    /// no touch, at most `max`; then settles it.
    pub async fn wait_for_quiet(&self, item: &K, window: Duration, max: Duration) {
        let started = Instant::now();
        loop {
            let before = self.touches(item);
            tokio::time::sleep(window).await;
            if self.touches(item) == before || started.elapsed() >= max {
                break;
            }
        }
        self.settle(item);
    }

    /// The worker is done with `item`; touched meanwhile → queued again.
    pub fn done(&self, item: &K) {
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

    /// The work on `item` succeeded: its backoff starts over.
    pub fn succeeded(&self, item: &K) {
        self.lock().failures.remove(item);
    }

    /// The work on `item` failed: the delay before its next try, which grows with each
    /// failure in a row.
    fn failed(&self, item: &K) -> Duration {
        let mut state = self.lock();
        let failures = state.failures.entry(item.clone()).or_insert(0);
        *failures += 1;
        backoff(*failures)
    }
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> WorkQueue<K> {
    /// The work on `item` failed: it is queued again after its backoff, without holding up
    /// the caller. Returns the delay.
    pub fn retry_later(self: &Arc<Self>, item: K) -> Duration {
        let delay = self.failed(&item);
        self.add_after(item, delay);
        delay
    }

    /// Queues `item` after `delay`, without holding up the caller.
    pub fn add_after(self: &Arc<Self>, item: K, delay: Duration) {
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(item);
        });
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
        let (_tx, mut stop) = watch::channel(false);
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
        let (tx, mut stop) = watch::channel(false);
        let _ = tx.send(true);
        assert_eq!(queue.next(&mut stop).await, None, "nothing left, and stopped");
    }

    #[tokio::test]
    async fn a_failed_item_comes_back_after_its_backoff_and_a_success_resets_it() {
        let queue: Arc<WorkQueue<&str>> = Arc::new(WorkQueue::new(Default::default()));
        let (_tx, mut stop) = watch::channel(false);
        assert_eq!(queue.retry_later("a"), Duration::from_secs(1));
        assert_eq!(queue.retry_later("a"), Duration::from_secs(2));
        let again = tokio::time::timeout(Duration::from_secs(5), queue.next(&mut stop)).await;
        assert_eq!(again, Ok(Some("a")), "queued again after the first delay");
        queue.succeeded(&"a");
        assert_eq!(queue.retry_later("a"), Duration::from_secs(1), "a success starts the backoff over");
    }
}
