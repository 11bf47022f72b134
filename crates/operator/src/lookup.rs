//! The objects triggers refer to (Secrets, ConfigMaps, TriggerAuthentications, scale targets),
//! read from shared watches: resolving a trigger never makes an API call.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, Secret};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use ringscale_api::{
    ClusterTriggerAuthentication, ScaledObject, TriggerAuthentication, TriggerAuthenticationSpec,
};
use ringscale_scalers::auth::{Lookup, ObjectLookup, config_map_data, secret_data};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tracing::debug;

mod view;
pub use view::WorkloadView;

/// Reflector stores of everything a trigger may refer to.
#[derive(Clone)]
pub struct ClusterLookup {
    secrets: Store<Secret>,
    config_maps: Store<ConfigMap>,
    trigger_auths: Store<TriggerAuthentication>,
    cluster_trigger_auths: Store<ClusterTriggerAuthentication>,
    /// Deployments (also the scale targets' replica counts).
    deployments: Store<WorkloadView<Deployment>>,
    /// StatefulSets (likewise).
    stateful_sets: Store<WorkloadView<StatefulSet>>,
}

impl std::fmt::Debug for ClusterLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLookup").finish_non_exhaustive()
    }
}

/// What the stores keep of an object: everything but `managedFields`, which nothing here reads
/// and which can be the larger part of a small object. Writes never send a stored object's
/// absent managedFields as a change (an omitted field leaves the server's as they are).
pub(crate) fn slim<K: Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

/// Starts a reflector of a workload kind, decoding each object as a [`WorkloadView`].
fn reflect_workloads<K>(client: &Client) -> (Store<WorkloadView<K>>, JoinHandle<()>)
where
    K: k8s_openapi::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    reflect_modified(
        Api::<WorkloadView<K>>::all(client.clone()),
        watcher::Config::default(),
        WorkloadView::slim,
    )
}

/// Starts a reflector for `K` across the cluster; the task keeps the store current.
pub fn reflect<K>(api: Api<K>) -> (Store<K>, JoinHandle<()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    reflect_with(api, watcher::Config::default())
}

/// [`reflect`] with a watch configuration (e.g. a label selector).
pub fn reflect_with<K>(api: Api<K>, config: watcher::Config) -> (Store<K>, JoinHandle<()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    reflect_modified(api, config, slim)
}

/// [`reflect_with`] with a function that trims each object before it is stored.
pub(crate) fn reflect_modified<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
) -> (Store<K>, JoinHandle<()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config)
        .backoff(ringscale_coordinator::WatchBackoff::new())
        .modify(trim)
        .reflect(writer);
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                debug!(kind = %K::kind(&()), error = %e, "watch interrupted");
            }
        }
    });
    (reader, task)
}

impl ClusterLookup {
    /// Starts the watches.
    pub fn start(client: &Client) -> (ClusterLookup, Vec<JoinHandle<()>>) {
        let (secrets, a) = reflect(Api::<Secret>::all(client.clone()));
        let (config_maps, b) = reflect(Api::<ConfigMap>::all(client.clone()));
        let (trigger_auths, c) = reflect(Api::<TriggerAuthentication>::all(client.clone()));
        let (cluster_trigger_auths, d) =
            reflect(Api::<ClusterTriggerAuthentication>::all(client.clone()));
        let (deployments, e) = reflect_workloads::<Deployment>(client);
        let (stateful_sets, f) = reflect_workloads::<StatefulSet>(client);
        (
            ClusterLookup {
                secrets,
                config_maps,
                trigger_auths,
                cluster_trigger_auths,
                deployments,
                stateful_sets,
            },
            vec![a, b, c, d, e, f],
        )
    }

    /// Replicas and ready replicas of an apps/v1 Deployment or StatefulSet, from the watches;
    /// `None` for other kinds or when it does not exist.
    pub fn replicas_of(
        &self,
        namespace: &str,
        api_version: &str,
        kind: &str,
        name: &str,
    ) -> Option<(i32, i32)> {
        match (api_version, kind) {
            ("apps/v1", "Deployment") => self
                .deployments
                .get(&ObjectRef::new(name).within(namespace))
                .map(|d| d.replicas()),
            ("apps/v1", "StatefulSet") => self
                .stateful_sets
                .get(&ObjectRef::new(name).within(namespace))
                .map(|s| s.replicas()),
            _ => None,
        }
    }

    /// Replicas and ready replicas of a ScaledObject's scale target, when it is a Deployment or
    /// StatefulSet the watches hold ([`ClusterLookup::replicas_of`]).
    pub fn target_replicas(&self, so: &ScaledObject) -> Option<(i32, i32)> {
        let t = &so.spec.scale_target_ref;
        self.replicas_of(
            so.metadata.namespace.as_deref().unwrap_or_default(),
            t.effective_api_version(),
            t.effective_kind(),
            &t.name,
        )
    }

    /// Waits until every store has its first full list.
    pub async fn ready(&self) {
        let _ = self.secrets.wait_until_ready().await;
        let _ = self.config_maps.wait_until_ready().await;
        let _ = self.trigger_auths.wait_until_ready().await;
        let _ = self.cluster_trigger_auths.wait_until_ready().await;
        let _ = self.deployments.wait_until_ready().await;
        let _ = self.stateful_sets.wait_until_ready().await;
    }
}

fn found<T>(value: Option<T>) -> Lookup<T> {
    value.map_or(Lookup::NotFound, Lookup::Found)
}

impl ObjectLookup for ClusterLookup {
    fn secret(&self, namespace: &str, name: &str) -> Lookup<BTreeMap<String, String>> {
        found(
            self.secrets
                .get(&ObjectRef::new(name).within(namespace))
                .map(|s| secret_data(&s)),
        )
    }

    fn config_map(&self, namespace: &str, name: &str) -> Lookup<BTreeMap<String, String>> {
        found(
            self.config_maps
                .get(&ObjectRef::new(name).within(namespace))
                .map(|c| config_map_data(&c)),
        )
    }

    fn trigger_authentication(
        &self,
        namespace: &str,
        name: &str,
    ) -> Lookup<TriggerAuthenticationSpec> {
        found(
            self.trigger_auths
                .get(&ObjectRef::new(name).within(namespace))
                .map(|t| t.spec.clone()),
        )
    }

    fn cluster_trigger_authentication(&self, name: &str) -> Lookup<TriggerAuthenticationSpec> {
        found(
            self.cluster_trigger_auths
                .get(&ObjectRef::new(name))
                .map(|t| t.spec.sources.clone()),
        )
    }

    fn pod_template(
        &self,
        namespace: &str,
        _api_version: &str,
        kind: &str,
        name: &str,
    ) -> Lookup<PodSpec> {
        match kind {
            "Deployment" => found(
                self.deployments
                    .get(&ObjectRef::new(name).within(namespace))
                    .and_then(|d| d.pod_spec()),
            ),
            "StatefulSet" => found(
                self.stateful_sets
                    .get(&ObjectRef::new(name).within(namespace))
                    .and_then(|s| s.pod_spec()),
            ),
            _ => Lookup::NotVisible,
        }
    }
}
