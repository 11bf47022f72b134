//! Benchmark: thousands of `redis` list triggers polling one local Redis through a shared
//! connection, against raw LLEN calls of the same client from the same process; and the memory
//! a constructed trigger costs.
//!
//! `cargo bench -p ringscale-scalers --bench redis_triggers [-- --triggers N --seconds S
//! --concurrency C --rounds R]`; Redis from REDIS_ADDR (default 127.0.0.1:6379).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::alloc::System;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ringscale_scalers::{Scaler, Sources, SourcesConfig, TriggerInput};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use support::cpu_time;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

struct Args {
    triggers: usize,
    seconds: u64,
    concurrency: usize,
    rounds: usize,
    /// Only drive ringscale's polls (for profiling).
    only_ringscale: bool,
}

fn args() -> Args {
    let mut a = Args {
        triggers: 10_000,
        seconds: 5,
        concurrency: 64,
        rounds: 5,
        only_ringscale: false,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        if argv[i] == "--only-ringscale" {
            a.only_ringscale = true;
        }
        let value = argv.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match (argv[i].as_str(), value) {
            ("--triggers", Some(v)) => a.triggers = v as usize,
            ("--seconds", Some(v)) => a.seconds = v,
            ("--concurrency", Some(v)) => a.concurrency = v as usize,
            ("--rounds", Some(v)) => a.rounds = (v as usize).max(1),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

struct Run {
    calls: u64,
    elapsed: Duration,
    cpu: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    fn cpu_per_1000(&self) -> Duration {
        self.cpu.mul_f64(1000.0 / self.calls.max(1) as f64)
    }

    fn percentile(&mut self, p: f64) -> Duration {
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 * p) as usize)
            .min(self.latencies.len().saturating_sub(1));
        self.latencies.get(i).copied().unwrap_or_default()
    }
}

/// Calls `call(i)` for i in 0..n round-robin for `seconds`, `concurrency` at a time.
async fn drive<F, Fut>(n: usize, seconds: u64, concurrency: usize, call: F) -> Run
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let counter = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_time();
    let start = Instant::now();
    let mut latencies = Vec::new();
    let mut failures = 0u64;
    let mut stream = futures_util::stream::iter((0..).map(|k| k % n))
        .take_while(|_| futures_util::future::ready(Instant::now() < deadline))
        .map(|i| {
            let fut = call(i);
            async move {
                let t = Instant::now();
                let ok = fut.await;
                (ok, t.elapsed())
            }
        })
        .buffer_unordered(concurrency);
    while let Some((ok, latency)) = stream.next().await {
        if ok {
            counter.fetch_add(1, Ordering::Relaxed);
        } else {
            failures += 1;
        }
        if latencies.len() < 2_000_000 {
            latencies.push(latency);
        }
    }
    assert_eq!(failures, 0, "calls failed");
    Run {
        calls: counter.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
        cpu: cpu_time().saturating_sub(cpu0),
        latencies,
    }
}

fn main() {
    let args = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(args));
}

async fn run(args: Args) {
    let addr = std::env::var("REDIS_ADDR").unwrap_or_else(|_| "127.0.0.1:6379".to_owned());
    let client = redis::Client::open(format!("redis://{addr}")).unwrap();
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        eprintln!("SKIP: Redis not reachable at {addr} (set REDIS_ADDR)");
        return;
    };
    let prefix = format!("ringscale-bench-{}", std::process::id());
    let keys: Vec<String> = (0..args.triggers)
        .map(|i| format!("{prefix}:{i}"))
        .collect();
    let mut pipe = redis::pipe();
    for (i, key) in keys.iter().enumerate() {
        for j in 0..(i % 7) {
            pipe.rpush(key, j).ignore();
        }
    }
    let _: () = pipe.query_async(&mut conn).await.unwrap();

    // Memory per constructed trigger, after the shared source exists.
    let sources = Sources::new(SourcesConfig {
        per_source_concurrency: args.concurrency,
        ..SourcesConfig::default()
    });
    let input = |key: &str| {
        TriggerInput::new(
            0,
            "redis",
            [("address", addr.as_str()), ("listName", key)],
            "bench",
            "so",
        )
    };
    let first = Scaler::build(&input(&keys[0]), &sources).unwrap();
    let inputs: Vec<TriggerInput> = keys[1..].iter().map(|k| input(k)).collect();
    let before = GLOBAL.stats();
    let mut scalers: Vec<Scaler> = Vec::with_capacity(args.triggers);
    for i in &inputs {
        scalers.push(Scaler::build(i, &sources).unwrap());
    }
    let after = GLOBAL.stats();
    let live = (after.bytes_allocated - before.bytes_allocated) as f64
        - (after.bytes_deallocated - before.bytes_deallocated) as f64
        - (after.bytes_reallocated - before.bytes_reallocated).max(0) as f64 * 0.0;
    let per_trigger = live / inputs.len() as f64;
    scalers.insert(0, first);
    drop(inputs);
    let names: Vec<String> = {
        let mut names = Vec::new();
        for s in &scalers {
            names.push(
                s.metric_specs().await.unwrap()[0]
                    .external_name()
                    .unwrap()
                    .to_owned(),
            );
        }
        names
    };
    println!(
        "constructed {} redis triggers: {:.0} bytes per trigger on the heap (+{} bytes inline Scaler), shared redis sources: {}",
        scalers.len(),
        per_trigger,
        std::mem::size_of::<Scaler>(),
        sources.counts().redis
    );

    println!(
        "poll future      : {} bytes",
        std::mem::size_of_val(&scalers[0].poll(&names[0]))
    );
    // Warm up both paths (connections, key types).
    let scalers = Arc::new(scalers);
    let names = Arc::new(names);
    for (s, n) in scalers.iter().zip(names.iter()) {
        s.poll(n).await.unwrap();
    }

    // Alternate the two paths, several rounds, so that load from elsewhere on the machine
    // hits both alike; report each round and the median ratio.
    let raw_conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys = Arc::new(keys);
    let mut ratios = Vec::new();
    for round in 1..=args.rounds {
        let seconds = if args.only_ringscale { 0 } else { args.seconds };
        let mut raw = drive(args.triggers, seconds, args.concurrency, |i| {
            let mut c = raw_conn.clone();
            let keys = keys.clone();
            async move {
                redis::cmd("LLEN")
                    .arg(&keys[i])
                    .query_async::<i64>(&mut c)
                    .await
                    .is_ok()
            }
        })
        .await;
        let mut ours = drive(args.triggers, args.seconds, args.concurrency, |i| {
            let scalers = scalers.clone();
            let names = names.clone();
            async move { scalers[i].poll(&names[i]).await.is_ok() }
        })
        .await;
        let ratio = ours.per_second() / raw.per_second();
        ratios.push(ratio);
        println!(
            "round {round}: raw LLEN {:>7.0}/s (CPU {:.2} ms/1000, p50 {:?}, p99 {:?}); ringscale {:>7.0}/s (CPU {:.2} ms/1000, p50 {:?}, p99 {:?}); ratio {:.3}",
            raw.per_second(),
            raw.cpu_per_1000().as_secs_f64() * 1e3,
            raw.percentile(0.5),
            raw.percentile(0.99),
            ours.per_second(),
            ours.cpu_per_1000().as_secs_f64() * 1e3,
            ours.percentile(0.5),
            ours.percentile(0.99),
            ratio
        );
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    println!(
        "median ratio: {median:.3} (ringscale polls per raw LLEN call; overhead {:.1}% of throughput; target < 30%)",
        (1.0 - median) * 100.0
    );
    println!(
        "setup: {} triggers, {} in flight, {} rounds of {} s per path, 2 worker threads, Redis at {addr}",
        args.triggers, args.concurrency, args.rounds, args.seconds
    );
    let mut pipe = redis::pipe();
    for key in keys.iter() {
        pipe.del(key).ignore();
    }
    let _: () = pipe.query_async(&mut conn).await.unwrap();
}
