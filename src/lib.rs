//! routerpolicy: a Kubernetes operator that validates `ImageVariationPolicy` resources and
//! syncs them, in orq's router-configuration wire format, into gateway ConfigMaps.
//!
//! The pipeline, one module per step: [`api`] (types) → [`validate`] (pure rules) →
//! [`render`] (pure policy → gateway document) → [`target`] (pure plan of one ConfigMap) →
//! [`index`] (pure: watch events in, touched targets out) → [`controller`] (watches, applies,
//! reports). [`schema`] checks raw manifests against the
//! CRD's schema for `routerpolicy validate`, so offline validation refuses what admission
//! refuses.
#![forbid(unsafe_code)]

pub mod api;
pub mod controller;
pub mod crd;
pub mod gateway;
pub mod index;
pub mod limits;
pub mod manifests;
pub mod metrics;
pub mod reference;
pub mod render;
pub mod runtime;
pub mod schema;
pub mod status;
pub mod target;
pub mod validate;
pub mod watched;
pub mod yaml11;
