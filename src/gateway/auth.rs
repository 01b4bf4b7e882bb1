//! Who calls (`--auth serviceaccount`): the caller's `Authorization: Bearer` must be a
//! Kubernetes ServiceAccount token for the gateway's audience, and the caller may use the
//! policies of its own namespace and those whose `spec.callers` admit it.
//!
//! Cheap checks come first and need no API call at all: a missing or malformed token, another
//! audience, an expired token, and a signature the ServiceAccount issuer's published keys do not
//! verify ([`crate::gateway::issuer`]): a forged token costs a signature check, never a
//! TokenReview. Then the API server decides: a token the gateway has not seen is sent to it in a
//! TokenReview (which also sees that the ServiceAccount — and, for a bound token, its pod —
//! still exist), one review per distinct token at a time, at most `max_reviews_in_flight` at
//! once and `max_reviews_per_second` (beyond: 503 for that new token only), and the answer is
//! cached for `--auth-cache-ttl` (never past the token's expiry), so steady traffic makes no API
//! call. The cache is keyed by the token's SHA-256, bounded by `--auth-cache-size`; no token is
//! ever logged or kept in clear.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, header};
use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};
use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tracing::warn;

use crate::gateway::issuer::{IssuerKeys, Signature};

/// How callers are checked.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// ServiceAccount tokens, checked by the API server (TokenReview), cached.
    Serviceaccount,
    /// Nobody is checked: anyone who reaches the gateway may use any policy it serves.
    None,
}

/// An authenticated caller: a ServiceAccount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub service_account: String,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.service_account)
    }
}

/// Why a caller is not authenticated (401), or could not be checked (503). Never holds the
/// token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("no credential: send a ServiceAccount token as Authorization: Bearer <token> (the orq SDK's apiKey)")]
    Missing,
    /// Not `Bearer <JWT>`.
    #[error("the Authorization header is not a bearer token in JWT form ({0})")]
    Malformed(&'static str),
    /// The token is for another audience.
    #[error("the token is not for the audience {0:?}; request a projected token with that audience")]
    WrongAudience(String),
    /// The token has expired.
    #[error("the token has expired")]
    Expired,
    /// The API server does not authenticate the token (bad signature, deleted ServiceAccount
    /// or pod, revoked).
    #[error("the token was not accepted by the API server: {0}")]
    Rejected(String),
    /// The signature does not verify against the issuer's published keys (decided without a
    /// TokenReview).
    #[error("the token is not signed by the ServiceAccount issuer: {0}")]
    Forged(String),
    /// Authenticated, but not as a ServiceAccount.
    #[error("the token does not belong to a ServiceAccount (user {0:?})")]
    NotServiceAccount(String),
    /// The API server could not be asked.
    #[error("the token could not be checked now (the API server did not answer: {0}); retry shortly")]
    Unavailable(String),
}

impl AuthError {
    /// The outcome label of `routerpolicy_gateway_auth_total`.
    pub fn outcome(&self) -> AuthOutcome {
        match self {
            AuthError::Missing => AuthOutcome::Missing,
            AuthError::Malformed(_) => AuthOutcome::Malformed,
            AuthError::WrongAudience(_) => AuthOutcome::WrongAudience,
            AuthError::Expired => AuthOutcome::Expired,
            AuthError::Rejected(_) | AuthError::NotServiceAccount(_) | AuthError::Forged(_) => AuthOutcome::Rejected,
            AuthError::Unavailable(_) => AuthOutcome::Unavailable,
        }
    }
}

/// The outcome of checking one request's caller.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Authenticated and allowed to use the policy.
    Allowed,
    /// Authenticated, but the policy does not admit the caller (403).
    Forbidden,
    /// No credential.
    Missing,
    /// Not a bearer JWT.
    Malformed,
    /// Another audience.
    WrongAudience,
    /// Expired.
    Expired,
    /// Refused by the API server.
    Rejected,
    /// The API server could not be asked.
    Unavailable,
}

impl EncodeLabelValue for AuthOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        let label = match self {
            AuthOutcome::Allowed => "allowed",
            AuthOutcome::Forbidden => "forbidden",
            AuthOutcome::Missing => "missing",
            AuthOutcome::Malformed => "malformed",
            AuthOutcome::WrongAudience => "wrong_audience",
            AuthOutcome::Expired => "expired",
            AuthOutcome::Rejected => "rejected",
            AuthOutcome::Unavailable => "unavailable",
        };
        encoder.write_str(label)
    }
}

/// The claims read before asking the API server (unverified: they can only refuse).
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    aud: Audience,
    exp: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Audience {
    #[default]
    Absent,
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::Absent => false,
            Audience::One(a) => a == audience,
            Audience::Many(list) => list.iter().any(|a| a == audience),
        }
    }
}

/// The bearer token of `headers`.
pub fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers.get(header::AUTHORIZATION).ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::Malformed("not ASCII"))?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Malformed("no Bearer scheme"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed("not the Bearer scheme"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Malformed("empty token"));
    }
    Ok(token)
}

/// The checks that need no API call: a JWT of three parts whose claims name `audience` and
/// have not expired at `now` (seconds since the epoch). Returns the expiry.
pub fn precheck(token: &str, audience: &str, now: u64) -> Result<Option<u64>, AuthError> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(AuthError::Malformed("not three dot-separated parts"));
    };
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed("claims are not base64url"))?;
    let claims: Claims = serde_json::from_slice(&json).map_err(|_| AuthError::Malformed("claims are not JSON"))?;
    if !claims.aud.contains(audience) {
        return Err(AuthError::WrongAudience(audience.to_string()));
    }
    match claims.exp {
        Some(exp) if exp <= now => Err(AuthError::Expired),
        exp => Ok(exp),
    }
}

/// The caller a TokenReview's status names, or why none.
pub fn caller_of(status: &TokenReviewStatus, audience: &str) -> Result<Caller, AuthError> {
    if status.authenticated != Some(true) {
        let reason = status.error.clone().filter(|e| !e.is_empty()).unwrap_or_else(|| "not authenticated".into());
        return Err(AuthError::Rejected(reason));
    }
    // An audience-aware API server answers the audiences it checked (an empty list would mean
    // the API server's own audience, which is not ours).
    if !status.audiences.iter().flatten().any(|a| a == audience) {
        return Err(AuthError::WrongAudience(audience.to_string()));
    }
    let username = status.user.as_ref().and_then(|u| u.username.clone()).unwrap_or_default();
    match crate::callers::parse_service_account_user(&username) {
        Some((namespace, name)) => Ok(Caller { namespace: namespace.to_string(), service_account: name.to_string() }),
        None => Err(AuthError::NotServiceAccount(username)),
    }
}

/// A cached verdict and until when it holds.
struct Cached {
    verdict: Result<Arc<Caller>, AuthError>,
    until: Instant,
}

/// The settings of [`Authenticator`].
#[derive(Clone, Debug)]
pub struct AuthSettings {
    /// The audience tokens must be for.
    pub audience: String,
    /// How long an accepted token is trusted without asking again.
    pub cache_ttl: Duration,
    /// How long a refused token is refused without asking again.
    pub negative_ttl: Duration,
    /// Tokens remembered at most.
    pub cache_size: usize,
    /// TokenReviews in flight at most; a new token beyond waits for none: 503.
    pub max_reviews_in_flight: usize,
    /// TokenReviews sent per second at most; a new token beyond: 503.
    pub max_reviews_per_second: u32,
}

/// A review in progress, shared by every request that carries the same token.
type Pending = Arc<tokio::sync::OnceCell<Result<Arc<Caller>, AuthError>>>;

/// Checks callers' tokens: the issuer's signature locally, then the API server (TokenReview),
/// one review per distinct token at a time, bounded in flight and per second, with a bounded
/// cache of the answers.
pub struct Authenticator {
    reviews: Api<TokenReview>,
    keys: IssuerKeys,
    settings: AuthSettings,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
    pending: Mutex<HashMap<[u8; 32], Pending>>,
    in_flight: tokio::sync::Semaphore,
    /// The second the rate counts in, and the reviews sent in it.
    rate: Mutex<(Instant, u32)>,
}

impl Authenticator {
    /// An authenticator asking the API server of `client`.
    pub fn new(client: kube::Client, settings: AuthSettings) -> Self {
        Authenticator {
            reviews: Api::all(client.clone()),
            keys: IssuerKeys::new(client),
            in_flight: tokio::sync::Semaphore::new(settings.max_reviews_in_flight.max(1)),
            settings,
            cache: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            rate: Mutex::new((Instant::now(), 0)),
        }
    }

    /// The caller of a request with `headers`, or why it is not authenticated. The second
    /// value says whether the API server was asked.
    pub async fn authenticate(&self, headers: &HeaderMap) -> (Result<Arc<Caller>, AuthError>, bool) {
        let token = match bearer(headers) {
            Ok(token) => token,
            Err(e) => return (Err(e), false),
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let exp = match precheck(token, &self.settings.audience, now) {
            Ok(exp) => exp,
            Err(e) => return (Err(e), false),
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(verdict) = self.cached(&digest) {
            return (verdict, false);
        }
        // A forged token is refused here, and not remembered (checking it again is cheap, and
        // a flood of them must not push real callers out of the cache).
        if let Signature::Invalid(why) = self.keys.check(token, &self.settings.audience).await {
            return (Err(AuthError::Forged(why)), false);
        }
        let (verdict, asked) = self.review_once(digest, token).await;
        if asked && !matches!(verdict, Err(AuthError::Unavailable(_))) {
            let ttl = if verdict.is_ok() { self.settings.cache_ttl } else { self.settings.negative_ttl };
            let left = exp.map(|exp| Duration::from_secs(exp.saturating_sub(now))).unwrap_or(ttl);
            self.remember(digest, verdict.clone(), ttl.min(left));
        }
        (verdict, asked)
    }

    /// One review of `token` however many requests carry it at once: the first asks, the others
    /// wait for its answer. The second value says whether this call sent the review.
    async fn review_once(&self, digest: [u8; 32], token: &str) -> (Result<Arc<Caller>, AuthError>, bool) {
        let pending = self.pending.lock().map(|mut pending| pending.entry(digest).or_default().clone()).ok();
        let Some(pending) = pending else { return self.review_bounded(token).await };
        let asked = std::sync::atomic::AtomicBool::new(false);
        let verdict = pending
            .get_or_init(|| async {
                let (verdict, sent) = self.review_bounded(token).await;
                asked.store(sent, std::sync::atomic::Ordering::Relaxed);
                verdict
            })
            .await
            .clone();
        if let Ok(mut all) = self.pending.lock()
            && all.get(&digest).is_some_and(|p| Arc::ptr_eq(p, &pending))
        {
            all.remove(&digest);
        }
        (verdict, asked.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// A review, unless the bounds are reached: then 503 for this new token (cached callers are
    /// not affected). The second value says whether the review was sent.
    async fn review_bounded(&self, token: &str) -> (Result<Arc<Caller>, AuthError>, bool) {
        let Ok(_slot) = self.in_flight.try_acquire() else {
            let why = format!(
                "{} TokenReviews are in flight already (--auth-max-reviews-in-flight)",
                self.settings.max_reviews_in_flight
            );
            return (Err(AuthError::Unavailable(why)), false);
        };
        if !self.within_rate() {
            let why = format!(
                "{} TokenReviews were sent in the last second already (--auth-max-reviews-per-second)",
                self.settings.max_reviews_per_second
            );
            return (Err(AuthError::Unavailable(why)), false);
        }
        (self.review(token).await, true)
    }

    /// Counts one review in the current second; false when the second's budget is spent.
    fn within_rate(&self) -> bool {
        let Ok(mut rate) = self.rate.lock() else { return false };
        if rate.0.elapsed() >= Duration::from_secs(1) {
            *rate = (Instant::now(), 0);
        }
        if rate.1 >= self.settings.max_reviews_per_second.max(1) {
            return false;
        }
        rate.1 += 1;
        true
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Result<Arc<Caller>, AuthError>> {
        let cache = self.cache.lock().ok()?;
        cache.get(digest).filter(|c| c.until > Instant::now()).map(|c| c.verdict.clone())
    }

    fn remember(&self, digest: [u8; 32], verdict: Result<Arc<Caller>, AuthError>, ttl: Duration) {
        let Ok(mut cache) = self.cache.lock() else { return };
        let now = Instant::now();
        if cache.len() >= self.settings.cache_size {
            cache.retain(|_, c| c.until > now);
            if cache.len() >= self.settings.cache_size {
                // Full of live entries: start over rather than grow (each token costs one more
                // TokenReview); the bound holds whatever callers do.
                cache.clear();
            }
        }
        cache.insert(digest, Cached { verdict, until: now + ttl });
    }

    /// Tokens remembered now.
    pub fn cache_len(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
    }

    async fn review(&self, token: &str) -> Result<Arc<Caller>, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![self.settings.audience.clone()]),
            },
            ..Default::default()
        };
        match self.reviews.create(&PostParams::default(), &review).await {
            Ok(answer) => caller_of(&answer.status.unwrap_or_default(), &self.settings.audience).map(Arc::new),
            Err(e) => {
                warn!(error = %e, "TokenReview failed; the caller gets 503");
                Err(AuthError::Unavailable(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use k8s_openapi::api::authentication::v1::UserInfo;

    fn jwt(claims: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(claims))
    }

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().expect("header"));
        headers
    }

    /// A fake API server: no issuer keys (404, so the TokenReview decides), and TokenReviews
    /// answered after `delay`, accepted or not; it counts the reviews.
    fn fake_api(delay: Duration, accept: bool) -> (kube::Client, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let reviews = Arc::new(AtomicUsize::new(0));
        let count = reviews.clone();
        let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let count = count.clone();
            async move {
                let reply = |status: u16, body: String| {
                    http::Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                        .expect("response")
                };
                if request.uri().path() == crate::gateway::issuer::JWKS_PATH {
                    return Ok::<_, std::convert::Infallible>(reply(404, "{}".into()));
                }
                count.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let status = if accept {
                    serde_json::json!({"authenticated": true, "audiences": ["gw"],
                        "user": {"username": "system:serviceaccount:team:app"}})
                } else {
                    serde_json::json!({"authenticated": false, "error": "unknown token"})
                };
                let body = serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                    "spec": {}, "status": status});
                Ok(reply(201, body.to_string()))
            }
        });
        (kube::Client::new(service, "default"), reviews)
    }

    fn authenticator(client: kube::Client, cache_size: usize, max_in_flight: usize) -> Arc<Authenticator> {
        Arc::new(Authenticator::new(
            client,
            AuthSettings {
                audience: "gw".into(),
                cache_ttl: Duration::from_secs(30),
                negative_ttl: Duration::from_secs(5),
                cache_size,
                max_reviews_in_flight: max_in_flight,
                max_reviews_per_second: 1000,
            },
        ))
    }

    /// A token for audience `gw` that passes the cheap checks; `n` makes it distinct.
    fn token(n: usize) -> HeaderMap {
        headers(&format!("Bearer {}", jwt(&format!(r#"{{"aud":["gw"],"exp":99999999999,"n":{n}}}"#))))
    }

    fn reviews(count: &std::sync::atomic::AtomicUsize) -> usize {
        count.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_refusal_is_remembered_without_asking_again() {
        let (client, count) = fake_api(Duration::ZERO, false);
        let auth = authenticator(client, 100, 8);
        let (first, asked) = auth.authenticate(&token(1)).await;
        assert!(matches!(first, Err(AuthError::Rejected(_))) && asked, "{first:?}");
        let (again, asked) = auth.authenticate(&token(1)).await;
        assert!(matches!(again, Err(AuthError::Rejected(_))) && !asked, "{again:?}");
        assert_eq!(reviews(&count), 1, "the refusal came from the cache");
    }

    #[tokio::test]
    async fn the_cache_never_holds_more_than_its_size() {
        let (client, count) = fake_api(Duration::ZERO, true);
        let auth = authenticator(client, 3, 8);
        for n in 0..10 {
            let (caller, _) = auth.authenticate(&token(n)).await;
            assert_eq!(caller.map(|c| c.to_string()), Ok("team/app".to_string()));
            assert!(auth.cache_len() <= 3, "{} tokens cached with a size of 3", auth.cache_len());
        }
        assert_eq!(reviews(&count), 10);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_with_the_same_new_token_share_one_review() {
        let (client, count) = fake_api(Duration::from_millis(100), true);
        let auth = authenticator(client, 100, 8);
        let calls = (0..8).map(|_| {
            let auth = auth.clone();
            tokio::spawn(async move { auth.authenticate(&token(7)).await })
        });
        let answers = futures::future::join_all(calls).await;
        for answer in &answers {
            assert!(matches!(answer, Ok((Ok(_), _))), "{answer:?}");
        }
        assert_eq!(reviews(&count), 1, "eight requests, one TokenReview");
        assert_eq!(answers.iter().filter(|a| matches!(a, Ok((_, true)))).count(), 1, "one of them asked");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_token_beyond_the_reviews_in_flight_gets_503_and_a_cached_one_does_not() {
        let (client, count) = fake_api(Duration::from_millis(300), true);
        let auth = authenticator(client, 100, 1);
        assert!(auth.authenticate(&token(0)).await.0.is_ok(), "cached from now on");
        let slow = tokio::spawn({
            let auth = auth.clone();
            async move { auth.authenticate(&token(1)).await.0 }
        });
        // Until the first review is in flight.
        while reviews(&count) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (shed, asked) = auth.authenticate(&token(2)).await;
        assert!(matches!(&shed, Err(AuthError::Unavailable(why)) if why.contains("in flight")), "{shed:?}");
        assert!(!asked, "a shed token sends no review");
        assert!(auth.authenticate(&token(0)).await.0.is_ok(), "a cached caller is served meanwhile");
        assert!(slow.await.expect("task").is_ok());
        assert_eq!(reviews(&count), 2);
    }

    #[test]
    fn a_bearer_token_is_required() {
        assert_eq!(bearer(&HeaderMap::new()), Err(AuthError::Missing));
        assert_eq!(bearer(&headers("Basic abc")), Err(AuthError::Malformed("not the Bearer scheme")));
        assert_eq!(bearer(&headers("Bearer")), Err(AuthError::Malformed("no Bearer scheme")));
        assert_eq!(bearer(&headers("bearer  abc ")), Ok("abc"));
    }

    #[test]
    fn garbage_other_audiences_and_expired_tokens_are_refused_without_asking() {
        let aud = "routerpolicy-gateway";
        assert!(matches!(precheck("garbage", aud, 10), Err(AuthError::Malformed(_))));
        assert!(matches!(precheck("a.!!!.c", aud, 10), Err(AuthError::Malformed(_))));
        assert!(matches!(precheck(&jwt("[1]"), aud, 10), Err(AuthError::Malformed(_))));
        let other = jwt(r#"{"aud":["https://kubernetes.default.svc"],"exp":100}"#);
        assert_eq!(precheck(&other, aud, 10), Err(AuthError::WrongAudience(aud.into())));
        let expired = jwt(r#"{"aud":["routerpolicy-gateway"],"exp":100}"#);
        assert_eq!(precheck(&expired, aud, 100), Err(AuthError::Expired));
        assert_eq!(precheck(&expired, aud, 99), Ok(Some(100)));
        assert_eq!(precheck(&jwt(r#"{"aud":"routerpolicy-gateway"}"#), aud, 99), Ok(None));
    }

    #[test]
    fn a_review_names_the_service_account_or_says_why_not() {
        let status = |authenticated: bool, user: &str, audiences: &[&str]| TokenReviewStatus {
            authenticated: Some(authenticated),
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
            user: Some(UserInfo { username: Some(user.into()), ..Default::default() }),
            error: (!authenticated).then(|| "service account team-a/gone has been deleted".into()),
        };
        let aud = "routerpolicy-gateway";
        assert_eq!(
            caller_of(&status(true, "system:serviceaccount:team-a:app", &[aud]), aud),
            Ok(Caller { namespace: "team-a".into(), service_account: "app".into() })
        );
        assert!(
            matches!(caller_of(&status(false, "", &[]), aud), Err(AuthError::Rejected(m)) if m.contains("deleted"))
        );
        assert!(matches!(
            caller_of(&status(true, "system:serviceaccount:a:b", &[]), aud),
            Err(AuthError::WrongAudience(_))
        ));
        assert!(
            matches!(caller_of(&status(true, "alice", &[aud]), aud), Err(AuthError::NotServiceAccount(u)) if u == "alice")
        );
    }
}
