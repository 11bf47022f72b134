//! The replication server: record streams to subscribers and forwarded queries.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prost::Message;
use ringscale_cache::{Record, RecordKey};
use ringscale_proto::replication as pb;
use ringscale_proto::replication::replication_server::{Replication, ReplicationServer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use crate::config::{Limits, PeerTls};
use crate::query::{Coalesced, LiveQuery, Query, QueryError};
use crate::store::{Outbox, OutboxGuard, Store};
use crate::wire::to_wire;

/// The gRPC service.
pub struct ReplicationService {
    store: Arc<Store>,
    live: Option<Arc<Coalesced>>,
    limits: Limits,
    closing: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for ReplicationService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationService")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl ReplicationService {
    /// A service over `store`; `live` answers forwarded queries (without it they are refused).
    pub fn new(store: Arc<Store>, live: Option<Arc<dyn LiveQuery>>, limits: Limits) -> Self {
        // Inside the call's own bound (the server's timeout and the caller's grpc-timeout), so
        // the caller hears "timed out" from us, not a cancellation.
        let live = live.map(|l| Arc::new(Coalesced::new(l, limits.request_timeout.mul_f64(0.8))));
        ReplicationService {
            store,
            live,
            limits,
            closing: tokio::sync::watch::channel(false).0,
        }
    }

    /// The coalescing reader of forwarded queries, to answer this replica's own metrics
    /// requests through too (so local and forwarded requests for one metric share a read).
    pub fn live(&self) -> Option<Arc<Coalesced>> {
        self.live.clone()
    }

    /// Ends every subscription stream (they are endless otherwise, and a graceful server
    /// shutdown waits for open streams). [`serve`] calls it when its shutdown signal fires.
    pub fn closer(&self) -> impl Fn() + Send + Sync + 'static {
        let closing = self.closing.clone();
        move || {
            closing.send_replace(true);
        }
    }

    /// The tonic service with message size limits applied.
    pub fn into_server(self) -> ReplicationServer<Self> {
        let limits = self.limits.clone();
        ReplicationServer::new(self)
            .max_decoding_message_size(limits.max_request_bytes)
            .max_encoding_message_size(limits.max_message_bytes)
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// tonic failed (bad TLS material, or the listener failed).
    #[error("the replication server's transport failed")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves replication on `listener` until `shutdown` resolves, then lets open calls finish.
pub async fn serve(
    service: ReplicationService,
    listener: TcpListener,
    tls: Option<&PeerTls>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let limits = service.limits.clone();
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .max_concurrent_streams(Some(
            u32::try_from(limits.max_subscribers.saturating_mul(2)).unwrap_or(u32::MAX),
        ))
        .concurrency_limit_per_connection(limits.max_subscribers.saturating_mul(2))
        .timeout(limits.request_timeout);
    if let Some(tls) = tls {
        builder = builder.tls_config(tls.server())?;
    }
    // Accepted sockets get no delay (small deltas must not wait for Nagle and delayed ACKs) and
    // TCP keepalive; the builder's own socket options apply only to listeners it binds itself.
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(limits.keepalive_interval));
    let close = service.closer();
    let shutdown = async move {
        shutdown.await;
        close();
    };
    if let Ok(addr) = incoming.local_addr() {
        info!(%addr, tls = tls.is_some(), "replication server listening");
    }
    builder
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

type BatchStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::Batch, Status>> + Send>>;

#[tonic::async_trait]
impl Replication for ReplicationService {
    type SubscribeStream = BatchStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let subscriber: String = request.into_inner().subscriber.chars().take(253).collect();
        let Some((outbox, guard, snapshot)) = self.store.open_outbox(self.limits.max_subscribers)
        else {
            self.store
                .stats
                .subscriptions_refused
                .fetch_add(1, Ordering::Relaxed);
            warn!(%subscriber, "refusing a subscription: too many subscribers");
            return Err(Status::resource_exhausted("too many subscribers"));
        };
        debug!(%subscriber, records = snapshot.len(), "subscriber connected");
        // Two batches in flight at most; the outbox coalesces the rest.
        let (tx, rx) = mpsc::channel(2);
        let feed = Feed {
            closing: self.closing.subscribe(),
            store: Arc::clone(&self.store),
            limits: self.limits.clone(),
            subscriber,
            tx,
            next_seq: 1,
        };
        tokio::spawn(feed.run(outbox, guard, snapshot));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_metrics(
        &self,
        request: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::GetMetricsResponse>, Status> {
        let r = request.into_inner();
        let object = crate::wire::object_from_wire(r.namespace, r.name, r.kind)
            .map_err(|e| Status::invalid_argument(format!("invalid object: {e}")))?;
        let Some(live) = self.live.clone() else {
            return Err(
                QueryError::Unavailable("this replica answers no live queries".into()).into(),
            );
        };
        let query = Query {
            object,
            metric_name: (!r.metric_name.is_empty()).then_some(r.metric_name),
        };
        self.store
            .stats
            .queries_served
            .fetch_add(1, Ordering::Relaxed);
        let (result, joined) = live.ask(query).await;
        if joined {
            self.store
                .stats
                .queries_coalesced
                .fetch_add(1, Ordering::Relaxed);
        }
        let records = result?;
        let now = crate::now();
        Ok(Response::new(pb::GetMetricsResponse {
            records: records.iter().map(|(k, r)| to_wire(k, r, now)).collect(),
        }))
    }
}

/// Shortest confirmation interval (a zero from a misconfiguration must not spin the sender).
const MIN_CONFIRM: Duration = Duration::from_millis(10);

/// Feeds one subscriber: the snapshot, then the outbox as it fills.
struct Feed {
    closing: tokio::sync::watch::Receiver<bool>,
    store: Arc<Store>,
    limits: Limits,
    subscriber: String,
    tx: mpsc::Sender<Result<pb::Batch, Status>>,
    next_seq: u64,
}

enum Stop {
    Gone,
    Slow,
    Closing,
}

impl Feed {
    async fn run(
        mut self,
        outbox: Arc<Outbox>,
        _guard: OutboxGuard,
        snapshot: Vec<(RecordKey, Record)>,
    ) {
        let outcome = self.send_snapshot(snapshot).await;
        let outcome = match outcome {
            Ok(()) => self.send_deltas(&outbox).await,
            Err(stop) => stop,
        };
        if let Stop::Slow = outcome {
            self.store
                .stats
                .slow_subscribers_dropped
                .fetch_add(1, Ordering::Relaxed);
            warn!(
                subscriber = %self.subscriber,
                timeout_ms = self.limits.send_timeout.as_millis(),
                "cutting off a subscriber that does not read; it will resubscribe"
            );
            // Best effort: tell it why, if it ever reads again.
            let _ = self
                .tx
                .try_send(Err(Status::resource_exhausted("subscriber too slow")));
        } else if let Stop::Closing = outcome {
            debug!(subscriber = %self.subscriber, "ending a subscription: shutting down");
        } else {
            debug!(subscriber = %self.subscriber, "subscriber gone");
        }
        // `_guard` drops here and removes the outbox.
    }

    async fn send_snapshot(&mut self, snapshot: Vec<(RecordKey, Record)>) -> Result<(), Stop> {
        self.store
            .stats
            .snapshots_sent
            .fetch_add(1, Ordering::Relaxed);
        let chunk = self.limits.max_batch_records.max(1);
        let mut chunks = snapshot.chunks(chunk).peekable();
        if chunks.peek().is_none() {
            return self.send(pb::BatchKind::SnapshotEnd, &[]).await;
        }
        while let Some(part) = chunks.next() {
            let kind = if chunks.peek().is_some() {
                pb::BatchKind::Snapshot
            } else {
                pb::BatchKind::SnapshotEnd
            };
            self.send(kind, part).await?;
        }
        Ok(())
    }

    /// News wakes this loop at once; confirmations (re-polls that read the same) wait for the
    /// next news or the confirmation tick and go in the same batches.
    async fn send_deltas(&mut self, outbox: &Outbox) -> Stop {
        let mut confirm = tokio::time::interval(self.limits.confirm_interval.max(MIN_CONFIRM));
        confirm.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = outbox.notify.notified() => {}
                _ = confirm.tick() => {}
                () = self.tx.closed() => return Stop::Gone,
                _ = self.closing.wait_for(|c| *c) => return Stop::Closing,
            }
            let pending = outbox.take();
            for part in pending.chunks(self.limits.max_batch_records.max(1)) {
                if let Err(stop) = self.send(pb::BatchKind::Delta, part).await {
                    return stop;
                }
            }
        }
    }

    async fn send(
        &mut self,
        kind: pb::BatchKind,
        records: &[(RecordKey, Record)],
    ) -> Result<(), Stop> {
        let now = crate::now();
        let batch = pb::Batch {
            stream_seq: self.next_seq,
            kind: kind as i32,
            records: records.iter().map(|(k, r)| to_wire(k, r, now)).collect(),
            sender: self.store.name().to_owned(),
            sender_generation: self.store.generation(),
        };
        self.next_seq += 1;
        let stats = &self.store.stats;
        stats.batches_sent.fetch_add(1, Ordering::Relaxed);
        stats
            .records_sent
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        stats
            .bytes_sent
            .fetch_add(batch.encoded_len() as u64, Ordering::Relaxed);
        match tokio::time::timeout(self.limits.send_timeout, self.tx.send(Ok(batch))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Stop::Gone),
            Err(_) => Err(Stop::Slow),
        }
    }
}
