//! The API server's rules for an HPA `behavior`, checked before ringscale copies it into an HPA.

use k8s_openapi::api::autoscaling::v2::HPAScalingRules;

use crate::verbatim::HpaBehavior;

use super::problem::{FieldPath, Findings, ProblemKind};

/// Longest stabilization window the API server accepts, in seconds.
pub const MAX_STABILIZATION_WINDOW_SECONDS: i32 = 3600;
/// Longest policy period the API server accepts, in seconds.
pub const MAX_PERIOD_SECONDS: i32 = 1800;

/// Checks an HPA behavior the way the API server will when the HPA is written.
pub fn check_behavior(behavior: &HpaBehavior, path: &FieldPath, out: &mut Findings) {
    let typed = match behavior.typed() {
        Ok(typed) => typed,
        Err(err) => {
            out.invalid(
                path.clone(),
                format!("is not a valid autoscaling/v2 HorizontalPodAutoscalerBehavior: {err}"),
            );
            return;
        }
    };
    if let Some(rules) = &typed.scale_up {
        check_rules(rules, &path.field("scaleUp"), out);
    }
    if let Some(rules) = &typed.scale_down {
        check_rules(rules, &path.field("scaleDown"), out);
    }
}

fn check_rules(rules: &HPAScalingRules, path: &FieldPath, out: &mut Findings) {
    if let Some(window) = rules.stabilization_window_seconds
        && !(0..=MAX_STABILIZATION_WINDOW_SECONDS).contains(&window)
    {
        out.invalid(
            path.field("stabilizationWindowSeconds"),
            format!("must be between 0 and {MAX_STABILIZATION_WINDOW_SECONDS}, got {window}"),
        );
    }
    if let Some(policy) = rules.select_policy.as_deref()
        && !matches!(policy, "Max" | "Min" | "Disabled")
    {
        out.problem(
            ProblemKind::NotSupported,
            path.field("selectPolicy"),
            format!(
                "unsupported value {policy:?}: supported values: \"Disabled\", \"Max\", \"Min\""
            ),
        );
    }
    let policies = rules.policies.as_deref().unwrap_or_default();
    if policies.is_empty() {
        out.required(path.field("policies"), "must specify at least one policy");
    }
    for (i, policy) in policies.iter().enumerate() {
        let at = path.field("policies").index(i);
        if !matches!(policy.type_.as_str(), "Pods" | "Percent") {
            out.problem(
                ProblemKind::NotSupported,
                at.field("type"),
                format!(
                    "unsupported value {:?}: supported values: \"Percent\", \"Pods\"",
                    policy.type_
                ),
            );
        }
        if policy.value <= 0 {
            out.invalid(
                at.field("value"),
                format!("must be greater than zero, got {}", policy.value),
            );
        }
        if policy.period_seconds <= 0 || policy.period_seconds > MAX_PERIOD_SECONDS {
            out.invalid(
                at.field("periodSeconds"),
                format!(
                    "must be greater than zero and at most {MAX_PERIOD_SECONDS}, got {}",
                    policy.period_seconds
                ),
            );
        }
    }
    if let Some(tolerance) = &rules.tolerance {
        let negative = tolerance.0.trim_start().starts_with('-');
        if negative {
            out.invalid(
                path.field("tolerance"),
                format!("must be greater than or equal to 0, got {}", tolerance.0),
            );
        }
    }
}
