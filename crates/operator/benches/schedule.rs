//! The poll schedule with 50,000 objects: memory, and the cost of planning and popping.
//!
//! `cargo bench -p ringscale-operator --bench schedule -- [--entries 50000]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::System;
use std::time::{Duration, Instant as StdInstant};

use ringscale_operator::schedule::Schedule;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio::time::Instant;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let entries: usize = argv
        .iter()
        .position(|a| a == "--entries")
        .and_then(|i| argv.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let keys: Vec<(String, String)> = (0..entries)
        .map(|i| (format!("team-{}", i % 200), format!("worker-{i}")))
        .collect();
    let t0 = Instant::now();
    let region = Region::new(GLOBAL);
    let started = StdInstant::now();
    let mut s = Schedule::new();
    for (i, k) in keys.iter().enumerate() {
        s.insert_spread(
            k.clone(),
            Duration::from_secs(30),
            t0,
            Duration::from_secs(10),
            i as f64 / entries as f64,
        );
    }
    let insert = started.elapsed();
    let stats = region.change();
    let bytes = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64;
    // Simulate 10 minutes of polls in 10 ms steps.
    let started = StdInstant::now();
    let mut popped = 0u64;
    let mut now = t0;
    while now < t0 + Duration::from_secs(600) {
        while s.pop_due(now).is_some() {
            popped += 1;
        }
        now += Duration::from_millis(10);
    }
    let run = started.elapsed();
    println!("schedule with {entries} objects (keys: namespace and name strings, cloned in)");
    println!(
        "memory held: {:.1} MiB ({} B per object, including the key strings)",
        bytes as f64 / 1_048_576.0,
        bytes / entries as i64
    );
    println!(
        "insert: {:.0} ns per object",
        insert.as_nanos() as f64 / entries as f64
    );
    println!(
        "10 simulated minutes at 30 s intervals: {popped} polls popped and replanned, {:.0} ns each",
        run.as_nanos() as f64 / popped.max(1) as f64
    );
}
