//! Names KEDA gives its API group, annotations, labels, finalizer and generated objects.
//!
//! ringscale reads and writes exactly these names so that objects written by KEDA and by
//! ringscale are interchangeable.

/// API group of every kind in this crate.
pub const GROUP: &str = "keda.sh";
/// The one served version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of every kind in this crate.
pub const API_VERSION: &str = "keda.sh/v1alpha1";

/// Kind names.
pub const KIND_SCALED_OBJECT: &str = "ScaledObject";
/// Kind names.
pub const KIND_SCALED_JOB: &str = "ScaledJob";
/// Kind names.
pub const KIND_TRIGGER_AUTHENTICATION: &str = "TriggerAuthentication";
/// Kind names.
pub const KIND_CLUSTER_TRIGGER_AUTHENTICATION: &str = "ClusterTriggerAuthentication";

/// Finalizer placed on ScaledObjects and ScaledJobs while they are managed.
pub const FINALIZER: &str = "finalizer.keda.sh";

/// `"true"` (or any non-boolean value) stops the scale loop, deletes the HPA and freezes replicas.
pub const ANNOTATION_PAUSED: &str = "autoscaling.keda.sh/paused";
/// `"<n>"`: scale the target to n replicas, then pause. Wins over [`ANNOTATION_PAUSED`].
pub const ANNOTATION_PAUSED_REPLICAS: &str = "autoscaling.keda.sh/paused-replicas";
/// `"true"`: block scale-in (HPA scaleDown `selectPolicy: Disabled`, and no 1→0).
pub const ANNOTATION_PAUSED_SCALE_IN: &str = "autoscaling.keda.sh/paused-scale-in";
/// `"true"`: block scale-out (HPA scaleUp `selectPolicy: Disabled`, and no 0→1).
pub const ANNOTATION_PAUSED_SCALE_OUT: &str = "autoscaling.keda.sh/paused-scale-out";
/// `"true"`: treat every trigger as active.
pub const ANNOTATION_FORCE_ACTIVATION: &str = "autoscaling.keda.sh/force-activation";
/// `"true"`: adopt an existing HPA named in `advanced.horizontalPodAutoscalerConfig.name`.
pub const ANNOTATION_TRANSFER_HPA_OWNERSHIP: &str = "scaledobject.keda.sh/transfer-hpa-ownership";
/// `"false"` on an HPA: skip the one-HPA-per-target ownership check.
pub const ANNOTATION_VALIDATIONS_HPA_OWNERSHIP: &str = "validations.keda.sh/hpa-ownership";
/// Comma-separated label keys of the ScaledObject not copied onto its HPA.
pub const ANNOTATION_HPA_EXCLUDED_LABELS: &str = "scaledobject.keda.sh/hpa-excluded-labels";
/// Comma-separated label keys of the ScaledJob not copied onto its Jobs.
pub const ANNOTATION_JOB_EXCLUDED_LABELS: &str = "scaledjob.keda.sh/job-excluded-labels";

/// Label set on a ScaledObject (value: its name) and used as the external-metric selector.
pub const LABEL_SCALED_OBJECT_NAME: &str = "scaledobject.keda.sh/name";
/// Label set on Jobs created for a ScaledJob (value: its name).
pub const LABEL_SCALED_JOB_NAME: &str = "scaledjob.keda.sh/name";

/// Prefix of generated HPA names: `keda-hpa-<scaledobject>`.
pub const HPA_NAME_PREFIX: &str = "keda-hpa-";
/// Name of the external metric that replaces all others when `scalingModifiers` is used.
pub const COMPOSITE_METRIC_NAME: &str = "composite-metric";

/// Trigger types that become HPA `Resource` metrics rather than external metrics.
pub const RESOURCE_TRIGGER_TYPES: &[&str] = &["cpu", "memory"];

/// Trigger types whose values cannot be served from the metrics cache.
pub const UNCACHEABLE_TRIGGER_TYPES: &[&str] = &["cpu", "memory", "cron"];

/// Every trigger type KEDA documents for v2.20 (and the two that only KEDA's main branch has,
/// `clickhouse` and `gcp-spanner`, so that manifests for the next release are not rejected).
/// A trigger whose `type` is not in this list fails in KEDA with "no scaler found".
pub const KEDA_TRIGGER_TYPES: &[&str] = &[
    "activemq",
    "apache-iggy",
    "apache-kafka",
    "arangodb",
    "artemis-queue",
    "aws-cloudwatch",
    "aws-dynamodb",
    "aws-dynamodb-streams",
    "aws-kinesis-stream",
    "aws-sqs-queue",
    "azure-app-insights",
    "azure-blob",
    "azure-cosmosdb",
    "azure-data-explorer",
    "azure-eventhub",
    "azure-log-analytics",
    "azure-monitor",
    "azure-pipelines",
    "azure-queue",
    "azure-servicebus",
    "beanstalkd",
    "cassandra",
    "clickhouse",
    "couchdb",
    "cpu",
    "cron",
    "datadog",
    "dynatrace",
    "elastic-forecast",
    "elasticsearch",
    "etcd",
    "external",
    "external-push",
    "forgejo-runner",
    "gcp-cloudtasks",
    "gcp-pubsub",
    "gcp-spanner",
    "gcp-stackdriver",
    "gcp-storage",
    "github-runner",
    "gitlab-runner",
    "graphite",
    "huawei-cloudeye",
    "ibmmq",
    "influxdb",
    "ionos-monitoring",
    "kafka",
    "kubernetes-resource",
    "kubernetes-workload",
    "liiklus",
    "loki",
    "memory",
    "metrics-api",
    "mongodb",
    "mssql",
    "mysql",
    "nats-jetstream",
    "new-relic",
    "nsq",
    "opensearch",
    "openstack-metric",
    "openstack-swift",
    "postgresql",
    "predictkube",
    "prometheus",
    "pulsar",
    "rabbitmq",
    "redis",
    "redis-cluster",
    "redis-cluster-streams",
    "redis-sentinel",
    "redis-sentinel-streams",
    "redis-streams",
    "selenium-grid",
    "solace-direct-messaging",
    "solace-event-queue",
    "solarwinds",
    "solr",
    "splunk",
    "splunk-observability",
    "sumologic",
    "temporal",
];

/// Whether `trigger_type` becomes an HPA Resource metric (cpu or memory).
pub fn is_resource_trigger(trigger_type: &str) -> bool {
    RESOURCE_TRIGGER_TYPES.contains(&trigger_type)
}

/// Name of the HPA KEDA creates for a ScaledObject without an explicit HPA name.
pub fn default_hpa_name(scaled_object: &str) -> String {
    format!("{HPA_NAME_PREFIX}{scaled_object}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_type_list_is_sorted_and_unique() {
        let mut sorted = KEDA_TRIGGER_TYPES.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, KEDA_TRIGGER_TYPES);
    }

    #[test]
    fn default_hpa_name_has_keda_prefix() {
        assert_eq!(default_hpa_name("worker"), "keda-hpa-worker");
    }
}
