//! Forwarded metrics queries: what the owner does when another replica asks for a live value.

use futures_util::future::BoxFuture;
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
    /// The ring generation the asking replica holds.
    pub generation: u64,
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
        let message = e.to_string();
        match e {
            QueryError::NotOwner(..) => tonic::Status::failed_precondition(message),
            QueryError::NotFound(_) => tonic::Status::not_found(message),
            QueryError::Source(_) => tonic::Status::unavailable(message),
            QueryError::Timeout(_) => tonic::Status::deadline_exceeded(message),
            QueryError::Unavailable(_) => tonic::Status::unavailable(message),
        }
    }
}

impl QueryError {
    /// The error a forwarded call's status stands for.
    pub fn from_status(status: &tonic::Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            tonic::Code::FailedPrecondition => QueryError::NotOwner(message, 0),
            tonic::Code::NotFound => QueryError::NotFound(message),
            tonic::Code::DeadlineExceeded => QueryError::Timeout(0),
            tonic::Code::Unavailable if !message.is_empty() => QueryError::Source(message),
            code => QueryError::Unavailable(format!("forwarded query failed: {code:?}: {message}")),
        }
    }
}
