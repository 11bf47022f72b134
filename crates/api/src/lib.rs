//! KEDA-compatible `keda.sh/v1alpha1` API types for ringscale: ScaledObject, ScaledJob,
//! TriggerAuthentication and ClusterTriggerAuthentication, their defaults, CRDs and validation.
//!
//! This crate does no I/O. It depends on `kube-core` (types and traits) and `kube-derive`, never
//! on a Kubernetes client, so that tools such as `ringscale validate` work offline.

pub mod common;
pub mod crds;
mod enums;
pub mod manifest;
pub mod names;
pub mod quantity;
pub mod scaled_job;
pub mod scaled_object;
pub mod selector;
pub mod trigger_auth;
pub mod validate;
pub mod verbatim;

pub use common::{
    AuthenticationKind, AuthenticationRef, Condition, ConditionStatus, ConditionType, MetricType,
    ScaleTrigger,
};
pub use scaled_job::{ScaledJob, ScaledJobSpec, ScaledJobStatus};
pub use scaled_object::{ScaledObject, ScaledObjectSpec, ScaledObjectStatus};
pub use trigger_auth::{
    ClusterTriggerAuthentication, ClusterTriggerAuthenticationSpec, TriggerAuthentication,
    TriggerAuthenticationSpec,
};
