//! routerpolicy: a Kubernetes operator that validates `ImageVariationPolicy` resources and
//! syncs them, in orq's router-configuration wire format, into gateway ConfigMaps — and the
//! gateway that serves them.
//!
//! - **The rule book** (pure, shared by the operator and the offline CLI): [`api`] (types) →
//!   [`limits`] (bounds and patterns) → [`validate`] (rules with field paths) → [`render`]
//!   (policy → gateway document); [`schema`] and [`yaml11`] check raw manifests as the API
//!   server would; [`crd`] and [`reference`] generate the CRD and its docs; [`manifests`] is
//!   `validate` and `render` on files.
//! - **The target planner** ([`target`], pure): what a gateway ConfigMap should contain, shared
//!   by the controller and the offline CLI.
//! - **Explain** ([`explain`]): `routerpolicy explain`, which policy a caller gets and where it
//!   is live, from the cluster (read-only) or from manifests.
//! - **The operator wing** ([`operator`]): `routerpolicy run`.
//! - **The gateway wing** ([`gateway`]): `routerpolicy gateway`. It imports nothing of the
//!   operator.
//! - **Leaves** both wings use: [`key`] (typed policy and ConfigMap names), [`hash`] (the
//!   document hashes), [`process`] (logging, signals, admin endpoints), [`serving`] (what a
//!   gateway replica reports it serves), [`rollout`] (the canary entry, failures, counts and
//!   the judgement of a step).
//!
//! docs/architecture.md draws the data flow of an event and of a request.

pub mod api;
pub mod callers;
pub mod crd;
pub mod explain;
pub mod gateway;
pub mod hash;
pub mod key;
pub mod limits;
pub mod manifests;
pub mod operator;
pub mod process;
pub mod reference;
pub mod render;
pub mod rollout;
pub mod schema;
pub mod serving;
pub mod target;
pub mod validate;
pub mod yaml11;
