//! The namespaces an operator instance acts in (`--namespaces`). Pure.
//!
//! A boundary, not a filter: a policy outside it never enters the index, and a key of an
//! outside namespace in a shared ConfigMap is neither judged nor pruned (README.md, "Targets, ownership and consent").

use std::collections::BTreeSet;

use crate::key::PolicyKey;

/// The namespaces an operator instance acts in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Boundary(Option<BTreeSet<String>>);

impl Boundary {
    /// Every namespace (`namespaces` empty), or exactly the given ones.
    pub fn new(namespaces: &[String]) -> Self {
        let set: BTreeSet<String> = namespaces.iter().filter(|n| !n.is_empty()).cloned().collect();
        Boundary((!set.is_empty()).then_some(set))
    }

    /// Whether the instance acts in `namespace`.
    pub fn contains(&self, namespace: &str) -> bool {
        self.0.as_ref().is_none_or(|set| set.contains(namespace))
    }

    /// Whether a ConfigMap data key belongs to a namespace the instance acts in.
    pub fn contains_data_key(&self, key: &str) -> bool {
        self.contains(PolicyKey::namespace_of_data_key(key))
    }

    /// The watched namespaces, or `None` for all.
    pub fn namespaces(&self) -> Option<&BTreeSet<String>> {
        self.0.as_ref()
    }
}
