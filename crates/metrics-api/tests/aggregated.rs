//! The metrics API behind kube-sim's aggregation layer, fed by a real operator: what the HPA
//! reads, the errors a client meets, request-header authentication, and fallback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use ringscale_api::ScaledObject;
use ringscale_coordinator::Ownership;
use ringscale_kube_sim::{Config, KubeSim};
use ringscale_metrics_api::serve::{Certificate, server_config};
use ringscale_metrics_api::{Auth, Resolver, router, serve};
use ringscale_operator::{Controller, Settings};
use ringscale_replication::{Limits, Peers, Store};
use ringscale_ring::{Member, Ring, RingState};
use ringscale_scalers::{Sources, SourcesConfig};
use serde_json::{Value, json};
use tokio::sync::watch;

const NS: &str = "default";
const WITHIN: Duration = Duration::from_secs(15);

use ringscale_testkit::eventually;

struct Setup {
    sim: KubeSim,
    client: Client,
    value: Arc<AtomicI64>,
    backend: String,
    _controller: Controller,
    ring: watch::Sender<Ownership>,
    resolver: Arc<Resolver>,
    /// The ScaledObject's trigger metadata (the source's URL).
    trigger_metadata: Value,
}

/// kube-sim, a metrics-api source (negative value: HTTP 500), one replica's operator and its
/// metrics API registered as `v1beta1.external.metrics.k8s.io`.
async fn setup() -> Setup {
    ringscale_scalers::install_crypto_provider();
    let sim = KubeSim::start(Config {
        workload_delay: Duration::from_millis(50),
        hpa_sync_period: Duration::from_millis(500),
        bookmark_interval: Duration::from_millis(200),
        ..Config::default()
    })
    .await
    .unwrap();
    let kubeconfig = kube::config::Kubeconfig::from_yaml(sim.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = Client::try_from(config).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in ringscale_api::crds::all() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }

    let value = Arc::new(AtomicI64::new(0));
    let v = Arc::clone(&value);
    let source = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let n = v.load(Ordering::SeqCst);
            async move {
                if n < 0 {
                    Err(axum::http::StatusCode::INTERNAL_SERVER_ERROR)
                } else {
                    Ok(axum::Json(json!({"value": n})))
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let source_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, source).await.unwrap() });

    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "worker"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "worker"}},
                 "template": {"metadata": {"labels": {"app": "worker"}},
                              "spec": {"containers": [{"name": "w", "image": "w:1"}]}}}
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let trigger_metadata = json!({
        "url": format!("http://{source_addr}/metrics"), "valueLocation": "value", "targetValue": "5"});
    let so: ScaledObject = serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "orders"},
        "spec": {
            "scaleTargetRef": {"name": "worker"},
            "pollingInterval": 1, "cooldownPeriod": 300, "maxReplicaCount": 10,
            "fallback": {"failureThreshold": 2, "replicas": 3},
            // Scale up without the default 15 s policy period, so the test does not wait on it.
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {"scaleUp": {
                "stabilizationWindowSeconds": 0,
                "policies": [{"type": "Pods", "value": 10, "periodSeconds": 1}]}}}},
            "triggers": [{"type": "metrics-api", "metadata": trigger_metadata.clone()}]
        }
    }))
    .unwrap();
    Api::<ScaledObject>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &so)
        .await
        .unwrap();

    let state = RingState::new(
        1,
        vec![Member {
            name: "r0".into(),
            address: String::new(),
        }],
    );
    let (ring, ownership) = watch::channel(Ownership {
        member: Arc::from("r0"),
        ring: Arc::new(Ring::new(state)),
        active: true,
        coordinator: false,
        valid_until: tokio::sync::watch::channel(None).1,
    });
    let records = Store::new("r0");
    records.set_generation(1);
    let controller = Controller::start(
        client.clone(),
        ownership.clone(),
        Arc::clone(&records),
        Sources::new(SourcesConfig::default()),
        Settings {
            first_poll_window: Duration::from_millis(100),
            ..Settings::default()
        },
        std::future::pending(),
    );
    let resolver = Arc::new(Resolver {
        records: Arc::clone(&records),
        ownership,
        objects: controller.object_view(),
        live: controller.live_query(),
        peers: Peers::new(records, Limits::default(), None),
        counts: Default::default(),
    });
    let tls = server_config(
        &Certificate::SelfSigned(vec!["127.0.0.1".into(), "localhost".into()]),
        Some(sim.front_proxy_ca_pem().as_bytes()),
    )
    .unwrap();
    let app = router(
        Arc::clone(&resolver),
        Auth::RequestHeader {
            allowed_names: vec!["front-proxy-client".into()],
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(
        listener,
        Some(Arc::new(tls)),
        app,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    sim.sim()
        .backends
        .set("v1beta1.external.metrics.k8s.io", vec![backend.clone()]);
    let apiservice: APIService = serde_json::from_value(json!({
        "metadata": {"name": "v1beta1.external.metrics.k8s.io"},
        "spec": {"group": "external.metrics.k8s.io", "version": "v1beta1", "insecureSkipTLSVerify": true,
                 "groupPriorityMinimum": 100, "versionPriority": 100,
                 "service": {"name": "ringscale-metrics", "namespace": "ringscale"}}
    }))
    .unwrap();
    Api::<APIService>::all(client.clone())
        .create(&PostParams::default(), &apiservice)
        .await
        .unwrap();
    Setup {
        sim,
        client,
        value,
        backend,
        _controller: controller,
        ring,
        resolver,
        trigger_metadata,
    }
}

/// GET through the API server; the status code and the JSON body.
async fn get(client: &Client, path: &str) -> (u16, Value) {
    let request = http::Request::get(path).body(Vec::new()).unwrap();
    match client.request_text(request).await {
        Ok(text) => (200, serde_json::from_str(&text).unwrap()),
        Err(kube::Error::Api(s)) => (s.code, serde_json::to_value(&*s).unwrap()),
        Err(e) => panic!("{path}: {e}"),
    }
}

const METRIC: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/s0-metric-api-value";

fn with_selector(name: &str) -> String {
    format!("{METRIC}?labelSelector=scaledobject.keda.sh%2Fname%3D{name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hpa_reads_values_through_the_aggregation_layer() {
    let s = setup().await;
    s.value.store(7, Ordering::SeqCst);
    let body = eventually(WITHIN, "the value 7", || async {
        let (code, body) = get(&s.client, &with_selector("orders")).await;
        (code == 200 && body["items"][0]["value"] == "7").then_some(body)
    })
    .await;
    assert_eq!(body["kind"], "ExternalMetricValueList");
    assert_eq!(body["apiVersion"], "external.metrics.k8s.io/v1beta1");
    assert_eq!(body["metadata"], json!({}));
    let item = &body["items"][0];
    assert_eq!(item["metricName"], "s0-metric-api-value");
    assert!(item["metricLabels"].is_null());
    let ts = item["timestamp"].as_str().unwrap();
    assert!(ts.len() == 20 && ts.ends_with('Z'), "{ts}");
    // Milli precision as Kubernetes quantities.
    s.value.store(2500, Ordering::SeqCst);
    eventually(WITHIN, "2500 as 2500", || async {
        (get(&s.client, &with_selector("orders")).await.1["items"][0]["value"] == "2500")
            .then_some(())
    })
    .await;
    // Without useCachedMetrics every request reads the source, as KEDA's adapter does: here
    // live, since this replica owns the object.
    assert!(s.resolver.counts.live.load(Ordering::Relaxed) > 0);
    assert_eq!(s.resolver.counts.cache.load(Ordering::Relaxed), 0);

    // Discovery.
    let (code, discovery) = get(&s.client, "/apis/external.metrics.k8s.io/v1beta1").await;
    assert_eq!(code, 200);
    assert_eq!(discovery["resources"][0]["name"], "externalmetrics");
    assert_eq!(discovery["resources"][0]["verbs"], json!(["get"]));

    // OpenAPI, as the API server downloads it from every aggregated API server.
    let app = router(Arc::clone(&s.resolver), Auth::Insecure);
    let fetch = |path: &str| {
        let app = app.clone();
        let request = http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
        async move {
            let response = tower::ServiceExt::oneshot(app, request).await.unwrap();
            let code = response.status().as_u16();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            (code, serde_json::from_slice::<Value>(&body).unwrap())
        }
    };
    let (code, v2) = fetch("/openapi/v2").await;
    assert_eq!(code, 200);
    assert_eq!(v2["swagger"], "2.0");
    assert!(
        v2["paths"]["/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}"]["get"]
            .is_object(),
        "{v2}"
    );
    let (code, index) = fetch("/openapi/v3").await;
    assert_eq!(code, 200);
    let url = index["paths"]["apis/external.metrics.k8s.io/v1beta1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, v3) = fetch(&url).await;
    assert_eq!(code, 200);
    assert_eq!(v3["openapi"], "3.0.0");

    // The simulated HPA scales on it: 2500 / 5 per replica, capped at 10.
    eventually(WITHIN, "the HPA at the maximum", || async {
        let d = Api::<Deployment>::namespaced(s.client.clone(), NS)
            .get("worker")
            .await
            .ok()?;
        (d.spec?.replicas == Some(10)).then_some(())
    })
    .await;
    let _ = &s.sim;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_status_with_the_reason() {
    let s = setup().await;
    s.value.store(1, Ordering::SeqCst);
    eventually(WITHIN, "a value", || async {
        (get(&s.client, &with_selector("orders")).await.0 == 200).then_some(())
    })
    .await;
    let (code, body) = get(&s.client, METRIC).await;
    assert_eq!(code, 400);
    assert_eq!(body["reason"], "BadRequest", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("scaledobject.keda.sh/name"),
        "{body}"
    );
    let (code, body) = get(&s.client, &with_selector("nobody")).await;
    assert_eq!(code, 404, "{body}");
    assert!(body["message"].as_str().unwrap().contains("nobody"));
    let (code, _) = get(
        &s.client,
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/s7-unknown?labelSelector=scaledobject.keda.sh%2Fname%3Dorders",
    )
    .await;
    assert_eq!(code, 404);

    // Straight to the backend: no client certificate, no service.
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyServer))
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, http_body_util::Empty<bytes::Bytes>>(connector);
    let response = http
        .get(
            format!("{}{}", s.backend, with_selector("orders"))
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_source_serves_the_fallback_value() {
    let s = setup().await;
    s.value.store(4, Ordering::SeqCst);
    eventually(WITHIN, "a value", || async {
        (get(&s.client, &with_selector("orders")).await.1["items"][0]["value"] == "4").then_some(())
    })
    .await;
    // Failing: after more than 2 failures, target 5 × 3 fallback replicas = 15.
    s.value.store(-1, Ordering::SeqCst);
    eventually(WITHIN, "the fallback value", || async {
        (get(&s.client, &with_selector("orders")).await.1["items"][0]["value"] == "15")
            .then_some(())
    })
    .await;
    // Served by the owner's live read once its own count (live reads count toward fallback)
    // passed the threshold, or from the status's counts once a poll wrote them.
    let served = s.resolver.counts.fallback.load(Ordering::Relaxed)
        + s.resolver.counts.live.load(Ordering::Relaxed);
    assert!(served > 0);
    // Back: the real value again.
    s.value.store(6, Ordering::SeqCst);
    eventually(WITHIN, "the value again", || async {
        (get(&s.client, &with_selector("orders")).await.1["items"][0]["value"] == "6").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_owner_leaves_the_replicated_value_and_it_is_counted() {
    let s = setup().await;
    s.value.store(7, Ordering::SeqCst);
    eventually(WITHIN, "the value 7", || async {
        (get(&s.client, &with_selector("orders")).await.1["items"][0]["value"] == "7").then_some(())
    })
    .await;
    // The object moves to a replica that cannot be reached (nothing listens there). The source
    // changes meanwhile, but only the owner could read it: the replicated 7 is served, and
    // counted as such, while it is younger than the staleness bound.
    let state = RingState::new(
        2,
        vec![Member {
            name: "r1".into(),
            address: "127.0.0.1:1".into(),
        }],
    );
    s.ring
        .send(Ownership {
            member: Arc::from("r0"),
            ring: Arc::new(Ring::new(state)),
            active: true,
            coordinator: false,
            valid_until: tokio::sync::watch::channel(None).1,
        })
        .unwrap();
    s.value.store(9, Ordering::SeqCst);
    let (code, body) = get(&s.client, &with_selector("orders")).await;
    assert_eq!(
        (code, &body["items"][0]["value"]),
        (200, &json!("7")),
        "{body}"
    );
    assert!(s.resolver.counts.replicated.load(Ordering::Relaxed) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_cached_metrics_serves_the_last_poll_without_reading_the_source() {
    let s = setup().await;
    s.value.store(3, Ordering::SeqCst);
    Api::<ScaledObject>::namespaced(s.client.clone(), NS)
        .patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"pollingInterval": 3600, "triggers": [{
                "type": "metrics-api", "useCachedMetrics": true,
                "metadata": s.trigger_metadata.clone()}]}})),
        )
        .await
        .unwrap();
    eventually(WITHIN, "the polled 3", || async {
        (get(&s.client, &with_selector("orders")).await.1["items"][0]["value"] == "3").then_some(())
    })
    .await;
    // The source changes; the next poll is an hour away: the cached 3 stays.
    s.value.store(8, Ordering::SeqCst);
    for _ in 0..3 {
        let (_, body) = get(&s.client, &with_selector("orders")).await;
        assert_eq!(body["items"][0]["value"], "3", "{body}");
    }
    assert!(s.resolver.counts.cache.load(Ordering::Relaxed) >= 3);
}

#[derive(Debug)]
struct AnyServer;

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
