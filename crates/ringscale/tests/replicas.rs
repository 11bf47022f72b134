//! Three `ringscale run` processes on kube-sim, end to end: a Redis list grows, every replica
//! serves the value through the aggregation layer, the simulated HPA scales the Deployment, a
//! replica is killed, the list drains and the cooldown brings the Deployment back to 0; then a
//! ReplicaSet target, a spec change, a deletion and a ScaledJob. The replicas run as the Helm
//! chart's ServiceAccount, and the calls they made are checked against the chart's RBAC.
//!
//! The same test runs against a real cluster when `RINGSCALE_TEST_KUBECONFIG` is set
//! (support/cluster.rs lists the variables; docs/real-cluster.md how it was run).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
use support::cluster::TestCluster;
use support::eventually;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use ringscale_kube_sim::Config;
use serde_json::json;

/// The user the replicas run as: the chart's ServiceAccount (release `ringscale` in namespace
/// `ringscale`).
const SERVICE_ACCOUNT: &str = "system:serviceaccount:ringscale:ringscale";

use ringscale_testkit::free_port;

/// A replica process, killed on drop.
struct Replica {
    child: Child,
    admin: u16,
    metrics: u16,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn replica(
    name: &str,
    dir: &std::path::Path,
    kubeconfig: &std::path::Path,
    ring: &str,
    listen: std::net::IpAddr,
) -> Replica {
    let (admin, metrics) = (free_port(), free_port());
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ringscale"))
        .args(["run", "--name", name, "--ring", ring])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--replication-listen", "127.0.0.1:0"])
        .args([
            "--metrics-api-listen",
            &std::net::SocketAddr::new(listen, metrics).to_string(),
        ])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args([
            "--lease-duration",
            "3",
            "--renew-deadline",
            "2",
            "--retry-period",
            "0.5",
        ])
        .args(["--log", "info,ringscale_operator=debug"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Replica {
        child,
        admin,
        metrics,
    }
}

/// The status code of a plain HTTP GET to `127.0.0.1:port/path`.
async fn status_of(port: u16, path: &str) -> Option<u16> {
    Some(get_plain(port, path).await?.0)
}

/// A plain HTTP GET to `127.0.0.1:port/path`: status code and body.
async fn get_plain(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .ok()?
    .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&response);
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some((code, body))
}

/// The DOM of `url` as headless Chromium renders it; `None` (with a SKIP line) when Chromium is
/// not installed and services are not required.
async fn browser_dump(url: &str) -> Option<String> {
    let browser = std::env::var("RINGSCALE_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let profile = std::env::temp_dir().join(format!("ringscale-chromium-{}", std::process::id()));
    let child = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            if std::env::var("RINGSCALE_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
                panic!(
                    "{browser} (headless Chromium) is required (RINGSCALE_REQUIRE_SERVICES=1): {e}"
                );
            }
            eprintln!(
                "SKIP: {browser} (headless Chromium) is not installed (set RINGSCALE_CHROMIUM): {e}"
            );
            return None;
        }
    };
    // Read while it runs, so a large page cannot fill the pipe and stall it.
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
        out
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{browser} did not finish loading {url}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = reader.join().unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    Some(out)
}

async fn metric_value(client: &Client, ns: &str, list: &str) -> Option<String> {
    let path = format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/s0-redis-{list}?labelSelector=scaledobject.keda.sh%2Fname%3Dconsumer"
    );
    let request = http::Request::get(path).body(Vec::new()).ok()?;
    let text = client.request_text(request).await.ok()?;
    let body: serde_json::Value = serde_json::from_str(&text).ok()?;
    body["items"][0]["value"].as_str().map(str::to_owned)
}

async fn replicas(client: &Client, ns: &str) -> Option<i32> {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get("consumer")
        .await
        .ok()?
        .spec?
        .replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_scale_a_deployment_from_a_redis_list_and_survive_a_kill() {
    let redis_addr = std::env::var("REDIS_ADDR").unwrap_or_else(|_| "127.0.0.1:6379".into());
    let redis = match redis::Client::open(format!("redis://{redis_addr}")) {
        Ok(c) => c,
        Err(e) => panic!("REDIS_ADDR {redis_addr}: {e}"),
    };
    let mut conn = match redis.get_multiplexed_async_connection().await {
        Ok(c) => c,
        Err(e) => {
            if std::env::var("RINGSCALE_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
                panic!(
                    "Redis is required (RINGSCALE_REQUIRE_SERVICES=1) but not reachable at {redis_addr}: {e}"
                );
            }
            eprintln!("SKIP: Redis not reachable at {redis_addr} (set REDIS_ADDR): {e}");
            return;
        }
    };
    let list = format!(
        "ringscale-e2e-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );

    let dir = std::env::temp_dir().join(format!("ringscale-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cluster = TestCluster::start(
        Config {
            workload_delay: Duration::from_millis(50),
            hpa_sync_period: Duration::from_millis(500),
            job_duration: Duration::from_secs(1),
            ..Config::default()
        },
        &dir,
        SERVICE_ACCOUNT,
        "e2e",
    )
    .await;
    let client = cluster.client.clone();
    let ns = cluster.namespace.clone();
    let ns = ns.as_str();
    let within = cluster.within();
    // The replicas run as the chart's ServiceAccount would; they read the front proxy's CA from
    // kube-system/extension-apiserver-authentication, as in a cluster.
    let user = cluster.replica_user(SERVICE_ACCOUNT).to_owned();
    let replica_kubeconfig = cluster.replica_kubeconfig(
        &dir,
        SERVICE_ACCOUNT,
        &["system:serviceaccounts", "system:serviceaccounts:ringscale"],
    );
    // A ring of this test's own (its Leases do not meet an earlier run's on a real cluster).
    let ring_name = format!("e2e-{}", std::process::id());
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "consumer"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "consumer"}},
                 "template": {"metadata": {"labels": {"app": "consumer"}},
                              "spec": {"containers": [{"name": "c", "image": "c:1"}]}}}
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let so: ringscale_api::ScaledObject = serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "consumer"},
        "spec": {
            "scaleTargetRef": {"name": "consumer"},
            "pollingInterval": 1, "cooldownPeriod": 4, "maxReplicaCount": 5,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Pods", "value": 5, "periodSeconds": 1}]}
            }}},
            "triggers": [{"type": "redis", "metadata": {"address": redis_addr, "listName": list, "listLength": "2"}}]
        }
    }))
    .unwrap();
    Api::<ringscale_api::ScaledObject>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &so)
        .await
        .unwrap();

    let mut ring: Vec<Replica> = ["r0", "r1", "r2"]
        .iter()
        .map(|n| {
            replica(
                n,
                &dir,
                &replica_kubeconfig,
                &ring_name,
                cluster.listen_ip(),
            )
        })
        .collect();
    let backends = |ring: &[Replica]| ring.iter().map(|r| r.metrics).collect::<Vec<_>>();
    cluster.set_metrics_backends(&backends(&ring)).await;
    let apiservice: APIService = serde_json::from_value(json!({
        "metadata": {"name": "v1beta1.external.metrics.k8s.io"},
        "spec": {"group": "external.metrics.k8s.io", "version": "v1beta1", "insecureSkipTLSVerify": true,
                 "groupPriorityMinimum": 100, "versionPriority": 100,
                 "service": {"name": "ringscale-metrics", "namespace": "ringscale"}}
    }))
    .unwrap();
    let apiservices = Api::<APIService>::all(client.clone());
    match apiservices
        .create(&PostParams::default(), &apiservice)
        .await
    {
        Ok(_) => {}
        // A real cluster may have it from the chart: point it at the test's Service.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let spec = serde_json::to_value(&apiservice.spec).unwrap();
            apiservices
                .patch(
                    "v1beta1.external.metrics.k8s.io",
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "spec": spec })),
                )
                .await
                .unwrap();
        }
        Err(e) => panic!("{e}"),
    }
    for r in &ring {
        eventually(within, "every replica ready", || async {
            (status_of(r.admin, "/readyz").await? == 200).then_some(())
        })
        .await;
    }

    // The list grows: every replica (the aggregator uses them in turn) serves 6.
    let _: () = redis::cmd("RPUSH")
        .arg(&list)
        .arg(&["a", "b", "c", "d", "e", "f"])
        .query_async(&mut conn)
        .await
        .unwrap();
    eventually(within, "6 from three replicas in a row", || async {
        for _ in 0..3 {
            if metric_value(&client, ns, &list).await.as_deref() != Some("6") {
                return None;
            }
        }
        Some(())
    })
    .await;
    // 6 / 2 per replica: the HPA scales the Deployment to 3.
    eventually(within, "3 replicas", || async {
        (replicas(&client, ns).await == Some(3)).then_some(())
    })
    .await;

    // Prometheus: KEDA's names, the ring, and the replica's API requests by verb.
    let (code, metrics) = get_plain(ring[0].admin, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    for want in [
        "ringscale_ring_generation ",
        "ringscale_ring_members 3",
        "ringscale_kube_api_requests_total{verb=\"watch\"}",
        "ringscale_metrics_api_requests_total{source=\"cache\"}",
        "ringscale_replication_lag_seconds_count",
        "ringscale_operator_cycles_total ",
        "ringscale_operator_writes_total{kind=\"scale\"}",
    ] {
        assert!(
            metrics.contains(want),
            "/metrics lacks {want:?}:\n{metrics}"
        );
    }
    // The owner exports the object's series under KEDA's names.
    let mut owner_series = 0;
    for r in &ring {
        let (_, metrics) = get_plain(r.admin, "/metrics").await.unwrap();
        let latency = format!(
            "keda_internal_scale_loop_latency_seconds{{namespace=\"{ns}\",type=\"scaledobject\",resource=\"consumer\"}}"
        );
        let value = format!("keda_scaler_metrics_value{{namespace=\"{ns}\"");
        if metrics.contains(&latency) && metrics.contains(&value) {
            owner_series += 1;
        }
    }
    assert_eq!(
        owner_series, 1,
        "exactly the owner exports the object's series"
    );

    // The status page, as a browser shows it: the target's ready/desired as the cluster says
    // (3/3 on kube-sim once its workload delay passed; on a real cluster without kubelets or
    // images the pods never get ready). The readiness is settled first, as the page shows the
    // watch's view of it.
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    let ready_of = || async {
        deployments
            .get("consumer")
            .await
            .ok()?
            .status
            .and_then(|s| s.ready_replicas)
            .or(Some(0))
    };
    let mut ready = ready_of().await.unwrap_or(0);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = ready_of().await.unwrap_or(0);
        if now == ready {
            break;
        }
        ready = now;
    }
    if let Some(page) = browser_dump(&format!("http://127.0.0.1:{}/status", ring[1].admin)).await {
        let object = format!("{ns}/consumer");
        let target = format!("consumer {ready}/3");
        let ring_line = format!("Ring <b>{ring_name}</b>, generation");
        for want in [
            ring_line.as_str(),
            "Watches every namespace",
            &object,
            "r0",
            "r1",
            "r2",
            &target,
        ] {
            assert!(
                page.contains(want),
                "the status page lacks {want:?}:\n{page}"
            );
        }
        assert!(page.contains("(this replica)"), "{page}");
    }

    // The owner of the ScaledObject is killed (SIGKILL): its Lease expires (3 s) and a survivor
    // takes the object over.
    let state = ringscale_ring::RingState::new(
        1,
        ["r0", "r1", "r2"]
            .iter()
            .map(|n| ringscale_ring::Member {
                name: (*n).to_owned(),
                address: String::new(),
            })
            .collect(),
    );
    let owner = ringscale_ring::Ring::new(state)
        .owner(&ringscale_ring::ObjectKey::new(
            ringscale_ring::Kind::ScaledObject,
            ns,
            "consumer",
        ))
        .map(|m| m.name.clone())
        .unwrap();
    let index: usize = owner.trim_start_matches('r').parse().unwrap();
    let dead = ring.remove(index);
    drop(dead);
    let killed = tokio::time::Instant::now();
    cluster.set_metrics_backends(&backends(&ring)).await;
    let _: () = redis::cmd("DEL")
        .arg(&list)
        .query_async(&mut conn)
        .await
        .unwrap();
    eventually(within, "0 from the survivors", || async {
        for _ in 0..2 {
            if metric_value(&client, ns, &list).await.as_deref() != Some("0") {
                return None;
            }
        }
        Some(())
    })
    .await;
    // Inactive past the 4 s cooldown: back to 0 by the new owner. The pause is bounded by the
    // lease (3 s), the cooldown (4 s, from the last active poll) and a poll or two.
    eventually(within, "0 replicas", || async {
        (replicas(&client, ns).await == Some(0)).then_some(())
    })
    .await;
    assert!(
        killed.elapsed() < Duration::from_secs(12),
        "took {:?} after the owner died",
        killed.elapsed()
    );

    // The rest of what replicas do to a cluster, so that the RBAC check below sees every grant
    // used: a ReplicaSet target (read through its /scale), a spec change (the HPA is replaced),
    // a deletion (the HPA goes, the finalizer is removed), and a ScaledJob (Jobs created, finished
    // ones deleted beyond the history limit).
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "batch"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "batch"}},
                 "template": {"metadata": {"labels": {"app": "batch"}},
                              "spec": {"containers": [{"name": "b", "image": "b:1"}]}}}
    }))
    .unwrap();
    Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &rs)
        .await
        .unwrap();
    let rs_list = format!("{list}-rs");
    let _: () = redis::cmd("RPUSH")
        .arg(&rs_list)
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    let sos = Api::<ringscale_api::ScaledObject>::namespaced(client.clone(), ns);
    let so: ringscale_api::ScaledObject = serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "batch"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "batch"},
            "pollingInterval": 1, "maxReplicaCount": 2,
            "triggers": [{"type": "redis", "metadata": {"address": redis_addr, "listName": rs_list, "listLength": "1"}}]
        }
    }))
    .unwrap();
    sos.create(&PostParams::default(), &so).await.unwrap();
    let rss = Api::<ReplicaSet>::namespaced(client.clone(), ns);
    eventually(within, "the ReplicaSet activated", || async {
        let rs = rss.get("batch").await.ok()?;
        (rs.spec?.replicas? >= 1).then_some(())
    })
    .await;
    sos.patch(
        "batch",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"maxReplicaCount": 3}})),
    )
    .await
    .unwrap();
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns);
    eventually(within, "the HPA follows maxReplicaCount", || async {
        (hpas.get("keda-hpa-batch").await.ok()?.spec?.max_replicas == 3).then_some(())
    })
    .await;
    sos.delete("batch", &DeleteParams::default()).await.unwrap();
    eventually(within, "the ScaledObject and its HPA gone", || async {
        let gone = sos.get_opt("batch").await.ok()?.is_none()
            && hpas.get_opt("keda-hpa-batch").await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
    let sj_list = format!("{list}-sj");
    let _: () = redis::cmd("RPUSH")
        .arg(&sj_list)
        .arg("y")
        .query_async(&mut conn)
        .await
        .unwrap();
    let sj: ringscale_api::ScaledJob = serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": "worker"},
        "spec": {
            "pollingInterval": 1, "successfulJobsHistoryLimit": 0, "maxReplicaCount": 1,
            "jobTargetRef": {"template": {"spec": {"restartPolicy": "Never",
                                                   "containers": [{"name": "w", "image": "w:1"}]}}},
            "triggers": [{"type": "redis", "metadata": {"address": redis_addr, "listName": sj_list, "listLength": "1"}}]
        }
    }))
    .unwrap();
    Api::<ringscale_api::ScaledJob>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sj)
        .await
        .unwrap();
    let jobs = Api::<Job>::namespaced(client.clone(), ns);
    let labelled = ListParams::default().labels("scaledjob.keda.sh/name=worker");
    eventually(within, "a Job for the ScaledJob", || async {
        (!jobs.list(&labelled).await.ok()?.items.is_empty()).then_some(())
    })
    .await;
    let _: () = redis::cmd("DEL")
        .arg(&sj_list)
        .query_async(&mut conn)
        .await
        .unwrap();
    eventually(
        within,
        "the finished Jobs deleted (history limit 0)",
        || async {
            cluster.finish_jobs("scaledjob.keda.sh/name=worker").await;
            jobs.list(&labelled)
                .await
                .ok()?
                .items
                .is_empty()
                .then_some(())
        },
    )
    .await;

    // SIGTERM: a clean exit (the member Lease is marked leaving, for the leave grace).
    for mut r in ring.drain(..) {
        let pid = r.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = eventually(Duration::from_secs(15), "exit after SIGTERM", || {
            let done = r.child.try_wait().ok().flatten();
            async move { done }
        })
        .await;
        assert!(status.success(), "exit status {status}");
    }
    // Every request says it is ringscale's (User-Agent), and every write names its field
    // manager, so audit logs and managedFields show `ringscale`, not `unknown`.
    let Some(mine) = cluster.requests(&user) else {
        eprintln!(
            "NOT EXERCISED: the requests the replicas made (User-Agent, field manager, RBAC) \
             are not checked: set RINGSCALE_TEST_AUDIT_LOG to the API server's audit log"
        );
        cluster.finish().await;
        let _ = std::fs::remove_dir_all(&dir);
        return;
    };
    let requests = mine.len();
    assert!(requests > 10, "{requests} requests");
    for r in &mine {
        assert!(
            r.user_agent
                .as_deref()
                .is_some_and(|ua| ua.starts_with("ringscale/")),
            "{r:?}"
        );
    }
    let writes: Vec<_> = mine
        .iter()
        .filter(|r| matches!(r.verb.as_str(), "create" | "update" | "patch"))
        .collect();
    assert!(!writes.is_empty());
    let writes_checked = writes.len();
    for r in writes {
        assert_eq!(r.field_manager.as_deref(), Some("ringscale"), "{r:?}");
    }
    // RBAC against reality: every call the replicas made is granted by the chart's rules for
    // its ServiceAccount, and every rule was used.
    let mut calls: Vec<support::Call> = mine.into_iter().filter_map(support::Call::of).collect();
    calls.sort();
    calls.dedup();
    eprintln!(
        "checked {requests} requests by {user} ({writes_checked} writes) and {} distinct calls against the chart's RBAC",
        calls.len()
    );
    if let Some(docs) = support::render(&[]) {
        let grants = support::grants(&docs, "ringscale", "ringscale");
        let problems = support::check_rbac(&calls, &grants, &[]);
        assert!(
            problems.is_empty(),
            "the chart's RBAC does not match what the replicas did:\n{}",
            problems.join("\n")
        );
    }
    cluster.finish().await;
    let _ = std::fs::remove_dir_all(&dir);
}
