//! `routerpolicy run`: connects to the cluster, serves `/metrics`, `/healthz` and `/readyz`,
//! takes part in leader election, and runs the controller while it leads. Shuts down on
//! SIGTERM or Ctrl-C, releasing the lease.
//!
//! This is the imperative shell around [`crate::controller`]; it holds no policy logic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use kube::api::ListParams;
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::api::ImageVariationPolicy;
use crate::controller::{self, Settings};
use crate::metrics::Metrics;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `routerpolicy run`; each has an environment variable.
#[derive(clap::Args, Debug, Clone)]
pub struct RunOptions {
    /// Namespaces to watch for policies (comma-separated); empty means all.
    #[arg(long, env = "ROUTERPOLICY_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "ROUTERPOLICY_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Leader election: only the holder of the Lease reconciles (true|false). Default: on in a
    /// pod (where several replicas may run), off outside one (a developer's `routerpolicy run`
    /// against any cluster needs no Lease namespace).
    #[arg(long, env = "ROUTERPOLICY_LEADER_ELECT", action = clap::ArgAction::Set)]
    pub leader_elect: Option<bool>,
    /// Namespace of the leader-election Lease (default: the pod's namespace, else `routerpolicy-system`).
    #[arg(long, env = "ROUTERPOLICY_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, env = "ROUTERPOLICY_LEASE_NAME", default_value = "routerpolicy-leader")]
    pub lease_name: String,
    /// Seconds a lease stays valid without renewal; a standby takes over after at most this.
    #[arg(long, env = "ROUTERPOLICY_LEASE_DURATION", default_value_t = 15)]
    pub lease_duration: u64,
    /// Identity of this replica in the Lease (default: the pod name, else hostname and PID).
    #[arg(long, env = "ROUTERPOLICY_IDENTITY")]
    pub identity: Option<String>,
    /// Log format.
    #[arg(long, env = "ROUTERPOLICY_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log level or tracing filter (e.g. `info`, `routerpolicy=debug`).
    #[arg(long, env = "ROUTERPOLICY_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Maximum target writes, and status writes, in flight at once (the API server is the
    /// bottleneck well before 32; more only costs connections and memory).
    #[arg(long, env = "ROUTERPOLICY_CONCURRENCY", default_value_t = 32)]
    pub concurrency: u16,
}

/// Why `run` stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No usable kubeconfig or in-cluster config.
    #[error("cannot configure a Kubernetes client: {0}")]
    Config(#[source] kube::Error),
    /// The API server did not answer.
    #[error("cannot reach the Kubernetes API server: {0}")]
    Unreachable(#[source] kube::Error),
    /// The CRD is not installed.
    #[error("the ImageVariationPolicy CRD is not installed in this cluster")]
    CrdMissing,
    /// The HTTP server could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Leader election failed.
    #[error("leader election failed: {0}")]
    Lease(String),
    /// The Lease namespace does not exist.
    #[error("leader election is on, but the Lease namespace {0:?} does not exist")]
    LeaseNamespaceMissing(String),
    /// The lease was lost while leading; restart to rejoin as a standby.
    #[error("lost the leader lease; exiting so no two replicas write at once")]
    LostLease,
}

impl RunError {
    /// A hint for the user, where one helps.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            RunError::Config(_) | RunError::Unreachable(_) => Some(
                "set KUBECONFIG or run inside a cluster; to work without a cluster use `routerpolicy validate -f DIR` or `routerpolicy render -f DIR`",
            ),
            RunError::CrdMissing => Some("install it with `kubectl apply -f crds/` (or `kubectl apply -k deploy/`)"),
            RunError::LeaseNamespaceMissing(_) => Some(
                "create it (`kubectl create namespace NAME`), point --lease-namespace at an existing one, or run a single replica with --leader-elect=false",
            ),
            _ => None,
        }
    }
}

/// Sets up `tracing` with the chosen format and filter.
pub fn init_logging(format: LogFormat, level: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
}

#[derive(Clone)]
struct Health {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

async fn metrics_handler(State(health): State<Health>) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (
        StatusCode::OK,
        [("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        health.metrics.encode(),
    )
}

async fn readyz(State(health): State<Health>) -> (StatusCode, &'static str) {
    if health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

/// Serves the health and metrics endpoints until `shutdown` fires.
async fn serve_http(addr: SocketAddr, health: Health, mut shutdown: watch::Receiver<bool>) -> Result<(), RunError> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| RunError::Listen { addr, source })?;
    info!(%addr, "serving /metrics, /healthz and /readyz");
    tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
            error!(error = %e, "HTTP server failed");
        }
    });
    Ok(())
}

pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn default_identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME") {
        return pod;
    }
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "routerpolicy".into());
    format!("{host}-{}", std::process::id())
}

/// Whether this process runs in a Kubernetes pod (the service environment and the mounted
/// ServiceAccount namespace are there).
fn in_a_pod() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        && std::path::Path::new("/var/run/secrets/kubernetes.io/serviceaccount/namespace").exists()
}

/// A lease error, told apart when it is the missing namespace the user can fix.
fn lease_error(message: String, namespace: &str) -> RunError {
    if message.contains(&format!("namespaces \"{namespace}\" not found")) {
        RunError::LeaseNamespaceMissing(namespace.to_string())
    } else {
        RunError::Lease(message)
    }
}

fn default_lease_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .or_else(|| std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "routerpolicy-system".to_string())
}

/// Runs the operator until SIGTERM (Ok) or a fatal error.
pub async fn run(options: RunOptions) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Config)?;
    // One cheap call tells whether the cluster answers and the CRD is installed.
    let probe: Api<ImageVariationPolicy> = Api::all(client.clone());
    match probe.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Err(RunError::CrdMissing),
        Err(kube::Error::Api(e)) if e.code == 403 => {
            warn!(message = %e.message, "cannot list policies cluster-wide; continuing with the configured namespaces")
        }
        Err(e) => return Err(RunError::Unreachable(e)),
    }

    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    serve_http(options.metrics_addr, Health { metrics: metrics.clone(), ready: ready.clone() }, stop_rx.clone())
        .await?;

    let identity = options.identity.clone().unwrap_or_else(default_identity);
    let settings = Settings {
        namespaces: options.namespaces.iter().filter(|n| !n.is_empty()).cloned().collect(),
        concurrency: options.concurrency,
        instance: Some(identity.clone()),
        ..Settings::default()
    };

    let stop_on_signal = {
        let stop_tx = stop_tx.clone();
        async move {
            shutdown_signal().await;
            info!("shutdown requested");
            let _ = stop_tx.send(true);
        }
    };
    tokio::spawn(stop_on_signal);
    let controller_stop = {
        let mut rx = stop_rx.clone();
        move || async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let leader_elect = options.leader_elect.unwrap_or_else(in_a_pod);
    if !leader_elect {
        info!("leader election is off: this replica reconciles");
        ready.store(true, Ordering::Relaxed);
        metrics.leader.set(1);
        controller::run(client, settings, metrics, controller_stop()).await;
        let _ = stop_tx.send(true);
        return Ok(());
    }

    let lease_namespace = options.lease_namespace.clone().unwrap_or_else(default_lease_namespace);
    let duration = options.lease_duration.max(2);
    let manager = LeaseManagerBuilder::new(client.clone(), &options.lease_name)
        .with_namespace(&lease_namespace)
        .with_identity(&identity)
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        .build()
        .await
        .map_err(|e| lease_error(e.to_string(), &lease_namespace))?;
    let (mut leading, lease_task) = manager.watch().await;
    // A standby is healthy and ready: it serves probes and waits for the lease.
    ready.store(true, Ordering::Relaxed);
    info!(lease = %format!("{lease_namespace}/{}", options.lease_name), %identity, "waiting for the leader lease");

    let mut stop = stop_rx.clone();
    let result = loop {
        if *leading.borrow_and_update() {
            break Ok(true);
        }
        tokio::select! {
            changed = leading.changed() => if changed.is_err() { break Err(RunError::Lease("lease manager stopped".into())) },
            _ = stop.wait_for(|s| *s) => break Ok(false),
        }
    };

    let outcome = match result {
        Ok(true) => {
            info!(%identity, "acquired the leader lease; reconciling");
            metrics.leader.set(1);
            let lost = {
                let mut leading = leading.clone();
                async move {
                    let _ = leading.wait_for(|l| !*l).await;
                }
            };
            let lost_flag = Arc::new(AtomicBool::new(false));
            let run_stop = {
                let lost_flag = lost_flag.clone();
                let stop = controller_stop();
                async move {
                    tokio::select! {
                        _ = stop => {}
                        _ = lost => lost_flag.store(true, Ordering::Relaxed),
                    }
                }
            };
            controller::run(client, settings, metrics.clone(), run_stop).await;
            metrics.leader.set(0);
            if lost_flag.load(Ordering::Relaxed) { Err(RunError::LostLease) } else { Ok(()) }
        }
        Ok(false) => Ok(()),
        Err(e) => Err(e),
    };

    // Closing the channel makes the lease manager release the lease, so a standby takes over
    // at once instead of after the lease expires.
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(_))) => info!("released the leader lease"),
        Ok(Ok(Err(e))) => warn!(error = %e, "could not release the leader lease"),
        Ok(Err(e)) => warn!(error = %e, "lease task failed"),
        Err(_) => warn!("timed out releasing the leader lease"),
    }
    let _ = stop_tx.send(true);
    outcome
}
