//! Metric specs (what the HPA scales on) and metric values (what a poll returns), named and
//! scaled the way KEDA names and scales them.

use ringscale_api::MetricType;
use ringscale_api::quantity::format_milli;

/// KEDA's `NormalizeString`: `/`, `.`, `:`, `%`, `(` and `)` become `-`.
pub fn normalize(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '/' | '.' | ':' | '%' | '(' | ')' => '-',
            c => c,
        })
        .collect()
}

/// The external metric name of a trigger: `s<index>-<name>`.
pub fn metric_name(index: usize, name: &str) -> String {
    format!("s{index}-{name}")
}

/// The trigger index and scaler-specific part of `s<index>-<rest>`, if `name` has that form.
pub fn split_metric_name(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix('s')?;
    let (index, rest) = rest.split_once('-')?;
    Some((index.parse().ok()?, rest))
}

/// A value in milli units as KEDA computes it: `int64(value * 1000)`, truncated, saturating.
pub fn to_milli(value: f64) -> i64 {
    if value.is_nan() {
        return 0;
    }
    let milli = (value * 1000.0).trunc();
    if milli >= i64::MAX as f64 {
        i64::MAX
    } else if milli <= i64::MIN as f64 {
        i64::MIN
    } else {
        milli as i64
    }
}

/// A target of an external metric.
#[derive(Clone, Debug, PartialEq)]
pub struct ExternalMetric {
    /// The metric name, `s<index>-...`.
    pub name: String,
    /// `AverageValue` or `Value`.
    pub metric_type: MetricType,
    /// The target in milli units (KEDA truncates targets to milli precision).
    pub target_milli: i64,
}

impl ExternalMetric {
    /// A target of `target` (truncated to milli precision).
    pub fn new(name: String, metric_type: MetricType, target: f64) -> Self {
        ExternalMetric {
            name,
            metric_type,
            target_milli: to_milli(target),
        }
    }

    /// The target as a number.
    pub fn target(&self) -> f64 {
        self.target_milli as f64 / 1000.0
    }

    /// The target as a Kubernetes quantity (`"2500m"`, `"5"`).
    pub fn target_quantity(&self) -> String {
        format_milli(self.target())
    }
}

/// The resource of a cpu or memory trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// CPU.
    Cpu,
    /// Memory.
    Memory,
}

impl Resource {
    /// The resource name.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
        }
    }
}

/// The target of a cpu or memory trigger.
#[derive(Clone, Debug, PartialEq)]
pub enum ResourceTarget {
    /// Percentage of the pods' requests.
    Utilization(i32),
    /// A quantity per pod, as written (`500m`, `512Mi`).
    AverageValue(String),
}

/// A Resource (or ContainerResource, with a container) metric of the HPA.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceMetric {
    /// cpu or memory.
    pub resource: Resource,
    /// The container, for a ContainerResource metric.
    pub container: Option<String>,
    /// The target.
    pub target: ResourceTarget,
}

/// One metric the HPA scales on.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricSpec {
    /// An external metric served by ringscale.
    External(ExternalMetric),
    /// A resource metric served by the cluster's metrics server.
    Resource(ResourceMetric),
}

impl MetricSpec {
    /// The external metric name, if this is an external metric.
    pub fn external_name(&self) -> Option<&str> {
        match self {
            MetricSpec::External(m) => Some(&m.name),
            MetricSpec::Resource(_) => None,
        }
    }
}

/// One value of a metric.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricValue {
    /// The metric name (shared with the trigger: polling does not copy it).
    pub name: std::sync::Arc<str>,
    /// The value.
    pub value: f64,
}

impl MetricValue {
    /// The value as KEDA sends it to the HPA: a milli-precision quantity.
    pub fn quantity(&self) -> String {
        format_milli(self.value)
    }
}

/// The result of polling a trigger.
#[derive(Clone, Debug, PartialEq)]
pub struct Poll {
    /// The metric values (one for most triggers; none for cpu and memory).
    pub values: Vec<MetricValue>,
    /// Whether the trigger is active: its value is above the activation threshold.
    pub active: bool,
}

impl Poll {
    /// A single value and its activity.
    pub fn one(name: std::sync::Arc<str>, value: f64, active: bool) -> Self {
        Poll {
            values: vec![MetricValue { name, value }],
            active,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_and_indexed_like_keda() {
        assert_eq!(
            metric_name(0, &normalize("redis-my.list:a/b%c(d)")),
            "s0-redis-my-list-a-b-c-d-"
        );
        assert_eq!(
            split_metric_name("s12-rabbitmq-orders"),
            Some((12, "rabbitmq-orders"))
        );
        assert_eq!(split_metric_name("x0-a"), None);
        assert_eq!(to_milli(2.0009), 2000);
        assert_eq!(to_milli(1e300), i64::MAX);
        let m = ExternalMetric::new("s0-x".into(), MetricType::AverageValue, 2.5);
        assert_eq!(m.target_quantity(), "2500m");
    }
}
