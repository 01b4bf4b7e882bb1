//! Who may use a policy through a gateway that checks callers: the `spec.callers` list as the
//! operator writes it beside the policy's document (data key `<namespace>.<name>.callers`) and
//! the gateway reads it back. A leaf both wings use, so the two agree on the format.
//!
//! The entry is a JSON array of `{"namespace": …, "serviceAccount": …}` objects in a fixed
//! order. It never goes to orq: the document (`<namespace>.<name>.json`) is what orq gets, and
//! a policy without callers has no entry at all.

use serde::{Deserialize, Serialize};

use crate::key::{is_dns_label, is_dns_subdomain};

/// One admitted caller: every ServiceAccount of `namespace`, or only `service_account`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdmittedCaller {
    /// Namespace of the calling ServiceAccounts.
    pub namespace: String,
    /// Only this ServiceAccount of the namespace; every one when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

/// The callers a policy admits besides its own namespace's ServiceAccounts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Callers(Vec<AdmittedCaller>);

impl Callers {
    /// The list, sorted and without duplicates.
    pub fn new(callers: impl IntoIterator<Item = AdmittedCaller>) -> Self {
        let mut list: Vec<_> = callers.into_iter().collect();
        list.sort();
        list.dedup();
        Callers(list)
    }

    /// The entry's text: `None` for an empty list (no entry is written).
    pub fn to_entry(&self) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        // A list of plain string structs always serializes.
        serde_json::to_string(&self.0).ok()
    }

    /// Parses an entry: a JSON array of callers whose names are DNS names.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let list: Vec<AdmittedCaller> =
            serde_json::from_slice(bytes).map_err(|e| format!("callers entry is not a list of callers: {e}"))?;
        for (i, caller) in list.iter().enumerate() {
            if !is_dns_label(&caller.namespace) {
                return Err(format!("callers[{i}].namespace {:?} is not a DNS-1123 label", caller.namespace));
            }
            if let Some(sa) = caller.service_account.as_deref().filter(|sa| !is_dns_subdomain(sa)) {
                return Err(format!("callers[{i}].serviceAccount {sa:?} is not a DNS-1123 subdomain"));
            }
        }
        Ok(Callers::new(list))
    }

    /// Whether the ServiceAccount `namespace`/`service_account` may use a policy of
    /// `policy_namespace`: always in its own namespace, elsewhere when listed.
    pub fn admits(&self, policy_namespace: &str, namespace: &str, service_account: &str) -> bool {
        policy_namespace == namespace
            || self
                .0
                .iter()
                .any(|c| entry_admits(&c.namespace, c.service_account.as_deref(), namespace, service_account))
    }

    /// The admitted callers.
    pub fn iter(&self) -> impl Iterator<Item = &AdmittedCaller> {
        self.0.iter()
    }
}

/// Whether one callers entry — `entry_namespace`, and only `entry_service_account` when set —
/// admits the ServiceAccount `namespace`/`service_account`. The rule of [`Callers::admits`],
/// also what `routerpolicy explain` applies to name the deciding entry.
pub fn entry_admits(
    entry_namespace: &str,
    entry_service_account: Option<&str>,
    namespace: &str,
    service_account: &str,
) -> bool {
    entry_namespace == namespace && entry_service_account.is_none_or(|sa| sa == service_account)
}

/// The prefix of a ServiceAccount's user name, as TokenReviews and RBAC spell it.
pub const SERVICE_ACCOUNT_USER_PREFIX: &str = "system:serviceaccount:";

/// `system:serviceaccount:<namespace>:<name>`.
pub fn service_account_user(namespace: &str, service_account: &str) -> String {
    format!("{SERVICE_ACCOUNT_USER_PREFIX}{namespace}:{service_account}")
}

/// The namespace and name of a ServiceAccount user name; `None` for any other user.
pub fn parse_service_account_user(user: &str) -> Option<(&str, &str)> {
    let (namespace, name) = user.strip_prefix(SERVICE_ACCOUNT_USER_PREFIX)?.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty()).then_some((namespace, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(namespace: &str, sa: Option<&str>) -> AdmittedCaller {
        AdmittedCaller { namespace: namespace.into(), service_account: sa.map(str::to_string) }
    }

    #[test]
    fn own_namespace_is_always_admitted_and_others_only_when_listed() {
        let callers = Callers::new([caller("team-b", None), caller("team-c", Some("app"))]);
        assert!(Callers::default().admits("team-a", "team-a", "anyone"));
        assert!(!Callers::default().admits("team-a", "team-b", "app"));
        assert!(callers.admits("team-a", "team-b", "whoever"));
        assert!(callers.admits("team-a", "team-c", "app"));
        assert!(!callers.admits("team-a", "team-c", "other"));
        assert!(!callers.admits("team-a", "team-d", "app"));
    }

    #[test]
    fn entries_are_written_in_one_order_and_read_back() {
        let a = Callers::new([caller("b", None), caller("a", Some("x")), caller("b", None)]);
        let entry = a.to_entry().expect("entry");
        assert_eq!(entry, r#"[{"namespace":"a","serviceAccount":"x"},{"namespace":"b"}]"#);
        assert_eq!(Callers::parse(entry.as_bytes()), Ok(a));
        assert_eq!(Callers::default().to_entry(), None);
    }

    #[test]
    fn a_broken_entry_is_refused_with_the_reason() {
        assert!(Callers::parse(b"{}").is_err_and(|e| e.contains("not a list")));
        assert!(Callers::parse(br#"[{"namespace":"Team"}]"#).is_err_and(|e| e.contains("callers[0].namespace")));
        assert!(
            Callers::parse(br#"[{"namespace":"a","serviceAccount":"a b"}]"#)
                .is_err_and(|e| e.contains("callers[0].serviceAccount"))
        );
        assert!(Callers::parse(br#"[{"namespace":"a","extra":1}]"#).is_err());
    }
}
