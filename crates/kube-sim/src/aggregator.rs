//! The aggregation layer: requests under `/apis/<group>/<version>` of an APIService backed by a
//! service are proxied to that service's backends (a configurable list of URLs, used in turn),
//! over TLS with the front-proxy client certificate and the `X-Remote-*` headers a real API
//! server adds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::Sim;
use crate::error::ApiError;
use crate::server::{Body, User, error_response};
use crate::store::{GroupResource, ObjKey};

type HttpsClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// Backends of APIServices and the clients that reach them.
#[derive(Default)]
pub struct Backends {
    urls: Mutex<HashMap<String, Vec<String>>>,
    next: AtomicUsize,
    clients: Mutex<HashMap<String, HttpsClient>>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("urls", &self.urls)
            .finish()
    }
}

impl Backends {
    /// Sets the backend URLs (`https://host:port`) of an APIService, e.g.
    /// `v1beta1.external.metrics.k8s.io`.
    pub fn set(&self, api_service: &str, urls: Vec<String>) {
        self.urls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(api_service.to_owned(), urls);
    }

    /// The backend URLs of an APIService.
    pub fn get(&self, api_service: &str) -> Vec<String> {
        self.urls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(api_service)
            .cloned()
            .unwrap_or_default()
    }

    fn pick(&self, api_service: &str) -> Option<String> {
        let urls = self.get(api_service);
        if urls.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % urls.len();
        urls.get(i).cloned()
    }
}

fn api_service(sim: &Sim, group: &str, version: &str) -> Option<crate::store::Obj> {
    let (object, _) = sim.store.get(
        &GroupResource::new("apiregistration.k8s.io", "apiservices"),
        &ObjKey::new("", &format!("{version}.{group}")),
    )?;
    object.pointer("/spec/service").filter(|s| !s.is_null())?;
    Some(object)
}

/// Whether a group version is served by an APIService backed by a service.
pub fn is_aggregated(sim: &Sim, group: &str, version: &str) -> bool {
    !group.is_empty() && api_service(sim, group, version).is_some()
}

/// Group versions registered through APIServices backed by a service.
pub fn registered(sim: &Sim) -> Vec<(String, String)> {
    sim.store
        .snapshot(&GroupResource::new("apiregistration.k8s.io", "apiservices"))
        .into_iter()
        .filter(|(_, o)| o.pointer("/spec/service").is_some_and(|s| !s.is_null()))
        .filter_map(|(_, o)| {
            Some((
                o.pointer("/spec/group")?.as_str()?.to_owned(),
                o.pointer("/spec/version")?.as_str()?.to_owned(),
            ))
        })
        .collect()
}

fn client_for(sim: &Sim, name: &str, object: &Value) -> Result<HttpsClient, ApiError> {
    let insecure = object
        .pointer("/spec/insecureSkipTLSVerify")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let ca = object
        .pointer("/spec/caBundle")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let cache_key = format!("{name}|{insecure}|{ca}");
    if let Some(client) = sim
        .backends
        .clients
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&cache_key)
    {
        return Ok(client.clone());
    }
    let roots = if ca.is_empty() {
        None
    } else {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(&ca)
            .map_err(|_| {
                ApiError::unavailable(format!("APIService {name} has an invalid caBundle"))
            })?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile_certs(&pem) {
            let _ = roots.add(cert);
        }
        Some(roots)
    };
    // kube-aggregator dials an endpoint of the Service and verifies the Service's DNS name.
    let verify_as = match (
        object.pointer("/spec/service/name").and_then(Value::as_str),
        object
            .pointer("/spec/service/namespace")
            .and_then(Value::as_str),
    ) {
        (Some(service), Some(namespace)) => Some(
            rustls::pki_types::ServerName::try_from(format!("{service}.{namespace}.svc"))
                .map_err(|e| ApiError::unavailable(format!("APIService {name}: {e}")))?,
        ),
        _ => None,
    };
    let config = crate::tls::client_config(Some(&sim.front_proxy_client), roots, insecure)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only();
    let builder = match verify_as {
        Some(name) => {
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    let connector = builder.enable_http1().build();
    let client: HttpsClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    sim.backends
        .clients
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(cache_key, client.clone());
    Ok(client)
}

/// Certificates of a PEM bundle, as DER.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// A request to forward to an aggregated API server.
#[derive(Debug)]
pub struct Forward<'a> {
    /// API group, e.g. `external.metrics.k8s.io`.
    pub group: &'a str,
    /// Version, e.g. `v1beta1`.
    pub version: &'a str,
    /// Method.
    pub method: http::Method,
    /// Path and query, e.g. `/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/m?labelSelector=...`.
    pub path_and_query: &'a str,
    /// Request headers (Accept, Content-Type and User-Agent are forwarded).
    pub headers: &'a HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// Sends one request to a backend of the APIService for `group/version`, as `user`.
pub async fn call(
    sim: &Sim,
    forward: Forward<'_>,
    user: &User,
) -> Result<Response<Incoming>, ApiError> {
    let Forward {
        group,
        version,
        method,
        path_and_query,
        headers,
        body,
    } = forward;
    let name = format!("{version}.{group}");
    let object =
        api_service(sim, group, version).ok_or_else(|| ApiError::no_route(path_and_query))?;
    let base = sim.backends.pick(&name).ok_or_else(|| {
        ApiError::unavailable(format!(
            "no endpoints available for service of APIService {name:?}"
        ))
    })?;
    let client = client_for(sim, &name, &object)?;
    let uri: http::Uri = format!("{}{path_and_query}", base.trim_end_matches('/'))
        .parse()
        .map_err(|e| {
            ApiError::unavailable(format!(
                "invalid backend URL {base:?} for APIService {name}: {e}"
            ))
        })?;
    let mut request = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        if matches!(k.as_str(), "accept" | "content-type" | "user-agent") {
            request = request.header(k, v);
        }
    }
    request = request.header("X-Remote-User", user.name.as_str());
    for group in &user.groups {
        request = request.header("X-Remote-Group", group.as_str());
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    match tokio::time::timeout(sim.config.proxy_timeout, client.request(request)).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => Err(ApiError::unavailable(format!(
            "error trying to reach service: {e}"
        ))),
        Err(_) => Err(ApiError::timeout(format!(
            "the backend of APIService {name} did not answer within {:?}",
            sim.config.proxy_timeout
        ))),
    }
}

/// Proxies an aggregated API request.
pub async fn proxy(
    sim: &Sim,
    req: Request<Incoming>,
    group: &str,
    version: &str,
    user: &User,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match http_body_util::Limited::new(body, 3 * 1024 * 1024)
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
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let forward = Forward {
        group,
        version,
        method: parts.method,
        path_and_query: &path_and_query,
        headers: &parts.headers,
        body,
    };
    match call(sim, forward, user).await {
        Err(e) => error_response(&e),
        Ok(response) => {
            let (parts, body) = response.into_parts();
            match body.collect().await {
                Ok(b) => {
                    let mut out = Response::new(Full::new(b.to_bytes()).boxed());
                    *out.status_mut() = parts.status;
                    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
                        out.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
                    } else {
                        out.headers_mut().insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        );
                    }
                    out
                }
                Err(e) => error_response(&ApiError {
                    code: StatusCode::BAD_GATEWAY,
                    ..ApiError::unavailable(format!("error reading the backend response: {e}"))
                }),
            }
        }
    }
}
