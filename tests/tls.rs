//! TLS on the gateway's listener (`--tls-cert-file`, `--tls-key-file`): the binary as its own
//! process, certificates made with openssl as cert-manager would issue them (a CA, and a leaf
//! for `localhost` and 127.0.0.1), a rustls client that trusts only that CA. Rotation is done as
//! kubelet updates a mounted Secret: the files change while connections are open.

mod gwsupport;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gwsupport::pki::{ca, leaf};
use gwsupport::{FakeUpstream, GatewayProcess, KubeletDir, Mode, get, get_tls, image, multipart, post_head, send_tls};

const PATH: &str = "/v2/router/images/variations";
const DOC: &str = r#"{"retry":{"count":1,"on_codes":[503]}}"#;

/// The DER of the first certificate in a PEM file.
fn der(pem: &Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_file(pem).expect("a PEM certificate").to_vec()
}

/// A gateway serving TLS with the pair at `cert`/`key` (copied to `tls.crt`/`tls.key`, the
/// files it is pointed at) in front of `upstream`, once it answers over TLS.
struct TlsGateway {
    dir: tempfile::TempDir,
    gateway: GatewayProcess,
    _mount: KubeletDir,
}

impl TlsGateway {
    fn start(cert: &Path, key: &Path, upstream: &FakeUpstream, ca: &Path) -> TlsGateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut mount = KubeletDir::new(dir.path());
        mount.set("team.a.json", DOC.as_bytes());
        std::fs::copy(cert, dir.path().join("tls.crt")).expect("cert");
        std::fs::copy(key, dir.path().join("tls.key")).expect("key");
        let args = vec![
            format!("--config-dir={}", mount.path.display()),
            format!("--upstream={}", upstream.url()),
            format!("--tls-cert-file={}", dir.path().join("tls.crt").display()),
            format!("--tls-key-file={}", dir.path().join("tls.key").display()),
            "--poll-interval=200ms".into(),
        ];
        let gateway = GatewayProcess::spawn_own(dir.path(), &args);
        assert!(
            gateway.ready_within(Some(ca), Duration::from_secs(20)),
            "gateway not ready over TLS:\n{}",
            gateway.log()
        );
        TlsGateway { dir, gateway, _mount: mount }
    }

    /// Replaces the served pair's files, as kubelet does when the Secret changes.
    fn rotate(&self, cert: &Path, key: &Path) {
        for (from, to) in [(key, "tls.key"), (cert, "tls.crt")] {
            let tmp = self.dir.path().join(format!("{to}.new"));
            std::fs::copy(from, &tmp).expect("copy");
            std::fs::rename(&tmp, self.dir.path().join(to)).expect("rename");
        }
    }

    /// A series of its /metrics, over TLS.
    fn metric(&self, ca: &Path, series: &str) -> Option<f64> {
        let (metrics, _) = get_tls(self.gateway.addr, ca, "/metrics")?;
        metrics.text().lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }
}

fn call(addr: std::net::SocketAddr, ca: &Path) -> Option<(u16, Vec<u8>)> {
    let body = multipart("XyZ", &[("image", Some("a.png"), Some("image/png"), &image(2048))]);
    let head = post_head(PATH, "XyZ", body.len(), &[("X-Routerpolicy-Policy", "team.a")]);
    send_tls(addr, ca, &head, &body).map(|(r, leaf)| (r.status, leaf))
}

/// A CA and a leaf signed by it, in a fresh directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = ca(dir.path(), "ca");
        Pki { dir, ca }
    }

    fn leaf(&self, name: &str) -> (PathBuf, PathBuf) {
        leaf(self.dir.path(), "ca", name)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_are_served_over_tls_and_plain_http_is_refused() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("gateway");
    let upstream = FakeUpstream::start(true).await;
    let tls = TlsGateway::start(&cert, &key, &upstream, &pki.ca);
    let (status, presented) = call(tls.gateway.addr, &pki.ca).expect("a TLS answer");
    assert_eq!(status, 200, "{}", tls.gateway.log());
    assert_eq!(presented, der(&cert), "the configured certificate is presented");
    assert_eq!(upstream.last().orq(), DOC, "the policy went upstream as over plain HTTP");
    // Plain HTTP on the TLS port gets no HTTP answer (the handshake fails), and is counted.
    assert!(get(tls.gateway.addr, "/healthz").is_none_or(|r| r.status != 200));
    let failures = tls.metric(&pki.ca, "routerpolicy_gateway_tls_handshake_failures_total");
    assert!(failures >= Some(1.0), "{failures:?}");
    // A client that does not trust the gateway's CA is refused by its own side.
    let other = Pki::new();
    assert!(call(tls.gateway.addr, &other.ca).is_none(), "an unknown CA is not trusted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_serves_new_connections_and_calls_in_flight_finish() {
    let pki = Pki::new();
    let (old_cert, old_key) = pki.leaf("before");
    let (new_cert, new_key) = pki.leaf("after");
    let upstream = FakeUpstream::start(false).await;
    let tls = TlsGateway::start(&old_cert, &old_key, &upstream, &pki.ca);
    // A call that waits 3 s at orq, on a connection made with the old certificate.
    upstream.set_mode(Mode::Delay(Duration::from_secs(3)));
    let (addr, ca) = (tls.gateway.addr, pki.ca.clone());
    let in_flight = std::thread::spawn(move || call(addr, &ca));
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream.count() == 0 {
        assert!(Instant::now() < deadline, "the slow call did not reach orq");
        std::thread::sleep(Duration::from_millis(20));
    }
    tls.rotate(&new_cert, &new_key);
    upstream.set_mode(Mode::Ok);
    // New connections get the new certificate once the files are read again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, presented) = call(tls.gateway.addr, &pki.ca).expect("a TLS answer during rotation");
        assert_eq!(status, 200);
        if presented == der(&new_cert) {
            break;
        }
        assert_eq!(presented, der(&old_cert));
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served:
{}",
            tls.gateway.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, presented) = in_flight.join().expect("caller").expect("the call in flight was answered");
    assert_eq!(status, 200, "the call in flight across the rotation finished");
    assert_eq!(presented, der(&old_cert), "on the connection it started on");
    assert!(tls.metric(&pki.ca, "routerpolicy_gateway_tls_reloads_total") >= Some(1.0));
    // A broken pair (a key that is not the certificate's) is refused; the new one stays.
    let errors = "routerpolicy_gateway_tls_reload_errors_total";
    let before = tls.metric(&pki.ca, errors).unwrap_or(0.0);
    let (_, stray_key) = pki.leaf("stray");
    std::fs::copy(&stray_key, tls.dir.path().join("tls.key")).expect("copy");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tls.metric(&pki.ca, errors).unwrap_or(0.0) <= before {
        assert!(
            Instant::now() < deadline,
            "the broken pair was not noticed:
{}",
            tls.gateway.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, presented) = call(tls.gateway.addr, &pki.ca).expect("still served");
    assert_eq!((status, presented), (200, der(&new_cert)), "the pair in use stays");
    assert!(tls.gateway.log().contains("TLS certificate not reloaded"), "{}", tls.gateway.log());
}

#[test]
fn a_missing_or_mismatched_pair_is_a_clear_start_up_error() {
    let pki = Pki::new();
    let (cert, _) = pki.leaf("gateway");
    let (_, other_key) = pki.leaf("other");
    let start = |cert: &Path, key: &Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_routerpolicy"))
            .args(["gateway", "--auth=none", "--listen=127.0.0.1:0"])
            .arg(format!("--tls-cert-file={}", cert.display()))
            .arg(format!("--tls-key-file={}", key.display()))
            .output()
            .expect("runs");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (code, stderr) = start(&cert, &other_key);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("does not match the certificate"), "{stderr}");
    assert!(stderr.contains("other.key"), "names the key file: {stderr}");
    let (code, stderr) = start(&cert, &pki.dir.path().join("missing.key"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("missing.key"), "names the missing file: {stderr}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_routerpolicy"))
        .args(["gateway", "--auth=none"])
        .arg(format!("--tls-cert-file={}", cert.display()))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "a certificate without its key is a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key-file"));
}
