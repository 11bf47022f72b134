//! The resources the simulator serves: built-in kinds and the kinds of applied CRDs.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, JSONSchemaProps,
};

/// Group, version and plural name: what a URL addresses.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gvr {
    /// API group ("" for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural resource name.
    pub resource: String,
}

impl Gvr {
    /// A GVR.
    pub fn new(group: &str, version: &str, resource: &str) -> Self {
        Self {
            group: group.to_owned(),
            version: version.to_owned(),
            resource: resource.to_owned(),
        }
    }

    /// `apiVersion` of objects of this resource.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// Built-in kinds whose behaviour the simulator models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Builtin {
    Namespace,
    ConfigMap,
    Secret,
    Event,
    EventV1,
    Pod,
    Service,
    ServiceAccount,
    Endpoints,
    Deployment,
    StatefulSet,
    ReplicaSet,
    DaemonSet,
    Job,
    CronJob,
    HorizontalPodAutoscaler,
    Lease,
    ApiService,
    CustomResourceDefinition,
    Role,
    RoleBinding,
    ClusterRole,
    ClusterRoleBinding,
    PodDisruptionBudget,
    FlowSchema,
    PriorityLevelConfiguration,
}

/// What a CRD contributes for one served version of its kind.
#[derive(Clone, Debug)]
pub struct CustomKind {
    /// Name of the CRD (`<plural>.<group>`).
    pub crd_name: String,
    /// The structural schema of this version.
    pub schema: JSONSchemaProps,
    /// The schema as JSON (for CEL and defaulting).
    pub schema_json: serde_json::Value,
    /// Compiled CEL rules of the schema.
    pub cel: Arc<kube_cel::CompiledSchema>,
    /// Printer columns.
    pub columns: Vec<CustomResourceColumnDefinition>,
    /// Field paths usable in field selectors (besides metadata.name and metadata.namespace).
    pub selectable_fields: Vec<String>,
    /// Whether `x-kubernetes-preserve-unknown-fields` is set at the root.
    pub preserve_unknown_fields: bool,
}

/// How the object of a kind is treated.
#[derive(Clone, Debug)]
pub enum Semantics {
    /// A built-in kind.
    Builtin(Builtin),
    /// A custom resource.
    Custom(Arc<CustomKind>),
}

/// JSON paths of the scale subresource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalePaths {
    /// Path of the desired replicas, e.g. `.spec.replicas`.
    pub spec_replicas: String,
    /// Path of the observed replicas, e.g. `.status.replicas`.
    pub status_replicas: String,
    /// Path of the serialized label selector, if any.
    pub label_selector: Option<String>,
}

/// One served resource.
#[derive(Clone, Debug)]
pub struct ResourceInfo {
    /// Group, version, plural.
    pub gvr: Gvr,
    /// Kind.
    pub kind: String,
    /// Kind of list responses.
    pub list_kind: String,
    /// Singular name.
    pub singular: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Short names for kubectl.
    pub short_names: Vec<String>,
    /// Categories (e.g. `all`).
    pub categories: Vec<String>,
    /// Whether a `/status` subresource exists.
    pub status: bool,
    /// The `/scale` subresource, if any.
    pub scale: Option<ScalePaths>,
    /// Whether this version is the storage version (the one listed first in discovery).
    pub storage: bool,
    /// Behaviour.
    pub semantics: Semantics,
}

impl ResourceInfo {
    /// The built-in kind, if this is one.
    pub fn builtin(&self) -> Option<Builtin> {
        match &self.semantics {
            Semantics::Builtin(b) => Some(*b),
            Semantics::Custom(_) => None,
        }
    }

    /// The custom kind, if this is one.
    pub fn custom(&self) -> Option<&Arc<CustomKind>> {
        match &self.semantics {
            Semantics::Custom(c) => Some(c),
            Semantics::Builtin(_) => None,
        }
    }

    /// `apiVersion` of objects.
    pub fn api_version(&self) -> String {
        self.gvr.api_version()
    }

    /// Whether the kind has a `spec` whose changes bump `metadata.generation`.
    pub fn tracks_generation(&self) -> bool {
        match &self.semantics {
            Semantics::Custom(_) => true,
            Semantics::Builtin(b) => matches!(
                b,
                Builtin::Deployment
                    | Builtin::StatefulSet
                    | Builtin::ReplicaSet
                    | Builtin::DaemonSet
                    | Builtin::Job
                    | Builtin::CronJob
                    | Builtin::HorizontalPodAutoscaler
                    | Builtin::PodDisruptionBudget
                    | Builtin::CustomResourceDefinition
            ),
        }
    }
}

/// `(group, version, plural, kind, namespaced, short names, status, scale, kind)`.
type BuiltinDef = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    bool,
    bool,
    Builtin,
);

const BUILTINS: &[BuiltinDef] = {
    use Builtin as B;
    &[
        (
            "",
            "v1",
            "namespaces",
            "Namespace",
            false,
            &["ns"],
            true,
            false,
            B::Namespace,
        ),
        (
            "",
            "v1",
            "configmaps",
            "ConfigMap",
            true,
            &["cm"],
            false,
            false,
            B::ConfigMap,
        ),
        (
            "",
            "v1",
            "secrets",
            "Secret",
            true,
            &[],
            false,
            false,
            B::Secret,
        ),
        (
            "",
            "v1",
            "events",
            "Event",
            true,
            &["ev"],
            false,
            false,
            B::Event,
        ),
        ("", "v1", "pods", "Pod", true, &["po"], true, false, B::Pod),
        (
            "",
            "v1",
            "services",
            "Service",
            true,
            &["svc"],
            true,
            false,
            B::Service,
        ),
        (
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            false,
            false,
            B::ServiceAccount,
        ),
        (
            "",
            "v1",
            "endpoints",
            "Endpoints",
            true,
            &["ep"],
            false,
            false,
            B::Endpoints,
        ),
        (
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            &["deploy"],
            true,
            true,
            B::Deployment,
        ),
        (
            "apps",
            "v1",
            "statefulsets",
            "StatefulSet",
            true,
            &["sts"],
            true,
            true,
            B::StatefulSet,
        ),
        (
            "apps",
            "v1",
            "replicasets",
            "ReplicaSet",
            true,
            &["rs"],
            true,
            true,
            B::ReplicaSet,
        ),
        (
            "apps",
            "v1",
            "daemonsets",
            "DaemonSet",
            true,
            &["ds"],
            true,
            false,
            B::DaemonSet,
        ),
        ("batch", "v1", "jobs", "Job", true, &[], true, false, B::Job),
        (
            "batch",
            "v1",
            "cronjobs",
            "CronJob",
            true,
            &["cj"],
            true,
            false,
            B::CronJob,
        ),
        (
            "autoscaling",
            "v2",
            "horizontalpodautoscalers",
            "HorizontalPodAutoscaler",
            true,
            &["hpa"],
            true,
            false,
            B::HorizontalPodAutoscaler,
        ),
        (
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            false,
            false,
            B::Lease,
        ),
        (
            "events.k8s.io",
            "v1",
            "events",
            "Event",
            true,
            &["ev"],
            false,
            false,
            B::EventV1,
        ),
        (
            "apiregistration.k8s.io",
            "v1",
            "apiservices",
            "APIService",
            false,
            &[],
            true,
            false,
            B::ApiService,
        ),
        (
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            true,
            false,
            B::CustomResourceDefinition,
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "roles",
            "Role",
            true,
            &[],
            false,
            false,
            B::Role,
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            "RoleBinding",
            true,
            &[],
            false,
            false,
            B::RoleBinding,
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "clusterroles",
            "ClusterRole",
            false,
            &[],
            false,
            false,
            B::ClusterRole,
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            &[],
            false,
            false,
            B::ClusterRoleBinding,
        ),
        (
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
            &["pdb"],
            true,
            false,
            B::PodDisruptionBudget,
        ),
        (
            "flowcontrol.apiserver.k8s.io",
            "v1",
            "flowschemas",
            "FlowSchema",
            false,
            &[],
            true,
            false,
            B::FlowSchema,
        ),
        (
            "flowcontrol.apiserver.k8s.io",
            "v1",
            "prioritylevelconfigurations",
            "PriorityLevelConfiguration",
            false,
            &[],
            true,
            false,
            B::PriorityLevelConfiguration,
        ),
    ]
};

/// The built-in resources.
pub fn builtins() -> Vec<ResourceInfo> {
    BUILTINS
        .iter()
        .map(
            |&(group, version, resource, kind, namespaced, short, status, scale, b)| ResourceInfo {
                gvr: Gvr::new(group, version, resource),
                kind: kind.to_owned(),
                list_kind: format!("{kind}List"),
                singular: kind.to_ascii_lowercase(),
                namespaced,
                short_names: short.iter().map(|s| (*s).to_owned()).collect(),
                categories: match b {
                    Builtin::Pod
                    | Builtin::Service
                    | Builtin::Deployment
                    | Builtin::StatefulSet
                    | Builtin::ReplicaSet
                    | Builtin::DaemonSet
                    | Builtin::Job
                    | Builtin::CronJob
                    | Builtin::HorizontalPodAutoscaler => vec!["all".to_owned()],
                    _ => Vec::new(),
                },
                status,
                scale: scale.then(|| ScalePaths {
                    spec_replicas: ".spec.replicas".to_owned(),
                    status_replicas: ".status.replicas".to_owned(),
                    label_selector: Some(".status.selector".to_owned()),
                }),
                storage: true,
                semantics: Semantics::Builtin(b),
            },
        )
        .collect()
}

/// All served resources; CRDs add and remove entries at run time.
#[derive(Debug)]
pub struct Registry {
    resources: RwLock<BTreeMap<Gvr, Arc<ResourceInfo>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// A registry holding the built-in resources.
    pub fn new() -> Self {
        let map = builtins()
            .into_iter()
            .map(|r| (r.gvr.clone(), Arc::new(r)))
            .collect();
        Self {
            resources: RwLock::new(map),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Gvr, Arc<ResourceInfo>>> {
        self.resources
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<Gvr, Arc<ResourceInfo>>> {
        self.resources
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The resource at a GVR.
    pub fn get(&self, gvr: &Gvr) -> Option<Arc<ResourceInfo>> {
        self.read().get(gvr).cloned()
    }

    /// The resource of a kind in an API version (`apps/v1`, `v1`).
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceInfo>> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        self.read()
            .values()
            .find(|r| r.gvr.group == group && r.gvr.version == version && r.kind == kind)
            .cloned()
    }

    /// Every resource of a group and kind, in any version.
    pub fn by_group_kind(&self, group: &str, kind: &str) -> Vec<Arc<ResourceInfo>> {
        self.read()
            .values()
            .filter(|r| r.gvr.group == group && r.kind == kind)
            .cloned()
            .collect()
    }

    /// Every served resource.
    pub fn all(&self) -> Vec<Arc<ResourceInfo>> {
        self.read().values().cloned().collect()
    }

    /// Adds or replaces the resources of a CRD (one per served version).
    pub fn put_custom(&self, crd_name: &str, infos: Vec<ResourceInfo>) {
        let mut map = self.write();
        map.retain(|_, r| r.custom().is_none_or(|c| c.crd_name != crd_name));
        for info in infos {
            map.insert(info.gvr.clone(), Arc::new(info));
        }
    }

    /// Removes the resources of a CRD.
    pub fn remove_custom(&self, crd_name: &str) {
        self.write()
            .retain(|_, r| r.custom().is_none_or(|c| c.crd_name != crd_name));
    }
}
