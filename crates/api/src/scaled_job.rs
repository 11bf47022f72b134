//! `ScaledJob`: one Kubernetes Job per unit of queued work.

// Each `printcolumn(...)` of the kube derive repeats the keys `name`, `type_` and `json_path`.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, ScaleTrigger, TriggerActivityStatus};
use crate::enums::string_enum;
use crate::scaled_object::secs;
use crate::verbatim::JobTemplate;

/// Default `pollingInterval` in seconds.
pub const DEFAULT_POLLING_INTERVAL: i32 = 30;
/// Default `successfulJobsHistoryLimit` and `failedJobsHistoryLimit`.
pub const DEFAULT_HISTORY_LIMIT: i32 = 100;
/// Default `minReplicaCount`.
pub const DEFAULT_MIN_REPLICA_COUNT: i32 = 0;
/// Default `maxReplicaCount`.
pub const DEFAULT_MAX_REPLICA_COUNT: i32 = 100;

/// Specification of a ScaledJob.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "ScaledJob",
    plural = "scaledjobs",
    shortname = "sj",
    namespaced,
    status = "ScaledJobStatus",
    doc = "ScaledJob runs Kubernetes Jobs in proportion to queued events.",
    derive = "PartialEq",
    crates(
        kube_core = "::kube_core",
        k8s_openapi = "::k8s_openapi",
        schemars = "::schemars",
        serde = "::serde",
        serde_json = "::serde_json"
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
#[serde(rename_all = "camelCase")]
pub struct ScaledJobSpec {
    /// batch/v1 JobSpec used as the template of every Job created; passed through as written.
    pub job_target_ref: JobTemplate,
    /// Seconds between two polls of every trigger. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polling_interval: Option<i32>,
    /// Completed Jobs to keep. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successful_jobs_history_limit: Option<i32>,
    /// Failed Jobs to keep. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_jobs_history_limit: Option<i32>,
    /// Deprecated: use `rollout.strategy`. When set, it wins over `rollout.strategy`, as in
    /// KEDA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_strategy: Option<RolloutStrategy>,
    /// What happens to running Jobs when the ScaledJob changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// Container whose environment resolves `*FromEnv` parameters. Default: the first container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_source_container_name: Option<String>,
    /// Jobs kept running even without events. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replica_count: Option<i32>,
    /// Most Jobs created for one poll. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replica_count: Option<i32>,
    /// How the number of Jobs to create is computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_strategy: Option<ScalingStrategy>,
    /// Triggers that drive Job creation.
    pub triggers: Vec<ScaleTrigger>,
}

string_enum! {
    /// What happens to running Jobs when the ScaledJob changes.
    pub enum RolloutStrategy {
        /// Delete the Jobs of an older spec when the ScaledJob changes (KEDA's default; the
        /// name KEDA's CRD accepts).
        Immediate = "immediate",
        /// Leave running Jobs alone; only new Jobs use the new spec.
        Gradual = "gradual",
        /// As `immediate` (the name KEDA's documentation once used; KEDA's CRD refuses it).
        Default = "default",
    }
}

string_enum! {
    /// Deletion propagation used when a rollout deletes Jobs.
    pub enum PropagationPolicy {
        /// Delete dependents in the background (default).
        Background = "background",
        /// Delete dependents before the Job.
        Foreground = "foreground",
    }
}

/// Rollout settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// `immediate` (delete the Jobs of an older spec) or `gradual` (leave them). Default
    /// `immediate`; `default` is taken as `immediate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<RolloutStrategy>,
    /// `background` (default) or `foreground`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation_policy: Option<PropagationPolicy>,
}

string_enum! {
    /// Scaling strategy of a ScaledJob.
    pub enum ScalingStrategyKind {
        /// `maxScale - runningJobs`.
        Default = "default",
        /// `maxScale - deduction - runningJobs * percentage`.
        Custom = "custom",
        /// Accounts for pending Jobs; for queues that do not count locked messages.
        Accurate = "accurate",
        /// Fill every free slot up to maxReplicaCount.
        Eager = "eager",
    }
}

string_enum! {
    /// How the queue lengths of several triggers are combined.
    pub enum MultipleScalersCalculation {
        /// The largest (default).
        Max = "max",
        /// The smallest.
        Min = "min",
        /// The mean over active triggers.
        Avg = "avg",
        /// The sum over active triggers.
        Sum = "sum",
    }
}

/// Scaling strategy settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingStrategy {
    /// default, custom, accurate or eager. Default `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<ScalingStrategyKind>,
    /// For the custom strategy: subtracted from the queue-derived scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_scaling_queue_length_deduction: Option<i32>,
    /// For the custom strategy: fraction of running Jobs subtracted, e.g. "0.5".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_scaling_running_job_percentage: Option<String>,
    /// Pod conditions that must all be true for a Job not to count as pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_pod_conditions: Option<Vec<String>>,
    /// max (default), min, avg or sum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiple_scalers_calculation: Option<MultipleScalersCalculation>,
}

/// Observed state of a ScaledJob.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaledJobStatus {
    /// Last time a trigger was active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_time: Option<Time>,
    /// Ready, Active and Paused conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// `"true"` while paused (KEDA spells this field with a capital P).
    #[serde(rename = "Paused", default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
    /// Comma-separated trigger types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers_types: Option<String>,
    /// Comma-separated authentication references.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentications_types: Option<String>,
    /// Metric names of the triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_metric_names: Option<Vec<String>>,
    /// Per-trigger activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers_activity: Option<BTreeMap<String, TriggerActivityStatus>>,
}

impl ScaledJobSpec {
    /// Poll period in effect.
    pub fn polling_interval(&self) -> Duration {
        secs(self.polling_interval, DEFAULT_POLLING_INTERVAL)
    }

    /// `maxReplicaCount` in effect.
    pub fn max_replicas(&self) -> i32 {
        self.max_replica_count.unwrap_or(DEFAULT_MAX_REPLICA_COUNT)
    }

    /// `minReplicaCount` in effect; KEDA caps it at `maxReplicaCount`.
    pub fn min_replicas(&self) -> i32 {
        self.min_replica_count
            .unwrap_or(DEFAULT_MIN_REPLICA_COUNT)
            .min(self.max_replicas())
    }

    /// The rollout strategy in effect: the deprecated `rolloutStrategy` when set (KEDA's
    /// `deletePreviousVersionScaleJobs` reads it first), else `rollout.strategy`, else
    /// `immediate`.
    pub fn rollout_strategy(&self) -> RolloutStrategy {
        self.rollout_strategy
            .clone()
            .or_else(|| self.rollout.as_ref().and_then(|r| r.strategy.clone()))
            .unwrap_or(RolloutStrategy::Immediate)
    }
}
