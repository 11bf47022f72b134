//! `external` and `external-push` against external scalers in Rust (tonic) and Python (grpcio),
//! both built from `proto/externalscaler.proto`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::Stream;
use ringscale_proto::externalscaler as pb;
use ringscale_scalers::{ErrorKind, MetricSpec, Scaler, Sources};
use tokio::io::AsyncBufReadExt;
use tokio::sync::broadcast;
use tonic::{Request, Response, Status};

use crate::common::*;

/// What the Rust scaler saw.
#[derive(Default)]
struct Seen {
    metric_names: Vec<String>,
    metadata: Vec<HashMap<String, String>>,
}

struct RustScaler {
    seen: Arc<Mutex<Seen>>,
    activity: broadcast::Sender<bool>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

fn current(r: &pb::ScaledObjectRef) -> f64 {
    r.scaler_metadata
        .get("value")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

type ActivityStream = Pin<Box<dyn Stream<Item = Result<pb::IsActiveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::external_scaler_server::ExternalScaler for RustScaler {
    async fn is_active(
        &self,
        request: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<pb::IsActiveResponse>, Status> {
        Ok(Response::new(pb::IsActiveResponse {
            result: current(request.get_ref()) > 0.0,
        }))
    }

    type StreamIsActiveStream = ActivityStream;

    async fn stream_is_active(
        &self,
        _: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<ActivityStream>, Status> {
        let rx = self.activity.subscribe();
        let shutdown = self.shutdown.clone();
        // Ends with UNAVAILABLE when the server shuts down.
        let stream = futures_util::stream::unfold(
            (rx, shutdown, false),
            |(mut rx, mut shutdown, done)| async move {
                if done {
                    return None;
                }
                let stopping = tokio::select! {
                    v = rx.recv() => match v {
                        Ok(v) => Some(v),
                        Err(_) => return None,
                    },
                    _ = shutdown.wait_for(|s| *s) => None,
                };
                match stopping {
                    Some(v) => Some((
                        Ok(pb::IsActiveResponse { result: v }),
                        (rx, shutdown, false),
                    )),
                    None => Some((
                        Err(Status::unavailable("shutting down")),
                        (rx, shutdown, true),
                    )),
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_metric_spec(
        &self,
        request: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<pb::GetMetricSpecResponse>, Status> {
        self.seen
            .lock()
            .unwrap()
            .metadata
            .push(request.get_ref().scaler_metadata.clone());
        #[allow(deprecated)]
        let specs = vec![
            pb::MetricSpec {
                metric_name: "queue-length".into(),
                target_size: 0,
                target_size_float: 2.5,
            },
            pb::MetricSpec {
                metric_name: "legacy".into(),
                target_size: 3,
                target_size_float: 0.0,
            },
        ];
        Ok(Response::new(pb::GetMetricSpecResponse {
            metric_specs: specs,
        }))
    }

    async fn get_metrics(
        &self,
        request: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::GetMetricsResponse>, Status> {
        let r = request.into_inner();
        self.seen
            .lock()
            .unwrap()
            .metric_names
            .push(r.metric_name.clone());
        let reference = r.scaled_object_ref.unwrap_or_default();
        #[allow(deprecated)]
        let value = match r.metric_name.as_str() {
            "legacy" => pb::MetricValue {
                metric_name: "legacy".into(),
                metric_value: 7,
                metric_value_float: 0.0,
            },
            "queue-length" => pb::MetricValue {
                metric_name: "queue-length".into(),
                metric_value: 0,
                metric_value_float: current(&reference),
            },
            other => return Err(Status::not_found(format!("unknown metric {other}"))),
        };
        Ok(Response::new(pb::GetMetricsResponse {
            metric_values: vec![value],
        }))
    }
}

struct RustServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    activity: broadcast::Sender<bool>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RustServer {
    /// Ends every stream and stops serving.
    async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for RustServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn rust_server(port: u16) -> RustServer {
    rust_server_with(port, None).await
}

/// The Rust server, serving TLS with `tls` when given.
async fn rust_server_with(port: u16, tls: Option<tonic::transport::ServerTlsConfig>) -> RustServer {
    let listener = eventually(10, || async {
        tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (activity, _) = broadcast::channel(16);
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let service = pb::external_scaler_server::ExternalScalerServer::new(RustScaler {
        seen: seen.clone(),
        activity: activity.clone(),
        shutdown: shutdown_rx.clone(),
    });
    let task = tokio::spawn(async move {
        let mut stop = shutdown_rx;
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).unwrap();
        }
        let _ = builder
            .add_service(service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            )
            .await;
    });
    RustServer {
        addr,
        seen,
        activity,
        shutdown,
        task: Some(task),
    }
}

/// The checks both implementations must pass.
async fn check_pull_protocol(address: &str, sources: &Sources) {
    let scaler = build(
        &input(
            "external",
            &[
                ("scalerAddress", address),
                ("value", "4"),
                ("tokenFromEnv", "TOKEN"),
            ],
        )
        .with_env([("TOKEN", "from-env")]),
        sources,
    );
    let specs = scaler.metric_specs().await.unwrap();
    let names: Vec<_> = specs.iter().filter_map(|s| s.external_name()).collect();
    assert_eq!(
        names,
        ["s0-queue-length", "s0-legacy"],
        "metric names get the trigger prefix"
    );
    let targets: Vec<String> = specs
        .iter()
        .map(|s| match s {
            MetricSpec::External(m) => m.target_quantity(),
            MetricSpec::Resource(_) => unreachable!(),
        })
        .collect();
    assert_eq!(
        targets,
        ["2500m", "3"],
        "float targets win; the deprecated integer is the fallback"
    );
    let p = scaler.poll("s0-queue-length").await.unwrap();
    assert_eq!(
        (&*p.values[0].name, p.values[0].value, p.active),
        ("s0-queue-length", 4.0, true)
    );
    let p = scaler.poll("s0-legacy").await.unwrap();
    assert_eq!(p.values[0].value, 7.0);
    let idle = build(
        &input("external", &[("scalerAddress", address), ("value", "0")]),
        sources,
    );
    let p = idle.poll("s0-queue-length").await.unwrap();
    assert_eq!((p.values[0].value, p.active), (0.0, false));
    let err = scaler.poll("s0-unknown").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Source);
    assert!(
        err.to_string().contains("NotFound") && err.to_string().contains("unknown metric unknown"),
        "{err}"
    );
    let err = scaler.poll("s3-queue-length").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("does not carry this trigger's prefix"),
        "{err}"
    );
    assert_eq!(
        sources.counts().grpc,
        1,
        "triggers on one scaler address share a channel"
    );
}

async fn collect_push(scaler: &Scaler, n: usize) -> Vec<bool> {
    let mut rx = scaler
        .push_activity()
        .expect("external-push streams activity");
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while got.len() < n {
            match rx.recv().await {
                Some(Ok(v)) => got.push(v),
                Some(Err(_)) => {}
                None => break,
            }
        }
    })
    .await
    .expect("activity changes arrive");
    got
}

#[tokio::test]
async fn a_rust_external_scaler_is_spoken_to_over_the_wire_protocol() {
    let server = rust_server(0).await;
    let sources = Sources::default();
    let address = server.addr.to_string();
    check_pull_protocol(&address, &sources).await;
    let seen = server.seen.lock().unwrap();
    assert_eq!(
        seen.metric_names[0], "queue-length",
        "the index prefix is stripped"
    );
    let meta = &seen.metadata[0];
    assert_eq!(
        meta.get("tokenFromEnv").map(String::as_str),
        Some("from-env"),
        "*FromEnv resolved, as KEDA sends it"
    );
    assert_eq!(meta.get("scalerAddress"), Some(&address));
}

#[tokio::test]
async fn external_push_streams_activity_and_reconnects() {
    let server = rust_server(0).await;
    let port = server.addr.port();
    let sources = Sources::default();
    let scaler = build(
        &input(
            "external-push",
            &[("scalerAddress", &server.addr.to_string())],
        ),
        &sources,
    );
    assert!(scaler.is_push());
    let mut rx = scaler.push_activity().unwrap();
    // Wait for the subscription, then push changes.
    eventually(10, || async {
        if server.activity.receiver_count() > 0 {
            Ok(())
        } else {
            Err("not subscribed".to_owned())
        }
    })
    .await;
    for v in [true, false, true] {
        server.activity.send(v).unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 3 {
        if let Ok(v) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap()
        {
            got.push(v);
        }
    }
    assert_eq!(got, [true, false, true]);
    // The scaler goes away: an error, then (after the 2 s backoff) a new stream.
    server.stop().await;
    let err = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    let server = rust_server(port).await;
    eventually(15, || async {
        if server.activity.receiver_count() > 0 {
            Ok(())
        } else {
            Err("not resubscribed".to_owned())
        }
    })
    .await;
    server.activity.send(true).unwrap();
    let v = loop {
        if let Ok(v) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap()
        {
            break v;
        }
    };
    assert!(v);
}

#[tokio::test]
async fn a_python_grpcio_external_scaler_is_wire_compatible() {
    let has_grpc = std::process::Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_grpc {
        if require_services() {
            panic!(
                "python3 with grpcio and grpcio-tools is required (RINGSCALE_REQUIRE_SERVICES=1): pip install grpcio grpcio-tools"
            );
        }
        eprintln!("SKIP: python3 with grpcio and grpcio-tools is not installed");
        return;
    }
    let stubs = TempDir::new("pystubs");
    let proto_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let status = std::process::Command::new("python3")
        .args([
            "-m",
            "grpc_tools.protoc",
            &format!("-I{}", proto_dir.display()),
            &format!("--python_out={}", stubs.0.display()),
            &format!("--grpc_python_out={}", stubs.0.display()),
            "externalscaler.proto",
        ])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "grpc_tools.protoc failed on proto/externalscaler.proto"
    );
    let port = free_port();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/external_scaler.py");
    let mut child = tokio::process::Command::new("python3")
        .args([
            script.to_str().unwrap(),
            stubs.0.to_str().unwrap(),
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
    assert!(
        matches!(ready, Ok(Ok(Some(ref l))) if l == "READY"),
        "the Python scaler did not start: {ready:?}"
    );
    let sources = Sources::default();
    let address = format!("127.0.0.1:{port}");
    check_pull_protocol(&address, &sources).await;
    let push = build(
        &input("external-push", &[("scalerAddress", &address)]),
        &sources,
    );
    assert_eq!(collect_push(&push, 3).await, [true, false, true]);
}

#[tokio::test]
async fn external_parameters_and_outages() {
    let errors = problems(&input("external", &[("enableTLS", "yes")]));
    assert_problem(&errors, "scalerAddress", "missing required parameter");
    assert_problem(&errors, "enableTLS", "is not a boolean");
    let errors = problems(&input(
        "external",
        &[("scalerAddress", "http://scaler:6000")],
    ));
    assert_problem(&errors, "scalerAddress", "without a scheme");
    let sources = Sources::default();
    let down = build(
        &input("external", &[("scalerAddress", &refused_address())]),
        &sources,
    );
    let err = down.metric_specs().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Source, "{err}");
    let err = down.poll("s0-queue-length").await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    let hole = Blackhole::start().await;
    let mut slow = input("external", &[("scalerAddress", &hole.addr.to_string())]);
    slow.default_timeout = Duration::from_millis(300);
    let slow = build(&slow, &sources);
    let err = slow.poll("s0-queue-length").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    // A TLS connection to a plaintext server fails cleanly.
    let server = rust_server(0).await;
    let tls = build(
        &input(
            "external",
            &[
                ("scalerAddress", &server.addr.to_string()),
                ("enableTLS", "true"),
            ],
        ),
        &sources,
    );
    assert!(tls.metric_specs().await.is_err());

    // A TLS server: trusted through caCert, the calls go through (the channel's TLS is the
    // connector's, which tonic must accept).
    let ca = ringscale_kube_sim::tls::Authority::new("external-test-ca").unwrap();
    let identity = ca.issue_server(&["127.0.0.1", "localhost"]).unwrap();
    let secure = rust_server_with(
        0,
        Some(tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(&identity.cert_pem, &identity.key_pem),
        )),
    )
    .await;
    let mut i = input(
        "external",
        &[
            ("scalerAddress", &secure.addr.to_string()),
            ("enableTLS", "true"),
        ],
    );
    i.auth_params = [("caCert".to_owned(), ca.cert_pem.clone())]
        .into_iter()
        .collect();
    let tls = build(&i, &sources);
    let specs = tls.metric_specs().await.unwrap();
    assert!(!specs.is_empty());
    // Without the CA the server's certificate is not trusted.
    i.auth_params.clear();
    let untrusted = build(&i, &sources);
    let err = untrusted.metric_specs().await.unwrap_err();
    assert!(
        err.to_string().contains("UnknownIssuer") || err.to_string().contains("certificate"),
        "{err}"
    );
}
