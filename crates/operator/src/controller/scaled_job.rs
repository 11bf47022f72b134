//! The ScaledJob cycle: poll the triggers, count the running and pending Jobs, create Jobs by
//! the scaling strategy, delete finished Jobs beyond the history limits, and write the status
//! when it changed (KEDA's `scale_jobs.go`, with ringscale's write discipline).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy as Propagation};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use ringscale_api::common::TriggerActivityStatus;
use ringscale_api::names::{ANNOTATION_JOB_EXCLUDED_LABELS, LABEL_SCALED_JOB_NAME};
use ringscale_api::scaled_job::{
    DEFAULT_HISTORY_LIMIT, MultipleScalersCalculation, PropagationPolicy, RolloutStrategy,
};
use ringscale_api::{ConditionStatus, ConditionType, ScaledJob, ScaledJobStatus};
use ringscale_cache::RecordKey;
use ringscale_ring::ObjectId;
use ringscale_scalers::{MetricSpec, prepare};
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::{debug, info};

use super::{
    Claim, Ctx, CycleError, LAST_ACTIVE_REFRESH, PollState, api, emit, ensure_meta, fence_of,
    fingerprint, is_stamp, poll_metrics, prepare_settings, put_status, remove_finalizer,
    set_condition,
};
use ringscale_semantics::jobs::{Reading, combine, jobs_to_create};
use ringscale_semantics::pause;

/// Annotation on each Job: the ScaledJob generation it was created from.
pub const GENERATION_ANNOTATION: &str = "scaledjob.keda.sh/generation";

/// How long a created Job counts as running before the watch shows it.
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(30);

/// How a Job ended, if it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Finished {
    Succeeded,
    Failed,
}

fn finished(job: &Job) -> Option<Finished> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .filter(|c| c.status == "True")
        .find_map(|c| match c.type_.as_str() {
            "Complete" => Some(Finished::Succeeded),
            "Failed" => Some(Finished::Failed),
            _ => None,
        })
}

/// Whether a running Job has not started working: no Pod running or completed (KEDA's default),
/// or, with `pendingPodConditions`, some Pod without every listed condition True. Jobs whose
/// Pods are not in the watch (created by another controller without our pod-template label)
/// are judged from the Job's own counts.
fn is_pending(job: &Job, pods: &[&Pod], conditions: Option<&[String]>) -> bool {
    if pods.is_empty() {
        let status = job.status.as_ref();
        let started = status.and_then(|s| s.ready).unwrap_or(0) > 0
            || status.and_then(|s| s.succeeded).unwrap_or(0) > 0;
        return !started;
    }
    match conditions.filter(|c| !c.is_empty()) {
        Some(wanted) => !pods.iter().all(|p| {
            let have = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .map(Vec::as_slice)
                .unwrap_or_default();
            wanted
                .iter()
                .all(|w| have.iter().any(|c| c.type_ == *w && c.status == "True"))
        }),
        None => !pods.iter().any(|p| {
            matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Running" | "Succeeded")
            )
        }),
    }
}

/// The ScaledJob's Jobs and their Pods, from the shared watches.
struct Workload {
    running: Vec<Arc<Job>>,
    succeeded: Vec<Arc<Job>>,
    failed: Vec<Arc<Job>>,
    pods: HashMap<String, Vec<Arc<Pod>>>,
}

fn workload(ctx: &Ctx, ns: &str, name: &str) -> Workload {
    let ours = |meta: &ObjectMeta| {
        meta.namespace.as_deref() == Some(ns)
            && meta
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_SCALED_JOB_NAME))
                .is_some_and(|v| v == name)
    };
    let mut w = Workload {
        running: Vec::new(),
        succeeded: Vec::new(),
        failed: Vec::new(),
        pods: HashMap::new(),
    };
    for job in ctx.jobs.state() {
        if !ours(&job.metadata) || job.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match finished(&job) {
            None => w.running.push(job),
            Some(Finished::Succeeded) => w.succeeded.push(job),
            Some(Finished::Failed) => w.failed.push(job),
        }
    }
    for pod in ctx.pods.state() {
        if !ours(&pod.metadata) {
            continue;
        }
        let job = pod.labels().get("job-name").cloned().or_else(|| {
            pod.owner_references()
                .iter()
                .find(|r| r.kind == "Job")
                .map(|r| r.name.clone())
        });
        if let Some(job) = job {
            w.pods.entry(job).or_default().push(pod);
        }
    }
    w
}

/// The Job to create: the template verbatim with KEDA's labels, annotations and owner.
/// Why no Job can be made from a ScaledJob's `jobTargetRef` (the field at fault).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
enum JobTemplateError {
    #[error("spec.jobTargetRef.template is missing")]
    NoTemplate,
    #[error("spec.jobTargetRef.template.metadata is not an object")]
    Metadata,
    #[error("spec.jobTargetRef.template.metadata.labels is not an object")]
    Labels,
}

fn job_for(sj: &ScaledJob) -> Result<Value, JobTemplateError> {
    let name = sj.name_any();
    let mut spec = Value::Object(sj.spec.job_target_ref.raw().clone());
    let Some(template) = spec.get_mut("template").and_then(Value::as_object_mut) else {
        return Err(JobTemplateError::NoTemplate);
    };
    let meta = template
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or(JobTemplateError::Metadata)?;
    let labels = meta
        .entry("labels")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or(JobTemplateError::Labels)?;
    labels.insert(LABEL_SCALED_JOB_NAME.into(), json!(name));
    if let Some(pod) = template.get_mut("spec").and_then(Value::as_object_mut) {
        let policy = pod.get("restartPolicy").and_then(Value::as_str);
        if policy.is_none_or(str::is_empty) {
            // Jobs refuse Always, which a client may have defaulted; KEDA uses OnFailure.
            pod.insert("restartPolicy".into(), json!("OnFailure"));
        }
    }

    let excluded: Vec<&str> = sj
        .annotations()
        .get(ANNOTATION_JOB_EXCLUDED_LABELS)
        .map(|v| v.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let mut labels: BTreeMap<String, String> = BTreeMap::from([
        ("app.kubernetes.io/name".into(), name.clone()),
        (
            "app.kubernetes.io/version".into(),
            env!("CARGO_PKG_VERSION").into(),
        ),
        ("app.kubernetes.io/part-of".into(), name.clone()),
        (
            "app.kubernetes.io/managed-by".into(),
            "keda-operator".into(),
        ),
        (LABEL_SCALED_JOB_NAME.into(), name.clone()),
    ]);
    for (k, v) in sj.labels() {
        if !excluded.contains(&k.as_str()) {
            labels.insert(k.clone(), v.clone());
        }
    }
    let mut annotations: BTreeMap<String, String> = sj
        .annotations()
        .iter()
        .filter(|(k, _)| {
            !is_stamp(k) && k.as_str() != "kubectl.kubernetes.io/last-applied-configuration"
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.insert(
        GENERATION_ANNOTATION.into(),
        sj.metadata.generation.unwrap_or(0).to_string(),
    );
    let owner = OwnerReference {
        api_version: ScaledJob::api_version(&()).into_owned(),
        kind: ScaledJob::kind(&()).into_owned(),
        name: name.clone(),
        uid: sj.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    Ok(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "generateName": format!("{name}-"),
            "namespace": sj.namespace(),
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner],
        },
        "spec": spec,
    }))
}

fn created_at(job: &Job) -> Option<Timestamp> {
    job.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// Finished Jobs past a history limit, oldest first.
fn beyond_limit(mut jobs: Vec<Arc<Job>>, limit: Option<i32>) -> Vec<Arc<Job>> {
    let keep = usize::try_from(limit.unwrap_or(DEFAULT_HISTORY_LIMIT).max(0)).unwrap_or(0);
    if jobs.len() <= keep {
        return Vec::new();
    }
    jobs.sort_by_key(|j| (created_at(j), j.name_any()));
    let excess = jobs.len() - keep;
    jobs.truncate(excess);
    jobs
}

async fn delete_job(
    ctx: &Ctx,
    (id, sj, claim): (&ObjectId, &ScaledJob, &mut Claim<ScaledJob>),
    job: &Job,
    propagation: Propagation,
    generation: u64,
) -> Result<(), CycleError> {
    claim.fence(ctx, id, sj, generation).await?;
    let params = DeleteParams {
        propagation_policy: Some(propagation),
        ..DeleteParams::default()
    };
    match Api::<Job>::namespaced(ctx.client.clone(), &id.namespace)
        .delete(&job.name_any(), &params)
        .await
    {
        Ok(_) => {
            ctx.stats.jobs_deleted.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(e) if ringscale_coordinator::is_not_found(&e) => Ok(()),
        Err(e) => Err(CycleError::Api("delete a Job", e)),
    }
}

pub(super) async fn run_cycle(
    ctx: &Ctx,
    id: &ObjectId,
    sj: &ScaledJob,
    state: &mut PollState,
    generation: u64,
) -> Result<(), CycleError> {
    let (ns, name) = (id.namespace.as_str(), id.name.as_str());
    if fence_of(&sj.metadata) > generation {
        return Err(CycleError::Fenced("a newer owner stamped the object"));
    }
    if sj.metadata.deletion_timestamp.is_some() {
        // The Jobs go with their owner (garbage collection); only our finalizer is left.
        if sj
            .finalizers()
            .iter()
            .any(|f| f == ringscale_api::names::FINALIZER)
        {
            let mut claim = Claim::new(ctx, sj, generation);
            remove_finalizer(ctx, id, sj, &mut claim, generation).await?;
        }
        ctx.records.remove_object(id);
        return Ok(());
    }
    let sj = ensure_meta(ctx, id, sj, generation).await?;
    let sj = &sj;
    let mut claim = Claim::new(ctx, sj, generation);
    let now = Timestamp::now();
    let mut status = sj.status.clone().unwrap_or_default();
    let before = status.clone();
    status.triggers_types = Some(ringscale_semantics::plan::triggers_types(&sj.spec.triggers));

    let paused = match pause::from_annotations(sj.annotations()) {
        Ok(p) => p.paused,
        Err(e) => {
            set_condition(
                &mut status.conditions,
                ConditionType::Ready,
                ConditionStatus::False,
                "ScaledJobCheckFailed",
                &e.to_string(),
                now,
            );
            return write_status(ctx, (id, sj, &mut claim), status, &before, generation).await;
        }
    };
    if paused {
        status.paused = Some("true".into());
        set_condition(
            &mut status.conditions,
            ConditionType::Paused,
            ConditionStatus::True,
            "ScaledJobPaused",
            "ScaledJob is paused",
            now,
        );
        return write_status(ctx, (id, sj, &mut claim), status, &before, generation).await;
    }
    status.paused = None;
    set_condition(
        &mut status.conditions,
        ConditionType::Paused,
        ConditionStatus::False,
        "ScaledJobUnpaused",
        "pause annotation removed for ScaledJob",
        now,
    );

    let print = fingerprint(&sj.metadata);
    if state.fingerprint.as_ref() != Some(&print) {
        let prepared = prepare::scaled_job(sj, &ctx.lookup, &prepare_settings(ctx));
        super::build_scalers(ctx, id.clone(), prepared, state).await;
        if let Err(e) = sj.spec.job_target_ref.typed() {
            state
                .problems
                .push(format!("spec.jobTargetRef is not a valid JobSpec: {e}"));
        }
        state.fingerprint = Some(print);
    }
    if !state.problems.is_empty() {
        let message = state.problems.join("; ");
        set_condition(
            &mut status.conditions,
            ConditionType::Ready,
            ConditionStatus::False,
            "ScaledJobCheckFailed",
            &message,
            now,
        );
        set_condition(
            &mut status.conditions,
            ConditionType::Active,
            ConditionStatus::Unknown,
            "ScaledJobCheckFailed",
            "the triggers could not be built",
            now,
        );
        return write_status(ctx, (id, sj, &mut claim), status, &before, generation).await;
    }

    // Poll every metric at once; every reading also goes to the cache.
    let interval = sj.spec.polling_interval();
    let targets: BTreeMap<String, f64> = state
        .specs
        .iter()
        .filter_map(|s| match s {
            MetricSpec::External(m) => Some((m.name.clone(), m.target())),
            MetricSpec::Resource(_) => None,
        })
        .collect();
    let mut readings = Vec::new();
    let mut errors = Vec::new();
    let mut by_metric: BTreeMap<String, bool> = BTreeMap::new();
    let polled_at = ringscale_replication::now();
    let polls = poll_metrics(ctx, id, &sj.spec.triggers, state).await;
    for poll in polls {
        let record_key = RecordKey::new(id.clone(), poll.metric.as_str());
        let previous = state.health.get(&poll.metric).copied().unwrap_or_default();
        match poll.outcome {
            Ok(reading) => {
                state.health.insert(poll.metric.clone(), previous.success());
                by_metric.insert(poll.metric.clone(), reading.active);
                ctx.records.record(
                    record_key,
                    ringscale_replication::Reading {
                        value: reading.value,
                        active: reading.active,
                        error: None,
                        failures: 0,
                        generation,
                    },
                    polled_at,
                    interval,
                );
                readings.push(Reading {
                    queue: reading.value,
                    target: targets.get(poll.metric.as_str()).copied().unwrap_or(0.0),
                    active: reading.active,
                });
            }
            Err(message) => {
                if previous.failures == 0 {
                    emit(
                        ctx,
                        sj,
                        EventType::Warning,
                        "KEDAScalerFailed",
                        message.clone(),
                    );
                }
                state.health.insert(poll.metric.clone(), previous.failure());
                by_metric.insert(poll.metric.clone(), false);
                let last = ctx.records.get(&record_key).map_or(0.0, |r| r.value);
                ctx.records.record(
                    record_key,
                    ringscale_replication::Reading {
                        value: last,
                        active: false,
                        error: Some(&message),
                        failures: 0,
                        generation,
                    },
                    polled_at,
                    interval,
                );
                errors.push(message);
            }
        }
    }

    let max = i64::from(sj.spec.max_replicas());
    let min = i64::from(sj.spec.min_replicas());
    let calculation = sj
        .spec
        .scaling_strategy
        .as_ref()
        .and_then(|s| s.multiple_scalers_calculation.clone())
        .unwrap_or(MultipleScalersCalculation::Max);
    // Only active triggers count; a minimum keeps the ScaledJob active (`IsScaledJobActive`).
    let combined = combine(&readings, &calculation, min, max);
    let active = combined.active;

    let jobs = workload(ctx, ns, name);
    // Jobs we created that the watch does not show yet still count, so a quick next poll does
    // not create them twice.
    state.expected_jobs.retain(|(job, at)| {
        at.elapsed() < EXPECTATION_TIMEOUT
            && !jobs
                .running
                .iter()
                .chain(&jobs.succeeded)
                .chain(&jobs.failed)
                .any(|j| j.name_any() == *job)
    });
    let strategy = sj.spec.scaling_strategy.as_ref();
    let conditions = strategy.and_then(|s| s.pending_pod_conditions.as_deref());
    let unseen = i64::try_from(state.expected_jobs.len()).unwrap_or(i64::MAX);
    let running = i64::try_from(jobs.running.len()).unwrap_or(i64::MAX) + unseen;
    let pending = jobs
        .running
        .iter()
        .filter(|j| {
            let pods: Vec<&Pod> = jobs
                .pods
                .get(&j.name_any())
                .map(|ps| ps.iter().map(AsRef::as_ref).collect())
                .unwrap_or_default();
            is_pending(j, &pods, conditions)
        })
        .count();
    let pending = i64::try_from(pending).unwrap_or(i64::MAX) + unseen;

    if active {
        let to_create = jobs_to_create(strategy, &combined, running, pending, min, max);
        if to_create > 0 {
            create_jobs(ctx, (id, sj, &mut claim), to_create, state, generation).await?;
        }
        let stale = status
            .last_active_time
            .as_ref()
            .is_none_or(|t| now.duration_since(t.0).unsigned_abs() >= LAST_ACTIVE_REFRESH);
        if stale {
            status.last_active_time = Some(Time(now));
        }
    }

    // Rollout (KEDA's `deletePreviousVersionScaleJobs`): unless `gradual`, every Job of an
    // older spec — or without the generation annotation — is deleted, running or finished.
    let (mut succeeded, mut failed) = (jobs.succeeded, jobs.failed);
    if sj.spec.rollout_strategy() != RolloutStrategy::Gradual {
        let current = sj.metadata.generation.unwrap_or(0).to_string();
        let outdated = |job: &Arc<Job>| {
            job.annotations()
                .get(GENERATION_ANNOTATION)
                .is_none_or(|g| *g != current)
        };
        let old: Vec<Arc<Job>> = jobs
            .running
            .iter()
            .chain(&succeeded)
            .chain(&failed)
            .filter(|j| outdated(j))
            .cloned()
            .collect();
        succeeded.retain(|j| !outdated(j));
        failed.retain(|j| !outdated(j));
        if !old.is_empty() {
            let propagation = match sj
                .spec
                .rollout
                .as_ref()
                .and_then(|r| r.propagation_policy.clone())
            {
                Some(PropagationPolicy::Foreground) => Propagation::Foreground,
                _ => Propagation::Background,
            };
            let n = old.len();
            emit(
                ctx,
                sj,
                EventType::Normal,
                "ScaledJobRolloutCleanupStarted",
                format!("Deleting {n} jobs owned by the previous version of the scaledJob"),
            );
            for job in &old {
                info!(namespace = ns, name, job = %job.name_any(), "deleting a Job of an older ScaledJob spec");
                if let Err(e) = delete_job(
                    ctx,
                    (id, sj, &mut claim),
                    job,
                    propagation.clone(),
                    generation,
                )
                .await
                {
                    emit(
                        ctx,
                        sj,
                        EventType::Warning,
                        "ScaledJobRolloutCleanupFailed",
                        format!("Failed to delete job {}", job.name_any()),
                    );
                    return Err(e);
                }
            }
            emit(
                ctx,
                sj,
                EventType::Normal,
                "ScaledJobRolloutCleanupCompleted",
                format!("Deleted {n} jobs owned by the previous version of the scaledJob"),
            );
        }
    }

    // History limits.
    let old = beyond_limit(succeeded, sj.spec.successful_jobs_history_limit)
        .into_iter()
        .chain(beyond_limit(failed, sj.spec.failed_jobs_history_limit));
    for job in old {
        debug!(namespace = ns, name, job = %job.name_any(), "deleting a finished Job beyond the history limit");
        delete_job(
            ctx,
            (id, sj, &mut claim),
            &job,
            Propagation::Background,
            generation,
        )
        .await?;
    }

    // Conditions and status.
    let (active_status, active_reason, active_message) = if active {
        (
            ConditionStatus::True,
            "ScalerActive",
            "Scaling is performed because triggers are active",
        )
    } else {
        (
            ConditionStatus::False,
            "ScalerNotActive",
            "Scaling is not performed because triggers are not active",
        )
    };
    // KEDA's RequestJobScale: an event when the activity changes.
    let was_active = before
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == ConditionType::Active && c.status == ConditionStatus::True);
    if active != was_active {
        let reason = if active {
            "ScaledJobActive"
        } else {
            "ScaledJobInactive"
        };
        emit(
            ctx,
            sj,
            EventType::Normal,
            reason,
            active_message.to_owned(),
        );
    }
    set_condition(
        &mut status.conditions,
        ConditionType::Active,
        active_status,
        active_reason,
        active_message,
        now,
    );
    let (ready_status, ready_reason, ready_message) = match (errors.is_empty(), active) {
        (true, _) => (
            ConditionStatus::True,
            "ScaledJobReady",
            "ScaledJob is defined correctly and is ready to scaling".to_owned(),
        ),
        (false, true) => (
            ConditionStatus::Unknown,
            "PartialTriggerError",
            errors.join("; "),
        ),
        (false, false) => (ConditionStatus::False, "TriggerError", errors.join("; ")),
    };
    set_condition(
        &mut status.conditions,
        ConditionType::Ready,
        ready_status,
        ready_reason,
        &ready_message,
        now,
    );
    status.external_metric_names = Some(targets.into_keys().collect());
    // Keyed by external metric name, as KEDA's getTriggersActivity keys it.
    status.triggers_activity = Some(
        by_metric
            .into_iter()
            .map(|(metric, active)| (metric, TriggerActivityStatus { is_active: active }))
            .collect(),
    );
    write_status(ctx, (id, sj, &mut claim), status, &before, generation).await
}

async fn create_jobs(
    ctx: &Ctx,
    (id, sj, claim): (&ObjectId, &ScaledJob, &mut Claim<ScaledJob>),
    count: i64,
    state: &mut PollState,
    generation: u64,
) -> Result<(), CycleError> {
    let body = match job_for(sj) {
        Ok(b) => b,
        Err(problem) => {
            state.problems.push(problem.to_string());
            state.fingerprint = None;
            return Ok(());
        }
    };
    let job: Job = match serde_json::from_value(body) {
        Ok(j) => j,
        Err(e) => {
            state
                .problems
                .push(format!("spec.jobTargetRef is not a valid JobSpec: {e}"));
            state.fingerprint = None;
            return Ok(());
        }
    };
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), &id.namespace);
    let mut created = 0;
    for _ in 0..count {
        claim.fence(ctx, id, sj, generation).await?;
        match jobs.create(&PostParams::default(), &job).await {
            Ok(made) => {
                created += 1;
                ctx.stats.jobs_created.fetch_add(1, Ordering::Relaxed);
                state.expected_jobs.push((made.name_any(), Instant::now()));
            }
            Err(e) => {
                if created > 0 {
                    emit(
                        ctx,
                        sj,
                        EventType::Normal,
                        "KEDAJobsCreated",
                        format!("Created {created} jobs"),
                    );
                }
                emit(
                    ctx,
                    sj,
                    EventType::Warning,
                    "KEDAJobCreateFailed",
                    format!("could not create a Job: {e}"),
                );
                return Err(api("create a Job")(e));
            }
        }
    }
    info!(namespace = %id.namespace, name = %id.name, created, "created Jobs");
    emit(
        ctx,
        sj,
        EventType::Normal,
        "KEDAJobsCreated",
        format!("Created {created} jobs"),
    );
    Ok(())
}

async fn write_status(
    ctx: &Ctx,
    (id, sj, claim): (&ObjectId, &ScaledJob, &mut Claim<ScaledJob>),
    status: ScaledJobStatus,
    before: &ScaledJobStatus,
    generation: u64,
) -> Result<(), CycleError> {
    if &status == before {
        return Ok(());
    }
    claim.fence(ctx, id, sj, generation).await?;
    let find = |s: &ScaledJobStatus| {
        s.conditions
            .as_ref()
            .and_then(|cs| cs.iter().find(|c| c.type_ == ConditionType::Ready).cloned())
    };
    if let Some(now) = find(&status)
        && find(before).is_none_or(|w| w.status != now.status || w.reason != now.reason)
    {
        match (now.status, now.reason.as_deref()) {
            (ConditionStatus::True, _) => emit(
                ctx,
                sj,
                EventType::Normal,
                "ScaledJobReady",
                "ScaledJob is ready for scaling".into(),
            ),
            (ConditionStatus::False, Some("ScaledJobCheckFailed")) => emit(
                ctx,
                sj,
                EventType::Warning,
                "ScaledJobCheckFailed",
                now.message.clone().unwrap_or_default(),
            ),
            _ => {}
        }
    }
    let mut updated = claim.current(sj).clone();
    updated.status = Some(status);
    put_status(ctx, id, &updated).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};

    fn job(conditions: &[(&str, &str)], ready: i32) -> Job {
        Job {
            status: Some(JobStatus {
                ready: Some(ready),
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(t, s)| JobCondition {
                            type_: (*t).into(),
                            status: (*s).into(),
                            ..JobCondition::default()
                        })
                        .collect(),
                ),
                ..JobStatus::default()
            }),
            ..Job::default()
        }
    }

    fn pod(phase: &str, conditions: &[(&str, &str)]) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(t, s)| PodCondition {
                            type_: (*t).into(),
                            status: (*s).into(),
                            ..PodCondition::default()
                        })
                        .collect(),
                ),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn a_job_ends_by_its_complete_or_failed_condition() {
        assert_eq!(finished(&job(&[], 0)), None);
        assert_eq!(finished(&job(&[("Complete", "False")], 0)), None);
        assert_eq!(
            finished(&job(
                &[("SuccessCriteriaMet", "True"), ("Complete", "True")],
                0
            )),
            Some(Finished::Succeeded)
        );
        assert_eq!(
            finished(&job(&[("Failed", "True")], 0)),
            Some(Finished::Failed)
        );
    }

    #[test]
    fn pending_until_a_pod_runs_or_the_listed_conditions_hold() {
        let j = job(&[], 0);
        let waiting = pod("Pending", &[("PodScheduled", "True")]);
        let running = pod("Running", &[("PodScheduled", "True"), ("Ready", "False")]);
        let ready = pod("Running", &[("PodScheduled", "True"), ("Ready", "True")]);
        assert!(is_pending(&j, &[&waiting], None));
        assert!(!is_pending(&j, &[&waiting, &running], None));
        let wanted = ["Ready".to_owned(), "PodScheduled".to_owned()];
        assert!(is_pending(&j, &[&running], Some(&wanted)));
        assert!(!is_pending(&j, &[&ready], Some(&wanted)));
        // Pods not in the watch: the Job's own ready count decides.
        assert!(is_pending(&job(&[], 0), &[], None));
        assert!(!is_pending(&job(&[], 1), &[], None));
    }

    #[test]
    fn only_the_oldest_finished_jobs_beyond_the_limit_go() {
        let at = |secs: i64, name: &str| {
            let mut j = Job::default();
            j.metadata.name = Some(name.into());
            j.metadata.creation_timestamp = Some(Time(
                Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH),
            ));
            Arc::new(j)
        };
        let jobs = vec![at(30, "c"), at(10, "a"), at(20, "b")];
        let gone: Vec<String> = beyond_limit(jobs.clone(), Some(1))
            .iter()
            .map(|j| j.name_any())
            .collect();
        assert_eq!(gone, ["a", "b"]);
        assert!(beyond_limit(jobs.clone(), None).is_empty());
        assert_eq!(beyond_limit(jobs, Some(0)).len(), 3);
    }
}
