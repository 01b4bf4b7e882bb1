//! Calls in flight: N connections, each with one 64 KiB image call outstanding, against a fake
//! orq that answers after a service time (`GATEWAY_BENCH_INFLIGHT_SERVICE_MS`, default 5 s: an
//! image variation takes seconds), through the gateway and through plain reverse proxies in the
//! same run — nginx, and HAProxy where installed (scripts/install.sh installs both) — driven by
//! wrk. This is a replica's real load: not requests per second on loopback but thousands of slow
//! calls held open at once, each with an image in its body.
//!
//! Per proxy and N: completed calls, errors (wrk's socket errors and non-2xx answers: a shed
//! call is a 503), latency over the service time (p50, p99), and the proxy's peak resident
//! memory (VmHWM, reset before each run through `/proc/<pid>/clear_refs`, its worker processes
//! counted) and the most descriptors it held. Asserts nothing.

use std::time::{Duration, Instant};

use crate::{Target, Wrk, parse_wrk, request_body};

/// The image size of every call.
const IMAGE: usize = 64 * 1024;

/// HAProxy as a plain reverse proxy in front of `upstream`, on a free port, until dropped.
pub struct HaProxy {
    pub child: std::process::Child,
    pub port: u16,
}

impl HaProxy {
    /// Debian's haproxy with a config of its own (one thread, no request buffering beyond its
    /// own buffers, keep-alive both ways), or `None` where it is not installed or does not start.
    pub fn start(dir: &std::path::Path, upstream: &str) -> Option<HaProxy> {
        let binary =
            ["/usr/sbin/haproxy", "/usr/bin/haproxy"].into_iter().find(|p| std::path::Path::new(p).exists())?;
        let port = crate::gwsupport::free_port();
        let upstream = upstream.trim_start_matches("http://");
        // maxconn 9000: two descriptors a call stay inside the 20,000 a process may open here.
        let config = format!(
            "global\n  maxconn 9000\n  nbthread 1\n\
             defaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  \
             timeout http-keep-alive 60s\n  option http-keep-alive\n\
             frontend bench\n  bind 127.0.0.1:{port}\n  backlog 4096\n  default_backend orq\n\
             backend orq\n  http-reuse always\n  server orq {upstream}\n"
        );
        let conf = dir.join("haproxy.cfg");
        std::fs::write(&conf, config).ok()?;
        let child = std::process::Command::new(binary)
            .arg("-db")
            .arg("-f")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let mut haproxy = HaProxy { child, port };
        crate::gwsupport::accepts_within(&mut haproxy.child, port, Duration::from_secs(10)).then_some(haproxy)
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        crate::gwsupport::stop(&mut self.child, Duration::from_secs(5));
    }
}

/// A proxy of the table: its name and how to reach it.
pub struct Peer<'a> {
    pub name: &'static str,
    pub target: &'a Target,
}

/// One proxy at one N.
struct Row {
    completed: u64,
    errors: u64,
    p50: Duration,
    p99: Duration,
    peak_kib: u64,
    /// Resident memory while the calls wait (the median of the run's middle half) over the
    /// proxy's before the run.
    waiting_kib: u64,
    descriptors: usize,
}

/// `pid` and its children (nginx's worker).
fn processes(pid: u32) -> Vec<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    std::iter::once(pid).chain(children.split_whitespace().filter_map(|c| c.parse().ok())).collect()
}

/// Resets the peak resident memory of `pid` and its children (`clear_refs` 5).
fn reset_peak(pid: u32) {
    for p in processes(pid) {
        let _ = std::fs::write(format!("/proc/{p}/clear_refs"), "5");
    }
}

/// Peak resident memory of `pid` and its children since [`reset_peak`], KiB.
fn peak_kib(pid: u32) -> u64 {
    processes(pid).into_iter().filter_map(crate::vm_hwm_kib).sum()
}

/// Resident memory of `pid` and its children now, KiB.
fn rss_kib(pid: u32) -> u64 {
    let own = |p: u32| -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
    };
    processes(pid).into_iter().filter_map(own).sum()
}

/// Descriptors `pid` and its children hold now.
fn descriptors(pid: u32) -> usize {
    processes(pid).into_iter().filter_map(|p| std::fs::read_dir(format!("/proc/{p}/fd")).ok()).map(|d| d.count()).sum()
}

/// `n` connections on `peer` for `duration`, each with one call outstanding.
fn run(wrk: &Wrk, target: &Target, n: usize, duration: Duration, service: Duration) -> Option<Row> {
    let pid = target.pid?;
    reset_peak(pid);
    let idle = rss_kib(pid);
    let mut child = wrk
        .command(&target.url, target.policy, n, duration)
        .args(["--timeout", &format!("{}s", service.as_secs() * 4 + 10)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let mut most = 0;
    let mut samples = Vec::new();
    let started = Instant::now();
    let deadline = started + duration + Duration::from_secs(30);
    while child.try_wait().ok()?.is_none() && Instant::now() < deadline {
        most = most.max(descriptors(pid));
        let at = started.elapsed();
        if at > duration / 4 && at < duration * 3 / 4 {
            samples.push(rss_kib(pid));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    samples.sort_unstable();
    let waiting = samples.get(samples.len() / 2).copied().unwrap_or(0);
    let output = child.wait_with_output().ok()?;
    let report = parse_wrk(&String::from_utf8_lossy(&output.stdout))?;
    Some(Row {
        completed: report.served,
        errors: report.failures,
        p50: report.p50.saturating_sub(service),
        p99: report.p99.saturating_sub(service),
        peak_kib: peak_kib(pid),
        waiting_kib: waiting.saturating_sub(idle),
        descriptors: most,
    })
}

/// The in-flight table for `peers` at each N, the fake orq already answering after `service`.
/// Between runs the proxies' connections drain (wrk's last calls finish within `service`).
pub fn table(dir: &std::path::Path, peers: &[Peer<'_>], service: Duration, duration: Duration) {
    let Some(wrk) = Wrk::new(dir, &request_body(IMAGE)) else {
        println!("wrk: not installed (scripts/install.sh installs it); the in-flight table is skipped");
        return;
    };
    let counts: Vec<usize> = std::env::var("GATEWAY_BENCH_INFLIGHT")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1000, 8000]);
    if counts.is_empty() {
        return;
    }
    println!(
        "\n### calls in flight: N connections, one 64 KiB image call outstanding on each, fake orq answers after {} ms; wrk, {} s per run\n",
        service.as_millis(),
        duration.as_secs()
    );
    let first = peers.first().map(|p| p.name).unwrap_or("first");
    println!(
        "| N | proxy | completed | errors | completed / {first}'s | added p50 | added p99 | peak RSS | RSS while waiting, per call | descriptors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for n in counts {
        let mut first: Option<u64> = None;
        for peer in peers {
            std::thread::sleep(service + Duration::from_secs(1));
            let Some(row) = run(&wrk, peer.target, n, duration, service) else {
                println!("| {n} | {} | – | – | – | – | – | – | – | – |", peer.name);
                continue;
            };
            let baseline = *first.get_or_insert(row.completed);
            println!(
                "| {n} | {} | {} | {} | {:.2}× | {:.1} ms | {:.1} ms | {:.0} MiB | {:.1} KiB | {} |",
                peer.name,
                row.completed,
                row.errors,
                row.completed as f64 / baseline.max(1) as f64,
                crate::ms(row.p50),
                crate::ms(row.p99),
                row.peak_kib as f64 / 1024.0,
                row.waiting_kib as f64 / n as f64,
                row.descriptors,
            );
        }
    }
    println!(
        "\ntargets at 8,000 in flight: 0 errors, completed ≥ 1.0× nginx's, added p99 ≤ nginx's (or ≤ 20 ms), gateway peak RSS ≤ 512 MiB"
    );
}
