//! Ring balance by design: the busiest member's share over the mean, over many rings of random
//! member names, with one probe (plain consistent hashing, 256 virtual nodes) and with the
//! ring's multi-probe lookup; and the cost of a lookup.
//!
//! `cargo bench -p ringscale-ring --bench balance -- [--rings 200] [--keys 10000]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use ringscale_ring::{Kind, Member, ObjectKey, PROBES, Ring, RingState};

fn arg(name: &str, default: usize) -> usize {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter()
        .position(|a| a == name)
        .and_then(|i| argv.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let rings = arg("--rings", 200);
    let keys: Vec<ObjectKey> = (0..arg("--keys", 10_000))
        .map(|i| {
            ObjectKey::new(
                Kind::ScaledObject,
                &format!("team-{}", i % 97),
                &format!("worker-{i}"),
            )
        })
        .collect();
    println!(
        "busiest member / mean over {rings} rings of random member names, {} keys",
        keys.len()
    );
    println!("members  probes  median  p90    max    rings > 1.15  ns/lookup");
    // A small deterministic generator for member names.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for n in [3usize, 5, 8, 10, 13, 16] {
        let states: Vec<RingState> = (0..rings)
            .map(|_| {
                let prefix = format!("rs-{:x}", next() % 0xffff);
                let members = (0..n)
                    .map(|i| Member {
                        name: format!("{prefix}-{i}"),
                        address: String::new(),
                    })
                    .collect();
                RingState::new(1, members)
            })
            .collect();
        let built: Vec<Ring> = states.into_iter().map(Ring::new).collect();
        for probes in [1u8, PROBES] {
            let mut ratios = Vec::with_capacity(rings);
            let started = Instant::now();
            for ring in &built {
                let mut counts = vec![0usize; n];
                for key in &keys {
                    let owner = ring.owner_with_probes(key, probes).unwrap();
                    let i = ring
                        .members()
                        .iter()
                        .position(|m| m.name == owner.name)
                        .unwrap();
                    counts[i] += 1;
                }
                let mean = keys.len() as f64 / n as f64;
                ratios.push(*counts.iter().max().unwrap() as f64 / mean);
            }
            let per_lookup = started.elapsed().as_nanos() as f64 / (rings * keys.len()) as f64;
            ratios.sort_by(f64::total_cmp);
            let over = ratios.iter().filter(|r| **r > 1.15).count();
            println!(
                "{n:>7}  {probes:>6}  {:.3}   {:.3}  {:.3}  {over:>5}/{rings:<6}  {per_lookup:.0}",
                percentile(&ratios, 0.5),
                percentile(&ratios, 0.9),
                ratios[ratios.len() - 1],
            );
        }
    }
}
