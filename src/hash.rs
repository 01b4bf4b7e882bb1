//! The hashes a policy's document is known by: `status.configHash`, the gateway's
//! `policy_info{hash}` and `X-Routerpolicy-Policy-Hash` ([`short_hash`]), and a ConfigMap's
//! `routerpolicy.io/config-hash` annotation ([`entries_hash`]). The operator and the gateway
//! both compute them here, so the two always agree.

use sha2::{Digest, Sha256};

/// First 16 hex digits of the SHA-256 of `bytes`.
pub fn short_hash(bytes: &[u8]) -> String {
    short_hex(&Sha256::digest(bytes))
}

/// The hash a policy is served under (`status.configHash`, the gateway's `policy_info{hash}`):
/// of its document alone, or of its document and its callers entry when it has one, so a
/// change of who may call is tracked like a change of the document.
pub fn policy_hash(document: &[u8], callers: Option<&[u8]>) -> String {
    match callers {
        None => short_hash(document),
        Some(callers) => {
            // NUL never occurs in JSON text: the two parts cannot run into each other.
            let mut hasher = Sha256::new();
            hasher.update(document);
            hasher.update([0]);
            hasher.update(callers);
            short_hex(&hasher.finalize())
        }
    }
}

/// The first 16 hex digits of a digest.
fn short_hex(digest: &[u8]) -> String {
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Hash of a set of data entries (key and value, in key order): the ConfigMap annotation
/// `routerpolicy.io/config-hash`.
pub fn entries_hash<'a>(entries: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in entries {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher.update([0]);
    }
    short_hex(&hasher.finalize())
}
