//! HTTP/2 to orq over as many connections as the calls in flight need.
//!
//! hyper's pooled client puts every HTTP/2 call to a host on **one** connection (RFC 9113 §9.1),
//! so at most the server's `SETTINGS_MAX_CONCURRENT_STREAMS` calls — 100 to 250 at a cloud load
//! balancer — are in flight and the rest wait for a stream. With orq taking seconds per image
//! that caps a replica at a few dozen calls a second. This pool gives each connection at most
//! `--upstream-http2-streams` calls (100 by default, what RFC 9113 asks every server to allow)
//! and opens another connection when all are full, the way Envoy, Jetty, .NET and Armeria pool
//! HTTP/2 upstreams: 8,000 calls in flight take 80 connections to orq instead of 8,000 (HTTP/1.1)
//! or one that queues all but 100 (hyper's pool).
//!
//! A call reserves a stream on the least loaded connection that has room, or on a new one; a
//! new connection is opened once by whichever of its callers gets there first, and the others
//! wait for it, so a burst of 8,000 calls opens 80 connections, not 8,000. Connections that
//! closed (GOAWAY, a reset, orq gone) or failed to open are dropped at the next checkout, and
//! ones that carried nothing for [`IDLE`] are closed.
//!
//! With `--upstream-http auto` the TLS handshake offers `h2` and `http/1.1`; when orq picks
//! `http/1.1`, the pool remembers it and every call goes through the HTTP/1.1 client from then
//! on (the connection of that first handshake is dropped).
//!
//! Below `upstream` (which builds the client from the flags and owns the body type), this room
//! also says what an error of the way to orq is: [`SendError`], [`is_timeout`], [`error_chain`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::Uri;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;
use tracing::{debug, info, warn};

/// A connection that carried no call for this long is closed (orq's idle timeout is often 60 s
/// or more; one kept too long is found dead by the keep-alive ping).
const IDLE: Duration = Duration::from_secs(90);

/// What orq may send of one answer before the gateway reads it, over HTTP/2 (answers are
/// small JSON; an image URL, not the image).
const UPSTREAM_H2_STREAM_WINDOW: u32 = 256 * 1024;
/// What orq may send on one HTTP/2 connection before the gateway reads it.
const UPSTREAM_H2_CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

/// Whether an upstream error is a timeout (the connect timeout: an I/O error of kind
/// `TimedOut` somewhere in its chain) rather than a refusal.
pub fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return true;
        }
        source = e.source();
    }
    false
}

/// An error and its sources, joined with `: `.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    parts.join(": ")
}

/// An error of the way to orq, with its chain.
pub type SendError = Box<dyn std::error::Error + Send + Sync>;

/// Why a connection could not be opened, kept for every call that waited for it.
#[derive(Debug, Clone)]
struct OpenError {
    kind: std::io::ErrorKind,
    message: String,
}

impl OpenError {
    fn of(error: &(dyn std::error::Error + 'static)) -> OpenError {
        let kind = if is_timeout(error) { std::io::ErrorKind::TimedOut } else { std::io::ErrorKind::ConnectionRefused };
        OpenError { kind, message: error_chain(error) }
    }

    fn to_error(&self) -> SendError {
        Box::new(std::io::Error::new(self.kind, self.message.clone()))
    }
}

/// What opening a connection gave.
enum Opened<B> {
    /// An HTTP/2 connection.
    Http2(SendRequest<B>),
    /// orq chose HTTP/1.1 in the handshake (`auto`).
    Http1,
    /// It could not be opened.
    Failed(OpenError),
}

impl<B> Clone for Opened<B> {
    fn clone(&self) -> Self {
        match self {
            Opened::Http2(sender) => Opened::Http2(sender.clone()),
            Opened::Http1 => Opened::Http1,
            Opened::Failed(error) => Opened::Failed(error.clone()),
        }
    }
}

/// One connection to orq and the calls it carries.
struct Conn<B> {
    opened: tokio::sync::OnceCell<Opened<B>>,
    in_flight: AtomicUsize,
    /// Milliseconds since the pool began, when a call last took or left it.
    last_used: AtomicU64,
}

impl<B> Conn<B> {
    /// Whether it can carry no more calls: it failed to open or has closed.
    fn is_dead(&self) -> bool {
        match self.opened.get() {
            Some(Opened::Http2(sender)) => sender.is_closed(),
            Some(Opened::Failed(_)) => true,
            Some(Opened::Http1) | None => false,
        }
    }
}

/// A stream reserved on a connection; dropped, it frees its place.
pub struct Reserved<B> {
    conn: Arc<Conn<B>>,
    /// When the pool began (what `last_used` counts from).
    began: Instant,
}

impl<B> Drop for Reserved<B> {
    fn drop(&mut self) {
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.conn.last_used.store(millis_since(self.began), Ordering::Relaxed);
    }
}

/// Milliseconds since `began`.
fn millis_since(began: Instant) -> u64 {
    began.elapsed().as_millis() as u64
}

/// HTTP/2 connections to one orq endpoint, carrying bodies of type `B`.
pub struct H2Pool<B> {
    connector: hyper_rustls::HttpsConnector<HttpConnector>,
    /// `scheme://authority` of orq, what a connection is opened to.
    origin: Uri,
    streams: usize,
    /// `auto`: orq may pick HTTP/1.1 instead.
    optional: bool,
    /// orq picked HTTP/1.1 (`auto`): every call goes through the HTTP/1.1 client.
    speaks_http1: AtomicBool,
    began: Instant,
    connections: Mutex<Vec<Arc<Conn<B>>>>,
}

impl<B> H2Pool<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// A pool to `origin` through `connector` (its ALPN offers `h2`, with `http/1.1` too where
    /// `optional`), at most `streams` calls a connection.
    pub fn new(
        connector: hyper_rustls::HttpsConnector<HttpConnector>,
        origin: Uri,
        streams: usize,
        optional: bool,
    ) -> H2Pool<B> {
        H2Pool {
            connector,
            origin,
            streams: streams.max(1),
            optional,
            speaks_http1: AtomicBool::new(false),
            began: Instant::now(),
            connections: Mutex::new(Vec::new()),
        }
    }

    /// Whether orq chose HTTP/1.1 in a handshake (`auto`): the caller sends over HTTP/1.1.
    pub fn speaks_http1(&self) -> bool {
        self.speaks_http1.load(Ordering::Relaxed)
    }

    /// Sends `request` over HTTP/2, or gives it back when orq speaks HTTP/1.1 (`auto`).
    pub async fn send(
        &self,
        request: hyper::Request<B>,
    ) -> Result<Result<hyper::Response<Incoming>, SendError>, hyper::Request<B>> {
        // A connection that closed between its checkout and this call is replaced once.
        let mut replaced = false;
        loop {
            let reserved = self.checkout();
            // Boxed: only a call that opens the connection needs the opening's state.
            let opened = reserved.conn.opened.get_or_init(|| Box::pin(self.open())).await.clone();
            let mut sender = match opened {
                Opened::Http2(sender) => sender,
                Opened::Http1 => return Err(request),
                Opened::Failed(error) => return Ok(Err(error.to_error())),
            };
            match sender.ready().await {
                Err(_) if !replaced => replaced = true,
                Err(error) => return Ok(Err(error.into())),
                // The stream's place is held until orq's answer head is back.
                Ok(()) => return Ok(sender.send_request(request).await.map_err(SendError::from)),
            }
        }
    }

    /// A stream on the least loaded live connection with room, or on a new connection.
    fn checkout(&self) -> Reserved<B> {
        let now = millis_since(self.began);
        let idle = IDLE.as_millis() as u64;
        let mut connections = match self.connections.lock() {
            Ok(connections) => connections,
            Err(poisoned) => poisoned.into_inner(),
        };
        connections.retain(|c| {
            let unused = c.in_flight.load(Ordering::Acquire) == 0;
            !(c.is_dead() || (unused && now.saturating_sub(c.last_used.load(Ordering::Relaxed)) > idle))
        });
        let roomiest = connections
            .iter()
            .map(|c| (c.in_flight.load(Ordering::Acquire), c))
            .filter(|(load, _)| *load < self.streams)
            .min_by_key(|(load, _)| *load)
            .map(|(_, c)| c.clone());
        let conn = roomiest.unwrap_or_else(|| {
            let conn = Arc::new(Conn {
                opened: tokio::sync::OnceCell::new(),
                in_flight: AtomicUsize::new(0),
                last_used: AtomicU64::new(now),
            });
            connections.push(conn.clone());
            conn
        });
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.last_used.store(now, Ordering::Relaxed);
        Reserved { conn, began: self.began }
    }

    /// Opens a connection: TCP (and TLS with ALPN), then the HTTP/2 handshake.
    async fn open(&self) -> Opened<B> {
        let mut connector = self.connector.clone();
        let stream = match futures::future::poll_fn(|cx| connector.poll_ready(cx)).await {
            Ok(()) => connector.call(self.origin.clone()).await,
            Err(e) => Err(e),
        };
        let stream = match stream {
            Ok(stream) => stream,
            Err(error) => return Opened::Failed(OpenError::of(&*error)),
        };
        let tls = matches!(stream, hyper_rustls::MaybeHttpsStream::Https(_));
        if tls && !stream.connected().is_negotiated_h2() {
            if self.optional {
                info!(upstream = %self.origin, "orq chose HTTP/1.1 in its TLS handshake; calls go over HTTP/1.1");
                self.speaks_http1.store(true, Ordering::Relaxed);
                return Opened::Http1;
            }
            let message = format!("{} did not choose h2 in its TLS handshake (--upstream-http 2)", self.origin);
            return Opened::Failed(OpenError { kind: std::io::ErrorKind::Unsupported, message });
        }
        let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .initial_stream_window_size(UPSTREAM_H2_STREAM_WINDOW)
            .initial_connection_window_size(UPSTREAM_H2_CONNECTION_WINDOW);
        match builder.handshake(stream).await {
            Ok((sender, connection)) => {
                let origin = self.origin.clone();
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        debug!(upstream = %origin, %error, "HTTP/2 connection to orq ended");
                    }
                });
                debug!(upstream = %self.origin, "HTTP/2 connection to orq opened");
                Opened::Http2(sender)
            }
            Err(error) => {
                warn!(upstream = %self.origin, %error, "HTTP/2 handshake with orq failed");
                Opened::Failed(OpenError::of(&error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timed_out_connect_anywhere_in_the_chain_is_a_timeout() {
        #[derive(Debug, thiserror::Error)]
        #[error("client error")]
        struct Wrapper(#[source] std::io::Error);
        let timed_out = Wrapper(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect"));
        assert!(is_timeout(&timed_out));
        let refused = Wrapper(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "timed out in the text only"));
        assert!(!is_timeout(&refused), "decided on the kind, not on the message");
        assert_eq!(error_chain(&refused), "client error: timed out in the text only");
    }
}
