//! Reload: the policies and the API key follow their files; [`publish`] serves a new set of
//! policy documents, whichever source read them (this poller, or the ConfigMap watch of
//! [`crate::gateway::source`]).
//!
//! The directory is polled (`--poll-interval`, default 1 s), not watched with inotify:
//! kubelet publishes a ConfigMap by swapping the `..data` symlink, which inotify reports on
//! the directory rather than on the files the gateway reads, differently across kernels and
//! overlay filesystems. Each tick costs one `readlink` and a `stat` per file and re-reads only
//! on a change ([`store::reload`] decides what is served); docs/architecture.md says why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::HeaderValue;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::gateway::metrics::{PolicyInfoLabels, PolicyLabels};
use crate::gateway::store::{self, FileRead};
use crate::gateway::{Gateway, Serving};
use crate::key::PolicyKey;

/// What decides whether the directory must be re-read: the `..data` link and each entry's
/// size, modification time and inode (following links).
type Fingerprint = (Option<PathBuf>, Vec<(String, Option<(u64, i128, u64)>)>);

fn fingerprint(dir: &Path) -> std::io::Result<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let data = std::fs::read_link(dir.join("..data")).ok();
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if PolicyKey::owner_of_data_key(&name).is_none() {
            continue;
        }
        let meta = std::fs::metadata(entry.path()).ok().map(|m| {
            let mtime = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
            (m.len(), mtime, m.ino())
        });
        entries.push((name, meta));
    }
    entries.sort();
    Ok((data, entries))
}

fn read_files(dir: &Path, fingerprint: &Fingerprint) -> BTreeMap<String, FileRead> {
    fingerprint
        .1
        .iter()
        .map(|(name, _)| (name.clone(), std::fs::read(dir.join(name)).map_err(|e| e.to_string())))
        .collect()
}

/// Reads orq's API key from `path` as an `Authorization: Bearer` value (marked sensitive).
pub fn read_key(path: &Path) -> Result<HeaderValue, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let key = text.trim();
    if key.is_empty() {
        return Err("the file is empty".into());
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
        .map_err(|_| "the key has characters not allowed in a header".to_string())?;
    value.set_sensitive(true);
    Ok(value)
}

/// What the polling loop remembers between ticks.
#[derive(Default)]
struct PollState {
    /// The directory as last loaded.
    fingerprint: Option<Fingerprint>,
    /// The last error reading the directory, and the key file: each is logged once.
    dir_error: Option<String>,
    key_error: Option<String>,
}

/// Records `error` in `slot`; true when it differs from the one recorded before (log it).
pub fn first_time(slot: &mut Option<String>, error: String) -> bool {
    let new = slot.as_deref() != Some(error.as_str());
    *slot = Some(error);
    new
}

/// Applies one reload of the directory; returns whether the directory could be listed.
fn reload_once(gw: &Gateway, dir: &Path, state: &mut PollState) -> bool {
    let print = match fingerprint(dir) {
        Ok(p) => p,
        Err(e) => {
            if first_time(&mut state.dir_error, e.to_string()) {
                warn!(dir = %dir.display(), error = %e, "cannot read the config directory; serving the policies loaded before");
            }
            state.fingerprint = None;
            return false;
        }
    };
    state.dir_error = None;
    if state.fingerprint.as_ref() == Some(&print) {
        return true;
    }
    let rejected = publish(gw, read_files(dir, &print));
    // What the report Lease says (volume mode with --report-for): loaded, and what it refused.
    gw.serving.send_replace(Serving { loaded: true, resource_version: String::new(), rejected });
    state.fingerprint = Some(print);
    true
}

/// Serves `files` (data key or file name → bytes) from now on: builds the next snapshot from
/// the current one, counts and logs what changed, and returns the keys it refuses, with why
/// (their last good documents stay served).
pub fn publish(gw: &Gateway, files: BTreeMap<String, FileRead>) -> BTreeMap<String, String> {
    let previous = gw.snapshot.read().map(|s| s.clone()).unwrap_or_default();
    let result = store::reload(&previous, files, gw.max_document_bytes);
    for e in &result.errors {
        gw.metrics.reload_errors.get_or_create(&PolicyLabels { policy: e.policy.clone() }).inc();
        if e.kept_last_good {
            warn!(policy = %e.policy, error = %e.message, "policy file unusable; keeping its last good document");
        } else {
            warn!(policy = %e.policy, error = %e.message, "policy file unusable; the policy is not served");
        }
    }
    for p in &result.added {
        info!(policy = %p, hash = %result.snapshot.policies[p].hash, "serving policy");
    }
    for p in &result.changed {
        info!(policy = %p, hash = %result.snapshot.policies[p].hash, "policy document changed");
    }
    for p in &result.removed {
        info!(policy = %p, "policy file removed; no longer served");
    }
    // Only the series that change: a scrape never sees a served policy without its series.
    for name in result.changed.iter().chain(&result.removed) {
        if let Some(before) = previous.policies.get(name) {
            gw.metrics.policy_info.remove(&PolicyInfoLabels { policy: name.clone(), hash: before.hash.clone() });
        }
    }
    for name in result.added.iter().chain(&result.changed) {
        if let Some(p) = result.snapshot.policies.get(name) {
            gw.metrics
                .policy_info
                .get_or_create(&PolicyInfoLabels { policy: p.key.clone(), hash: p.hash.clone() })
                .set(1);
        }
    }
    gw.metrics.policies.set(result.snapshot.policies.len() as i64);
    gw.metrics.reloads.inc();
    if let Ok(mut s) = gw.snapshot.write() {
        *s = Arc::new(result.snapshot);
    }
    result.errors.into_iter().map(|e| (e.key, e.message)).collect()
}

/// Re-reads the key file; keeps the key loaded before when it cannot be used.
fn reload_key(gw: &Gateway, path: &Path, state: &mut PollState) {
    match read_key(path) {
        Ok(key) => {
            state.key_error = None;
            let changed = gw.api_key.read().map(|k| k.as_ref() != Some(&key)).unwrap_or(false);
            if changed {
                if let Ok(mut slot) = gw.api_key.write() {
                    *slot = Some(key);
                }
                info!(file = %path.display(), "API key loaded");
            }
        }
        Err(e) => {
            if first_time(&mut state.key_error, e.clone()) {
                warn!(file = %path.display(), error = %e, "cannot read the API key; keeping the one loaded before");
            }
        }
    }
}

/// Polls the directory (when the policies come from one) and the key file every `interval`
/// until `stop` turns true; the first complete read of the directory makes the gateway ready.
pub async fn reloader(
    gw: Arc<Gateway>,
    dir: Option<PathBuf>,
    key_file: Option<PathBuf>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut state = PollState::default();
    loop {
        let (g, d, k) = (gw.clone(), dir.clone(), key_file.clone());
        let mut s = std::mem::take(&mut state);
        let joined = tokio::task::spawn_blocking(move || {
            if let Some(d) = d
                && reload_once(&g, &d, &mut s)
                && !g.loaded.swap(true, Ordering::Relaxed)
            {
                info!(dir = %d.display(), policies = g.metrics.policies.get(), "config directory read; ready");
            }
            if let Some(path) = k {
                reload_key(&g, &path, &mut s);
            }
            s
        })
        .await;
        match joined {
            Ok(s) => state = s,
            Err(e) => error!(error = %e, "reload task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
