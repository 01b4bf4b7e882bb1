//! The admin endpoints both long-running commands serve: `/metrics` (Prometheus text),
//! `/healthz` (the process answers) and `/readyz` (ready for its work, or why not).
//!
//! The operator serves them on their own listener ([`serve`]); the gateway merges
//! [`routes`] into its proxy's router, so they share its port.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::{Metric, Registry};
use tokio::sync::watch;
use tracing::{error, info};

/// The content type of `/metrics`.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the admin endpoints report on.
pub trait Admin: Send + Sync + 'static {
    /// The metrics in the OpenMetrics text format.
    fn metrics(&self) -> String;
    /// `Ok` when ready for work, else the short reason `/readyz` answers 503 with.
    fn readiness(&self) -> Result<(), &'static str>;
}

/// Registers `metric` under `name` with `help` and returns it: each wing builds its metrics
/// with this, one line a metric.
pub fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// Encodes a registry in the OpenMetrics text format (empty if encoding fails).
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

async fn metrics(State(admin): State<Arc<dyn Admin>>) -> Response {
    let mut response = admin.metrics().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE));
    response
}

async fn readyz(State(admin): State<Arc<dyn Admin>>) -> (StatusCode, String) {
    match admin.readiness() {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

/// `/metrics`, `/healthz` and `/readyz`, ready to merge into a router of any state.
pub fn routes<S: Clone + Send + Sync + 'static>(admin: Arc<dyn Admin>) -> Router<S> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(admin)
}

/// Binds `addr` and serves the admin endpoints on it until `shutdown` turns true.
pub async fn serve(
    addr: SocketAddr,
    admin: Arc<dyn Admin>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(%addr, "serving /metrics, /healthz and /readyz");
    tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, routes::<()>(admin)).with_graceful_shutdown(stop).await {
            error!(error = %e, "HTTP server failed");
        }
    });
    Ok(())
}
