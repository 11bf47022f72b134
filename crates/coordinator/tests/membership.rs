//! Membership invariants on kube-sim, with timings scaled down (2 s lease, 1.4 s renew deadline,
//! 0.3 s retry period) so the bounds are checked in seconds:
//! - racing coordinators never publish two different rings with one generation;
//! - a graceful leave is reflected within 2 s (without a leave grace); with one, a member that
//!   comes back under its name within the grace changes nothing, and one that does not is gone
//!   after the grace;
//! - an API-server restart longer than the lease (with 403s while it warms up) declares no one
//!   dead;
//! - a killed member is removed within lease duration + retry period + 2 s;
//! - a member partitioned from the API server stops acting before its Lease can be taken over.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::Api;
use ringscale_coordinator::{
    Config, Coordinator, Ownership, Published, TAKEN_OVER_ANNOTATION, decode_ring,
    member_lease_name, publish_ring, ring_configmap_name,
};
use ringscale_kube_sim::proxy::{FaultProxy, Mode};
use ringscale_kube_sim::{Config as SimConfig, KubeSim};
use ringscale_ring::{Kind, Member, ObjectKey};
use tokio::sync::watch;
use tokio::time::Instant;

const RING: &str = "ringscale";
const NS: &str = "default";
const LEASE: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(300);
const LEAVE_GRACE: Duration = Duration::from_secs(2);

async fn sim() -> KubeSim {
    KubeSim::start(SimConfig {
        controllers: false,
        ..SimConfig::default()
    })
    .await
    .expect("kube-sim starts")
}

/// A client for the sim, optionally through a proxy (to cut it off).
async fn client(sim: &KubeSim, via: Option<&FaultProxy>) -> Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(sim.kubeconfig()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    if let Some(proxy) = via {
        config.cluster_url = format!("https://{}", proxy.addr()).parse().unwrap();
    }
    config.read_timeout = Some(Duration::from_secs(5));
    Client::try_from(config).unwrap()
}

fn config(name: &str) -> Config {
    Config {
        lease_duration: LEASE,
        renew_deadline: Duration::from_millis(1400),
        retry_period: RETRY,
        request_timeout: Duration::from_secs(1),
        leave_grace: LEAVE_GRACE,
        ..Config::new(RING, NS, name, &format!("{name}.peers:9443"))
    }
}

fn names(o: &Ownership) -> Vec<String> {
    o.ring.members().iter().map(|m| m.name.clone()).collect()
}

/// Waits (bounded) until the ownership satisfies `cond`; returns it.
async fn until(
    rx: &mut watch::Receiver<Ownership>,
    within: Duration,
    what: &str,
    cond: impl Fn(&Ownership) -> bool,
) -> Ownership {
    let result = tokio::time::timeout(within, rx.wait_for(|o| cond(o)))
        .await
        .map(|r| r.map(|o| o.clone()));
    match result {
        Ok(Ok(o)) => o,
        _ => panic!(
            "timed out after {within:?} waiting for: {what}; last: {:?}",
            rx.borrow()
        ),
    }
}

async fn ring_of(
    sim: &KubeSim,
    members: &[&str],
) -> (Vec<Coordinator>, Vec<watch::Receiver<Ownership>>) {
    ring_with(sim, members, config("x").leave_grace).await
}

/// A ring whose members keep a stopped member's objects for `leave_grace`.
async fn ring_with(
    sim: &KubeSim,
    members: &[&str],
    leave_grace: Duration,
) -> (Vec<Coordinator>, Vec<watch::Receiver<Ownership>>) {
    let mut coordinators = Vec::new();
    for name in members {
        let config = Config {
            leave_grace,
            ..config(name)
        };
        coordinators.push(Coordinator::start(client(sim, None).await, config).unwrap());
    }
    let mut rxs: Vec<_> = coordinators.iter().map(Coordinator::ownership).collect();
    let want: Vec<String> = members.iter().map(|s| (*s).to_owned()).collect();
    for rx in &mut rxs {
        until(
            rx,
            Duration::from_secs(15),
            "all members in the ring and active",
            |o| o.active && names(o) == want,
        )
        .await;
    }
    (coordinators, rxs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_agree_on_one_ring_and_split_the_keys() {
    let sim = sim().await;
    let (coordinators, rxs) = ring_of(&sim, &["ringscale-0", "ringscale-1", "ringscale-2"]).await;
    let views: Vec<Ownership> = rxs.iter().map(|rx| rx.borrow().clone()).collect();
    let generation = views[0].generation();
    assert!(views.iter().all(|v| v.generation() == generation));
    assert_eq!(
        views.iter().filter(|v| v.coordinator).count(),
        1,
        "exactly one coordinator"
    );
    // Every key is owned by exactly one replica.
    for i in 0..300 {
        let key = ObjectKey::new(Kind::ScaledObject, "default", &format!("so-{i}"));
        assert_eq!(views.iter().filter(|v| v.owns(&key)).count(), 1);
    }
    // Each member Lease carries the ring label and the address.
    let leases: Api<Lease> = Api::namespaced(client(&sim, None).await, NS);
    let lease = leases
        .get(&member_lease_name(RING, "ringscale-1"))
        .await
        .unwrap();
    let annotations = lease.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations["ringscale.io/address"],
        "ringscale-1.peers:9443"
    );
    drop(coordinators);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_is_reflected_within_two_seconds() {
    let sim = sim().await;
    let (mut coordinators, mut rxs) = ring_with(
        &sim,
        &["ringscale-0", "ringscale-1", "ringscale-2"],
        Duration::ZERO,
    )
    .await;
    // First an ordinary member leaves, then the coordinator itself.
    for round in 0..2 {
        let leaving = if round == 0 {
            coordinators
                .iter()
                .position(|c| !c.ownership().borrow().coordinator)
                .unwrap()
        } else {
            coordinators
                .iter()
                .position(|c| c.ownership().borrow().coordinator)
                .unwrap()
        };
        let before = rxs[leaving].borrow().generation();
        let name = rxs[leaving].borrow().member.to_string();
        let coordinator = coordinators.remove(leaving);
        rxs.remove(leaving);
        let started = Instant::now();
        coordinator.shutdown().await;
        for rx in &mut rxs {
            until(
                rx,
                Duration::from_secs(2),
                "the leave shows in the ring",
                |o| !names(o).contains(&name) && o.generation() > before,
            )
            .await;
        }
        let took = started.elapsed();
        eprintln!("graceful leave of {name} reflected at every peer after {took:?}");
        assert!(took <= Duration::from_secs(2), "{name} left in {took:?}");
        // Its Lease is gone.
        let leases: Api<Lease> = Api::namespaced(client(&sim, None).await, NS);
        assert!(
            leases
                .get_opt(&member_lease_name(RING, &name))
                .await
                .unwrap()
                .is_none()
        );
    }
    // The last one is the coordinator now and alone in the ring.
    until(
        &mut rxs[0],
        Duration::from_secs(10),
        "the survivor coordinates",
        |o| o.coordinator && names(o).len() == 1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_is_removed_within_lease_plus_retry_plus_two_seconds() {
    let sim = sim().await;
    let (mut coordinators, mut rxs) =
        ring_of(&sim, &["ringscale-0", "ringscale-1", "ringscale-2"]).await;
    let bound = LEASE + RETRY + Duration::from_secs(2);
    // Kill an ordinary member, then the coordinator (whose death also needs a new election).
    for round in 0..2 {
        let victim = coordinators
            .iter()
            .position(|c| c.ownership().borrow().coordinator == (round == 1))
            .unwrap();
        let name = rxs[victim].borrow().member.to_string();
        coordinators.remove(victim).abort();
        rxs.remove(victim);
        let killed = Instant::now();
        for rx in &mut rxs {
            until(
                rx,
                bound + Duration::from_secs(1),
                "the dead member leaves the ring",
                |o| !names(o).contains(&name),
            )
            .await;
        }
        let took = killed.elapsed();
        eprintln!("killed {name} removed from every peer's ring after {took:?} (bound {bound:?})");
        assert!(
            took <= bound,
            "{name} removed after {took:?} (bound {bound:?})"
        );
    }
    assert!(rxs[0].borrow().active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_member_stops_before_its_lease_can_be_taken_over() {
    let sim = sim().await;
    let (coordinators, mut rxs) = ring_of(&sim, &["ringscale-0", "ringscale-1"]).await;
    // The third member reaches the API server through a proxy.
    let target = sim.url().trim_start_matches("https://").parse().unwrap();
    let proxy = FaultProxy::start(target).await.unwrap();
    let cut_off =
        Coordinator::start(client(&sim, Some(&proxy)).await, config("ringscale-2")).unwrap();
    let mut cut_rx = cut_off.ownership();
    until(
        &mut cut_rx,
        Duration::from_secs(15),
        "the third member is active",
        |o| o.active && names(o).len() == 3,
    )
    .await;
    for rx in &mut rxs {
        until(rx, Duration::from_secs(15), "three members", |o| {
            names(o).len() == 3
        })
        .await;
    }

    // Watch for the takeover of its Lease from the healthy side.
    let leases: Api<Lease> = Api::namespaced(client(&sim, None).await, NS);
    let lease_name = member_lease_name(RING, "ringscale-2");
    let taken_over_at = Arc::new(Mutex::new(None::<Instant>));
    let watcher = {
        let taken_over_at = Arc::clone(&taken_over_at);
        let leases = leases.clone();
        let lease_name = lease_name.clone();
        tokio::spawn(async move {
            loop {
                let lease = leases.get_opt(&lease_name).await.unwrap();
                let taken = lease.as_ref().is_none_or(|l| {
                    l.metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key(TAKEN_OVER_ANNOTATION))
                });
                if taken {
                    *taken_over_at.lock().unwrap() = Some(Instant::now());
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    proxy.set_mode(Mode::Blackhole);
    let partitioned = Instant::now();
    until(
        &mut cut_rx,
        Duration::from_secs(5),
        "the cut-off member stops",
        |o| !o.active,
    )
    .await;
    let stopped = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), watcher)
        .await
        .unwrap()
        .unwrap();
    let taken = taken_over_at.lock().unwrap().unwrap();
    eprintln!(
        "partitioned member stopped {:?} after the cut; its lease was taken over {:?} after",
        stopped - partitioned,
        taken - partitioned
    );
    assert!(
        stopped < taken,
        "stopped {:?} after the cut, but its lease was taken over {:?} after",
        stopped - partitioned,
        taken - partitioned
    );
    for rx in &mut rxs {
        until(rx, Duration::from_secs(5), "the ring drops it", |o| {
            names(o).len() == 2
        })
        .await;
    }

    // Healed: it rejoins under a new generation.
    let before = rxs[0].borrow().generation();
    proxy.set_mode(Mode::Open);
    until(
        &mut cut_rx,
        Duration::from_secs(20),
        "the member is back",
        |o| o.active && names(o).len() == 3 && o.generation() > before,
    )
    .await;
    drop((coordinators, cut_off));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_coordinators_never_publish_two_rings_with_one_generation() {
    let sim = sim().await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client(&sim, None).await, NS);
    let written = Arc::new(Mutex::new(Vec::<Published>::new()));
    let mut racers = Vec::new();
    for racer in 0..6 {
        let configmaps = configmaps.clone();
        let written = Arc::clone(&written);
        racers.push(tokio::spawn(async move {
            let me = format!("racer-{racer}");
            for round in 0..25 {
                // Each racer reads the current ring (possibly stale by the time it writes) and
                // publishes its own member set on top.
                let current = match configmaps
                    .get_opt(&ring_configmap_name(RING))
                    .await
                    .unwrap()
                {
                    Some(cm) => decode_ring(&cm).unwrap(),
                    None => Published::default(),
                };
                let members = vec![Member {
                    name: format!("{me}-{round}"),
                    address: String::new(),
                }];
                if let Ok(p) = publish_ring(&configmaps, RING, &current, members, &me).await {
                    written.lock().unwrap().push(p);
                }
            }
        }));
    }
    for r in racers {
        r.await.unwrap();
    }
    let written = written.lock().unwrap().clone();
    let mut by_generation: BTreeMap<u64, Vec<Member>> = BTreeMap::new();
    for p in &written {
        if let Some(other) = by_generation.insert(p.state.generation, p.state.members.clone()) {
            panic!(
                "generation {} published twice: {:?} and {:?}",
                p.state.generation, other, p.state.members
            );
        }
    }
    // Every successful publication took the next generation: no gaps, no repeats.
    let generations: Vec<u64> = by_generation.keys().copied().collect();
    assert_eq!(generations, (1..=written.len() as u64).collect::<Vec<_>>());
    assert!(
        written.len() >= 25,
        "the racers made progress: {}",
        written.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_back_within_its_leave_grace_keeps_the_ring_and_one_that_stays_away_leaves() {
    let sim = sim().await;
    let (mut coordinators, mut rxs) =
        ring_of(&sim, &["ringscale-0", "ringscale-1", "ringscale-2"]).await;
    let generation = rxs[0].borrow().generation();
    // A member (not the coordinator) stops and restarts under its name within the grace.
    let i = coordinators
        .iter()
        .position(|c| !c.ownership().borrow().coordinator)
        .unwrap();
    let name = rxs[i].borrow().member.to_string();
    coordinators.remove(i).shutdown().await;
    rxs.remove(i);
    let leases: Api<Lease> = Api::namespaced(client(&sim, None).await, NS);
    let lease = leases.get(&member_lease_name(RING, &name)).await.unwrap();
    assert!(ringscale_coordinator::is_leaving(&lease), "marked leaving");
    tokio::time::sleep(LEAVE_GRACE / 2).await;
    let back = Coordinator::start(client(&sim, None).await, config(&name)).unwrap();
    let mut back_rx = back.ownership();
    until(
        &mut back_rx,
        Duration::from_secs(5),
        "back and active",
        |o| o.active && names(o).contains(&name),
    )
    .await;
    tokio::time::sleep(LEAVE_GRACE + RETRY * 2).await;
    for rx in rxs.iter().chain(std::iter::once(&back_rx)) {
        assert_eq!(
            rx.borrow().generation(),
            generation,
            "a restart within the grace moves nothing"
        );
    }
    coordinators.push(back);
    rxs.push(back_rx);
    // The coordinator stops and stays away: another coordinates, and after the grace the ring
    // goes on without it.
    let i = coordinators
        .iter()
        .position(|c| c.ownership().borrow().coordinator)
        .unwrap();
    let gone = rxs[i].borrow().member.to_string();
    let stopped = Instant::now();
    coordinators.remove(i).shutdown().await;
    rxs.remove(i);
    tokio::time::sleep(LEAVE_GRACE / 2).await;
    assert!(
        names(&rxs[0].borrow()).contains(&gone),
        "kept within the grace"
    );
    for rx in &mut rxs {
        until(
            rx,
            LEAVE_GRACE * 2 + Duration::from_secs(3),
            "gone after the grace",
            |o| !names(o).contains(&gone) && o.generation() > generation,
        )
        .await;
    }
    let took = stopped.elapsed();
    assert!(took >= LEAVE_GRACE, "not before the grace: {took:?}");
    assert!(
        leases
            .get_opt(&member_lease_name(RING, &gone))
            .await
            .unwrap()
            .is_none(),
        "its Lease is deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_restart_longer_than_the_lease_declares_no_one_dead() {
    let sim = sim().await;
    let (_coordinators, rxs) = ring_of(&sim, &["ringscale-0", "ringscale-1", "ringscale-2"]).await;
    let generation = rxs[0].borrow().generation();
    // Down for twice the lease, then 403 for a renew deadline while the authorizer warms up.
    sim.sim()
        .restart(LEASE * 2, Duration::from_millis(1400))
        .await;
    let mut rxs = rxs;
    for rx in &mut rxs {
        until(rx, Duration::from_secs(10), "active again", |o| o.active).await;
    }
    tokio::time::sleep(LEASE * 2).await;
    for rx in &rxs {
        let o = rx.borrow();
        assert_eq!(
            o.generation(),
            generation,
            "no new ring: nobody was declared dead"
        );
        assert_eq!(names(&o).len(), 3);
        assert!(o.active);
    }
}
