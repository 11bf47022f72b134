//! What a ringscale replica does for the ScaledObjects and ScaledJobs it owns, with KEDA v2.20's
//! semantics: [`semantics`] decides (pure), [`schedule`] times the polls.

pub mod controller;
mod events;
pub mod health;
pub mod hpa;
pub mod lookup;
pub mod metrics;
pub mod pods;
pub mod schedule;
pub mod semantics;

pub use controller::{Controller, Settings, Stats};
pub use metrics::Metrics;
