//! The API server a scenario runs on: kube-sim (default), or a real cluster given by
//! `--kubeconfig` / `RINGSCALE_TEST_KUBECONFIG` (cluster-admin), whose audit log
//! (`--audit-log` / `RINGSCALE_TEST_AUDIT_LOG`) stands in for kube-sim's request log.
//!
//! On a real cluster each replica runs as a ServiceAccount of its own name in namespace
//! `ringscale` (created here, bound to `cluster-admin`, with a one-hour token), so that the
//! audit log tells the replicas apart as kube-sim's log does; the objects live in a namespace of
//! the scenario's own and the ring has a name of its own, both removed or left behind by the
//! scenario's end (see [`ApiServer::cleanup`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, PostParams};
use ringscale_kube_sim::{Config, KubeSim, RequestRecord};
use serde_json::json;

/// A real cluster's connection and audit log.
pub(crate) struct Real {
    kubeconfig: kube::config::Kubeconfig,
    /// The audit log and its length when the scenario began.
    audit: (PathBuf, u64),
}

/// Where the scenario's API requests go.
pub(crate) enum ApiServer {
    Sim(KubeSim),
    Real(Real),
}

impl ApiServer {
    /// kube-sim, or the real cluster the arguments name; a client with full rights to it.
    pub(crate) async fn start(
        kubeconfig: Option<&PathBuf>,
        audit_log: Option<&PathBuf>,
    ) -> anyhow::Result<(Self, kube::Client)> {
        let Some(path) = kubeconfig else {
            let sim = KubeSim::start(Config {
                workload_delay: Duration::from_millis(100),
                hpa_sync_period: Duration::from_secs(1),
                ..Config::default()
            })
            .await?;
            let client = client_of(kube::config::Kubeconfig::from_yaml(sim.kubeconfig())?).await?;
            return Ok((Self::Sim(sim), client));
        };
        let Some(audit_log) = audit_log else {
            bail!(
                "a real cluster needs its API server's audit log (--audit-log or \
                 RINGSCALE_TEST_AUDIT_LOG): the write invariants are checked against it"
            );
        };
        let kubeconfig = kube::config::Kubeconfig::read_from(path)
            .with_context(|| format!("reading {}", path.display()))?;
        let from = std::fs::metadata(audit_log)
            .with_context(|| format!("the audit log {}", audit_log.display()))?
            .len();
        let client = client_of(kubeconfig.clone()).await?;
        Ok((
            Self::Real(Real {
                kubeconfig,
                audit: (audit_log.clone(), from),
            }),
            client,
        ))
    }

    /// kube-sim, for the scenarios that inject its faults.
    pub(crate) fn sim(&self) -> anyhow::Result<&ringscale_kube_sim::Sim> {
        match self {
            Self::Sim(sim) => Ok(sim.sim()),
            Self::Real(_) => bail!("this scenario needs kube-sim's fault injection"),
        }
    }

    /// Whether this is a real cluster.
    pub(crate) fn is_real(&self) -> bool {
        matches!(self, Self::Real(_))
    }

    /// A kubeconfig (as text) for the replica `name`, authenticated as
    /// `system:serviceaccount:ringscale:<name>`.
    pub(crate) async fn replica_kubeconfig(
        &self,
        client: &kube::Client,
        name: &str,
    ) -> anyhow::Result<String> {
        let real = match self {
            Self::Sim(sim) => return Ok(sim.add_user(&crate::replica_user(name), &[])),
            Self::Real(real) => real,
        };
        let sas = Api::<ServiceAccount>::namespaced(client.clone(), "ringscale");
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        crate::create_or_keep(&sas, &sa).await?;
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": format!("ringscale-chaos-{name}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "ringscale"}]
        }))?;
        crate::create_or_keep(&Api::<ClusterRoleBinding>::all(client.clone()), &binding).await?;
        let request: TokenRequest =
            serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))?;
        let token = sas
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("a token for ServiceAccount ringscale/{name}"))?
            .status
            .context("the TokenRequest has no status")?
            .token;
        let context = real
            .kubeconfig
            .current_context
            .as_deref()
            .context("the kubeconfig has no current context")?;
        let cluster_name = real
            .kubeconfig
            .contexts
            .iter()
            .find(|c| c.name == context)
            .and_then(|c| c.context.as_ref())
            .map(|c| c.cluster.clone())
            .context("the current context names no cluster")?;
        let cluster = real
            .kubeconfig
            .clusters
            .iter()
            .find(|c| c.name == cluster_name)
            .context("the current context's cluster is not in the kubeconfig")?;
        // JSON is YAML: the replica reads it as a kubeconfig file.
        Ok(serde_json::to_string_pretty(&json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [serde_json::to_value(cluster)?],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": name, "context": {"cluster": cluster_name, "user": name}}],
            "current-context": name,
        }))?)
    }

    /// Every request the API server answered since the scenario began: kube-sim's request log,
    /// or the audit log's completed requests (one per audit ID, timed when answered).
    pub(crate) async fn requests(&self) -> anyhow::Result<Vec<RequestRecord>> {
        match self {
            Self::Sim(sim) => Ok(sim.sim().stats.log()),
            Self::Real(real) => {
                // The log backend writes each event as the request completes; give the last
                // ones a moment to reach the file.
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(ringscale_kube_sim::audit::read(
                    &real.audit.0,
                    real.audit.1,
                )?)
            }
        }
    }
}

async fn client_of(kubeconfig: kube::config::Kubeconfig) -> anyhow::Result<kube::Client> {
    Ok(kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?,
    )?)
}
