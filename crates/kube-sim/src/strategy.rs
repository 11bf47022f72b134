//! What the API server does to built-in objects before storing them: decode them as their
//! Kubernetes type (dropping or rejecting unknown fields), fill defaults, validate, and refuse
//! changes to immutable fields.

use k8s_openapi::api as k8s;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as apireg;
use ringscale_api::validate::{FieldPath, Findings, Problem, ProblemKind, meta};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::resources::Builtin;

/// The outcome of decoding a built-in object as its Kubernetes type.
#[derive(Debug)]
pub struct Decoded {
    /// The object as the type serializes it (unknown fields removed).
    pub object: Value,
    /// Paths (`.spec.foo`) of fields the type does not declare.
    pub unknown: Vec<String>,
}

/// Decodes `value` as a `T`; an error names the first field that does not fit.
fn decode<T: DeserializeOwned + Serialize>(value: &Value) -> Result<Decoded, serde_json::Error> {
    let typed: T = serde_json::from_value(value.clone())?;
    let object = serde_json::to_value(&typed)?;
    let mut unknown = Vec::new();
    undeclared(value, &object, "", &mut unknown);
    Ok(Decoded { object, unknown })
}

/// Fields present in `input` but absent from the re-encoded `typed` value.
fn undeclared(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let child = format!("{path}.{k}");
                match b.get(k) {
                    Some(t) => undeclared(v, t, &child, out),
                    None if !v.is_null() => out.push(child),
                    None => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, t)) in a.iter().zip(b).enumerate() {
                undeclared(v, t, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Decodes a built-in object as its Kubernetes type.
pub fn decode_builtin(kind: Builtin, value: &Value) -> Result<Decoded, serde_json::Error> {
    use Builtin as B;
    match kind {
        B::Namespace => decode::<k8s::core::v1::Namespace>(value),
        B::ConfigMap => decode::<k8s::core::v1::ConfigMap>(value),
        B::Secret => decode::<k8s::core::v1::Secret>(value),
        B::Event => decode::<k8s::core::v1::Event>(value),
        B::EventV1 => decode::<k8s::events::v1::Event>(value),
        B::Pod => decode::<k8s::core::v1::Pod>(value),
        B::Service => decode::<k8s::core::v1::Service>(value),
        B::ServiceAccount => decode::<k8s::core::v1::ServiceAccount>(value),
        B::Endpoints => decode::<k8s::core::v1::Endpoints>(value),
        B::Deployment => decode::<k8s::apps::v1::Deployment>(value),
        B::StatefulSet => decode::<k8s::apps::v1::StatefulSet>(value),
        B::ReplicaSet => decode::<k8s::apps::v1::ReplicaSet>(value),
        B::DaemonSet => decode::<k8s::apps::v1::DaemonSet>(value),
        B::Job => decode::<k8s::batch::v1::Job>(value),
        B::CronJob => decode::<k8s::batch::v1::CronJob>(value),
        B::HorizontalPodAutoscaler => decode::<k8s::autoscaling::v2::HorizontalPodAutoscaler>(value),
        B::Lease => decode::<k8s::coordination::v1::Lease>(value),
        B::ApiService => decode::<apireg::APIService>(value),
        B::CustomResourceDefinition => decode::<
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        >(value),
        B::Role => decode::<k8s::rbac::v1::Role>(value),
        B::RoleBinding => decode::<k8s::rbac::v1::RoleBinding>(value),
        B::ClusterRole => decode::<k8s::rbac::v1::ClusterRole>(value),
        B::ClusterRoleBinding => decode::<k8s::rbac::v1::ClusterRoleBinding>(value),
        B::PodDisruptionBudget => decode::<k8s::policy::v1::PodDisruptionBudget>(value),
        B::FlowSchema => decode::<k8s::flowcontrol::v1::FlowSchema>(value),
        B::PriorityLevelConfiguration => {
            decode::<k8s::flowcontrol::v1::PriorityLevelConfiguration>(value)
        }
    }
}

fn obj_mut<'a>(value: &'a mut Value, path: &[&str]) -> Option<&'a mut Map<String, Value>> {
    let mut current = value;
    for part in path {
        current = current.get_mut(*part)?;
    }
    current.as_object_mut()
}

fn set_default(map: Option<&mut Map<String, Value>>, key: &str, value: Value) {
    if let Some(map) = map {
        let missing = map.get(key).is_none_or(Value::is_null);
        if missing {
            map.insert(key.to_owned(), value);
        }
    }
}

/// Fills the defaults the API server would (the ones controllers rely on).
pub fn default_builtin(kind: Builtin, object: &mut Value, uid: &str) {
    use Builtin as B;
    match kind {
        B::Deployment | B::ReplicaSet | B::StatefulSet => {
            set_default(obj_mut(object, &["spec"]), "replicas", json!(1));
            set_default(
                obj_mut(object, &["spec"]),
                "revisionHistoryLimit",
                json!(10),
            );
            if kind == B::StatefulSet {
                set_default(
                    obj_mut(object, &["spec"]),
                    "podManagementPolicy",
                    json!("OrderedReady"),
                );
            }
            set_default(
                obj_mut(object, &["spec", "template", "spec"]),
                "restartPolicy",
                json!("Always"),
            );
        }
        B::DaemonSet => set_default(
            obj_mut(object, &["spec", "template", "spec"]),
            "restartPolicy",
            json!("Always"),
        ),
        B::Pod => {
            set_default(obj_mut(object, &["spec"]), "restartPolicy", json!("Always"));
            if let Some(map) = object.as_object_mut() {
                let has_phase = map.get("status").and_then(|s| s.get("phase")).is_some();
                if !has_phase {
                    map.insert("status".to_owned(), json!({"phase": "Pending"}));
                }
            }
        }
        B::Job => default_job(object, uid),
        B::HorizontalPodAutoscaler => {
            set_default(obj_mut(object, &["spec"]), "minReplicas", json!(1));
            default_hpa_behavior(object);
            let no_metrics = object
                .pointer("/spec/metrics")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
            if no_metrics && let Some(spec) = obj_mut(object, &["spec"]) {
                spec.insert(
                    "metrics".to_owned(),
                    json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]),
                );
            }
        }
        B::Secret => set_default(object.as_object_mut(), "type", json!("Opaque")),
        B::Service => {
            set_default(obj_mut(object, &["spec"]), "type", json!("ClusterIP"));
            set_default(obj_mut(object, &["spec"]), "sessionAffinity", json!("None"));
        }
        B::Namespace => {
            set_default(
                object.as_object_mut(),
                "spec",
                json!({"finalizers": ["kubernetes"]}),
            );
            set_default(object.as_object_mut(), "status", json!({"phase": "Active"}));
        }
        _ => {}
    }
}

/// A given HPA `behavior` gets every unset field of its rules from the defaults, as the API
/// server's autoscaling/v2 defaulting does (scale up: no stabilization, Max of 4 Pods or 100 %
/// per 15 s; scale down: Max of 100 % per 15 s, the window left to the controller's flag).
fn default_hpa_behavior(object: &mut Value) {
    let Some(behavior) = object
        .pointer_mut("/spec/behavior")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let up = json!({
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15}
        ]
    });
    let down = json!({
        "selectPolicy": "Max",
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]
    });
    for (direction, defaults) in [("scaleUp", up), ("scaleDown", down)] {
        let rules = behavior.entry(direction).or_insert_with(|| json!({}));
        if rules.is_null() {
            *rules = json!({});
        }
        if let (Some(rules), Value::Object(defaults)) = (rules.as_object_mut(), defaults) {
            for (field, value) in defaults {
                if rules.get(&field).is_none_or(Value::is_null) {
                    rules.insert(field, value);
                }
            }
        }
    }
}

/// Jobs get a generated selector and matching template labels unless `manualSelector`.
fn default_job(object: &mut Value, uid: &str) {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let manual = object
        .pointer("/spec/manualSelector")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let Some(spec) = obj_mut(object, &["spec"]) else {
        return;
    };
    let has_parallelism = spec.get("parallelism").is_some_and(|v| !v.is_null());
    let has_completions = spec.get("completions").is_some_and(|v| !v.is_null());
    if !has_parallelism && !has_completions {
        spec.insert("completions".to_owned(), json!(1));
    }
    set_default(Some(spec), "parallelism", json!(1));
    set_default(Some(spec), "backoffLimit", json!(6));
    set_default(Some(spec), "completionMode", json!("NonIndexed"));
    set_default(Some(spec), "suspend", json!(false));
    if manual || uid.is_empty() {
        return;
    }
    let labels = json!({"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name, "controller-uid": uid, "job-name": name});
    set_default(
        Some(spec),
        "selector",
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
    if let Some(template_meta) = spec
        .get_mut("template")
        .and_then(Value::as_object_mut)
        .map(|t| t.entry("metadata").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
    {
        let template_labels = template_meta.entry("labels").or_insert_with(|| json!({}));
        if let (Some(target), Some(extra)) = (template_labels.as_object_mut(), labels.as_object()) {
            for (k, v) in extra {
                target.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
}

/// Problems of a built-in object (and, on update, of its change from `old`).
pub fn validate_builtin(kind: Builtin, object: &Value, old: Option<&Value>) -> Vec<Problem> {
    use Builtin as B;
    let mut out = Findings::default();
    let spec = FieldPath::new("spec");
    match kind {
        B::Namespace => {
            if let Some(why) = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .and_then(meta::dns1123_label_error)
            {
                out.invalid(FieldPath::new("metadata.name"), why);
            }
        }
        B::Service => {
            let name = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !name.is_empty() && !is_dns1035_label(name) {
                out.invalid(
                    FieldPath::new("metadata.name"),
                    format!("{name:?} is not a DNS-1035 label: lowercase letters, digits and '-', starting with a letter"),
                );
            }
        }
        B::Deployment | B::ReplicaSet | B::StatefulSet | B::DaemonSet => {
            check_selector_matches_template(object, &mut out);
            check_pod_template(
                object.pointer("/spec/template/spec"),
                &spec.field("template").field("spec"),
                &mut out,
            );
            let restart = object
                .pointer("/spec/template/spec/restartPolicy")
                .and_then(Value::as_str);
            if restart.is_some_and(|r| r != "Always") {
                out.problem(
                    ProblemKind::NotSupported,
                    FieldPath::new("spec.template.spec.restartPolicy"),
                    format!(
                        "unsupported value {:?}: supported values: \"Always\"",
                        restart.unwrap_or_default()
                    ),
                );
            }
            non_negative(object, "/spec/replicas", "spec.replicas", &mut out);
        }
        B::Job => {
            check_pod_template(
                object.pointer("/spec/template/spec"),
                &spec.field("template").field("spec"),
                &mut out,
            );
            match object
                .pointer("/spec/template/spec/restartPolicy")
                .and_then(Value::as_str)
            {
                Some("OnFailure" | "Never") => {}
                Some(other) => out.problem(
                    ProblemKind::NotSupported,
                    FieldPath::new("spec.template.spec.restartPolicy"),
                    format!(
                        "unsupported value {other:?}: supported values: \"OnFailure\", \"Never\""
                    ),
                ),
                None => out.required(
                    FieldPath::new("spec.template.spec.restartPolicy"),
                    "valid values: \"OnFailure\", \"Never\"",
                ),
            }
            for field in ["parallelism", "completions", "backoffLimit"] {
                non_negative(
                    object,
                    &format!("/spec/{field}"),
                    &format!("spec.{field}"),
                    &mut out,
                );
            }
        }
        B::Pod => check_pod_template(object.get("spec"), &spec, &mut out),
        B::HorizontalPodAutoscaler => check_hpa(object, &mut out),
        B::ConfigMap | B::Secret => check_config_data(object, &mut out),
        B::ApiService => check_api_service(object, &mut out),
        _ => {}
    }
    if let Some(old) = old {
        check_immutable(kind, object, old, &mut out);
    }
    out.problems
}

fn is_dns1035_label(name: &str) -> bool {
    name.len() <= 63
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric())
}

fn non_negative(object: &Value, pointer: &str, path: &str, out: &mut Findings) {
    if let Some(v) = object.pointer(pointer).and_then(Value::as_i64)
        && v < 0
    {
        out.invalid(
            FieldPath::new(path),
            format!("must be greater than or equal to 0, got {v}"),
        );
    }
}

fn check_pod_template(pod_spec: Option<&Value>, path: &FieldPath, out: &mut Findings) {
    let containers = pod_spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    let Some(containers) = containers.filter(|c| !c.is_empty()) else {
        out.required(
            path.field("containers"),
            "at least one container is required",
        );
        return;
    };
    let mut names = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        let at = path.field("containers").index(i);
        match c.get("name").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => {
                if let Some(why) = meta::dns1123_label_error(name) {
                    out.invalid(at.field("name"), why);
                }
                if names.contains(&name) {
                    out.problem(
                        ProblemKind::Duplicate,
                        at.field("name"),
                        format!("duplicate container name {name:?}"),
                    );
                }
                names.push(name);
            }
            _ => out.required(at.field("name"), "a container name is required"),
        }
        if c.get("image")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            out.required(at.field("image"), "a container image is required");
        }
    }
}

fn check_selector_matches_template(object: &Value, out: &mut Findings) {
    let Some(selector) = object.pointer("/spec/selector") else {
        out.required(FieldPath::new("spec.selector"), "a selector is required");
        return;
    };
    let match_labels = selector.get("matchLabels").and_then(Value::as_object);
    let expressions = selector.get("matchExpressions").and_then(Value::as_array);
    if match_labels.is_none_or(Map::is_empty) && expressions.is_none_or(Vec::is_empty) {
        out.invalid(
            FieldPath::new("spec.selector"),
            "empty selector is invalid for this kind",
        );
        return;
    }
    let labels = object
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object);
    let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    let mut matches = match_labels.is_none_or(|m| m.iter().all(|(k, v)| label(k) == v.as_str()));
    for expr in expressions.into_iter().flatten() {
        let key = expr.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = expr
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let ok = match expr.get("operator").and_then(Value::as_str) {
            Some("In") => label(key).is_some_and(|v| values.contains(&v)),
            Some("NotIn") => label(key).is_none_or(|v| !values.contains(&v)),
            Some("Exists") => label(key).is_some(),
            Some("DoesNotExist") => label(key).is_none(),
            other => {
                out.problem(
                    ProblemKind::NotSupported,
                    FieldPath::new("spec.selector.matchExpressions.operator"),
                    format!("unsupported operator {:?}", other.unwrap_or_default()),
                );
                true
            }
        };
        matches &= ok;
    }
    if !matches {
        out.invalid(
            FieldPath::new("spec.template.metadata.labels"),
            "`selector` does not match template `labels`",
        );
    }
}

fn check_hpa(object: &Value, out: &mut Findings) {
    let spec = FieldPath::new("spec");
    for field in ["kind", "name"] {
        let present = object
            .pointer(&format!("/spec/scaleTargetRef/{field}"))
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty());
        if !present {
            out.required(
                spec.field("scaleTargetRef").field(field),
                format!("scaleTargetRef.{field} is required"),
            );
        }
    }
    let min = object.pointer("/spec/minReplicas").and_then(Value::as_i64);
    let max = object.pointer("/spec/maxReplicas").and_then(Value::as_i64);
    match max {
        Some(max) if max < 1 => out.invalid(
            spec.field("maxReplicas"),
            format!("must be greater than or equal to 1, got {max}"),
        ),
        None => out.required(spec.field("maxReplicas"), "maxReplicas is required"),
        _ => {}
    }
    if let Some(min) = min
        && min < 1
    {
        out.invalid(
            spec.field("minReplicas"),
            format!("must be greater than or equal to 1, got {min}"),
        );
    }
    if let (Some(min), Some(max)) = (min, max)
        && min > max
    {
        out.invalid(
            spec.field("maxReplicas"),
            format!("must be greater than or equal to `minReplicas` ({min}), got {max}"),
        );
    }
    for (i, metric) in object
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        check_hpa_metric(metric, &spec.field("metrics").index(i), out);
    }
    if let Some(behavior) = object.pointer("/spec/behavior").and_then(Value::as_object) {
        let verbatim = ringscale_api::verbatim::HpaBehavior::new(behavior.clone());
        ringscale_api::validate::hpa::check_behavior(&verbatim, &spec.field("behavior"), out);
    }
}

fn check_hpa_metric(metric: &Value, at: &FieldPath, out: &mut Findings) {
    let kind = metric
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let field = match kind {
        "Resource" => "resource",
        "ContainerResource" => "containerResource",
        "External" => "external",
        "Pods" => "pods",
        "Object" => "object",
        other => {
            out.problem(
                ProblemKind::NotSupported,
                at.field("type"),
                format!("unsupported value {other:?}: supported values: \"ContainerResource\", \"External\", \"Object\", \"Pods\", \"Resource\""),
            );
            return;
        }
    };
    let Some(source) = metric.get(field) else {
        out.required(
            at.field(field),
            format!("must populate information for the given metric source {kind:?}"),
        );
        return;
    };
    if matches!(kind, "External" | "Pods" | "Object")
        && source
            .pointer("/metric/name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        out.required(
            at.field(field).field("metric").field("name"),
            "must specify a metric name",
        );
    }
    if matches!(kind, "Resource" | "ContainerResource")
        && source
            .get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        out.required(
            at.field(field).field("name"),
            "must specify a resource name",
        );
    }
    let target = at.field(field).field("target");
    let required = match source.pointer("/target/type").and_then(Value::as_str) {
        Some("Utilization") => "averageUtilization",
        Some("AverageValue") => "averageValue",
        Some("Value") => "value",
        other => {
            out.problem(
                ProblemKind::NotSupported,
                target.field("type"),
                format!("unsupported value {:?}: supported values: \"AverageValue\", \"Utilization\", \"Value\"", other.unwrap_or_default()),
            );
            return;
        }
    };
    if source
        .get("target")
        .and_then(|t| t.get(required))
        .is_none_or(Value::is_null)
    {
        out.required(
            target.field(required),
            format!("must set {required} for this target type"),
        );
    }
}

fn check_config_data(object: &Value, out: &mut Findings) {
    let mut total = 0usize;
    for field in ["data", "binaryData", "stringData"] {
        for (key, value) in object
            .get(field)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            total += key.len() + value.as_str().map_or(0, str::len);
            let ok = !key.is_empty()
                && key.len() <= 253
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !ok {
                out.invalid(
                    FieldPath::new(field).key(key),
                    format!("{key:?} is not a valid config key: must consist of alphanumeric characters, '-', '_' or '.'"),
                );
            }
        }
    }
    if total > 1024 * 1024 {
        out.problem(
            ProblemKind::TooLong,
            FieldPath::new("data"),
            format!("total size must be at most 1048576 bytes, got {total}"),
        );
    }
}

fn check_api_service(object: &Value, out: &mut Findings) {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let group = object
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let version = object
        .pointer("/spec/version")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name != format!("{version}.{group}") {
        out.invalid(
            FieldPath::new("metadata.name"),
            format!("must be `spec.version+\".\"+spec.group`: {version}.{group}"),
        );
    }
    for field in ["groupPriorityMinimum", "versionPriority"] {
        let v = object
            .pointer(&format!("/spec/{field}"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if v <= 0 {
            out.invalid(
                FieldPath::new("spec").field(field),
                format!("must be positive, got {v}"),
            );
        }
    }
}

fn check_immutable(kind: Builtin, object: &Value, old: &Value, out: &mut Findings) {
    use Builtin as B;
    let changed = |pointer: &str| object.pointer(pointer) != old.pointer(pointer);
    let forbid = |out: &mut Findings, path: &str| {
        out.problem(
            ProblemKind::Invalid,
            FieldPath::new(path),
            "field is immutable",
        );
    };
    match kind {
        B::Deployment | B::ReplicaSet | B::DaemonSet if changed("/spec/selector") => {
            forbid(out, "spec.selector")
        }
        B::StatefulSet => {
            let mutable = [
                "replicas",
                "ordinals",
                "template",
                "updateStrategy",
                "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds",
                "revisionHistoryLimit",
            ];
            let strip = |v: &Value| {
                let mut spec = v.get("spec").cloned().unwrap_or(Value::Null);
                if let Some(map) = spec.as_object_mut() {
                    for m in mutable {
                        map.remove(m);
                    }
                }
                spec
            };
            if strip(object) != strip(old) {
                out.problem(
                    ProblemKind::Forbidden,
                    FieldPath::new("spec"),
                    "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', \
                     'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                );
            }
        }
        B::Job => {
            for (pointer, path) in [
                ("/spec/selector", "spec.selector"),
                ("/spec/template", "spec.template"),
                ("/spec/completionMode", "spec.completionMode"),
            ] {
                if changed(pointer) {
                    forbid(out, path);
                }
            }
        }
        B::ConfigMap | B::Secret => {
            if old.get("immutable").and_then(Value::as_bool) == Some(true) {
                for field in ["data", "binaryData", "immutable"] {
                    if object.get(field) != old.get(field) {
                        out.problem(
                            ProblemKind::Forbidden,
                            FieldPath::new(field),
                            "field is immutable when `immutable` is set",
                        );
                    }
                }
            }
            if kind == B::Secret && changed("/type") {
                forbid(out, "type");
            }
        }
        B::Service if old.pointer("/spec/clusterIP").is_some() && changed("/spec/clusterIP") => {
            forbid(out, "spec.clusterIP")
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}
            }
        })
    }

    #[test]
    fn a_valid_deployment_gets_defaults_and_no_problems() {
        let mut d = deployment();
        default_builtin(Builtin::Deployment, &mut d, "uid");
        assert_eq!(d["spec"]["replicas"], 1);
        assert!(validate_builtin(Builtin::Deployment, &d, None).is_empty());
    }

    #[test]
    fn a_selector_that_misses_the_template_is_rejected() {
        let mut d = deployment();
        d["spec"]["template"]["metadata"]["labels"]["app"] = json!("other");
        let problems = validate_builtin(Builtin::Deployment, &d, None);
        assert_eq!(problems[0].path.as_str(), "spec.template.metadata.labels");
    }

    #[test]
    fn unknown_fields_are_found_by_decoding() {
        let mut d = deployment();
        d["spec"]["replicaz"] = json!(3);
        let decoded = decode_builtin(Builtin::Deployment, &d).unwrap();
        assert_eq!(decoded.unknown, vec![".spec.replicaz"]);
        assert!(decoded.object["spec"].get("replicaz").is_none());
        d["spec"]["replicas"] = json!("three");
        assert!(decode_builtin(Builtin::Deployment, &d).is_err());
    }

    #[test]
    fn hpa_behavior_rules_get_the_api_servers_defaults() {
        let target = json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"});
        let mut hpa = json!({"spec": {"scaleTargetRef": target, "maxReplicas": 3,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 600}}}});
        default_builtin(Builtin::HorizontalPodAutoscaler, &mut hpa, "uid");
        let behavior = &hpa["spec"]["behavior"];
        assert_eq!(
            behavior["scaleDown"],
            json!({"stabilizationWindowSeconds": 600, "selectPolicy": "Max",
                "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]})
        );
        assert_eq!(behavior["scaleUp"]["stabilizationWindowSeconds"], 0);
        assert_eq!(
            behavior["scaleUp"]["policies"].as_array().map(Vec::len),
            Some(2)
        );
        assert!(validate_builtin(Builtin::HorizontalPodAutoscaler, &hpa, None).is_empty());
        // No behavior: none is added.
        let mut plain = json!({"spec": {"scaleTargetRef": target, "maxReplicas": 3}});
        default_builtin(Builtin::HorizontalPodAutoscaler, &mut plain, "uid");
        assert!(plain["spec"].get("behavior").is_none());
    }

    #[test]
    fn jobs_get_a_generated_selector_and_need_a_restart_policy() {
        let mut job = json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        default_job(&mut job, "1234");
        assert_eq!(
            job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            "1234"
        );
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"]["job-name"],
            "j"
        );
        let problems = validate_builtin(Builtin::Job, &job, None);
        assert_eq!(
            problems[0].path.as_str(),
            "spec.template.spec.restartPolicy"
        );
    }

    #[test]
    fn changing_an_immutable_selector_is_rejected() {
        let old = deployment();
        let mut new = deployment();
        new["spec"]["selector"]["matchLabels"]["tier"] = json!("x");
        new["spec"]["template"]["metadata"]["labels"]["tier"] = json!("x");
        let problems = validate_builtin(Builtin::Deployment, &new, Some(&old));
        assert!(
            problems
                .iter()
                .any(|p| p.path.as_str() == "spec.selector" && p.message == "field is immutable")
        );
    }
}
