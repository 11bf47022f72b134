//! `ringscale dev`, the README's first command: it comes up with no cluster and no services,
//! prints how to reach it, scales the demo workloads from the demo queue, and stops on Ctrl-C.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;

use ringscale_testkit::free_port;

/// A plain HTTP/1.0 request to the demo queue; the response's status code.
fn put(port: u16, path: &str, body: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "PUT {path} HTTP/1.0\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_runs_the_demo_and_stops_on_ctrl_c() {
    let dir = std::env::temp_dir().join(format!("ringscale-dev-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    let demo = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringscale"))
        .args(["dev", "--replicas", "2", "--no-table"])
        .args(["--demo-port", &demo.to_string()])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--log-file")
        .arg(dir.join("dev.log"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Instructions first: the kubeconfig export, the demo queue, and the end marker.
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.starts_with("logs:");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    });
    let lines = tokio::time::timeout(Duration::from_secs(90), lines)
        .await
        .expect("ringscale dev printed its instructions in time")
        .unwrap();
    let text = lines.join("\n");
    assert!(
        text.contains(&format!("export KUBECONFIG={}", kubeconfig.display())),
        "{text}"
    );
    assert!(text.contains("/queues/orders"), "{text}");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("replica-")).count(),
        2
    );

    // kubectl's view: the demo objects exist; a queue of 25 (target 5) makes 5 workers.
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    assert_eq!(put(demo, "/queues/orders", "25"), 200);
    assert_eq!(put(demo, "/queues/orders", "lots"), 400);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = Api::<Deployment>::namespaced(client.clone(), "default")
            .get("orders-worker")
            .await
            .unwrap();
        if d.spec.and_then(|s| s.replicas) == Some(5) {
            break;
        }
        assert!(Instant::now() < deadline, "orders-worker never reached 5");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let request = http::Request::get(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/s0-metric-api-length?labelSelector=scaledobject.keda.sh%2Fname%3Dorders",
    )
    .body(Vec::new())
    .unwrap();
    let body: serde_json::Value =
        serde_json::from_str(&client.request_text(request).await.unwrap()).unwrap();
    assert_eq!(body["items"][0]["value"], "25");

    // The first imperative commands a new user types. kubectl sends protobuf bodies for
    // built-in kinds; they work as on a real cluster.
    match Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
    {
        Err(e) => eprintln!("SKIP: kubectl not found ({e}); imperative commands not checked"),
        Ok(_) => {
            let kubectl = |args: &[&str]| {
                let out = Command::new("kubectl")
                    .env("KUBECONFIG", &kubeconfig)
                    .args(args)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "kubectl {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            kubectl(&["create", "namespace", "first-day"]);
            kubectl(&[
                "create",
                "deployment",
                "web",
                "--image=nginx",
                "--replicas=2",
                "-n",
                "first-day",
            ]);
            kubectl(&[
                "scale",
                "deployment",
                "web",
                "--replicas=3",
                "-n",
                "first-day",
            ]);
            kubectl(&[
                "create",
                "configmap",
                "settings",
                "--from-literal=a=b",
                "-n",
                "first-day",
            ]);
            let replicas = kubectl(&[
                "get",
                "deployment",
                "web",
                "-n",
                "first-day",
                "-o",
                "jsonpath={.spec.replicas}",
            ]);
            assert_eq!(replicas, "3");
        }
    }

    // Ctrl-C: a clean exit.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "ringscale dev did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}
