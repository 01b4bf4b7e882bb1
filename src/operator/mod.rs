//! The operator wing: `routerpolicy run`. Files in the order an event flows through them:
//!
//! ```text
//!  policy watch(es) ──┐
//!                     ├─▶ watch ─▶ decode ─▶ index ◀── compile (validate + render, once per spec)
//!  ConfigMap watches ─┘   (one driver:        │ touched targets
//!                          apply/delete/      ▼
//!                          relist)         queue (targets) ─▶ plan ─▶ apply ─▶ ConfigMap (SSA)
//!                                             │ outcomes back into the index
//!                                             ▼
//!                                          queue (statuses) ─▶ status ─▶ status_writer ─▶ status (SSA)
//!                                                                             └─▶ events
//! ```
//!
//! - [`watch`] runs the watches (policies per namespace of `--namespaces` or cluster-wide; the
//!   two label-selected ConfigMap watches of [`ConfigMapWatch`](crate::target::configmap::ConfigMapWatch)) and drives each
//!   event into the index: apply, delete, and after a re-list the deletion of what the list
//!   lacked. [`decode`] keeps only what the index reads.
//! - [`index`] is the state (pure): each policy [`compile`]d once per spec change, each
//!   target's stripped [`ExistingTarget`](crate::target::configmap::ExistingTarget) view, who holds which key. An event
//!   returns the targets it touched; nothing else is re-planned.
//! - [`queue`] holds targets and statuses (at most once each, one worker each at a time, retry
//!   with backoff). A target worker waits for a quiet moment, then [`apply`] asks the pure
//!   [`plan`](crate::target::plan) for the ConfigMap's content (consent, last good, 1 MiB) and server-side applies
//!   it only when it changes what the operator owns.
//! - Outcomes go back into the index; once every target of a policy has one for its current
//!   spec, [`status_writer`] computes the status with the pure [`status`] and writes it only
//!   when it changed (the echo of that write changes nothing in the index, so it causes no
//!   work), publishing [`events`] for what changed.
//! - [`runtime`] is `routerpolicy run`: the client, the admin endpoints, leader election;
//!   [`controller`] wires the rest. [`finalizer`] removes the legacy finalizer, [`boundary`] is
//!   the `--namespaces` boundary, [`metrics`] counts.
//!
//! No finalizer: deletion is level-triggered. Nothing is written before every watch has
//! delivered its first complete list; then every known target is planned once, which prunes
//! keys of policies deleted while no operator ran.

pub mod boundary;
pub mod compile;
pub mod controller;
pub mod decode;
pub mod events;
pub mod fence;
pub mod finalizer;
pub mod index;
pub mod metrics;
pub mod queue;
pub mod runtime;
pub mod served;
pub mod status;
pub mod status_writer;
pub mod target_writer;
pub mod watch;
