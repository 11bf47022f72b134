//! The CustomResourceDefinitions of the four kinds, generated from the Rust types.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube_core::CustomResourceExt;

use crate::{ClusterTriggerAuthentication, ScaledJob, ScaledObject, TriggerAuthentication};

/// All CRDs, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        ScaledObject::crd(),
        ScaledJob::crd(),
        TriggerAuthentication::crd(),
        ClusterTriggerAuthentication::crd(),
    ]
}
