//! Live queries at the owner: another replica's metrics API found no fresh value and forwarded
//! the HPA's question here. The object's triggers are polled now, the values recorded (so every
//! peer gets them), and returned. The replication server coalesces identical concurrent queries
//! and bounds the call's time.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use ringscale_cache::{Record, RecordKey};
use ringscale_coordinator::Ownership;
use ringscale_replication::{LiveQuery, Query, QueryError, Store};
use ringscale_ring::{Kind, ObjectKey};
use ringscale_scalers::MetricSpec;
use tokio::sync::{mpsc, oneshot, watch};

use super::Msg;

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
    let (runtime, interval) = answer
        .await
        .map_err(|_| QueryError::Unavailable("the operator is stopping".into()))?
        .ok_or_else(|| QueryError::NotFound(format!("{what} is not known to its owner")))?;
    let runtime = runtime.lock().await;
    if runtime.fingerprint.is_none() {
        return Err(QueryError::Unavailable(format!(
            "{what} has not been polled yet"
        )));
    }
    if !runtime.problems.is_empty() {
        return Err(QueryError::Source(runtime.problems.join("; ")));
    }
    let wanted: Vec<&str> = runtime
        .specs
        .iter()
        .filter_map(MetricSpec::external_name)
        .filter(|m| {
            query
                .metric_name
                .as_deref()
                .is_none_or(|q| q.eq_ignore_ascii_case(m))
        })
        .collect();
    if wanted.is_empty() {
        return Err(QueryError::NotFound(format!(
            "{what} has no metric {}",
            query.metric_name.as_deref().unwrap_or("")
        )));
    }
    let mut out = Vec::new();
    for metric in wanted {
        let index = ringscale_scalers::split_metric_name(metric).map(|(i, _)| i);
        let Some(scaler) = runtime.scalers.iter().find(|s| Some(s.index()) == index) else {
            continue;
        };
        let polled_at = ringscale_replication::now();
        let poll = scaler
            .poll(metric)
            .await
            .map_err(|e| QueryError::Source(e.to_string()))?;
        let value = poll
            .values
            .iter()
            .find(|v| &*v.name == metric)
            .map_or(0.0, |v| v.value);
        let key = RecordKey::new(ns.as_str(), name.as_str(), metric);
        // Recorded only while still the owner at the generation the query began with.
        if ownership.borrow().generation() == generation {
            records.record_poll(key.clone(), value, poll.active, None, polled_at, interval);
        }
        if let Some(record) = records.get(&key) {
            out.push((key, record));
        }
    }
    Ok(out)
}
