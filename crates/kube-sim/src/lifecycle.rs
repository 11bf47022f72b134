//! Kind-specific steps around writes: accepting and serving CRDs, namespace termination, and
//! waking the garbage collector.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

use crate::api;
use crate::error::ApiError;
use crate::resources::{Builtin, ResourceInfo};
use crate::{Sim, custom};

/// Finalizer the API server puts on a CRD being deleted until its objects are gone.
pub const CRD_CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

fn decode_crd(info: &ResourceInfo, object: &Value) -> Result<CustomResourceDefinition, ApiError> {
    serde_json::from_value(object.clone())
        .map_err(|e| ApiError::bad_request(format!("{} cannot be decoded: {e}", info.kind)))
}

fn check_crd(info: &ResourceInfo, object: &Value) -> Result<CustomResourceDefinition, ApiError> {
    let crd = decode_crd(info, object)?;
    let problems = custom::validate_crd(&crd);
    if !problems.is_empty() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        return Err(ApiError::invalid(
            &info.kind,
            &info.gvr.group,
            &name,
            &problems,
        ));
    }
    Ok(crd)
}

/// Before a create is stored.
pub fn on_create(_sim: &Sim, info: &ResourceInfo, object: &mut Value) -> Result<(), ApiError> {
    match info.builtin() {
        Some(Builtin::CustomResourceDefinition) => {
            let crd = check_crd(info, object)?;
            object["status"] = custom::established_status(&crd, &api::now());
        }
        Some(Builtin::ApiService) => {
            object["status"] = json!({"conditions": [{
                "type": "Available", "status": "True", "reason": "Passed",
                "message": "all checks passed", "lastTransitionTime": api::now(),
            }]});
        }
        _ => {}
    }
    Ok(())
}

/// Before an update is stored.
pub fn on_update(
    _sim: &Sim,
    info: &ResourceInfo,
    object: &mut Value,
    current: &Value,
) -> Result<(), ApiError> {
    if info.builtin() == Some(Builtin::CustomResourceDefinition) {
        let crd = check_crd(info, object)?;
        let old: CustomResourceDefinition = decode_crd(info, current)?;
        if crd.spec.group != old.spec.group
            || crd.spec.names.plural != old.spec.names.plural
            || crd.spec.scope != old.spec.scope
        {
            let problem = ringscale_api::validate::Problem::new(
                ringscale_api::validate::ProblemKind::Invalid,
                ringscale_api::validate::FieldPath::new("spec"),
                "group, names.plural and scope are immutable",
            );
            return Err(ApiError::invalid(
                &info.kind,
                &info.gvr.group,
                crd.metadata.name.as_deref().unwrap_or_default(),
                &[problem],
            ));
        }
        if object.get("status").is_none_or(Value::is_null) {
            object["status"] = custom::established_status(&crd, &api::now());
        }
    }
    Ok(())
}

/// After any stored write.
pub fn after_write(sim: &Sim, info: &ResourceInfo, _old: Option<&Value>, stored: &Value) {
    if info.builtin() == Some(Builtin::CustomResourceDefinition)
        && stored.pointer("/metadata/deletionTimestamp").is_none()
        && let Ok(crd) = serde_json::from_value::<CustomResourceDefinition>(stored.clone())
    {
        let name = crd.metadata.name.clone().unwrap_or_default();
        sim.registry.put_custom(&name, custom::resources_of(&crd));
    }
    if stored.pointer("/metadata/deletionTimestamp").is_some() {
        sim.gc_wakeup.notify_one();
    }
}

/// Before a delete: adds the finalizers the server itself holds. Returns true when the
/// object must wait for a controller even without finalizers (a namespace with
/// `spec.finalizers`).
pub fn before_delete(info: &ResourceInfo, current: &Value, finalizers: &mut Vec<String>) -> bool {
    match info.builtin() {
        Some(Builtin::CustomResourceDefinition) => {
            if !finalizers.iter().any(|f| f == CRD_CLEANUP_FINALIZER) {
                finalizers.push(CRD_CLEANUP_FINALIZER.to_owned());
            }
            false
        }
        Some(Builtin::Namespace) => deletion_blocked(info, current),
        _ => false,
    }
}

/// Whether an object marked for deletion must wait although it has no finalizers.
pub fn deletion_blocked(info: &ResourceInfo, object: &Value) -> bool {
    info.builtin() == Some(Builtin::Namespace)
        && object
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty())
}

/// After an object is removed.
pub fn after_delete(sim: &Sim, info: &ResourceInfo, removed: &Value, _propagation: Option<&str>) {
    if info.builtin() == Some(Builtin::CustomResourceDefinition)
        && let Some(name) = removed.pointer("/metadata/name").and_then(Value::as_str)
    {
        sim.registry.remove_custom(name);
    }
    sim.gc_wakeup.notify_one();
}
