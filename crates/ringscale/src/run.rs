//! `ringscale run`: one replica. It joins the ring (member Lease, coordinator election), runs the
//! operator for the objects it owns, replicates every value to its peers, and serves the
//! external metrics API and an admin port (`/healthz`, `/readyz`, `/metrics`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use ringscale_coordinator::{Coordinator, Ownership};
use ringscale_metrics_api::serve::{Certificate, server_config};
use ringscale_metrics_api::{Auth, Resolver};
use ringscale_operator::{Controller, Settings};
use ringscale_replication::{Limits, PeerTls, Peers, ReplicationService, Store};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// Arguments of `ringscale run`; every flag can also be set from the environment.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// This replica's member name (its pod name in a StatefulSet).
    #[arg(long, env = "RINGSCALE_NAME")]
    name: String,
    /// Namespace of the ring's Leases and ConfigMap.
    #[arg(long, env = "RINGSCALE_NAMESPACE", default_value = "ringscale")]
    namespace: String,
    /// Name of the ring (one namespace may hold several).
    #[arg(long, env = "RINGSCALE_RING", default_value = "ringscale")]
    ring: String,
    /// Kubeconfig to use (default: in-cluster, then $KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "RINGSCALE_KUBECONFIG", value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Where the replication gRPC server listens.
    #[arg(
        long,
        env = "RINGSCALE_REPLICATION_LISTEN",
        default_value = "0.0.0.0:9666"
    )]
    replication_listen: SocketAddr,
    /// The replication address peers reach this replica at (default: the listen address, or
    /// $POD_IP with its port).
    #[arg(long, env = "RINGSCALE_PEER_ADDRESS")]
    peer_address: Option<String>,
    /// Where the external metrics API listens.
    #[arg(
        long,
        env = "RINGSCALE_METRICS_API_LISTEN",
        default_value = "0.0.0.0:6443"
    )]
    metrics_api_listen: SocketAddr,
    /// Where /healthz, /readyz and /metrics listen.
    #[arg(long, env = "RINGSCALE_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    admin_listen: SocketAddr,
    /// Serving certificate of the metrics API (PEM); without it a self-signed one is made.
    #[arg(
        long,
        env = "RINGSCALE_TLS_CERT_FILE",
        requires = "tls_private_key_file"
    )]
    tls_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(
        long,
        env = "RINGSCALE_TLS_PRIVATE_KEY_FILE",
        requires = "tls_cert_file"
    )]
    tls_private_key_file: Option<PathBuf>,
    /// CA of the API server's front proxy (request-header authentication); default: read from
    /// the ConfigMap kube-system/extension-apiserver-authentication, as aggregated API servers do.
    #[arg(long, env = "RINGSCALE_REQUESTHEADER_CLIENT_CA_FILE")]
    requestheader_client_ca_file: Option<PathBuf>,
    /// Allowed common names of the front proxy's certificate (comma-separated; any if empty).
    #[arg(
        long,
        env = "RINGSCALE_REQUESTHEADER_ALLOWED_NAMES",
        value_delimiter = ','
    )]
    requestheader_allowed_names: Vec<String>,
    /// Serve the metrics API over plain HTTP without authentication (local use only).
    #[arg(long, env = "RINGSCALE_INSECURE_METRICS_API")]
    insecure_metrics_api: bool,
    /// Mutual TLS between replicas: CA, certificate and key (PEM), all three or none.
    #[arg(long, env = "RINGSCALE_PEER_CA_FILE", requires_all = ["peer_cert_file", "peer_key_file"])]
    peer_ca_file: Option<PathBuf>,
    /// See `--peer-ca-file`.
    #[arg(long, env = "RINGSCALE_PEER_CERT_FILE", requires = "peer_ca_file")]
    peer_cert_file: Option<PathBuf>,
    /// See `--peer-ca-file`.
    #[arg(long, env = "RINGSCALE_PEER_KEY_FILE", requires = "peer_ca_file")]
    peer_key_file: Option<PathBuf>,
    /// Name to verify in peers' certificates instead of the host of their address (useful when
    /// peers advertise pod IPs and share a certificate for, say, `ringscale-peers.NS.svc`).
    #[arg(long, env = "RINGSCALE_PEER_SERVER_NAME", requires = "peer_ca_file")]
    peer_server_name: Option<String>,
    /// Seconds a Lease lasts without renewal.
    #[arg(
        long,
        env = "RINGSCALE_LEASE_DURATION",
        default_value = "15.0",
        value_parser = crate::flags::seconds
    )]
    lease_duration: Duration,
    /// Seconds a holder may go without renewing before it stops acting.
    #[arg(
        long,
        env = "RINGSCALE_RENEW_DEADLINE",
        default_value = "10.0",
        value_parser = crate::flags::seconds
    )]
    renew_deadline: Duration,
    /// Seconds between renewals.
    #[arg(
        long,
        env = "RINGSCALE_RETRY_PERIOD",
        default_value = "2.0",
        value_parser = crate::flags::seconds
    )]
    retry_period: Duration,
    /// Seconds the ring keeps a stopped replica's objects for it (its Lease marked leaving), so
    /// that a replica restarting under the same name (a StatefulSet pod) takes them back without
    /// moving them away and back; they go unpolled meanwhile. 0 moves them at once.
    #[arg(
        long,
        env = "RINGSCALE_LEAVE_GRACE",
        default_value = "10.0",
        value_parser = crate::flags::seconds
    )]
    leave_grace: Duration,
    /// Namespace ClusterTriggerAuthentications read Secrets from (KEDA's
    /// KEDA_CLUSTER_OBJECT_NAMESPACE; default: the ring's namespace, as KEDA defaults to its own).
    #[arg(long, env = "KEDA_CLUSTER_OBJECT_NAMESPACE")]
    cluster_object_namespace: Option<String>,
    /// Sustained Kubernetes API requests per second of this replica (0: unlimited).
    #[arg(
        long,
        env = "RINGSCALE_KUBE_API_QPS",
        default_value = "50.0",
        value_parser = crate::flags::rate
    )]
    kube_api_qps: f64,
    /// Kubernetes API requests allowed at once above the sustained rate.
    #[arg(long, env = "RINGSCALE_KUBE_API_BURST", default_value_t = 100)]
    kube_api_burst: u32,
    /// Seconds between the instants polls start on: polls due within one step start together,
    /// which saves wake-ups; a poll starts at most this late. 0 starts each exactly when due.
    #[arg(
        long,
        env = "RINGSCALE_POLL_GRAIN",
        default_value = "0.02",
        value_parser = crate::flags::seconds
    )]
    poll_grain: Duration,
    /// Writes per second that only report failures (a status whose health or Fallback
    /// condition alone changed, or that a failing poll changed without scaling;
    /// `KEDAScalerFailed` events); more wait for a later poll or are dropped, so a shared source
    /// failing behind thousands of objects does not flood the API server.
    #[arg(
        long,
        env = "RINGSCALE_REPORT_WRITES_PER_SECOND",
        default_value = "10",
        value_parser = crate::flags::rate
    )]
    report_writes_per_second: f64,
    /// Write the status on every active poll, as KEDA does (for load-test comparisons only).
    #[arg(long, hide = true)]
    keda_write_pattern: bool,
    /// Seconds in-flight requests get to finish on shutdown.
    #[arg(
        long,
        env = "RINGSCALE_DRAIN_TIMEOUT",
        default_value = "10.0",
        value_parser = crate::flags::seconds
    )]
    drain_timeout: Duration,
    /// Log format.
    #[arg(long, env = "RINGSCALE_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
    /// Log filter (tracing's EnvFilter syntax).
    #[arg(long, env = "RINGSCALE_LOG", default_value = "info")]
    log: String,
}

/// How the API server's front proxy authenticates to aggregated API servers, as it publishes it.
#[derive(Debug)]
struct FrontProxy {
    ca_pem: String,
    allowed_names: Vec<String>,
}

/// Reads `kube-system/extension-apiserver-authentication`, where the API server publishes its
/// front proxy's CA and allowed names (every aggregated API server reads it; the chart grants
/// this through the `extension-apiserver-authentication-reader` Role).
async fn front_proxy_from_cluster(client: &kube::Client) -> anyhow::Result<FrontProxy> {
    const NAME: &str = "extension-apiserver-authentication";
    let help = "pass --requestheader-client-ca-file, or --insecure-metrics-api for local use";
    let cm = kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(
        client.clone(),
        "kube-system",
    )
    .get(NAME)
    .await
    .with_context(|| format!("reading kube-system/{NAME} (the front proxy's CA; {help})"))?;
    let data = cm.data.unwrap_or_default();
    let ca_pem = data
        .get("requestheader-client-ca-file")
        .filter(|pem| !pem.trim().is_empty())
        .cloned()
        .with_context(|| {
            format!("kube-system/{NAME} has no requestheader-client-ca-file: the API server runs without a front proxy ({help})")
        })?;
    let list = |key: &str| -> anyhow::Result<Vec<String>> {
        match data.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            None => Ok(Vec::new()),
            Some(v) => serde_json::from_str(v).with_context(|| {
                format!("kube-system/{NAME}: {key} is not a JSON list of strings")
            }),
        }
    };
    let allowed_names = list("requestheader-allowed-names")?;
    for (key, supported) in [
        ("requestheader-username-headers", "X-Remote-User"),
        ("requestheader-group-headers", "X-Remote-Group"),
    ] {
        let headers = list(key)?;
        if !headers.is_empty() && !headers.iter().any(|h| h.eq_ignore_ascii_case(supported)) {
            warn!(
                key,
                ?headers,
                supported,
                "the front proxy's header names differ from the ones this replica reads"
            );
        }
    }
    info!(allowed_names = ?allowed_names, "front-proxy CA read from kube-system/{NAME}");
    Ok(FrontProxy {
        ca_pem,
        allowed_names,
    })
}

/// Runs a replica until SIGTERM/Ctrl-C (exit 0) or until a critical part fails (exit 1).
pub fn run(args: RunArgs) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if args.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            error!(error = %err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    // The signal handlers need the runtime: install them inside it.
    match runtime.block_on(async { replica(args, crate::signals::shutdown(), None).await }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(error = format!("{err:#}"), "replica stopped");
            ExitCode::FAILURE
        }
    }
}

async fn client(
    kubeconfig: Option<&PathBuf>,
    requests: prometheus_client::metrics::family::Family<
        crate::api_requests::Verb,
        prometheus_client::metrics::counter::Counter,
    >,
    limits: crate::client_limits::Limits,
) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("finding a kubeconfig")?,
    };
    crate::api_requests::client(config, requests, limits).context("building the Kubernetes client")
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for {what}"))
}

/// What a started replica tells its caller (`ringscale dev` runs several in one process).
#[derive(Debug)]
pub(crate) struct Started {
    /// The ring as this replica sees it.
    pub ownership: watch::Receiver<Ownership>,
    /// Where its metrics API listens.
    pub metrics_api: SocketAddr,
    /// Where its admin endpoints listen.
    pub admin: SocketAddr,
    /// Its replicated records (every replica holds every value).
    pub store: Arc<Store>,
}

impl RunArgs {
    /// Arguments as if given on the command line (and the environment).
    pub(crate) fn parse_from<I, T>(args: I) -> Result<RunArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: RunArgs,
        }
        <Wrapper as clap::Parser>::try_parse_from(args).map(|w| w.args)
    }
}

/// Runs one replica until `signal` resolves (exit cleanly) or a critical part fails (error).
pub(crate) async fn replica(
    args: RunArgs,
    signal: impl std::future::Future<Output = ()>,
    started: Option<tokio::sync::oneshot::Sender<Started>>,
) -> anyhow::Result<()> {
    ringscale_scalers::install_crypto_provider();
    let (lease_duration, renew_deadline, retry_period, leave_grace, poll_grain) = (
        args.lease_duration,
        args.renew_deadline,
        args.retry_period,
        args.leave_grace,
        args.poll_grain,
    );
    if poll_grain > Duration::from_secs(1) {
        anyhow::bail!(
            "--poll-grain must be at most 1 second (it delays every poll by up to that much)"
        );
    }
    let drain = args.drain_timeout;
    let api_requests = prometheus_client::metrics::family::Family::default();
    if args.kube_api_burst == 0 {
        anyhow::bail!("--kube-api-burst must be at least 1");
    }
    let limits = crate::client_limits::Limits {
        qps: args.kube_api_qps,
        burst: args.kube_api_burst,
        max_retry_after: Duration::from_secs(10),
        max_in_flight: crate::client_limits::MAX_IN_FLIGHT,
    };
    let client = client(args.kubeconfig.as_ref(), api_requests.clone(), limits).await?;

    // Listen first: a port in use is an error before joining the ring.
    let replication = bind(args.replication_listen, "replication").await?;
    let metrics_api = bind(args.metrics_api_listen, "the metrics API").await?;
    let admin = bind(args.admin_listen, "the admin endpoints").await?;
    let (metrics_api_addr, admin_addr) = (metrics_api.local_addr()?, admin.local_addr()?);
    let peer_address = match &args.peer_address {
        Some(a) => a.clone(),
        None => {
            let local = replication.local_addr()?;
            match std::env::var("POD_IP") {
                Ok(ip) if !ip.is_empty() => format!("{ip}:{}", local.port()),
                _ => local.to_string(),
            }
        }
    };
    let peer_tls = match (
        &args.peer_ca_file,
        &args.peer_cert_file,
        &args.peer_key_file,
    ) {
        (Some(ca), Some(cert), Some(key)) => {
            let mut tls =
                PeerTls::from_files(ca, cert, key).context("reading the peer TLS files")?;
            tls.server_name.clone_from(&args.peer_server_name);
            Some(tls)
        }
        _ => None,
    };
    let mut allowed = Vec::new();
    let metrics_tls = if args.insecure_metrics_api {
        warn!(
            "the metrics API is served over plain HTTP without authentication (--insecure-metrics-api)"
        );
        None
    } else {
        let certificate = match (&args.tls_cert_file, &args.tls_private_key_file) {
            (Some(cert), Some(key)) => Certificate::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => Certificate::SelfSigned(vec![
                "localhost".into(),
                "127.0.0.1".into(),
                args.name.clone(),
            ]),
        };
        let (ca, allowed_names) = match &args.requestheader_client_ca_file {
            Some(path) => (
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
                args.requestheader_allowed_names.clone(),
            ),
            None => {
                let published = front_proxy_from_cluster(&client).await?;
                let names = if args.requestheader_allowed_names.is_empty() {
                    published.allowed_names
                } else {
                    args.requestheader_allowed_names.clone()
                };
                (published.ca_pem.into_bytes(), names)
            }
        };
        allowed = allowed_names;
        Some(Arc::new(
            server_config(&certificate, Some(&ca)).context("metrics API TLS")?,
        ))
    };
    let auth = if args.insecure_metrics_api {
        Auth::Insecure
    } else {
        Auth::RequestHeader {
            allowed_names: allowed,
        }
    };

    // The ring.
    let mut config =
        ringscale_coordinator::Config::new(&args.ring, &args.namespace, &args.name, &peer_address);
    config.lease_duration = lease_duration;
    config.renew_deadline = renew_deadline;
    config.retry_period = retry_period;
    config.leave_grace = leave_grace;
    let coordinator = Coordinator::start(client.clone(), config).map_err(anyhow::Error::msg)?;
    let ownership = coordinator.ownership();
    let limits = Limits::default();
    let store = Store::new(&args.name);
    // Replication lag: the age of each peer's news (a new value, activity or error) when it is
    // merged here (it includes the time the owner's source read took). Re-polls that read the
    // same wait up to the confirmation interval on purpose and are not counted.
    let replication_lag = prometheus_client::metrics::histogram::Histogram::new(
        prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 14),
    );
    {
        let (lag, me) = (replication_lag.clone(), args.name.clone());
        store.set_observer(Box::new(move |_, record, news| {
            if news && *record.origin != *me {
                let age = ringscale_replication::now().saturating_duration_since(record.polled_at);
                lag.observe(age.as_secs_f64());
            }
        }));
    }
    let peers = Peers::new(Arc::clone(&store), limits.clone(), peer_tls.clone());
    let (stop_tx, stop) = watch::channel(false);
    let stopped = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let follow = {
        let (mut ownership, store, peers) =
            (ownership.clone(), Arc::clone(&store), Arc::clone(&peers));
        tokio::spawn(async move {
            loop {
                let (generation, members) = {
                    let o = ownership.borrow_and_update();
                    (o.generation(), o.ring.members().to_vec())
                };
                store.set_generation(generation);
                peers.set_members(&members);
                if ownership.changed().await.is_err() {
                    return;
                }
            }
        })
    };

    // The operator, the replication server and the metrics API.
    let controller = Controller::start(
        client.clone(),
        ownership.clone(),
        Arc::clone(&store),
        ringscale_scalers::Sources::new(ringscale_scalers::SourcesConfig {
            pods: Some(ringscale_scalers::PodLister(Arc::new(
                ringscale_operator::pods::KubePods::new(client.clone()),
            ))),
            ..ringscale_scalers::SourcesConfig::default()
        }),
        Settings {
            cluster_object_namespace: args
                .cluster_object_namespace
                .clone()
                .unwrap_or_else(|| args.namespace.clone()),
            keda_write_pattern: args.keda_write_pattern,
            report_writes_per_second: args.report_writes_per_second,
            poll_grain,
            ..Settings::default()
        },
        stopped(stop.clone()),
    );
    let service =
        ReplicationService::new(Arc::clone(&store), Some(controller.live_query()), limits);
    // This replica's own live reads go through the service's coalescing reader.
    let live: Arc<dyn ringscale_replication::LiveQuery> = match service.live() {
        Some(coalesced) => Arc::new(coalesced),
        None => controller.live_query(),
    };
    let replication_server = {
        let (stop, tls) = (stop.clone(), peer_tls.clone());
        tokio::spawn(async move {
            ringscale_replication::serve(service, replication, tls.as_ref(), stopped(stop)).await
        })
    };
    let resolver = Arc::new(Resolver {
        records: Arc::clone(&store),
        ownership: ownership.clone(),
        objects: controller.object_view(),
        live,
        peers: Arc::clone(&peers),
        counts: Default::default(),
    });
    let metrics_server = tokio::spawn(ringscale_metrics_api::serve(
        metrics_api,
        metrics_tls,
        ringscale_metrics_api::router(Arc::clone(&resolver), auth),
        stopped(stop.clone()),
        drain,
    ));

    // Admin: health, readiness, Prometheus.
    let mut registry = Registry::default();
    controller.metrics.register(&mut registry);
    controller.health.register(&mut registry);
    controller.stats.register(&mut registry);
    registry.register(
        "ringscale_replication_lag_seconds",
        "Age of a peer's record when it was merged here (poll start to arrival)",
        replication_lag,
    );
    registry.register(
        "ringscale_kube_api_requests",
        "Requests this replica made to the Kubernetes API, by verb",
        api_requests,
    );
    registry.register_collector(Box::new(RingCollector {
        ownership: ownership.clone(),
        peers: Arc::clone(&peers),
        store: Arc::clone(&store),
        resolver: Arc::clone(&resolver),
    }));
    let admin_state = Arc::new(AdminState {
        registry,
        health: Arc::clone(&controller.health),
        ownership: ownership.clone(),
        peers: Arc::clone(&peers),
        page: crate::status_page::Sources {
            ownership: ownership.clone(),
            store: Arc::clone(&store),
            scaled_objects: controller.scaled_objects().clone(),
            cluster: controller.cluster().clone(),
        },
    });
    let admin_app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .route("/status", get(status_page))
        .route("/records", get(records))
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/status") }),
        )
        .with_state(admin_state);
    let admin_server = {
        let stop = stop.clone();
        tokio::spawn(async move {
            axum::serve(admin, admin_app)
                .with_graceful_shutdown(stopped(stop))
                .await
        })
    };

    if let Some(started) = started {
        let _ = started.send(Started {
            ownership: ownership.clone(),
            metrics_api: metrics_api_addr,
            admin: admin_addr,
            store: Arc::clone(&store),
        });
    }
    info!(
        member = %args.name,
        peer_address,
        metrics_api = %metrics_api_addr,
        admin = %admin_addr,
        "replica started"
    );
    let critical = async {
        tokio::select! {
            r = replication_server => format!("the replication server stopped: {r:?}"),
            r = metrics_server => format!("the metrics API stopped: {r:?}"),
            r = admin_server => format!("the admin server stopped: {r:?}"),
            r = follow => format!("the ring follower stopped: {r:?}"),
        }
    };
    let failure = tokio::select! {
        () = signal => None,
        why = critical => Some(why),
    };
    info!("shutting down: leaving the ring, ending streams, finishing requests");
    let _ = stop_tx.send(true);
    // Leave the ring first: with a leave grace the ring keeps this replica's objects for a
    // restart under the same name; without one, peers take them over at once.
    coordinator.shutdown().await;
    let _ = tokio::time::timeout(drain, controller.join()).await;
    match failure {
        None => Ok(()),
        Some(why) => Err(anyhow::anyhow!(why)),
    }
}

struct AdminState {
    registry: Registry,
    health: Arc<ringscale_operator::health::CycleHealth>,
    ownership: watch::Receiver<Ownership>,
    peers: Arc<Peers>,
    page: crate::status_page::Sources,
}

/// Every replicated record this replica holds, as JSON (for debugging and the chaos tests).
async fn records(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let now = ringscale_replication::now();
    let list: Vec<serde_json::Value> = state.page.store.with_cache(|cache| {
        cache
            .iter()
            .map(|(key, r)| {
                serde_json::json!({
                    "kind": key.object.kind.as_str(),
                    "namespace": key.object.namespace,
                    "name": key.object.name,
                    "metric": key.metric_name,
                    "value": r.value,
                    "active": r.active,
                    "error": r.error.as_deref(),
                    "generation": r.version.generation,
                    "seq": r.version.seq,
                    "origin": &*r.origin,
                    "ageMs": u64::try_from(r.age(now).as_millis()).unwrap_or(u64::MAX),
                })
            })
            .collect()
    });
    axum::Json(list)
}

async fn status_page(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    axum::response::Html(crate::status_page::render(&state.page))
}

/// Ready once this replica holds its member Lease, is in a published ring, has the first full
/// snapshot from every live peer and its operator caches, and while its poll cycles are not all
/// failing (an API server refusing its writes); it turns ready again by itself.
async fn readyz(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let (active, in_ring) = {
        let o = state.ownership.borrow();
        (
            o.active,
            o.ring.members().iter().any(|m| *m.name == *o.member),
        )
    };
    let synced = state.peers.all_synced();
    let acting = state.health.not_ready();
    if active && in_ring && synced && acting.is_none() {
        (StatusCode::OK, "ok".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: member lease held {active}, in the ring {in_ring}, peers synced {synced}{}",
                acting.map_or(String::new(), |why| format!(", {why}"))
            ),
        )
    }
}

async fn prometheus(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            e.to_string(),
        ),
    }
}

/// `ringscale_*` values read at scrape time.
#[derive(Debug)]
struct RingCollector {
    ownership: watch::Receiver<Ownership>,
    peers: Arc<Peers>,
    store: Arc<Store>,
    resolver: Arc<Resolver>,
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(metric)
}

impl Collector for RingCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (generation, members) = {
            let o = self.ownership.borrow();
            (o.generation(), o.ring.members().len())
        };
        gauge(
            &mut encoder,
            "ringscale_ring_generation",
            "Generation of the ring this replica follows",
            i64::try_from(generation).unwrap_or(i64::MAX),
        )?;
        gauge(
            &mut encoder,
            "ringscale_ring_members",
            "Members of the ring",
            i64::try_from(members).unwrap_or(i64::MAX),
        )?;
        let synced = self.peers.status().iter().filter(|p| p.synced).count();
        gauge(
            &mut encoder,
            "ringscale_peers_synced",
            "Peers whose first snapshot arrived",
            i64::try_from(synced).unwrap_or(i64::MAX),
        )?;
        gauge(
            &mut encoder,
            "ringscale_cache_records",
            "Metric records held",
            i64::try_from(self.store.len()).unwrap_or(i64::MAX),
        )?;
        let stats = &self.store.stats;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        for (name, help, value) in [
            (
                "ringscale_replication_records_sent",
                "Records sent to peers",
                load(&stats.records_sent),
            ),
            (
                "ringscale_replication_bytes_sent",
                "Bytes sent to peers",
                load(&stats.bytes_sent),
            ),
            (
                "ringscale_replication_records_received",
                "Records received from peers",
                load(&stats.records_received),
            ),
            (
                "ringscale_replication_records_rejected",
                "Malformed records refused",
                load(&stats.records_rejected),
            ),
            (
                "ringscale_forwarded_queries_served",
                "Forwarded queries answered as the owner",
                load(&stats.queries_served),
            ),
        ] {
            let c = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, c.metric_type())?;
            c.encode(metric)?;
        }
        let counts = &self.resolver.counts;
        let c = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "ringscale_metrics_api_requests",
            "External metrics requests by where the value came from",
            None,
            c.metric_type(),
        )?;
        for (source, value) in [
            ("cache", load(&counts.cache)),
            ("live", load(&counts.live)),
            ("forwarded", load(&counts.forwarded)),
            ("fallback", load(&counts.fallback)),
            ("replicated", load(&counts.replicated)),
            ("error", load(&counts.errors)),
        ] {
            let labels = [("source", source)];
            let metric = family.encode_family(&labels)?;
            ConstCounter::new(value).encode(metric)?;
        }
        Ok(())
    }
}
