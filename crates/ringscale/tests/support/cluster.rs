//! The cluster an end-to-end test runs on: kube-sim by default, or a real Kubernetes cluster when
//! `RINGSCALE_TEST_KUBECONFIG` names its (cluster-admin) kubeconfig. The test body is the same
//! for both; what differs lives here:
//!
//! | variable | meaning (real cluster only) |
//! | --- | --- |
//! | `RINGSCALE_TEST_KUBECONFIG` | the kubeconfig the test itself uses (creates namespaces, CRDs, objects) |
//! | `RINGSCALE_TEST_REPLICA_KUBECONFIG` | the kubeconfig the replicas run with, e.g. a token of the chart's ServiceAccount (default: the test's) |
//! | `RINGSCALE_TEST_REPLICA_USER` | the user the replicas authenticate as (default `system:serviceaccount:ringscale:ringscale`) |
//! | `RINGSCALE_TEST_LISTEN_IP` | the address the replicas' metrics API binds, reachable by the API server (not loopback: Endpoints refuse it) |
//! | `RINGSCALE_TEST_AUDIT_LOG` | the API server's audit log (JSON lines, level Metadata or above); without it the checks on the requests the replicas made are reported as not exercised |
//!
//! On a real cluster the aggregation layer reaches the replicas through the Service
//! `ringscale/ringscale-metrics` and its Endpoints, which the test writes (the API server needs
//! `--enable-aggregator-routing`); Jobs are marked complete by the test, as there is no kubelet
//! to run their pods. docs/real-cluster.md says how such a cluster is set up here.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use ringscale_kube_sim::{Config, KubeSim, RequestRecord};
use serde_json::{Value, json};

struct Real {
    replica_kubeconfig: PathBuf,
    replica_user: String,
    listen_ip: IpAddr,
    audit_log: Option<(PathBuf, u64)>,
}

enum Backend {
    Sim(KubeSim),
    Real(Real),
}

/// A cluster to run replicas on, with a namespace of the test's own.
pub struct TestCluster {
    backend: Backend,
    pub client: Client,
    /// The namespace the test's objects live in (created by [`TestCluster::start`]; deleted on
    /// a real cluster by [`TestCluster::finish`]).
    pub namespace: String,
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{}", std::process::id(), nanos % 1_000_000_000)
}

/// Whether `RINGSCALE_TEST_KUBECONFIG` asks for a real cluster.
pub fn real_kubeconfig() -> Option<PathBuf> {
    std::env::var_os("RINGSCALE_TEST_KUBECONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

async fn client_from(yaml: &str) -> Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(yaml).unwrap();
    Client::try_from(
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap(),
    )
    .unwrap()
}

/// Creates `obj`, or leaves it as it is if it exists.
async fn create_or_keep<K>(api: &Api<K>, obj: &K)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating {obj:?}: {e}"),
    }
}

impl TestCluster {
    /// kube-sim with `config`, or the real cluster `RINGSCALE_TEST_KUBECONFIG` names; the
    /// namespace `ringscale` (where the ring's Leases live), the keda.sh CRDs (established) and a
    /// namespace for this test, called `prefix-<unique>`.
    pub async fn start(config: Config, dir: &Path, replica_user: &str, prefix: &str) -> Self {
        let (backend, client) = match real_kubeconfig() {
            None => {
                let sim = KubeSim::start(config).await.unwrap();
                sim.write_kubeconfig(&dir.join("kubeconfig")).unwrap();
                let client = client_from(sim.kubeconfig()).await;
                (Backend::Sim(sim), client)
            }
            Some(path) => {
                let yaml = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                    panic!("RINGSCALE_TEST_KUBECONFIG {}: {e}", path.display())
                });
                let client = client_from(&yaml).await;
                let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
                let listen_ip: IpAddr = env("RINGSCALE_TEST_LISTEN_IP")
                    .unwrap_or_else(|| "127.0.0.1".into())
                    .parse()
                    .expect("RINGSCALE_TEST_LISTEN_IP is an IP address");
                let audit_log = env("RINGSCALE_TEST_AUDIT_LOG").map(|p| {
                    let p = PathBuf::from(p);
                    let from = std::fs::metadata(&p).map_or(0, |m| m.len());
                    (p, from)
                });
                eprintln!(
                    "real cluster from {}: replicas listen on {listen_ip}; audit log {}",
                    path.display(),
                    audit_log
                        .as_ref()
                        .map_or("not given".into(), |(p, _)| p.display().to_string())
                );
                let real = Real {
                    replica_kubeconfig: env("RINGSCALE_TEST_REPLICA_KUBECONFIG")
                        .map_or(path, PathBuf::from),
                    replica_user: env("RINGSCALE_TEST_REPLICA_USER")
                        .unwrap_or_else(|| replica_user.to_owned()),
                    listen_ip,
                    audit_log,
                };
                (Backend::Real(real), client)
            }
        };
        let namespace = format!("{prefix}-{}", unique());
        for name in ["ringscale", namespace.as_str()] {
            let ns: Namespace =
                serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
            create_or_keep(&Api::<Namespace>::all(client.clone()), &ns).await;
        }
        let crds = Api::<CustomResourceDefinition>::all(client.clone());
        for crd in ringscale_api::crds::all() {
            create_or_keep(&crds, &crd).await;
            let name = crd.metadata.name.clone().unwrap_or_default();
            super::eventually(Duration::from_secs(30), "the CRD established", || async {
                let crd = crds.get(&name).await.ok()?;
                let established = crd
                    .status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                established.then_some(())
            })
            .await;
        }
        Self {
            backend,
            client,
            namespace,
        }
    }

    /// Whether this is a real cluster.
    pub fn is_real(&self) -> bool {
        matches!(self.backend, Backend::Real(_))
    }

    /// kube-sim, on kube-sim.
    pub fn sim(&self) -> Option<&KubeSim> {
        match &self.backend {
            Backend::Sim(sim) => Some(sim),
            Backend::Real(_) => None,
        }
    }

    /// How long to wait for something the cluster's controllers do: a real HPA controller syncs
    /// every 15 s by default.
    pub fn within(&self) -> Duration {
        match self.backend {
            Backend::Sim(_) => Duration::from_secs(30),
            Backend::Real(_) => Duration::from_secs(90),
        }
    }

    /// The user the replicas authenticate as.
    pub fn replica_user<'a>(&'a self, default: &'a str) -> &'a str {
        match &self.backend {
            Backend::Sim(_) => default,
            Backend::Real(real) => &real.replica_user,
        }
    }

    /// A kubeconfig for the replicas, written into `dir`: on kube-sim a new user `user` in
    /// `groups`, on a real cluster the one the environment gives.
    pub fn replica_kubeconfig(&self, dir: &Path, user: &str, groups: &[&str]) -> PathBuf {
        match &self.backend {
            Backend::Sim(sim) => {
                let path = dir.join("replica.kubeconfig");
                std::fs::write(&path, sim.add_user(user, groups)).unwrap();
                path
            }
            Backend::Real(real) => real.replica_kubeconfig.clone(),
        }
    }

    /// The address the replicas' metrics API binds.
    pub fn listen_ip(&self) -> IpAddr {
        match &self.backend {
            Backend::Sim(_) => IpAddr::from([127, 0, 0, 1]),
            Backend::Real(real) => real.listen_ip,
        }
    }

    /// Points the aggregation layer's `v1beta1.external.metrics.k8s.io` at these metrics-API
    /// ports (on [`TestCluster::listen_ip`]): kube-sim's backend table, or the Service
    /// `ringscale/ringscale-metrics` and its Endpoints, one subset per replica, as a real API
    /// server resolves them.
    pub async fn set_metrics_backends(&self, ports: &[u16]) {
        match &self.backend {
            Backend::Sim(sim) => sim.sim().backends.set(
                "v1beta1.external.metrics.k8s.io",
                ports
                    .iter()
                    .map(|p| format!("https://127.0.0.1:{p}"))
                    .collect(),
            ),
            Backend::Real(real) => {
                let services = Api::<Service>::namespaced(self.client.clone(), "ringscale");
                let service: Service = serde_json::from_value(json!({
                    "metadata": {"name": "ringscale-metrics"},
                    "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 6443}]}
                }))
                .unwrap();
                create_or_keep(&services, &service).await;
                let subsets: Vec<Value> = ports
                    .iter()
                    .map(|p| {
                        json!({"addresses": [{"ip": real.listen_ip.to_string()}],
                               "ports": [{"name": "https", "port": p}]})
                    })
                    .collect();
                let endpoints = Api::<Endpoints>::namespaced(self.client.clone(), "ringscale");
                let patch = json!({
                    "apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": "ringscale-metrics"},
                    "subsets": subsets
                });
                endpoints
                    .patch(
                        "ringscale-metrics",
                        &PatchParams::apply("ringscale-e2e").force(),
                        &Patch::Apply(patch),
                    )
                    .await
                    .unwrap();
            }
        }
    }

    /// Lets the Jobs matching `selector` finish: kube-sim's job controller does it by itself; on
    /// a real cluster (no kubelet) the test marks each Job complete.
    pub async fn finish_jobs(&self, selector: &str) {
        let Backend::Real(_) = self.backend else {
            return;
        };
        let jobs = Api::<Job>::namespaced(self.client.clone(), &self.namespace);
        let Ok(list) = jobs.list(&ListParams::default().labels(selector)).await else {
            return;
        };
        for job in list.items {
            let done = job
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c.type_ == "Complete" && c.status == "True")
                });
            if done {
                continue;
            }
            let Some(name) = job.metadata.name else {
                continue;
            };
            let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            );
            let status = json!({"status": {
                "succeeded": 1, "active": 0, "startTime": now, "completionTime": now,
                "conditions": [{"type": "Complete", "status": "True",
                                "lastProbeTime": now, "lastTransitionTime": now}]
            }});
            // The job controller may have changed the status meanwhile: the next call retries.
            let _ = jobs
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await;
        }
    }

    /// The requests `user` made since the cluster started: kube-sim's request log, or the real
    /// server's audit log; `None` when there is no audit log to read.
    pub fn requests(&self, user: &str) -> Option<Vec<RequestRecord>> {
        match &self.backend {
            Backend::Sim(sim) => Some(
                sim.sim()
                    .stats
                    .log()
                    .into_iter()
                    .filter(|r| r.user == user)
                    .collect(),
            ),
            Backend::Real(real) => {
                let (path, from) = real.audit_log.as_ref()?;
                let log = ringscale_kube_sim::audit::read(path, *from)
                    .unwrap_or_else(|e| panic!("{e}: {:?}", std::error::Error::source(&e)));
                Some(log.into_iter().filter(|r| r.user == user).collect())
            }
        }
    }

    /// Deletes the test's namespace on a real cluster (kube-sim goes with the test).
    pub async fn finish(&self) {
        if self.is_real() {
            let _ = Api::<Namespace>::all(self.client.clone())
                .delete(&self.namespace, &DeleteParams::default())
                .await;
        }
    }
}
