//! Deployments, StatefulSets and ReplicaSets: after a configurable delay, `status.replicas`,
//! `readyReplicas`, `availableReplicas` and `updatedReplicas` follow `spec.replicas`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::store::{EventKind, GroupResource, ObjKey};
use crate::{Sim, api};

const KINDS: &[(&str, &str)] = &[
    ("deployments", "Deployment"),
    ("statefulsets", "StatefulSet"),
    ("replicasets", "ReplicaSet"),
];

/// Full resync interval.
const RESYNC: Duration = Duration::from_secs(30);

fn desired(object: &Value) -> i64 {
    object
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn in_sync(object: &Value) -> bool {
    let want = desired(object);
    let field = |f: &str| {
        object
            .pointer(&format!("/status/{f}"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let generation = object
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    field("replicas") == want
        && field("readyReplicas") == want
        && field("availableReplicas") == want
        && field("observedGeneration") == generation
}

/// The status a settled workload reports (zero counts omitted, as the API server omits them).
fn settled_status(kind: &str, object: &Value) -> Value {
    let n = desired(object);
    let generation = object
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let mut status = Map::new();
    status.insert("observedGeneration".to_owned(), json!(generation));
    for field in [
        "replicas",
        "readyReplicas",
        "availableReplicas",
        "updatedReplicas",
    ] {
        status.insert(
            field.to_owned(),
            if n == 0 { Value::Null } else { json!(n) },
        );
    }
    if kind == "StatefulSet" {
        status.insert(
            "currentReplicas".to_owned(),
            if n == 0 { Value::Null } else { json!(n) },
        );
    }
    if kind == "Deployment" {
        let now = api::now();
        status.insert(
            "conditions".to_owned(),
            json!([
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability.", "lastUpdateTime": now, "lastTransitionTime": now},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": "ReplicaSet has successfully progressed.", "lastUpdateTime": now, "lastTransitionTime": now}
            ]),
        );
    }
    Value::Object(status)
}

/// Runs until shutdown.
pub async fn run(sim: Arc<Sim>, mut shutdown: watch::Receiver<bool>) {
    let mut events = sim.store.subscribe();
    let mut pending: HashMap<(usize, ObjKey), Instant> = HashMap::new();
    let delay = sim.config.workload_delay;
    let tick = (delay / 2).clamp(Duration::from_millis(10), Duration::from_millis(200));
    let mut ticker = tokio::time::interval(tick);
    let mut last_resync = Instant::now() - RESYNC;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    if event.kind != EventKind::Deleted
                        && let Some(i) = KINDS.iter().position(|(r, _)| event.resource == GroupResource::new("apps", r))
                        && !in_sync(&event.object)
                    {
                        pending.entry((i, event.key.clone())).or_insert_with(Instant::now);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => last_resync = Instant::now() - RESYNC,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        if sim.faults.controllers_paused() {
            continue;
        }
        if last_resync.elapsed() >= RESYNC {
            last_resync = Instant::now();
            for (i, (resource, _)) in KINDS.iter().enumerate() {
                for (key, object) in sim.store.snapshot(&GroupResource::new("apps", resource)) {
                    if !in_sync(&object) {
                        pending.entry((i, key)).or_insert_with(Instant::now);
                    }
                }
            }
        }
        let due: Vec<(usize, ObjKey)> = pending
            .iter()
            .filter(|(_, since)| since.elapsed() >= delay)
            .map(|(k, _)| k.clone())
            .collect();
        for (i, key) in due {
            pending.remove(&(i, key.clone()));
            let (resource, kind) = KINDS[i];
            let Some(info) = super::info(&sim, "apps", "v1", resource) else {
                continue;
            };
            let Some((object, _)) = sim.store.get(&GroupResource::new("apps", resource), &key)
            else {
                continue;
            };
            if in_sync(&object) || object.pointer("/metadata/deletionTimestamp").is_some() {
                continue;
            }
            if let Err(e) = super::patch_status(&sim, &info, &key, &settled_status(kind, &object)) {
                tracing::debug!(error = %e, name = %key.name, "workload status update failed; will retry");
                pending.insert((i, key), Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settled_deployment_reports_its_replicas() {
        let d = json!({"metadata": {"generation": 3}, "spec": {"replicas": 4}});
        let status = settled_status("Deployment", &d);
        assert_eq!(status["readyReplicas"], 4);
        assert_eq!(status["observedGeneration"], 3);
        let scaled_to_zero = settled_status(
            "Deployment",
            &json!({"metadata": {"generation": 1}, "spec": {"replicas": 0}}),
        );
        assert!(
            scaled_to_zero["readyReplicas"].is_null(),
            "zero counts are omitted"
        );
    }
}
