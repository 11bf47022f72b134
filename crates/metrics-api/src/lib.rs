//! The `external.metrics.k8s.io/v1beta1` API a ringscale replica serves to the HPA, through the
//! API server's aggregation layer, exactly as KEDA's metrics adapter answers it.
//!
//! [`router`] is the HTTP surface (axum), [`resolve`] finds the values (cache, owner, fallback),
//! [`serve`] runs it over HTTPS and tells handlers who connected, so that [`Auth`] can check
//! the caller as aggregated API servers do.

pub mod openapi;
pub mod resolve;
pub mod serve;
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ringscale_api::names::LABEL_SCALED_OBJECT_NAME;
use ringscale_api::quantity::format_milli;
use tracing::Instrument as _;

pub use resolve::{MetricError, Resolved, Resolver, Source};
pub use serve::{PeerCert, serve};

/// Who may call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Anyone (local use only: `--insecure-metrics-api`).
    Insecure,
    /// As an aggregated API server: the caller is the API server's front proxy, presenting a
    /// client certificate signed by the request-header CA (checked by TLS) whose common name
    /// is one of `allowed_names` (any, when empty); `X-Remote-User` (required) and
    /// `X-Remote-Group` name the user it acts for.
    RequestHeader {
        /// Allowed common names of the front proxy's certificate.
        allowed_names: Vec<String>,
    },
}

struct Shared {
    resolver: Arc<Resolver>,
    auth: Auth,
}

/// The HTTP surface: discovery and metric reads; every other path or method gets a `Status`.
pub fn router(resolver: Arc<Resolver>, auth: Auth) -> Router {
    let shared = Arc::new(Shared { resolver, auth });
    Router::new()
        .route("/openapi/v2", get(openapi::serve_v2))
        .route("/openapi/v3", get(openapi::serve_v3_index))
        .route(
            "/openapi/v3/apis/external.metrics.k8s.io/v1beta1",
            get(openapi::serve_v3),
        )
        .route("/apis/external.metrics.k8s.io", get(group))
        .route("/apis/external.metrics.k8s.io/v1beta1", get(resources))
        .route(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}",
            get(metric),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(not_allowed)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            authenticate,
        ))
        .with_state(shared)
}

fn failure(code: StatusCode, reason: &str, message: &str) -> Response {
    (
        code,
        axum::Json(wire::status(code.as_u16(), reason, message)),
    )
        .into_response()
}

async fn authenticate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if let Auth::RequestHeader { allowed_names } = &shared.auth {
        let peer = request
            .extensions()
            .get::<PeerCert>()
            .and_then(|p| p.common_name.clone());
        let Some(cn) = peer else {
            return failure(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "a client certificate signed by the request-header CA is required",
            );
        };
        if !allowed_names.is_empty() && !allowed_names.contains(&cn) {
            return failure(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                &format!("client certificate {cn:?} is not an allowed request-header name"),
            );
        }
        let Some(user) = user(request.headers()).map(str::to_owned) else {
            return failure(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "the X-Remote-User header is missing",
            );
        };
        // The user the API server acts for, and its groups, go with the request (and into every
        // log line about it).
        let groups: Vec<String> = request
            .headers()
            .get_all("x-remote-group")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect();
        let span = tracing::debug_span!("request", user = %user, groups = ?groups);
        let mut request = request;
        request.extensions_mut().insert(Caller { user, groups });
        return next.run(request).instrument(span).await;
    }
    next.run(request).await
}

/// The user the API server's front proxy made a request for (request-header authentication).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// `X-Remote-User`.
    pub user: String,
    /// Every `X-Remote-Group`.
    pub groups: Vec<String>,
}

/// The user the front proxy acts for.
fn user(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-remote-user")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

async fn group() -> Response {
    axum::Json(wire::group()).into_response()
}

async fn resources() -> Response {
    axum::Json(wire::resource_list()).into_response()
}

async fn not_found(request: Request) -> Response {
    failure(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!(
            "the server could not find the requested resource {}",
            request.uri().path()
        ),
    )
}

async fn not_allowed() -> Response {
    failure(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "only get is supported on external metrics",
    )
}

/// The ScaledObject a label selector names (`scaledobject.keda.sh/name=<so>`, `==`, or `in (so)`).
pub fn selected_scaled_object(selector: &str) -> Option<String> {
    let mut depth = 0usize;
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&selector[start..]);
    parts.into_iter().find_map(|requirement| {
        let requirement = requirement.trim();
        let (key, value) = if let Some((k, v)) = requirement.split_once("==") {
            (k, v)
        } else if let Some((k, v)) = requirement.split_once('=') {
            (k, v)
        } else if let Some((k, v)) = requirement.split_once(" in ") {
            let v = v.trim().strip_prefix('(')?.strip_suffix(')')?;
            // Only a single value names one object.
            (!v.contains(',')).then_some((k, v))?
        } else {
            return None;
        };
        let (key, value) = (key.trim(), value.trim());
        (key == LABEL_SCALED_OBJECT_NAME && !value.is_empty() && !key.ends_with('!'))
            .then(|| value.to_owned())
    })
}

async fn metric(
    State(shared): State<Arc<Shared>>,
    Path((namespace, metric)): Path<(String, String)>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the query string is malformed",
        );
    };
    let Some(name) = query
        .get("labelSelector")
        .and_then(|s| selected_scaled_object(s))
    else {
        return failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "the labelSelector must name the ScaledObject: {LABEL_SCALED_OBJECT_NAME}=<name>"
            ),
        );
    };
    let span =
        tracing::debug_span!("metric", namespace = %namespace, name = %name, metric = %metric);
    match shared
        .resolver
        .resolve(&namespace, &name, &metric)
        .instrument(span)
        .await
    {
        Ok(resolved) => {
            let now = jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            let item = wire::ExternalMetricValue {
                metric_name: metric,
                metric_labels: None,
                timestamp: now,
                value: format_milli(resolved.value),
            };
            axum::Json(wire::value_list(&[item])).into_response()
        }
        Err(MetricError::BadRequest(m)) => failure(StatusCode::BAD_REQUEST, "BadRequest", &m),
        Err(MetricError::NotFound(m)) => failure(StatusCode::NOT_FOUND, "NotFound", &m),
        Err(MetricError::Unavailable(m)) => {
            tracing::debug!(namespace, name, metric, error = %m, "metric unavailable");
            failure(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", &m)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selector_names_the_scaled_object() {
        let s = |text: &str| selected_scaled_object(text);
        assert_eq!(
            s("scaledobject.keda.sh/name=orders").as_deref(),
            Some("orders")
        );
        assert_eq!(
            s("scaledobject.keda.sh/name==orders").as_deref(),
            Some("orders")
        );
        assert_eq!(
            s("app=x, scaledobject.keda.sh/name = orders").as_deref(),
            Some("orders")
        );
        assert_eq!(
            s("scaledobject.keda.sh/name in (orders)").as_deref(),
            Some("orders")
        );
        assert_eq!(s("scaledobject.keda.sh/name in (a,b)"), None);
        assert_eq!(s("scaledobject.keda.sh/name!=orders"), None);
        assert_eq!(s("app=orders"), None);
        assert_eq!(s(""), None);
        assert_eq!(s("scaledobject.keda.sh/name="), None);
    }
}
