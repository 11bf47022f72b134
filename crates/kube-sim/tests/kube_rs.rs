//! kube-sim driven by kube-rs, as ringscale will drive it: CRUD, conflicts, selectors, watch and
//! reflector through 410 Gone and dropped watches, server-side apply, subresources, CRDs with
//! validation, finalizers and garbage collection, Leases, and the HPA simulation.

// Test helpers, like tests, fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use ringscale_api::ScaledObject;
use ringscale_kube_sim::{Config, KubeSim};
use serde_json::{Value, json};

async fn cluster(config: Config) -> (KubeSim, Client) {
    cluster_with_retries(config, true).await
}

/// `retries`: whether the client retries 429/503/504 by itself (kube's default).
async fn cluster_with_retries(config: Config, retries: bool) -> (KubeSim, Client) {
    let sim = KubeSim::start(config).await.expect("kube-sim starts");
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(sim.kubeconfig()).expect("kubeconfig parses");
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("kube config");
    config.default_retry = retries;
    let client = Client::try_from(config).expect("client");
    (sim, client)
}

fn fast() -> Config {
    Config {
        workload_delay: Duration::from_millis(50),
        job_duration: Duration::from_millis(300),
        hpa_sync_period: Duration::from_millis(200),
        bookmark_interval: Duration::from_millis(200),
        ..Config::default()
    }
}

use ringscale_testkit::eventually;

fn cm(name: &str, labels: Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .unwrap()
}

fn api_error(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn crud_conflicts_and_selectors_behave_like_a_real_api_server() {
    let (_sim, client) = cluster(fast()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = cms
        .create(
            &PostParams::default(),
            &cm("a", json!({"app": "web", "tier": "front"})),
        )
        .await
        .unwrap();
    let rv1 = created.metadata.resource_version.clone().unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    cms.create(&PostParams::default(), &cm("b", json!({"app": "db"})))
        .await
        .unwrap();

    let dup = api_error(
        cms.create(&PostParams::default(), &cm("a", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));

    let mut changed = created.clone();
    changed.data = Some([("k".to_owned(), "v2".to_owned())].into());
    let updated = cms
        .replace("a", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version.as_deref(),
        Some(rv1.as_str())
    );
    let stale = api_error(
        cms.replace("a", &PostParams::default(), &changed)
            .await
            .unwrap_err(),
    );
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));

    let selected = cms
        .list(&ListParams::default().labels("app in (web,api),tier"))
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 1);
    let not_web = cms
        .list(&ListParams::default().labels("app!=web"))
        .await
        .unwrap();
    assert!(
        not_web
            .items
            .iter()
            .all(|c| c.metadata.name.as_deref() != Some("a"))
    );
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let bad_field = api_error(
        cms.list(&ListParams::default().fields("data.k=v"))
            .await
            .unwrap_err(),
    );
    assert_eq!(bad_field.code, 400);

    let patched = cms
        .patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"extra": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap().len(), 2);
    let json_patched = cms
        .patch(
            "b",
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(json!([{"op": "remove", "path": "/data/extra"}])).unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(json_patched.data.unwrap().len(), 1);

    let page = cms.list(&ListParams::default().limit(1)).await.unwrap();
    assert_eq!(page.items.len(), 1);
    let next = cms
        .list(
            &ListParams::default()
                .limit(1)
                .continue_token(page.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(next.items.len(), 1);
    assert_ne!(page.items[0].metadata.name, next.items[0].metadata.name);

    cms.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_error(cms.get("a").await.unwrap_err()).code, 404);

    let elsewhere: Api<ConfigMap> = Api::namespaced(client, "missing");
    let no_ns = api_error(
        elsewhere
            .create(&PostParams::default(), &cm("c", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((no_ns.code, no_ns.reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn generate_name_and_invalid_objects() {
    let (_sim, client) = cluster(fast()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let generated: ConfigMap =
        serde_json::from_value(json!({"metadata": {"generateName": "job-"}})).unwrap();
    let created = cms
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let name = created.metadata.name.unwrap();
    assert!(name.starts_with("job-") && name.len() == 9, "{name}");
    let bad = api_error(
        cms.create(&PostParams::default(), &cm("Not_Valid", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((bad.code, bad.reason.as_str()), (422, "Invalid"));
    assert!(bad.message.contains("metadata.name"), "{}", bad.message);

    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    let mismatched: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "other"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
    }))
    .unwrap();
    let err = api_error(
        deployments
            .create(&PostParams::default(), &mismatched)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("spec.template.metadata.labels"),
        "{}",
        err.message
    );
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    }))
    .unwrap()
}

#[tokio::test]
async fn status_and_scale_subresources_and_generation() {
    let (_sim, client) = cluster(fast()).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let created = deployments
        .create(&PostParams::default(), &deployment("web", 2))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.status.is_none(), "status is not set on create");

    // The workload controller reports the replicas.
    eventually(Duration::from_secs(5), "status to follow spec", || {
        let deployments = deployments.clone();
        async move {
            (deployments.get("web").await.ok()?.status?.ready_replicas == Some(2)).then_some(())
        }
    })
    .await;

    // Scale through the subresource.
    let scale = deployments.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(2));
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=web"));
    deployments
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    let scaled = deployments.get("web").await.unwrap();
    assert_eq!(scaled.spec.as_ref().unwrap().replicas, Some(5));
    assert_eq!(
        scaled.metadata.generation,
        Some(2),
        "a spec change bumps generation"
    );

    // A label change does not bump generation; a status write through the main resource is ignored.
    let labelled = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}, "status": {"replicas": 99}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2));
    assert_ne!(labelled.status.unwrap().replicas, Some(99));
    // A spec write through /status is ignored.
    let status_write = deployments
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}, "status": {"observedGeneration": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(status_write.spec.unwrap().replicas, Some(5));
    assert_eq!(status_write.status.unwrap().observed_generation, Some(7));
}

#[tokio::test]
async fn server_side_apply_records_managers_and_detects_conflicts() {
    let (_sim, client) = cluster(fast()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied", "labels": {"owner": "a"}}, "data": {"one": "1", "two": "2"}});
    let applied = cms
        .patch(
            "applied",
            &PatchParams::apply("manager-a"),
            &Patch::Apply(&config),
        )
        .await
        .unwrap();
    let managers: Vec<String> = applied
        .metadata
        .managed_fields
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}:{}",
                m.manager.clone().unwrap(),
                m.operation.clone().unwrap()
            )
        })
        .collect();
    assert_eq!(managers, vec!["manager-a:Apply"]);

    let rival = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"one": "changed"}});
    let conflict = api_error(
        cms.patch(
            "applied",
            &PatchParams::apply("manager-b"),
            &Patch::Apply(&rival),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(conflict.code, 409);
    assert!(
        conflict.message.contains("manager-a"),
        "{}",
        conflict.message
    );
    let forced = cms
        .patch(
            "applied",
            &PatchParams::apply("manager-b").force(),
            &Patch::Apply(&rival),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.as_ref().unwrap()["one"], "changed");

    // manager-a stops applying "two": it is removed; "one" now belongs to manager-b and stays.
    let shrunk = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied", "labels": {"owner": "a"}}, "data": {}});
    let after = cms
        .patch(
            "applied",
            &PatchParams::apply("manager-a"),
            &Patch::Apply(&shrunk),
        )
        .await
        .unwrap();
    let data = after.data.unwrap_or_default();
    assert!(!data.contains_key("two"), "{data:?}");
    assert_eq!(data["one"], "changed");

    // Apply creates a missing object.
    let fresh = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fresh"}, "data": {"a": "b"}});
    cms.patch(
        "fresh",
        &PatchParams::apply("manager-a"),
        &Patch::Apply(&fresh),
    )
    .await
    .unwrap();
    assert!(cms.get("fresh").await.is_ok());

    // An update records its manager too.
    let updated = cms
        .patch(
            "fresh",
            &PatchParams {
                field_manager: Some("editor".into()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"data": {"a": "c"}})),
        )
        .await
        .unwrap();
    assert!(
        updated
            .metadata
            .managed_fields
            .unwrap()
            .iter()
            .any(|m| m.manager.as_deref() == Some("editor")
                && m.operation.as_deref() == Some("Update"))
    );
}

#[tokio::test]
async fn watchers_and_reflectors_recover_from_410_and_dropped_watches() {
    let (sim, client) = cluster(fast()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..3 {
        cms.create(
            &PostParams::default(),
            &cm(&format!("w{i}"), json!({"watched": "yes"})),
        )
        .await
        .unwrap();
    }
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector(
        writer,
        watcher(
            cms.clone(),
            watcher::Config::default().labels("watched=yes"),
        ),
    )
    .applied_objects();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while stream.next().await.is_some() {}
    });
    eventually(Duration::from_secs(5), "initial sync", || {
        let reader = reader.clone();
        async move { (reader.state().len() == 3).then_some(()) }
    })
    .await;

    // Forget the event log and cut every watch: the watcher re-watches from a resourceVersion
    // that is now too old, gets 410 Gone, re-lists, and converges.
    sim.sim().store.compact();
    sim.sim().faults.drop_watches();
    cms.create(&PostParams::default(), &cm("w3", json!({"watched": "yes"})))
        .await
        .unwrap();
    cms.delete("w0", &DeleteParams::default()).await.unwrap();
    cms.create(
        &PostParams::default(),
        &cm("unwatched", json!({"watched": "no"})),
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(10), "resync after 410", || {
        let reader = reader.clone();
        async move {
            let mut names: Vec<String> = reader
                .state()
                .iter()
                .filter_map(|c| c.metadata.name.clone())
                .collect();
            names.sort();
            (names == ["w1", "w2", "w3"]).then_some(())
        }
    })
    .await;

    // A label change that moves an object out of the selector reaches the watcher as a deletion.
    cms.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"watched": "no"}}})),
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(5), "selector transition", || {
        let reader = reader.clone();
        async move {
            reader
                .state()
                .iter()
                .all(|c| c.metadata.name.as_deref() != Some("w1"))
                .then_some(())
        }
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn streaming_lists_end_their_initial_events_with_a_bookmark() {
    let (_sim, client) = cluster(fast()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..3 {
        cms.create(&PostParams::default(), &cm(&format!("s{i}"), json!({})))
            .await
            .unwrap();
    }
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector(
        writer,
        watcher(cms.clone(), watcher::Config::default().streaming_lists()),
    )
    .applied_objects();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while stream.next().await.is_some() {}
    });
    reader.wait_until_ready().await.unwrap();
    assert_eq!(reader.state().len(), 3);
    task.abort();
}

#[tokio::test]
async fn watch_from_a_compacted_resource_version_gets_410_gone() {
    let (sim, client) = cluster(fast()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let created = cms
        .create(&PostParams::default(), &cm("x", json!({})))
        .await
        .unwrap();
    let old_rv = created.metadata.resource_version.unwrap();
    cms.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();
    sim.sim().store.compact();
    let mut stream = cms
        .watch(&kube::api::WatchParams::default(), &old_rv)
        .await
        .unwrap()
        .boxed();
    match stream.next().await {
        Some(Ok(kube::api::WatchEvent::Error(e))) => assert_eq!(e.code, 410),
        Some(Err(kube::Error::Api(e))) => assert_eq!(e.code, 410),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
}

#[tokio::test]
async fn finalizers_and_owner_references_are_honoured() {
    let (_sim, client) = cluster(fast()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut held = cm("held", json!({}));
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &held).await.unwrap();
    cms.delete("held", &DeleteParams::default()).await.unwrap();
    let marked = cms.get("held").await.unwrap();
    assert!(
        marked.metadata.deletion_timestamp.is_some(),
        "kept until its finalizer goes"
    );
    let readd = api_error(
        cms.patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": ["example.com/hold", "example.com/new"]}}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(readd.code, 422, "no new finalizers while deleting");
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_error(cms.get("held").await.unwrap_err()).code, 404);

    // Cascade: a ConfigMap owned by a Deployment goes with it.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let owner = deployments
        .create(&PostParams::default(), &deployment("owner", 1))
        .await
        .unwrap();
    let mut dependent = cm("dependent", json!({}));
    dependent.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "owner".into(),
            uid: owner.metadata.uid.clone().unwrap(),
            ..Default::default()
        },
    ]);
    cms.create(&PostParams::default(), &dependent)
        .await
        .unwrap();
    deployments
        .delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the dependent to be collected",
        || {
            let cms = cms.clone();
            async move {
                matches!(cms.get("dependent").await, Err(kube::Error::Api(e)) if e.code == 404)
                    .then_some(())
            }
        },
    )
    .await;

    // Deleting a namespace removes what it holds.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap(),
        )
        .await
        .unwrap();
    let doomed: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    let mut inside = cm("inside", json!({}));
    inside.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    doomed
        .create(&PostParams::default(), &inside)
        .await
        .unwrap();
    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    // The held object keeps the namespace terminating; new content is refused meanwhile.
    let terminating = api_error(
        doomed
            .create(&PostParams::default(), &cm("late", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(terminating.code, 403);
    eventually(
        Duration::from_secs(10),
        "the held object to be marked for deletion",
        || {
            let doomed = doomed.clone();
            async move {
                doomed
                    .get("inside")
                    .await
                    .ok()?
                    .metadata
                    .deletion_timestamp
                    .map(|_| ())
            }
        },
    )
    .await;
    doomed
        .patch(
            "inside",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the namespace to go", || {
        let namespaces = namespaces.clone();
        async move {
            matches!(namespaces.get("doomed").await, Err(kube::Error::Api(e)) if e.code == 404)
                .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn two_lease_contenders_never_both_hold_the_lease() {
    let (_sim, client) = cluster(fast()).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let lease = |holder: &str| -> Lease {
        serde_json::from_value(json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}})).unwrap()
    };
    // Both try to create the Lease at once: one wins, the other sees AlreadyExists.
    let pp = PostParams::default();
    let (lease_a, lease_b) = (lease("a"), lease("b"));
    let (a, b) = tokio::join!(leases.create(&pp, &lease_a), leases.create(&pp, &lease_b));
    let results = [a.map(|_| ()), b.map(|_| ())];
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    // Both try to take it over from the same observed version: one wins, the other conflicts.
    let observed = leases.get("leader").await.unwrap();
    let mut c = observed.clone();
    c.spec.as_mut().unwrap().holder_identity = Some("c".into());
    let mut d = observed.clone();
    d.spec.as_mut().unwrap().holder_identity = Some("d".into());
    let (c, d) = tokio::join!(
        leases.replace("leader", &pp, &c),
        leases.replace("leader", &pp, &d)
    );
    let outcomes = [c.map(|_| ()), d.map(|_| ())];
    assert_eq!(outcomes.iter().filter(|r| r.is_ok()).count(), 1);
    let loser = outcomes.into_iter().find_map(Result::err).unwrap();
    assert_eq!(api_error(loser).code, 409);
}

#[tokio::test]
async fn keda_crds_are_served_with_validation_defaults_and_status() {
    let (_sim, client) = cluster(fast()).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in ringscale_api::crds::all() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let established = crds.get("scaledobjects.keda.sh").await.unwrap();
    assert!(
        established
            .status
            .unwrap()
            .conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );

    let sos: Api<ScaledObject> = Api::namespaced(client.clone(), "default");
    let so: ScaledObject = serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "worker"},
        "spec": {"scaleTargetRef": {"name": "worker"}, "fallback": {"failureThreshold": 3, "replicas": 2},
                 "triggers": [{"type": "redis", "metadata": {"listName": "jobs"}}]}
    }))
    .unwrap();
    let created = sos.create(&PostParams::default(), &so).await.unwrap();
    assert_eq!(
        created.spec.fallback.unwrap().behavior.unwrap().as_str(),
        "static",
        "schema default applied"
    );

    // Schema validation: 422 with the field path.
    let mut invalid = so.clone();
    invalid.metadata.name = Some("invalid".into());
    invalid.spec.min_replica_count = Some(-1);
    let err = api_error(
        sos.create(&PostParams::default(), &invalid)
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(
        err.message.contains("spec.minReplicaCount"),
        "{}",
        err.message
    );
    // The CEL rule min <= max.
    let mut crossed = so.clone();
    crossed.metadata.name = Some("crossed".into());
    crossed.spec.min_replica_count = Some(5);
    crossed.spec.max_replica_count = Some(3);
    let err = api_error(
        sos.create(&PostParams::default(), &crossed)
            .await
            .unwrap_err(),
    );
    assert!(
        err.message
            .contains("minReplicaCount must be less than or equal to maxReplicaCount"),
        "{}",
        err.message
    );

    // Status goes through /status only; generation follows spec changes only.
    let status = sos
        .patch_status(
            "worker",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"hpaName": "keda-hpa-worker"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        status.status.unwrap().hpa_name.as_deref(),
        Some("keda-hpa-worker")
    );
    assert_eq!(status.metadata.generation, Some(1));
    let respec = sos
        .patch(
            "worker",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"pollingInterval": 10}, "status": {"hpaName": "ignored"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(respec.metadata.generation, Some(2));
    assert_eq!(
        respec.status.as_ref().unwrap().hpa_name.as_deref(),
        Some("keda-hpa-worker")
    );

    // Strategic merge patch is refused for custom resources; an update needs a resourceVersion.
    let smp = api_error(
        sos.patch(
            "worker",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(smp.code, 415);
    let mut no_rv = respec.clone();
    no_rv.metadata.resource_version = None;
    let err = api_error(
        sos.replace("worker", &PostParams::default(), &no_rv)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);

    // Deleting the CRD removes its objects and its kind.
    crds.delete("scaledobjects.keda.sh", &DeleteParams::default())
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the CRD to go", || {
        let crds = crds.clone();
        async move { matches!(crds.get("scaledobjects.keda.sh").await, Err(kube::Error::Api(e)) if e.code == 404).then_some(()) }
    })
    .await;
    assert_eq!(
        api_error(sos.list(&ListParams::default()).await.unwrap_err()).code,
        404
    );
}

#[tokio::test]
async fn jobs_run_their_pods_to_completion() {
    let (_sim, client) = cluster(fast()).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "once"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = eventually(Duration::from_secs(5), "the job's pod", || {
        let pods = pods.clone();
        async move {
            pods.list(&ListParams::default().labels("job-name=once"))
                .await
                .ok()?
                .items
                .into_iter()
                .next()
        }
    })
    .await;
    assert!(
        pod.metadata.owner_references.unwrap()[0]
            .controller
            .unwrap_or(false)
    );
    eventually(Duration::from_secs(5), "completion", || {
        let jobs = jobs.clone();
        async move { (jobs.get("once").await.ok()?.status?.succeeded == Some(1)).then_some(()) }
    })
    .await;
}

mod metrics_backend {
    //! A minimal aggregated API server for `external.metrics.k8s.io`, as a test backend.

    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    /// What the backend saw.
    #[derive(Default)]
    pub struct Seen {
        pub users: Vec<String>,
        pub client_cns: Vec<String>,
    }

    pub async fn start(
        value: Arc<Mutex<String>>,
        seen: Arc<Mutex<Seen>>,
        front_proxy_ca_pem: &str,
    ) -> String {
        let ca = ringscale_kube_sim::tls::Authority::new("backend-ca").unwrap();
        let identity = ca.issue_server(&["127.0.0.1"]).unwrap();
        let (chain, key) = identity.rustls_parts();
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject as _;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(front_proxy_ca_pem.as_bytes())
        {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let value = value.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let cn = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(ringscale_kube_sim::tls::subject_of)
                        .map(|(cn, _)| cn);
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<Incoming>| {
                            let value = value.clone();
                            let seen = seen.clone();
                            let cn = cn.clone();
                            async move {
                                let user = req
                                    .headers()
                                    .get("X-Remote-User")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_owned();
                                {
                                    let mut seen = seen.lock().unwrap();
                                    seen.users.push(user);
                                    seen.client_cns.extend(cn);
                                }
                                let metric = req
                                    .uri()
                                    .path()
                                    .rsplit('/')
                                    .next()
                                    .unwrap_or_default()
                                    .to_owned();
                                let v = value.lock().unwrap().clone();
                                let body = serde_json::json!({"kind": "ExternalMetricValueList", "apiVersion": "external.metrics.k8s.io/v1beta1", "metadata": {},
                                "items": [{"metricName": metric, "metricLabels": null, "timestamp": "2026-01-01T00:00:00Z", "value": v}]});
                                let mut response =
                                    hyper::Response::new(Full::new(Bytes::from(body.to_string())));
                                response
                                    .headers_mut()
                                    .insert("content-type", "application/json".parse().unwrap());
                                Ok::<_, Infallible>(response)
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        url
    }
}

#[tokio::test]
async fn the_hpa_scales_a_deployment_from_an_external_metric_through_the_aggregation_layer() {
    let (sim, client) = cluster(fast()).await;
    let value = Arc::new(std::sync::Mutex::new("10".to_owned()));
    let seen = Arc::new(std::sync::Mutex::new(metrics_backend::Seen::default()));
    let url = metrics_backend::start(value.clone(), seen.clone(), sim.front_proxy_ca_pem()).await;
    sim.sim()
        .backends
        .set("v1beta1.external.metrics.k8s.io", vec![url]);
    let apiservices: Api<k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService> =
        Api::all(client.clone());
    apiservices
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "v1beta1.external.metrics.k8s.io"},
                "spec": {"group": "external.metrics.k8s.io", "version": "v1beta1", "insecureSkipTLSVerify": true,
                         "groupPriorityMinimum": 100, "versionPriority": 100, "service": {"name": "ringscale-metrics", "namespace": "ringscale"}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .create(&PostParams::default(), &deployment("consumer", 1))
        .await
        .unwrap();
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), "default");
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "metadata": {"name": "keda-hpa-consumer"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "consumer"},
            "minReplicas": 1, "maxReplicas": 8,
            "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
                {"type": "Pods", "value": 4, "periodSeconds": 1}, {"type": "Percent", "value": 100, "periodSeconds": 1}]}},
            "metrics": [{"type": "External", "external": {
                "metric": {"name": "s0-redis-jobs", "selector": {"matchLabels": {"scaledobject.keda.sh/name": "consumer"}}},
                "target": {"type": "AverageValue", "averageValue": "2"}}}]
        }
    }))
    .unwrap();
    hpas.create(&PostParams::default(), &hpa).await.unwrap();

    // 10 / 2 per replica = 5 replicas (first step allowed: max(1 + 4, 2 × 1) = 5).
    eventually(Duration::from_secs(10), "scale up to 5", || {
        let deployments = deployments.clone();
        async move { (deployments.get("consumer").await.ok()?.spec?.replicas == Some(5)).then_some(()) }
    })
    .await;
    // More load: 30 / 2 = 15; a second later the policy allows 10, capped at maxReplicas 8.
    *value.lock().unwrap() = "30".to_owned();
    let status = eventually(Duration::from_secs(10), "scale to the maximum", || {
        let hpas = hpas.clone();
        let deployments = deployments.clone();
        async move {
            (deployments.get("consumer").await.ok()?.spec?.replicas == Some(8)).then_some(())?;
            hpas.get("keda-hpa-consumer").await.ok()?.status
        }
    })
    .await;
    assert!(
        status
            .conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "ScalingLimited" && c.reason.as_deref() == Some("TooManyReplicas"))
    );
    {
        let seen = seen.lock().unwrap();
        assert!(
            seen.users
                .iter()
                .all(|u| u == "system:serviceaccount:kube-system:horizontal-pod-autoscaler")
        );
        assert!(
            seen.client_cns.iter().all(|cn| cn == "front-proxy-client")
                && !seen.client_cns.is_empty()
        );
    }

    // The aggregated API is also reachable through the API server by clients.
    let raw = client
        .request_text(http::Request::get("/apis/external.metrics.k8s.io/v1beta1/namespaces/default/s0-redis-jobs?labelSelector=scaledobject.keda.sh%2Fname%3Dconsumer").body(Vec::new()).unwrap())
        .await
        .unwrap();
    assert!(raw.contains("ExternalMetricValueList"), "{raw}");
}

#[tokio::test]
async fn injected_faults_reach_clients() {
    let (sim, client) = cluster_with_retries(fast(), false).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    sim.sim().faults.add_error(ringscale_kube_sim::ErrorRule {
        except_resources: Vec::new(),
        verbs: vec!["create".into()],
        rate: 1.0,
        error: ringscale_kube_sim::InjectedError::Throttle {
            retry_after_seconds: 3,
        },
    });
    let err = api_error(
        cms.create(&PostParams::default(), &cm("t", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 429);
    assert!(
        cms.list(&ListParams::default()).await.is_ok(),
        "other verbs are unaffected"
    );
    sim.sim()
        .faults
        .set_outage(Some(ringscale_kube_sim::OutageMode::Unavailable));
    assert_eq!(
        api_error(cms.list(&ListParams::default()).await.unwrap_err()).code,
        503
    );
    sim.sim().faults.clear();
    cms.create(&PostParams::default(), &cm("t", json!({})))
        .await
        .unwrap();

    // A refused outage: connections fail, then the server listens again on the same port.
    sim.sim()
        .faults
        .set_outage(Some(ringscale_kube_sim::OutageMode::Refuse));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr: std::net::SocketAddr = sim.url().trim_start_matches("https://").parse().unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "connections are refused"
    );
    sim.sim().faults.clear();
    eventually(
        Duration::from_secs(10),
        "the server to listen again",
        || {
            let cms = cms.clone();
            async move { cms.get("t").await.ok() }
        },
    )
    .await;

    let counts = sim.sim().stats.counts();
    assert!(
        counts
            .iter()
            .any(|(k, n)| k.verb == "create" && k.code == 429 && *n >= 1)
    );
    assert!(
        sim.sim().stats.log().iter().any(|r| r.verb == "create"
            && r.resource == "configmaps"
            && r.user == "kube-sim-admin")
    );
}

#[tokio::test]
async fn the_admin_endpoint_controls_faults_and_reports_requests() {
    let (_sim, client) = cluster_with_retries(fast(), false).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("counted", json!({})))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("also", json!({"gone": "yes"})))
        .await
        .unwrap();
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("gone=yes"),
    )
    .await
    .unwrap();
    assert_eq!(
        cms.list(&ListParams::default()).await.unwrap().items.len(),
        1,
        "deletecollection honoured the selector"
    );

    let put = |path: &str, body: Value| {
        http::Request::put(path)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .unwrap()
    };
    client
        .request_text(put(
            "/_sim/faults",
            json!({"errors": [{"verbs": ["get"], "rate": 1.0, "error": {"type": "internal"}}]}),
        ))
        .await
        .unwrap();
    assert_eq!(api_error(cms.get("counted").await.unwrap_err()).code, 500);
    let spec = client
        .request_text(http::Request::get("/_sim/faults").body(Vec::new()).unwrap())
        .await
        .unwrap();
    assert!(spec.contains("\"internal\""), "{spec}");
    client
        .request_text(
            http::Request::delete("/_sim/faults")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(cms.get("counted").await.is_ok());

    let stats: Value = serde_json::from_str(
        &client
            .request_text(http::Request::get("/_sim/stats").body(Vec::new()).unwrap())
            .await
            .unwrap(),
    )
    .unwrap();
    // "counted" and the bootstrapped kube-system/extension-apiserver-authentication.
    assert_eq!(stats["objects"]["configmaps"], 2);
    assert!(
        stats["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["verb"] == "get" && r["code"] == 500)
    );
    let metrics = client
        .request_text(
            http::Request::get("/_sim/metrics")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(metrics.contains("kubesim_requests_total{verb=\"deletecollection\",group=\"\",resource=\"configmaps\",code=\"200\"} 1"), "{metrics}");
    assert!(metrics.contains("kubesim_open_watches"));
    let requests: Value = serde_json::from_str(
        &client
            .request_text(
                http::Request::get("/_sim/requests")
                    .body(Vec::new())
                    .unwrap(),
            )
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(
        requests
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["verb"] == "create" && r["name"].is_null() && r["namespace"] == "default")
    );
}

#[tokio::test]
async fn the_hpa_scales_on_cpu_utilisation() {
    let (sim, client) = cluster(fast()).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .create(&PostParams::default(), &deployment("cpu-bound", 2))
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "ready replicas", || {
        let deployments = deployments.clone();
        async move {
            (deployments
                .get("cpu-bound")
                .await
                .ok()?
                .status?
                .ready_replicas
                == Some(2))
            .then_some(())
        }
    })
    .await;
    sim.sim().set_utilization(
        "default",
        "Deployment",
        "cpu-bound",
        ringscale_kube_sim::Utilization {
            cpu: Some(160.0),
            memory: None,
        },
    );
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), "default");
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "metadata": {"name": "cpu-bound"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "cpu-bound"}, "minReplicas": 1, "maxReplicas": 10,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}
    }))
    .unwrap();
    hpas.create(&PostParams::default(), &hpa).await.unwrap();
    // 160% against 80%: ratio 2 with 2 ready pods → 4.
    eventually(Duration::from_secs(10), "scale to 4", || {
        let deployments = deployments.clone();
        async move { (deployments.get("cpu-bound").await.ok()?.spec?.replicas == Some(4)).then_some(()) }
    })
    .await;
}

/// As on a real cluster (seen on v1.28.4 with ringscale's metrics API down): a namespace's
/// contents are deleted, but the namespace stays Terminating, with the namespace controller's
/// discovery-failure condition, while an aggregated API has no backend; it goes once one is back.
#[tokio::test]
async fn namespace_deletion_waits_for_an_unavailable_aggregated_api() {
    let (sim, client) = cluster(fast()).await;
    let apiservices: Api<k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService> =
        Api::all(client.clone());
    apiservices
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "v1beta1.external.metrics.k8s.io"},
                "spec": {"group": "external.metrics.k8s.io", "version": "v1beta1", "insecureSkipTLSVerify": true,
                         "groupPriorityMinimum": 100, "versionPriority": 100, "service": {"name": "ringscale-metrics", "namespace": "ringscale"}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "tenant"}})).unwrap(),
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "tenant");
    cms.create(&PostParams::default(), &cm("c", json!({})))
        .await
        .unwrap();
    namespaces
        .delete("tenant", &DeleteParams::default())
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the contents deleted", || async {
        cms.get_opt("c").await.unwrap().is_none().then_some(())
    })
    .await;
    let condition = eventually(
        Duration::from_secs(10),
        "the discovery-failure condition",
        || async {
            let ns = namespaces.get("tenant").await.ok()?;
            ns.status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "NamespaceDeletionDiscoveryFailure" && c.status == "True")
        },
    )
    .await;
    assert!(
        condition
            .message
            .as_deref()
            .is_some_and(|m| m.contains("external.metrics.k8s.io/v1beta1")),
        "{condition:?}"
    );
    // Still there a while later: the deletion waits, it does not give up or go ahead.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let ns = namespaces.get("tenant").await.unwrap();
    assert_eq!(
        ns.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    // The metrics API is back: the namespace goes.
    sim.sim().backends.set(
        "v1beta1.external.metrics.k8s.io",
        vec!["https://127.0.0.1:9".into()],
    );
    eventually(Duration::from_secs(10), "the namespace gone", || async {
        namespaces
            .get_opt("tenant")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}
