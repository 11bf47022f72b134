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
use prometheus_client::registry::Registry;
use ringscale_coordinator::{Coordinator, Ownership};
use ringscale_metrics_api::serve::{Certificate, server_config};
use ringscale_metrics_api::{Auth, Resolver};
use ringscale_operator::{Controller, Settings};
use ringscale_replication::{Limits, PeerTls, Peers, ReplicationService, Store};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// Arguments of `ringscale run`, one group per subsystem; every flag can also be set from the
/// environment. `replica` destructures each group where its subsystem is built, so a flag no
/// subsystem reads does not compile.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    ring: RingArgs,
    #[command(flatten)]
    leases: LeaseArgs,
    #[command(flatten)]
    listen: ListenArgs,
    #[command(flatten)]
    metrics_api: MetricsApiArgs,
    #[command(flatten)]
    peer_tls: PeerTlsArgs,
    #[command(flatten)]
    kube: KubeArgs,
    #[command(flatten)]
    operator: OperatorArgs,
    #[command(flatten)]
    process: ProcessArgs,
}

/// This replica and the ring it joins.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Ring")]
struct RingArgs {
    /// This replica's member name (its pod name in a StatefulSet).
    #[arg(long, env = "RINGSCALE_NAME")]
    name: String,
    /// Namespace of the ring's Leases and ConfigMap.
    #[arg(long, env = "RINGSCALE_NAMESPACE", default_value = "ringscale")]
    namespace: String,
    /// Name of the ring (one namespace may hold several).
    #[arg(long, env = "RINGSCALE_RING", default_value = "ringscale")]
    ring: String,
}

/// How long membership lasts.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Leases")]
struct LeaseArgs {
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
}

/// Where the replica listens and how peers reach it.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Listening")]
struct ListenArgs {
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
}

/// How the external metrics API is secured.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Metrics API")]
struct MetricsApiArgs {
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
}

/// Mutual TLS between replicas.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Peer TLS")]
struct PeerTlsArgs {
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
}

/// How the replica talks to the Kubernetes API.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Kubernetes API")]
struct KubeArgs {
    /// Kubeconfig to use (default: in-cluster, then $KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "RINGSCALE_KUBECONFIG", value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
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
}

/// How the operator polls and writes.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Operator")]
struct OperatorArgs {
    /// Namespace ClusterTriggerAuthentications read Secrets from (KEDA's
    /// KEDA_CLUSTER_OBJECT_NAMESPACE; default: the ring's namespace, as KEDA defaults to its own).
    #[arg(long, env = "KEDA_CLUSTER_OBJECT_NAMESPACE")]
    cluster_object_namespace: Option<String>,
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
    /// Polls of one namespace running at once (of 256): a tenant whose sources hang holds at
    /// most this many; the other namespaces' polls keep their schedule. Above the 128 one
    /// source may hold, so a namespace's other sources keep room beside a hung one.
    #[arg(
        long,
        env = "RINGSCALE_MAX_CYCLES_PER_NAMESPACE",
        default_value_t = 192,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    max_cycles_per_namespace: u16,
    /// Namespaces to watch, comma-separated (KEDA's WATCH_NAMESPACE); empty: every namespace.
    /// A ring scoped so needs Roles in these namespaces only (and in the cluster object
    /// namespace, for ClusterTriggerAuthentications' Secrets).
    #[arg(
        long,
        env = "WATCH_NAMESPACE",
        value_delimiter = ',',
        default_value = "",
        value_name = "NAMESPACES"
    )]
    watch_namespaces: Vec<String>,
    /// Label selector of the ScaledObjects and ScaledJobs this ring polls (KEDA's
    /// WATCH_LABEL_SELECTOR; e.g. `tier=gold`, `tier in (gold,silver)`); empty: all of them.
    /// Rings with distinct `--ring` names and disjoint scopes share a cluster.
    #[arg(
        long,
        env = "WATCH_LABEL_SELECTOR",
        default_value = "",
        value_name = "SELECTOR"
    )]
    watch_label_selector: String,
    /// Write the status on every active poll, as KEDA does (for load-test comparisons only).
    #[arg(long, hide = true)]
    keda_write_pattern: bool,
}

/// Shutdown and logging.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Process")]
struct ProcessArgs {
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
    let ProcessArgs {
        log, log_format, ..
    } = &args.process;
    let filter = tracing_subscriber::EnvFilter::try_new(log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if log_format == "json" {
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

type ApiRequests = prometheus_client::metrics::family::Family<
    crate::api_requests::Verb,
    prometheus_client::metrics::counter::Counter,
>;

/// The Kubernetes client: the kubeconfig, rate-limited as the flags say, counting requests.
async fn client(kube: KubeArgs, requests: ApiRequests) -> anyhow::Result<kube::Client> {
    let KubeArgs {
        kubeconfig,
        kube_api_qps,
        kube_api_burst,
    } = kube;
    if kube_api_burst == 0 {
        anyhow::bail!("--kube-api-burst must be at least 1");
    }
    let limits = crate::client_limits::Limits {
        qps: kube_api_qps,
        burst: kube_api_burst,
        max_retry_after: Duration::from_secs(10),
        max_in_flight: crate::client_limits::MAX_IN_FLIGHT,
    };
    let config = match &kubeconfig {
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
    let RunArgs {
        ring,
        leases,
        listen,
        metrics_api,
        peer_tls,
        kube,
        operator,
        process: ProcessArgs { drain_timeout, .. },
    } = args;
    let member = ring.name.clone();
    let ring_name = ring.ring.clone();
    let api_requests = ApiRequests::default();
    let client = client(kube, api_requests.clone()).await?;
    let settings = operator_settings(operator, &ring.namespace)?;
    let scope = settings.scope.clone();

    // Listen first: a port in use is an error before joining the ring.
    let listeners = Listeners::bind(listen).await?;
    let peer_tls = peer_tls_config(peer_tls)?;
    let (metrics_tls, auth) = metrics_api_security(metrics_api, &member, &client).await?;

    // The ring, the replicated records, the operator, the replication server, the metrics API.
    let mut coordinator = Coordinator::start(
        client.clone(),
        coordinator_config(ring, leases, &listeners.peer_address),
    )?;
    let ownership = coordinator.ownership();
    let (stop_tx, stop) = watch::channel(false);
    let stopped = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let limits = Limits::default();
    let store = Store::new(&member);
    let peers = Peers::new(Arc::clone(&store), limits.clone(), peer_tls.clone());
    let follow = tokio::spawn(follow_ring(
        ownership.clone(),
        Arc::clone(&store),
        Arc::clone(&peers),
    ));
    let mut controller = Controller::start(
        client.clone(),
        ownership.clone(),
        Arc::clone(&store),
        ringscale_scalers::Sources::new(ringscale_scalers::SourcesConfig {
            pods: Some(ringscale_scalers::PodLister(Arc::new(
                ringscale_operator::pods::KubePods::new(client.clone()),
            ))),
            ..ringscale_scalers::SourcesConfig::default()
        }),
        settings,
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
        let (stop, tls, listener) = (stop.clone(), peer_tls, listeners.replication);
        tokio::spawn(async move {
            ringscale_replication::serve(service, listener, tls.as_ref(), stopped(stop)).await
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
        listeners.metrics_api,
        metrics_tls,
        ringscale_metrics_api::router(Arc::clone(&resolver), auth),
        stopped(stop.clone()),
        drain_timeout,
    ));

    // Admin: health, readiness, Prometheus — each part registers its own series.
    let mut registry = Registry::default();
    controller.metrics.register(&mut registry);
    controller.health.register(&mut registry);
    controller.stats.register(&mut registry);
    coordinator.register(&mut registry);
    ringscale_replication::metrics::register(&mut registry, &store, &peers);
    resolver.register(&mut registry);
    registry.register(
        "ringscale_kube_api_requests",
        "Requests this replica made to the Kubernetes API, by verb",
        api_requests,
    );
    let admin_app = admin_router(AdminState {
        registry,
        health: Arc::clone(&controller.health),
        ownership: ownership.clone(),
        peers: Arc::clone(&peers),
        page: crate::status_page::Sources {
            ownership: ownership.clone(),
            store: Arc::clone(&store),
            scaled_objects: controller.scaled_objects().clone(),
            cluster: controller.cluster().clone(),
            ring: ring_name,
            scope,
        },
    });
    let admin_server = {
        let (stop, listener) = (stop.clone(), listeners.admin);
        tokio::spawn(async move {
            axum::serve(listener, admin_app)
                .with_graceful_shutdown(stopped(stop))
                .await
        })
    };

    if let Some(started) = started {
        let _ = started.send(Started {
            ownership: ownership.clone(),
            metrics_api: listeners.metrics_api_addr,
            admin: listeners.admin_addr,
            store: Arc::clone(&store),
        });
    }
    info!(
        member = %member,
        peer_address = listeners.peer_address,
        metrics_api = %listeners.metrics_api_addr,
        admin = %listeners.admin_addr,
        "replica started"
    );
    // Every long-lived part: when one ends, the replica cannot do its job and exits (1) for
    // its supervisor to restart it. Not here, on purpose: tasks owned by one of these parts
    // that end with it (the controller's watches, the per-object push listeners, the peer
    // streams, which reconnect until the ring drops the peer).
    let critical = async {
        tokio::select! {
            r = replication_server => format!("the replication server stopped: {r:?}"),
            r = metrics_server => format!("the metrics API stopped: {r:?}"),
            r = admin_server => format!("the admin server stopped: {r:?}"),
            r = follow => format!("the ring follower stopped: {r:?}"),
            why = controller.stopped() => why,
            why = coordinator.stopped() => why,
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
    let _ = tokio::time::timeout(drain_timeout, controller.join()).await;
    match failure {
        None => Ok(()),
        Some(why) => Err(anyhow::anyhow!(why)),
    }
}

/// Keeps the store's generation and the peer set in step with the ring.
async fn follow_ring(
    mut ownership: watch::Receiver<Ownership>,
    store: Arc<Store>,
    peers: Arc<Peers>,
) {
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
}

/// The operator's settings from its flags.
fn operator_settings(operator: OperatorArgs, ring_namespace: &str) -> anyhow::Result<Settings> {
    let OperatorArgs {
        cluster_object_namespace,
        poll_grain,
        report_writes_per_second,
        max_cycles_per_namespace,
        watch_namespaces,
        watch_label_selector,
        keda_write_pattern,
    } = operator;
    // KEDA's chart writes an empty WATCH_NAMESPACE as `""`.
    let unquote = |s: &str| s.trim().trim_matches('"').to_owned();
    let selector = unquote(&watch_label_selector);
    ringscale_api::selector::LabelSelector::parse(&selector)
        .with_context(|| format!("--watch-label-selector {selector:?}"))?;
    let scope = ringscale_operator::scope::Scope::new(
        watch_namespaces.iter().map(|n| unquote(n)),
        &selector,
    );
    if poll_grain > Duration::from_secs(1) {
        anyhow::bail!(
            "--poll-grain must be at most 1 second (it delays every poll by up to that much)"
        );
    }
    Ok(Settings {
        cluster_object_namespace: cluster_object_namespace
            .unwrap_or_else(|| ring_namespace.to_owned()),
        keda_write_pattern,
        report_writes_per_second,
        poll_grain,
        max_cycles_per_namespace: usize::from(max_cycles_per_namespace),
        scope,
        ..Settings::default()
    })
}

/// The replica's listening sockets, bound before it joins the ring.
struct Listeners {
    replication: tokio::net::TcpListener,
    metrics_api: tokio::net::TcpListener,
    admin: tokio::net::TcpListener,
    metrics_api_addr: SocketAddr,
    admin_addr: SocketAddr,
    /// The replication address peers reach this replica at.
    peer_address: String,
}

impl Listeners {
    async fn bind(listen: ListenArgs) -> anyhow::Result<Listeners> {
        let ListenArgs {
            replication_listen,
            peer_address,
            metrics_api_listen,
            admin_listen,
        } = listen;
        let replication = bind(replication_listen, "replication").await?;
        let metrics_api = bind(metrics_api_listen, "the metrics API").await?;
        let admin = bind(admin_listen, "the admin endpoints").await?;
        let peer_address = match peer_address {
            Some(a) => a,
            None => {
                let local = replication.local_addr()?;
                match std::env::var("POD_IP") {
                    Ok(ip) if !ip.is_empty() => format!("{ip}:{}", local.port()),
                    _ => local.to_string(),
                }
            }
        };
        Ok(Listeners {
            metrics_api_addr: metrics_api.local_addr()?,
            admin_addr: admin.local_addr()?,
            replication,
            metrics_api,
            admin,
            peer_address,
        })
    }
}

/// Mutual TLS between replicas, when its files are given.
fn peer_tls_config(peer_tls: PeerTlsArgs) -> anyhow::Result<Option<PeerTls>> {
    let PeerTlsArgs {
        peer_ca_file,
        peer_cert_file,
        peer_key_file,
        peer_server_name,
    } = peer_tls;
    match (peer_ca_file, peer_cert_file, peer_key_file) {
        (Some(ca), Some(cert), Some(key)) => {
            let mut tls =
                PeerTls::from_files(&ca, &cert, &key).context("reading the peer TLS files")?;
            tls.server_name = peer_server_name;
            Ok(Some(tls))
        }
        _ => Ok(None),
    }
}

/// The metrics API's TLS (none with `--insecure-metrics-api`) and how it authenticates callers.
async fn metrics_api_security(
    metrics_api: MetricsApiArgs,
    member: &str,
    client: &kube::Client,
) -> anyhow::Result<(
    Option<Arc<ringscale_metrics_api::serve::ServerConfig>>,
    Auth,
)> {
    let MetricsApiArgs {
        tls_cert_file,
        tls_private_key_file,
        requestheader_client_ca_file,
        requestheader_allowed_names,
        insecure_metrics_api,
    } = metrics_api;
    if insecure_metrics_api {
        warn!(
            "the metrics API is served over plain HTTP without authentication (--insecure-metrics-api)"
        );
        return Ok((None, Auth::Insecure));
    }
    let certificate = match (tls_cert_file, tls_private_key_file) {
        (Some(cert), Some(key)) => Certificate::Files { cert, key },
        _ => Certificate::SelfSigned(vec![
            "localhost".into(),
            "127.0.0.1".into(),
            member.to_owned(),
        ]),
    };
    let (ca, allowed_names) = match requestheader_client_ca_file {
        Some(path) => (
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
            requestheader_allowed_names,
        ),
        None => {
            let published = front_proxy_from_cluster(client).await?;
            let names = if requestheader_allowed_names.is_empty() {
                published.allowed_names
            } else {
                requestheader_allowed_names
            };
            (published.ca_pem.into_bytes(), names)
        }
    };
    let tls = server_config(&certificate, Some(&ca)).context("metrics API TLS")?;
    Ok((Some(Arc::new(tls)), Auth::RequestHeader { allowed_names }))
}

/// The coordinator's configuration: the ring, this member, its address and the Lease timings.
fn coordinator_config(
    ring: RingArgs,
    leases: LeaseArgs,
    peer_address: &str,
) -> ringscale_coordinator::Config {
    let RingArgs {
        name,
        namespace,
        ring,
    } = ring;
    let LeaseArgs {
        lease_duration,
        renew_deadline,
        retry_period,
        leave_grace,
    } = leases;
    let mut config = ringscale_coordinator::Config::new(&ring, &namespace, &name, peer_address);
    config.lease_duration = lease_duration;
    config.renew_deadline = renew_deadline;
    config.retry_period = retry_period;
    config.leave_grace = leave_grace;
    config
}

/// `/healthz`, `/livez`, `/readyz`, `/metrics`, `/status`, `/records`.
fn admin_router(state: AdminState) -> axum::Router {
    axum::Router::new()
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
        .with_state(Arc::new(state))
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
