//! The Rust rule book: every rule of docs/reference.md (and README.md, "The resource"), as a pure function of the spec.
//!
//! [`validate_spec`] returns every error and warning, each with its field path in the API
//! server's notation (`spec.loadBalancer.models[1].weight`) and the rule it broke. The
//! reconcile loop and `routerpolicy validate` both call it; bounds and patterns come from
//! [`crate::limits`], which the CRD schema reads too. It does no I/O and never panics.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

use crate::api::{Caller, Fallback, Identity, ImageVariationPolicySpec, Retry, Rollout, TargetRef, Timeout};
use crate::limits::*;

/// What kind of finding a [`Violation`] is, where code must tell findings apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationKind {
    /// A rule (an error) or advice (a warning).
    #[default]
    Rule,
    /// A deprecated field is used (a warning that also becomes a `DeprecatedField` event).
    Deprecated,
}

/// One broken rule (an error) or one piece of advice (a warning).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Violation {
    /// Field path, e.g. `spec.retry.onCodes[2]`.
    pub path: String,
    /// The rule, e.g. `must be less than or equal to 5`.
    pub message: String,
    /// What kind of finding it is.
    pub kind: ViolationKind,
}

impl Violation {
    /// A violation at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into(), kind: ViolationKind::Rule }
    }

    /// The use of a deprecated field at `path`.
    pub fn deprecated(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { kind: ViolationKind::Deprecated, ..Self::new(path, message) }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Everything the rules found in one policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// Broken rules: the policy must not be served.
    pub errors: Vec<Violation>,
    /// Advice: the policy is served, and the warning is shown in status and events.
    pub warnings: Vec<Violation>,
}

impl Findings {
    /// True when no rule is broken.
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Violation::new(path, message));
    }

    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Violation::new(path, message));
    }

    /// The first warning about a deprecated field, if any.
    pub fn deprecation(&self) -> Option<&Violation> {
        self.warnings.iter().find(|w| w.kind == ViolationKind::Deprecated)
    }

    /// Adds the violations of `other` that this report does not have yet.
    pub fn merge(&mut self, other: Findings) {
        for v in other.errors {
            if !self.errors.contains(&v) {
                self.errors.push(v);
            }
        }
        for v in other.warnings {
            if !self.warnings.contains(&v) {
                self.warnings.push(v);
            }
        }
    }

    /// Errors joined for a condition message.
    pub fn errors_summary(&self) -> String {
        join(&self.errors)
    }

    /// Warnings joined for a condition message.
    pub fn warnings_summary(&self) -> String {
        join(&self.warnings)
    }
}

fn join(violations: &[Violation]) -> String {
    violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Rule messages shared with the offline schema check, so both say the same thing.
pub mod msg {
    /// String shorter than its minimum.
    pub fn min_length(min: impl std::fmt::Display) -> String {
        format!("must be at least {min} characters long")
    }
    /// String longer than its maximum.
    pub fn max_length(max: impl std::fmt::Display) -> String {
        format!("must be at most {max} characters long")
    }
    /// Too few list items.
    pub fn min_items(min: impl std::fmt::Display) -> String {
        format!("must have at least {min} items")
    }
    /// Too many list items.
    pub fn max_items(max: impl std::fmt::Display) -> String {
        format!("must have at most {max} items")
    }
    /// Too many map entries.
    pub fn max_properties(max: impl std::fmt::Display) -> String {
        format!("must have at most {max} entries")
    }
    /// Number below its minimum.
    pub fn minimum(min: impl std::fmt::Display) -> String {
        format!("must be greater than or equal to {min}")
    }
    /// Number above its maximum.
    pub fn maximum(max: impl std::fmt::Display) -> String {
        format!("must be less than or equal to {max}")
    }
    /// String not matching its pattern.
    pub fn pattern(what: &str, pattern: &str) -> String {
        format!("must be {what} (pattern {pattern})")
    }
    /// Repeated list item.
    pub fn duplicate(value: impl std::fmt::Display) -> String {
        format!("duplicate value: {value}")
    }
    /// Required field missing.
    pub const REQUIRED: &str = "is required";
}

macro_rules! pattern {
    ($name:ident, $pattern:expr) => {
        static $name: LazyLock<Regex> =
            LazyLock::new(|| Regex::new($pattern).expect("limits patterns are valid regular expressions"));
    };
}
pattern!(DNS1123_SUBDOMAIN, DNS1123_SUBDOMAIN_PATTERN);
pattern!(DNS1123_LABEL, DNS1123_LABEL_PATTERN);
pattern!(NO_CONTROL_CHARS, NO_CONTROL_CHARS_PATTERN);
pattern!(MODEL, MODEL_PATTERN);
pattern!(PROMPT_ID, PROMPT_ID_PATTERN);
pattern!(EMAIL, EMAIL_PATTERN);
pattern!(LOGO_URL, LOGO_URL_PATTERN);

/// What a pattern describes, for messages.
pub fn describe_pattern(pattern: &str) -> &'static str {
    match pattern {
        DNS1123_SUBDOMAIN_PATTERN => "a DNS-1123 subdomain",
        DNS1123_LABEL_PATTERN => "a DNS-1123 label",
        NO_CONTROL_CHARS_PATTERN => "free of control characters",
        MODEL_PATTERN => "a model identifier `provider/model`",
        PROMPT_ID_PATTERN => "letters, digits, `_` and `-`",
        EMAIL_PATTERN => "a valid e-mail address",
        LOGO_URL_PATTERN => "an absolute http:// or https:// URL",
        _ => "a string matching the pattern",
    }
}

/// Whether `value` matches one of the rule book's patterns (unknown patterns match nothing).
pub fn matches_pattern(pattern: &str, value: &str) -> bool {
    let re: &Regex = match pattern {
        DNS1123_SUBDOMAIN_PATTERN => &DNS1123_SUBDOMAIN,
        DNS1123_LABEL_PATTERN => &DNS1123_LABEL,
        NO_CONTROL_CHARS_PATTERN => &NO_CONTROL_CHARS,
        MODEL_PATTERN => &MODEL,
        PROMPT_ID_PATTERN => &PROMPT_ID,
        EMAIL_PATTERN => &EMAIL,
        LOGO_URL_PATTERN => &LOGO_URL,
        other => {
            return Regex::new(other).map(|re| re.is_match(value)).unwrap_or(false);
        }
    };
    re.is_match(value)
}

impl Findings {
    fn check_string(&mut self, path: &str, value: &str, min: u32, max: u32, pattern: Option<&str>) {
        // Kubernetes counts string length in Unicode code points.
        let len = value.chars().count();
        if len < min as usize {
            self.error(path, msg::min_length(min));
        } else if len > max as usize {
            self.error(path, msg::max_length(max));
        } else if let Some(pattern) = pattern
            && !matches_pattern(pattern, value)
        {
            self.error(path, msg::pattern(describe_pattern(pattern), pattern));
        }
    }

    fn check_items(&mut self, path: &str, len: usize, min: u32, max: u32) {
        if len < min as usize {
            self.error(path, msg::min_items(min));
        } else if len > max as usize {
            self.error(path, msg::max_items(max));
        }
    }

    fn check_range(&mut self, path: &str, value: i64, min: i64, max: i64) {
        if value < min {
            self.error(path, msg::minimum(min));
        } else if value > max {
            self.error(path, msg::maximum(max));
        }
    }
}

/// Validates a policy spec. `namespace` is the policy's namespace (used to resolve
/// `targetRefs` without a namespace when looking for duplicates).
pub fn validate_spec(spec: &ImageVariationPolicySpec, namespace: &str) -> Findings {
    let mut findings = Findings::default();
    check_targets(&mut findings, &spec.target_refs, namespace);
    if let Some(name) = &spec.name {
        findings.check_string("spec.name", name, 1, TRACE_NAME_MAX, Some(NO_CONTROL_CHARS_PATTERN));
    }
    if let Some(retry) = &spec.retry {
        check_retry(&mut findings, retry);
    }
    if let Some(fallbacks) = &spec.fallbacks {
        check_fallbacks(&mut findings, fallbacks);
    }
    if let Some(prompt) = &spec.prompt {
        findings.check_string("spec.prompt.id", &prompt.id, 1, PROMPT_ID_MAX, Some(PROMPT_ID_PATTERN));
    }
    if let Some(identity) = &spec.identity {
        check_identity(&mut findings, "spec.identity", identity);
    }
    if let Some(contact) = &spec.contact {
        check_contact(&mut findings, contact, spec.identity.is_some());
    }
    if let Some(cache) = &spec.cache
        && let Some(ttl) = cache.ttl
    {
        findings.check_range("spec.cache.ttl", ttl, CACHE_TTL_MIN, CACHE_TTL_MAX);
    }
    if let Some(lb) = &spec.load_balancer {
        check_load_balancer(&mut findings, spec, lb);
    }
    if let Some(timeout) = &spec.timeout {
        check_timeout(&mut findings, timeout);
    }
    if let Some(callers) = &spec.callers {
        check_callers(&mut findings, callers);
    }
    if let Some(rollout) = &spec.rollout {
        check_rollout(&mut findings, rollout);
    }
    findings
}

/// `spec.rollout`: 1 to 10 steps, weights 1 to 99 and increasing, pauses 5s to 24h, bounded
/// `minRequests` and a ratio between 0 and 1.
fn check_rollout(findings: &mut Findings, rollout: &Rollout) {
    findings.check_items("spec.rollout.steps", rollout.steps.len(), ROLLOUT_STEPS_MIN, ROLLOUT_STEPS_MAX);
    let mut increasing = true;
    for (i, step) in rollout.steps.iter().enumerate() {
        findings.check_range(
            &format!("spec.rollout.steps[{i}].weight"),
            step.weight,
            ROLLOUT_WEIGHT_MIN,
            ROLLOUT_WEIGHT_MAX,
        );
        let path = format!("spec.rollout.steps[{i}].pause");
        findings.check_string(&path, &step.pause, 2, 24, Some(PAUSE_PATTERN));
        if step.pause.len() >= 2 && step.pause.len() <= 24 && matches_pattern(PAUSE_PATTERN, &step.pause) {
            let seconds = crate::rollout::parse_pause(&step.pause).unwrap_or(0);
            if !(crate::rollout::PAUSE_MIN_SECONDS..=crate::rollout::PAUSE_MAX_SECONDS).contains(&seconds) {
                findings.error(&path, "must be between 5s and 24h");
            }
        }
        if i > 0 && rollout.steps[i - 1].weight >= step.weight {
            increasing = false;
        }
    }
    if !increasing {
        findings.error("spec.rollout.steps", "weights must increase from step to step");
    }
    if let Some(min) = rollout.min_requests {
        findings.check_range("spec.rollout.minRequests", min, ROLLOUT_MIN_REQUESTS_MIN, ROLLOUT_MIN_REQUESTS_MAX);
    }
    if let Some(ratio) = rollout.max_failure_ratio {
        if ratio < 0.0 {
            findings.error("spec.rollout.maxFailureRatio", msg::minimum(0));
        } else if ratio > 1.0 {
            findings.error("spec.rollout.maxFailureRatio", msg::maximum(1));
        }
    }
}

fn check_retry(findings: &mut Findings, retry: &Retry) {
    if let Some(count) = retry.count {
        findings.check_range("spec.retry.count", count, RETRY_COUNT_MIN, RETRY_COUNT_MAX);
    }
    let Some(codes) = &retry.on_codes else { return };
    findings.check_items("spec.retry.onCodes", codes.len(), 1, RETRY_CODES_MAX);
    let mut seen = HashSet::new();
    for (i, code) in codes.iter().enumerate() {
        let path = format!("spec.retry.onCodes[{i}]");
        findings.check_range(&path, *code, RETRY_CODE_MIN, RETRY_CODE_MAX);
        if !seen.insert(*code) {
            findings.error(path, msg::duplicate(code));
        }
    }
    if !codes.is_empty() && !codes.iter().any(|c| *c == 429 || (500..=599).contains(c)) {
        findings.warn(
            "spec.retry.onCodes",
            "retries on no 429 or 5xx code: rate limits and server errors, the failures a retry can fix, are not retried",
        );
    }
}

fn check_fallbacks(findings: &mut Findings, fallbacks: &[Fallback]) {
    findings.check_items("spec.fallbacks", fallbacks.len(), 0, FALLBACKS_MAX);
    let mut seen = HashSet::new();
    for (i, fallback) in fallbacks.iter().enumerate() {
        let path = format!("spec.fallbacks[{i}].model");
        findings.check_string(&path, &fallback.model, 1, MODEL_MAX, Some(MODEL_PATTERN));
        if !seen.insert(fallback.model.as_str()) {
            findings.error(format!("spec.fallbacks[{i}]"), msg::duplicate(&fallback.model));
        }
    }
    if fallbacks.len() > FALLBACKS_ADVISED_MAX && fallbacks.len() <= FALLBACKS_MAX as usize {
        findings.warn(
            "spec.fallbacks",
            format!(
                "{} fallbacks: orq advises at most {FALLBACKS_ADVISED_MAX}, each one adds a full attempt's latency to a failing request",
                fallbacks.len()
            ),
        );
    }
}

/// `contact`, the deprecated name of `identity`: checked the same, refused next to
/// `identity`, and otherwise a deprecation warning.
fn check_contact(findings: &mut Findings, contact: &Identity, has_identity: bool) {
    check_identity(findings, "spec.contact", contact);
    if has_identity {
        findings.error(
            "spec.contact",
            "must not be set together with spec.identity (contact is the deprecated name of identity)",
        );
    } else {
        findings
            .warnings
            .push(Violation::deprecated("spec.contact", "is deprecated: rename it to spec.identity (same fields)"));
    }
}

fn check_timeout(findings: &mut Findings, timeout: &Timeout) {
    findings.check_range("spec.timeout.callTimeout", timeout.call_timeout, CALL_TIMEOUT_MIN, CALL_TIMEOUT_MAX);
    if (CALL_TIMEOUT_MIN..CALL_TIMEOUT_ADVISED_MIN).contains(&timeout.call_timeout) {
        findings.warn(
            "spec.timeout.callTimeout",
            format!(
                "{} ms is shorter than {CALL_TIMEOUT_ADVISED_MIN} ms: most image-variation calls will time out (it applies to each attempt)",
                timeout.call_timeout
            ),
        );
    }
}

fn check_targets(findings: &mut Findings, targets: &[TargetRef], namespace: &str) {
    findings.check_items("spec.targetRefs", targets.len(), TARGETS_MIN, TARGETS_MAX);
    let mut seen = BTreeSet::new();
    for (i, target) in targets.iter().enumerate() {
        findings.check_string(
            &format!("spec.targetRefs[{i}].name"),
            &target.name,
            1,
            DNS1123_SUBDOMAIN_MAX,
            Some(DNS1123_SUBDOMAIN_PATTERN),
        );
        if let Some(ns) = &target.namespace {
            findings.check_string(
                &format!("spec.targetRefs[{i}].namespace"),
                ns,
                1,
                DNS1123_LABEL_MAX,
                Some(DNS1123_LABEL_PATTERN),
            );
        }
        // Reported on the list, as the CRD's CEL rule does (it cannot name an index).
        let resolved = (target.resolved_namespace(namespace), target.name.as_str());
        if !seen.insert(resolved) {
            findings.error("spec.targetRefs", msg::duplicate(format!("{}/{} (entry [{i}])", resolved.0, resolved.1)));
        }
    }
}

fn check_callers(findings: &mut Findings, callers: &[Caller]) {
    findings.check_items("spec.callers", callers.len(), 1, CALLERS_MAX);
    let mut seen = BTreeSet::new();
    for (i, caller) in callers.iter().enumerate() {
        let path = format!("spec.callers[{i}]");
        findings.check_string(
            &format!("{path}.namespace"),
            &caller.namespace,
            1,
            DNS1123_LABEL_MAX,
            Some(DNS1123_LABEL_PATTERN),
        );
        if let Some(sa) = &caller.service_account {
            findings.check_string(
                &format!("{path}.serviceAccount"),
                sa,
                1,
                DNS1123_SUBDOMAIN_MAX,
                Some(DNS1123_SUBDOMAIN_PATTERN),
            );
        }
        // Reported on the list, as the CRD's CEL rule does.
        if !seen.insert((caller.namespace.as_str(), caller.service_account.as_deref())) {
            let who = match &caller.service_account {
                Some(sa) => format!("{}/{sa}", caller.namespace),
                None => caller.namespace.clone(),
            };
            findings.error("spec.callers", msg::duplicate(format!("{who} (entry [{i}])")));
        }
    }
}

fn check_identity(findings: &mut Findings, base: &str, identity: &Identity) {
    findings.check_string(&format!("{base}.id"), &identity.id, 1, IDENTITY_ID_MAX, None);
    if let Some(name) = &identity.display_name {
        findings.check_string(&format!("{base}.displayName"), name, 1, DISPLAY_NAME_MAX, None);
    }
    if let Some(email) = &identity.email {
        findings.check_string(&format!("{base}.email"), email, 0, EMAIL_MAX, Some(EMAIL_PATTERN));
    }
    if let Some(url) = &identity.logo_url {
        findings.check_string(&format!("{base}.logoUrl"), url, 0, LOGO_URL_MAX, Some(LOGO_URL_PATTERN));
    }
    if let Some(metadata) = &identity.metadata {
        findings.check_items(&format!("{base}.metadata"), metadata.len(), 0, METADATA_MAX);
        for (i, map) in metadata.iter().enumerate() {
            let path = format!("{base}.metadata[{i}]");
            if map.len() > METADATA_ENTRIES_MAX as usize {
                findings.error(path.clone(), msg::max_properties(METADATA_ENTRIES_MAX));
            }
            if map.keys().any(|k| k.is_empty() || k.chars().count() > METADATA_KEY_MAX as usize) {
                findings.error(path.clone(), METADATA_KEY_MESSAGE);
            }
            for (key, value) in map {
                findings.check_string(&format!("{path}.{key}"), value, 0, METADATA_VALUE_MAX, None);
            }
        }
    }
    if let Some(tags) = &identity.tags {
        findings.check_items(&format!("{base}.tags"), tags.len(), 0, TAGS_MAX);
        let mut seen = HashSet::new();
        for (i, tag) in tags.iter().enumerate() {
            let path = format!("{base}.tags[{i}]");
            findings.check_string(&path, tag, 1, TAG_MAX, None);
            if !seen.insert(tag.as_str()) {
                findings.error(path, msg::duplicate(format!("{tag:?}")));
            }
        }
    }
}

fn check_load_balancer(findings: &mut Findings, spec: &ImageVariationPolicySpec, lb: &crate::api::LoadBalancer) {
    findings.check_items("spec.loadBalancer.models", lb.models.len(), 1, LB_MODELS_MAX);
    let mut seen = HashSet::new();
    let mut weights_ok = true;
    for (i, m) in lb.models.iter().enumerate() {
        findings.check_string(
            &format!("spec.loadBalancer.models[{i}].model"),
            &m.model,
            1,
            MODEL_MAX,
            Some(MODEL_PATTERN),
        );
        if !seen.insert(m.model.as_str()) {
            findings.error(format!("spec.loadBalancer.models[{i}]"), msg::duplicate(&m.model));
        }
        if let Some(w) = m.weight {
            let path = format!("spec.loadBalancer.models[{i}].weight");
            if !w.is_finite() {
                findings.error(path, "must be a finite number");
                weights_ok = false;
            } else if w < WEIGHT_MIN {
                findings.error(path, msg::minimum(WEIGHT_MIN));
                weights_ok = false;
            } else if w > WEIGHT_MAX {
                findings.error(path, msg::maximum(WEIGHT_MAX));
                weights_ok = false;
            }
        }
    }

    if let Some(fallbacks) = &spec.fallbacks {
        for (i, f) in fallbacks.iter().enumerate() {
            if seen.contains(f.model.as_str()) {
                findings.warn(
                    format!("spec.fallbacks[{i}].model"),
                    format!(
                        "{} is also a load-balancer model: a failing call may fall back to the model that just failed",
                        f.model
                    ),
                );
            }
        }
    }

    if weights_ok && !lb.models.is_empty() {
        let set = lb.models.iter().filter(|m| m.weight.is_some()).count();
        let sum: f64 = lb.models.iter().map(|m| m.weight.unwrap_or(WEIGHT_DEFAULT)).sum();
        let partly_unset = set > 0 && set < lb.models.len();
        if partly_unset || (sum - 1.0).abs() > 1e-9 {
            let shares = effective_shares(lb)
                .iter()
                .map(|(model, share)| format!("{model} {share:.1}%"))
                .collect::<Vec<_>>()
                .join(", ");
            let why = if partly_unset {
                format!("some weights are unset (orq uses {WEIGHT_DEFAULT} for them)")
            } else {
                format!("weights sum to {}, not 1", trim_float(sum))
            };
            findings.warn("spec.loadBalancer.models", format!("{why}; orq normalizes them to: {shares}"));
        }
    }
}

/// The traffic share (in percent) each load-balancer model gets after orq normalizes the
/// weights, unset weights counting as 0.5.
pub fn effective_shares(lb: &crate::api::LoadBalancer) -> Vec<(String, f64)> {
    let sum: f64 = lb.models.iter().map(|m| m.weight.unwrap_or(WEIGHT_DEFAULT)).sum();
    lb.models
        .iter()
        .map(|m| {
            let share = if sum > 0.0 { m.weight.unwrap_or(WEIGHT_DEFAULT) / sum * 100.0 } else { 0.0 };
            (m.model.clone(), share)
        })
        .collect()
}

fn trim_float(value: f64) -> String {
    let s = format!("{value:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Validates a whole policy in `namespace`: its object name, then its spec.
pub fn validate_policy(namespace: &str, name: &str, spec: &ImageVariationPolicySpec) -> Findings {
    let mut findings = validate_spec(spec, namespace);
    findings.errors.splice(0..0, validate_object_name(name, namespace));
    let canary = crate::key::PolicyKey::new(namespace, name).canary_key();
    if spec.rollout.is_some() && findings.is_valid() && canary.len() > DNS1123_SUBDOMAIN_MAX as usize {
        findings.error(
            "metadata.name",
            format!("is too long for spec.rollout: the canary key {canary:?} would exceed {DNS1123_SUBDOMAIN_MAX} characters"),
        );
    }
    findings
}

/// Checks a policy's metadata name: a DNS-1123 subdomain, short enough that its data key
/// `<namespace>.<name>.json` stays a valid ConfigMap key (at most 253 characters).
pub fn validate_object_name(name: &str, namespace: &str) -> Vec<Violation> {
    let mut findings = Findings::default();
    findings.check_string("metadata.name", name, 1, DNS1123_SUBDOMAIN_MAX, Some(DNS1123_SUBDOMAIN_PATTERN));
    if findings.errors.is_empty() {
        let key = crate::key::PolicyKey::new(namespace, name).data_key();
        if key.len() > DNS1123_SUBDOMAIN_MAX as usize {
            findings.error(
                "metadata.name",
                format!("is too long: the data key {key:?} would exceed {DNS1123_SUBDOMAIN_MAX} characters"),
            );
        }
    }
    findings.errors
}
