//! API errors, rendered as `metav1.Status` bodies exactly as the API server writes them.

use http::StatusCode;
use ringscale_api::validate::{Problem, ProblemKind};
use serde_json::{Value, json};

/// A failed API request.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub code: StatusCode,
    /// `metav1.StatusReason`, e.g. `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `details` of the Status: name, group, kind, causes, retryAfterSeconds.
    pub details: Option<Value>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u32>,
}

/// Identifies the object an error is about, for `details`.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// API group ("" for core).
    pub group: &'a str,
    /// Plural resource, as the API server reports it in `details.kind`.
    pub resource: &'a str,
    /// Object name.
    pub name: &'a str,
}

impl<'a> Subject<'a> {
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_owned()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    fn details(&self) -> Value {
        json!({"name": self.name, "group": self.group, "kind": self.resource})
    }
}

impl ApiError {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    /// 404 for an object.
    pub fn not_found(subject: Subject<'_>) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{} {:?} not found", subject.qualified(), subject.name),
        );
        e.details = Some(subject.details());
        e
    }

    /// 404 for a path that serves nothing.
    pub fn no_route(path: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
        e.details = Some(
            json!({"causes": [{"reason": "UnexpectedServerResponse", "message": format!("404 page not found: {path}")}]}),
        );
        e
    }

    /// 409 AlreadyExists.
    pub fn already_exists(subject: Subject<'_>) -> Self {
        let mut e = Self::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{} {:?} already exists", subject.qualified(), subject.name),
        );
        e.details = Some(subject.details());
        e
    }

    /// 409 Conflict for a stale resourceVersion.
    pub fn conflict(subject: Subject<'_>, why: &str) -> Self {
        let mut e = Self::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {:?}: {why}",
                subject.qualified(),
                subject.name
            ),
        );
        e.details = Some(subject.details());
        e
    }

    /// 409 Conflict from server-side apply, with one cause per conflicting field.
    pub fn apply_conflict(subject: Subject<'_>, conflicts: &[(String, String)]) -> Self {
        let lines: Vec<String> = conflicts
            .iter()
            .map(|(manager, field)| format!("conflict with {manager:?}: {field}"))
            .collect();
        let mut e = Self::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Apply failed with {} conflict(s): {}",
                conflicts.len(),
                lines.join("\n")
            ),
        );
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(manager, field)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {manager:?}"), "field": field}))
            .collect();
        let mut details = subject.details();
        details["causes"] = Value::Array(causes);
        e.details = Some(details);
        e
    }

    /// 422 Invalid with one cause per problem.
    pub fn invalid(kind: &str, group: &str, name: &str, problems: &[Problem]) -> Self {
        let summary: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        let qualified = if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{group}")
        };
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!(
                "{qualified} {name:?} is invalid: {}",
                if summary.len() == 1 {
                    summary[0].clone()
                } else {
                    format!("[{}]", summary.join(", "))
                }
            ),
        );
        let causes: Vec<Value> = problems
            .iter()
            .map(|p| json!({"reason": p.kind.cause_type(), "message": p.message, "field": p.path.as_str()}))
            .collect();
        e.details = Some(json!({"name": name, "group": group, "kind": kind, "causes": causes}));
        e
    }

    /// 422 Invalid with a single field problem.
    pub fn invalid_field(
        kind: &str,
        group: &str,
        name: &str,
        kind_of: ProblemKind,
        field: &str,
        message: &str,
    ) -> Self {
        let problem = Problem::new(
            kind_of,
            ringscale_api::validate::FieldPath::new(field),
            message,
        );
        Self::invalid(kind, group, name, &[problem])
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", message)
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type:?})"
            ),
        )
    }

    /// 410 Gone for a resourceVersion older than the watch window.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "Expired", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden, e.g. creating in a terminating namespace.
    pub fn forbidden(subject: Subject<'_>, why: &str) -> Self {
        let mut e = Self::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "{} {:?} is forbidden: {why}",
                subject.qualified(),
                subject.name
            ),
        );
        e.details = Some(subject.details());
        e
    }

    /// 415 for a protobuf body kube-sim cannot decode faithfully (the reason says what to do).
    pub fn unsupported_protobuf(why: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the protobuf body could not be decoded: {why}"),
        )
    }

    /// 403 Forbidden for a request the authorizer could not decide yet, as a real API server
    /// answers while its RBAC caches warm up after a restart.
    pub fn authorizer_warming(user: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "forbidden: User {user:?} cannot be authorized yet: RBAC: the authorizer's caches are not synced (the API server is starting)"
            ),
        )
    }

    /// 429 TooManyRequests with Retry-After.
    pub fn too_many_requests(retry_after: u32) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        );
        e.details = Some(json!({"retryAfterSeconds": retry_after}));
        e.retry_after = Some(retry_after);
        e
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// 503 ServiceUnavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
    }

    /// 504 Timeout (the reason the API server uses for a slow backend).
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "Timeout", message)
    }

    /// The `metav1.Status` body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code.as_u16(),
            self.reason,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

/// A `Status` reporting success (the body of a DELETE of a collection, and of some deletes).
pub fn success_status(details: Option<Value>) -> Value {
    let mut status =
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"});
    if let Some(details) = details {
        status["details"] = details;
    }
    status
}
