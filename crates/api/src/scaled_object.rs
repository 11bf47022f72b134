//! `ScaledObject`: event-driven scaling of any workload with a `/scale` subresource.

// Each `printcolumn(...)` of the kube derive repeats the keys `name`, `type_` and `json_path`.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    Condition, GroupVersionKindResource, HealthStatus, MetricType, ScaleTrigger,
    TriggerActivityStatus,
};
use crate::enums::string_enum;
use crate::verbatim::HpaBehavior;

/// Default `pollingInterval` in seconds.
pub const DEFAULT_POLLING_INTERVAL: i32 = 30;
/// Default `cooldownPeriod` in seconds.
pub const DEFAULT_COOLDOWN_PERIOD: i32 = 300;
/// Default `initialCooldownPeriod` in seconds.
pub const DEFAULT_INITIAL_COOLDOWN_PERIOD: i32 = 0;
/// Default `minReplicaCount`.
pub const DEFAULT_MIN_REPLICA_COUNT: i32 = 0;
/// Default `maxReplicaCount`.
pub const DEFAULT_MAX_REPLICA_COUNT: i32 = 100;
/// Default `scaleTargetRef.apiVersion`.
pub const DEFAULT_SCALE_TARGET_API_VERSION: &str = "apps/v1";
/// Default `scaleTargetRef.kind`.
pub const DEFAULT_SCALE_TARGET_KIND: &str = "Deployment";

// Integer fields are `i32` (KEDA's `int32`) rather than unsigned: ringscale must read every
// object that KEDA's own CRDs admit, including out-of-range values, and report them through
// validation and the Ready condition instead of failing to decode the object. The getters
// (`polling_interval()`, ...) give the effective values.

/// Specification of a ScaledObject: what to scale, between which bounds, on which triggers.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "ScaledObject",
    plural = "scaledobjects",
    shortname = "so",
    namespaced,
    status = "ScaledObjectStatus",
    doc = "ScaledObject scales a Deployment, StatefulSet or any resource with a /scale subresource on events.",
    derive = "PartialEq",
    crates(
        kube_core = "::kube_core",
        k8s_openapi = "::k8s_openapi",
        schemars = "::schemars",
        serde = "::serde",
        serde_json = "::serde_json"
    ),
    printcolumn(
        name = "ScaleTargetKind",
        type_ = "string",
        json_path = ".status.scaleTargetKind"
    ),
    printcolumn(
        name = "ScaleTargetName",
        type_ = "string",
        json_path = ".spec.scaleTargetRef.name"
    ),
    printcolumn(name = "Min", type_ = "integer", json_path = ".spec.minReplicaCount"),
    printcolumn(name = "Max", type_ = "integer", json_path = ".spec.maxReplicaCount"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Active",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Active\")].status"
    ),
    printcolumn(
        name = "Fallback",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Fallback\")].status"
    ),
    printcolumn(
        name = "Paused",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Paused\")].status"
    ),
    printcolumn(
        name = "Triggers",
        type_ = "string",
        json_path = ".status.triggersTypes"
    ),
    printcolumn(
        name = "Authentications",
        type_ = "string",
        json_path = ".status.authenticationsTypes"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.minReplicaCount) || self.minReplicaCount <= (has(self.maxReplicaCount) ? self.maxReplicaCount : 100)",
    "message": "minReplicaCount must be less than or equal to maxReplicaCount"
}]))]
#[serde(rename_all = "camelCase")]
pub struct ScaledObjectSpec {
    /// The workload to scale, in the ScaledObject's namespace.
    pub scale_target_ref: ScaleTarget,
    /// Seconds between two polls of every trigger. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub polling_interval: Option<i32>,
    /// Seconds after creation before the target may first be scaled to zero. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub initial_cooldown_period: Option<i32>,
    /// Seconds after the last active poll before scaling to zero (or to idleReplicaCount).
    /// Default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub cooldown_period: Option<i32>,
    /// Replicas while no trigger is active; must be less than minReplicaCount (only 0 works
    /// reliably with the HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub idle_replica_count: Option<i32>,
    /// Lowest replica count. Default 0 (scale to zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_replica_count: Option<i32>,
    /// Highest replica count. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_replica_count: Option<i32>,
    /// HPA settings, restore-on-delete and scaling modifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advanced: Option<AdvancedConfig>,
    /// Triggers that drive scaling; at least one.
    #[schemars(length(min = 1))]
    pub triggers: Vec<ScaleTrigger>,
    /// Replicas to fall back to when triggers keep failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
}

/// Reference to the workload a ScaledObject scales.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTarget {
    /// Name of the workload.
    #[schemars(length(min = 1))]
    pub name: String,
    /// API version of the workload. Default apps/v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the workload. Default Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Container whose environment resolves `*FromEnv` parameters. Default: the first container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_source_container_name: Option<String>,
}

impl ScaleTarget {
    /// The API version in effect.
    pub fn effective_api_version(&self) -> &str {
        non_empty(self.api_version.as_deref()).unwrap_or(DEFAULT_SCALE_TARGET_API_VERSION)
    }

    /// The kind in effect.
    pub fn effective_kind(&self) -> &str {
        non_empty(self.kind.as_deref()).unwrap_or(DEFAULT_SCALE_TARGET_KIND)
    }
}

string_enum! {
    /// How the fallback replica count is chosen.
    pub enum FallbackBehavior {
        /// Always `fallback.replicas`.
        Static = "static",
        /// The current replica count.
        CurrentReplicas = "currentReplicas",
        /// The higher of the current count and `fallback.replicas`.
        CurrentReplicasIfHigher = "currentReplicasIfHigher",
        /// The lower of the current count and `fallback.replicas`.
        CurrentReplicasIfLower = "currentReplicasIfLower",
        /// Failing triggers enter the scaling-modifiers formula as nil.
        ScalingModifiers = "scalingModifiers",
    }
    schema_enum = true;
}

/// Fallback settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fallback {
    /// Consecutive failures of a metric after which its fallback value is served.
    #[schemars(range(min = 0))]
    pub failure_threshold: i32,
    /// Replicas the HPA should land on while falling back.
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// How the fallback replica count is chosen. Default static.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "static"))]
    pub behavior: Option<FallbackBehavior>,
}

impl Fallback {
    /// The behavior in effect.
    pub fn effective_behavior(&self) -> FallbackBehavior {
        self.behavior.clone().unwrap_or(FallbackBehavior::Static)
    }
}

/// Advanced scaling options.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdvancedConfig {
    /// Options for the generated HorizontalPodAutoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizontal_pod_autoscaler_config: Option<HorizontalPodAutoscalerConfig>,
    /// On deletion of the ScaledObject, scale the target back to the replica count it had
    /// before ringscale managed it. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_to_original_replica_count: Option<bool>,
    /// Combine the triggers' metrics with a formula into one composite metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_modifiers: Option<ScalingModifiers>,
}

/// Options for the generated HorizontalPodAutoscaler.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HorizontalPodAutoscalerConfig {
    /// autoscaling/v2 scaling behavior, copied to the HPA as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HpaBehavior>,
    /// Name of the HPA. Default `keda-hpa-<scaledobject name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A formula combining the triggers' metrics into the single metric `composite-metric`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingModifiers {
    /// Expression (expr language) over trigger names, e.g. `(queue + backlog) / 2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formula: Option<String>,
    /// Target value of the composite metric (a positive number, as a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Activation threshold of the composite metric (a number, as a string). Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_target: Option<String>,
    /// Metric type of the composite metric: AverageValue (default) or Value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["AverageValue", "Value"]))]
    pub metric_type: Option<MetricType>,
}

impl ScalingModifiers {
    /// Whether any field is set (KEDA treats an empty struct as "not used").
    pub fn is_used(&self) -> bool {
        self != &Self::default()
    }
}

/// Observed state of a ScaledObject.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaledObjectStatus {
    /// `<apiVersion>.<Kind>` of the scale target, e.g. `apps/v1.Deployment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_target_kind: Option<String>,
    /// Group, version, kind and resource of the scale target.
    #[serde(
        rename = "scaleTargetGVKR",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub scale_target_gvkr: Option<GroupVersionKindResource>,
    /// Replica count of the target before it was first scaled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_replica_count: Option<i32>,
    /// Last time a trigger was active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_time: Option<Time>,
    /// External metric names the HPA queries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_metric_names: Option<Vec<String>>,
    /// Resource metric names (cpu, memory) of the HPA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_metric_names: Option<Vec<String>>,
    /// Name of the composite scaler when scaling modifiers are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub composite_scaler_name: Option<String>,
    /// Ready, Active, Fallback and Paused conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// Per-metric health used by fallback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<BTreeMap<String, HealthStatus>>,
    /// Per-trigger activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers_activity: Option<BTreeMap<String, TriggerActivityStatus>>,
    /// Replica count set by the paused-replicas annotation, once applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_replica_count: Option<i32>,
    /// Name of the managed HPA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa_name: Option<String>,
    /// Comma-separated trigger types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers_types: Option<String>,
    /// Comma-separated authentication references.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentications_types: Option<String>,
}

impl ScaledObjectSpec {
    /// Poll period in effect.
    pub fn polling_interval(&self) -> Duration {
        secs(self.polling_interval, DEFAULT_POLLING_INTERVAL)
    }

    /// Cooldown period in effect.
    pub fn cooldown_period(&self) -> Duration {
        secs(self.cooldown_period, DEFAULT_COOLDOWN_PERIOD)
    }

    /// Initial cooldown period in effect.
    pub fn initial_cooldown_period(&self) -> Duration {
        secs(
            self.initial_cooldown_period,
            DEFAULT_INITIAL_COOLDOWN_PERIOD,
        )
    }

    /// `minReplicaCount` in effect.
    pub fn min_replicas(&self) -> i32 {
        self.min_replica_count.unwrap_or(DEFAULT_MIN_REPLICA_COUNT)
    }

    /// `maxReplicaCount` in effect.
    pub fn max_replicas(&self) -> i32 {
        self.max_replica_count.unwrap_or(DEFAULT_MAX_REPLICA_COUNT)
    }

    /// The HPA's `minReplicas`: `minReplicaCount` when positive, else 1.
    pub fn hpa_min_replicas(&self) -> i32 {
        match self.min_replica_count {
            Some(min) if min > 0 => min,
            _ => 1,
        }
    }

    /// The scaling modifiers, when set and not empty.
    pub fn scaling_modifiers(&self) -> Option<&ScalingModifiers> {
        self.advanced
            .as_ref()?
            .scaling_modifiers
            .as_ref()
            .filter(|m| m.is_used())
    }

    /// The HPA config, when set.
    pub fn hpa_config(&self) -> Option<&HorizontalPodAutoscalerConfig> {
        self.advanced
            .as_ref()?
            .horizontal_pod_autoscaler_config
            .as_ref()
    }

    /// Whether the target is restored to its original replica count on deletion.
    pub fn restore_to_original_replica_count(&self) -> bool {
        self.advanced
            .as_ref()
            .and_then(|a| a.restore_to_original_replica_count)
            .unwrap_or(false)
    }

    /// Whether every trigger is cpu or memory (such an object cannot scale to zero).
    pub fn only_resource_triggers(&self) -> bool {
        !self.triggers.is_empty() && self.triggers.iter().all(ScaleTrigger::is_resource)
    }
}

impl ScaledObject {
    /// Name of the HPA this ScaledObject manages.
    pub fn hpa_name(&self) -> String {
        let configured = self
            .spec
            .hpa_config()
            .and_then(|c| non_empty(c.name.as_deref()));
        match configured {
            Some(name) => name.to_owned(),
            None => {
                crate::names::default_hpa_name(self.metadata.name.as_deref().unwrap_or_default())
            }
        }
    }

    /// The composite metric's type when scaling modifiers are used.
    pub fn composite_metric_type(&self) -> Option<MetricType> {
        self.spec
            .scaling_modifiers()
            .map(|m| m.metric_type.clone().unwrap_or(MetricType::AverageValue))
    }
}

/// Converts an optional seconds field (negative values count as zero) to a duration.
pub(crate) fn secs(value: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(u64::try_from(value.unwrap_or(default)).unwrap_or(0))
}

pub(crate) fn non_empty(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.is_empty())
}
