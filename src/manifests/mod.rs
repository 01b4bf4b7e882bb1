//! Offline checks of manifests for GitOps pipelines: `routerpolicy validate` and
//! `routerpolicy render`, in four steps, one file each:
//!
//! - [`load`] reads files, directories (recursively, `*.yaml`, `*.yml`, `*.json`) and stdin
//!   (`-`), splitting multi-document YAML ([`parse_documents`]): the only I/O here;
//! - [`check_document`] runs the CRD schema check and the Rust rules on one document;
//! - [`format_results`] prints the verdicts (text, JSON, GitHub annotations);
//! - [`render_configmaps`] plans every target with the same planner the controller uses.

mod check;
mod format;
mod load;
mod render;

pub use check::{BooleanWords, Checked, check_document, check_document_with};
pub use format::{Format, format_results};
pub use load::{Document, LoadError, Origin, load, parse_documents};
pub use render::Rendered;
pub use render::render_configmaps;
