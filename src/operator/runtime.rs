//! `routerpolicy run`: connects to the cluster, serves `/metrics`, `/healthz` and `/readyz`,
//! takes part in leader election, and runs the controller while it leads. Shuts down on
//! SIGTERM or Ctrl-C, releasing the lease.
//!
//! This is the imperative shell around [`crate::operator::controller`]; it holds no policy
//! logic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::api::ListParams;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::api::ImageVariationPolicy;
use crate::operator::controller::{self, Settings};
use crate::operator::fence::Fence;
use crate::operator::metrics::Metrics;
use crate::process::admin::{self, Admin};
use crate::process::{LogFormat, shutdown_signal};

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
    /// Seconds a status write waits for the reporting gateway replicas to load a new
    /// document, so the write carries `Served` (one write per change in the common case).
    #[arg(long, env = "ROUTERPOLICY_SERVE_WAIT", default_value_t = 5)]
    pub serve_wait: u64,
    /// Seconds after which a reporting gateway replica that has not loaded a document is
    /// stale (`Served=False`, `ServeStale`, and `Stalled`).
    #[arg(long, env = "ROUTERPOLICY_SERVE_STALE_AFTER", default_value_t = 10)]
    pub serve_stale_after: u64,
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

/// What the operator's admin endpoints report: its metrics, and ready once it leads or
/// stands by.
struct Health {
    metrics: Arc<Metrics>,
    ready: AtomicBool,
}

impl Admin for Health {
    fn metrics(&self) -> String {
        self.metrics.encode()
    }

    fn readiness(&self) -> Result<(), &'static str> {
        if self.ready.load(Ordering::Relaxed) { Ok(()) } else { Err("starting") }
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

/// A lease error, told apart when it is the missing namespace the user can fix (the API
/// server's 404 names the namespace in its details).
fn lease_error(error: LeaseManagerError, namespace: &str) -> RunError {
    match &error {
        LeaseManagerError::KubeError(kube::Error::Api(status))
            if status.code == 404
                && status.details.as_ref().is_some_and(|d| d.kind == "namespaces" && d.name == namespace) =>
        {
            RunError::LeaseNamespaceMissing(namespace.to_string())
        }
        _ => RunError::Lease(error.to_string()),
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

/// One cheap call tells whether the cluster answers and the CRD is installed.
async fn probe(client: &Client) -> Result<(), RunError> {
    let policies: Api<ImageVariationPolicy> = Api::all(client.clone());
    match policies.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Err(RunError::CrdMissing),
        Err(kube::Error::Api(e)) if e.code == 403 => {
            warn!(message = %e.message, "cannot list policies cluster-wide; continuing with the configured namespaces");
            Ok(())
        }
        Err(e) => Err(RunError::Unreachable(e)),
    }
}

/// Resolves once `stop` turns true.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs the operator until SIGTERM (Ok) or a fatal error.
pub async fn run(options: RunOptions) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Config)?;
    probe(&client).await?;
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health { metrics: metrics.clone(), ready: AtomicBool::new(false) });
    let (stop_tx, stop_rx) = watch::channel(false);
    admin::serve(options.metrics_addr, health.clone(), stop_rx.clone())
        .await
        .map_err(|source| RunError::Listen { addr: options.metrics_addr, source })?;
    let identity = options.identity.clone().unwrap_or_else(default_identity);
    let settings = Settings {
        namespaces: options.namespaces.iter().filter(|n| !n.is_empty()).cloned().collect(),
        concurrency: options.concurrency,
        instance: Some(identity.clone()),
        serve_wait: Duration::from_secs(options.serve_wait),
        serve_stale_after: Duration::from_secs(options.serve_stale_after.max(1)),
        ..Settings::default()
    };
    let stop_on_signal = stop_tx.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutdown requested");
        let _ = stop_on_signal.send(true);
    });
    let result = if options.leader_elect.unwrap_or_else(in_a_pod) {
        lead(client, &options, identity, settings, &health, stop_rx).await
    } else {
        info!("leader election is off: this replica reconciles");
        health.ready.store(true, Ordering::Relaxed);
        metrics.leader.set(1);
        controller::run(client, settings, metrics, stopped(stop_rx)).await;
        Ok(())
    };
    let _ = stop_tx.send(true);
    result
}

/// Takes part in leader election: stands by (ready) until this replica holds the Lease, then
/// runs the controller until `stop` or until the lease is lost; releases the lease at the end.
async fn lead(
    client: Client,
    options: &RunOptions,
    identity: String,
    settings: Settings,
    health: &Health,
    stop: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let lease_namespace = options.lease_namespace.clone().unwrap_or_else(default_lease_namespace);
    let duration = options.lease_duration.max(2);
    // Renewed `grace` before it expires; the fence allows a gap of `grace` without running.
    let grace = (duration / 2).max(1);
    let manager = LeaseManagerBuilder::new(client.clone(), &options.lease_name)
        .with_namespace(&lease_namespace)
        .with_identity(&identity)
        .with_duration(duration)
        .with_grace(grace)
        .build()
        .await
        .map_err(|e| lease_error(e, &lease_namespace))?;
    let (mut leading, lease_task) = manager.watch().await;
    // A standby is healthy and ready: it serves probes and waits for the lease.
    health.ready.store(true, Ordering::Relaxed);
    info!(lease = %format!("{lease_namespace}/{}", options.lease_name), %identity, "waiting for the leader lease");
    let outcome = match wait_for_lease(&mut leading, stop.clone()).await {
        Ok(true) => {
            info!(%identity, "acquired the leader lease; reconciling");
            let fence = Fence::new(Duration::from_secs(grace));
            reconcile_while_leading(client, settings, &health.metrics, leading.clone(), stop, fence).await
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
    outcome
}

/// True once this replica leads, false when asked to stop first.
async fn wait_for_lease(
    leading: &mut watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) -> Result<bool, RunError> {
    loop {
        if *leading.borrow_and_update() {
            return Ok(true);
        }
        tokio::select! {
            changed = leading.changed() => if changed.is_err() {
                return Err(RunError::Lease("lease manager stopped".into()));
            },
            _ = stop.wait_for(|s| *s) => return Ok(false),
        }
    }
}

/// Runs the controller until `stop` (Ok) or until the lease is lost (an error, so the process
/// restarts and rejoins as a standby).
async fn reconcile_while_leading(
    client: Client,
    mut settings: Settings,
    metrics: &Arc<Metrics>,
    mut leading: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
    fence: Arc<Fence>,
) -> Result<(), RunError> {
    metrics.leader.set(1);
    let heartbeat = tokio::spawn(fence.clone().heartbeat());
    settings.fence = Some(fence.clone());
    let lost = Arc::new(AtomicBool::new(false));
    let until = {
        let lost = lost.clone();
        async move {
            tokio::select! {
                _ = stopped(stop) => {}
                _ = leading.wait_for(|l| !*l) => lost.store(true, Ordering::Relaxed),
                // Did not run for longer than the lease allows: it may be a standby's now.
                _ = fence.broken() => lost.store(true, Ordering::Relaxed),
            }
        }
    };
    controller::run(client, settings, metrics.clone(), until).await;
    heartbeat.abort();
    metrics.leader.set(0);
    if lost.load(Ordering::Relaxed) { Err(RunError::LostLease) } else { Ok(()) }
}
