//! Forwarded metrics queries: what the owner does when another replica asks for a live value.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use prost::Message as _;
use ringscale_cache::{ObjectId, Record, RecordKey};
use ringscale_proto::replication as pb;

/// A live query for one object's metrics (the metrics API asks for ScaledObjects').
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Query {
    /// The object.
    pub object: ObjectId,
    /// One metric, or `None` for all of them.
    pub metric_name: Option<String>,
}

/// Why a live query failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The asked replica does not own the object (the rings differ: retry after the next ring).
    #[error("this replica does not own {0} at generation {1}")]
    NotOwner(String, u64),
    /// No such ScaledObject or metric.
    #[error("{0}")]
    NotFound(String),
    /// The source failed.
    #[error("{0}")]
    Source(String),
    /// The query did not finish in time.
    #[error("the query timed out after {0} ms")]
    Timeout(u64),
    /// The replica cannot serve queries (no live source configured, or shutting down).
    #[error("{0}")]
    Unavailable(String),
}

/// Answers live queries at the owner: reads the source now. Implemented by the operator; the
/// replication server coalesces identical concurrent queries before calling it.
pub trait LiveQuery: Send + Sync + 'static {
    /// Reads the object's metrics from their sources.
    fn query(
        &self,
        query: Query,
    ) -> BoxFuture<'static, Result<Vec<(RecordKey, Record)>, QueryError>>;
}

impl From<QueryError> for tonic::Status {
    fn from(e: QueryError) -> Self {
        use pb::query_failure::Kind;
        let message = e.to_string();
        let (code, failure) = match e {
            QueryError::NotOwner(object, generation) => (
                tonic::Code::FailedPrecondition,
                pb::QueryFailure {
                    kind: Kind::NotOwner.into(),
                    text: object,
                    generation,
                    timeout_ms: 0,
                },
            ),
            QueryError::NotFound(text) => (tonic::Code::NotFound, failure(Kind::NotFound, text)),
            QueryError::Source(text) => (tonic::Code::Unavailable, failure(Kind::Source, text)),
            QueryError::Timeout(ms) => (
                tonic::Code::DeadlineExceeded,
                pb::QueryFailure {
                    kind: Kind::Timeout.into(),
                    text: String::new(),
                    generation: 0,
                    timeout_ms: ms,
                },
            ),
            QueryError::Unavailable(text) => {
                (tonic::Code::Unavailable, failure(Kind::Unavailable, text))
            }
        };
        tonic::Status::with_details(code, message, failure.encode_to_vec().into())
    }
}

fn failure(kind: pb::query_failure::Kind, text: String) -> pb::QueryFailure {
    pb::QueryFailure {
        kind: kind.into(),
        text,
        generation: 0,
        timeout_ms: 0,
    }
}

impl QueryError {
    /// The error a forwarded call's status stands for: the owner's error when it sent one (in
    /// the status's details), a timeout, or the owner being unreachable.
    pub fn from_status(status: &tonic::Status) -> Self {
        use pb::query_failure::Kind;
        let sent = (!status.details().is_empty())
            .then(|| pb::QueryFailure::decode(status.details()).ok())
            .flatten();
        if let Some(f) = sent {
            match f.kind() {
                Kind::NotOwner => return QueryError::NotOwner(f.text, f.generation),
                Kind::NotFound => return QueryError::NotFound(f.text),
                Kind::Source => return QueryError::Source(f.text),
                Kind::Timeout => return QueryError::Timeout(f.timeout_ms),
                Kind::Unavailable => return QueryError::Unavailable(f.text),
                // A kind this replica does not know (a newer peer): judged by the code below.
                Kind::Unspecified => {}
            }
        }
        let message = status.message();
        if status.code() == tonic::Code::DeadlineExceeded
            || (status.code() == tonic::Code::Cancelled && message.contains("Timeout"))
        {
            return QueryError::Timeout(0);
        }
        QueryError::Unavailable(format!(
            "the owner could not be asked: {:?}: {message}",
            status.code()
        ))
    }
}

type Answer = Result<Arc<Vec<(RecordKey, Record)>>, QueryError>;
type Running = Shared<BoxFuture<'static, Answer>>;

/// A [`LiveQuery`] whose identical concurrent queries share one read of the source, each read
/// bounded in time. The replication server answers forwarded queries through one, and the
/// metrics API asks its own owner's reads through one, so an HPA, a dashboard and a peer asking
/// for the same metric at once cost the source one read.
pub struct Coalesced {
    live: Arc<dyn LiveQuery>,
    timeout: Duration,
    running: Mutex<HashMap<Query, Running>>,
}

impl std::fmt::Debug for Coalesced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalesced")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Coalesced {
    /// Coalesces queries to `live`, each read given at most `timeout`.
    pub fn new(live: Arc<dyn LiveQuery>, timeout: Duration) -> Self {
        Coalesced {
            live,
            timeout,
            running: Mutex::default(),
        }
    }

    /// Answers `query`, joining an identical one that is running; says whether it joined.
    pub async fn ask(&self, query: Query) -> (Answer, bool) {
        let (future, joined) = {
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            match running.get(&query) {
                Some(r) => (r.clone(), true),
                None => {
                    let (live, timeout, q) = (Arc::clone(&self.live), self.timeout, query.clone());
                    let future = async move {
                        tokio::time::timeout(timeout, live.query(q))
                            .await
                            .map_err(|_| {
                                QueryError::Timeout(
                                    u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                                )
                            })?
                            .map(Arc::new)
                    }
                    .boxed()
                    .shared();
                    running.insert(query.clone(), future.clone());
                    (future, false)
                }
            }
        };
        let answer = future.clone().await;
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.get(&query).is_some_and(|f| f.ptr_eq(&future)) {
            running.remove(&query);
        }
        (answer, joined)
    }
}

impl LiveQuery for Arc<Coalesced> {
    fn query(
        &self,
        query: Query,
    ) -> BoxFuture<'static, Result<Vec<(RecordKey, Record)>, QueryError>> {
        let this = Arc::clone(self);
        Box::pin(async move {
            let (answer, _) = this.ask(query).await;
            answer.map(|records| records.as_ref().clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_error_survives_the_status_it_travels_in() {
        for e in [
            QueryError::NotOwner("default/orders at generation 9".into(), 4),
            QueryError::NotFound("no metric s9-x".into()),
            QueryError::Source("redis: connection refused".into()),
            QueryError::Timeout(1500),
            QueryError::Unavailable("shutting down".into()),
        ] {
            let status = tonic::Status::from(e.clone());
            assert_eq!(status.message(), e.to_string());
            assert_eq!(QueryError::from_status(&status), e);
        }
    }

    #[test]
    fn a_status_without_the_owners_details_is_a_transport_failure() {
        let refused = tonic::Status::unavailable("tcp connect error: connection refused");
        assert!(matches!(
            QueryError::from_status(&refused),
            QueryError::Unavailable(m) if m.contains("could not be asked")
        ));
        let late = tonic::Status::deadline_exceeded("deadline");
        assert_eq!(QueryError::from_status(&late), QueryError::Timeout(0));
        // Details that are not ours are not trusted as an owner's error.
        let odd = tonic::Status::with_details(tonic::Code::NotFound, "x", vec![0xff, 0xff].into());
        assert!(matches!(
            QueryError::from_status(&odd),
            QueryError::Unavailable(_)
        ));
    }
}
