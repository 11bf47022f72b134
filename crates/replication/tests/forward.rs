//! Forwarded metrics queries: the owner reads the source once for concurrent identical queries,
//! and errors and timeouts come back as errors the caller can report.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Options, Replica, test_limits};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use ringscale_cache::{Record, RecordKey, Version};
use ringscale_replication::{Limits, LiveQuery, Query, QueryError};

/// A source that takes a while and counts its reads.
struct SlowSource {
    reads: AtomicU64,
    delay: Duration,
}

impl LiveQuery for SlowSource {
    fn query(
        &self,
        query: Query,
    ) -> BoxFuture<'static, Result<Vec<(RecordKey, Record)>, QueryError>> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay;
        async move {
            tokio::time::sleep(delay).await;
            match query.object.name.as_str() {
                "missing" => Err(QueryError::NotFound(
                    "scaledobject default/missing not found".into(),
                )),
                "broken" => Err(QueryError::Source("redis: connection refused".into())),
                "elsewhere" => Err(QueryError::NotOwner(query.object.to_string(), 3)),
                _ => {
                    let key = RecordKey::new(
                        query.object,
                        query
                            .metric_name
                            .unwrap_or_else(|| "s0-redis-orders".into()),
                    );
                    let record = Record::new(
                        17.0 + n as f64,
                        true,
                        None,
                        Version {
                            generation: 1,
                            seq: 1_000 + n,
                        },
                        ringscale_replication::now(),
                        Duration::from_secs(30),
                        Arc::from("ringscale-0"),
                    );
                    Ok(vec![(key, record)])
                }
            }
        }
        .boxed()
    }
}

fn query(scaled_object: &str) -> Query {
    Query {
        object: ringscale_cache::ObjectId::scaled_object("default", scaled_object),
        metric_name: None,
    }
}

async fn owner_and_asker(delay: Duration, limits: Limits) -> (Replica, Replica, Arc<SlowSource>) {
    let source = Arc::new(SlowSource {
        reads: AtomicU64::new(0),
        delay,
    });
    let owner = Replica::start(
        "ringscale-0",
        Options {
            live: Some(source.clone()),
            limits: limits.clone(),
            ..Options::default()
        },
    )
    .await;
    let asker = Replica::start(
        "ringscale-1",
        Options {
            limits,
            ..Options::default()
        },
    )
    .await;
    (owner, asker, source)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_queries_share_one_source_read() {
    let (owner, asker, source) = owner_and_asker(Duration::from_millis(300), test_limits()).await;
    let member = owner.member();
    let calls = (0..20).map(|_| asker.peers.forward(&member, query("orders")));
    let answers = futures_util::future::join_all(calls).await;
    for answer in &answers {
        let records = answer.as_ref().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].1.value, 17.0);
    }
    assert_eq!(
        source.reads.load(Ordering::SeqCst),
        1,
        "one read for twenty queries"
    );
    assert_eq!(
        owner.store.stats.queries_coalesced.load(Ordering::Relaxed),
        19
    );
    // The answer also lands in the asker's cache.
    let key = RecordKey::scaled_object("default", "orders", "s0-redis-orders");
    assert_eq!(asker.value(&key), Some(17.0));
    // A later query reads again.
    let again = asker.peers.forward(&member, query("orders")).await.unwrap();
    assert_eq!(again[0].1.value, 18.0);
    assert_eq!(source.reads.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_errors_come_back_as_errors() {
    let (owner, asker, _) = owner_and_asker(Duration::ZERO, test_limits()).await;
    let member = owner.member();
    let missing = asker
        .peers
        .forward(&member, query("missing"))
        .await
        .unwrap_err();
    assert!(
        matches!(missing, ringscale_replication::ForwardError::Query(QueryError::NotFound(ref m)) if m.contains("missing")),
        "{missing}"
    );
    let broken = asker
        .peers
        .forward(&member, query("broken"))
        .await
        .unwrap_err();
    assert!(
        broken.to_string().contains("connection refused"),
        "{broken}"
    );
    let elsewhere = asker
        .peers
        .forward(&member, query("elsewhere"))
        .await
        .unwrap_err();
    assert!(
        matches!(elsewhere, ringscale_replication::ForwardError::Query(QueryError::NotOwner(ref o, 3)) if o == "ScaledObject default/elsewhere"),
        "{elsewhere:?}"
    );
    // A replica without a live source refuses; an unreachable owner is an error, not a hang.
    let asker_member = asker.member();
    let refused = owner
        .peers
        .forward(&asker_member, query("orders"))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("no live queries"), "{refused}");
    let gone = ringscale_ring::Member {
        name: "ringscale-9".into(),
        address: "127.0.0.1:1".into(),
    };
    let unreachable = asker
        .peers
        .forward(&gone, query("orders"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            unreachable,
            ringscale_replication::ForwardError::Query(QueryError::Unavailable(_))
        ),
        "{unreachable}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_hangs_times_out() {
    let limits = Limits {
        request_timeout: Duration::from_millis(400),
        ..test_limits()
    };
    let (owner, asker, _) = owner_and_asker(Duration::from_secs(3600), limits).await;
    let started = std::time::Instant::now();
    let err = asker
        .peers
        .forward(&owner.member(), query("orders"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ringscale_replication::ForwardError::Query(QueryError::Timeout(_))
        ),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}
