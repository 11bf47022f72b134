//! Live reads at the owner: a metrics request (this replica's or forwarded by a peer) reads the
//! object's triggers now, weighs the readings as a poll does ([`plan::assess`]), records the
//! values (so every peer gets them) and returns them. Identical concurrent queries are coalesced
//! and bounded in time before they get here (`ringscale_replication::Coalesced`).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use ringscale_api::names::COMPOSITE_METRIC_NAME;
use ringscale_api::{ScaledObject, ScaledObjectStatus};
use ringscale_cache::{Record, RecordKey};
use ringscale_coordinator::Ownership;
use ringscale_replication::{LiveQuery, Query, QueryError, Store};
use ringscale_ring::Kind;
use tokio::sync::watch;

use super::{PollState, read_metrics, record_planned};
use ringscale_semantics::plan;

/// What the loop hands a live query about an owned object.
pub(super) struct Owned {
    pub(super) state: Arc<tokio::sync::Mutex<PollState>>,
    pub(super) interval: std::time::Duration,
    pub(super) so: Arc<ScaledObject>,
    /// The target's replicas: current and ready.
    pub(super) replicas: (i32, i32),
}

pub(super) struct Live {
    pub(super) inbox: super::Inbox,
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
    inbox: &super::Inbox,
    ownership: &watch::Receiver<Ownership>,
    records: &Store,
    query: Query,
) -> Result<Vec<(RecordKey, Record)>, QueryError> {
    let id = query.object;
    if id.kind != Kind::ScaledObject {
        return Err(QueryError::NotFound(format!(
            "{id}: live queries read ScaledObjects only"
        )));
    }
    let what = id.to_string();
    let generation = {
        let o = ownership.borrow();
        if !o.owns(&id.ring_key()) {
            return Err(QueryError::NotOwner(what, o.generation()));
        }
        o.generation()
    };
    let Owned {
        state,
        interval,
        so,
        replicas: (current, ready),
    } = inbox
        .owned(id.clone())
        .await
        .ok_or_else(|| QueryError::Unavailable("the operator is stopping".into()))?
        .ok_or_else(|| QueryError::NotFound(format!("{what} is not known to its owner")))?;
    let mut state = state.lock().await;
    if state.fingerprint.is_none() {
        return Err(QueryError::Unavailable(format!(
            "{what} has not been polled yet"
        )));
    }
    if !state.problems.is_empty() {
        return Err(QueryError::Source(state.problems.join("; ")));
    }
    let composite = so.spec.scaling_modifiers().is_some()
        && query
            .metric_name
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case(COMPOSITE_METRIC_NAME));
    // The HPA of an object with scalingModifiers asks for the composite metric: every trigger
    // is read and the formula computed. Otherwise the metric asked (or all of them).
    let only = if composite {
        None
    } else {
        query.metric_name.as_deref()
    };
    let polled_at = ringscale_replication::now();
    let polls: Vec<plan::MetricPoll> = read_metrics(&state, only)
        .await
        .into_iter()
        .map(|(poll, _)| poll)
        .collect();
    if polls.is_empty() {
        return Err(QueryError::NotFound(format!(
            "{what} has no metric {}",
            query.metric_name.as_deref().unwrap_or("")
        )));
    }
    // Weighed as a poll is: these reads count toward fallback too (KEDA's
    // `GetScaledObjectMetrics` → `GetMetricsWithFallback`), and past the threshold the answer is
    // the fallback value.
    let readings = plan::assess(
        &so,
        &polls,
        &state.health,
        so.status.as_ref().unwrap_or(&ScaledObjectStatus::default()),
        state.formula.as_ref(),
        Some(plan::Target { current, ready }),
    );
    state.health = readings.health;
    let answered: Vec<&plan::PlannedRecord> = readings
        .records
        .iter()
        .filter(|r| (r.metric == COMPOSITE_METRIC_NAME) == composite)
        .collect();
    if composite && answered.is_empty() {
        // A trigger failed without fallback: no composite value (as a poll).
        return Err(QueryError::Source(readings.errors.join("; ")));
    }
    // Recorded only while still the owner at the generation the query began with.
    let still_owner = ownership.borrow().generation() == generation;
    let mut out = Vec::new();
    for r in answered {
        let key = RecordKey::new(id.clone(), r.metric.as_str());
        if still_owner {
            record_planned(records, key.clone(), r, polled_at, interval, generation);
        }
        match (&r.error, r.fallback) {
            (None, _) => out.extend(records.get(&key).map(|record| (key, record))),
            // Past the threshold: answered with the fallback value (the record keeps the error).
            (Some(_), Some(value)) => out.push((
                key,
                Record::new(
                    value,
                    true,
                    None,
                    ringscale_cache::Version::default(),
                    polled_at,
                    interval,
                    Arc::from(""),
                ),
            )),
            (Some(e), None) => return Err(QueryError::Source(e.clone())),
        }
    }
    Ok(out)
}
