//! Mutual TLS between replicas: peers with certificates from the ring's CA replicate; a peer whose
//! certificate another CA signed is refused in both directions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Options, Replica, connect_all, eventually, key, stays};
use ringscale_kube_sim::tls::Authority;
use ringscale_replication::PeerTls;

fn peer_tls(ca: &Authority, name: &str) -> PeerTls {
    let id = ca.issue_peer(name, &["127.0.0.1", "localhost"]).unwrap();
    PeerTls {
        ca_pem: ca.cert_pem.clone(),
        cert_pem: id.cert_pem,
        key_pem: id.key_pem,
        server_name: None,
    }
}

fn with_tls(tls: PeerTls) -> Options {
    Options {
        tls: Some(tls),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_of_one_ca_replicate_and_a_foreign_certificate_is_refused() {
    let ring_ca = Authority::new("ringscale-peers").unwrap();
    let other_ca = Authority::new("someone-else").unwrap();
    let a = Replica::start("ringscale-0", with_tls(peer_tls(&ring_ca, "ringscale-0"))).await;
    let b = Replica::start("ringscale-1", with_tls(peer_tls(&ring_ca, "ringscale-1"))).await;
    // An intruder that trusts the ring's CA but holds a certificate from another CA.
    let mut intruder_tls = peer_tls(&other_ca, "ringscale-2");
    intruder_tls.ca_pem = ring_ca.cert_pem.clone();
    let intruder = Replica::start("ringscale-2", with_tls(intruder_tls)).await;

    a.poll(&key(1), 42.0);
    intruder.poll(&key(2), 666.0);
    connect_all(&[&a, &b, &intruder]);

    eventually(
        "b receives a's record over mutual TLS",
        Duration::from_secs(10),
        || b.value(&key(1)) == Some(42.0),
    )
    .await;
    // Both directions fail: a refuses the intruder's client certificate, and a's client refuses
    // the intruder's server certificate.
    eventually("the intruder's links fail", Duration::from_secs(10), || {
        let to_a = intruder.peers.status();
        let from_a = a.peers.status();
        to_a.iter()
            .any(|l| l.name == "ringscale-0" && l.last_error.is_some())
            && from_a
                .iter()
                .any(|l| l.name == "ringscale-2" && l.last_error.is_some())
    })
    .await;
    stays(
        "nothing crosses to or from the intruder",
        Duration::from_secs(1),
        || {
            intruder.value(&key(1)).is_none()
                && a.value(&key(2)).is_none()
                && b.value(&key(2)).is_none()
        },
    )
    .await;
    let a_view = a.peers.status();
    let link = a_view.iter().find(|l| l.name == "ringscale-2").unwrap();
    assert!(!link.synced);
    let error = link.last_error.clone().unwrap_or_default();
    assert!(
        error.to_lowercase().contains("certificate") || error.contains("UnknownIssuer"),
        "the error names the certificate problem: {error}"
    );
    assert!(!intruder.peers.all_synced());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_peer_cannot_talk_to_a_tls_replica() {
    let ca = Authority::new("ringscale-peers").unwrap();
    let a = Replica::start("ringscale-0", with_tls(peer_tls(&ca, "ringscale-0"))).await;
    let plain = Replica::start("ringscale-1", Options::default()).await;
    a.poll(&key(1), 1.0);
    connect_all(&[&a, &plain]);
    eventually("the plaintext link fails", Duration::from_secs(10), || {
        plain.peers.status().iter().any(|l| l.last_error.is_some())
    })
    .await;
    assert!(plain.value(&key(1)).is_none());
}
