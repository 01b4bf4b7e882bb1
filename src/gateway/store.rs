//! The gateway's policy store, pure: the files of the config directory in, the set of
//! policies served out.
//!
//! A [`Snapshot`] is immutable; a reload builds the next one from the previous one and the
//! files just read, so a request that took an `Arc<Policy>` keeps its document whatever
//! happens after. Rules (PRODUCT §10):
//! - one file `<namespace>.<name>.json` per policy; other names (kubelet's `..data`, dot
//!   files, anything not shaped like a policy key) are not policies;
//! - a file that is valid JSON (an object, as the operator renders) is served as its exact
//!   bytes, hashed as the operator hashes `status.configHash`;
//! - a file that cannot be read or is not a JSON object keeps that policy's last good
//!   document (or, never loaded, serves nothing) and is reported;
//! - a file that is gone stops serving its policy.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::render::short_hash;

/// One served policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `<namespace>.<name>`.
    pub name: String,
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
    /// By `<namespace>.<name>`.
    pub policies: BTreeMap<String, Arc<Policy>>,
}

/// A file of the config directory as read: its bytes, or why it could not be read.
pub type FileRead = Result<Vec<u8>, String>;

/// What a reload found wrong with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadError {
    /// `<namespace>.<name>`.
    pub policy: String,
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
    pub added: Vec<String>,
    /// Policies whose document changed.
    pub changed: Vec<String>,
    /// Policies no longer served.
    pub removed: Vec<String>,
    /// Files that could not be used.
    pub errors: Vec<ReloadError>,
}

/// Whether `s` is a DNS-1123 label (a namespace).
fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Checks a policy name `<namespace>.<name>` as the header `X-Routerpolicy-Policy` carries
/// it: a DNS-1123 label, a dot, a DNS-1123 subdomain. Nothing else (no `/`, no `..`, no
/// spaces) can name a policy, so a name never reaches the filesystem unchecked — and the
/// gateway never opens a file by a caller's name anyway: it looks names up in memory.
pub fn check_policy_name(name: &str) -> Result<(), String> {
    let Some((namespace, policy)) = name.split_once('.') else {
        return Err("must be <namespace>.<name>".into());
    };
    if !is_label(namespace) {
        return Err(format!("namespace {namespace:?} is not a DNS-1123 label"));
    }
    if policy.is_empty() || policy.len() > 253 || !policy.split('.').all(is_label) {
        return Err(format!("name {policy:?} is not a DNS-1123 subdomain"));
    }
    Ok(())
}

/// The policy a config file serves, if its name is a policy key `<namespace>.<name>.json`.
pub fn policy_of_file(file_name: &str) -> Option<&str> {
    let policy = file_name.strip_suffix(".json")?;
    check_policy_name(policy).ok().map(|()| policy)
}

/// Builds the next snapshot from the previous one and the files of the directory.
pub fn reload(previous: &Snapshot, files: BTreeMap<String, FileRead>) -> Reload {
    let mut next = BTreeMap::new();
    let mut out = Reload::default();
    for (file, read) in files {
        let Some(policy) = policy_of_file(&file) else { continue };
        let policy = policy.to_string();
        let before = previous.policies.get(&policy);
        let problem = match &read {
            Ok(bytes) => match serde_json::from_slice::<serde_json::Value>(bytes) {
                Ok(serde_json::Value::Object(_)) => None,
                Ok(_) => Some("not a JSON object".to_string()),
                Err(e) => Some(format!("not valid JSON: {e}")),
            },
            Err(e) => Some(format!("cannot read: {e}")),
        };
        match (problem, read) {
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
                        next.insert(policy.clone(), Arc::new(Policy { name: policy, document, hash, stale: false }));
                    }
                }
            }
            (problem, _) => {
                let message = problem.unwrap_or_default();
                out.errors.push(ReloadError { policy: policy.clone(), message, kept_last_good: before.is_some() });
                if let Some(b) = before {
                    let kept = if b.stale { b.clone() } else { Arc::new(Policy { stale: true, ..(**b).clone() }) };
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

    fn files(entries: &[(&str, &str)]) -> BTreeMap<String, FileRead> {
        entries.iter().map(|(k, v)| (k.to_string(), Ok(v.as_bytes().to_vec()))).collect()
    }

    #[test]
    fn policy_files_are_loaded_with_the_operators_hash() {
        let r = reload(&Snapshot::default(), files(&[("team.a.json", r#"{"retry":{"count":2}}"#), ("..data", "x")]));
        assert_eq!(r.added, ["team.a"]);
        let p = &r.snapshot.policies["team.a"];
        assert_eq!(p.hash, short_hash(br#"{"retry":{"count":2}}"#));
        assert_eq!(&p.document[..], br#"{"retry":{"count":2}}"#);
    }

    #[test]
    fn broken_file_keeps_last_good_document() {
        let first = reload(&Snapshot::default(), files(&[("team.a.json", r#"{"a":1}"#)]));
        let second = reload(&first.snapshot, files(&[("team.a.json", "{not json")]));
        assert_eq!(second.errors.len(), 1);
        assert!(second.errors[0].kept_last_good);
        assert_eq!(&second.snapshot.policies["team.a"].document[..], br#"{"a":1}"#);
        assert!(second.snapshot.policies["team.a"].stale);
        let third = reload(&second.snapshot, files(&[("team.a.json", r#"{"a":2}"#)]));
        assert_eq!(third.changed, ["team.a"]);
        assert!(!third.snapshot.policies["team.a"].stale);
    }

    #[test]
    fn broken_new_file_serves_nothing_and_is_reported() {
        let r = reload(&Snapshot::default(), files(&[("team.a.json", "[1,2]")]));
        assert!(r.snapshot.policies.is_empty());
        assert_eq!(r.errors[0].message, "not a JSON object");
        assert!(!r.errors[0].kept_last_good);
        let unreadable: BTreeMap<_, _> = [("team.b.json".to_string(), Err("permission denied".to_string()))].into();
        assert!(reload(&Snapshot::default(), unreadable).errors[0].message.contains("permission denied"));
    }

    #[test]
    fn removed_file_stops_serving_its_policy() {
        let first = reload(&Snapshot::default(), files(&[("team.a.json", "{}"), ("team.b.json", "{}")]));
        let second = reload(&first.snapshot, files(&[("team.b.json", "{}")]));
        assert_eq!(second.removed, ["team.a"]);
        assert!(Arc::ptr_eq(&first.snapshot.policies["team.b"], &second.snapshot.policies["team.b"]));
    }

    #[test]
    fn policy_names_are_checked_strictly() {
        for ok in ["team.a", "team-1.my.policy", "a.b"] {
            assert_eq!(check_policy_name(ok), Ok(()), "{ok}");
        }
        for bad in
            ["", "team", ".a", "team.", "../etc.passwd", "team./x", "Team.a", "team..a", "te am.a", "team.a/b", "-t.a"]
        {
            assert!(check_policy_name(bad).is_err(), "{bad}");
        }
        assert_eq!(policy_of_file("team.a.json"), Some("team.a"));
        assert_eq!(policy_of_file("..2026_11_25.json"), None);
        assert_eq!(policy_of_file("team.a.yaml"), None);
    }
}
