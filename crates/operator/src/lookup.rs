//! The objects triggers refer to (Secrets, ConfigMaps, TriggerAuthentications, scale targets),
//! read from shared watches: resolving a trigger never makes an API call.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, Secret};
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource};
use ringscale_api::{
    ClusterTriggerAuthentication, ScaledObject, TriggerAuthentication, TriggerAuthenticationSpec,
};
use ringscale_scalers::auth::{Lookup, ObjectLookup, config_map_data, secret_data};
use tokio::task::JoinHandle;

use crate::scope::{Scope, Scoped, reflect_one, watch_scoped};

mod view;
pub use view::WorkloadView;

/// Reflector stores of everything a trigger may refer to, over the replica's [`Scope`].
#[derive(Clone)]
pub struct ClusterLookup {
    secrets: Scoped<Secret>,
    config_maps: Scoped<ConfigMap>,
    trigger_auths: Scoped<TriggerAuthentication>,
    /// Cluster-scoped: watched whatever the scope (their Secrets are in the cluster object
    /// namespace, which a scoped replica watches too).
    cluster_trigger_auths: Store<ClusterTriggerAuthentication>,
    /// Deployments (also the scale targets' replica counts).
    deployments: Scoped<WorkloadView<Deployment>>,
    /// StatefulSets (likewise).
    stateful_sets: Scoped<WorkloadView<StatefulSet>>,
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

impl ClusterLookup {
    /// Starts the watches over `scope`; Secrets and ConfigMaps also in
    /// `cluster_object_namespace` (ClusterTriggerAuthentications' references).
    pub fn start(
        client: &Client,
        scope: &Scope,
        cluster_object_namespace: &str,
    ) -> (ClusterLookup, Vec<JoinHandle<()>>) {
        let all = watcher::Config::default();
        let namespaces = scope.namespaces();
        let with_cluster_objects = scope.with(cluster_object_namespace);
        fn keep<T>(tasks: &mut Vec<JoinHandle<()>>, (store, mut t): (T, Vec<JoinHandle<()>>)) -> T {
            tasks.append(&mut t);
            store
        }
        let mut tasks = Vec::new();
        let t = &mut tasks;
        let secrets = keep(
            t,
            watch_scoped(client, &with_cluster_objects, &all, slim, |_| {}),
        );
        let config_maps = keep(
            t,
            watch_scoped(client, &with_cluster_objects, &all, slim, |_| {}),
        );
        let trigger_auths = keep(t, watch_scoped(client, namespaces, &all, slim, |_| {}));
        let deployments = keep(
            t,
            watch_scoped(client, namespaces, &all, WorkloadView::slim, |_| {}),
        );
        let stateful_sets = keep(
            t,
            watch_scoped(client, namespaces, &all, WorkloadView::slim, |_| {}),
        );
        let (cluster_trigger_auths, cta_task) = reflect_one(
            Api::<ClusterTriggerAuthentication>::all(client.clone()),
            all,
            slim,
            |_| {},
        );
        tasks.push(cta_task);
        (
            ClusterLookup {
                secrets,
                config_maps,
                trigger_auths,
                cluster_trigger_auths,
                deployments,
                stateful_sets,
            },
            tasks,
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
        self.secrets.wait_until_ready().await;
        self.config_maps.wait_until_ready().await;
        self.trigger_auths.wait_until_ready().await;
        let _ = self.cluster_trigger_auths.wait_until_ready().await;
        self.deployments.wait_until_ready().await;
        self.stateful_sets.wait_until_ready().await;
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
