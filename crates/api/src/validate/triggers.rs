//! Checks shared by ScaledObjects and ScaledJobs: triggers, pause annotations, counts.

use std::collections::{BTreeMap, HashMap};

use crate::common::{AuthenticationKind, MetricType, ScaleTrigger};
use crate::names;

use super::problem::{FieldPath, Findings, ProblemKind};

/// Checks every trigger of an object; `path` is the path of the `triggers` list.
pub fn check_triggers(triggers: &[ScaleTrigger], path: &FieldPath, out: &mut Findings) {
    if triggers.is_empty() {
        out.required(path.clone(), "at least one trigger is required");
    }
    let mut names_seen: HashMap<&str, usize> = HashMap::new();
    for (i, trigger) in triggers.iter().enumerate() {
        let at = path.index(i);
        check_trigger(trigger, &at, out);
        if let Some(name) = trigger.name.as_deref().filter(|n| !n.is_empty()) {
            if let Some(first) = names_seen.get(name) {
                out.problem(
                    ProblemKind::Duplicate,
                    at.field("name"),
                    format!("trigger name {name:?} is already used by {path}[{first}]; trigger names must be unique"),
                );
            } else {
                names_seen.insert(name, i);
            }
        }
    }
}

fn check_trigger(trigger: &ScaleTrigger, at: &FieldPath, out: &mut Findings) {
    let type_ = trigger.type_.as_str();
    if type_.is_empty() {
        out.required(at.field("type"), "trigger type is required");
    } else if !names::KEDA_TRIGGER_TYPES.contains(&type_) {
        let hint = suggestion(type_, names::KEDA_TRIGGER_TYPES)
            .map(|s| format!(" (did you mean {s:?}?)"))
            .unwrap_or_default();
        out.problem(
            ProblemKind::NotSupported,
            at.field("type"),
            format!("unknown trigger type {type_:?}{hint}; KEDA has no scaler of this type"),
        );
    }
    if let Some(metric_type) = &trigger.metric_type {
        match metric_type {
            MetricType::Other(other) => out.problem(
                ProblemKind::NotSupported,
                at.field("metricType"),
                format!("unsupported metricType {other:?}: supported values: \"AverageValue\", \"Value\", \"Utilization\""),
            ),
            MetricType::Utilization if !trigger.is_resource() => out.invalid(
                at.field("metricType"),
                format!("metricType Utilization is only supported by cpu and memory triggers, not {type_:?}"),
            ),
            MetricType::Value if trigger.is_resource() => out.invalid(
                at.field("metricType"),
                format!("{type_} triggers support AverageValue and Utilization, not Value"),
            ),
            _ => {}
        }
    }
    if trigger.uses_cached_metrics() && names::UNCACHEABLE_TRIGGER_TYPES.contains(&type_) {
        out.invalid(
            at.field("useCachedMetrics"),
            format!("useCachedMetrics is not supported for {type_:?} triggers"),
        );
    }
    if let Some(auth) = &trigger.authentication_ref {
        let ref_path = at.field("authenticationRef");
        if auth.name.is_empty() {
            out.required(
                ref_path.field("name"),
                "authenticationRef.name must not be empty",
            );
        }
        if let Some(AuthenticationKind::Other(kind)) = &auth.kind {
            out.problem(
                ProblemKind::NotSupported,
                ref_path.field("kind"),
                format!(
                    "unsupported kind {kind:?}: supported values: \"TriggerAuthentication\", \"ClusterTriggerAuthentication\""
                ),
            );
        }
    }
}

/// Checks the pause and activation annotations shared by ScaledObjects and ScaledJobs.
pub fn check_annotations(annotations: Option<&BTreeMap<String, String>>, out: &mut Findings) {
    let path = FieldPath::new("metadata.annotations");
    let Some(annotations) = annotations else {
        return;
    };
    if let Some(value) = annotations.get(names::ANNOTATION_PAUSED_REPLICAS) {
        let ok = value.trim().parse::<i32>().is_ok_and(|n| n >= 0);
        if !ok {
            out.invalid(
                path.key(names::ANNOTATION_PAUSED_REPLICAS),
                format!("{value:?} is not a replica count (a non-negative integer)"),
            );
        }
    }
    for key in [
        names::ANNOTATION_PAUSED,
        names::ANNOTATION_PAUSED_SCALE_IN,
        names::ANNOTATION_PAUSED_SCALE_OUT,
        names::ANNOTATION_FORCE_ACTIVATION,
    ] {
        if let Some(value) = annotations.get(key)
            && parse_go_bool(value).is_none()
        {
            out.warn(
                path.key(key),
                format!("{value:?} is not a boolean; KEDA and ringscale treat it as \"true\""),
            );
        }
    }
}

/// Parses a boolean the way Go's `strconv.ParseBool` does, which KEDA uses for annotations.
pub fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Reports `value` when it is below `min`.
pub fn at_least(value: Option<i32>, min: i32, path: FieldPath, out: &mut Findings) {
    if let Some(v) = value
        && v < min
    {
        out.invalid(
            path,
            format!("must be greater than or equal to {min}, got {v}"),
        );
    }
}

/// The known value closest to `input` by edit distance, when it is close.
pub fn suggestion<'a>(input: &str, known: &[&'a str]) -> Option<&'a str> {
    let lowered = input.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&lowered, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let next = (prev + cost).min(row[j] + 1).min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_misspellings_get_a_suggestion() {
        assert_eq!(
            suggestion("reddis", names::KEDA_TRIGGER_TYPES),
            Some("redis")
        );
        assert_eq!(
            suggestion("Postgres", names::KEDA_TRIGGER_TYPES),
            Some("postgresql")
        );
        assert_eq!(suggestion("zzzzzzzz", names::KEDA_TRIGGER_TYPES), None);
    }

    #[test]
    fn annotations_parse_like_go() {
        assert_eq!(parse_go_bool("True"), Some(true));
        assert_eq!(parse_go_bool("0"), Some(false));
        assert_eq!(parse_go_bool("yes"), None);
    }
}
