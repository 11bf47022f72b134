//! Forwarded metrics queries: what the owner does when another replica asks for a live value.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use ringscale_cache::{Record, RecordKey};

/// A live query for one ScaledObject's metrics.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Query {
    /// Namespace of the ScaledObject.
    pub namespace: String,
    /// Its name.
    pub scaled_object: String,
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

/// The metadata key that carries the kind of a [`QueryError`] from owner to asker, so that the
/// asker can tell an owner's answer from a transport failure (both may use the same gRPC code).
const KIND_KEY: &str = "x-ringscale-error";

impl From<QueryError> for tonic::Status {
    fn from(e: QueryError) -> Self {
        let message = e.to_string();
        let (mut status, kind) = match e {
            QueryError::NotOwner(_, generation) => (
                tonic::Status::failed_precondition(message),
                format!("not-owner/{generation}"),
            ),
            QueryError::NotFound(_) => (tonic::Status::not_found(message), "not-found".into()),
            QueryError::Source(_) => (tonic::Status::unavailable(message), "source".into()),
            QueryError::Timeout(ms) => (
                tonic::Status::deadline_exceeded(message),
                format!("timeout/{ms}"),
            ),
            QueryError::Unavailable(_) => {
                (tonic::Status::unavailable(message), "unavailable".into())
            }
        };
        if let Ok(value) = kind.parse() {
            status.metadata_mut().insert(KIND_KEY, value);
        }
        status
    }
}

impl QueryError {
    /// The error a forwarded call's status stands for: the owner's error when it sent one, a
    /// timeout, or the owner being unreachable.
    pub fn from_status(status: &tonic::Status) -> Self {
        let message = status.message().to_owned();
        let kind = status
            .metadata()
            .get(KIND_KEY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let (kind, detail) = kind.split_once('/').unwrap_or((kind, ""));
        let number = detail.parse().unwrap_or(0);
        match kind {
            "not-owner" => {
                // The message is this error's own text; recover the object it names.
                let object = message
                    .strip_prefix("this replica does not own ")
                    .and_then(|m| m.rsplit_once(" at generation "))
                    .map_or(message.as_str(), |(object, _)| object);
                QueryError::NotOwner(object.to_owned(), number)
            }
            "not-found" => QueryError::NotFound(message),
            "source" => QueryError::Source(message),
            "timeout" => QueryError::Timeout(number),
            "unavailable" => QueryError::Unavailable(message),
            _ if status.code() == tonic::Code::DeadlineExceeded
                || (status.code() == tonic::Code::Cancelled && message.contains("Timeout")) =>
            {
                QueryError::Timeout(0)
            }
            _ => QueryError::Unavailable(format!(
                "the owner could not be asked: {:?}: {message}",
                status.code()
            )),
        }
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
