//! `routerpolicy explain`: which policy a request gets, what exactly is in it, whether it is
//! live in every target and every gateway replica, and whether a given caller may use it.
//!
//! A functional core and two shells. [`model`] (pure) turns what was observed — the policy,
//! its targets' ConfigMaps, the report Leases of their gateway replicas, a clock — into one
//! [`model::Explanation`]; [`text`] prints it for people (JSON is its serde form, documented
//! in docs/explain.md). [`live`] reads those objects from the cluster of the kubeconfig
//! (read-only: one policy, its targets' ConfigMaps, the report Leases of their namespaces);
//! [`offline`] builds them from manifests with the same planner `render` uses, so a review
//! can ask the question before anything is applied. [`cli`] is the command: flags, which shell,
//! the exit code.

pub mod cli;
pub mod live;
pub mod model;
pub mod offline;
pub mod subject;
pub mod text;

pub use model::{Explanation, Observed, explain};
pub use subject::Subject;
