//! `scripts/sandbox.sh`, the README's command for the main job, run as a newcomer would: it
//! comes up with every example Ready and prints `export KUBECONFIG=…`; a policy applied
//! meanwhile becomes Ready; the gateway it runs proxies a request with the policy's document
//! and follows a new policy; SIGTERM stops every process it started and removes its files.

#[path = "cmd/mod.rs"]
mod cmd;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Stops the sandbox if the test fails half-way.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn the_sandbox_runs_the_product_and_stops_cleanly() {
    let stderr_log = std::env::temp_dir().join(format!("routerpolicy-sandbox-test-{}.stderr", std::process::id()));
    let stderr = || std::fs::read_to_string(&stderr_log).unwrap_or_default();
    let mut sandbox = Command::new("bash")
        .arg(repo().join("scripts/sandbox.sh"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_log).expect("stderr log"))
        .spawn()
        .expect("start scripts/sandbox.sh");
    let stdout = sandbox.stdout.take().expect("stdout");
    let mut sandbox = Guard(sandbox);
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    let kubeconfig = loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).unwrap_or_else(|_| {
            panic!("no `export KUBECONFIG=` line; output so far:\n{}\nstderr:\n{}", printed.join("\n"), stderr())
        });
        printed.push(line.clone());
        if let Some(path) = line.strip_prefix("export KUBECONFIG=") {
            break PathBuf::from(path);
        }
    };
    // The hints follow, up to the last line.
    loop {
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| {
            panic!("the sandbox's output ends early:\n{}\nstderr:\n{}", printed.join("\n"), stderr())
        });
        printed.push(line.clone());
        if line.starts_with("Ctrl-C stops everything") {
            break;
        }
    }
    let output = printed.join("\n");
    for expected in [
        "avatars      True",
        "minimal      True",
        "thumbnails   True",
        "team-a.avatars.json: {",
        "is invalid",
        "served by 1/1 gateway replicas of team-a/image-gateway-policies",
        "no gateway replica reports what it serves",
    ] {
        assert!(output.contains(expected), "the sandbox did not print {expected:?}:\n{output}");
    }
    // The gateway step: one proxied request; orq received the policy's document and the
    // gateway's key.
    let avatars_hash = output
        .lines()
        .find(|l| l.starts_with("team-a      avatars"))
        .and_then(|l| l.split_whitespace().nth(4))
        .expect("avatars' hash in the status table");
    for expected in [
        "HTTP 200 ".to_string(),
        format!("X-Routerpolicy-Policy-Hash: {avatars_hash}"),
        r#"{"name":"orq","value":"{\"name\":\"avatar-variations\""#.to_string(),
        r#""authorization":"Bearer sk-sand"#.to_string(),
    ] {
        assert!(output.contains(&expected), "the sandbox did not print {expected:?}:\n{output}");
    }
    let (fake, gateway) = printed
        .iter()
        .find_map(|l| {
            let (command, _) = l.trim().split_once(" team-a.avatars")?;
            let (fake, url) = command.split_once(" send ")?;
            Some((PathBuf::from(fake), url.to_string()))
        })
        .expect("the fake-orq send hint line");
    let kubectl = printed
        .iter()
        .find_map(|l| l.trim().strip_suffix(" get ivp -A"))
        .map(PathBuf::from)
        .expect("the kubectl hint line");
    let work = kubeconfig.parent().expect("work dir").to_path_buf();

    // A newcomer applies a policy of their own meanwhile.
    let policy = "apiVersion: routerpolicy.io/v1alpha1\nkind: ImageVariationPolicy\nmetadata: {name: mine, namespace: team-a}\nspec:\n  targetRefs: [{name: image-gateway-policies}]\n  cache: {type: exact_match, ttl: 60}\n";
    let kube = |args: &[&str], input: Option<&str>| {
        let mut command = Command::new(&kubectl);
        cmd::output(command.arg(format!("--kubeconfig={}", kubeconfig.display())).args(args), input)
    };
    let out = kube(&["apply", "-f", "-"], Some(policy));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = kube(&["wait", "-n", "team-a", "--for=condition=Ready", "--timeout=60s", "ivp/mine"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Ready means served: the gateway serves it the moment `kubectl wait` returns.
    let out = Command::new(&fake).args(["send", &gateway, "team-a.mine"]).output().expect("fake-orq send");
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(answer.starts_with("HTTP 200"), "Ready, but the gateway does not serve team-a.mine: {answer}");

    // SIGTERM: everything it started stops, its files go.
    let _ = Command::new("kill").arg("-TERM").arg(sandbox.0.id().to_string()).status();
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = sandbox.0.try_wait().expect("wait") {
            break status;
        }
        if stopped.elapsed() > Duration::from_secs(30) {
            panic!("the sandbox did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("the sandbox stopped {:?} after SIGTERM ({status})", stopped.elapsed());
    assert!(!work.exists(), "{} was not removed", work.display());
    let leftovers = Command::new("pgrep").arg("-f").arg(work.to_str().expect("utf-8")).output().expect("pgrep");
    assert!(leftovers.stdout.is_empty(), "processes left behind: {}", String::from_utf8_lossy(&leftovers.stdout));
    let out = kube(&["get", "--raw", "/readyz", "--request-timeout=2s"], None);
    assert!(!out.status.success(), "the API server still answers");
    let _ = std::fs::remove_file(&stderr_log);
}
