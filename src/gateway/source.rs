//! Source, API mode (`--config-map`): the gateway ConfigMap read through the Kubernetes API, a
//! watch on that one object (field selector `metadata.name`, so a Role limited to it by
//! `resourceNames` suffices). A change is served as soon as the watch delivers it, with the
//! same rules as the directory mode ([`crate::gateway::reload::publish`]).
//!
//! If the API cannot be reached, the gateway keeps serving what it has and says so: a warning
//! (once per distinct error) and `routerpolicy_gateway_source_up` at 0. Readiness, once
//! reached, stays. While the watch is down the ConfigMap is also read directly every
//! [`PROBE_EVERY`], so `source_up` returns to 1 as soon as the API server answers (a watch
//! resumed without a change delivers nothing) and a change made meanwhile is served.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::gateway::reload::{first_time, publish};
use crate::gateway::store::FileRead;
use crate::gateway::{Gateway, Serving};
use crate::key::TargetKey;

/// How often the API server is asked directly while the watch is down.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Watches `target` and serves what it holds until `stop` turns true.
pub async fn watch_configmap(gw: Arc<Gateway>, client: Client, target: TargetKey, mut stop: watch::Receiver<bool>) {
    let api: Api<ConfigMap> = Api::namespaced(client, &target.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", target.name));
    let mut events = watcher::watcher(api.clone(), config).default_backoff().boxed();
    let mut current: Option<ConfigMap> = None;
    let mut listed = false;
    let mut last_error: Option<String> = None;
    loop {
        // While the watch is down, the API server is asked directly now and then: a watch that
        // comes back without a change says nothing, and `source_up` must not stay 0 for it.
        let down = last_error.is_some();
        let event = tokio::select! {
            event = events.next() => Some(event),
            _ = tokio::time::sleep(PROBE_EVERY), if down => None,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Some(event) = event else {
            if let Ok(found) = api.get_opt(&target.name).await {
                gw.metrics.source_up.set(1);
                last_error = None;
                info!(configmap = %target, "the API server answers again");
                let version = |cm: &Option<ConfigMap>| cm.as_ref().and_then(|c| c.metadata.resource_version.clone());
                if version(&found) != version(&current) {
                    current = found;
                    load(&gw, &target, current.as_ref());
                }
            }
            continue;
        };
        let Some(event) = event else { return };
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                gw.metrics.source_up.set(0);
                if first_time(&mut last_error, e.to_string()) {
                    warn!(configmap = %target, error = %e, "cannot watch the ConfigMap; serving the policies loaded before");
                }
                continue;
            }
        };
        if last_error.take().is_some() {
            info!(configmap = %target, "watching the ConfigMap again");
        }
        gw.metrics.source_up.set(1);
        match event {
            Event::Init => listed = false,
            // A list is served once complete, so a relist never serves a partial picture.
            Event::InitApply(cm) => {
                listed = true;
                current = Some(cm);
            }
            Event::InitDone => {
                if !listed {
                    current = None;
                }
                load(&gw, &target, current.as_ref());
            }
            Event::Apply(cm) => {
                current = Some(cm);
                load(&gw, &target, current.as_ref());
            }
            Event::Delete(_) => {
                current = None;
                load(&gw, &target, None);
            }
        }
    }
}

/// Serves what `cm` holds (nothing when it does not exist) and tells the reporter.
fn load(gw: &Gateway, target: &TargetKey, cm: Option<&ConfigMap>) {
    let files: BTreeMap<String, FileRead> = cm
        .and_then(|c| c.data.as_ref())
        .map(|data| data.iter().map(|(k, v)| (k.clone(), Ok(v.clone().into_bytes()))).collect())
        .unwrap_or_default();
    let rejected = publish(gw, files);
    let resource_version = cm.and_then(|c| c.metadata.resource_version.clone()).unwrap_or_default();
    gw.serving.send_replace(Serving { loaded: true, resource_version, rejected });
    if !gw.loaded.swap(true, Ordering::Relaxed) {
        info!(configmap = %target, policies = gw.metrics.policies.get(), "ConfigMap read; ready");
    }
}
