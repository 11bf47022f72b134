//! Replication between ringscale replicas over gRPC (`proto/replication.proto`).
//!
//! Every replica runs a [`server`] and subscribes to every peer through [`Peers`]. A replica's
//! [`Store`] holds the merged cache; values it polls itself ([`Store::record_poll`]) go to every
//! subscriber, first as part of a snapshot, then as deltas. A subscriber that reads slowly is not
//! buffered for without bound: its outbox keeps only the latest record per key, and one that does
//! not read for [`Limits::send_timeout`] is cut off (it reconnects and gets a new snapshot).
//! Receivers check every record and merge by (generation, seq), so order and duplicates do not
//! matter. A replica that needs a live value asks the owner with [`Peers::forward`]; the owner
//! runs one source read for all identical concurrent queries.
//!
//! Limits on message sizes, subscribers, send and call durations, and HTTP/2 keepalives keep a
//! hostile or broken peer from crashing or stalling a replica (`tests/hostile.rs`). Mutual TLS
//! ([`PeerTls`]) is optional.

mod config;
pub mod metrics;
mod peers;
mod query;
pub mod server;
mod store;
pub mod wire;

pub use config::{Limits, PeerTls};
pub use peers::{ForwardError, PeerStatus, Peers};
pub use query::{Coalesced, LiveQuery, Query, QueryError};
pub use server::{ReplicationService, ServeError, serve};
pub use store::{Observer, Reading, Stats, Store};

/// Now, on tokio's clock (which tests may pause), as a std `Instant` for the cache.
pub fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}
