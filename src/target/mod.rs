//! What a gateway ConfigMap (a *target*) should contain, below both the operator wing and the
//! offline CLI: its labels, annotations and owned keys ([`configmap`]), and the plan of its
//! content given the policies that aim at it ([`plan`]). Pure; the controller writes what the
//! plan says, and `routerpolicy render` and `routerpolicy explain -f` print it.

pub mod configmap;
pub mod plan;
