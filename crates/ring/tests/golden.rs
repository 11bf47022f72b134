//! Golden vectors: the owners of a fixed key set for fixed member sets. Replicas of different
//! builds must agree on ownership, so a change to hashing, virtual nodes, probes or the key format
//! must show up here. If the change is deliberate it is a breaking change for mixed-version rings
//! (a rolling upgrade would briefly have two owners for some objects): regenerate with
//! `RINGSCALE_BLESS=1 cargo test -p ringscale-ring --test golden` and say so in the changelog.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;

use ringscale_ring::{Kind, Member, ObjectKey, Ring, RingState};

const GOLDEN: &str = include_str!("golden.txt");

fn rings() -> Vec<(&'static str, Ring)> {
    let named = |names: &[&str]| {
        let members = names
            .iter()
            .map(|n| Member {
                name: (*n).to_owned(),
                address: format!("{n}:9100"),
            })
            .collect();
        Ring::new(RingState::new(7, members))
    };
    vec![
        (
            "statefulset-3",
            named(&["ringscale-0", "ringscale-1", "ringscale-2"]),
        ),
        (
            "statefulset-5",
            named(&[
                "ringscale-0",
                "ringscale-1",
                "ringscale-2",
                "ringscale-3",
                "ringscale-4",
            ]),
        ),
        (
            "mixed-4",
            named(&["a", "keda-ring-xyz", "replica-b7f", "ünïcode-ok"]),
        ),
    ]
}

fn keys() -> Vec<ObjectKey> {
    let mut keys = Vec::new();
    for ns in ["default", "team-a", "payments-prod", "x"] {
        for name in ["worker", "orders-consumer", "api", "a", "batch-ingest-0042"] {
            keys.push(ObjectKey::new(Kind::ScaledObject, ns, name));
            keys.push(ObjectKey::new(Kind::ScaledJob, ns, name));
        }
    }
    keys
}

fn render() -> String {
    let mut out = String::new();
    for (label, ring) in rings() {
        for key in keys() {
            let owner = ring.owner(&key).map(|m| m.name.as_str()).unwrap_or("-");
            writeln!(out, "{label} {key} {owner}").unwrap();
        }
    }
    out
}

#[test]
fn owners_of_the_golden_keys_have_not_changed() {
    let now = render();
    if std::env::var_os("RINGSCALE_BLESS").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden.txt");
        std::fs::write(path, &now).unwrap();
        return;
    }
    let changed: Vec<String> = GOLDEN
        .lines()
        .zip(now.lines())
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("  checked in: {a}\n  now:        {b}"))
        .collect();
    assert!(
        changed.is_empty() && GOLDEN.lines().count() == now.lines().count(),
        "ring ownership changed — replicas of different builds would disagree:\n{}",
        changed.join("\n")
    );
    // The vectors exercise every member, so they would notice a member being dropped.
    for (label, ring) in rings() {
        for m in ring.members() {
            assert!(
                GOLDEN
                    .lines()
                    .any(|l| l.starts_with(label) && l.ends_with(&format!(" {}", m.name))),
                "{label}: {} owns none of the golden keys",
                m.name
            );
        }
    }
}
