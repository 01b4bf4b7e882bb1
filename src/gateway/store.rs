//! The gateway's policy store, pure: the files of the config directory in, the set of
//! policies served out.
//!
//! A [`Snapshot`] is immutable; a reload builds the next one from the previous one and the
//! files just read, so a request that took an `Arc<Policy>` keeps its document whatever
//! happens after. Rules (PRODUCT §10):
//! - one file `<namespace>.<name>.json` per policy ([`PolicyKey::from_data_key`]); other names
//!   (kubelet's `..data`, dot files, anything not shaped like a policy key) are not policies;
//! - a file that is valid JSON (an object, as the operator renders) is served as its exact
//!   bytes, hashed as the operator hashes `status.configHash`;
//! - a file that cannot be read or is not a JSON object keeps that policy's last good
//!   document (or, never loaded, serves nothing) and is reported;
//! - a file that is gone stops serving its policy.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::hash::short_hash;
use crate::key::PolicyKey;

/// One served policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedPolicy {
    /// The policy.
    pub key: PolicyKey,
    /// The document, exactly as the file holds it.
    pub document: Bytes,
    /// First 16 hex digits of its SHA-256, the same as the policy's `status.configHash`.
    pub hash: String,
    /// Whether this is a last good document kept because the file is now broken.
    pub stale: bool,
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

/// Why a file's bytes cannot be served, if they cannot: a document is a JSON object of at most
/// `max_bytes`.
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

/// Builds the next snapshot from the previous one and the files of the directory (by file
/// name; names that are not `<namespace>.<name>.json` are not policies); a document larger
/// than `max_document_bytes` is refused like a broken one.
pub fn reload(previous: &Snapshot, files: BTreeMap<String, FileRead>, max_document_bytes: usize) -> Reload {
    let mut next = BTreeMap::new();
    let mut out = Reload::default();
    for (file, read) in files {
        let Some(policy) = PolicyKey::from_data_key(&file) else { continue };
        let before = previous.policies.get(&policy);
        match (problem(&read, max_document_bytes), read) {
            (None, Ok(bytes)) => {
                let document = Bytes::from(bytes);
                match before {
                    Some(b) if b.document == document && !b.stale => {
                        next.insert(policy, b.clone());
                    }
                    _ => {
                        if before.is_some() {
                            out.changed.push(policy.clone());
                        } else {
                            out.added.push(policy.clone());
                        }
                        let hash = short_hash(&document);
                        let served = ServedPolicy { key: policy.clone(), document, hash, stale: false };
                        next.insert(policy, Arc::new(served));
                    }
                }
            }
            (problem, _) => {
                let message = problem.unwrap_or_default();
                out.errors.push(ReloadError { policy: policy.clone(), message, kept_last_good: before.is_some() });
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
        assert_eq!(p.hash, short_hash(br#"{"retry":{"count":2}}"#));
        assert_eq!(&p.document[..], br#"{"retry":{"count":2}}"#);
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
