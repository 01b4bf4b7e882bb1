//! Serving connections: HTTP/1.1 with keep-alive and a header read timeout (axum::serve sets
//! none, so a client that never finishes its head would hold a connection forever), and a
//! graceful drain of in-flight requests on shutdown (hyper-util's `GracefulShutdown`).

use std::time::Duration;

use axum::Router;
use tracing::{debug, warn};

/// How long a client may take to send a request's head; a connection that sends nothing for
/// this long is closed (slow-client protection; axum::serve sets no such bound).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` (HTTP/1.1, keep-alive, a header read timeout) until `drain`
/// resolves; then stops accepting and waits for every open connection's requests to finish.
pub async fn serve(listener: tokio::net::TcpListener, app: Router, drain: impl std::future::Future<Output = ()>) {
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
