//! What a ringscale replica does for the ScaledObjects and ScaledJobs it owns, with KEDA v2.20's
//! semantics: [`semantics`] decides (pure), [`schedule`] times the polls.

pub mod schedule;
pub mod semantics;
