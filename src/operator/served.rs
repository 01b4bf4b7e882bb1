//! Served: the gateway replicas' reports, and what they say about one policy's document at one
//! target (docs/gateway.md, "Ready means served"). Pure: the clock is passed in.
//!
//! A replica counts once its report Lease exists (it is created after the replica's first
//! complete load) and until the Lease expires or is released. A replica that starts, renews or
//! goes away changes the denominator, never a verdict about a document it had served: only a
//! new document, a rejection, or a replica that does not catch up within the stale bound does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use k8s_openapi::api::coordination::v1::Lease;

use crate::key::TargetKey;
use crate::rollout::CallCounts;
use crate::serving::LeaseReport;

/// A replica's report Lease, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaKey {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
}

impl fmt::Display for ReplicaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl ReplicaKey {
    /// The report Lease's key.
    pub fn of(lease: &Lease) -> ReplicaKey {
        let meta = &lease.metadata;
        ReplicaKey {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

/// The replica a report Lease describes: its [`ServingReport`](crate::serving::ServingReport) annotation, its holder, and
/// when it expires unless renewed. `None` when the report cannot be read (it then does not
/// count, as if the replica had not reported yet).
pub fn replica_of(lease: &Lease) -> Option<Replica> {
    Replica::from_lease_report(LeaseReport::of(lease)?)
}

/// One replica's report as the operator keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    /// Who it is (the Lease's `holderIdentity`, or its name).
    pub identity: String,
    /// The ConfigMap it serves.
    pub target: TargetKey,
    /// The resourceVersion it has loaded.
    pub revision: u64,
    /// Data keys it refuses, with why.
    pub rejected: BTreeMap<String, String>,
    /// When its Lease expires unless renewed (Unix milliseconds).
    pub expires_ms: i64,
    /// Calls and failures per document hash under rollout.
    pub calls: BTreeMap<String, CallCounts>,
    /// A volume-mode replica: its calls count in rollouts, `Served` does not count it.
    pub volume: bool,
}

impl Replica {
    /// The replica a report Lease describes; `None` when its report names no ConfigMap.
    pub fn from_lease_report(lease: LeaseReport) -> Option<Replica> {
        Some(Replica {
            target: lease.report.target()?,
            revision: lease.report.revision(),
            expires_ms: lease.expires_ms(),
            identity: lease.identity,
            rejected: lease.report.rejected,
            calls: lease.report.calls,
            volume: lease.report.volume,
        })
    }

    /// Whether two reports say the same about what is served (renewals do not).
    fn same_content(&self, other: &Replica) -> bool {
        self.target == other.target
            && self.revision == other.revision
            && self.rejected == other.rejected
            && self.calls == other.calls
            && self.volume == other.volume
    }
}

/// Where the current document of a policy landed in one target: its hash, the target's
/// resourceVersion it first landed at, and when (Unix milliseconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Landed {
    /// The document's hash.
    pub hash: String,
    /// The ConfigMap's resourceVersion at which it was first there.
    pub revision: u64,
    /// When the operator saw it land.
    pub at_ms: i64,
}

/// What the live replicas of one target say about one document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Serve {
    /// No live replica reports for the target.
    NoReports,
    /// Every live replica serves it.
    Served {
        /// Live replicas reporting.
        replicas: u32,
    },
    /// Some have not loaded it yet, within the stale bound.
    Pending {
        /// Live replicas reporting.
        replicas: u32,
        /// Of those, the ones that serve it.
        serving: u32,
        /// When the document landed (Unix milliseconds).
        since_ms: i64,
    },
    /// A replica has not loaded it within the stale bound.
    Stale {
        /// Live replicas reporting.
        replicas: u32,
        /// Of those, the ones that serve it.
        serving: u32,
        /// One replica that lags.
        replica: String,
    },
    /// A replica refuses it (and keeps serving the last good document).
    Rejected {
        /// Live replicas reporting.
        replicas: u32,
        /// Of those, the ones that serve it.
        serving: u32,
        /// The replica that refuses it.
        replica: String,
        /// Why.
        message: String,
    },
}

impl Serve {
    /// `(serving, reporting)` replicas, for `status.targets[]`; `None` without reports.
    pub fn counts(&self) -> Option<(u32, u32)> {
        match self {
            Serve::NoReports => None,
            Serve::Served { replicas } => Some((*replicas, *replicas)),
            Serve::Pending { replicas, serving, .. }
            | Serve::Stale { replicas, serving, .. }
            | Serve::Rejected { replicas, serving, .. } => Some((*serving, *replicas)),
        }
    }
}

/// Every live replica's report.
#[derive(Debug, Default)]
pub struct Reports {
    replicas: HashMap<ReplicaKey, Replica>,
    by_target: HashMap<TargetKey, BTreeSet<ReplicaKey>>,
}

impl Reports {
    /// A report Lease was created or renewed. Returns the targets whose verdicts may change
    /// (none for a renewal that says what the replica said before).
    pub fn apply(&mut self, key: ReplicaKey, replica: Replica) -> Vec<TargetKey> {
        let touched = match self.replicas.get(&key) {
            Some(old) if old.same_content(&replica) => Vec::new(),
            Some(old) if old.target != replica.target => vec![old.target.clone(), replica.target.clone()],
            _ => vec![replica.target.clone()],
        };
        if let Some(old) = self.replicas.get(&key)
            && old.target != replica.target
        {
            self.unlink(&key, &old.target.clone());
        }
        self.by_target.entry(replica.target.clone()).or_default().insert(key.clone());
        self.replicas.insert(key, replica);
        touched
    }

    /// A report Lease was released or deleted. Returns its target.
    pub fn delete(&mut self, key: &ReplicaKey) -> Option<TargetKey> {
        let old = self.replicas.remove(key)?;
        self.unlink(key, &old.target);
        Some(old.target)
    }

    fn unlink(&mut self, key: &ReplicaKey, target: &TargetKey) {
        if let Some(set) = self.by_target.get_mut(target) {
            set.remove(key);
            if set.is_empty() {
                self.by_target.remove(target);
            }
        }
    }

    /// Drops the reports whose Lease expired by `now_ms` (a replica that died without
    /// releasing it). Returns their targets.
    pub fn expire(&mut self, now_ms: i64) -> Vec<TargetKey> {
        let expired: Vec<ReplicaKey> =
            self.replicas.iter().filter(|(_, r)| r.expires_ms <= now_ms).map(|(k, _)| k.clone()).collect();
        expired.iter().filter_map(|k| self.delete(k)).collect()
    }

    /// The replica Leases known, with the watch they came from (for a relist).
    pub fn keys(&self) -> Vec<ReplicaKey> {
        self.replicas.keys().cloned().collect()
    }

    /// The calls and failures the live replicas of `target` report for the document `hash`.
    /// Only reports kept in the ConfigMap's own namespace count: another namespace's gateway
    /// token cannot promote or roll back a change by claiming calls.
    pub fn calls(&self, target: &TargetKey, hash: &str, now_ms: i64) -> CallCounts {
        let mut total = CallCounts::default();
        let here = self.by_target.get(target).into_iter().flatten().filter(|k| *k.namespace == *target.namespace);
        for replica in here.filter_map(|k| self.replicas.get(k)) {
            if replica.expires_ms > now_ms
                && let Some(counts) = replica.calls.get(hash)
            {
                total.add(counts);
            }
        }
        total
    }

    /// What the live replicas of `target` say about the document of `data_key` that landed
    /// as `landed`; past `stale_after_ms` since it landed, a lagging replica is stale.
    pub fn serve(
        &self,
        target: &TargetKey,
        data_key: &str,
        landed: Option<&Landed>,
        now_ms: i64,
        stale_after_ms: i64,
    ) -> Serve {
        let replicas: Vec<&Replica> = self
            .by_target
            .get(target)
            .into_iter()
            .flatten()
            .filter_map(|k| self.replicas.get(k))
            .filter(|r| r.expires_ms > now_ms && !r.volume)
            .collect();
        if replicas.is_empty() {
            return Serve::NoReports;
        }
        let total = replicas.len() as u32;
        let revision = landed.map_or(u64::MAX, |l| l.revision);
        let serving =
            replicas.iter().filter(|r| r.revision >= revision && !r.rejected.contains_key(data_key)).count() as u32;
        if let Some((replica, message)) =
            replicas.iter().find_map(|r| r.rejected.get(data_key).map(|m| (r.identity.clone(), m.clone())))
        {
            return Serve::Rejected { replicas: total, serving, replica, message };
        }
        if serving == total {
            return Serve::Served { replicas: total };
        }
        let since_ms = landed.map_or(now_ms, |l| l.at_ms);
        if now_ms.saturating_sub(since_ms) >= stale_after_ms {
            let replica =
                replicas.iter().find(|r| r.revision < revision).map(|r| r.identity.clone()).unwrap_or_default();
            return Serve::Stale { replicas: total, serving, replica };
        }
        Serve::Pending { replicas: total, serving, since_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> TargetKey {
        TargetKey::new("gw", "policies")
    }

    fn replica(identity: &str, revision: u64, expires_ms: i64) -> Replica {
        Replica {
            identity: identity.into(),
            target: target(),
            revision,
            rejected: BTreeMap::new(),
            expires_ms,
            calls: BTreeMap::new(),
            volume: false,
        }
    }

    fn key(name: &str) -> ReplicaKey {
        ReplicaKey { namespace: "gw".into(), name: name.into() }
    }

    fn landed(revision: u64, at_ms: i64) -> Landed {
        Landed { hash: "h".into(), revision, at_ms }
    }

    #[test]
    fn every_live_replica_at_or_past_the_landing_serves_the_document() {
        let mut reports = Reports::default();
        reports.apply(key("a"), replica("a", 10, 60_000));
        reports.apply(key("b"), replica("b", 12, 60_000));
        let serve = reports.serve(&target(), "team.p.json", Some(&landed(10, 0)), 1_000, 10_000);
        assert_eq!(serve, Serve::Served { replicas: 2 });
        assert_eq!(serve.counts(), Some((2, 2)));
    }

    #[test]
    fn a_lagging_replica_is_pending_then_stale() {
        let mut reports = Reports::default();
        reports.apply(key("a"), replica("a", 10, 60_000));
        reports.apply(key("b"), replica("b", 9, 60_000));
        let pending = reports.serve(&target(), "team.p.json", Some(&landed(10, 0)), 1_000, 10_000);
        assert_eq!(pending, Serve::Pending { replicas: 2, serving: 1, since_ms: 0 });
        let stale = reports.serve(&target(), "team.p.json", Some(&landed(10, 0)), 10_000, 10_000);
        assert_eq!(stale, Serve::Stale { replicas: 2, serving: 1, replica: "b".into() });
    }

    #[test]
    fn a_rejection_names_the_replica_and_why() {
        let mut reports = Reports::default();
        let mut refusing = replica("a", 10, 60_000);
        refusing.rejected.insert("team.p.json".into(), "too large".into());
        reports.apply(key("a"), refusing);
        let serve = reports.serve(&target(), "team.p.json", Some(&landed(10, 0)), 1_000, 10_000);
        assert_eq!(
            serve,
            Serve::Rejected { replicas: 1, serving: 0, replica: "a".into(), message: "too large".into() }
        );
        assert_eq!(
            reports.serve(&target(), "team.q.json", Some(&landed(10, 0)), 1_000, 10_000),
            Serve::Served { replicas: 1 }
        );
    }

    #[test]
    fn a_volume_mode_replica_counts_in_rollouts_but_not_for_served() {
        let mut reports = Reports::default();
        let counts = CallCounts { calls: 30, failures: 3, answers: BTreeMap::new() };
        let volume =
            Replica { volume: true, calls: [("new".to_string(), counts)].into(), ..replica("gw-v", 0, 10_000) };
        let key = |name: &str| ReplicaKey { namespace: "gw".into(), name: name.into() };
        reports.apply(key("gw-v"), volume);
        let landed = Landed { hash: "new".into(), revision: 5, at_ms: 0 };
        assert_eq!(reports.serve(&target(), "team.p.json", Some(&landed), 1_000, 10_000), Serve::NoReports);
        reports.apply(key("gw-a"), replica("gw-a", 5, 10_000));
        assert_eq!(
            reports.serve(&target(), "team.p.json", Some(&landed), 1_000, 10_000),
            Serve::Served { replicas: 1 }
        );
        assert_eq!(
            (reports.calls(&target(), "new", 1_000).calls, reports.calls(&target(), "new", 1_000).failures),
            (30, 3)
        );
        assert_eq!(reports.calls(&target(), "new", 20_000).calls, 0, "an expired report counts no calls");
        // A report kept in another namespace claims calls in vain.
        let elsewhere = ReplicaKey { namespace: "team-x".into(), name: "gw-x".into() };
        let claim = CallCounts { calls: 1000, failures: 1000, answers: BTreeMap::new() };
        reports.apply(elsewhere, Replica { calls: [("new".to_string(), claim)].into(), ..replica("gw-x", 5, 10_000) });
        assert_eq!(reports.calls(&target(), "new", 1_000).calls, 30);
    }

    #[test]
    fn renewals_touch_nothing_and_expired_or_released_replicas_stop_counting() {
        let mut reports = Reports::default();
        assert_eq!(reports.apply(key("a"), replica("a", 10, 5_000)), [target()]);
        assert!(reports.apply(key("a"), replica("a", 10, 9_000)).is_empty(), "a renewal");
        assert_eq!(reports.apply(key("a"), replica("a", 11, 9_000)), [target()], "a new load");
        reports.apply(key("b"), replica("b", 11, 20_000));
        assert_eq!(reports.expire(10_000), [target()]);
        assert_eq!(reports.serve(&target(), "k", Some(&landed(11, 0)), 10_000, 10_000), Serve::Served { replicas: 1 });
        assert_eq!(reports.delete(&key("b")), Some(target()));
        assert_eq!(reports.serve(&target(), "k", Some(&landed(11, 0)), 10_000, 10_000), Serve::NoReports);
    }
}
