//! The gateway wing: `routerpolicy gateway`, the reference gateway (docs/gateway.md). An HTTP
//! proxy for orq's image-variation endpoint that puts a team's policy — the document the
//! operator wrote into a gateway ConfigMap — on every request it forwards.
//!
//! ```text
//!  request ─▶ server ─▶ proxy: select policy (store snapshot) ─▶ read body ─▶ rewrite ─▶ upstream ─▶ orq
//!                          └─▶ error (the answer when it does not forward)
//!  reload (poll the directory and the key file) ─▶ store (pure: files → served policies)
//! ```
//!
//! Policies come from the mounted ConfigMap directory ([`reload`] polls it) or, with
//! `--config-map`, from the ConfigMap itself through the API ([`source`]); in that mode the
//! replica keeps a report Lease of what it serves ([`lease`]).
//!
//! One concern per file: [`runtime`] (start-up, the tasks, the drain), [`options`] (flags,
//! start-up errors), [`server`] (connections),
//! [`tls`] (the listener's certificate pair and its rotation),
//! [`proxy`] (the request path), [`auth`] (who calls), [`issuer`] (the issuer's keys), [`budget`] (request bodies held at once), [`error`] (every
//! refusal as its response), [`headers`]
//! (hop-by-hop), [`upstream`] (the client and the URL), [`reload`] (polling, publishing a new
//! set of documents), [`source`] (the ConfigMap watch), [`lease`] (the report Lease), [`store`] and
//! [`rewrite`] (pure), [`metrics`]. It imports nothing of the operator: only the leaves
//! [`crate::key`], [`crate::hash`], [`crate::process`], [`crate::callers`] and [`crate::serving`].

pub mod auth;
pub mod budget;
pub mod error;
pub mod headers;
pub mod issuer;
pub mod lease;
pub mod metrics;
pub mod options;
pub mod pool;
pub mod proxy;
pub mod reload;
pub mod rewrite;
pub mod runtime;
pub mod server;
pub mod source;
pub mod store;
pub mod stream;
pub mod tls;
pub mod upstream;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::HeaderValue;
use tokio::sync::watch;

pub use metrics::{GatewayMetrics, PolicyInfoLabels, PolicyLabels, RequestLabels};
pub use options::{DurationArg, GatewayError, GatewayOptions};

use crate::key::PolicyKey;
use crate::process::admin::Admin;
use store::Snapshot;
use upstream::{Upstream, UpstreamClient};

pub use crate::key::{HASH_HEADER, POLICY_HEADER, VARIATIONS_PATH};

/// What this replica serves, for its report: the ConfigMap's resourceVersion it loaded and
/// the keys it refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Serving {
    /// Whether a first complete load happened.
    pub loaded: bool,
    /// The loaded ConfigMap's `metadata.resourceVersion` (empty while it does not exist).
    pub resource_version: String,
    /// Refused data keys, with why.
    pub rejected: BTreeMap<String, String>,
}

/// State shared by the handlers and the reloader.
pub struct Gateway {
    snapshot: RwLock<Arc<Snapshot>>,
    api_key: RwLock<Option<HeaderValue>>,
    client: UpstreamClient,
    upstream: Upstream,
    default_policy: Option<PolicyKey>,
    max_body_bytes: u64,
    upstream_content_length: bool,
    max_document_bytes: usize,
    body_idle_timeout: Duration,
    body_timeout: Duration,
    budget: budget::Budget,
    /// How long a request waits for room in the budget before it is shed.
    budget_wait: Duration,
    request_timeout: Duration,
    /// Checks callers (`--auth serviceaccount`); `None` with `--auth none`.
    auth: Option<auth::Authenticator>,
    metrics: GatewayMetrics,
    loaded: AtomicBool,
    draining: AtomicBool,
    /// What is served, for the report Lease (API mode).
    serving: watch::Sender<Serving>,
}

impl Admin for Gateway {
    fn metrics(&self) -> String {
        self.metrics.encode()
    }

    fn readiness(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::Relaxed) {
            Err("draining")
        } else if self.loaded.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("policies not loaded yet")
        }
    }
}
