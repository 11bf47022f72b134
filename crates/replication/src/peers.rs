//! The subscribing side: one link per peer, each keeping a record stream open (reconnecting with
//! jittered backoff and resubscribing on any gap), and forwarded queries to an owner.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ringscale_cache::{Record, RecordKey};
use ringscale_proto::replication as pb;
use ringscale_proto::replication::replication_client::ReplicationClient;
use ringscale_ring::Member;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};

use crate::config::{Limits, PeerTls};
use crate::query::{Query, QueryError};
use crate::store::Store;
use crate::wire::from_wire;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a link to one peer is doing.
#[derive(Debug, Default)]
struct LinkState {
    connected: AtomicBool,
    synced: AtomicBool,
    snapshots: AtomicU64,
    reconnects: AtomicU64,
    gaps: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A peer link's state, for the status page and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// Member name.
    pub name: String,
    /// Replication address.
    pub address: String,
    /// A stream is open.
    pub connected: bool,
    /// The current stream delivered its snapshot.
    pub synced: bool,
    /// Snapshots received so far.
    pub snapshots: u64,
    /// Times the stream was re-established.
    pub reconnects: u64,
    /// Sequence gaps seen (each followed by a resubscription).
    pub gaps: u64,
    /// Why the last stream ended, if it failed.
    pub last_error: Option<String>,
}

struct Link {
    member: Member,
    state: Arc<LinkState>,
    task: JoinHandle<()>,
}

/// The replica's links to its peers.
pub struct Peers {
    store: Arc<Store>,
    limits: Limits,
    tls: Option<PeerTls>,
    links: Mutex<HashMap<String, Link>>,
    channels: Mutex<HashMap<String, Channel>>,
    changed: watch::Sender<u64>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("store", &self.store)
            .field("peers", &self.status())
            .finish_non_exhaustive()
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        for (_, link) in lock(&self.links).drain() {
            link.task.abort();
        }
    }
}

/// Why a peer's address cannot be dialled.
#[derive(Debug, thiserror::Error)]
enum EndpointError {
    /// Not a valid URI authority.
    #[error("invalid address: {0}")]
    Address(String),
    /// The TLS configuration was refused.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// Why a replication stream from a peer failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
enum StreamError {
    /// The peer cannot be dialled.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// Connecting failed (the whole cause chain: refused, TLS alert, timeout).
    #[error("connect: {0}")]
    Connect(String),
    /// The subscribe call got no answer in time.
    #[error("subscribe: timed out")]
    SubscribeTimeout,
    /// The peer refused the subscription.
    #[error("subscribe: {0}: {1}")]
    Subscribe(tonic::Code, String),
    /// The stream broke.
    #[error("stream: {0}: {1}")]
    Stream(tonic::Code, String),
    /// The peer broke the protocol: a batch without a kind.
    #[error("protocol: batch {0} has no kind")]
    NoKind(u64),
}

/// Why a forwarded query failed before the owner could answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The owner's address is not a valid URI, or TLS material is bad.
    #[error("cannot reach {address}: {message}")]
    Endpoint {
        /// The owner's address.
        address: String,
        /// Why.
        message: String,
    },
    /// The owner answered with an error, or the call failed.
    #[error(transparent)]
    Query(#[from] QueryError),
}

impl Peers {
    /// Links for `store`'s replica (none yet: see [`Peers::set_members`]).
    pub fn new(store: Arc<Store>, limits: Limits, tls: Option<PeerTls>) -> Arc<Self> {
        Arc::new(Peers {
            store,
            limits,
            tls,
            links: Mutex::new(HashMap::new()),
            channels: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
        })
    }

    /// Follows the ring: opens links to new members, closes links to members that left (or moved
    /// to another address). This replica itself is skipped.
    pub fn set_members(self: &Arc<Self>, members: &[Member]) {
        let mut links = lock(&self.links);
        let wanted: HashMap<&str, &Member> = members
            .iter()
            .filter(|m| m.name != self.store.name())
            .map(|m| (m.name.as_str(), m))
            .collect();
        links.retain(|name, link| {
            let keep = wanted
                .get(name.as_str())
                .is_some_and(|m| m.address == link.member.address);
            if !keep {
                debug!(peer = %name, "closing replication link");
                link.task.abort();
            }
            keep
        });
        for (name, member) in wanted {
            if links.contains_key(name) {
                continue;
            }
            info!(peer = %name, address = %member.address, "opening replication link");
            let state = Arc::new(LinkState::default());
            let task =
                tokio::spawn(Arc::clone(self).run_link((*member).clone(), Arc::clone(&state)));
            links.insert(
                name.to_owned(),
                Link {
                    member: member.clone(),
                    state,
                    task,
                },
            );
        }
        drop(links);
        // Forwarding channels to addresses no longer in the ring go too.
        let addresses: std::collections::HashSet<&str> =
            members.iter().map(|m| m.address.as_str()).collect();
        lock(&self.channels).retain(|address, _| addresses.contains(address.as_str()));
        self.bump();
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Whether every current peer has delivered its snapshot on the current stream.
    pub fn all_synced(&self) -> bool {
        lock(&self.links)
            .values()
            .all(|l| l.state.synced.load(Ordering::Acquire))
    }

    /// Waits until [`Peers::all_synced`].
    pub async fn wait_synced(&self) {
        let mut rx = self.changed.subscribe();
        loop {
            if self.all_synced() {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Every link's state, sorted by name.
    pub fn status(&self) -> Vec<PeerStatus> {
        let mut out: Vec<PeerStatus> = lock(&self.links)
            .values()
            .map(|l| PeerStatus {
                name: l.member.name.clone(),
                address: l.member.address.clone(),
                connected: l.state.connected.load(Ordering::Acquire),
                synced: l.state.synced.load(Ordering::Acquire),
                snapshots: l.state.snapshots.load(Ordering::Relaxed),
                reconnects: l.state.reconnects.load(Ordering::Relaxed),
                gaps: l.state.gaps.load(Ordering::Relaxed),
                last_error: lock(&l.state.last_error).clone(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn endpoint(&self, address: &str) -> Result<Endpoint, EndpointError> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|e| EndpointError::Address(e.to_string()))?
            .connect_timeout(self.limits.connect_timeout)
            .tcp_nodelay(true)
            .tcp_keepalive(Some(self.limits.keepalive_interval))
            .http2_keep_alive_interval(self.limits.keepalive_interval)
            .keep_alive_timeout(self.limits.keepalive_timeout)
            .keep_alive_while_idle(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.client())
                .map_err(|e| EndpointError::Tls(e.to_string()))?;
        }
        Ok(endpoint)
    }

    async fn run_link(self: Arc<Self>, member: Member, state: Arc<LinkState>) {
        let mut attempt = 0u32;
        loop {
            let outcome = self.stream_once(&member, &state).await;
            let was_synced = state.synced.swap(false, Ordering::AcqRel);
            state.connected.store(false, Ordering::Release);
            self.bump();
            match outcome {
                Ok(()) => debug!(peer = %member.name, "replication stream ended"),
                Err(e) => {
                    warn!(peer = %member.name, address = %member.address, error = %e, "replication stream failed");
                    *lock(&state.last_error) = Some(e.to_string());
                }
            }
            if was_synced {
                attempt = 0;
            }
            let delay = self.limits.backoff(attempt);
            attempt = attempt.saturating_add(1);
            tokio::time::sleep(delay).await;
            state.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One stream: connect, subscribe, merge until it ends. `Ok` when the peer ended it or a gap
    /// was seen (resubscribe), `Err` with the reason otherwise.
    async fn stream_once(&self, member: &Member, state: &LinkState) -> Result<(), StreamError> {
        let endpoint = self.endpoint(&member.address)?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| StreamError::Connect(error_chain(&e)))?;
        let mut client = ReplicationClient::new(channel)
            .max_decoding_message_size(self.limits.max_message_bytes)
            .max_encoding_message_size(self.limits.max_request_bytes);
        let mut request = tonic::Request::new(pb::SubscribeRequest {
            subscriber: self.store.name().to_owned(),
        });
        request.set_timeout(self.limits.request_timeout);
        let mut stream =
            tokio::time::timeout(self.limits.request_timeout, client.subscribe(request))
                .await
                .map_err(|_| StreamError::SubscribeTimeout)?
                .map_err(|s| StreamError::Subscribe(s.code(), s.message().to_owned()))?
                .into_inner();
        state.connected.store(true, Ordering::Release);
        self.bump();
        let mut expected = 1u64;
        loop {
            let batch = match stream.message().await {
                Ok(Some(batch)) => batch,
                Ok(None) => return Ok(()),
                Err(s) => return Err(StreamError::Stream(s.code(), s.message().to_owned())),
            };
            if batch.stream_seq != expected {
                state.gaps.fetch_add(1, Ordering::Relaxed);
                warn!(peer = %member.name, expected, got = batch.stream_seq, "sequence gap; resubscribing for a new snapshot");
                return Ok(());
            }
            expected += 1;
            let kind = pb::BatchKind::try_from(batch.kind).unwrap_or(pb::BatchKind::Unspecified);
            if kind == pb::BatchKind::Unspecified {
                return Err(StreamError::NoKind(batch.stream_seq));
            }
            self.apply(member, batch.records);
            if kind == pb::BatchKind::SnapshotEnd {
                state.snapshots.fetch_add(1, Ordering::Relaxed);
                state.synced.store(true, Ordering::Release);
                *lock(&state.last_error) = None;
                self.bump();
            }
        }
    }

    fn apply(&self, member: &Member, records: Vec<pb::Record>) {
        let now = crate::now();
        let stats = &self.store.stats;
        stats
            .records_received
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        for record in records {
            match from_wire(record, now) {
                Ok((key, record)) => {
                    self.store.merge_remote(key, record);
                }
                Err(e) => {
                    stats.records_rejected.fetch_add(1, Ordering::Relaxed);
                    debug!(peer = %member.name, error = %e, "refusing a record");
                }
            }
        }
    }

    /// Asks `owner` to read the object's metrics live. The answer is merged into the local store
    /// too, and returned.
    pub async fn forward(
        &self,
        owner: &Member,
        query: Query,
    ) -> Result<Vec<(RecordKey, Record)>, ForwardError> {
        let channel = self.channel(&owner.address)?;
        let mut client = ReplicationClient::new(channel)
            .max_decoding_message_size(self.limits.max_message_bytes)
            .max_encoding_message_size(self.limits.max_request_bytes);
        let mut request = tonic::Request::new(pb::GetMetricsRequest {
            kind: crate::wire::kind_to_wire(query.object.kind),
            namespace: query.object.namespace,
            name: query.object.name,
            metric_name: query.metric_name.unwrap_or_default(),
        });
        request.set_timeout(self.limits.request_timeout);
        let response =
            tokio::time::timeout(self.limits.request_timeout, client.get_metrics(request))
                .await
                .map_err(|_| {
                    QueryError::Timeout(
                        u64::try_from(self.limits.request_timeout.as_millis()).unwrap_or(u64::MAX),
                    )
                })?
                .map_err(|s| QueryError::from_status(&s))?;
        let now = crate::now();
        let mut out = Vec::new();
        for record in response.into_inner().records {
            match from_wire(record, now) {
                Ok((key, record)) => {
                    self.store.merge_remote(key.clone(), record.clone());
                    out.push((key, record));
                }
                Err(e) => {
                    return Err(QueryError::Unavailable(format!(
                        "the owner {} sent a malformed record: {e}",
                        owner.name
                    ))
                    .into());
                }
            }
        }
        Ok(out)
    }

    fn channel(&self, address: &str) -> Result<Channel, ForwardError> {
        let mut channels = lock(&self.channels);
        if let Some(c) = channels.get(address) {
            return Ok(c.clone());
        }
        let endpoint = self.endpoint(address).map_err(|e| ForwardError::Endpoint {
            address: address.to_owned(),
            message: e.to_string(),
        })?;
        let channel = endpoint.connect_lazy();
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
