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
