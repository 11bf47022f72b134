//! Replicas converge: any permutation, duplication, or loss followed by a resend of a set of
//! updates leaves the same state, and that state holds, per key, the greatest record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use ringscale_cache::{Cache, Record, RecordKey, Version};

#[derive(Clone, Debug)]
struct Update {
    key: u8,
    generation: u64,
    seq: u64,
    value: i8,
    error: bool,
    origin: u8,
    age_ms: u16,
}

fn update() -> impl Strategy<Value = Update> {
    // Small ranges, so that keys and even (generation, seq) pairs collide often.
    (
        0u8..4,
        0u64..3,
        0u64..6,
        any::<i8>(),
        any::<bool>(),
        0u8..3,
        0u16..500,
    )
        .prop_map(
            |(key, generation, seq, value, error, origin, age_ms)| Update {
                key,
                generation,
                seq,
                value,
                error,
                origin,
                age_ms,
            },
        )
}

fn materialize(u: &Update, base: Instant) -> (RecordKey, Record) {
    let key = RecordKey::scaled_object(
        "ns",
        format!("so-{}", u.key % 2),
        format!("s{}-redis", u.key),
    );
    let record = Record::new(
        f64::from(u.value),
        u.value > 0,
        u.error.then_some("connection refused"),
        Version {
            generation: u.generation,
            seq: u.seq,
        },
        base + Duration::from_millis(u64::from(u.age_ms)),
        Duration::from_secs(30),
        Arc::from(format!("ringscale-{}", u.origin)),
    );
    (key, record)
}

type Canonical = Vec<(
    RecordKey,
    Version,
    u64,
    bool,
    Option<String>,
    String,
    Instant,
)>;

fn canonical(cache: &Cache) -> Canonical {
    let mut out: Canonical = cache
        .iter()
        .map(|(k, r)| {
            (
                k.clone(),
                r.version,
                r.value.to_bits(),
                r.active,
                r.error.as_deref().map(str::to_owned),
                r.origin.to_string(),
                r.polled_at,
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn apply<'a>(updates: impl IntoIterator<Item = &'a Update>, base: Instant) -> Canonical {
    let mut cache = Cache::new();
    for u in updates {
        let (k, r) = materialize(u, base);
        cache.merge(k, r);
    }
    canonical(&cache)
}

/// A delivery schedule: a permutation of the updates, some delivered twice, some lost at first
/// and resent at the end (in another order).
#[derive(Clone, Debug)]
struct Schedule {
    order: Vec<usize>,
}

fn scenario() -> impl Strategy<Value = (Vec<Update>, Schedule)> {
    prop::collection::vec(update(), 1..40).prop_flat_map(|updates| {
        let n = updates.len();
        let permutation = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
        let lost = prop::collection::vec(any::<bool>(), n);
        let duplicated = prop::collection::vec(any::<bool>(), n);
        let resend = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
        (Just(updates), permutation, lost, duplicated, resend).prop_map(
            |(updates, permutation, lost, duplicated, resend)| {
                let mut order = Vec::new();
                for &i in &permutation {
                    if lost[i] {
                        continue;
                    }
                    order.push(i);
                    if duplicated[i] {
                        order.push(i);
                    }
                }
                // The lost ones come again later, mixed with resends of delivered ones.
                for &i in &resend {
                    if lost[i] || duplicated[i] {
                        order.push(i);
                    }
                }
                (updates, Schedule { order })
            },
        )
    })
}

proptest! {
    #![proptest_config(Config {
        cases: 512,
        rng_seed: RngSeed::Fixed(0x6361_6368),
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn any_delivery_order_converges((updates, schedule) in scenario()) {
        let base = Instant::now();
        let in_order = apply(&updates, base);
        let scheduled = apply(schedule.order.iter().map(|&i| &updates[i]), base);
        prop_assert_eq!(&in_order, &scheduled);

        // The converged state is, per key, the greatest record under the merge order.
        let mut greatest: std::collections::BTreeMap<RecordKey, Record> = Default::default();
        for u in &updates {
            let (k, r) = materialize(u, base);
            match greatest.get(&k) {
                Some(held) if r.merge_order(held).is_le() => {}
                _ => {
                    greatest.insert(k, r);
                }
            }
        }
        let mut expected = Cache::new();
        for (k, r) in greatest {
            expected.merge(k, r);
        }
        prop_assert_eq!(canonical(&expected), in_order);
    }
}

proptest! {
    #![proptest_config(Config {
        cases: 256,
        rng_seed: RngSeed::Fixed(0x6e65_7773),
        failure_persistence: None,
        ..Config::default()
    })]

    /// Replication merges through `merge_news` (no key clone for a held key): it must end in the
    /// same state, with the same outcome and the same news, as `is_news` then `merge`.
    #[test]
    fn merge_news_is_is_news_then_merge((updates, schedule) in scenario()) {
        let base = Instant::now();
        let (mut one, mut other) = (Cache::new(), Cache::new());
        for &i in &schedule.order {
            let (k, r) = materialize(&updates[i], base);
            let news = one.is_news(&k, &r);
            let outcome = one.merge(k.clone(), r.clone());
            prop_assert_eq!(other.merge_news(&k, r), (outcome, news));
        }
        prop_assert_eq!(canonical(&one), canonical(&other));
    }
}
