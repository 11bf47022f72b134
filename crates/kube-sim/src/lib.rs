//! kube-sim: an in-process Kubernetes API server and controller simulator.
//!
//! It serves the Kubernetes REST API over HTTPS on 127.0.0.1 well enough for kube-rs and kubectl
//! (discovery, get/list/watch with resourceVersions and 410 Gone, create/update with conflicts,
//! JSON/merge/strategic/apply patches with managed fields, status and scale subresources,
//! finalizers and garbage collection, CRDs with schema validation, defaulting and CEL rules),
//! proxies aggregated APIs, simulates the controllers ringscale relies on, injects faults and
//! counts requests. It is meant to be no more lenient than a real API server.

pub mod admin;
pub mod aggregator;
pub mod api;
pub mod audit;
pub mod controllers;
pub mod custom;
pub mod discovery;
pub mod error;
pub mod faults;
pub mod gc;
pub mod kubeconfig;
pub mod lifecycle;
pub mod managed;
pub mod patch;
pub mod protobuf;
pub mod proxy;
pub mod resources;
pub mod selectors;
pub mod server;
pub mod stats;
pub mod store;
pub mod strategy;
pub mod table;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

pub use error::ApiError;
pub use faults::{ErrorRule, FaultSpec, Faults, InjectedError, OutageMode};
pub use stats::{RequestKey, RequestRecord, Stats};

/// Settings of a simulator.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Bearer token of the `admin` user; random when None.
    pub token: Option<String>,
    /// Events kept for watches to resume from; older resourceVersions get 410 Gone.
    pub watch_window: usize,
    /// Longest a watch stays open without `timeoutSeconds`.
    pub watch_timeout: Duration,
    /// Interval of BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
    /// Timeout of a proxied aggregated-API request.
    pub proxy_timeout: Duration,
    /// Run the simulated controllers (workloads, jobs, HPA).
    pub controllers: bool,
    /// Delay before workload status follows `spec.replicas`.
    pub workload_delay: Duration,
    /// How long a simulated Job runs before it completes.
    pub job_duration: Duration,
    /// HPA controller sync period.
    pub hpa_sync_period: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: None,
            watch_window: 100_000,
            watch_timeout: Duration::from_secs(1800),
            bookmark_interval: Duration::from_secs(10),
            proxy_timeout: Duration::from_secs(10),
            controllers: true,
            workload_delay: Duration::from_millis(500),
            job_duration: Duration::from_secs(5),
            hpa_sync_period: Duration::from_secs(15),
        }
    }
}

/// Resource utilisation of a workload's pods, in percent of their requests, as the HPA
/// simulation reads it for Resource metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Utilization {
    /// CPU, percent of requests.
    #[serde(default)]
    pub cpu: Option<f64>,
    /// Memory, percent of requests.
    #[serde(default)]
    pub memory: Option<f64>,
}

/// The shared state of a running simulator.
#[derive(Debug)]
pub struct Sim {
    /// Objects.
    pub store: store::Store,
    /// Served resources.
    pub registry: resources::Registry,
    /// Fault injection.
    pub faults: Faults,
    /// Request accounting.
    pub stats: Stats,
    /// Aggregated-API backends.
    pub backends: aggregator::Backends,
    /// Settings.
    pub config: Config,
    /// `host:port` the server listens on.
    pub address: String,
    tokens: Mutex<HashMap<String, server::User>>,
    front_proxy_client: tls::Identity,
    gc_wakeup: Notify,
    utilization: Mutex<HashMap<(String, String, String), Utilization>>,
}

impl Sim {
    /// Restarts the API server as a real one restarts: down for `down` (connections refused,
    /// every open watch cut), then back with the same store — resourceVersions continue — but an
    /// empty watch cache (a watch from a resourceVersion before the restart gets 410 Gone, so
    /// clients list again), and for `warmup` an authorizer that has not synced its caches (403
    /// for every user outside `system:masters`: no Lease can be renewed meanwhile).
    pub async fn restart(&self, down: Duration, warmup: Duration) {
        self.faults.set_outage(Some(OutageMode::Refuse));
        tokio::time::sleep(down).await;
        self.store.compact();
        self.faults.set_authorization_warming(true);
        self.faults.set_outage(None);
        tokio::time::sleep(warmup).await;
        self.faults.set_authorization_warming(false);
    }

    /// Sets the utilisation of a workload (`kind` as in `scaleTargetRef`, e.g. Deployment).
    pub fn set_utilization(
        &self,
        namespace: &str,
        kind: &str,
        name: &str,
        utilization: Utilization,
    ) {
        self.utilization
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                (namespace.to_owned(), kind.to_owned(), name.to_owned()),
                utilization,
            );
    }

    /// The utilisation of a workload.
    pub fn utilization(&self, namespace: &str, kind: &str, name: &str) -> Option<Utilization> {
        self.utilization
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(namespace.to_owned(), kind.to_owned(), name.to_owned()))
            .copied()
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The address could not be bound.
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Certificates could not be generated.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// A default object could not be created.
    #[error("failed to create the default objects: {0}")]
    Bootstrap(ApiError),
}

/// A running simulator; it stops when dropped.
#[derive(Debug)]
pub struct KubeSim {
    sim: Arc<Sim>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    url: String,
    kubeconfig: String,
    ca_pem: String,
    front_proxy_ca_pem: String,
    token: String,
}

impl KubeSim {
    /// Starts a simulator: certificates, listener, default namespaces, controllers.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
        let ca = tls::Authority::new("kube-sim-ca")?;
        let serving = ca.issue_server(&["127.0.0.1", "localhost", "::1"])?;
        let admin_cert = ca.issue_client("kube-sim-admin", &["system:masters"])?;
        let front_proxy_ca = tls::Authority::new("kube-sim-front-proxy-ca")?;
        let front_proxy_client = front_proxy_ca.issue_client("front-proxy-client", &[])?;
        let token = config.token.clone().unwrap_or_else(|| {
            let bytes: [u8; 24] = rand::rng().random();
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        });
        let mut tokens = HashMap::new();
        tokens.insert(
            token.clone(),
            server::User {
                name: "kube-sim-admin".to_owned(),
                groups: vec![
                    "system:masters".to_owned(),
                    "system:authenticated".to_owned(),
                ],
            },
        );
        let url = format!("https://{addr}");
        let kubeconfig = kubeconfig::render(&url, &ca.cert_pem, &token, &admin_cert, "default");
        let server_tls = Arc::new(tls::server_config(&serving, &ca)?);
        let sim = Arc::new(Sim {
            store: store::Store::new(config.watch_window),
            registry: resources::Registry::new(),
            faults: Faults::new(),
            stats: Stats::default(),
            backends: aggregator::Backends::default(),
            config,
            address: addr.to_string(),
            tokens: Mutex::new(tokens),
            front_proxy_client,
            gc_wakeup: Notify::new(),
            utilization: Mutex::new(HashMap::new()),
        });
        bootstrap(&sim, &ca.cert_pem, &front_proxy_ca.cert_pem).map_err(StartError::Bootstrap)?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = vec![
            tokio::spawn(server::serve(
                sim.clone(),
                listener,
                server_tls,
                shutdown_rx.clone(),
            )),
            tokio::spawn(gc::run(sim.clone(), shutdown_rx.clone())),
        ];
        if sim.config.controllers {
            tasks.extend(controllers::spawn(sim.clone(), shutdown_rx));
        }
        Ok(Self {
            sim,
            shutdown,
            tasks,
            url,
            kubeconfig,
            ca_pem: ca.cert_pem.clone(),
            front_proxy_ca_pem: front_proxy_ca.cert_pem.clone(),
            token,
        })
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The kubeconfig (YAML) for kube-rs and kubectl.
    pub fn kubeconfig(&self) -> &str {
        &self.kubeconfig
    }

    /// Writes the kubeconfig to a file.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, &self.kubeconfig)
    }

    /// The cluster CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA that signs the front-proxy client certificate, which aggregated API servers trust
    /// as their request-header CA (PEM). The client certificate's CN is `front-proxy-client`.
    pub fn front_proxy_ca_pem(&self) -> &str {
        &self.front_proxy_ca_pem
    }

    /// The admin bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Adds a user that authenticates with a new bearer token (as a ServiceAccount token would)
    /// and returns a kubeconfig for it alone, so its requests show under `name` in the request
    /// log. kube-sim does not enforce RBAC; the log shows what the user did.
    pub fn add_user(&self, name: &str, groups: &[&str]) -> String {
        let bytes: [u8; 24] = rand::rng().random();
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut all: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        all.push("system:authenticated".to_owned());
        self.sim
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                token.clone(),
                server::User {
                    name: name.to_owned(),
                    groups: all,
                },
            );
        kubeconfig::render_token(&self.url, &self.ca_pem, name, &token, "default")
    }

    /// The shared state: store, faults, stats, backends.
    pub fn sim(&self) -> &Arc<Sim> {
        &self.sim
    }

    /// Stops serving and waits for the tasks to end.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// The namespaces every cluster starts with, and the ConfigMap in which the API server publishes
/// how aggregated API servers authenticate its requests (`kube-system/
/// extension-apiserver-authentication`: the client CA and the front proxy's request-header
/// settings).
fn bootstrap(sim: &Sim, client_ca_pem: &str, front_proxy_ca_pem: &str) -> Result<(), ApiError> {
    let Some(info) = sim
        .registry
        .get(&resources::Gvr::new("", "v1", "namespaces"))
    else {
        return Err(ApiError::internal("namespaces are not served"));
    };
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let target = api::Target {
            info: info.clone(),
            namespace: None,
            name: None,
            subresource: None,
        };
        let options = api::WriteOptions {
            field_manager: "kube-apiserver".to_owned(),
            ..api::WriteOptions::default()
        };
        api::create(
            sim,
            &target,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            &options,
        )?;
    }
    let Some(info) = sim
        .registry
        .get(&resources::Gvr::new("", "v1", "configmaps"))
    else {
        return Err(ApiError::internal("configmaps are not served"));
    };
    let target = api::Target {
        info,
        namespace: Some("kube-system".to_owned()),
        name: None,
        subresource: None,
    };
    let options = api::WriteOptions {
        field_manager: "kube-apiserver".to_owned(),
        ..api::WriteOptions::default()
    };
    api::create(
        sim,
        &target,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": EXTENSION_APISERVER_AUTHENTICATION, "namespace": "kube-system"},
        "data": {
            "client-ca-file": client_ca_pem,
            "requestheader-client-ca-file": front_proxy_ca_pem,
            "requestheader-allowed-names": "[\"front-proxy-client\"]",
            "requestheader-username-headers": "[\"X-Remote-User\"]",
            "requestheader-group-headers": "[\"X-Remote-Group\"]",
            "requestheader-extra-headers-prefix": "[\"X-Remote-Extra-\"]"
        }}),
        &options,
    )?;
    Ok(())
}

/// Name of the ConfigMap (in kube-system) that tells aggregated API servers how to authenticate
/// the API server's requests.
pub const EXTENSION_APISERVER_AUTHENTICATION: &str = "extension-apiserver-authentication";
