//! The pod lister behind `kubernetes-workload` triggers: one LIST of the namespace's pods with
//! the trigger's label selector per poll, served from the API server's watch cache
//! (`resourceVersion=0`), so a poll costs the API server no etcd read. KEDA reads the same pods
//! from its controller-runtime cache; a cluster-wide pod cache would hold every pod of a large
//! cluster in each replica, where a replica here only asks for the namespaces it owns.

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams};
use ringscale_scalers::{ListPods, ListPodsError, PodSummary, PodsFuture};

/// Lists pods through the operator's client.
#[derive(Clone)]
pub struct KubePods {
    client: Client,
}

impl std::fmt::Debug for KubePods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubePods")
    }
}

impl KubePods {
    /// A lister on `client`.
    pub fn new(client: Client) -> Self {
        KubePods { client }
    }
}

impl ListPods for KubePods {
    fn list<'a>(&'a self, namespace: &'a str, selector: &'a str) -> PodsFuture<'a> {
        Box::pin(async move {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let params = ListParams::default().labels(selector).match_any();
            let list = api.list(&params).await.map_err(|e| ListPodsError {
                namespace: namespace.to_owned(),
                selector: selector.to_owned(),
                reason: e.to_string(),
            })?;
            Ok(list
                .items
                .into_iter()
                .map(|p| PodSummary {
                    phase: p.status.and_then(|s| s.phase),
                    node_name: p.spec.and_then(|s| s.node_name),
                })
                .collect())
        })
    }
}
