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
//!   the served hash covers both ([`policy_hash`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::callers::Callers;
use crate::hash::policy_hash;
use crate::key::PolicyKey;

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
    Ok(ServedPolicy { key: policy, document, callers_entry, callers, hash, stale: false })
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
        let read = PolicyFiles { document, callers: files.remove(&policy.callers_key()) };
        let before = previous.policies.get(&policy);
        match served(policy.clone(), read, max_document_bytes) {
            Ok(now) => match before {
                Some(b) if b.document == now.document && b.callers_entry == now.callers_entry && !b.stale => {
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
