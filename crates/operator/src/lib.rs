//! What a ringscale replica does for the ScaledObjects and ScaledJobs it owns, with KEDA v2.20's
//! semantics: the `ringscale-semantics` crate decides (pure), [`schedule`] times the polls, the
//! [`controller`] gathers what the rules need and performs the writes they plan.

pub mod controller;
mod dispatch;
mod events;
pub mod health;
pub mod hpa;
pub mod lookup;
pub mod metrics;
pub mod pods;
pub mod schedule;
pub mod scope;
mod view;

pub use controller::{Controller, Settings, Stats};
pub use metrics::Metrics;
