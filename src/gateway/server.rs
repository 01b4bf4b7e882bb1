//! Serving connections: HTTP/1.1 with keep-alive and a header read timeout (axum::serve sets
//! none, so a client that never finishes its head would hold a connection forever), TLS
//! first where the listener has a certificate ([`crate::gateway::tls`]), and a graceful drain
//! of in-flight requests on shutdown (hyper-util's `GracefulShutdown`).

use std::time::Duration;

use axum::Router;
use prometheus_client::metrics::counter::Counter;
use tracing::{debug, warn};

/// How long a client may take to send a request's head; a connection that sends nothing for
/// this long is closed (slow-client protection; axum::serve sets no such bound).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections the kernel queues for `accept` (capped by `net.core.somaxconn`; tokio's
/// default is 1024): thousands of callers connecting at once are queued, not dropped to a SYN
/// retry a second later.
const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with [`LISTEN_BACKLOG`] and `SO_REUSEADDR` (a restart can bind while
/// old connections are in TIME_WAIT).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// How long a client may take for its TLS handshake before its connection is closed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS on the listener: the acceptor (its certificate pair rotates underneath), and where
/// failed handshakes are counted.
pub struct Secure {
    /// Accepts TLS connections.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Handshakes that failed or timed out.
    pub failures: Counter,
}

/// Serves `app` on `listener` (HTTP/1.1, keep-alive, a header read timeout; TLS first where
/// `tls` is given) until `drain` resolves; then stops accepting and waits for every open
/// connection's requests to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Secure>,
    drain: impl std::future::Future<Output = ()>,
) {
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
                let (builder, watcher) = (builder.clone(), graceful.watcher());
                match &tls {
                    None => {
                        tokio::spawn(connection(builder, stream, service, watcher));
                    }
                    Some(tls) => {
                        let (acceptor, failures) = (tls.acceptor.clone(), tls.failures.clone());
                        tokio::spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => connection(builder, stream, service, watcher).await,
                                Ok(Err(e)) => {
                                    failures.inc();
                                    debug!(error = %e, "TLS handshake failed");
                                }
                                Err(_) => {
                                    failures.inc();
                                    debug!("TLS handshake timed out");
                                }
                            }
                        });
                    }
                }
            }
            _ = &mut drain => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Serves one connection (plain or after its TLS handshake) until it closes, drained on
/// shutdown through `watcher`.
async fn connection<IO>(
    builder: hyper::server::conn::http1::Builder,
    io: IO,
    service: hyper_util::service::TowerToHyperService<Router>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    if let Err(e) = watcher.watch(connection).await {
        debug!(error = %e, "connection closed with an error");
    }
}
