//! Semantic rules of a ScaledJob.

use crate::scaled_job::{
    MultipleScalersCalculation, PropagationPolicy, RolloutStrategy, ScaledJob, ScaledJobSpec,
    ScalingStrategyKind,
};

use super::meta;
use super::problem::{FieldPath, Findings, ProblemKind};
use super::triggers::{at_least, check_annotations, check_triggers};

/// Every problem and warning of a ScaledJob.
pub fn check(sj: &ScaledJob) -> Findings {
    let mut out = Findings::default();
    meta::check(&sj.metadata, true, &mut out);
    check_annotations(sj.metadata.annotations.as_ref(), &mut out);
    check_spec(&sj.spec, &mut out);
    out
}

/// Every problem and warning of a ScaledJob spec.
pub fn check_spec(spec: &ScaledJobSpec, out: &mut Findings) {
    let path = FieldPath::new("spec");
    check_job_template(spec, &path.field("jobTargetRef"), out);
    let lower_bounds = [
        (spec.polling_interval, 1, "pollingInterval"),
        (
            spec.successful_jobs_history_limit,
            0,
            "successfulJobsHistoryLimit",
        ),
        (spec.failed_jobs_history_limit, 0, "failedJobsHistoryLimit"),
        (spec.min_replica_count, 0, "minReplicaCount"),
        (spec.max_replica_count, 0, "maxReplicaCount"),
    ];
    for (value, min, field) in lower_bounds {
        at_least(value, min, path.field(field), out);
    }
    if let (Some(min), Some(max)) = (spec.min_replica_count, spec.max_replica_count)
        && min > max
    {
        out.warn(
            path.field("minReplicaCount"),
            format!("spec.minReplicaCount ({min}) exceeds spec.maxReplicaCount ({max}); it is capped at {max}"),
        );
    }
    check_triggers(&spec.triggers, &path.field("triggers"), out);
    for (i, trigger) in spec.triggers.iter().enumerate() {
        if trigger.is_resource() {
            out.invalid(
                path.field("triggers").index(i).field("type"),
                format!(
                    "{} triggers need an HPA and cannot drive a ScaledJob",
                    trigger.type_
                ),
            );
        }
    }
    check_rollout(spec, &path, out);
    check_scaling_strategy(spec, &path.field("scalingStrategy"), out);
}

fn check_job_template(spec: &ScaledJobSpec, path: &FieldPath, out: &mut Findings) {
    let job = match spec.job_target_ref.typed() {
        Ok(job) => job,
        Err(err) => {
            out.invalid(
                path.clone(),
                format!("is not a valid batch/v1 JobSpec: {err}"),
            );
            return;
        }
    };
    let template = path.field("template").field("spec");
    let Some(pod) = job.template.spec else {
        out.required(template, "the Job template needs a pod spec");
        return;
    };
    if pod.containers.is_empty() {
        out.required(
            template.field("containers"),
            "the Job template needs at least one container",
        );
    }
    match pod.restart_policy.as_deref() {
        Some("Never" | "OnFailure") => {}
        Some(other) => out.problem(
            ProblemKind::NotSupported,
            template.field("restartPolicy"),
            format!(
                "unsupported value {other:?} for a Job: supported values: \"OnFailure\", \"Never\""
            ),
        ),
        // Unset is valid: the operator creates the Jobs with OnFailure, as KEDA's
        // `generateJobs` does.
        None => {}
    }
    if let Some(container) = spec
        .env_source_container_name
        .as_deref()
        .filter(|n| !n.is_empty())
        && !pod.containers.iter().any(|c| c.name == container)
    {
        out.invalid(
            FieldPath::new("spec.envSourceContainerName"),
            format!("the Job template has no container named {container:?}"),
        );
    }
}

fn check_rollout(spec: &ScaledJobSpec, path: &FieldPath, out: &mut Findings) {
    if let Some(strategy) = &spec.rollout_strategy {
        out.warn(
            path.field("rolloutStrategy"),
            "rolloutStrategy is deprecated; use rollout.strategy",
        );
        if let RolloutStrategy::Other(other) = strategy {
            not_supported(
                out,
                path.field("rolloutStrategy"),
                other,
                RolloutStrategy::KNOWN,
            );
        }
    }
    let Some(rollout) = &spec.rollout else { return };
    if let Some(RolloutStrategy::Other(other)) = &rollout.strategy {
        not_supported(
            out,
            path.field("rollout").field("strategy"),
            other,
            RolloutStrategy::KNOWN,
        );
    }
    if let Some(PropagationPolicy::Other(other)) = &rollout.propagation_policy {
        not_supported(
            out,
            path.field("rollout").field("propagationPolicy"),
            other,
            PropagationPolicy::KNOWN,
        );
    }
}

fn check_scaling_strategy(spec: &ScaledJobSpec, path: &FieldPath, out: &mut Findings) {
    let Some(strategy) = &spec.scaling_strategy else {
        return;
    };
    if let Some(ScalingStrategyKind::Other(other)) = &strategy.strategy {
        not_supported(
            out,
            path.field("strategy"),
            other,
            ScalingStrategyKind::KNOWN,
        );
    }
    if let Some(MultipleScalersCalculation::Other(other)) = &strategy.multiple_scalers_calculation {
        not_supported(
            out,
            path.field("multipleScalersCalculation"),
            other,
            MultipleScalersCalculation::KNOWN,
        );
    }
    if let Some(percentage) = strategy.custom_scaling_running_job_percentage.as_deref() {
        let ok = percentage
            .trim()
            .parse::<f64>()
            .is_ok_and(|p| p.is_finite() && p >= 0.0);
        if !ok {
            out.invalid(
                path.field("customScalingRunningJobPercentage"),
                format!("{percentage:?} is not a non-negative number"),
            );
        }
    }
    let custom = strategy.strategy == Some(ScalingStrategyKind::Custom);
    let has_custom_fields = strategy.custom_scaling_queue_length_deduction.is_some()
        || strategy.custom_scaling_running_job_percentage.is_some();
    if has_custom_fields && !custom {
        out.warn(
            path.clone(),
            "customScalingQueueLengthDeduction and customScalingRunningJobPercentage only apply to strategy \"custom\"",
        );
    }
    if custom && !has_custom_fields {
        out.warn(
            path.field("strategy"),
            "strategy \"custom\" without customScalingQueueLengthDeduction or customScalingRunningJobPercentage \
             behaves like \"default\"",
        );
    }
}

fn not_supported(out: &mut Findings, path: FieldPath, value: &str, known: &[&str]) {
    let list = known
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    out.problem(
        ProblemKind::NotSupported,
        path,
        format!("unsupported value {value:?}: supported values: {list}"),
    );
}
