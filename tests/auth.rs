//! The gateway knows who calls (docs/gateway.md, `--auth serviceaccount`), on the real control
//! plane with real processes: the operator writes a team's policies (one with `spec.callers`)
//! into the gateway ConfigMap, the gateway reads it through the API under deploy/gateway's
//! ServiceAccount (with tokenreview.yaml's ClusterRole), and callers present ServiceAccount
//! tokens from TokenRequest (`kubectl create token --audience=routerpolicy-gateway`) or signed
//! here with the issuer's key (an expiry shorter than TokenRequest's ten-minute minimum).

mod gwsupport;
mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use gwsupport::{FakeUpstream, GatewayProcess, HttpResponse, image, multipart, post_head, send};
use kube::{Api, Client};
use routerpolicy::api::ImageVariationPolicy;
use serde_json::json;
use support::{Instance, control_plane, eventually};

const WAIT: Duration = Duration::from_secs(60);
const CONFIGMAP: &str = "image-gateway-policies";
const AUDIENCE: &str = "routerpolicy-gateway";
const PATH: &str = "/v2/router/images/variations";

/// The tests share one gateway namespace's setup and the rotation restarts the API server:
/// one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn apply_policy(ns: &str, name: &str, extra: serde_json::Value) {
    let mut spec = json!({"targetRefs": [{"name": CONFIGMAP}], "retry": {"count": 2}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    let yaml = json!({"apiVersion": "routerpolicy.io/v1alpha1", "kind": "ImageVariationPolicy",
        "metadata": {"name": name, "namespace": ns}, "spec": spec});
    let out = control_plane().apply(&yaml.to_string());
    assert!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
}

/// A TokenRequest token of `ns`/`sa` (created if missing) for `audience`.
fn token(ns: &str, sa: &str, audience: &str) -> String {
    let cp = control_plane();
    let _ = cp.kubectl(&["create", "serviceaccount", sa, "-n", ns]);
    cp.kubectl_ok(&["create", "token", sa, "-n", ns, &format!("--audience={audience}"), "--duration=10m"])
        .trim()
        .to_string()
}

/// A bound token of `ns`/`sa` for the gateway's audience that expires in `seconds`, signed
/// with the issuer's key as the API server signs them.
fn short_lived_token(ns: &str, sa: &str, seconds: u64) -> String {
    let cp = control_plane();
    let uid = cp.kubectl_ok(&["get", "serviceaccount", sa, "-n", ns, "-o", "jsonpath={.metadata.uid}"]);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let claims = json!({"aud": [AUDIENCE], "exp": now + seconds, "iat": now, "nbf": now, "iss": cp.server,
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
        "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": uid.trim()}}});
    let signing_input = format!("{}.{}", b64(br#"{"alg":"RS256","typ":"JWT"}"#), b64(claims.to_string().as_bytes()));
    let input = cp.dir.join(format!("jwt-{ns}-{sa}-{now}.txt"));
    std::fs::write(&input, &signing_input).expect("write signing input");
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(cp.dir.join("sa.key"))
        .arg(&input)
        .output()
        .expect("openssl dgst");
    assert!(out.status.success(), "openssl dgst -sign failed");
    format!("{signing_input}.{}", b64(&out.stdout))
}

struct Setup {
    ns: String,
    other: String,
    gateway: GatewayProcess,
    upstream: FakeUpstream,
    _operator: Instance,
}

impl Setup {
    async fn start(client: &Client) -> Setup {
        Setup::start_with(client, &["--auth-cache-ttl=1s"]).await
    }

    async fn start_with(client: &Client, extra: &[&str]) -> Setup {
        let cp = control_plane();
        let ns = cp.namespace(client, "auth-a").await;
        let other = cp.namespace(client, "auth-b").await;
        let kubeconfig = control_plane().gateway_credentials(&ns);
        let operator = Instance::start(&cp.kubeconfig, "auth-op", &[&format!("--namespaces={ns}")]);
        let upstream = FakeUpstream::start(true).await;
        std::fs::write(cp.dir.join("orq-key"), "sk-platform").expect("key");
        let args = [
            format!("--config-map={ns}/{CONFIGMAP}"),
            format!("--upstream={}", upstream.url()),
            format!("--api-key-file={}", cp.dir.join("orq-key").display()),
            "--auth=serviceaccount".into(),
        ];
        let args: Vec<String> = args.into_iter().chain(extra.iter().map(|a| a.to_string())).collect();
        let env = [("KUBECONFIG", kubeconfig.to_str().expect("utf-8"))];
        let gateway = GatewayProcess::start_with_env(&cp.dir, &args, &env);
        apply_policy(&ns, "own", json!({}));
        apply_policy(&ns, "shared", json!({"callers": [{"namespace": other, "serviceAccount": "app"}]}));
        let setup = Setup { ns, other, gateway, upstream, _operator: operator };
        for name in ["own", "shared"] {
            setup.wait_served(client, name).await;
        }
        setup
    }

    /// Waits until the gateway serves the policy's `status.configHash` of its current
    /// generation.
    async fn wait_served(&self, client: &Client, name: &str) {
        let api: Api<ImageVariationPolicy> = Api::namespaced(client.clone(), &self.ns);
        let policy = format!("{}.{name}", self.ns);
        eventually(WAIT, &format!("the gateway serves {policy}"), || async {
            let current = api.get(name).await.ok()?;
            let status = current.status?;
            let hash = status.config_hash.filter(|_| status.observed_generation == current.metadata.generation)?;
            (self.gateway.served_hash(&policy) == Some(hash)).then_some(())
        })
        .await;
    }

    /// POSTs a 4 KiB image for `policy` (`<name>` of the gateway's namespace) with
    /// `authorization`.
    async fn call(&self, policy: &str, authorization: Option<&str>) -> HttpResponse {
        self.call_sized(policy, authorization, 4096).await
    }

    /// [`Setup::call`] with an image of `image_bytes`.
    async fn call_sized(&self, policy: &str, authorization: Option<&str>, image_bytes: usize) -> HttpResponse {
        let addr = self.gateway.addr;
        let policy = format!("{}.{policy}", self.ns);
        let authorization = authorization.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            let body = multipart("XyZ", &[("image", Some("a.png"), Some("image/png"), &image(image_bytes))]);
            let mut extra = vec![("X-Routerpolicy-Policy", policy.as_str())];
            if let Some(value) = &authorization {
                extra.push(("Authorization", value.as_str()));
            }
            send(addr, &post_head(PATH, "XyZ", body.len(), &extra), &body, None).expect("a response")
        })
        .await
        .expect("request task")
    }

    /// The call is refused with `status` and `code`, and nothing reaches orq.
    async fn refused(&self, policy: &str, authorization: Option<&str>, status: u16, code: &str) -> HttpResponse {
        let before = self.upstream.count();
        let response = self.call(policy, authorization).await;
        assert_eq!((response.status, response.error_code()), (status, code.to_string()), "{}", response.text());
        assert_eq!(self.upstream.count(), before, "nothing is sent upstream for a refused call");
        response
    }

    /// The call reaches orq with the gateway's key, not the caller's token.
    async fn allowed(&self, policy: &str, token: &str) {
        let before = self.upstream.count();
        let response = self.call(policy, Some(&format!("Bearer {token}"))).await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(self.upstream.count(), before + 1);
        let received = self.upstream.last();
        assert_eq!(received.headers.get("authorization").map(String::as_str), Some("Bearer sk-platform"));
        assert!(!format!("{received:?}").contains(token), "the caller's token reached orq");
    }

    fn metric(&self, outcome: &str) -> f64 {
        self.gateway.metric(&format!("routerpolicy_gateway_auth_total{{outcome=\"{outcome}\"}}")).unwrap_or(0.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_use_their_own_namespaces_policies_and_those_that_admit_them() {
    let _serial = SERIAL.lock().await;
    let client = control_plane().client().await;
    let s = Setup::start(&client).await;
    let own = token(&s.ns, "app", AUDIENCE);
    let other_app = token(&s.other, "app", AUDIENCE);
    let other_worker = token(&s.other, "worker", AUDIENCE);

    // Own namespace: every policy; orq gets the gateway's key. A second call is answered from
    // the cache: one TokenReview for the token.
    s.allowed("own", &own).await;
    s.allowed("shared", &own).await;
    let reviews = s.gateway.metric("routerpolicy_gateway_token_reviews_total").unwrap_or(0.0);
    s.allowed("own", &own).await;
    assert_eq!(s.gateway.metric("routerpolicy_gateway_token_reviews_total"), Some(reviews), "answered from the cache");

    // Another namespace: only where spec.callers admits it, and only that ServiceAccount.
    let forbidden = s.refused("own", Some(&format!("Bearer {other_app}")), 403, "forbidden").await;
    assert!(forbidden.text().contains(&format!("{}/app", s.other)), "{}", forbidden.text());
    // The body names what was judged, so the refused team can ask `routerpolicy explain`.
    let error = &forbidden.json()["error"];
    let subject = format!("system:serviceaccount:{}:app", s.other);
    assert_eq!(error["policy"], format!("{}/own", s.ns), "{error}");
    assert_eq!(error["caller"], subject, "{error}");
    assert_eq!(error["explain"], format!("routerpolicy explain {}/own --as {subject}", s.ns), "{error}");
    assert!(!forbidden.text().contains(other_app.as_str()), "the 403 body carries no token");
    s.allowed("shared", &other_app).await;
    s.refused("shared", Some(&format!("Bearer {other_worker}")), 403, "forbidden").await;

    // No token, garbage, another audience (the API server's own): 401, and each says why.
    let missing = s.refused("own", None, 401, "unauthenticated").await;
    assert!(missing.headers.get("www-authenticate").is_some_and(|v| v.starts_with("Bearer")));
    s.refused("own", Some("Bearer garbage"), 401, "token_malformed").await;
    s.refused("own", Some("Basic dXNlcjpwYXNz"), 401, "token_malformed").await;
    let api_audience = token(&s.ns, "app", "https://kubernetes.default.svc");
    s.refused("own", Some(&format!("Bearer {api_audience}")), 401, "token_audience").await;

    // A token that expires: accepted until it does, refused after (never served from the cache).
    let short = short_lived_token(&s.ns, "app", 5);
    s.allowed("own", &short).await;
    let expired = eventually(WAIT, "the short-lived token refused once it expired", || async {
        let response = s.call("own", Some(&format!("Bearer {short}"))).await;
        (response.status == 401).then_some(response)
    })
    .await;
    assert_eq!(expired.error_code(), "token_expired", "{}", expired.text());

    // A deleted ServiceAccount: its token stops working once the gateway's cache entry (1 s)
    // and the API server's own token cache (10 s) have let it go.
    let doomed = token(&s.ns, "doomed", AUDIENCE);
    s.allowed("own", &doomed).await;
    control_plane().kubectl_ok(&["delete", "serviceaccount", "doomed", "-n", &s.ns]);
    let bearer = format!("Bearer {doomed}");
    eventually(Duration::from_secs(20), "the deleted ServiceAccount's token is refused", || async {
        (s.call("own", Some(&bearer)).await.status == 401).then_some(())
    })
    .await;
    s.refused("own", Some(&bearer), 401, "token_rejected").await;

    assert!(s.metric("allowed") >= 6.0 && s.metric("forbidden") >= 2.0 && s.metric("rejected") >= 1.0);
    let log = s.gateway.log();
    for secret in [&own, &other_app, &doomed, &short] {
        assert!(!log.contains(secret.as_str()), "a caller's token is in the gateway's log");
    }
}

/// The body bound and the budget hold with callers checked: an unknown caller is refused before
/// its body counts for anything, an admitted one meets the same 413 and 503 as without auth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limits_and_shedding_hold_for_checked_callers() {
    // Its TokenReviews would count in the forged-token test's tally of the API server's.
    let _serial = SERIAL.lock().await;
    let client = control_plane().client().await;
    let bounds = ["--max-body-bytes=262144", "--max-buffered-bytes=131072", "--max-buffered-wait=100ms"];
    let s = Setup::start_with(&client, &bounds).await;
    let app = format!("Bearer {}", token(&s.ns, "app", AUDIENCE));
    s.allowed("own", &token(&s.ns, "app", AUDIENCE)).await;
    // Larger than --max-body-bytes: 413 for the admitted caller, 401 for a missing token.
    let too_large = s.call_sized("own", Some(&app), 300 * 1024).await;
    assert_eq!((too_large.status, too_large.error_code().as_str()), (413, "body_too_large"), "{}", too_large.text());
    let anonymous = s.call_sized("own", None, 300 * 1024).await;
    assert_eq!((anonymous.status, anonymous.error_code().as_str()), (401, "unauthenticated"), "{}", anonymous.text());
    // Within the body bound but more than the whole budget: shed (503) for the admitted caller;
    // a forged token is refused (401) before it could hold any of the budget.
    let shed = s.call_sized("own", Some(&app), 200 * 1024).await;
    assert_eq!((shed.status, shed.error_code().as_str()), (503, "overloaded"), "{}", shed.text());
    let forged =
        forged(&token(&s.ns, "app", AUDIENCE), |_| {}, |claims| claims["sub"] = "system:serviceaccount:x:y".into());
    let refused = s.call_sized("own", Some(&format!("Bearer {forged}")), 200 * 1024).await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert_eq!(s.gateway.metric("routerpolicy_gateway_shed_total"), Some(1.0), "only the admitted caller was shed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_list_changes_are_served_and_the_issuers_key_rotation_needs_no_restart() {
    let _serial = SERIAL.lock().await;
    let client = control_plane().client().await;
    let s = Setup::start(&client).await;
    let outsider = token(&s.other, "batch", AUDIENCE);
    s.refused("shared", Some(&format!("Bearer {outsider}")), 403, "forbidden").await;
    // The list grows: the policy's hash changes, the gateway serves it, the caller is admitted.
    apply_policy(&s.ns, "shared", json!({"callers": [{"namespace": s.other}]}));
    s.wait_served(&client, "shared").await;
    s.allowed("shared", &outsider).await;

    // The issuer's signing key rotates (the old public key stays trusted): tokens of both keys
    // work against the same gateway process.
    let before = token(&s.ns, "app", AUDIENCE);
    control_plane().rotate_service_account_key();
    tokio::time::sleep(Duration::from_millis(1500)).await; // past the cache entry
    let after = token(&s.ns, "app", AUDIENCE);
    assert_ne!(kid(&before), kid(&after), "the new token is signed with the new key");
    s.allowed("own", &before).await;
    s.allowed("own", &after).await;
}

/// `token` with its claims changed by `edit` and its header by `header`, the signature kept:
/// what an attacker who saw one token can make.
fn forged(token: &str, header: impl Fn(&mut serde_json::Value), edit: impl Fn(&mut serde_json::Value)) -> String {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let part = |i: usize, f: &dyn Fn(&mut serde_json::Value)| {
        let mut value: serde_json::Value =
            serde_json::from_slice(&engine.decode(parts[i]).expect("base64url")).expect("JSON");
        f(&mut value);
        engine.encode(value.to_string())
    };
    format!("{}.{}.{}", part(0, &header), part(1, &edit), parts[2])
}

/// TokenReviews the API server has answered (all callers).
async fn api_server_reviews(client: &Client) -> f64 {
    support::apiserver_writes(client).await.get("tokenreviews").copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_cost_no_tokenreview_and_new_tokens_beyond_the_bound_get_503() {
    let _serial = SERIAL.lock().await;
    let client = control_plane().client().await;
    let s = Setup::start_with(&client, &["--auth-cache-ttl=60s", "--auth-max-reviews-per-second=1"]).await;
    let own = token(&s.ns, "app", AUDIENCE);
    s.allowed("own", &own).await;
    let reviews = s.gateway.metric("routerpolicy_gateway_token_reviews_total").unwrap_or(0.0);
    let api_reviews = api_server_reviews(&client).await;

    // 300 tokens that look right (the audience, not expired, the issuer's key id) but whose
    // claims were changed after signing, and one naming a key the issuer never published.
    for i in 0..300 {
        let token =
            forged(&own, |_| {}, |claims| claims["sub"] = json!(format!("system:serviceaccount:{}:x{i}", s.ns)));
        let refused = s.refused("own", Some(&format!("Bearer {token}")), 401, "token_rejected").await;
        assert!(refused.text().contains("not signed by the ServiceAccount issuer"), "{}", refused.text());
    }
    let unknown_key = forged(&own, |header| header["kid"] = json!("a-key-nobody-published"), |_| {});
    s.refused("own", Some(&format!("Bearer {unknown_key}")), 401, "token_rejected").await;
    assert_eq!(
        s.gateway.metric("routerpolicy_gateway_token_reviews_total"),
        Some(reviews),
        "a forged token cost a review"
    );
    assert_eq!(api_server_reviews(&client).await, api_reviews, "the API server was asked about a forged token");
    s.allowed("own", &own).await;

    // Four new, real tokens at once with a budget of one review per second: one is reviewed,
    // the others get 503 with Retry-After, and a cached caller is served meanwhile. The second
    // of the last review (`own`'s) must be over first, or its budget is spent already (the 300
    // refusals above can take less than a second).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh: Vec<String> = (0..4).map(|_| token(&s.ns, "app", AUDIENCE)).collect();
    let bearers: Vec<String> = fresh.iter().map(|t| format!("Bearer {t}")).collect();
    let answers = futures::future::join_all(bearers.iter().map(|b| s.call("own", Some(b)))).await;
    let shed: Vec<&HttpResponse> = answers.iter().filter(|r| r.status == 503).collect();
    assert!(!shed.is_empty() && shed.len() < 4, "{:?}", answers.iter().map(|r| r.status).collect::<Vec<_>>());
    for response in &shed {
        assert_eq!(response.error_code(), "auth_unavailable", "{}", response.text());
        assert!(response.text().contains("--auth-max-reviews-per-second"), "{}", response.text());
        assert!(response.headers.contains_key("retry-after"), "503 says when to retry");
    }
    s.allowed("own", &own).await;
    // Retried after a second, each is reviewed in turn.
    for token in &fresh {
        let bearer = format!("Bearer {token}");
        eventually(Duration::from_secs(10), "a shed token is accepted when retried", || async {
            (s.call("own", Some(&bearer)).await.status == 200).then_some(())
        })
        .await;
    }
}

#[test]
fn the_example_caller_deployment_is_accepted_by_the_api_server() {
    // It creates team-a while its neighbours' setups run: one at a time, as they are.
    let _serial = SERIAL.blocking_lock();
    let cp = control_plane();
    let _ = cp.kubectl(&["create", "namespace", "team-a"]);
    let example = support::repo_root().join("docs/examples/gateway-caller.yaml");
    let out = cp.kubectl(&["apply", "--dry-run=server", "-f", example.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&example).expect("example");
    assert!(text.contains("audience: routerpolicy-gateway"), "a projected token for the gateway's audience");
}

/// The key id in a JWT's header.
fn kid(token: &str) -> String {
    let header = token.split('.').next().unwrap_or_default();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap_or_default();
    let header: serde_json::Value = serde_json::from_slice(&json).unwrap_or_default();
    header["kid"].as_str().unwrap_or_default().to_string()
}
