//! The leader's fence. A replica that was not running for longer than its lease may go
//! unrenewed (SIGSTOPped, frozen by its node, starved of CPU) may have lost the lease to a
//! standby without knowing it yet: its lease manager learns so only at its next renewal, and
//! work queued before the freeze wakes up at the same moment. The fence sees the gap in its own
//! heartbeat and, from then on, every write is refused and the replica stands down (the process
//! exits, as on a lost lease, and rejoins as a standby), so two replicas never write at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::warn;

/// How often the heartbeat ticks.
pub const HEARTBEAT: Duration = Duration::from_millis(250);

/// Whether this replica may still write as the leader.
#[derive(Debug)]
pub struct Fence {
    origin: Instant,
    /// Milliseconds since `origin` at the last heartbeat.
    last: AtomicU64,
    /// The longest gap between heartbeats that keeps the lease safe.
    max_gap: Duration,
    broken: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Fence {
    /// A fence for a lease renewed `grace` before it expires: the lease is valid for at least
    /// `grace` after any moment this replica ran, so a longer gap may already have let it expire.
    pub fn new(grace: Duration) -> Arc<Fence> {
        Arc::new(Fence {
            origin: Instant::now(),
            last: AtomicU64::new(0),
            max_gap: grace.max(HEARTBEAT * 4),
            broken: AtomicBool::new(false),
            notify: tokio::sync::Notify::new(),
        })
    }

    /// Whether writes may go on: false, for good, once a gap longer than the lease allows was
    /// seen (here or by the heartbeat).
    pub fn holds(&self) -> bool {
        if self.broken.load(Ordering::Acquire) {
            return false;
        }
        let gap = self.now_ms().saturating_sub(self.last.load(Ordering::Acquire));
        if gap > self.max_gap.as_millis() as u64 {
            self.break_with(gap);
            return false;
        }
        true
    }

    /// Beats every [`HEARTBEAT`] until the fence breaks.
    pub async fn heartbeat(self: Arc<Self>) {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            if !self.holds() {
                return;
            }
            self.last.store(self.now_ms(), Ordering::Release);
        }
    }

    /// Resolves once the fence is broken.
    pub async fn broken(&self) {
        loop {
            let notified = self.notify.notified();
            if self.broken.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    fn break_with(&self, gap_ms: u64) {
        if !self.broken.swap(true, Ordering::AcqRel) {
            warn!(
                stopped_ms = gap_ms,
                lease_safe_ms = self.max_gap.as_millis() as u64,
                "this replica did not run for longer than its lease allows; writing nothing more and standing down"
            );
            self.notify.notify_waiters();
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_fence_holds() {
        assert!(Fence::new(Duration::from_secs(7)).holds());
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_longer_than_the_lease_allows_breaks_it_for_good() {
        let fence = Fence::new(Duration::from_secs(3));
        tokio::spawn(fence.clone().heartbeat());
        tokio::time::sleep(Duration::from_secs(10)).await;
        // The heartbeat ran all along (paused time advances with it): still held.
        assert!(fence.holds());
        // A gap with nothing running, as a SIGSTOP makes: std's clock moves, tokio's does not.
        std::thread::sleep(Duration::from_millis(3100));
        assert!(!fence.holds(), "a 3.1 s gap with a grace of 3 s");
        tokio::time::timeout(Duration::from_secs(1), fence.broken()).await.expect("broken() resolves");
        std::thread::sleep(Duration::from_millis(10));
        assert!(!fence.holds(), "broken for good");
    }
}
