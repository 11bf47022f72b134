//! `kubernetes-workload`: the number of pods in the ScaledObject's namespace that match
//! `podSelector`, as KEDA's `kubernetes_workload_scaler.go` counts them — pods in phase
//! Succeeded or Failed are not counted; with `groupByNode: true`, the number of distinct nodes
//! those pods run on (pods not scheduled yet count for no node). Target `value` (> 0 unless the
//! trigger only feeds a scaling-modifiers formula), active above `activationValue` (0). Metric
//! `s<i>-workload-<namespace>`.
//!
//! The pods come from a [`PodLister`] the operator gives [`crate::SourcesConfig`] (the scalers
//! crate has no Kubernetes client); without one, a poll is a clear configuration error.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ringscale_api::selector::LabelSelector;

use crate::error::ErrorKind;
use crate::metric::{ExternalMetric, MetricSpec, Poll, metric_name, normalize};
use crate::params::{META, Params};
use crate::sources::Sources;
use crate::trigger::Common;

/// What the trigger needs of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSummary {
    /// `status.phase`.
    pub phase: Option<String>,
    /// `spec.nodeName`.
    pub node_name: Option<String>,
}

/// The future a [`ListPods`] returns.
pub type PodsFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<PodSummary>, ListPodsError>> + Send + 'a>>;

/// A pod LIST that failed: the namespace, the selector and the API's reason (as text: this
/// crate has no Kubernetes client types).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("listing pods in {namespace} with {selector:?}: {reason}")]
pub struct ListPodsError {
    /// The namespace listed.
    pub namespace: String,
    /// The label selector.
    pub selector: String,
    /// Why the LIST failed.
    pub reason: String,
}

/// Lists the pods of a namespace that match a label selector (the API server's syntax).
pub trait ListPods: Send + Sync {
    /// The matching pods, or why they could not be listed.
    fn list<'a>(&'a self, namespace: &'a str, selector: &'a str) -> PodsFuture<'a>;
}

/// The pod lister the `kubernetes-workload` trigger asks.
#[derive(Clone)]
pub struct PodLister(pub Arc<dyn ListPods>);

impl fmt::Debug for PodLister {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PodLister")
    }
}

/// A `kubernetes-workload` trigger.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    namespace: String,
    /// The selector as written (the API server parses it again).
    selector: String,
    value: f64,
    activation_value: f64,
    group_by_node: bool,
}

pub(crate) fn parse(p: &mut Params<'_>) -> Config {
    let selector = p.req_str(&["podSelector"], META);
    let value = p.f64_or("value", META, 0.0);
    let activation_value = p.f64_or("activationValue", META, 0.0);
    let group_by_node = p.bool_or("groupByNode", META, false);
    if value <= 0.0 && !p.input.as_metric_source {
        p.fail_param(
            ErrorKind::Config,
            "value",
            META,
            "value must be a float greater than 0",
        );
    }
    if !selector.is_empty()
        && let Err(e) = LabelSelector::parse(&selector)
    {
        p.fail_param(
            ErrorKind::Config,
            "podSelector",
            META,
            format!("error parsing pod selector: {e}"),
        );
    }
    Config {
        namespace: p.input.owner.namespace.clone(),
        selector,
        value,
        activation_value,
        group_by_node,
    }
}

impl Config {
    pub fn metric_specs(&self, common: &Common) -> Vec<MetricSpec> {
        vec![MetricSpec::External(ExternalMetric::new(
            metric_name(
                common.index,
                &normalize(&format!("workload-{}", self.namespace)),
            ),
            common.metric_type.clone(),
            self.value,
        ))]
    }
}

/// A built `kubernetes-workload` trigger.
pub(crate) struct WorkloadScaler {
    config: Config,
    pods: Option<PodLister>,
    limit: crate::sources::Limit,
}

impl WorkloadScaler {
    pub fn new(config: Config, sources: &Sources) -> Self {
        WorkloadScaler {
            config,
            pods: sources.inner.config.pods.clone(),
            limit: sources.limit(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub async fn poll(&self, common: &Common, metric: &str) -> Result<Poll, crate::ScalerError> {
        let Some(pods) = &self.pods else {
            return Err(common.error(
                ErrorKind::Config,
                "this process has no Kubernetes client to list pods with (kubernetes-workload is polled by the operator)",
            ));
        };
        let _permit = self.limit.acquire().await;
        let listed = pods
            .0
            .list(&self.config.namespace, &self.config.selector)
            .await
            .map_err(|e| {
                common.source_error(format!("error inspecting kubernetes workload: {e}"))
            })?;
        let count = count(&listed, self.config.group_by_node) as f64;
        Ok(Poll::one(
            common.name(metric),
            count,
            count > self.config.activation_value,
        ))
    }
}

/// KEDA's getMetricValue on a list: pods not Succeeded or Failed, or their distinct nodes.
fn count(pods: &[PodSummary], group_by_node: bool) -> usize {
    let counted = pods
        .iter()
        .filter(|p| !matches!(p.phase.as_deref(), Some("Succeeded" | "Failed")));
    if group_by_node {
        let nodes: std::collections::HashSet<&str> = counted
            .filter_map(|p| p.node_name.as_deref().filter(|n| !n.is_empty()))
            .collect();
        nodes.len()
    } else {
        counted.count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(phase: &str, node: &str) -> PodSummary {
        PodSummary {
            phase: (!phase.is_empty()).then(|| phase.to_owned()),
            node_name: (!node.is_empty()).then(|| node.to_owned()),
        }
    }

    #[test]
    fn terminated_pods_are_not_counted_and_nodes_are_distinct() {
        let pods = [
            pod("Running", "a"),
            pod("Pending", ""),
            pod("", ""),
            pod("Succeeded", "a"),
            pod("Failed", "b"),
            pod("Running", "a"),
            pod("Unknown", "c"),
        ];
        assert_eq!(count(&pods, false), 5);
        assert_eq!(count(&pods, true), 2);
        assert_eq!(count(&[], true), 0);
    }
}
