//! What a replica that does not poll an object reads about it to apply KEDA's rules: the
//! metrics API serves any ScaledObject (fallback values included) from its records plus this
//! view. The operator implements it over its watches; the metrics API sees nothing else of the
//! operator.

use std::sync::Arc;

use ringscale_api::{MetricType, ScaledObject};

use crate::plan::Target;

/// The cluster as far as serving a ScaledObject's metrics needs it.
pub trait ObjectView: Send + Sync {
    /// The ScaledObject `namespace/name`, as the watch holds it.
    fn scaled_object(&self, namespace: &str, name: &str) -> Option<Arc<ScaledObject>>;

    /// The target the object's HPA sets for the external metric `metric` (matched without
    /// regard to case, as the HPA may ask): its type and value. `None` without such an HPA or
    /// metric, or with a target that is not a quantity.
    fn hpa_target(&self, so: &ScaledObject, metric: &str) -> Option<(MetricType, f64)>;

    /// The scale target's replicas (current and ready); `None` when they cannot be read.
    fn target_replicas(&self, so: &ScaledObject) -> Option<Target>;
}
