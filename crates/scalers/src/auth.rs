//! Resolving a trigger's parameters from its TriggerAuthentication or
//! ClusterTriggerAuthentication, and the environment of the scale target's container, the way
//! KEDA does.
//!
//! Resolution reads Secrets and ConfigMaps through [`ObjectLookup`], so the operator can answer
//! from its watches and `ringscale validate` from the objects in its input. An object that cannot
//! be seen (offline, not in the input) is a [`ProblemKind::NotVisible`] problem, which callers
//! report as a warning; an object that does not exist is [`ProblemKind::NotFound`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Secret};
use ringscale_api::{AuthenticationKind, TriggerAuthenticationSpec};

/// The answer of a lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup<T> {
    /// The object exists; its data.
    Found(T),
    /// The object does not exist.
    NotFound,
    /// The object cannot be seen from here (offline, not in the input).
    NotVisible,
}

/// Where resolution reads the objects triggers refer to.
pub trait ObjectLookup {
    /// The decoded data of a Secret.
    fn secret(&self, namespace: &str, name: &str) -> Lookup<BTreeMap<String, String>>;
    /// The data of a ConfigMap.
    fn config_map(&self, namespace: &str, name: &str) -> Lookup<BTreeMap<String, String>>;
    /// The spec of a TriggerAuthentication.
    fn trigger_authentication(
        &self,
        namespace: &str,
        name: &str,
    ) -> Lookup<TriggerAuthenticationSpec>;
    /// The spec of a ClusterTriggerAuthentication.
    fn cluster_trigger_authentication(&self, name: &str) -> Lookup<TriggerAuthenticationSpec>;
    /// The pod template of a scale target (`kind` and `api_version` as in `scaleTargetRef`).
    fn pod_template(
        &self,
        namespace: &str,
        api_version: &str,
        kind: &str,
        name: &str,
    ) -> Lookup<PodSpec>;
}

/// The data of a Secret as strings (`data` decoded; `stringData`, which only manifests carry,
/// merged over it as the API server would).
pub fn secret_data(secret: &Secret) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// The data of a ConfigMap (`binaryData` is not used for parameters, as in KEDA).
pub fn config_map_data(config_map: &ConfigMap) -> BTreeMap<String, String> {
    config_map.data.clone().unwrap_or_default()
}

/// An in-memory set of the objects triggers refer to.
#[derive(Clone, Default)]
pub struct ObjectSet {
    secrets: HashMap<(String, String), BTreeMap<String, String>>,
    config_maps: HashMap<(String, String), BTreeMap<String, String>>,
    trigger_auths: HashMap<(String, String), TriggerAuthenticationSpec>,
    cluster_trigger_auths: HashMap<String, TriggerAuthenticationSpec>,
    workloads: HashMap<(String, String, String), PodSpec>,
    complete: bool,
}

impl ObjectSet {
    /// An empty set. `complete` says whether it holds every object that exists: then a missing
    /// object is [`Lookup::NotFound`]; otherwise [`Lookup::NotVisible`].
    pub fn new(complete: bool) -> Self {
        ObjectSet {
            complete,
            ..ObjectSet::default()
        }
    }

    /// Adds a Secret.
    pub fn add_secret(&mut self, namespace: &str, name: &str, data: BTreeMap<String, String>) {
        self.secrets
            .insert((namespace.to_owned(), name.to_owned()), data);
    }

    /// Adds a ConfigMap.
    pub fn add_config_map(&mut self, namespace: &str, name: &str, data: BTreeMap<String, String>) {
        self.config_maps
            .insert((namespace.to_owned(), name.to_owned()), data);
    }

    /// Adds a TriggerAuthentication.
    pub fn add_trigger_authentication(
        &mut self,
        namespace: &str,
        name: &str,
        spec: TriggerAuthenticationSpec,
    ) {
        self.trigger_auths
            .insert((namespace.to_owned(), name.to_owned()), spec);
    }

    /// Adds a ClusterTriggerAuthentication.
    pub fn add_cluster_trigger_authentication(
        &mut self,
        name: &str,
        spec: TriggerAuthenticationSpec,
    ) {
        self.cluster_trigger_auths.insert(name.to_owned(), spec);
    }

    /// Adds the pod template of a workload of `kind` (Deployment, StatefulSet, ...).
    pub fn add_workload(&mut self, namespace: &str, kind: &str, name: &str, pod: PodSpec) {
        self.workloads.insert(
            (namespace.to_owned(), kind.to_owned(), name.to_owned()),
            pod,
        );
    }

    fn answer<T: Clone>(&self, found: Option<&T>) -> Lookup<T> {
        match found {
            Some(d) => Lookup::Found(d.clone()),
            None if self.complete => Lookup::NotFound,
            None => Lookup::NotVisible,
        }
    }

    fn get(
        &self,
        map: &HashMap<(String, String), BTreeMap<String, String>>,
        namespace: &str,
        name: &str,
    ) -> Lookup<BTreeMap<String, String>> {
        self.answer(map.get(&(namespace.to_owned(), name.to_owned())))
    }
}

impl ObjectLookup for ObjectSet {
    fn secret(&self, namespace: &str, name: &str) -> Lookup<BTreeMap<String, String>> {
        self.get(&self.secrets, namespace, name)
    }

    fn config_map(&self, namespace: &str, name: &str) -> Lookup<BTreeMap<String, String>> {
        self.get(&self.config_maps, namespace, name)
    }

    fn trigger_authentication(
        &self,
        namespace: &str,
        name: &str,
    ) -> Lookup<TriggerAuthenticationSpec> {
        self.answer(
            self.trigger_auths
                .get(&(namespace.to_owned(), name.to_owned())),
        )
    }

    fn cluster_trigger_authentication(&self, name: &str) -> Lookup<TriggerAuthenticationSpec> {
        self.answer(self.cluster_trigger_auths.get(name))
    }

    fn pod_template(
        &self,
        namespace: &str,
        _api_version: &str,
        kind: &str,
        name: &str,
    ) -> Lookup<PodSpec> {
        self.answer(
            self.workloads
                .get(&(namespace.to_owned(), kind.to_owned(), name.to_owned())),
        )
    }
}

impl fmt::Debug for ObjectSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectSet")
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("config_maps", &self.config_maps.keys().collect::<Vec<_>>())
            .field(
                "trigger_auths",
                &self.trigger_auths.keys().collect::<Vec<_>>(),
            )
            .field(
                "cluster_trigger_auths",
                &self.cluster_trigger_auths.keys().collect::<Vec<_>>(),
            )
            .field("workloads", &self.workloads.keys().collect::<Vec<_>>())
            .field("complete", &self.complete)
            .finish()
    }
}

/// What kind of problem resolution met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// A referenced object or key does not exist.
    NotFound,
    /// A referenced object cannot be seen from here, so the reference was not checked.
    NotVisible,
    /// The source (a secret store, a token request) is not supported by ringscale.
    Unsupported,
    /// The reference itself is wrong.
    Invalid,
}

/// What a problem leaves unknown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Affects {
    /// A trigger parameter supplied by the authentication object.
    Parameter(String),
    /// An environment variable of the scale target's container.
    Variable(String),
    /// Every environment variable (the container, or an `envFrom` source, cannot be read).
    AllVariables,
    /// Nothing in particular.
    Nothing,
}

/// A problem found while resolving parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthProblem {
    /// What kind of problem.
    pub kind: ProblemKind,
    /// What the problem leaves unknown.
    pub affects: Affects,
    /// Where, inside the authentication object (`spec.secretTargetRef[0]`) or the workload
    /// (`env`).
    pub path: String,
    /// What went wrong. Never contains a secret value.
    pub message: String,
}

impl fmt::Display for AuthProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Where a trigger's parameters are resolved.
#[derive(Clone, Copy, Debug)]
pub struct AuthContext<'a> {
    /// Namespace of the ScaledObject or ScaledJob (and of namespaced TriggerAuthentications and
    /// the scale target).
    pub namespace: &'a str,
    /// Namespace ClusterTriggerAuthentications read Secrets and ConfigMaps from: the operator's
    /// namespace (KEDA's `KEDA_CLUSTER_OBJECT_NAMESPACE`).
    pub cluster_object_namespace: &'a str,
    /// Root directory of `filePath` sources (KEDA's `--filepath-auth-root-path`); `None`
    /// disables them.
    pub file_auth_root: Option<&'a Path>,
    /// The pod template of the scale target (a ScaledJob's job template), for `env` sources.
    pub pod_spec: Option<&'a PodSpec>,
}

/// Parameters resolved from an authentication object.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ResolvedAuth {
    /// Parameter name to value.
    pub params: BTreeMap<String, String>,
    /// The pod identity provider, if the object names one.
    pub pod_identity: Option<String>,
    /// Problems met; parameters they concern are absent.
    pub problems: Vec<AuthProblem>,
}

impl fmt::Debug for ResolvedAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedAuth")
            .field("params", &self.params.keys().collect::<Vec<_>>())
            .field("pod_identity", &self.pod_identity)
            .field("problems", &self.problems)
            .finish()
    }
}

/// `envSourceContainerName` names no container of the scale target (KEDA's message).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("couldn't find container with name {0} on the scale target")]
struct NoSuchContainer(String);

/// The container whose environment a trigger reads: the named one, or the first.
fn pick_container<'a>(
    pod: &'a PodSpec,
    name: Option<&str>,
) -> Result<Option<&'a Container>, NoSuchContainer> {
    match name.filter(|n| !n.is_empty()) {
        Some(n) => pod
            .containers
            .iter()
            .find(|c| c.name == n)
            .map(Some)
            .ok_or_else(|| NoSuchContainer(n.to_owned())),
        None => Ok(pod.containers.first()),
    }
}

/// The environment of the container `container_name` (or the first) of `pod`: `envFrom`
/// ConfigMaps and Secrets (with prefixes), then `env` values (with `$(VAR)` references
/// expanded), ConfigMap keys and Secret keys. `fieldRef` and `resourceFieldRef` values are
/// skipped, as in KEDA.
pub fn resolve_env(
    pod: Option<&PodSpec>,
    container_name: Option<&str>,
    namespace: &str,
    lookup: &dyn ObjectLookup,
) -> (BTreeMap<String, String>, Vec<AuthProblem>) {
    let mut env = BTreeMap::new();
    let mut problems = Vec::new();
    let Some(pod) = pod else {
        return (env, problems);
    };
    let container = match pick_container(pod, container_name) {
        Ok(Some(c)) => c,
        Ok(None) => return (env, problems),
        Err(e) => {
            problems.push(AuthProblem {
                affects: Affects::AllVariables,
                kind: ProblemKind::NotFound,
                path: "envSourceContainerName".to_owned(),
                message: e.to_string(),
            });
            return (env, problems);
        }
    };
    let base = format!("containers[{}]", container.name);
    for (i, source) in container.env_from.iter().flatten().enumerate() {
        let prefix = source.prefix.clone().unwrap_or_default();
        let path = format!("{base}.envFrom[{i}]");
        let (kind, name, optional, data) = if let Some(r) = &source.config_map_ref {
            (
                "ConfigMap",
                r.name.clone(),
                r.optional.unwrap_or(false),
                lookup.config_map(namespace, &r.name),
            )
        } else if let Some(r) = &source.secret_ref {
            (
                "Secret",
                r.name.clone(),
                r.optional.unwrap_or(false),
                lookup.secret(namespace, &r.name),
            )
        } else {
            continue;
        };
        match data {
            Lookup::Found(data) => {
                for (k, v) in data {
                    env.insert(format!("{prefix}{k}"), v);
                }
            }
            Lookup::NotFound if optional => {}
            Lookup::NotFound => problems.push(AuthProblem {
                affects: Affects::AllVariables,
                kind: ProblemKind::NotFound,
                path,
                message: format!("{kind} {namespace}/{name} not found"),
            }),
            Lookup::NotVisible => problems.push(AuthProblem {
                affects: Affects::AllVariables,
                kind: ProblemKind::NotVisible,
                path,
                message: format!("not checked: {kind} {name} is not in the input"),
            }),
        }
    }
    for var in container.env.iter().flatten() {
        let path = format!("{base}.env[{}]", var.name);
        if let Some(value) = var.value.as_deref().filter(|v| !v.is_empty()) {
            let expanded = expand(value, &env);
            env.insert(var.name.clone(), expanded);
            continue;
        }
        let Some(from) = &var.value_from else {
            env.insert(var.name.clone(), String::new());
            continue;
        };
        let (kind, name, key, optional, data) = if let Some(r) = &from.secret_key_ref {
            (
                "Secret",
                r.name.clone(),
                r.key.clone(),
                r.optional.unwrap_or(false),
                lookup.secret(namespace, &r.name),
            )
        } else if let Some(r) = &from.config_map_key_ref {
            (
                "ConfigMap",
                r.name.clone(),
                r.key.clone(),
                r.optional.unwrap_or(false),
                lookup.config_map(namespace, &r.name),
            )
        } else {
            continue;
        };
        match data {
            Lookup::Found(data) => match data.get(&key) {
                Some(v) => {
                    env.insert(var.name.clone(), v.clone());
                }
                None if optional => {}
                None => problems.push(AuthProblem {
                    affects: Affects::Variable(var.name.clone()),
                    kind: ProblemKind::NotFound,
                    path,
                    message: format!("key {key:?} not found in {kind} {namespace}/{name}"),
                }),
            },
            Lookup::NotFound if optional => {}
            Lookup::NotFound => problems.push(AuthProblem {
                affects: Affects::Variable(var.name.clone()),
                kind: ProblemKind::NotFound,
                path,
                message: format!("{kind} {namespace}/{name} not found"),
            }),
            Lookup::NotVisible => problems.push(AuthProblem {
                affects: Affects::Variable(var.name.clone()),
                kind: ProblemKind::NotVisible,
                path,
                message: format!("not checked: {kind} {name} is not in the input"),
            }),
        }
    }
    (env, problems)
}

/// Kubernetes' `$(VAR)` expansion: `$$` is a literal `$`, unknown references stay as written.
fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let bytes = value.as_bytes();
    let mut out = String::with_capacity(value.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                    continue;
                }
                b'(' => {
                    if let Some(close) = value[i + 2..].find(')') {
                        let name = &value[i + 2..i + 2 + close];
                        match env.get(name) {
                            Some(v) => out.push_str(v),
                            None => out.push_str(&value[i..i + 3 + close]),
                        }
                        i += 3 + close;
                        continue;
                    }
                }
                _ => {}
            }
        }
        let ch = value[i..].chars().next().unwrap_or_default();
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}

/// Resolves the parameters an authentication object supplies, in KEDA's order (later sources
/// override earlier ones for the same parameter): `podIdentity`, `env`, `configMapTargetRef`,
/// `secretTargetRef`, `filePath` (ClusterTriggerAuthentication only), `oauth2`. Secret stores
/// (HashiCorp Vault, Azure Key Vault, GCP Secret Manager, AWS Secrets Manager and Parameter
/// Store) and bound service account tokens are reported as unsupported.
pub fn resolve_auth(
    spec: &TriggerAuthenticationSpec,
    kind: &AuthenticationKind,
    ctx: &AuthContext<'_>,
    lookup: &dyn ObjectLookup,
) -> ResolvedAuth {
    let mut out = ResolvedAuth::default();
    let cluster = matches!(kind, AuthenticationKind::ClusterTriggerAuthentication);
    let object_ns = if cluster {
        ctx.cluster_object_namespace
    } else {
        ctx.namespace
    };
    if let Some(pi) = &spec.pod_identity {
        out.pod_identity = Some(pi.provider.as_str().to_owned());
    }
    for (i, e) in spec.env.iter().flatten().enumerate() {
        let (env, problems) = resolve_env(
            ctx.pod_spec,
            e.container_name.as_deref(),
            ctx.namespace,
            lookup,
        );
        for mut p in problems {
            p.path = format!("spec.env[{i}]: {}", p.path);
            out.problems.push(p);
        }
        match env.get(&e.name) {
            Some(v) => {
                out.params.insert(e.parameter.clone(), v.clone());
            }
            None if ctx.pod_spec.is_some() => out.problems.push(AuthProblem {
                affects: Affects::Parameter(e.parameter.clone()),
                kind: ProblemKind::NotFound,
                path: format!("spec.env[{i}]"),
                message: format!(
                    "the scale target's container has no environment variable {}",
                    e.name
                ),
            }),
            None => out.problems.push(AuthProblem {
                affects: Affects::Parameter(e.parameter.clone()),
                kind: ProblemKind::NotVisible,
                path: format!("spec.env[{i}]"),
                message: format!(
                    "not checked: the scale target is not in the input, so {} cannot be read",
                    e.name
                ),
            }),
        }
    }
    for (i, r) in spec.config_map_target_ref.iter().flatten().enumerate() {
        let path = format!("spec.configMapTargetRef[{i}]");
        if let Some(v) = key_of(
            &r.parameter,
            "ConfigMap",
            lookup.config_map(object_ns, &r.name),
            object_ns,
            &r.name,
            &r.key,
            &path,
            &mut out.problems,
        ) {
            out.params.insert(r.parameter.clone(), v);
        }
    }
    for (i, r) in spec.secret_target_ref.iter().flatten().enumerate() {
        let path = format!("spec.secretTargetRef[{i}]");
        if let Some(v) = key_of(
            &r.parameter,
            "Secret",
            lookup.secret(object_ns, &r.name),
            object_ns,
            &r.name,
            &r.key,
            &path,
            &mut out.problems,
        ) {
            out.params.insert(r.parameter.clone(), v);
        }
    }
    for (i, f) in spec.file_path.iter().flatten().enumerate() {
        let path = format!("spec.filePath[{i}]");
        if !cluster {
            out.problems.push(AuthProblem {
                affects: Affects::Nothing,
                kind: ProblemKind::Invalid,
                path,
                message: "filePath is only supported for ClusterTriggerAuthentication".to_owned(),
            });
            continue;
        }
        match read_auth_file(ctx.file_auth_root, &f.path) {
            Ok(v) => {
                out.params.insert(f.parameter.clone(), v);
            }
            Err((kind, message)) => out.problems.push(AuthProblem {
                affects: Affects::Nothing,
                kind,
                path,
                message,
            }),
        }
    }
    if let Some(o) = &spec.oauth2 {
        let path = "spec.oauth2.clientSecret".to_owned();
        let r = &o.client_secret.value_from.secret_key_ref;
        if let Some(v) = key_of(
            "clientSecret",
            "Secret",
            lookup.secret(object_ns, &r.name),
            object_ns,
            &r.name,
            &r.key,
            &path,
            &mut out.problems,
        ) {
            out.params.insert("clientSecret".to_owned(), v);
        }
        out.params
            .insert("oauthTokenURI".to_owned(), o.token_url.clone());
        out.params
            .insert("clientID".to_owned(), o.client_id.clone());
        if let Some(scopes) = o.scopes.as_ref().filter(|s| !s.is_empty()) {
            out.params.insert("scopes".to_owned(), scopes.join(","));
        }
        if let Some(params) = o.token_url_params.as_ref().filter(|p| !p.is_empty()) {
            let encoded: String = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params.iter())
                .finish();
            out.params.insert("endpointParams".to_owned(), encoded);
        }
    }
    out.problems.extend(unsupported_sources(spec, false));
    out
}

/// The sources of an authentication object that ringscale does not support: secret stores,
/// bound service account tokens and, with `with_identity`, pod identities other than `none`
/// (which a trigger reports itself when it is parsed).
pub fn unsupported_sources(
    spec: &TriggerAuthenticationSpec,
    with_identity: bool,
) -> Vec<AuthProblem> {
    let mut out = Vec::new();
    let fields: [(&str, bool); 6] = [
        ("hashiCorpVault", spec.hashi_corp_vault.is_some()),
        ("azureKeyVault", spec.azure_key_vault.is_some()),
        ("gcpSecretManager", spec.gcp_secret_manager.is_some()),
        ("awsSecretManager", spec.aws_secret_manager.is_some()),
        ("awsParameterStore", spec.aws_parameter_store.is_some()),
        (
            "boundServiceAccountToken",
            spec.bound_service_account_token
                .as_ref()
                .is_some_and(|b| !b.is_empty()),
        ),
    ];
    for (field, present) in fields {
        if present {
            out.push(AuthProblem {
                kind: ProblemKind::Unsupported,
                affects: Affects::Nothing,
                path: format!("spec.{field}"),
                message: format!(
                    "{field} is not supported by ringscale; use secretTargetRef, configMapTargetRef, env or filePath"
                ),
            });
        }
    }
    if let Some(provider) = spec
        .pod_identity
        .as_ref()
        .filter(|_| with_identity)
        .map(|p| p.provider.as_str())
        .filter(|p| *p != "none")
    {
        out.push(AuthProblem {
            kind: ProblemKind::Unsupported,
            affects: Affects::Nothing,
            path: "spec.podIdentity.provider".to_owned(),
            message: format!("pod identity provider {provider:?} is not supported by ringscale"),
        });
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn key_of(
    parameter: &str,
    kind: &str,
    data: Lookup<BTreeMap<String, String>>,
    namespace: &str,
    name: &str,
    key: &str,
    path: &str,
    problems: &mut Vec<AuthProblem>,
) -> Option<String> {
    match data {
        Lookup::Found(data) => match data.get(key) {
            Some(v) => Some(v.clone()),
            None => {
                problems.push(AuthProblem {
                    affects: Affects::Parameter(parameter.to_owned()),
                    kind: ProblemKind::NotFound,
                    path: path.to_owned(),
                    message: format!("key {key:?} not found in {kind} {namespace}/{name}"),
                });
                None
            }
        },
        Lookup::NotFound => {
            problems.push(AuthProblem {
                affects: Affects::Parameter(parameter.to_owned()),
                kind: ProblemKind::NotFound,
                path: path.to_owned(),
                message: format!("{kind} {namespace}/{name} not found"),
            });
            None
        }
        Lookup::NotVisible => {
            problems.push(AuthProblem {
                affects: Affects::Parameter(parameter.to_owned()),
                kind: ProblemKind::NotVisible,
                path: path.to_owned(),
                message: format!("not checked: {kind} {name} is not in the input"),
            });
            None
        }
    }
}

/// Reads a `filePath` parameter: a relative path without `..`, resolved under `root` and staying
/// there after symlinks are followed. Files over 1 MiB are refused.
fn read_auth_file(root: Option<&Path>, relative: &str) -> Result<String, (ProblemKind, String)> {
    let Some(root) = root else {
        return Err((
            ProblemKind::NotVisible,
            "not checked: no file-auth root path is configured (--filepath-auth-root-path)"
                .to_owned(),
        ));
    };
    let rel = Path::new(relative);
    if rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err((
            ProblemKind::Invalid,
            "filePath must be a relative path without '..'".to_owned(),
        ));
    }
    let root_real = root.canonicalize().map_err(|e| {
        (
            ProblemKind::NotFound,
            format!("the file-auth root cannot be read: {e}"),
        )
    })?;
    let full: PathBuf = root_real.join(rel);
    let real = full.canonicalize().map_err(|_| {
        (
            ProblemKind::NotFound,
            format!("file {relative} not found under the file-auth root"),
        )
    })?;
    if !real.starts_with(&root_real) {
        return Err((
            ProblemKind::Invalid,
            format!("file {relative} resolves outside the file-auth root"),
        ));
    }
    let meta = std::fs::metadata(&real).map_err(|e| {
        (
            ProblemKind::NotFound,
            format!("file {relative} cannot be read: {e}"),
        )
    })?;
    if meta.len() > 1024 * 1024 {
        return Err((
            ProblemKind::Invalid,
            format!("file {relative} is larger than 1 MiB"),
        ));
    }
    std::fs::read_to_string(&real).map_err(|e| {
        (
            ProblemKind::Invalid,
            format!("file {relative} cannot be read as text: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
        SecretKeySelector,
    };
    use ringscale_api::trigger_auth::{AuthEnvironment, AuthFilePath, AuthTargetRef};

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn pod() -> PodSpec {
        let var = |name: &str, value: Option<&str>, from: Option<EnvVarSource>| EnvVar {
            name: name.into(),
            value: value.map(Into::into),
            value_from: from,
        };
        PodSpec {
            containers: vec![
                Container {
                    name: "app".into(),
                    env_from: Some(vec![EnvFromSource {
                        config_map_ref: Some(ConfigMapEnvSource {
                            name: "shared".into(),
                            optional: None,
                        }),
                        prefix: Some("CM_".into()),
                        secret_ref: None,
                    }]),
                    env: Some(vec![
                        var("HOST", Some("redis"), None),
                        var("ADDR", Some("$(HOST):6379 $$(HOST) $(NOPE)"), None),
                        var(
                            "PASS",
                            None,
                            Some(EnvVarSource {
                                secret_key_ref: Some(SecretKeySelector {
                                    name: "creds".into(),
                                    key: "password".into(),
                                    optional: None,
                                }),
                                ..Default::default()
                            }),
                        ),
                        var(
                            "LEVEL",
                            None,
                            Some(EnvVarSource {
                                config_map_key_ref: Some(ConfigMapKeySelector {
                                    name: "shared".into(),
                                    key: "level".into(),
                                    optional: None,
                                }),
                                ..Default::default()
                            }),
                        ),
                    ]),
                    ..Default::default()
                },
                Container {
                    name: "sidecar".into(),
                    env: Some(vec![var("SIDE", Some("yes"), None)]),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn container_env_resolves_like_kubernetes() {
        let mut objects = ObjectSet::new(true);
        objects.add_secret("ns", "creds", data(&[("password", "s3cret")]));
        objects.add_config_map("ns", "shared", data(&[("level", "debug")]));
        let (env, problems) = resolve_env(Some(&pod()), None, "ns", &objects);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(env["ADDR"], "redis:6379 $(HOST) $(NOPE)");
        assert_eq!(env["PASS"], "s3cret");
        assert_eq!(env["CM_level"], "debug");
        assert_eq!(env["LEVEL"], "debug");
        assert!(!env.contains_key("SIDE"));
        let (env, _) = resolve_env(Some(&pod()), Some("sidecar"), "ns", &objects);
        assert_eq!(env["SIDE"], "yes");
        let (_, problems) = resolve_env(Some(&pod()), Some("nope"), "ns", &objects);
        assert_eq!(problems[0].kind, ProblemKind::NotFound);

        let missing = ObjectSet::new(true);
        let (_, problems) = resolve_env(Some(&pod()), None, "ns", &missing);
        assert!(
            problems
                .iter()
                .any(|p| p.message == "Secret ns/creds not found"),
            "{problems:?}"
        );
        let offline = ObjectSet::new(false);
        let (_, problems) = resolve_env(Some(&pod()), None, "ns", &offline);
        assert!(problems.iter().all(|p| p.kind == ProblemKind::NotVisible));
    }

    #[test]
    fn authentication_sources_resolve_in_order_and_cluster_kind_reads_the_operator_namespace() {
        let mut objects = ObjectSet::new(true);
        objects.add_secret("app", "s", data(&[("pw", "from-app-ns")]));
        objects.add_secret("keda", "s", data(&[("pw", "from-operator-ns")]));
        objects.add_config_map("app", "c", data(&[("pw", "from-configmap")]));
        let spec = TriggerAuthenticationSpec {
            config_map_target_ref: Some(vec![AuthTargetRef {
                parameter: "password".into(),
                name: "c".into(),
                key: "pw".into(),
            }]),
            secret_target_ref: Some(vec![AuthTargetRef {
                parameter: "password".into(),
                name: "s".into(),
                key: "pw".into(),
            }]),
            env: Some(vec![AuthEnvironment {
                parameter: "host".into(),
                name: "HOST".into(),
                container_name: None,
            }]),
            ..Default::default()
        };
        let pod = pod();
        let ctx = AuthContext {
            namespace: "app",
            cluster_object_namespace: "keda",
            file_auth_root: None,
            pod_spec: Some(&pod),
        };
        let mut with_secrets = objects.clone();
        with_secrets.add_secret("app", "creds", data(&[("password", "x")]));
        with_secrets.add_config_map("app", "shared", data(&[]));
        let r = resolve_auth(
            &spec,
            &AuthenticationKind::TriggerAuthentication,
            &ctx,
            &with_secrets,
        );
        assert_eq!(
            r.params["password"], "from-app-ns",
            "secretTargetRef overrides configMapTargetRef"
        );
        assert_eq!(r.params["host"], "redis");
        let mut cluster_objects = with_secrets.clone();
        cluster_objects.add_config_map("keda", "c", data(&[("pw", "cm")]));
        let r = resolve_auth(
            &spec,
            &AuthenticationKind::ClusterTriggerAuthentication,
            &ctx,
            &cluster_objects,
        );
        assert_eq!(r.params["password"], "from-operator-ns");
        assert!(
            format!("{r:?}").find("from-operator-ns").is_none(),
            "Debug hides values"
        );

        let r = resolve_auth(
            &spec,
            &AuthenticationKind::TriggerAuthentication,
            &ctx,
            &ObjectSet::new(true),
        );
        assert!(
            r.problems
                .iter()
                .any(|p| p.path == "spec.secretTargetRef[0]" && p.kind == ProblemKind::NotFound)
        );
    }

    #[test]
    fn file_paths_stay_under_the_root() {
        let dir = std::env::temp_dir().join(format!("ringscale-auth-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("creds")).unwrap();
        std::fs::write(dir.join("creds/api-key"), "k3y").unwrap();
        let spec = |path: &str| TriggerAuthenticationSpec {
            file_path: Some(vec![AuthFilePath {
                parameter: "apiKey".into(),
                path: path.into(),
            }]),
            ..Default::default()
        };
        let ctx = AuthContext {
            namespace: "app",
            cluster_object_namespace: "keda",
            file_auth_root: Some(&dir),
            pod_spec: None,
        };
        let cta = AuthenticationKind::ClusterTriggerAuthentication;
        let objects = ObjectSet::new(true);
        assert_eq!(
            resolve_auth(&spec("creds/api-key"), &cta, &ctx, &objects).params["apiKey"],
            "k3y"
        );
        for bad in ["../etc/passwd", "/etc/passwd", "creds/../../x"] {
            let r = resolve_auth(&spec(bad), &cta, &ctx, &objects);
            assert_eq!(r.problems[0].kind, ProblemKind::Invalid, "{bad}");
        }
        let r = resolve_auth(
            &spec("creds/api-key"),
            &AuthenticationKind::TriggerAuthentication,
            &ctx,
            &objects,
        );
        assert!(
            r.problems[0]
                .message
                .contains("only supported for ClusterTriggerAuthentication")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
