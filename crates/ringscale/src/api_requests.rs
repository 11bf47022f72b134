//! Counts the replica's Kubernetes API requests by verb (`ringscale_kube_api_requests_total`),
//! as a layer in the kube client: the API load a ring puts on the API server, visible per
//! replica. Only the verb is a label, so the series stay bounded. Requests are counted when they
//! are sent, after the client's rate limits ([`crate::client_limits`]).

use http::{Method, Request, Uri};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// The label of the counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Verb {
    verb: &'static str,
}

/// The Kubernetes verb of a request: get/list/watch from the path and query, the rest from the
/// method.
pub(crate) fn verb(method: &Method, uri: &Uri) -> &'static str {
    let watching = uri.query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "watch=true" || p == "watch=1" || p == "watch")
    });
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let rest: &[&str] = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => &[],
    };
    let rest = match rest {
        ["namespaces", _ns, more @ ..] if !more.is_empty() => more,
        other => other,
    };
    let collection = rest.len() == 1;
    match *method {
        Method::GET if watching => "watch",
        Method::GET if collection => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if collection => "deletecollection",
        Method::DELETE => "delete",
        _ => "other",
    }
}

/// A kube client whose requests are counted in `family` and identified as ringscale's
/// ([`crate::identity`]).
pub(crate) fn client(
    config: kube::Config,
    family: Family<Verb, Counter>,
    limits: crate::client_limits::Limits,
) -> Result<kube::Client, kube::Error> {
    let count = move |request: Request<kube::client::Body>| {
        family
            .get_or_create(&Verb {
                verb: verb(request.method(), request.uri()),
            })
            .inc();
        crate::identity::identify(request)
    };
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&crate::client_limits::LimitsLayer::new(limits))
        .with_layer(&tower::util::MapRequestLayer::new(count))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(method: Method, uri: &str) -> &'static str {
        verb(&method, &uri.parse().unwrap_or_default())
    }

    #[test]
    fn requests_are_named_by_their_kubernetes_verb() {
        assert_eq!(v(Method::GET, "/api/v1/namespaces/default/secrets"), "list");
        assert_eq!(
            v(Method::GET, "/api/v1/secrets?watch=true&resourceVersion=5"),
            "watch"
        );
        assert_eq!(
            v(Method::GET, "/api/v1/namespaces/default/secrets/s"),
            "get"
        );
        assert_eq!(v(Method::GET, "/api/v1/namespaces"), "list");
        assert_eq!(v(Method::GET, "/api/v1/namespaces/default"), "get");
        assert_eq!(
            v(
                Method::PUT,
                "/apis/keda.sh/v1alpha1/namespaces/a/scaledobjects/x/status"
            ),
            "update"
        );
        assert_eq!(
            v(
                Method::PATCH,
                "/apis/apps/v1/namespaces/a/deployments/w/scale"
            ),
            "patch"
        );
        assert_eq!(
            v(Method::POST, "/apis/batch/v1/namespaces/a/jobs"),
            "create"
        );
        assert_eq!(
            v(Method::DELETE, "/apis/batch/v1/namespaces/a/jobs/j"),
            "delete"
        );
        assert_eq!(
            v(Method::DELETE, "/apis/batch/v1/namespaces/a/jobs"),
            "deletecollection"
        );
    }
}
