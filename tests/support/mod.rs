//! Test support: a real control plane (etcd, kube-apiserver and kube-controller-manager with
//! the namespace and garbage-collector controllers, built by `tests/control-plane/build.sh`),
//! shared by the tests of one test binary.
//!
//! - [`control_plane`] starts it once per test binary (or uses the cluster of
//!   `ROUTERPOLICY_TEST_KUBECONFIG`), installs the CRD from `crds/` and waits for it.
//! - [`ControlPlane::client`] hands out a `kube::Client` (admin) for the calling test's runtime.
//! - [`ControlPlane::namespace`] creates a fresh namespace per test.
//! - [`ControlPlane::kubectl`] runs the real kubectl against it.
//!
//! Every process is started under a watchdog shell that kills it when the test binary exits,
//! so nothing outlives the tests, even when one panics.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// The token of the test admin (`system:masters`).
pub const ADMIN_TOKEN: &str = "routerpolicy-test-admin-token";

/// A running control plane.
pub struct ControlPlane {
    /// kubeconfig file with admin credentials.
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// Directory with kube-apiserver, etcd and kubectl.
    pub bin: Option<PathBuf>,
    /// Scratch directory of this control plane.
    pub dir: PathBuf,
    /// `http://127.0.0.1:<port>` of etcd (empty for an external cluster).
    pub etcd_url: String,
    etcd: Mutex<Option<Child>>,
    apiserver: Mutex<Option<Child>>,
    controller_manager: Mutex<Option<Child>>,
    apiserver_args: Vec<String>,
}

static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();
static NAMESPACE_SEQ: AtomicUsize = AtomicUsize::new(0);

/// Repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The path `script` (relative to the repository) prints on its last line: the tool scripts
/// under tests/control-plane/ build once, cache under target/, and print where.
pub fn last_line_of(script: &str) -> PathBuf {
    let out = Command::new(repo_root().join(script)).output().unwrap_or_else(|e| panic!("{script}: {e}"));
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(stdout.lines().last().unwrap_or_else(|| panic!("{script} printed no path")).trim())
}

/// A test tool: the path in the environment variable `env` (scripts/test.sh sets it), else
/// what `script` builds.
pub fn tool(env: &str, script: &str) -> PathBuf {
    std::env::var_os(env).map_or_else(|| last_line_of(script), PathBuf::from)
}

/// The shared control plane of this test binary.
pub fn control_plane() -> &'static ControlPlane {
    CONTROL_PLANE.get_or_init(|| {
        let cp = match std::env::var_os("ROUTERPOLICY_TEST_KUBECONFIG") {
            Some(path) => ControlPlane::external(PathBuf::from(path)),
            None => ControlPlane::start(),
        };
        cp.install_crd();
        cp
    })
}

// A suite includes support, gwsupport or both: each carries its copy of the one helper.
#[allow(clippy::duplicate_mod)]
#[path = "../cmd/mod.rs"]
pub mod cmd;
pub use cmd::free_port;

fn control_plane_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("ROUTERPOLICY_CONTROL_PLANE_BIN") {
        return PathBuf::from(dir);
    }
    let script = repo_root().join("tests/control-plane/build.sh");
    let out =
        Command::new("bash").arg(&script).stderr(Stdio::inherit()).output().expect("run tests/control-plane/build.sh");
    assert!(out.status.success(), "tests/control-plane/build.sh failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(stdout.lines().last().expect("build.sh prints the bin directory").trim())
}

/// Starts `program` under a watchdog that kills it when this process exits.
fn spawn_watched(program: &Path, args: &[String], log: &Path) -> Child {
    spawn_watched_then_remove(program, args, log, None)
}

/// Starts `program` under a watchdog that kills it when this process exits, then removes
/// `scratch` (etcd's data: a control plane per test binary would otherwise leave hundreds of
/// megabytes behind in the temporary directory on every run).
fn spawn_watched_then_remove(program: &Path, args: &[String], log: &Path, scratch: Option<&Path>) -> Child {
    let parent = std::process::id();
    let script = format!(
        r#""$0" "$@" & child=$!
cleanup() {{ [ -n "$RP_WATCHDOG_SCRATCH" ] && rm -rf "$RP_WATCHDOG_SCRATCH"; }}
trap 'kill $child 2>/dev/null; wait $child; cleanup; exit 0' TERM INT
while kill -0 {parent} 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 0.5; done
kill $child 2>/dev/null; sleep 1; kill -9 $child 2>/dev/null; wait $child; cleanup"#
    );
    let logfile = std::fs::File::create(log).expect("create log file");
    Command::new("bash")
        .env("RP_WATCHDOG_SCRATCH", scratch.map(|p| p.as_os_str().to_owned()).unwrap_or_default())
        .arg("-c")
        .arg(script)
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(logfile.try_clone().expect("clone log handle"))
        .stderr(logfile)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()))
}

impl ControlPlane {
    fn external(kubeconfig: PathBuf) -> Self {
        let dir = tempfile::Builder::new().prefix("routerpolicy-ext-").tempdir().expect("tempdir").keep();
        let bin = std::env::var_os("ROUTERPOLICY_CONTROL_PLANE_BIN").map(PathBuf::from);
        ControlPlane {
            kubeconfig,
            server: String::new(),
            bin,
            dir,
            etcd_url: String::new(),
            etcd: Mutex::new(None),
            apiserver: Mutex::new(None),
            controller_manager: Mutex::new(None),
            apiserver_args: Vec::new(),
        }
    }

    fn start() -> Self {
        let bin = control_plane_bin();
        let dir = tempfile::Builder::new().prefix("routerpolicy-cp-").tempdir().expect("tempdir").keep();
        let etcd_port = free_port();
        let peer_port = free_port();
        let api_port = free_port();

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd = spawn_watched_then_remove(
            &bin.join("etcd"),
            &[
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
            &dir.join("etcd.log"),
            Some(&dir.join("etcd")),
        );

        // Service-account signing keys and the admin token.
        let key = dir.join("sa.key");
        let public = dir.join("sa.pub");
        let status = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048")
            .stderr(Stdio::null())
            .status()
            .expect("openssl genrsa");
        assert!(status.success(), "openssl genrsa failed");
        let status = Command::new("openssl")
            .args(["rsa", "-pubout", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&public)
            .stderr(Stdio::null())
            .status()
            .expect("openssl rsa");
        assert!(status.success(), "openssl rsa -pubout failed");
        std::fs::write(dir.join("tokens.csv"), format!("{ADMIN_TOKEN},admin,1,\"system:masters\"\n"))
            .expect("write tokens");

        let server = format!("https://127.0.0.1:{api_port}");
        let mut args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--cert-dir={}", dir.join("certs").display()),
            format!("--secure-port={api_port}"),
            "--bind-address=127.0.0.1".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--authorization-mode=RBAC".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            format!("--service-account-issuer={server}"),
            format!("--service-account-key-file={}", public.display()),
            format!("--service-account-signing-key-file={}", key.display()),
            format!("--token-auth-file={}", dir.join("tokens.csv").display()),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
            "--v=0".into(),
        ];
        if let Ok(address) = std::env::var("ROUTERPOLICY_TEST_ADVERTISE_ADDRESS") {
            args.push(format!("--advertise-address={address}"));
        }
        let apiserver = spawn_watched(&bin.join("kube-apiserver"), &args, &dir.join("kube-apiserver-0.log"));

        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(&server, ADMIN_TOKEN, "default")).expect("write kubeconfig");

        let cp = ControlPlane {
            kubeconfig,
            server,
            bin: Some(bin),
            dir,
            etcd_url,
            etcd: Mutex::new(Some(etcd)),
            apiserver: Mutex::new(Some(apiserver)),
            controller_manager: Mutex::new(None),
            apiserver_args: args,
        };
        cp.wait_ready();
        cp.start_controller_manager();
        cp
    }

    /// kube-controller-manager with the controllers the tests rely on: namespace lifecycle
    /// (a deleted namespace is emptied and finalized) and the garbage collector (objects
    /// owned by a deleted owner go). No serving port, so control planes of parallel test
    /// binaries do not collide.
    fn start_controller_manager(&self) {
        let bin = self.bin.as_ref().expect("a control plane started by the tests");
        let args = [
            format!("--kubeconfig={}", self.kubeconfig.display()),
            "--controllers=namespace,garbagecollector".into(),
            "--leader-elect=false".into(),
            "--secure-port=0".into(),
            "--v=0".into(),
        ];
        let child =
            spawn_watched(&bin.join("kube-controller-manager"), &args, &self.dir.join("kube-controller-manager.log"));
        *self.controller_manager.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = self.kubectl(&["get", "--raw", "/readyz"]);
            if out.status.success() && self.kubectl(&["get", "namespace", "default"]).status.success() {
                return;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("kube-apiserver-0.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                panic!(
                    "kube-apiserver not ready after 90 s; last log lines:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn install_crd(&self) {
        let crds = repo_root().join("crds");
        let out = self.kubectl(&["apply", "--server-side", "-f", crds.to_str().expect("utf-8 path")]);
        assert!(out.status.success(), "installing crds/ failed: {}", String::from_utf8_lossy(&out.stderr));
        // The API server warns about what it does not understand (an unknown `format`, …):
        // the generated CRD carries none of it.
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(!warnings.contains("Warning"), "installing crds/ warned: {warnings}");
        let out = self.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/imagevariationpolicies.routerpolicy.io",
        ]);
        assert!(out.status.success(), "CRD not Established: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The kubectl binary.
    pub fn kubectl_path(&self) -> PathBuf {
        self.bin.as_ref().map(|b| b.join("kubectl")).unwrap_or_else(|| PathBuf::from("kubectl"))
    }

    /// Runs kubectl with the admin kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with(&self.kubeconfig, args, None)
    }

    /// Runs kubectl with the admin kubeconfig, asserts that it succeeded, returns its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl with a given kubeconfig and optional stdin.
    pub fn kubectl_with(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        let mut kubectl = Command::new(self.kubectl_path());
        kubectl.arg(format!("--kubeconfig={}", kubeconfig.display())).args(args);
        cmd::output(&mut kubectl, stdin)
    }

    /// Applies YAML text with kubectl (client-side apply, strict field validation).
    pub fn apply(&self, yaml: &str) -> Output {
        self.kubectl_with(&self.kubeconfig, &["apply", "-f", "-"], Some(yaml))
    }

    /// deploy/gateway applied for `ns` — its ServiceAccount, Role and RoleBinding, the
    /// TokenReview ClusterRole bound for this namespace (what kustomize does with the
    /// kustomization's namespace, done here) and the cluster-scoped admission policy — and a
    /// kubeconfig holding a token of that ServiceAccount: the credentials a gateway replica
    /// runs with.
    pub fn gateway_credentials(&self, ns: &str) -> PathBuf {
        // Tests of one binary run side by side and these files hold cluster-scoped objects: two
        // client-side applies of the same new ClusterRole race (both see it missing, one create
        // fails with AlreadyExists). One test at a time applies them, and server-side.
        static CLUSTER_SCOPED: Mutex<()> = Mutex::new(());
        let _one_at_a_time = CLUSTER_SCOPED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = repo_root().join("deploy/gateway");
        for file in ["serviceaccount.yaml", "rbac.yaml", "admission.yaml"] {
            self.kubectl_ok(&["apply", "--server-side", "-n", ns, "-f", dir.join(file).to_str().expect("utf-8")]);
        }
        let tokenreview = std::fs::read_to_string(dir.join("tokenreview.yaml")).expect("tokenreview.yaml");
        let tokenreview = tokenreview
            .replace("name: routerpolicy-gateway-tokenreview\nroleRef", &format!("name: tokenreview-{ns}\nroleRef"))
            .replace(
                "    name: routerpolicy-gateway\n",
                &format!("    name: routerpolicy-gateway\n    namespace: {ns}\n"),
            );
        let out = self.kubectl_with(&self.kubeconfig, &["apply", "--server-side", "-f", "-"], Some(&tokenreview));
        assert!(out.status.success(), "apply tokenreview.yaml: {}", String::from_utf8_lossy(&out.stderr));
        let token = self.kubectl_ok(&["create", "token", "routerpolicy-gateway", "-n", ns, "--duration=1h"]);
        let path = self.dir.join(format!("gateway-{ns}.kubeconfig"));
        std::fs::write(&path, kubeconfig_yaml(&self.server, token.trim(), ns)).expect("write kubeconfig");
        path
    }

    /// A kube client with admin rights, bound to the calling test's runtime.
    pub async fn client(&self) -> Client {
        client_from_kubeconfig(&self.kubeconfig).await
    }

    /// Creates a fresh namespace named `<prefix>-<n>`.
    pub async fn namespace(&self, client: &Client, prefix: &str) -> String {
        let name = format!("{prefix}-{}-{}", std::process::id() % 10_000, NAMESPACE_SEQ.fetch_add(1, Ordering::SeqCst));
        let ns =
            Namespace { metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() }, ..Default::default() };
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create namespace");
        name
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for child in [&self.controller_manager, &self.apiserver, &self.etcd] {
            if let Some(mut child) = child.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl ControlPlane {
    /// Deletes a namespace and waits until the namespace controller has emptied and finalized
    /// it: everything in it must go on its own (a policy with a finalizer that nothing removes
    /// would keep it Terminating, and this panics with what is left).
    pub async fn delete_namespace(&self, ns: &str) {
        self.kubectl_ok(&["delete", "namespace", ns, "--wait=false"]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.kubectl(&["get", "namespace", ns]).status.success() {
            if Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let left = self.kubectl(&["get", "namespace", ns, "-o", "jsonpath={.status.conditions}"]);
            let policies = self.kubectl(&["get", "ivp", "-n", ns, "-o", "name"]);
            panic!(
                "namespace {ns} still there after 60 s: {} {}",
                String::from_utf8_lossy(&left.stdout),
                String::from_utf8_lossy(&policies.stdout)
            );
        }
    }
}

impl ControlPlane {
    /// Stops kube-apiserver (SIGTERM through its watchdog), starts it again with the same
    /// flags and port, and waits until it is ready. Panics for an external cluster.
    pub fn restart_apiserver(&self) {
        self.stop_apiserver();
        self.start_apiserver();
    }

    /// Stops kube-apiserver (SIGTERM through its watchdog) and waits until it has exited: the
    /// cluster is unreachable until [`ControlPlane::start_apiserver`]. Panics for an external
    /// cluster.
    pub fn stop_apiserver(&self) {
        assert!(self.bin.is_some(), "a control plane started by the tests");
        let mut slot = self.apiserver.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut old) = slot.take() {
            let _ = Command::new("kill").arg("-TERM").arg(old.id().to_string()).status();
            let _ = old.wait();
        }
    }

    /// Starts kube-apiserver again with the same flags and port, and waits until it is ready.
    pub fn start_apiserver(&self) {
        static RESTARTS: AtomicUsize = AtomicUsize::new(1);
        let bin = self.bin.as_ref().expect("a control plane started by the tests");
        let mut slot = self.apiserver.lock().unwrap_or_else(|e| e.into_inner());
        let log = self.dir.join(format!("kube-apiserver-{}.log", RESTARTS.fetch_add(1, Ordering::SeqCst)));
        *slot = Some(spawn_watched(&bin.join("kube-apiserver"), &self.apiserver_args, &log));
        drop(slot);
        self.wait_ready();
    }

    /// Rotates the ServiceAccount issuer's signing key as a cluster operator does: a new key
    /// signs from now on, and the old public key stays trusted beside the new one (the key
    /// file holds both), then kube-apiserver restarts. Panics for an external cluster.
    pub fn rotate_service_account_key(&self) {
        let (key, public) = (self.dir.join("sa.key"), self.dir.join("sa.pub"));
        let fresh = self.dir.join("sa-next.key");
        let ok =
            Command::new("openssl").args(["genrsa", "-out"]).arg(&fresh).arg("2048").stderr(Stdio::null()).status();
        assert!(ok.is_ok_and(|s| s.success()), "openssl genrsa failed");
        let out = Command::new("openssl").args(["rsa", "-pubout", "-in"]).arg(&fresh).stderr(Stdio::null()).output();
        let fresh_public = out.expect("openssl rsa -pubout").stdout;
        let mut both = std::fs::read(&public).expect("read sa.pub");
        both.extend_from_slice(&fresh_public);
        std::fs::write(&public, both).expect("write sa.pub");
        std::fs::rename(&fresh, &key).expect("replace sa.key");
        self.restart_apiserver();
    }

    /// Compacts etcd's history at its current revision, so every watch that resumes from an
    /// older resource version gets 410 Gone (once kube-apiserver's watch cache is rebuilt).
    pub fn compact_etcd(&self) -> u64 {
        let status = etcd_post(&self.etcd_url, "/v3/kv/range", r#"{"key":"AA==","limit":1}"#);
        let status: serde_json::Value = serde_json::from_str(&status).expect("etcd range response");
        let revision: u64 = status["header"]["revision"].as_str().and_then(|r| r.parse().ok()).expect("etcd revision");
        let body = format!(r#"{{"revision":"{revision}","physical":true}}"#);
        etcd_post(&self.etcd_url, "/v3/kv/compaction", &body);
        revision
    }
}

/// One POST to etcd's JSON gateway; returns the response body.
fn etcd_post(base: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).expect("connect to etcd");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write to etcd");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read from etcd");
    assert!(response.starts_with("HTTP/1.1 200"), "etcd {path}: {response}");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    // Chunked or not, the JSON object is between the first '{' and the last '}'.
    match (body.find('{'), body.rfind('}')) {
        (Some(start), Some(end)) => body[start..=end].to_string(),
        _ => String::new(),
    }
}

/// A `routerpolicy run` process (the binary cargo built for the tests), stopped with SIGTERM
/// when dropped.
pub struct Instance {
    /// The process.
    pub child: Child,
    /// Port of its /metrics, /healthz and /readyz.
    pub port: u16,
    /// Its log file.
    pub log: PathBuf,
}

impl Instance {
    /// Starts `routerpolicy run` with `kubeconfig`, a free metrics port and `extra` flags.
    pub fn start(kubeconfig: &Path, name: &str, extra: &[&str]) -> Instance {
        Instance::start_binary(Path::new(env!("CARGO_BIN_EXE_routerpolicy")), kubeconfig, name, extra)
    }

    /// [`Instance::start`] of another `routerpolicy` binary (a bench's baseline).
    pub fn start_binary(binary: &Path, kubeconfig: &Path, name: &str, extra: &[&str]) -> Instance {
        let port = free_port();
        let log = control_plane().dir.join(format!("{name}-{}.log", NAMESPACE_SEQ.fetch_add(1, Ordering::SeqCst)));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(binary)
            .arg("run")
            .arg(format!("--metrics-addr=127.0.0.1:{port}"))
            .arg(format!("--identity={name}"))
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("ROUTERPOLICY_LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start routerpolicy run");
        Instance { child, port, log }
    }

    /// One HTTP GET to its server: status code and body.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let code = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Some((code, body))
    }

    /// The value of a metric line starting with `prefix` (summed over matching lines).
    pub fn metric(&self, prefix: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        let values: Vec<f64> =
            body.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse().ok()).collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    /// Whether it holds the leader lease.
    pub fn is_leader(&self) -> bool {
        self.metric("routerpolicy_leader ") == Some(1.0)
    }

    /// Sends `signal` (`TERM`, `KILL`, `STOP`, `CONT`).
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status();
    }

    /// SIGTERM, then SIGKILL after 15 s.
    pub fn terminate(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        self.signal("CONT");
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A kubeconfig with a bearer token that skips TLS verification (the serving cert is
/// self-signed).
pub fn kubeconfig_yaml(server: &str, token: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\nusers:\n- name: test\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: {namespace}\ncurrent-context: test\n"
    )
}

/// A client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("kubeconfig");
    Client::try_from(config).expect("client")
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Write requests the API server counted, by `resource[/subresource]`.
pub async fn apiserver_writes(client: &Client) -> std::collections::BTreeMap<String, f64> {
    let request = http::Request::get("/metrics").body(Vec::new()).expect("request");
    let text = client.request_text(request).await.expect("apiserver /metrics");
    let mut writes = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let label = |name: &str| {
            let needle = format!("{name}=\"");
            line.split_once(&needle).and_then(|(_, rest)| rest.split_once('"')).map(|(v, _)| v.to_string())
        };
        let verb = label("verb").unwrap_or_default();
        if !matches!(verb.as_str(), "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE") {
            continue;
        }
        let mut resource = label("resource").unwrap_or_default();
        if let Some(sub) = label("subresource").filter(|s| !s.is_empty()) {
            resource = format!("{resource}/{sub}");
        }
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *writes.entry(resource).or_insert(0.0) += value;
    }
    writes
}
