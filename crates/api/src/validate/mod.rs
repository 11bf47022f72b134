//! Validation of the four kinds: the CRD schema (as the API server checks it) and KEDA's
//! semantic rules (as its webhook and controller apply them), every problem reported at once
//! with its field path.

pub mod formula;
pub mod hpa;
pub mod meta;
mod problem;
pub mod scaled_job;
pub mod scaled_object;
pub mod schema;
pub mod trigger_auth;
pub mod triggers;

pub use problem::{FieldPath, Findings, Problem, ProblemKind};
