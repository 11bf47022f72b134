//! Simulated controllers: workload status, Jobs and their Pods, and the HPA.

pub mod hpa;
pub mod hpa_algo;
pub mod jobs;
pub mod workloads;

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Sim;
use crate::api::{self, Subresource, Target, WriteOptions};
use crate::error::ApiError;
use crate::patch::PatchType;
use crate::resources::{Gvr, ResourceInfo};
use crate::store::ObjKey;

/// Field manager of the simulated controllers.
pub const MANAGER: &str = "kube-controller-manager";

/// Starts every controller.
pub fn spawn(sim: Arc<Sim>, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(workloads::run(sim.clone(), shutdown.clone())),
        tokio::spawn(jobs::run(sim.clone(), shutdown.clone())),
        tokio::spawn(hpa::run(sim, shutdown)),
    ]
}

/// The served resource of a built-in kind.
pub(crate) fn info(
    sim: &Sim,
    group: &str,
    version: &str,
    resource: &str,
) -> Option<Arc<ResourceInfo>> {
    sim.registry.get(&Gvr::new(group, version, resource))
}

pub(crate) fn target(
    info: &Arc<ResourceInfo>,
    key: &ObjKey,
    subresource: Option<Subresource>,
) -> Target {
    Target {
        info: info.clone(),
        namespace: (!key.namespace.is_empty()).then(|| key.namespace.clone()),
        name: Some(key.name.clone()),
        subresource,
    }
}

pub(crate) fn options() -> WriteOptions {
    WriteOptions {
        field_manager: MANAGER.to_owned(),
        ..WriteOptions::default()
    }
}

/// Merge-patches the status of an object.
pub(crate) fn patch_status(
    sim: &Sim,
    info: &Arc<ResourceInfo>,
    key: &ObjKey,
    status: &Value,
) -> Result<Value, ApiError> {
    let body = serde_json::to_vec(&serde_json::json!({ "status": status })).unwrap_or_default();
    api::patch(
        sim,
        &target(info, key, Some(Subresource::Status)),
        PatchType::Merge,
        &body,
        &options(),
    )
    .map(|w| w.object)
}
