//! ScaledObject and ScaledJob scenarios on kube-sim with its simulated controllers: a
//! metrics-api trigger reads a value the test controls, and the operator scales a Deployment or
//! creates Jobs.
//!
//! kube-sim is a real HTTP API server, so these run on real time, with 1 s polling and short
//! cooldowns; the timing rules themselves are tested with explicit clocks in
//! `semantics::scale`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use ringscale_api::{ScaledJob, ScaledObject};
use ringscale_coordinator::Ownership;
use ringscale_kube_sim::{Config, KubeSim};
use ringscale_operator::{Controller, Settings};
use ringscale_proto::externalscaler as pb;
use ringscale_replication::Store;
use ringscale_ring::{Member, Ring, RingState};
use ringscale_scalers::{Sources, SourcesConfig};
use serde_json::{Value, json};
use tokio::sync::watch;

const NS: &str = "default";

struct Cluster {
    sim: KubeSim,
    client: Client,
}

async fn cluster() -> Cluster {
    cluster_with(Duration::from_secs(5)).await
}

/// A cluster whose simulated Jobs run for `job_duration`.
async fn cluster_with(job_duration: Duration) -> Cluster {
    ringscale_scalers::install_crypto_provider();
    let sim = KubeSim::start(Config {
        workload_delay: Duration::from_millis(50),
        hpa_sync_period: Duration::from_millis(500),
        bookmark_interval: Duration::from_millis(200),
        job_duration,
        ..Config::default()
    })
    .await
    .unwrap();
    let kubeconfig = kube::config::Kubeconfig::from_yaml(sim.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = Client::try_from(config).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in ringscale_api::crds::all() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    Cluster { sim, client }
}

/// A metrics-api endpoint serving `{"value": N}`, N set by the test (negative: HTTP 500).
struct Source {
    addr: SocketAddr,
    value: Arc<AtomicI64>,
}

impl Source {
    async fn start() -> Source {
        let value = Arc::new(AtomicI64::new(0));
        let v = Arc::clone(&value);
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let n = v.load(Ordering::SeqCst);
                async move {
                    if n < 0 {
                        Err(axum::http::StatusCode::INTERNAL_SERVER_ERROR)
                    } else {
                        Ok(axum::Json(json!({"value": n})))
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Source { addr, value }
    }

    fn set(&self, n: i64) {
        self.value.store(n, Ordering::SeqCst);
    }

    fn trigger(&self) -> Value {
        self.trigger_with_target(5)
    }

    fn trigger_with_target(&self, target: i64) -> Value {
        json!({
            "type": "metrics-api",
            "name": "queue",
            "metadata": {
                "url": format!("http://{}/metrics", self.addr),
                "valueLocation": "value",
                "targetValue": target.to_string(),
            }
        })
    }
}

async fn deployment(client: &Client, name: &str, replicas: i32) {
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "worker", "image": "worker:1"}]}
            }
        }
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
}

async fn scaled_object(client: &Client, name: &str, target: &str, spec: Value, annotations: Value) {
    let mut body = json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "scaleTargetRef": {"name": target},
            "pollingInterval": 1,
            "cooldownPeriod": 2,
        }
    });
    if let (Some(base), Value::Object(extra)) = (body["spec"].as_object_mut(), spec) {
        base.extend(extra);
    }
    let so: ScaledObject = serde_json::from_value(body).unwrap();
    Api::<ScaledObject>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &so)
        .await
        .unwrap();
}

fn ownership(members: &[&str], me: &str, generation: u64) -> Ownership {
    let state = RingState::new(
        generation,
        members
            .iter()
            .map(|m| Member {
                name: (*m).to_owned(),
                address: String::new(),
            })
            .collect(),
    );
    Ownership {
        member: Arc::from(me),
        ring: Arc::new(Ring::new(state)),
        active: true,
        coordinator: false,
        valid_until: tokio::sync::watch::channel(None).1,
    }
}

fn controller(
    client: &Client,
    own: watch::Receiver<Ownership>,
    name: &str,
) -> (Controller, Arc<Store>) {
    let records = Store::new(name);
    records.set_generation(own.borrow().generation());
    let c = Controller::start(
        client.clone(),
        own,
        Arc::clone(&records),
        // As the binary builds it: kubernetes-workload triggers list pods through the client.
        Sources::new(SourcesConfig {
            pods: Some(ringscale_scalers::PodLister(Arc::new(
                ringscale_operator::pods::KubePods::new(client.clone()),
            ))),
            ..SourcesConfig::default()
        }),
        Settings {
            first_poll_window: Duration::from_millis(100),
            ..Settings::default()
        },
        std::future::pending(),
    );
    (c, records)
}

use ringscale_testkit::eventually;

/// A controller with its own settings (first polls spread over 100 ms).
fn controller_with(
    client: &Client,
    own: watch::Receiver<Ownership>,
    name: &str,
    settings: Settings,
) -> (Controller, Arc<Store>) {
    let records = Store::new(name);
    records.set_generation(own.borrow().generation());
    let c = Controller::start(
        client.clone(),
        own,
        Arc::clone(&records),
        Sources::new(SourcesConfig::default()),
        Settings {
            first_poll_window: Duration::from_millis(100),
            ..settings
        },
        std::future::pending(),
    );
    (c, records)
}

async fn replicas(client: &Client, name: &str) -> i32 {
    Api::<Deployment>::namespaced(client.clone(), NS)
        .get(name)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.replicas)
        .unwrap_or(-1)
}

async fn so_status(client: &Client, name: &str) -> Value {
    let so = Api::<ScaledObject>::namespaced(client.clone(), NS)
        .get(name)
        .await
        .unwrap();
    serde_json::to_value(so.status.unwrap_or_default()).unwrap()
}

fn condition(status: &Value, type_: &str) -> (String, String) {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .unwrap_or_default()
}

async fn wait_replicas(client: &Client, name: &str, want: i32, within: Duration) {
    eventually(within, &format!("{name} at {want} replicas"), || async {
        (replicas(client, name).await == want).then_some(())
    })
    .await;
}

const WITHIN: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_then_deactivation_after_the_cooldown() {
    let c = cluster().await;
    let source = Source::start().await;
    deployment(&c.client, "worker", 0).await;
    scaled_object(
        &c.client,
        "orders",
        "worker",
        json!({"triggers": [source.trigger()]}),
        json!({}),
    )
    .await;
    let (_tx, rx) = watch::channel(ownership(&["r0"], "r0", 1));
    let (ctl, records) = controller(&c.client, rx, "r0");

    // Inactive: stays at zero; the HPA exists with KEDA's metric, selector and bounds.
    let hpa = eventually(WITHIN, "the HPA", || async {
        Api::<HorizontalPodAutoscaler>::namespaced(c.client.clone(), NS)
            .get_opt("keda-hpa-orders")
            .await
            .unwrap()
    })
    .await;
    let spec = serde_json::to_value(hpa.spec.unwrap()).unwrap();
    assert_eq!(spec["minReplicas"], 1);
    assert_eq!(spec["maxReplicas"], 100);
    assert_eq!(
        spec["metrics"][0]["external"]["metric"]["name"],
        "s0-metric-api-value"
    );
    assert_eq!(
        spec["metrics"][0]["external"]["metric"]["selector"]["matchLabels"]["scaledobject.keda.sh/name"],
        "orders"
    );
    assert_eq!(
        spec["metrics"][0]["external"]["target"]["averageValue"],
        "5"
    );
    assert_eq!(
        hpa.metadata.owner_references.unwrap()[0].kind,
        "ScaledObject"
    );
    let status = eventually(WITHIN, "a Ready status", || async {
        let s = so_status(&c.client, "orders").await;
        (condition(&s, "Ready").0 == "True").then_some(s)
    })
    .await;
    assert_eq!(
        condition(&status, "Active"),
        ("False".into(), "ScalerNotActive".into())
    );
    assert_eq!(
        status["externalMetricNames"],
        json!(["s0-metric-api-value"])
    );
    assert_eq!(status["hpaName"], "keda-hpa-orders");
    assert_eq!(status["originalReplicaCount"], 0);
    assert_eq!(replicas(&c.client, "worker").await, 0);

    // Active: 0 → 1, lastActiveTime set, value in the replicated store.
    source.set(12);
    wait_replicas(&c.client, "worker", 1, WITHIN).await;
    let status = eventually(WITHIN, "Active=True", || async {
        let s = so_status(&c.client, "orders").await;
        (condition(&s, "Active").0 == "True").then_some(s)
    })
    .await;
    assert!(status["lastActiveTime"].is_string());
    let record = records
        .get(&ringscale_cache::RecordKey::scaled_object(
            NS,
            "orders",
            "s0-metric-api-value",
        ))
        .unwrap();
    assert_eq!(record.value, 12.0);
    assert!(record.active);

    // Inactive again: held through the 2 s cooldown, then 1 → 0.
    source.set(0);
    let went_inactive = tokio::time::Instant::now();
    eventually(WITHIN, "the cooldown", || async {
        let s = so_status(&c.client, "orders").await;
        (condition(&s, "Active") == ("False".into(), "ScalerCooldown".into())).then_some(())
    })
    .await;
    assert_eq!(
        replicas(&c.client, "worker").await,
        1,
        "still up during the cooldown"
    );
    wait_replicas(&c.client, "worker", 0, WITHIN).await;
    assert!(
        went_inactive.elapsed() >= Duration::from_secs(1),
        "scaled in before the cooldown"
    );
    // The operator counts a write when its answer arrives, which can be just after the test
    // sees the new replica count.
    eventually(WITHIN, "both scale writes counted", || async {
        (ctl.stats.scale_writes.load(Ordering::Relaxed) >= 2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_workload_trigger_scales_with_the_pods_it_selects() {
    let c = cluster().await;
    deployment(&c.client, "consumer", 0).await;
    scaled_object(
        &c.client,
        "by-pods",
        "consumer",
        json!({"triggers": [{
            "type": "kubernetes-workload",
            "metadata": {"podSelector": "app=producer", "value": "2"}
        }]}),
        json!({}),
    )
    .await;
    let (_tx, rx) = watch::channel(ownership(&["r0"], "r0", 1));
    let (_ctl, records) = controller(&c.client, rx, "r0");
    let status = eventually(WITHIN, "a Ready status", || async {
        let s = so_status(&c.client, "by-pods").await;
        (condition(&s, "Ready").0 == "True").then_some(s)
    })
    .await;
    assert_eq!(
        status["externalMetricNames"],
        json!(["s0-workload-default"])
    );
    assert_eq!(replicas(&c.client, "consumer").await, 0);

    // A producer pod appears: active, 0 → 1, its count replicated.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(c.client.clone(), NS);
    let pod = serde_json::from_value(json!({
        "metadata": {"name": "producer-1", "labels": {"app": "producer"}},
        "spec": {"containers": [{"name": "p", "image": "producer:1"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_replicas(&c.client, "consumer", 1, WITHIN).await;
    let key = ringscale_cache::RecordKey::scaled_object(NS, "by-pods", "s0-workload-default");
    assert_eq!(records.get(&key).map(|r| r.value), Some(1.0));

    // It finishes: not counted, inactive, back to 0 after the cooldown.
    pods.patch_status(
        "producer-1",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
    )
    .await
    .unwrap();
    wait_replicas(&c.client, "consumer", 0, WITHIN).await;
    assert_eq!(records.get(&key).map(|r| r.value), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_scaled_object_reports_why_while_its_neighbour_scales() {
    let c = cluster().await;
    let source = Source::start().await;
    deployment(&c.client, "good", 0).await;
    deployment(&c.client, "bad", 0).await;
    scaled_object(
        &c.client,
        "good",
        "good",
        json!({"triggers": [source.trigger()]}),
        json!({}),
    )
    .await;
    // No url: the trigger cannot be built.
    scaled_object(
        &c.client,
        "bad",
        "bad",
        json!({"triggers": [{"type": "metrics-api", "metadata": {"valueLocation": "value", "targetValue": "5"}}]}),
        json!({}),
    )
    .await;
    let (_tx, rx) = watch::channel(ownership(&["r0"], "r0", 1));
    let _ctl = controller(&c.client, rx, "r0");
    source.set(7);
    wait_replicas(&c.client, "good", 1, WITHIN).await;
    let status = eventually(WITHIN, "the broken object's status", || async {
        let s = so_status(&c.client, "bad").await;
        (condition(&s, "Ready").0 == "False").then_some(s)
    })
    .await;
    assert_eq!(condition(&status, "Ready").1, "ScaledObjectCheckFailed");
    let message = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("url"),
        "the reason names the parameter: {message}"
    );
    assert_eq!(replicas(&c.client, "bad").await, 0);
    assert!(
        Api::<HorizontalPodAutoscaler>::namespaced(c.client.clone(), NS)
            .get_opt("keda-hpa-bad")
            .await
            .unwrap()
            .is_none(),
        "no HPA for a broken object"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_replicas_holds_the_target_and_removes_the_hpa() {
    let c = cluster().await;
    let source = Source::start().await;
    deployment(&c.client, "worker", 0).await;
    scaled_object(
        &c.client,
        "orders",
        "worker",
        json!({"triggers": [source.trigger()]}),
        json!({}),
    )
    .await;
    let (_tx, rx) = watch::channel(ownership(&["r0"], "r0", 1));
    let _ctl = controller(&c.client, rx, "r0");
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(c.client.clone(), NS);
    eventually(WITHIN, "the HPA", || async {
        hpas.get_opt("keda-hpa-orders").await.unwrap()
    })
    .await;

    let sos = Api::<ScaledObject>::namespaced(c.client.clone(), NS);
    sos.patch(
        "orders",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {"autoscaling.keda.sh/paused-replicas": "3"}}}),
        ),
    )
    .await
    .unwrap();
    wait_replicas(&c.client, "worker", 3, WITHIN).await;
    eventually(WITHIN, "the HPA to go", || async {
        hpas.get_opt("keda-hpa-orders")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let status = eventually(WITHIN, "Paused=True", || async {
        let s = so_status(&c.client, "orders").await;
        (condition(&s, "Paused").0 == "True").then_some(s)
    })
    .await;
    assert_eq!(status["pausedReplicaCount"], 3);
    // A source change does nothing while paused.
    source.set(50);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(replicas(&c.client, "worker").await, 3);

    // Unpaused: the HPA comes back and the condition flips.
    sos.patch(
        "orders",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {"autoscaling.keda.sh/paused-replicas": null}}}),
        ),
    )
    .await
    .unwrap();
    eventually(WITHIN, "the HPA back", || async {
        hpas.get_opt("keda-hpa-orders").await.unwrap()
    })
    .await;
    eventually(WITHIN, "Paused=False", || async {
        let s = so_status(&c.client, "orders").await;
        (condition(&s, "Paused") == ("False".into(), "ScaledObjectUnpaused".into())).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_restores_the_original_replica_count() {
    let c = cluster().await;
    let source = Source::start().await;
    deployment(&c.client, "worker", 2).await;
    scaled_object(
        &c.client,
        "orders",
        "worker",
        json!({"triggers": [source.trigger()], "advanced": {"restoreToOriginalReplicaCount": true}}),
        json!({}),
    )
    .await;
    let (_tx, rx) = watch::channel(ownership(&["r0"], "r0", 1));
    let _ctl = controller(&c.client, rx, "r0");
    // Inactive with min 0: scaled in after the cooldown (never active: initial cooldown 0).
    wait_replicas(&c.client, "worker", 0, WITHIN).await;
    // The status is written after the scale, in the same cycle.
    let original = eventually(WITHIN, "originalReplicaCount in the status", || async {
        let status = so_status(&c.client, "orders").await;
        (!status["originalReplicaCount"].is_null()).then(|| status["originalReplicaCount"].clone())
    })
    .await;
    assert_eq!(original, 2);

    Api::<ScaledObject>::namespaced(c.client.clone(), NS)
        .delete("orders", &DeleteParams::default())
        .await
        .unwrap();
    wait_replicas(&c.client, "worker", 2, WITHIN).await;
    eventually(
        WITHIN,
        "the ScaledObject to go (finalizer removed)",
        || async {
            Api::<ScaledObject>::namespaced(c.client.clone(), NS)
                .get_opt("orders")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert!(
        Api::<HorizontalPodAutoscaler>::namespaced(c.client.clone(), NS)
            .get_opt("keda-hpa-orders")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handover_in_the_cooldown_keeps_the_cooldown_and_fences_the_old_owner() {
    let c = cluster().await;
    let source = Source::start().await;
    deployment(&c.client, "worker", 0).await;
    scaled_object(
        &c.client,
        "orders",
        "worker",
        json!({"triggers": [source.trigger()], "cooldownPeriod": 4}),
        json!({}),
    )
    .await;
    // Find which of two members owns "orders", and start with only that member in the ring.
    let two = ownership(&["r0", "r1"], "r0", 1);
    let key = ringscale_ring::ObjectKey::new(ringscale_ring::Kind::ScaledObject, NS, "orders");
    let first = two.owner(&key).unwrap().name.clone();
    let second = if first == "r0" { "r1" } else { "r0" };
    let (tx_a, rx_a) = watch::channel(ownership(&[&first], &first, 1));
    let (ctl_a, _) = controller(&c.client, rx_a, &first);

    source.set(9);
    wait_replicas(&c.client, "worker", 1, WITHIN).await;
    let active_at = eventually(WITHIN, "lastActiveTime", || async {
        let s = so_status(&c.client, "orders").await;
        s["lastActiveTime"].as_str().map(str::to_owned)
    })
    .await;
    source.set(0);
    eventually(WITHIN, "the cooldown", || async {
        let s = so_status(&c.client, "orders").await;
        (condition(&s, "Active").1 == "ScalerCooldown").then_some(())
    })
    .await;

    // Handover: the second member takes the object at generation 2. The first has not seen the
    // new ring yet (its channel is left at generation 1) and keeps polling.
    let (_tx_b, rx_b) = watch::channel(ownership(&[second], second, 2));
    let (_ctl_b, _) = controller(&c.client, rx_b, second);
    eventually(WITHIN, "the new owner's stamp", || async {
        let so = Api::<ScaledObject>::namespaced(c.client.clone(), NS)
            .get("orders")
            .await
            .unwrap();
        (so.metadata
            .annotations
            .unwrap_or_default()
            .get("ringscale.io/owner-generation")
            .map(String::as_str)
            == Some("2"))
        .then_some(())
    })
    .await;
    // The cooldown continues from lastActiveTime (not reset by the handover): scale-in comes
    // within the original 4 s window plus polling, and lastActiveTime is unchanged.
    wait_replicas(&c.client, "worker", 0, WITHIN).await;
    let status = so_status(&c.client, "orders").await;
    assert_eq!(status["lastActiveTime"].as_str(), Some(active_at.as_str()));
    // The old owner's writes were refused from the stamp on.
    eventually(WITHIN, "the old owner fenced", || async {
        (ctl_a.stats.fenced.load(Ordering::Relaxed) > 0).then_some(())
    })
    .await;
    drop(tx_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_polls_without_writing_and_stamps_only_before_a_write() {
    const N: usize = 6;
    let c = cluster().await;
    let source = Source::start().await;
    source.set(20);
    let names: Vec<String> = (0..N).map(|i| format!("o{i}")).collect();
    for name in &names {
        deployment(&c.client, name, 0).await;
        scaled_object(
            &c.client,
            name,
            name,
            json!({"triggers": [source.trigger()]}),
            json!({}),
        )
        .await;
    }
    let sos = Api::<ScaledObject>::namespaced(c.client.clone(), NS);
    let stamp = |so: &ScaledObject| {
        let a = so.metadata.annotations.clone().unwrap_or_default();
        (
            a.get("ringscale.io/owner").cloned(),
            a.get("ringscale.io/owner-generation").cloned(),
        )
    };
    // r0 takes every object at generation 1: finalizer, label and stamp in one write each,
    // scales them 0 → 1 and settles.
    let (_tx_a, rx_a) = watch::channel(ownership(&["r0"], "r0", 1));
    let (ctl_a, _) = controller(&c.client, rx_a, "r0");
    for name in &names {
        wait_replicas(&c.client, name, 1, WITHIN).await;
        eventually(WITHIN, "Active=True and the HPA", || async {
            let s = so_status(&c.client, name).await;
            let hpa = Api::<HorizontalPodAutoscaler>::namespaced(c.client.clone(), NS)
                .get_opt(&format!("keda-hpa-{name}"))
                .await
                .unwrap();
            (condition(&s, "Active").0 == "True" && hpa.is_some()).then_some(())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for name in &names {
        let so = sos.get(name).await.unwrap();
        assert_eq!(stamp(&so), (Some("r0".into()), Some("1".into())), "{name}");
    }
    // r0 dies; r1 takes every object over at generation 2.
    ctl_a.abort();
    drop(ctl_a);
    let before: Vec<String> = {
        let mut v = Vec::new();
        for name in &names {
            v.push(
                sos.get(name)
                    .await
                    .unwrap()
                    .metadata
                    .resource_version
                    .unwrap(),
            );
        }
        v
    };
    let (_tx_b, rx_b) = watch::channel(ownership(&["r1"], "r1", 2));
    let (ctl_b, records_b) = controller(&c.client, rx_b, "r1");
    // Every object polled by r1 at generation 2 ...
    for name in &names {
        let key = ringscale_cache::RecordKey::scaled_object(NS, name, "s0-metric-api-value");
        eventually(WITHIN, "a poll by the new owner", || async {
            records_b
                .get(&key)
                .is_some_and(|r| r.version.generation == 2 && r.value == 20.0)
                .then_some(())
        })
        .await;
    }
    // ... and a few polls more, with no write at all: nothing changed, so nothing is stamped.
    let cycles = ctl_b.stats.cycles.load(Ordering::Relaxed);
    eventually(WITHIN, "three more polls of each object", || async {
        (ctl_b.stats.cycles.load(Ordering::Relaxed) >= cycles + 3 * N as u64).then_some(())
    })
    .await;
    assert_eq!(
        (
            ctl_b.stats.writes(),
            ctl_b.stats.stamps.load(Ordering::Relaxed)
        ),
        (0, 0),
        "a takeover of {N} quiet objects wrote"
    );
    for (name, version) in names.iter().zip(&before) {
        let so = sos.get(name).await.unwrap();
        assert_eq!(
            so.metadata.resource_version.as_ref(),
            Some(version),
            "{name}"
        );
        assert_eq!(stamp(&so), (Some("r0".into()), Some("1".into())), "{name}");
    }
    // The queues empty: the first write r1 makes for each object is preceded by its stamp (one
    // each), then the status and, after the cooldown, the scale to 0.
    source.set(0);
    for name in &names {
        wait_replicas(&c.client, name, 0, WITHIN).await;
        let so = sos.get(name).await.unwrap();
        assert_eq!(stamp(&so), (Some("r1".into()), Some("2".into())), "{name}");
    }
    assert_eq!(ctl_b.stats.stamps.load(Ordering::Relaxed), N as u64);
    assert_eq!(ctl_b.stats.meta_writes.load(Ordering::Relaxed), 0);
    assert!(ctl_b.stats.scale_writes.load(Ordering::Relaxed) >= N as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_source_holds_only_its_share_of_the_cycle_slots() {
    let c = cluster().await;
    // 16 objects on a source that answers after 3 s, 3 on one that answers at once; 8 cycle
    // slots, at most 4 per source. Without the per-source cap the slow polls hold all 8 slots
    // and the fast objects wait up to 3 s for each poll.
    let slow_app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            axum::Json(json!({"value": 1}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, slow_app).await.unwrap() });
    let fast = Source::start().await;
    fast.set(1);
    let slow_trigger = json!({
        "type": "metrics-api",
        "metadata": {
            "url": format!("http://{slow_addr}/metrics"),
            "valueLocation": "value",
            "targetValue": "5",
        }
    });
    for i in 0..16 {
        let name = format!("slow-{i}");
        deployment(&c.client, &name, 1).await;
        scaled_object(
            &c.client,
            &name,
            &name,
            json!({"triggers": [slow_trigger]}),
            json!({}),
        )
        .await;
    }
    let fast_names: Vec<String> = (0..3).map(|i| format!("fast-{i}")).collect();
    for name in &fast_names {
        deployment(&c.client, name, 1).await;
        scaled_object(
            &c.client,
            name,
            name,
            json!({"triggers": [fast.trigger()]}),
            json!({}),
        )
        .await;
    }
    let (_tx, rx) = watch::channel(ownership(&["r0"], "r0", 1));
    let (ctl, records) = controller_with(
        &c.client,
        rx,
        "r0",
        Settings {
            max_concurrent_cycles: 8,
            max_cycles_per_source: 4,
            ..Settings::default()
        },
    );
    // Every object polled once: from then on each poll waits with the sources it called.
    let key =
        |name: &str| ringscale_cache::RecordKey::scaled_object(NS, name, "s0-metric-api-value");
    for i in 0..16 {
        let k = key(&format!("slow-{i}"));
        eventually(Duration::from_secs(30), "a first slow poll", || async {
            records.get(&k).map(|_| ())
        })
        .await;
    }
    // Until every object has been polled once, all of them wait in one group (their sources are
    // not known yet), so the fast ones may have waited behind the slow ones' first polls: start
    // watching once each fast value is fresh.
    for name in &fast_names {
        let k = key(name);
        eventually(Duration::from_secs(30), "a fresh fast value", || async {
            records
                .get(&k)
                .filter(|r| r.polled_at.elapsed() < Duration::from_millis(500))
                .map(|_| ())
        })
        .await;
    }
    // Over 6 s the fast objects are polled every second, as if the slow source were not there.
    let watched = tokio::time::Instant::now();
    let mut oldest = Duration::ZERO;
    while watched.elapsed() < Duration::from_secs(6) {
        for name in &fast_names {
            let age = records
                .get(&key(name))
                .map_or(Duration::MAX, |r| r.polled_at.elapsed());
            oldest = oldest.max(age);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        oldest < Duration::from_millis(1600),
        "a fast object's value grew {oldest:?} old (pollingInterval 1 s)"
    );
    // The slow objects are still polled, four at a time: their own lag shows it.
    assert!(ctl.stats.cycles.load(Ordering::Relaxed) > 16 + 3 * 6);
}

/// A client that authenticates as `user`: its requests show under that name in the request log.
async fn client_as(c: &Cluster, user: &str) -> Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&c.sim.add_user(user, &[])).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    Client::try_from(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rings_with_disjoint_scopes_never_touch_each_others_objects() {
    use ringscale_operator::scope::Scope;
    let c = cluster().await;
    let source = Source::start().await;
    source.set(7);
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": "team-b"}})).unwrap();
    Api::all(c.client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    // (namespace, name, tier): the gold ring watches the default namespace's gold objects, the
    // silver ring both namespaces' silver objects; team-b/gold-b is in neither ring's scope.
    let objects = [
        ("default", "gold-a", "gold"),
        ("default", "silver-a", "silver"),
        ("team-b", "gold-b", "gold"),
        ("team-b", "silver-b", "silver"),
    ];
    for (namespace, name, tier) in objects {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "w", "image": "w:1"}]}}}
        }))
        .unwrap();
        Api::<Deployment>::namespaced(c.client.clone(), namespace)
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
        let so: ScaledObject = serde_json::from_value(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": name, "labels": {"tier": tier}},
            "spec": {"scaleTargetRef": {"name": name}, "pollingInterval": 1,
                     "triggers": [source.trigger()]}
        }))
        .unwrap();
        Api::<ScaledObject>::namespaced(c.client.clone(), namespace)
            .create(&PostParams::default(), &so)
            .await
            .unwrap();
    }
    let user = |name: &str| format!("system:serviceaccount:ringscale:{name}");
    let rings = [
        ("gold-0", Scope::new(["default".to_owned()], "tier=gold")),
        (
            "silver-0",
            Scope::new(["default".to_owned(), "team-b".to_owned()], "tier=silver"),
        ),
    ];
    let mut running = Vec::new();
    for (member, scope) in rings {
        let client = client_as(&c, &user(member)).await;
        let (tx, rx) = watch::channel(ownership(&[member], member, 1));
        let (ctl, records) = controller_with(
            &client,
            rx,
            member,
            Settings {
                scope,
                ..Settings::default()
            },
        );
        running.push((tx, ctl, records));
    }
    // Each ring scales its own objects 0 → 1 ...
    for (namespace, name) in [
        ("default", "gold-a"),
        ("default", "silver-a"),
        ("team-b", "silver-b"),
    ] {
        eventually(WITHIN, "the target scaled to 1", || async {
            let d = Api::<Deployment>::namespaced(c.client.clone(), namespace)
                .get(name)
                .await
                .unwrap();
            (d.spec.and_then(|s| s.replicas) == Some(1)).then_some(())
        })
        .await;
    }
    // ... and keeps polling them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The object in no ring's scope is untouched.
    let gold_b = Api::<ScaledObject>::namespaced(c.client.clone(), "team-b")
        .get("gold-b")
        .await
        .unwrap();
    assert!(
        gold_b.metadata.finalizers.is_none(),
        "{:?}",
        gold_b.metadata
    );
    assert!(gold_b.status.is_none());
    let target = Api::<Deployment>::namespaced(c.client.clone(), "team-b")
        .get("gold-b")
        .await
        .unwrap();
    assert_eq!(target.spec.and_then(|s| s.replicas), Some(0));
    // Each ring's records hold its own objects only.
    let held = |records: &Store| {
        let mut names: Vec<String> = records.with_cache(|cache| {
            cache
                .iter()
                .map(|(key, _)| format!("{}/{}", key.object.namespace, key.object.name))
                .collect()
        });
        names.sort();
        names
    };
    assert_eq!(held(&running[0].2), ["default/gold-a"]);
    assert_eq!(held(&running[1].2), ["default/silver-a", "team-b/silver-b"]);
    // The request log: each ring wrote only its own objects (ScaledObjects, targets, HPAs), and
    // read only in its namespaces (and the cluster object namespace, for the Secrets of
    // ClusterTriggerAuthentications) — what Roles in those namespaces grant.
    let log = c.sim.sim().stats.log();
    for (member, own, namespaces) in [
        ("gold-0", vec!["gold-a"], vec!["default", "keda"]),
        (
            "silver-0",
            vec!["silver-a", "silver-b"],
            vec!["default", "team-b", "keda"],
        ),
    ] {
        let mine: Vec<_> = log.iter().filter(|r| r.user == user(member)).collect();
        let writes = mine
            .iter()
            .filter(|r| matches!(r.verb.as_str(), "create" | "update" | "patch" | "delete"))
            .filter(|r| {
                matches!(
                    r.resource.as_str(),
                    "scaledobjects" | "deployments" | "horizontalpodautoscalers"
                )
            })
            .inspect(|r| {
                // A create names no object in its URL (its namespace is checked below).
                if let Some(name) = r.name.as_deref() {
                    let name = name.strip_prefix("keda-hpa-").unwrap_or(name);
                    assert!(own.contains(&name), "{member} wrote {r:?}");
                }
            })
            .count();
        assert!(writes >= 3 * own.len(), "{member}: {writes} writes");
        for r in &mine {
            match &r.namespace {
                Some(ns) => assert!(namespaces.contains(&ns.as_str()), "{member}: {r:?}"),
                None => assert!(
                    r.resource.is_empty() || r.resource == "clustertriggerauthentications",
                    "{member} asked the whole cluster: {r:?}"
                ),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_of_an_active_object_counts_the_cooldown_from_its_first_poll() {
    let c = cluster().await;
    let source = Source::start().await;
    deployment(&c.client, "worker", 0).await;
    scaled_object(
        &c.client,
        "orders",
        "worker",
        json!({"triggers": [source.trigger()], "cooldownPeriod": 3}),
        json!({}),
    )
    .await;
    let (tx_a, rx_a) = watch::channel(ownership(&["r0"], "r0", 1));
    let (_ctl_a, _) = controller(&c.client, rx_a, "r0");
    source.set(9);
    wait_replicas(&c.client, "worker", 1, WITHIN).await;
    eventually(WITHIN, "Active=True", || async {
        let s = so_status(&c.client, "orders").await;
        (condition(&s, "Active").0 == "True").then_some(())
    })
    .await;
    // Active for longer than the cooldown: the status's lastActiveTime is the activation, more
    // than a cooldown ago. Then the owner is replaced (generation 2, another member) just as
    // the queue empties; the old one is fenced by the new owner's stamp.
    tokio::time::sleep(Duration::from_secs(4)).await;
    source.set(0);
    let handed_over = tokio::time::Instant::now();
    let (_tx_b, rx_b) = watch::channel(ownership(&["r1"], "r1", 2));
    let (_ctl_b, _) = controller(&c.client, rx_b, "r1");
    wait_replicas(&c.client, "worker", 0, WITHIN).await;
    // The new owner never saw it active: the 3 s cooldown runs from its first poll, not from
    // the old lastActiveTime (which would scale in at once).
    assert!(
        handed_over.elapsed() >= Duration::from_millis(2500),
        "scaled in {:?} after the handover",
        handed_over.elapsed()
    );
    drop(tx_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_active_object_writes_almost_nothing() {
    let c = cluster().await;
    let source = Source::start().await;
    deployment(&c.client, "worker", 0).await;
    scaled_object(
        &c.client,
        "orders",
        "worker",
        json!({"triggers": [source.trigger()]}),
        json!({}),
    )
    .await;
    source.set(20);
    let (_tx, rx) = watch::channel(ownership(&["r0"], "r0", 1));
    let (ctl, _) = controller(&c.client, rx, "r0");
    wait_replicas(&c.client, "worker", 1, WITHIN).await;
    eventually(WITHIN, "Active=True", || async {
        let s = so_status(&c.client, "orders").await;
        (condition(&s, "Active").0 == "True").then_some(())
    })
    .await;
    // Let it settle, then count writes over 5 polls while nothing changes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes = ctl.stats.writes();
    let cycles = ctl.stats.cycles.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let polls = ctl.stats.cycles.load(Ordering::Relaxed) - cycles;
    let new_writes = ctl.stats.writes() - writes;
    assert!(polls >= 4, "{polls} polls");
    assert_eq!(
        new_writes, 0,
        "{new_writes} writes in {polls} steady polls (KEDA: one per poll)"
    );

    // What Prometheus scrapes, under KEDA's names.
    let mut registry = prometheus_client::registry::Registry::default();
    ctl.metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let labels = r#"namespace="default",metric="s0-metric-api-value",scaledObject="orders",scaler="metrics-api",triggerIndex="0",type="scaledobject""#;
    for want in [
        format!("keda_scaler_metrics_value{{{labels}}} 20.0"),
        format!("keda_scaler_active{{{labels}}} 1.0"),
        r#"keda_scaled_object_paused{namespace="default",scaledObject="orders"} 0"#.to_owned(),
        r#"ringscale_owned_objects{kind="scaledobject"} 1"#.to_owned(),
        r#"keda_internal_scale_loop_latency_seconds{namespace="default",type="scaledobject",resource="orders"}"#.to_owned(),
    ] {
        assert!(text.contains(&want), "no {want} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_source_engages_fallback_and_holds_the_target() {
    let c = cluster().await;
    let source = Source::start().await;
    deployment(&c.client, "worker", 0).await;
    scaled_object(
        &c.client,
        "orders",
        "worker",
        json!({"triggers": [source.trigger()], "fallback": {"failureThreshold": 2, "replicas": 4}}),
        json!({}),
    )
    .await;
    source.set(9);
    let (_tx, rx) = watch::channel(ownership(&["r0"], "r0", 1));
    let _ctl = controller(&c.client, rx, "r0");
    wait_replicas(&c.client, "worker", 1, WITHIN).await;

    // The source fails: failures are counted per metric, and past the threshold the Fallback
    // condition turns True; the target is not scaled in (the HPA applies the fallback).
    source.set(-1);
    let status = eventually(WITHIN, "Fallback=True", || async {
        let s = so_status(&c.client, "orders").await;
        (condition(&s, "Fallback") == ("True".into(), "FallbackExists".into())).then_some(s)
    })
    .await;
    let health = &status["health"]["s0-metric-api-value"];
    assert_eq!(health["status"], "Failing");
    assert!(health["numberOfFailures"].as_i64().unwrap() > 2, "{health}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        replicas(&c.client, "worker").await,
        1,
        "no scale-in while falling back"
    );

    // Recovery resets the count.
    source.set(9);
    eventually(WITHIN, "Fallback=False", || async {
        let s = so_status(&c.client, "orders").await;
        (condition(&s, "Fallback") == ("False".into(), "NoFallbackFound".into())
            && s["health"]["s0-metric-api-value"]["status"] == "Happy")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_activation_and_paused_scale_out() {
    let c = cluster().await;
    let source = Source::start().await;
    deployment(&c.client, "forced", 0).await;
    deployment(&c.client, "held", 0).await;
    // The source reads 0 (inactive), but force-activation makes it active.
    scaled_object(
        &c.client,
        "forced",
        "forced",
        json!({"triggers": [source.trigger()]}),
        json!({"autoscaling.keda.sh/force-activation": "true"}),
    )
    .await;
    // Active source, but scaling out is paused: no 0 → 1, and the HPA's scaleUp is disabled.
    let active = Source::start().await;
    active.set(30);
    scaled_object(
        &c.client,
        "held",
        "held",
        json!({"triggers": [active.trigger()]}),
        json!({"autoscaling.keda.sh/paused-scale-out": "true"}),
    )
    .await;
    let (_tx, rx) = watch::channel(ownership(&["r0"], "r0", 1));
    let _ctl = controller(&c.client, rx, "r0");
    wait_replicas(&c.client, "forced", 1, WITHIN).await;
    let hpa = eventually(WITHIN, "the held object's HPA", || async {
        Api::<HorizontalPodAutoscaler>::namespaced(c.client.clone(), NS)
            .get_opt("keda-hpa-held")
            .await
            .unwrap()
    })
    .await;
    let spec = serde_json::to_value(hpa.spec.unwrap()).unwrap();
    assert_eq!(spec["behavior"]["scaleUp"]["selectPolicy"], "Disabled");
    let status = eventually(WITHIN, "Paused=True on the held object", || async {
        let s = so_status(&c.client, "held").await;
        (condition(&s, "Paused").0 == "True" && condition(&s, "Active").0 == "True").then_some(s)
    })
    .await;
    assert_eq!(condition(&status, "Paused").1, "ScaledObjectPaused");
    assert_eq!(
        replicas(&c.client, "held").await,
        0,
        "scale-out paused: stays at 0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_modifiers_drive_one_composite_metric() {
    let c = cluster().await;
    let a = Source::start().await;
    let b = Source::start().await;
    deployment(&c.client, "worker", 0).await;
    let mut ta = a.trigger();
    ta["name"] = json!("a");
    let mut tb = b.trigger();
    tb["name"] = json!("b");
    scaled_object(
        &c.client,
        "orders",
        "worker",
        json!({
            "triggers": [ta, tb],
            "advanced": {"scalingModifiers": {"formula": "a + b", "target": "4", "activationTarget": "5"}}
        }),
        json!({}),
    )
    .await;
    a.set(2);
    b.set(2);
    let (_tx, rx) = watch::channel(ownership(&["r0"], "r0", 1));
    let (_ctl, records) = controller(&c.client, rx, "r0");
    let hpa = eventually(WITHIN, "the HPA", || async {
        Api::<HorizontalPodAutoscaler>::namespaced(c.client.clone(), NS)
            .get_opt("keda-hpa-orders")
            .await
            .unwrap()
    })
    .await;
    let spec = serde_json::to_value(hpa.spec.unwrap()).unwrap();
    assert_eq!(spec["metrics"].as_array().unwrap().len(), 1);
    assert_eq!(
        spec["metrics"][0]["external"]["metric"]["name"],
        "composite-metric"
    );
    assert_eq!(
        spec["metrics"][0]["external"]["target"]["averageValue"],
        "4"
    );
    // 2 + 2 = 4 is not above the activation target 5: inactive.
    eventually(WITHIN, "the composite value", || async {
        records
            .get(&ringscale_cache::RecordKey::scaled_object(
                NS,
                "orders",
                "composite-metric",
            ))
            .filter(|r| r.value == 4.0 && !r.active)
            .map(|_| ())
    })
    .await;
    assert_eq!(replicas(&c.client, "worker").await, 0);
    // 2 + 4 = 6 > 5: active, 0 → 1.
    b.set(4);
    wait_replicas(&c.client, "worker", 1, WITHIN).await;
    let status = so_status(&c.client, "orders").await;
    // As KEDA writes them: the triggers' metrics, and the composite one apart.
    assert_eq!(
        status["externalMetricNames"],
        json!(["s0-metric-api-value", "s1-metric-api-value"])
    );
    assert_eq!(status["compositeScalerName"], "composite-metric");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimum_initial_cooldown_and_idle_replicas() {
    let c = cluster().await;
    let quiet = Source::start().await;
    let busy = Source::start().await;
    busy.set(8);
    deployment(&c.client, "min", 0).await;
    deployment(&c.client, "fresh", 3).await;
    deployment(&c.client, "idle", 0).await;
    // Inactive but below its minimum: raised to the minimum.
    scaled_object(
        &c.client,
        "min",
        "min",
        json!({"triggers": [quiet.trigger()], "minReplicaCount": 2, "maxReplicaCount": 4}),
        json!({}),
    )
    .await;
    // Never active: kept for the initial cooldown (4 s from creation), then scaled in.
    scaled_object(
        &c.client,
        "fresh",
        "fresh",
        json!({"triggers": [quiet.trigger()], "initialCooldownPeriod": 4, "cooldownPeriod": 1}),
        json!({}),
    )
    .await;
    let created = tokio::time::Instant::now();
    // Idle mode: active jumps from idle straight to the minimum.
    scaled_object(
        &c.client,
        "idle",
        "idle",
        json!({"triggers": [busy.trigger()], "idleReplicaCount": 0, "minReplicaCount": 2}),
        json!({}),
    )
    .await;
    let (_tx, rx) = watch::channel(ownership(&["r0"], "r0", 1));
    let _ctl = controller(&c.client, rx, "r0");
    wait_replicas(&c.client, "min", 2, WITHIN).await;
    wait_replicas(&c.client, "idle", 2, WITHIN).await;
    let hpa = eventually(WITHIN, "the min object's HPA", || async {
        Api::<HorizontalPodAutoscaler>::namespaced(c.client.clone(), NS)
            .get_opt("keda-hpa-min")
            .await
            .unwrap()
    })
    .await;
    // The HPA carries the bounds: the operator handles 0 ↔ 1 and the minimum, the HPA the rest
    // up to the maximum.
    let spec = hpa.spec.unwrap();
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 4));
    // creationTimestamp has whole seconds, so the 4 s may count from up to 1 s before `created`.
    // Still within the initial cooldown (the polls above took about a second).
    if created.elapsed() < Duration::from_millis(2500) {
        assert_eq!(
            replicas(&c.client, "fresh").await,
            3,
            "scaled in during the initial cooldown"
        );
    }
    wait_replicas(&c.client, "fresh", 0, WITHIN).await;
    // Not before the 4 s, counted from the truncated creationTimestamp (at most 1 s early).
    assert!(
        created.elapsed() >= Duration::from_secs(3),
        "scaled in after {:?}",
        created.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_freezes_and_paused_scale_in_blocks_scaling_to_zero() {
    let c = cluster().await;
    let source = Source::start().await;
    deployment(&c.client, "frozen", 2).await;
    deployment(&c.client, "kept", 1).await;
    // paused: the target is left as it is (no scale-in although inactive), the HPA goes.
    scaled_object(
        &c.client,
        "frozen",
        "frozen",
        json!({"triggers": [source.trigger()]}),
        json!({"autoscaling.keda.sh/paused": "true"}),
    )
    .await;
    // paused-scale-in: inactive past the cooldown, but never 1 → 0; the HPA's scaleDown is off.
    scaled_object(
        &c.client,
        "kept",
        "kept",
        json!({"triggers": [source.trigger()]}),
        json!({"autoscaling.keda.sh/paused-scale-in": "true"}),
    )
    .await;
    let (_tx, rx) = watch::channel(ownership(&["r0"], "r0", 1));
    let _ctl = controller(&c.client, rx, "r0");
    let hpa = eventually(WITHIN, "the kept object's HPA", || async {
        Api::<HorizontalPodAutoscaler>::namespaced(c.client.clone(), NS)
            .get_opt("keda-hpa-kept")
            .await
            .unwrap()
    })
    .await;
    let spec = serde_json::to_value(hpa.spec.unwrap()).unwrap();
    assert_eq!(spec["behavior"]["scaleDown"]["selectPolicy"], "Disabled");
    for name in ["frozen", "kept"] {
        eventually(WITHIN, "Paused=True", || async {
            let s = so_status(&c.client, name).await;
            (condition(&s, "Paused") == ("True".into(), "ScaledObjectPaused".into())).then_some(())
        })
        .await;
    }
    // Well past the 2 s cooldown: neither moved.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(replicas(&c.client, "frozen").await, 2);
    assert_eq!(replicas(&c.client, "kept").await, 1);
    assert!(
        Api::<HorizontalPodAutoscaler>::namespaced(c.client.clone(), NS)
            .get_opt("keda-hpa-frozen")
            .await
            .unwrap()
            .is_none()
    );
}

// ScaledJobs.

async fn scaled_job(client: &Client, name: &str, metadata: Value, spec: Value) {
    let mut body = json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledJob",
        "metadata": metadata,
        "spec": {
            "pollingInterval": 1,
            "jobTargetRef": {
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "worker", "image": "worker:1"}]}
                }
            },
        }
    });
    body["metadata"]["name"] = json!(name);
    if let (Some(base), Value::Object(extra)) = (body["spec"].as_object_mut(), spec) {
        base.extend(extra);
    }
    let sj: ScaledJob = serde_json::from_value(body).unwrap();
    Api::<ScaledJob>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &sj)
        .await
        .unwrap();
}

/// The Jobs of a ScaledJob, by its label.
async fn jobs_of(client: &Client, name: &str) -> Vec<Job> {
    Api::<Job>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels(&format!("scaledjob.keda.sh/name={name}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .collect()
}

fn job_finished_as(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// Waits for exactly `want` Jobs, then checks the count holds for a further two polls.
async fn settle_jobs(client: &Client, name: &str, want: usize) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let have = jobs_of(client, name).await.len();
        if have == want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {want} Jobs of {name}; {have} now"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        jobs_of(client, name).await.len(),
        want,
        "{name} should hold at {want} Jobs"
    );
}

/// Makes the controller poll a ScaledJob now (an annotation change, not a spec change).
async fn poke(client: &Client, name: &str, n: u32) {
    Api::<ScaledJob>::namespaced(client.clone(), NS)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"test/poke": n.to_string()}}})),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scaled_job_strategy_creates_its_number_of_jobs() {
    // Jobs run for an hour: the running count only grows. Each ScaledJob polls once an hour,
    // so it polls when created and when poked, and nowhere else.
    let c = cluster_with(Duration::from_secs(3600)).await;
    let own = ownership(&["a"], "a", 1);
    let (_tx, rx) = watch::channel(own);
    let (_ctl, records) = controller(&c.client, rx, "a");
    let strategies = [
        ("default", json!({}), 10),
        (
            "custom",
            json!({"customScalingQueueLengthDeduction": 1, "customScalingRunningJobPercentage": "0.5"}),
            10,
        ),
        ("accurate", json!({}), 8),
        ("eager", json!({}), 10),
    ];
    let mut sources = Vec::new();
    for (strategy, extra, max) in &strategies {
        let source = Source::start().await;
        source.set(3);
        let mut scaling = json!({"strategy": strategy});
        if let (Some(s), Value::Object(extra)) = (scaling.as_object_mut(), extra.clone()) {
            s.extend(extra);
        }
        scaled_job(
            &c.client,
            strategy,
            json!({}),
            json!({
                "pollingInterval": 3600,
                "maxReplicaCount": max,
                "scalingStrategy": scaling,
                "triggers": [source.trigger_with_target(1)],
            }),
        )
        .await;
        sources.push(source);
    }
    // Three messages: three Jobs, except custom (3 − 1 deducted).
    for (strategy, want) in [("default", 3), ("custom", 2), ("accurate", 3), ("eager", 3)] {
        settle_jobs(&c.client, strategy, want).await;
    }
    // Six messages with those Jobs running:
    // default 6 − 3 = 3 more; custom 6 − 1 − 2 × 0.5 = 4 more; accurate 6 + 3 > 8 so up to the
    // maximum, 5 more; eager min(10 − 3, 6) = 6 more.
    for ((strategy, _, _), source) in strategies.iter().zip(&sources) {
        source.set(6);
        poke(&c.client, strategy, 1).await;
    }
    for (strategy, want) in [("default", 6), ("custom", 6), ("accurate", 8), ("eager", 9)] {
        settle_jobs(&c.client, strategy, want).await;
    }
    let sj = Api::<ScaledJob>::namespaced(c.client.clone(), NS)
        .get("eager")
        .await
        .unwrap();
    let status = serde_json::to_value(sj.status.unwrap_or_default()).unwrap();
    assert_eq!(
        condition(&status, "Ready"),
        ("True".into(), "ScaledJobReady".into())
    );
    assert_eq!(
        condition(&status, "Active"),
        ("True".into(), "ScalerActive".into())
    );
    assert_eq!(
        status["externalMetricNames"],
        json!(["s0-metric-api-value"])
    );
    assert!(status["lastActiveTime"].is_string());
    // Each ScaledJob's reading is recorded under its own identity: kind ScaledJob, never as a
    // ScaledObject of that name.
    let eager = ringscale_cache::ObjectId::scaled_job(NS, "eager");
    let recorded = records.object(&eager);
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].0.metric_name, "s0-metric-api-value");
    assert_eq!(recorded[0].1.value, 6.0);
    assert!(
        records
            .object(&ringscale_cache::ObjectId::scaled_object(NS, "eager"))
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_jobs_hold_the_accurate_strategy_until_they_start() {
    let c = cluster_with(Duration::from_secs(3600)).await;
    let own = ownership(&["a"], "a", 1);
    let (_tx, rx) = watch::channel(own);
    let (_ctl, _records) = controller(&c.client, rx, "a");
    // No Pods start while the simulated controllers are paused: every Job stays pending.
    c.sim.sim().faults.pause_controllers(true);
    let source = Source::start().await;
    source.set(3);
    scaled_job(
        &c.client,
        "accurate",
        json!({}),
        json!({
            "maxReplicaCount": 10,
            "scalingStrategy": {"strategy": "accurate"},
            "triggers": [source.trigger_with_target(1)],
        }),
    )
    .await;
    // Polled every second, the three pending Jobs are subtracted from the three messages.
    settle_jobs(&c.client, "accurate", 3).await;
    // Once they run, the three messages still queued are new work; polls go on up to the
    // maximum of 10 (3 + 3 + 3 + 1).
    c.sim.sim().faults.pause_controllers(false);
    settle_jobs(&c.client, "accurate", 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_carry_labels_and_owner_and_history_limits_prune_them() {
    let c = cluster_with(Duration::from_millis(300)).await;
    let own = ownership(&["a"], "a", 1);
    let (_tx, rx) = watch::channel(own);
    let (_ctl, _records) = controller(&c.client, rx, "a");
    let ok = Source::start().await;
    ok.set(2);
    scaled_job(
        &c.client,
        "worker",
        json!({
            "labels": {"team": "data", "secret-label": "x"},
            "annotations": {"scaledjob.keda.sh/job-excluded-labels": "secret-label"},
        }),
        json!({
            "successfulJobsHistoryLimit": 2,
            "triggers": [ok.trigger_with_target(1)],
        }),
    )
    .await;
    let failing = Source::start().await;
    failing.set(1);
    scaled_job(
        &c.client,
        "flaky",
        // Copied to its Jobs, this makes kube-sim fail them.
        json!({"annotations": {"kube-sim.ringscale.io/outcome": "Failed"}}),
        json!({
            "failedJobsHistoryLimit": 1,
            "triggers": [failing.trigger_with_target(1)],
        }),
    )
    .await;

    let sj = Api::<ScaledJob>::namespaced(c.client.clone(), NS)
        .get("worker")
        .await
        .unwrap();
    let job = eventually(WITHIN, "a Job", || async {
        jobs_of(&c.client, "worker").await.into_iter().next()
    })
    .await;
    let labels = job.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["scaledjob.keda.sh/name"], "worker");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "keda-operator");
    assert_eq!(labels["team"], "data");
    assert!(!labels.contains_key("secret-label"));
    let owner = &job.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("ScaledJob", "worker", Some(true))
    );
    assert_eq!(
        owner.uid,
        sj.metadata.uid.clone().unwrap_or_default(),
        "owned by this very ScaledJob"
    );
    let spec = job.spec.clone().unwrap();
    let template_labels = spec.template.metadata.unwrap().labels.unwrap_or_default();
    assert_eq!(template_labels["scaledjob.keda.sh/name"], "worker");
    assert_eq!(template_labels["app"], "worker");
    assert_eq!(
        spec.template.spec.unwrap().restart_policy.as_deref(),
        Some("OnFailure")
    );
    assert!(
        job.metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .contains_key("scaledjob.keda.sh/generation")
    );

    // Jobs finish in 0.3 s and the queue stays, so each poll makes new ones; finished Jobs
    // beyond the limits go: at most 2 succeeded and 1 failed remain once a poll has pruned.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while tokio::time::Instant::now() < deadline {
        for j in jobs_of(&c.client, "worker").await {
            seen.insert(j.metadata.name.clone().unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen.len() >= 8, "Jobs keep coming: {} seen", seen.len());
    eventually(WITHIN, "history within the limits", || async {
        let worker = jobs_of(&c.client, "worker").await;
        let flaky = jobs_of(&c.client, "flaky").await;
        let succeeded = worker
            .iter()
            .filter(|j| job_finished_as(j, "Complete"))
            .count();
        let failed = flaky
            .iter()
            .filter(|j| job_finished_as(j, "Failed"))
            .count();
        (succeeded <= 2 && failed <= 1 && flaky.iter().any(|j| job_finished_as(j, "Failed")))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_scaled_job_creates_nothing_and_a_broken_one_says_why() {
    let c = cluster_with(Duration::from_secs(3600)).await;
    let own = ownership(&["a"], "a", 1);
    let (_tx, rx) = watch::channel(own);
    let (_ctl, _records) = controller(&c.client, rx, "a");
    let source = Source::start().await;
    source.set(2);
    scaled_job(
        &c.client,
        "held",
        json!({"annotations": {"autoscaling.keda.sh/paused": "true"}}),
        json!({"triggers": [source.trigger_with_target(1)]}),
    )
    .await;
    scaled_job(
        &c.client,
        "broken",
        json!({}),
        json!({"triggers": [{"type": "metrics-api", "metadata": {"valueLocation": "value", "targetValue": "1"}}]}),
    )
    .await;
    scaled_job(
        &c.client,
        "minimum",
        json!({}),
        json!({"minReplicaCount": 2, "triggers": [source.trigger_with_target(100)]}),
    )
    .await;
    let sjs = Api::<ScaledJob>::namespaced(c.client.clone(), NS);
    let status = |name: &'static str| {
        let sjs = sjs.clone();
        async move {
            let sj = sjs.get(name).await.unwrap();
            serde_json::to_value(sj.status.unwrap_or_default()).unwrap()
        }
    };
    let held = eventually(WITHIN, "held reported paused", || async {
        let s = status("held").await;
        (condition(&s, "Paused").0 == "True").then_some(s)
    })
    .await;
    assert_eq!(held["Paused"], "true");
    assert_eq!(condition(&held, "Paused").1, "ScaledJobPaused");
    let broken = eventually(WITHIN, "broken reported not ready", || async {
        let s = status("broken").await;
        (condition(&s, "Ready").0 == "False").then_some(s)
    })
    .await;
    assert_eq!(condition(&broken, "Ready").1, "ScaledJobCheckFailed");
    let message = broken["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("url"),
        "names the missing parameter: {message}"
    );
    // A minimum of 2 runs two Jobs; beyond them the strategy sees none running, and
    // 2 messages / target 100 ask for one more (KEDA's getScalingDecision): three in all.
    settle_jobs(&c.client, "minimum", 3).await;
    assert!(jobs_of(&c.client, "held").await.is_empty());
    assert!(jobs_of(&c.client, "broken").await.is_empty());

    // Unpausing lets it work.
    sjs.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"autoscaling.keda.sh/paused": null}}})),
    )
    .await
    .unwrap();
    settle_jobs(&c.client, "held", 2).await;
    let s = status("held").await;
    assert_eq!(
        condition(&s, "Paused"),
        ("False".into(), "ScaledJobUnpaused".into())
    );
    assert!(s.get("Paused").is_none());
}

// external-push.

/// An external push scaler: one metric `jobs` (target 1) worth 5 while active, 0 otherwise;
/// StreamIsActive sends every change of activity.
struct PushScaler {
    active: watch::Receiver<bool>,
}

type ActivityStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<pb::IsActiveResponse, tonic::Status>> + Send>,
>;

#[tonic::async_trait]
impl pb::external_scaler_server::ExternalScaler for PushScaler {
    async fn is_active(
        &self,
        _: tonic::Request<pb::ScaledObjectRef>,
    ) -> Result<tonic::Response<pb::IsActiveResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::IsActiveResponse {
            result: *self.active.borrow(),
        }))
    }

    type StreamIsActiveStream = ActivityStream;

    async fn stream_is_active(
        &self,
        _: tonic::Request<pb::ScaledObjectRef>,
    ) -> Result<tonic::Response<ActivityStream>, tonic::Status> {
        let stream = futures_util::stream::unfold(self.active.clone(), |mut rx| async move {
            rx.changed().await.ok()?;
            let result = *rx.borrow_and_update();
            Some((Ok(pb::IsActiveResponse { result }), rx))
        });
        Ok(tonic::Response::new(Box::pin(stream)))
    }

    async fn get_metric_spec(
        &self,
        _: tonic::Request<pb::ScaledObjectRef>,
    ) -> Result<tonic::Response<pb::GetMetricSpecResponse>, tonic::Status> {
        #[allow(deprecated)]
        let spec = pb::MetricSpec {
            metric_name: "jobs".into(),
            target_size: 0,
            target_size_float: 1.0,
        };
        Ok(tonic::Response::new(pb::GetMetricSpecResponse {
            metric_specs: vec![spec],
        }))
    }

    async fn get_metrics(
        &self,
        _: tonic::Request<pb::GetMetricsRequest>,
    ) -> Result<tonic::Response<pb::GetMetricsResponse>, tonic::Status> {
        let value = if *self.active.borrow() { 5.0 } else { 0.0 };
        #[allow(deprecated)]
        let value = pb::MetricValue {
            metric_name: "jobs".into(),
            metric_value: 0,
            metric_value_float: value,
        };
        Ok(tonic::Response::new(pb::GetMetricsResponse {
            metric_values: vec![value],
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_trigger_activates_without_waiting_for_the_poll() {
    let c = cluster().await;
    let (active, rx) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::external_scaler_server::ExternalScalerServer::new(
                PushScaler { active: rx },
            ))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    deployment(&c.client, "worker", 0).await;
    // Polled once an hour: only the push can activate it within the test.
    scaled_object(
        &c.client,
        "pushed",
        "worker",
        json!({
            "pollingInterval": 3600,
            "triggers": [{"type": "external-push", "metadata": {"scalerAddress": addr.to_string()}}],
        }),
        json!({}),
    )
    .await;
    let (_tx, own) = watch::channel(ownership(&["r0"], "r0", 1));
    let (_ctl, _) = controller(&c.client, own, "r0");
    eventually(WITHIN, "the first poll", || async {
        let s = so_status(&c.client, "pushed").await;
        (condition(&s, "Active") == ("False".into(), "ScalerNotActive".into())).then_some(())
    })
    .await;
    assert_eq!(replicas(&c.client, "worker").await, 0);
    active.send(true).unwrap();
    wait_replicas(&c.client, "worker", 1, Duration::from_secs(5)).await;
    // The status follows the scale in the same cycle.
    eventually(WITHIN, "the Active condition after the push", || async {
        let s = so_status(&c.client, "pushed").await;
        (condition(&s, "Active") == ("True".into(), "ScalerActive".into())).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_kind_with_a_scale_subresource_is_a_target() {
    let c = cluster().await;
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "rollouts.argoproj.io"},
        "spec": {
            "group": "argoproj.io",
            "names": {"kind": "Rollout", "plural": "rollouts", "singular": "rollout", "listKind": "RolloutList"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                }}},
                "subresources": {"status": {}, "scale": {
                    "specReplicasPath": ".spec.replicas",
                    "statusReplicasPath": ".status.replicas"
                }}
            }]
        }
    }))
    .unwrap();
    Api::<CustomResourceDefinition>::all(c.client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .unwrap();
    let resource = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout"),
        "rollouts",
    );
    let rollouts: Api<kube::api::DynamicObject> =
        Api::namespaced_with(c.client.clone(), NS, &resource);
    let web: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {"replicas": 0}
    }))
    .unwrap();
    eventually(WITHIN, "the Rollout kind served", || async {
        rollouts.create(&PostParams::default(), &web).await.ok()
    })
    .await;
    let source = Source::start().await;
    scaled_object(
        &c.client,
        "web",
        "web",
        json!({
            "scaleTargetRef": {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "web"},
            "triggers": [source.trigger()],
        }),
        json!({}),
    )
    .await;
    let (_tx, own) = watch::channel(ownership(&["r0"], "r0", 1));
    let (_ctl, _) = controller(&c.client, own, "r0");
    let rollout_replicas = || async {
        rollouts
            .get_scale("web")
            .await
            .unwrap()
            .spec
            .and_then(|s| s.replicas)
    };
    source.set(20);
    eventually(WITHIN, "the Rollout at 1", || async {
        (rollout_replicas().await == Some(1)).then_some(())
    })
    .await;
    // The cycle writes the status after the scale: wait for it rather than race it.
    let status = eventually(WITHIN, "the status naming the Rollout", || async {
        let status = so_status(&c.client, "web").await;
        (!status["scaleTargetGVKR"].is_null()).then_some(status)
    })
    .await;
    assert_eq!(
        status["scaleTargetGVKR"],
        json!({"group": "argoproj.io", "version": "v1alpha1", "kind": "Rollout", "resource": "rollouts"})
    );
    assert_eq!(status["scaleTargetKind"], "argoproj.io/v1alpha1.Rollout");
    let hpa = Api::<HorizontalPodAutoscaler>::namespaced(c.client.clone(), NS)
        .get("keda-hpa-web")
        .await
        .unwrap();
    let target = hpa.spec.unwrap().scale_target_ref;
    assert_eq!(
        (target.api_version.as_deref(), target.kind.as_str()),
        (Some("argoproj.io/v1alpha1"), "Rollout")
    );
    source.set(0);
    eventually(
        WITHIN,
        "the Rollout back at 0 after the cooldown",
        || async { (rollout_replicas().await == Some(0)).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpa_the_api_server_refuses_is_reported_in_the_status() {
    let c = cluster().await;
    let source = Source::start().await;
    deployment(&c.client, "worker", 1).await;
    // The CRD schema admits any integer; the API server's HPA validation does not.
    scaled_object(
        &c.client,
        "too-slow",
        "worker",
        json!({
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
                "scaleDown": {"stabilizationWindowSeconds": 7200}
            }}},
            "triggers": [source.trigger()],
        }),
        json!({}),
    )
    .await;
    let (_tx, own) = watch::channel(ownership(&["r0"], "r0", 1));
    let (_ctl, _) = controller(&c.client, own, "r0");
    let status = eventually(WITHIN, "Ready=False", || async {
        let s = so_status(&c.client, "too-slow").await;
        (condition(&s, "Ready").0 == "False").then_some(s)
    })
    .await;
    assert_eq!(condition(&status, "Ready").1, "ScaledObjectCheckFailed");
    let ready = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .unwrap();
    let message = ready["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("Failed to ensure HPA is correctly created")
            && message.contains("stabilizationWindowSeconds"),
        "{message}"
    );
    // Fixing the behavior brings the HPA and Ready back.
    Api::<ScaledObject>::namespaced(c.client.clone(), NS)
        .patch(
            "too-slow",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
                    "scaleDown": {"stabilizationWindowSeconds": 600}
                }}}}}),
            ),
        )
        .await
        .unwrap();
    eventually(WITHIN, "Ready=True and the HPA", || async {
        let s = so_status(&c.client, "too-slow").await;
        let hpa = Api::<HorizontalPodAutoscaler>::namespaced(c.client.clone(), NS)
            .get_opt("keda-hpa-too-slow")
            .await
            .unwrap();
        (condition(&s, "Ready").0 == "True" && hpa.is_some()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fallback_behavior_names_its_replicas() {
    let c = cluster().await;
    let broken = Source::start().await;
    broken.set(-1);
    // Every target runs 3 replicas; the source fails from the start.
    let cases = [
        ("static", 5, 5),
        ("currentReplicas", 5, 3),
        ("currentReplicasIfHigher", 2, 3),
        ("currentReplicasIfLower", 2, 2),
    ];
    for (behavior, replicas, _) in cases {
        let name = behavior.to_ascii_lowercase();
        deployment(&c.client, &name, 3).await;
        scaled_object(
            &c.client,
            &name,
            &name,
            json!({
                "triggers": [broken.trigger()],
                "fallback": {"failureThreshold": 1, "replicas": replicas, "behavior": behavior},
            }),
            json!({}),
        )
        .await;
    }
    let (_tx, rx) = watch::channel(ownership(&["r0"], "r0", 1));
    let _ctl = controller(&c.client, rx, "r0");
    for (behavior, _, want) in cases {
        let name = behavior.to_ascii_lowercase();
        let status = eventually(WITHIN, &format!("{name} falling back"), || async {
            let s = so_status(&c.client, &name).await;
            (condition(&s, "Fallback").0 == "True").then_some(s)
        })
        .await;
        let message = status["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Fallback"))
            .and_then(|c| c["message"].as_str())
            .unwrap_or_default()
            .to_owned();
        assert!(
            message.ends_with(&format!("(to {want} replicas)")),
            "{behavior}: {message}"
        );
        assert_eq!(
            status["health"]["s0-metric-api-value"]["status"], "Failing",
            "{behavior}"
        );
        // The operator leaves the replicas to the HPA while falling back.
        assert_eq!(replicas(&c.client, &name).await, 3, "{behavior}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_answers_a_forwarded_query_live() {
    let c = cluster().await;
    let source = Source::start().await;
    source.set(3);
    deployment(&c.client, "worker", 1).await;
    // Polled once an hour: a fresh value can only come from the live query.
    scaled_object(
        &c.client,
        "orders",
        "worker",
        json!({"pollingInterval": 3600, "triggers": [source.trigger()]}),
        json!({}),
    )
    .await;
    let own = ownership(&["r0"], "r0", 1);
    let (_tx, rx) = watch::channel(own);
    let (ctl, records) = controller(&c.client, rx, "r0");
    eventually(WITHIN, "the first poll", || async {
        let s = so_status(&c.client, "orders").await;
        (condition(&s, "Ready").0 == "True").then_some(())
    })
    .await;
    source.set(42);
    let live = ctl.live_query();
    let query = |name: &str, metric: Option<&str>| ringscale_replication::Query {
        object: ringscale_cache::ObjectId::scaled_object(NS, name),
        metric_name: metric.map(str::to_owned),
    };
    let answer = live
        .query(query("orders", Some("s0-metric-api-value")))
        .await
        .unwrap();
    assert_eq!(answer.len(), 1);
    assert_eq!(answer[0].1.value, 42.0);
    // Recorded, so peers get it too.
    let key = ringscale_cache::RecordKey::scaled_object(NS, "orders", "s0-metric-api-value");
    assert_eq!(records.get(&key).unwrap().value, 42.0);
    // An unknown metric, an unknown object, a failing source: typed errors.
    assert!(matches!(
        live.query(query("orders", Some("s9-nope"))).await,
        Err(ringscale_replication::QueryError::NotFound(_))
    ));
    source.set(-1);
    assert!(matches!(
        live.query(query("orders", None)).await,
        Err(ringscale_replication::QueryError::Source(_))
    ));
    // Not the owner: says so, with its generation.
    let (_tx2, rx2) = watch::channel(ownership(&["r0", "r1"], "r1", 2));
    let other = Controller::start(
        c.client.clone(),
        rx2,
        Store::new("r1"),
        Sources::new(SourcesConfig::default()),
        Settings::default(),
        std::future::pending(),
    );
    let ring = ownership(&["r0", "r1"], "r1", 2);
    let not_owned = (0..200)
        .map(|i| format!("so-{i}"))
        .find(|n| {
            !ring.owns(&ringscale_ring::ObjectKey::new(
                ringscale_ring::Kind::ScaledObject,
                NS,
                n,
            ))
        })
        .unwrap();
    assert!(matches!(
        other.live_query().query(query(&not_owned, None)).await,
        Err(ringscale_replication::QueryError::NotOwner(_, 2))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cooldown_runs_from_the_last_active_poll() {
    let c = cluster().await;
    let source = Source::start().await;
    deployment(&c.client, "worker", 0).await;
    scaled_object(
        &c.client,
        "orders",
        "worker",
        json!({"triggers": [source.trigger()], "cooldownPeriod": 3}),
        json!({}),
    )
    .await;
    let (_tx, rx) = watch::channel(ownership(&["r0"], "r0", 1));
    let _ctl = controller(&c.client, rx, "r0");
    source.set(10);
    wait_replicas(&c.client, "worker", 1, WITHIN).await;
    // Active for longer than the cooldown; the status's lastActiveTime is not refreshed while
    // active (no write per poll), so it still holds the activation time.
    let status_writes = || {
        c.sim
            .sim()
            .stats
            .log()
            .iter()
            .filter(|r| {
                r.resource == "scaledobjects"
                    && r.subresource.as_deref() == Some("status")
                    && r.name.as_deref() == Some("orders")
            })
            .count()
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let active_writes = status_writes();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(status_writes(), active_writes, "status writes while active");
    source.set(0);
    let inactive = tokio::time::Instant::now();
    wait_replicas(&c.client, "worker", 0, WITHIN).await;
    // The last active poll was at most 1 s before `inactive`: 3 s of cooldown leave ≥ 2 s.
    assert!(
        inactive.elapsed() >= Duration::from_secs(2),
        "scaled in {:?} after going inactive",
        inactive.elapsed()
    );
    let status = so_status(&c.client, "orders").await;
    let last: jiff::Timestamp = status["lastActiveTime"].as_str().unwrap().parse().unwrap();
    assert!(
        jiff::Timestamp::now().duration_since(last).as_secs_f64() < 6.0,
        "the status holds the last active poll, not the activation: {last}"
    );
    // Inactive and settled: polls every second write nothing (the status keeps whole seconds;
    // comparing at finer precision once rewrote lastActiveTime on every inactive poll).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let settled = status_writes();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        status_writes(),
        settled,
        "status writes while nothing changes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpa_changed_by_someone_else_is_put_back_and_a_steady_one_is_left_alone() {
    let c = cluster().await;
    let source = Source::start().await;
    deployment(&c.client, "worker", 1).await;
    scaled_object(
        &c.client,
        "orders",
        "worker",
        json!({"triggers": [source.trigger()], "maxReplicaCount": 7}),
        json!({}),
    )
    .await;
    let (_tx, own) = watch::channel(ownership(&["r0"], "r0", 1));
    let (ctl, _) = controller(&c.client, own, "r0");
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(c.client.clone(), NS);
    eventually(WITHIN, "the HPA", || async {
        hpas.get_opt("keda-hpa-orders").await.unwrap()
    })
    .await;
    // Polled every second: three more polls write nothing to the HPA.
    let writes = ctl.stats.hpa_writes.load(Ordering::Relaxed);
    let cycles = ctl.stats.cycles.load(Ordering::Relaxed);
    eventually(WITHIN, "three more polls", || async {
        (ctl.stats.cycles.load(Ordering::Relaxed) >= cycles + 3).then_some(())
    })
    .await;
    assert_eq!(ctl.stats.hpa_writes.load(Ordering::Relaxed), writes);

    // Someone raises the maximum by hand: the next poll puts KEDA's HPA back.
    hpas.patch(
        "keda-hpa-orders",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"maxReplicas": 50}})),
    )
    .await
    .unwrap();
    eventually(WITHIN, "maxReplicas back at 7", || async {
        let hpa = hpas.get("keda-hpa-orders").await.unwrap();
        (hpa.spec.unwrap().max_replicas == 7).then_some(())
    })
    .await;
    assert_eq!(ctl.stats.hpa_writes.load(Ordering::Relaxed), writes + 1);
}

/// The reasons of the events published on an object, oldest first.
async fn event_reasons(client: &Client, name: &str) -> Vec<String> {
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap();
    events
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reason)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_counts_as_active_and_activates_a_target_at_zero() {
    let c = cluster().await;
    let broken = Source::start().await;
    broken.set(-1);
    deployment(&c.client, "worker", 0).await;
    scaled_object(
        &c.client,
        "orders",
        "worker",
        json!({"triggers": [broken.trigger()], "fallback": {"failureThreshold": 1, "replicas": 4}}),
        json!({}),
    )
    .await;
    let (_tx, rx) = watch::channel(ownership(&["r0"], "r0", 1));
    let _ctl = controller(&c.client, rx, "r0");
    // Past the threshold the trigger counts as active (KEDA's isActiveOrFallback): 0 → 1, and
    // the HPA takes it from there to the fallback replicas.
    wait_replicas(&c.client, "worker", 1, WITHIN).await;
    let status = eventually(WITHIN, "Active and Fallback", || async {
        let s = so_status(&c.client, "orders").await;
        (condition(&s, "Active").0 == "True" && condition(&s, "Fallback").0 == "True").then_some(s)
    })
    .await;
    assert_eq!(condition(&status, "Ready").0, "True");
    assert!(status["lastActiveTime"].is_string(), "{status}");
    let reasons = eventually(WITHIN, "the events", || async {
        let r = event_reasons(&c.client, "orders").await;
        (r.iter().any(|r| r == "ScaledObjectFallbackActivated")
            && r.iter().any(|r| r == "KEDAScaleTargetActivated"))
        .then_some(r)
    })
    .await;
    assert!(
        reasons.iter().any(|r| r == "KEDAScalerFailed"),
        "{reasons:?}"
    );
    // KEDA labels the object with its own name.
    let so = Api::<ScaledObject>::namespaced(c.client.clone(), NS)
        .get("orders")
        .await
        .unwrap();
    assert_eq!(
        so.metadata
            .labels
            .unwrap_or_default()
            .get("scaledobject.keda.sh/name")
            .map(String::as_str),
        Some("orders")
    );

    // The source recovers: fallback ends, with its event.
    broken.set(0);
    eventually(WITHIN, "Fallback=False", || async {
        let s = so_status(&c.client, "orders").await;
        (condition(&s, "Fallback").0 == "False").then_some(())
    })
    .await;
    eventually(WITHIN, "ScaledObjectFallbackDeactivated", || async {
        let r = event_reasons(&c.client, "orders").await;
        r.iter()
            .any(|r| r == "ScaledObjectFallbackDeactivated")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renaming_the_hpa_replaces_the_old_one_and_the_hpa_carries_the_annotations() {
    let c = cluster().await;
    let source = Source::start().await;
    source.set(1);
    deployment(&c.client, "worker", 1).await;
    scaled_object(
        &c.client,
        "orders",
        "worker",
        json!({"triggers": [source.trigger()]}),
        json!({"team": "payments"}),
    )
    .await;
    let (_tx, rx) = watch::channel(ownership(&["r0"], "r0", 1));
    let _ctl = controller(&c.client, rx, "r0");
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(c.client.clone(), NS);
    let first = eventually(WITHIN, "keda-hpa-orders", || async {
        hpas.get_opt("keda-hpa-orders").await.unwrap()
    })
    .await;
    let annotations = first.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations.get("team").map(String::as_str),
        Some("payments")
    );
    assert!(
        !annotations.contains_key("ringscale.io/owner-generation"),
        "ringscale's own stamp stays on the ScaledObject: {annotations:?}"
    );
    // A name of 70 characters: the label is cut to 63 and ends with a letter or digit.
    let long = format!("{}-{}", "a".repeat(62), "bcdefgh");
    Api::<ScaledObject>::namespaced(c.client.clone(), NS)
        .patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"advanced": {"horizontalPodAutoscalerConfig": {"name": long}}}}),
            ),
        )
        .await
        .unwrap();
    let renamed = eventually(WITHIN, "the renamed HPA, and the old one gone", || async {
        let new = hpas.get_opt(&long).await.unwrap();
        let old = hpas.get_opt("keda-hpa-orders").await.unwrap();
        new.filter(|_| old.is_none())
    })
    .await;
    let label = renamed.metadata.labels.unwrap_or_default()["app.kubernetes.io/name"].clone();
    assert_eq!(
        label,
        "a".repeat(62),
        "63 characters cut, then the trailing '-'"
    );
    let status = so_status(&c.client, "orders").await;
    assert_eq!(status["hpaName"], long.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_answers_the_composite_metric_live() {
    let c = cluster().await;
    let a = Source::start().await;
    let b = Source::start().await;
    a.set(1);
    b.set(1);
    deployment(&c.client, "worker", 1).await;
    let mut ta = a.trigger();
    ta["name"] = json!("a");
    let mut tb = b.trigger();
    tb["name"] = json!("b");
    // Polled once an hour: a fresh composite value can only come from the live read.
    scaled_object(
        &c.client,
        "orders",
        "worker",
        json!({
            "pollingInterval": 3600,
            "triggers": [ta, tb],
            "advanced": {"scalingModifiers": {"formula": "a + b", "target": "4"}}
        }),
        json!({}),
    )
    .await;
    let (_tx, rx) = watch::channel(ownership(&["r0"], "r0", 1));
    let (ctl, records) = controller(&c.client, rx, "r0");
    eventually(WITHIN, "the first poll", || async {
        let s = so_status(&c.client, "orders").await;
        (condition(&s, "Ready").0 == "True").then_some(())
    })
    .await;
    a.set(5);
    b.set(6);
    let query = ringscale_replication::Query {
        object: ringscale_cache::ObjectId::scaled_object(NS, "orders"),
        metric_name: Some("composite-metric".into()),
    };
    let answer = ctl.live_query().query(query.clone()).await.unwrap();
    assert_eq!(answer.len(), 1);
    assert_eq!(answer[0].0.metric_name, "composite-metric");
    assert_eq!(answer[0].1.value, 11.0);
    let key = ringscale_cache::RecordKey::scaled_object(NS, "orders", "composite-metric");
    assert_eq!(records.get(&key).unwrap().value, 11.0);
    // A trigger fails, no fallback: the composite metric cannot be computed.
    b.set(-1);
    assert!(matches!(
        ctl.live_query().query(query).await,
        Err(ringscale_replication::QueryError::Source(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_scaled_job_replaces_its_old_jobs_unless_gradual() {
    // Jobs run for an hour, so only the rollout removes them.
    let c = cluster_with(Duration::from_secs(3600)).await;
    let (_tx, rx) = watch::channel(ownership(&["a"], "a", 1));
    let (_ctl, _records) = controller(&c.client, rx, "a");
    let source = Source::start().await;
    source.set(2);
    scaled_job(
        &c.client,
        "immediate",
        json!({}),
        json!({"triggers": [source.trigger_with_target(1)]}),
    )
    .await;
    scaled_job(
        &c.client,
        "gradual",
        json!({}),
        json!({"rollout": {"strategy": "gradual"}, "triggers": [source.trigger_with_target(1)]}),
    )
    .await;
    settle_jobs(&c.client, "immediate", 2).await;
    settle_jobs(&c.client, "gradual", 2).await;
    let names = |jobs: Vec<Job>| -> Vec<String> {
        let mut n: Vec<String> = jobs.into_iter().filter_map(|j| j.metadata.name).collect();
        n.sort();
        n
    };
    // Activity keyed by metric name, and the event of turning active (KEDA's RequestJobScale).
    let sj = Api::<ScaledJob>::namespaced(c.client.clone(), NS)
        .get("immediate")
        .await
        .unwrap();
    let status = serde_json::to_value(sj.status.unwrap_or_default()).unwrap();
    assert_eq!(
        status["triggersActivity"]["s0-metric-api-value"]["isActive"], true,
        "{status}"
    );
    eventually(WITHIN, "ScaledJobActive", || async {
        event_reasons(&c.client, "immediate")
            .await
            .iter()
            .any(|r| r == "ScaledJobActive")
            .then_some(())
    })
    .await;
    let first_immediate = names(jobs_of(&c.client, "immediate").await);
    let first_gradual = names(jobs_of(&c.client, "gradual").await);
    // A new spec (a new image): generation 2.
    for name in ["immediate", "gradual"] {
        Api::<ScaledJob>::namespaced(c.client.clone(), NS)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"jobTargetRef": {"template": {"spec": {
                    "containers": [{"name": "worker", "image": "worker:2"}]}}}}})),
            )
            .await
            .unwrap();
    }
    // immediate: the old Jobs go and new ones of generation 2 replace them.
    let replaced = eventually(WITHIN, "the old Jobs replaced", || async {
        let jobs = jobs_of(&c.client, "immediate").await;
        let all_new = !jobs.is_empty()
            && jobs.iter().all(|j| {
                j.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("scaledjob.keda.sh/generation"))
                    .is_some_and(|g| g == "2")
            });
        all_new.then_some(names(jobs))
    })
    .await;
    assert!(
        replaced.iter().all(|n| !first_immediate.contains(n)),
        "{replaced:?} vs {first_immediate:?}"
    );
    let reasons = eventually(WITHIN, "the rollout events", || async {
        let r = event_reasons(&c.client, "immediate").await;
        r.iter()
            .any(|r| r == "ScaledJobRolloutCleanupCompleted")
            .then_some(r)
    })
    .await;
    assert!(
        reasons
            .iter()
            .any(|r| r == "ScaledJobRolloutCleanupStarted")
    );
    // gradual: the Jobs of generation 1 keep running.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now_gradual = names(jobs_of(&c.client, "gradual").await);
    assert!(
        first_gradual.iter().all(|n| now_gradual.contains(n)),
        "{now_gradual:?} vs {first_gradual:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_booleans_in_annotations_and_cron_outside_its_window() {
    let c = cluster().await;
    let source = Source::start().await;
    source.set(4);
    deployment(&c.client, "worker", 0).await;
    deployment(&c.client, "nightly", 0).await;
    // "False" is Go's false: not paused, so the object activates as usual.
    scaled_object(
        &c.client,
        "orders",
        "worker",
        json!({"triggers": [source.trigger()]}),
        json!({"autoscaling.keda.sh/paused": "False"}),
    )
    .await;
    // A cron window that never opens (29 February at midnight to 1 minute past): 0 and inactive.
    scaled_object(
        &c.client,
        "batch",
        "nightly",
        json!({"triggers": [{"type": "cron", "metadata": {
            "timezone": "UTC", "start": "0 0 29 2 *", "end": "1 0 29 2 *", "desiredReplicas": "5"}}]}),
        json!({}),
    )
    .await;
    let (_tx, rx) = watch::channel(ownership(&["r0"], "r0", 1));
    let (_ctl, records) = controller(&c.client, rx, "r0");
    wait_replicas(&c.client, "worker", 1, WITHIN).await;
    // The status follows the scale write in the same cycle: wait for it, not race it.
    let status = eventually(WITHIN, "the status after the activation", || async {
        let s = so_status(&c.client, "orders").await;
        (condition(&s, "Active").0 == "True").then_some(s)
    })
    .await;
    assert_eq!(condition(&status, "Paused").0, "False");
    let record = eventually(WITHIN, "the cron value", || async {
        records
            .object(&ringscale_cache::ObjectId::scaled_object(NS, "batch"))
            .into_iter()
            .map(|(_, r)| r)
            .next()
    })
    .await;
    assert_eq!((record.value, record.active), (0.0, false));
    assert_eq!(replicas(&c.client, "nightly").await, 0);
}
