//! Apply: plan one target from the index and server-side apply the ConfigMap when the plan
//! changes what the operator owns there. The outcomes go back to the index, and the policies
//! they concern to the status queue.

use std::fmt::Display;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use tracing::{info, warn};

use crate::key::TargetKey;
use crate::operator::controller::{Controller, now_ms};
use crate::operator::index::PlanInput;
use crate::operator::metrics::ReconcileOutcome;
use crate::target::configmap::{ExistingTarget, FIELD_MANAGER, applied_configmap};
use crate::target::plan::{TargetPlan, plan_target};

/// Why a target could not be synced; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Looking up a ConfigMap that the watches do not show failed.
    #[error("{0}")]
    Read(#[source] kube::Error),
    /// The server-side apply failed.
    #[error("{0}")]
    Write(#[source] kube::Error),
    /// This replica may have lost the lease while it did not run: it writes nothing more.
    #[error("not written: this replica may no longer hold the leader lease")]
    Fenced,
}

impl ApplyError {
    /// The `outcome` label of `routerpolicy_reconciles_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ApplyError::Read(_) => "read_error",
            ApplyError::Write(_) => "apply_error",
            ApplyError::Fenced => "fenced",
        }
    }
}

impl Controller {
    /// Plans and applies one target; a failure is retried after a backoff.
    pub(super) async fn reconcile_target(self: &Arc<Self>, target: &TargetKey) {
        self.metrics.in_flight.inc();
        let started = Instant::now();
        let result = self.sync_target(target).await;
        self.metrics.in_flight.dec();
        let outcome = match &result {
            Ok(()) => ReconcileOutcome::Success,
            Err(e) => ReconcileOutcome::Failed(e.metric_label()),
        };
        self.metrics.reconciled(outcome, started.elapsed().as_secs_f64());
        match result {
            Ok(()) => self.targets.succeeded(target),
            Err(error) => {
                let retry_in = self.targets.retry_later(target.clone());
                warn!(target = %target, %error, ?retry_in, "writing the target failed; retrying");
            }
        }
    }

    async fn sync_target(&self, target: &TargetKey) -> Result<(), ApplyError> {
        let input = {
            let mut index = self.index();
            index.settle_rollouts(target);
            index.plan_input(target)
        };
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &target.namespace);
        let (live, mut failed) = match live_view(&api, target, &input).await {
            Ok(live) => (live, None),
            Err(e) => (None, Some(e)),
        };
        let plan = plan_target(target, live.as_ref(), &input.policies);
        if failed.is_none()
            && let Some(data) = &plan.apply
            && !plan.is_noop(live.as_ref())
            && !(live.is_none() && data.is_empty())
        {
            failed = self.write(&api, target, &plan).await.err();
        }
        let failure = failed.as_ref().map(|e| e as &dyn Display);
        let dirty = self.index().record_plan(target, &input, &plan, failure, now_ms());
        self.statuses.add_all(dirty);
        failed.map_or(Ok(()), Err)
    }

    /// Server-side applies the plan's data; the index takes what the API server returned.
    async fn write(&self, api: &Api<ConfigMap>, target: &TargetKey, plan: &TargetPlan) -> Result<(), ApplyError> {
        let data = plan.apply.clone().unwrap_or_default();
        let keys = data.len();
        let cm = applied_configmap(target, data, &plan.config_hash);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        if !self.may_write() {
            return Err(ApplyError::Fenced);
        }
        match api.patch(&target.name, &params, &Patch::Apply(&cm)).await {
            Ok(written) => {
                self.metrics.configmap_writes.inc();
                let view = ExistingTarget::from_configmap(&written);
                self.index().wrote_target(target, view, written.metadata.resource_version.clone());
                info!(target = %target, keys, hash = %plan.config_hash, "applied gateway ConfigMap");
                Ok(())
            }
            // Its namespace is gone: nothing can be served there.
            Err(kube::Error::Api(e)) if e.code == 404 && keys == 0 => Ok(()),
            Err(e) => Err(ApplyError::Write(e)),
        }
    }
}

/// What the ConfigMap holds now. One the watches do not show is missing, or neither managed
/// nor opted in: look once, so an unlabelled one is never taken for missing and overwritten.
async fn live_view(
    api: &Api<ConfigMap>,
    target: &TargetKey,
    input: &PlanInput,
) -> Result<Option<ExistingTarget>, ApplyError> {
    match &input.live {
        Some(live) => Ok(Some(live.clone())),
        None if input.policies.is_empty() => Ok(None),
        None => match api.get_opt(&target.name).await {
            Ok(cm) => Ok(cm.as_ref().map(ExistingTarget::from_configmap)),
            Err(e) => Err(ApplyError::Read(e)),
        },
    }
}
