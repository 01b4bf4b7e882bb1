//! Typed names: a policy ([`PolicyKey`]) and a gateway ConfigMap ([`TargetKey`]).
//!
//! A policy is named four ways on the wire — its ConfigMap data key and file name
//! `<namespace>.<name>.json`, the gateway's header and metric label `<namespace>.<name>`, and
//! the operator's metric label `<namespace>/<name>` — and each spelling is made and parsed
//! here, nowhere else. Namespaces contain no dots, so the first dot always ends the namespace.

use std::fmt;
use std::sync::Arc;

use crate::limits::{DNS1123_LABEL_MAX, DNS1123_SUBDOMAIN_MAX};

/// The endpoint the gateway proxies (orq's image-variation path).
pub const VARIATIONS_PATH: &str = "/v2/router/images/variations";
/// The request header that selects a policy (value: [`PolicyKey::header_value`]).
pub const POLICY_HEADER: &str = "x-routerpolicy-policy";
/// The response header that tells the caller which document was applied.
pub const HASH_HEADER: &str = "x-routerpolicy-policy-hash";

/// The suffix of a policy's data key and file name.
const JSON_SUFFIX: &str = ".json";
const CALLERS_SUFFIX: &str = ".callers";
const CANARY_SUFFIX: &str = ".canary";

/// Whether `s` is a DNS-1123 label (a namespace): [`crate::limits::DNS1123_LABEL_PATTERN`], checked byte by
/// byte (the gateway checks every request's policy header, the operator every data key).
pub fn is_dns_label(s: &str) -> bool {
    s.len() <= DNS1123_LABEL_MAX as usize && label_shaped(s.as_bytes())
}

/// Whether `s` is a DNS-1123 subdomain (an object name):
/// [`crate::limits::DNS1123_SUBDOMAIN_PATTERN`], labels joined by dots, checked byte by byte.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= DNS1123_SUBDOMAIN_MAX as usize && s.split('.').all(|label| label_shaped(label.as_bytes()))
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, whole.
fn label_shaped(s: &[u8]) -> bool {
    let end = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (s.first(), s.last()) {
        (Some(first), Some(last)) => end(first) && end(last) && s.iter().all(|b| end(b) || *b == b'-'),
        _ => false,
    }
}

/// Why a string does not name a policy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No dot between namespace and name.
    #[error("must be <namespace>.<name>")]
    Shape,
    /// The namespace part is not a DNS-1123 label.
    #[error("namespace {0:?} is not a DNS-1123 label")]
    Namespace(String),
    /// The name part is not a DNS-1123 subdomain.
    #[error("name {0:?} is not a DNS-1123 subdomain")]
    Name(String),
}

/// A policy, by namespace and name. Cloning shares the strings (the operator keeps a policy's
/// key in several indexes and queues at once).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    /// Namespace.
    pub namespace: Arc<str>,
    /// Name.
    pub name: Arc<str>,
}

impl PolicyKey {
    /// The policy `namespace`/`name` (not checked: names from the API server are valid).
    pub fn new(namespace: impl AsRef<str>, name: impl AsRef<str>) -> Self {
        PolicyKey { namespace: Arc::from(namespace.as_ref()), name: Arc::from(name.as_ref()) }
    }

    /// `<namespace>.<name>.json`: the policy's key in a gateway ConfigMap, and its file name
    /// where the ConfigMap is mounted.
    pub fn data_key(&self) -> String {
        format!("{}.{}{JSON_SUFFIX}", self.namespace, self.name)
    }

    /// `<namespace>.<name>.callers`: the data key (and file name) of the policy's callers
    /// entry, beside its document (see [`crate::callers`]).
    pub fn callers_key(&self) -> String {
        format!("{}.{}{CALLERS_SUFFIX}", self.namespace, self.name)
    }

    /// The policy whose callers entry `key` is (`<namespace>.<name>.callers`), if it is one.
    pub fn from_callers_key(key: &str) -> Option<Self> {
        PolicyKey::parse(key.strip_suffix(CALLERS_SUFFIX)?).ok()
    }

    /// The key of its canary entry during a rollout, `<namespace>.<name>.canary`
    /// ([`crate::rollout::CanaryEntry`]).
    pub fn canary_key(&self) -> String {
        format!("{}.{}{CANARY_SUFFIX}", self.namespace, self.name)
    }

    /// The policy whose canary entry `key` is, if it is one.
    pub fn from_canary_key(key: &str) -> Option<Self> {
        PolicyKey::parse(key.strip_suffix(CANARY_SUFFIX)?).ok()
    }

    /// The policy a data key belongs to: its document's, its callers entry's or its canary
    /// entry's.
    pub fn owner_of_data_key(key: &str) -> Option<Self> {
        PolicyKey::from_data_key(key)
            .or_else(|| PolicyKey::from_callers_key(key))
            .or_else(|| PolicyKey::from_canary_key(key))
    }

    /// `<namespace>/<name>`: the operator's metric label, as kubectl names an object.
    pub fn metric_label(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Parses `<namespace>.<name>` (the gateway's `X-Routerpolicy-Policy` header): a DNS-1123
    /// label, a dot, a DNS-1123 subdomain. Nothing else (no `/`, no `..`, no spaces) names a
    /// policy.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let (namespace, name) = s.split_once('.').ok_or(KeyError::Shape)?;
        if !is_dns_label(namespace) {
            return Err(KeyError::Namespace(namespace.to_string()));
        }
        if !is_dns_subdomain(name) {
            return Err(KeyError::Name(name.to_string()));
        }
        Ok(PolicyKey::new(namespace, name))
    }

    /// The policy a data key or file name `<namespace>.<name>.json` belongs to; `None` for
    /// anything else (kubelet's `..data`, dot files, other writers' keys).
    pub fn from_data_key(key: &str) -> Option<Self> {
        PolicyKey::parse(key.strip_suffix(JSON_SUFFIX)?).ok()
    }

    /// The namespace part of a data key (everything before the first dot), without checking
    /// the rest: where a key that is not a policy's must still be placed in a namespace.
    pub fn namespace_of_data_key(key: &str) -> &str {
        key.split_once('.').map(|(ns, _)| ns).unwrap_or(key)
    }
}

/// `<namespace>.<name>`: how a gateway's caller and the gateway's metrics name the policy.
impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.namespace, self.name)
    }
}

/// A gateway ConfigMap, by namespace and name. Cloning shares the strings (every policy keeps
/// the keys of its targets, its outcomes and where its document landed).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetKey {
    /// Namespace.
    pub namespace: Arc<str>,
    /// Name.
    pub name: Arc<str>,
}

impl TargetKey {
    /// The ConfigMap `namespace`/`name`.
    pub fn new(namespace: impl AsRef<str>, name: impl AsRef<str>) -> Self {
        TargetKey { namespace: Arc::from(namespace.as_ref()), name: Arc::from(name.as_ref()) }
    }
}

/// Parses `<namespace>/<name>` (a DNS-1123 label and subdomain), as `--config-map` takes it.
impl std::str::FromStr for TargetKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (namespace, name) = s.split_once('/').ok_or_else(|| format!("{s:?}: expected <namespace>/<name>"))?;
        if !is_dns_label(namespace) {
            return Err(format!("{s:?}: namespace {namespace:?} is not a DNS-1123 label"));
        }
        if !is_dns_subdomain(name) {
            return Err(format!("{s:?}: name {name:?} is not a DNS-1123 subdomain"));
        }
        Ok(TargetKey::new(namespace, name))
    }
}

/// `<namespace>/<name>`.
impl fmt::Display for TargetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use regex::Regex;

    use super::*;
    use crate::limits::{DNS1123_LABEL_PATTERN, DNS1123_SUBDOMAIN_PATTERN};

    proptest! {
        /// The byte checks say what the schema's patterns say, on names near the rules' edges.
        #[test]
        fn dns_checks_agree_with_the_schema_patterns(s in "[a-zA-Z0-9.-]{0,6}|[a-z0-9-]{1,70}(\\.[a-z0-9-]{0,3}){0,2}|.{0,4}") {
            let label = Regex::new(DNS1123_LABEL_PATTERN).expect("pattern");
            let subdomain = Regex::new(DNS1123_SUBDOMAIN_PATTERN).expect("pattern");
            prop_assert_eq!(is_dns_label(&s), s.len() <= DNS1123_LABEL_MAX as usize && label.is_match(&s), "label {:?}", s);
            prop_assert_eq!(is_dns_subdomain(&s), s.len() <= DNS1123_SUBDOMAIN_MAX as usize && subdomain.is_match(&s), "subdomain {:?}", s);
        }
    }

    #[test]
    fn dns_checks_refuse_what_the_patterns_refuse() {
        for bad in ["", "-a", "a-", "A", "a_b", "a..b", ".a", "a.", "a\n", "\u{e9}"] {
            assert!(!is_dns_subdomain(bad), "{bad:?}");
        }
        assert!(!is_dns_label("a.b"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(is_dns_label(&"a".repeat(63)));
        assert!(is_dns_subdomain("a-1.b.c9"));
        assert!(!is_dns_subdomain(&format!("{}.{}", "a".repeat(200), "b".repeat(53))));
    }

    #[test]
    fn a_policy_key_has_one_spelling_per_use() {
        let key = PolicyKey::new("team-a", "avatars");
        assert_eq!(key.data_key(), "team-a.avatars.json");
        assert_eq!(key.metric_label(), "team-a/avatars");
        assert_eq!(key.to_string(), "team-a.avatars");
    }

    #[test]
    fn data_keys_and_header_names_parse_back_to_the_same_key() {
        let key = PolicyKey::new("team-a", "avatars.v2");
        assert_eq!(PolicyKey::from_data_key(&key.data_key()), Some(key.clone()));
        assert_eq!(PolicyKey::parse(&key.to_string()), Ok(key));
    }

    #[test]
    fn a_callers_key_is_never_a_document_key_and_names_its_policy() {
        let key = PolicyKey::new("team-a", "avatars");
        assert_eq!(key.callers_key(), "team-a.avatars.callers");
        assert_eq!(PolicyKey::from_callers_key(&key.callers_key()), Some(key.clone()));
        assert_eq!(PolicyKey::from_data_key(&key.callers_key()), None);
        // The document of a policy named `avatars.callers` is not `avatars`'s callers entry.
        let other = PolicyKey::new("team-a", "avatars.callers");
        assert_eq!(PolicyKey::from_callers_key(&other.data_key()), None);
        assert_eq!(PolicyKey::owner_of_data_key(&other.data_key()), Some(other));
        assert_eq!(PolicyKey::owner_of_data_key(&key.callers_key()), Some(key.clone()));
        // Nor is a canary entry; it names its policy too.
        assert_eq!(key.canary_key(), "team-a.avatars.canary");
        assert_eq!(PolicyKey::owner_of_data_key(&key.canary_key()), Some(key.clone()));
        assert_eq!(PolicyKey::from_data_key(&key.canary_key()), None);
        let canary_named = PolicyKey::new("team-a", "avatars.canary");
        assert_eq!(PolicyKey::owner_of_data_key(&canary_named.data_key()), Some(canary_named));
    }

    #[test]
    fn names_that_are_not_policies_are_refused_with_the_reason() {
        assert_eq!(PolicyKey::parse("nodot"), Err(KeyError::Shape));
        assert_eq!(PolicyKey::parse("Team.a"), Err(KeyError::Namespace("Team".into())));
        assert_eq!(PolicyKey::parse("team..a"), Err(KeyError::Name(".a".into())));
        for bad in ["a./etc", "a.b c", "-a.b", "a.b-", &format!("{}.b", "n".repeat(64))] {
            assert!(PolicyKey::parse(bad).is_err(), "{bad}");
        }
        for not_a_policy in ["..data", ".hidden.json", "team-a.avatars", "team-a.avatars.yaml"] {
            assert_eq!(PolicyKey::from_data_key(not_a_policy), None, "{not_a_policy}");
        }
    }

    #[test]
    fn a_configmap_reference_parses_as_namespace_slash_name() {
        assert_eq!("gw/image-policies".parse::<TargetKey>(), Ok(TargetKey::new("gw", "image-policies")));
        for bad in ["gw", "/x", "gw/", "Gw/x", "gw/x y"] {
            assert!(bad.parse::<TargetKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_namespace_of_any_data_key_is_what_precedes_the_first_dot() {
        assert_eq!(PolicyKey::namespace_of_data_key("team-a.x.y.json"), "team-a");
        assert_eq!(PolicyKey::namespace_of_data_key("nodot"), "nodot");
    }
}
