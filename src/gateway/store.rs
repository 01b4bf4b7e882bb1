//! The gateway's policy store, pure: the files of the config directory in, the set of
//! policies served out.
//!
//! A [`Snapshot`] is immutable; a reload builds the next one from the previous one and the
//! files just read, so a request that took an `Arc<Policy>` keeps its document whatever
//! happens after. Rules (docs/gateway.md, "Two ways to read the policies"):
//! - one file `<namespace>.<name>.json` per policy ([`PolicyKey::from_data_key`]); other names
//!   (kubelet's `..data`, dot files, anything not shaped like a policy key) are not policies;
//! - a file that is valid JSON (an object, as the operator renders) is served as its exact
//!   bytes, hashed as the operator hashes `status.configHash`;
//! - a file that cannot be read or is not a JSON object keeps that policy's last good
//!   document (or, never loaded, serves nothing) and is reported;
//! - a file that is gone stops serving its policy;
//! - beside it, `<namespace>.<name>.callers` lists who else may use the policy
//!   ([`crate::callers`]); it goes with its document: a broken one keeps the last good pair, and
//!   the served hash covers both ([`policy_hash`]);
//! - during a rollout, `<namespace>.<name>.canary` ([`CanaryEntry`]) holds the new document and
//!   its share of calls: the policy then has a [`Rollout`], and each request takes one of the
//!   two ([`ServedPolicy::choose`]). A broken canary entry is reported and the stable document
//!   serves every call. Calls and failures are counted per document while a rollout lasts
//!   (the counts go on across reloads for as long as the same two documents are in it).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::HeaderValue;

use crate::callers::Callers;
use crate::hash::policy_hash;
use crate::key::PolicyKey;
use crate::rollout::{CallCounts, CanaryEntry, is_canary_call};

/// One served policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedPolicy {
    /// The policy.
    pub key: PolicyKey,
    /// The document, exactly as the file holds it.
    pub document: Bytes,
    /// The callers entry's text, when the policy has one.
    pub callers_entry: Option<Bytes>,
    /// Who may use it besides its own namespace.
    pub callers: Callers,
    /// [`policy_hash`] of the document and callers entry, the same as the policy's
    /// `status.configHash`.
    pub hash: String,
    /// [`Self::hash`] as the value of the answer's hash header (made once, not per call).
    pub hash_header: Option<HeaderValue>,
    /// Whether this is a last good document kept because the file is now broken.
    pub stale: bool,
    /// The rollout under way, when the target holds a canary entry for the policy.
    pub rollout: Option<Arc<Rollout>>,
}

impl ServedPolicy {
    /// The document this call uses — the new one for the rollout's share of calls, else this
    /// one — and the counts the call goes into (only during a rollout).
    pub fn choose(self: &Arc<Self>) -> (Arc<ServedPolicy>, Option<Arc<Counter>>) {
        let Some(rollout) = &self.rollout else { return (self.clone(), None) };
        let n = rollout.sequence.fetch_add(1, Ordering::Relaxed);
        if is_canary_call(n, rollout.weight) {
            (rollout.canary.clone(), Some(rollout.canary_counts.clone()))
        } else {
            (self.clone(), Some(rollout.stable_counts.clone()))
        }
    }
}

/// A rollout as a replica serves it: the new document, its share, and the calls of both.
#[derive(Debug)]
pub struct Rollout {
    /// The new document (with its callers), served to `weight` percent of calls.
    pub canary: Arc<ServedPolicy>,
    /// Percent of calls on the new document.
    pub weight: u8,
    /// Calls chosen so far (the choice is spread evenly over every hundred calls).
    sequence: AtomicU64,
    /// Calls and failures on the stable document.
    pub stable_counts: Arc<Counter>,
    /// Calls and failures on the new document.
    pub canary_counts: Arc<Counter>,
}

impl PartialEq for Rollout {
    fn eq(&self, other: &Self) -> bool {
        self.weight == other.weight && self.canary == other.canary
    }
}

impl Eq for Rollout {}

/// Calls and failures on one document while a rollout lasts. A call costs one atomic add; a
/// failure also takes a lock to count its answer.
#[derive(Debug, Default)]
pub struct Counter {
    calls: AtomicU64,
    failures: AtomicU64,
    answers: Mutex<BTreeMap<String, u64>>,
}

impl Counter {
    /// One call, failed with `answer` (`Some`) or not.
    pub fn record(&self, failure: Option<String>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(answer) = failure {
            self.failures.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut answers) = self.answers.lock() {
                *answers.entry(answer).or_default() += 1;
            }
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> CallCounts {
        CallCounts {
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            answers: self.answers.lock().map(|a| a.clone()).unwrap_or_default(),
        }
    }
}

impl Snapshot {
    /// The calls and failures of every document under rollout, by hash: what the replica
    /// reports.
    pub fn rollout_counts(&self) -> BTreeMap<String, CallCounts> {
        let mut out = BTreeMap::new();
        for policy in self.policies.values() {
            if let Some(rollout) = &policy.rollout {
                out.insert(policy.hash.clone(), rollout.stable_counts.counts());
                out.insert(rollout.canary.hash.clone(), rollout.canary_counts.counts());
            }
        }
        out
    }
}

/// The policies served at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// By policy.
    pub policies: BTreeMap<PolicyKey, Arc<ServedPolicy>>,
}

/// A file of the config directory as read: its bytes, or why it could not be read.
pub type FileRead = Result<Vec<u8>, String>;

/// What a reload found wrong with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadError {
    /// The policy.
    pub policy: PolicyKey,
    /// The data key refused (its document's, or its canary entry's).
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// Whether a last good document is still served.
    pub kept_last_good: bool,
}

/// The result of one reload.
#[derive(Debug, Clone, Default)]
pub struct Reload {
    /// The policies to serve from now on.
    pub snapshot: Snapshot,
    /// Policies served for the first time.
    pub added: Vec<PolicyKey>,
    /// Policies whose document changed.
    pub changed: Vec<PolicyKey>,
    /// Policies no longer served.
    pub removed: Vec<PolicyKey>,
    /// Files that could not be used.
    pub errors: Vec<ReloadError>,
}

/// Why a document's bytes cannot be served, if they cannot: a document is a JSON object of at
/// most `max_bytes`.
fn problem(read: &FileRead, max_bytes: usize) -> Option<String> {
    match read {
        Ok(bytes) if bytes.len() > max_bytes => {
            Some(format!("document of {} bytes exceeds --max-document-bytes ({max_bytes})", bytes.len()))
        }
        Ok(bytes) => match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(serde_json::Value::Object(_)) => None,
            Ok(_) => Some("not a JSON object".to_string()),
            Err(e) => Some(format!("not valid JSON: {e}")),
        },
        Err(e) => Some(format!("cannot read: {e}")),
    }
}

/// A policy's files as read: its document and, if there is one, its callers entry.
struct PolicyFiles {
    document: FileRead,
    callers: Option<FileRead>,
}

/// The policy the files make, or why they make none.
fn served(policy: PolicyKey, files: PolicyFiles, max_bytes: usize) -> Result<ServedPolicy, String> {
    if let Some(problem) = problem(&files.document, max_bytes) {
        return Err(problem);
    }
    let document = Bytes::from(files.document?);
    let (callers_entry, callers) = match files.callers {
        None => (None, Callers::default()),
        Some(read) => {
            let bytes = read.map_err(|e| format!("callers entry: cannot read: {e}"))?;
            let callers = Callers::parse(&bytes)?;
            (Some(Bytes::from(bytes)), callers)
        }
    };
    let hash = policy_hash(&document, callers_entry.as_deref());
    let hash_header = HeaderValue::from_str(&hash).ok();
    Ok(ServedPolicy { key: policy, document, callers_entry, callers, hash, hash_header, stale: false, rollout: None })
}

/// The new document of a canary entry, as a policy of its own (its hash the operator's).
fn canary_of(policy: &PolicyKey, read: FileRead, max_bytes: usize) -> Result<(ServedPolicy, u8), String> {
    let bytes = read.map_err(|e| format!("canary entry: cannot read: {e}"))?;
    let entry = CanaryEntry::parse(&bytes)?;
    let files =
        PolicyFiles { document: Ok(entry.document.into_bytes()), callers: entry.callers.map(|c| Ok(c.into_bytes())) };
    let canary = served(policy.clone(), files, max_bytes).map_err(|e| format!("canary entry: {e}"))?;
    Ok((canary, entry.weight))
}

/// Adds the rollout of `canary` to `stable`, keeping the counts of `before` when it rolled out
/// the same two documents.
fn with_rollout(
    mut stable: ServedPolicy,
    canary: ServedPolicy,
    weight: u8,
    before: Option<&ServedPolicy>,
) -> ServedPolicy {
    let same = before
        .and_then(|b| b.rollout.as_ref())
        .filter(|r| r.canary.hash == canary.hash && before.is_some_and(|b| b.hash == stable.hash));
    let (stable_counts, canary_counts) = match same {
        Some(r) => (r.stable_counts.clone(), r.canary_counts.clone()),
        None => (Arc::default(), Arc::default()),
    };
    stable.rollout = Some(Arc::new(Rollout {
        canary: Arc::new(canary),
        weight,
        sequence: AtomicU64::new(0),
        stable_counts,
        canary_counts,
    }));
    stable
}

/// Builds the next snapshot from the previous one and the files of the directory (by file
/// name; names that are not `<namespace>.<name>.json` are not policies, and a
/// `<namespace>.<name>.callers` goes with its document); a document larger than
/// `max_document_bytes` is refused like a broken one.
pub fn reload(previous: &Snapshot, mut files: BTreeMap<String, FileRead>, max_document_bytes: usize) -> Reload {
    let mut next = BTreeMap::new();
    let mut out = Reload::default();
    let documents: Vec<(PolicyKey, String)> =
        files.keys().filter_map(|f| Some((PolicyKey::from_data_key(f)?, f.clone()))).collect();
    for (policy, file) in documents {
        let Some(document) = files.remove(&file) else { continue };
        let canary = files.remove(&policy.canary_key());
        let read = PolicyFiles { document, callers: files.remove(&policy.callers_key()) };
        let before = previous.policies.get(&policy);
        let now = served(policy.clone(), read, max_document_bytes).map(|now| match canary {
            None => now,
            Some(read) => match canary_of(&policy, read, max_document_bytes) {
                Ok((canary, weight)) => with_rollout(now, canary, weight, before.map(|b| &**b)),
                Err(message) => {
                    // The stable document serves every call.
                    let key = policy.canary_key();
                    out.errors.push(ReloadError { policy: policy.clone(), key, message, kept_last_good: true });
                    now
                }
            },
        });
        match now {
            Ok(now) => match before {
                Some(b)
                    if b.document == now.document
                        && b.callers_entry == now.callers_entry
                        && b.rollout == now.rollout
                        && !b.stale =>
                {
                    next.insert(policy, b.clone());
                }
                _ => {
                    if before.is_some() {
                        out.changed.push(policy.clone());
                    } else {
                        out.added.push(policy.clone());
                    }
                    next.insert(policy, Arc::new(now));
                }
            },
            Err(message) => {
                let (key, kept_last_good) = (policy.data_key(), before.is_some());
                out.errors.push(ReloadError { policy: policy.clone(), key, message, kept_last_good });
                if let Some(b) = before {
                    let kept =
                        if b.stale { b.clone() } else { Arc::new(ServedPolicy { stale: true, ..(**b).clone() }) };
                    next.insert(policy, kept);
                }
            }
        }
    }
    out.removed = previous.policies.keys().filter(|k| !next.contains_key(*k)).cloned().collect();
    out.snapshot = Snapshot { policies: next };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn key(name: &str) -> PolicyKey {
        PolicyKey::parse(name).expect("policy name")
    }

    fn files(entries: &[(&str, &str)]) -> BTreeMap<String, FileRead> {
        entries.iter().map(|(k, v)| (k.to_string(), Ok(v.as_bytes().to_vec()))).collect()
    }

    #[test]
    fn policy_files_are_loaded_with_the_operators_hash() {
        let r =
            reload(&Snapshot::default(), files(&[("team.a.json", r#"{"retry":{"count":2}}"#), ("..data", "x")]), MAX);
        assert_eq!(r.added, [key("team.a")]);
        let p = &r.snapshot.policies[&key("team.a")];
        assert_eq!(p.hash, crate::hash::short_hash(br#"{"retry":{"count":2}}"#));
        assert_eq!(&p.document[..], br#"{"retry":{"count":2}}"#);
    }

    #[test]
    fn a_callers_entry_goes_with_its_document_and_into_its_hash() {
        let callers = r#"[{"namespace":"team-b"}]"#;
        let first = reload(&Snapshot::default(), files(&[("team.a.json", "{}"), ("team.a.callers", callers)]), MAX);
        let p = &first.snapshot.policies[&key("team.a")];
        assert!(p.callers.admits("team", "team-b", "app"));
        assert_eq!(p.hash, policy_hash(b"{}", Some(callers.as_bytes())));
        assert_ne!(p.hash, crate::hash::short_hash(b"{}"));
        // The list goes: same document, a new hash, nobody else admitted.
        let second = reload(&first.snapshot, files(&[("team.a.json", "{}")]), MAX);
        assert_eq!(second.changed, [key("team.a")]);
        assert!(!second.snapshot.policies[&key("team.a")].callers.admits("team", "team-b", "app"));
        // A broken list keeps the last good pair.
        let third = reload(&first.snapshot, files(&[("team.a.json", "{\"a\":1}"), ("team.a.callers", "[1]")]), MAX);
        assert!(third.errors[0].message.contains("callers"), "{:?}", third.errors);
        let kept = &third.snapshot.policies[&key("team.a")];
        assert!(kept.stale && &kept.document[..] == b"{}" && kept.callers.admits("team", "team-b", "x"));
        // A list without its document serves nothing.
        assert!(reload(&Snapshot::default(), files(&[("team.b.callers", callers)]), MAX).snapshot.policies.is_empty());
    }

    #[test]
    fn a_canary_entry_gives_its_share_of_calls_to_the_new_document_and_counts_both() {
        let entry = crate::rollout::CanaryEntry { weight: 20, document: r#"{"b":2}"#.into(), callers: None };
        let text = entry.to_text();
        let first =
            reload(&Snapshot::default(), files(&[("team.a.json", r#"{"a":1}"#), ("team.a.canary", &text)]), MAX);
        let p = first.snapshot.policies[&key("team.a")].clone();
        let mut canary = 0;
        for _ in 0..100 {
            let (chosen, counter) = p.choose();
            if chosen.hash == entry.hash() {
                canary += 1;
            }
            counter.expect("counted during a rollout").record(None);
        }
        assert_eq!(canary, 20);
        // The counts go on while the same two documents roll out, at another weight too.
        let step2 = crate::rollout::CanaryEntry { weight: 50, ..entry.clone() }.to_text();
        let second = reload(&first.snapshot, files(&[("team.a.json", r#"{"a":1}"#), ("team.a.canary", &step2)]), MAX);
        assert_eq!(second.changed, [key("team.a")]);
        let (chosen, counter) = second.snapshot.policies[&key("team.a")].choose();
        counter.expect("counted").record(crate::rollout::failure_of_status(404));
        let counts = second.snapshot.rollout_counts();
        let (stable, new) = (&counts[&p.hash], &counts[&entry.hash()]);
        assert_eq!(stable.calls + new.calls, 101);
        assert_eq!(counts[&chosen.hash].failures, 1);
        // The rollout ends: one document, no counts, nothing reported.
        let third = reload(&second.snapshot, files(&[("team.a.json", r#"{"b":2}"#)]), MAX);
        let (_, counter) = third.snapshot.policies[&key("team.a")].choose();
        assert!(counter.is_none() && third.snapshot.rollout_counts().is_empty());
    }

    #[test]
    fn a_broken_canary_entry_is_refused_and_the_stable_document_serves_every_call() {
        let r =
            reload(&Snapshot::default(), files(&[("team.a.json", "{}"), ("team.a.canary", r#"{"weight":5}"#)]), MAX);
        assert_eq!(r.errors[0].key, "team.a.canary");
        assert!(r.errors[0].message.contains("canary entry"), "{:?}", r.errors);
        let p = &r.snapshot.policies[&key("team.a")];
        assert!(p.rollout.is_none() && &p.document[..] == b"{}");
    }

    #[test]
    fn broken_file_keeps_last_good_document() {
        let first = reload(&Snapshot::default(), files(&[("team.a.json", r#"{"a":1}"#)]), MAX);
        let second = reload(&first.snapshot, files(&[("team.a.json", "{not json")]), MAX);
        assert_eq!(second.errors.len(), 1);
        assert!(second.errors[0].kept_last_good);
        assert_eq!(&second.snapshot.policies[&key("team.a")].document[..], br#"{"a":1}"#);
        assert!(second.snapshot.policies[&key("team.a")].stale);
        let third = reload(&second.snapshot, files(&[("team.a.json", r#"{"a":2}"#)]), MAX);
        assert_eq!(third.changed, [key("team.a")]);
        assert!(!third.snapshot.policies[&key("team.a")].stale);
    }

    #[test]
    fn broken_new_file_serves_nothing_and_is_reported() {
        let r = reload(&Snapshot::default(), files(&[("team.a.json", "[1,2]")]), MAX);
        assert!(r.snapshot.policies.is_empty());
        assert_eq!(r.errors[0].message, "not a JSON object");
        assert!(!r.errors[0].kept_last_good);
        let unreadable: BTreeMap<_, _> = [("team.b.json".to_string(), Err("permission denied".to_string()))].into();
        assert!(reload(&Snapshot::default(), unreadable, MAX).errors[0].message.contains("permission denied"));
    }

    #[test]
    fn removed_file_stops_serving_its_policy() {
        let first = reload(&Snapshot::default(), files(&[("team.a.json", "{}"), ("team.b.json", "{}")]), MAX);
        let second = reload(&first.snapshot, files(&[("team.b.json", "{}")]), MAX);
        assert_eq!(second.removed, [key("team.a")]);
        assert!(Arc::ptr_eq(&first.snapshot.policies[&key("team.b")], &second.snapshot.policies[&key("team.b")]));
    }

    #[test]
    fn a_document_over_the_size_bound_is_refused_and_the_last_good_one_stays() {
        let first = reload(&Snapshot::default(), files(&[("team.a.json", r#"{"a":1}"#)]), 16);
        let second = reload(&first.snapshot, files(&[("team.a.json", r#"{"a":"a long document"}"#)]), 16);
        assert!(second.errors[0].message.contains("exceeds --max-document-bytes (16)"), "{:?}", second.errors);
        assert!(second.errors[0].kept_last_good);
        assert_eq!(&second.snapshot.policies[&key("team.a")].document[..], br#"{"a":1}"#);
    }

    #[test]
    fn policy_names_are_checked_strictly() {
        for ok in ["team.a", "team-1.my.policy", "a.b"] {
            assert!(PolicyKey::parse(ok).is_ok(), "{ok}");
        }
        for bad in
            ["", "team", ".a", "team.", "../etc.passwd", "team./x", "Team.a", "team..a", "te am.a", "team.a/b", "-t.a"]
        {
            assert!(PolicyKey::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(PolicyKey::from_data_key("team.a.json"), Some(key("team.a")));
        assert_eq!(PolicyKey::from_data_key("..2026_11_25.json"), None);
        assert_eq!(PolicyKey::from_data_key("team.a.yaml"), None);
    }
}
