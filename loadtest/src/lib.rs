//! Load test: kube-sim and N `ringscale run` processes on loopback, K ScaledObjects with T
//! triggers each (Redis lists against the real Redis, or the built-in metrics-api source),
//! sources changed at a set rate while every replica's external metrics API is probed. Measures
//! signal latency, activation latency, poll-schedule lag, CPU and peak RSS per replica, API
//! requests by verb and replication bytes; writes JSON, a Markdown summary and SVG plots.
//! Every loop is bounded in time.
//!
//! `cargo build --release -p ringscale -p ringscale-loadtest && target/release/ringscale-loadtest --objects 10000 --replicas 1,3,5`

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt as _, Empty};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use ringscale_kube_sim::{Config, KubeSim};
use serde::Serialize;
use serde_json::{Value, json};

mod measure;
mod report;

use measure::{Dist, clock_ticks, label, labelled_samples, proc_sample, samples};

/// Command line.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "ringscale-loadtest",
    about = "Load test a ring of replicas on loopback and write a report"
)]
struct Args {
    /// ScaledObjects.
    #[arg(long, default_value_t = 1000)]
    objects: usize,
    /// Triggers per ScaledObject.
    #[arg(long, default_value_t = 1)]
    triggers: usize,
    /// Replica counts, one run each (e.g. `1,3,5` for the scaling curve).
    #[arg(long, value_delimiter = ',', default_value = "3")]
    replicas: Vec<usize>,
    /// Trigger source: Redis lists (the real Redis) or the built-in metrics-api source.
    #[arg(long, default_value = "redis", value_parser = ["redis", "metrics-api"])]
    source: String,
    /// Redis address.
    #[arg(long, env = "REDIS_ADDR", default_value = "127.0.0.1:6379")]
    redis_addr: String,
    /// pollingInterval of every ScaledObject, seconds.
    #[arg(long, default_value_t = 10)]
    polling_interval: u64,
    /// Seconds measured once the ring holds every value.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Source changes per second during the measured window.
    #[arg(long, default_value_t = 2.0)]
    change_rate: f64,
    /// Objects that start empty (0 replicas) and are activated during the window.
    #[arg(long, default_value_t = 20)]
    activations: usize,
    /// `ringscale`: this project's write pattern; `keda`: a status write on every active poll
    /// and client QPS 20 / burst 30, as KEDA; `both`: one run of each per replica count.
    #[arg(long, default_value = "ringscale", value_parser = ["ringscale", "keda", "both"])]
    mode: String,
    /// `--kube-api-qps` of the replicas in `ringscale` mode (0: unlimited).
    #[arg(long, default_value_t = 0.0)]
    kube_api_qps: f64,
    /// Report directory (default: loadtest/reports/<unix time>).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Seed.
    #[arg(long)]
    seed: Option<u64>,
    /// The `ringscale` binary (default: next to this one).
    #[arg(long, env = "RINGSCALE_BIN")]
    ringscale: Option<PathBuf>,
    /// Longest wait for the ring to hold every value, seconds.
    #[arg(long, default_value_t = 600)]
    ready_timeout: u64,
    /// Ask each object's metric every 15 s through a random replica, as the HPA does (spread
    /// over the 15 s); reports the metrics API's latency and the source reads per second.
    #[arg(long)]
    hpa_queries: bool,
    /// Give every ScaledObject `fallback: {failureThreshold: 3, replicas: 2}`.
    #[arg(long)]
    fallback: bool,
    /// Stop the source for this many seconds in the middle of the window (Redis only: the load
    /// test then runs its own redis-server, killed and restarted on the same port); reports the
    /// API writes per second during the outage. Changes and activations are off in such a run.
    #[arg(long, default_value_t = 0)]
    source_outage: u64,
    /// After each run of N > 1 replicas, also run one replica alone with a N-th of the objects:
    /// what a replica would cost if sharding were free. The CPU ratio against the single
    /// replica cannot go below this run's, whatever the ring costs.
    #[arg(long)]
    shard_reference: bool,
    /// This fraction of the objects (seeded) reads a source of its own — another host — that
    /// answers after `--slow-delay` seconds: noisy neighbours. Their poll lag is reported apart
    /// from the others'; they take no part in changes and activations.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    slow_fraction: f64,
    /// Seconds the slow source takes to answer (the metrics-api trigger gives up after 3).
    #[arg(long, default_value_t = 3.0, value_parser = fraction_or_seconds)]
    slow_delay: f64,
    /// This fraction of the objects (seeded, not the slow ones) reads a source that answers
    /// HTTP 500 at once.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    failing_fraction: f64,
    /// Give every trigger `useCachedMetrics: true`: the metrics API answers the probes (and
    /// `--hpa-queries`) from the replicated cache instead of reading the source through the
    /// owner, so the figures leave out the live reads' forwarding.
    #[arg(long)]
    cached_metrics: bool,
}

fn fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{text:?} is not a fraction between 0 and 1")),
    }
}

fn fraction_or_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.0..=600.0).contains(&s) => Ok(s),
        _ => Err(format!(
            "{text:?} is not a number of seconds between 0 and 600"
        )),
    }
}

/// Which source an object's triggers read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    /// The measured source (`--source`).
    Measured,
    /// The slow source (`--slow-fraction`).
    Slow,
    /// The failing source (`--failing-fraction`).
    Failing,
}

/// The noisy neighbours' source: `/slow/<key>` answers `{"length": 3}` after a delay,
/// `/fail/<key>` answers 500 at once. One host, apart from the measured source's.
async fn start_noisy_source(delay: Duration) -> anyhow::Result<std::net::SocketAddr> {
    let app = axum::Router::new()
        .route(
            "/slow/{name}",
            axum::routing::get(move || async move {
                tokio::time::sleep(delay).await;
                axum::Json(json!({ "length": 3 }))
            }),
        )
        .route(
            "/fail/{name}",
            axum::routing::get(|| async { axum::http::StatusCode::INTERNAL_SERVER_ERROR }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// Longest wait for KEDA's write pattern to hold every value before measuring anyway.
const KEDA_READY_TIMEOUT: u64 = 180;

/// A sample of one replica over time.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Point {
    pub t: f64,
    pub cpu_cores: f64,
    pub rss_mib: f64,
}

/// The figures of one run.
#[derive(Debug, Serialize)]
pub(crate) struct RunResult {
    pub replicas: usize,
    pub objects: usize,
    pub triggers: usize,
    pub polling_interval: u64,
    pub source: String,
    pub keda_write_pattern: bool,
    pub replica_flags: Vec<String>,
    /// Seconds from starting the replicas until every replica held every value (or until
    /// measuring began anyway, KEDA's pattern only).
    pub ready_seconds: f64,
    /// Values every replica held when measuring began (all of them unless KEDA's pattern
    /// never got there).
    pub values_at_start: u64,
    pub measured_seconds: f64,
    pub changes: usize,
    pub activations: usize,
    pub probe_timeouts: usize,
    pub signal_latency: Dist,
    pub activation_latency: Dist,
    pub poll_lag: Dist,
    pub cpu_seconds: Vec<f64>,
    pub cpu_cores_per_replica: f64,
    pub peak_rss_mib: Vec<f64>,
    pub series: BTreeMap<String, Vec<Point>>,
    pub api_requests_per_second: BTreeMap<String, f64>,
    pub api_writes_per_second: f64,
    pub replication_bytes_per_second: f64,
    /// `--hpa-queries`: latency of the metrics API requests (seconds), the requests, the
    /// failed ones, and the source's commands per second during the window.
    pub hpa_query_latency: Option<Dist>,
    pub hpa_queries: usize,
    pub hpa_query_errors: usize,
    pub source_commands_per_second: Option<f64>,
    /// `--source-outage`: seconds of outage and the API writes per second during it.
    pub outage_seconds: Option<f64>,
    pub outage_writes_per_second: Option<f64>,
    /// The outage's writes per second by verb and resource.
    pub outage_writes_by_kind: BTreeMap<String, f64>,
    /// `--source-outage` with `--fallback`: objects asked during the outage that were served
    /// their fallback value, of those asked.
    pub fallback_served: Option<(usize, usize)>,
    /// Set on a `--shard-reference` run: the replica count whose share it polls alone.
    pub reference_for: Option<usize>,
    /// `--slow-fraction` and `--failing-fraction`: the noisy objects, and their poll lag (the
    /// others' is `poll_lag`).
    pub slow_objects: usize,
    pub failing_objects: usize,
    pub noisy_poll_lag: Dist,
}

/// A target and whether the figures meet it.
#[derive(Debug, Serialize)]
pub(crate) struct Target {
    pub target: String,
    pub figure: String,
    pub met: bool,
}

/// Runs the load test; exit 1 on an error (a missed target is reported, not an error).
pub fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let dir = args.report.clone().unwrap_or_else(|| {
        PathBuf::from("loadtest/reports").join(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                .to_string(),
        )
    });
    println!("seed {seed}; report in {}", dir.display());
    let modes: Vec<bool> = match args.mode.as_str() {
        "keda" => vec![true],
        "both" => vec![false, true],
        _ => vec![false],
    };
    let mut runs = Vec::new();
    for &replicas in &args.replicas {
        for &keda in &modes {
            if replicas == 0 {
                bail!("--replicas counts must be at least 1");
            }
            let result = run_once(&args, replicas, keda, seed).await?;
            println!(
                "{} replicas{}: signal p99 {:.2} s, poll lag p99 {:.1} ms, CPU {:.3} cores/replica, peak RSS {:.1} MiB, {:.2} writes/s",
                replicas,
                if keda { " (KEDA write pattern)" } else { "" },
                result.signal_latency.p99,
                result.poll_lag.p99 * 1000.0,
                result.cpu_cores_per_replica,
                result.peak_rss_mib.iter().copied().fold(0.0, f64::max),
                result.api_writes_per_second
            );
            runs.push(result);
            // Write what we have after every run: a long invocation keeps its finished runs.
            report::write(&dir, &command, &runs, &targets(&runs))?;
            if args.shard_reference && replicas > 1 && !keda {
                let share = Args {
                    objects: args.objects.div_ceil(replicas),
                    ..args.clone()
                };
                let mut result = run_once(&share, 1, false, seed).await?;
                result.reference_for = Some(replicas);
                println!(
                    "1 replica with 1/{replicas} of the objects ({}): CPU {:.3} cores",
                    share.objects, result.cpu_cores_per_replica
                );
                runs.push(result);
                report::write(&dir, &command, &runs, &targets(&runs))?;
            }
        }
    }
    let targets = targets(&runs);
    report::write(&dir, &command, &runs, &targets)?;
    println!("\n{}", report::summary(&command, &runs, &targets));
    println!("report: {}", dir.display());
    Ok(())
}

/// The targets, for every ringscale-mode run (they are set for 10,000 objects × 1
/// trigger, 10 s polling, 3 replicas; the figure names its configuration).
fn targets(runs: &[RunResult]) -> Vec<Target> {
    let mut out = Vec::new();
    let single = runs
        .iter()
        .find(|r| r.replicas == 1 && !r.keda_write_pattern && r.reference_for.is_none())
        .map(|r| r.cpu_cores_per_replica);
    for r in runs
        .iter()
        .filter(|r| !r.keda_write_pattern && r.reference_for.is_none())
    {
        let config = format!(
            "{} × {} triggers, {} s, {} replicas",
            r.objects, r.triggers, r.polling_interval, r.replicas
        );
        let bound = r.polling_interval as f64 + 0.25;
        out.push(Target {
            target: format!("signal latency p99 ≤ pollingInterval + 250 ms ({config})"),
            figure: format!("{:.2} s (bound {bound:.2} s)", r.signal_latency.p99),
            met: r.signal_latency.n > 0 && r.signal_latency.p99 <= bound && r.probe_timeouts == 0,
        });
        out.push(Target {
            target: format!("poll lag p99 < 100 ms ({config})"),
            figure: format!("{:.1} ms", r.poll_lag.p99 * 1000.0),
            met: r.poll_lag.n > 0 && r.poll_lag.p99 < 0.1,
        });
        let rss = r.peak_rss_mib.iter().copied().fold(0.0, f64::max);
        out.push(Target {
            target: format!("peak RSS < 150 MiB per replica ({config})"),
            figure: format!("{rss:.1} MiB"),
            met: rss < 150.0,
        });
        out.push(Target {
            target: format!("steady-state API writes < 5/s in total ({config})"),
            figure: format!("{:.2}/s", r.api_writes_per_second),
            met: r.api_writes_per_second < 5.0,
        });
        if r.replicas > 1
            && let Some(one) = single
        {
            let ratio = r.cpu_cores_per_replica / one.max(1e-9);
            // With a reference run: the ratio a replica alone with its share reached.
            let floor = runs
                .iter()
                .find(|x| x.reference_for == Some(r.replicas))
                .map(|x| {
                    format!(
                        "; a replica alone with 1/{} of the objects: {:.2} ({:.3} cores)",
                        r.replicas,
                        x.cpu_cores_per_replica / one.max(1e-9),
                        x.cpu_cores_per_replica
                    )
                })
                .unwrap_or_default();
            out.push(Target {
                target: format!("CPU per replica ≤ 0.4 × the single replica's ({config})"),
                figure: format!(
                    "{ratio:.2} ({:.3} vs {one:.3} cores{floor})",
                    r.cpu_cores_per_replica
                ),
                met: ratio <= 0.4,
            });
        }
    }
    for r in runs
        .iter()
        .filter(|r| !r.keda_write_pattern && r.reference_for.is_none())
    {
        let config = format!(
            "{} objects × {}, {} replicas",
            r.objects, r.triggers, r.replicas
        );
        if let Some(h) = &r.hpa_query_latency {
            out.push(Target {
                target: format!("metrics API p99 < 50 ms with live reads ({config})"),
                figure: format!(
                    "{:.1} ms ({} of {} requests failed)",
                    h.p99 * 1000.0,
                    r.hpa_query_errors,
                    r.hpa_queries
                ),
                met: h.p99 < 0.050 && r.hpa_query_errors == 0,
            });
        }
        if let Some(w) = r.outage_writes_per_second {
            out.push(Target {
                target: format!("API writes < 50/s in total while the source is down ({config})"),
                figure: format!("{w:.2} writes/s"),
                met: w < 50.0,
            });
        }
    }
    out
}

/// Where the values come from.
enum Source {
    Redis {
        conn: redis::aio::MultiplexedConnection,
        prefix: String,
        /// The server's address.
        addr: String,
        /// The load test's own server (`--source-outage`), stopped and started by it.
        own: Option<Mutex<Child>>,
    },
    Http {
        lengths: Arc<Mutex<HashMap<String, i64>>>,
        addr: std::net::SocketAddr,
    },
}

impl Source {
    async fn start(args: &Args, seed: u64) -> anyhow::Result<Source> {
        if args.source == "redis" {
            // An outage needs a server of our own to stop: the shared one serves others.
            let (addr, own) = if args.source_outage > 0 {
                let port = free_port()?;
                let child = start_redis(port)?;
                let addr = format!("127.0.0.1:{port}");
                let up = Instant::now() + Duration::from_secs(10);
                while tokio::net::TcpStream::connect(&addr).await.is_err() {
                    if Instant::now() > up {
                        bail!("our redis-server did not listen on {addr} within 10 s");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (addr, Some(Mutex::new(child)))
            } else {
                (args.redis_addr.clone(), None)
            };
            let client = redis::Client::open(format!("redis://{addr}"))
                .with_context(|| format!("REDIS_ADDR {addr}"))?;
            let conn = tokio::time::timeout(
                Duration::from_secs(5),
                client.get_multiplexed_async_connection(),
            )
            .await
            .context("Redis did not answer within 5 s")?
            .with_context(|| format!("connecting to Redis at {addr}"))?;
            Ok(Source::Redis {
                conn,
                prefix: format!("rs-lt-{}-{seed}", std::process::id()),
                addr,
                own,
            })
        } else {
            let lengths: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
            let read = Arc::clone(&lengths);
            let app = axum::Router::new().route(
                "/q/{name}",
                axum::routing::get(
                    move |axum::extract::Path(name): axum::extract::Path<String>| {
                        let n = read
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .get(&name)
                            .copied()
                            .unwrap_or(0);
                        async move { axum::Json(json!({ "length": n })) }
                    },
                ),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            tokio::spawn(async move { axum::serve(listener, app).await });
            Ok(Source::Http { lengths, addr })
        }
    }

    /// The Redis address the triggers use.
    fn redis_addr(&self) -> Option<&str> {
        match self {
            Source::Redis { addr, .. } => Some(addr),
            Source::Http { .. } => None,
        }
    }

    /// Redis's `total_commands_processed` (the source reads, plus the few writes of changes).
    async fn commands_processed(&self) -> Option<u64> {
        let Source::Redis { conn, .. } = self else {
            return None;
        };
        let mut conn = conn.clone();
        let info: String = tokio::time::timeout(
            Duration::from_secs(5),
            redis::cmd("INFO").arg("stats").query_async(&mut conn),
        )
        .await
        .ok()?
        .ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Stops our own Redis for `down`, then starts it again on the same port (empty: the
    /// lists are gone, so every value reads 0 afterwards).
    async fn outage(&self, down: Duration) -> anyhow::Result<()> {
        let Source::Redis {
            own: Some(child),
            addr,
            ..
        } = self
        else {
            bail!("--source-outage needs --source redis");
        };
        {
            let mut c = lock(child);
            let _ = c.kill();
            let _ = c.wait();
        }
        tokio::time::sleep(down).await;
        let port: u16 = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .context("our Redis address has no port")?;
        *lock(child) = start_redis(port)?;
        Ok(())
    }

    fn key(&self, object: usize, trigger: usize) -> String {
        match self {
            Source::Redis { prefix, .. } => format!("{prefix}-{object}-{trigger}"),
            Source::Http { .. } => format!("{object}-{trigger}"),
        }
    }

    fn trigger(&self, object: usize, trigger: usize) -> Value {
        let key = self.key(object, trigger);
        match self {
            Source::Redis { .. } => json!({"type": "redis", "metadata": {
                "address": "", "listName": key, "listLength": "5"}}),
            Source::Http { addr, .. } => json!({"type": "metrics-api", "metadata": {
                "url": format!("http://{addr}/q/{key}"), "valueLocation": "length", "targetValue": "5"}}),
        }
    }

    fn metric(&self, object: usize, trigger: usize) -> String {
        match self {
            Source::Redis { .. } => format!("s{trigger}-redis-{}", self.key(object, trigger)),
            Source::Http { .. } => format!("s{trigger}-metric-api-length"),
        }
    }

    /// Sets lengths: (object, trigger, length).
    async fn set(&self, items: &[(usize, usize, i64)]) -> anyhow::Result<()> {
        match self {
            Source::Redis { conn, .. } => {
                for chunk in items.chunks(500) {
                    let mut pipe = redis::pipe();
                    for (o, t, n) in chunk {
                        let key = self.key(*o, *t);
                        pipe.del(&key).ignore();
                        if *n > 0 {
                            let values: Vec<&str> = vec!["x"; usize::try_from(*n).unwrap_or(0)];
                            pipe.rpush(&key, values).ignore();
                        }
                    }
                    let mut conn = conn.clone();
                    tokio::time::timeout(
                        Duration::from_secs(30),
                        pipe.query_async::<()>(&mut conn),
                    )
                    .await
                    .context("Redis did not answer within 30 s")??;
                }
            }
            Source::Http { lengths, .. } => {
                let mut l = lengths.lock().unwrap_or_else(PoisonError::into_inner);
                for (o, t, n) in items {
                    l.insert(self.key(*o, *t), *n);
                }
            }
        }
        Ok(())
    }

    async fn clean(&self, objects: usize, triggers: usize) {
        if let Source::Redis {
            own: Some(child), ..
        } = self
        {
            let mut c = lock(child);
            let _ = c.kill();
            let _ = c.wait();
            return;
        }
        if let Source::Redis { conn, .. } = self {
            let keys: Vec<String> = (0..objects)
                .flat_map(|o| (0..triggers).map(move |t| (o, t)))
                .map(|(o, t)| self.key(o, t))
                .collect();
            for chunk in keys.chunks(1000) {
                let mut conn = conn.clone();
                let _ = tokio::time::timeout(
                    Duration::from_secs(30),
                    redis::cmd("DEL").arg(chunk).query_async::<()>(&mut conn),
                )
                .await;
            }
        }
    }
}

/// A redis-server of the load test's own on `port` (no persistence).
fn start_redis(port: u16) -> anyhow::Result<Child> {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting redis-server (is it installed?)")
}

/// A replica process, killed on drop.
use ringscale_testkit::ReplicaProcess as Replica;

/// An error naming the replica's log when its process has exited.
fn ensure_running(r: &mut Replica, dir: &std::path::Path) -> anyhow::Result<()> {
    if matches!(r.child.try_wait(), Ok(None)) {
        return Ok(());
    }
    bail!(
        "replica {} exited (log in {})",
        r.name,
        dir.join(format!("{}.log", r.name)).display()
    )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(ringscale_testkit::try_free_port()?)
}

fn ringscale_bin(args: &Args) -> anyhow::Result<PathBuf> {
    Ok(ringscale_testkit::ringscale_bin(args.ringscale.as_deref())?)
}

/// An HTTP client for the replicas' ports.
#[derive(Clone)]
struct Http {
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Empty<bytes::Bytes>,
    >,
}

impl Http {
    fn new() -> Self {
        Self {
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .build_http(),
        }
    }

    async fn get(&self, port: u16, path: &str) -> anyhow::Result<(u16, bytes::Bytes)> {
        let uri: http::Uri = format!("http://127.0.0.1:{port}{path}").parse()?;
        let response = tokio::time::timeout(Duration::from_secs(5), self.client.get(uri)).await??;
        let code = response.status().as_u16();
        let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
            .await??
            .to_bytes();
        Ok((code, body))
    }

    /// Whether the replica's `/readyz` answers 200.
    async fn ready(&self, r: &Replica) -> bool {
        self.get(r.admin, "/readyz")
            .await
            .is_ok_and(|(c, _)| c == 200)
    }

    async fn metrics(&self, r: &Replica) -> Option<String> {
        match self.get(r.admin, "/metrics").await {
            Ok((200, body)) => Some(String::from_utf8_lossy(&body).into_owned()),
            _ => None,
        }
    }

    /// The value a replica serves for an object's metric.
    async fn value(&self, port: u16, object: usize, metric: &str) -> Option<f64> {
        let path = format!(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/{metric}?labelSelector=scaledobject.keda.sh%2Fname%3Dlt-{object}"
        );
        let (code, body) = self.get(port, &path).await.ok()?;
        if code != 200 {
            return None;
        }
        let v: Value = serde_json::from_slice(&body).ok()?;
        v["items"][0]["value"].as_str()?.parse().ok()
    }
}

fn bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix:>12} [{bar:40}] {pos}/{len} {elapsed_precise} {msg}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_prefix(what.to_owned());
    pb
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

/// Waits until every replica is ready and follows a ring of all of them (no objects exist yet).
async fn wait_for_ring(
    http: &Http,
    replicas: &mut [Replica],
    dir: &std::path::Path,
    deadline: Instant,
) -> anyhow::Result<()> {
    let want = replicas.len() as f64;
    loop {
        let mut formed = true;
        for r in replicas.iter_mut() {
            ensure_running(r, dir)?;
        }
        for r in replicas.iter() {
            let ready = http.ready(r).await;
            let members = http
                .metrics(r)
                .await
                .and_then(|m| samples(&m, "ringscale_ring_members").first().copied());
            formed &= ready && members == Some(want);
        }
        if formed {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the {} replicas did not form a ring before the objects were created (logs in {})",
                replicas.len(),
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[allow(clippy::too_many_lines)]
async fn run_once(
    args: &Args,
    replica_count: usize,
    keda: bool,
    seed: u64,
) -> anyhow::Result<RunResult> {
    let mut rng = StdRng::seed_from_u64(seed ^ replica_count as u64);
    let bin = ringscale_bin(args)?;
    let (k, t_count, interval) = (args.objects, args.triggers.max(1), args.polling_interval);
    println!(
        "\n== {replica_count} replicas, {k} ScaledObjects × {t_count} triggers ({}), polling {interval} s{}",
        args.source,
        if keda { ", KEDA write pattern" } else { "" }
    );
    let sim = KubeSim::start(Config {
        // The simulated workload and HPA controllers are not what is measured.
        controllers: false,
        ..Config::default()
    })
    .await?;
    let dir = std::env::temp_dir().join(format!(
        "ringscale-loadtest-{}-{replica_count}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(sim.kubeconfig())?;
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?,
    )?;
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "ringscale"}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    for crd in ringscale_api::crds::all() {
        Api::<CustomResourceDefinition>::all(client.clone())
            .create(&PostParams::default(), &crd)
            .await?;
    }
    let source = Arc::new(Source::start(args, seed).await?);
    // Objects that start empty and are activated during the window.
    let mut order: Vec<usize> = (0..k).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let activated: Vec<usize> = order
        .iter()
        .take(args.activations.min(k))
        .copied()
        .collect();
    let is_activated: Vec<bool> = {
        let mut v = vec![false; k];
        for &i in &activated {
            v[i] = true;
        }
        v
    };
    // Noisy neighbours: the next objects in the seeded order after the activated ones.
    let slow_n = ((k as f64) * args.slow_fraction).round() as usize;
    let failing_n = ((k as f64) * args.failing_fraction).round() as usize;
    let mut lanes = vec![Lane::Measured; k];
    for (n, &o) in order.iter().skip(activated.len()).enumerate() {
        lanes[o] = if n < slow_n {
            Lane::Slow
        } else if n < slow_n + failing_n {
            Lane::Failing
        } else {
            break;
        };
    }
    let noisy_names: HashSet<String> = (0..k)
        .filter(|o| lanes[*o] != Lane::Measured)
        .map(|o| format!("lt-{o}"))
        .collect();
    let noisy = if noisy_names.is_empty() {
        None
    } else {
        Some(start_noisy_source(Duration::from_secs_f64(args.slow_delay)).await?)
    };
    if !noisy_names.is_empty() {
        println!(
            "noisy neighbours: {slow_n} objects on a source answering after {} s, {failing_n} on one answering 500",
            args.slow_delay
        );
    }
    let initial: Vec<(usize, usize, i64)> = (0..k)
        .flat_map(|o| (0..t_count).map(move |t| (o, t)))
        .map(|(o, t)| (o, t, if is_activated[o] { 0 } else { 3 }))
        .collect();
    source.set(&initial).await?;
    // The replicas.
    let mut flags: Vec<String> = vec![
        "--kube-api-qps".into(),
        if keda {
            "20".into()
        } else {
            args.kube_api_qps.to_string()
        },
    ];
    if keda {
        flags.extend([
            "--kube-api-burst".into(),
            "30".into(),
            "--keda-write-pattern".into(),
        ]);
    }
    let mut replicas = Vec::new();
    let started = Instant::now();
    for i in 0..replica_count {
        let name = format!("r{i}");
        let kubeconfig = dir.join(format!("{name}.kubeconfig"));
        std::fs::write(
            &kubeconfig,
            sim.add_user(&format!("system:serviceaccount:ringscale:{name}"), &[]),
        )?;
        let (admin, metrics, replication) = (free_port()?, free_port()?, free_port()?);
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = Command::new(&bin)
            .args([
                "run",
                "--name",
                &name,
                "--insecure-metrics-api",
                "--log",
                "warn",
            ])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--replication-listen", &format!("127.0.0.1:{replication}")])
            .args(["--metrics-api-listen", &format!("127.0.0.1:{metrics}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(&flags)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        replicas.push(Replica {
            name,
            child,
            admin,
            metrics,
        });
    }
    let http = Http::new();
    // The ring forms before the objects exist, and the objects then arrive at the pace the API
    // server takes them, over more than a polling interval at 10,000: each object's first poll
    // (and so its phase in every later interval) is when it arrived, as in a cluster whose
    // objects come and go over time. Objects that existed before the replicas started would be
    // polled all at once and stay bunched (cheaper to poll: one wake-up serves many), while a
    // ring's handovers spread the ones they move: runs of different replica counts would not
    // compare.
    wait_for_ring(
        &http,
        &mut replicas,
        &dir,
        started + Duration::from_secs(args.ready_timeout),
    )
    .await?;
    // Deployments and ScaledObjects.
    let pb = bar(k as u64, "objects");
    let created = futures_util::stream::iter(0..k)
        .map(|i| {
            let client = client.clone();
            let triggers: Vec<Value> = (0..t_count)
                .map(|t| match (lanes[i], noisy) {
                    (Lane::Slow, Some(addr)) => json!({"type": "metrics-api", "metadata": {
                        "url": format!("http://{addr}/slow/{i}-{t}"),
                        "valueLocation": "length", "targetValue": "5"}}),
                    (Lane::Failing, Some(addr)) => json!({"type": "metrics-api", "metadata": {
                        "url": format!("http://{addr}/fail/{i}-{t}"),
                        "valueLocation": "length", "targetValue": "5"}}),
                    _ => source.trigger(i, t),
                })
                .collect();
            let replicas = if is_activated[i] { 0 } else { 1 };
            let redis_addr = source.redis_addr().unwrap_or(&args.redis_addr).to_owned();
            let cached = args.cached_metrics;
            let fallback = args
                .fallback
                .then(|| json!({"failureThreshold": 3, "replicas": 2}));
            let pb = pb.clone();
            async move {
                let name = format!("lt-{i}");
                let d: Deployment = serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                             "template": {"metadata": {"labels": {"app": name}},
                                          "spec": {"containers": [{"name": "w", "image": "w:1"}]}}}
                }))?;
                Api::<Deployment>::namespaced(client.clone(), "default")
                    .create(&PostParams::default(), &d)
                    .await?;
                let mut triggers = triggers;
                for t in &mut triggers {
                    if t["type"] == "redis" {
                        t["metadata"]["address"] = json!(redis_addr);
                    }
                    if cached {
                        t["useCachedMetrics"] = json!(true);
                    }
                }
                let mut so = json!({
                    "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                    "metadata": {"name": name},
                    "spec": {"scaleTargetRef": {"name": name}, "pollingInterval": interval,
                             "cooldownPeriod": 300, "maxReplicaCount": 10,
                             "triggers": triggers}
                });
                if let Some(f) = fallback {
                    so["spec"]["fallback"] = f;
                }
                let so: ringscale_api::ScaledObject = serde_json::from_value(so)?;
                Api::<ringscale_api::ScaledObject>::namespaced(client, "default")
                    .create(&PostParams::default(), &so)
                    .await?;
                pb.inc(1);
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    pb.finish();
    for c in created {
        c?;
    }
    // Ready: every replica ready and holding every value (timed from the last object created).
    let started = Instant::now();
    let want = (k * t_count) as u64;
    let pb = bar(want, "values");
    let deadline = started
        + Duration::from_secs(if keda {
            args.ready_timeout.min(KEDA_READY_TIMEOUT)
        } else {
            args.ready_timeout
        });
    let mut values_at_start = want;
    loop {
        let mut least = u64::MAX;
        let mut ready = true;
        for r in &mut replicas {
            ensure_running(r, &dir)?;
        }
        for r in &replicas {
            ready &= http.ready(r).await;
            let held = http
                .metrics(r)
                .await
                .and_then(|m| samples(&m, "ringscale_cache_records").first().copied())
                .unwrap_or(0.0) as u64;
            least = least.min(held);
        }
        pb.set_position(least.min(want));
        if ready && least >= want {
            break;
        }
        if Instant::now() > deadline {
            if keda {
                // KEDA's pattern may never get there: measure what it does.
                pb.println(format!(
                    "KEDA write pattern: {least} of {want} values held after {} s; measuring anyway",
                    args.ready_timeout.min(KEDA_READY_TIMEOUT)
                ));
                values_at_start = least;
                break;
            }
            bail!(
                "the ring did not hold every value within {} s (logs in {})",
                args.ready_timeout,
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    pb.finish();
    let ready_seconds = started.elapsed().as_secs_f64();
    // Settle: one polling interval (and the start-up writes) before measuring.
    tokio::time::sleep(Duration::from_secs(interval + 5)).await;

    // ---- the measured window ----
    let window = Duration::from_secs(args.duration);
    let ticks = clock_ticks();
    let pids: Vec<(String, u32)> = replicas
        .iter()
        .map(|r| (r.name.clone(), r.child.id()))
        .collect();
    let counts_before = sim.sim().stats.counts();
    let mut bytes_before = 0.0;
    for r in &replicas {
        if let Some(m) = http.metrics(r).await {
            bytes_before += samples(&m, "ringscale_replication_bytes_sent_total")
                .iter()
                .sum::<f64>();
        }
    }
    let commands_before = source.commands_processed().await;
    println!(
        "every replica holds every value; measuring for {} s",
        args.duration
    );
    let t0 = Instant::now();
    let cpu0: Vec<f64> = pids
        .iter()
        .map(|(_, pid)| proc_sample(*pid, ticks).map_or(0.0, |s| s.cpu_seconds))
        .collect();
    // Sampler: CPU and memory every second.
    let sampler = {
        let pids = pids.clone();
        tokio::spawn(async move {
            let mut series: BTreeMap<String, Vec<Point>> = BTreeMap::new();
            let mut last: Vec<Option<(Instant, f64)>> = vec![None; pids.len()];
            let mut peak = vec![0.0f64; pids.len()];
            while t0.elapsed() < window {
                for (i, (name, pid)) in pids.iter().enumerate() {
                    if let Some(s) = proc_sample(*pid, ticks) {
                        let now = Instant::now();
                        if let Some((at, cpu)) = last[i] {
                            let dt = now.duration_since(at).as_secs_f64().max(1e-3);
                            series.entry(name.clone()).or_default().push(Point {
                                t: now.duration_since(t0).as_secs_f64(),
                                cpu_cores: (s.cpu_seconds - cpu) / dt,
                                rss_mib: s.rss_mib,
                            });
                        }
                        last[i] = Some((now, s.cpu_seconds));
                        peak[i] = peak[i].max(s.peak_rss_mib);
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            (series, peak)
        })
    };
    // Scraper: the poll-schedule lag of every owned object, every polling interval; the noisy
    // neighbours' apart.
    let scraper = {
        let http = http.clone();
        let admins: Vec<u16> = replicas.iter().map(|r| r.admin).collect();
        let noisy_names = noisy_names.clone();
        tokio::spawn(async move {
            let (mut lags, mut noisy_lags) = (Vec::new(), Vec::new());
            while t0.elapsed() < window {
                for port in &admins {
                    if let Ok((200, body)) = http.get(*port, "/metrics").await {
                        for (labels, lag) in labelled_samples(
                            &String::from_utf8_lossy(&body),
                            "keda_internal_scale_loop_latency_seconds",
                        ) {
                            let noisy = label(labels, "resource")
                                .is_some_and(|name| noisy_names.contains(name));
                            if noisy { &mut noisy_lags } else { &mut lags }.push(lag);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(interval.max(5))).await;
            }
            (lags, noisy_lags)
        })
    };
    let metrics_ports: Arc<Vec<u16>> = Arc::new(replicas.iter().map(|r| r.metrics).collect());
    // The HPA: every object's metric asked every 15 s through a random replica.
    let hpa_task = args.hpa_queries.then(|| {
        let (http, ports) = (http.clone(), Arc::clone(&metrics_ports));
        let metrics: Vec<String> = (0..k).map(|o| source.metric(o, 0)).collect();
        tokio::spawn(hpa_queries(http, ports, metrics, t0, window, seed))
    });
    // The source's outage, in the middle of the window.
    let outage_task = (args.source_outage > 0).then(|| {
        let source = Arc::clone(&source);
        let down = Duration::from_secs(args.source_outage);
        let start = t0 + window.saturating_sub(down) / 2;
        tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let from = Instant::now();
            let result = source.outage(down).await;
            (from, Instant::now(), result)
        })
    });
    // During the outage, once past the threshold (3 failures at the polling interval): do the
    // replicas serve the fallback value (target 5 × 2 replicas = 10) for every object asked?
    let fallback_probe = (args.source_outage > 0 && args.fallback).then(|| {
        let (http, ports) = (http.clone(), Arc::clone(&metrics_ports));
        let down = Duration::from_secs(args.source_outage);
        let at = t0
            + window.saturating_sub(down) / 2
            + Duration::from_secs(4 * interval + 8)
                .min(down.saturating_sub(Duration::from_secs(2)));
        let metrics: Vec<String> = (0..k).map(|o| source.metric(o, 0)).collect();
        let mut rng = StdRng::seed_from_u64(seed ^ 0x00fa_11ba);
        let picks: Vec<(usize, u16)> = (0..200.min(k))
            .map(|_| {
                // At least one replica runs (checked before any run).
                (
                    rng.random_range(0..k),
                    ports[rng.random_range(0..ports.len())],
                )
            })
            .collect();
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let mut served = 0usize;
            for (o, port) in &picks {
                if http.value(*port, *o, &metrics[*o]).await == Some(10.0) {
                    served += 1;
                }
            }
            (served, picks.len())
        })
    });
    // Changes and activations (not in an outage run: they need the source).
    let changing = args.source_outage == 0;
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let timeouts = Arc::new(AtomicUsize::new(0));
    let probes = Arc::new(tokio::sync::Semaphore::new(64));
    let mut current: HashMap<(usize, usize), i64> = HashMap::new();
    let in_flight: Arc<Mutex<HashSet<(usize, usize)>>> = Arc::default();
    let mut probe_tasks = Vec::new();
    let mut activation_times: Vec<(usize, Instant)> = Vec::new();
    let pb = bar(args.duration, "measuring");
    let period = Duration::from_secs_f64(1.0 / args.change_rate.max(0.01));
    let activation_every = if activated.is_empty() {
        window
    } else {
        window / 2 / u32::try_from(activated.len()).unwrap_or(u32::MAX)
    };
    let (mut next_change, mut next_activation) = (t0, t0 + activation_every);
    let mut pending_activations = activated.clone();
    let mut changes = 0usize;
    let candidates: Vec<usize> = (0..k)
        .filter(|i| !is_activated[*i] && lanes[*i] == Lane::Measured)
        .collect();
    while t0.elapsed() < window {
        let now = Instant::now();
        if changing && now >= next_change && !candidates.is_empty() {
            next_change += period;
            let o = candidates[rng.random_range(0..candidates.len())];
            let t = rng.random_range(0..t_count);
            // At most 64 probes at once; past that (values not arriving), skip the change.
            let Ok(permit) = Arc::clone(&probes).try_acquire_owned() else {
                continue;
            };
            // One change in flight per trigger: a second would hide the first's value.
            if !lock(&in_flight).insert((o, t)) {
                continue;
            }
            let old = current.get(&(o, t)).copied().unwrap_or(3);
            let mut n = rng.random_range(1..=20);
            if n == old {
                n = if n == 20 { 1 } else { n + 1 };
            }
            current.insert((o, t), n);
            source.set(&[(o, t, n)]).await?;
            let changed = Instant::now();
            changes += 1;
            let (ports, latencies, timeouts, http, in_flight) = (
                Arc::clone(&metrics_ports),
                Arc::clone(&latencies),
                Arc::clone(&timeouts),
                http.clone(),
                Arc::clone(&in_flight),
            );
            let metric = source.metric(o, t);
            let limit = Duration::from_secs(3 * interval + 10);
            probe_tasks.push(tokio::spawn(async move {
                let _permit = permit;
                let mut seen = vec![false; ports.len()];
                while !seen.iter().all(|s| *s) {
                    if changed.elapsed() > limit {
                        timeouts.fetch_add(1, Ordering::Relaxed);
                        lock(&in_flight).remove(&(o, t));
                        return;
                    }
                    for (i, port) in ports.iter().enumerate() {
                        if !seen[i] && http.value(*port, o, &metric).await == Some(n as f64) {
                            seen[i] = true;
                        }
                    }
                    if seen.iter().all(|s| *s) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                lock(&latencies).push(changed.elapsed().as_secs_f64());
                lock(&in_flight).remove(&(o, t));
            }));
        }
        if changing
            && now >= next_activation
            && let Some(o) = pending_activations.pop()
        {
            next_activation += activation_every;
            let items: Vec<(usize, usize, i64)> = (0..t_count).map(|t| (o, t, 3)).collect();
            source.set(&items).await?;
            activation_times.push((o, Instant::now()));
        }
        pb.set_position(t0.elapsed().as_secs());
        pb.set_message(format!(
            "{changes} changes, {} timeouts",
            timeouts.load(Ordering::Relaxed)
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let measured = t0.elapsed().as_secs_f64();
    let commands_after = source.commands_processed().await;
    let cpu1: Vec<f64> = pids
        .iter()
        .map(|(_, pid)| proc_sample(*pid, ticks).map_or(0.0, |s| s.cpu_seconds))
        .collect();
    let counts_after = sim.sim().stats.counts();
    let mut bytes_after = 0.0;
    for r in &replicas {
        if let Some(m) = http.metrics(r).await {
            bytes_after += samples(&m, "ringscale_replication_bytes_sent_total")
                .iter()
                .sum::<f64>();
        }
    }
    pb.finish();
    // Let the last changes and activations land (bounded), then collect.
    let drain = Instant::now() + Duration::from_secs(3 * interval + 12);
    for task in probe_tasks {
        let left = drain.saturating_duration_since(Instant::now());
        let _ = tokio::time::timeout(left, task).await;
    }
    let (series, peak) = sampler.await?;
    let (lags, noisy_lags) = scraper.await?;
    let hpa = match hpa_task {
        Some(task) => Some(task.await?),
        None => None,
    };
    let outage = match outage_task {
        Some(task) => {
            let (from, to, result) = task.await?;
            result?;
            Some((from, to))
        }
        None => None,
    };
    let fallback_served = match fallback_probe {
        Some(task) => Some(task.await?),
        None => None,
    };
    let log = sim.sim().stats.log();
    // API writes while the source was down, and what they wrote.
    let mut outage_breakdown: BTreeMap<String, f64> = BTreeMap::new();
    let outage_writes = outage.map(|(from, to)| {
        let secs = to.duration_since(from).as_secs_f64().max(1e-3);
        let writes: Vec<_> = log
            .iter()
            .filter(|r| r.at >= from && r.at <= to && is_write(&r.verb))
            .collect();
        for r in &writes {
            let what = match &r.subresource {
                Some(sub) => format!("{} {}/{}", r.verb, r.resource, sub),
                None => format!("{} {}", r.verb, r.resource),
            };
            *outage_breakdown.entry(what).or_default() += 1.0 / secs;
        }
        (secs, writes.len() as f64 / secs)
    });
    let mut activation_latency = Vec::new();
    for (o, at) in &activation_times {
        let name = format!("lt-{o}");
        if let Some(r) = log.iter().find(|r| {
            r.at >= *at
                && r.resource == "deployments"
                && is_write(&r.verb)
                && (200..300).contains(&r.code)
                && r.name.as_deref() == Some(name.as_str())
        }) {
            activation_latency.push(r.at.duration_since(*at).as_secs_f64());
        }
    }
    let mut per_verb: BTreeMap<String, f64> = BTreeMap::new();
    // Only the replicas talk to the API server during the window.
    for (key, n) in &counts_after {
        let before = counts_before.get(key).copied().unwrap_or(0);
        *per_verb.entry(key.verb.clone()).or_default() += (n - before) as f64 / measured;
    }
    let writes = per_verb
        .iter()
        .filter(|(v, _)| is_write(v))
        .map(|(_, n)| n)
        .sum();
    let cpu_seconds: Vec<f64> = cpu1.iter().zip(&cpu0).map(|(a, b)| a - b).collect();
    let cpu_cores_per_replica = cpu_seconds.iter().sum::<f64>() / measured / replica_count as f64;
    // Stop: SIGTERM, then kill what is left.
    for r in &replicas {
        let _ = Command::new("kill")
            .args(["-TERM", &r.child.id().to_string()])
            .status();
    }
    let stop_by = Instant::now() + Duration::from_secs(15);
    for r in &mut replicas {
        while matches!(r.child.try_wait(), Ok(None)) && Instant::now() < stop_by {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(replicas);
    source.clean(k, t_count).await;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    let latencies = latencies
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    Ok(RunResult {
        reference_for: None,
        replicas: replica_count,
        objects: k,
        triggers: t_count,
        polling_interval: interval,
        source: args.source.clone(),
        keda_write_pattern: keda,
        replica_flags: flags,
        ready_seconds,
        values_at_start,
        measured_seconds: measured,
        changes,
        activations: activation_times.len(),
        probe_timeouts: timeouts.load(Ordering::Relaxed),
        signal_latency: Dist::of(latencies),
        activation_latency: Dist::of(activation_latency),
        poll_lag: Dist::of(lags),
        cpu_seconds,
        cpu_cores_per_replica,
        peak_rss_mib: peak,
        series,
        api_requests_per_second: per_verb,
        api_writes_per_second: writes,
        replication_bytes_per_second: (bytes_after - bytes_before) / measured,
        hpa_queries: hpa.as_ref().map_or(0, |h| h.asked),
        hpa_query_errors: hpa.as_ref().map_or(0, |h| h.errors),
        hpa_query_latency: hpa.map(|h| Dist::of(h.latencies)),
        source_commands_per_second: commands_before
            .zip(commands_after)
            .map(|(a, b)| b.saturating_sub(a) as f64 / measured),
        outage_seconds: outage_writes.map(|(secs, _)| secs),
        outage_writes_per_second: outage_writes.map(|(_, w)| w),
        outage_writes_by_kind: outage_breakdown,
        fallback_served,
        slow_objects: slow_n,
        failing_objects: failing_n,
        noisy_poll_lag: Dist::of(noisy_lags),
    })
}

/// What the simulated HPA saw.
struct HpaQueries {
    latencies: Vec<f64>,
    asked: usize,
    errors: usize,
}

/// Asks each object's metric every 15 s through a random replica, spread evenly over the 15 s
/// (object i at i/k of the period), for the window; at most 512 requests in flight (a request
/// that finds none free counts as an error).
async fn hpa_queries(
    http: Http,
    ports: Arc<Vec<u16>>,
    metrics: Vec<String>,
    t0: Instant,
    window: Duration,
    seed: u64,
) -> HpaQueries {
    const PERIOD: Duration = Duration::from_secs(15);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x0048_5041);
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let errors = Arc::new(AtomicUsize::new(0));
    let permits = Arc::new(tokio::sync::Semaphore::new(512));
    let mut tasks = tokio::task::JoinSet::new();
    let k = metrics.len().max(1) as u64;
    let mut asked = 0usize;
    for n in 0u64.. {
        let (round, i) = (n / k, n % k);
        let due = t0
            + PERIOD * u32::try_from(round).unwrap_or(u32::MAX)
            + PERIOD.mul_f64(i as f64 / k as f64);
        if due >= t0 + window || ports.is_empty() {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        asked += 1;
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let port = ports[rng.random_range(0..ports.len())];
        let object = usize::try_from(i).unwrap_or(0);
        let metric = metrics.get(object).cloned().unwrap_or_default();
        let (http, latencies, errors) = (http.clone(), Arc::clone(&latencies), Arc::clone(&errors));
        tasks.spawn(async move {
            let _permit = permit;
            let started = Instant::now();
            if http.value(port, object, &metric).await.is_some() {
                lock(&latencies).push(started.elapsed().as_secs_f64());
            } else {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    let latencies = lock(&latencies).clone();
    HpaQueries {
        latencies,
        asked,
        errors: errors.load(Ordering::Relaxed),
    }
}
