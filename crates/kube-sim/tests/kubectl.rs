//! The real kubectl against kube-sim: discovery, applying the project's CRDs, server-side
//! printing, server-side apply, and a watch.
//!
//! kubectl is found on PATH or at `$KUBECTL`; without it the test prints a skip line, unless
//! `RINGSCALE_REQUIRE_SERVICES=1`, where its absence is a failure.

// Test helpers, like tests, fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ringscale_kube_sim::{Config, KubeSim};

fn kubectl_binary() -> Option<PathBuf> {
    let candidate = std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("kubectl"));
    let works = Command::new(&candidate)
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Some(candidate);
    }
    if std::env::var("RINGSCALE_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!(
            "kubectl is required (RINGSCALE_REQUIRE_SERVICES=1) but {} does not run",
            candidate.display()
        );
    }
    eprintln!("SKIP kubectl tests: kubectl not found (set KUBECTL to its path)");
    None
}

struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// Runs kubectl off the async runtime (it talks to the server on this runtime).
    async fn run(&self, args: &[&str]) -> Output {
        let binary = self.binary.clone();
        let kubeconfig = self.kubeconfig.clone();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            Command::new(binary)
                .env("KUBECONFIG", kubeconfig)
                .args(&args)
                .output()
                .expect("kubectl runs")
        })
        .await
        .unwrap()
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_the_crds_and_lists_scaled_objects() {
    let Some(binary) = kubectl_binary() else {
        return;
    };
    let sim = KubeSim::start(Config::default()).await.unwrap();
    let dir = std::env::temp_dir().join(format!("kube-sim-kubectl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let kubectl = Kubectl { binary, kubeconfig };

    let apis = kubectl.ok(&["get", "--raw", "/apis"]).await;
    assert!(
        apis.contains("\"APIGroupList\"") && apis.contains("apps"),
        "{apis}"
    );

    let crds = repo().join("crds");
    let applied = kubectl.ok(&["apply", "-f", crds.to_str().unwrap()]).await;
    assert_eq!(applied.matches("created").count(), 4, "{applied}");

    let manifest = dir.join("so.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata:\n  name: orders\n  namespace: default\nspec:\n  scaleTargetRef:\n    name: orders\n  minReplicaCount: 1\n  triggers:\n  - type: redis\n    metadata:\n      listName: orders\n      address: redis:6379\n",
    )
    .unwrap();
    kubectl
        .ok(&["apply", "-f", manifest.to_str().unwrap()])
        .await;
    let listed = kubectl.ok(&["get", "scaledobjects", "-A"]).await;
    let header = listed.lines().next().unwrap_or_default();
    for column in [
        "NAMESPACE",
        "NAME",
        "SCALETARGETNAME",
        "MIN",
        "MAX",
        "READY",
        "ACTIVE",
        "AGE",
    ] {
        assert!(header.contains(column), "missing {column} in {header}");
    }
    assert!(listed.contains("orders"), "{listed}");

    // Short names and a JSONPath query.
    let min = kubectl
        .ok(&[
            "get",
            "so",
            "orders",
            "-o",
            "jsonpath={.spec.minReplicaCount}",
        ])
        .await;
    assert_eq!(min, "1");

    // Server-side validation reaches kubectl with the field path.
    let invalid = kubectl
        .run(&[
            "patch",
            "so",
            "orders",
            "--type=merge",
            "-p",
            r#"{"spec":{"pollingInterval":0}}"#,
        ])
        .await;
    assert!(!invalid.status.success());
    assert!(
        String::from_utf8_lossy(&invalid.stderr).contains("spec.pollingInterval"),
        "{}",
        String::from_utf8_lossy(&invalid.stderr)
    );

    // Server-side apply.
    let ssa = kubectl
        .ok(&["apply", "--server-side", "-f", manifest.to_str().unwrap()])
        .await;
    assert!(ssa.contains("serverside-applied"), "{ssa}");

    kubectl
        .ok(&["delete", "-f", manifest.to_str().unwrap()])
        .await;
    let empty = kubectl.run(&["get", "scaledobjects", "-A"]).await;
    assert!(
        String::from_utf8_lossy(&empty.stderr).contains("No resources found"),
        "{}",
        String::from_utf8_lossy(&empty.stderr)
    );
    sim.shutdown().await;
}
