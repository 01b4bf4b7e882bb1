//! Who asks (`--as`): a ServiceAccount, and the verdict on whether a policy admits it. Pure.

use serde::Serialize;

use crate::api::ImageVariationPolicySpec;
use crate::callers::{SERVICE_ACCOUNT_USER_PREFIX, entry_admits, service_account_user};
use crate::key::{is_dns_label, is_dns_subdomain};

/// A ServiceAccount, as `--as system:serviceaccount:NS:SA` or `--as NS/SA` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub service_account: String,
}

impl Subject {
    /// Parses `system:serviceaccount:<namespace>:<name>` or `<namespace>/<name>`.
    pub fn parse(s: &str) -> Result<Subject, String> {
        let shape = || {
            format!(
                "--as {s:?}: must be system:serviceaccount:<namespace>:<name> or <namespace>/<name> (a ServiceAccount)"
            )
        };
        let (namespace, name) = match s.strip_prefix(SERVICE_ACCOUNT_USER_PREFIX) {
            Some(rest) => rest.split_once(':').ok_or_else(shape)?,
            None => s.split_once('/').ok_or_else(shape)?,
        };
        if !is_dns_label(namespace) {
            return Err(format!("--as {s:?}: namespace {namespace:?} is not a DNS-1123 label"));
        }
        if !is_dns_subdomain(name) {
            return Err(format!("--as {s:?}: ServiceAccount name {name:?} is not a DNS-1123 subdomain"));
        }
        Ok(Subject { namespace: namespace.into(), service_account: name.into() })
    }

    /// `system:serviceaccount:<namespace>:<name>`: the user name a TokenReview gives it.
    pub fn user_name(&self) -> String {
        service_account_user(&self.namespace, &self.service_account)
    }
}

/// Whether a caller may use the policy, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallerVerdict {
    /// `system:serviceaccount:<namespace>:<name>`.
    pub subject: String,
    /// Whether a gateway that checks callers (`--auth serviceaccount`) lets it use the policy.
    pub allowed: bool,
    /// Why, in a sentence.
    pub reason: String,
    /// The `spec.callers` entry that admits it (`spec.callers[1]`), when one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admitted_by: Option<String>,
}

/// The verdict on `subject` for a policy of `namespace` with `spec`: the rule the gateway
/// applies (`crate::callers::Callers::admits`), with the entry that decides it named.
pub fn verdict(namespace: &str, spec: &ImageVariationPolicySpec, subject: &Subject) -> CallerVerdict {
    let who = format!("ServiceAccount {}/{}", subject.namespace, subject.service_account);
    let decide =
        |allowed, reason, admitted_by| CallerVerdict { subject: subject.user_name(), allowed, reason, admitted_by };
    if subject.namespace == namespace {
        return decide(
            true,
            format!("{who} is in the policy's own namespace {namespace:?}, whose ServiceAccounts may always use it"),
            None,
        );
    }
    let callers = spec.callers.as_deref().unwrap_or_default();
    let admitting = callers.iter().position(|c| {
        entry_admits(&c.namespace, c.service_account.as_deref(), &subject.namespace, &subject.service_account)
    });
    if let Some(i) = admitting {
        let entry = &callers[i];
        let whom = match &entry.service_account {
            Some(sa) => format!("ServiceAccount {}/{sa}", entry.namespace),
            None => format!("every ServiceAccount of namespace {:?}", entry.namespace),
        };
        return decide(true, format!("spec.callers[{i}] admits {whom}"), Some(format!("spec.callers[{i}]")));
    }
    let listed = if callers.is_empty() {
        "the policy has no spec.callers, so only its own namespace may use it".to_string()
    } else {
        let names: Vec<String> = callers
            .iter()
            .map(|c| format!("{}/{}", c.namespace, c.service_account.as_deref().unwrap_or("*")))
            .collect();
        format!("no spec.callers entry admits it (spec.callers admits {})", names.join(", "))
    };
    decide(false, format!("{who} is not in the policy's namespace {namespace:?}, and {listed}"), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Caller;

    fn spec(callers: &[(&str, Option<&str>)]) -> ImageVariationPolicySpec {
        let callers: Vec<Caller> = callers
            .iter()
            .map(|(ns, sa)| Caller { namespace: ns.to_string(), service_account: sa.map(str::to_string) })
            .collect();
        let mut spec: ImageVariationPolicySpec =
            serde_json::from_value(serde_json::json!({"targetRefs": [{"name": "gw"}]})).expect("spec");
        spec.callers = (!callers.is_empty()).then_some(callers);
        spec
    }

    #[test]
    fn both_spellings_name_the_same_service_account_and_nonsense_is_refused() {
        let a = Subject::parse("system:serviceaccount:team-b:app").expect("long form");
        assert_eq!(a, Subject::parse("team-b/app").expect("short form"));
        assert_eq!(a.user_name(), "system:serviceaccount:team-b:app");
        assert!(Subject::parse("alice").is_err_and(|e| e.contains("must be system:serviceaccount")));
        assert!(Subject::parse("Team/app").is_err_and(|e| e.contains("DNS-1123 label")));
        assert!(Subject::parse("team/a b").is_err_and(|e| e.contains("DNS-1123 subdomain")));
    }

    #[test]
    fn the_verdict_names_the_namespace_or_the_entry_that_decides() {
        let spec = spec(&[("team-c", Some("worker")), ("team-b", None)]);
        let own = verdict("team-a", &spec, &Subject::parse("team-a/anyone").expect("subject"));
        assert!(own.allowed && own.reason.contains("own namespace") && own.admitted_by.is_none());
        let listed = verdict("team-a", &spec, &Subject::parse("team-b/app").expect("subject"));
        assert!(listed.allowed);
        assert_eq!(listed.admitted_by.as_deref(), Some("spec.callers[1]"));
        assert!(listed.reason.contains("every ServiceAccount of namespace \"team-b\""), "{}", listed.reason);
        let other_sa = verdict("team-a", &spec, &Subject::parse("team-c/app").expect("subject"));
        assert!(!other_sa.allowed && other_sa.reason.contains("team-c/worker, team-b/*"), "{}", other_sa.reason);
        let no_callers = verdict("team-a", &super::tests::spec(&[]), &Subject::parse("team-b/app").expect("subject"));
        assert!(!no_callers.allowed && no_callers.reason.contains("no spec.callers"), "{}", no_callers.reason);
    }

    #[test]
    fn the_verdict_agrees_with_the_gateways_rule() {
        let spec = spec(&[("team-c", Some("worker")), ("team-b", None)]);
        let callers =
            crate::callers::Callers::new(spec.callers.iter().flatten().map(|c| crate::callers::AdmittedCaller {
                namespace: c.namespace.clone(),
                service_account: c.service_account.clone(),
            }));
        for ns in ["team-a", "team-b", "team-c", "team-d"] {
            for sa in ["app", "worker"] {
                let subject = Subject { namespace: ns.into(), service_account: sa.into() };
                assert_eq!(verdict("team-a", &spec, &subject).allowed, callers.admits("team-a", ns, sa), "{ns}/{sa}");
            }
        }
    }
}
