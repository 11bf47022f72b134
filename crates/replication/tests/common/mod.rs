//! A replica in one test process: a store, its replication server on a loopback port, and its
//! links to peers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ringscale_cache::RecordKey;
use ringscale_replication::{Limits, LiveQuery, PeerTls, Peers, ReplicationService, Store, serve};
use ringscale_ring::Member;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Replica {
    pub name: String,
    pub addr: SocketAddr,
    pub store: Arc<Store>,
    pub peers: Arc<Peers>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

/// Limits for tests: quick reconnects and keepalives.
pub fn test_limits() -> Limits {
    Limits {
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(300),
        keepalive_interval: Duration::from_millis(500),
        keepalive_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_secs(1),
        ..Limits::default()
    }
}

pub struct Options {
    pub limits: Limits,
    pub tls: Option<PeerTls>,
    pub live: Option<Arc<dyn LiveQuery>>,
    pub addr: Option<SocketAddr>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            limits: test_limits(),
            tls: None,
            live: None,
            addr: None,
        }
    }
}

impl Replica {
    pub async fn start(name: &str, options: Options) -> Replica {
        let listener = bind(options.addr).await;
        let addr = listener.local_addr().unwrap();
        let store = Store::new(name);
        store.set_generation(1);
        let service =
            ReplicationService::new(Arc::clone(&store), options.live, options.limits.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let tls = options.tls.clone();
        let server = tokio::spawn(async move {
            serve(service, listener, tls.as_ref(), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        let peers = Peers::new(Arc::clone(&store), options.limits, options.tls);
        Replica {
            name: name.to_owned(),
            addr,
            store,
            peers,
            stop: Some(stop),
            server,
        }
    }

    pub fn member(&self) -> Member {
        Member {
            name: self.name.clone(),
            address: self.addr.to_string(),
        }
    }

    /// Stops the server (its streams end, its connections close) and drops the links and the
    /// store: the replica's state is gone, as after a crash. (Abrupt connection loss is what the
    /// partition test's proxies do.)
    pub async fn kill(mut self) -> SocketAddr {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.server)
            .await
            .expect("the server stops within 10 s")
            .unwrap();
        self.peers.set_members(&[]);
        self.addr
    }

    pub fn poll(&self, key: &RecordKey, value: f64) {
        self.poll_at(key, value, ringscale_replication::now());
    }

    /// A poll read at `at` (pollingInterval 30 s): a re-poll of the same reading goes to the
    /// peers only once their copy would pass 45 s at the next poll, so tests of confirmations
    /// poll the first reading [`long_ago`].
    pub fn poll_at(&self, key: &RecordKey, value: f64, at: std::time::Instant) {
        self.store.record_poll(
            key.clone(),
            value,
            value > 0.0,
            None,
            at,
            Duration::from_secs(30),
        );
    }

    pub fn value(&self, key: &RecordKey) -> Option<f64> {
        self.store.get(key).map(|r| r.value)
    }

    /// The store's contents, comparable across replicas (ages left out).
    pub fn canonical(&self) -> Vec<(RecordKey, u64, u64, u64, bool, String)> {
        let mut out: Vec<_> = self.store.with_cache(|c| {
            c.iter()
                .map(|(k, r)| {
                    (
                        k.clone(),
                        r.version.generation,
                        r.version.seq,
                        r.value.to_bits(),
                        r.active,
                        r.origin.to_string(),
                    )
                })
                .collect()
        });
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

async fn bind(addr: Option<SocketAddr>) -> TcpListener {
    let Some(addr) = addr else {
        return TcpListener::bind("127.0.0.1:0").await.unwrap();
    };
    // The old socket may linger briefly after a kill.
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot rebind {addr}");
}

/// 40 s ago: a reading polled then is still fresh (stale after 90 s), and a same reading polled
/// now is a confirmation the peers are sent.
#[allow(dead_code)] // not every test binary of this crate confirms
pub fn long_ago() -> std::time::Instant {
    ringscale_replication::now()
        .checked_sub(Duration::from_secs(40))
        .expect("the clock runs for more than 40 s")
}

pub fn key(i: usize) -> RecordKey {
    RecordKey::scaled_object("default", format!("so-{i}"), format!("s0-redis-list-{i}"))
}

#[allow(unused_imports)] // not every test binary of this crate waits
pub use ringscale_testkit::until as eventually;

/// Holds for a while (bounded): replication must *not* make it false.
pub async fn stays(what: &str, duration: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + duration;
    while tokio::time::Instant::now() < deadline {
        assert!(cond(), "no longer true: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn connect_all(replicas: &[&Replica]) {
    let members: Vec<Member> = replicas.iter().map(|r| r.member()).collect();
    for r in replicas {
        r.peers.set_members(&members);
    }
}
