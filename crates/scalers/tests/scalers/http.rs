//! `metrics-api` against an HTTP API served by the test, and `prometheus` against a real
//! Prometheus server scraping that API.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use ringscale_api::MetricType;
use ringscale_scalers::{ErrorKind, MetricSpec, Sources};

use crate::common::*;

/// What the API serves and what it saw.
#[derive(Default)]
struct Api {
    tasks: AtomicU64,
    headers: Mutex<Vec<HeaderMap>>,
    queries: Mutex<Vec<HashMap<String, String>>>,
}

type Shared = State<Arc<Api>>;

fn json(State(api): Shared) -> String {
    let n = api.tasks.load(Ordering::Relaxed);
    format!(
        r#"{{"components":{{"worker":{{"tasks":{n},"memory":"1500m","busy":true,"queues":[{{"depth":4}},{{"depth":9}}]}}}}}}"#
    )
}

fn authorised(headers: &HeaderMap, query: &HashMap<String, String>) -> bool {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    header("x-api-key") == "k3y-header"
        || query.get("api_key").is_some_and(|k| k == "k3y-query")
        || query.get("token_param").is_some_and(|k| k == "k3y-named")
        || header("authorization") == "Bearer t0ken-bearer"
        // "user:pa55word" in base64.
        || header("authorization") == "Basic dXNlcjpwYTU1d29yZA=="
        || header("x-custom-auth") == "cust0m-value"
}

async fn serve_api(api: Arc<Api>) -> SocketAddr {
    let router = axum::Router::new()
        .route("/stats.json", get(|s: Shared| async move { json(s) }))
        .route(
            "/stats.yaml",
            get(|State(api): Shared| async move {
                format!("worker:\n  tasks: {}\n  queues:\n    - depth: 4\n", api.tasks.load(Ordering::Relaxed))
            }),
        )
        .route(
            "/stats.xml",
            get(|State(api): Shared| async move {
                format!("<?xml version=\"1.0\"?><stats><worker><tasks>{}</tasks><memory>2k</memory></worker></stats>", api.tasks.load(Ordering::Relaxed))
            }),
        )
        .route(
            "/metrics",
            get(|State(api): Shared| async move {
                format!(
                    "# HELP ringscale_test_jobs Jobs waiting.\n# TYPE ringscale_test_jobs gauge\nringscale_test_jobs{{queue=\"a\"}} {}\nringscale_test_jobs{{queue=\"b\"}} 2\n",
                    api.tasks.load(Ordering::Relaxed)
                )
            }),
        )
        .route(
            "/secure/stats.json",
            get(|s: Shared, headers: HeaderMap, Query(q): Query<HashMap<String, String>>| async move {
                if authorised(&headers, &q) { (StatusCode::OK, json(s)) } else { (StatusCode::UNAUTHORIZED, "no".to_owned()) }
            }),
        )
        .route("/broken", get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "maintenance in progress") }))
        .route(
            "/prom/api/v1/query",
            get(|State(api): Shared, headers: HeaderMap, Query(q): Query<HashMap<String, String>>| async move {
                api.headers.lock().unwrap().push(headers.clone());
                api.queries.lock().unwrap().push(q.clone());
                if !authorised(&headers, &q) && q.get("query").is_some_and(|q| q.contains("secure")) {
                    return (StatusCode::UNAUTHORIZED, String::new());
                }
                (
                    StatusCode::OK,
                    r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"42"]}]}}"#.to_owned(),
                )
            }),
        )
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

#[tokio::test]
async fn metrics_api_reads_every_format() {
    let api = Arc::new(Api::default());
    api.tasks.store(12, Ordering::Relaxed);
    let addr = serve_api(api.clone()).await;
    let sources = Sources::default();
    let trigger = |path: &str, format: &str, location: &str| {
        build(
            &input(
                "metrics-api",
                &[
                    ("url", &format!("http://{addr}{path}")),
                    ("format", format),
                    ("valueLocation", location),
                    ("targetValue", "8.8"),
                    ("activationTargetValue", "12"),
                ],
            ),
            &sources,
        )
    };
    let json_tasks = trigger("/stats.json", "json", "components.worker.tasks");
    let specs = json_tasks.metric_specs().await.unwrap();
    let MetricSpec::External(m) = &specs[0] else {
        panic!()
    };
    assert_eq!(
        (m.name.as_str(), m.target_quantity().as_str()),
        ("s0-metric-api-components-worker-tasks", "8800m")
    );
    assert_eq!(
        value(&json_tasks).await,
        (12.0, false),
        "12 is not above 12"
    );
    api.tasks.store(13, Ordering::Relaxed);
    assert_eq!(value(&json_tasks).await, (13.0, true));
    for (path, format, location, expected) in [
        ("/stats.json", "json", "components.worker.memory", 1.5),
        (
            "/stats.json",
            "json",
            "components.worker.queues.1.depth",
            9.0,
        ),
        ("/stats.json", "json", "components.worker.queues.#", 2.0),
        ("/stats.yaml", "yaml", "worker.tasks", 13.0),
        ("/stats.yaml", "yaml", "worker.queues.0.depth", 4.0),
        ("/stats.xml", "xml", "worker.tasks", 13.0),
        ("/stats.xml", "xml", "stats.worker.memory", 2000.0),
        (
            "/metrics",
            "prometheus",
            "ringscale_test_jobs{queue=\"b\"}",
            2.0,
        ),
        ("/metrics", "prometheus", "ringscale_test_jobs", 13.0),
    ] {
        assert_eq!(
            value(&trigger(path, format, location)).await.0,
            expected,
            "{format} {location}"
        );
    }
    for (path, format, location, text) in [
        (
            "/stats.json",
            "json",
            "components.worker.busy",
            "got: 'Boolean'",
        ),
        ("/stats.json", "json", "components.nothing", "got: 'Null'"),
        (
            "/stats.yaml",
            "yaml",
            "worker.missing",
            "key 'missing' not found",
        ),
        ("/stats.json", "xml", "a.b", "not valid XML"),
        (
            "/metrics",
            "prometheus",
            "other_metric",
            "metric 'other_metric' not found",
        ),
        ("/broken", "json", "x", "503"),
        ("/nowhere", "json", "x", "404"),
    ] {
        let err = poll(&trigger(path, format, location)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Source, "{err}");
        assert!(err.to_string().contains(text), "{format} {location}: {err}");
    }
    assert_eq!(sources.counts().http, 1, "one shared HTTP client");
}

#[tokio::test]
async fn metrics_api_authentication_modes() {
    let api = Arc::new(Api::default());
    api.tasks.store(5, Ordering::Relaxed);
    let addr = serve_api(api.clone()).await;
    let sources = Sources::default();
    let url = format!("http://{addr}/secure/stats.json");
    let with = |meta: &[(&str, &str)], auth: &[(&str, &str)]| {
        let mut m = vec![
            ("url", url.as_str()),
            ("valueLocation", "components.worker.tasks"),
            ("targetValue", "1"),
        ];
        m.extend_from_slice(meta);
        build(
            &input("metrics-api", &m).with_auth(auth.iter().copied()),
            &sources,
        )
    };
    let cases = [
        with(&[("authMode", "apiKey")], &[("apiKey", "k3y-header")]),
        with(
            &[("authMode", "apiKey"), ("method", "query")],
            &[("apiKey", "k3y-query")],
        ),
        with(
            &[
                ("authMode", "apiKey"),
                ("method", "query"),
                ("keyParamName", "token_param"),
            ],
            &[("apiKey", "k3y-named")],
        ),
        with(&[("authMode", "bearer")], &[("token", "t0ken-bearer")]),
        with(
            &[("authMode", "basic")],
            &[("username", "user"), ("password", "pa55word")],
        ),
        with(
            &[("authMode", "custom")],
            &[
                ("customAuthHeader", "X-Custom-Auth"),
                ("customAuthValue", "cust0m-value"),
            ],
        ),
    ];
    for scaler in &cases {
        assert_eq!(value(scaler).await.0, 5.0);
    }
    let err = poll(&with(
        &[("authMode", "bearer")],
        &[("token", "wrong-t0ken")],
    ))
    .await
    .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    assert!(!err.to_string().contains("wrong-t0ken"), "{err}");
    let errors = problems(&input(
        "metrics-api",
        &[
            ("url", &url),
            ("valueLocation", "x"),
            ("targetValue", "1"),
            ("authMode", "bearer,basic"),
        ],
    ));
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("only one of bearer, basic")),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("bearer token is required")),
        "{errors:#?}"
    );
    let errors = problems(&input(
        "metrics-api",
        &[
            ("url", &url),
            ("valueLocation", "x"),
            ("targetValue", "1"),
            ("authMode", "tls"),
        ],
    ));
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("ca, cert and key are required")),
        "{errors:#?}"
    );
}

#[tokio::test]
async fn metrics_api_client_certificates() {
    use ringscale_kube_sim::tls::{Authority, server_config};
    ringscale_scalers::install_crypto_provider();
    let ca = Authority::new("test-ca").unwrap();
    let server = ca.issue_server(&["127.0.0.1", "localhost"]).unwrap();
    let client = ca.issue_client("ringscale", &[]).unwrap();
    let config = Arc::new(server_config(&server, &ca).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let has_cert = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .is_some_and(|c| !c.is_empty());
                let service = hyper::service::service_fn(move |_req| async move {
                    let (status, body) = if has_cert {
                        (200, r#"{"v": 21}"#)
                    } else {
                        (401, "client certificate required")
                    };
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder()
                            .status(status)
                            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                                body.as_bytes(),
                            )))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    let sources = Sources::default();
    let url = format!("https://127.0.0.1:{}/", addr.port());
    let meta = [
        ("url", url.as_str()),
        ("valueLocation", "v"),
        ("targetValue", "1"),
        ("authMode", "tls"),
    ];
    let scaler = build(
        &input("metrics-api", &meta).with_auth([
            ("ca", ca.cert_pem.as_str()),
            ("cert", client.cert_pem.as_str()),
            ("key", client.key_pem.as_str()),
        ]),
        &sources,
    );
    assert_eq!(value(&scaler).await.0, 21.0);
    // Without the CA the server certificate is not trusted; with unsafeSsl it is accepted.
    let plain = build(
        &input(
            "metrics-api",
            &[
                ("url", url.as_str()),
                ("valueLocation", "v"),
                ("targetValue", "1"),
            ],
        ),
        &sources,
    );
    let err = poll(&plain).await.unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    let unsafe_ssl = build(
        &input(
            "metrics-api",
            &[
                ("url", url.as_str()),
                ("valueLocation", "v"),
                ("targetValue", "1"),
                ("unsafeSsl", "true"),
            ],
        ),
        &sources,
    );
    let err = poll(&unsafe_ssl).await.unwrap_err();
    assert!(
        err.to_string().contains("401"),
        "trusted, but no client certificate: {err}"
    );
    let errors = problems(&input("metrics-api", &meta).with_auth([
        ("ca", "not pem"),
        ("cert", "x"),
        ("key", "y"),
    ]));
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("ca contains no PEM certificate")),
        "{errors:#?}"
    );
}

#[tokio::test]
async fn metrics_api_parameters_and_outages() {
    let errors = problems(&input(
        "metrics-api",
        &[("format", "csv"), ("targetValue", "0")],
    ));
    assert_problem(&errors, "url", "missing required parameter");
    assert_problem(&errors, "valueLocation", "missing required parameter");
    assert_problem(
        &errors,
        "format",
        "must be one of json, yaml, xml, prometheus",
    );
    assert_problem(&errors, "targetValue", "must not be 0");
    let errors = problems(&input(
        "metrics-api",
        &[
            ("url", "ftp://x/"),
            ("valueLocation", "a"),
            ("targetValue", "1"),
            ("timeout", "soon"),
        ],
    ));
    assert_problem(&errors, "url", "must be http or https");
    assert_problem(&errors, "timeout", "is not a duration");
    let errors = problems(&input(
        "metrics-api",
        &[
            ("url", "http://x/"),
            ("valueLocation", "a{b}"),
            ("format", "prometheus"),
            ("targetValue", "1"),
        ],
    ));
    assert_problem(&errors, "valueLocation", "not a metric selector");

    let sources = Sources::default();
    let down = build(
        &input(
            "metrics-api",
            &[
                ("url", &format!("http://{}/x", refused_address())),
                ("valueLocation", "a"),
                ("targetValue", "1"),
            ],
        ),
        &sources,
    );
    assert_down(
        &down,
        ErrorKind::Source,
        "error requesting metrics endpoint",
    )
    .await;
    let hole = Blackhole::start().await;
    let slow = build(
        &input(
            "metrics-api",
            &[
                ("url", &format!("http://{}/x", hole.addr)),
                ("valueLocation", "a"),
                ("targetValue", "1"),
                ("timeout", "250ms"),
            ],
        ),
        &sources,
    );
    assert_down(&slow, ErrorKind::Timeout, "within 250ms").await;
}

/// A Prometheus server scraping the test API every second.
struct Prometheus {
    url: String,
    _proc: Proc,
    _dir: TempDir,
}

async fn prometheus(target: SocketAddr) -> Option<Prometheus> {
    if !program(
        "prometheus",
        "Prometheus server (Debian package prometheus)",
    ) {
        return None;
    }
    let dir = TempDir::new("prometheus");
    let port = free_port();
    let config = dir.0.join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ringscale-test\n    static_configs:\n      - targets: ['{target}']\n"),
    )
    .unwrap();
    let proc = Proc::spawn(
        "prometheus",
        &[
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", dir.0.join("data").display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
        ],
    );
    Some(Prometheus {
        url: format!("http://127.0.0.1:{port}"),
        _proc: proc,
        _dir: dir,
    })
}

#[tokio::test]
async fn prometheus_queries_a_real_server() {
    let api = Arc::new(Api::default());
    api.tasks.store(7, Ordering::Relaxed);
    let addr = serve_api(api.clone()).await;
    let Some(prom) = prometheus(addr).await else {
        return;
    };
    let sources = Sources::default();
    let trigger = |query: &str, extra: &[(&str, &str)]| {
        let mut meta = vec![
            ("serverAddress", prom.url.as_str()),
            ("query", query),
            ("threshold", "3"),
            ("activationThreshold", "9"),
        ];
        meta.extend_from_slice(extra);
        build(&input("prometheus", &meta), &sources)
    };
    let sum = trigger("sum(ringscale_test_jobs)", &[]);
    // Wait for Prometheus to start and scrape.
    let first = eventually(60, || async {
        match poll(&sum).await {
            Ok(p) if p.values[0].value > 0.0 => Ok(p),
            Ok(p) => Err(format!("not scraped yet: {p:?}")),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    assert_eq!(
        (first.values[0].value, first.active),
        (9.0, false),
        "7 + 2 is not above 9"
    );
    assert_eq!(
        sum.metric_specs().await.unwrap()[0].external_name(),
        Some("s0-prometheus")
    );
    assert_eq!(
        value(&trigger("ringscale_test_jobs{queue=\"a\"}", &[])).await,
        (7.0, false)
    );
    assert_eq!(
        value(&trigger("scalar(sum(ringscale_test_jobs)) * 2", &[])).await,
        (18.0, true)
    );
    // An empty result is 0 unless ignoreNullValues is false.
    assert_eq!(
        value(&trigger("ringscale_test_jobs{queue=\"none\"}", &[])).await,
        (0.0, false)
    );
    let strict = trigger(
        "ringscale_test_jobs{queue=\"none\"}",
        &[("ignoreNullValues", "false")],
    );
    let err = poll(&strict).await.unwrap_err();
    assert!(err.to_string().contains("target may be lost"), "{err}");
    let err = poll(&trigger("ringscale_test_jobs", &[]))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("returned multiple elements"),
        "{err}"
    );
    let err = poll(&trigger("sum(", &[])).await.unwrap_err();
    assert!(err.to_string().contains("status: 400"), "{err}");
}

#[tokio::test]
async fn prometheus_request_options_and_authentication() {
    let api = Arc::new(Api::default());
    let addr = serve_api(api.clone()).await;
    let sources = Sources::default();
    let server = format!("http://{addr}/prom");
    let scaler = build(
        &input(
            "prometheus",
            &[
                ("serverAddress", &server),
                ("query", "up"),
                ("threshold", "10"),
                ("namespace", "team-a"),
                (
                    "customHeaders",
                    "X-Scope-OrgID=tenant-1, X-Client=ringscale",
                ),
                ("queryParameters", "dedup=true,partial_response=false"),
            ],
        )
        .with_metric_type(MetricType::Value),
        &sources,
    );
    assert_eq!(value(&scaler).await, (42.0, true));
    let headers = api.headers.lock().unwrap().last().cloned().unwrap();
    assert_eq!(headers.get("x-scope-orgid").unwrap(), "tenant-1");
    assert_eq!(headers.get("x-client").unwrap(), "ringscale");
    let q = api.queries.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        (
            q["query"].as_str(),
            q["namespace"].as_str(),
            q["dedup"].as_str()
        ),
        ("up", "team-a", "true")
    );
    assert!(q["time"].ends_with('Z'), "{:?}", q["time"]);
    for (modes, auth) in [
        ("bearer", vec![("bearerToken", "t0ken-bearer")]),
        (
            "basic",
            vec![("username", "user"), ("password", "pa55word")],
        ),
        (
            "custom",
            vec![
                ("customAuthHeader", "X-Custom-Auth"),
                ("customAuthValue", "cust0m-value"),
            ],
        ),
    ] {
        let scaler = build(
            &input(
                "prometheus",
                &[
                    ("serverAddress", &server),
                    ("query", "secure_up"),
                    ("threshold", "1"),
                    ("authModes", modes),
                ],
            )
            .with_auth(auth),
            &sources,
        );
        assert_eq!(value(&scaler).await.0, 42.0, "{modes}");
    }
    let denied = build(
        &input(
            "prometheus",
            &[
                ("serverAddress", &server),
                ("query", "secure_up"),
                ("threshold", "1"),
            ],
        ),
        &sources,
    );
    assert!(
        poll(&denied)
            .await
            .unwrap_err()
            .to_string()
            .contains("status: 401")
    );

    let errors = problems(&input(
        "prometheus",
        &[("threshold", "x"), ("customHeaders", "novalue")],
    ));
    assert_problem(&errors, "serverAddress", "missing required parameter");
    assert_problem(&errors, "query", "missing required parameter");
    assert_problem(&errors, "threshold", "is not a number");
    assert_problem(&errors, "customHeaders", "key=value");
    let down = build(
        &input(
            "prometheus",
            &[
                ("serverAddress", &format!("http://{}", refused_address())),
                ("query", "up"),
                ("threshold", "1"),
            ],
        ),
        &sources,
    );
    assert_down(&down, ErrorKind::Source, "prometheus query failed").await;
    let hole = Blackhole::start().await;
    let slow = build(
        &input(
            "prometheus",
            &[
                ("serverAddress", &format!("http://{}", hole.addr)),
                ("query", "up"),
                ("threshold", "1"),
                ("timeout", "300"),
            ],
        ),
        &sources,
    );
    assert_eq!(slow.timeout(), Duration::from_millis(300));
    assert_down(&slow, ErrorKind::Timeout, "within 300ms").await;
}
