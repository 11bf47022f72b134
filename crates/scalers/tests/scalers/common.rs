//! Helpers shared by the scaler tests.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ringscale_scalers::{ErrorKind, MetricSpec, Poll, Scaler, ScalerError, Sources, TriggerInput};
use tokio::net::{TcpListener, TcpStream};

/// Whether absent services fail tests.
pub fn require_services() -> bool {
    std::env::var("RINGSCALE_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The `host:port` of a service from `var` (or `default`), if it accepts connections. Absent:
/// prints a skip line, or fails when services are required.
pub async fn service(name: &str, var: &str, default: &str) -> Option<String> {
    let addr = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    let hostport = addr
        .split_once("://")
        .map_or(addr.as_str(), |(_, rest)| rest)
        .rsplit_once('@')
        .map_or_else(
            || addr.split_once("://").map_or(addr.as_str(), |(_, r)| r),
            |(_, r)| r,
        )
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&hostport)).await {
        Ok(Ok(_)) => Some(addr),
        outcome => {
            let why = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".to_owned(),
            };
            if require_services() {
                panic!(
                    "{name} is required (RINGSCALE_REQUIRE_SERVICES=1) but not reachable at {hostport} (set {var}): {why}"
                );
            }
            eprintln!("SKIP: {name} not reachable at {hostport} (set {var}): {why}");
            None
        }
    }
}

/// Whether a program is installed; absent: skip line, or failure when services are required.
pub fn program(name: &str, what: &str) -> bool {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if require_services() {
            panic!("{name} ({what}) is required (RINGSCALE_REQUIRE_SERVICES=1) but not installed");
        }
        eprintln!("SKIP: {name} ({what}) is not installed");
    }
    found
}

/// A name unique to this test process and call.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub use ringscale_testkit::free_port;

/// An address where nothing listens: connections are refused.
pub fn refused_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A listener that accepts connections and never answers, for timeouts.
pub struct Blackhole {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Blackhole {
    pub async fn start() -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Blackhole { addr, task }
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A trigger input for a ScaledObject `so` in namespace `ns`.
pub fn input(trigger_type: &str, metadata: &[(&str, &str)]) -> TriggerInput {
    TriggerInput::new(0, trigger_type, metadata.iter().copied(), "ns", "so")
}

/// Builds a trigger, failing the test with its problems if it does not parse.
pub fn build(input: &TriggerInput, sources: &Sources) -> Scaler {
    match Scaler::build(input, sources) {
        Ok(s) => s,
        Err(errors) => panic!("trigger did not parse: {errors:#?}"),
    }
}

/// The problems of a trigger that must not parse.
pub fn problems(input: &TriggerInput) -> Vec<ScalerError> {
    match ringscale_scalers::parse(input) {
        Ok(_) => panic!("trigger {input:?} parsed but should not"),
        Err(e) => e,
    }
}

/// Asserts that one of `errors` concerns the metadata key `key` and mentions `text`.
pub fn assert_problem(errors: &[ScalerError], key: &str, text: &str) {
    assert!(
        errors
            .iter()
            .any(|e| e.field_path().ends_with(&format!(".{key}")) && e.to_string().contains(text)),
        "expected a problem at {key} mentioning {text:?}, got {errors:#?}"
    );
}

/// All problems as one text, one per line.
pub fn messages(errors: &[ScalerError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Polls the trigger's first metric.
pub async fn poll(scaler: &Scaler) -> Result<Poll, ScalerError> {
    let specs = scaler.metric_specs().await?;
    let name = specs[0].external_name().unwrap().to_owned();
    scaler.poll(&name).await
}

/// Polls and returns the value and activity, failing on error.
pub async fn value(scaler: &Scaler) -> (f64, bool) {
    let p = poll(scaler)
        .await
        .unwrap_or_else(|e| panic!("poll failed: {e}"));
    (p.values[0].value, p.active)
}

/// Asserts that polling fails with a transient error of `kind` mentioning `text`.
pub async fn assert_down(scaler: &Scaler, kind: ErrorKind, text: &str) {
    let err = poll(scaler)
        .await
        .expect_err("the source is down, the poll must fail");
    assert_eq!(err.kind, kind, "{err}");
    assert!(err.is_transient(), "{err}");
    assert!(
        err.to_string().contains(text),
        "{err} should mention {text:?}"
    );
}

/// Retries `check` every 250 ms for up to `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    ringscale_testkit::eventually_ok(Duration::from_secs(secs), check).await
}

/// A child process killed when dropped.
pub struct Proc(#[allow(dead_code)] tokio::process::Child);

impl Proc {
    pub fn spawn(program: &str, args: &[&str]) -> Proc {
        Proc::spawn_env(program, args, &[])
    }

    /// Like `spawn`, with extra environment variables.
    pub fn spawn_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let child = tokio::process::Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        Proc(child)
    }
}

/// A temporary directory removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let dir = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits (at most a minute) until something accepts connections on 127.0.0.1:`port`.
pub async fn listening(port: u16) {
    eventually(60, || {
        let addr = format!("127.0.0.1:{port}");
        async move {
            tokio::net::TcpStream::connect(&addr)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await;
}

/// The name and milli target of the first (external) metric spec.
pub fn external(specs: &[MetricSpec]) -> (&str, i64) {
    let MetricSpec::External(m) = &specs[0] else {
        panic!("{specs:?}")
    };
    (m.name.as_str(), m.target_milli)
}
