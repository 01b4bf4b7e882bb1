//! Budget: how many bytes of request bodies the gateway holds at once
//! (`--max-buffered-bytes`). A request reserves what it can hold before its body is read — a
//! streamed body its window (1 MiB at most), a buffered one its `Content-Length`, or
//! `--max-body-bytes` when it sends none — and returns it once its body has gone upstream (the
//! upstream body carries the reservation): a call that only waits for orq's answer holds none.
//! One that does not fit waits up to `--max-buffered-wait` for room, its body unread, and is
//! then shed — 503 `overloaded` with `Retry-After` — so a flood of large or stalled uploads
//! cannot take the replica's memory. Bodies over 1 MiB may hold at most three quarters of the
//! budget: the last quarter is for small requests, which keep being served through a flood of
//! large ones.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

/// Reservations are counted in KiB (a semaphore's permits are counted in `u32`).
const UNIT: u64 = 1024;
/// Bodies up to this size may use the whole budget; larger ones three quarters of it.
const SMALL: u64 = 1024 * 1024;
/// Shedding is logged at most this often, with the count since the last line.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The budget of request body bytes.
pub struct Budget {
    permits: Arc<Semaphore>,
    /// The part of the budget large bodies may hold.
    large: Arc<Semaphore>,
    gauge: Gauge,
    /// When shedding was last logged, and the requests shed since.
    shed_log: Mutex<(Option<Instant>, u64)>,
}

/// Bytes reserved for one request body; returned when dropped.
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
    _large: Option<OwnedSemaphorePermit>,
    bytes: i64,
    gauge: Gauge,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.gauge.dec_by(self.bytes);
    }
}

fn units(bytes: u64) -> u32 {
    bytes.div_ceil(UNIT).clamp(1, u64::from(u32::MAX)) as u32
}

impl Budget {
    /// A budget of `max_bytes`, published on `gauge` (bytes reserved now).
    pub fn new(max_bytes: u64, gauge: Gauge) -> Budget {
        let total = (units(max_bytes) as usize).min(Semaphore::MAX_PERMITS);
        Budget {
            permits: Arc::new(Semaphore::new(total)),
            large: Arc::new(Semaphore::new(total / 4 * 3)),
            gauge,
            shed_log: Mutex::new((None, 0)),
        }
    }

    /// Reserves `bytes` now for a body of `body_bytes` (which decides whether it is a large
    /// one), or `None` when they do not fit (the request is shed; logged once per burst).
    pub fn reserve(&self, bytes: u64, body_bytes: u64) -> Option<Reservation> {
        self.try_reserve(units(bytes), body_bytes).or_else(|| self.shed())
    }

    /// [`Budget::reserve`], waiting up to `wait` for room when there is none now: bodies on
    /// their way upstream return theirs within moments, so a burst of arrivals is queued (its
    /// bodies wait unread in the kernel's socket buffers) rather than shed. Waiters are served
    /// in order; `None` once `wait` has passed (shed).
    pub async fn reserve_within(&self, bytes: u64, body_bytes: u64, wait: Duration) -> Option<Reservation> {
        let units = units(bytes);
        if let Some(reservation) = self.try_reserve(units, body_bytes) {
            return Some(reservation);
        }
        let acquire = async {
            let large = match body_bytes > SMALL {
                true => Some(self.large.clone().acquire_many_owned(units).await.ok()?),
                false => None,
            };
            let permit = self.permits.clone().acquire_many_owned(units).await.ok()?;
            Some(self.reservation(permit, large, units))
        };
        match tokio::time::timeout(wait, acquire).await {
            Ok(Some(reservation)) => Some(reservation),
            _ => self.shed(),
        }
    }

    fn try_reserve(&self, units: u32, body_bytes: u64) -> Option<Reservation> {
        let large = match body_bytes > SMALL {
            true => Some(self.large.clone().try_acquire_many_owned(units).ok()?),
            false => None,
        };
        let permit = self.permits.clone().try_acquire_many_owned(units).ok()?;
        Some(self.reservation(permit, large, units))
    }

    fn reservation(
        &self,
        permit: OwnedSemaphorePermit,
        large: Option<OwnedSemaphorePermit>,
        units: u32,
    ) -> Reservation {
        let bytes = i64::from(units) * UNIT as i64;
        self.gauge.inc_by(bytes);
        Reservation { _permit: permit, _large: large, bytes, gauge: self.gauge.clone() }
    }

    fn shed(&self) -> Option<Reservation> {
        self.log_shed();
        None
    }

    fn log_shed(&self) {
        let Ok(mut log) = self.shed_log.lock() else { return };
        log.1 += 1;
        if log.0.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
            warn!(
                shed = log.1,
                reserved_bytes = self.gauge.get(),
                "request bodies in flight are at --max-buffered-bytes; answering 503 overloaded"
            );
            *log = (Some(Instant::now()), 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_until_the_budget_is_spent_and_come_back_when_dropped() {
        let budget = Budget::new(10 * 1024, Gauge::default());
        let first = budget.reserve(6 * 1024, 6 * 1024).expect("fits");
        assert!(budget.reserve(6 * 1024, 6 * 1024).is_none(), "6 + 6 KiB do not fit in 10");
        let small = budget.reserve(100, 100).expect("a small body still fits");
        assert_eq!(budget.gauge.get(), 7 * 1024);
        drop(first);
        drop(small);
        assert_eq!(budget.gauge.get(), 0);
        assert!(budget.reserve(10 * 1024, 10 * 1024).is_some(), "the whole budget is free again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_for_room_within_its_bound_and_is_shed_after_it() {
        let budget = Budget::new(10 * 1024, Gauge::default());
        let first = budget.reserve(8 * 1024, 8 * 1024).expect("fits");
        let wait = Duration::from_secs(1);
        let (waited, ()) = tokio::join!(budget.reserve_within(8 * 1024, 8 * 1024, wait), async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(first); // the first body has gone upstream
        });
        assert!(waited.is_some(), "room came back within the wait");
        let started = tokio::time::Instant::now();
        assert!(budget.reserve_within(8 * 1024, 8 * 1024, wait).await.is_none(), "no room within the wait");
        assert_eq!(started.elapsed(), wait, "shed once the wait is over, not before");
    }

    #[test]
    fn large_bodies_leave_a_quarter_of_the_budget_to_small_ones() {
        let budget = Budget::new(8 * SMALL, Gauge::default());
        let large: Vec<_> = (0..3).filter_map(|_| budget.reserve(2 * SMALL, 2 * SMALL)).collect();
        assert_eq!(large.len(), 3, "three quarters: 6 of 8 MiB");
        assert!(budget.reserve(2 * SMALL, 2 * SMALL).is_none(), "a fourth large body is shed");
        let small: Vec<_> = (0..2).filter_map(|_| budget.reserve(SMALL, SMALL)).collect();
        assert_eq!(small.len(), 2, "small bodies still fit in the last quarter");
    }
}
