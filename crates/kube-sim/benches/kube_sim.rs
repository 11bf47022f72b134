//! kube-sim benchmark: listing 20,000 stored objects, memory, and watch delivery latency with
//! 200 concurrent watches under 1,000 writes per second.
//!
//! Run: `cargo bench -p ringscale-kube-sim --bench kube_sim` (optionally `-- --objects N
//! --watches N --writes-per-second N --seconds N`). Figures go into BENCHMARKS.md.

// A benchmark reports by printing and fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ringscale_kube_sim::api::{self, Target, WriteOptions};
use ringscale_kube_sim::resources::Gvr;
use ringscale_kube_sim::{Config, KubeSim, Sim};
use serde_json::json;

struct Args {
    objects: usize,
    watches: usize,
    writes_per_second: u64,
    seconds: u64,
}

fn args() -> Args {
    let mut a = Args {
        objects: 20_000,
        watches: 200,
        writes_per_second: 1_000,
        seconds: 10,
    };
    let argv: Vec<String> = std::env::args().collect();
    for pair in argv.windows(2) {
        let value = pair[1].parse().ok();
        match (pair[0].as_str(), value) {
            ("--objects", Some(v)) => a.objects = v as usize,
            ("--watches", Some(v)) => a.watches = v as usize,
            ("--writes-per-second", Some(v)) => a.writes_per_second = v,
            ("--seconds", Some(v)) => a.seconds = v,
            _ => {}
        }
    }
    a
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn summary(label: &str, mut values: Vec<f64>, unit: &str) {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{label}: n={} min={:.2}{unit} p50={:.2}{unit} p90={:.2}{unit} p99={:.2}{unit} max={:.2}{unit}",
        values.len(),
        values.first().copied().unwrap_or(f64::NAN),
        percentile(&values, 50.0),
        percentile(&values, 90.0),
        percentile(&values, 99.0),
        values.last().copied().unwrap_or(f64::NAN)
    );
}

type Https = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<Bytes>,
>;

fn https_client(sim: &KubeSim) -> Https {
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject as _;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(sim.ca_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = ringscale_kube_sim::tls::client_config(None, Some(roots), false).unwrap();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector)
}

fn request(sim: &KubeSim, path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(format!("{}{path}", sim.url()))
        .header("Authorization", format!("Bearer {}", sim.token()))
        .body(Empty::new())
        .unwrap()
}

fn target(
    sim: &Sim,
    group: &str,
    version: &str,
    resource: &str,
    namespace: &str,
    name: Option<&str>,
) -> Target {
    Target {
        info: sim
            .registry
            .get(&Gvr::new(group, version, resource))
            .unwrap(),
        namespace: Some(namespace.to_owned()),
        name: name.map(str::to_owned),
        subresource: None,
    }
}

fn create_namespace(sim: &Sim, name: &str) {
    let info = sim.registry.get(&Gvr::new("", "v1", "namespaces")).unwrap();
    let t = Target {
        info,
        namespace: None,
        name: None,
        subresource: None,
    };
    api::create(
        sim,
        &t,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        &WriteOptions::default(),
    )
    .unwrap();
}

async fn list_benchmark(sim: &KubeSim, objects: usize) {
    let state = sim.sim().clone();
    let crds = sim
        .sim()
        .registry
        .get(&Gvr::new(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
        ))
        .unwrap();
    for crd in ringscale_api::crds::all() {
        let t = Target {
            info: crds.clone(),
            namespace: None,
            name: None,
            subresource: None,
        };
        api::create(
            &state,
            &t,
            serde_json::to_value(&crd).unwrap(),
            &WriteOptions::default(),
        )
        .unwrap();
    }
    create_namespace(&state, "bench");
    let rss_before = rss_mib();
    let so = target(
        &state,
        "keda.sh",
        "v1alpha1",
        "scaledobjects",
        "bench",
        None,
    );
    let started = Instant::now();
    for i in 0..objects {
        let object = json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": format!("so-{i:05}"), "labels": {"app": format!("app-{}", i % 100)}},
            "spec": {"scaleTargetRef": {"name": format!("worker-{i}")}, "pollingInterval": 10, "minReplicaCount": 0, "maxReplicaCount": 20,
                     "triggers": [{"type": "redis", "metadata": {"address": "redis:6379", "listName": format!("queue-{i}"), "listLength": "5"}}]}
        });
        api::create(&state, &so, object, &WriteOptions::default()).unwrap();
    }
    let load_secs = started.elapsed().as_secs_f64();
    let rss_after = rss_mib();
    println!(
        "stored {objects} ScaledObjects in {load_secs:.2}s ({:.0} creates/s, schema + CEL validated)",
        objects as f64 / load_secs
    );
    println!(
        "process RSS: {rss_before:.0} MiB before, {rss_after:.0} MiB after ({:.0} MiB for the objects)",
        rss_after - rss_before
    );

    let mut server_side = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let page = api::list_page(&state, &so, &api::ListOptions::default()).unwrap();
        let bytes = api::list_json(&so.info, &page);
        server_side.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(page.items.len(), objects);
        std::hint::black_box(bytes);
    }
    summary(
        &format!("list {objects} (server: store read + response body)"),
        server_side,
        "ms",
    );

    let client = https_client(sim);
    let mut end_to_end = Vec::new();
    let mut size = 0;
    for _ in 0..10 {
        let t = Instant::now();
        let response = client
            .request(request(
                sim,
                "/apis/keda.sh/v1alpha1/namespaces/bench/scaledobjects",
            ))
            .await
            .unwrap();
        assert!(response.status().is_success());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        end_to_end.push(t.elapsed().as_secs_f64() * 1000.0);
        size = body.len();
    }
    summary(
        &format!(
            "list {objects} over HTTPS ({:.1} MiB response)",
            size as f64 / 1048576.0
        ),
        end_to_end,
        "ms",
    );
    println!("process RSS after listing: {:.0} MiB", rss_mib());
}

async fn watch_benchmark(sim: &KubeSim, watches: usize, writes_per_second: u64, seconds: u64) {
    let state = sim.sim().clone();
    create_namespace(&state, "watched");
    let cms = target(&state, "", "v1", "configmaps", "watched", None);
    const OBJECTS: usize = 100;
    for i in 0..OBJECTS {
        api::create(&state, &cms, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{i}")}, "data": {"t": "0"}}), &WriteOptions::default()).unwrap();
    }
    let start_rv = state.store.rv();
    let t0 = Instant::now();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    let delivered = Arc::new(AtomicU64::new(0));
    let client = https_client(sim);
    let mut tasks = Vec::new();
    for _ in 0..watches {
        let client = client.clone();
        let req = request(
            sim,
            &format!("/api/v1/namespaces/watched/configmaps?watch=true&resourceVersion={start_rv}"),
        );
        let latencies = latencies.clone();
        let delivered = delivered.clone();
        tasks.push(tokio::spawn(async move {
            let response = client.request(req).await.unwrap();
            let mut body = response.into_body();
            let mut mine = Vec::new();
            let mut pending = Vec::new();
            while let Some(Ok(frame)) = body.frame().await {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                pending.extend_from_slice(&data);
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    // Find `"t":"<nanos>"` without parsing the whole event.
                    if let Some(pos) = line.windows(5).position(|w| w == b"\"t\":\"") {
                        let digits: String = line[pos + 5..]
                            .iter()
                            .take_while(|b| b.is_ascii_digit())
                            .map(|b| *b as char)
                            .collect();
                        if let Ok(sent) = digits.parse::<u64>()
                            && sent > 0
                        {
                            let now = t0.elapsed().as_nanos() as u64;
                            mine.push((now.saturating_sub(sent)) as f64 / 1e6);
                            delivered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                if mine.len() >= 1 << 20 {
                    break;
                }
            }
            latencies.lock().unwrap().extend(mine);
        }));
    }
    // Let every watch connect.
    while state.stats.open_watches() < watches as i64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = writes_per_second * seconds;
    let period = Duration::from_secs_f64(1.0 / writes_per_second as f64);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let write_start = Instant::now();
    for i in 0..total {
        ticker.tick().await;
        let name = format!("cm-{}", i as usize % OBJECTS);
        let now = t0.elapsed().as_nanos() as u64;
        let body = serde_json::to_vec(&json!({"data": {"t": now.to_string()}})).unwrap();
        let one = target(&state, "", "v1", "configmaps", "watched", Some(&name));
        api::patch(
            &state,
            &one,
            ringscale_kube_sim::patch::PatchType::Merge,
            &body,
            &WriteOptions::default(),
        )
        .unwrap();
    }
    let write_secs = write_start.elapsed().as_secs_f64();
    // Wait for the tail, bounded.
    let expected = total * watches as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    state.faults.drop_watches();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    println!(
        "{watches} watches, {total} writes in {write_secs:.2}s ({:.0} writes/s): {} of {expected} deliveries",
        total as f64 / write_secs,
        delivered.load(Ordering::Relaxed)
    );
    let values = std::mem::take(&mut *latencies.lock().unwrap());
    summary("watch delivery latency (write -> watcher)", values, "ms");
}

fn main() {
    // `cargo bench` also runs benches with `--bench`; ignore the libtest flags.
    let a = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let sim = KubeSim::start(Config {
            controllers: false,
            ..Config::default()
        })
        .await
        .unwrap();
        println!("kube-sim benchmark on {} (2 worker threads)", sim.url());
        list_benchmark(&sim, a.objects).await;
        watch_benchmark(&sim, a.watches, a.writes_per_second, a.seconds).await;
        sim.shutdown().await;
    });
}
