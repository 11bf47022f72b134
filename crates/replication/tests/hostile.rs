//! A hostile or broken peer cannot crash or stall a replica: garbage on the wire, oversized
//! messages, malformed records, sequence gaps, a subscriber that never reads, and too many
//! subscribers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Options, Replica, connect_all, eventually, key, test_limits};
use ringscale_proto::replication as pb;
use ringscale_proto::replication::replication_client::ReplicationClient;
use ringscale_proto::replication::replication_server::{Replication, ReplicationServer};
use ringscale_replication::Limits;
use ringscale_ring::Member;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status};

const WITHIN: Duration = Duration::from_secs(10);

fn record(i: usize, value: f64) -> pb::Record {
    pb::Record {
        namespace: "default".into(),
        name: format!("so-{i}"),
        metric_name: format!("s0-redis-list-{i}"),
        value,
        active: true,
        generation: 1,
        seq: i as u64 + 1,
        polling_interval_ms: 30_000,
        origin: "evil".into(),
        ..Default::default()
    }
}

/// 60,000 of these are about 10 MB, more than the 4 MiB limit.
fn big_record(i: usize) -> pb::Record {
    pb::Record {
        error: "x".repeat(100),
        ..record(i, 1.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_wire_does_not_disturb_other_peers() {
    let a = Replica::start("ringscale-0", Options::default()).await;
    let b = Replica::start("ringscale-1", Options::default()).await;
    connect_all(&[&a, &b]);
    tokio::time::timeout(WITHIN, b.peers.wait_synced())
        .await
        .unwrap();

    // Random bytes, a valid HTTP/2 preface followed by garbage frames, and a half-sent preface.
    let mut junk = TcpStream::connect(a.addr).await.unwrap();
    junk.write_all(&[0xde, 0xad, 0xbe, 0xef].repeat(4096))
        .await
        .unwrap();
    let mut frames = TcpStream::connect(a.addr).await.unwrap();
    frames
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    frames
        .write_all(&[0x00, 0xff, 0xff, 0x77, 0xff, 0, 0, 0, 1, 1, 2, 3])
        .await
        .unwrap();
    let mut half = TcpStream::connect(a.addr).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();

    a.poll(&key(1), 5.0);
    eventually("b still receives a's updates", WITHIN, || {
        b.value(&key(1)) == Some(5.0)
    })
    .await;
    drop((junk, frames, half));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_refused_and_the_server_goes_on() {
    let a = Replica::start("ringscale-0", Options::default()).await;
    let channel = Endpoint::from_shared(format!("http://{}", a.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ReplicationClient::new(channel);
    let huge = pb::GetMetricsRequest {
        namespace: "x".repeat(2 * 1024 * 1024),
        name: "so".into(),
        ..Default::default()
    };
    let status = client.get_metrics(huge).await.unwrap_err();
    assert!(
        matches!(
            status.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted | tonic::Code::Internal
        ),
        "{status:?}"
    );
    // A normal request on a new call still gets a proper answer (no live source here).
    let status = client
        .get_metrics(pb::GetMetricsRequest {
            namespace: "default".into(),
            name: "so".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let status = client
        .get_metrics(pb::GetMetricsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

/// A peer that misbehaves in a scripted way on each subscription.
struct Evil {
    subscriptions: AtomicU64,
    script: fn(u64) -> Vec<Result<pb::Batch, Status>>,
}

type BatchStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::Batch, Status>> + Send>>;

#[tonic::async_trait]
impl Replication for Evil {
    type SubscribeStream = BatchStream;

    async fn subscribe(
        &self,
        _: Request<pb::SubscribeRequest>,
    ) -> Result<Response<BatchStream>, Status> {
        let n = self.subscriptions.fetch_add(1, Ordering::SeqCst);
        let batches = (self.script)(n);
        // Send the script, then hold the stream open.
        let stream =
            tokio_stream::StreamExt::chain(tokio_stream::iter(batches), tokio_stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_metrics(
        &self,
        _: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::GetMetricsResponse>, Status> {
        // An answer far larger than any limit.
        Ok(Response::new(pb::GetMetricsResponse {
            records: (0..60_000).map(big_record).collect(),
        }))
    }
}

async fn start_evil(script: fn(u64) -> Vec<Result<pb::Batch, Status>>) -> (Member, Arc<Evil>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let evil = Arc::new(Evil {
        subscriptions: AtomicU64::new(0),
        script,
    });
    let service =
        ReplicationServer::from_arc(Arc::clone(&evil)).max_encoding_message_size(usize::MAX);
    tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (
        Member {
            name: "evil".into(),
            address: addr.to_string(),
        },
        evil,
    )
}

fn batch(seq: u64, kind: pb::BatchKind, records: Vec<pb::Record>) -> Result<pb::Batch, Status> {
    Ok(pb::Batch {
        stream_seq: seq,
        kind: kind as i32,
        records,
        sender: "evil".into(),
        sender_generation: 1,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_are_dropped_and_a_gap_brings_a_new_snapshot() {
    let (evil, server) = start_evil(|n| {
        let mut nan = record(2, f64::NAN);
        nan.seq = 100 + n;
        let mut unnamed = record(3, 1.0);
        unnamed.namespace.clear();
        vec![
            batch(
                1,
                pb::BatchKind::SnapshotEnd,
                vec![record(1, 10.0 + n as f64), nan, unnamed],
            ),
            // Batch 2 never comes: a gap.
            batch(3, pb::BatchKind::Delta, vec![record(4, 4.0)]),
        ]
    })
    .await;
    let a = Replica::start("ringscale-0", Options::default()).await;
    a.peers.set_members(&[a.member(), evil]);
    eventually("a resubscribed after the gap", WITHIN, || {
        server.subscriptions.load(Ordering::SeqCst) >= 3
    })
    .await;
    let status = a.peers.status();
    assert!(status[0].gaps >= 2, "{status:?}");
    assert!(status[0].snapshots >= 2, "{status:?}");
    // The good record arrived (and was refreshed by every snapshot); the bad ones did not, nor
    // the delta after the gap.
    assert!(a.value(&key(1)).is_some_and(|v| v >= 10.0));
    assert!(a.value(&key(2)).is_none());
    assert!(a.value(&key(4)).is_none());
    assert!(a.store.stats.records_rejected.load(Ordering::Relaxed) >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_batch_or_answer_is_refused_and_retried_with_backoff() {
    let (evil, server) = start_evil(|_| {
        vec![batch(
            1,
            pb::BatchKind::SnapshotEnd,
            (0..60_000).map(big_record).collect(),
        )]
    })
    .await;
    let a = Replica::start("ringscale-0", Options::default()).await;
    a.peers.set_members(&[a.member(), evil.clone()]);
    eventually("the link failed at least three times", WITHIN, || {
        server.subscriptions.load(Ordering::SeqCst) >= 3
    })
    .await;
    assert!(
        a.store.is_empty(),
        "nothing from an oversized batch is applied"
    );
    let status = a.peers.status();
    let error = status[0].last_error.clone().unwrap_or_default();
    assert!(
        error.contains("message length too large") || error.contains("OutOfRange"),
        "{error}"
    );
    assert!(!a.peers.all_synced());
    // Backoff: in one second at most a handful of attempts, not a storm.
    let before = server.subscriptions.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let attempts = server.subscriptions.load(Ordering::SeqCst) - before;
    assert!(attempts <= 10, "{attempts} reconnects in one second");

    // A forwarded query answered with an oversized response is an error, not a crash.
    let err = a
        .peers
        .forward(
            &evil,
            ringscale_replication::Query {
                object: ringscale_cache::ObjectId::scaled_object("default", "so-1"),
                metric_name: None,
            },
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("too large") || err.to_string().contains("OutOfRange"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_is_bounded_and_then_cut_off() {
    let limits = Limits {
        send_timeout: Duration::from_millis(500),
        ..test_limits()
    };
    let a = Replica::start(
        "ringscale-0",
        Options {
            limits: limits.clone(),
            ..Options::default()
        },
    )
    .await;
    let b = Replica::start("ringscale-1", Options::default()).await;
    connect_all(&[&a, &b]);
    tokio::time::timeout(WITHIN, b.peers.wait_synced())
        .await
        .unwrap();

    // A subscriber with tiny HTTP/2 windows that never reads its stream.
    let channel = Endpoint::from_shared(format!("http://{}", a.addr))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut sleeper = ReplicationClient::new(channel);
    let _stream = sleeper
        .subscribe(pb::SubscribeRequest {
            subscriber: "sleeper".into(),
        })
        .await
        .unwrap();
    eventually("a has two subscribers", WITHIN, || {
        a.store.subscribers() == 2
    })
    .await;

    // 2,000 keys polled ten times each, with long error texts: far more than the windows hold.
    let keys = 2_000;
    let error = "e".repeat(1000);
    let started = std::time::Instant::now();
    for round in 0..10 {
        for i in 0..keys {
            a.store.record_poll(
                key(i),
                f64::from(round),
                true,
                Some(&error),
                ringscale_replication::now(),
                Duration::from_secs(30),
            );
        }
    }
    // Polling never waits for subscribers.
    assert!(started.elapsed() < Duration::from_secs(5));
    // The outbox held at most one record per key, however many polls.
    assert!(
        a.store.max_outbox_len() <= keys,
        "{}",
        a.store.max_outbox_len()
    );
    // The healthy peer gets the latest values.
    eventually("b has the last round", WITHIN, || {
        (0..keys).all(|i| b.value(&key(i)) == Some(9.0))
    })
    .await;
    // And the sleeper is cut off after the send timeout.
    eventually("the sleeper is dropped", WITHIN, || {
        a.store
            .stats
            .slow_subscribers_dropped
            .load(Ordering::Relaxed)
            >= 1
            && a.store.subscribers() == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_beyond_the_limit_are_refused() {
    let a = Replica::start(
        "ringscale-0",
        Options {
            limits: Limits {
                max_subscribers: 2,
                ..test_limits()
            },
            ..Options::default()
        },
    )
    .await;
    let channel = Endpoint::from_shared(format!("http://{}", a.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ReplicationClient::new(channel);
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(
            client
                .subscribe(pb::SubscribeRequest::default())
                .await
                .unwrap(),
        );
    }
    let status = client
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        a.store.stats.subscriptions_refused.load(Ordering::Relaxed),
        1
    );
    drop(held);
    eventually("a slot frees when a subscriber leaves", WITHIN, || {
        a.store.subscribers() == 0
    })
    .await;
}
