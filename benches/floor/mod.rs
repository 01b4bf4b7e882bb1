//! The floor of the gateway's HTTP stack: a bare pass-through proxy on the same crates, runtime
//! and settings as `routerpolicy gateway` (hyper's HTTP/1.1 server with keep-alive, hyper-util's
//! pooled client, a multi-threaded tokio runtime of the same worker count, no-delay sockets),
//! which does only what any proxy in the gateway's place must: read the body, scan it for the
//! multipart delimiter (memchr's memmem, as the rewrite does) and send it on with its length.
//! No policy, no rewrite, no metrics, no limits or timeouts.
//!
//! It runs as its own process: the bench starts its own executable again with
//! [`UPSTREAM_ENV`] and [`PORT_ENV`] set, and [`serve_if_asked`] turns that process into the
//! floor. What it serves next to nginx is what the stack allows at best; the gateway's distance
//! to it is what the gateway's own work costs.
//!
//! Delimiters that straddle two frames are not counted: the scan is here for its cost (every
//! byte of the body is searched once), not for its answer.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// The fake orq's base URL; set, the bench's executable serves the floor instead of benching.
pub const UPSTREAM_ENV: &str = "GATEWAY_BENCH_FLOOR_UPSTREAM";
/// The loopback port the floor listens on.
pub const PORT_ENV: &str = "GATEWAY_BENCH_FLOOR_PORT";
/// Worker threads of the floor's runtime (the gateway's `--worker-threads` in the bench).
pub const THREADS_ENV: &str = "GATEWAY_BENCH_FLOOR_THREADS";

/// The floor proxy as a child process, until dropped.
pub struct Floor {
    pub child: std::process::Child,
    pub port: u16,
}

impl Floor {
    /// This executable again, as the floor in front of `upstream` with `threads` workers, once
    /// it accepts connections; `None` if it does not within 10 s.
    pub fn start(upstream: &str, threads: usize) -> Option<Floor> {
        let port = crate::gwsupport::free_port();
        let child = std::process::Command::new(std::env::current_exe().ok()?)
            .env(UPSTREAM_ENV, upstream)
            .env(PORT_ENV, port.to_string())
            .env(THREADS_ENV, threads.to_string())
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()?;
        // Dropped, it is stopped.
        let mut floor = Floor { child, port };
        crate::gwsupport::accepts_within(&mut floor.child, port, Duration::from_secs(10)).then_some(floor)
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        crate::gwsupport::stop(&mut self.child, Duration::from_secs(5));
    }
}

/// In a process started by [`Floor::start`]: serves the floor until killed, and never returns.
/// Anywhere else: returns at once.
pub fn serve_if_asked() {
    let Ok(upstream) = std::env::var(UPSTREAM_ENV) else { return };
    let port: u16 = std::env::var(PORT_ENV).ok().and_then(|p| p.parse().ok()).expect("GATEWAY_BENCH_FLOOR_PORT");
    let threads: usize = std::env::var(THREADS_ENV).ok().and_then(|t| t.parse().ok()).unwrap_or(1).max(1);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().expect("runtime");
    runtime.block_on(serve(Arc::from(upstream.trim_end_matches('/')), port));
    std::process::exit(0);
}

/// Accepts connections on `port` and serves each with [`forward`], as the gateway's server does.
async fn serve(upstream: Arc<str>, port: u16) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Frames> = Client::builder(TokioExecutor::new()).build(connector);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("the floor's port");
    let mut server = hyper::server::conn::http1::Builder::new();
    server.keep_alive(true);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let (client, upstream, server) = (client.clone(), upstream.clone(), server.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| forward(client.clone(), upstream.clone(), request));
            let _ = server.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

type Answer = Response<BoxBody<Bytes, hyper::Error>>;

/// Reads the body (scanning it for the delimiter), sends it to `upstream` with its length, and
/// hands the answer back as it comes.
async fn forward(
    client: Client<HttpConnector, Frames>,
    upstream: Arc<str>,
    request: Request<Incoming>,
) -> Result<Answer, Infallible> {
    let (parts, mut body) = request.into_parts();
    let delimiter = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.split_once("boundary="))
        .map(|(_, boundary)| format!("\r\n--{boundary}"));
    let finder = delimiter.as_deref().map(|d| memchr::memmem::Finder::new(d.as_bytes()));
    let mut frames = Frames::default();
    let mut delimiters = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return Ok(status(StatusCode::BAD_REQUEST)) };
        if let Ok(data) = frame.into_data() {
            delimiters += finder.as_ref().map_or(0, |f| f.find_iter(&data).count());
            frames.length += data.len() as u64;
            frames.chunks.push_back(data);
        }
    }
    std::hint::black_box(delimiters);
    let mut headers = parts.headers;
    for name in [HOST, CONTENT_LENGTH, CONNECTION] {
        headers.remove(name);
    }
    headers.insert(CONTENT_LENGTH, frames.length.into());
    let mut forwarded = Request::new(frames);
    *forwarded.method_mut() = parts.method;
    *forwarded.headers_mut() = headers;
    let Ok(uri) = format!("{upstream}{}", parts.uri.path()).parse() else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    *forwarded.uri_mut() = uri;
    Ok(match client.request(forwarded).await {
        Ok(answer) => answer.map(BodyExt::boxed),
        Err(_) => status(StatusCode::BAD_GATEWAY),
    })
}

/// An empty answer with `code`.
fn status(code: StatusCode) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::new()).map_err(|never: Infallible| match never {}).boxed());
    *answer.status_mut() = code;
    answer
}

/// The body as read: its frames, sent on as they came, with their length (not the gateway's
/// `Chunks`, which joins small pieces: the floor uses none of the gateway's code).
#[derive(Default)]
struct Frames {
    chunks: VecDeque<Bytes>,
    length: u64,
}

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.chunks.pop_front().map(|chunk| Ok(http_body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.chunks.iter().map(|c| c.len() as u64).sum())
    }
}
