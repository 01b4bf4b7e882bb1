//! The gateway's metrics (`routerpolicy_gateway_*`). Policies are labelled as callers name
//! them, `<namespace>.<name>`.

use axum::http::StatusCode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::gateway::auth::AuthOutcome;
use crate::key::PolicyKey;
use crate::process::admin::registered;

/// A policy label is `<namespace>.<name>`, the name a caller selects it by.
impl EncodeLabelValue for PolicyKey {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        write!(encoder, "{self}")
    }
}

/// Labels of a request count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The policy, or empty when none was selected.
    pub policy: Option<PolicyKey>,
    /// HTTP status code answered.
    pub code: u16,
}

/// Labels naming one policy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// The policy.
    pub policy: PolicyKey,
}

/// Labels of the policy info series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyInfoLabels {
    /// The policy.
    pub policy: PolicyKey,
    /// The served document's hash, equal to the policy's `status.configHash`.
    pub hash: String,
}

/// Labels of an authentication count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    /// What came of it.
    pub outcome: AuthOutcome,
}

/// The gateway's metrics.
pub struct GatewayMetrics {
    registry: Registry,
    /// Requests answered, by policy and status code.
    pub requests: Family<RequestLabels, Counter>,
    /// Time from sending to orq until its response headers, by policy.
    pub upstream_duration: Family<PolicyLabels, Histogram, fn() -> Histogram>,
    /// Files that could not be used at a reload, by policy.
    pub reload_errors: Family<PolicyLabels, Counter>,
    /// One series (value 1) per served policy with its document's hash.
    pub policy_info: Family<PolicyInfoLabels, Gauge>,
    /// Policies served.
    pub policies: Gauge,
    /// Reloads of the config directory.
    pub reloads: Counter,
    /// Requests being proxied now.
    pub in_flight: Gauge,
    /// 1 while the ConfigMap watch is healthy, 0 while it fails (`--config-map`).
    pub source_up: Gauge,
    /// Requests answered 503 `overloaded` before their body was read.
    pub shed: Counter,
    /// Request bodies that stalled or did not arrive in time (408).
    pub body_timeouts: Counter,
    /// Bytes of request bodies reserved now (of `--max-buffered-bytes`).
    pub buffered_bytes: Gauge,
    /// Callers checked (`--auth serviceaccount`), by outcome.
    pub auth: Family<AuthLabels, Counter>,
    /// TokenReviews sent to the API server (tokens not in the cache).
    pub token_reviews: Counter,
    /// The listener's TLS (`--tls-cert-file`).
    pub tls: TlsMetrics,
}

/// Metrics of the listener's TLS.
#[derive(Clone, Default)]
pub struct TlsMetrics {
    /// Certificate pairs loaded after a change of their files.
    pub reloads: Counter,
    /// Changed pairs that did not load (the one in use stayed).
    pub reload_errors: Counter,
    /// Connections whose TLS handshake failed or timed out.
    pub handshake_failures: Counter,
}

impl TlsMetrics {
    fn register(registry: &mut Registry) -> TlsMetrics {
        let reloads = registered(
            registry,
            "tls_reloads",
            "TLS certificate pairs loaded after their files changed",
            Counter::default(),
        );
        let reload_errors = registered(
            registry,
            "tls_reload_errors",
            "Changed TLS certificate pairs that did not load (the one in use stayed)",
            Counter::default(),
        );
        let handshake_failures = registered(
            registry,
            "tls_handshake_failures",
            "Connections whose TLS handshake failed or timed out",
            Counter::default(),
        );
        TlsMetrics { reloads, reload_errors, handshake_failures }
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("routerpolicy_gateway");
        let r = &mut registry;
        let shed =
            registered(r, "shed", "Requests answered 503 overloaded before their body was read", Counter::default());
        let body_timeouts = registered(
            r,
            "body_timeouts",
            "Request bodies that stalled or did not arrive in time (408)",
            Counter::default(),
        );
        let buffered_bytes = registered(
            r,
            "buffered_bytes",
            "Bytes of request bodies reserved now (of --max-buffered-bytes)",
            Gauge::default(),
        );
        let requests = registered(r, "requests", "Requests answered, by policy and status code", Family::default());
        let upstream_duration = registered(
            r,
            "upstream_duration_seconds",
            "Time from sending a request to orq until its response headers",
            Family::<PolicyLabels, Histogram>::new_with_constructor(
                (|| Histogram::new(exponential_buckets(0.005, 2.0, 14))) as fn() -> Histogram,
            ),
        );
        let reload_errors =
            registered(r, "reload_errors", "Policy files that could not be used at a reload", Family::default());
        let policy_info = registered(
            r,
            "policy_info",
            "One series per served policy; hash equals the policy's status.configHash",
            Family::default(),
        );
        let policies = registered(r, "policies", "Policies served", Gauge::default());
        let reloads = registered(r, "reloads", "Reloads of the config directory", Counter::default());
        let in_flight = registered(r, "in_flight", "Requests being proxied now", Gauge::default());
        let source_up = registered(
            r,
            "source_up",
            "1 while the ConfigMap watch is healthy, 0 while it fails (--config-map)",
            Gauge::default(),
        );
        let (auth, token_reviews) = register_auth(&mut registry);
        let tls = TlsMetrics::register(&mut registry);
        GatewayMetrics {
            auth,
            token_reviews,
            tls,
            registry,
            requests,
            upstream_duration,
            reload_errors,
            policy_info,
            policies,
            reloads,
            in_flight,
            source_up,
            shed,
            body_timeouts,
            buffered_bytes,
        }
    }
}

fn register_auth(registry: &mut Registry) -> (Family<AuthLabels, Counter>, Counter) {
    let auth = registered(registry, "auth", "Callers checked (--auth serviceaccount), by outcome", Family::default());
    let token_reviews = registered(
        registry,
        "token_reviews",
        "TokenReviews sent to the API server (tokens not in the cache)",
        Counter::default(),
    );
    (auth, token_reviews)
}

impl GatewayMetrics {
    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        crate::process::admin::encode(&self.registry)
    }

    /// Counts one answered request.
    pub fn count(&self, policy: Option<&PolicyKey>, code: StatusCode) {
        self.requests.get_or_create(&RequestLabels { policy: policy.cloned(), code: code.as_u16() }).inc();
    }
}
