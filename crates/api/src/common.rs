//! Types shared by ScaledObject and ScaledJob: triggers, conditions, and pass-through values.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::enums::string_enum;

string_enum! {
    /// How the HPA compares a metric with its target (autoscaling/v2 `MetricTargetType`).
    pub enum MetricType {
        /// The metric value divided by the number of pods is compared with the target.
        AverageValue = "AverageValue",
        /// The metric value is compared with the target as is.
        Value = "Value",
        /// A percentage of the pods' resource requests (cpu and memory triggers only).
        Utilization = "Utilization",
    }
}

string_enum! {
    /// The kind an `authenticationRef` points at.
    pub enum AuthenticationKind {
        /// A namespaced TriggerAuthentication in the same namespace.
        TriggerAuthentication = "TriggerAuthentication",
        /// A cluster-scoped ClusterTriggerAuthentication.
        ClusterTriggerAuthentication = "ClusterTriggerAuthentication",
    }
}

/// One trigger: which scaler to use and how to configure it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTrigger {
    /// Scaler type, e.g. `redis`, `postgresql`, `prometheus`, `cpu`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Optional trigger name, unique within the object; scaling-modifier formulas refer to
    /// triggers by this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Serve this trigger's value to the HPA from the last poll instead of querying the source
    /// on every HPA request. Not allowed for cpu, memory and cron.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_cached_metrics: Option<bool>,
    /// Scaler parameters; all values are strings.
    pub metadata: BTreeMap<String, String>,
    /// Reference to a TriggerAuthentication or ClusterTriggerAuthentication supplying
    /// parameters such as credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_ref: Option<AuthenticationRef>,
    /// How the HPA compares this metric with its target: `AverageValue` (default), `Value`, or
    /// `Utilization` (cpu and memory only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_type: Option<MetricType>,
}

impl ScaleTrigger {
    /// The metric type in effect: the one given, or `AverageValue`.
    pub fn effective_metric_type(&self) -> MetricType {
        self.metric_type.clone().unwrap_or(MetricType::AverageValue)
    }

    /// Whether this trigger becomes an HPA Resource metric (cpu or memory).
    pub fn is_resource(&self) -> bool {
        crate::names::is_resource_trigger(&self.type_)
    }

    /// Whether `useCachedMetrics` is set to true.
    pub fn uses_cached_metrics(&self) -> bool {
        self.use_cached_metrics.unwrap_or(false)
    }
}

/// Points to the TriggerAuthentication or ClusterTriggerAuthentication used by a trigger.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationRef {
    /// Name of the authentication object.
    pub name: String,
    /// Kind of the authentication object. Defaults to TriggerAuthentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<AuthenticationKind>,
}

impl AuthenticationRef {
    /// The kind in effect: the one given, or TriggerAuthentication.
    pub fn effective_kind(&self) -> AuthenticationKind {
        self.kind
            .clone()
            .unwrap_or(AuthenticationKind::TriggerAuthentication)
    }
}

string_enum! {
    /// Condition types KEDA reports on ScaledObjects and ScaledJobs.
    pub enum ConditionType {
        /// The object is defined correctly and its triggers work.
        Ready = "Ready",
        /// At least one trigger is active (or activation is forced).
        Active = "Active",
        /// At least one metric is served from its fallback.
        Fallback = "Fallback",
        /// Scaling is paused by annotation.
        Paused = "Paused",
        /// The HPA is able to compute a scale (KEDA v2.20.2+).
        HPAActive = "HPAActive",
    }
}

string_enum! {
    /// Status of a condition.
    pub enum ConditionStatus {
        /// The condition holds.
        True = "True",
        /// The condition does not hold.
        False = "False",
        /// Not known yet.
        Unknown = "Unknown",
    }
}

// KEDA's condition has `type`, `status`, `reason` and `message`. ringscale adds the optional
// `lastTransitionTime` (set when `status` changes), which KEDA's CRD prunes and KEDA ignores.

/// The state of one aspect of the object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of condition: Ready, Active, Fallback, Paused or HPAActive.
    #[serde(rename = "type")]
    pub type_: ConditionType,
    /// Status of the condition: True, False or Unknown.
    pub status: ConditionStatus,
    /// One-word CamelCase reason for the condition's last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable details about the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When `status` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

/// Reported activity of one trigger.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerActivityStatus {
    /// Whether the trigger's value is above its activation threshold.
    #[serde(default)]
    pub is_active: bool,
}

/// Group, version, kind and resource of a scale target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupVersionKindResource {
    /// API group, empty for the core group.
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural resource name.
    pub resource: String,
}

string_enum! {
    /// Health of one metric.
    pub enum HealthStatusType {
        /// The last query succeeded.
        Happy = "Happy",
        /// The last query failed.
        Failing = "Failing",
    }
}

/// Health of one metric, used by fallback.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthStatus {
    /// Consecutive failed queries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_failures: Option<i32>,
    /// Happy or Failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<HealthStatusType>,
}

/// Finds the condition of the given type.
pub fn find_condition<'a>(
    conditions: &'a [Condition],
    type_: &ConditionType,
) -> Option<&'a Condition> {
    conditions.iter().find(|c| &c.type_ == type_)
}
