//! The HTTPS front: TLS, authentication, routing, discovery, the verbs, watch streams, fault
//! injection and accounting.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::api::{
    self, DeleteOptions, FieldValidation, ListOptions, Subresource, Target, WriteOptions,
};
use crate::error::ApiError;
use crate::faults::OutageMode;
use crate::patch::PatchType;
use crate::resources::{Gvr, ResourceInfo};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::stats::RequestRecord;
use crate::store::{EventKind, GroupResource};
use crate::{Sim, aggregator, discovery, table};

/// Response body: a whole buffer or a stream.
pub type Body = BoxBody<Bytes, Infallible>;

/// Largest accepted request body.
const MAX_BODY: usize = 3 * 1024 * 1024;
/// Frames buffered per watch before the watch blocks (and, if still behind, is closed).
const WATCH_BUFFER: usize = 1024;
/// Most bytes of queued events a watch sends in one frame.
const WATCH_BATCH_BYTES: usize = 64 * 1024;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A JSON response.
pub fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(full(serde_json::to_vec(value).unwrap_or_default()));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A JSON response from bytes already serialized.
pub fn bytes_response(code: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An error response with its Status body.
pub fn error_response(err: &ApiError) -> Response<Body> {
    let mut response = json_response(err.code, &err.to_status());
    if let Some(seconds) = err.retry_after
        && let Ok(v) = HeaderValue::from_str(&seconds.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// Who is asking.
#[derive(Clone, Debug)]
pub struct User {
    /// User name.
    pub name: String,
    /// Groups.
    pub groups: Vec<String>,
}

/// Serves until `shutdown` turns true. An outage in `Refuse` mode closes the listener (and
/// cuts open connections) until it ends, then listens again on the same address.
pub async fn serve(
    sim: Arc<Sim>,
    mut listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let addr = listener.local_addr().ok();
    let mut outages = sim.faults.outages();
    let (cut_tx, _) = watch::channel(0u64);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, peer)) = accepted {
                    let _ = stream.set_nodelay(true);
                    let sim = sim.clone();
                    let acceptor = acceptor.clone();
                    let cut = cut_tx.subscribe();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move { connection(sim, acceptor, stream, peer, cut, shutdown).await });
                }
            }
            changed = outages.changed() => {
                if changed.is_err() {
                    return;
                }
                if *outages.borrow_and_update() == Some(OutageMode::Refuse) {
                    drop(listener);
                    cut_tx.send_modify(|n| *n += 1);
                    loop {
                        tokio::select! {
                            changed = outages.changed() => if changed.is_err() { return },
                            _ = shutdown.changed() => return,
                        }
                        if *outages.borrow_and_update() != Some(OutageMode::Refuse) {
                            break;
                        }
                    }
                    let Some(addr) = addr else { return };
                    listener = match rebind(addr).await {
                        Some(l) => l,
                        None => {
                            tracing::error!(%addr, "could not listen again after the outage");
                            return;
                        }
                    };
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn rebind(addr: SocketAddr) -> Option<TcpListener> {
    for _ in 0..50 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return Some(l);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn connection(
    sim: Arc<Sim>,
    acceptor: TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    mut cut: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
    else {
        return;
    };
    let cert_user = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(crate::tls::subject_of)
        .map(|(name, groups)| User { name, groups });
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let sim = sim.clone();
        let cert_user = cert_user.clone();
        async move { Ok::<_, Infallible>(handle(sim, req, cert_user, peer).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = cut.changed() => {}
        _ = shutdown.changed() => {}
    }
}

/// Query parameters (last value wins, as for the API server's single-valued parameters).
fn query(uri: &http::Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let decoded = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match decoded {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn authenticate(sim: &Sim, req: &Request<Incoming>, cert_user: Option<User>) -> Option<User> {
    if let Some(user) = cert_user {
        return Some(user);
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?
        .trim();
    sim.tokens
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(token)
        .cloned()
}

/// The parsed address of an API request.
#[derive(Debug)]
enum Route {
    Public(&'static str),
    Version,
    Root,
    LegacyApi,
    Groups,
    Group(String),
    GroupVersion(String, String),
    Resource {
        gvr: Gvr,
        namespace: Option<String>,
        name: Option<String>,
        subresource: Option<String>,
    },
    OpenApi(String),
    Admin(String),
    Aggregated {
        group: String,
        version: String,
    },
}

fn route(sim: &Sim, path: &str) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segments.as_slice() {
        [] => return Ok(Route::Root),
        ["healthz", ..] => return Ok(Route::Public("healthz")),
        ["livez", ..] => return Ok(Route::Public("livez")),
        ["readyz", ..] => return Ok(Route::Public("readyz")),
        ["version"] => return Ok(Route::Version),
        ["openapi", rest @ ..] => return Ok(Route::OpenApi(rest.join("/"))),
        ["_sim", rest @ ..] => return Ok(Route::Admin(rest.join("/"))),
        ["api"] => return Ok(Route::LegacyApi),
        ["apis"] => return Ok(Route::Groups),
        ["apis", g] => return Ok(Route::Group((*g).to_owned())),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::no_route(path)),
    };
    if aggregator::is_aggregated(sim, group, version) {
        return Ok(Route::Aggregated {
            group: group.to_owned(),
            version: version.to_owned(),
        });
    }
    if rest.is_empty() {
        return Ok(Route::GroupVersion(group.to_owned(), version.to_owned()));
    }
    let served = |plural: &str| sim.registry.get(&Gvr::new(group, version, plural));
    let owned = |s: &&str| (*s).to_owned();
    let (plural, namespace, name, subresource) = match rest {
        ["namespaces", ns, plural, tail @ ..] if served(plural).is_some_and(|r| r.namespaced) => (
            *plural,
            Some((*ns).to_owned()),
            tail.first().map(owned),
            tail.get(1).map(owned),
        ),
        [plural, tail @ ..] => (
            *plural,
            None,
            tail.first().map(owned),
            tail.get(1).map(owned),
        ),
        [] => return Err(ApiError::no_route(path)),
    };
    if rest.len() > 5 || (namespace.is_none() && rest.len() > 3) {
        return Err(ApiError::no_route(path));
    }
    let info = served(plural).ok_or_else(|| ApiError::no_route(path))?;
    if info.namespaced && namespace.is_none() && name.is_some() {
        return Err(ApiError::no_route(path));
    }
    Ok(Route::Resource {
        gvr: info.gvr.clone(),
        namespace,
        name,
        subresource,
    })
}

fn verb_of(method: &Method, has_name: bool, watch: bool) -> &'static str {
    match (method.as_str(), has_name) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "other",
    }
}

async fn handle(
    sim: Arc<Sim>,
    req: Request<Incoming>,
    cert_user: Option<User>,
    peer: SocketAddr,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let user = authenticate(&sim, &req, cert_user);
    let route = match route(&sim, &path) {
        Ok(r) => r,
        Err(e) => {
            let response = error_response(&e);
            record(
                &sim,
                user.as_ref(),
                "other",
                &Client::default(),
                response.status(),
            );
            return response;
        }
    };
    if let Route::Public(what) = route {
        let mut response = Response::new(full("ok"));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let _ = what;
        return response;
    }
    let Some(user) = user else {
        return error_response(&ApiError::unauthorized());
    };
    let q = query(req.uri());
    let client = Client {
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        field_manager: q.get("fieldManager").cloned(),
    };
    if sim.faults.authorization_warming()
        && !user.groups.iter().any(|g| g == "system:masters")
        && !matches!(route, Route::Admin(_))
    {
        let response = error_response(&ApiError::authorizer_warming(&user.name));
        record(&sim, Some(&user), "other", &client, response.status());
        return response;
    }
    let watch = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    match route {
        Route::Admin(rest) => crate::admin::handle(&sim, req, &rest).await,
        Route::Aggregated { group, version } => {
            let response = match sim.faults.before_request("proxy", "").await {
                Err(e) => error_response(&e),
                Ok(()) => aggregator::proxy(&sim, req, &group, &version, &user).await,
            };
            record(&sim, Some(&user), "proxy", &client, response.status());
            response
        }
        Route::Resource {
            gvr,
            namespace,
            name,
            subresource,
        } => {
            let verb = verb_of(req.method(), name.is_some(), watch);
            let info = sim.registry.get(&gvr);
            let record_target = (
                gvr.group.clone(),
                gvr.resource.clone(),
                subresource.clone(),
                namespace.clone(),
                name.clone(),
            );
            let response = match (sim.faults.before_request(verb, &gvr.resource).await, info) {
                (Err(e), _) => error_response(&e),
                (Ok(()), None) => error_response(&ApiError::no_route(&path)),
                (Ok(()), Some(info)) => {
                    resource_request(
                        &sim,
                        req,
                        info,
                        namespace,
                        name,
                        subresource,
                        q,
                        verb,
                        &user,
                        peer,
                    )
                    .await
                }
            };
            record_request(
                &sim,
                &user,
                verb,
                &record_target,
                &client,
                response.status(),
            );
            response
        }
        other => {
            let response = match sim.faults.before_request("get", "").await {
                Err(e) => error_response(&e),
                Ok(()) => discovery::respond(&sim, &other_route_name(&other), req.headers()),
            };
            record(&sim, Some(&user), "discovery", &client, response.status());
            response
        }
    }
}

fn other_route_name(route: &Route) -> discovery::Path {
    match route {
        Route::Version => discovery::Path::Version,
        Route::Root => discovery::Path::Root,
        Route::LegacyApi => discovery::Path::LegacyApi,
        Route::Groups => discovery::Path::Groups,
        Route::Group(g) => discovery::Path::Group(g.clone()),
        Route::GroupVersion(g, v) => discovery::Path::GroupVersion(g.clone(), v.clone()),
        Route::OpenApi(p) => discovery::Path::OpenApi(p.clone()),
        _ => discovery::Path::Root,
    }
}

/// What a request said about its client.
#[derive(Clone, Debug, Default)]
struct Client {
    user_agent: Option<String>,
    field_manager: Option<String>,
}

fn record(sim: &Sim, user: Option<&User>, verb: &str, client: &Client, code: StatusCode) {
    sim.stats.record(RequestRecord {
        user: user.map_or_else(|| "system:anonymous".to_owned(), |u| u.name.clone()),
        verb: verb.to_owned(),
        group: String::new(),
        resource: String::new(),
        subresource: None,
        namespace: None,
        name: None,
        code: code.as_u16(),
        at: std::time::Instant::now(),
        user_agent: client.user_agent.clone(),
        field_manager: client.field_manager.clone(),
    });
}

type RecordTarget = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn record_request(
    sim: &Sim,
    user: &User,
    verb: &str,
    t: &RecordTarget,
    client: &Client,
    code: StatusCode,
) {
    sim.stats.record(RequestRecord {
        user: user.name.clone(),
        verb: verb.to_owned(),
        group: t.0.clone(),
        resource: t.1.clone(),
        subresource: t.2.clone(),
        namespace: t.3.clone(),
        name: t.4.clone(),
        code: code.as_u16(),
        at: std::time::Instant::now(),
        user_agent: client.user_agent.clone(),
        field_manager: client.field_manager.clone(),
    });
}

async fn read_body(req: Request<Incoming>) -> Result<(http::request::Parts, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    let collected = Limited::new(body, MAX_BODY).collect().await.map_err(|e| {
        let too_large = e
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some();
        if too_large {
            ApiError {
                code: StatusCode::PAYLOAD_TOO_LARGE,
                reason: "RequestEntityTooLarge",
                message: format!("request body larger than {MAX_BODY} bytes"),
                details: None,
                retry_after: None,
            }
        } else {
            ApiError::bad_request(format!("could not read the request body: {e}"))
        }
    })?;
    Ok((parts, collected.to_bytes()))
}

fn write_options(
    q: &HashMap<String, String>,
    headers: &http::HeaderMap,
) -> Result<WriteOptions, ApiError> {
    let field_validation = match q.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => FieldValidation::Warn,
        Some("Ignore") => FieldValidation::Ignore,
        Some("Strict") => FieldValidation::Strict,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\" or \"Strict\", got {other:?}"
            )));
        }
    };
    let dry_run = match q.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unsupported dryRun value {other:?}: supported values: \"All\""
            )));
        }
    };
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let field_manager = q
        .get("fieldManager")
        .cloned()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| crate::managed::default_manager(user_agent));
    Ok(WriteOptions {
        dry_run,
        field_manager,
        field_validation,
        force: q.get("force").is_some_and(|f| f == "true"),
    })
}

fn with_warnings(mut response: Response<Body>, warnings: &[String]) -> Response<Body> {
    for warning in warnings {
        let text = format!("299 - \"{}\"", warning.replace('"', "'"));
        if let Ok(v) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    response
}

#[allow(clippy::too_many_arguments)]
async fn resource_request(
    sim: &Arc<Sim>,
    req: Request<Incoming>,
    info: Arc<ResourceInfo>,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
    q: HashMap<String, String>,
    verb: &str,
    user: &User,
    _peer: SocketAddr,
) -> Response<Body> {
    let sub = match subresource.as_deref() {
        None => None,
        Some("status") if info.status => Some(Subresource::Status),
        Some("scale") if info.scale.is_some() => Some(Subresource::Scale),
        Some(other) => {
            return error_response(&ApiError::no_route(&format!(
                "{}/{other}",
                info.gvr.resource
            )));
        }
    };
    let target = Target {
        info: info.clone(),
        namespace,
        name,
        subresource: sub,
    };
    let table = wants_table(req.headers());
    let result = match verb {
        "get" => api::get(sim, &target).map(|o| {
            if table && sub.is_none() {
                json_response(StatusCode::OK, &table::render(&info, &[o], None))
            } else {
                json_response(StatusCode::OK, &o)
            }
        }),
        "list" => list_options(&info, &q).and_then(|o| {
            if table {
                api::list(sim, &target, &o)
                    .map(|l| json_response(StatusCode::OK, &table::render_list(&info, &l)))
            } else {
                api::list_page(sim, &target, &o)
                    .map(|page| bytes_response(StatusCode::OK, api::list_json(&info, &page)))
            }
        }),
        "watch" => return watch(sim.clone(), target, q, table, user.clone()),
        "create" | "update" | "patch" => {
            let headers = req.headers().clone();
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let protobuf = content_type.starts_with(crate::protobuf::MEDIA_TYPE);
            if protobuf && verb == "patch" {
                // A patch is JSON or YAML; protobuf is for whole objects.
                return error_response(&ApiError::unsupported_media_type(&content_type));
            }
            let parse = |body: &[u8]| {
                if protobuf {
                    crate::protobuf::decode_object(body)
                        .map_err(|e| ApiError::unsupported_protobuf(&e.to_string()))
                } else {
                    api::parse_object(body)
                }
            };
            match read_body(req).await {
                Err(e) => Err(e),
                Ok((_, body)) => write_options(&q, &headers).and_then(|options| match verb {
                    "create" => parse(&body).and_then(|b| api::create(sim, &target, b, &options)),
                    "update" => parse(&body).and_then(|b| api::update(sim, &target, b, &options)),
                    _ => match PatchType::from_content_type(&content_type) {
                        None => Err(ApiError::unsupported_media_type(&content_type)),
                        Some(pt) => api::patch(sim, &target, pt, &body, &options),
                    },
                }),
            }
            .map(|w| {
                with_warnings(
                    json_response(
                        if w.created {
                            StatusCode::CREATED
                        } else {
                            StatusCode::OK
                        },
                        &w.object,
                    ),
                    &w.warnings,
                )
            })
        }
        "delete" | "deletecollection" => match read_body(req).await {
            Err(e) => Err(e),
            Ok((_, body)) => delete_options(&q, &body).and_then(|options| {
                if verb == "delete" {
                    api::delete(sim, &target, &options)
                        .map(|(code, body)| json_response(code, &body))
                } else {
                    list_options(&info, &q)
                        .and_then(|lo| api::delete_collection(sim, &target, &lo, &options))
                        .map(|b| json_response(StatusCode::OK, &b))
                }
            }),
        },
        _ => Err(ApiError::method_not_allowed(format!(
            "{verb} is not supported"
        ))),
    };
    result.unwrap_or_else(|e| error_response(&e))
}

fn wants_table(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

fn list_options(info: &ResourceInfo, q: &HashMap<String, String>) -> Result<ListOptions, ApiError> {
    let label_selector = LabelSelector::parse(
        q.get("labelSelector")
            .map(String::as_str)
            .unwrap_or_default(),
    )?;
    let field_selector = FieldSelector::parse(
        q.get("fieldSelector")
            .map(String::as_str)
            .unwrap_or_default(),
        &api::selectable_fields(info),
    )?;
    let limit = match q.get("limit").filter(|l| !l.is_empty()) {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        None => 0,
    };
    Ok(ListOptions {
        label_selector,
        field_selector,
        limit,
        continue_token: q.get("continue").filter(|c| !c.is_empty()).cloned(),
    })
}

fn delete_options(q: &HashMap<String, String>, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let mut options = DeleteOptions {
        propagation: q
            .get("propagationPolicy")
            .cloned()
            .filter(|p| !p.is_empty()),
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
        ..DeleteOptions::default()
    };
    if body.iter().any(|b| !b.is_ascii_whitespace()) {
        let parsed: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
        if let Some(p) = parsed.get("propagationPolicy").and_then(Value::as_str) {
            options.propagation = Some(p.to_owned());
        }
        if parsed.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
            options.propagation = Some("Orphan".to_owned());
        }
        options.uid = parsed
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_owned);
        options.resource_version = parsed
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if parsed
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|x| x == "All"))
        {
            options.dry_run = true;
        }
    }
    Ok(options)
}

fn event_frame(kind: &str, object: &Value) -> Result<Frame<Bytes>, Infallible> {
    Ok(Frame::data(crate::store::watch_line(kind, object)))
}

/// A watch: a 200 response whose body streams one JSON event per line.
fn watch(
    sim: Arc<Sim>,
    target: Target,
    q: HashMap<String, String>,
    table: bool,
    _user: crate::server::User,
) -> Response<Body> {
    let options = match list_options(&target.info, &q) {
        Ok(o) => o,
        Err(e) => return error_response(&e),
    };
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(sim.config.watch_timeout, Duration::from_secs);
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let send_initial = q.get("sendInitialEvents").is_some_and(|b| b == "true");
    let rv_param = q.get("resourceVersion").cloned().unwrap_or_default();
    let resource = GroupResource::new(&target.info.gvr.group, &target.info.gvr.resource);
    let namespace = target.namespace.clone();
    let pinned_name = target.name.clone().or_else(|| {
        options
            .field_selector
            .pinned("metadata.name")
            .map(str::to_owned)
    });

    // Where the watch starts: an explicit resourceVersion resumes from the log; none (or "0")
    // starts with the current state as ADDED events.
    let (initial, start_rv) = if rv_param.is_empty() || rv_param == "0" || send_initial {
        let list_target = Target {
            name: None,
            subresource: None,
            ..target.clone()
        };
        match api::list(
            &sim,
            &list_target,
            &ListOptions {
                limit: 0,
                continue_token: None,
                ..options.clone()
            },
        ) {
            Ok(list) => {
                let rv = list
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0);
                let items: Vec<Value> = list["items"].as_array().cloned().unwrap_or_default();
                let items = items
                    .into_iter()
                    .filter(|o| {
                        pinned_name.as_deref().is_none_or(|n| {
                            o.pointer("/metadata/name").and_then(Value::as_str) == Some(n)
                        })
                    })
                    .collect();
                (items, rv)
            }
            Err(e) => return error_response(&e),
        }
    } else {
        match rv_param.parse::<u64>() {
            Ok(rv) => (Vec::new(), rv),
            Err(_) => {
                return error_response(&ApiError::bad_request(format!(
                    "invalid resourceVersion {rv_param:?}"
                )));
            }
        }
    };
    let started = sim.store.watch_from(start_rv);
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(WATCH_BUFFER);
    let info = target.info.clone();
    let served_version = info.api_version();
    let bookmark_every = sim.config.bookmark_interval;
    let sim2 = sim.clone();
    tokio::spawn(async move {
        let sim = sim2;
        let _open = sim.stats.watch_opened();
        let (backlog, mut events) = match started {
            Ok(started) => started,
            Err(too_old) => {
                let status = ApiError::gone(format!(
                    "too old resource version: {start_rv} ({})",
                    too_old.oldest
                ))
                .to_status();
                let _ = tx.send(event_frame("ERROR", &status)).await;
                return;
            }
        };
        let render = |o: &Value| {
            if table {
                table::render(&info, std::slice::from_ref(o), None)
            } else {
                api_served(&info, o)
            }
        };
        for object in &initial {
            if tx
                .send(event_frame("ADDED", &render(object)))
                .await
                .is_err()
            {
                return;
            }
        }
        if send_initial {
            let bookmark = json!({"kind": info.kind, "apiVersion": info.api_version(), "metadata": {"resourceVersion": start_rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
            if tx.send(event_frame("BOOKMARK", &bookmark)).await.is_err() {
                return;
            }
        }
        let mut last_rv = start_rv;
        let stored_version = |o: &Value| {
            o.get("apiVersion").and_then(Value::as_str) == Some(served_version.as_str())
        };
        let unfiltered = options.label_selector.is_empty() && options.field_selector.is_empty();
        let deliver = |event: &crate::store::Event| -> Option<Bytes> {
            if event.resource != resource || event.rv <= start_rv {
                return None;
            }
            if let Some(ns) = &namespace
                && &event.key.namespace != ns
            {
                return None;
            }
            if let Some(n) = &pinned_name
                && &event.key.name != n
            {
                return None;
            }
            let matches =
                |o: &Value| api::selected(o, &options.label_selector, &options.field_selector);
            let now = unfiltered || matches(&event.object);
            let before = event
                .previous
                .as_deref()
                .is_some_and(|o| unfiltered || matches(o));
            let (kind, object) = match event.kind {
                EventKind::Added if now => ("ADDED", None),
                EventKind::Modified if now && before => ("MODIFIED", None),
                EventKind::Modified if now => ("ADDED", None),
                EventKind::Modified if before => {
                    let mut gone = event
                        .previous
                        .as_ref()
                        .map(|p| p.value.clone())
                        .unwrap_or_default();
                    if let Some(meta) = gone.get_mut("metadata").and_then(Value::as_object_mut) {
                        meta.insert("resourceVersion".to_owned(), json!(event.rv.to_string()));
                    }
                    ("DELETED", Some(gone))
                }
                EventKind::Deleted if before || now => ("DELETED", None),
                _ => return None,
            };
            match object {
                // The common case: the event as stored, serialized once for all watchers.
                None if !table && kind == event.type_name() && stored_version(&event.object) => {
                    Some(event.line())
                }
                None => Some(crate::store::watch_line(kind, &render(&event.object))),
                Some(gone) => Some(crate::store::watch_line(kind, &render(&gone))),
            }
        };
        for event in &backlog {
            last_rv = event.rv;
            if let Some(line) = deliver(event)
                && tx.send(Ok(Frame::data(line))).await.is_err()
            {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(bookmark_every);
        ticker.tick().await;
        let mut drops = sim.faults.watch_drops();
        drops.borrow_and_update();
        loop {
            tokio::select! {
                received = events.recv() => match received {
                    Ok(event) => {
                        // Send this event with every one already queued behind it as one frame.
                        last_rv = last_rv.max(event.rv);
                        let mut lines: Vec<Bytes> = deliver(&event).into_iter().collect();
                        let mut size: usize = lines.iter().map(Bytes::len).sum();
                        while size < WATCH_BATCH_BYTES {
                            match events.try_recv() {
                                Ok(next) => {
                                    last_rv = last_rv.max(next.rv);
                                    if let Some(line) = deliver(&next) {
                                        size += line.len();
                                        lines.push(line);
                                    }
                                }
                                Err(broadcast::error::TryRecvError::Empty) => break,
                                Err(_) => return,
                            }
                        }
                        let frame = match lines.len() {
                            0 => continue,
                            1 => lines.pop().unwrap_or_default(),
                            _ => Bytes::from(lines.concat()),
                        };
                        if tx.send(Ok(Frame::data(frame))).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = ticker.tick(), if bookmarks => {
                    let rv = sim.store.rv().max(last_rv);
                    let bookmark = json!({"kind": info.kind, "apiVersion": info.api_version(), "metadata": {"resourceVersion": rv.to_string()}});
                    if tx.send(event_frame("BOOKMARK", &bookmark)).await.is_err() {
                        return;
                    }
                }
                _ = &mut deadline => return,
                _ = drops.changed() => return,
                _ = tx.closed() => return,
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut response = Response::new(http_body_util::BodyExt::boxed(StreamBody::new(stream)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    response
}

fn api_served(info: &ResourceInfo, object: &Value) -> Value {
    let mut out = object.clone();
    if let Some(map) = out.as_object_mut() {
        map.insert("apiVersion".to_owned(), Value::String(info.api_version()));
        map.insert("kind".to_owned(), Value::String(info.kind.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_percent_decoded() {
        let uri: http::Uri = "/api/v1/pods?labelSelector=app%3Dweb%2Ctier+in+%28a%29&watch=true"
            .parse()
            .unwrap();
        let q = query(&uri);
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert_eq!(q["watch"], "true");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
