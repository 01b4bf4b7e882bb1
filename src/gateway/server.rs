//! Serving connections: HTTP/1.1 with keep-alive and a header read timeout (axum::serve sets
//! none, so a client that never finishes its head would hold a connection forever), HTTP/2
//! where the caller asks for it (ALPN `h2` over TLS, prior knowledge with `--h2c`) with its own
//! bounds (streams per connection, header list size, flow-control windows, and hyper's
//! defences against the rapid-reset flood, CVE-2023-44487), TLS first where the listener has a
//! certificate ([`crate::gateway::tls`]), and a graceful drain of in-flight requests on
//! shutdown (hyper-util's `GracefulShutdown`).
//!
//! What a connection costs while its call waits for orq is bounded here: HTTP/1.1's read buffer
//! grows to at most `--max-read-buffer-bytes` (hyper's 417792 by default; a connection keeps
//! what it grew while its call waits), and an HTTP/2 connection's receive windows bound what a
//! caller may send before the gateway reads it.

use std::time::Duration;

use std::convert::Infallible;

use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::counter::Counter;
use tracing::{debug, warn};

use crate::gateway::pool::SendError;

/// How long a client may take to send a request's head; a connection that sends nothing for
/// this long is closed (slow-client protection; axum::serve sets no such bound).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections the kernel queues for `accept` (capped by `net.core.somaxconn`; tokio's
/// default is 1024): thousands of callers connecting at once are queued, not dropped to a SYN
/// retry a second later.
const LISTEN_BACKLOG: u32 = 4096;

/// What answers a connection's requests: a hyper service giving axum's responses, cloned for
/// each connection.
pub trait Requests:
    hyper::service::Service<hyper::Request<Incoming>, Response = Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S> Requests for S where
    S: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// A listener on `addr` with [`LISTEN_BACKLOG`] and `SO_REUSEADDR` (a restart can bind while
/// old connections are in TIME_WAIT).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The largest header list an HTTP/2 caller may send (SETTINGS_MAX_HEADER_LIST_SIZE); over
/// HTTP/1.1 the head must fit in the read buffer (`--max-read-buffer-bytes`). A ServiceAccount
/// token is about 1 KiB.
pub const H2_MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// What an HTTP/2 caller may send on one stream before the gateway reads it (the initial
/// stream window): a request's body is read once it has its share of --max-buffered-bytes.
pub const H2_STREAM_WINDOW: u32 = 256 * 1024;

/// What an HTTP/2 caller may send on one connection, all streams together, before the gateway
/// reads it: the most an idle HTTP/2 connection can make the gateway hold beyond its budget.
pub const H2_CONNECTION_WINDOW: u32 = 1024 * 1024;

/// Streams a caller may reset before the gateway has taken them up (the rapid-reset flood:
/// open and cancel at once, so the server works and the caller pays nothing); beyond it the
/// connection is closed with GOAWAY (ENHANCE_YOUR_CALM).
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;

/// Streams the gateway may reset on one connection for the caller's protocol errors before it
/// closes the connection (the same flood, provoked through errors).
const H2_MAX_LOCAL_ERROR_RESETS: usize = 256;

/// The versions the listener speaks.
#[derive(Debug, Clone, Copy)]
pub struct Protocols {
    /// HTTP/2 over TLS, chosen by ALPN.
    pub http2: bool,
    /// HTTP/2 with prior knowledge on a plain listener.
    pub h2c: bool,
    /// Streams one HTTP/2 connection may have open at once.
    pub max_concurrent_streams: u32,
    /// The largest read buffer of an HTTP/1.1 connection (at least 8192).
    pub max_read_buffer: usize,
}

impl Protocols {
    /// The ALPN protocols a TLS listener offers, most preferred first.
    pub fn alpn(&self) -> Vec<&'static [u8]> {
        if self.http2 { vec![b"h2", b"http/1.1"] } else { vec![b"http/1.1"] }
    }
}

/// The connection builders of a listener: HTTP/1.1 (hyper's own, the common case, with no
/// version detection in its way), HTTP/2 (negotiated by ALPN), and both (a plain listener with
/// `--h2c`: the first bytes tell).
#[derive(Clone)]
struct Builders {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    both: auto::Builder<TokioExecutor>,
    h2c: bool,
}

/// Which builder serves a connection.
#[derive(Clone, Copy)]
enum Version {
    Http1,
    Http2,
    Either,
}

/// HTTP/1.1's bounds on a builder (hyper's own, or the auto builder's HTTP/1.1 half: two types
/// with the same methods).
macro_rules! http1_bounds {
    ($builder:expr, $read_buffer:expr) => {
        $builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(true)
            .max_buf_size($read_buffer)
    };
}

/// HTTP/2's bounds on a builder (hyper's own, or the auto builder's HTTP/2 half).
macro_rules! http2_bounds {
    ($builder:expr, $protocols:expr) => {
        $builder
            .timer(TokioTimer::new())
            .max_concurrent_streams($protocols.max_concurrent_streams)
            .max_header_list_size(H2_MAX_HEADER_LIST_BYTES)
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
            .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
            // A caller gone without a FIN is found and its streams ended.
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20))
    };
}

impl Builders {
    fn new(protocols: &Protocols) -> Builders {
        let read_buffer = protocols.max_read_buffer.max(8192);
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1_bounds!(http1, read_buffer);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2_bounds!(http2, protocols);
        let mut both = auto::Builder::new(TokioExecutor::new());
        http1_bounds!(both.http1(), read_buffer);
        http2_bounds!(both.http2(), protocols);
        Builders { http1, http2, both, h2c: protocols.h2c }
    }

    /// The version of a plain connection.
    fn plain(&self) -> Version {
        if self.h2c { Version::Either } else { Version::Http1 }
    }

    /// The version of a TLS connection that negotiated `alpn`.
    fn negotiated(alpn: Option<&[u8]>) -> Version {
        if alpn == Some(b"h2") { Version::Http2 } else { Version::Http1 }
    }
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

/// Serves `app` on `listener` (HTTP/1.1 with keep-alive and a header read timeout, HTTP/2 as
/// `protocols` allow; TLS first where `tls` is given) until `drain` resolves; then stops
/// accepting and waits for every open connection's requests to finish.
pub async fn serve<S: Requests>(
    listener: tokio::net::TcpListener,
    app: S,
    tls: Option<Secure>,
    protocols: Protocols,
    drain: impl std::future::Future<Output = ()>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builders = Builders::new(&protocols);
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
                let service = app.clone();
                let watcher = graceful.watcher();
                match &tls {
                    None => {
                        let (builders, version) = (builders.clone(), builders.plain());
                        tokio::spawn(async move { connection(&builders, version, stream, service, watcher).await });
                    }
                    Some(tls) => {
                        let (acceptor, failures, builders) = (tls.acceptor.clone(), tls.failures.clone(), builders.clone());
                        tokio::spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => {
                                    let version = Builders::negotiated(stream.get_ref().1.alpn_protocol());
                                    connection(&builders, version, stream, service, watcher).await
                                }
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

/// Serves one connection (plain or after its TLS handshake) in `version` until it closes,
/// drained on shutdown through `watcher`.
async fn connection<IO, S: Requests>(
    builders: &Builders,
    version: Version,
    io: IO,
    service: S,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(io);
    let served = match version {
        Version::Http1 => watcher.watch(builders.http1.serve_connection(io, service)).await.map_err(SendError::from),
        Version::Http2 => watcher.watch(builders.http2.serve_connection(io, service)).await.map_err(SendError::from),
        Version::Either => watcher.watch(builders.both.serve_connection(io, service)).await,
    };
    if let Err(e) = served {
        debug!(error = %e, "connection closed with an error");
    }
}
