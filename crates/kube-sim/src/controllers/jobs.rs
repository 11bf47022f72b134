//! Jobs: each Job gets its Pods (owned by it, labelled `job-name`), which become Running after
//! the workload delay and finish after the job duration; the Job then reports Complete (or
//! Failed when annotated `kube-sim.ringscale.io/outcome: Failed`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::Sim;
use crate::api::{self, Target};
use crate::store::{EventKind, GroupResource, ObjKey};

/// Annotation that makes a simulated Job fail instead of completing.
pub const OUTCOME_ANNOTATION: &str = "kube-sim.ringscale.io/outcome";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Pending,
    Running,
}

#[derive(Debug)]
struct Tracked {
    key: ObjKey,
    started: Instant,
    phase: Phase,
}

fn finished(job: &Value) -> bool {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| {
            matches!(
                c.get("type").and_then(Value::as_str),
                Some("Complete" | "Failed")
            ) && c.get("status").and_then(Value::as_str) == Some("True")
        })
}

fn pod_count(job: &Value) -> i64 {
    let parallelism = job
        .pointer("/spec/parallelism")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let completions = job
        .pointer("/spec/completions")
        .and_then(Value::as_i64)
        .unwrap_or(parallelism);
    parallelism.min(completions).max(0)
}

fn jobs() -> GroupResource {
    GroupResource::new("batch", "jobs")
}

fn pods_of(sim: &Sim, job: &Value) -> Vec<(ObjKey, crate::store::Obj)> {
    let uid = job
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let ns = job
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let pods = GroupResource::new("", "pods");
    let page = sim.store.list(&pods, Some(ns), None, 0, &|p| {
        p.pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
    });
    page.items
        .into_iter()
        .filter_map(|p| Some((ObjKey::new(ns, p.pointer("/metadata/name")?.as_str()?), p)))
        .collect()
}

fn create_pods(sim: &Sim, job: &Value) {
    let Some(info) = super::info(sim, "", "v1", "pods") else {
        return;
    };
    let name = job
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let ns = job
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let uid = job
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let template = job.pointer("/spec/template").cloned().unwrap_or_default();
    for _ in 0..pod_count(job) {
        let mut labels = template
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or_else(|| json!({}));
        labels["job-name"] = json!(name);
        labels["batch.kubernetes.io/job-name"] = json!(name);
        labels["controller-uid"] = json!(uid);
        labels["batch.kubernetes.io/controller-uid"] = json!(uid);
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "generateName": format!("{name}-"), "namespace": ns, "labels": labels,
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}]
            },
            "spec": template.get("spec").cloned().unwrap_or_default(),
        });
        let target = Target {
            info: info.clone(),
            namespace: Some(ns.to_owned()),
            name: None,
            subresource: None,
        };
        if let Err(e) = api::create(sim, &target, pod, &super::options()) {
            tracing::debug!(error = %e, job = name, "could not create the job's pod");
        }
    }
}

fn set_pod_phase(sim: &Sim, job: &Value, phase: &str) {
    let Some(info) = super::info(sim, "", "v1", "pods") else {
        return;
    };
    let now = api::now();
    for (key, _) in pods_of(sim, job) {
        let ready = phase == "Running";
        let status = json!({
            "phase": phase,
            "startTime": now,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": now}],
        });
        let _ = super::patch_status(sim, &info, &key, &status);
    }
}

/// Runs until shutdown.
pub async fn run(sim: Arc<Sim>, mut shutdown: watch::Receiver<bool>) {
    let mut events = sim.store.subscribe();
    let mut tracked: HashMap<String, Tracked> = HashMap::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut resync = true;
    let mut scan = true;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) if event.resource == jobs() && event.kind == EventKind::Added => scan = true,
                Ok(event) if event.resource == jobs() && event.kind == EventKind::Deleted => {
                    if let Some(uid) = event.object.pointer("/metadata/uid").and_then(Value::as_str) {
                        tracked.remove(uid);
                    }
                    continue;
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    resync = true;
                    scan = true;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        if sim.faults.controllers_paused() {
            continue;
        }
        let Some(info) = super::info(&sim, "batch", "v1", "jobs") else {
            continue;
        };
        // Pick up new Jobs (and, after a lag, everything).
        let candidates = if scan {
            sim.store.snapshot(&jobs())
        } else {
            Vec::new()
        };
        scan = false;
        for (key, job) in candidates {
            let Some(uid) = job
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .map(str::to_owned)
            else {
                continue;
            };
            let suspended = job
                .pointer("/spec/suspend")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if tracked.contains_key(&uid)
                || finished(&job)
                || suspended
                || job.pointer("/metadata/deletionTimestamp").is_some()
            {
                continue;
            }
            if !resync && job.pointer("/status/startTime").is_some() {
                continue;
            }
            if pods_of(&sim, &job).is_empty() {
                create_pods(&sim, &job);
            }
            let _ = super::patch_status(
                &sim,
                &info,
                &key,
                &json!({"startTime": api::now(), "active": pod_count(&job), "ready": 0}),
            );
            tracked.insert(
                uid,
                Tracked {
                    key,
                    started: Instant::now(),
                    phase: Phase::Pending,
                },
            );
        }
        resync = false;
        let mut done = Vec::new();
        for (uid, t) in &mut tracked {
            let Some((job, _)) = sim.store.get(&jobs(), &t.key) else {
                done.push(uid.clone());
                continue;
            };
            if t.phase == Phase::Pending && t.started.elapsed() >= sim.config.workload_delay {
                set_pod_phase(&sim, &job, "Running");
                let _ =
                    super::patch_status(&sim, &info, &t.key, &json!({"ready": pod_count(&job)}));
                t.phase = Phase::Running;
            }
            if t.started.elapsed() >= sim.config.job_duration {
                let failed = job
                    .pointer(&format!(
                        "/metadata/annotations/{}",
                        OUTCOME_ANNOTATION.replace('/', "~1")
                    ))
                    .and_then(Value::as_str)
                    == Some("Failed");
                set_pod_phase(&sim, &job, if failed { "Failed" } else { "Succeeded" });
                let now = api::now();
                let n = pod_count(&job);
                let status = if failed {
                    json!({"active": null, "ready": null, "failed": n, "conditions": [
                        {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastProbeTime": now, "lastTransitionTime": now},
                        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastProbeTime": now, "lastTransitionTime": now}
                    ]})
                } else {
                    json!({"active": null, "ready": null, "succeeded": n, "completionTime": now, "conditions": [
                        {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now},
                        {"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now}
                    ]})
                };
                let _ = super::patch_status(&sim, &info, &t.key, &status);
                done.push(uid.clone());
            }
        }
        for uid in done {
            tracked.remove(&uid);
        }
    }
}
