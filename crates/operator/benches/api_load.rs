//! API-server load of the operator: N active ScaledObjects polled every I seconds on kube-sim,
//! counting every request the operator makes (kube-sim's request log) after a warm-up.
//!
//! `cargo bench -p ringscale-operator --bench api_load -- [--objects 1000] [--interval 10]
//! [--minutes 10] [--warmup 40]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, PostParams};
use ringscale_api::ScaledObject;
use ringscale_coordinator::Ownership;
use ringscale_kube_sim::{Config, KubeSim};
use ringscale_operator::{Controller, Settings};
use ringscale_replication::Store;
use ringscale_ring::{Member, Ring, RingState};
use ringscale_scalers::{Sources, SourcesConfig};
use serde_json::json;
use tokio::sync::watch;

fn arg(name: &str, default: u64) -> u64 {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter()
        .position(|a| a == name)
        .and_then(|i| argv.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let objects = arg("--objects", 1000) as usize;
    let interval = arg("--interval", 10);
    let minutes = arg("--minutes", 10);
    let warmup = arg("--warmup", 40);
    ringscale_scalers::install_crypto_provider();

    // A source every trigger reads: always 10 (active, above the target of 5).
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async { axum::Json(json!({"value": 10})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let source = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let sim = KubeSim::start(Config {
        workload_delay: Duration::from_millis(50),
        ..Config::default()
    })
    .await
    .unwrap();
    let kubeconfig = kube::config::Kubeconfig::from_yaml(sim.kubeconfig()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    config.read_timeout = Some(Duration::from_secs(60));
    let client = Client::try_from(config).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in ringscale_api::crds::all() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let sos: Api<ScaledObject> = Api::namespaced(client.clone(), "default");
    let started = Instant::now();
    for i in 0..objects {
        let name = format!("worker-{i}");
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "w", "image": "w:1"}]}}}
        }))
        .unwrap();
        deployments
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
        let so: ScaledObject = serde_json::from_value(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": format!("so-{i}")},
            "spec": {"scaleTargetRef": {"name": name}, "pollingInterval": interval,
                "triggers": [{"type": "metrics-api", "metadata": {
                    "url": format!("http://{source}/metrics"), "valueLocation": "value", "targetValue": "5"}}]}
        }))
        .unwrap();
        sos.create(&PostParams::default(), &so).await.unwrap();
    }
    println!(
        "created {objects} Deployments and ScaledObjects in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let ring = RingState::new(
        1,
        vec![Member {
            name: "r0".into(),
            address: String::new(),
        }],
    );
    let (_tx, rx) = watch::channel(Ownership {
        member: Arc::from("r0"),
        ring: Arc::new(Ring::new(ring)),
        active: true,
        coordinator: true,
        valid_until: watch::channel(None).1,
    });
    let records = Store::new("r0");
    records.set_generation(1);
    let ctl = Controller::start(
        client.clone(),
        rx,
        records,
        Sources::new(SourcesConfig::default()),
        Settings::default(),
        std::future::pending(),
    );
    tokio::time::sleep(Duration::from_secs(warmup)).await;
    let active = {
        let mut n = 0;
        for d in deployments.list(&Default::default()).await.unwrap() {
            if d.spec.and_then(|s| s.replicas) == Some(1) {
                n += 1;
            }
        }
        n
    };
    println!(
        "after {warmup} s of warm-up: {active}/{objects} targets scaled to 1; writes so far {}",
        ctl.stats.writes()
    );

    sim.sim().stats.reset();
    let cycles0 = ctl.stats.cycles.load(Ordering::Relaxed);
    let writes0 = ctl.stats.writes();
    let lag_sum0 = ctl.stats.lag_us_sum.load(Ordering::Relaxed);
    let lag_n0 = ctl.stats.lag_samples.load(Ordering::Relaxed);
    let cpu0 = cpu_seconds();
    let measure = Instant::now();
    tokio::time::sleep(Duration::from_secs(minutes * 60)).await;
    let elapsed = measure.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let cycles = ctl.stats.cycles.load(Ordering::Relaxed) - cycles0;
    let writes = ctl.stats.writes() - writes0;
    let lag_n = ctl.stats.lag_samples.load(Ordering::Relaxed) - lag_n0;
    let lag_mean =
        (ctl.stats.lag_us_sum.load(Ordering::Relaxed) - lag_sum0) as f64 / lag_n.max(1) as f64;

    let mut by_verb: BTreeMap<String, u64> = BTreeMap::new();
    let mut table = Vec::new();
    for (k, n) in sim.sim().stats.counts() {
        *by_verb.entry(k.verb.clone()).or_default() += n;
        table.push(format!(
            "{} {}/{} {} -> {}",
            k.verb, k.group, k.resource, k.code, n
        ));
    }
    let object_minutes = objects as f64 * elapsed / 60.0;
    let api_writes: u64 = ["create", "update", "patch", "delete"]
        .iter()
        .map(|v| by_verb.get(*v).copied().unwrap_or(0))
        .sum();
    let reads: u64 = ["get", "list"]
        .iter()
        .map(|v| by_verb.get(*v).copied().unwrap_or(0))
        .sum();
    println!(
        "measured {elapsed:.0} s: {cycles} polls ({:.1}/s), poll lag mean {:.1} ms, max {:.1} ms (whole run)",
        cycles as f64 / elapsed,
        lag_mean / 1000.0,
        ctl.stats.lag_us_max.load(Ordering::Relaxed) as f64 / 1000.0
    );
    println!("API requests by verb (kube-sim's log): {by_verb:?}");
    for line in table {
        println!("  {line}");
    }
    println!(
        "writes per object per minute: {:.4} (operator's count {writes}); reads other than watches per poll: {:.4}",
        api_writes as f64 / object_minutes,
        reads as f64 / cycles.max(1) as f64
    );
    println!(
        "process CPU (operator, kube-sim, source, all in one process): {:.1} % of a core",
        100.0 * cpu / elapsed
    );
}
