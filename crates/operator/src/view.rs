//! The operator's watches as the metrics API reads them ([`ObjectView`]).

use std::sync::Arc;

use kube::runtime::reflector::ObjectRef;
use ringscale_api::{MetricType, ScaledObject};
use ringscale_semantics::ObjectView;
use ringscale_semantics::plan::Target;

use crate::hpa::HpaView;
use crate::lookup::ClusterLookup;
use crate::scope::Scoped;

/// ScaledObjects, HPAs and scale targets from the controller's watches.
#[derive(Clone)]
pub(crate) struct Watched {
    pub(crate) scaled_objects: Scoped<ScaledObject>,
    pub(crate) hpas: Scoped<HpaView>,
    pub(crate) cluster: ClusterLookup,
}

impl ObjectView for Watched {
    fn scaled_object(&self, namespace: &str, name: &str) -> Option<Arc<ScaledObject>> {
        self.scaled_objects
            .get(&ObjectRef::new(name).within(namespace))
    }

    fn hpa_target(&self, so: &ScaledObject, metric: &str) -> Option<(MetricType, f64)> {
        let namespace = so.metadata.namespace.as_deref().unwrap_or_default();
        let hpa = self
            .hpas
            .get(&ObjectRef::new(&so.hpa_name()).within(namespace))?;
        let spec = hpa.spec()?;
        let (metric_type, target) = spec
            .metrics
            .iter()
            .flatten()
            .filter_map(|m| m.external.as_ref())
            .find(|e| e.metric.name.eq_ignore_ascii_case(metric))
            .and_then(|e| {
                let t = &e.target;
                match t.type_.as_str() {
                    "Value" => Some((MetricType::Value, t.value.as_ref()?)),
                    _ => Some((MetricType::AverageValue, t.average_value.as_ref()?)),
                }
            })?;
        let target = ringscale_api::quantity::parse(&target.0).ok()?;
        Some((metric_type, target))
    }

    fn target_replicas(&self, so: &ScaledObject) -> Option<Target> {
        self.cluster
            .target_replicas(so)
            .map(|(current, ready)| Target { current, ready })
    }
}
