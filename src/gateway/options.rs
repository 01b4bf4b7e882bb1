//! The gateway's flags (`routerpolicy gateway --help`), and why it can refuse to start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::gateway::auth::AuthMode;
use crate::key::{KeyError, TargetKey};
use crate::process::LogFormat;

/// A duration flag: `250ms`, `5s`, `2m` (a bare number is seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationArg(pub Duration);

impl std::str::FromStr for DurationArg {
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
        Ok(DurationArg(Duration::from_secs_f64(seconds)))
    }
}

/// The HTTP version spoken to orq (`--upstream-http`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamHttp {
    /// HTTP/2 where orq's TLS offers it (ALPN), else HTTP/1.1.
    Auto,
    /// HTTP/1.1 only.
    #[value(name = "1.1")]
    Http1,
    /// HTTP/2 only (h2c over plain HTTP).
    #[value(name = "2")]
    Http2,
}

/// Flags of `routerpolicy gateway`; each has an environment variable.
#[derive(clap::Args, Debug, Clone)]
pub struct GatewayOptions {
    /// Directory of policy documents: the mounted gateway ConfigMap, one
    /// `<namespace>.<name>.json` per policy (kubelet's `..data` layout or plain files).
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_CONFIG_DIR", default_value = "/etc/routerpolicy/policies")]
    pub config_dir: PathBuf,
    /// The gateway ConfigMap `<namespace>/<name>` to serve, read through the Kubernetes API
    /// (a watch on that one object; a change is served within about a second); takes the
    /// place of --config-dir. Needs a kubeconfig or the in-cluster config, and a
    /// ServiceAccount that may get, list and watch that ConfigMap. In this mode the replica
    /// reports what it serves in a Lease (see --report).
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_CONFIG_MAP")]
    pub config_map: Option<TargetKey>,
    /// Volume mode: the ConfigMap `<namespace>/<name>` mounted at --config-dir. With it (and a
    /// kubeconfig or the in-cluster config) the replica keeps a report Lease too, marked
    /// volume: `Served` does not count it (it cannot see the resourceVersion it loaded), but the
    /// calls it counts during a rollout are judged with the others' (docs/rollouts.md).
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_REPORT_FOR", conflicts_with = "config_map")]
    pub report_for: Option<TargetKey>,
    /// With --config-map (or --report-for): keep a report Lease of what this replica serves,
    /// which the operator folds into each policy's `Served` condition (true|false).
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_REPORT", default_value_t = true, action = clap::ArgAction::Set)]
    pub report: bool,
    /// Identity of this replica in its report Lease (default: the pod name, else the host
    /// name and process id).
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_IDENTITY")]
    pub identity: Option<String>,
    /// Namespace of the report Lease (default: the pod's namespace, else the ConfigMap's).
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_REPORT_NAMESPACE")]
    pub report_namespace: Option<String>,
    /// How long a report stays valid without renewal: a replica that stops renewing (frozen,
    /// or gone without releasing its Lease) stops counting after this.
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_REPORT_LEASE_DURATION", default_value = "30s")]
    pub report_lease_duration: DurationArg,
    /// How often the report Lease is renewed (a change of what is served is reported at once).
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_REPORT_INTERVAL", default_value = "5s")]
    pub report_interval: DurationArg,
    /// Largest policy document served: a larger one is refused like a broken one (its last
    /// good document stays served) and reported as rejected.
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_MAX_DOCUMENT_BYTES", default_value_t = 1024 * 1024)]
    pub max_document_bytes: usize,
    /// Base URL of orq; the request path is appended.
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_UPSTREAM", default_value = "https://my.orq.ai")]
    pub upstream: String,
    /// Address to serve the proxy, /metrics, /healthz and /readyz on.
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_LISTEN", default_value = "0.0.0.0:8090")]
    pub listen: SocketAddr,
    /// PEM certificate chain (leaf first) to serve TLS with, e.g. `tls.crt` of a mounted
    /// `kubernetes.io/tls` Secret; with --tls-key-file. Re-read when it changes (cert-manager
    /// renewing it): new connections use the new pair, open ones keep theirs. Without it the
    /// listener speaks plain HTTP.
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file (PKCS#8, PKCS#1 or SEC1), e.g. `tls.key`.
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Offer HTTP/2 to callers over TLS (ALPN `h2`, then `http/1.1`): many calls on one
    /// connection, each stream under the same limits as an HTTP/1.1 request (true|false).
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_HTTP2", default_value_t = true, action = clap::ArgAction::Set)]
    pub http2: bool,
    /// On a plain-HTTP listener, accept HTTP/2 with prior knowledge (h2c) besides HTTP/1.1: for
    /// a mesh whose sidecars already encrypt and speak HTTP/2 (true|false).
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_H2C", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub h2c: bool,
    /// Streams an HTTP/2 caller may have open on one connection at once; more wait for the
    /// caller's own flow control (SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_HTTP2_MAX_CONCURRENT_STREAMS", default_value_t = 100)]
    pub http2_max_concurrent_streams: u32,
    /// Largest read buffer of an HTTP/1.1 caller connection, in bytes (at least 8192; a
    /// request head must fit in it, a longer one gets 431). The default (hyper's, 417792) reads
    /// large images in few calls; while a call waits for orq its connection keeps the buffer it
    /// grew, so a replica holding thousands of slow calls at once needs less memory with 16384
    /// or 8192, at the cost of more reads per large image (docs/gateway.md, "Calls in flight").
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_MAX_READ_BUFFER_BYTES", default_value_t = 417_792, value_parser = clap::value_parser!(u32).range(8192..=16 * 1024 * 1024))]
    pub max_read_buffer_bytes: u32,
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
    /// A request body that makes no progress for this long is answered 408 and its connection
    /// closed (a client that stalls mid-upload holds nothing for longer).
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_BODY_IDLE_TIMEOUT", default_value = "15s")]
    pub body_idle_timeout: DurationArg,
    /// The whole request body must arrive within this long (a trickling client is answered
    /// 408 too).
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_BODY_TIMEOUT", default_value = "120s")]
    pub body_timeout: DurationArg,
    /// Request bodies this gateway holds at once, in bytes: each request reserves what its body
    /// can hold (a streamed body a 1 MiB window, a buffered one its Content-Length, or
    /// --max-body-bytes when it sends none) before its body is read, and returns it once the
    /// body has gone upstream; a request that finds no room within --max-buffered-wait is
    /// answered 503 `overloaded` with Retry-After, its body unread. Bounds the memory that
    /// bodies on their way to orq can take; calls waiting for orq's answer hold none of it.
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_MAX_BUFFERED_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_buffered_bytes: u64,
    /// How long a request waits for room in --max-buffered-bytes (its body unread, held by the
    /// kernel's socket buffers) before it is shed with 503: a burst of arrivals is queued while
    /// the bodies ahead of it go upstream.
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_MAX_BUFFERED_WAIT", default_value = "1s")]
    pub max_buffered_wait: DurationArg,
    /// Buffer each request body whole (within --max-body-bytes and --max-buffered-bytes) and
    /// send it to orq with a Content-Length, for upstreams that do not take chunked bodies. By
    /// default the body is rewritten as it arrives and streamed to orq chunked, so a request
    /// holds a small window of its body, not all of it.
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_UPSTREAM_CONTENT_LENGTH", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub upstream_content_length: bool,
    /// The HTTP version spoken to orq: `auto` — HTTP/2 when orq's TLS offers `h2`, HTTP/1.1
    /// otherwise and over plain HTTP; `1.1` — always HTTP/1.1 (a connection per call in
    /// flight); `2` — always HTTP/2 (over plain HTTP with prior knowledge, h2c). Over HTTP/2 at
    /// most --upstream-http2-streams calls share a connection; more open another.
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_UPSTREAM_HTTP", value_enum, default_value = "auto")]
    pub upstream_http: UpstreamHttp,
    /// Calls that share one HTTP/2 connection to orq at most; when every connection carries
    /// this many, another is opened (keep it at or below orq's SETTINGS_MAX_CONCURRENT_STREAMS,
    /// or calls beyond it wait for a stream).
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_UPSTREAM_HTTP2_STREAMS", default_value_t = 100)]
    pub upstream_http2_streams: usize,
    /// Time to open a TCP connection to orq before answering 504 (the TLS handshake counts
    /// toward --request-timeout).
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_CONNECT_TIMEOUT", default_value = "5s")]
    pub connect_timeout: DurationArg,
    /// Time from sending a request to orq (connection and TLS included) until its response
    /// headers arrive before answering 504.
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_REQUEST_TIMEOUT", default_value = "120s")]
    pub request_timeout: DurationArg,
    /// How often the config directory and the key file are checked for changes.
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_POLL_INTERVAL", default_value = "1s")]
    pub poll_interval: DurationArg,
    /// Who may call: `serviceaccount` — the caller's `Authorization: Bearer` must be a
    /// Kubernetes ServiceAccount token for --auth-audience (checked by the API server with a
    /// TokenReview, then cached), and it may use its own namespace's policies and those whose
    /// `spec.callers` admit it; `none` — anyone who reaches the gateway may use any policy it
    /// serves (choose it only where the network already decides who calls).
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_AUTH", value_enum, default_value = "serviceaccount")]
    pub auth: AuthMode,
    /// The audience callers' tokens must be for (the `audience` of their projected token).
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_AUTH_AUDIENCE", default_value = "routerpolicy-gateway")]
    pub auth_audience: String,
    /// How long a token the API server accepted is trusted without asking again (never past
    /// its expiry); a deleted ServiceAccount's token stops working within this long. Refusals
    /// are remembered for the shorter of this and 5s.
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_AUTH_CACHE_TTL", default_value = "30s")]
    pub auth_cache_ttl: DurationArg,
    /// Tokens remembered at most (about 200 bytes each).
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_AUTH_CACHE_SIZE", default_value_t = 10_000)]
    pub auth_cache_size: usize,
    /// TokenReviews in flight at most. A token not in the cache and signed by the issuer is
    /// reviewed; beyond this bound its request gets 503 `auth_unavailable` (cached callers are
    /// served as always).
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_AUTH_MAX_REVIEWS_IN_FLIGHT", default_value_t = 32)]
    pub auth_max_reviews_in_flight: usize,
    /// TokenReviews sent per second at most; beyond, 503 `auth_unavailable` for new tokens.
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_AUTH_MAX_REVIEWS_PER_SECOND", default_value_t = 100)]
    pub auth_max_reviews_per_second: u32,
    /// Threads serving requests (0: one per CPU). Like nginx's `worker_processes`: one is the
    /// lowest latency on a small node; more scale with cores.
    #[arg(long, env = "ROUTERPOLICY_GATEWAY_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,
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
        #[source]
        reason: KeyError,
    },
    /// The key file could not be read at start.
    #[error("--api-key-file {path}: {reason}")]
    ApiKey {
        /// The path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// No Kubernetes client for --config-map or --auth serviceaccount.
    #[error("--config-map and --auth serviceaccount need a Kubernetes client: {0}")]
    Kube(#[source] kube::Error),
    /// The listener's certificate pair could not be loaded.
    #[error("--tls-cert-file/--tls-key-file: {0}")]
    Tls(#[from] crate::gateway::tls::TlsError),
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
            GatewayError::Tls(_) => Some(
                "point --tls-cert-file and --tls-key-file at the tls.crt and tls.key of one kubernetes.io/tls Secret (PEM)",
            ),
            GatewayError::Kube(_) => Some(
                "run in a pod with a ServiceAccount token, or set KUBECONFIG; or mount the ConfigMap and use --config-dir with --auth none",
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!("500ms".parse::<DurationArg>(), Ok(DurationArg(Duration::from_millis(500))));
        assert_eq!("5s".parse::<DurationArg>(), Ok(DurationArg(Duration::from_secs(5))));
        assert_eq!("2".parse::<DurationArg>(), Ok(DurationArg(Duration::from_secs(2))));
        assert_eq!("2m".parse::<DurationArg>(), Ok(DurationArg(Duration::from_secs(120))));
        for bad in ["", "0", "-1s", "5h", "abc", "1e9"] {
            assert!(bad.parse::<DurationArg>().is_err(), "{bad}");
        }
    }
}
