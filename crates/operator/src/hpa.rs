//! The HorizontalPodAutoscaler a ScaledObject manages, as KEDA builds it.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::{
    ContainerResourceMetricSource, CrossVersionObjectReference, ExternalMetricSource,
    HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler, HorizontalPodAutoscalerBehavior,
    HorizontalPodAutoscalerSpec, MetricIdentifier, MetricSpec as HpaMetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use ringscale_api::names::{ANNOTATION_HPA_EXCLUDED_LABELS, LABEL_SCALED_OBJECT_NAME};
use ringscale_api::{MetricType, ScaledObject};
use ringscale_scalers::{MetricSpec, ResourceTarget};
use serde::Deserialize;

use ringscale_semantics::pause::Pause;

/// The metrics of the HPA: every trigger's, or the one composite metric.
pub fn metrics(
    so: &ScaledObject,
    specs: &[MetricSpec],
    composite: Option<(&str, MetricType, String)>,
) -> Vec<HpaMetricSpec> {
    let so_name = so.metadata.name.clone().unwrap_or_default();
    let selector = LabelSelector {
        match_labels: Some(BTreeMap::from([(
            LABEL_SCALED_OBJECT_NAME.to_owned(),
            so_name,
        )])),
        ..LabelSelector::default()
    };
    let external = |name: &str, metric_type: &MetricType, quantity: String| HpaMetricSpec {
        type_: "External".into(),
        external: Some(ExternalMetricSource {
            metric: MetricIdentifier {
                name: name.to_owned(),
                selector: Some(selector.clone()),
            },
            target: target(metric_type, quantity),
        }),
        ..HpaMetricSpec::default()
    };
    let mut out = Vec::new();
    if let Some((name, metric_type, quantity)) = &composite {
        out.push(external(name, metric_type, quantity.clone()));
    }
    for spec in specs {
        match spec {
            MetricSpec::External(m) => {
                if composite.is_none() {
                    out.push(external(&m.name, &m.metric_type, m.target_quantity()));
                }
            }
            MetricSpec::Resource(r) => {
                let target = match &r.target {
                    ResourceTarget::Utilization(p) => MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(*p),
                        ..MetricTarget::default()
                    },
                    ResourceTarget::AverageValue(q) => MetricTarget {
                        type_: "AverageValue".into(),
                        average_value: Some(Quantity(q.clone())),
                        ..MetricTarget::default()
                    },
                };
                let name = r.resource.as_str().to_owned();
                out.push(match &r.container {
                    Some(container) => HpaMetricSpec {
                        type_: "ContainerResource".into(),
                        container_resource: Some(ContainerResourceMetricSource {
                            container: container.clone(),
                            name,
                            target,
                        }),
                        ..HpaMetricSpec::default()
                    },
                    None => HpaMetricSpec {
                        type_: "Resource".into(),
                        resource: Some(ResourceMetricSource { name, target }),
                        ..HpaMetricSpec::default()
                    },
                });
            }
        }
    }
    out
}

fn target(metric_type: &MetricType, quantity: String) -> MetricTarget {
    match metric_type {
        MetricType::Value => MetricTarget {
            type_: "Value".into(),
            value: Some(Quantity(quantity)),
            ..MetricTarget::default()
        },
        _ => MetricTarget {
            type_: "AverageValue".into(),
            average_value: Some(Quantity(quantity)),
            ..MetricTarget::default()
        },
    }
}

/// The HPA's labels: KEDA's, then the ScaledObject's own (minus the excluded ones).
fn labels(so: &ScaledObject, hpa_name: &str) -> BTreeMap<String, String> {
    let so_name = so.metadata.name.clone().unwrap_or_default();
    let excluded: Vec<String> = so
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_HPA_EXCLUDED_LABELS))
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_default();
    let mut labels: BTreeMap<String, String> = so
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !excluded.contains(k))
        .collect();
    labels.insert("app.kubernetes.io/name".into(), label_value(hpa_name));
    labels.insert("app.kubernetes.io/part-of".into(), so_name);
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "keda-operator".into(),
    );
    labels
}

/// A name as a label value, as KEDA cuts it: at most 63 characters, then without trailing
/// characters that are not letters or digits (a label value must end with one).
pub fn label_value(name: &str) -> String {
    let short: String = name.chars().take(63).collect();
    short
        .trim_end_matches(|c: char| !c.is_alphanumeric())
        .to_owned()
}

/// The ScaledObject's annotations, which KEDA copies onto the HPA (all but ringscale's own
/// ownership stamp, which changes with the ring and would rewrite the HPA).
fn annotations(so: &ScaledObject) -> Option<BTreeMap<String, String>> {
    let copied: BTreeMap<String, String> = so
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !crate::controller::is_stamp(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!copied.is_empty()).then_some(copied)
}

/// The HPA's `behavior`: the ScaledObject's, with scaling up or down disabled by the
/// `paused-scale-out` / `paused-scale-in` annotations.
fn behavior(so: &ScaledObject, pause: &Pause) -> Option<HorizontalPodAutoscalerBehavior> {
    let mut behavior = so
        .spec
        .hpa_config()
        .and_then(|c| c.behavior.as_ref())
        .and_then(|b| b.typed().ok());
    // Rules written from scratch carry the API server's default policies, so the object is
    // complete as written (validation requires at least one policy).
    let disabled = |rules: Option<HPAScalingRules>, up: bool| {
        let mut rules = rules.unwrap_or_else(|| default_rules(up));
        if rules.policies.as_ref().is_none_or(Vec::is_empty) {
            rules.policies = default_rules(up).policies;
        }
        rules.select_policy = Some("Disabled".into());
        Some(rules)
    };
    if pause.scale_in {
        let b = behavior.get_or_insert_with(HorizontalPodAutoscalerBehavior::default);
        b.scale_down = disabled(b.scale_down.take(), false);
    }
    if pause.scale_out {
        let b = behavior.get_or_insert_with(HorizontalPodAutoscalerBehavior::default);
        b.scale_up = disabled(b.scale_up.take(), true);
    }
    behavior
}

/// autoscaling/v2's defaults: up by 100 % or 4 pods per 15 s without stabilization; down by
/// 100 % per 15 s after a 300 s window.
fn default_rules(up: bool) -> HPAScalingRules {
    let policy = |type_: &str, value: i32| HPAScalingPolicy {
        type_: type_.to_owned(),
        value,
        period_seconds: 15,
    };
    if up {
        HPAScalingRules {
            stabilization_window_seconds: Some(0),
            select_policy: Some("Max".into()),
            policies: Some(vec![policy("Percent", 100), policy("Pods", 4)]),
            ..HPAScalingRules::default()
        }
    } else {
        HPAScalingRules {
            stabilization_window_seconds: Some(300),
            select_policy: Some("Max".into()),
            policies: Some(vec![policy("Percent", 100)]),
            ..HPAScalingRules::default()
        }
    }
}

/// The HPA as it should be.
pub fn desired(
    so: &ScaledObject,
    metrics: Vec<HpaMetricSpec>,
    pause: &Pause,
) -> HorizontalPodAutoscaler {
    let name = so.hpa_name();
    let target = &so.spec.scale_target_ref;
    let owner = OwnerReference {
        api_version: ringscale_api::names::API_VERSION.into(),
        kind: ringscale_api::names::KIND_SCALED_OBJECT.into(),
        name: so.metadata.name.clone().unwrap_or_default(),
        uid: so.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    HorizontalPodAutoscaler {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: so.metadata.namespace.clone(),
            labels: Some(labels(so, &name)),
            annotations: annotations(so),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some(target.effective_api_version().to_owned()),
                kind: target.effective_kind().to_owned(),
                name: target.name.clone(),
            },
            min_replicas: Some(so.spec.hpa_min_replicas()),
            max_replicas: so.spec.max_replicas(),
            metrics: Some(metrics),
            behavior: behavior(so, pause),
        }),
        status: None,
    }
}

/// Whether `existing` already is `desired`: every field `desired` sets is set the same in
/// `existing` (fields the API server defaulted are ignored, as KEDA's semantic comparison does),
/// and the labels and owner match.
pub fn matches(existing: &HpaView, desired: &HorizontalPodAutoscaler) -> bool {
    let (Some(e), Ok(d)) = (existing.spec_value(), serde_json::to_value(&desired.spec)) else {
        return false;
    };
    // Annotations as KEDA compares them: the desired ones must be there (others may be added
    // by other tools), and none at all when the ScaledObject has none.
    let annotations_match = match (
        &desired.metadata.annotations,
        &existing.metadata.annotations,
    ) {
        (None, None) => true,
        (None, Some(e)) => e.is_empty(),
        (Some(d), e) => d
            .iter()
            .all(|(k, v)| e.as_ref().and_then(|e| e.get(k)) == Some(v)),
    };
    derivative(&d, &e)
        && existing.metadata.labels == desired.metadata.labels
        && existing.metadata.owner_references == desired.metadata.owner_references
        && annotations_match
}

/// An HPA as the watch keeps it: the metadata (without managedFields) and the spec as the
/// compact JSON text it arrived as; the status is dropped. Every replica watches every HPA (the
/// metrics API reads a fallback's target from any object's HPA), and decoded into k8s-openapi's
/// types an HPA with one external metric took about 3 KiB; its spec text is a few hundred
/// bytes, decoded only when an owner compares it or a fallback needs its target.
#[derive(Clone, Debug, Deserialize)]
pub struct HpaView {
    /// Names, resourceVersion, labels, owners, annotations.
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "compact_json")]
    spec: Box<str>,
}

fn compact_json<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Box<str>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    serde_json::to_string(&value)
        .map(String::into_boxed_str)
        .map_err(serde::de::Error::custom)
}

impl HpaView {
    /// The spec, decoded; `None` when the object has none.
    pub fn spec(&self) -> Option<HorizontalPodAutoscalerSpec> {
        serde_json::from_str(&self.spec).ok()
    }

    /// The spec as JSON; `None` when the object has none.
    pub fn spec_value(&self) -> Option<serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(&self.spec)
            .ok()
            .filter(|v| !v.is_null())
    }

    /// Drops the managedFields, which nothing reads.
    pub fn slim(&mut self) {
        self.metadata.managed_fields = None;
    }
}

impl k8s_openapi::Resource for HpaView {
    const API_VERSION: &'static str = HorizontalPodAutoscaler::API_VERSION;
    const GROUP: &'static str = HorizontalPodAutoscaler::GROUP;
    const KIND: &'static str = HorizontalPodAutoscaler::KIND;
    const VERSION: &'static str = HorizontalPodAutoscaler::VERSION;
    const URL_PATH_SEGMENT: &'static str = HorizontalPodAutoscaler::URL_PATH_SEGMENT;
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::Metadata for HpaView {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// `desired` ⊆ `existing`: objects may have extra keys in `existing`, arrays must match
/// element-wise, scalars must be equal; null in `desired` means "not set".
pub fn derivative(desired: &serde_json::Value, existing: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (desired, existing) {
        (Value::Null, _) => true,
        (Value::Object(d), Value::Object(e)) => d
            .iter()
            .all(|(k, v)| v.is_null() || e.get(k).is_some_and(|ev| derivative(v, ev))),
        (Value::Array(d), Value::Array(e)) => {
            d.len() == e.len() && d.iter().zip(e).all(|(a, b)| derivative(a, b))
        }
        (d, e) => d == e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_defaults_do_not_count_as_a_difference() {
        let desired =
            json!({"minReplicas": 1, "behavior": {"scaleDown": {"selectPolicy": "Disabled"}}});
        let defaulted = json!({"minReplicas": 1, "behavior": {"scaleDown": {"selectPolicy": "Disabled", "stabilizationWindowSeconds": 300}, "scaleUp": {}}});
        assert!(derivative(&desired, &defaulted));
        let changed =
            json!({"minReplicas": 2, "behavior": {"scaleDown": {"selectPolicy": "Disabled"}}});
        assert!(!derivative(&desired, &changed));
        assert!(!derivative(
            &json!({"metrics": [1, 2]}),
            &json!({"metrics": [1]})
        ));
    }

    #[test]
    fn a_stored_hpa_compares_by_its_spec_labels_and_owner() {
        let desired: HorizontalPodAutoscaler = serde_json::from_value(json!({
            "metadata": {"name": "keda-hpa-a", "labels": {"app": "a"}},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "a"}, "maxReplicas": 5,
                     "metrics": [{"type": "External", "external": {
                         "metric": {"name": "s0-redis-q"},
                         "target": {"type": "AverageValue", "averageValue": "5"}}}]}
        }))
        .unwrap();
        let mut stored = serde_json::to_value(&desired).unwrap();
        stored["metadata"]["resourceVersion"] = json!("9");
        stored["metadata"]["managedFields"] = json!([{"manager": "kube-controller-manager"}]);
        stored["spec"]["minReplicas"] = json!(1);
        stored["status"] = json!({"currentReplicas": 2, "desiredReplicas": 2});
        let mut view: HpaView = serde_json::from_value(stored.clone()).unwrap();
        view.slim();
        assert_eq!(view.metadata.managed_fields, None);
        assert!(
            matches(&view, &desired),
            "server defaults are no difference"
        );
        let spec = view.spec().unwrap();
        assert_eq!(spec.max_replicas, 5);
        assert_eq!(
            spec.metrics.unwrap()[0]
                .external
                .as_ref()
                .unwrap()
                .metric
                .name,
            "s0-redis-q"
        );

        stored["spec"]["maxReplicas"] = json!(6);
        let changed: HpaView = serde_json::from_value(stored.clone()).unwrap();
        assert!(!matches(&changed, &desired));
        stored["spec"]["maxReplicas"] = json!(5);
        stored["metadata"]["labels"] = json!({"app": "b"});
        let relabelled: HpaView = serde_json::from_value(stored.clone()).unwrap();
        assert!(!matches(&relabelled, &desired));

        let bare: HpaView = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
        assert!(bare.spec().is_none());
        assert!(!matches(&bare, &desired));
    }
}
