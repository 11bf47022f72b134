//! `/openapi/v2` and `/openapi/v3`, as aggregated API servers serve them: the API server
//! downloads both from every APIService's backend and merges them into its own spec (without
//! them it logs "loading OpenAPI spec for v1beta1.external.metrics.k8s.io failed" every minute).
//! The documents describe the two reads this API has: discovery and a metric's values.

use std::sync::OnceLock;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

const GROUP_VERSION: &str = "apis/external.metrics.k8s.io/v1beta1";
const VALUE: &str = "io.k8s.metrics.pkg.apis.external_metrics.v1beta1.ExternalMetricValue";
const LIST: &str = "io.k8s.metrics.pkg.apis.external_metrics.v1beta1.ExternalMetricValueList";

/// The schemas of the values, with `$ref`s under `prefix` (`#/definitions/` for v2,
/// `#/components/schemas/` for v3).
fn schemas(prefix: &str) -> Value {
    json!({
        VALUE: {
            "description": "ExternalMetricValue is a metric value for external metric. A single metric value is identified by metric name and a set of string labels. For one metric there can be multiple values with different sets of labels.",
            "type": "object",
            "required": ["metricName", "metricLabels", "timestamp", "value"],
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metricName": {"description": "the name of the metric", "type": "string"},
                "metricLabels": {
                    "description": "a set of labels that identify a single time series for the metric",
                    "type": "object",
                    "additionalProperties": {"type": "string"}
                },
                "timestamp": {"description": "indicates the time at which the metrics were produced", "type": "string", "format": "date-time"},
                "window": {"description": "indicates the window ([Timestamp-Window, Timestamp]) from which these metrics were calculated, when returning rate metrics calculated from cumulative metrics (or zero for non-calculated instantaneous metrics).", "type": "integer", "format": "int64"},
                "value": {"description": "the value of the metric", "type": "string"}
            },
            "x-kubernetes-group-version-kind": [{"group": "external.metrics.k8s.io", "kind": "ExternalMetricValue", "version": "v1beta1"}]
        },
        LIST: {
            "description": "ExternalMetricValueList is a list of values for a given metric for some set labels",
            "type": "object",
            "required": ["items"],
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {
                    "type": "object",
                    "properties": {
                        "resourceVersion": {"type": "string"},
                        "continue": {"type": "string"}
                    }
                },
                "items": {"description": "value of the metric matching a given set of labels", "type": "array", "items": {"$ref": format!("{prefix}{VALUE}")}}
            },
            "x-kubernetes-group-version-kind": [{"group": "external.metrics.k8s.io", "kind": "ExternalMetricValueList", "version": "v1beta1"}]
        }
    })
}

fn metric_parameters() -> Value {
    json!([
        {"name": "namespace", "in": "path", "required": true, "description": "object name and auth scope, such as for teams and projects", "type": "string", "schema": {"type": "string"}},
        {"name": "metric", "in": "path", "required": true, "description": "the external metric's name", "type": "string", "schema": {"type": "string"}},
        {"name": "labelSelector", "in": "query", "description": "A selector to restrict the values returned by their labels (KEDA: scaledobject.keda.sh/name=<name>).", "type": "string", "schema": {"type": "string"}}
    ])
}

/// The GET of a metric's values, with its 200 response (the rest is the same in v2 and v3).
fn list_operation(ok: Value) -> Value {
    json!({
        "description": "the values of an external metric (one per ScaledObject matched by the label selector)",
        "tags": ["external_metrics_v1beta1"],
        "operationId": "listExternalMetricsV1beta1NamespacedMetric",
        "responses": {"200": ok, "401": {"description": "Unauthorized"}},
        "x-kubernetes-action": "list",
        "x-kubernetes-group-version-kind": {"group": "external.metrics.k8s.io", "kind": "ExternalMetricValueList", "version": "v1beta1"}
    })
}

/// The parameters without the key the other OpenAPI version puts elsewhere (`schema` in v2,
/// `type` in v3).
fn parameters_without(key: &str) -> Value {
    let mut parameters = metric_parameters();
    for p in parameters.as_array_mut().into_iter().flatten() {
        if let Some(o) = p.as_object_mut() {
            o.remove(key);
        }
    }
    parameters
}

fn metric_path() -> String {
    format!("/{GROUP_VERSION}/namespaces/{{namespace}}/{{metric}}")
}

/// The OpenAPI v2 (Swagger) document.
pub fn v2() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut get = list_operation(
            json!({"description": "OK", "schema": {"$ref": format!("#/definitions/{LIST}")}}),
        );
        get["consumes"] = json!(["*/*"]);
        get["produces"] = json!(["application/json"]);
        get["schemes"] = json!(["https"]);
        json!({
            "swagger": "2.0",
            "info": {"title": "ringscale external metrics", "version": env!("CARGO_PKG_VERSION")},
            "paths": {metric_path(): {"get": get, "parameters": parameters_without("schema")}},
            "definitions": schemas("#/definitions/")
        })
    })
}

/// The OpenAPI v3 document of the group version.
pub fn v3_group_version() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let get = list_operation(json!({
            "description": "OK",
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{LIST}")}}}
        }));
        json!({
            "openapi": "3.0.0",
            "info": {"title": "ringscale external metrics", "version": env!("CARGO_PKG_VERSION")},
            "paths": {metric_path(): {"get": get, "parameters": parameters_without("type")}},
            "components": {"schemas": schemas("#/components/schemas/")}
        })
    })
}

/// A document rendered once: its JSON text and its ETag (FNV-1a of the text, stable across
/// builds, for the v3 index and If-None-Match).
struct Rendered {
    body: String,
    etag: String,
}

fn render(doc: &Value) -> Rendered {
    let body = doc.to_string();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    Rendered {
        body,
        etag: format!("{h:016X}"),
    }
}

fn rendered_v2() -> &'static Rendered {
    static R: OnceLock<Rendered> = OnceLock::new();
    R.get_or_init(|| render(v2()))
}

fn rendered_v3() -> &'static Rendered {
    static R: OnceLock<Rendered> = OnceLock::new();
    R.get_or_init(|| render(v3_group_version()))
}

fn json_with_etag(doc: &Rendered, headers: &HeaderMap) -> Response {
    let etag = format!("\"{}\"", doc.etag);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag)
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        [
            (header::ETAG, etag),
            (header::CONTENT_TYPE, "application/json".to_owned()),
        ],
        doc.body.clone(),
    )
        .into_response()
}

/// `GET /openapi/v2`.
pub async fn serve_v2(headers: HeaderMap) -> Response {
    json_with_etag(rendered_v2(), &headers)
}

/// `GET /openapi/v3`: the index of group versions.
pub async fn serve_v3_index() -> Response {
    let url = format!("/openapi/v3/{GROUP_VERSION}?hash={}", rendered_v3().etag);
    axum::Json(json!({"paths": {GROUP_VERSION: {"serverRelativeURL": url}}})).into_response()
}

/// `GET /openapi/v3/apis/external.metrics.k8s.io/v1beta1` (any `hash` query).
pub async fn serve_v3(headers: HeaderMap) -> Response {
    json_with_etag(rendered_v3(), &headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves_in_both_documents() {
        fn refs(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    for (k, v) in m {
                        if k == "$ref" {
                            out.push(v.as_str().unwrap_or_default().to_owned());
                        }
                        refs(v, out);
                    }
                }
                Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        for (doc, prefix, table) in [
            (v2(), "#/definitions/", &v2()["definitions"]),
            (
                v3_group_version(),
                "#/components/schemas/",
                &v3_group_version()["components"]["schemas"],
            ),
        ] {
            let mut found = Vec::new();
            refs(doc, &mut found);
            assert!(!found.is_empty());
            for r in found {
                let name = r.strip_prefix(prefix).unwrap_or_default();
                assert!(table.get(name).is_some(), "{r} is not defined");
            }
        }
        assert_eq!(v2()["swagger"], "2.0");
        assert_eq!(v3_group_version()["openapi"], "3.0.0");
    }
}
