//! The policy spec the scale and memory benchmarks create: policy `i` aims at target
//! `i % targets` and differs from its neighbours in its retry count and timeout.

use serde_json::{Value, json};

/// The spec of a policy at target `gw-{target}`, varied by `variant`.
pub fn spec(target: usize, variant: i64) -> Value {
    json!({
        "targetRefs": [{"name": format!("gw-{target}")}],
        "retry": {"count": 1 + variant % 5, "onCodes": [429, 500, 503]},
        "fallbacks": [{"model": "openai/gpt-4o-mini"}],
        "loadBalancer": {"type": "weight_based", "models": [{"model": "openai/gpt-4o", "weight": 0.5}, {"model": "anthropic/claude-3-5-sonnet", "weight": 0.5}]},
        "timeout": {"callTimeout": 30000 + variant}
    })
}
