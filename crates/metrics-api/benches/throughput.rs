//! Cached-path throughput of the external metrics API: one replica's router on a single-threaded
//! runtime (one core), driven over loopback by a Rust HTTP/1.1 client with keep-alive
//! connections. Reports requests per second and the latency distribution.
//!
//! `cargo bench -p ringscale-metrics-api --bench throughput [-- --seconds 20 --connections 32]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use ringscale_coordinator::Ownership;
use ringscale_kube_sim::{Config, KubeSim};
use ringscale_metrics_api::{Auth, Resolver, router};
use ringscale_operator::{Controller, Settings};
use ringscale_replication::{Limits, Peers, Store};
use ringscale_ring::{Member, Ring, RingState};
use ringscale_scalers::{Sources, SourcesConfig};
use serde_json::json;
use tokio::sync::watch;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let seconds = arg("--seconds", 20);
    let connections = arg("--connections", 32);
    ringscale_scalers::install_crypto_provider();
    let setup = tokio::runtime::Runtime::new().unwrap();
    // kube-sim, a source, one ScaledObject polled every second, and its operator.
    let (addr, _keep) = setup.block_on(async {
        let sim = KubeSim::start(Config::default()).await.unwrap();
        let kc = kube::config::Kubeconfig::from_yaml(sim.kubeconfig()).unwrap();
        let client = kube::Client::try_from(
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .unwrap(),
        )
        .unwrap();
        for crd in ringscale_api::crds::all() {
            Api::<CustomResourceDefinition>::all(client.clone())
                .create(&PostParams::default(), &crd)
                .await
                .unwrap();
        }
        let source = axum::Router::new().route(
            "/m",
            axum::routing::get(|| async { axum::Json(json!({"v": 2500})) }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let source_addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, source).await });
        let so: ringscale_api::ScaledObject = serde_json::from_value(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "orders", "namespace": "default"},
            "spec": {"scaleTargetRef": {"name": "worker"}, "pollingInterval": 1,
                     // The cached path: without useCachedMetrics every request reads live.
                     "triggers": [{"type": "metrics-api", "useCachedMetrics": true, "metadata": {
                        "url": format!("http://{source_addr}/m"), "valueLocation": "v", "targetValue": "5"}}]}
        }))
        .unwrap();
        Api::<ringscale_api::ScaledObject>::namespaced(client.clone(), "default")
            .create(&PostParams::default(), &so)
            .await
            .unwrap();
        let state = RingState::new(1, vec![Member { name: "r0".into(), address: String::new() }]);
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
            client,
            ownership.clone(),
            Arc::clone(&records),
            Sources::new(SourcesConfig::default()),
            Settings::default(),
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
        // Wait for the first value.
        let key = ringscale_cache::RecordKey::scaled_object("default", "orders", "s0-metric-api-v");
        for _ in 0..200 {
            let named = controller
                .scaled_objects()
                .state()
                .first()
                .and_then(|so| so.status.as_ref()?.external_metric_names.clone())
                .is_some();
            if named && resolver.records.get(&key).is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The server on its own single-threaded runtime: one core.
        let app = router(Arc::clone(&resolver), Auth::Insecure);
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                ringscale_metrics_api::serve(listener, None, app, std::future::pending(), Duration::from_secs(1)).await;
            });
        });
        (addr, (sim, controller, ring, resolver))
    });

    // The client: its own runtime, `connections` keep-alive connections.
    let client_rt = tokio::runtime::Runtime::new().unwrap();
    let uri: http::Uri = format!(
        "http://{addr}/apis/external.metrics.k8s.io/v1beta1/namespaces/default/s0-metric-api-v?labelSelector=scaledobject.keda.sh%2Fname%3Dorders"
    )
    .parse()
    .unwrap();
    let (latencies, errors, elapsed) = client_rt.block_on(async move {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let uri = uri.clone();
            tasks.push(tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (mut send, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(conn);
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    let request = http::Request::get(uri.clone())
                        .header("host", "bench")
                        .body(Empty::<bytes::Bytes>::new())
                        .unwrap();
                    let t = Instant::now();
                    match send.send_request(request).await {
                        Ok(response) => {
                            let ok = response.status() == 200;
                            let body = response.into_body().collect().await;
                            if ok && body.is_ok() {
                                latencies.push(t.elapsed());
                            } else {
                                errors += 1;
                            }
                        }
                        Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            }));
        }
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (l, e) = t.await.unwrap();
            all.extend(l);
            errors += e;
        }
        (all, errors, started.elapsed())
    });
    let mut latencies = latencies;
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies.get(i).copied().unwrap_or_default()
    };
    let n = latencies.len();
    println!(
        "{n} requests in {:.1} s over {connections} connections: {:.0} req/s, {errors} errors",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency p50 {:?} p90 {:?} p99 {:?} p99.9 {:?} max {:?}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(0.999),
        latencies.last().copied().unwrap_or_default()
    );
}
