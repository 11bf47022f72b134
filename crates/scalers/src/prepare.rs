//! Turning the triggers of a ScaledObject or ScaledJob into [`TriggerInput`]s: resolving each
//! trigger's authentication and the scale target's environment, and collecting what could not
//! be resolved, with paths inside the object.

use std::path::Path;

use k8s_openapi::api::core::v1::PodSpec;
use ringscale_api::{
    AuthenticationKind, ScaleTrigger, ScaledJob, ScaledObject, TriggerAuthenticationSpec,
};

use crate::auth::{
    Affects, AuthContext, AuthProblem, Lookup, ObjectLookup, ProblemKind, resolve_auth, resolve_env,
};
use crate::input::{Owner, OwnerKind, TriggerInput, Unresolved};

/// Settings of resolution.
#[derive(Clone, Copy, Debug)]
pub struct Settings<'a> {
    /// Namespace ClusterTriggerAuthentications read Secrets and ConfigMaps from (the operator's
    /// namespace).
    pub cluster_object_namespace: &'a str,
    /// Root of `filePath` sources, if enabled.
    pub file_auth_root: Option<&'a Path>,
    /// Namespace of objects that name none (`default`, as kubectl would apply them).
    pub default_namespace: &'a str,
}

impl Default for Settings<'_> {
    fn default() -> Self {
        Settings {
            cluster_object_namespace: "keda",
            file_auth_root: None,
            default_namespace: "default",
        }
    }
}

/// A problem of one trigger found while resolving it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TriggerProblem {
    /// What kind of problem.
    pub kind: ProblemKind,
    /// Path inside the ScaledObject or ScaledJob (`spec.triggers[0].authenticationRef`).
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// A trigger ready to be parsed, with the problems met while resolving it.
#[derive(Clone, Debug)]
pub struct PreparedTrigger {
    /// The trigger's input.
    pub input: TriggerInput,
    /// Problems met while resolving it.
    pub problems: Vec<TriggerProblem>,
}

/// Prepares the triggers of a ScaledObject.
pub fn scaled_object(
    so: &ScaledObject,
    lookup: &dyn ObjectLookup,
    settings: &Settings<'_>,
) -> Vec<PreparedTrigger> {
    let namespace = so
        .metadata
        .namespace
        .as_deref()
        .unwrap_or(settings.default_namespace);
    let target = &so.spec.scale_target_ref;
    let api_version = target.api_version.as_deref().unwrap_or("apps/v1");
    let kind = target.kind.as_deref().unwrap_or("Deployment");
    let pod = lookup.pod_template(namespace, api_version, kind, &target.name);
    let owner = Owner {
        kind: OwnerKind::ScaledObject,
        namespace: namespace.to_owned(),
        name: so.metadata.name.clone().unwrap_or_default(),
    };
    let as_metric_source = so.spec.scaling_modifiers().is_some();
    let what = format!("the scale target {kind} {}", target.name);
    prepare(
        owner,
        &so.spec.triggers,
        pod,
        &what,
        target.env_source_container_name.as_deref(),
        as_metric_source,
        lookup,
        settings,
    )
}

/// Prepares the triggers of a ScaledJob (the environment comes from its job template).
pub fn scaled_job(
    sj: &ScaledJob,
    lookup: &dyn ObjectLookup,
    settings: &Settings<'_>,
) -> Vec<PreparedTrigger> {
    let namespace = sj
        .metadata
        .namespace
        .as_deref()
        .unwrap_or(settings.default_namespace);
    let owner = Owner {
        kind: OwnerKind::ScaledJob,
        namespace: namespace.to_owned(),
        name: sj.metadata.name.clone().unwrap_or_default(),
    };
    let pod = match sj.spec.job_target_ref.typed() {
        Ok(job) => match job.template.spec {
            Some(spec) => Lookup::Found(spec),
            None => Lookup::NotFound,
        },
        Err(_) => Lookup::NotFound,
    };
    prepare(
        owner,
        &sj.spec.triggers,
        pod,
        "the job template",
        sj.spec.env_source_container_name.as_deref(),
        false,
        lookup,
        settings,
    )
}

#[allow(clippy::too_many_arguments)]
fn prepare(
    owner: Owner,
    triggers: &[ScaleTrigger],
    pod: Lookup<PodSpec>,
    what: &str,
    env_container: Option<&str>,
    as_metric_source: bool,
    lookup: &dyn ObjectLookup,
    settings: &Settings<'_>,
) -> Vec<PreparedTrigger> {
    let namespace = owner.namespace.clone();
    let pod_spec = match &pod {
        Lookup::Found(p) => Some(p),
        _ => None,
    };
    let (env, env_problems) = resolve_env(pod_spec, env_container, &namespace, lookup);
    triggers
        .iter()
        .enumerate()
        .map(|(i, trigger)| {
            let base = format!("spec.triggers[{i}]");
            let mut problems = Vec::new();
            let mut unresolved = Unresolved::default();
            // The environment matters to triggers that read `*FromEnv` values.
            let env_keys: Vec<&String> = trigger.metadata.keys().filter(|k| k.ends_with("FromEnv")).collect();
            if let Some(first) = env_keys.first() {
                let path = format!("{base}.metadata.{first}");
                match &pod {
                    Lookup::Found(_) => {}
                    Lookup::NotFound => problems.push(TriggerProblem {
                        kind: ProblemKind::NotFound,
                        path: path.clone(),
                        message: format!("{what} was not found, so its environment cannot be read"),
                    }),
                    Lookup::NotVisible => {
                        unresolved.all_env = true;
                        problems.push(TriggerProblem {
                            kind: ProblemKind::NotVisible,
                            path: path.clone(),
                            message: format!("not checked: {what} is not in the input, so its environment is unknown"),
                        });
                    }
                }
                for p in &env_problems {
                    let relevant = match &p.affects {
                        Affects::Variable(v) => env_keys.iter().any(|k| trigger.metadata.get(*k) == Some(v)),
                        Affects::AllVariables => true,
                        _ => false,
                    };
                    if !relevant {
                        continue;
                    }
                    match &p.affects {
                        Affects::Variable(v) if p.kind == ProblemKind::NotVisible => {
                            unresolved.env.insert(v.clone());
                        }
                        Affects::AllVariables if p.kind == ProblemKind::NotVisible => unresolved.all_env = true,
                        _ => {}
                    }
                    problems.push(TriggerProblem {
                        kind: p.kind,
                        path: path.clone(),
                        message: format!("{what}: {}", p),
                    });
                }
            }
            let auth = match &trigger.authentication_ref {
                None => Default::default(),
                Some(r) => {
                    let path = format!("{base}.authenticationRef");
                    let kind = r.effective_kind();
                    let spec: Lookup<TriggerAuthenticationSpec> = match kind {
                        AuthenticationKind::ClusterTriggerAuthentication => lookup.cluster_trigger_authentication(&r.name),
                        _ => lookup.trigger_authentication(&namespace, &r.name),
                    };
                    let label = match &kind {
                        AuthenticationKind::ClusterTriggerAuthentication => format!("ClusterTriggerAuthentication {}", r.name),
                        _ => format!("TriggerAuthentication {namespace}/{}", r.name),
                    };
                    match spec {
                        Lookup::Found(spec) => {
                            let ctx = AuthContext {
                                namespace: &namespace,
                                cluster_object_namespace: settings.cluster_object_namespace,
                                file_auth_root: settings.file_auth_root,
                                pod_spec,
                            };
                            let resolved = resolve_auth(&spec, &kind, &ctx, lookup);
                            for p in &resolved.problems {
                                note_auth(p, &mut unresolved);
                                problems.push(TriggerProblem {
                                    kind: p.kind,
                                    path: path.clone(),
                                    message: format!("{label}: {p}"),
                                });
                            }
                            resolved
                        }
                        Lookup::NotFound => {
                            problems.push(TriggerProblem {
                                kind: ProblemKind::NotFound,
                                path,
                                message: format!("{label} not found"),
                            });
                            Default::default()
                        }
                        Lookup::NotVisible => {
                            unresolved.all_auth = true;
                            problems.push(TriggerProblem {
                                kind: ProblemKind::NotVisible,
                                path,
                                message: format!("not checked: {label} is not in the input"),
                            });
                            Default::default()
                        }
                    }
                }
            };
            let mut input = crate::trigger_input(owner.clone(), i, trigger, as_metric_source, auth, env.clone());
            input.unresolved = unresolved;
            PreparedTrigger { input, problems }
        })
        .collect()
}

fn note_auth(p: &AuthProblem, unresolved: &mut Unresolved) {
    if p.kind != ProblemKind::NotVisible {
        return;
    }
    match &p.affects {
        Affects::Parameter(name) => {
            unresolved.auth.insert(name.clone());
        }
        Affects::Variable(_) | Affects::AllVariables => unresolved.all_auth = true,
        Affects::Nothing => {}
    }
}
