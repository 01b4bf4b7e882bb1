//! The request path: select the policy, read the body (bounded), rewrite it, forward it to
//! orq, and hand orq's answer back. Every refusal is a [`ProxyError`]; nothing is sent
//! upstream for one.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Sleep;
use tracing::{debug, warn};

use crate::gateway::auth::{AuthOutcome, Caller};
use crate::gateway::budget::Reservation;
use crate::gateway::error::ProxyError;
use crate::gateway::headers::strip_hop_by_hop;
use crate::gateway::metrics::{AuthLabels, PolicyLabels};
use crate::gateway::pool::SendError;
use crate::gateway::rewrite::{self, Rewritten};
use crate::gateway::store::ServedPolicy;
use crate::gateway::stream::StreamRewrite;
use crate::gateway::upstream::{Chunks, UploadSender, UpstreamBody, error_chain, is_timeout, upload};
use crate::gateway::{Gateway, HASH_HEADER, POLICY_HEADER, VARIATIONS_PATH};
use crate::key::PolicyKey;
use crate::rollout;

/// [`POLICY_HEADER`] and [`HASH_HEADER`] as header names: a name given as a string is parsed on
/// every use (and allocated, when inserted).
const POLICY: HeaderName = HeaderName::from_static(POLICY_HEADER);
const HASH: HeaderName = HeaderName::from_static(HASH_HEADER);

/// What a streamed request holds at most, and reserves of the budget: hyper's read buffer
/// (about 400 KiB), the frame being split, up to [`UPLOAD_QUEUE`] chunks on their way to orq and
/// the splitter's carry-over (a header block of at most 64 KiB). Measured in tests/gateway.rs.
pub const STREAM_WINDOW: u64 = 1024 * 1024;

/// Bodies that declare at most this many bytes are read whole and sent with their length.
const SMALL_BODY: u64 = 256 * 1024;

/// Chunks queued toward orq per streamed request.
const UPLOAD_QUEUE: usize = 4;

/// The gateway's requests, as hyper hands them over: the proxied path straight to [`proxy`]
/// (the request path skips the router's matching, extensions and service layers), every other
/// path (`/metrics`, `/healthz`, `/readyz`, not found) through `rest`.
#[derive(Clone)]
pub struct Routes {
    gw: Arc<Gateway>,
    rest: Router,
}

impl Routes {
    /// [`VARIATIONS_PATH`] to the proxy of `gw`, anything else to `rest`.
    pub fn new(gw: Arc<Gateway>, rest: Router) -> Routes {
        Routes { gw, rest }
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for Routes {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        if request.uri().path() == VARIATIONS_PATH {
            let gw = self.gw.clone();
            return Box::pin(async move { Ok(proxy(&gw, request).await) });
        }
        let mut rest = self.rest.clone();
        Box::pin(tower_service::Service::call(&mut rest, request))
    }
}

/// `POST /v2/router/images/variations`: the caller's request as hyper gives it (its body read
/// straight from the connection, not through a boxed body).
pub async fn proxy(gw: &Gateway, request: hyper::Request<Incoming>) -> Response {
    if request.method() != Method::POST {
        return answer(gw, None, ProxyError::MethodNotAllowed);
    }
    let caller = match authenticate(gw, request.headers()).await {
        Ok(caller) => caller,
        Err(error) => return answer(gw, None, error),
    };
    // During a rollout the call takes the new document or the stable one (and is counted
    // under it); the caller must be admitted by the one it takes.
    let chosen = select_policy(gw, request.headers()).map(|p| p.choose());
    let (policy, counter) = match chosen.and_then(|(p, c)| Ok((authorize(gw, caller.as_deref(), p)?, c))) {
        Ok(chosen) => chosen,
        Err(error) => return answer(gw, None, error),
    };
    match forward(gw, &policy, request).await {
        Ok(response) => {
            if let Some(counter) = counter {
                counter.record(rollout::failure_of_status(response.status().as_u16()));
            }
            gw.metrics.count(Some(&policy.key), response.status());
            response
        }
        Err(error) => {
            if let Some(counter) = counter
                && matches!(error, ProxyError::UpstreamTimeout(_) | ProxyError::UpstreamConnectTimeout(_))
            {
                counter.record(Some(rollout::TIMEOUT_ANSWER.to_string()));
            }
            answer(gw, Some(&policy.key), error)
        }
    }
}

/// Any other path.
pub async fn not_found(State(gw): State<Arc<Gateway>>, uri: axum::http::Uri) -> Response {
    answer(&gw, None, ProxyError::NotFound(uri.path().to_string()))
}

/// Counts the refusal under its policy (if one was selected) and answers it.
fn answer(gw: &Gateway, policy: Option<&PolicyKey>, error: ProxyError) -> Response {
    gw.metrics.count(policy, error.status());
    error.into_response()
}

/// The caller (`--auth serviceaccount`; `None` with `--auth none`), or why it is refused.
async fn authenticate(gw: &Gateway, headers: &HeaderMap) -> Result<Option<Arc<Caller>>, ProxyError> {
    let Some(auth) = &gw.auth else { return Ok(None) };
    let (verdict, asked) = auth.authenticate(headers).await;
    if asked {
        gw.metrics.token_reviews.inc();
    }
    verdict.map(Some).map_err(|error| {
        gw.metrics.auth.get_or_create(&AuthLabels { outcome: error.outcome() }).inc();
        debug!(reason = %error, "caller not authenticated");
        ProxyError::Unauthenticated(error)
    })
}

/// `policy`, if `caller` may use it: its own namespace's, or admitted by `spec.callers`.
fn authorize(
    gw: &Gateway,
    caller: Option<&Caller>,
    policy: Arc<ServedPolicy>,
) -> Result<Arc<ServedPolicy>, ProxyError> {
    let Some(caller) = caller else { return Ok(policy) };
    if policy.callers.admits(&policy.key.namespace, &caller.namespace, &caller.service_account) {
        gw.metrics.auth.get_or_create(&AuthLabels { outcome: AuthOutcome::Allowed }).inc();
        return Ok(policy);
    }
    gw.metrics.auth.get_or_create(&AuthLabels { outcome: AuthOutcome::Forbidden }).inc();
    debug!(caller = %caller, policy = %policy.key, "caller may not use the policy");
    Err(ProxyError::Forbidden { caller: caller.clone(), policy: policy.key.clone() })
}

/// The served policy the request names (`X-Routerpolicy-Policy`, or `--default-policy`).
fn select_policy(gw: &Gateway, headers: &HeaderMap) -> Result<Arc<ServedPolicy>, ProxyError> {
    let key = match headers.get(&POLICY) {
        Some(value) => {
            let name = value.to_str().map_err(|_| ProxyError::PolicyHeaderNotAscii)?.trim();
            PolicyKey::parse(name).map_err(|reason| ProxyError::PolicyNameInvalid { name: name.to_string(), reason })?
        }
        None => gw.default_policy.clone().ok_or(ProxyError::PolicyRequired)?,
    };
    let served = gw.snapshot.read().ok().and_then(|s| s.policies.get(&key).cloned());
    served.ok_or(ProxyError::PolicyNotFound(key))
}

/// Reads, rewrites and forwards the request under `policy`; orq's answer, or why not.
async fn forward(
    gw: &Gateway,
    policy: &ServedPolicy,
    request: hyper::Request<Incoming>,
) -> Result<Response, ProxyError> {
    let (parts, body) = request.into_parts();
    // The caller's version, whatever orq spoke: each leg has its own.
    let version = parts.version;
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > gw.max_body_bytes) {
        return Err(ProxyError::BodyTooLarge(gw.max_body_bytes));
    }
    // The caller's type: the boundary is read from it, and orq gets it as it is (shared, not
    // copied) where the body keeps the boundary. Only that share goes on, inside the request to
    // orq: a slice of the caller's head kept while the call waits for orq's answer would keep
    // the connection's whole read buffer.
    let caller_type = parts.headers.get(header::CONTENT_TYPE);
    let boundary = rewrite::boundary_of(caller_type.and_then(|v| v.to_str().ok())).map_err(ProxyError::NotMultipart)?;
    // A body that declares at most SMALL_BODY is kept whole (as frame slices) and sent with
    // its length: it holds no more than a streamed one, and one write costs both sides less.
    let small = declared.is_some_and(|length| length <= SMALL_BODY);
    let (mode, content_type) = match StreamRewrite::new(boundary, &policy.document) {
        None => (Mode::Whole(boundary.to_string()), None),
        Some(rewrite) if gw.upstream_content_length || small => {
            (Mode::Collect(rewrite), keeping_boundary(caller_type, boundary))
        }
        Some(rewrite) => (Mode::Stream(rewrite), keeping_boundary(caller_type, boundary)),
    };
    // What the request may hold at once, reserved before its body is read: a streamed body
    // holds at most a window of it; a buffered one all of it. The upstream body carries the
    // reservation and returns it once the last byte is handed to the connection to orq.
    let holds = match mode {
        Mode::Stream(_) => declared.unwrap_or(STREAM_WINDOW).min(STREAM_WINDOW),
        _ => declared.unwrap_or(gw.max_body_bytes),
    };
    let Some(held) = gw.budget.reserve_within(holds, declared.unwrap_or(gw.max_body_bytes), gw.budget_wait).await
    else {
        gw.metrics.shed.inc();
        return Err(ProxyError::Overloaded);
    };
    let out = Outbound { parts, held };
    let limits = BodyLimits {
        max: gw.max_body_bytes,
        idle: gw.body_idle_timeout,
        deadline: tokio::time::Instant::now() + gw.body_timeout,
    };
    let timer = tokio::time::sleep_until(limits.deadline);
    tokio::pin!(timer);
    let mut body = BodyReader { body, limits: &limits, timer };
    let answer = match mode {
        Mode::Stream(rewrite) => send_streamed(gw, policy, out, body, content_type, rewrite).await,
        Mode::Collect(rewrite) => match collect(&mut body, rewrite).await {
            Ok((chunks, len, removed)) => {
                send_whole(gw, policy, out, Whole { content_type, chunks, len, removed }, body.timer).await
            }
            Err(error) => Err(error),
        },
        Mode::Whole(boundary) => send_rewritten_whole(gw, policy, out, body, &boundary, declared).await,
    }
    .inspect_err(|e| {
        if matches!(e, ProxyError::BodyTimeout(_)) {
            gw.metrics.body_timeouts.inc();
        }
    })?;
    let (mut head, incoming) = answer.into_parts();
    head.version = version;
    strip_hop_by_hop(&mut head.headers);
    if let Some(hash) = &policy.hash_header {
        head.headers.insert(HASH, hash.clone());
    }
    debug!(policy = %policy.key, status = head.status.as_u16(), "proxied");
    Ok(Response::from_parts(head, Body::new(incoming)))
}

/// A request on its way upstream, besides its body: the caller's head, and the share of the
/// budget its body holds, which the upstream body carries and returns once it is sent (so a
/// call waiting for orq's answer holds none).
struct Outbound {
    parts: Parts,
    held: Reservation,
}

/// How a request's body is rewritten.
enum Mode {
    /// As it arrives, streamed to orq (chunked): the default for bodies over [`SMALL_BODY`].
    Stream(StreamRewrite),
    /// As it arrives, kept (slices of the frames, no copy), then sent with its length: small
    /// bodies and `--upstream-content-length`.
    Collect(StreamRewrite),
    /// Read whole, then rewritten with a fresh boundary: a document holding the caller's
    /// (`boundary`).
    Whole(String),
}

/// The content type orq gets for a body that keeps the caller's `boundary`: the caller's own
/// value where it says just that (shared, not copied), else written out.
fn keeping_boundary(caller: Option<&HeaderValue>, boundary: &str) -> Option<HeaderValue> {
    const TYPE: &str = "multipart/form-data; boundary=";
    match caller {
        Some(value) if value.as_bytes().strip_prefix(TYPE.as_bytes()) == Some(boundary.as_bytes()) => {
            Some(value.clone())
        }
        _ => HeaderValue::from_str(&format!("{TYPE}{boundary}")).ok(),
    }
}

/// A rewritten body to send whole: its type, its chunks and their length, and the caller's
/// fields it no longer holds.
struct Whole {
    content_type: Option<HeaderValue>,
    chunks: Vec<Bytes>,
    len: u64,
    removed: Vec<String>,
}

/// The body through the streaming rewrite, kept: the chunks to send, their length, and the
/// caller's fields removed.
async fn collect(
    body: &mut BodyReader<'_>,
    mut rewrite: StreamRewrite,
) -> Result<(Vec<Bytes>, u64, Vec<String>), ProxyError> {
    let mut chunks = Vec::new();
    let mut total = 0u64;
    while let Some(data) = body.next().await? {
        total += data.len() as u64;
        if total > body.limits.max {
            return Err(ProxyError::BodyTooLarge(body.limits.max));
        }
        rewrite.feed(data, &mut chunks).map_err(ProxyError::MultipartInvalid)?;
    }
    rewrite.finish(&mut chunks).map_err(ProxyError::MultipartInvalid)?;
    let len = chunks.iter().map(|c| c.len() as u64).sum();
    Ok((chunks, len, rewrite.removed))
}

/// A document holding the caller's boundary: the body is read whole and rewritten with a
/// fresh boundary, then sent with its length.
async fn send_rewritten_whole(
    gw: &Gateway,
    policy: &ServedPolicy,
    out: Outbound,
    mut body: BodyReader<'_>,
    boundary: &str,
    declared: Option<u64>,
) -> Result<hyper::Response<Incoming>, ProxyError> {
    let read = read_body(&mut body, declared).await?;
    let Rewritten { content_type, chunks, len, removed, .. } =
        rewrite::rewrite(&read, boundary, &policy.document).map_err(ProxyError::MultipartInvalid)?;
    let content_type = HeaderValue::from_str(&content_type).ok();
    send_whole(gw, policy, out, Whole { content_type, chunks, len, removed }, body.timer).await
}

/// Sends a rewritten body whole, with its length, within `--request-timeout`, timed by the
/// body's `timer` (the body is read, so its timer is free: one timer serves the whole call).
async fn send_whole(
    gw: &Gateway,
    policy: &ServedPolicy,
    out: Outbound,
    whole: Whole,
    mut timer: Pin<&mut Sleep>,
) -> Result<hyper::Response<Incoming>, ProxyError> {
    if !whole.removed.is_empty() {
        debug!(policy = %policy.key, removed = ?whole.removed, "removed the caller's router fields");
    }
    let body = UpstreamBody::buffered(Chunks::new(whole.chunks, whole.len), out.held);
    let request = upstream_request(gw, out.parts, whole.content_type, body, Some(whole.len))?;
    let started = Instant::now();
    gw.metrics.in_flight.inc();
    timer.as_mut().reset(tokio::time::Instant::now() + gw.request_timeout);
    let sent = tokio::select! {
        biased;
        sent = gw.client.request(request) => Some(sent),
        () = timer => None,
    };
    upstream_answer(gw, policy, started, sent)
}

/// The default: the body is rewritten as it arrives and streamed to orq (chunked). A body the
/// rewrite refuses, that stalls, or that grows too large aborts the upload, so orq never gets
/// a complete request for it, and the caller gets the refusal.
async fn send_streamed(
    gw: &Gateway,
    policy: &ServedPolicy,
    out: Outbound,
    body: BodyReader<'_>,
    content_type: Option<HeaderValue>,
    rewrite: StreamRewrite,
) -> Result<hyper::Response<Incoming>, ProxyError> {
    let (sender, upload) = upload(UPLOAD_QUEUE);
    let request = upstream_request(gw, out.parts, content_type, UpstreamBody::streamed(upload, out.held), None)?;
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let pumping = pump(body, rewrite, (sender, first_tx), gw.request_timeout);
    tokio::pin!(pumping);
    // orq is called once the caller's first part is judged: garbage or a stall from the first
    // byte never opens a connection upstream.
    let pumped_first = tokio::select! {
        biased;
        pumped = &mut pumping => Some(pumped?),
        _ = first_rx => None,
    };
    let started = Instant::now();
    gw.metrics.in_flight.inc();
    let sending = gw.client.request(request);
    tokio::pin!(sending);
    // A pump that already finished is not polled again (a finished future must not be).
    let pumped = match pumped_first {
        Some(()) => Ok(()),
        None => tokio::select! {
            biased;
            pumped = &mut pumping => pumped,
            // orq answered (or failed) before the body was all sent.
            early = &mut sending => return upstream_answer(gw, policy, started, Some(early)),
        },
    };
    if let Err(error) = pumped {
        gw.metrics.in_flight.dec();
        return Err(error);
    }
    let sent = tokio::time::timeout(gw.request_timeout, sending).await.ok();
    upstream_answer(gw, policy, started, sent)
}

/// Feeds the caller's body through the streaming rewrite into the upload, within `limits`;
/// marks the upload complete only when the body was whole and well-formed.
async fn pump(
    mut body: BodyReader<'_>,
    mut rewrite: StreamRewrite,
    (sender, first): (UploadSender, tokio::sync::oneshot::Sender<()>),
    send_timeout: std::time::Duration,
) -> Result<(), ProxyError> {
    let mut first = Some(first);
    let mut out = Vec::new();
    let mut total = 0u64;
    loop {
        for chunk in out.drain(..) {
            match tokio::time::timeout(send_timeout, sender.chunks.send(chunk)).await {
                Ok(Ok(())) => {
                    if let Some(first) = first.take() {
                        let _ = first.send(());
                    }
                }
                Ok(Err(_)) => return Ok(()), // orq is done with the request (it answered)
                Err(_) => return Err(ProxyError::UpstreamTimeout(send_timeout)),
            }
        }
        let Some(data) = body.next().await? else { break };
        total += data.len() as u64;
        if total > body.limits.max {
            return Err(ProxyError::BodyTooLarge(body.limits.max));
        }
        rewrite.feed(data, &mut out).map_err(ProxyError::MultipartInvalid)?;
    }
    rewrite.finish(&mut out).map_err(ProxyError::MultipartInvalid)?;
    for chunk in out {
        if sender.chunks.send(chunk).await.is_err() {
            return Ok(());
        }
    }
    if !rewrite.removed.is_empty() {
        debug!(removed = ?rewrite.removed, "removed the caller's router fields");
    }
    sender.complete();
    Ok(())
}

/// orq's answer to a sent request (counted, timed), or the error it became (`None`: no answer
/// within `--request-timeout`).
fn upstream_answer(
    gw: &Gateway,
    policy: &ServedPolicy,
    started: Instant,
    sent: Option<Result<hyper::Response<Incoming>, SendError>>,
) -> Result<hyper::Response<Incoming>, ProxyError> {
    gw.metrics.in_flight.dec();
    gw.metrics
        .upstream_duration
        .get_or_create(&PolicyLabels { policy: policy.key.clone() })
        .observe(started.elapsed().as_secs_f64());
    match sent {
        Some(Ok(response)) => Ok(response),
        Some(Err(e)) => {
            let cause = error_chain(&*e);
            let error = if is_timeout(&*e) {
                ProxyError::UpstreamConnectTimeout(cause.clone())
            } else {
                ProxyError::UpstreamUnreachable(cause.clone())
            };
            warn!(policy = %policy.key, error = %cause, code = error.code(), "upstream request failed");
            Err(error)
        }
        None => {
            warn!(policy = %policy.key, timeout = ?gw.request_timeout, "upstream request timed out");
            Err(ProxyError::UpstreamTimeout(gw.request_timeout))
        }
    }
}

/// The request orq gets: the caller's path, query and end-to-end headers, the rewritten body
/// and its type (and length, when buffered), and the gateway's key instead of the caller's
/// `Authorization`.
fn upstream_request(
    gw: &Gateway,
    parts: Parts,
    content_type: Option<HeaderValue>,
    body: UpstreamBody,
    length: Option<u64>,
) -> Result<hyper::Request<UpstreamBody>, ProxyError> {
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or(VARIATIONS_PATH);
    let uri = gw.upstream.uri(path_and_query).map_err(ProxyError::PathInvalid)?;
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    for name in [header::HOST, header::AUTHORIZATION, header::CONTENT_LENGTH, header::CONTENT_TYPE, header::EXPECT] {
        headers.remove(name);
    }
    headers.remove(&POLICY);
    if let Some(content_type) = content_type {
        headers.insert(header::CONTENT_TYPE, content_type);
    }
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    if let Some(key) = gw.api_key.read().ok().and_then(|k| k.clone()) {
        headers.insert(header::AUTHORIZATION, key);
    }
    let mut request = hyper::Request::new(body);
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok(request)
}

/// What a body may take: bytes, time without progress, and time in all.
struct BodyLimits {
    max: u64,
    idle: std::time::Duration,
    deadline: tokio::time::Instant,
}

/// The caller's body, read within its [`BodyLimits`] through one timer for both limits: each
/// frame moves it to the nearer of `deadline` and now + `idle` (moving a timer later takes no
/// lock), so a body costs one timer whatever its number of frames.
struct BodyReader<'a> {
    body: Incoming,
    limits: &'a BodyLimits,
    timer: Pin<&'a mut Sleep>,
}

impl BodyReader<'_> {
    /// The next bytes of the body (`None` at its end), refusing a body that makes no progress
    /// for `limits.idle` and one not complete by `limits.deadline`.
    async fn next(&mut self) -> Result<Option<Bytes>, ProxyError> {
        loop {
            let idle_until = tokio::time::Instant::now() + self.limits.idle;
            let (until, late) = if idle_until < self.limits.deadline {
                (idle_until, "made no progress within --body-idle-timeout")
            } else {
                (self.limits.deadline, "did not arrive within --body-timeout")
            };
            self.timer.as_mut().reset(until);
            let frame = tokio::select! {
                biased;
                frame = self.body.frame() => frame,
                () = self.timer.as_mut() => return Err(ProxyError::BodyTimeout(late)),
            };
            let Some(frame) = frame else { return Ok(None) };
            if let Ok(data) = frame.map_err(ProxyError::BodyUnreadable)?.into_data() {
                return Ok(Some(data));
            }
        }
    }
}

/// Reads the whole body, refusing more than `limits.max` bytes and a body that stalls or is
/// late ([`BodyReader::next`]). A body that came in one frame is used as it is; more are joined
/// into one buffer sized from Content-Length (one copy).
async fn read_body(body: &mut BodyReader<'_>, declared: Option<u64>) -> Result<Bytes, ProxyError> {
    let mut frames: Vec<Bytes> = Vec::new();
    let mut total = 0u64;
    while let Some(data) = body.next().await? {
        total += data.len() as u64;
        if total > body.limits.max {
            return Err(ProxyError::BodyTooLarge(body.limits.max));
        }
        frames.push(data);
    }
    if frames.len() == 1 {
        return Ok(frames.pop().unwrap_or_default());
    }
    // A caller's Content-Length sizes the buffer up to 8 MiB; larger bodies grow it.
    let capacity = declared.unwrap_or(total).min(total.max(1)).min(8 * 1024 * 1024) as usize;
    let mut buffer = bytes::BytesMut::with_capacity(capacity);
    for frame in frames {
        buffer.extend_from_slice(&frame);
    }
    Ok(buffer.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orq_gets_the_callers_content_type_where_it_names_just_the_boundary() {
        let exact = HeaderValue::from_static("multipart/form-data; boundary=abc");
        let kept = keeping_boundary(Some(&exact), "abc").expect("a type");
        assert_eq!(kept, exact);
        assert_eq!(kept.as_bytes().as_ptr(), exact.as_bytes().as_ptr(), "shared, not copied");
        for other in [
            "Multipart/Form-Data; boundary=abc",
            "multipart/form-data; boundary=\"abc\"",
            "multipart/form-data; boundary=abc; charset=utf-8",
        ] {
            let written = keeping_boundary(Some(&HeaderValue::from_static(other)), "abc");
            assert_eq!(written, Some(HeaderValue::from_static("multipart/form-data; boundary=abc")), "{other}");
        }
        assert_eq!(keeping_boundary(None, "x y"), Some(HeaderValue::from_static("multipart/form-data; boundary=x y")));
    }
}
