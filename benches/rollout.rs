//! Rollout benchmark (docs/rollouts.md): the release binary, each part its own process.
//! Prints, in one run:
//!
//! 1. What the per-request choice costs the gateway: calls one at a time through a gateway
//!    (volume mode, a fake orq on loopback) for a policy without a rollout, then for the same
//!    policy with a canary entry at 50 %, interleaved in rounds; p50/p99 of each and their
//!    ratio (target: no measurable change at p50).
//! 2. The decision latency, on the real control plane with the operator and one API-mode
//!    replica reporting every second: from the end of a step's pause (its canary weight seen
//!    in the ConfigMap plus the pause) until the next step's weight is in the ConfigMap, and
//!    from the first refused call of a bad change until its canary entry is gone (the
//!    rollback), over `ROLLOUT_ROUNDS` (5) rollouts each, p50 and max.
//!
//! Nothing is asserted.

#[path = "../tests/gwsupport/mod.rs"]
mod gwsupport;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gwsupport::{FakeUpstream, GatewayProcess, KubeletDir, Mode};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use routerpolicy::api::ImageVariationPolicy;
use routerpolicy::rollout::{CanaryEntry, Phase};
use serde_json::json;
use support::{Instance, control_plane};

const CONFIGMAP: &str = "image-gateway-policies";
const REFUSED: &str = "openai/not-on-this-account";
/// Each step's pause in the decision-latency policy.
const PAUSE: Duration = Duration::from_secs(5);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// One call through `addr` for `policy`: milliseconds, and the hash it used.
fn call(addr: std::net::SocketAddr, policy: &str) -> (f64, Option<String>) {
    let body = gwsupport::multipart("XyZ", &[("image", Some("a.png"), Some("image/png"), &gwsupport::image(1024))]);
    let head =
        gwsupport::post_head("/v2/router/images/variations", "XyZ", body.len(), &[("X-Routerpolicy-Policy", policy)]);
    let started = Instant::now();
    let response = gwsupport::send(addr, &head, &body, None).expect("a response");
    (started.elapsed().as_secs_f64() * 1000.0, response.headers.get("x-routerpolicy-policy-hash").cloned())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("routerpolicy rollout benchmark");
    println!("operator and gateways: {} (release build, each its own process)", env!("CARGO_BIN_EXE_routerpolicy"));
    choice_cost().await;
    decision_latency(env_usize("ROLLOUT_ROUNDS", 5).max(1)).await;
}

/// Part 1: the same gateway, the same policy, with and without a canary entry.
async fn choice_cost() {
    let calls = env_usize("ROLLOUT_CALLS", 4000).max(100);
    let orq = FakeUpstream::start(false).await;
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut dir = KubeletDir::new(scratch.path());
    let stable = br#"{"retry":{"count":2},"fallbacks":[{"model":"openai/a"}]}"#;
    let canary = CanaryEntry { weight: 50, document: r#"{"retry":{"count":3}}"#.into(), callers: None }.to_text();
    let plain: BTreeMap<String, Vec<u8>> = [("team.plain.json".to_string(), stable.to_vec())].into();
    let mut rolling = plain.clone();
    rolling.insert("team.rolling.json".into(), stable.to_vec());
    rolling.insert("team.rolling.canary".into(), canary.into_bytes());
    dir.publish(rolling);
    let args = vec![
        format!("--config-dir={}", dir.path.display()),
        format!("--upstream={}", orq.url()),
        "--log-level=warn".to_string(),
    ];
    let gateway = GatewayProcess::start(scratch.path(), &args);
    let addr = gateway.addr;
    let (without, with, share) = tokio::task::spawn_blocking(move || {
        for _ in 0..200 {
            call(addr, "team.plain");
            call(addr, "team.rolling");
        }
        let (mut without, mut with, mut canary) = (Vec::new(), Vec::new(), 0usize);
        for _ in 0..calls / 100 {
            for _ in 0..100 {
                without.push(call(addr, "team.plain").0);
            }
            for _ in 0..100 {
                let (ms, hash) = call(addr, "team.rolling");
                with.push(ms);
                canary += usize::from(
                    hash.as_deref() == Some(routerpolicy::hash::short_hash(br#"{"retry":{"count":3}}"#).as_str()),
                );
            }
        }
        let share = canary as f64 / with.len() as f64;
        (without, with, share)
    })
    .await
    .expect("calls");
    let (mut without, mut with) = (without, with);
    let (p50_without, p99_without) = (percentile(&mut without, 0.5), percentile(&mut without, 0.99));
    let (p50_with, p99_with) = (percentile(&mut with, 0.5), percentile(&mut with, 0.99));
    println!("\n1. per-request choice, {} calls each, one at a time (1 KiB image):", without.len());
    println!("   without a rollout: p50 {p50_without:.3} ms, p99 {p99_without:.3} ms");
    println!(
        "   canary at 50 %:    p50 {p50_with:.3} ms ({:.2}x, {:+.3} ms), p99 {p99_with:.3} ms ({:.2}x); share on the new document {:.3}",
        p50_with / p50_without,
        p50_with - p50_without,
        p99_with / p99_without,
        share
    );
}

/// The namespace the decision latency is measured in: its ConfigMap and policy, and when the
/// first refused call came back.
struct Rig {
    ns: String,
    cms: Api<ConfigMap>,
    policies: Api<ImageVariationPolicy>,
    first_refused: Arc<Mutex<Option<Instant>>>,
}

impl Rig {
    /// Applies policy `p` with a fallback to `model` and two 5 s steps.
    fn apply(&self, model: &str) {
        let manifest = json!({"apiVersion": "routerpolicy.io/v1alpha1", "kind": "ImageVariationPolicy",
            "metadata": {"name": "p", "namespace": self.ns},
            "spec": {"targetRefs": [{"name": CONFIGMAP}], "fallbacks": [{"model": model}],
                "rollout": {"steps": [{"weight": 20, "pause": "5s"}, {"weight": 50, "pause": "5s"}],
                    "minRequests": 20, "maxFailureRatio": 0.2}}});
        let out = control_plane().apply(&manifest.to_string());
        assert!(out.status.success(), "apply: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The canary weight in the ConfigMap (0: no canary entry).
    async fn weight(&self) -> u8 {
        let data = self.cms.get(CONFIGMAP).await.ok().and_then(|c| c.data).unwrap_or_default();
        let entry = data.get(&format!("{}.p.canary", self.ns));
        entry.and_then(|t| CanaryEntry::parse(t.as_bytes()).ok()).map_or(0, |c| c.weight)
    }

    /// Waits until the policy, at its current generation, is `Ready` (or rolled back).
    async fn wait(&self, rolled_back: bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(p) = self.policies.get("p").await
                && let Some(s) = p.status.as_ref().filter(|s| s.observed_generation == p.metadata.generation)
            {
                let done = match rolled_back {
                    true => s.rollout.as_ref().is_some_and(|r| r.phase == Phase::RolledBack),
                    false => s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"),
                };
                if done {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "timed out waiting (rolled back: {rolled_back})");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A good change: milliseconds from the end of step 1's pause (its weight first seen in the
    /// ConfigMap, plus the pause) until step 2's weight is there.
    async fn good_change(&self, model: &str) -> f64 {
        self.apply(model);
        let (mut step_one_seen, deadline) = (None, Instant::now() + Duration::from_secs(120));
        let latency = loop {
            match self.weight().await {
                20 if step_one_seen.is_none() => step_one_seen = Some(Instant::now()),
                50 if step_one_seen.is_some() => {
                    let seen = step_one_seen.unwrap_or_else(Instant::now);
                    break (seen.elapsed().as_secs_f64() - PAUSE.as_secs_f64()) * 1000.0;
                }
                _ => {}
            }
            assert!(Instant::now() < deadline, "no step 2");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        self.wait(false).await;
        latency
    }

    /// A bad change: milliseconds from the first refused call until its canary entry is gone.
    async fn bad_change(&self) -> f64 {
        *self.first_refused.lock().expect("lock") = None;
        self.apply(REFUSED);
        let deadline = Instant::now() + Duration::from_secs(120);
        let latency = loop {
            let refused = *self.first_refused.lock().expect("lock");
            if let Some(at) = refused
                && self.weight().await == 0
            {
                break at.elapsed().as_secs_f64() * 1000.0;
            }
            assert!(Instant::now() < deadline, "no rollback");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        self.wait(true).await;
        latency
    }
}

/// Calls through `addr` for `policy`, every 5 ms, until `stop`; the first 404 is noted.
fn traffic(
    addr: std::net::SocketAddr,
    policy: String,
    stop: Arc<AtomicBool>,
    first_refused: Arc<Mutex<Option<Instant>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if gwsupport::call_policy(addr, &policy, 256).is_some_and(|(status, _)| status == 404) {
                first_refused.lock().expect("lock").get_or_insert_with(Instant::now);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

/// Part 2: how long after a step's end the next step is out, and how long after the first
/// refused call the rollback is.
async fn decision_latency(rounds: usize) {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "rollout-bench").await;
    let kubeconfig = cp.gateway_credentials(&ns);
    let orq = FakeUpstream::start(false).await;
    orq.set_mode(Mode::Refuse(REFUSED));
    let _operator = Instance::start(&cp.kubeconfig, "rollout-bench-op", &[&format!("--namespaces={ns}")]);
    let args = vec![
        format!("--config-map={ns}/{CONFIGMAP}"),
        "--identity=gw-0".to_string(),
        format!("--upstream={}", orq.url()),
        "--report-interval=1s".to_string(),
        "--log-level=warn".to_string(),
    ];
    let env = [("KUBECONFIG", kubeconfig.to_str().expect("utf-8"))];
    let gateway = GatewayProcess::start_with_env(&cp.dir, &args, &env);
    let rig = Rig {
        cms: Api::namespaced(client.clone(), &ns),
        policies: Api::namespaced(client.clone(), &ns),
        first_refused: Arc::default(),
        ns,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let calls = traffic(gateway.addr, format!("{}.p", rig.ns), stop.clone(), rig.first_refused.clone());
    rig.apply("openai/round-0");
    rig.wait(false).await;
    let (mut advance, mut rollback) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        advance.push(rig.good_change(&format!("openai/round-{round}")).await);
        rollback.push(rig.bad_change().await);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = calls.join();
    println!("\n2. decision latency, {rounds} rollouts (1 replica reporting every 1 s, minRequests 20):");
    let (p50, max) = (percentile(&mut advance, 0.5), percentile(&mut advance, 1.0));
    println!("   step end -> next step in the ConfigMap: p50 {p50:.0} ms, max {max:.0} ms");
    let (p50, max) = (percentile(&mut rollback, 0.5), percentile(&mut rollback, 1.0));
    println!("   first refused call -> rolled back in the ConfigMap: p50 {p50:.0} ms, max {max:.0} ms");
}
