//! The way to orq: the `--upstream` base URL, the HTTPS client (HTTP/1.1, or HTTP/2 through
//! [`crate::gateway::pool`]), and the rewritten body it sends.
//!
//! hyper-util's pooled client over hyper-rustls (ring), the stack kube-rs uses; roots from the
//! system store (honouring `SSL_CERT_FILE`) and, where there is none (the scratch image), the
//! bundled Mozilla roots.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderValue, Uri, header};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::gateway::budget::Reservation;
use crate::gateway::options::{GatewayError, UpstreamHttp};
use crate::gateway::pool::{H2Pool, SendError};
pub use crate::gateway::pool::{error_chain, is_timeout};
use crate::key::VARIATIONS_PATH;

/// The body sent upstream: the whole rewritten body with its length (`Content-Length`), or
/// the rewrite as it streams (chunked), with the share of the budget its bytes hold. That share
/// goes back as soon as the last byte is handed to the upstream connection (or the body is
/// dropped): a call that only waits for orq's answer holds none of the budget.
pub struct UpstreamBody {
    kind: BodyKind,
    held: Option<Reservation>,
}

enum BodyKind {
    /// Buffered: the chunks, with an exact length.
    Buffered(Chunks),
    /// Streamed: chunks as the rewrite gives them.
    Streamed(Upload),
}

impl UpstreamBody {
    /// A whole body, holding `held` until it is sent.
    pub fn buffered(chunks: Chunks, held: Reservation) -> Self {
        UpstreamBody { kind: BodyKind::Buffered(chunks), held: Some(held) }
    }

    /// A streamed body, holding `held` until it ends.
    pub fn streamed(upload: Upload, held: Reservation) -> Self {
        UpstreamBody { kind: BodyKind::Streamed(upload), held: Some(held) }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.kind {
            BodyKind::Buffered(chunks) => match Pin::new(&mut *chunks).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            BodyKind::Streamed(upload) => upload.poll(cx),
        };
        // The last frame is out (or the upload failed): nothing of the body is held here now.
        let ended = matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_))));
        if ended || this.kind.is_end_stream() {
            this.held = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.kind.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Buffered(chunks) => chunks.size_hint(),
            BodyKind::Streamed(_) => SizeHint::default(),
        }
    }
}

impl BodyKind {
    fn is_end_stream(&self) -> bool {
        match self {
            BodyKind::Buffered(chunks) => http_body::Body::is_end_stream(chunks),
            BodyKind::Streamed(_) => false,
        }
    }
}

/// The streamed body's receiving end. It ends cleanly only when the sender marked the body
/// complete: a rewrite that stops (refused, timed out, the caller gone) turns into an error,
/// so hyper aborts the request and orq never sees a truncated body end well-formed.
pub struct Upload {
    chunks: tokio::sync::mpsc::Receiver<Bytes>,
    complete: Arc<AtomicBool>,
}

/// The sending end of an [`Upload`].
pub struct UploadSender {
    /// Chunks to send.
    pub chunks: tokio::sync::mpsc::Sender<Bytes>,
    complete: Arc<AtomicBool>,
}

impl UploadSender {
    /// The body was sent whole: end it cleanly.
    pub fn complete(self) {
        self.complete.store(true, Ordering::Release);
    }
}

/// A streamed body holding at most `queued` chunks on their way to orq.
pub fn upload(queued: usize) -> (UploadSender, Upload) {
    let (tx, rx) = tokio::sync::mpsc::channel(queued);
    let complete = Arc::new(AtomicBool::new(false));
    (UploadSender { chunks: tx, complete: complete.clone() }, Upload { chunks: rx, complete })
}

impl Upload {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.chunks.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            Poll::Ready(None) if self.complete.load(Ordering::Acquire) => Poll::Ready(None),
            Poll::Ready(None) => {
                Poll::Ready(Some(Err(std::io::Error::other("the request body was refused or cut off; upload aborted"))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The buffered body: the rewritten chunks, with an exact length.
pub struct Chunks {
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

/// Runs of chunks shorter than this are joined into one (a copy of a few hundred bytes).
const SMALL_CHUNK: usize = 4096;
/// What joining may copy per request at most: a body made only of small parts (thousands of
/// short fields) keeps the rest as it came, so a buffered request holds at most this much more
/// than its body.
const MAX_JOINED: usize = 64 * 1024;

impl Chunks {
    /// The body of `chunks`, `len` bytes in all. Runs of small chunks (the `orq` part, header
    /// blocks, short fields) are joined, so hyper sends the head and the whole body in one
    /// `writev` instead of overflowing its 16-buffer queue into a second one.
    pub fn new(chunks: Vec<Bytes>, len: u64) -> Self {
        Chunks { chunks: coalesce(chunks), remaining: len }
    }
}

/// `chunks` with runs of small ones joined into one, copying at most [`MAX_JOINED`] bytes;
/// large ones (and small ones past that) are kept as they are.
fn coalesce(mut chunks: Vec<Bytes>) -> VecDeque<Bytes> {
    // Whether a chunk of `len` bytes is joined, after `copied` bytes were: one rule for the
    // sizing pass and the joining pass, so the runs share one buffer sized once.
    let joins = |len: usize, copied: usize| len < SMALL_CHUNK && copied + len <= MAX_JOINED;
    let joined = chunks.iter().fold(0, |copied, c| if joins(c.len(), copied) { copied + c.len() } else { copied });
    let mut run = bytes::BytesMut::with_capacity(joined);
    let mut copied = 0;
    // Joined in place: `kept` chunks lead the vector, and a run is written over a chunk it
    // joined (a run holds one at least), so `kept` never passes the chunk being looked at.
    let mut kept = 0;
    for at in 0..chunks.len() {
        if joins(chunks[at].len(), copied) {
            copied += chunks[at].len();
            run.extend_from_slice(&chunks[at]);
            continue;
        }
        if !run.is_empty() {
            chunks[kept] = run.split().freeze();
            kept += 1;
        }
        chunks.swap(kept, at);
        kept += 1;
    }
    if !run.is_empty() {
        chunks[kept] = run.freeze();
        kept += 1;
    }
    chunks.truncate(kept);
    // The vector's own buffer, reused.
    VecDeque::from(chunks)
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

/// The client that talks to orq: HTTP/1.1 through hyper's pooled client, HTTP/2 through
/// [`H2Pool`] (several connections, at most `--upstream-http2-streams` calls each).
pub struct UpstreamClient {
    http1: Client<hyper_rustls::HttpsConnector<HttpConnector>, UpstreamBody>,
    http2: Option<H2Pool<UpstreamBody>>,
    /// The `Host` of an HTTP/1.1 request to orq, made once: the client would write it out
    /// for every request.
    host: Option<HeaderValue>,
}

impl UpstreamClient {
    /// Sends `request` to orq: over HTTP/2 where the pool speaks it, else over HTTP/1.1.
    pub async fn request(&self, request: hyper::Request<UpstreamBody>) -> Result<hyper::Response<Incoming>, SendError> {
        let mut request = match &self.http2 {
            // Boxed: the pool's future (with a connection's opening inside) is larger than
            // hyper's, and a request's future is moved as it is polled; HTTP/1.1 stays small.
            Some(pool) if !pool.speaks_http1() => match Box::pin(pool.send(request)).await {
                Ok(answer) => return answer,
                Err(request) => request,
            },
            _ => request,
        };
        // What hyper-util would write for an HTTP/1.1 request without one, made once.
        if let Some(host) = &self.host {
            request.headers_mut().entry(header::HOST).or_insert_with(|| host.clone());
        }
        self.http1.request(request).await.map_err(SendError::from)
    }
}

/// The client for `upstream`, TLS or plain, with a TCP connect timeout, speaking `version`:
/// with `auto`, HTTP/2 where orq's TLS handshake picks `h2` (ALPN) and HTTP/1.1 where it picks
/// `http/1.1`, offers none, or the URL is plain `http://`; over HTTP/2 at most `streams` calls
/// share a connection.
pub fn client(connect_timeout: Duration, version: UpstreamHttp, upstream: &Upstream, streams: usize) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let builder = || match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(b) => b.https_or_http(),
        Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots().https_or_http(),
    };
    let http2 = match (version, upstream.scheme.as_str()) {
        (UpstreamHttp::Http2, _) => Some(builder().enable_http2().wrap_connector(http.clone())),
        (UpstreamHttp::Auto, "https") => Some(builder().enable_all_versions().wrap_connector(http.clone())),
        _ => None,
    }
    .map(|connector| H2Pool::new(connector, upstream.origin(), streams, version == UpstreamHttp::Auto));
    let https = builder().enable_http1().wrap_connector(http);
    let http1 = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(https);
    UpstreamClient { http1, http2, host: host_header(&upstream.origin()) }
}

/// The `Host` header hyper-util's client writes for `origin`: its host, and its port where that
/// is not the scheme's default.
fn host_header(origin: &Uri) -> Option<HeaderValue> {
    let host = origin.host()?;
    let default = if origin.scheme_str() == Some("https") { 443 } else { 80 };
    match origin.port_u16() {
        Some(port) if port != default => HeaderValue::from_str(&format!("{host}:{port}")).ok(),
        _ => HeaderValue::from_str(host).ok(),
    }
}

/// The upstream base: scheme, authority and a path prefix without a trailing slash.
#[derive(Debug, Clone)]
pub struct Upstream {
    scheme: String,
    authority: String,
    prefix: String,
    /// The URI of the proxied path without a query, made once: the usual request's.
    variations: Option<Uri>,
}

impl Upstream {
    /// `scheme://authority`: where connections are opened to.
    pub fn origin(&self) -> Uri {
        Uri::builder()
            .scheme(self.scheme.as_str())
            .authority(self.authority.as_str())
            .path_and_query("/")
            .build()
            .unwrap_or_default()
    }
}

impl Upstream {
    /// Parses `--upstream`: an `http://` or `https://` URL with a host, no query.
    pub fn parse(url: &str) -> Result<Upstream, GatewayError> {
        let uri: Uri = url.parse().map_err(|_| GatewayError::Upstream(url.to_string()))?;
        let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
        let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        if !(scheme == "http" || scheme == "https") || authority.is_empty() || uri.query().is_some() {
            return Err(GatewayError::Upstream(url.to_string()));
        }
        let prefix = uri.path().trim_end_matches('/').to_string();
        let mut upstream = Upstream { scheme, authority, prefix, variations: None };
        upstream.variations = upstream.build(VARIATIONS_PATH).ok();
        Ok(upstream)
    }

    /// The upstream URI of a request's path and query.
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, axum::http::Error> {
        match &self.variations {
            Some(uri) if path_and_query == VARIATIONS_PATH => Ok(uri.clone()),
            _ => self.build(path_and_query),
        }
    }

    fn build(&self, path_and_query: &str) -> Result<Uri, axum::http::Error> {
        Ok(format!("{}://{}{}{}", self.scheme, self.authority, self.prefix, path_and_query).parse::<Uri>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_chunks_are_joined_and_large_ones_kept_whole() {
        let image = Bytes::from(vec![7u8; 10_000]);
        let parts = vec![
            Bytes::from_static(b"--b\r\n"),
            Bytes::from_static(b"head\r\n\r\n"),
            image.clone(),
            Bytes::from_static(b"\r\n"),
            Bytes::from_static(b"--b--\r\n"),
        ];
        let joined: Vec<Bytes> = coalesce(parts.clone()).into();
        assert_eq!(joined.len(), 3, "{joined:?}");
        assert_eq!(joined.concat(), parts.concat(), "the same bytes in the same order");
        assert_eq!(joined[1].as_ptr(), image.as_ptr(), "the image is not copied");
    }

    #[test]
    fn joining_copies_no_more_than_its_bound() {
        let fields: Vec<Bytes> = (0..4000).map(|i| Bytes::from(format!("field {i:04} and some text\r\n"))).collect();
        let joined: Vec<Bytes> = coalesce(fields.clone()).into();
        assert_eq!(joined.concat(), fields.concat(), "the same bytes in the same order");
        let originals: Vec<*const u8> = fields.iter().map(|f| f.as_ptr()).collect();
        let copied: usize = joined.iter().filter(|c| !originals.contains(&c.as_ptr())).map(|c| c.len()).sum();
        assert!(copied > 0 && copied <= MAX_JOINED, "copied {copied} bytes");
        assert!(fields.concat().len() > MAX_JOINED, "the fixture is larger than the bound");
    }

    /// A budget of 1 MiB and what it has reserved now.
    fn budget() -> (crate::gateway::budget::Budget, prometheus_client::metrics::gauge::Gauge) {
        let gauge = prometheus_client::metrics::gauge::Gauge::default();
        (crate::gateway::budget::Budget::new(1024 * 1024, gauge.clone()), gauge)
    }

    fn poll(body: &mut UpstreamBody) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        http_body::Body::poll_frame(Pin::new(body), &mut cx)
    }

    #[test]
    fn a_buffered_body_returns_its_budget_with_its_last_frame() {
        let (budget, reserved) = budget();
        let held = budget.reserve(200 * 1024, 200 * 1024).expect("fits");
        let chunks = vec![Bytes::from(vec![1u8; 100 * 1024]), Bytes::from(vec![2u8; 100 * 1024])];
        let mut body = UpstreamBody::buffered(Chunks::new(chunks, 200 * 1024), held);
        assert!(matches!(poll(&mut body), Poll::Ready(Some(Ok(_)))));
        assert_eq!(reserved.get(), 200 * 1024, "held while a frame is still to send");
        assert!(matches!(poll(&mut body), Poll::Ready(Some(Ok(_)))));
        assert!(http_body::Body::is_end_stream(&body));
        assert_eq!(reserved.get(), 0, "the last frame is out: the call only waits now, holding nothing");
    }

    #[test]
    fn a_streamed_body_returns_its_budget_when_it_ends_or_fails() {
        let (budget, reserved) = budget();
        let (sender, queue) = upload(4);
        let mut body = UpstreamBody::streamed(queue, budget.reserve(512 * 1024, 4 * 1024 * 1024).expect("fits"));
        sender.chunks.try_send(Bytes::from_static(b"part")).expect("queued");
        assert!(matches!(poll(&mut body), Poll::Ready(Some(Ok(_)))));
        assert!(poll(&mut body).is_pending(), "more to come");
        assert_eq!(reserved.get(), 512 * 1024);
        sender.complete();
        assert!(matches!(poll(&mut body), Poll::Ready(None)));
        assert_eq!(reserved.get(), 0, "sent whole");
        let (sender, queue) = upload(4);
        let mut body = UpstreamBody::streamed(queue, budget.reserve(512 * 1024, 4 * 1024 * 1024).expect("fits"));
        drop(sender);
        assert!(matches!(poll(&mut body), Poll::Ready(Some(Err(_)))), "cut off: the upload is aborted");
        assert_eq!(reserved.get(), 0, "an aborted upload holds nothing either");
        let body = UpstreamBody::buffered(Chunks::new(vec![], 0), budget.reserve(10, 10).expect("fits"));
        drop(body);
        assert_eq!(reserved.get(), 0, "a body never sent (orq unreachable) returns it when dropped");
    }

    #[test]
    fn the_host_header_is_the_one_the_client_would_write() {
        let host = |url: &str| host_header(&Upstream::parse(url).expect("valid").origin());
        assert_eq!(host("http://orq:8080/base"), Some(HeaderValue::from_static("orq:8080")));
        assert_eq!(host("https://my.orq.ai"), Some(HeaderValue::from_static("my.orq.ai")));
        assert_eq!(host("https://my.orq.ai:443"), Some(HeaderValue::from_static("my.orq.ai")));
        assert_eq!(host("http://10.0.0.1:80"), Some(HeaderValue::from_static("10.0.0.1")));
        assert_eq!(host("https://[::1]:8443"), Some(HeaderValue::from_static("[::1]:8443")));
    }

    #[test]
    fn upstream_urls_keep_a_path_prefix() {
        let u = Upstream::parse("https://my.orq.ai").expect("valid");
        let path = crate::key::VARIATIONS_PATH;
        assert_eq!(u.uri(path).expect("uri").to_string(), "https://my.orq.ai/v2/router/images/variations");
        let u = Upstream::parse("http://127.0.0.1:9/proxy/").expect("valid");
        assert_eq!(u.uri("/v2/x?a=1").expect("uri").to_string(), "http://127.0.0.1:9/proxy/v2/x?a=1");
        // The proxied path's URI is made once; with a query it is made per request.
        assert_eq!(u.uri(path).expect("uri").to_string(), "http://127.0.0.1:9/proxy/v2/router/images/variations");
        let with_query = format!("{path}?user=a");
        assert_eq!(u.uri(&with_query).expect("uri").to_string(), format!("http://127.0.0.1:9/proxy{with_query}"));
        for bad in ["my.orq.ai", "ftp://x", "https://", "http://x/?q=1"] {
            assert!(Upstream::parse(bad).is_err(), "{bad}");
        }
    }
}
