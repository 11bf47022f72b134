//! Who the replica's Kubernetes API requests say they come from: `User-Agent:
//! ringscale/<version>` on every request, and `fieldManager=ringscale` on every write, so that the
//! API server's audit log and the objects' managedFields name ringscale (without it they say
//! `unknown`, or the HTTP library's name).

use http::{HeaderValue, Method, Request, Uri};

/// The field manager on every write.
pub(crate) const FIELD_MANAGER: &str = "ringscale";

/// `ringscale/<version>`.
pub(crate) fn user_agent() -> &'static str {
    concat!("ringscale/", env!("CARGO_PKG_VERSION"))
}

/// Sets the User-Agent, and the field manager on writes that do not name one.
pub(crate) fn identify<B>(mut request: Request<B>) -> Request<B> {
    request.headers_mut().insert(
        http::header::USER_AGENT,
        HeaderValue::from_static(user_agent()),
    );
    let writes = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH
    );
    if writes && let Some(uri) = with_field_manager(request.uri()) {
        *request.uri_mut() = uri;
    }
    request
}

/// The URI with `fieldManager=ringscale` added to its query, or `None` when it names one
/// already (or could not be rebuilt).
fn with_field_manager(uri: &Uri) -> Option<Uri> {
    let query = uri.query().unwrap_or("");
    if query.split('&').any(|p| p.starts_with("fieldManager=")) {
        return None;
    }
    let path_and_query = if query.is_empty() {
        format!("{}?fieldManager={FIELD_MANAGER}", uri.path())
    } else {
        format!("{}?{query}&fieldManager={FIELD_MANAGER}", uri.path())
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(method: Method, uri: &str) -> Request<()> {
        identify(
            Request::builder()
                .method(method)
                .uri(uri)
                .body(())
                .unwrap_or_default(),
        )
    }

    #[test]
    fn every_request_names_ringscale_and_every_write_its_field_manager() {
        let get = sent(Method::GET, "https://k/api/v1/namespaces/a/pods?limit=5");
        assert_eq!(
            get.headers()
                .get("user-agent")
                .and_then(|v| v.to_str().ok()),
            Some(user_agent())
        );
        assert!(user_agent().starts_with("ringscale/"));
        assert_eq!(get.uri().query(), Some("limit=5"), "reads are left alone");
        let patch = sent(
            Method::PATCH,
            "https://k/apis/keda.sh/v1alpha1/namespaces/a/scaledobjects/x",
        );
        assert_eq!(patch.uri().query(), Some("fieldManager=ringscale"));
        assert_eq!(patch.uri().host(), Some("k"));
        let create = sent(Method::POST, "/api/v1/namespaces/a/events?dryRun=All");
        assert_eq!(
            create.uri().query(),
            Some("dryRun=All&fieldManager=ringscale")
        );
        let named = sent(Method::PATCH, "/x?fieldManager=other");
        assert_eq!(named.uri().query(), Some("fieldManager=other"));
        let delete = sent(Method::DELETE, "/api/v1/namespaces/a/pods/p");
        assert_eq!(delete.uri().query(), None);
    }
}
