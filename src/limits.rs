//! The rule book's numbers and patterns, in one place.
//!
//! The CRD schema (via `schemars` attributes in [`crate::api`]) and the Rust rules in
//! [`crate::validate`] both read these constants, so the API server, the reconcile loop and
//! `routerpolicy validate` can never disagree about a bound. This module holds data only.

/// `spec.targetRefs`: at least one target.
pub const TARGETS_MIN: u32 = 1;
/// `spec.targetRefs`: at most 16 targets.
pub const TARGETS_MAX: u32 = 16;
/// DNS-1123 subdomain (ConfigMap names).
pub const DNS1123_SUBDOMAIN_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// Maximum length of a DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX: u32 = 253;
/// DNS-1123 label (namespace names).
pub const DNS1123_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// Maximum length of a DNS-1123 label.
pub const DNS1123_LABEL_MAX: u32 = 63;

/// `spec.name`: the trace name, 1..128 characters.
pub const TRACE_NAME_MAX: u32 = 128;
/// No control characters (Unicode category Cc) anywhere in the string.
pub const NO_CONTROL_CHARS_PATTERN: &str = r"^\P{Cc}*$";

/// `spec.retry.count` lower bound.
pub const RETRY_COUNT_MIN: i64 = 1;
/// `spec.retry.count` upper bound.
pub const RETRY_COUNT_MAX: i64 = 5;
/// `spec.retry.onCodes`: at most 16 codes.
pub const RETRY_CODES_MAX: u32 = 16;
/// Lowest HTTP status we allow a retry on (no retrying successes or redirects).
pub const RETRY_CODE_MIN: i64 = 400;
/// Highest HTTP status code.
pub const RETRY_CODE_MAX: i64 = 599;

/// `spec.fallbacks`: at most 10 entries.
pub const FALLBACKS_MAX: u32 = 10;
/// More fallbacks than this is a warning (orq's advice).
pub const FALLBACKS_ADVISED_MAX: usize = 3;

/// `provider/model`: lower-case provider, a slash, then a model id.
pub const MODEL_PATTERN: &str = r"^[a-z0-9][a-z0-9-]*/[A-Za-z0-9._:/-]+$";
/// Maximum length of a model identifier.
pub const MODEL_MAX: u32 = 256;

/// `spec.prompt.id`: letters, digits, `_` and `-`.
pub const PROMPT_ID_PATTERN: &str = r"^[A-Za-z0-9_-]+$";
/// Maximum length of `spec.prompt.id`.
pub const PROMPT_ID_MAX: u32 = 128;

/// Maximum length of `identity.id`.
pub const IDENTITY_ID_MAX: u32 = 128;
/// Maximum length of `identity.displayName`.
pub const DISPLAY_NAME_MAX: u32 = 256;
/// A practical e-mail address: local part, `@`, a dotted domain of DNS labels.
pub const EMAIL_PATTERN: &str = r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$";
/// Maximum length of an e-mail address (RFC 5321 path limit).
pub const EMAIL_MAX: u32 = 254;
/// An absolute `http://` or `https://` URL with a host.
pub const LOGO_URL_PATTERN: &str = r"^https?://[^\s/?#]+([/?#]\S*)?$";
/// Maximum length of `identity.logoUrl`.
pub const LOGO_URL_MAX: u32 = 2048;
/// `identity.tags`: at most 32.
pub const TAGS_MAX: u32 = 32;
/// Maximum length of one tag.
pub const TAG_MAX: u32 = 64;
/// `identity.metadata`: at most 16 maps.
pub const METADATA_MAX: u32 = 16;
/// Entries in one `identity.metadata` map: at most 32.
pub const METADATA_ENTRIES_MAX: u32 = 32;
/// Length of a key in an `identity.metadata` map: 1 to 128 characters.
pub const METADATA_KEY_MAX: u32 = 128;
/// Length of a value in an `identity.metadata` map: at most 1024 characters.
pub const METADATA_VALUE_MAX: u32 = 1024;
/// The CEL rule (and the Rust rule's message) for metadata keys.
pub const METADATA_KEY_RULE: &str = "self.all(k, size(k) >= 1 && size(k) <= 128)";
/// Message of [`METADATA_KEY_RULE`].
pub const METADATA_KEY_MESSAGE: &str = "keys must be 1 to 128 characters long";

/// `spec.cache.ttl` lower bound (seconds).
pub const CACHE_TTL_MIN: i64 = 1;
/// `spec.cache.ttl` upper bound (seconds; three days, orq's bound).
pub const CACHE_TTL_MAX: i64 = 259_200;

/// `spec.loadBalancer.models`: at most 16.
pub const LB_MODELS_MAX: u32 = 16;
/// Smallest load-balancer weight orq accepts.
pub const WEIGHT_MIN: f64 = 0.001;
/// Largest load-balancer weight.
pub const WEIGHT_MAX: f64 = 1.0;
/// The weight orq assumes when none is given.
pub const WEIGHT_DEFAULT: f64 = 0.5;

/// `spec.timeout.callTimeout` lower bound (ms).
pub const CALL_TIMEOUT_MIN: i64 = 1;
/// `spec.timeout.callTimeout` upper bound (ms; ten minutes, our sanity bound).
pub const CALL_TIMEOUT_MAX: i64 = 600_000;
/// A per-attempt timeout shorter than this is a warning.
pub const CALL_TIMEOUT_ADVISED_MIN: i64 = 1000;

/// `spec.callers` upper bound.
pub const CALLERS_MAX: u32 = 32;

/// The API server's limit on a ConfigMap's data (sum of key and value lengths).
pub const CONFIGMAP_MAX_BYTES: usize = 1024 * 1024;

/// Steps of `spec.rollout.steps`.
pub const ROLLOUT_STEPS_MIN: u32 = 1;
/// Steps of `spec.rollout.steps`, at most.
pub const ROLLOUT_STEPS_MAX: u32 = 10;
/// A step's weight (percent of calls on the new document).
pub const ROLLOUT_WEIGHT_MIN: i64 = 1;
/// A step's weight, at most.
pub const ROLLOUT_WEIGHT_MAX: i64 = 99;
/// `spec.rollout.minRequests`.
pub const ROLLOUT_MIN_REQUESTS_MIN: i64 = 1;
/// `spec.rollout.minRequests`, at most.
pub const ROLLOUT_MIN_REQUESTS_MAX: i64 = 1_000_000;
/// The pattern of a step's `pause`: hours, minutes, seconds, each at most once, in order.
pub const PAUSE_PATTERN: &str = "^([0-9]{1,6}h)?([0-9]{1,6}m)?([0-9]{1,6}s)?$";
