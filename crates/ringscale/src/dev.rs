//! `ringscale dev`: the whole system on one machine, no cluster and no services needed. kube-sim
//! runs in-process with the CRDs, N replicas join a ring, the ScaledObjects of `examples/dev`
//! scale simulated workloads on a demo queue (and on a Redis list and a Kafka topic when Redis and
//! a Kafka broker are reachable), and a live table shows who owns what.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, ListParams, PostParams};
use ringscale_api::{ScaledJob, ScaledObject};
use ringscale_kube_sim::{Config, KubeSim};
use ringscale_ring::ObjectId;
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};

use crate::run::{RunArgs, Started, replica};

const DEMO_QUEUE: &str = include_str!("../../../examples/dev/demo-queue.yaml");
const REDIS_EMAILS: &str = include_str!("../../../examples/dev/redis-emails.yaml");
const KAFKA_EVENTS: &str = include_str!("../../../examples/dev/kafka-events.yaml");

/// Arguments of `ringscale dev`.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Replicas in the ring.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
    replicas: u16,
    /// Extra generated ScaledObjects (each on its own demo queue, `load-<i>`).
    #[arg(long, default_value_t = 0)]
    objects: u32,
    /// Where to write the kubeconfig for kubectl.
    #[arg(long, value_name = "FILE", default_value = "ringscale-dev.kubeconfig")]
    kubeconfig: PathBuf,
    /// Port of the demo queue (`curl -X PUT localhost:<port>/queues/orders -d 25`; 0 picks one).
    #[arg(long, default_value_t = 8089)]
    demo_port: u16,
    /// Where the replicas' logs go.
    #[arg(long, value_name = "FILE", default_value = "ringscale-dev.log")]
    log_file: PathBuf,
    /// Print no live table (the instructions only).
    #[arg(long)]
    no_table: bool,
}

/// Runs the embedded default until Ctrl-C.
pub fn run(args: DevArgs) -> ExitCode {
    let log = match std::fs::File::create(&args.log_file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", args.log_file.display());
            return ExitCode::FAILURE;
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RINGSCALE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(Mutex::new(log))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dev(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The demo queue: lengths by name, set with PUT (or POST) and read with GET.
type Queues = Arc<Mutex<BTreeMap<String, i64>>>;

fn demo_queue(queues: Queues) -> axum::Router {
    async fn read(State(q): State<Queues>, Path(name): Path<String>) -> axum::Json<Value> {
        let length = q
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&name)
            .copied()
            .unwrap_or(0);
        axum::Json(json!({"name": name, "length": length}))
    }
    async fn write(
        State(q): State<Queues>,
        Path(name): Path<String>,
        body: String,
    ) -> Result<axum::Json<Value>, (StatusCode, String)> {
        let length: i64 = body.trim().parse().map_err(|_| {
            (
                StatusCode::BAD_REQUEST,
                format!("the body must be a whole number, got {:?}\n", body.trim()),
            )
        })?;
        if length < 0 {
            return Err((
                StatusCode::BAD_REQUEST,
                "the length cannot be negative\n".into(),
            ));
        }
        q.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.clone(), length);
        Ok(axum::Json(json!({"name": name, "length": length})))
    }
    axum::Router::new()
        .route("/queues/{name}", get(read).put(write).post(write))
        .with_state(queues)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Creates one manifest document (Namespace, Deployment, ScaledObject or ScaledJob).
async fn create(client: &kube::Client, doc: Value) -> anyhow::Result<()> {
    let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
    let ns = doc["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_owned();
    let pp = PostParams::default();
    let result = match kind.as_str() {
        "Deployment" => Api::<Deployment>::namespaced(client.clone(), &ns)
            .create(&pp, &serde_json::from_value(doc)?)
            .await
            .map(|_| ()),
        "ScaledObject" => Api::<ScaledObject>::namespaced(client.clone(), &ns)
            .create(&pp, &serde_json::from_value(doc)?)
            .await
            .map(|_| ()),
        "ScaledJob" => Api::<ScaledJob>::namespaced(client.clone(), &ns)
            .create(&pp, &serde_json::from_value(doc)?)
            .await
            .map(|_| ()),
        other => anyhow::bail!("ringscale dev does not create {other} objects"),
    };
    result.with_context(|| format!("creating a {kind}"))
}

fn documents(text: &str) -> anyhow::Result<Vec<Value>> {
    let docs = ringscale_api::manifest::parse(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(docs.into_iter().map(|d| d.value).collect())
}

async fn reachable(addr: &str) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    ringscale_scalers::install_crypto_provider();
    // Handlers first: Ctrl-C at any point after this is a clean stop.
    let mut signal = std::pin::pin!(crate::signals::shutdown());
    let sim = KubeSim::start(Config {
        workload_delay: Duration::from_millis(300),
        hpa_sync_period: Duration::from_secs(2),
        job_duration: Duration::from_secs(10),
        ..Config::default()
    })
    .await
    .context("starting kube-sim")?;
    sim.write_kubeconfig(&args.kubeconfig)
        .with_context(|| format!("writing {}", args.kubeconfig.display()))?;
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

    // The demo queue.
    let queues: Queues = Arc::default();
    let wanted = SocketAddr::from(([127, 0, 0, 1], args.demo_port));
    let listener = tokio::net::TcpListener::bind(wanted)
        .await
        .with_context(|| format!("the demo queue cannot listen on {wanted} (try --demo-port)"))?;
    let demo_addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, demo_queue(queues)).await });

    // The replicas, in this process.
    let dir = std::env::temp_dir().join(format!("ringscale-dev-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ca = dir.join("front-proxy-ca.pem");
    std::fs::write(&ca, sim.front_proxy_ca_pem())?;
    let kubeconfig_path = dir.join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig_path)?;
    let (stop_tx, stop) = watch::channel(false);
    let mut replicas = Vec::new();
    let mut started = Vec::new();
    for i in 0..args.replicas {
        let name = format!("replica-{i}");
        let run_args = RunArgs::parse_from([
            "ringscale".to_owned(),
            "--name".into(),
            name.clone(),
            "--kubeconfig".into(),
            kubeconfig_path.display().to_string(),
            "--replication-listen".into(),
            "127.0.0.1:0".into(),
            "--metrics-api-listen".into(),
            format!("127.0.0.1:{}", free_port()?),
            "--admin-listen".into(),
            format!("127.0.0.1:{}", free_port()?),
            "--requestheader-client-ca-file".into(),
            ca.display().to_string(),
            "--requestheader-allowed-names".into(),
            "front-proxy-client".into(),
            "--lease-duration".into(),
            "6".into(),
            "--renew-deadline".into(),
            "4".into(),
            "--retry-period".into(),
            "1".into(),
        ])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let (tx, rx) = oneshot::channel();
        let mut stop = stop.clone();
        let task = tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            replica(run_args, stopped, Some(tx)).await
        });
        match rx.await {
            Ok(s) => started.push(s),
            // It stopped before starting: say why.
            Err(_) => {
                let why = match task.await {
                    Ok(Err(e)) => format!("{e:#}"),
                    Ok(Ok(())) => "it stopped".to_owned(),
                    Err(e) => e.to_string(),
                };
                anyhow::bail!("{name} did not start: {why}");
            }
        }
        replicas.push(task);
    }
    sim.sim().backends.set(
        "v1beta1.external.metrics.k8s.io",
        started
            .iter()
            .map(|s| format!("https://{}", s.metrics_api))
            .collect(),
    );
    let apiservice: APIService = serde_json::from_value(json!({
        "metadata": {"name": "v1beta1.external.metrics.k8s.io"},
        "spec": {"group": "external.metrics.k8s.io", "version": "v1beta1", "insecureSkipTLSVerify": true,
                 "groupPriorityMinimum": 100, "versionPriority": 100,
                 "service": {"name": "ringscale-metrics", "namespace": "ringscale"}}
    }))?;
    Api::<APIService>::all(client.clone())
        .create(&PostParams::default(), &apiservice)
        .await?;

    // The example objects.
    let demo = DEMO_QUEUE.replace("127.0.0.1:8089", &demo_addr.to_string());
    for doc in documents(&demo)? {
        create(&client, doc).await?;
    }
    let redis_addr = std::env::var("REDIS_ADDR").unwrap_or_else(|_| "127.0.0.1:6379".into());
    let with_redis = reachable(&redis_addr).await;
    if with_redis {
        for doc in documents(&REDIS_EMAILS.replace("127.0.0.1:6379", &redis_addr))? {
            create(&client, doc).await?;
        }
    }
    let kafka_addr = std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let with_kafka = reachable(&kafka_addr).await;
    if with_kafka {
        for doc in documents(&KAFKA_EVENTS.replace("127.0.0.1:9092", &kafka_addr))? {
            create(&client, doc).await?;
        }
    }
    for i in 0..args.objects {
        let name = format!("load-{i}");
        create(
            &client,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}},
                                      "spec": {"containers": [{"name": "w", "image": "example/load:1"}]}}}}),
        )
        .await?;
        create(
            &client,
            json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"scaleTargetRef": {"name": name}, "pollingInterval": 5, "cooldownPeriod": 30,
                         "triggers": [{"type": "metrics-api", "metadata": {
                            "url": format!("http://{demo_addr}/queues/{name}"),
                            "valueLocation": "length", "targetValue": "5"}}]}}),
        )
        .await?;
    }

    let kubeconfig_abs = args
        .kubeconfig
        .canonicalize()
        .unwrap_or_else(|_| args.kubeconfig.clone());
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "ringscale dev: kube-sim at {} with {} replicas",
        sim.url(),
        args.replicas
    );
    let _ = writeln!(out, "export KUBECONFIG={}", kubeconfig_abs.display());
    let _ = writeln!(
        out,
        "  kubectl get scaledobjects,scaledjobs,hpa,deployments -A"
    );
    let _ = writeln!(
        out,
        "  kubectl get --raw '/apis/external.metrics.k8s.io/v1beta1/namespaces/default/s0-metric-api-length?labelSelector=scaledobject.keda.sh%2Fname%3Dorders'"
    );
    let _ = writeln!(
        out,
        "demo queue: curl -X PUT {demo_addr}/queues/orders -d 25   (also payments, reports)"
    );
    if with_redis {
        let _ = writeln!(
            out,
            "redis list: redis-cli -h {} RPUSH ringscale-dev-emails a b c d e f",
            redis_addr.split(':').next().unwrap_or("127.0.0.1")
        );
    } else {
        let _ = writeln!(
            out,
            "redis: not reachable at {redis_addr}; the emails example is left out"
        );
    }
    if with_kafka {
        let _ = writeln!(
            out,
            "kafka topic: kcat -b {kafka_addr} -t ringscale-dev-events -P   (each line a record; group ringscale-dev)"
        );
    } else {
        let _ = writeln!(
            out,
            "kafka: no broker at {kafka_addr} (KAFKA_BOOTSTRAP); the events example is left out"
        );
    }
    for (i, s) in started.iter().enumerate() {
        let _ = writeln!(
            out,
            "replica-{i}: status page http://{}/status, metrics http://{}/metrics",
            s.admin, s.admin
        );
    }
    let _ = writeln!(
        out,
        "logs: {}; Ctrl-C stops everything",
        args.log_file.display()
    );
    let _ = out.flush();

    let table = !args.no_table;
    let terminal = out.is_terminal();
    let mut tick = tokio::time::interval(if terminal {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    });
    tick.tick().await;
    loop {
        tokio::select! {
            () = &mut signal => break,
            _ = tick.tick() => {
                if table {
                    let text = render(&client, &started).await;
                    let mut out = std::io::stdout();
                    if terminal {
                        // Redraw below the instructions: clear from a saved position.
                        let _ = write!(out, "\x1b[J{text}\x1b[{}A", text.lines().count());
                    } else {
                        let _ = write!(out, "{text}");
                    }
                    let _ = out.flush();
                }
            }
        }
    }
    if terminal && table {
        let _ = writeln!(std::io::stdout(), "\x1b[J");
    }
    let _ = writeln!(std::io::stdout(), "stopping");
    let _ = stop_tx.send(true);
    for r in replicas {
        let _ = tokio::time::timeout(Duration::from_secs(15), r).await;
    }
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The live table: each ScaledObject's owner, values, and desired/actual replicas.
async fn render(client: &kube::Client, started: &[Started]) -> String {
    let Some(first) = started.first() else {
        return String::new();
    };
    let sos = Api::<ScaledObject>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let deployments: BTreeMap<(String, String), Deployment> =
        Api::<Deployment>::all(client.clone())
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .map(|d| {
                (
                    (
                        d.metadata.namespace.clone().unwrap_or_default(),
                        d.metadata.name.clone().unwrap_or_default(),
                    ),
                    d,
                )
            })
            .collect();
    let ring = first.ownership.borrow().clone();
    let mut text = format!(
        "\nring generation {} · {} members\n{:<28} {:<11} {:>10} {:>8} {:>7}\n",
        ring.generation(),
        ring.ring.members().len(),
        "SCALEDOBJECT",
        "OWNER",
        "VALUE",
        "DESIRED",
        "ACTUAL"
    );
    for so in &sos {
        let ns = so.metadata.namespace.clone().unwrap_or_default();
        let name = so.metadata.name.clone().unwrap_or_default();
        let id = ObjectId::scaled_object(ns.as_str(), name.as_str());
        let owner = ring
            .owner(&id.ring_key())
            .map_or("-".to_owned(), |m| m.name.clone());
        let values: Vec<String> = first
            .store
            .object(&id)
            .iter()
            .map(|(_, r)| match &r.error {
                Some(_) => "error".to_owned(),
                None => format!("{}", r.value),
            })
            .collect();
        let value = if values.is_empty() {
            "-".to_owned()
        } else {
            values.join(",")
        };
        let target = &so.spec.scale_target_ref.name;
        let (desired, actual) = deployments.get(&(ns.clone(), target.clone())).map_or(
            ("-".to_owned(), "-".to_owned()),
            |d| {
                (
                    d.spec
                        .as_ref()
                        .and_then(|s| s.replicas)
                        .unwrap_or(0)
                        .to_string(),
                    d.status
                        .as_ref()
                        .and_then(|s| s.ready_replicas)
                        .unwrap_or(0)
                        .to_string(),
                )
            },
        );
        text.push_str(&format!(
            "{:<28} {:<11} {:>10} {:>8} {:>7}\n",
            format!("{ns}/{name}"),
            owner,
            value,
            desired,
            actual
        ));
    }
    let jobs = Api::<Job>::all(client.clone())
        .list(&ListParams::default().labels(ringscale_api::names::LABEL_SCALED_JOB_NAME))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let running = jobs
        .iter()
        .filter(|j| j.status.as_ref().and_then(|s| s.active).unwrap_or(0) > 0)
        .count();
    text.push_str(&format!(
        "ScaledJob Jobs: {} running, {} in total\n",
        running,
        jobs.len()
    ));
    text
}
