//! Garbage collection and teardown, as kube-controller-manager does them: dependents whose
//! owners are all gone are deleted (background propagation); `foregroundDeletion` owners wait
//! for their dependents; `orphan` owners release them; terminating namespaces are emptied and
//! removed; CRDs being deleted lose their objects, then their kinds.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::Sim;
use crate::api::{self, DeleteOptions, Target, WriteOptions};
use crate::lifecycle::CRD_CLEANUP_FINALIZER;
use crate::resources::{Builtin, ResourceInfo};
use crate::store::{GroupResource, ObjKey};

/// How often the collector sweeps without being woken.
const RESYNC: Duration = Duration::from_secs(5);

/// Runs until shutdown.
pub async fn run(sim: Arc<Sim>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = sim.gc_wakeup.notified() => {}
            _ = tokio::time::sleep(RESYNC) => {}
            _ = shutdown.changed() => return,
        }
        // Let a burst of deletions settle into one sweep.
        tokio::time::sleep(Duration::from_millis(20)).await;
        for _ in 0..10 {
            if !sweep(&sim) {
                break;
            }
        }
    }
}

struct Live {
    info: Arc<ResourceInfo>,
    key: ObjKey,
    object: crate::store::Obj,
}

fn storage_info(sim: &Sim, resource: &GroupResource) -> Option<Arc<ResourceInfo>> {
    let all = sim.registry.all();
    let matching: Vec<_> = all
        .into_iter()
        .filter(|r| r.gvr.group == resource.group && r.gvr.resource == resource.resource)
        .collect();
    matching
        .iter()
        .find(|r| r.storage)
        .or(matching.first())
        .cloned()
}

fn target(live: &Live) -> Target {
    Target {
        info: live.info.clone(),
        namespace: (!live.key.namespace.is_empty()).then(|| live.key.namespace.clone()),
        name: Some(live.key.name.clone()),
        subresource: None,
    }
}

fn uid(object: &Value) -> Option<&str> {
    object.pointer("/metadata/uid").and_then(Value::as_str)
}

fn owner_uids(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

fn options() -> WriteOptions {
    WriteOptions {
        field_manager: "generic-garbage-collector".to_owned(),
        ..WriteOptions::default()
    }
}

fn delete(sim: &Sim, live: &Live, propagation: &str) {
    let options = DeleteOptions {
        propagation: Some(propagation.to_owned()),
        ..DeleteOptions::default()
    };
    if let Err(e) = api::delete(sim, &target(live), &options)
        && e.reason != "NotFound"
    {
        tracing::debug!(error = %e, name = %live.key.name, "garbage collector could not delete");
    }
}

fn remove_finalizer(sim: &Sim, live: &Live, finalizer: &str) {
    let remaining: Vec<String> = api::finalizers(&live.object)
        .into_iter()
        .filter(|f| f != finalizer)
        .collect();
    let patch = json!({"metadata": {"finalizers": remaining, "resourceVersion": live.object.pointer("/metadata/resourceVersion")}});
    let body = serde_json::to_vec(&patch).unwrap_or_default();
    if let Err(e) = api::patch(
        sim,
        &target(live),
        crate::patch::PatchType::Merge,
        &body,
        &options(),
    ) {
        tracing::debug!(error = %e, name = %live.key.name, "could not remove finalizer {finalizer}");
    }
}

/// One pass; returns whether it changed anything (so another pass may be useful).
fn sweep(sim: &Sim) -> bool {
    let mut objects = Vec::new();
    for resource in sim.store.resources() {
        let Some(info) = storage_info(sim, &resource) else {
            continue;
        };
        for (key, object) in sim.store.snapshot(&resource) {
            objects.push(Live {
                info: info.clone(),
                key,
                object,
            });
        }
    }
    let uids: HashSet<&str> = objects.iter().filter_map(|l| uid(&l.object)).collect();
    let mut dependents: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, live) in objects.iter().enumerate() {
        for owner in owner_uids(&live.object) {
            dependents.entry(owner).or_default().push(i);
        }
    }
    let mut changed = false;
    for live in &objects {
        let deleting = live.object.pointer("/metadata/deletionTimestamp").is_some();
        if !deleting {
            let owners = owner_uids(&live.object);
            if !owners.is_empty() && owners.iter().all(|o| !uids.contains(o.as_str())) {
                delete(sim, live, "Background");
                changed = true;
            }
            continue;
        }
        let finalizers = api::finalizers(&live.object);
        let mine: Vec<&Live> = uid(&live.object)
            .and_then(|u| dependents.get(u))
            .map(|idx| idx.iter().map(|i| &objects[*i]).collect())
            .unwrap_or_default();
        if finalizers.iter().any(|f| f == "foregroundDeletion") {
            if mine.is_empty() {
                remove_finalizer(sim, live, "foregroundDeletion");
            } else {
                for dependent in mine
                    .iter()
                    .filter(|d| d.object.pointer("/metadata/deletionTimestamp").is_none())
                {
                    delete(sim, dependent, "Foreground");
                }
            }
            changed = true;
        } else if finalizers.iter().any(|f| f == "orphan") {
            let owner = uid(&live.object).unwrap_or_default().to_owned();
            for dependent in &mine {
                let kept: Vec<Value> = dependent
                    .object
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|r| r.get("uid").and_then(Value::as_str) != Some(owner.as_str()))
                    .cloned()
                    .collect();
                let body = serde_json::to_vec(&json!({"metadata": {"ownerReferences": kept}}))
                    .unwrap_or_default();
                let _ = api::patch(
                    sim,
                    &target(dependent),
                    crate::patch::PatchType::Merge,
                    &body,
                    &options(),
                );
            }
            remove_finalizer(sim, live, "orphan");
            changed = true;
        }
        match live.info.builtin() {
            Some(Builtin::Namespace) => changed |= finish_namespace(sim, live, &objects),
            Some(Builtin::CustomResourceDefinition)
                if finalizers.iter().any(|f| f == CRD_CLEANUP_FINALIZER) =>
            {
                changed |= finish_crd(sim, live, &objects);
            }
            _ => {}
        }
    }
    changed
}

fn finish_namespace(sim: &Sim, namespace: &Live, objects: &[Live]) -> bool {
    let contents: Vec<&Live> = objects
        .iter()
        .filter(|l| l.info.namespaced && l.key.namespace == namespace.key.name)
        .collect();
    if contents.is_empty() {
        // As the real namespace controller: the namespace is not removed while discovery fails,
        // which it does while an APIService backed by a service has no backend (ringscale's
        // metrics API down blocks every namespace deletion).
        let unavailable: Vec<String> = crate::aggregator::registered(sim)
            .into_iter()
            .filter(|(group, version)| sim.backends.get(&format!("{version}.{group}")).is_empty())
            .map(|(group, version)| format!("{group}/{version}"))
            .collect();
        if !unavailable.is_empty() {
            return discovery_failed(sim, namespace, &unavailable);
        }
        let resource = GroupResource::new("", "namespaces");
        if let Ok(removed) = sim.store.remove(&resource, &namespace.key, None) {
            crate::lifecycle::after_delete(sim, &namespace.info, &removed, None);
        }
        return true;
    }
    for live in contents
        .iter()
        .filter(|l| l.object.pointer("/metadata/deletionTimestamp").is_none())
    {
        delete(sim, live, "Background");
    }
    true
}

/// Records on a terminating namespace that its deletion waits for discovery (the condition and
/// message a real namespace controller writes); false when it was already recorded.
fn discovery_failed(sim: &Sim, namespace: &Live, unavailable: &[String]) -> bool {
    let resource = GroupResource::new("", "namespaces");
    let Some((current, rv)) = sim.store.get(&resource, &namespace.key) else {
        return false;
    };
    let recorded = current
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "NamespaceDeletionDiscoveryFailure" && c["status"] == "True")
        });
    if recorded {
        return false;
    }
    let failing = unavailable
        .iter()
        .map(|gv| format!("{gv}: stale GroupVersion discovery: {gv}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut marked = (*current).clone();
    marked["status"]["conditions"] = json!([{
        "type": "NamespaceDeletionDiscoveryFailure",
        "status": "True",
        "reason": "DiscoveryFailed",
        "message": format!(
            "Discovery failed for some groups, {} failing: unable to retrieve the complete list of server APIs: {failing}",
            unavailable.len()
        ),
        "lastTransitionTime": api::now(),
    }]);
    match sim.store.replace(&resource, &namespace.key, rv, marked) {
        Ok(stored) => {
            crate::lifecycle::after_write(sim, &namespace.info, Some(&current), &stored);
            true
        }
        Err(_) => false,
    }
}

fn finish_crd(sim: &Sim, crd: &Live, objects: &[Live]) -> bool {
    let group = crd
        .object
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let plural = crd
        .object
        .pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let instances: Vec<&Live> = objects
        .iter()
        .filter(|l| l.info.gvr.group == group && l.info.gvr.resource == plural)
        .collect();
    if instances.is_empty() {
        remove_finalizer(sim, crd, CRD_CLEANUP_FINALIZER);
        return true;
    }
    for live in instances
        .iter()
        .filter(|l| l.object.pointer("/metadata/deletionTimestamp").is_none())
    {
        delete(sim, live, "Background");
    }
    true
}
