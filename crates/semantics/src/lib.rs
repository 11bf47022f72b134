//! KEDA v2.20's scaling rules as pure functions: no I/O, time passed in. The operator's
//! controller gathers the inputs (trigger results, the target's replicas, the object's status)
//! and performs the writes a [`plan::Plan`] lists; the metrics API applies [`fallback`] through
//! an [`ObjectView`]. This crate depends on neither a Kubernetes client nor an async runtime
//! (`.ci/run` checks it), so every rule is checked by a plain `#[test]`.

pub mod cooldown;
pub mod fallback;
pub mod jobs;
pub mod modifiers;
pub mod pause;
pub mod plan;
pub mod view;

pub use view::ObjectView;
