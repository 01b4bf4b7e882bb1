//! The legacy finalizer: earlier versions put `routerpolicy.io/cleanup` on every policy; the
//! operator now needs none (README.md, "Targets, ownership and consent") and removes it wherever it finds it, keeping every
//! other finalizer.

use std::sync::Arc;

use kube::api::{Patch, PatchParams};
use serde_json::json;
use tracing::{info, warn};

use crate::key::PolicyKey;
use crate::operator::controller::Controller;
use crate::operator::decode::LEGACY_FINALIZER;
use crate::operator::decode::policy_api;

impl Controller {
    /// Removes the legacy finalizer from `policy` in the background: a merge patch guarded by
    /// `resource_version`, so a finalizer list changed meanwhile is never overwritten.
    pub(super) fn remove_legacy_finalizer(
        self: &Arc<Self>,
        policy: PolicyKey,
        resource_version: Option<String>,
        finalizers: Vec<String>,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let Ok(_slot) = this.finalizer_slots.clone().acquire_owned().await else { return };
            let remaining: Vec<&String> = finalizers.iter().filter(|f| *f != LEGACY_FINALIZER).collect();
            let patch = json!({"metadata": {"finalizers": remaining, "resourceVersion": resource_version}});
            let (namespace, name) = (&*policy.namespace, &*policy.name);
            if !this.may_write() {
                return;
            }
            match policy_api(&this.client, namespace).patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await
            {
                Ok(_) => {
                    this.metrics.policy_writes.inc();
                    info!(namespace, name, "removed the legacy finalizer {LEGACY_FINALIZER}");
                }
                // Gone, or changed since: the newer version arrives as a watch event.
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => warn!(namespace, name, error = %e, "could not remove the legacy finalizer"),
            }
        });
    }
}
