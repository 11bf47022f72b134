//! What goes over the wire, shaped as the Kubernetes API machinery (and KEDA's adapter) shapes
//! it: `ExternalMetricValueList`, the discovery `APIResourceList`, and `Status` for errors.

use serde::Serialize;
use serde_json::{Value, json};

/// The API group and version served.
pub const GROUP_VERSION: &str = "external.metrics.k8s.io/v1beta1";

/// One value, as `external.metrics.k8s.io/v1beta1` `ExternalMetricValue`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalMetricValue {
    /// The metric's name.
    pub metric_name: String,
    /// Always null, as KEDA sends it.
    pub metric_labels: Option<Value>,
    /// When the value was read (RFC 3339, seconds).
    pub timestamp: String,
    /// The value as a Kubernetes quantity string (`"2500m"`, `"5"`, `"3k"`).
    pub value: String,
}

/// The list the HPA receives.
pub fn value_list(items: &[ExternalMetricValue]) -> Value {
    json!({
        "kind": "ExternalMetricValueList",
        "apiVersion": GROUP_VERSION,
        "metadata": {},
        "items": items,
    })
}

/// Discovery of the group version: one resource, `externalmetrics`, read-only.
pub fn resource_list() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [{
            "name": "externalmetrics",
            "singularName": "",
            "namespaced": true,
            "kind": "ExternalMetricValueList",
            "verbs": ["get"],
        }],
    })
}

/// Discovery of the group.
pub fn group() -> Value {
    let version = json!({"groupVersion": GROUP_VERSION, "version": "v1beta1"});
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": "external.metrics.k8s.io",
        "versions": [version],
        "preferredVersion": version,
    })
}

/// A failure, as a `metav1.Status`.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}
