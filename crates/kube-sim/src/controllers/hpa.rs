//! The HPA controller: every sync period (and when an HPA changes) it reads the target's scale,
//! computes a recommendation per metric — External metrics through the aggregated API, as a
//! cluster's controller does; Resource metrics from the utilisation set on the simulator —
//! normalizes it with `behavior`, scales the target, and writes status and conditions as the
//! real controller does.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, Method};
use http_body_util::BodyExt as _;
use k8s_openapi::api::autoscaling::v2::{HorizontalPodAutoscaler, MetricSpec};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use super::hpa_algo::{self, Behavior, History, Limit};
use crate::Sim;
use crate::api::{self, Subresource};
use crate::server::User;
use crate::store::{EventKind, GroupResource, ObjKey};

fn hpas() -> GroupResource {
    GroupResource::new("autoscaling", "horizontalpodautoscalers")
}

/// The identity the HPA controller uses against aggregated APIs.
fn controller_user() -> User {
    User {
        name: "system:serviceaccount:kube-system:horizontal-pod-autoscaler".to_owned(),
        groups: vec![
            "system:serviceaccounts".to_owned(),
            "system:serviceaccounts:kube-system".to_owned(),
            "system:authenticated".to_owned(),
        ],
    }
}

/// Runs until shutdown.
pub async fn run(sim: Arc<Sim>, mut shutdown: watch::Receiver<bool>) {
    let mut events = sim.store.subscribe();
    let mut histories: HashMap<String, History> = HashMap::new();
    let mut ticker = tokio::time::interval(sim.config.hpa_sync_period);
    loop {
        let mut only: Option<ObjKey> = None;
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) if event.resource == hpas() && event.kind != EventKind::Deleted => {
                    let spec_changed = event.previous.as_ref().is_none_or(|p| p.get("spec") != event.object.get("spec"));
                    if !spec_changed {
                        continue;
                    }
                    only = Some(event.key.clone());
                }
                Ok(event) if event.resource == hpas() => {
                    if let Some(uid) = event.object.pointer("/metadata/uid").and_then(Value::as_str) {
                        histories.remove(uid);
                    }
                    continue;
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        if sim.faults.controllers_paused() {
            continue;
        }
        let all = sim.store.snapshot(&hpas());
        for (key, object) in all {
            if only.as_ref().is_some_and(|k| *k != key)
                || object.pointer("/metadata/deletionTimestamp").is_some()
            {
                continue;
            }
            let uid = object
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let history = histories.entry(uid).or_default();
            sync(&sim, &key, &object, history).await;
        }
    }
}

struct Outcome {
    desired: i32,
    current_metrics: Vec<Value>,
    errors: Vec<(&'static str, String)>,
}

async fn sync(sim: &Sim, key: &ObjKey, object: &Value, history: &mut History) {
    let Ok(hpa) = serde_json::from_value::<HorizontalPodAutoscaler>(object.clone()) else {
        return;
    };
    let Some(spec) = hpa.spec.as_ref() else {
        return;
    };
    let Some(hpa_info) = super::info(sim, "autoscaling", "v2", "horizontalpodautoscalers") else {
        return;
    };
    let now = api::now();
    let target_ref = &spec.scale_target_ref;
    let target_api = target_ref
        .api_version
        .clone()
        .unwrap_or_else(|| "apps/v1".to_owned());
    let Some(target_info) = sim
        .registry
        .by_kind(&target_api, &target_ref.kind)
        .filter(|i| i.scale.is_some())
    else {
        write_status(
            sim,
            &hpa_info,
            key,
            object,
            json!({
                "currentReplicas": 0, "desiredReplicas": 0,
                "conditions": [condition("AbleToScale", "False", "FailedGetScale", &format!("the HPA controller was unable to get the target's current scale: no scale subresource for {target_api} {}", target_ref.kind), &now)]
            }),
        );
        return;
    };
    let target_key = ObjKey::new(&key.namespace, &target_ref.name);
    let scale_target = super::target(&target_info, &target_key, Some(Subresource::Scale));
    let scale = match api::get(sim, &scale_target) {
        Ok(s) => s,
        Err(e) => {
            write_status(
                sim,
                &hpa_info,
                key,
                object,
                json!({
                    "currentReplicas": 0, "desiredReplicas": 0,
                    "conditions": [condition("AbleToScale", "False", "FailedGetScale", &format!("the HPA controller was unable to get the target's current scale: {}", e.message), &now)]
                }),
            );
            return;
        }
    };
    let current = i32::try_from(
        scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0),
    )
    .unwrap_or(0);
    let ready = i32::try_from(
        sim.store
            .get(
                &GroupResource::new(&target_info.gvr.group, &target_info.gvr.resource),
                &target_key,
            )
            .and_then(|(o, _)| o.pointer("/status/readyReplicas").and_then(Value::as_i64))
            .unwrap_or(i64::from(current)),
    )
    .unwrap_or(current);
    let selector = scale
        .pointer("/status/selector")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    let behavior = Behavior::from_spec(spec.behavior.as_ref());
    let instant = Instant::now();
    let mut conditions = vec![condition(
        "AbleToScale",
        "True",
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale",
        &now,
    )];
    let mut status = json!({"currentReplicas": current});

    let desired = if current == 0 && min != 0 {
        conditions.push(condition(
            "ScalingActive",
            "False",
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
            &now,
        ));
        0
    } else if current > max {
        conditions.push(condition(
            "ScalingLimited",
            "True",
            "TooManyReplicas",
            "the desired replica count is more than the maximum replica count",
            &now,
        ));
        max
    } else if current < min {
        conditions.push(condition(
            "ScalingLimited",
            "True",
            "TooFewReplicas",
            "the desired replica count is less than the minimum replica count",
            &now,
        ));
        min
    } else {
        let outcome = evaluate(
            sim,
            &key.namespace,
            spec.metrics.as_deref().unwrap_or_default(),
            current,
            ready,
            &selector,
            &behavior,
            &target_ref.kind,
            &target_ref.name,
        )
        .await;
        status["currentMetrics"] = json!(outcome.current_metrics);
        if outcome.current_metrics.is_empty() {
            let (reason, message) = outcome
                .errors
                .first()
                .cloned()
                .unwrap_or(("InvalidMetricSourceType", "no metrics".to_owned()));
            conditions.push(condition("ScalingActive", "False", reason, &message, &now));
            current
        } else {
            conditions.push(condition(
                "ScalingActive",
                "True",
                "ValidMetricFound",
                "the HPA was able to successfully calculate a replica count from external metric",
                &now,
            ));
            let (n, limit) = hpa_algo::normalize(
                current,
                outcome.desired,
                min,
                max,
                &behavior,
                history,
                instant,
            );
            let (state, reason, message) = match limit {
                Limit::None => (
                    "False",
                    "DesiredWithinRange",
                    "the desired count is within the acceptable range",
                ),
                Limit::TooMany => (
                    "True",
                    "TooManyReplicas",
                    "the desired replica count is more than the maximum replica count",
                ),
                Limit::TooFew => (
                    "True",
                    "TooFewReplicas",
                    "the desired replica count is less than the minimum replica count",
                ),
                Limit::ScaleUpLimit => (
                    "True",
                    "ScaleUpLimit",
                    "the desired replica count is increasing faster than the maximum scale rate",
                ),
                Limit::ScaleDownLimit => (
                    "True",
                    "ScaleDownLimit",
                    "the desired replica count is decreasing faster than the maximum scale rate",
                ),
            };
            conditions.push(condition("ScalingLimited", state, reason, message, &now));
            n
        }
    };
    status["desiredReplicas"] = json!(desired);
    if desired != current && !(current == 0 && min != 0) {
        let body = serde_json::to_vec(&json!({"spec": {"replicas": desired}})).unwrap_or_default();
        match api::patch(
            sim,
            &scale_target,
            crate::patch::PatchType::Merge,
            &body,
            &super::options(),
        ) {
            Ok(_) => {
                hpa_algo::record_scale(history, instant, current, desired);
                status["lastScaleTime"] = json!(now);
                conditions[0] = condition(
                    "AbleToScale",
                    "True",
                    "SucceededRescale",
                    &format!("the HPA controller was able to update the target scale to {desired}"),
                    &now,
                );
            }
            Err(e) => {
                conditions[0] = condition(
                    "AbleToScale",
                    "False",
                    "FailedUpdateScale",
                    &format!(
                        "the HPA controller was unable to update the target scale: {}",
                        e.message
                    ),
                    &now,
                );
            }
        }
    } else if let Some(last) = object.pointer("/status/lastScaleTime") {
        status["lastScaleTime"] = last.clone();
    }
    status["conditions"] = json!(keep_transition_times(object, conditions));
    write_status(sim, &hpa_info, key, object, status);
}

fn condition(type_: &str, status: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": now})
}

/// Keeps `lastTransitionTime` of conditions whose status did not change.
fn keep_transition_times(object: &Value, mut conditions: Vec<Value>) -> Vec<Value> {
    let old = object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for c in &mut conditions {
        if let Some(prev) = old
            .iter()
            .find(|o| o.get("type") == c.get("type") && o.get("status") == c.get("status"))
        {
            c["lastTransitionTime"] = prev
                .get("lastTransitionTime")
                .cloned()
                .unwrap_or(Value::Null);
        }
    }
    conditions
}

fn write_status(
    sim: &Sim,
    info: &Arc<crate::resources::ResourceInfo>,
    key: &ObjKey,
    object: &Value,
    mut status: Value,
) {
    status["observedGeneration"] = object
        .pointer("/metadata/generation")
        .cloned()
        .unwrap_or(json!(1));
    if object.get("status") == Some(&status) {
        return;
    }
    // The status is replaced as a whole (fields the sync did not produce are cleared).
    if let Some(old) = object.get("status").and_then(Value::as_object) {
        for k in old.keys() {
            if status.get(k).is_none() {
                status[k] = Value::Null;
            }
        }
    }
    if let Err(e) = super::patch_status(sim, info, key, &status) {
        tracing::debug!(error = %e, name = %key.name, "HPA status update failed");
    }
}

#[allow(clippy::too_many_arguments)]
async fn evaluate(
    sim: &Sim,
    namespace: &str,
    metrics: &[MetricSpec],
    current: i32,
    ready: i32,
    _selector: &str,
    behavior: &Behavior,
    kind: &str,
    name: &str,
) -> Outcome {
    let mut desired = 0;
    let mut current_metrics = Vec::new();
    let mut errors = Vec::new();
    // Scale-up and scale-down tolerances may differ; the recommendation uses the smaller.
    let tolerance = behavior.up.tolerance.min(behavior.down.tolerance);
    for metric in metrics {
        match metric.type_.as_str() {
            "External" => {
                let Some(external) = &metric.external else { continue };
                let metric_name = &external.metric.name;
                let selector = external
                    .metric
                    .selector
                    .as_ref()
                    .and_then(|s| s.match_labels.as_ref())
                    .map(|l| l.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
                    .unwrap_or_default();
                match external_usage(sim, namespace, metric_name, &selector).await {
                    Ok(usage) => {
                        let target = &external.target;
                        let (replicas, current_value) = match target.type_.as_str() {
                            "AverageValue" => {
                                let t = target.average_value.as_ref().and_then(|q| ringscale_api::quantity::parse(&q.0).ok()).unwrap_or(0.0);
                                let avg = usage / f64::from(current.max(1));
                                (hpa_algo::for_average_value(current, usage, t, tolerance), json!({"averageValue": ringscale_api::quantity::format_milli(avg)}))
                            }
                            _ => {
                                let t = target.value.as_ref().and_then(|q| ringscale_api::quantity::parse(&q.0).ok()).unwrap_or(0.0);
                                (hpa_algo::for_ratio(current, ready, usage, t, tolerance), json!({"value": ringscale_api::quantity::format_milli(usage)}))
                            }
                        };
                        desired = desired.max(replicas);
                        let metric_id = serde_json::to_value(&external.metric).unwrap_or_default();
                        current_metrics.push(json!({"type": "External", "external": {"metric": metric_id, "current": current_value}}));
                    }
                    Err(message) => errors.push(("FailedGetExternalMetric", format!("the HPA was unable to compute the replica count: unable to get external metric {namespace}/{metric_name}/{selector}: {message}"))),
                }
            }
            "Resource" | "ContainerResource" => {
                let (resource_name, target) = match (&metric.resource, &metric.container_resource) {
                    (Some(r), _) => (r.name.clone(), r.target.clone()),
                    (None, Some(c)) => (c.name.clone(), c.target.clone()),
                    _ => continue,
                };
                let utilization = sim.utilization(namespace, kind, name).and_then(|u| if resource_name == "cpu" { u.cpu } else { u.memory });
                match (utilization, target.type_.as_str(), target.average_utilization) {
                    (Some(u), "Utilization", Some(t)) => {
                        desired = desired.max(hpa_algo::for_ratio(current, ready, u, f64::from(t), tolerance));
                        current_metrics.push(json!({"type": "Resource", "resource": {"name": resource_name, "current": {"averageUtilization": u.round() as i64}}}));
                    }
                    (None, ..) => errors.push(("FailedGetResourceMetric", format!("the HPA was unable to compute the replica count: failed to get {resource_name} utilization: no utilization set for {kind}/{name} (PUT /_sim/utilization/{namespace}/{kind}/{name})"))),
                    _ => errors.push(("FailedGetResourceMetric", format!("the HPA was unable to compute the replica count: {resource_name} targets other than Utilization are not simulated"))),
                }
            }
            other => errors.push(("InvalidMetricSourceType", format!("the HPA was unable to compute the replica count: {other} metrics are not simulated"))),
        }
    }
    Outcome {
        desired,
        current_metrics,
        errors,
    }
}

/// Why the HPA controller could not read an external metric (the texts the real controller's
/// conditions show, where it has them).
#[derive(Debug, thiserror::Error)]
enum ExternalMetricError {
    /// The aggregator could not reach the metrics API (its message).
    #[error("{0}")]
    Unreachable(String),
    /// The body could not be read.
    #[error("{0}")]
    Body(String),
    /// The metrics API answered an error status (the status, the start of the body).
    #[error("the server responded {0}: {1}")]
    Status(http::StatusCode, String),
    /// Not an ExternalMetricValueList.
    #[error("invalid ExternalMetricValueList: {0}")]
    Invalid(serde_json::Error),
    /// A list without `items`.
    #[error("the response has no items")]
    NoItems,
    /// An empty list.
    #[error("no metrics returned from external metrics API")]
    Empty,
    /// An item without a value.
    #[error("an item has no value")]
    NoValue,
    /// A value that is not a quantity.
    #[error("{0}")]
    Quantity(ringscale_api::quantity::QuantityError),
}

/// The summed value of an external metric, read through the aggregated API.
async fn external_usage(
    sim: &Sim,
    namespace: &str,
    metric: &str,
    selector: &str,
) -> Result<f64, ExternalMetricError> {
    let encoded: String = selector
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let path = format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}?labelSelector={encoded}"
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static("application/json"),
    );
    let forward = crate::aggregator::Forward {
        group: "external.metrics.k8s.io",
        version: "v1beta1",
        method: Method::GET,
        path_and_query: &path,
        headers: &headers,
        body: bytes::Bytes::new(),
    };
    let response = crate::aggregator::call(sim, forward, &controller_user())
        .await
        .map_err(|e| ExternalMetricError::Unreachable(e.message))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| ExternalMetricError::Body(e.to_string()))?
        .to_bytes();
    if !status.is_success() {
        return Err(ExternalMetricError::Status(
            status,
            String::from_utf8_lossy(&body).chars().take(300).collect(),
        ));
    }
    let list: Value = serde_json::from_slice(&body).map_err(ExternalMetricError::Invalid)?;
    let items = list
        .get("items")
        .and_then(Value::as_array)
        .ok_or(ExternalMetricError::NoItems)?;
    if items.is_empty() {
        return Err(ExternalMetricError::Empty);
    }
    let mut sum = 0.0;
    for item in items {
        let value = item
            .get("value")
            .and_then(Value::as_str)
            .ok_or(ExternalMetricError::NoValue)?;
        sum += ringscale_api::quantity::parse(value).map_err(ExternalMetricError::Quantity)?;
    }
    Ok(sum)
}
