//! Semantic rules of a ScaledObject, as KEDA's admission webhook and controller apply them.

use crate::common::MetricType;
use crate::scaled_object::{FallbackBehavior, ScaledObject, ScaledObjectSpec};

use super::formula;
use super::hpa;
use super::meta;
use super::problem::{FieldPath, Findings, ProblemKind};
use super::triggers::{at_least, check_annotations, check_triggers};

/// Every problem and warning of a ScaledObject.
pub fn check(so: &ScaledObject) -> Findings {
    let mut out = Findings::default();
    meta::check(&so.metadata, true, &mut out);
    check_annotations(so.metadata.annotations.as_ref(), &mut out);
    check_spec(&so.spec, &mut out);
    out
}

/// Every problem and warning of a ScaledObject spec.
pub fn check_spec(spec: &ScaledObjectSpec, out: &mut Findings) {
    let path = FieldPath::new("spec");
    check_scale_target(spec, &path.field("scaleTargetRef"), out);
    let lower_bounds = [
        (spec.polling_interval, 1, "pollingInterval"),
        (spec.cooldown_period, 0, "cooldownPeriod"),
        (spec.initial_cooldown_period, 0, "initialCooldownPeriod"),
        (spec.idle_replica_count, 0, "idleReplicaCount"),
        (spec.min_replica_count, 0, "minReplicaCount"),
        (spec.max_replica_count, 1, "maxReplicaCount"),
    ];
    for (value, min, field) in lower_bounds {
        at_least(value, min, path.field(field), out);
    }
    check_replica_bounds(spec, &path, out);
    check_triggers(&spec.triggers, &path.field("triggers"), out);
    if spec.only_resource_triggers() && spec.min_replica_count.unwrap_or(0) == 0 {
        out.invalid(
            path.field("minReplicaCount"),
            "a ScaledObject with only cpu and memory triggers cannot scale to zero; set minReplicaCount to 1 or more",
        );
    }
    check_fallback(spec, &path, out);
    check_scaling_modifiers(spec, &path.field("advanced").field("scalingModifiers"), out);
    if let Some(config) = spec.hpa_config() {
        let hpa_path = path
            .field("advanced")
            .field("horizontalPodAutoscalerConfig");
        if let Some(name) = config.name.as_deref().filter(|n| !n.is_empty())
            && let Some(why) = meta::dns1123_subdomain_error(name)
        {
            out.invalid(hpa_path.field("name"), why);
        }
        if let Some(behavior) = &config.behavior {
            hpa::check_behavior(behavior, &hpa_path.field("behavior"), out);
        }
    }
}

fn check_scale_target(spec: &ScaledObjectSpec, path: &FieldPath, out: &mut Findings) {
    let target = &spec.scale_target_ref;
    if target.name.is_empty() {
        out.required(
            path.field("name"),
            "the name of the workload to scale is required",
        );
    }
    if let Some(api_version) = target.api_version.as_deref().filter(|v| !v.is_empty()) {
        let parts: Vec<&str> = api_version.split('/').collect();
        let ok = match parts.as_slice() {
            [version] => !version.is_empty(),
            [group, version] => !group.is_empty() && !version.is_empty(),
            _ => false,
        };
        if !ok {
            out.invalid(
                path.field("apiVersion"),
                format!("{api_version:?} is not of the form <group>/<version> or <version>"),
            );
        }
    }
}

/// KEDA's bounds rule: the minimum is the HPA's minimum (an explicit 0 counts as 1, as KEDA's
/// `CheckReplicaCountBoundsAreValid` does), the maximum defaults to 100.
fn check_replica_bounds(spec: &ScaledObjectSpec, path: &FieldPath, out: &mut Findings) {
    let max = spec.max_replicas();
    let max_note = if spec.max_replica_count.is_some() {
        String::new()
    } else {
        ", the default".to_owned()
    };
    if let Some(min) = spec.min_replica_count
        && min > max
    {
        out.invalid(
            path.field("minReplicaCount"),
            format!("spec.minReplicaCount ({min}) must not exceed spec.maxReplicaCount ({max}{max_note})"),
        );
    }
    if let Some(idle) = spec.idle_replica_count {
        let min = if spec.min_replica_count.is_some() {
            spec.hpa_min_replicas()
        } else {
            0
        };
        if idle >= min {
            out.invalid(
                path.field("idleReplicaCount"),
                format!(
                    "spec.idleReplicaCount ({idle}) must be less than spec.minReplicaCount ({min})"
                ),
            );
        } else if idle != 0 {
            out.warn(
                path.field("idleReplicaCount"),
                "only idleReplicaCount 0 works reliably: the HPA cannot hold a non-zero count below its minimum",
            );
        }
    }
}

fn check_fallback(spec: &ScaledObjectSpec, path: &FieldPath, out: &mut Findings) {
    let Some(fallback) = &spec.fallback else {
        return;
    };
    let fb = path.field("fallback");
    at_least(
        Some(fallback.failure_threshold),
        0,
        fb.field("failureThreshold"),
        out,
    );
    at_least(Some(fallback.replicas), 0, fb.field("replicas"), out);
    match &fallback.behavior {
        Some(FallbackBehavior::Other(other)) => out.problem(
            ProblemKind::NotSupported,
            fb.field("behavior"),
            format!(
                "unsupported behavior {other:?}: supported values: {}",
                quoted(FallbackBehavior::KNOWN)
            ),
        ),
        Some(FallbackBehavior::ScalingModifiers)
            if spec.scaling_modifiers().is_none_or(|m| m.formula.is_none()) =>
        {
            out.invalid(
                fb.field("behavior"),
                "behavior scalingModifiers requires spec.advanced.scalingModifiers.formula",
            );
        }
        _ => {}
    }
    if spec.only_resource_triggers() {
        out.invalid(
            fb.clone(),
            "fallback is not supported when every trigger is cpu or memory (their metrics come from the metrics server)",
        );
    }
}

fn check_scaling_modifiers(spec: &ScaledObjectSpec, path: &FieldPath, out: &mut Findings) {
    let Some(modifiers) = spec.scaling_modifiers() else {
        return;
    };
    let formula = modifiers
        .formula
        .as_deref()
        .filter(|f| !f.trim().is_empty());
    match formula {
        None => out.required(
            path.field("formula"),
            "formula is required when scalingModifiers is used",
        ),
        Some(formula) => {
            let trigger_names: Vec<&str> = spec
                .triggers
                .iter()
                .filter(|t| !t.is_resource())
                .filter_map(|t| t.name.as_deref())
                .filter(|n| !n.is_empty())
                .collect();
            for err in formula::check(formula, &trigger_names) {
                out.invalid(path.field("formula"), err.to_string());
            }
        }
    }
    match modifiers.target.as_deref().filter(|t| !t.trim().is_empty()) {
        None => out.required(
            path.field("target"),
            "target is required when scalingModifiers is used",
        ),
        Some(target) => {
            if !target
                .trim()
                .parse::<f64>()
                .is_ok_and(|v| v.is_finite() && v > 0.0)
            {
                out.invalid(
                    path.field("target"),
                    format!("{target:?} is not a positive number"),
                );
            }
        }
    }
    if let Some(activation) = modifiers
        .activation_target
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        && !activation.trim().parse::<f64>().is_ok_and(f64::is_finite)
    {
        out.invalid(
            path.field("activationTarget"),
            format!("{activation:?} is not a number"),
        );
    }
    if let Some(metric_type) = &modifiers.metric_type
        && !matches!(metric_type, MetricType::AverageValue | MetricType::Value)
    {
        out.problem(
            ProblemKind::NotSupported,
            path.field("metricType"),
            format!(
                "unsupported metricType {:?}: supported values: \"AverageValue\", \"Value\"",
                metric_type.as_str()
            ),
        );
    }
    for (i, trigger) in spec.triggers.iter().enumerate() {
        if !trigger.is_resource() && trigger.name.as_deref().is_none_or(str::is_empty) {
            out.warn(
                FieldPath::new("spec.triggers").index(i).field("name"),
                "this trigger has no name, so the scalingModifiers formula cannot use it",
            );
        }
    }
}

fn quoted(values: &[&str]) -> String {
    values
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}
