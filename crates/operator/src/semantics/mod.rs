//! KEDA v2.20's scaling rules as pure functions: no I/O, time passed in. The controller gathers
//! the inputs (trigger results, the target's replicas, the object's status) and applies the
//! decisions; these functions decide.

pub mod cooldown;
pub mod fallback;
pub mod jobs;
pub mod modifiers;
pub mod pause;
pub mod plan;
