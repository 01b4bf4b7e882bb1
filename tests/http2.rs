//! HTTP/2 on both legs of the gateway, the binary as its own process: callers over TLS choose
//! it by ALPN (`h2`) and on a plain listener with prior knowledge only under `--h2c`; each
//! stream gets the limits an HTTP/1.1 request gets; a rapid-reset flood (CVE-2023-44487) ends
//! the flooding connection while other callers are served; and the way to orq is HTTP/2 when
//! orq's TLS offers `h2` (`--upstream-http auto`), HTTP/1.1 when it does not, and either when
//! forced (`--upstream-http 1.1|2`, h2c over plain HTTP).

mod gwsupport;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};

use gwsupport::{FakeUpstream, GatewayProcess, KubeletDir, image, multipart};

const PATH: &str = "/v2/router/images/variations";
const DOC: &str = r#"{"retry":{"count":1,"on_codes":[503]}}"#;

/// A gateway with policy `team.a` in front of `upstream`, with `extra` flags; `env` for the
/// process (SSL_CERT_FILE to trust a TLS orq). The returned directory holds its files.
fn gateway(
    upstream: &FakeUpstream,
    extra: &[String],
    env: &[(&str, &str)],
) -> (tempfile::TempDir, KubeletDir, GatewayProcess) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mount = KubeletDir::new(dir.path());
    mount.set("team.a.json", DOC.as_bytes());
    let mut args = vec![format!("--config-dir={}", mount.path.display()), format!("--upstream={}", upstream.url())];
    args.extend(extra.iter().cloned());
    let gateway = GatewayProcess::start_with_env(dir.path(), &args, env);
    // Healthy is not yet serving: wait until the policy is loaded.
    assert!(gateway.ready_within(None, Duration::from_secs(20)), "gateway not ready:\n{}", gateway.log());
    (dir, mount, gateway)
}

/// A gateway serving TLS with `cert`/`key` (plus `extra` flags), once it answers over TLS.
fn tls_gateway(
    upstream: &FakeUpstream,
    ca: &Path,
    cert: &Path,
    key: &Path,
    extra: &[&str],
) -> (tempfile::TempDir, KubeletDir, GatewayProcess) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mount = KubeletDir::new(dir.path());
    mount.set("team.a.json", DOC.as_bytes());
    let mut args = vec![
        format!("--config-dir={}", mount.path.display()),
        format!("--upstream={}", upstream.url()),
        format!("--tls-cert-file={}", cert.display()),
        format!("--tls-key-file={}", key.display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let gateway = GatewayProcess::spawn_own(dir.path(), &args);
    assert!(gateway.ready_within(Some(ca), Duration::from_secs(20)), "gateway not ready over TLS:\n{}", gateway.log());
    (dir, mount, gateway)
}

/// A TLS connection to `addr` as `localhost` trusting only `ca`, offering `alpn`; the
/// protocol the server chose and the stream.
async fn tls_connect(
    addr: SocketAddr,
    ca: &Path,
    alpn: &[&[u8]],
) -> (Option<Vec<u8>>, tokio_rustls::client::TlsStream<tokio::net::TcpStream>) {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(cert.expect("cert")).expect("root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("handshake");
    (stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec), stream)
}

/// An HTTP/2 client connection over `io`, its connection task spawned.
async fn h2_over<IO>(io: IO) -> Result<SendRequest<Full<Bytes>>, hyper::Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// A call to policy `team.a` with an image of `len` bytes over `sender`: status, version and
/// the body.
async fn call(
    sender: &mut SendRequest<Full<Bytes>>,
    authority: &str,
    len: usize,
) -> Result<(u16, hyper::Version, Bytes), hyper::Error> {
    let body = multipart("h2Boundary", &[("image", Some("a.png"), Some("image/png"), &image(len))]);
    let request = hyper::Request::post(format!("https://{authority}{PATH}"))
        .header("content-type", "multipart/form-data; boundary=h2Boundary")
        .header("x-routerpolicy-policy", "team.a")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let (status, version) = (response.status().as_u16(), response.version());
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, version, body))
}

/// A call to policy `team.a` over HTTP/1.1 (20 KB image): status and body.
fn call_http1(addr: SocketAddr) -> (u16, String) {
    let body = multipart("XyZ", &[("image", Some("a.png"), Some("image/png"), &image(20_000))]);
    let head = gwsupport::post_head(PATH, "XyZ", body.len(), &[("X-Routerpolicy-Policy", "team.a")]);
    let response = gwsupport::send(addr, &head, &body, None).expect("an answer");
    (response.status, response.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_choose_http2_over_tls_by_alpn_and_each_stream_has_the_request_limits() {
    let upstream = FakeUpstream::start(true).await;
    let pki = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = gwsupport::pki::pair(pki.path());
    let (_dir, _mount, gw) = tls_gateway(&upstream, &ca, &cert, &key, &["--max-body-bytes=200000"]);

    let (alpn, stream) = tls_connect(gw.addr, &ca, &[b"h2", b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "a caller offering h2 gets it");
    let sender = h2_over(stream).await.expect("HTTP/2 handshake");
    // Twenty calls at once on one connection.
    let calls = (0..20).map(|_| {
        let mut sender = sender.clone();
        tokio::spawn(async move { call(&mut sender, "localhost", 50_000).await })
    });
    for answer in futures::future::join_all(calls).await {
        let (status, version, body) = answer.expect("task").expect("call");
        assert_eq!((status, version), (200, hyper::Version::HTTP_2), "{}", String::from_utf8_lossy(&body));
    }
    assert_eq!(upstream.count(), 20, "every stream reached orq");
    let received = upstream.last();
    assert_eq!(received.orq(), DOC, "the policy was put on a stream's call as on an HTTP/1.1 one");
    assert!(received.fields("image").first().is_some_and(|f| f.data == image(50_000)), "the image arrived whole");

    // The limits of a request hold per stream: a body over --max-body-bytes is refused, and
    // the connection serves the next stream.
    let mut over = sender.clone();
    let (status, _, body) = call(&mut over, "localhost", 300_000).await.expect("call");
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = call(&mut over, "localhost", 1_000).await.expect("the same connection serves on");
    assert_eq!(status, 200);

    // A caller offering only HTTP/1.1 gets it; with --http2=false nobody gets h2.
    let (alpn, _) = tls_connect(gw.addr, &ca, &[b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let (_dir2, _mount2, plain_only) = tls_gateway(&upstream, &ca, &cert, &key, &["--http2=false"]);
    let (alpn, _) = tls_connect(plain_only.addr, &ca, &[b"h2", b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]), "--http2=false offers only http/1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prior_knowledge_http2_is_spoken_on_a_plain_listener_only_with_h2c() {
    let upstream = FakeUpstream::start(false).await;
    let (_dir, _mount, plain) = gateway(&upstream, &[], &[]);
    let tcp = tokio::net::TcpStream::connect(plain.addr).await.expect("connect");
    let refused = match h2_over(tcp).await {
        Err(_) => true,
        Ok(mut sender) => call(&mut sender, "gw", 1_000).await.is_err(),
    };
    assert!(refused, "without --h2c the plain listener speaks HTTP/1.1 only");

    let (_dir, _mount, h2c) = gateway(&upstream, &["--h2c".into()], &[]);
    let tcp = tokio::net::TcpStream::connect(h2c.addr).await.expect("connect");
    let mut sender = h2_over(tcp).await.expect("h2c handshake");
    let (status, version, _) = call(&mut sender, "gw", 10_000).await.expect("call");
    assert_eq!((status, version), (200, hyper::Version::HTTP_2));
    let plain_call = gwsupport::call_policy(h2c.addr, "team.a", 1_000).map(|(status, _)| status);
    assert_eq!(plain_call, Some(200), "HTTP/1.1 stays on an --h2c listener");
}

/// One HTTP/2 frame: its 9-byte header and `payload`.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// `pairs` rapid-reset pairs from stream `first` on: a HEADERS frame opening a POST (HPACK:
/// `:method POST`, `:scheme http`, `:path /`, `:authority gw`), then RST_STREAM CANCEL at once.
fn reset_burst(first: u32, pairs: u32) -> Vec<u8> {
    const HEADERS: [u8; 7] = [0x83, 0x86, 0x84, 0x41, 0x02, b'g', b'w'];
    let mut out = Vec::new();
    for i in 0..pairs {
        let stream = first + 2 * i;
        out.extend(frame(0x1, 0x4, stream, &HEADERS));
        out.extend(frame(0x3, 0x0, stream, &8u32.to_be_bytes()));
    }
    out
}

/// Whether `read` holds a GOAWAY frame with ENHANCE_YOUR_CALM (0xb), frame by frame.
fn has_calm_goaway(read: &[u8]) -> bool {
    let mut at = 0;
    while at + 9 <= read.len() {
        let len = (usize::from(read[at]) << 16) | (usize::from(read[at + 1]) << 8) | usize::from(read[at + 2]);
        let (kind, payload) = (read[at + 3], at + 9);
        if kind == 0x7 && payload + 8 <= read.len() && read[payload + 4..payload + 8] == [0, 0, 0, 0xb] {
            return true;
        }
        at = payload + len;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_flood_ends_its_own_connection_and_other_callers_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = FakeUpstream::start(false).await;
    upstream.set_mode(gwsupport::Mode::Delay(Duration::from_millis(50)));
    let (_dir, _mount, gw) = gateway(&upstream, &["--h2c".into(), "--worker-threads=1".into()], &[]);
    let addr = gw.addr;

    // The flood, as CVE-2023-44487 describes it: streams opened and cancelled at once, in
    // bursts of 500 pairs, up to 100,000 streams, on one connection.
    const FLOOD: u32 = 100_000;
    let flooder = tokio::spawn(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut reader, mut writer) = tcp.into_split();
        let read = tokio::spawn(async move {
            let mut all = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(30), reader.read_to_end(&mut all)).await;
            all
        });
        let mut opening = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        opening.extend(frame(0x4, 0x0, 0, &[]));
        writer.write_all(&opening).await.expect("preface");
        let mut sent = 0;
        while sent < FLOOD {
            if writer.write_all(&reset_burst(1 + 2 * sent, 500)).await.is_err() {
                break;
            }
            sent += 500;
        }
        let _ = writer.shutdown().await;
        (sent, read.await.expect("reader"))
    });
    // Meanwhile another caller, on a connection of its own, calls and is answered.
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut sender = h2_over(tcp).await.expect("h2c handshake");
    let mut served = 0;
    while !flooder.is_finished() || served < 10 {
        let (status, _, body) = call(&mut sender, "gw", 10_000).await.expect("the other caller is answered");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        served += 1;
    }
    let (sent, read) = flooder.await.expect("flooder");
    assert!(has_calm_goaway(&read), "the flooding connection got GOAWAY ENHANCE_YOUR_CALM ({sent} streams sent)");
    assert!(sent < FLOOD, "the gateway closed the flooding connection before it sent its {FLOOD} streams ({sent})");
    let health = gwsupport::get(addr, "/healthz").map(|r| r.status);
    assert_eq!(health, Some(200), "the gateway is still up");
    let log = gw.log();
    assert!(!log.contains("panicked"), "{log}");
}

/// What orq offers in its TLS handshake, the `--upstream-http` given (none: the default), and
/// how many of three calls orq gets over HTTP/2.
type OrqCase = (&'static [&'static [u8]], Option<&'static str>, usize);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_way_to_orq_is_http2_where_its_tls_offers_h2_and_as_forced_otherwise() {
    let pki = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = gwsupport::pki::pair(pki.path());
    let trust = [("SSL_CERT_FILE", ca.to_str().expect("utf-8"))];
    let tls_cases: [OrqCase; 4] = [
        (&[b"h2", b"http/1.1"], None, 3),
        (&[b"http/1.1"], Some("auto"), 0),
        (&[b"h2", b"http/1.1"], Some("1.1"), 0),
        (&[b"h2"], Some("2"), 3),
    ];
    for (offers, version, want) in tls_cases {
        let orq = FakeUpstream::start_tls(true, &cert, &key, offers).await;
        let flags: Vec<String> = version.map(|v| format!("--upstream-http={v}")).into_iter().collect();
        let version = version.unwrap_or("auto (default)");
        let (_dir, _mount, gw) = gateway(&orq, &flags, &trust);
        for _ in 0..3 {
            let (status, text) = call_http1(gw.addr);
            assert_eq!(
                status,
                200,
                "orq over TLS offering {offers:?}, --upstream-http={version}: {text}\n{}",
                gw.log()
            );
        }
        assert_eq!(orq.http2_count(), want, "orq offering {offers:?}, --upstream-http={version}");
        assert_eq!(orq.last().orq(), DOC, "the policy arrived over either version");
    }
    // Plain HTTP: HTTP/1.1 unless HTTP/2 is forced (h2c, prior knowledge).
    for (version, want) in [("auto", 0), ("2", 3)] {
        let orq = FakeUpstream::start(true).await;
        let (_dir, _mount, gw) = gateway(&orq, &[format!("--upstream-http={version}")], &[]);
        for _ in 0..3 {
            let (status, text) = call_http1(gw.addr);
            assert_eq!(status, 200, "plain orq, --upstream-http={version}: {text}\n{}", gw.log());
        }
        assert_eq!(orq.http2_count(), want, "plain orq, --upstream-http={version}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_calls_to_orq_spread_over_connections_of_at_most_the_stream_bound() {
    let orq = FakeUpstream::start(false).await;
    // Long enough that all twenty are at orq at once however slowly the machine starts them.
    orq.set_mode(gwsupport::Mode::Delay(Duration::from_secs(4)));
    let flags = ["--upstream-http=2".to_string(), "--upstream-http2-streams=4".to_string()];
    let (_dir, _mount, gw) = gateway(&orq, &flags, &[]);
    let addr = gw.addr;
    // Twenty calls at once, each waiting 4 s at orq: five connections of four streams, not
    // one connection that makes sixteen of them wait (hyper's pool), nor twenty (HTTP/1.1).
    let calls: Vec<_> = (0..20).map(|_| tokio::task::spawn_blocking(move || call_http1(addr))).collect();
    for answer in futures::future::join_all(calls).await {
        let (status, text) = answer.expect("call");
        assert_eq!(status, 200, "{text}\n{}", gw.log());
    }
    assert_eq!(orq.http2_count(), 20, "every call went over HTTP/2");
    assert_eq!(orq.connections(), 5, "20 calls in flight at 4 a connection");
}
