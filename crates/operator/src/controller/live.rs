//! Live queries at the owner: another replica's metrics API found no fresh value and forwarded
//! the HPA's question here. The object's triggers are polled now, the values recorded (so every
//! peer gets them), and returned. The replication server coalesces identical concurrent queries
//! and bounds the call's time.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use ringscale_api::names::COMPOSITE_METRIC_NAME;
use ringscale_api::scaled_object::FallbackBehavior;
use ringscale_api::{MetricType, ScaledObject};
use ringscale_cache::{Record, RecordKey};
use ringscale_coordinator::Ownership;
use ringscale_replication::{LiveQuery, Query, QueryError, Store};
use ringscale_ring::{Kind, ObjectKey};
use ringscale_scalers::MetricSpec;
use tokio::sync::{mpsc, oneshot, watch};

use super::{Msg, Runtime};
use crate::semantics::fallback::{fallback_replicas, fallback_value};
use crate::semantics::plan::{self, valid_fallback};

/// What the loop hands a live query about an owned object.
pub(super) struct Owned {
    pub(super) runtime: Arc<tokio::sync::Mutex<Runtime>>,
    pub(super) interval: std::time::Duration,
    pub(super) so: Arc<ScaledObject>,
    /// The target's replicas: current and ready.
    pub(super) replicas: (i32, i32),
}

pub(super) struct Live {
    pub(super) inbox: mpsc::UnboundedSender<Msg>,
    pub(super) ownership: watch::Receiver<Ownership>,
    pub(super) records: Arc<Store>,
}

impl LiveQuery for Live {
    fn query(
        &self,
        query: Query,
    ) -> BoxFuture<'static, Result<Vec<(RecordKey, Record)>, QueryError>> {
        let (inbox, ownership, records) = (
            self.inbox.clone(),
            self.ownership.clone(),
            Arc::clone(&self.records),
        );
        Box::pin(async move { answer(&inbox, &ownership, &records, query).await })
    }
}

async fn answer(
    inbox: &mpsc::UnboundedSender<Msg>,
    ownership: &watch::Receiver<Ownership>,
    records: &Store,
    query: Query,
) -> Result<Vec<(RecordKey, Record)>, QueryError> {
    let (ns, name) = (query.namespace.clone(), query.scaled_object.clone());
    let what = format!("ScaledObject {ns}/{name}");
    let generation = {
        let o = ownership.borrow();
        if !o.owns(&ObjectKey::new(Kind::ScaledObject, &ns, &name)) {
            return Err(QueryError::NotOwner(what, o.generation()));
        }
        o.generation()
    };
    let (reply, answer) = oneshot::channel();
    inbox
        .send(Msg::Runtime(
            (Kind::ScaledObject, (ns.clone(), name.clone())),
            reply,
        ))
        .map_err(|_| QueryError::Unavailable("the operator is stopping".into()))?;
    let Owned {
        runtime,
        interval,
        so,
        replicas: (current, ready),
    } = answer
        .await
        .map_err(|_| QueryError::Unavailable("the operator is stopping".into()))?
        .ok_or_else(|| QueryError::NotFound(format!("{what} is not known to its owner")))?;
    let mut runtime = runtime.lock().await;
    if runtime.fingerprint.is_none() {
        return Err(QueryError::Unavailable(format!(
            "{what} has not been polled yet"
        )));
    }
    if !runtime.problems.is_empty() {
        return Err(QueryError::Source(runtime.problems.join("; ")));
    }
    let composite = so.spec.scaling_modifiers().is_some()
        && query
            .metric_name
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case(COMPOSITE_METRIC_NAME));
    if composite {
        // The HPA of an object with scalingModifiers asks for the composite metric: read every
        // trigger, weigh the readings as a poll does (fallback, `nil` for `??`), and answer
        // the formula's value.
        let polled_at = ringscale_replication::now();
        let polls = read_all(&runtime).await;
        let readings = plan::assess(
            &so,
            &polls,
            &runtime.health,
            &so.status.clone().unwrap_or_default(),
            runtime.formula.as_ref(),
            Some(plan::Target { current, ready }),
        );
        runtime.health = readings.health;
        let key = RecordKey::new(ns.as_str(), name.as_str(), COMPOSITE_METRIC_NAME);
        let Some(r) = readings
            .records
            .iter()
            .find(|r| r.metric == COMPOSITE_METRIC_NAME)
        else {
            return Err(QueryError::Source(readings.errors.join("; ")));
        };
        let value = match (r.value, &r.error) {
            (Some(v), None) => v,
            (_, e) => {
                let message = e.clone().unwrap_or_else(|| readings.errors.join("; "));
                return Err(QueryError::Source(message));
            }
        };
        if ownership.borrow().generation() == generation {
            records.record_poll(key.clone(), value, r.active, None, polled_at, interval);
        }
        return Ok(records
            .get(&key)
            .map(|record| (key, record))
            .into_iter()
            .collect());
    }
    let wanted: Vec<(String, Option<(MetricType, f64)>)> = runtime
        .specs
        .iter()
        .filter_map(|s| match s {
            MetricSpec::External(m) => Some(m),
            MetricSpec::Resource(_) => None,
        })
        .filter(|m| {
            query
                .metric_name
                .as_deref()
                .is_none_or(|q| q.eq_ignore_ascii_case(&m.name))
        })
        .map(|m| {
            #[allow(clippy::cast_precision_loss)]
            let target = m.target_milli as f64 / 1000.0;
            (m.name.clone(), Some((m.metric_type.clone(), target)))
        })
        .collect();
    if wanted.is_empty() {
        return Err(QueryError::NotFound(format!(
            "{what} has no metric {}",
            query.metric_name.as_deref().unwrap_or("")
        )));
    }
    let mut out = Vec::new();
    for (metric, target) in wanted {
        let metric = metric.as_str();
        let index = ringscale_scalers::split_metric_name(metric).map(|(i, _)| i);
        let Some(scaler) = runtime.scalers.iter().find(|s| Some(s.index()) == index) else {
            continue;
        };
        let polled_at = ringscale_replication::now();
        let key = RecordKey::new(ns.as_str(), name.as_str(), metric);
        // Recorded only while still the owner at the generation the query began with.
        let still_owner = ownership.borrow().generation() == generation;
        match scaler.poll(metric).await {
            Ok(poll) => {
                let value = poll
                    .values
                    .iter()
                    .find(|v| &*v.name == metric)
                    .map_or(0.0, |v| v.value);
                // A good read resets the failure count, as KEDA's does on this path.
                if let Some(h) = runtime.health.get_mut(metric) {
                    *h = h.success();
                }
                if still_owner {
                    records.record_poll(key.clone(), value, poll.active, None, polled_at, interval);
                }
                if let Some(record) = records.get(&key) {
                    out.push((key, record));
                }
            }
            Err(e) => {
                // KEDA counts a failed read for the HPA toward fallback too
                // (`GetScaledObjectMetrics` → `GetMetricsWithFallback`).
                let message = e.to_string();
                let health = runtime.health.entry(metric.to_owned()).or_default();
                *health = health.failure();
                let health = *health;
                if still_owner {
                    let last = records.get(&key).map_or(0.0, |r| r.value);
                    records.record(
                        key.clone(),
                        ringscale_replication::Reading {
                            value: last,
                            active: false,
                            error: Some(&message),
                            failures: u32::try_from(health.failures).unwrap_or(0),
                        },
                        polled_at,
                        interval,
                    );
                }
                let fallback = valid_fallback(&so).filter(|f| {
                    health.falls_back(f)
                        && f.effective_behavior() != FallbackBehavior::ScalingModifiers
                });
                match (fallback, &target) {
                    // Past the threshold: the value that lands the HPA on the fallback
                    // replicas, answered (not recorded: the record keeps the error).
                    (Some(f), Some((metric_type, t))) => {
                        let value =
                            fallback_value(*t, metric_type, fallback_replicas(f, current), ready);
                        let record = Record::new(
                            value,
                            true,
                            None,
                            ringscale_cache::Version::default(),
                            polled_at,
                            interval,
                            Arc::from(""),
                        );
                        out.push((key, record));
                    }
                    _ => return Err(QueryError::Source(message)),
                }
            }
        }
    }
    Ok(out)
}

/// Reads every external metric of the object now, for a composite answer.
async fn read_all(runtime: &Runtime) -> Vec<plan::MetricPoll> {
    let mut out = Vec::new();
    for spec in &runtime.specs {
        let MetricSpec::External(m) = spec else {
            continue;
        };
        let Some((index, _)) = ringscale_scalers::split_metric_name(&m.name) else {
            continue;
        };
        let Some(scaler) = runtime.scalers.iter().find(|s| s.index() == index) else {
            continue;
        };
        let outcome = match scaler.poll(&m.name).await {
            Ok(poll) => Ok(plan::Reading {
                value: poll
                    .values
                    .iter()
                    .find(|v| *v.name == m.name)
                    .map_or(0.0, |v| v.value),
                active: poll.active,
            }),
            Err(e) => Err(e.to_string()),
        };
        #[allow(clippy::cast_precision_loss)]
        let target = m.target_milli as f64 / 1000.0;
        out.push(plan::MetricPoll {
            index,
            metric: m.name.clone(),
            target: Some((m.metric_type.clone(), target)),
            outcome,
        });
    }
    out
}
