//! Each invalid manifest is reported with the field path and the rule it breaks.
//!
//! A case starts from a valid object of its kind, applies a JSON merge patch (RFC 7386; `null`
//! removes a field, lists are replaced), and expects one problem at `path` whose message
//! contains `rule`.

// Test helpers, like tests, fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ringscale_api::manifest;
use rstest::rstest;
use serde_json::Value;

const SCALED_OBJECT: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: worker, namespace: apps}
spec:
  scaleTargetRef: {name: worker}
  triggers:
    - type: redis
      name: queue
      metadata: {address: "redis:6379", listName: jobs}
"#;

const SCALED_JOB: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata: {name: batch, namespace: apps}
spec:
  jobTargetRef:
    template:
      spec:
        restartPolicy: Never
        containers: [{name: main, image: "busybox:1.36"}]
  triggers:
    - type: redis
      metadata: {address: "redis:6379", listName: jobs}
"#;

const TRIGGER_AUTH: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: creds, namespace: apps}
spec:
  secretTargetRef:
    - {parameter: password, name: redis, key: password}
"#;

const CLUSTER_TRIGGER_AUTH: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: ClusterTriggerAuthentication
metadata: {name: shared}
spec:
  secretTargetRef:
    - {parameter: password, name: redis, key: password}
"#;

fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(&key);
                } else {
                    merge(target.entry(key).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch,
    }
}

fn judge(base: &str, patch: &str) -> manifest::Judgement {
    let mut value = manifest::parse(base).expect("base parses").remove(0).value;
    let patch = manifest::parse(patch)
        .expect("patch parses")
        .remove(0)
        .value;
    merge(&mut value, patch);
    let yaml = serde_saphyr::to_string(&value).expect("renders");
    let doc = manifest::parse(&yaml)
        .expect("patched object parses")
        .remove(0);
    manifest::judge(&doc)
}

#[rstest]
#[case::scaled_object(SCALED_OBJECT)]
#[case::scaled_job(SCALED_JOB)]
#[case::trigger_authentication(TRIGGER_AUTH)]
#[case::cluster_trigger_authentication(CLUSTER_TRIGGER_AUTH)]
fn bases_are_valid(#[case] base: &str) {
    let verdict = judge(base, "{}");
    assert!(verdict.valid && verdict.warnings.is_empty(), "{verdict:#?}");
}

#[rstest]
// ScaledObject: replica bounds
#[case::min_exceeds_max(
    SCALED_OBJECT,
    "spec: {minReplicaCount: 5, maxReplicaCount: 3}",
    "spec.minReplicaCount",
    "spec.minReplicaCount (5) must not exceed spec.maxReplicaCount (3)"
)]
#[case::min_exceeds_default_max(
    SCALED_OBJECT,
    "spec: {minReplicaCount: 150}",
    "spec.minReplicaCount",
    "must not exceed spec.maxReplicaCount (100, the default)"
)]
#[case::idle_not_below_min(
    SCALED_OBJECT,
    "spec: {minReplicaCount: 2, idleReplicaCount: 2}",
    "spec.idleReplicaCount",
    "spec.idleReplicaCount (2) must be less than spec.minReplicaCount (2)"
)]
#[case::idle_without_min(
    SCALED_OBJECT,
    "spec: {idleReplicaCount: 0}",
    "spec.idleReplicaCount",
    "must be less than spec.minReplicaCount (0)"
)]
#[case::negative_min(
    SCALED_OBJECT,
    "spec: {minReplicaCount: -1}",
    "spec.minReplicaCount",
    "must be greater than or equal to 0, got -1"
)]
#[case::zero_max(
    SCALED_OBJECT,
    "spec: {maxReplicaCount: 0}",
    "spec.maxReplicaCount",
    "must be greater than or equal to 1, got 0"
)]
#[case::negative_cooldown(
    SCALED_OBJECT,
    "spec: {cooldownPeriod: -5}",
    "spec.cooldownPeriod",
    "must be greater than or equal to 0, got -5"
)]
#[case::zero_polling_interval(
    SCALED_OBJECT,
    "spec: {pollingInterval: 0}",
    "spec.pollingInterval",
    "must be greater than or equal to 1, got 0"
)]
#[case::out_of_int32(
    SCALED_OBJECT,
    "spec: {maxReplicaCount: 3000000000}",
    "spec.maxReplicaCount",
    "does not fit in int32"
)]
// ScaledObject: structure
#[case::no_triggers(
    SCALED_OBJECT,
    "spec: {triggers: []}",
    "spec.triggers",
    "must have at least 1 item(s), got 0"
)]
#[case::missing_triggers(
    SCALED_OBJECT,
    "spec: {triggers: null}",
    "spec.triggers",
    "required value is missing"
)]
#[case::missing_target_name(
    SCALED_OBJECT,
    "spec: {scaleTargetRef: {name: null, kind: Deployment}}",
    "spec.scaleTargetRef.name",
    "required value is missing"
)]
#[case::empty_target_name(
    SCALED_OBJECT,
    "spec: {scaleTargetRef: {name: ''}}",
    "spec.scaleTargetRef.name",
    "must be at least 1 character(s) long"
)]
#[case::bad_target_api_version(
    SCALED_OBJECT,
    "spec: {scaleTargetRef: {apiVersion: 'apps/v1/extra'}}",
    "spec.scaleTargetRef.apiVersion",
    "is not of the form <group>/<version>"
)]
#[case::unknown_field(
    SCALED_OBJECT,
    "spec: {pollingIntervall: 10}",
    "spec.pollingIntervall",
    "unknown field \"pollingIntervall\""
)]
#[case::unquoted_metadata_value(
    SCALED_OBJECT,
    "spec: {triggers: [{type: redis, metadata: {listName: jobs, listLength: 5}}]}",
    "spec.triggers[0].metadata.listLength",
    "must be of type string, got integer 5"
)]
#[case::wrong_api_version(
    SCALED_OBJECT,
    "apiVersion: keda.sh/v1",
    "apiVersion",
    "\"keda.sh/v1\" is not served"
)]
#[case::unknown_kind(
    SCALED_OBJECT,
    "kind: ScaledDeployment",
    "kind",
    "has no kind \"ScaledDeployment\""
)]
#[case::invalid_name(
    SCALED_OBJECT,
    "metadata: {name: Orders_Worker}",
    "metadata.name",
    "is not a lowercase RFC 1123 subdomain"
)]
#[case::invalid_namespace(
    SCALED_OBJECT,
    "metadata: {namespace: team.a}",
    "metadata.namespace",
    "is not a lowercase RFC 1123 label"
)]
#[case::paused_replicas_not_a_number(
    SCALED_OBJECT,
    "metadata: {annotations: {autoscaling.keda.sh/paused-replicas: lots}}",
    "metadata.annotations[autoscaling.keda.sh/paused-replicas]",
    "is not a replica count"
)]
// ScaledObject: triggers
#[case::unknown_trigger_type(
    SCALED_OBJECT,
    "spec: {triggers: [{type: reddis, metadata: {listName: jobs}}]}",
    "spec.triggers[0].type",
    "unknown trigger type \"reddis\" (did you mean \"redis\"?)"
)]
#[case::duplicate_trigger_names(
    SCALED_OBJECT,
    "spec: {triggers: [{type: redis, name: q, metadata: {listName: a}}, {type: redis, name: q, metadata: {listName: b}}]}",
    "spec.triggers[1].name",
    "trigger name \"q\" is already used by spec.triggers[0]"
)]
#[case::utilization_on_external(
    SCALED_OBJECT,
    "spec: {triggers: [{type: redis, metricType: Utilization, metadata: {listName: a}}]}",
    "spec.triggers[0].metricType",
    "Utilization is only supported by cpu and memory triggers"
)]
#[case::value_on_cpu(
    SCALED_OBJECT,
    "spec: {minReplicaCount: 1, triggers: [{type: cpu, metricType: Value, metadata: {value: '50'}}]}",
    "spec.triggers[0].metricType",
    "cpu triggers support AverageValue and Utilization, not Value"
)]
#[case::unknown_metric_type(
    SCALED_OBJECT,
    "spec: {triggers: [{type: redis, metricType: Average, metadata: {listName: a}}]}",
    "spec.triggers[0].metricType",
    "unsupported metricType \"Average\""
)]
#[case::cached_cron(
    SCALED_OBJECT,
    "spec: {triggers: [{type: cron, useCachedMetrics: true, metadata: {timezone: UTC, start: '0 8 * * *', end: '0 9 * * *', desiredReplicas: '2'}}]}",
    "spec.triggers[0].useCachedMetrics",
    "useCachedMetrics is not supported for \"cron\" triggers"
)]
#[case::cached_memory(
    SCALED_OBJECT,
    "spec: {minReplicaCount: 1, triggers: [{type: memory, useCachedMetrics: true, metadata: {value: 1Gi}}]}",
    "spec.triggers[0].useCachedMetrics",
    "not supported for \"memory\" triggers"
)]
#[case::resource_only_scale_to_zero(
    SCALED_OBJECT,
    "spec: {triggers: [{type: cpu, metricType: Utilization, metadata: {value: '60'}}]}",
    "spec.minReplicaCount",
    "cannot scale to zero"
)]
#[case::bad_auth_kind(
    SCALED_OBJECT,
    "spec: {triggers: [{type: redis, metadata: {listName: a}, authenticationRef: {name: creds, kind: Secret}}]}",
    "spec.triggers[0].authenticationRef.kind",
    "unsupported kind \"Secret\""
)]
// ScaledObject: fallback and scaling modifiers
#[case::fallback_on_resource_triggers(
    SCALED_OBJECT,
    "spec: {minReplicaCount: 1, fallback: {failureThreshold: 3, replicas: 2}, triggers: [{type: cpu, metricType: Utilization, metadata: {value: '60'}}]}",
    "spec.fallback",
    "fallback is not supported when every trigger is cpu or memory"
)]
#[case::fallback_unknown_behavior(
    SCALED_OBJECT,
    "spec: {fallback: {failureThreshold: 3, replicas: 2, behavior: sometimes}}",
    "spec.fallback.behavior",
    "unsupported value \"sometimes\""
)]
#[case::fallback_negative_replicas(
    SCALED_OBJECT,
    "spec: {fallback: {failureThreshold: 3, replicas: -2}}",
    "spec.fallback.replicas",
    "must be greater than or equal to 0, got -2"
)]
#[case::fallback_missing_threshold(
    SCALED_OBJECT,
    "spec: {fallback: {replicas: 2}}",
    "spec.fallback.failureThreshold",
    "required value is missing"
)]
#[case::fallback_modifiers_without_formula(
    SCALED_OBJECT,
    "spec: {fallback: {failureThreshold: 3, replicas: 2, behavior: scalingModifiers}}",
    "spec.fallback.behavior",
    "requires spec.advanced.scalingModifiers.formula"
)]
#[case::modifiers_without_target(
    SCALED_OBJECT,
    "spec: {advanced: {scalingModifiers: {formula: queue * 2}}}",
    "spec.advanced.scalingModifiers.target",
    "target is required"
)]
#[case::modifiers_without_formula(
    SCALED_OBJECT,
    "spec: {advanced: {scalingModifiers: {target: '5'}}}",
    "spec.advanced.scalingModifiers.formula",
    "formula is required"
)]
#[case::modifiers_unknown_trigger(
    SCALED_OBJECT,
    "spec: {advanced: {scalingModifiers: {formula: queue + backlog, target: '5'}}}",
    "spec.advanced.scalingModifiers.formula",
    "formula uses \"backlog\", which is not the name of a trigger"
)]
#[case::modifiers_syntax_error(
    SCALED_OBJECT,
    "spec: {advanced: {scalingModifiers: {formula: 'queue +* 2', target: '5'}}}",
    "spec.advanced.scalingModifiers.formula",
    "formula does not parse"
)]
#[case::modifiers_boolean_result(
    SCALED_OBJECT,
    "spec: {advanced: {scalingModifiers: {formula: queue > 2, target: '5'}}}",
    "spec.advanced.scalingModifiers.formula",
    "formula must return a number"
)]
#[case::modifiers_bad_target(
    SCALED_OBJECT,
    "spec: {advanced: {scalingModifiers: {formula: queue, target: five}}}",
    "spec.advanced.scalingModifiers.target",
    "\"five\" is not a positive number"
)]
#[case::modifiers_utilization(
    SCALED_OBJECT,
    "spec: {advanced: {scalingModifiers: {formula: queue, target: '5', metricType: Utilization}}}",
    "spec.advanced.scalingModifiers.metricType",
    "unsupported value \"Utilization\""
)]
// ScaledObject: HPA settings
#[case::hpa_bad_policy_type(
    SCALED_OBJECT,
    "spec: {advanced: {horizontalPodAutoscalerConfig: {behavior: {scaleDown: {policies: [{type: Replicas, value: 1, periodSeconds: 60}]}}}}}",
    "spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.policies[0].type",
    "unsupported value \"Replicas\""
)]
#[case::hpa_window_too_long(
    SCALED_OBJECT,
    "spec: {advanced: {horizontalPodAutoscalerConfig: {behavior: {scaleUp: {stabilizationWindowSeconds: 7200, policies: [{type: Pods, value: 1, periodSeconds: 60}]}}}}}",
    "spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleUp.stabilizationWindowSeconds",
    "must be between 0 and 3600, got 7200"
)]
#[case::hpa_bad_name(
    SCALED_OBJECT,
    "spec: {advanced: {horizontalPodAutoscalerConfig: {name: My_HPA}}}",
    "spec.advanced.horizontalPodAutoscalerConfig.name",
    "is not a lowercase RFC 1123 subdomain"
)]
// ScaledJob
#[case::job_restart_always(
    SCALED_JOB,
    "spec: {jobTargetRef: {template: {spec: {restartPolicy: Always}}}}",
    "spec.jobTargetRef.template.spec.restartPolicy",
    "unsupported value \"Always\" for a Job"
)]
#[case::job_without_template(
    SCALED_JOB,
    "spec: {jobTargetRef: {template: null, backoffLimit: 2}}",
    "spec.jobTargetRef.template",
    "required value is missing"
)]
#[case::job_without_containers(
    SCALED_JOB,
    "spec: {jobTargetRef: {template: {spec: {containers: []}}}}",
    "spec.jobTargetRef.template.spec.containers",
    "at least one container"
)]
#[case::job_unknown_strategy(
    SCALED_JOB,
    "spec: {scalingStrategy: {strategy: fastest}}",
    "spec.scalingStrategy.strategy",
    "unsupported value \"fastest\""
)]
#[case::job_bad_percentage(
    SCALED_JOB,
    "spec: {scalingStrategy: {strategy: custom, customScalingRunningJobPercentage: half}}",
    "spec.scalingStrategy.customScalingRunningJobPercentage",
    "\"half\" is not a non-negative number"
)]
#[case::job_unknown_calculation(
    SCALED_JOB,
    "spec: {scalingStrategy: {multipleScalersCalculation: median}}",
    "spec.scalingStrategy.multipleScalersCalculation",
    "unsupported value \"median\""
)]
#[case::job_unknown_propagation(
    SCALED_JOB,
    "spec: {rollout: {propagationPolicy: orphan}}",
    "spec.rollout.propagationPolicy",
    "unsupported value \"orphan\""
)]
#[case::job_cpu_trigger(
    SCALED_JOB,
    "spec: {triggers: [{type: cpu, metadata: {value: '50'}}]}",
    "spec.triggers[0].type",
    "cpu triggers need an HPA"
)]
#[case::job_zero_polling(
    SCALED_JOB,
    "spec: {pollingInterval: 0}",
    "spec.pollingInterval",
    "must be greater than or equal to 1, got 0"
)]
#[case::job_unknown_env_container(
    SCALED_JOB,
    "spec: {envSourceContainerName: sidecar}",
    "spec.envSourceContainerName",
    "no container named \"sidecar\""
)]
// TriggerAuthentication and ClusterTriggerAuthentication
#[case::ta_file_path(
    TRIGGER_AUTH,
    "spec: {filePath: [{parameter: apiKey, path: keys/api}]}",
    "spec.filePath",
    "filePath is only supported by ClusterTriggerAuthentication"
)]
#[case::cta_file_path_escapes_root(
    CLUSTER_TRIGGER_AUTH,
    "spec: {filePath: [{parameter: apiKey, path: ../../etc/shadow}]}",
    "spec.filePath[0].path",
    "must be a relative path that stays inside the file-auth root"
)]
#[case::ta_unknown_provider(
    TRIGGER_AUTH,
    "spec: {podIdentity: {provider: azure}}",
    "spec.podIdentity.provider",
    "unsupported value \"azure\""
)]
#[case::ta_role_with_workload_owner(
    TRIGGER_AUTH,
    "spec: {podIdentity: {provider: aws, roleArn: 'arn:aws:iam::1:role/r', identityOwner: workload}}",
    "spec.podIdentity.roleArn",
    "roleArn cannot be set when identityOwner is workload"
)]
#[case::ta_tenant_without_identity(
    TRIGGER_AUTH,
    "spec: {podIdentity: {provider: azure-workload, identityTenantId: t}}",
    "spec.podIdentity.identityId",
    "identityTenantId requires identityId"
)]
#[case::ta_missing_secret_key(
    TRIGGER_AUTH,
    "spec: {secretTargetRef: [{parameter: password, name: redis}]}",
    "spec.secretTargetRef[0].key",
    "required value is missing"
)]
#[case::ta_empty_parameter(
    TRIGGER_AUTH,
    "spec: {env: [{parameter: '', name: REDIS_PASSWORD}]}",
    "spec.env[0].parameter",
    "parameter must not be empty"
)]
#[case::ta_vault_kubernetes_without_role(
    TRIGGER_AUTH,
    "spec: {hashiCorpVault: {address: 'https://vault:8200', authentication: kubernetes, mount: kubernetes, secrets: [{parameter: p, path: s, key: k}]}}",
    "spec.hashiCorpVault.role",
    "kubernetes authentication needs a role"
)]
#[case::ta_vault_unknown_auth(
    TRIGGER_AUTH,
    "spec: {hashiCorpVault: {address: 'https://vault:8200', authentication: ldap, secrets: [{parameter: p, path: s, key: k}]}}",
    "spec.hashiCorpVault.authentication",
    "unsupported value \"ldap\""
)]
#[case::ta_key_vault_without_credentials(
    TRIGGER_AUTH,
    "spec: {azureKeyVault: {vaultUri: 'https://v.vault.azure.net', secrets: [{parameter: p, name: conn}]}}",
    "spec.azureKeyVault.credentials",
    "credentials or podIdentity is required"
)]
#[case::ta_private_cloud_without_urls(
    TRIGGER_AUTH,
    "spec: {azureKeyVault: {vaultUri: 'https://v', podIdentity: {provider: azure-workload}, cloud: {type: Private}, secrets: [{parameter: p, name: conn}]}}",
    "spec.azureKeyVault.cloud.keyVaultResourceURL",
    "a Private cloud needs keyVaultResourceURL"
)]
#[case::ta_unknown_oauth_type(
    TRIGGER_AUTH,
    "spec: {oauth2: {type: password, clientId: c, tokenUrl: 'https://t', clientSecret: {valueFrom: {secretKeyRef: {name: s, key: k}}}}}",
    "spec.oauth2.type",
    "unsupported value \"password\""
)]
fn invalid_manifest_is_reported_at_its_path(
    #[case] base: &str,
    #[case] patch: &str,
    #[case] path: &str,
    #[case] rule: &str,
) {
    let verdict = judge(base, patch);
    assert!(
        !verdict.valid,
        "expected the object to be invalid: {verdict:#?}"
    );
    assert!(
        verdict
            .problems
            .iter()
            .any(|p| p.path.as_str() == path && p.message.contains(rule)),
        "expected a problem at {path} containing {rule:?}, got:\n{}",
        verdict
            .problems
            .iter()
            .map(|p| format!("  {}: {}", p.path, p.message))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn all_problems_of_one_object_are_reported_together() {
    let verdict = judge(
        SCALED_OBJECT,
        "spec: {minReplicaCount: 5, maxReplicaCount: 3, pollingInterval: 0, triggers: [{type: reddis, metricType: Utilization, metadata: {listLength: 5}}]}",
    );
    let paths: Vec<&str> = verdict.problems.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "spec.minReplicaCount",
        "spec.pollingInterval",
        "spec.triggers[0].type",
        "spec.triggers[0].metricType",
        "spec.triggers[0].metadata.listLength",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {paths:?}"
        );
    }
}

#[test]
fn problems_carry_the_line_of_their_field() {
    let text = "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata:\n  name: w\nspec:\n  scaleTargetRef:\n    name: w\n  pollingInterval: 0\n  triggers:\n    - type: redis\n      metadata:\n        listName: a\n";
    let doc = manifest::parse(text).unwrap().remove(0);
    let verdict = manifest::judge(&doc);
    let problem = verdict
        .problems
        .iter()
        .find(|p| p.path.as_str() == "spec.pollingInterval")
        .expect("reported");
    assert_eq!(problem.line, 8);
}

#[test]
fn warnings_do_not_make_an_object_invalid() {
    let verdict = judge(
        SCALED_OBJECT,
        "metadata: {annotations: {autoscaling.keda.sh/paused: 'yes'}}",
    );
    assert!(verdict.valid);
    assert_eq!(verdict.warnings.len(), 1);
    assert!(verdict.warnings[0].message.contains("treat it as \"true\""));
}
