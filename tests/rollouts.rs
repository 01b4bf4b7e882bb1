//! Rollouts (docs/rollouts.md), on the real control plane with real processes: the operator,
//! two gateway replicas in API mode reporting every second, and a fake orq that refuses a
//! chosen model with 404. Calls go through both replicas the whole time; each answer's
//! `X-Routerpolicy-Policy-Hash` says which document it used.

mod gwsupport;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gwsupport::{FakeUpstream, GatewayProcess, Mode};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Api, Client};
use routerpolicy::api::{ImageVariationPolicy, RolloutStatus};
use routerpolicy::rollout::Phase;
use serde_json::{Value, json};
use support::{Instance, control_plane, eventually};

const WAIT: Duration = Duration::from_secs(90);
const CONFIGMAP: &str = "image-gateway-policies";
const REFUSED: &str = "openai/not-on-this-account";

/// A gateway replica in API mode in front of `orq`, reporting every second.
fn gateway(kubeconfig: &std::path::Path, ns: &str, identity: &str, orq: &FakeUpstream) -> GatewayProcess {
    let args = vec![
        format!("--config-map={ns}/{CONFIGMAP}"),
        format!("--identity={identity}"),
        format!("--upstream={}", orq.url()),
        "--report-interval=1s".to_string(),
    ];
    let kubeconfig = kubeconfig.to_str().expect("utf-8");
    GatewayProcess::start_with_env(&control_plane().dir, &args, &[("KUBECONFIG", kubeconfig)])
}

fn operator(ns: &str, name: &str) -> Instance {
    Instance::start(&control_plane().kubeconfig, name, &[&format!("--namespaces={ns}")])
}

/// Applies policy `p` with a fallback to `model` and the rollout `steps` (`(weight, pause)`).
fn apply(ns: &str, model: &str, steps: &[(u32, &str)]) {
    let steps: Vec<Value> = steps.iter().map(|(weight, pause)| json!({"weight": weight, "pause": pause})).collect();
    let manifest = json!({
        "apiVersion": "routerpolicy.io/v1alpha1",
        "kind": "ImageVariationPolicy",
        "metadata": {"name": "p", "namespace": ns},
        "spec": {
            "targetRefs": [{"name": CONFIGMAP}],
            "fallbacks": [{"model": model}],
            "rollout": {"steps": steps, "minRequests": 20, "maxFailureRatio": 0.2},
        },
    });
    let out = control_plane().apply(&manifest.to_string());
    assert!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
}

fn condition(policy: &ImageVariationPolicy, type_: &str) -> Option<Condition> {
    policy.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_).cloned()
}

fn rollout(policy: &ImageVariationPolicy) -> Option<RolloutStatus> {
    policy.status.as_ref()?.rollout.clone()
}

/// The policy once its status describes its current generation and `check` holds.
async fn wait_until(
    client: &Client,
    ns: &str,
    what: &str,
    check: impl Fn(&ImageVariationPolicy) -> bool,
) -> ImageVariationPolicy {
    let api: Api<ImageVariationPolicy> = Api::namespaced(client.clone(), ns);
    eventually(WAIT, what, || async {
        let p = api.get("p").await.ok()?;
        let current = p.status.as_ref()?.observed_generation == p.metadata.generation;
        (current && check(&p)).then_some(p)
    })
    .await
}

fn is_ready(p: &ImageVariationPolicy) -> bool {
    condition(p, "Ready").is_some_and(|c| c.status == "True")
}

/// One call through `gateway`: its status and the hash of the document it used.
async fn call(gateway: &GatewayProcess, ns: &str) -> (u16, Option<String>) {
    let (addr, policy) = (gateway.addr, format!("{ns}.p"));
    tokio::task::spawn_blocking(move || gwsupport::call_policy(addr, &policy, 512).expect("a response"))
        .await
        .expect("call task")
}

/// What the calls saw while the rollout was at each step: hash → calls, per step (`0` once
/// the rollout ended).
type Seen = BTreeMap<i64, BTreeMap<String, u32>>;

/// Sends calls through both replicas, 10 at a time, reading the policy between batches, until
/// `done` holds for it: the policy then, and what the calls saw at each step.
async fn drive(
    client: &Client,
    ns: &str,
    replicas: &[GatewayProcess],
    done: impl Fn(&ImageVariationPolicy) -> bool,
) -> (ImageVariationPolicy, Seen) {
    let api: Api<ImageVariationPolicy> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + WAIT;
    let mut seen = Seen::new();
    loop {
        let p = api.get("p").await.expect("policy");
        let current = p.status.as_ref().is_some_and(|s| s.observed_generation == p.metadata.generation);
        if current && done(&p) {
            return (p, seen);
        }
        assert!(Instant::now() < deadline, "the rollout did not finish: {:?}", p.status);
        let step = rollout(&p).filter(|r| current && r.phase == Phase::Progressing).map_or(0, |r| r.step);
        for i in 0..10 {
            let (_, hash) = call(&replicas[i % replicas.len()], ns).await;
            *seen.entry(step).or_default().entry(hash.unwrap_or_default()).or_default() += 1;
        }
    }
}

/// The share of the calls at `step` that used `hash`, and how many calls there were.
fn share(seen: &Seen, step: i64, hash: &str) -> (f64, u32) {
    let calls = seen.get(&step).map(|h| h.values().sum::<u32>()).unwrap_or(0);
    let on = seen.get(&step).and_then(|h| h.get(hash)).copied().unwrap_or(0);
    (if calls == 0 { 0.0 } else { f64::from(on) / f64::from(calls) }, calls)
}

async fn configmap_data(client: &Client, ns: &str) -> BTreeMap<String, String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    api.get(CONFIGMAP).await.ok().and_then(|cm| cm.data).unwrap_or_default()
}

fn event_reasons(ns: &str) -> String {
    control_plane().kubectl_ok(&["get", "events", "-n", ns, "-o", "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_change_advances_step_by_step_and_a_bad_one_is_rolled_back_and_never_served_again() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "rollout").await;
    let kubeconfig = cp.gateway_credentials(&ns);
    let orq = FakeUpstream::start(false).await;
    orq.set_mode(Mode::Refuse(REFUSED));
    let _operator = operator(&ns, "rollout-op");
    let replicas = [gateway(&kubeconfig, &ns, "gw-0", &orq), gateway(&kubeconfig, &ns, "gw-1", &orq)];
    let steps = [(20, "5s"), (50, "5s")];

    // A first document goes out whole, with no rollout.
    apply(&ns, "openai/first", &steps);
    let first = wait_until(&client, &ns, "the first document is Ready", is_ready).await;
    assert!(rollout(&first).is_none(), "a first document rolled out: {:?}", first.status);
    let stable = first.status.and_then(|s| s.config_hash).expect("hash");

    // A good change: 20 %, then 50 %, then every call.
    apply(&ns, "openai/second", &steps);
    let (done, seen) = drive(&client, &ns, &replicas, is_ready).await;
    let new = done.status.as_ref().and_then(|s| s.config_hash.clone()).expect("hash");
    assert_ne!(new, stable);
    let status = rollout(&done).expect("status.rollout");
    assert_eq!(
        (status.phase, status.canary_hash.as_str(), status.stable_hash.as_str()),
        (Phase::Succeeded, &*new, &*stable)
    );
    for (step, weight) in [(1, 0.20), (2, 0.50)] {
        let (observed, calls) = share(&seen, step, &new);
        assert!(calls >= 40, "step {step}: only {calls} calls: {seen:?}");
        assert!(
            (observed - weight).abs() <= 0.12,
            "step {step}: {observed:.2} of {calls} calls on the new document, want {weight}: {seen:?}"
        );
    }
    assert!(status.canary.calls >= 40 && status.stable.calls >= 40, "{status:?}");
    for replica in &replicas {
        assert_eq!(call(replica, &ns).await, (200, Some(new.clone())));
    }
    assert!(!configmap_data(&client, &ns).await.contains_key(&format!("{ns}.p.canary")));

    // A bad change: orq refuses its model. It is rolled back within its first step.
    apply(&ns, REFUSED, &steps);
    let rolled_back = |p: &ImageVariationPolicy| rollout(p).is_some_and(|r| r.phase == Phase::RolledBack);
    let (back, seen) = drive(&client, &ns, &replicas, rolled_back).await;
    let status = rollout(&back).expect("status.rollout");
    assert_eq!((status.step, status.stable_hash.as_str()), (1, &*new), "{status:?}");
    assert!(!seen.contains_key(&2), "the bad change reached step 2: {seen:?}");
    let stalled = condition(&back, "Stalled").expect("Stalled");
    assert_eq!((stalled.status.as_str(), stalled.reason.as_str()), ("True", "RolledBack"));
    assert!(stalled.message.contains("404") && stalled.message.contains("failure ratio"), "{}", stalled.message);
    assert_eq!(condition(&back, "Ready").map(|c| (c.status, c.reason)), Some(("False".into(), "RolledBack".into())));
    // Only the stable document remains, and no call gets the bad one again.
    let data = configmap_data(&client, &ns).await;
    assert!(!data.contains_key(&format!("{ns}.p.canary")), "{data:?}");
    for i in 0..60 {
        assert_eq!(call(&replicas[i % 2], &ns).await, (200, Some(new.clone())), "call {i} after the rollback");
    }
    let reasons = event_reasons(&ns);
    for reason in ["RolloutStep", "RolloutPromoted", "RolledBack"] {
        assert!(reasons.lines().any(|r| r == reason), "no {reason} event: {reasons}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_mid_rollout_resumes_it_and_the_annotation_aborts_one() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "resume").await;
    let kubeconfig = cp.gateway_credentials(&ns);
    let orq = FakeUpstream::start(false).await;
    let first_operator = operator(&ns, "resume-op-1");
    let replicas = [gateway(&kubeconfig, &ns, "gw-0", &orq), gateway(&kubeconfig, &ns, "gw-1", &orq)];
    let steps = [(20, "15s"), (50, "5s")];
    apply(&ns, "openai/first", &steps);
    wait_until(&client, &ns, "the first document is Ready", is_ready).await;

    apply(&ns, "openai/second", &steps);
    let at_step_one =
        |p: &ImageVariationPolicy| rollout(p).is_some_and(|r| r.phase == Phase::Progressing && r.step == 1);
    let (p, _) = drive(&client, &ns, &replicas, at_step_one).await;
    let started = rollout(&p).expect("rollout").step_started_at;
    assert!(!started.is_empty(), "step 1 has a start");
    first_operator.signal("KILL");
    let _second_operator = operator(&ns, "resume-op-2");
    // The new operator goes on with step 1 where it was — its start is the cluster's, not
    // the new process's — then finishes.
    let starts = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let (p, seen) = drive(&client, &ns, &replicas, |p| {
        let r = rollout(p);
        if let Some(r) = r.as_ref().filter(|r| r.phase == Phase::Progressing && r.step == 1) {
            starts.lock().expect("lock").insert(r.step_started_at.clone());
        }
        r.is_some_and(|r| r.phase != Phase::Progressing || r.step == 2)
    })
    .await;
    let resumed = rollout(&p).expect("rollout");
    assert_eq!((resumed.phase, resumed.step), (Phase::Progressing, 2), "{resumed:?}");
    assert_eq!(starts.into_inner().expect("lock"), [started].into(), "step 1 started over");
    assert!(seen.keys().all(|step| *step == 1), "{seen:?}");
    let (done, _) = drive(&client, &ns, &replicas, is_ready).await;
    assert_eq!(rollout(&done).map(|r| r.phase), Some(Phase::Succeeded));

    // A change stopped by hand: the annotation aborts it at once and is removed.
    apply(&ns, "openai/third", &[(20, "1h")]);
    let (p, _) = drive(&client, &ns, &replicas, at_step_one).await;
    let hash = p.status.as_ref().and_then(|s| s.config_hash.clone()).expect("hash");
    cp.kubectl_ok(&["annotate", "-n", &ns, "imagevariationpolicy/p", "routerpolicy.io/rollout-action=abort"]);
    let back = wait_until(&client, &ns, "the aborted rollout rolled back", |p| {
        rollout(p).is_some_and(|r| r.phase == Phase::RolledBack)
            && p.metadata.annotations.as_ref().is_none_or(|a| !a.contains_key("routerpolicy.io/rollout-action"))
    })
    .await;
    let message = rollout(&back).map(|r| r.message).unwrap_or_default();
    assert!(message.contains("aborted"), "{message}");
    for i in 0..20 {
        let (_, used) = call(&replicas[i % 2], &ns).await;
        assert_ne!(used.as_deref(), Some(hash.as_str()), "the aborted document was served");
    }
}

/// Mirrors the ConfigMap into `dir` every 200 ms, as kubelet does for a mounted volume, until
/// the task is dropped.
fn mirror(client: Client, ns: String, mut dir: gwsupport::KubeletDir) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let data = configmap_data(&client, &ns).await;
            if last.as_ref() != Some(&data) {
                dir.publish(data.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect());
                last = Some(data);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_mode_replica_reports_its_rollout_counts_without_counting_for_served() {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "volume").await;
    let kubeconfig = cp.gateway_credentials(&ns);
    let orq = FakeUpstream::start(false).await;
    orq.set_mode(Mode::Refuse(REFUSED));
    let _operator = operator(&ns, "volume-op");
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = gwsupport::KubeletDir::new(scratch.path());
    let args = vec![
        format!("--config-dir={}", dir.path.display()),
        format!("--report-for={ns}/{CONFIGMAP}"),
        "--identity=gw-volume".to_string(),
        format!("--upstream={}", orq.url()),
        "--report-interval=1s".to_string(),
        "--poll-interval=200ms".to_string(),
    ];
    let env = [("KUBECONFIG", kubeconfig.to_str().expect("utf-8"))];
    let _mirror = mirror(client.clone(), ns.clone(), dir);
    let replicas = [GatewayProcess::start_with_env(&cp.dir, &args, &env)];
    let steps = [(50, "5s")];

    apply(&ns, "openai/first", &steps);
    let first = wait_until(&client, &ns, "the first document is Ready", is_ready).await;
    // Its report is not one of the replicas Served counts: it cannot say what it loaded.
    let served = condition(&first, "Served").expect("Served");
    assert_eq!((served.status.as_str(), served.reason.as_str()), ("Unknown", "NoGatewayReports"), "{served:?}");
    let stable = first.status.and_then(|s| s.config_hash).expect("hash");
    eventually(WAIT, "the volume replica serves the first document", || async {
        (call(&replicas[0], &ns).await == (200, Some(stable.clone()))).then_some(())
    })
    .await;

    // A bad change is rolled back from the volume replica's counts alone.
    apply(&ns, REFUSED, &steps);
    let rolled_back = |p: &ImageVariationPolicy| rollout(p).is_some_and(|r| r.phase == Phase::RolledBack);
    let (back, _) = drive(&client, &ns, &replicas, rolled_back).await;
    let status = rollout(&back).expect("status.rollout");
    assert!(status.canary.calls >= 20 && status.canary.failures >= 20, "{status:?}");
    assert!(status.message.contains("404"), "{status:?}");
    eventually(WAIT, "the volume replica serves the stable document again", || async {
        (call(&replicas[0], &ns).await == (200, Some(stable.clone()))).then_some(())
    })
    .await;
}
