//! `cpu` and `memory`: HPA Resource (or ContainerResource) metrics served by the cluster's
//! metrics server, not polled by ringscale.

use ringscale_api::MetricType;

use crate::error::ErrorKind;
use crate::metric::{MetricSpec, Resource, ResourceMetric, ResourceTarget};
use crate::params::{META, Params};

/// A `cpu` or `memory` trigger.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    resource: Resource,
    container: Option<String>,
    target: ResourceTarget,
    /// The activation value, parsed like the target (checked by the operator against the
    /// metrics server's readings).
    pub activation: ResourceTarget,
}

pub(crate) fn parse(p: &mut Params<'_>, resource: Resource) -> Config {
    let legacy_type = p.choice("type", META, &["Utilization", "AverageValue"], "");
    let value = p.req_str(&["value"], META);
    let activation = p
        .opt_str(&["activationValue"], META)
        .unwrap_or_else(|| "0".to_owned());
    let container = p.opt_str(&["containerName"], META);
    let mut metric_type = p.input.metric_type.clone();
    if !legacy_type.is_empty() {
        metric_type = Some(if legacy_type == "Utilization" {
            MetricType::Utilization
        } else {
            MetricType::AverageValue
        });
    }
    let parse_target = |p: &mut Params<'_>, name: &str, text: &str| -> ResourceTarget {
        match &metric_type {
            Some(MetricType::AverageValue) => {
                if ringscale_api::quantity::parse(text).is_err() {
                    p.fail_param(
                        ErrorKind::Config,
                        name,
                        META,
                        format!("{text:?} is not a quantity"),
                    );
                }
                ResourceTarget::AverageValue(text.to_owned())
            }
            _ => match text.parse::<i32>() {
                Ok(v) => ResourceTarget::Utilization(v),
                Err(_) => {
                    if metric_type.is_some() {
                        p.fail_param(
                            ErrorKind::Config,
                            name,
                            META,
                            format!("{text:?} is not a whole percentage"),
                        );
                    }
                    ResourceTarget::Utilization(0)
                }
            },
        }
    };
    let target = if value.is_empty() {
        ResourceTarget::Utilization(0)
    } else {
        parse_target(p, "value", &value)
    };
    let activation = parse_target(p, "activationValue", &activation);
    match &metric_type {
        Some(MetricType::Utilization | MetricType::AverageValue) => {}
        Some(other) => p.fail(
            ErrorKind::Config,
            format!(
                "unknown metric type: {}, allowed values are 'Utilization' or 'AverageValue'",
                other.as_str()
            ),
        ),
        None => p.fail(
            ErrorKind::Config,
            "metricType is required for cpu and memory triggers: 'Utilization' or 'AverageValue'",
        ),
    }
    Config {
        resource,
        container,
        target,
        activation,
    }
}

impl Config {
    pub fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::Resource(ResourceMetric {
            resource: self.resource,
            container: self.container.clone(),
            target: self.target.clone(),
        })]
    }
}
