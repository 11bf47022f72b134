//! Manifests in the shapes KEDA's v2.20 documentation shows are accepted: the smallest
//! ScaledObject, every documented option, the documented fallback and scaling-modifier forms,
//! ScaledJob options, and each authentication reference form.

// Test helpers, like tests, fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ringscale_api::manifest;
use rstest::rstest;

#[rstest]
#[case::smallest_scaled_object(
    "
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: app}
spec:
  scaleTargetRef: {name: app}
  triggers:
  - type: rabbitmq
    metadata: {queueName: hello, host: RabbitMqHost, queueLength: '5'}
"
)]
#[case::all_documented_top_level_options(
    "
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: app
  annotations:
    scaledobject.keda.sh/transfer-hpa-ownership: 'true'
    validations.keda.sh/hpa-ownership: 'true'
    autoscaling.keda.sh/paused: 'true'
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: app, envSourceContainerName: main}
  pollingInterval: 30
  cooldownPeriod: 300
  initialCooldownPeriod: 0
  idleReplicaCount: 0
  minReplicaCount: 1
  maxReplicaCount: 100
  fallback: {failureThreshold: 3, replicas: 6, behavior: static}
  advanced:
    restoreToOriginalReplicaCount: false
    horizontalPodAutoscalerConfig:
      name: app-hpa
      behavior:
        scaleDown:
          stabilizationWindowSeconds: 300
          tolerance: '0.05'
          policies: [{type: Percent, value: 100, periodSeconds: 15}]
  triggers:
  - type: prometheus
    metadata: {serverAddress: 'http://prometheus:9090', query: 'sum(up)', threshold: '10'}
"
)]
#[case::fallback_through_scaling_modifiers("
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: app}
spec:
  scaleTargetRef: {name: app}
  advanced:
    scalingModifiers: {formula: best_metric ?? slower_metric ?? metric_backup ?? 8, target: '2'}
  fallback: {failureThreshold: 3, replicas: 10, behavior: scalingModifiers}
  triggers:
  - {type: prometheus, name: best_metric, metadata: {serverAddress: 'http://p:9090', query: a, threshold: '1'}}
  - {type: prometheus, name: slower_metric, metadata: {serverAddress: 'http://p:9090', query: b, threshold: '1'}}
  - {type: metrics-api, name: metric_backup, metadata: {url: 'http://api/stats', valueLocation: queue.size, targetValue: '1'}}
")]
#[case::composite_average_with_activation("
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: app}
spec:
  scaleTargetRef: {name: app}
  advanced:
    scalingModifiers:
      formula: (trig_one + trig_two) / 2
      target: '5'
      activationTarget: '2'
      metricType: Value
  triggers:
  - {type: kubernetes-workload, name: trig_one, metadata: {podSelector: 'pod=workload-test'}}
  - {type: metrics-api, name: trig_two, metadata: {url: 'https://mockbin.org/bin/x', valueLocation: tasks, targetValue: '2'}}
")]
#[case::cluster_authentication_reference(
    "
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: app, namespace: team}
spec:
  scaleTargetRef: {name: app}
  triggers:
  - type: redis
    metadata: {address: 'redis:6379', listName: work}
    authenticationRef: {name: shared-redis, kind: ClusterTriggerAuthentication}
"
)]
#[case::documented_scaled_job(
    "
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata:
  name: jobs
  labels: {my-label: value}
  annotations: {autoscaling.keda.sh/paused: 'true', my-annotation: value}
spec:
  jobTargetRef:
    parallelism: 1
    completions: 1
    activeDeadlineSeconds: 600
    backoffLimit: 6
    template:
      spec:
        containers: [{name: worker, image: 'worker:1'}]
        restartPolicy: Never
  pollingInterval: 30
  successfulJobsHistoryLimit: 5
  failedJobsHistoryLimit: 5
  envSourceContainerName: worker
  minReplicaCount: 10
  maxReplicaCount: 100
  rollout: {strategy: gradual, propagationPolicy: foreground}
  scalingStrategy:
    strategy: custom
    customScalingQueueLengthDeduction: 1
    customScalingRunningJobPercentage: '0.5'
    pendingPodConditions: [Ready, PodScheduled, AnyOtherCustomPodCondition]
    multipleScalersCalculation: max
  triggers:
  - type: rabbitmq
    metadata: {queueName: worker_queue, hostFromEnv: RABBITMQ_URL, mode: QueueLength, value: '1'}
"
)]
#[case::eager_scaled_job(
    "
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata: {name: jobs}
spec:
  jobTargetRef:
    template:
      spec:
        containers: [{name: w, image: 'w:1'}]
        restartPolicy: OnFailure
  scalingStrategy: {strategy: eager}
  triggers:
  - {type: redis, metadata: {address: 'redis:6379', listName: q}}
"
)]
#[case::scaled_job_without_restart_policy(
    "
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata: {name: jobs}
spec:
  jobTargetRef:
    template:
      spec:
        containers: [{name: w, image: 'w:1'}]
  triggers:
  - {type: redis, metadata: {address: 'redis:6379', listName: q}}
"
)]
#[case::authentication_with_pod_identity_none(
    "
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: auth, namespace: default}
spec:
  podIdentity: {provider: none}
  secretTargetRef:
  - {parameter: connectionString, name: my-secret, key: connection}
  env:
  - {parameter: region, name: MY_ENV_VAR}
"
)]
#[case::cluster_authentication_without_namespace(
    "
apiVersion: keda.sh/v1alpha1
kind: ClusterTriggerAuthentication
metadata: {name: shared}
spec:
  secretTargetRef:
  - {parameter: host, name: rabbitmq, key: host}
  boundServiceAccountToken:
  - {parameter: token, serviceAccountName: reader}
"
)]
fn documented_manifest_is_accepted(#[case] text: &str) {
    let docs = manifest::parse(text).expect("parses");
    for doc in &docs {
        let verdict = manifest::judge(doc);
        assert!(verdict.valid, "{verdict:#?}");
    }
}
