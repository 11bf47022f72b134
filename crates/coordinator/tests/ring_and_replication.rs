//! The ring and replication together on kube-sim: replicas follow the published ring with their
//! replication links, the owner's values reach every replica, and when the owner dies its keys
//! move to a survivor whose records (at the new generation) supersede the dead owner's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use ringscale_cache::RecordKey;
use ringscale_coordinator::{Config, Coordinator, Ownership};
use ringscale_kube_sim::{Config as SimConfig, KubeSim};
use ringscale_replication::{Limits, Peers, ReplicationService, Store, serve};
use ringscale_ring::{Kind, ObjectKey};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

struct Replica {
    name: String,
    store: Arc<Store>,
    ownership: watch::Receiver<Ownership>,
    coordinator: Coordinator,
    tasks: Vec<JoinHandle<()>>,
}

impl Replica {
    async fn start(sim: &KubeSim, name: &str) -> Replica {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let store = Store::new(name);
        let limits = Limits {
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_millis(300),
            ..Limits::default()
        };
        let service = ReplicationService::new(Arc::clone(&store), None, limits.clone());
        let server = tokio::spawn(async move {
            serve(service, listener, None, std::future::pending())
                .await
                .unwrap();
        });
        let peers = Peers::new(Arc::clone(&store), limits, None);
        let config = Config {
            lease_duration: Duration::from_secs(2),
            renew_deadline: Duration::from_millis(1400),
            retry_period: Duration::from_millis(300),
            request_timeout: Duration::from_secs(1),
            ..Config::new("ringscale", "default", name, &address)
        };
        let coordinator = Coordinator::start(client(sim).await, config).unwrap();
        let mut ownership = coordinator.ownership();
        // Follow the ring: stamp the generation on our records, link to every member.
        let follow = {
            let store = Arc::clone(&store);
            let mut rx = ownership.clone();
            tokio::spawn(async move {
                loop {
                    let (generation, members) = {
                        let o = rx.borrow_and_update();
                        (o.generation(), o.ring.members().to_vec())
                    };
                    store.set_generation(generation);
                    peers.set_members(&members);
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            })
        };
        ownership.mark_unchanged();
        Replica {
            name: name.to_owned(),
            store,
            ownership,
            coordinator,
            tasks: vec![server, follow],
        }
    }

    fn kill(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.coordinator.abort();
    }

    /// Polls `object` if this replica owns it: records a value at the current generation.
    fn poll_if_owner(&self, object: &str, value: f64) -> bool {
        let o = self.ownership.borrow().clone();
        if !o.owns(&ObjectKey::new(Kind::ScaledObject, "default", object)) {
            return false;
        }
        self.store.record_poll(
            RecordKey::scaled_object("default", object, "s0-redis-list"),
            value,
            value > 0.0,
            None,
            ringscale_replication::now(),
            Duration::from_secs(30),
        );
        true
    }

    fn value(&self, object: &str) -> Option<(f64, String, u64)> {
        self.store
            .get(&RecordKey::scaled_object(
                "default",
                object,
                "s0-redis-list",
            ))
            .map(|r| (r.value, r.origin.to_string(), r.version.generation))
    }
}

async fn client(sim: &KubeSim) -> Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(sim.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    Client::try_from(config).unwrap()
}

use ringscale_testkit::until as eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_follow_ownership_across_a_failover() {
    let sim = KubeSim::start(SimConfig {
        controllers: false,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut replicas = Vec::new();
    for i in 0..3 {
        replicas.push(Replica::start(&sim, &format!("ringscale-{i}")).await);
    }
    eventually(
        "a ring of three, all active",
        Duration::from_secs(15),
        || {
            replicas.iter().all(|r| {
                let o = r.ownership.borrow();
                o.active && o.ring.members().len() == 3
            })
        },
    )
    .await;

    // Each object is polled by exactly its owner; every replica ends up with every value.
    let objects: Vec<String> = (0..30).map(|i| format!("orders-{i}")).collect();
    for (i, object) in objects.iter().enumerate() {
        let polled = replicas
            .iter()
            .filter(|r| r.poll_if_owner(object, i as f64))
            .count();
        assert_eq!(polled, 1, "{object} has one owner");
    }
    eventually(
        "every replica holds every value",
        Duration::from_secs(10),
        || {
            replicas
                .iter()
                .all(|r| objects.iter().all(|o| r.value(o).is_some()))
        },
    )
    .await;

    // Kill the owner of orders-0; a survivor takes it over at a higher generation.
    let victim = replicas
        .iter()
        .position(|r| {
            r.value("orders-0")
                .is_some_and(|(_, origin, _)| origin == r.name)
        })
        .unwrap();
    let victim_name = replicas[victim].name.clone();
    let old_generation = replicas[0].value("orders-0").unwrap().2;
    replicas.remove(victim).kill();
    eventually(
        "the ring drops the dead owner",
        Duration::from_secs(10),
        || {
            replicas.iter().all(|r| {
                let o = r.ownership.borrow();
                o.ring.members().len() == 2 && o.generation() > old_generation
            })
        },
    )
    .await;
    let pollers: Vec<&Replica> = replicas
        .iter()
        .filter(|r| r.poll_if_owner("orders-0", 99.0))
        .collect();
    assert_eq!(pollers.len(), 1, "one new owner");
    let new_owner = pollers[0].name.clone();
    assert_ne!(new_owner, victim_name);
    // The owner polls again until both hold it, as the operator does every pollingInterval: the
    // store stamps a record with the generation its follow task last set, which may still be
    // the old one right after the ring changed (issue 21, "one source of each truth"), and a
    // record at the old generation does not pass the check below.
    eventually(
        "both survivors hold the new owner's value",
        Duration::from_secs(10),
        || {
            for r in &replicas {
                r.poll_if_owner("orders-0", 99.0);
            }
            replicas.iter().all(|r| {
                r.value("orders-0").is_some_and(|(v, origin, generation)| {
                    v == 99.0 && origin == new_owner && generation > old_generation
                })
            })
        },
    )
    .await;
    for r in replicas {
        r.kill();
    }
}
