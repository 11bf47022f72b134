//! Three replicas on loopback: updates reach every peer, a restarted peer resyncs, and a
//! partition heals into one state.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Options, Replica, connect_all, eventually, key, long_ago, stays, test_limits};
use ringscale_kube_sim::proxy::{FaultProxy, Mode};
use ringscale_replication::Limits;
use ringscale_ring::Member;

const WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_at_the_owner_reaches_both_peers() {
    let a = Replica::start("ringscale-0", Options::default()).await;
    let b = Replica::start("ringscale-1", Options::default()).await;
    let c = Replica::start("ringscale-2", Options::default()).await;
    // Polled before anyone connected: arrives in the snapshot.
    a.poll(&key(1), 3.0);
    connect_all(&[&a, &b, &c]);
    for r in [&a, &b, &c] {
        tokio::time::timeout(WITHIN, r.peers.wait_synced())
            .await
            .unwrap();
    }
    assert_eq!(b.value(&key(1)), Some(3.0));
    assert_eq!(c.value(&key(1)), Some(3.0));

    // Polled after: arrives as a delta.
    a.poll(&key(1), 7.0);
    b.poll(&key(2), 1.0);
    eventually("b and c see a's new value", WITHIN, || {
        b.value(&key(1)) == Some(7.0) && c.value(&key(1)) == Some(7.0)
    })
    .await;
    eventually("a and c see b's value", WITHIN, || {
        a.value(&key(2)) == Some(1.0) && c.value(&key(2)) == Some(1.0)
    })
    .await;
    let record = c.store.get(&key(1)).unwrap();
    assert_eq!(&*record.origin, "ringscale-0");
    assert!(record.age(ringscale_replication::now()) < Duration::from_secs(5));
    assert_eq!(a.canonical(), c.canonical());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_poll_that_read_the_same_rides_with_the_next_news_or_the_confirmation_tick() {
    // Confirmations never go on their own here (an hour), so only news can carry them.
    let patient = Options {
        limits: Limits {
            confirm_interval: Duration::from_secs(3600),
            ..test_limits()
        },
        ..Options::default()
    };
    let a = Replica::start("ringscale-0", patient).await;
    let b = Replica::start("ringscale-1", Options::default()).await;
    connect_all(&[&a, &b]);
    tokio::time::timeout(WITHIN, b.peers.wait_synced())
        .await
        .unwrap();
    a.poll_at(&key(1), 3.0, long_ago());
    a.poll(&key(2), 5.0);
    eventually("b sees a's first readings", WITHIN, || {
        b.value(&key(1)) == Some(3.0) && b.value(&key(2)) == Some(5.0)
    })
    .await;
    let first = b.store.get(&key(1)).unwrap().version;

    a.poll(&key(1), 3.0);
    let confirmed = a.store.get(&key(1)).unwrap().version;
    assert!(confirmed > first);
    stays(
        "a same reading does not travel alone",
        Duration::from_millis(500),
        || b.store.get(&key(1)).unwrap().version == first,
    )
    .await;
    // News goes at once, and takes the waiting confirmation along.
    a.poll(&key(2), 6.0);
    eventually("b sees the news and the confirmation", WITHIN, || {
        b.value(&key(2)) == Some(6.0) && b.store.get(&key(1)).unwrap().version == confirmed
    })
    .await;

    // With the default interval (1 s) a confirmation goes on its own, and the peer's copy is
    // as young as the owner's.
    let c = Replica::start("ringscale-2", Options::default()).await;
    connect_all(&[&a, &b, &c]);
    tokio::time::timeout(WITHIN, a.peers.wait_synced())
        .await
        .unwrap();
    c.poll_at(&key(3), 2.0, long_ago());
    eventually("a sees c's reading", WITHIN, || {
        a.value(&key(3)) == Some(2.0)
    })
    .await;
    let before = a.store.get(&key(3)).unwrap();
    c.poll(&key(3), 2.0);
    let owner = c.store.get(&key(3)).unwrap();
    eventually(
        "the confirmation reaches a within the interval",
        Duration::from_secs(3),
        || a.store.get(&key(3)).unwrap().version == owner.version,
    )
    .await;
    let after = a.store.get(&key(3)).unwrap();
    assert!(after.polled_at > before.polled_at, "the copy got younger");
    assert_eq!(after.value, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_peer_resyncs() {
    let a = Replica::start("ringscale-0", Options::default()).await;
    let b = Replica::start("ringscale-1", Options::default()).await;
    let c = Replica::start("ringscale-2", Options::default()).await;
    connect_all(&[&a, &b, &c]);
    for i in 0..50 {
        a.poll(&key(i), i as f64);
    }
    eventually("c has a's records", WITHIN, || c.store.len() == 50).await;

    let c_addr = c.kill().await;
    // While c is down, a and b keep polling.
    for i in 0..50 {
        a.poll(&key(i), 100.0 + i as f64);
    }
    b.poll(&key(500), 5.0);

    let c = Replica::start(
        "ringscale-2",
        Options {
            addr: Some(c_addr),
            ..Options::default()
        },
    )
    .await;
    assert!(c.store.is_empty(), "a restarted replica starts empty");
    connect_all(&[&a, &b, &c]);
    tokio::time::timeout(WITHIN, c.peers.wait_synced())
        .await
        .unwrap();
    assert_eq!(c.value(&key(7)), Some(107.0));
    assert_eq!(c.value(&key(500)), Some(5.0));
    // And a and b reconnect to the new c: its polls reach them.
    c.poll(&key(900), 9.0);
    eventually("a and b see the restarted c's poll", WITHIN, || {
        a.value(&key(900)) == Some(9.0) && b.value(&key(900)) == Some(9.0)
    })
    .await;
    eventually("all three converge", WITHIN, || {
        a.canonical() == c.canonical() && b.canonical() == c.canonical()
    })
    .await;
    let c_links = c.peers.status();
    assert!(c_links.iter().all(|l| l.synced), "{c_links:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_heals_and_the_replicas_converge() {
    let a = Replica::start("ringscale-0", Options::default()).await;
    let b = Replica::start("ringscale-1", Options::default()).await;
    let c = Replica::start("ringscale-2", Options::default()).await;
    // Every path into and out of c goes through a proxy.
    let to_c = FaultProxy::start(c.addr).await.unwrap();
    let c_to_a = FaultProxy::start(a.addr).await.unwrap();
    let c_to_b = FaultProxy::start(b.addr).await.unwrap();
    let c_as_seen = Member {
        name: c.name.clone(),
        address: to_c.addr().to_string(),
    };
    a.peers
        .set_members(&[a.member(), b.member(), c_as_seen.clone()]);
    b.peers.set_members(&[a.member(), b.member(), c_as_seen]);
    c.peers.set_members(&[
        Member {
            name: a.name.clone(),
            address: c_to_a.addr().to_string(),
        },
        Member {
            name: b.name.clone(),
            address: c_to_b.addr().to_string(),
        },
        c.member(),
    ]);
    for r in [&a, &b, &c] {
        tokio::time::timeout(WITHIN, r.peers.wait_synced())
            .await
            .unwrap();
    }

    for (mode, round) in [(Mode::Reset, 0.0), (Mode::Blackhole, 10.0)] {
        for p in [&to_c, &c_to_a, &c_to_b] {
            p.set_mode(mode);
        }
        a.poll(&key(1), round + 1.0);
        c.poll(&key(3), round + 3.0);
        eventually("b sees a across the healthy link", WITHIN, || {
            b.value(&key(1)) == Some(round + 1.0)
        })
        .await;
        stays("c is cut off from a", Duration::from_millis(500), || {
            c.value(&key(1)) != Some(round + 1.0) && a.value(&key(3)) != Some(round + 3.0)
        })
        .await;

        for p in [&to_c, &c_to_a, &c_to_b] {
            p.set_mode(Mode::Open);
        }
        // Healed: within 5 s everyone holds the same records.
        eventually(
            "the three replicas converge after healing",
            Duration::from_secs(5),
            || {
                let ca = c.canonical();
                c.value(&key(1)) == Some(round + 1.0)
                    && a.value(&key(3)) == Some(round + 3.0)
                    && a.canonical() == ca
                    && b.canonical() == ca
            },
        )
        .await;
    }
}
