//! `routerpolicy gateway` as its own process between a caller and a fake orq on loopback that
//! records the multipart fields it received (docs/gateway.md). No cluster: the config
//! directory is laid out as kubelet lays out a mounted ConfigMap.

mod gwsupport;
mod support;

use std::time::{Duration, Instant};

use gwsupport::{
    FakeUpstream, GatewayProcess, HttpResponse, KubeletDir, Mode, Received, get, image, multipart, post_head, send,
};
use routerpolicy::hash::short_hash;
use support::eventually;

const PATH: &str = "/v2/router/images/variations";
const KEY: &str = "sk-orq-test-key";
const DOC_A: &str = r#"{"retry":{"count":3,"on_codes":[429,503]},"fallbacks":[{"model":"openai/dall-e-2"}]}"#;
const DOC_B: &str = r#"{"retry":{"count":1,"on_codes":[500]},"cache":{"type":"exact_match","ttl":60}}"#;

/// A gateway with one policy `team.a` (DOC_A) in a kubelet-style directory, a key file and a
/// recording upstream.
struct Setup {
    dir: tempfile::TempDir,
    mount: KubeletDir,
    upstream: FakeUpstream,
    gateway: GatewayProcess,
}

impl Setup {
    async fn start(extra: &[&str]) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut mount = KubeletDir::new(dir.path());
        mount.set("team.a.json", DOC_A.as_bytes());
        std::fs::write(dir.path().join("key"), format!("{KEY}\n")).expect("key file");
        let upstream = FakeUpstream::start(true).await;
        let mut args = vec![
            format!("--config-dir={}", mount.path.display()),
            format!("--upstream={}", upstream.url()),
            format!("--api-key-file={}", dir.path().join("key").display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let gateway = GatewayProcess::start(dir.path(), &args);
        wait_ready(&gateway).await;
        Setup { dir, mount, upstream, gateway }
    }

    /// POSTs `body` (multipart with boundary `XyZ`) with extra headers, off the runtime.
    async fn post(&self, body: Vec<u8>, extra: &[(&str, &str)]) -> HttpResponse {
        let addr = self.gateway.addr;
        let extra: Vec<(String, String)> = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        tokio::task::spawn_blocking(move || {
            let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            send(addr, &post_head(PATH, "XyZ", body.len(), &extra), &body, None).expect("a response")
        })
        .await
        .expect("request task")
    }

    /// The `orq` document a request for `policy` carries upstream now.
    async fn served(&self, policy: &str) -> Option<String> {
        let r = self.post(simple_body(), &[("X-Routerpolicy-Policy", policy)]).await;
        (r.status == 200).then(|| self.upstream.last().orq())
    }
}

async fn wait_ready(gateway: &GatewayProcess) {
    let addr = gateway.addr;
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(addr, "/readyz").map(|r| r.status) != Some(200) {
        assert!(Instant::now() < deadline, "gateway not ready:\n{}", gateway.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn simple_body() -> Vec<u8> {
    multipart(
        "XyZ",
        &[("image", Some("a.png"), Some("image/png"), &image(1024)), ("model", None, None, b"openai/dall-e-2")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_document_replaces_callers_router_fields_and_everything_else_passes() {
    let s = Setup::start(&[]).await;
    let picture = image(300 * 1024);
    let body = multipart(
        "XyZ",
        &[
            ("orq", None, None, br#"{"retry":{"count":0}}"#),
            ("image", Some("cat.png"), Some("image/png"), &picture),
            ("model", None, None, b"openai/dall-e-2"),
            ("retry", None, None, b"{\"count\":9}"),
            ("name", None, None, b"mine"),
            ("fallbacks", None, None, b"[]"),
            ("cache", None, None, b"{}"),
            ("load_balancer", None, None, b"{}"),
            ("timeout", None, None, b"{\"call_timeout\":1}"),
            ("n", None, None, b"2"),
            ("user", None, None, b"u-42"),
        ],
    );
    let r = s
        .post(
            body,
            &[
                ("X-Routerpolicy-Policy", "team.a"),
                ("Authorization", "Bearer caller-secret"),
                ("X-Request-Id", "req-1"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers.get("x-upstream").map(String::as_str), Some("fake-orq"), "upstream's response passes back");
    assert_eq!(r.headers.get("x-routerpolicy-policy-hash"), Some(&short_hash(DOC_A.as_bytes())));
    assert_eq!(r.json()["data"][0]["url"], "https://example.invalid/a.png");

    let got = s.upstream.last();
    assert_eq!(got.path, PATH);
    assert_eq!(got.names(), ["orq", "image", "model", "n", "user"]);
    assert_eq!(got.orq(), DOC_A, "the policy's document, byte for byte");
    let img = &got.fields("image")[0];
    assert_eq!(img.data, picture, "image bytes unchanged");
    assert_eq!(img.file_name.as_deref(), Some("cat.png"));
    assert_eq!(img.content_type.as_deref(), Some("image/png"));
    assert_eq!(got.fields("n")[0].data, b"2");
    assert_eq!(got.fields("user")[0].data, b"u-42");
    assert_eq!(got.headers.get("authorization").map(String::as_str), Some(&*format!("Bearer {KEY}")));
    assert_eq!(got.headers.get("x-request-id").map(String::as_str), Some("req-1"), "other headers pass");
    assert!(!got.headers.contains_key("x-routerpolicy-policy"), "the selector stays at the gateway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_missing_and_malformed_policy_names_send_nothing_upstream() {
    let s = Setup::start(&[]).await;
    // A JSON file next to the mount that a traversal would reach.
    std::fs::write(s.dir.path().join("secret.json"), "{\"leak\":true}").expect("write");
    let cases: [(Option<&str>, u16, &str); 9] = [
        (None, 400, "policy_required"),
        (Some("team.nope"), 404, "policy_not_found"),
        (Some("other.a"), 404, "policy_not_found"),
        (Some("../secret"), 400, "policy_name_invalid"),
        (Some("team/../../secret"), 400, "policy_name_invalid"),
        (Some("..data"), 400, "policy_name_invalid"),
        (Some("team.a.json"), 404, "policy_not_found"),
        (Some("Team.A"), 400, "policy_name_invalid"),
        (Some("team"), 400, "policy_name_invalid"),
    ];
    for (header, status, code) in cases {
        let extra: Vec<(&str, &str)> = header.map(|h| ("X-Routerpolicy-Policy", h)).into_iter().collect();
        let r = s.post(simple_body(), &extra).await;
        assert_eq!((r.status, r.error_code()), (status, code.to_string()), "{header:?}: {}", r.text());
        assert_eq!(r.headers.get("content-type").map(String::as_str), Some("application/json"));
        let message = r.json()["error"]["message"].as_str().unwrap_or_default().to_string();
        assert!(!message.is_empty(), "{header:?} has a message");
    }
    let other = get(s.gateway.addr, "/v1/chat/completions").expect("response");
    assert_eq!((other.status, other.error_code()), (404, "not_found".to_string()));
    let wrong_method = get(s.gateway.addr, PATH).expect("response");
    assert_eq!((wrong_method.status, wrong_method.error_code()), (405, "method_not_allowed".to_string()));
    let not_multipart = tokio::task::spawn_blocking({
        let addr = s.gateway.addr;
        move || {
            let body = b"{\"image\":\"x\"}";
            let head = format!("POST {PATH} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nX-Routerpolicy-Policy: team.a\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len());
            send(addr, head.as_bytes(), body, None).expect("response")
        }
    })
    .await
    .expect("task");
    assert_eq!((not_multipart.status, not_multipart.error_code()), (415, "not_multipart".to_string()));
    let smuggled = multipart("XyZ", &[("image", None, None, b"x")]).into_iter().collect::<Vec<u8>>();
    let smuggled = String::from_utf8_lossy(&smuggled).replace("name=\"image\"", "name*=UTF-8''orq").into_bytes();
    let r = s.post(smuggled, &[("X-Routerpolicy-Policy", "team.a")]).await;
    assert_eq!((r.status, r.error_code()), (400, "multipart_invalid".to_string()), "{}", r.text());
    assert_eq!(s.upstream.count(), 0, "nothing reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_serves_requests_without_the_header() {
    let s = Setup::start(&["--default-policy=team.a"]).await;
    let r = s.post(simple_body(), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.upstream.last().orq(), DOC_A);
    let bad = GatewayStartFailure::run(&["--default-policy=../x", "--upstream=http://127.0.0.1:9"]);
    assert!(bad.contains("--default-policy \"../x\""), "{bad}");
}

/// Runs the gateway with flags expected to fail at start; its stderr.
struct GatewayStartFailure;
impl GatewayStartFailure {
    fn run(args: &[&str]) -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_routerpolicy"))
            .arg("gateway")
            .arg("--listen=127.0.0.1:0")
            .args(args)
            .env("ROUTERPOLICY_GATEWAY_AUTH", "none")
            .output()
            .expect("run gateway");
        assert_eq!(out.status.code(), Some(1), "exit 1");
        String::from_utf8_lossy(&out.stderr).to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_key_file_at_start_is_a_clear_error() {
    let err = GatewayStartFailure::run(&["--api-key-file=/nonexistent/key"]);
    assert!(err.contains("--api-key-file /nonexistent/key"), "{err}");
    assert!(err.contains("hint:"), "{err}");
    let err = GatewayStartFailure::run(&["--upstream=my.orq.ai"]);
    assert!(err.contains("is not an http:// or https:// URL"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_is_413_and_nothing_goes_upstream() {
    let s = Setup::start(&["--max-body-bytes=4096"]).await;
    let big = multipart("XyZ", &[("image", Some("a.png"), Some("image/png"), &image(8192))]);
    let r = s.post(big.clone(), &[("X-Routerpolicy-Policy", "team.a")]).await;
    assert_eq!((r.status, r.error_code()), (413, "body_too_large".to_string()), "{}", r.text());
    // Chunked, without a Content-Length: refused while reading.
    let chunked = tokio::task::spawn_blocking({
        let addr = s.gateway.addr;
        move || {
            let head = format!(
                "POST {PATH} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nX-Routerpolicy-Policy: team.a\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nTransfer-Encoding: chunked\r\n\r\n"
            );
            let mut body = format!("{:x}\r\n", big.len()).into_bytes();
            body.extend_from_slice(&big);
            body.extend_from_slice(b"\r\n0\r\n\r\n");
            send(addr, head.as_bytes(), &body, None).expect("response")
        }
    })
    .await
    .expect("task");
    assert_eq!((chunked.status, chunked.error_code()), (413, "body_too_large".to_string()));
    let small = s.post(simple_body(), &[("X-Routerpolicy-Policy", "team.a")]).await;
    assert_eq!(small.status, 200, "a body under the limit passes");
    assert_eq!(s.upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_502_and_a_slow_upstream_is_504() {
    let s = Setup::start(&["--request-timeout=500ms"]).await;
    s.upstream.set_mode(Mode::Delay(Duration::from_secs(3)));
    let started = Instant::now();
    let slow = s.post(simple_body(), &[("X-Routerpolicy-Policy", "team.a")]).await;
    assert_eq!((slow.status, slow.error_code()), (504, "upstream_timeout".to_string()), "{}", slow.text());
    assert!(started.elapsed() < Duration::from_secs(3), "answered before the upstream did");

    let dir = tempfile::tempdir().expect("tempdir");
    let mut mount = KubeletDir::new(dir.path());
    mount.set("team.a.json", DOC_A.as_bytes());
    let closed = gwsupport::free_port();
    let gateway = GatewayProcess::start(
        dir.path(),
        &[format!("--config-dir={}", mount.path.display()), format!("--upstream=http://127.0.0.1:{closed}")],
    );
    wait_ready(&gateway).await;
    let addr = gateway.addr;
    let down = tokio::task::spawn_blocking(move || {
        let body = simple_body();
        send(addr, &post_head(PATH, "XyZ", body.len(), &[("X-Routerpolicy-Policy", "team.a")]), &body, None)
            .expect("response")
    })
    .await
    .expect("task");
    assert_eq!((down.status, down.error_code()), (502, "upstream_unreachable".to_string()), "{}", down.text());
    let series = "routerpolicy_gateway_requests_total{policy=\"team.a\",code=\"502\"}";
    assert_eq!(gateway.metric(series), Some(1.0), "{}", gateway.metrics());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_swap_is_served_within_two_seconds_and_broken_or_removed_files_behave() {
    let mut s = Setup::start(&[]).await; // default --poll-interval (1 s)
    assert_eq!(s.served("team.a").await.as_deref(), Some(DOC_A));

    // Changed document: served within 2 s of the swap.
    s.mount.set("team.a.json", DOC_B.as_bytes());
    let swapped = Instant::now();
    loop {
        if s.served("team.a").await.as_deref() == Some(DOC_B) {
            break;
        }
        assert!(swapped.elapsed() < Duration::from_secs(2), "new document not served 2 s after the swap");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Added policy: served.
    s.mount.set("team.b.json", DOC_A.as_bytes());
    eventually(Duration::from_secs(2), "team.b served", || async {
        (s.served("team.b").await.as_deref() == Some(DOC_A)).then_some(())
    })
    .await;

    // Broken file: last good document stays, the error is counted and logged.
    s.mount.set("team.a.json", b"{\"retry\": ");
    let errors = "routerpolicy_gateway_reload_errors_total{policy=\"team.a\"}";
    eventually(Duration::from_secs(3), "reload error counted", || async {
        (s.gateway.metric(errors) == Some(1.0)).then_some(())
    })
    .await;
    assert_eq!(s.served("team.a").await.as_deref(), Some(DOC_B), "last good document kept");
    assert!(s.gateway.log().contains("keeping its last good document"), "{}", s.gateway.log());
    assert!(!s.gateway.log().contains('\x1b'), "a log written to a file carries no colour codes");

    // Removed file: no longer served.
    s.mount.remove("team.a.json");
    eventually(Duration::from_secs(2), "team.a no longer served", || async {
        let r = s.post(simple_body(), &[("X-Routerpolicy-Policy", "team.a")]).await;
        (r.status == 404).then_some(())
    })
    .await;
    assert_eq!(s.served("team.b").await.as_deref(), Some(DOC_A), "the other policy is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_keeps_the_document_it_started_with() {
    let mut s = Setup::start(&["--poll-interval=100ms"]).await;
    let info_b =
        format!("routerpolicy_gateway_policy_info{{policy=\"team.a\",hash=\"{}\"}}", short_hash(DOC_B.as_bytes()));
    let addr = s.gateway.addr;
    let body = simple_body();
    let head = post_head(PATH, "XyZ", body.len(), &[("X-Routerpolicy-Policy", "team.a")]);
    // The head goes out; the swap happens and is loaded; then the body follows.
    let (swap_tx, swap_rx) = std::sync::mpsc::channel::<()>();
    let (loaded_tx, loaded_rx) = std::sync::mpsc::channel::<()>();
    let request = std::thread::spawn(move || {
        let pause = || {
            let _ = swap_tx.send(());
            let _ = loaded_rx.recv_timeout(Duration::from_secs(10));
        };
        send(addr, &head, &body, Some(&pause)).expect("response")
    });
    swap_rx.recv_timeout(Duration::from_secs(10)).expect("head sent");
    // The gateway has read the head (and taken the policy's document) once it reserved the
    // body's bytes from the budget.
    eventually(Duration::from_secs(10), "the head read and its body reserved", || async {
        (s.gateway.metric("routerpolicy_gateway_buffered_bytes").unwrap_or(0.0) > 0.0).then_some(())
    })
    .await;
    s.mount.set("team.a.json", DOC_B.as_bytes());
    eventually(Duration::from_secs(3), "new document loaded", || async {
        (s.gateway.metric(&info_b) == Some(1.0)).then_some(())
    })
    .await;
    loaded_tx.send(()).expect("continue");
    let r = tokio::task::spawn_blocking(move || request.join().expect("request thread")).await.expect("task");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.upstream.last().orq(), DOC_A, "the in-flight request kept its document");
    assert_eq!(r.headers.get("x-routerpolicy-policy-hash"), Some(&short_hash(DOC_A.as_bytes())));
    assert_eq!(s.served("team.a").await.as_deref(), Some(DOC_B), "the next request gets the new one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_file_is_reread_when_the_secret_changes() {
    let s = Setup::start(&["--poll-interval=100ms"]).await;
    s.served("team.a").await;
    assert_eq!(s.upstream.last().headers["authorization"], format!("Bearer {KEY}"));
    std::fs::write(s.dir.path().join("key"), "sk-rotated").expect("rotate");
    eventually(Duration::from_secs(3), "rotated key used", || async {
        s.served("team.a").await;
        (s.upstream.last().headers["authorization"] == "Bearer sk-rotated").then_some(())
    })
    .await;
    // An emptied file keeps the key loaded before (once the gateway has read it and said so).
    std::fs::write(s.dir.path().join("key"), "").expect("empty");
    eventually(Duration::from_secs(5), "the emptied key file read", || async {
        s.gateway.log().contains("cannot read the API key").then_some(())
    })
    .await;
    s.served("team.a").await;
    assert_eq!(s.upstream.last().headers["authorization"], "Bearer sk-rotated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_name_each_served_policy_with_its_config_hash() {
    let mut s = Setup::start(&["--poll-interval=100ms"]).await;
    s.mount.set("team.b.json", DOC_B.as_bytes());
    let info = |p: &str, d: &str| {
        format!("routerpolicy_gateway_policy_info{{policy=\"{p}\",hash=\"{}\"}}", short_hash(d.as_bytes()))
    };
    eventually(Duration::from_secs(3), "both policies loaded", || async {
        (s.gateway.metric(&info("team.b", DOC_B)) == Some(1.0)).then_some(())
    })
    .await;
    assert_eq!(s.gateway.metric(&info("team.a", DOC_A)), Some(1.0));
    assert_eq!(s.gateway.metric("routerpolicy_gateway_policies"), Some(2.0));
    s.served("team.a").await;
    s.post(simple_body(), &[("X-Routerpolicy-Policy", "team.zz")]).await;
    assert_eq!(s.gateway.metric("routerpolicy_gateway_requests_total{policy=\"team.a\",code=\"200\"}"), Some(1.0));
    assert_eq!(s.gateway.metric("routerpolicy_gateway_requests_total{policy=\"\",code=\"404\"}"), Some(1.0));
    assert!(s.gateway.metrics().contains("routerpolicy_gateway_upstream_duration_seconds_count{policy=\"team.a\"} 1"));
    s.mount.remove("team.b.json");
    eventually(Duration::from_secs(3), "team.b's series gone", || async {
        (!s.gateway.metrics().contains("policy=\"team.b\",hash=")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_the_config_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("not-yet");
    let gateway = GatewayProcess::start(
        dir.path(),
        &[
            format!("--config-dir={}", missing.display()),
            "--upstream=http://127.0.0.1:9".into(),
            "--poll-interval=100ms".into(),
        ],
    );
    assert_eq!(get(gateway.addr, "/readyz").map(|r| r.status), Some(503));
    tokio::time::sleep(Duration::from_millis(500)).await; // several polls of the missing directory
    assert_eq!(gateway.log().matches("cannot read the config directory").count(), 1, "logged once:\n{}", gateway.log());
    let mut mount = KubeletDir::new(&dir.path().join("staging"));
    mount.set("team.a.json", DOC_A.as_bytes());
    std::fs::rename(&mount.path, &missing).expect("mount appears");
    wait_ready(&gateway).await;
    assert_eq!(gateway.metric("routerpolicy_gateway_policies"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let mut s = Setup::start(&[]).await;
    s.upstream.set_mode(Mode::Delay(Duration::from_millis(1500)));
    let addr = s.gateway.addr;
    let request = tokio::task::spawn_blocking(move || {
        let body = simple_body();
        send(addr, &post_head(PATH, "XyZ", body.len(), &[("X-Routerpolicy-Policy", "team.a")]), &body, None)
    });
    eventually(Duration::from_secs(5), "request reached the upstream", || async {
        (s.upstream.count() == 1).then_some(())
    })
    .await;
    s.gateway.sigterm();
    eventually(Duration::from_secs(5), "no new connections while draining", || async {
        get(addr, "/readyz").is_none().then_some(())
    })
    .await;
    let r = request.await.expect("task").expect("the in-flight request was answered");
    assert_eq!(r.status, 200, "{}", r.text());
    let code = tokio::task::spawn_blocking(move || s.gateway.wait_exit(Duration::from_secs(10))).await.expect("task");
    assert_eq!(code, Some(0), "exits 0 after draining");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_request_head_is_disconnected() {
    use std::io::{Read, Write};
    let s = Setup::start(&[]).await;
    let addr = s.gateway.addr;
    let closed_after = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream.write_all(b"POST /v2/router/images/variations HTTP/1.1\r\nHost: gw\r\n").expect("partial head");
        stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        let started = Instant::now();
        let mut buf = Vec::new();
        let _ = stream.read_to_end(&mut buf);
        (started.elapsed(), String::from_utf8_lossy(&buf).to_string())
    })
    .await
    .expect("task");
    // hyper's header read timeout (30 s): the connection is closed, not held forever.
    assert!(closed_after.0 < Duration::from_secs(50), "held for {:?}", closed_after.0);
    assert!(closed_after.1.is_empty() || closed_after.1.starts_with("HTTP/1.1 408"), "{}", closed_after.1);
    assert_eq!(s.upstream.count(), 0);
}

/// Opens a request that announces `len` body bytes and sends only `sent` of them, then stalls
/// (the stream is returned, still open).
fn stalled_upload(addr: std::net::SocketAddr, len: usize, sent: usize) -> std::net::TcpStream {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.write_all(&post_head(PATH, "XyZ", len, &[("X-Routerpolicy-Policy", "team.a")])).expect("head");
    // A shed request is answered, and its connection closed, before its body is read.
    let _ = stream.write_all(&vec![b'x'; sent]).and_then(|()| stream.flush());
    stream
}

/// Reads what the server answers on `stream` (until it closes), within `timeout`.
fn answer_of(mut stream: std::net::TcpStream, timeout: Duration) -> (Option<u16>, String) {
    use std::io::Read;
    stream.set_read_timeout(Some(timeout)).expect("read timeout");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_answered_408_and_other_clients_are_served_meanwhile() {
    let s = Setup::start(&["--body-idle-timeout=1s"]).await;
    let addr = s.gateway.addr;
    let started = Instant::now();
    let stalled =
        tokio::task::spawn_blocking(move || answer_of(stalled_upload(addr, 100_000, 1_000), Duration::from_secs(20)));
    // A well-behaved request meanwhile.
    let ok = s.post(simple_body(), &[("X-Routerpolicy-Policy", "team.a")]).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let (status, text) = stalled.await.expect("stalled client");
    let waited = started.elapsed();
    assert_eq!(status, Some(408), "{text}");
    assert!(text.contains("\"body_timeout\"") && text.contains("--body-idle-timeout"), "{text}");
    assert!(waited < Duration::from_secs(10), "answered after {waited:?}, the connection closed");
    assert_eq!(s.gateway.metric("routerpolicy_gateway_body_timeouts_total"), Some(1.0));
    assert_eq!(s.upstream.count(), 1, "only the well-behaved request went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_budget_requests_are_shed_with_503_before_their_body_and_nothing_goes_upstream() {
    let s = Setup::start(&["--max-buffered-bytes=1048576", "--body-idle-timeout=30s"]).await;
    let addr = s.gateway.addr;
    // Two stalled uploads of 400 KiB hold 800 KiB of the 1 MiB budget.
    let held: Vec<_> = (0..2).map(|_| stalled_upload(addr, 400 * 1024, 10)).collect();
    eventually(Duration::from_secs(10), "both stalled uploads hold their share", || async {
        (s.gateway.metric("routerpolicy_gateway_buffered_bytes") == Some(2.0 * 400.0 * 1024.0)).then_some(())
    })
    .await;
    // A third of 400 KiB does not fit: shed at once, its body unread.
    let started = Instant::now();
    let shed =
        tokio::task::spawn_blocking(move || answer_of(stalled_upload(addr, 400 * 1024, 0), Duration::from_secs(10)))
            .await
            .expect("shed client");
    assert_eq!(shed.0, Some(503), "{}", shed.1);
    assert!(shed.1.contains("\"overloaded\""), "{}", shed.1);
    assert!(shed.1.to_ascii_lowercase().contains("retry-after: 1"), "{}", shed.1);
    assert!(started.elapsed() < Duration::from_secs(5), "shed before its body was read");
    assert_eq!(s.gateway.metric("routerpolicy_gateway_shed_total"), Some(1.0));
    // A small request still fits and is served.
    let ok = s.post(simple_body(), &[("X-Routerpolicy-Policy", "team.a")]).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(s.upstream.count(), 1, "nothing of the shed or stalled requests went upstream");
    drop(held);
    // The budget comes back when the stalled clients go.
    eventually(Duration::from_secs(10), "the stalled uploads' share returned", || async {
        (s.gateway.metric("routerpolicy_gateway_buffered_bytes") == Some(0.0)).then_some(())
    })
    .await;
    let body = multipart("XyZ", &[("image", Some("a.png"), Some("image/png"), &image(700 * 1024))]);
    let big = s.post(body, &[("X-Routerpolicy-Policy", "team.a")]).await;
    assert_eq!(big.status, 200, "{}", big.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_waiting_for_orq_hold_no_budget_and_are_never_shed_for_it() {
    // A budget of 1 MiB and 24 calls of 100 KiB (2.4 MiB in all), each waiting 4 s for orq's
    // answer: were the budget held until orq answers, ten would fit and the rest be shed.
    let s = Setup::start(&["--max-buffered-bytes=1048576"]).await;
    s.upstream.set_mode(Mode::Delay(Duration::from_secs(4)));
    const CALLS: usize = 24;
    let body = multipart("XyZ", &[("image", Some("a.png"), Some("image/png"), &image(100 * 1024))]);
    let addr = s.gateway.addr;
    let calls: Vec<_> = (0..CALLS)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || {
                let head = post_head(PATH, "XyZ", body.len(), &[("X-Routerpolicy-Policy", "team.a")]);
                send(addr, &head, &body, None).map(|r| r.status)
            })
        })
        .collect();
    // Every body reaches orq while the first calls still wait for their answer.
    eventually(Duration::from_secs(20), "every call's body at orq", || async {
        (s.upstream.count() == CALLS).then_some(())
    })
    .await;
    let reserved = s.gateway.metric("routerpolicy_gateway_buffered_bytes");
    assert_eq!(reserved, Some(0.0), "calls that only wait for orq hold none of the budget");
    let statuses: Vec<Option<u16>> = calls.into_iter().map(|c| c.join().expect("caller")).collect();
    assert!(statuses.iter().all(|s| *s == Some(200)), "{statuses:?}");
    assert_eq!(s.gateway.metric("routerpolicy_gateway_shed_total"), Some(0.0));
}

/// `VmHWM` (peak resident memory) of a process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib / 1024.0
}

/// A multipart upload of an image of `len` bytes that sends all but its last 16 bytes and
/// stalls (the stream is returned, still open).
fn stalled_image_upload(addr: std::net::SocketAddr, len: usize) -> std::net::TcpStream {
    use std::io::Write;
    let body = multipart("XyZ", &[("image", Some("a.png"), Some("image/png"), &image(len))]);
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.write_all(&post_head(PATH, "XyZ", body.len(), &[("X-Routerpolicy-Policy", "team.a")])).expect("head");
    let _ = stream.write_all(&body[..body.len() - 16]).and_then(|()| stream.flush());
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_stalled_large_uploads_pins_a_small_window_each_and_small_requests_are_served() {
    // The default budget (256 MiB) would admit 192 MiB of large bodies if they were held
    // whole; streamed, each holds at most its window.
    let s = Setup::start(&["--body-idle-timeout=30s"]).await;
    let (addr, pid) = (s.gateway.addr, s.gateway.child.id());
    let baseline = peak_rss_mib(pid);
    // 48 clients send a 4 MiB image (192 MiB in all) but its last bytes.
    const CLIENTS: usize = 48;
    let flood: Vec<_> =
        (0..CLIENTS).map(|_| std::thread::spawn(move || stalled_image_upload(addr, 4 * 1024 * 1024))).collect();
    let clients: Vec<_> = flood.into_iter().filter_map(|t| t.join().ok()).collect();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let ok = s.post(simple_body(), &[("X-Routerpolicy-Policy", "team.a")]).await;
    assert_eq!(ok.status, 200, "a small request is served during the flood: {}", ok.text());
    let shed = s.gateway.metric("routerpolicy_gateway_shed_total").unwrap_or(0.0);
    let reserved = s.gateway.metric("routerpolicy_gateway_buffered_bytes").unwrap_or(0.0) / 1048576.0;
    let peak = peak_rss_mib(pid);
    assert_eq!(shed, 0.0, "every stalled upload was admitted: each holds a window, not its body");
    assert!(reserved <= CLIENTS as f64 + 0.5, "{reserved:.1} MiB reserved for {CLIENTS} uploads");
    assert!(
        peak < baseline + CLIENTS as f64 + 32.0,
        "peak RSS {peak:.1} MiB: at most a 1 MiB window per upload above the {baseline:.1} MiB at start (plus 32 MiB of runtime)"
    );
    assert_eq!(s.upstream.count(), 1, "only the small request reached orq whole");
    eprintln!(
        "flood of {CLIENTS} x 4 MiB stalled: baseline {baseline:.1} MiB, peak {peak:.1} MiB, reserved {reserved:.1} MiB"
    );
    drop(clients);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_over_the_budget_is_shed_and_small_requests_are_served() {
    const BUDGET_MIB: u64 = 32;
    let budget = format!("--max-buffered-bytes={}", BUDGET_MIB * 1024 * 1024);
    let s = Setup::start(&[&budget, "--body-idle-timeout=30s", "--upstream-content-length"]).await;
    let (addr, pid) = (s.gateway.addr, s.gateway.child.id());
    let baseline = peak_rss_mib(pid);
    // Buffered mode: 48 clients announce 4 MiB each (192 MiB in all) and send all but the
    // last byte; large bodies may take three quarters of the budget.
    let body = 4 * 1024 * 1024;
    let flood: Vec<_> = (0..48).map(|_| std::thread::spawn(move || stalled_upload(addr, body, body - 1))).collect();
    let ok = s.post(simple_body(), &[("X-Routerpolicy-Policy", "team.a")]).await;
    assert_eq!(ok.status, 200, "a small request is served during the flood: {}", ok.text());
    let clients: Vec<_> = flood.into_iter().filter_map(|t| t.join().ok()).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shed = s.gateway.metric("routerpolicy_gateway_shed_total").unwrap_or(0.0);
    let peak = peak_rss_mib(pid);
    assert!(shed >= 40.0, "most of the flood is shed ({shed})");
    assert!(
        peak < baseline + BUDGET_MIB as f64 + 32.0,
        "peak RSS {peak:.1} MiB: at most the {BUDGET_MIB} MiB budget above the {baseline:.1} MiB at start (plus buffers)"
    );
    let ok = s.post(simple_body(), &[("X-Routerpolicy-Policy", "team.a")]).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    eprintln!("flood (buffered): baseline {baseline:.1} MiB, peak {peak:.1} MiB, shed {shed}");
    drop(clients);
}

/// A 30 MiB image through the gateway in `extra`'s mode: orq gets it byte for byte (read back
/// by multer in the fake orq), after the policy's document; the upstream request's framing.
async fn thirty_mib_image_arrives_whole(extra: &[&str]) -> Received {
    let s = Setup::start(extra).await;
    let picture = image(30 * 1024 * 1024);
    let body = multipart(
        "XyZ",
        &[
            ("orq", None, None, br#"{"retry":{"count":9}}"#),
            ("image", Some("big.png"), Some("image/png"), &picture),
            ("model", None, None, b"openai/dall-e-2"),
        ],
    );
    let response = s.post(body, &[("X-Routerpolicy-Policy", "team.a")]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let received = s.upstream.last();
    assert_eq!(received.names(), ["orq", "image", "model"]);
    assert_eq!(received.orq(), DOC_A);
    assert!(received.fields("image")[0].data == picture, "the image arrives byte for byte");
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_mib_image_streams_through_byte_identical_and_chunked() {
    let received = thirty_mib_image_arrives_whole(&[]).await;
    assert_eq!(received.headers.get("transfer-encoding").map(String::as_str), Some("chunked"));
    assert!(!received.headers.contains_key("content-length"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_content_length_mode_sends_the_same_body_with_its_length() {
    let received = thirty_mib_image_arrives_whole(&["--upstream-content-length"]).await;
    assert!(received.headers.get("content-length").is_some_and(|l| l.parse::<u64>().is_ok_and(|l| l > 30 << 20)));
    assert!(!received.headers.contains_key("transfer-encoding"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_holding_the_callers_boundary_is_sent_under_a_fresh_one() {
    let mut s = Setup::start(&[]).await;
    let document = r#"{"name":"trace --XyZ tag"}"#;
    s.mount.set("team.b.json", document.as_bytes());
    let served = eventually(Duration::from_secs(5), "team.b served", || async { s.served("team.b").await }).await;
    assert_eq!(served, document);
    let received = s.upstream.last();
    let content_type = received.headers.get("content-type").cloned().unwrap_or_default();
    assert!(!content_type.ends_with("boundary=XyZ"), "a fresh boundary: {content_type}");
    assert_eq!(received.names(), ["orq", "image", "model"]);
    assert!(received.fields("image")[0].data == image(1024), "the image arrives byte for byte");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_refused_midway_never_reaches_orq_complete() {
    let s = Setup::start(&[]).await;
    // A large first part streams toward orq before the smuggled part is seen.
    let picture = image(2 * 1024 * 1024);
    let mut body = multipart("XyZ", &[("image", Some("a.png"), Some("image/png"), &picture)]);
    body.truncate(body.len() - b"--XyZ--\r\n".len());
    body.extend_from_slice(
        b"--XyZ\r\nContent-Disposition: form-data; filename=\"x; name=orq\"; name=a\r\n\r\n{}\r\n--XyZ--\r\n",
    );
    let response = s.post(body, &[("X-Routerpolicy-Policy", "team.a")]).await;
    assert_eq!((response.status, response.error_code()), (400, "multipart_invalid".to_string()), "{}", response.text());
    // A truncated body cut off mid-image: the caller's connection ends, orq gets nothing whole.
    let addr = s.gateway.addr;
    tokio::task::spawn_blocking(move || drop(stalled_image_upload(addr, 2 * 1024 * 1024))).await.expect("client");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.upstream.count(), 0, "orq never received a complete request");
    let ok = s.post(simple_body(), &[("X-Routerpolicy-Policy", "team.a")]).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
}
