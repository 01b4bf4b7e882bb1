//! Policy → gateway document, in orq's wire format. Pure.
//!
//! The document is the JSON text that orq's SDK sends as the `orq` form field of an
//! image-variation request (`CreateImageVariationOrq`): snake_case field names, unset fields
//! omitted so orq applies its own defaults, and a fixed key order, so one policy always renders
//! to the same bytes. This module knows nothing of ConfigMaps.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::api::{CacheType, Identity, ImageVariationPolicySpec, LoadBalancerType, PromptVersion};
use crate::callers::{AdmittedCaller, Callers};
use crate::hash::policy_hash;

/// The orq router configuration object. Field order is the wire order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OrqConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<OrqRetry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallbacks: Option<Vec<OrqFallback>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<OrqPrompt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<OrqIdentity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<OrqIdentity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<OrqCache>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<OrqLoadBalancer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<OrqTimeout>,
}

/// `retry`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OrqRetry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_codes: Option<Vec<i64>>,
}

/// `fallbacks[]`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OrqFallback {
    pub model: String,
}

/// `prompt`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OrqPrompt {
    pub id: String,
    pub version: PromptVersion,
}

/// `identity` (and the deprecated `contact`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OrqIdentity {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Vec<BTreeMap<String, String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// `cache`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OrqCache {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    #[serde(rename = "type")]
    pub type_: CacheType,
}

/// `load_balancer`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OrqLoadBalancer {
    #[serde(rename = "type")]
    pub type_: LoadBalancerType,
    pub models: Vec<OrqWeightedModel>,
}

/// `load_balancer.models[]`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OrqWeightedModel {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

/// `timeout`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OrqTimeout {
    pub call_timeout: i64,
}

impl From<&Identity> for OrqIdentity {
    fn from(identity: &Identity) -> Self {
        Self {
            id: identity.id.clone(),
            display_name: identity.display_name.clone(),
            email: identity.email.clone(),
            metadata: identity.metadata.clone(),
            logo_url: identity.logo_url.clone(),
            tags: identity.tags.clone(),
        }
    }
}

impl From<&ImageVariationPolicySpec> for OrqConfig {
    fn from(spec: &ImageVariationPolicySpec) -> Self {
        Self {
            name: spec.name.clone(),
            retry: spec.retry.as_ref().map(|r| OrqRetry { count: r.count, on_codes: r.on_codes.clone() }),
            fallbacks: spec
                .fallbacks
                .as_ref()
                .map(|f| f.iter().map(|f| OrqFallback { model: f.model.clone() }).collect()),
            prompt: spec.prompt.as_ref().map(|p| OrqPrompt { id: p.id.clone(), version: p.version }),
            identity: spec.identity.as_ref().map(OrqIdentity::from),
            contact: spec.contact.as_ref().map(OrqIdentity::from),
            cache: spec.cache.as_ref().map(|c| OrqCache { ttl: c.ttl, type_: c.type_ }),
            load_balancer: spec.load_balancer.as_ref().map(|lb| OrqLoadBalancer {
                type_: lb.type_,
                models: lb
                    .models
                    .iter()
                    .map(|m| OrqWeightedModel { model: m.model.clone(), weight: m.weight })
                    .collect(),
            }),
            timeout: spec.timeout.as_ref().map(|t| OrqTimeout { call_timeout: t.call_timeout }),
        }
    }
}

/// One policy's rendered document, and its callers entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayDocument {
    /// The JSON text (what orq gets as the `orq` field). Shared: the operator's index holds
    /// one copy for the policy and the ConfigMap view that holds the same text.
    pub json: Arc<str>,
    /// The callers entry written beside it (`<namespace>.<name>.callers`), when
    /// `spec.callers` is set ([`crate::callers`]).
    pub callers: Option<String>,
    /// [`policy_hash`] of both (first 16 hex digits of SHA-256; of `json` alone when there
    /// are no callers): `status.configHash`.
    pub hash: String,
}

/// Renders a policy spec to its gateway document. Validation is the caller's job: render
/// never refuses, so it can be tested on any input.
pub fn render_policy(spec: &ImageVariationPolicySpec) -> GatewayDocument {
    let config = OrqConfig::from(spec);
    // Serializing plain structs of strings, integers and finite floats cannot fail; a
    // non-finite weight (refused by validation) would serialize as `null`.
    let json = serde_json::to_string(&config).unwrap_or_else(|_| "{}".to_string());
    let callers = spec.callers.as_ref().and_then(|list| {
        Callers::new(
            list.iter()
                .map(|c| AdmittedCaller { namespace: c.namespace.clone(), service_account: c.service_account.clone() }),
        )
        .to_entry()
    });
    let hash = policy_hash(json.as_bytes(), callers.as_deref().map(str::as_bytes));
    GatewayDocument { json: json.into(), callers, hash }
}
