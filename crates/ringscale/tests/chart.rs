//! The Helm chart (`charts/ringscale`), checked with Helm's own Go SDK (PyPI helm-python-sdk):
//! it lints clean; rendered with the default and with production-like values, every document is
//! an object of its kind that kube-sim accepts under strict field validation; and two replicas
//! started exactly as the rendered StatefulSet starts them, with the certificates the chart
//! generated, form a ring over mutual TLS and serve the external metrics API through the
//! aggregation layer with the chart's APIService (caBundle verified for the Service's name).
//! RBAC is checked in `replicas.rs`, against the calls replicas really make.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
use support::eventually;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::{ApiResource, Scope};
use ringscale_kube_sim::{Config, KubeSim};
use serde_json::{Value, json};

const PRODUCTION: &str = "ci/production-values.yaml";
const SCOPED: &str = "ci/scoped-values.yaml";

#[test]
fn the_chart_lints_clean_with_default_production_and_scoped_values() {
    for values in [None, Some(PRODUCTION), Some(SCOPED)] {
        let mut args = vec!["lint".to_owned()];
        if let Some(v) = values {
            args.extend([
                "--values".to_owned(),
                support::chart_dir().join(v).display().to_string(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let Some((ok, stdout, stderr)) = support::chart_py(&args) else {
            return;
        };
        assert!(ok, "helm lint with {values:?}:\n{stdout}\n{stderr}");
    }
}

#[test]
fn the_chart_ships_the_generated_crds() {
    let generated = ringscale_api::crds::files().unwrap();
    for (file, yaml) in generated {
        let shipped = std::fs::read_to_string(support::chart_dir().join("crds").join(&file))
            .unwrap_or_else(|e| panic!("charts/ringscale/crds/{file}: {e} (run `ringscale crds --write charts/ringscale/crds`)"));
        assert!(
            shipped == yaml,
            "charts/ringscale/crds/{file} differs from what `ringscale crds` generates: run `ringscale crds --write charts/ringscale/crds`"
        );
    }
}

async fn sim_client(sim: &KubeSim) -> Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(sim.kubeconfig()).unwrap();
    Client::try_from(
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap(),
    )
    .unwrap()
}

/// Server-side applies `doc` with strict field validation, as `kubectl apply --server-side
/// --validate=strict` does; Err with the API server's message.
async fn apply(client: &Client, doc: &Value) -> Result<(), String> {
    let api_version = doc["apiVersion"].as_str().ok_or("no apiVersion")?;
    let kind = doc["kind"].as_str().ok_or("no kind")?;
    let name = doc["metadata"]["name"].as_str().ok_or("no metadata.name")?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    let (resource, caps): (ApiResource, _) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|e| format!("{api_version} {kind} is not served: {e}"))?;
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => {
            let ns = doc["metadata"]["namespace"]
                .as_str()
                .ok_or_else(|| format!("{kind} {name} has no namespace"))?;
            Api::namespaced_with(client.clone(), ns, &resource)
        }
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    api.patch(
        name,
        &PatchParams::apply("helm").validation_strict(),
        &Patch::Apply(doc),
    )
    .await
    .map(|_| ())
    .map_err(|e| format!("{kind} {name}: {e}"))
}

/// Every rendered document is a well-formed object of its kind and kube-sim accepts it.
/// kube-sim with `namespaces` and ringscale's CRDs.
async fn cluster_with(namespaces: &[&str]) -> (KubeSim, Client) {
    let sim = KubeSim::start(Config::default()).await.unwrap();
    let client = sim_client(&sim).await;
    for name in namespaces {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }
    for crd in ringscale_api::crds::all() {
        Api::all(client.clone())
            .create(&PostParams::default(), &crd)
            .await
            .unwrap();
    }
    (sim, client)
}

async fn renders_and_applies(values: &[&str]) {
    let Some(docs) = support::render(values) else {
        return;
    };
    let sim = KubeSim::start(Config::default()).await.unwrap();
    let client = sim_client(&sim).await;
    // The release namespace and the namespaces a scoped ring watches exist before the chart is
    // installed (kube-system exists already).
    let mut namespaces: Vec<&str> = docs
        .iter()
        .filter_map(|d| d["metadata"]["namespace"].as_str())
        .filter(|ns| *ns != "kube-system")
        .collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    for name in namespaces {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }
    let third_party: Vec<Value> = serde_saphyr::from_multiple(
        &std::fs::read_to_string(support::chart_dir().join("tests/third-party-crds.yaml")).unwrap(),
    )
    .unwrap();
    for crd in &third_party {
        apply(&client, crd).await.unwrap();
    }
    let (crds, rest): (Vec<&Value>, Vec<&Value>) = docs
        .iter()
        .partition(|d| d["kind"] == "CustomResourceDefinition");
    assert_eq!(crds.len(), 4, "the chart ships the four keda.sh CRDs");
    let mut problems = Vec::new();
    for doc in crds.iter().chain(&rest) {
        if let Err(e) = apply(&client, doc).await {
            problems.push(e);
        }
    }
    assert!(
        problems.is_empty(),
        "kube-sim rejected rendered objects ({values:?}):\n{}",
        problems.join("\n")
    );
    // Typed decoding of what matters most, and a few properties a cluster operator relies on.
    let sts: StatefulSet = serde_json::from_value(
        (*rest.iter().find(|d| d["kind"] == "StatefulSet").unwrap()).clone(),
    )
    .unwrap();
    let spec = sts.spec.as_ref().unwrap();
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    let pod = spec.template.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_owned()][..])
    );
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    let spread = pod.topology_spread_constraints.as_ref().unwrap();
    let keys: Vec<&str> = spread.iter().map(|t| t.topology_key.as_str()).collect();
    assert_eq!(
        keys,
        ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    );
    for kind in [
        "Service",
        "APIService",
        "PodDisruptionBudget",
        "ServiceAccount",
        "ClusterRole",
        "FlowSchema",
        "ConfigMap",
    ] {
        assert!(
            rest.iter().any(|d| d["kind"] == kind),
            "no {kind} rendered ({values:?})"
        );
    }
    // Every environment variable the StatefulSet sets is one `ringscale run` reads.
    let help = Command::new(env!("CARGO_BIN_EXE_ringscale"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for env in c.env.iter().flatten() {
        if env.name == "POD_IP" {
            continue;
        }
        assert!(
            help.contains(&format!("[env: {}=", env.name)),
            "the StatefulSet sets {}, which `ringscale run` does not read",
            env.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_values_render_objects_kube_sim_accepts() {
    renders_and_applies(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_production_values_render_objects_kube_sim_accepts() {
    renders_and_applies(&[PRODUCTION]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scoped_values_render_objects_kube_sim_accepts() {
    renders_and_applies(&[SCOPED]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_the_chart_scopes_to_a_namespace_needs_only_its_roles_and_polls_only_its_objects() {
    let Some(docs) = support::render(&[SCOPED]) else {
        return;
    };
    // The chart grants the namespaced rules in team-a only; cluster-wide, only the
    // cluster-scoped ClusterTriggerAuthentications.
    let grants = support::grants(&docs, "ringscale", "ringscale");
    for g in grants.iter().filter(|g| g.namespace.is_none()) {
        assert_eq!(g.resources, ["clustertriggerauthentications"], "{}", g.role);
    }
    assert!(
        grants
            .iter()
            .any(|g| g.namespace.as_deref() == Some("team-a")
                && g.resources.iter().any(|r| r == "scaledobjects")),
        "no Role in team-a"
    );
    let (sim, client) = cluster_with(&["ringscale", "team-a", "team-b"]).await;
    // One producer pod per namespace: a kubernetes-workload trigger counting it is active.
    // (namespace, name, tier): only team-a/gold is this ring's.
    let objects = [
        ("team-a", "gold", "gold"),
        ("team-a", "silver", "silver"),
        ("team-b", "gold", "gold"),
    ];
    for ns in ["team-a", "team-b"] {
        apply(
            &client,
            &json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "producer", "namespace": ns, "labels": {"app": "producer"}},
                    "spec": {"containers": [{"name": "p", "image": "p:1"}]}}),
        )
        .await
        .unwrap();
    }
    for (ns, name, tier) in objects {
        apply(
            &client,
            &json!({"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                             "template": {"metadata": {"labels": {"app": name}},
                                          "spec": {"containers": [{"name": "w", "image": "w:1"}]}}}}),
        )
        .await
        .unwrap();
        apply(
            &client,
            &json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                    "metadata": {"name": name, "namespace": ns, "labels": {"tier": tier}},
                    "spec": {"scaleTargetRef": {"name": name}, "pollingInterval": 1,
                             "triggers": [{"type": "kubernetes-workload",
                                           "metadata": {"podSelector": "app=producer", "value": "1"}}]}}),
        )
        .await
        .unwrap();
    }
    let replicas = AsRendered::new(&docs, &sim, "scoped");
    let (r0, _) = replicas.start("gold-0");
    let deployment = |ns: &str, name: &str| {
        let api: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), ns);
        let name = name.to_owned();
        async move {
            api.get(&name)
                .await
                .ok()
                .and_then(|d| d.spec.and_then(|s| s.replicas))
        }
    };
    let scaled = tokio::time::timeout(
        Duration::from_secs(60),
        eventually(
            Duration::from_secs(60),
            "team-a/gold scaled to 1",
            || async { (deployment("team-a", "gold").await == Some(1)).then_some(()) },
        ),
    )
    .await;
    assert!(scaled.is_ok(), "{}", replicas.logs(&["gold-0"]));
    // A few polls more; the objects outside the scope stay as they were.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(deployment("team-a", "silver").await, Some(0));
    assert_eq!(deployment("team-b", "gold").await, Some(0));
    for (ns, name) in [("team-a", "silver"), ("team-b", "gold")] {
        let so = Api::<ringscale_api::ScaledObject>::namespaced(client.clone(), ns)
            .get(name)
            .await
            .unwrap();
        assert!(so.metadata.finalizers.is_none(), "{ns}/{name} was touched");
    }
    drop(r0);
    // Every call the replica made is one the scoped chart grants.
    let user = "system:serviceaccount:ringscale:ringscale";
    let calls: Vec<support::Call> = sim
        .sim()
        .stats
        .log()
        .into_iter()
        .filter(|r| r.user == user)
        .filter_map(support::Call::of)
        .collect();
    assert!(calls.len() > 10, "{} calls", calls.len());
    let refused: Vec<String> = calls
        .iter()
        .filter(|c| !grants.iter().any(|g| g.allows(c)))
        .map(ToString::to_string)
        .collect();
    assert!(
        refused.is_empty(),
        "the scoped chart does not grant:\n{}",
        refused.join("\n")
    );
}

/// A replica process, killed on drop.
struct Replica {
    child: Child,
    admin: u16,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

use ringscale_testkit::free_port;

/// Replicas started exactly as the rendered StatefulSet starts them — its arguments and
/// environment, the files its Secrets hold written where the pod mounts them (here: a temporary
/// directory) — as the chart's ServiceAccount (`system:serviceaccount:ringscale:ringscale`).
struct AsRendered {
    container: k8s_openapi::api::core::v1::Container,
    paths: BTreeMap<String, std::path::PathBuf>,
    dir: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
}

impl AsRendered {
    fn new(docs: &[Value], sim: &KubeSim, tag: &str) -> AsRendered {
        let find = |kind: &str, name: &str| {
            docs.iter()
                .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
                .clone()
        };
        let sts: StatefulSet = serde_json::from_value(find("StatefulSet", "ringscale")).unwrap();
        let container = sts
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .containers
            .remove(0);
        assert_eq!(container.args.as_deref(), Some(&["run".to_owned()][..]));
        let dir =
            std::env::temp_dir().join(format!("ringscale-chart-{tag}-{}", std::process::id()));
        let mut paths = BTreeMap::new();
        for (secret, mount) in [
            ("ringscale-metrics-api-tls", "/etc/ringscale/metrics-api"),
            ("ringscale-peer-tls", "/etc/ringscale/peer"),
        ] {
            let s: Secret = serde_json::from_value(find("Secret", secret)).unwrap();
            let sub = dir.join(secret);
            std::fs::create_dir_all(&sub).unwrap();
            for (key, value) in s.data.unwrap() {
                std::fs::write(sub.join(&key), &value.0).unwrap();
                paths.insert(format!("{mount}/{key}"), sub.join(&key));
            }
        }
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            sim.add_user(
                "system:serviceaccount:ringscale:ringscale",
                &["system:serviceaccounts"],
            ),
        )
        .unwrap();
        AsRendered {
            container,
            paths,
            dir,
            kubeconfig,
        }
    }

    /// Starts replica `name`; its metrics API port.
    fn start(&self, name: &str) -> (Replica, u16) {
        let (admin, metrics, replication) = (free_port(), free_port(), free_port());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringscale"));
        cmd.args(self.container.args.iter().flatten());
        for env in self.container.env.iter().flatten() {
            let value = match env.name.as_str() {
                "RINGSCALE_NAME" => name.to_owned(),
                "POD_IP" => "127.0.0.1".to_owned(),
                "RINGSCALE_REPLICATION_LISTEN" => format!("127.0.0.1:{replication}"),
                "RINGSCALE_METRICS_API_LISTEN" => format!("127.0.0.1:{metrics}"),
                "RINGSCALE_ADMIN_LISTEN" => format!("127.0.0.1:{admin}"),
                // Lease timings shortened so the test is quick; the rest as rendered.
                "RINGSCALE_LEASE_DURATION" => "3".to_owned(),
                "RINGSCALE_RENEW_DEADLINE" => "2".to_owned(),
                "RINGSCALE_RETRY_PERIOD" => "0.5".to_owned(),
                _ => {
                    let v = env
                        .value
                        .clone()
                        .unwrap_or_else(|| panic!("{} comes from {:?}", env.name, env.value_from));
                    self.paths.get(&v).map_or(v, |p| p.display().to_string())
                }
            };
            cmd.env(&env.name, value);
        }
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = cmd
            .env("RINGSCALE_KUBECONFIG", &self.kubeconfig)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        (Replica { child, admin }, metrics)
    }

    /// The replicas' logs.
    fn logs(&self, names: &[&str]) -> String {
        names
            .iter()
            .map(|n| std::fs::read_to_string(self.dir.join(format!("{n}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for AsRendered {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn get_plain(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    out.starts_with("HTTP/1.1 200").then_some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_configured_as_the_chart_configures_them_form_a_ring_over_its_certificates() {
    let Some(docs) = support::render(&[]) else {
        return;
    };
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
            .clone()
    };
    let (sim, client) = cluster_with(&["ringscale"]).await;
    let apiservice = find("APIService", "v1beta1.external.metrics.k8s.io");
    apply(&client, &apiservice).await.unwrap();

    let replicas = AsRendered::new(&docs, &sim, "ring");
    let (r0, m0) = replicas.start("ringscale-0");
    let (r1, m1) = replicas.start("ringscale-1");
    sim.sim().backends.set(
        "v1beta1.external.metrics.k8s.io",
        vec![
            format!("https://127.0.0.1:{m0}"),
            format!("https://127.0.0.1:{m1}"),
        ],
    );
    let logs = || replicas.logs(&["ringscale-0", "ringscale-1"]);
    // Each replica has its peer's first snapshot: the peer connection (mutual TLS with the
    // chart's certificate, verified as the headless Service's name) works both ways.
    for r in [&r0, &r1] {
        let admin = r.admin;
        let synced = tokio::time::timeout(
            Duration::from_secs(30),
            eventually(Duration::from_secs(30), "peers synced", || async move {
                let m = get_plain(admin, "/metrics").await?;
                m.contains("ringscale_peers_synced 1").then_some(())
            }),
        )
        .await;
        assert!(synced.is_ok(), "replicas did not sync:\n{}", logs());
    }
    // The HPA's path: the API server's aggregation layer, trusting the chart's caBundle for
    // ringscale-metrics-api.ringscale.svc, reaches the replicas' metrics API.
    let body = eventually(Duration::from_secs(30), "the external metrics API", || {
        let client = client.clone();
        async move {
            let req = http::Request::get("/apis/external.metrics.k8s.io/v1beta1")
                .body(Vec::new())
                .unwrap();
            // Bounded, so a backend that never answers fails the test instead of hanging it.
            tokio::time::timeout(Duration::from_secs(10), client.request_text(req))
                .await
                .ok()?
                .ok()
        }
    })
    .await;
    assert!(body.contains("external.metrics.k8s.io"), "{body}");
    drop((r0, r1));
}
