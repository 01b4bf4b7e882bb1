//! The lean client of the scale bench's floors: the least a client can cost the API server and
//! this machine for a given list of writes. Each writer is one TLS connection kept alive
//! (HTTP/1.1, Nagle off) sending its requests one after another; every body is encoded before
//! the clock starts; an answer's body is read and dropped. The floors measure a few writer
//! counts and keep the fastest, so a floor is as fast as the API server allows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_rustls::TlsConnector;

/// One write: method, path and query, content type, body.
pub struct Call {
    pub method: http::Method,
    pub path: String,
    pub content_type: &'static str,
    pub body: Bytes,
}

impl Call {
    /// A server-side apply (`PATCH`, `application/apply-patch+yaml`, forced) of `body` at `path`.
    pub fn apply(path: String, manager: &str, body: &serde_json::Value) -> Call {
        Call {
            method: http::Method::PATCH,
            path: format!("{path}?fieldManager={manager}&force=true"),
            content_type: "application/apply-patch+yaml",
            body: Bytes::from(body.to_string()),
        }
    }

    /// A create (`POST`, JSON) of `body` in the collection at `path`.
    pub fn create(path: String, body: &serde_json::Value) -> Call {
        Call { method: http::Method::POST, path, content_type: "application/json", body: Bytes::from(body.to_string()) }
    }
}

/// The lean client: the API server's address and a bearer token.
pub struct Lean {
    address: SocketAddr,
    authorization: String,
    tls: TlsConnector,
}

impl Lean {
    /// `server` is `https://127.0.0.1:<port>` (the test control plane's serving certificate is
    /// self-signed; this client, like the tests' kubeconfig, does not verify it).
    pub fn new(server: &str, token: &str) -> Lean {
        let address = server.trim_start_matches("https://").parse().expect("the API server's address");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(AnyCertificate(provider.signature_verification_algorithms));
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Lean { address, authorization: format!("Bearer {token}"), tls: TlsConnector::from(Arc::new(config)) }
    }

    /// Sends every call once over `writers` keep-alive connections and returns how long that
    /// took (connecting included). Panics on an answer that is not a success.
    pub async fn run(&self, calls: Arc<Vec<Call>>, writers: usize) -> Duration {
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..writers.max(1))
            .map(|_| {
                let (calls, next, tls, authorization) =
                    (calls.clone(), next.clone(), self.tls.clone(), self.authorization.clone());
                let address = self.address;
                tokio::spawn(async move { writer(address, tls, &authorization, &calls, &next).await })
            })
            .collect();
        for task in tasks {
            task.await.expect("a lean writer");
        }
        started.elapsed()
    }

    /// Runs `calls(trial)` once per writer count and returns the fastest count and its time,
    /// printing each. Each trial gets calls of its own (a repeated write that changes nothing
    /// costs the API server less than a real one).
    pub async fn fastest(&self, what: &str, counts: &[usize], calls: impl Fn(usize) -> Vec<Call>) -> (usize, Duration) {
        let mut best: Option<(usize, Duration)> = None;
        for (trial, &writers) in counts.iter().enumerate() {
            let batch = Arc::new(calls(trial));
            let n = batch.len();
            let took = self.run(batch, writers).await;
            println!(
                "          (lean client, {what}: {n} writes with {writers:>2} writers: {:.2} s, {:.0}/s)",
                took.as_secs_f64(),
                n as f64 / took.as_secs_f64()
            );
            if best.is_none_or(|(_, t)| took < t) {
                best = Some((writers, took));
            }
        }
        best.expect("at least one writer count")
    }
}

async fn writer(address: SocketAddr, tls: TlsConnector, authorization: &str, calls: &[Call], next: &AtomicUsize) {
    let tcp = tokio::net::TcpStream::connect(address).await.expect("connect to the API server");
    tcp.set_nodelay(true).expect("nodelay");
    let name = ServerName::IpAddress(address.ip().into());
    let stream = tls.connect(name, tcp).await.expect("TLS to the API server");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    let host = address.to_string();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(call) = calls.get(i) else { return };
        let request = http::Request::builder()
            .method(call.method.clone())
            .uri(&call.path)
            .header(http::header::HOST, &host)
            .header(http::header::AUTHORIZATION, authorization)
            .header(http::header::CONTENT_TYPE, call.content_type)
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(call.body.clone()))
            .expect("request");
        sender.ready().await.expect("connection ready");
        let response = sender.send_request(request).await.expect("a write's answer");
        let status = response.status();
        let body = response.into_body().collect().await.expect("a write's body").to_bytes();
        assert!(status.is_success(), "{} {}: {status} {}", call.method, call.path, String::from_utf8_lossy(&body));
    }
}

/// Accepts the server's certificate unverified, checking only that the handshake is signed.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
