//! Support for the gateway's tests and benchmark: a fake orq upstream on loopback that
//! records the multipart fields it received, a config directory laid out as kubelet lays out a
//! mounted ConfigMap (`..data` symlink swap), the `routerpolicy gateway` process, and a small
//! HTTP/1.1 client that can pause between the head and the body of a request.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::stream;
use http_body_util::BodyExt;

// A suite includes support, gwsupport or both: each carries its copy of the one helper.
#[allow(clippy::duplicate_mod)]
#[path = "../cmd/mod.rs"]
mod cmd;
pub use cmd::free_port;

pub mod pki;

/// One multipart field as the upstream received it.
#[derive(Debug, Clone)]
pub struct Field {
    /// Field name.
    pub name: String,
    /// File name, if any.
    pub file_name: Option<String>,
    /// Content type, if any.
    pub content_type: Option<String>,
    /// The bytes.
    pub data: Vec<u8>,
}

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Path and query.
    pub path: String,
    /// Headers (lowercase names; repeated headers joined with `, `).
    pub headers: BTreeMap<String, String>,
    /// The multipart fields, in order.
    pub fields: Vec<Field>,
}

impl Received {
    /// The fields of this name.
    pub fn fields(&self, name: &str) -> Vec<&Field> {
        self.fields.iter().filter(|f| f.name == name).collect()
    }

    /// The `orq` field as text (panics when it is not there exactly once).
    pub fn orq(&self) -> String {
        let orq = self.fields("orq");
        assert_eq!(orq.len(), 1, "exactly one orq field upstream: {:?}", self.names());
        String::from_utf8(orq[0].data.clone()).expect("orq is UTF-8")
    }

    /// The field names, in order.
    pub fn names(&self) -> Vec<String> {
        self.fields.iter().map(|f| f.name.clone()).collect()
    }
}

/// How the fake upstream answers.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// 200 with a small JSON body, right away.
    Ok,
    /// 200 after this delay.
    Delay(Duration),
    /// 404, as orq answers a model the account cannot use, for a request whose body names
    /// this model; 200 for any other.
    Refuse(&'static str),
}

struct UpstreamState {
    record: bool,
    received: Mutex<Vec<Received>>,
    count: AtomicUsize,
    /// Calls that came over HTTP/2.
    http2: AtomicUsize,
    /// Connections accepted.
    connections: AtomicUsize,
    bytes: AtomicU64,
    mode: Mutex<Mode>,
}

/// A fake orq on loopback.
pub struct FakeUpstream {
    /// Its address.
    pub addr: SocketAddr,
    scheme: &'static str,
    state: Arc<UpstreamState>,
}

async fn upstream_handler(State(state): State<Arc<UpstreamState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    state.count.fetch_add(1, Ordering::SeqCst);
    if parts.version == axum::http::Version::HTTP_2 {
        state.http2.fetch_add(1, Ordering::SeqCst);
    }
    state.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    if let Mode::Refuse(model) = *state.mode.lock().expect("lock")
        && body.windows(model.len()).any(|w| w == model.as_bytes())
    {
        let text = format!(r#"{{"error":{{"message":"model {model} is not available to this account"}}}}"#);
        return (StatusCode::NOT_FOUND, text).into_response();
    }
    if state.record {
        let mut headers = BTreeMap::new();
        for (name, value) in &parts.headers {
            let value = String::from_utf8_lossy(value.as_bytes()).to_string();
            headers
                .entry(name.as_str().to_string())
                .and_modify(|v: &mut String| {
                    v.push_str(", ");
                    v.push_str(&value)
                })
                .or_insert(value);
        }
        let mut fields = Vec::new();
        let content_type = headers.get("content-type").cloned().unwrap_or_default();
        if let Ok(boundary) = multer::parse_boundary(&content_type) {
            let mut m = multer::Multipart::new(stream::once(async move { Ok::<_, std::io::Error>(body) }), boundary);
            while let Ok(Some(field)) = m.next_field().await {
                let name = field.name().unwrap_or_default().to_string();
                let file_name = field.file_name().map(str::to_string);
                let content_type = field.content_type().map(|c| c.to_string());
                let data = field.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                fields.push(Field { name, file_name, content_type, data });
            }
        }
        let path = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
        state.received.lock().expect("lock").push(Received { path, headers, fields });
    } else {
        // A call waiting out its service time (Mode::Delay) holds nothing of its body here.
        drop(body);
    }
    let mode = *state.mode.lock().expect("lock");
    if let Mode::Delay(d) = mode {
        tokio::time::sleep(d).await;
    }
    let mut response = Response::new(Body::from(r#"{"created":1,"data":[{"url":"https://example.invalid/a.png"}]}"#));
    response.headers_mut().insert("content-type", "application/json".parse().expect("header"));
    response.headers_mut().insert("x-upstream", "fake-orq".parse().expect("header"));
    response
}

impl FakeUpstream {
    /// Starts one on a free loopback port of the current tokio runtime. `record` keeps every
    /// request's fields.
    pub async fn start(record: bool) -> FakeUpstream {
        FakeUpstream::start_on("127.0.0.1:0", record).await
    }

    /// Starts one on `addr`: HTTP/1.1, and HTTP/2 with prior knowledge (h2c).
    pub async fn start_on(addr: &str, record: bool) -> FakeUpstream {
        FakeUpstream::serve(addr, record, None).await
    }

    /// Starts one serving TLS with `cert`/`key` (PEM) on a free loopback port, offering `alpn`
    /// (e.g. `h2` and `http/1.1`, as orq does) and speaking what the handshake chose.
    pub async fn start_tls(record: bool, cert: &Path, key: &Path, alpn: &[&[u8]]) -> FakeUpstream {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(cert)
            .expect("cert")
            .collect::<Result<Vec<_>, _>>()
            .expect("cert");
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).expect("key");
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .expect("pair");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        FakeUpstream::serve("127.0.0.1:0", record, Some(acceptor)).await
    }

    async fn serve(addr: &str, record: bool, tls: Option<tokio_rustls::TlsAcceptor>) -> FakeUpstream {
        let state = Arc::new(UpstreamState {
            record,
            received: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            http2: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            mode: Mutex::new(Mode::Ok),
        });
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind fake upstream");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().fallback(upstream_handler).with_state(state.clone());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let counted = state.clone();
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            while let Ok((stream, _)) = listener.accept().await {
                counted.connections.fetch_add(1, Ordering::SeqCst);
                let (builder, tls) = (builder.clone(), tls.clone());
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    match tls {
                        None => {
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = builder.serve_connection(io, service).await;
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else { return };
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = builder.serve_connection(io, service).await;
                        }
                    }
                });
            }
        });
        FakeUpstream { addr, scheme, state }
    }

    /// Connections it accepted.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Calls it received over HTTP/2.
    pub fn http2_count(&self) -> usize {
        self.state.http2.load(Ordering::SeqCst)
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        match self.scheme {
            "https" => format!("https://localhost:{}", self.addr.port()),
            _ => format!("http://{}", self.addr),
        }
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.state.count.load(Ordering::SeqCst)
    }

    /// The recorded requests.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }

    /// The last recorded request.
    pub fn last(&self) -> Received {
        self.received().pop().expect("the upstream received a request")
    }

    /// Sets how it answers.
    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().expect("lock") = mode;
    }
}

/// A directory laid out as kubelet lays out a mounted ConfigMap: the data in a timestamped
/// directory, `..data` a symlink to it, each key a symlink `key -> ..data/key`; an update
/// writes a new timestamped directory and swaps `..data` atomically (rename of a symlink).
pub struct KubeletDir {
    /// The mount point.
    pub path: PathBuf,
    generation: usize,
    current: BTreeMap<String, Vec<u8>>,
}

impl KubeletDir {
    /// An empty mount under `parent`.
    pub fn new(parent: &Path) -> KubeletDir {
        let path = parent.join("policies");
        std::fs::create_dir_all(&path).expect("mount dir");
        let mut dir = KubeletDir { path, generation: 0, current: BTreeMap::new() };
        dir.publish(BTreeMap::new());
        dir
    }

    /// Publishes `data` as the ConfigMap's complete data, as kubelet's atomic writer does.
    pub fn publish(&mut self, data: BTreeMap<String, Vec<u8>>) {
        use std::os::unix::fs::symlink;
        self.generation += 1;
        let ts = format!("..2026_11_25_00_00_00.{:09}", self.generation);
        let ts_dir = self.path.join(&ts);
        std::fs::create_dir(&ts_dir).expect("timestamped dir");
        for (key, value) in &data {
            std::fs::write(ts_dir.join(key), value).expect("write key");
        }
        let old = std::fs::read_link(self.path.join("..data")).ok();
        let tmp = self.path.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        symlink(&ts, &tmp).expect("..data_tmp");
        std::fs::rename(&tmp, self.path.join("..data")).expect("swap ..data");
        for key in data.keys() {
            let link = self.path.join(key);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(format!("..data/{key}"), &link).expect("key link");
            }
        }
        for key in self.current.keys() {
            if !data.contains_key(key) {
                let _ = std::fs::remove_file(self.path.join(key));
            }
        }
        if let Some(old) = old {
            let _ = std::fs::remove_dir_all(self.path.join(old));
        }
        self.current = data;
    }

    /// Publishes the current data with `key` set to `value`.
    pub fn set(&mut self, key: &str, value: &[u8]) {
        let mut data = self.current.clone();
        data.insert(key.to_string(), value.to_vec());
        self.publish(data);
    }

    /// Publishes the current data without `key`.
    pub fn remove(&mut self, key: &str) {
        let mut data = self.current.clone();
        data.remove(key);
        self.publish(data);
    }
}

/// A `routerpolicy gateway` process, SIGTERMed when dropped.
pub struct GatewayProcess {
    /// The process.
    pub child: Child,
    /// Its address.
    pub addr: SocketAddr,
    /// Its log file.
    pub log: PathBuf,
}

impl GatewayProcess {
    /// Starts the binary's `gateway` with `--listen` on a free port, `--log-level info`,
    /// `--auth none` (a flag in `args` or `env` overrides it), the given flags, its log in
    /// `log_dir`; waits until `/healthz` answers.
    pub fn start(log_dir: &Path, args: &[String]) -> GatewayProcess {
        GatewayProcess::start_with_env(log_dir, args, &[])
    }

    /// [`GatewayProcess::start`] with extra environment variables (`KUBECONFIG`, …).
    pub fn start_with_env(log_dir: &Path, args: &[String], env: &[(&str, &str)]) -> GatewayProcess {
        // Set for tests and benches; the fake-orq example does not start gateways.
        let Some(binary) = option_env!("CARGO_BIN_EXE_routerpolicy") else {
            panic!("GatewayProcess needs the binary cargo builds for tests and benches");
        };
        GatewayProcess::start_binary(Path::new(binary), log_dir, args, env)
    }

    /// [`GatewayProcess::start_with_env`] of another `routerpolicy` binary (a bench's baseline).
    pub fn start_binary(binary: &Path, log_dir: &Path, args: &[String], env: &[(&str, &str)]) -> GatewayProcess {
        let gateway = GatewayProcess::spawn(binary, log_dir, args, env);
        let deadline = Instant::now() + Duration::from_secs(20);
        while get(gateway.addr, "/healthz").map(|r| r.status) != Some(200) {
            assert!(Instant::now() < deadline, "gateway did not start:\n{}", gateway.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        gateway
    }

    /// The test binary's gateway, started but not waited for (a TLS listener answers no plain
    /// `/healthz`).
    pub fn spawn_own(log_dir: &Path, args: &[String]) -> GatewayProcess {
        let Some(binary) = option_env!("CARGO_BIN_EXE_routerpolicy") else {
            panic!("GatewayProcess needs the binary cargo builds for tests and benches");
        };
        GatewayProcess::spawn(Path::new(binary), log_dir, args, &[])
    }

    fn spawn(binary: &Path, log_dir: &Path, args: &[String], env: &[(&str, &str)]) -> GatewayProcess {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let log = log_dir.join(format!("gateway-{port}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(binary)
            .arg("gateway")
            .arg(format!("--listen={addr}"))
            .args(args)
            .env("ROUTERPOLICY_GATEWAY_LOG_LEVEL", "info")
            .env("ROUTERPOLICY_GATEWAY_AUTH", "none")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start routerpolicy gateway");
        GatewayProcess { child, addr, log }
    }

    /// Whether it answers `/readyz` with 200 within `within` (its policies loaded) — over TLS
    /// trusting only the PEM certificates in `ca` where given, else plain HTTP.
    pub fn ready_within(&self, ca: Option<&Path>, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let status = match ca {
                Some(ca) => get_tls(self.addr, ca, "/readyz").map(|(r, _)| r.status),
                None => get(self.addr, "/readyz").map(|r| r.status),
            };
            if status == Some(200) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The value of the metric line that is exactly `series` (name and labels).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let body = get(self.addr, "/metrics")?.text();
        body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// The hash this replica serves for `policy` (`routerpolicy_gateway_policy_info`).
    pub fn served_hash(&self, policy: &str) -> Option<String> {
        let prefix = format!("routerpolicy_gateway_policy_info{{policy=\"{policy}\",hash=\"");
        self.metrics().lines().find_map(|l| Some(l.strip_prefix(&prefix)?.split('"').next()?.to_string()))
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        get(self.addr, "/metrics").map(|r| r.text()).unwrap_or_default()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends `signal` (`TERM`, `KILL`, `STOP`, `CONT`).
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status();
    }

    /// Waits up to `timeout` for the process to exit; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        wait_exit(&mut self.child, timeout)
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(10));
    }
}

/// Waits up to `timeout` for `child` to exit; its exit code.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Waits up to `within` for `child` to accept connections on loopback `port`; false if it
/// exits or the time runs out first.
pub fn accepts_within(child: &mut Child, port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline || !matches!(child.try_wait(), Ok(None)) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Stops `child` if it still runs: SIGCONT (it may be frozen), SIGTERM, and SIGKILL after
/// `grace`.
pub fn stop(child: &mut Child, grace: Duration) {
    if let Ok(None) = child.try_wait() {
        for signal in ["-CONT", "-TERM"] {
            let _ = Command::new("kill").arg(signal).arg(child.id().to_string()).status();
        }
        if wait_exit(child, grace).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers (lowercase names).
    pub headers: BTreeMap<String, String>,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("JSON body ({e}): {}", self.text()))
    }

    /// `error.code` of a JSON error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_string()
    }
}

fn parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut rest = &raw[split + 4..];
    let body = if headers.get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).ok()?.trim(), 16).ok()?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            body.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
        body
    } else {
        rest.to_vec()
    };
    Some(HttpResponse { status, headers, body })
}

/// Sends `head` then `body` over TLS to `addr` as `localhost`, trusting only the PEM
/// certificates in `ca`; the whole response and the leaf certificate the server presented
/// (DER).
pub fn send_tls(addr: SocketAddr, ca: &Path, head: &[u8], body: &[u8]) -> Option<(HttpResponse, Vec<u8>)> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).ok()? {
        roots.add(cert.ok()?).ok()?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").ok()?;
    let connection = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
    let tcp = TcpStream::connect(addr).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    tls.write_all(head).ok()?;
    let _ = tls.write_all(body);
    let mut raw = Vec::new();
    // The server closes after `Connection: close` without a close_notify: what was read counts.
    let _ = tls.read_to_end(&mut raw);
    let leaf = tls.conn.peer_certificates()?.first()?.to_vec();
    parse_response(&raw).map(|response| (response, leaf))
}

/// GET `path` over TLS ([`send_tls`]).
pub fn get_tls(addr: SocketAddr, ca: &Path, path: &str) -> Option<(HttpResponse, Vec<u8>)> {
    send_tls(addr, ca, format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n").as_bytes(), &[])
}

/// GET `path`.
pub fn get(addr: SocketAddr, path: &str) -> Option<HttpResponse> {
    send(addr, &format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n").into_bytes(), &[], None)
}

/// One image-variation call for `policy` (`<namespace>.<name>`) with an image of `image_bytes`:
/// its status and the hash of the document the gateway applied (`None`: no answer at all).
pub fn call_policy(addr: SocketAddr, policy: &str, image_bytes: usize) -> Option<(u16, Option<String>)> {
    let body = multipart("XyZ", &[("image", Some("a.png"), Some("image/png"), &image(image_bytes))]);
    let head = post_head("/v2/router/images/variations", "XyZ", body.len(), &[("X-Routerpolicy-Policy", policy)]);
    let response = send(addr, &head, &body, None)?;
    Some((response.status, response.headers.get("x-routerpolicy-policy-hash").cloned()))
}

/// Sends `head` (ending in the blank line), then — after `pause` returns, if given — `body`;
/// reads the whole response.
pub fn send(addr: SocketAddr, head: &[u8], body: &[u8], pause: Option<&dyn Fn()>) -> Option<HttpResponse> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    stream.write_all(head).ok()?;
    if let Some(pause) = pause {
        stream.flush().ok()?;
        pause();
    }
    // The server may answer (413) and close before the whole body is written.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

/// One part of a multipart body: name, file name, content type, data.
pub type Part<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [u8]);

/// A multipart body of `parts`.
pub fn multipart(boundary: &str, parts: &[Part<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, file, ct, data) in parts {
        out.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes());
        if let Some(file) = file {
            out.extend_from_slice(format!("; filename=\"{file}\"").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        if let Some(ct) = ct {
            out.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// The head of a POST of `body_len` multipart bytes to `path`, with extra header lines.
pub fn post_head(path: &str, boundary: &str, body_len: usize, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {body_len}\r\n"
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// An image-like payload of `len` bytes (every byte value, in a pattern that is not text).
pub fn image(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()
}
