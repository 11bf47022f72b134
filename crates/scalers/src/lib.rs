//! ringscale's scalers: the triggers KEDA users rely on, with KEDA's parameter semantics, metric
//! names and activation rules, reading real event sources through shared, bounded connections.
//!
//! A trigger goes through three steps:
//! 1. [`auth::resolve_auth`] and [`auth::resolve_env`] turn its TriggerAuthentication and the
//!    scale target's environment into parameters;
//! 2. [`parse`] checks its parameters offline and reports every problem at once (this is what
//!    `ringscale validate` runs);
//! 3. [`Scaler::new`] attaches it to a shared source; [`Scaler::poll`] reads the metric and
//!    activity, bounded by the trigger's timeout.
//!
//! Errors name the trigger and parameter, are classified ([`ErrorKind`]) and never contain a
//! secret.

pub mod auth;
mod error;
mod input;
mod metric;
mod params;
pub mod prepare;
pub mod redact;
mod scalers;
mod sources;
mod tls;
mod trigger;

pub use error::{ErrorKind, ParamSource, ScalerError};
pub use input::{DEFAULT_TIMEOUT, Owner, OwnerKind, TriggerInput, Unresolved};
pub use metric::{
    ExternalMetric, MetricSpec, MetricValue, Poll, Resource, ResourceMetric, ResourceTarget,
    metric_name, normalize, split_metric_name, to_milli,
};
pub use redact::{Redactor, Secret};
pub use scalers::aws::AwsEnv;
pub use scalers::kubernetes_workload::{
    ListPods, ListPodsError, PodLister, PodSummary, PodsFuture,
};
pub use sources::{SourceCounts, SourceId, Sources, SourcesConfig, sources_used};
pub use tls::{TlsOptions, install_crypto_provider};
pub use trigger::{ParsedTrigger, SUPPORTED_TRIGGER_TYPES, Scaler, parse};

use ringscale_api::ScaleTrigger;

/// The input of trigger `index` of an object, from its spec and resolved parameters.
pub fn trigger_input(
    owner: Owner,
    index: usize,
    trigger: &ScaleTrigger,
    as_metric_source: bool,
    auth: auth::ResolvedAuth,
    resolved_env: std::collections::BTreeMap<String, String>,
) -> TriggerInput {
    TriggerInput {
        index,
        trigger_type: trigger.type_.clone(),
        name: trigger.name.clone(),
        metadata: trigger.metadata.clone(),
        metric_type: trigger.metric_type.clone(),
        use_cached_metrics: trigger.uses_cached_metrics(),
        as_metric_source,
        auth_params: auth.params,
        resolved_env,
        pod_identity: auth.pod_identity,
        owner,
        default_timeout: DEFAULT_TIMEOUT,
        unresolved: Unresolved::default(),
    }
}
