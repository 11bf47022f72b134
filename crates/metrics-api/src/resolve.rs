//! Where a metric value comes from: the replicated cache when fresh, else the owner (this
//! replica: a live read; another: a forwarded query), with KEDA's fallback applied.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ringscale_api::ScaledObject;
use ringscale_cache::{Freshness, ObjectId, RecordKey};
use ringscale_coordinator::Ownership;
use ringscale_replication::{ForwardError, LiveQuery, Peers, Query, QueryError};
use ringscale_semantics::ObjectView;
use ringscale_semantics::fallback::{fallback_replicas, fallback_value};
use ringscale_semantics::plan::{Target, valid_fallback};
use tokio::sync::watch;

/// Why a value cannot be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetricError {
    /// The request is malformed (HTTP 400).
    #[error("{0}")]
    BadRequest(String),
    /// No such ScaledObject or metric (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The value cannot be read now (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
}

/// A value and where it came from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Resolved {
    /// The value.
    pub value: f64,
    /// Where it came from.
    pub source: Source,
}

/// Where a served value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A fresh record in the replicated cache.
    Cache,
    /// Read now by this replica, the owner.
    Live,
    /// Read now by the owner, asked by this replica.
    Forwarded,
    /// The fallback value (the metric failed more than `failureThreshold` times).
    Fallback,
    /// The replicated value, because the owner could not be asked (younger than
    /// max(3 × pollingInterval, 60 s)).
    Replicated,
}

/// Counters by source (for `/metrics`).
#[derive(Debug, Default)]
pub struct Counts {
    /// Served from the cache.
    pub cache: AtomicU64,
    /// Read live at this replica.
    pub live: AtomicU64,
    /// Forwarded to the owner.
    pub forwarded: AtomicU64,
    /// Fallback values.
    pub fallback: AtomicU64,
    /// Replicated values served because the owner could not be asked.
    pub replicated: AtomicU64,
    /// Failures.
    pub errors: AtomicU64,
}

/// What resolves values.
pub struct Resolver {
    /// The replicated records.
    pub records: Arc<ringscale_replication::Store>,
    /// The ring as this replica sees it.
    pub ownership: watch::Receiver<Ownership>,
    /// The ScaledObjects, their HPAs' targets and their scale targets' replicas (for fallback).
    pub objects: Arc<dyn ObjectView>,
    /// Live reads at this replica, for objects it owns.
    pub live: Arc<dyn LiveQuery>,
    /// Forwarding to other owners.
    pub peers: Arc<Peers>,
    /// Counters.
    pub counts: Counts,
}

impl Resolver {
    /// Registers `ringscale_metrics_api_requests{source}` in `registry`: external metrics
    /// requests by where the value came from (cache, live, forwarded, fallback, replicated,
    /// error), read from [`Counts`] at scrape.
    pub fn register(self: &Arc<Self>, registry: &mut prometheus_client::registry::Registry) {
        registry.register_collector(Box::new(CountsCollector(Arc::clone(self))));
    }
}

/// Exports a resolver's [`Counts`].
#[derive(Debug)]
struct CountsCollector(Arc<Resolver>);

impl prometheus_client::collector::Collector for CountsCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> std::fmt::Result {
        use prometheus_client::encoding::EncodeMetric as _;
        use prometheus_client::metrics::counter::ConstCounter;
        let counts = &self.0.counts;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut family = encoder.encode_descriptor(
            "ringscale_metrics_api_requests",
            "External metrics requests by where the value came from",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (source, value) in [
            ("cache", load(&counts.cache)),
            ("live", load(&counts.live)),
            ("forwarded", load(&counts.forwarded)),
            ("fallback", load(&counts.fallback)),
            ("replicated", load(&counts.replicated)),
            ("error", load(&counts.errors)),
        ] {
            let labels = [("source", source)];
            let metric = family.encode_family(&labels)?;
            ConstCounter::new(value).encode(metric)?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// The value of `metric` for ScaledObject `namespace/name`.
    pub async fn resolve(
        &self,
        namespace: &str,
        name: &str,
        metric: &str,
    ) -> Result<Resolved, MetricError> {
        let result = self.resolve_inner(namespace, name, metric).await;
        let counter = match &result {
            Ok(r) => match r.source {
                Source::Cache => &self.counts.cache,
                Source::Live => &self.counts.live,
                Source::Forwarded => &self.counts.forwarded,
                Source::Fallback => &self.counts.fallback,
                Source::Replicated => &self.counts.replicated,
            },
            Err(_) => &self.counts.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    async fn resolve_inner(
        &self,
        namespace: &str,
        name: &str,
        metric: &str,
    ) -> Result<Resolved, MetricError> {
        let so = self.objects.scaled_object(namespace, name).ok_or_else(|| {
            MetricError::NotFound(format!(
                "scaledobjects.keda.sh \"{name}\" not found in namespace {namespace}"
            ))
        })?;
        // The HPA asks with the name from the HPA spec; ringscale's names are lowercase, and
        // the API server may lowercase the path. The status lists the names once the owner has
        // written it; until then (a new object, or right after a takeover) the replicated
        // records and the owner know them.
        // With scalingModifiers the HPA asks for `compositeScalerName`; the trigger metrics stay
        // in `externalMetricNames`, as KEDA writes them.
        let listed = so
            .status
            .as_ref()
            .and_then(|s| {
                s.external_metric_names
                    .iter()
                    .flatten()
                    .chain(s.composite_scaler_name.as_ref())
                    .find(|n| n.eq_ignore_ascii_case(metric))
            })
            .cloned();
        let metric = listed.unwrap_or_else(|| {
            self.records
                .object(&ObjectId::scaled_object(namespace, name))
                .into_iter()
                .map(|(k, _)| k.metric_name)
                .find(|m| m.eq_ignore_ascii_case(metric))
                .unwrap_or_else(|| metric.to_owned())
        });
        let key = RecordKey::scaled_object(namespace, name, metric.as_str());
        // With `useCachedMetrics: true` the last poll answers: its fallback value past the
        // threshold (KEDA's cached record holds it), else its value. Otherwise, as KEDA's
        // `GetScaledObjectMetrics`, the source is read for this request — by the owner, which
        // applies fallback to the read.
        if uses_cached_metrics(&so, &metric) {
            if let Some(value) = self.fallback(&so, &metric) {
                return Ok(Resolved {
                    value,
                    source: Source::Fallback,
                });
            }
            if let Some(record) = self.records.get_fresh(&key, ringscale_replication::now())
                && record.error.is_none()
            {
                return Ok(Resolved {
                    value: record.value,
                    source: Source::Cache,
                });
            }
        }

        let (owner, me) = {
            let o = self.ownership.borrow();
            (o.owner(&key.object.ring_key()).cloned(), o.member.clone())
        };
        let Some(owner) = owner else {
            return self
                .unanswered(&so, &key)
                .ok_or_else(|| MetricError::Unavailable("the ring has no members yet".to_owned()));
        };
        let query = Query {
            object: key.object.clone(),
            metric_name: Some(metric.clone()),
        };
        let (answer, source) = if *owner.name == *me {
            (self.live.query(query).await, Source::Live)
        } else {
            match self.peers.forward(&owner, query).await {
                Ok(a) => (Ok(a), Source::Forwarded),
                Err(ForwardError::Query(e)) => (Err(e), Source::Forwarded),
                // The owner cannot be reached: the replicated value, while young enough.
                Err(e @ ForwardError::Endpoint { .. }) => {
                    return self.unanswered(&so, &key).ok_or_else(|| {
                        MetricError::Unavailable(format!(
                            "the owner {} could not be asked: {e}",
                            owner.name
                        ))
                    });
                }
            }
        };
        let records = match answer {
            Ok(records) => records,
            Err(QueryError::NotFound(m)) => return Err(MetricError::NotFound(m)),
            // The owner answered that the source failed (below the fallback threshold, or
            // without fallback): that is the answer.
            Err(QueryError::Source(m)) => return Err(MetricError::Unavailable(m)),
            // Not the owner any more, shutting down, timed out: the replicated value, while
            // young enough.
            Err(other) => {
                return self
                    .unanswered(&so, &key)
                    .ok_or_else(|| MetricError::Unavailable(other.to_string()));
            }
        };
        let (_, record) = records
            .into_iter()
            .find(|(k, _)| k.metric_name == metric)
            .ok_or_else(|| {
                MetricError::Unavailable(format!("the owner sent no value for {metric}"))
            })?;
        match &record.error {
            Some(e) => Err(MetricError::Unavailable(e.to_string())),
            None => Ok(Resolved {
                value: record.value,
                source,
            }),
        }
    }

    /// What is served when the owner cannot answer: the fallback value past the threshold
    /// (from the replicated failure counts), else the replicated value, only a good reading
    /// younger than the staleness bound (max(3 × pollingInterval, 60 s)).
    fn unanswered(&self, so: &ScaledObject, key: &RecordKey) -> Option<Resolved> {
        if let Some(value) = self.fallback(so, &key.metric_name) {
            return Some(Resolved {
                value,
                source: Source::Fallback,
            });
        }
        let record = self.records.get(key)?;
        let usable = record.freshness(ringscale_replication::now()) != Freshness::Stale;
        (usable && record.error.is_none()).then_some(Resolved {
            value: record.value,
            source: Source::Replicated,
        })
    }

    /// KEDA's fallback where no read is made here: when the metric's failures (the owner's
    /// count in the replicated record, or `status.health`) exceed `failureThreshold`, the value
    /// that lands the HPA on the fallback replicas.
    fn fallback(&self, so: &ScaledObject, metric: &str) -> Option<f64> {
        // `fallback.replicas: 0` is valid (KEDA's `HasValidFallback`): the HPA is served 0. The
        // composite metric's fallback is computed by the owner and recorded.
        let fallback = valid_fallback(so)?;
        // The owner's count travels in the replicated record (at once); the status has it too,
        // written when the threshold is crossed (and, under a write budget, maybe later).
        let namespace = so.metadata.namespace.as_deref().unwrap_or_default();
        let name = so.metadata.name.as_deref().unwrap_or_default();
        let replicated = self
            .records
            .get(&RecordKey::scaled_object(namespace, name, metric))
            .filter(|r| r.is_fresh(ringscale_replication::now()))
            .map_or(0, |r| i32::try_from(r.failures).unwrap_or(i32::MAX));
        let in_status = so
            .status
            .as_ref()
            .and_then(|s| s.health.as_ref())
            .and_then(|h| h.get(metric))
            .and_then(|h| h.number_of_failures)
            .unwrap_or(0);
        let failures = replicated.max(in_status);
        if failures <= fallback.failure_threshold {
            return None;
        }
        let (metric_type, target) = self.objects.hpa_target(so, metric)?;
        let Target { current, ready } = self.objects.target_replicas(so).unwrap_or(Target {
            current: 0,
            ready: 0,
        });
        let replicas = fallback_replicas(fallback, current);
        Some(fallback_value(target, &metric_type, replicas, ready))
    }
}

/// Whether `metric` of `so` is served from the last poll (`useCachedMetrics: true` on its
/// trigger; for the composite metric, on every trigger it is computed from).
fn uses_cached_metrics(so: &ScaledObject, metric: &str) -> bool {
    if metric == ringscale_api::names::COMPOSITE_METRIC_NAME {
        let mut external = so
            .spec
            .triggers
            .iter()
            .filter(|t| !t.is_resource())
            .peekable();
        return external.peek().is_some() && external.all(|t| t.uses_cached_metrics());
    }
    ringscale_scalers::split_metric_name(metric)
        .and_then(|(index, _)| so.spec.triggers.get(index))
        .is_some_and(|t| t.uses_cached_metrics())
}
