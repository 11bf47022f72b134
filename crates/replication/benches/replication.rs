//! Replication benchmark: 3 replicas on loopback, 10,000 keys, 2,000 updates/s in total.
//!
//! Each replica runs on its own thread with a single-threaded tokio runtime, so the CPU time of
//! that thread (from /proc/thread-self/stat) is the replica's CPU, including the polls it
//! records. Every key has one owner; owners record updates at a steady rate and every update's
//! value is the time it was recorded, so each peer measures replication lag exactly when the
//! record lands in its cache.
//!
//! `cargo bench -p ringscale-replication --bench replication -- [--seconds 20] [--rate 2000]
//! [--keys 10000] [--tls]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use ringscale_cache::RecordKey;
use ringscale_kube_sim::tls::Authority;
use ringscale_replication::{Limits, PeerTls, Peers, ReplicationService, Store, serve};
use ringscale_ring::Member;

const REPLICAS: usize = 3;

struct Args {
    seconds: u64,
    rate: u64,
    keys: usize,
    tls: bool,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 20,
        rate: 2000,
        keys: 10_000,
        tls: false,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let next = || argv.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match argv[i].as_str() {
            "--seconds" => a.seconds = next().expect("--seconds N"),
            "--rate" => a.rate = next().expect("--rate N"),
            "--keys" => a.keys = next().expect("--keys N") as usize,
            "--tls" => a.tls = true,
            _ => {}
        }
        i += 1;
    }
    a
}

fn key(i: usize) -> RecordKey {
    RecordKey::scaled_object("bench", format!("so-{i}"), format!("s0-redis-list-{i}"))
}

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let hz = 100; // USER_HZ on Linux
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / hz)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

struct Outcome {
    name: String,
    lags_us: Vec<u64>,
    cpu: Duration,
    wall: Duration,
    sent: u64,
    bytes: u64,
    batches: u64,
    recorded: u64,
}

fn main() {
    let args = args();
    let epoch = Instant::now();
    let ca = Authority::new("bench-peers").unwrap();
    let listeners: Vec<std::net::TcpListener> = (0..REPLICAS)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.set_nonblocking(true).unwrap();
            l
        })
        .collect();
    let members: Vec<Member> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| Member {
            name: format!("ringscale-{i}"),
            address: l.local_addr().unwrap().to_string(),
        })
        .collect();
    let barrier = Arc::new(Barrier::new(REPLICAS));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let members = members.clone();
        let barrier = Arc::clone(&barrier);
        let measuring = Arc::clone(&measuring);
        let tls = args.tls.then(|| {
            let id = ca.issue_peer(&members[i].name, &["127.0.0.1"]).unwrap();
            PeerTls {
                ca_pem: ca.cert_pem.clone(),
                cert_pem: id.cert_pem,
                key_pem: id.key_pem,
                server_name: None,
            }
        });
        let (seconds, rate, keys) = (args.seconds, args.rate, args.keys);
        threads.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(replica(
                i, listener, members, tls, barrier, measuring, epoch, seconds, rate, keys,
            ))
        }));
    }
    let outcomes: Vec<Outcome> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    let mut all: Vec<u64> = outcomes
        .iter()
        .flat_map(|o| o.lags_us.iter().copied())
        .collect();
    all.sort_unstable();
    let recorded: u64 = outcomes.iter().map(|o| o.recorded).sum();
    let sent: u64 = outcomes.iter().map(|o| o.sent).sum();
    let bytes: u64 = outcomes.iter().map(|o| o.bytes).sum();
    let batches: u64 = outcomes.iter().map(|o| o.batches).sum();
    let wall = outcomes.iter().map(|o| o.wall).max().unwrap_or_default();
    println!(
        "replication: {REPLICAS} replicas, {} keys, {} updates/s requested for {} s{}",
        args.keys,
        args.rate,
        args.seconds,
        if args.tls { ", mutual TLS" } else { "" }
    );
    println!(
        "updates recorded: {recorded} ({:.0}/s); deliveries measured at peers: {} (expected {})",
        recorded as f64 / wall.as_secs_f64(),
        all.len(),
        recorded * (REPLICAS as u64 - 1)
    );
    println!(
        "lag (record at owner -> merged at peer): p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
        percentile(&all, 0.50),
        percentile(&all, 0.90),
        percentile(&all, 0.99),
        percentile(&all, 0.999),
        all.last().copied().unwrap_or(0)
    );
    for o in &outcomes {
        let mut own = o.lags_us.clone();
        own.sort_unstable();
        println!(
            "  {}: CPU {:.1}% of one core ({:.2} s over {:.1} s); received p99 {} µs",
            o.name,
            100.0 * o.cpu.as_secs_f64() / o.wall.as_secs_f64(),
            o.cpu.as_secs_f64(),
            o.wall.as_secs_f64(),
            percentile(&own, 0.99)
        );
    }
    // gRPC adds a 5-byte message prefix and HTTP/2 a 9-byte DATA frame header per batch.
    let framed = bytes + batches * 14;
    println!(
        "bytes per delivered update: {:.1} protobuf, {:.1} with gRPC/HTTP2 framing ({} batches, {:.1} records per batch)",
        bytes as f64 / sent.max(1) as f64,
        framed as f64 / sent.max(1) as f64,
        batches,
        sent as f64 / batches.max(1) as f64
    );
}

#[allow(clippy::too_many_arguments)]
async fn replica(
    index: usize,
    listener: std::net::TcpListener,
    members: Vec<Member>,
    tls: Option<PeerTls>,
    barrier: Arc<Barrier>,
    measuring: Arc<AtomicBool>,
    epoch: Instant,
    seconds: u64,
    rate: u64,
    keys: usize,
) -> Outcome {
    let name = members[index].name.clone();
    let limits = Limits::default();
    let store = Store::new(&name);
    store.set_generation(1);
    let lags = Arc::new(Mutex::new(Vec::<u64>::with_capacity(
        (rate * seconds * 2 / REPLICAS as u64) as usize,
    )));
    {
        let lags = Arc::clone(&lags);
        let measuring = Arc::clone(&measuring);
        let me = name.clone();
        store.set_observer(Box::new(move |_, record, _| {
            if *record.origin == *me || !measuring.load(Ordering::Relaxed) {
                return;
            }
            let now_ns = epoch.elapsed().as_nanos() as f64;
            let lag_ns = (now_ns - record.value).max(0.0);
            lags.lock().unwrap().push((lag_ns / 1000.0) as u64);
        }));
    }
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let service = ReplicationService::new(Arc::clone(&store), None, limits.clone());
    let server_tls = tls.clone();
    tokio::spawn(async move {
        serve(
            service,
            listener,
            server_tls.as_ref(),
            std::future::pending(),
        )
        .await
        .unwrap();
    });
    let peers = Peers::new(Arc::clone(&store), limits, tls);
    peers.set_members(&members);
    tokio::time::timeout(Duration::from_secs(30), peers.wait_synced())
        .await
        .expect("peers sync");

    // Every key once, so peers hold the full set before measuring.
    let own: Vec<usize> = (0..keys).filter(|k| k % REPLICAS == index).collect();
    for &k in &own {
        record(&store, k, epoch);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.len() < keys {
        assert!(
            Instant::now() < deadline,
            "{name} did not receive every key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sync(&barrier).await;
    measuring.store(true, Ordering::Relaxed);
    let sent_before = store.stats.records_sent.load(Ordering::Relaxed);
    let bytes_before = store.stats.bytes_sent.load(Ordering::Relaxed);
    let batches_before = store.stats.batches_sent.load(Ordering::Relaxed);
    let cpu_before = thread_cpu();
    let started = Instant::now();

    // This owner's share of the rate, in 2 ms ticks.
    let tick = Duration::from_millis(2);
    let per_second = rate as f64 / REPLICAS as f64;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut recorded = 0u64;
    let mut next = 0usize;
    let end = started + Duration::from_secs(seconds);
    while Instant::now() < end {
        interval.tick().await;
        let due = (started.elapsed().as_secs_f64() * per_second) as u64;
        while recorded < due {
            record(&store, own[next % own.len()], epoch);
            next += 1;
            recorded += 1;
        }
    }
    // Let the last deltas land, then stop measuring.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let wall = started.elapsed();
    let cpu = thread_cpu() - cpu_before;
    sync(&barrier).await;
    measuring.store(false, Ordering::Relaxed);
    let lags_us = std::mem::take(&mut *lags.lock().unwrap());
    Outcome {
        name,
        lags_us,
        cpu,
        wall,
        sent: store.stats.records_sent.load(Ordering::Relaxed) - sent_before,
        bytes: store.stats.bytes_sent.load(Ordering::Relaxed) - bytes_before,
        batches: store.stats.batches_sent.load(Ordering::Relaxed) - batches_before,
        recorded,
    }
}

fn record(store: &Store, k: usize, epoch: Instant) {
    store.record_poll(
        key(k),
        epoch.elapsed().as_nanos() as f64,
        true,
        None,
        ringscale_replication::now(),
        Duration::from_secs(10),
    );
}

/// Waits at the barrier without blocking the runtime thread's other tasks for long: the other
/// replicas reach it within milliseconds.
async fn sync(barrier: &Arc<Barrier>) {
    let barrier = Arc::clone(barrier);
    tokio::task::spawn_blocking(move || barrier.wait())
        .await
        .unwrap();
}
