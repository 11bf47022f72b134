//! The admin endpoint under `/_sim/` (authenticated like the API): faults, accounting,
//! aggregated-API backends, workload utilisation for the HPA simulation, and compaction.
//!
//! | method | path | effect |
//! | --- | --- | --- |
//! | GET/PUT | `/_sim/faults` | read / replace the [`FaultSpec`](crate::faults::FaultSpec) |
//! | POST | `/_sim/faults/drop-watches` | close every open watch |
//! | DELETE | `/_sim/faults` | remove every fault |
//! | POST | `/_sim/compact` | forget the event log (older resourceVersions get 410) |
//! | GET | `/_sim/stats` | request counts, open watches, object counts (JSON) |
//! | POST | `/_sim/stats/reset` | forget counts and the request log |
//! | GET | `/_sim/requests` | the request log (JSON) |
//! | GET | `/_sim/metrics` | Prometheus metrics |
//! | PUT | `/_sim/backends/<apiservice>` | backend URLs (a JSON array) of an APIService |
//! | PUT | `/_sim/utilization/<namespace>/<kind>/<name>` | `{"cpu": 70, "memory": 40}` (percent of requests) |

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::Sim;
use crate::error::ApiError;
use crate::faults::FaultSpec;
use crate::server::{Body, error_response, json_response};

/// Handles `/_sim/<rest>`.
pub async fn handle(sim: &Sim, req: Request<Incoming>, rest: &str) -> Response<Body> {
    let method = req.method().clone();
    let body = match http_body_util::Limited::new(req.into_body(), 1024 * 1024)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error_response(&ApiError::bad_request(format!(
                "could not read the request body: {e}"
            )));
        }
    };
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let result: Result<Value, ApiError> = match (method, parts.as_slice()) {
        (Method::GET, ["faults"]) => serde_json::to_value(sim.faults.spec()).map_err(|e| ApiError::internal(e.to_string())),
        (Method::PUT | Method::POST, ["faults"]) => serde_json::from_slice::<FaultSpec>(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid fault spec: {e}")))
            .map(|spec| {
                sim.faults.set(spec);
                json!({"ok": true})
            }),
        (Method::DELETE, ["faults"]) => {
            sim.faults.clear();
            Ok(json!({"ok": true}))
        }
        (Method::POST, ["faults", "drop-watches"]) => {
            sim.faults.drop_watches();
            Ok(json!({"ok": true}))
        }
        (Method::POST, ["compact"]) => {
            sim.store.compact();
            Ok(json!({"ok": true, "resourceVersion": sim.store.rv().to_string()}))
        }
        (Method::GET, ["stats"]) => Ok(stats_json(sim)),
        (Method::POST, ["stats", "reset"]) => {
            sim.stats.reset();
            Ok(json!({"ok": true}))
        }
        (Method::GET, ["requests"]) => Ok(Value::Array(
            sim.stats
                .log()
                .into_iter()
                .map(|r| json!({"user": r.user, "verb": r.verb, "group": r.group, "resource": r.resource, "subresource": r.subresource, "namespace": r.namespace, "name": r.name, "code": r.code}))
                .collect(),
        )),
        (Method::GET, ["metrics"]) => {
            let objects: Vec<(String, usize)> = sim.store.resources().into_iter().map(|r| {
                let n = sim.store.count(&r);
                (if r.group.is_empty() { r.resource } else { format!("{}.{}", r.resource, r.group) }, n)
            }).collect();
            let mut response = Response::new(http_body_util::Full::new(bytes::Bytes::from(sim.stats.prometheus(&objects))).boxed());
            response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; version=0.0.4"));
            return response;
        }
        (Method::PUT | Method::POST, ["backends", api_service]) => serde_json::from_slice::<Vec<String>>(&body)
            .map_err(|e| ApiError::bad_request(format!("expected a JSON array of URLs: {e}")))
            .map(|urls| {
                sim.backends.set(api_service, urls);
                json!({"ok": true})
            }),
        (Method::PUT | Method::POST, ["utilization", namespace, kind, name]) => serde_json::from_slice::<crate::Utilization>(&body)
            .map_err(|e| ApiError::bad_request(format!("expected {{\"cpu\": <percent>, \"memory\": <percent>}}: {e}")))
            .map(|u| {
                sim.set_utilization(namespace, kind, name, u);
                json!({"ok": true})
            }),
        _ => Err(ApiError::no_route(&format!("/_sim/{rest}"))),
    };
    match result {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err(e) => error_response(&e),
    }
}

fn stats_json(sim: &Sim) -> Value {
    let counts: Vec<Value> = sim
        .stats
        .counts()
        .into_iter()
        .map(|(k, n)| json!({"verb": k.verb, "group": k.group, "resource": k.resource, "code": k.code, "count": n}))
        .collect();
    let objects: serde_json::Map<String, Value> = sim
        .store
        .resources()
        .into_iter()
        .map(|r| {
            let n = sim.store.count(&r);
            (
                if r.group.is_empty() {
                    r.resource
                } else {
                    format!("{}.{}", r.resource, r.group)
                },
                json!(n),
            )
        })
        .collect();
    json!({"requests": counts, "openWatches": sim.stats.open_watches(), "objects": objects, "resourceVersion": sim.store.rv().to_string()})
}
