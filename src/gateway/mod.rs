//! `routerpolicy gateway`: the reference gateway (PRODUCT §10). An HTTP proxy for orq's
//! image-variation endpoint that puts a team's policy — the document the operator wrote into
//! a gateway ConfigMap — on every request it forwards.
//!
//! Functional core, imperative shell: [`rewrite`] (the multipart rewrite) and [`store`] (which
//! files are which policies, last good documents) are pure; this module reads the
//! directory, serves HTTP and talks to orq.
//!
//! Crates, and why:
//! - **axum / hyper 1** serve HTTP: already in the tree for the operator's `/metrics`, the
//!   de-facto Rust HTTP stack. Connections are served by hyper's HTTP/1 builder directly (not
//!   `axum::serve`) for a header read timeout, with hyper-util's `GracefulShutdown`, which
//!   drains in-flight requests on SIGTERM.
//! - **hyper-util's client + hyper-rustls** (ring) talk to orq: the same stack kube-rs uses (no
//!   second TLS library in the binary), connection pooling, a connect timeout on the
//!   connector; roots from the system store (honouring `SSL_CERT_FILE`) and, where the image
//!   has none (the scratch image), the bundled Mozilla roots.
//! - **memchr + httparse** split the multipart body in place (no copy of the image);
//!   `multer`, axum's multipart parser, was measured first and copies every part (3.1 ms per
//!   4 MiB); it stays as the independent parser the tests check the output with. The field
//!   name that decides what is removed is parsed strictly by [`rewrite::disposition_name`]
//!   (see [`rewrite`] for why).
//! - **No file-watching crate**: the directory is polled (`--poll-interval`, default 1 s).
//!   kubelet publishes a ConfigMap by swapping the `..data` symlink, which inotify reports on
//!   the directory (not the files the gateway reads), differently across kernels and
//!   overlay filesystems; a poll of one `readlink` and a few `stat`s per second is exact,
//!   costs nothing measurable, and bounds the reload delay by the interval (≤ 2 s required).

pub mod rewrite;
pub mod store;

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::runtime::LogFormat;
use store::{FileRead, Snapshot};

/// The endpoint the gateway proxies.
pub const VARIATIONS_PATH: &str = "/v2/router/images/variations";
/// The header that selects a policy.
pub const POLICY_HEADER: &str = "x-routerpolicy-policy";
/// The response header that tells the caller which document was applied.
pub const HASH_HEADER: &str = "x-routerpolicy-policy-hash";

/// A duration flag: `250ms`, `5s`, `2m` (a bare number is seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub Duration);

impl std::str::FromStr for Timeout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let value: f64 = number.parse().map_err(|_| format!("{s:?}: expected a duration like 500ms, 5s or 2m"))?;
        let seconds = match unit {
            "ms" => value / 1000.0,
            "" | "s" => value,
            "m" => value * 60.0,
            _ => return Err(format!("{s:?}: unit must be ms, s or m")),
        };
        if !(seconds > 0.0 && seconds <= 86_400.0) {
            return Err(format!("{s:?}: must be more than 0 and at most 24h"));
        }
        Ok(Timeout(Duration::from_secs_f64(seconds)))
    }
}

/// Flags of `routerpolicy gateway`; each has an environment variable.
#[derive(clap::Args, Debug, Clone)]
pub struct GatewayOptions {
    /// Directory of policy documents: the mounted gateway ConfigMap, one
    /// `<namespace>.<name>.json` per policy (kubelet's `..data` layout or plain files).
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_CONFIG_DIR", default_value = "/etc/routerpolicy/policies")]
    pub config_dir: PathBuf,
    /// Base URL of orq; the request path is appended.
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_UPSTREAM", default_value = "https://my.orq.ai")]
    pub upstream: String,
    /// Address to serve the proxy, /metrics, /healthz and /readyz on.
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_LISTEN", default_value = "0.0.0.0:8090")]
    pub listen: SocketAddr,
    /// File holding orq's API key (a mounted Secret), sent upstream as `Authorization: Bearer`;
    /// re-read when it changes. Without it, requests go upstream with no Authorization.
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Policy `<namespace>.<name>` for requests without the X-Routerpolicy-Policy header;
    /// without it such requests are refused (400).
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_DEFAULT_POLICY")]
    pub default_policy: Option<String>,
    /// Largest request body accepted; larger ones get 413.
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: u64,
    /// Time to open a TCP connection to orq before answering 504 (the TLS handshake counts
    /// toward --request-timeout).
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_CONNECT_TIMEOUT", default_value = "5s")]
    pub connect_timeout: Timeout,
    /// Time from sending a request to orq (connection and TLS included) until its response
    /// headers arrive before answering 504.
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_REQUEST_TIMEOUT", default_value = "120s")]
    pub request_timeout: Timeout,
    /// How often the config directory and the key file are checked for changes.
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_POLL_INTERVAL", default_value = "1s")]
    pub poll_interval: Timeout,
    /// Log format.
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log level or tracing filter (e.g. `info`, `routerpolicy=debug`).
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// `--upstream` is not an http(s) URL.
    #[error("--upstream {0:?} is not an http:// or https:// URL")]
    Upstream(String),
    /// `--default-policy` is not `<namespace>.<name>`.
    #[error("--default-policy {name:?}: {reason}")]
    DefaultPolicy {
        /// The flag's value.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The key file could not be read at start.
    #[error("--api-key-file {path}: {reason}")]
    ApiKey {
        /// The path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl GatewayError {
    /// A hint for the user, where one helps.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            GatewayError::ApiKey { .. } => {
                Some("mount the Secret holding orq's API key and point --api-key-file at its file")
            }
            GatewayError::Listen { .. } => Some("choose a free address with --listen"),
            _ => None,
        }
    }
}

/// Labels of a request count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `<namespace>.<name>`, or empty when no policy was selected.
    pub policy: String,
    /// HTTP status code answered.
    pub code: String,
}

/// Labels naming one policy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// `<namespace>.<name>`.
    pub policy: String,
}

/// Labels of the policy info series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyInfoLabels {
    /// `<namespace>.<name>`.
    pub policy: String,
    /// The served document's hash, equal to the policy's `status.configHash`.
    pub hash: String,
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
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("routerpolicy_gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        let upstream_duration = Family::<PolicyLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.005, 2.0, 14))) as fn() -> Histogram,
        );
        let reload_errors = Family::<PolicyLabels, Counter>::default();
        let policy_info = Family::<PolicyInfoLabels, Gauge>::default();
        let policies = Gauge::default();
        let reloads = Counter::default();
        let in_flight = Gauge::default();
        registry.register("requests", "Requests answered, by policy and status code", requests.clone());
        registry.register(
            "upstream_duration_seconds",
            "Time from sending a request to orq until its response headers",
            upstream_duration.clone(),
        );
        registry.register("reload_errors", "Policy files that could not be used at a reload", reload_errors.clone());
        registry.register(
            "policy_info",
            "One series per served policy; hash equals the policy's status.configHash",
            policy_info.clone(),
        );
        registry.register("policies", "Policies served", policies.clone());
        registry.register("reloads", "Reloads of the config directory", reloads.clone());
        registry.register("in_flight", "Requests being proxied now", in_flight.clone());
        GatewayMetrics {
            registry,
            requests,
            upstream_duration,
            reload_errors,
            policy_info,
            policies,
            reloads,
            in_flight,
        }
    }
}

impl GatewayMetrics {
    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    fn count(&self, policy: &str, code: StatusCode) {
        self.requests
            .get_or_create(&RequestLabels { policy: policy.to_string(), code: code.as_u16().to_string() })
            .inc();
    }
}

/// The body sent upstream: the rewritten chunks, with an exact length.
struct Chunks {
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.chunks.pop_front() {
            Some(chunk) => {
                self.remaining -= chunk.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

type UpstreamClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Chunks>;

/// The upstream base: scheme, authority and a path prefix without a trailing slash.
#[derive(Debug, Clone)]
struct Upstream {
    scheme: String,
    authority: String,
    prefix: String,
}

impl Upstream {
    fn parse(url: &str) -> Result<Upstream, GatewayError> {
        let uri: Uri = url.parse().map_err(|_| GatewayError::Upstream(url.to_string()))?;
        let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
        let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        if !(scheme == "http" || scheme == "https") || authority.is_empty() || uri.query().is_some() {
            return Err(GatewayError::Upstream(url.to_string()));
        }
        let prefix = uri.path().trim_end_matches('/').to_string();
        Ok(Upstream { scheme, authority, prefix })
    }

    fn uri(&self, path_and_query: &str) -> Result<Uri, axum::http::Error> {
        Ok(format!("{}://{}{}{}", self.scheme, self.authority, self.prefix, path_and_query).parse::<Uri>()?)
    }
}

/// State shared by the handlers and the reloader.
struct Gateway {
    snapshot: RwLock<Arc<Snapshot>>,
    api_key: RwLock<Option<HeaderValue>>,
    client: UpstreamClient,
    upstream: Upstream,
    default_policy: Option<String>,
    max_body_bytes: u64,
    request_timeout: Duration,
    metrics: GatewayMetrics,
    loaded: AtomicBool,
    draining: AtomicBool,
}

/// A JSON error answer: `{"error":{"code":…,"message":…}}`.
fn json_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({ "error": { "code": code, "message": message.into() } });
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded in either direction.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Whether an upstream error is a timeout (connect timeout) rather than a refusal.
fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        if e.to_string().contains("timed out") {
            return true;
        }
        source = e.source();
    }
    false
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    parts.join(": ")
}

async fn proxy(State(gw): State<Arc<Gateway>>, request: Request) -> Response {
    if request.method() != Method::POST {
        let mut r = json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{VARIATIONS_PATH} accepts POST only"),
        );
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        gw.metrics.count("", StatusCode::METHOD_NOT_ALLOWED);
        return r;
    }
    // Which policy.
    let named = match request.headers().get(POLICY_HEADER) {
        Some(value) => match value.to_str() {
            Ok(s) => Some(s.trim().to_string()),
            Err(_) => {
                gw.metrics.count("", StatusCode::BAD_REQUEST);
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "policy_name_invalid",
                    "X-Routerpolicy-Policy is not ASCII",
                );
            }
        },
        None => None,
    };
    let Some(name) = named.or_else(|| gw.default_policy.clone()) else {
        gw.metrics.count("", StatusCode::BAD_REQUEST);
        return json_error(
            StatusCode::BAD_REQUEST,
            "policy_required",
            "set the X-Routerpolicy-Policy header to <namespace>.<name> of an ImageVariationPolicy (this gateway has no --default-policy)",
        );
    };
    if let Err(reason) = store::check_policy_name(&name) {
        gw.metrics.count("", StatusCode::BAD_REQUEST);
        return json_error(
            StatusCode::BAD_REQUEST,
            "policy_name_invalid",
            format!("X-Routerpolicy-Policy {name:?}: {reason}"),
        );
    }
    let policy = gw.snapshot.read().ok().and_then(|s| s.policies.get(&name).cloned());
    let Some(policy) = policy else {
        gw.metrics.count("", StatusCode::NOT_FOUND);
        return json_error(
            StatusCode::NOT_FOUND,
            "policy_not_found",
            format!("policy {name:?} is not served by this gateway (no {name}.json in its config directory)"),
        );
    };
    let answer = |code: StatusCode, kind: &str, message: String| {
        gw.metrics.count(&policy.name, code);
        json_error(code, kind, message)
    };

    // The body, bounded.
    let (parts, body) = request.into_parts();
    let too_large = || {
        answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body exceeds {} bytes (--max-body-bytes)", gw.max_body_bytes),
        )
    };
    if let Some(length) = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && length > gw.max_body_bytes
    {
        return too_large();
    }
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let boundary = match rewrite::boundary_of(content_type) {
        Ok(b) => b,
        Err(e) => return answer(StatusCode::UNSUPPORTED_MEDIA_TYPE, "not_multipart", e.to_string()),
    };
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let body = match read_body(body, gw.max_body_bytes, declared).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => return too_large(),
        Err(BodyError::Read(e)) => {
            return answer(StatusCode::BAD_REQUEST, "body_unreadable", format!("cannot read the request body: {e}"));
        }
    };

    // The rewrite.
    let rewritten = match rewrite::rewrite(&body, &boundary, &policy.document) {
        Ok(r) => r,
        Err(e) => return answer(StatusCode::BAD_REQUEST, "multipart_invalid", e.to_string()),
    };
    if !rewritten.removed.is_empty() {
        debug!(policy = %policy.name, removed = ?rewritten.removed, "removed the caller's router fields");
    }

    // The upstream request.
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or(VARIATIONS_PATH);
    let uri = match gw.upstream.uri(path_and_query) {
        Ok(u) => u,
        Err(e) => return answer(StatusCode::BAD_REQUEST, "path_invalid", e.to_string()),
    };
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    for name in [header::HOST, header::AUTHORIZATION, header::CONTENT_LENGTH, header::CONTENT_TYPE, header::EXPECT] {
        headers.remove(name);
    }
    headers.remove(POLICY_HEADER);
    if let Ok(ct) = HeaderValue::from_str(&rewritten.content_type) {
        headers.insert(header::CONTENT_TYPE, ct);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(rewritten.len));
    if let Some(key) = gw.api_key.read().ok().and_then(|k| k.clone()) {
        headers.insert(header::AUTHORIZATION, key);
    }
    let mut upstream_request =
        hyper::Request::new(Chunks { remaining: rewritten.len, chunks: rewritten.chunks.into() });
    *upstream_request.method_mut() = Method::POST;
    *upstream_request.uri_mut() = uri;
    *upstream_request.headers_mut() = headers;

    gw.metrics.in_flight.inc();
    let started = Instant::now();
    let sent = tokio::time::timeout(gw.request_timeout, gw.client.request(upstream_request)).await;
    gw.metrics.in_flight.dec();
    gw.metrics
        .upstream_duration
        .get_or_create(&PolicyLabels { policy: policy.name.clone() })
        .observe(started.elapsed().as_secs_f64());
    let upstream_response = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let cause = error_chain(&e);
            let (status, code, message) = if is_timeout(&e) {
                (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", format!("orq did not answer in time: {cause}"))
            } else {
                (StatusCode::BAD_GATEWAY, "upstream_unreachable", format!("cannot reach orq: {cause}"))
            };
            warn!(policy = %policy.name, error = %cause, code, "upstream request failed");
            return answer(status, code, message);
        }
        Err(_) => {
            warn!(policy = %policy.name, timeout = ?gw.request_timeout, "upstream request timed out");
            return answer(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!("orq did not answer within {:?} (--request-timeout)", gw.request_timeout),
            );
        }
    };
    let (mut head, incoming) = upstream_response.into_parts();
    strip_hop_by_hop(&mut head.headers);
    if let Ok(hash) = HeaderValue::from_str(&policy.hash) {
        head.headers.insert(HASH_HEADER, hash);
    }
    gw.metrics.count(&policy.name, head.status);
    debug!(policy = %policy.name, status = head.status.as_u16(), "proxied");
    Response::from_parts(head, Body::new(incoming))
}

enum BodyError {
    TooLarge,
    Read(axum::Error),
}

/// Reads the body into one buffer, sized up front from Content-Length (one copy of the bytes,
/// from hyper's read buffer into this one), refusing more than `max` bytes.
async fn read_body(mut body: Body, max: u64, declared: Option<u64>) -> Result<Bytes, BodyError> {
    // A caller's Content-Length reserves at most 8 MiB up front; larger bodies grow the buffer.
    let capacity = declared.unwrap_or(64 * 1024).min(max).min(8 * 1024 * 1024) as usize;
    let mut buffer = bytes::BytesMut::with_capacity(capacity);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Read)?;
        if let Ok(data) = frame.into_data() {
            if (buffer.len() + data.len()) as u64 > max {
                return Err(BodyError::TooLarge);
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(buffer.freeze())
}

async fn not_found(State(gw): State<Arc<Gateway>>, uri: Uri) -> Response {
    gw.metrics.count("", StatusCode::NOT_FOUND);
    json_error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {}; this gateway serves POST {VARIATIONS_PATH}", uri.path()),
    )
}

async fn metrics_handler(State(gw): State<Arc<Gateway>>) -> Response {
    let mut r = gw.metrics.encode().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> (StatusCode, &'static str) {
    if gw.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if gw.loaded.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "config directory not read yet\n")
    }
}

/// What decides whether the directory must be re-read: the `..data` link and each entry's
/// size, modification time and inode (following links).
type Fingerprint = (Option<PathBuf>, Vec<(String, Option<(u64, i128, u64)>)>);

fn fingerprint(dir: &Path) -> std::io::Result<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let data = std::fs::read_link(dir.join("..data")).ok();
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if store::policy_of_file(&name).is_none() {
            continue;
        }
        let meta = std::fs::metadata(entry.path()).ok().map(|m| {
            let mtime = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
            (m.len(), mtime, m.ino())
        });
        entries.push((name, meta));
    }
    entries.sort();
    Ok((data, entries))
}

fn read_files(dir: &Path, fingerprint: &Fingerprint) -> BTreeMap<String, FileRead> {
    fingerprint
        .1
        .iter()
        .map(|(name, _)| (name.clone(), std::fs::read(dir.join(name)).map_err(|e| e.to_string())))
        .collect()
}

fn read_key(path: &Path) -> Result<HeaderValue, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let key = text.trim();
    if key.is_empty() {
        return Err("the file is empty".into());
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
        .map_err(|_| "the key has characters not allowed in a header".to_string())?;
    value.set_sensitive(true);
    Ok(value)
}

/// What the polling loop remembers between ticks.
#[derive(Default)]
struct PollState {
    /// The directory as last loaded.
    fingerprint: Option<Fingerprint>,
    /// The last error reading the directory, and the key file: each is logged once.
    dir_error: Option<String>,
    key_error: Option<String>,
}

/// Records `error` in `slot`; true when it differs from the one recorded before (log it).
fn first_time(slot: &mut Option<String>, error: String) -> bool {
    let new = slot.as_deref() != Some(error.as_str());
    *slot = Some(error);
    new
}

/// Applies one reload of the directory; returns whether the directory could be listed.
fn reload_once(gw: &Gateway, dir: &Path, state: &mut PollState) -> bool {
    let print = match fingerprint(dir) {
        Ok(p) => p,
        Err(e) => {
            if first_time(&mut state.dir_error, e.to_string()) {
                warn!(dir = %dir.display(), error = %e, "cannot read the config directory; serving the policies loaded before");
            }
            state.fingerprint = None;
            return false;
        }
    };
    state.dir_error = None;
    if state.fingerprint.as_ref() == Some(&print) {
        return true;
    }
    let files = read_files(dir, &print);
    let previous = gw.snapshot.read().map(|s| s.clone()).unwrap_or_default();
    let result = store::reload(&previous, files);
    for e in &result.errors {
        gw.metrics.reload_errors.get_or_create(&PolicyLabels { policy: e.policy.clone() }).inc();
        if e.kept_last_good {
            warn!(policy = %e.policy, error = %e.message, "policy file unusable; keeping its last good document");
        } else {
            warn!(policy = %e.policy, error = %e.message, "policy file unusable; the policy is not served");
        }
    }
    for p in &result.added {
        info!(policy = %p, hash = %result.snapshot.policies[p].hash, "serving policy");
    }
    for p in &result.changed {
        info!(policy = %p, hash = %result.snapshot.policies[p].hash, "policy document changed");
    }
    for p in &result.removed {
        info!(policy = %p, "policy file removed; no longer served");
    }
    // Only the series that change: a scrape never sees a served policy without its series.
    for name in result.changed.iter().chain(&result.removed) {
        if let Some(before) = previous.policies.get(name) {
            gw.metrics.policy_info.remove(&PolicyInfoLabels { policy: name.clone(), hash: before.hash.clone() });
        }
    }
    for name in result.added.iter().chain(&result.changed) {
        if let Some(p) = result.snapshot.policies.get(name) {
            gw.metrics
                .policy_info
                .get_or_create(&PolicyInfoLabels { policy: p.name.clone(), hash: p.hash.clone() })
                .set(1);
        }
    }
    gw.metrics.policies.set(result.snapshot.policies.len() as i64);
    gw.metrics.reloads.inc();
    if let Ok(mut s) = gw.snapshot.write() {
        *s = Arc::new(result.snapshot);
    }
    state.fingerprint = Some(print);
    true
}

/// Re-reads the key file; keeps the key loaded before when it cannot be used.
fn reload_key(gw: &Gateway, path: &Path, state: &mut PollState) {
    match read_key(path) {
        Ok(key) => {
            state.key_error = None;
            let changed = gw.api_key.read().map(|k| k.as_ref() != Some(&key)).unwrap_or(false);
            if changed {
                if let Ok(mut slot) = gw.api_key.write() {
                    *slot = Some(key);
                }
                info!(file = %path.display(), "API key loaded");
            }
        }
        Err(e) => {
            if first_time(&mut state.key_error, e.clone()) {
                warn!(file = %path.display(), error = %e, "cannot read the API key; keeping the one loaded before");
            }
        }
    }
}

async fn reloader(
    gw: Arc<Gateway>,
    dir: PathBuf,
    key_file: Option<PathBuf>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut state = PollState::default();
    loop {
        let (g, d, k) = (gw.clone(), dir.clone(), key_file.clone());
        let mut s = std::mem::take(&mut state);
        let joined = tokio::task::spawn_blocking(move || {
            if reload_once(&g, &d, &mut s) && !g.loaded.swap(true, Ordering::Relaxed) {
                info!(dir = %d.display(), policies = g.metrics.policies.get(), "config directory read; ready");
            }
            if let Some(path) = k {
                reload_key(&g, &path, &mut s);
            }
            s
        })
        .await;
        match joined {
            Ok(s) => state = s,
            Err(e) => error!(error = %e, "reload task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

fn client(connect_timeout: Duration) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(b) => b,
        Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots(),
    };
    let https = builder.https_or_http().enable_http1().wrap_connector(http);
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(https)
}

/// Runs the gateway until SIGTERM/SIGINT, then drains in-flight requests.
pub async fn run(options: GatewayOptions) -> Result<(), GatewayError> {
    let upstream = Upstream::parse(&options.upstream)?;
    if let Some(name) = &options.default_policy {
        store::check_policy_name(name).map_err(|reason| GatewayError::DefaultPolicy { name: name.clone(), reason })?;
    }
    let api_key = match &options.api_key_file {
        Some(path) => {
            Some(read_key(path).map_err(|reason| GatewayError::ApiKey { path: path.display().to_string(), reason })?)
        }
        None => {
            warn!("no --api-key-file: requests go to orq without an Authorization header");
            None
        }
    };
    let gw = Arc::new(Gateway {
        snapshot: RwLock::new(Arc::new(Snapshot::default())),
        api_key: RwLock::new(api_key),
        client: client(options.connect_timeout.0),
        upstream,
        default_policy: options.default_policy.clone(),
        max_body_bytes: options.max_body_bytes,
        request_timeout: options.request_timeout.0,
        metrics: GatewayMetrics::default(),
        loaded: AtomicBool::new(false),
        draining: AtomicBool::new(false),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let reload_task = tokio::spawn(reloader(
        gw.clone(),
        options.config_dir.clone(),
        options.api_key_file.clone(),
        options.poll_interval.0,
        stop_rx.clone(),
    ));

    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(VARIATIONS_PATH, any(proxy))
        .fallback(not_found)
        .with_state(gw.clone());
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| GatewayError::Listen { addr: options.listen, source })?;
    info!(
        addr = %options.listen,
        upstream = %options.upstream,
        dir = %options.config_dir.display(),
        "gateway serving POST {VARIATIONS_PATH}, /metrics, /healthz and /readyz"
    );
    let drain = {
        let gw = gw.clone();
        async move {
            crate::runtime::shutdown_signal().await;
            gw.draining.store(true, Ordering::Relaxed);
            info!(in_flight = gw.metrics.in_flight.get(), "shutdown requested; draining in-flight requests");
            let _ = stop_tx.send(true);
        }
    };
    serve(listener, app, drain).await;
    let _ = reload_task.await;
    info!("drained; stopped");
    Ok(())
}

/// How long a client may take to send a request's head; a connection that sends nothing for
/// this long is closed (slow-client protection; axum::serve sets no such bound).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` (HTTP/1.1, keep-alive, a header read timeout) until `drain`
/// resolves; then stops accepting and waits for every open connection's requests to finish.
async fn serve(listener: tokio::net::TcpListener, app: Router, drain: impl std::future::Future<Output = ()>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).keep_alive(true);
    tokio::pin!(drain);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                let watched = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = watched.await {
                        debug!(error = %e, "connection closed with an error");
                    }
                });
            }
            _ = &mut drain => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!("500ms".parse::<Timeout>(), Ok(Timeout(Duration::from_millis(500))));
        assert_eq!("5s".parse::<Timeout>(), Ok(Timeout(Duration::from_secs(5))));
        assert_eq!("2".parse::<Timeout>(), Ok(Timeout(Duration::from_secs(2))));
        assert_eq!("2m".parse::<Timeout>(), Ok(Timeout(Duration::from_secs(120))));
        for bad in ["", "0", "-1s", "5h", "abc", "1e9"] {
            assert!(bad.parse::<Timeout>().is_err(), "{bad}");
        }
    }

    #[test]
    fn upstream_urls_keep_a_path_prefix() {
        let u = Upstream::parse("https://my.orq.ai").expect("valid");
        assert_eq!(u.uri(VARIATIONS_PATH).expect("uri").to_string(), "https://my.orq.ai/v2/router/images/variations");
        let u = Upstream::parse("http://127.0.0.1:9/proxy/").expect("valid");
        assert_eq!(u.uri("/v2/x?a=1").expect("uri").to_string(), "http://127.0.0.1:9/proxy/v2/x?a=1");
        for bad in ["my.orq.ai", "ftp://x", "https://", "http://x/?q=1"] {
            assert!(Upstream::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_by_connection_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-request-id", HeaderValue::from_static("abc"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-request-id"]);
    }
}
