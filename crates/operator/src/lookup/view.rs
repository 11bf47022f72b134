//! Deployments and StatefulSets as the lookups read them. The watch decodes each object into
//! [`WorkloadView`], which has only the fields a trigger or a scale decision reads: the names,
//! `spec.replicas`, `status.readyReplicas` and each container's name and environment (for
//! `*FromEnv` parameters). Everything else a workload carries (volumes, probes, resources, the
//! last-applied annotation, status conditions) is skipped while decoding and never allocated;
//! decoded into k8s-openapi's types, the rest took most of a replica's memory at 10,000 objects.

use std::marker::PhantomData;

use k8s_openapi::api::core::v1::{Container, EnvFromSource, EnvVar, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

/// A Deployment or StatefulSet (`K` names which: `WorkloadView<Deployment>`), with only the
/// fields the lookups read.
#[derive(Clone, Debug, Deserialize)]
#[serde(bound = "")]
pub struct WorkloadView<K> {
    /// Names and resourceVersion; annotations, labels, owners and managedFields are dropped.
    pub metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<ViewSpec>,
    #[serde(default)]
    status: Option<ViewStatus>,
    #[serde(skip)]
    kind: PhantomData<K>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct ViewSpec {
    #[serde(default)]
    replicas: Option<i32>,
    #[serde(default)]
    template: Option<ViewTemplate>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct ViewTemplate {
    #[serde(default)]
    spec: Option<ViewPodSpec>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct ViewPodSpec {
    #[serde(default)]
    containers: Option<Vec<ViewContainer>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ViewContainer {
    #[serde(default)]
    name: String,
    #[serde(default)]
    env: Option<Vec<EnvVar>>,
    #[serde(default)]
    env_from: Option<Vec<EnvFromSource>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ViewStatus {
    #[serde(default)]
    ready_replicas: Option<i32>,
}

impl<K> WorkloadView<K> {
    /// `spec.replicas` (1 when unset, as the API server defaults it) and `status.readyReplicas`.
    pub fn replicas(&self) -> (i32, i32) {
        (
            self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            self.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0),
        )
    }

    /// The pod template's containers with their names and environment, or `None` when the
    /// object has no pod template.
    pub fn pod_spec(&self) -> Option<PodSpec> {
        let spec = self.spec.as_ref()?.template.as_ref()?.spec.as_ref()?;
        Some(PodSpec {
            containers: spec
                .containers
                .iter()
                .flatten()
                .map(|c| Container {
                    name: c.name.clone(),
                    env: c.env.clone(),
                    env_from: c.env_from.clone(),
                    ..Container::default()
                })
                .collect(),
            ..PodSpec::default()
        })
    }

    /// Drops the metadata nothing reads (kept: name, namespace, uid, resourceVersion).
    pub fn slim(&mut self) {
        let meta = &mut self.metadata;
        meta.managed_fields = None;
        meta.annotations = None;
        meta.labels = None;
        meta.owner_references = None;
    }
}

impl<K: k8s_openapi::Resource> k8s_openapi::Resource for WorkloadView<K> {
    const API_VERSION: &'static str = K::API_VERSION;
    const GROUP: &'static str = K::GROUP;
    const KIND: &'static str = K::KIND;
    const VERSION: &'static str = K::VERSION;
    const URL_PATH_SEGMENT: &'static str = K::URL_PATH_SEGMENT;
    type Scope = K::Scope;
}

impl<K: k8s_openapi::Resource> k8s_openapi::Metadata for WorkloadView<K> {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use kube::Resource;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_view_keeps_what_the_lookups_read_and_names_its_kind() {
        let full = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7",
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                         "labels": {"app": "web"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{
                                      "name": "app", "image": "web:1",
                                      "env": [{"name": "QUEUE", "value": "orders"}],
                                      "envFrom": [{"secretRef": {"name": "creds"}}],
                                      "resources": {"limits": {"cpu": "1"}}}],
                                           "volumes": [{"name": "v", "emptyDir": {}}]}}},
            "status": {"replicas": 3, "readyReplicas": 2, "conditions": [{"type": "Available", "status": "True"}]}
        });
        let mut view: WorkloadView<Deployment> = serde_json::from_value(full).unwrap();
        view.slim();
        assert_eq!(view.replicas(), (3, 2));
        assert_eq!(view.metadata.name.as_deref(), Some("web"));
        assert_eq!(view.metadata.annotations, None);
        let pod = view.pod_spec().unwrap();
        assert_eq!(pod.containers.len(), 1);
        assert_eq!(pod.containers[0].name, "app");
        assert_eq!(pod.containers[0].image, None);
        assert_eq!(
            pod.containers[0].env.as_ref().unwrap()[0].value.as_deref(),
            Some("orders")
        );
        assert!(pod.containers[0].env_from.is_some());
        assert_eq!(WorkloadView::<Deployment>::kind(&()), "Deployment");
        assert_eq!(WorkloadView::<StatefulSet>::plural(&()), "statefulsets");
        assert_eq!(WorkloadView::<StatefulSet>::api_version(&()), "apps/v1");
    }

    #[test]
    fn missing_spec_and_status_read_as_the_api_defaults() {
        let view: WorkloadView<StatefulSet> =
            serde_json::from_value(json!({"metadata": {"name": "db"}, "spec": null})).unwrap();
        assert_eq!(view.replicas(), (1, 0));
        assert_eq!(view.pod_spec(), None);
    }
}
