//! The `kubernetes-workload` trigger through the operator's pod lister on kube-sim: pods are
//! created, moved through their phases, scheduled and deleted through the API, and the
//! trigger's value and activity follow.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use ringscale_kube_sim::{Config, KubeSim};
use ringscale_operator::pods::KubePods;
use ringscale_scalers::{ErrorKind, PodLister, Scaler, Sources, SourcesConfig, TriggerInput};
use serde_json::json;

const NS: &str = "tenant-a";

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

async fn pod(pods: &Api<Pod>, name: &str, labels: serde_json::Value, phase: &str, node: &str) {
    let mut spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
    if !node.is_empty() {
        spec["nodeName"] = json!(node);
    }
    let p: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }))
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    set_phase(pods, name, phase).await;
}

async fn set_phase(pods: &Api<Pod>, name: &str, phase: &str) {
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": phase}})),
    )
    .await
    .unwrap();
}

fn trigger(metadata: &[(&str, &str)]) -> TriggerInput {
    TriggerInput::new(0, "kubernetes-workload", metadata.iter().copied(), NS, "so")
}

async fn value(scaler: &Scaler) -> (f64, bool) {
    let specs = scaler.metric_specs().await.unwrap();
    let name = specs[0].external_name().unwrap().to_owned();
    let poll = scaler.poll(&name).await.unwrap();
    (poll.values[0].value, poll.active)
}

#[tokio::test]
async fn pod_count_follows_pods_phases_nodes_and_deletes() {
    ringscale_scalers::install_crypto_provider();
    let sim = KubeSim::start(Config::default()).await.unwrap();
    let client = client(&sim).await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    for ns in [NS, "tenant-b"] {
        let n = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        let _ = namespaces.create(&PostParams::default(), &n).await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let others: Api<Pod> = Api::namespaced(client.clone(), "tenant-b");
    let sources = Sources::new(SourcesConfig {
        pods: Some(PodLister(Arc::new(KubePods::new(client.clone())))),
        ..SourcesConfig::default()
    });
    let workers = Scaler::build(
        &trigger(&[
            ("podSelector", "app=worker,tier in (gold,silver)"),
            ("value", "2.5"),
            ("activationValue", "1"),
        ]),
        &sources,
    )
    .unwrap();
    let specs = workers.metric_specs().await.unwrap();
    assert_eq!(specs[0].external_name(), Some("s0-workload-tenant-a"));
    assert_eq!(value(&workers).await, (0.0, false));

    pod(
        &pods,
        "w1",
        json!({"app": "worker", "tier": "gold"}),
        "Running",
        "node-a",
    )
    .await;
    assert_eq!(value(&workers).await, (1.0, false));
    pod(
        &pods,
        "w2",
        json!({"app": "worker", "tier": "silver"}),
        "Pending",
        "",
    )
    .await;
    pod(
        &pods,
        "w3",
        json!({"app": "worker", "tier": "gold"}),
        "Running",
        "node-a",
    )
    .await;
    // Not selected: another tier, another app, another namespace.
    pod(
        &pods,
        "w4",
        json!({"app": "worker", "tier": "bronze"}),
        "Running",
        "node-b",
    )
    .await;
    pod(
        &pods,
        "db",
        json!({"app": "db", "tier": "gold"}),
        "Running",
        "node-b",
    )
    .await;
    pod(
        &others,
        "w1",
        json!({"app": "worker", "tier": "gold"}),
        "Running",
        "node-c",
    )
    .await;
    assert_eq!(value(&workers).await, (3.0, true));

    // groupByNode: distinct nodes of the counted pods (the pending one has none).
    let by_node = Scaler::build(
        &trigger(&[
            ("podSelector", "app=worker"),
            ("value", "1"),
            ("groupByNode", "true"),
        ]),
        &sources,
    )
    .unwrap();
    assert_eq!(value(&by_node).await, (2.0, true));

    // Succeeded and Failed pods are not counted; deleted ones are gone.
    set_phase(&pods, "w1", "Succeeded").await;
    set_phase(&pods, "w3", "Failed").await;
    assert_eq!(value(&workers).await, (1.0, false));
    pods.delete("w2", &DeleteParams::default()).await.unwrap();
    assert_eq!(value(&workers).await, (0.0, false));
    assert_eq!(value(&by_node).await, (1.0, true));

    // Without a pod lister (outside the operator) the poll says why it cannot count.
    let bare = Scaler::build(
        &trigger(&[("podSelector", "app=worker"), ("value", "1")]),
        &Sources::new(SourcesConfig::default()),
    )
    .unwrap();
    let name = bare.metric_specs().await.unwrap()[0]
        .external_name()
        .unwrap()
        .to_owned();
    let err = bare.poll(&name).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("no Kubernetes client"), "{err}");
}

#[test]
fn workload_parameters_are_checked_as_keda_checks_them() {
    let problems = |m: &[(&str, &str)]| match ringscale_scalers::parse(&trigger(m)) {
        Ok(_) => panic!("{m:?} parsed"),
        Err(e) => e
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    };
    assert!(problems(&[("value", "1")]).contains("podSelector"));
    assert!(problems(&[("podSelector", "app=x")]).contains("value must be a float greater than 0"));
    assert!(
        problems(&[("podSelector", "app=x"), ("value", "-1")])
            .contains("value must be a float greater than 0")
    );
    assert!(
        problems(&[("podSelector", "app in x"), ("value", "1")])
            .contains("error parsing pod selector")
    );
    let mut formula_only = trigger(&[("podSelector", "app=x")]);
    formula_only.as_metric_source = true;
    assert!(ringscale_scalers::parse(&formula_only).is_ok());
}
