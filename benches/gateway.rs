//! Gateway benchmark (docs/gateway.md; docs/benchmarks.md, "Gateway"): the release binary `routerpolicy gateway` as its
//! own process in front of a fake orq on loopback, next to the same requests sent straight to
//! the fake orq, in one run. Prints figures and ratios; asserts nothing about time.
//!
//! ```sh
//! cargo bench --bench gateway                       # 3 s per case
//! GATEWAY_BENCH_SECONDS=10 cargo bench --bench gateway
//! ```
//!
//! Cases: images of 100 KiB and 4 MiB, 1 and 32 requests in flight. Per case, direct and
//! through the gateway alternate in two rounds each (so drift of the machine hits both), and
//! the figures are over all requests of a path: p50/p99 latency, throughput (requests/s);
//! added latency = gateway − direct, throughput ratio = gateway / direct. The client and the
//! fake orq share this process; the gateway runs in its own. On a 2-core machine the three
//! compete for the same cores, which the throughput ratio at 32 in flight shows.
//!
//! Two tables: against a fake orq that answers at once (the gateway's own cost, the worst
//! case for every ratio), and against one that takes a service time before answering
//! (`GATEWAY_BENCH_SERVICE_MS`, default 250 ms — a real image variation takes seconds), where
//! the throughput ratio says whether the gateway limits what a team can send.
//!
//! A peer: where Debian's nginx is installed (scripts/install.sh installs it), a plain nginx
//! reverse proxy to the same fake orq (one worker, `proxy_request_buffering on`, keep-alive to
//! the upstream; its config is generated here) runs as a third path in the same rounds, and
//! each table gains the gateway/nginx throughput ratio and p50 difference — nginx forwards
//! the body as it is, the gateway also rewrites it — and the CPU time (user + system, from
//! `/proc/<pid>/stat`) the gateway's and nginx's processes used per served request, the figure
//! that decides who serves more once the two cores are full.
//!
//! Where wrk is installed (scripts/install.sh installs it), the same cases run again driven by
//! wrk (one thread, `in flight` keep-alive connections, the way the issue's first nginx figures
//! were taken): the bench's own client is a multi-threaded tokio runtime that takes a share of
//! the two cores itself, wrk a smaller one. The two do not always agree (docs/benchmarks.md);
//! both are printed, neither is picked.
//!
//! The stack's floor (benches/floor): a bare pass-through proxy on the gateway's own HTTP crates
//! and runtime, its own process, that only reads the body, scans it for the delimiter and sends
//! it on. With wrk and nginx installed, a third table (fake orq answering at once) puts nginx,
//! the floor and the gateway side by side: what the stack allows at best, and how far the
//! gateway's own work is from it.

#[path = "floor/mod.rs"]
mod floor;
#[path = "../tests/gwsupport/mod.rs"]
mod gwsupport;
#[path = "inflight/mod.rs"]
mod inflight;
#[path = "../tests/support/mod.rs"]
mod support;
#[path = "tls/mod.rs"]
mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use gwsupport::{FakeUpstream, GatewayProcess, KubeletDir, Mode, image, multipart};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

const PATH: &str = "/v2/router/images/variations";
const DOC: &str = r#"{"retry":{"count":3,"on_codes":[429,500,502,503]},"fallbacks":[{"model":"openai/dall-e-2"},{"model":"azure/dall-e-2"}],"cache":{"type":"exact_match","ttl":3600},"timeout":{"call_timeout":30000}}"#;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A plain nginx reverse proxy in front of `upstream`, on a free port, until dropped.
struct Nginx {
    child: std::process::Child,
    port: u16,
}

impl Nginx {
    fn start(dir: &std::path::Path, upstream: &str) -> Option<Nginx> {
        Nginx::start_as(dir, "nginx", upstream, None)
    }

    /// nginx under `dir/<name>`; with `tls` (certificate, key) it terminates TLS (1.2 and 1.3)
    /// on its listener, as the gateway does with the same pair.
    fn start_as(
        dir: &std::path::Path,
        name: &str,
        upstream: &str,
        tls: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Option<Nginx> {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| std::path::Path::new(p).exists())?;
        let port = gwsupport::free_port();
        let upstream = upstream.trim_start_matches("http://");
        let prefix = dir.join(name);
        std::fs::create_dir_all(prefix.join("logs")).ok()?;
        let (ssl, certificate) = match tls {
            Some((cert, key)) => (
                " ssl",
                format!(
                    "    ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_protocols TLSv1.2 TLSv1.3;\n",
                    cert.display(),
                    key.display()
                ),
            ),
            None => ("", String::new()),
        };
        let config = format!(
            "worker_processes 1;\nworker_rlimit_nofile 20000;\ndaemon off;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log warn;\n\
             events {{ worker_connections 19000; }}\n\
             http {{\n  access_log off;\n  client_max_body_size 64m;\n  client_body_buffer_size 16m;\n\
               client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n\
               uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
               upstream orq {{ server {upstream}; keepalive 64; }}\n\
               server {{\n    listen 127.0.0.1:{port}{ssl} backlog=4096;\n{certificate}    location / {{\n      proxy_pass http://orq;\n\
                 proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_request_buffering on;\n    }}\n  }}\n}}\n",
            p = prefix.display()
        );
        let conf = prefix.join("nginx.conf");
        std::fs::write(&conf, config).ok()?;
        let child = std::process::Command::new(binary)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        // Dropped, it is stopped.
        let mut nginx = Nginx { child, port };
        gwsupport::accepts_within(&mut nginx.child, port, Duration::from_secs(10)).then_some(nginx)
    }
}

impl Drop for Nginx {
    /// SIGTERM: the master stops its worker too.
    fn drop(&mut self) {
        gwsupport::stop(&mut self.child, Duration::from_secs(5));
    }
}

/// wrk (a C load generator, one thread, keep-alive connections), where installed
/// (scripts/install.sh installs it): the second driver of the peer table.
struct Wrk {
    binary: std::path::PathBuf,
    script: std::path::PathBuf,
    script_with_policy: std::path::PathBuf,
}

/// One wrk round: served requests, p50 and p99, and failures.
struct WrkRun {
    served: u64,
    p50: Duration,
    p99: Duration,
    failures: u64,
}

impl Wrk {
    /// wrk with scripts that POST `body` (written under `dir`), or `None` where not installed.
    fn new(dir: &std::path::Path, body: &[u8]) -> Option<Wrk> {
        let binary =
            ["/usr/bin/wrk", "/usr/local/bin/wrk"].into_iter().map(std::path::PathBuf::from).find(|p| p.exists())?;
        let body_file = dir.join("wrk-body");
        std::fs::write(&body_file, body).ok()?;
        let script = |policy: bool| {
            let header = if policy { "wrk.headers[\"X-Routerpolicy-Policy\"] = \"team.bench\"\n" } else { "" };
            format!(
                "local f = io.open(\"{}\", \"rb\")\nwrk.body = f:read(\"*all\")\nf:close()\nwrk.method = \"POST\"\n\
                 wrk.headers[\"Content-Type\"] = \"multipart/form-data; boundary=benchBoundary\"\n\
                 wrk.headers[\"Authorization\"] = \"Bearer caller\"\n{header}\
                 done = function(summary, latency, requests)\n\
                 io.write(string.format(\"p50_us %d\\np99_us %d\\n\", latency:percentile(50), latency:percentile(99)))\nend\n",
                body_file.display()
            )
        };
        let (plain, with_policy) = (dir.join("wrk-plain.lua"), dir.join("wrk-policy.lua"));
        std::fs::write(&plain, script(false)).ok()?;
        std::fs::write(&with_policy, script(true)).ok()?;
        Some(Wrk { binary, script: plain, script_with_policy: with_policy })
    }

    /// `in_flight` connections on `url` for `duration` (whole seconds, at least one: wrk's unit).
    fn run(&self, url: &str, policy: bool, in_flight: usize, duration: Duration) -> Option<WrkRun> {
        let output = self.command(url, policy, in_flight, duration).output().ok()?;
        parse_wrk(&String::from_utf8_lossy(&output.stdout))
    }

    /// The wrk command of [`Wrk::run`], to add options to or to watch while it runs.
    fn command(&self, url: &str, policy: bool, in_flight: usize, duration: Duration) -> std::process::Command {
        let script = if policy { &self.script_with_policy } else { &self.script };
        let mut command = std::process::Command::new(&self.binary);
        command
            .args(["-t1", &format!("-c{in_flight}"), &format!("-d{}s", duration.as_secs().max(1)), "--latency", "-s"])
            .arg(script)
            .arg(url);
        command
    }
}

/// wrk's report: `N requests in …`, the latency distribution's 50% and 99% (the script's
/// `p50_us` / `p99_us` lines where present), and `Non-2xx or 3xx responses: …` / socket
/// errors as failures.
fn parse_wrk(report: &str) -> Option<WrkRun> {
    let duration = |text: &str| -> Option<Duration> {
        let split = text.find(|c: char| c.is_ascii_alphabetic())?;
        let (number, unit) = text.split_at(split);
        let n: f64 = number.parse().ok()?;
        let seconds = match unit {
            "us" => n / 1e6,
            "ms" => n / 1e3,
            "s" => n,
            "m" => n * 60.0,
            _ => return None,
        };
        Some(Duration::from_secs_f64(seconds))
    };
    let mut run = WrkRun { served: 0, p50: Duration::ZERO, p99: Duration::ZERO, failures: 0 };
    let (mut p50_us, mut p99_us): (Option<u64>, Option<u64>) = (None, None);
    for line in report.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [n, "requests", "in", ..] => run.served = n.parse().ok()?,
            // The script's own lines, in µs, over wrk's rounded ones (10 ms at seconds).
            ["p50_us", us] => p50_us = us.parse().ok(),
            ["p99_us", us] => p99_us = us.parse().ok(),
            ["50%", d] => run.p50 = duration(d)?,
            ["99%", d] => run.p99 = duration(d)?,
            ["Non-2xx", "or", "3xx", "responses:", n] => run.failures += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                run.failures += rest.iter().filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok()).sum::<u64>()
            }
            _ => {}
        }
    }
    run.served -= run.failures.min(run.served);
    run.p50 = p50_us.map_or(run.p50, Duration::from_micros);
    run.p99 = p99_us.map_or(run.p99, Duration::from_micros);
    Some(run)
}

struct Run {
    latencies: Vec<Duration>,
    elapsed: Duration,
    failures: usize,
}

async fn drive(
    client: &HttpClient,
    url: &str,
    body: &Bytes,
    policy: bool,
    in_flight: usize,
    duration: Duration,
) -> Run {
    drive_as(client, url, body, policy, "Bearer caller", in_flight, duration).await
}

/// [`drive`] with the caller's `Authorization` header.
async fn drive_as(
    client: &HttpClient,
    url: &str,
    body: &Bytes,
    policy: bool,
    authorization: &str,
    in_flight: usize,
    duration: Duration,
) -> Run {
    let started = Instant::now();
    let failures = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (client, url, body, failures) = (client.clone(), url.to_string(), body.clone(), failures.clone());
        let authorization = authorization.to_string();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while started.elapsed() < duration {
                let mut request = hyper::Request::post(&url)
                    .header("content-type", "multipart/form-data; boundary=benchBoundary")
                    .header("authorization", authorization.as_str());
                if policy {
                    request = request.header("x-routerpolicy-policy", "team.bench");
                }
                let Ok(request) = request.body(Full::new(body.clone())) else {
                    failures.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let t = Instant::now();
                match client.request(request).await {
                    Ok(response) => {
                        let ok = response.status() == 200;
                        let _ = response.into_body().collect().await;
                        if ok {
                            latencies.push(t.elapsed());
                        } else {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap_or_default());
    }
    Run { latencies, elapsed: started.elapsed(), failures: failures.load(Ordering::Relaxed) }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Figures {
    p50: Duration,
    p99: Duration,
    rps: f64,
    n: usize,
    failures: usize,
}

fn figures(runs: &[Run]) -> Figures {
    let mut all: Vec<Duration> = runs.iter().flat_map(|r| r.latencies.iter().copied()).collect();
    all.sort();
    let seconds: f64 = runs.iter().map(|r| r.elapsed.as_secs_f64()).sum();
    Figures {
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        rps: all.len() as f64 / seconds.max(1e-9),
        n: all.len(),
        failures: runs.iter().map(|r| r.failures).sum(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// CPU time (user + system, in clock ticks of 10 ms) that `pid` and its children processes
/// (nginx's worker) have used so far.
fn cpu_ticks(pid: u32) -> u64 {
    let own = |pid: u32| -> u64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
        // Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> =
            stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        field(14) + field(15)
    };
    let children: u64 = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .map(own)
        .sum();
    own(pid) + children
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse().ok())
}

/// One way to the fake orq: its URL, the process that serves it (for its CPU time), and
/// whether requests name the policy.
struct Target {
    url: String,
    pid: Option<u32>,
    policy: bool,
}

impl Target {
    /// A proxy of the bench's (nginx, the floor) on loopback `port`, served by process `pid`.
    fn peer(port: u16, pid: u32) -> Target {
        Target { url: format!("http://127.0.0.1:{port}{PATH}"), pid: Some(pid), policy: false }
    }

    /// A `routerpolicy gateway` process over `scheme` (`http`, `https`), its calls naming the
    /// bench's policy.
    fn gateway(process: &GatewayProcess, scheme: &str) -> Target {
        let url = format!("{scheme}://127.0.0.1:{}{PATH}", process.addr.port());
        Target { url, pid: Some(process.child.id()), policy: true }
    }

    /// The CPU its process has used so far (0 where the bench serves it itself).
    fn cpu_ticks(&self) -> u64 {
        self.pid.map(cpu_ticks).unwrap_or(0)
    }
}

/// A path's rounds in one case and the CPU its process used in them.
#[derive(Default)]
struct Measured {
    runs: Vec<Run>,
    ticks: u64,
}

impl Measured {
    /// One round on `path`, counting its process's CPU time.
    async fn round(&mut self, client: &HttpClient, path: &Target, body: &Bytes, in_flight: usize, duration: Duration) {
        let before = path.cpu_ticks();
        self.runs.push(drive(client, &path.url, body, path.policy, in_flight, duration).await);
        self.ticks += path.cpu_ticks().saturating_sub(before);
    }

    /// Microseconds of the process's CPU per served request.
    fn cpu_per_request(&self) -> Option<f64> {
        let served: usize = self.runs.iter().map(|r| r.latencies.len()).sum();
        cpu_per_request(self.ticks, served as u64)
    }
}

/// Microseconds of CPU per request from `ticks` (10 ms each) over `served` requests; `None`
/// below 20 ticks, where one tick more or less would move the figure by over 5% (a service
/// time of 250 ms leaves the proxies nearly idle).
fn cpu_per_request(ticks: u64, served: u64) -> Option<f64> {
    (ticks >= 20).then(|| ticks as f64 * 10_000.0 / served.max(1) as f64)
}

/// A CPU figure in µs, or `–` where there is none.
fn micros(figure: Option<f64>) -> String {
    figure.map(|v| format!("{v:.0} µs")).unwrap_or_else(|| "–".into())
}

/// The ratio of two CPU figures, or `–`.
fn cpu_ratio(gateway: Option<f64>, nginx: Option<f64>) -> String {
    match (gateway, nginx) {
        (Some(g), Some(n)) => format!("{:.2}×", g / n.max(1e-9)),
        _ => "–".into(),
    }
}

/// The bench's request: a multipart body with an image of `size` bytes and router fields.
fn request_body(size: usize) -> Bytes {
    let picture = image(size);
    Bytes::from(multipart(
        "benchBoundary",
        &[
            ("orq", None, None, br#"{"retry":{"count":0}}"#),
            ("image", Some("image.png"), Some("image/png"), &picture),
            ("model", None, None, b"openai/dall-e-2"),
            ("n", None, None, b"1"),
        ],
    ))
}

/// A path's wrk rounds in one case and the CPU its process used in them.
#[derive(Default)]
struct WrkMeasured {
    served: u64,
    seconds: f64,
    p50s: Vec<Duration>,
    p99s: Vec<Duration>,
    failures: u64,
    ticks: u64,
}

impl WrkMeasured {
    fn round(&mut self, wrk: &Wrk, path: &Target, in_flight: usize, duration: Duration) {
        let before = path.cpu_ticks();
        let Some(run) = wrk.run(&path.url, path.policy, in_flight, duration) else { return };
        self.ticks += path.cpu_ticks().saturating_sub(before);
        self.served += run.served;
        self.seconds += duration.as_secs().max(1) as f64;
        self.p50s.push(run.p50);
        self.p99s.push(run.p99);
        self.failures += run.failures;
    }

    fn rps(&self) -> f64 {
        self.served as f64 / self.seconds.max(1e-9)
    }

    /// Its throughput as a multiple of `baseline`'s.
    fn times(&self, baseline: &WrkMeasured) -> f64 {
        self.rps() / baseline.rps().max(1e-9)
    }

    fn cpu_per_request(&self) -> Option<f64> {
        cpu_per_request(self.ticks, self.served)
    }
}

/// The mean of the rounds' p50s (or p99s), in ms.
fn mean_ms(durations: &[Duration]) -> f64 {
    durations.iter().map(|d| ms(*d)).sum::<f64>() / durations.len().max(1) as f64
}

/// `paths` driven by wrk at `in_flight`: a warm-up second each, then two alternating rounds.
fn wrk_rounds(wrk: &Wrk, paths: [&Target; 3], in_flight: usize, duration: Duration) -> [WrkMeasured; 3] {
    for path in paths {
        wrk.run(&path.url, path.policy, in_flight, Duration::from_secs(1));
    }
    let mut measured: [WrkMeasured; 3] = Default::default();
    for _ in 0..2 {
        for (path, m) in paths.iter().zip(measured.iter_mut()) {
            m.round(wrk, path, in_flight, duration);
        }
    }
    measured
}

/// The peer table driven by wrk: direct, gateway and nginx in alternating rounds per case.
fn wrk_cases(dir: &std::path::Path, paths: [&Target; 3], duration: Duration) {
    println!("\nnext to nginx, driven by wrk (one thread; the bench's process serves only the fake orq):\n");
    println!(
        "| image | in flight | direct req/s | nginx p50 / p99 | gateway p50 / p99 | gateway − nginx p50 | nginx req/s | gateway req/s | gateway/nginx | CPU/req nginx / gateway |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (label, size) in sizes() {
        let Some(wrk) = Wrk::new(dir, &request_body(size)) else {
            println!("wrk: not installed (scripts/install.sh installs it); skipped");
            return;
        };
        for in_flight in [1usize, 32] {
            let measured = wrk_rounds(&wrk, paths, in_flight, duration);
            let [d, g, n] = &measured;
            println!(
                "| {label} | {in_flight} | {:.0} | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {:+.2} ms | {:.0} | {:.0} | {:.2}× | {} / {} |",
                d.rps(),
                mean_ms(&n.p50s),
                mean_ms(&n.p99s),
                mean_ms(&g.p50s),
                mean_ms(&g.p99s),
                mean_ms(&g.p50s) - mean_ms(&n.p50s),
                n.rps(),
                g.rps(),
                g.times(n),
                micros(n.cpu_per_request()),
                micros(g.cpu_per_request()),
            );
            if d.failures + g.failures + n.failures > 0 {
                println!("  failures: direct {}, gateway {}, nginx {}", d.failures, g.failures, n.failures);
            }
        }
    }
}

/// The floor table, driven by wrk: nginx, the stack's floor and the gateway in alternating
/// rounds per case.
fn floor_cases(dir: &std::path::Path, paths: [&Target; 3], duration: Duration) {
    println!(
        "\nthe stack's floor (a bare hyper pass-through that only scans the body), next to nginx and the gateway, driven by wrk:\n"
    );
    println!(
        "| image | in flight | nginx req/s | floor req/s | gateway req/s | floor/nginx | gateway/nginx | gateway/floor | gateway − floor p50 | CPU/req nginx / floor / gateway |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (label, size) in sizes() {
        let Some(wrk) = Wrk::new(dir, &request_body(size)) else { return };
        for in_flight in [1usize, 32] {
            let measured = wrk_rounds(&wrk, paths, in_flight, duration);
            let [n, f, g] = &measured;
            println!(
                "| {label} | {in_flight} | {:.0} | {:.0} | {:.0} | {:.2}× | {:.2}× | {:.2}× | {:+.3} ms | {} / {} / {} |",
                n.rps(),
                f.rps(),
                g.rps(),
                f.times(n),
                g.times(n),
                g.times(f),
                mean_ms(&g.p50s) - mean_ms(&f.p50s),
                micros(n.cpu_per_request()),
                micros(f.cpu_per_request()),
                micros(g.cpu_per_request()),
            );
            if n.failures + f.failures + g.failures > 0 {
                println!("  failures: nginx {}, floor {}, gateway {}", n.failures, f.failures, g.failures);
            }
        }
    }
}

/// The image sizes of the cases (`GATEWAY_BENCH_ONLY=100KiB` or `4MiB` runs one).
fn sizes() -> Vec<(&'static str, usize)> {
    let only = std::env::var("GATEWAY_BENCH_ONLY").unwrap_or_default().to_ascii_lowercase().replace(' ', "");
    [("100 KiB", 100 * 1024), ("4 MiB", 4 * 1024 * 1024)]
        .into_iter()
        .filter(|(label, _)| {
            only.is_empty() || only == "throughput" || only == label.to_ascii_lowercase().replace(' ', "")
        })
        .collect()
}

async fn cases(client: &HttpClient, direct: &Target, gateway: &Target, nginx: Option<&Target>, duration: Duration) {
    println!(
        "| image | in flight | direct p50 | direct p99 | gateway p50 | gateway p99 | added p50 | added p99 | direct req/s | gateway req/s | throughput ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut peer_rows = Vec::new();
    for (label, size) in sizes() {
        let body = request_body(size);
        for in_flight in [1usize, 32] {
            let paths: Vec<&Target> = [Some(direct), Some(gateway), nginx].into_iter().flatten().collect();
            // Warm every path's connection pools.
            for path in &paths {
                drive(client, &path.url, &body, path.policy, in_flight, Duration::from_millis(200)).await;
            }
            let mut measured: Vec<Measured> = paths.iter().map(|_| Measured::default()).collect();
            for _ in 0..2 {
                for (path, m) in paths.iter().zip(measured.iter_mut()) {
                    m.round(client, path, &body, in_flight, duration).await;
                }
            }
            let (d, g) = (figures(&measured[0].runs), figures(&measured[1].runs));
            if let Some(peer) = measured.get(2) {
                let cpu = (peer.cpu_per_request(), measured[1].cpu_per_request());
                peer_rows.push(peer_row(label, in_flight, &figures(&peer.runs), &g, cpu));
            }
            print_direct_row(label, in_flight, &d, &g);
        }
    }
    print_peer_table(&peer_rows);
}

/// One row of the direct table: the fake orq's figures `d` next to the gateway's `g`.
fn print_direct_row(label: &str, in_flight: usize, d: &Figures, g: &Figures) {
    println!(
        "| {label} | {in_flight} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:+.2} ms | {:+.2} ms | {:.0} | {:.0} | {:.2}× |",
        ms(d.p50),
        ms(d.p99),
        ms(g.p50),
        ms(g.p99),
        ms(g.p50) - ms(d.p50),
        ms(g.p99) - ms(d.p99),
        d.rps,
        g.rps,
        g.rps / d.rps.max(1e-9),
    );
    if d.failures + g.failures > 0 {
        println!(
            "  failures: direct {} of {}, gateway {} of {}",
            d.failures,
            d.n + d.failures,
            g.failures,
            g.n + g.failures
        );
    }
}

/// One row of the nginx table: nginx's figures `n` next to the gateway's `g`, and the CPU
/// each process used per request (µs, nginx then gateway).
fn peer_row(label: &str, in_flight: usize, n: &Figures, g: &Figures, cpu: (Option<f64>, Option<f64>)) -> String {
    format!(
        "| {label} | {in_flight} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:+.2} ms | {:.0} | {:.0} | {:.2}× | {} | {} | {} |",
        ms(n.p50),
        ms(n.p99),
        ms(g.p50),
        ms(g.p99),
        ms(g.p50) - ms(n.p50),
        n.rps,
        g.rps,
        g.rps / n.rps.max(1e-9),
        micros(cpu.0),
        micros(cpu.1),
        cpu_ratio(cpu.1, cpu.0),
    )
}

fn print_peer_table(rows: &[String]) {
    if rows.is_empty() {
        return;
    }
    println!(
        "\nnext to nginx (a plain reverse proxy, one worker; the gateway also rewrites the body), driven by the bench's own client:\n"
    );
    println!(
        "| image | in flight | nginx p50 | nginx p99 | gateway p50 | gateway p99 | gateway − nginx p50 | nginx req/s | gateway req/s | gateway/nginx | nginx CPU/req | gateway CPU/req | CPU gateway/nginx |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
}

/// A number from the environment, or `default`.
fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The gateway's peak memory, what the fake orq received, and the throughput targets.
fn summary(gateway: &GatewayProcess, upstream: &FakeUpstream) {
    let hwm = vm_hwm_kib(gateway.child.id()).map(|k| format!("{:.1} MiB", k as f64 / 1024.0)).unwrap_or("?".into());
    println!("\ngateway peak RSS (VmHWM): {hwm}");
    println!("requests the fake orq received: {}", upstream.count());
    println!(
        "targets: gateway ≥ 0.9× the floor in every case (100 KiB and 4 MiB, 1 and 32 in flight) and p50 ≤ 0.1 ms over the floor at 100 KiB (the floor table); ≥ 1.0× nginx with a service time (≥ 50 ms) and at 4 MiB (the nginx tables)"
    );
}

fn main() {
    floor::serve_if_asked();
    let seconds: f64 = std::env::var("GATEWAY_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let duration = Duration::from_secs_f64(seconds / 2.0); // two rounds per path
    let threads: usize = std::env::var("GATEWAY_BENCH_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(1);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut mount = KubeletDir::new(dir.path());
        mount.set("team.bench.json", DOC.as_bytes());
        std::fs::write(dir.path().join("key"), "sk-bench").expect("key");
        let upstream = FakeUpstream::start(false).await;
        let gateway_args = [
            format!("--config-dir={}", mount.path.display()),
            format!("--upstream={}", upstream.url()),
            format!("--api-key-file={}", dir.path().join("key").display()),
            "--log-level=warn".into(),
            // One worker, as nginx runs here (GATEWAY_BENCH_THREADS to change).
            format!("--worker-threads={threads}"),
        ];
        let gateway = GatewayProcess::start(dir.path(), &gateway_args);
        while gwsupport::get(gateway.addr, "/readyz").map(|r| r.status) != Some(200) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: HttpClient = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(64).build(connector);
        let direct = Target { url: format!("{}{PATH}", upstream.url()), pid: None, policy: false };
        let through = Target::gateway(&gateway, "http");
        let gateway_url = through.url.clone();
        let nginx = Nginx::start(dir.path(), &upstream.url());
        let peer = nginx.as_ref().map(|n| Target::peer(n.port, n.child.id()));
        match &nginx {
            Some(n) => println!("nginx peer: 127.0.0.1:{} (one worker, proxy_request_buffering on)", n.port),
            None => println!("nginx peer: not installed (scripts/install.sh installs it); skipped"),
        }
        let tls_peers = tls::TlsPeers::start(dir.path(), &upstream.url(), &gateway_args);
        let floor = floor::Floor::start(&upstream.url(), threads);
        let floor_target = floor.as_ref().map(|f| Target::peer(f.port, f.child.id()));

        println!("gateway: {} (release build, its own process, --worker-threads={threads})", env!("CARGO_BIN_EXE_routerpolicy"));
        println!("{seconds} s per path and case, two alternating rounds; fake orq and client in this process\n");
        let service_ms: u64 = std::env::var("GATEWAY_BENCH_SERVICE_MS").ok().and_then(|s| s.parse().ok()).unwrap_or(250);
        // GATEWAY_BENCH_ONLY=inflight runs the in-flight table alone, =auth the auth section,
        // =throughput the throughput tables (direct, nginx, floor, TLS), =100KiB or =4MiB those
        // of one size.
        let only = std::env::var("GATEWAY_BENCH_ONLY").ok().map(|o| o.to_ascii_lowercase().replace(' ', ""));
        let throughput = only.as_deref().is_none_or(|o| ["throughput", "100kib", "4mib"].contains(&o));
        let section = |name: &str| only.as_deref().is_none_or(|o| o == name);
        let services = if throughput { vec![Duration::ZERO, Duration::from_millis(service_ms)] } else { vec![] };
        for service in services {
            if service.is_zero() {
                println!("### fake orq answers at once (the gateway's own cost)\n");
                upstream.set_mode(Mode::Ok);
            } else {
                println!("\n### fake orq answers after {service_ms} ms (a service time; real image variations take seconds)\n");
                upstream.set_mode(Mode::Delay(service));
            }
            cases(&client, &direct, &through, peer.as_ref(), duration).await;
            if let Some(peer) = &peer {
                wrk_cases(dir.path(), [&direct, &through, peer], duration);
                if let (true, Some(floor)) = (service.is_zero(), &floor_target) {
                    floor_cases(dir.path(), [peer, floor, &through], duration);
                }
                if let (true, Some(tls_peers)) = (service.is_zero(), &tls_peers) {
                    tls::throughput(dir.path(), peer, tls_peers, duration);
                }
            }
        }
        summary(&gateway, &upstream);
        if section("inflight") {
            let tls = tls_peers.as_ref().map(|t| (t.nginx.as_ref(), &t.gateway));
            inflight_section(dir.path(), &upstream, (peer.as_ref(), &through), tls, &gateway_args);
        }
        upstream.set_mode(Mode::Ok);
        if section("auth") {
            auth_overhead(&client, &upstream, &gateway_url, dir.path(), &mount.path, (duration, threads)).await;
        }
    });
}

/// The in-flight table: nginx, the gateway, a baseline gateway (`GATEWAY_BENCH_BASELINE`) and
/// HAProxy, the fake orq answering after `GATEWAY_BENCH_INFLIGHT_SERVICE_MS` (5 s).
fn inflight_section(
    dir: &std::path::Path,
    upstream: &FakeUpstream,
    (nginx, through): (Option<&Target>, &Target),
    tls: Option<(Option<&Target>, &Target)>,
    gateway_args: &[String],
) {
    let service = Duration::from_millis(env_or("GATEWAY_BENCH_INFLIGHT_SERVICE_MS", 5000));
    upstream.set_mode(Mode::Delay(service));
    let haproxy = inflight::HaProxy::start(dir, &upstream.url());
    let haproxy_target = haproxy.as_ref().map(|h| Target::peer(h.port, h.child.id()));
    // GATEWAY_BENCH_BASELINE: another routerpolicy binary (an earlier build), run with the
    // same flags as a peer of the in-flight table, so a change is measured next to its
    // baseline in one run.
    let baseline = std::env::var_os("GATEWAY_BENCH_BASELINE").map(|binary| {
        let gateway = GatewayProcess::start_binary(std::path::Path::new(&binary), dir, gateway_args, &[]);
        let target = Target::gateway(&gateway, "http");
        (gateway, target)
    });
    // The same gateway with smaller HTTP/1.1 read buffers (--max-read-buffer-bytes), what a
    // waiting call keeps resident, and with the chart's settings and HTTP/2 to orq (h2c here).
    let variant = |extra: &[&str]| {
        let mut args = gateway_args.to_vec();
        args.extend(extra.iter().map(|flag| flag.to_string()));
        let gateway = GatewayProcess::start(dir, &args);
        let target = Target::gateway(&gateway, "http");
        (gateway, target)
    };
    let small_buffers = variant(&["--max-read-buffer-bytes=8192"]);
    let over_http2 = variant(&["--max-read-buffer-bytes=16384", "--upstream-http=2"]);
    let peers: Vec<inflight::Peer> = [
        ("nginx", nginx),
        ("gateway", Some(through)),
        ("gateway, 8 KiB read buffers", Some(&small_buffers.1)),
        ("gateway, 16 KiB read buffers, HTTP/2 to orq", Some(&over_http2.1)),
        ("gateway (baseline)", baseline.as_ref().map(|(_, target)| target)),
        ("haproxy", haproxy_target.as_ref()),
        ("nginx (TLS)", tls.and_then(|(nginx, _)| nginx)),
        ("gateway (TLS)", tls.map(|(_, gateway)| gateway)),
    ]
    .into_iter()
    .filter_map(|(name, target)| Some(inflight::Peer { name, target: target? }))
    .collect();
    inflight::table(dir, &peers, service, Duration::from_secs(env_or("GATEWAY_BENCH_INFLIGHT_SECONDS", 20)));
}

/// `--auth serviceaccount` next to `--auth none` (the gateway above) at 100 KiB, one in flight,
/// alternating rounds, on the test control plane (TokenReview by its API server); and what a
/// token's first call costs (its TokenReview) against a cached one.
async fn auth_overhead(
    client: &HttpClient,
    upstream: &FakeUpstream,
    none_url: &str,
    dir: &std::path::Path,
    config_dir: &std::path::Path,
    (duration, threads): (Duration, usize),
) {
    println!("\n### --auth serviceaccount vs --auth none (100 KiB, 1 in flight, fake orq at once)\n");
    let cp = support::control_plane();
    let _ = cp.kubectl(&["create", "namespace", "team"]);
    let _ = cp.kubectl(&["create", "serviceaccount", "app", "-n", "team"]);
    let token = |_: usize| cp.kubectl_ok(&["create", "token", "app", "-n", "team", "--audience=routerpolicy-gateway"]);
    let kubeconfig = cp.kubeconfig.to_str().expect("utf-8").to_string();
    let args = [
        format!("--config-dir={}", config_dir.display()),
        format!("--upstream={}", upstream.url()),
        format!("--api-key-file={}", dir.join("key").display()),
        "--log-level=warn".into(),
        "--auth=serviceaccount".into(),
        format!("--worker-threads={threads}"),
    ];
    let gateway = GatewayProcess::start_with_env(dir, &args, &[("KUBECONFIG", &kubeconfig)]);
    while gwsupport::get(gateway.addr, "/readyz").map(|r| r.status) != Some(200) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let auth_url = format!("http://{}{PATH}", gateway.addr);
    let picture = image(100 * 1024);
    let body = Bytes::from(multipart("benchBoundary", &[("image", Some("image.png"), Some("image/png"), &picture)]));
    let bearer = format!("Bearer {}", token(0).trim());
    drive_as(client, &auth_url, &body, true, &bearer, 1, Duration::from_millis(200)).await;
    drive(client, none_url, &body, true, 1, Duration::from_millis(200)).await;
    let (mut none, mut checked) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        none.push(drive(client, none_url, &body, true, 1, duration).await);
        checked.push(drive_as(client, &auth_url, &body, true, &bearer, 1, duration).await);
    }
    let (n, a) = (figures(&none), figures(&checked));
    println!("| path | p50 | p99 | req/s | failures |\n|---|---|---|---|---|");
    for (label, f) in [("--auth none", &n), ("--auth serviceaccount (cached token)", &a)] {
        println!("| {label} | {:.3} ms | {:.3} ms | {:.0} | {} |", ms(f.p50), ms(f.p99), f.rps, f.failures);
    }
    println!("\nadded p50 by --auth serviceaccount: {:+.3} ms (target ≤ 0.2 ms)", ms(a.p50) - ms(n.p50));
    // A token's first call: one TokenReview.
    let mut first = Vec::new();
    for i in 0..20 {
        let bearer = format!("Bearer {}", token(i).trim());
        let run = drive_as(client, &auth_url, &body, true, &bearer, 1, Duration::from_millis(1)).await;
        first.extend(run.latencies.first().copied());
    }
    first.sort();
    println!(
        "a new token's first call (20 tokens): p50 {:.2} ms, max {:.2} ms ({:+.2} ms over a cached one: its TokenReview)",
        ms(percentile(&first, 0.5)),
        ms(first.last().copied().unwrap_or_default()),
        ms(percentile(&first, 0.5)) - ms(a.p50)
    );
    println!("TokenReviews sent: {:?}", gateway.metric("routerpolicy_gateway_token_reviews_total"));

    let baseline = std::env::var_os("GATEWAY_BENCH_BASELINE").map(|binary| {
        let gateway =
            GatewayProcess::start_binary(std::path::Path::new(&binary), dir, &args, &[("KUBECONFIG", &kubeconfig)]);
        (gateway, binary.to_string_lossy().into_owned())
    });
    forged_flood(client, &body, &bearer, &gateway, "gateway").await;
    if let Some((baseline, binary)) = &baseline {
        while gwsupport::get(baseline.addr, "/readyz").map(|r| r.status) != Some(200) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let warm = format!("http://{}{PATH}", baseline.addr);
        drive_as(client, &warm, &body, true, &bearer, 1, Duration::from_millis(200)).await;
        forged_flood(client, &body, &bearer, baseline, &format!("baseline ({binary})")).await;
    }
}

/// `token` (a real one) with its claims changed after signing: a forgery that passes every
/// check but the signature.
fn forge(token: &str, i: usize) -> String {
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.trim().split('.').collect();
    let mut claims: serde_json::Value = parts
        .get(1)
        .and_then(|p| engine.decode(p).ok())
        .and_then(|json| serde_json::from_slice(&json).ok())
        .unwrap_or_default();
    claims["sub"] = serde_json::json!(format!("system:serviceaccount:team:forged-{i}"));
    format!("{}.{}.{}", parts.first().unwrap_or(&""), engine.encode(claims.to_string()), parts.get(2).unwrap_or(&""))
}

/// 2,000 forged tokens (`GATEWAY_BENCH_FORGED`), 32 in flight, while a cached caller calls
/// one at a time: the TokenReviews the flood costs and the cached caller's latency during it,
/// next to the same caller's without the flood.
async fn forged_flood(client: &HttpClient, body: &Bytes, bearer: &str, gateway: &GatewayProcess, label: &str) {
    let url = format!("http://{}{PATH}", gateway.addr);
    let forged = env_or("GATEWAY_BENCH_FORGED", 2000) as usize;
    let quiet = drive_as(client, &url, body, true, bearer, 1, Duration::from_secs(2)).await;
    let reviews = gateway.metric("routerpolicy_gateway_token_reviews_total").unwrap_or(0.0);
    let token = bearer.trim_start_matches("Bearer ").to_string();
    let (refused, broken) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    // Its own connections: a refused upload's connection is closed by the gateway, and must not
    // be the one the cached caller's next request is sent on.
    let flooder: HttpClient =
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(64).build(HttpConnector::new());
    let flood = {
        let (client, url, body, refused, broken) =
            (flooder, url.clone(), body.clone(), refused.clone(), broken.clone());
        tokio::spawn(async move {
            futures::stream::iter(0..forged)
                .map(|i| {
                    let (client, url, body, refused, broken) =
                        (client.clone(), url.clone(), body.clone(), refused.clone(), broken.clone());
                    let bearer = format!("Bearer {}", forge(&token, i));
                    async move {
                        let request = hyper::Request::post(&url)
                            .header("content-type", "multipart/form-data; boundary=benchBoundary")
                            .header("authorization", bearer)
                            .header("x-routerpolicy-policy", "team.bench")
                            .body(Full::new(body));
                        let Ok(request) = request else { return };
                        match client.request(request).await {
                            Ok(response) => {
                                if response.status() != 200 {
                                    refused.fetch_add(1, Ordering::Relaxed);
                                }
                                let _ = response.into_body().collect().await;
                            }
                            // Answered 401 before the 100 KiB upload was all sent: the gateway
                            // closes such a connection, and the client sees it as an error.
                            Err(_) => {
                                broken.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
                .buffer_unordered(32)
                .collect::<Vec<()>>()
                .await;
        })
    };
    let started = Instant::now();
    let mut during = Run { latencies: Vec::new(), elapsed: Duration::ZERO, failures: 0 };
    while !flood.is_finished() {
        let run = drive_as(client, &url, body, true, bearer, 1, Duration::from_millis(100)).await;
        during.latencies.extend(run.latencies);
        during.failures += run.failures;
    }
    during.elapsed = started.elapsed();
    let _ = flood.await;
    let sent = gateway.metric("routerpolicy_gateway_token_reviews_total").unwrap_or(0.0) - reviews;
    let (q, d) = (figures(&[quiet]), figures(&[during]));
    println!("\n{label}: {forged} forged tokens, 32 in flight, over {:.2} s", started.elapsed().as_secs_f64());
    println!(
        "  refused: {} answered, {} cut off mid-upload   TokenReviews sent for them: {sent:.0}  (target ≤ 50)",
        refused.load(Ordering::Relaxed),
        broken.load(Ordering::Relaxed)
    );
    println!(
        "  a cached caller: p50 {:.2} ms, p99 {:.2} ms during the flood (p99 {:.2} ms without; target ≤ 50 ms), {} failures",
        ms(d.p50),
        ms(d.p99),
        ms(q.p99),
        d.failures
    );
}
