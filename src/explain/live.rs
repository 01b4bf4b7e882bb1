//! `explain` against a cluster: the shell that reads what [`super::model`] judges. Read-only,
//! and only what the answer needs — the one policy, its targets' ConfigMaps, and the report
//! Leases (label `routerpolicy.io/gateway-replica=true`) of its targets' namespaces — so it
//! costs the same in a namespace of one policy or of thousands, and works with a Role that can
//! `get` policies and ConfigMaps and `list` Leases (docs/explain.md).

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::api::ImageVariationPolicy;
use crate::explain::model::Observed;
use crate::key::PolicyKey;
use crate::serving::GATEWAY_REPLICA_LABEL;

/// Which cluster: kubectl's `--kubeconfig` and `--context` (else `$KUBECONFIG`, `~/.kube/config`
/// or the in-cluster config, as kubectl chooses).
#[derive(Clone, Debug, Default)]
pub struct Connection {
    /// A kubeconfig file.
    pub kubeconfig: Option<PathBuf>,
    /// A context of it.
    pub context: Option<String>,
}

/// Why the live explanation could not be made (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// No usable kubeconfig.
    #[error("cannot load the kubeconfig: {0}")]
    Config(String),
    /// The policy does not exist.
    #[error("ImageVariationPolicy {0} not found")]
    NotFound(String),
    /// Reading the policy failed (unreachable, forbidden, …).
    #[error("cannot read ImageVariationPolicy {policy}: {source}")]
    Policy {
        /// `<namespace>/<name>`.
        policy: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// A client for `connection`, and the namespace its context names (`default` when none).
pub async fn client(connection: &Connection) -> Result<(Client, String), LiveError> {
    let options = KubeConfigOptions { context: connection.context.clone(), ..Default::default() };
    let config = match (&connection.kubeconfig, &connection.context) {
        (Some(path), _) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| LiveError::Config(e.to_string()))?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(|e| LiveError::Config(e.to_string()))?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options).await.map_err(|e| LiveError::Config(e.to_string()))?,
        (None, None) => Config::infer().await.map_err(|e| LiveError::Config(e.to_string()))?,
    };
    let namespace = config.default_namespace.clone();
    let client = Client::try_from(config).map_err(|e| LiveError::Config(e.to_string()))?;
    Ok((client, namespace))
}

/// Reads the policy `key`, its targets' ConfigMaps and their namespaces' report Leases.
/// A target or a namespace that cannot be read is recorded as such, not fatal: the rest of the
/// answer still holds.
pub async fn observe(client: &Client, key: &PolicyKey) -> Result<Observed, LiveError> {
    let policies: Api<ImageVariationPolicy> = Api::namespaced(client.clone(), &key.namespace);
    let named = key.metric_label();
    let policy = match policies.get_opt(&key.name).await {
        Ok(Some(policy)) => policy,
        Ok(None) => return Err(LiveError::NotFound(named)),
        Err(source) => return Err(LiveError::Policy { policy: named, source }),
    };
    let targets = policy.spec.targets(&key.namespace);
    let mut configmaps = BTreeMap::new();
    let mut leases = BTreeMap::new();
    let selector = ListParams::default().labels(&format!("{GATEWAY_REPLICA_LABEL}=true"));
    for target in targets {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &target.namespace);
        let read = api.get_opt(&target.name).await.map_err(|e| describe(&e));
        configmaps.insert(target.clone(), read);
        if !leases.contains_key(&*target.namespace) {
            let api: Api<Lease> = Api::namespaced(client.clone(), &target.namespace);
            let listed = api.list(&selector).await.map(|list| list.items).map_err(|e| describe(&e));
            leases.insert(target.namespace.to_string(), listed);
        }
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Ok(Observed { policy, configmaps, leases: Some(leases), now_ms })
}

/// An API error as one line: the API server's own message where it gave one.
fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    }
}
