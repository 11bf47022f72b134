//! Properties of the ring: balance, minimal movement, stable hashing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use proptest::prelude::*;
use ringscale_ring::{Kind, Member, ObjectKey, Ring, RingState};

fn member(name: &str) -> Member {
    Member {
        name: name.to_owned(),
        address: format!("{name}.ringscale.svc:9100"),
    }
}

fn keys(n: usize, seed: u64) -> Vec<ObjectKey> {
    (0..n)
        .map(|i| {
            ObjectKey::new(
                Kind::ScaledObject,
                &format!("team-{}", (i as u64 * 7 + seed) % 97),
                &format!("worker-{seed}-{i}"),
            )
        })
        .collect()
}

fn loads(ring: &Ring, keys: &[ObjectKey]) -> HashMap<String, usize> {
    let mut out: HashMap<String, usize> =
        ring.members().iter().map(|m| (m.name.clone(), 0)).collect();
    for k in keys {
        *out.get_mut(&ring.owner(k).unwrap().name).unwrap() += 1;
    }
    out
}

/// Member names as a StatefulSet names them, or arbitrary DNS labels.
fn names() -> impl Strategy<Value = Vec<String>> {
    (3usize..=16, any::<bool>(), "[a-z][a-z0-9-]{2,20}").prop_map(|(n, statefulset, base)| {
        (0..n)
            .map(|i| {
                if statefulset {
                    format!("ringscale-{i}")
                } else {
                    format!("{base}-{i:x}")
                }
            })
            .collect()
    })
}

// Ownership is a pure function, so these run on a fixed seed: the configurations checked are
// the same on every run. The balance bound sits close to what the keys' own randomness allows
// (10,000 keys over 16 members vary by ±4 % even on a perfectly even ring), so a fresh random
// draw on every CI run would, now and then, find a ring that misses it; BENCHMARKS.md gives the
// distribution over many rings.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 96,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x7269_6e67),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_busiest_member_holds_at_most_115_percent_of_the_mean(names in names(), seed in any::<u64>()) {
        let ring = Ring::new(RingState::new(1, names.iter().map(|n| member(n)).collect()));
        let keys = keys(10_000, seed);
        let loads = loads(&ring, &keys);
        let mean = keys.len() as f64 / names.len() as f64;
        let max = *loads.values().max().unwrap() as f64;
        prop_assert!(max <= 1.15 * mean, "max {max} vs mean {mean:.1} for {} members: {loads:?}", names.len());
    }

    #[test]
    fn adding_or_removing_a_member_moves_few_keys_and_only_to_or_from_it(names in names(), seed in any::<u64>(), pick in any::<prop::sample::Index>()) {
        let keys = keys(10_000, seed);
        let all: Vec<Member> = names.iter().map(|n| member(n)).collect();
        let changed = pick.get(&all).clone();
        let without: Vec<Member> = all.iter().filter(|m| m.name != changed.name).cloned().collect();
        let big = Ring::new(RingState::new(2, all.clone()));
        let small = Ring::new(RingState::new(1, without));
        let n = all.len() as f64;
        let mut moved = 0;
        for k in &keys {
            let before = small.owner(k).unwrap();
            let after = big.owner(k).unwrap();
            if before != after {
                moved += 1;
                // Adding `changed` only takes keys to it; removing it only gives its keys away.
                prop_assert_eq!(&after.name, &changed.name);
            }
        }
        prop_assert!(moved as f64 <= 1.25 / n * keys.len() as f64, "{moved} of {} keys moved with {n} members", keys.len());
    }
}
