//! The gateway's start-up and its lifetime: `Gateway::new` from the flags, the authenticator
//! and the report Lease writer it needs, the tasks (ConfigMap watch or directory reloader,
//! report, TLS pair watch), the listener, and the drain on SIGTERM. The shared state and the
//! constants stay in the wing's `mod.rs`; the request path is `proxy`.

use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::gateway::store::Snapshot;
use crate::gateway::upstream::{self, Upstream};
use crate::gateway::{
    Gateway, GatewayError, GatewayMetrics, GatewayOptions, Serving, VARIATIONS_PATH, auth, budget, lease, proxy,
    reload, server, source, tls,
};
use crate::key::PolicyKey;
use crate::process::admin;

impl Gateway {
    /// The gateway of `options`, serving nothing until the first reload; `client` is the
    /// Kubernetes client when a flag needs one.
    fn new(options: &GatewayOptions, client: Option<kube::Client>) -> Result<Gateway, GatewayError> {
        let upstream = Upstream::parse(&options.upstream)?;
        let default_policy = match &options.default_policy {
            Some(name) => Some(
                PolicyKey::parse(name).map_err(|reason| GatewayError::DefaultPolicy { name: name.clone(), reason })?,
            ),
            None => None,
        };
        let api_key = match &options.api_key_file {
            Some(path) => Some(
                reload::read_key(path)
                    .map_err(|reason| GatewayError::ApiKey { path: path.display().to_string(), reason })?,
            ),
            None => {
                warn!("no --api-key-file: requests go to orq without an Authorization header");
                None
            }
        };
        let metrics = GatewayMetrics::default();
        Ok(Gateway {
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            api_key: RwLock::new(api_key),
            client: upstream::client(
                options.connect_timeout.0,
                options.upstream_http,
                &upstream,
                options.upstream_http2_streams,
            ),
            upstream,
            default_policy,
            max_body_bytes: options.max_body_bytes,
            upstream_content_length: options.upstream_content_length,
            max_document_bytes: options.max_document_bytes,
            body_idle_timeout: options.body_idle_timeout.0,
            body_timeout: options.body_timeout.0,
            budget: budget::Budget::new(options.max_buffered_bytes, metrics.buffered_bytes.clone()),
            budget_wait: options.max_buffered_wait.0,
            request_timeout: options.request_timeout.0,
            auth: authenticator(options, client),
            metrics,
            loaded: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            serving: watch::channel(Serving::default()).0,
        })
    }
}

/// Runs the gateway until SIGTERM/SIGINT, then drains in-flight requests.
pub async fn run(options: GatewayOptions) -> Result<(), GatewayError> {
    let needs_api = options.config_map.is_some() || options.report_for.is_some();
    let client = if needs_api || options.auth == auth::AuthMode::Serviceaccount {
        Some(kube::Client::try_default().await.map_err(GatewayError::Kube)?)
    } else {
        None
    };
    let gw = Arc::new(Gateway::new(&options, client.clone())?);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let report = |client: kube::Client, target: &crate::key::TargetKey, tasks: &mut tokio::task::JoinSet<()>| {
        let counts = gw.clone();
        let calls = move || counts.snapshot.read().map(|s| s.rollout_counts()).unwrap_or_default();
        let reporter = reporter(&options, client, target);
        tasks.spawn(lease::report(reporter, gw.serving.subscribe(), calls, stop_rx.clone()));
    };
    let dir = match (&options.config_map, client) {
        (Some(target), Some(client)) => {
            tasks.spawn(source::watch_configmap(gw.clone(), client.clone(), target.clone(), stop_rx.clone()));
            if options.report {
                report(client, target, &mut tasks);
            }
            None
        }
        (_, client) => {
            // Volume mode; with --report-for, its rollout counts are reported too.
            if let (Some(target), Some(client)) = (&options.report_for, client)
                && options.report
            {
                report(client, target, &mut tasks);
            }
            Some(options.config_dir.clone())
        }
    };
    let tls = listener_tls(&options, &gw, &mut tasks, &stop_rx)?;
    tasks.spawn(reload::reloader(gw.clone(), dir, options.api_key_file.clone(), options.poll_interval.0, stop_rx));
    // The proxied path goes straight to the proxy; the router serves the admin paths and
    // answers every other one.
    let rest = Router::new().fallback(proxy::not_found).merge(admin::routes(gw.clone())).with_state(gw.clone());
    let app = proxy::Routes::new(gw.clone(), rest);
    let listener =
        server::bind(options.listen).map_err(|source| GatewayError::Listen { addr: options.listen, source })?;
    let source = match &options.config_map {
        Some(target) => format!("ConfigMap {target} (API)"),
        None => format!("directory {}", options.config_dir.display()),
    };
    info!(
        addr = %options.listen,
        upstream = %options.upstream,
        policies = %source,
        auth = ?options.auth,
        tls = tls.is_some(),
        http2 = if tls.is_some() { options.http2 } else { options.h2c },
        "gateway serving POST {VARIATIONS_PATH}, /metrics, /healthz and /readyz"
    );
    let drain = {
        let gw = gw.clone();
        async move {
            crate::process::shutdown_signal().await;
            gw.draining.store(true, Ordering::Relaxed);
            info!(in_flight = gw.metrics.in_flight.get(), "shutdown requested; draining in-flight requests");
            let _ = stop_tx.send(true);
        }
    };
    server::serve(listener, app, tls, protocols(&options), drain).await;
    while tasks.join_next().await.is_some() {}
    info!("drained; stopped");
    Ok(())
}

/// The listener's TLS (`--tls-cert-file`), its pair re-read every `--poll-interval`; `None`
/// for plain HTTP.
fn listener_tls(
    options: &GatewayOptions,
    gw: &Gateway,
    tasks: &mut tokio::task::JoinSet<()>,
    stop: &watch::Receiver<bool>,
) -> Result<Option<server::Secure>, GatewayError> {
    let (Some(cert), Some(key)) = (&options.tls_cert_file, &options.tls_key_file) else { return Ok(None) };
    let files = tls::TlsFiles { cert: cert.clone(), key: key.clone() };
    let tls = Arc::new(tls::Tls::new(files, &protocols(options).alpn())?);
    let acceptor = tls.acceptor.clone();
    let metrics = gw.metrics.tls.clone();
    let failures = metrics.handshake_failures.clone();
    tasks.spawn(tls.watch(options.poll_interval.0, stop.clone(), move |loaded| {
        let counter = if loaded { &metrics.reloads } else { &metrics.reload_errors };
        counter.inc();
    }));
    Ok(Some(server::Secure { acceptor, failures }))
}

/// The HTTP versions the listener speaks (`--http2`, `--h2c`).
fn protocols(options: &GatewayOptions) -> server::Protocols {
    server::Protocols {
        http2: options.http2,
        h2c: options.h2c,
        max_concurrent_streams: options.http2_max_concurrent_streams.max(1),
        max_read_buffer: options.max_read_buffer_bytes as usize,
    }
}

/// The caller check of `--auth serviceaccount` (`None` with `--auth none`, said once in the
/// log).
fn authenticator(options: &GatewayOptions, client: Option<kube::Client>) -> Option<auth::Authenticator> {
    let client = client.filter(|_| options.auth == auth::AuthMode::Serviceaccount);
    if client.is_none() {
        warn!("--auth none: anyone who reaches this gateway may use every policy it serves with its orq key");
    }
    let settings = auth::AuthSettings {
        audience: options.auth_audience.clone(),
        cache_ttl: options.auth_cache_ttl.0,
        negative_ttl: options.auth_cache_ttl.0.min(Duration::from_secs(5)),
        cache_size: options.auth_cache_size.max(1),
        max_reviews_in_flight: options.auth_max_reviews_in_flight.max(1),
        max_reviews_per_second: options.auth_max_reviews_per_second.max(1),
    };
    client.map(|client| auth::Authenticator::new(client, settings))
}

/// The report Lease writer of this replica: its identity (`--identity`, the pod name, or the
/// host name and process id) in its namespace (`--report-namespace`, the pod's, or the
/// ConfigMap's).
fn reporter(options: &GatewayOptions, client: kube::Client, target: &crate::key::TargetKey) -> lease::Reporter {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let identity = options.identity.clone().or_else(|| env("POD_NAME")).unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        format!("{}-{}", if host.is_empty() { "gateway" } else { &host }, std::process::id())
    });
    let namespace = options
        .report_namespace
        .clone()
        .or_else(|| env("POD_NAMESPACE"))
        .unwrap_or_else(|| target.namespace.to_string());
    let mut reporter = lease::Reporter::new(client, &namespace, identity, target.clone());
    reporter.lease_duration = options.report_lease_duration.0;
    reporter.interval = options.report_interval.0;
    reporter.volume = options.config_map.is_none();
    reporter
}
