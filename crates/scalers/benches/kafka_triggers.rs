//! Benchmark: 10,000 `kafka` triggers — each its own consumer group on one of ten 3-partition
//! topics — polling one broker through one shared source: connections used, memory per
//! constructed trigger, polls per second and latency, round by round.
//!
//! `cargo bench -p ringscale-scalers --bench kafka_triggers [-- --triggers N --seconds S
//! --concurrency C --rounds R]`. The broker is KAFKA_BOOTSTRAP if set, else a noida-db (PyPI
//! `noida-db`) started here on a free port; without either the benchmark prints SKIP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

#[allow(dead_code)]
#[path = "../tests/scalers/kafka_client.rs"]
mod kafka_client;

use std::alloc::System;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kafka_client::{Client, noida_program};
use ringscale_scalers::{Scaler, Sources, SourcesConfig, TriggerInput};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use support::cpu_time;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const TOPICS: usize = 10;
const PARTITIONS: i32 = 3;
const RECORDS: usize = 5;

struct Args {
    triggers: usize,
    seconds: u64,
    concurrency: usize,
    rounds: usize,
}

fn args() -> Args {
    let mut a = Args {
        triggers: 10_000,
        seconds: 5,
        concurrency: 64,
        rounds: 5,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let value = argv.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match (argv[i].as_str(), value) {
            ("--triggers", Some(v)) => a.triggers = (v as usize).max(1),
            ("--seconds", Some(v)) => a.seconds = v.max(1),
            ("--concurrency", Some(v)) => a.concurrency = (v as usize).max(1),
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

/// The broker process started here, killed on drop.
struct Started(std::process::Child, std::path::PathBuf);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

async fn broker() -> Option<(String, Option<Started>)> {
    if let Ok(addr) = std::env::var("KAFKA_BOOTSTRAP") {
        return Some((addr, None));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .ok()?
        .port();
    let dir = std::env::temp_dir().join(format!("ringscale-kafka-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let child = std::process::Command::new(noida_program())
        .args([
            "start",
            "--only",
            "kafka",
            "--kafka-port",
            &port.to_string(),
        ])
        .args(["--host", "127.0.0.1", "--data-dir"])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let started = Started(child, dir);
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..120 {
        if let Ok(mut c) = Client::connect(&addr).await
            && c.create_topic("ringscale-probe", 1).await.is_ok()
        {
            return Some((addr, Some(started)));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
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
    let Some((addr, _started)) = broker().await else {
        eprintln!("SKIP: no Kafka broker (set KAFKA_BOOTSTRAP, or install PyPI noida-db)");
        return;
    };
    let prefix = format!("bench-{}", std::process::id());
    let topics: Vec<String> = (0..TOPICS).map(|t| format!("{prefix}-t{t}")).collect();
    let mut c = Client::connect(&addr).await.unwrap();
    for t in &topics {
        c.create_topic(t, PARTITIONS).await.unwrap();
        for p in 0..PARTITIONS {
            c.produce(t, p, RECORDS).await;
        }
    }
    // Trigger i: group g<i> on topic i % 10, committed at i % 6 on every partition.
    let setup = Instant::now();
    let committed = |i: usize| (i % (RECORDS + 1)) as i64;
    for i in 0..args.triggers {
        let offsets: Vec<(i32, i64)> = (0..PARTITIONS).map(|p| (p, committed(i))).collect();
        c.commit(&format!("{prefix}-g{i}"), &topics[i % TOPICS], &offsets)
            .await;
    }
    println!(
        "setup: {} groups committed in {:.1} s",
        args.triggers,
        setup.elapsed().as_secs_f64()
    );

    let sources = Sources::new(SourcesConfig {
        per_source_concurrency: args.concurrency,
        ..SourcesConfig::default()
    });
    let input = |i: usize| {
        let group = format!("{prefix}-g{i}");
        TriggerInput::new(
            0,
            "kafka",
            [
                ("bootstrapServers", addr.as_str()),
                ("consumerGroup", group.as_str()),
                ("topic", topics[i % TOPICS].as_str()),
                ("allowIdleConsumers", "true"),
            ],
            "bench",
            "so",
        )
    };
    let first = Scaler::build(&input(0), &sources).unwrap();
    let inputs: Vec<TriggerInput> = (1..args.triggers).map(input).collect();
    let before = GLOBAL.stats();
    let mut scalers: Vec<Scaler> = Vec::with_capacity(args.triggers);
    scalers.push(first);
    for i in &inputs {
        scalers.push(Scaler::build(i, &sources).unwrap());
    }
    let after = GLOBAL.stats();
    let live = (after.bytes_allocated as f64 - before.bytes_allocated as f64)
        - (after.bytes_deallocated as f64 - before.bytes_deallocated as f64);
    let per_trigger = live / inputs.len().max(1) as f64;
    drop(inputs);
    let mut names = Vec::with_capacity(scalers.len());
    for s in &scalers {
        names.push(
            s.metric_specs().await.unwrap()[0]
                .external_name()
                .unwrap()
                .to_owned(),
        );
    }

    // Every trigger once, checking its value: the lag is (5 − committed) × 3 partitions.
    let warm = Instant::now();
    let values = futures_util::stream::iter(0..scalers.len())
        .map(|i| {
            let (s, n) = (&scalers[i], &names[i]);
            async move { (i, s.poll(n).await) }
        })
        .buffer_unordered(args.concurrency)
        .collect::<Vec<_>>()
        .await;
    for (i, v) in values {
        let v = v.unwrap_or_else(|e| panic!("trigger {i}: {e}"));
        let expected = (RECORDS as i64 - committed(i)) * i64::from(PARTITIONS);
        assert_eq!(v.values[0].value, expected as f64, "trigger {i}");
    }
    let warm = warm.elapsed();
    println!(
        "constructed {} kafka triggers: {:.0} bytes per trigger on the heap (+{} bytes inline Scaler); kafka sources: {}, broker connections: {}; first poll of all: {:.2} s, all values right",
        scalers.len(),
        per_trigger,
        std::mem::size_of::<Scaler>(),
        sources.counts().kafka,
        sources.kafka_connections(),
        warm.as_secs_f64()
    );

    let mut rates = Vec::new();
    for round in 1..=args.rounds {
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let cpu0 = cpu_time();
        let start = Instant::now();
        let mut latencies: Vec<Duration> = Vec::new();
        let mut failures = 0u64;
        let mut stream = futures_util::stream::iter((0..).map(|k| k % scalers.len()))
            .take_while(|_| futures_util::future::ready(Instant::now() < deadline))
            .map(|i| {
                let (s, n) = (&scalers[i], &names[i]);
                async move {
                    let t = Instant::now();
                    let ok = s.poll(n).await.is_ok();
                    (ok, t.elapsed())
                }
            })
            .buffer_unordered(args.concurrency);
        while let Some((ok, latency)) = stream.next().await {
            if !ok {
                failures += 1;
            }
            latencies.push(latency);
        }
        let elapsed = start.elapsed();
        let cpu = cpu_time().saturating_sub(cpu0);
        latencies.sort_unstable();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        let rate = latencies.len() as f64 / elapsed.as_secs_f64();
        rates.push(rate);
        println!(
            "round {round}: {rate:>6.0} polls/s, p50 {:?}, p99 {:?}, CPU {:.2} ms per 1000 polls, {failures} failed, broker connections {}",
            pct(0.5),
            pct(0.99),
            cpu.as_secs_f64() * 1e3 * 1000.0 / latencies.len().max(1) as f64,
            sources.kafka_connections()
        );
        assert_eq!(failures, 0, "polls failed");
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "polls per second: median {:.0}, min {:.0}, max {:.0} over {} rounds of {} s ({} triggers, {} in flight, 2 worker threads, broker at {addr})",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1],
        args.rounds,
        args.seconds,
        args.triggers,
        args.concurrency
    );
}
