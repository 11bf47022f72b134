//! The `ringscale` binary as a user runs it: exit codes, text and JSON output.

// Test helpers, like tests, fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ringscale(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringscale"))
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ringscale starts");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("stdin written");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("ringscale finishes")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringscale-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("temp file");
    path
}

const INVALID: &str = "\
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: broken
  namespace: apps
spec:
  scaleTargetRef:
    name: worker
  minReplicaCount: 5
  maxReplicaCount: 3
  triggers:
    - type: redis
      metadata:
        address: redis:6379
        listName: jobs
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: worker
";

#[test]
fn the_shipped_examples_validate_and_exit_zero() {
    let out = ringscale(&["validate", "-f", "examples/"], None);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("ScaledObject shop/orders-worker: OK"),
        "{text}"
    );
    assert!(
        text.contains("ScaledJob media/video-transcode: OK"),
        "{text}"
    );
    assert!(text.contains("0 invalid"), "{text}");
}

#[test]
fn the_dev_examples_validate_too() {
    let out = ringscale(&["validate", "-f", "examples/dev/"], None);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("ScaledObject default/orders: OK"), "{text}");
    assert!(text.contains("ScaledJob default/reports: OK"), "{text}");
}

#[test]
fn an_invalid_object_is_reported_with_file_line_path_and_rule_and_exits_one() {
    let file = temp_file("invalid.yaml", INVALID);
    let out = ringscale(
        &["validate", "-f", file.to_str().expect("utf-8 path")],
        None,
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("ScaledObject apps/broken: INVALID (1 problem(s))"),
        "{text}"
    );
    assert!(
        text.contains(":9: spec.minReplicaCount (5) must not exceed spec.maxReplicaCount (3)"),
        "{text}"
    );
    assert!(
        text.contains("1 other object(s) read for reference"),
        "the Deployment is not judged: {text}"
    );
}

#[test]
fn json_output_has_one_element_per_judged_object() {
    let out = ringscale(&["validate", "-f", "-", "-o", "json"], Some(INVALID));
    assert_eq!(out.status.code(), Some(1));
    let parsed: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let items = parsed.as_array().expect("a JSON array");
    assert_eq!(items.len(), 1, "the Deployment is read for reference only");
    let item = &items[0];
    assert_eq!(item["kind"], "ScaledObject");
    assert_eq!(item["namespace"], "apps");
    assert_eq!(item["name"], "broken");
    assert_eq!(item["valid"], false);
    assert_eq!(item["problems"][0]["path"], "spec.minReplicaCount");
    assert_eq!(
        item["problems"][0]["message"],
        "spec.minReplicaCount (5) must not exceed spec.maxReplicaCount (3)"
    );
}

#[test]
fn malformed_yaml_gets_a_line_and_column_not_a_panic() {
    let out = ringscale(
        &["validate", "-f", "-"],
        Some("apiVersion: v1\nkind: [Secret\nmetadata: {}\n"),
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("malformed YAML: line 3 column"), "{text}");
    assert!(out.stderr.is_empty() || !String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn binary_garbage_is_refused_cleanly() {
    let out = ringscale(&["validate", "-f", "-"], Some("\u{0}\u{1}\u{2}: [[[{{{"));
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn an_unreadable_input_exits_two() {
    let out = ringscale(&["validate", "-f", "does/not/exist.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read does/not/exist.yaml"));
}

#[test]
fn crds_prints_the_committed_crds() {
    let out = ringscale(&["crds"], None);
    assert_eq!(out.status.code(), Some(0));
    let printed = stdout(&out);
    let mut committed = String::new();
    for name in [
        "keda.sh_scaledobjects.yaml",
        "keda.sh_scaledjobs.yaml",
        "keda.sh_triggerauthentications.yaml",
        "keda.sh_clustertriggerauthentications.yaml",
    ] {
        committed.push_str(
            &std::fs::read_to_string(repo().join("crds").join(name)).expect("committed CRD"),
        );
    }
    assert!(
        printed == committed,
        "`ringscale crds` differs from crds/*.yaml"
    );
}

#[test]
fn sim_writes_a_kubeconfig_serves_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let dir = std::env::temp_dir().join(format!("ringscale-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubeconfig = dir.join("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringscale"))
        .args([
            "sim",
            "--kubeconfig",
            kubeconfig.to_str().expect("utf-8"),
            "--no-controllers",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("ringscale sim starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("readable");
    assert!(
        first.starts_with("kube-sim listening on https://127.0.0.1:"),
        "{first}"
    );
    let written = std::fs::read_to_string(&kubeconfig).expect("kubeconfig written");
    let url = first.trim_start_matches("kube-sim listening on ");
    assert!(written.contains(url), "the kubeconfig points at {url}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = child.wait().expect("exits");
    assert!(exit.success(), "SIGTERM is a clean exit, got {exit:?}");
}

const TRIGGERS: &str = "\
apiVersion: v1
kind: Secret
metadata:
  name: rabbit
  namespace: apps
stringData:
  host: amqp://guest:guest@rabbitmq:5672/
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata:
  name: rabbit
  namespace: apps
spec:
  secretTargetRef:
    - parameter: host
      name: rabbit
      key: host
    - parameter: password
      name: rabbit
      key: missing-key
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata:
  name: redis-auth
  namespace: apps
spec:
  secretTargetRef:
    - parameter: password
      name: redis-auth
      key: password
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: worker
  namespace: apps
spec:
  scaleTargetRef:
    name: worker
  triggers:
    - type: redis
      metadata:
        address: redis:6379
        listName: jobs
        listLength: abc
      authenticationRef:
        name: redis-auth
    - type: rabbitmq
      metadata:
        queueName: tasks
        mode: MessageRate
        value: \"10\"
      authenticationRef:
        name: rabbit
    - type: external
      metadata:
        scalerAddress: scaler:6000
    - type: cron
      metadata:
        timezone: Europe/Berlin
        start: 0 6 * * *
        end: 0 20 * * *
        desiredReplicas: \"3\"
    - type: postgresql
      metadata:
        connectionFromEnv: PG_CONN
        query: SELECT 1
        targetQueryValue: \"1\"
";

#[test]
fn validate_checks_each_trigger_with_its_scaler() {
    let out = ringscale(&["validate", "-f", "-", "-o", "json"], Some(TRIGGERS));
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let parsed: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let so = parsed
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "ScaledObject")
        .unwrap();
    let problems: Vec<(String, String)> = so["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap().to_owned(),
                p["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let has = |path: &str, text: &str| problems.iter().any(|(p, m)| p == path && m.contains(text));
    assert!(
        has("spec.triggers[0].metadata.listLength", "is not an integer"),
        "{problems:#?}"
    );
    // The rabbitmq host comes from a Secret in the input: amqp, so MessageRate is wrong.
    assert!(
        has(
            "spec.triggers[1].metadata.mode",
            "must be HTTP to use trigger mode MessageRate"
        ),
        "{problems:#?}"
    );
    assert!(
        has(
            "spec.triggers[1].authenticationRef",
            "key \"missing-key\" not found in Secret apps/rabbit"
        ),
        "{problems:#?}"
    );
    assert_eq!(problems.len(), 3, "{problems:#?}");
    let line = so["problems"][0]["line"].as_u64().unwrap();
    assert_eq!(
        line,
        TRIGGERS
            .lines()
            .position(|l| l.contains("listLength: abc"))
            .unwrap() as u64
            + 1
    );

    // What the input does not contain is a warning, not an error.
    let warnings: Vec<String> = so["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            format!(
                "{} {}",
                w["path"].as_str().unwrap(),
                w["message"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("spec.triggers[0].authenticationRef")
                && w.contains("not checked: Secret redis-auth is not in the input")),
        "{warnings:#?}"
    );
    assert!(
        warnings.iter().any(
            |w| w.starts_with("spec.triggers[4].metadata.connectionFromEnv")
                && w.contains(
                    "not checked: the scale target Deployment worker is not in the input"
                )
        ),
        "{warnings:#?}"
    );

    let triggers = so["triggers"].as_array().unwrap();
    let names: Vec<(String, Vec<String>)> = triggers
        .iter()
        .map(|t| {
            (
                t["type"].as_str().unwrap().to_owned(),
                t["metricNames"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(triggers[2]["index"], 2);
    assert_eq!(
        names,
        [
            ("redis".to_owned(), vec![]),
            ("rabbitmq".to_owned(), vec![]),
            ("external".to_owned(), vec![]),
            (
                "cron".to_owned(),
                vec!["s3-cron-Europe-Berlin-06xxx-020xxx".to_owned()]
            ),
            ("postgresql".to_owned(), vec!["s4-postgresql".to_owned()]),
        ],
        "invalid triggers and external scalers have no offline names"
    );
}

#[test]
fn validate_resolves_environment_from_a_deployment_in_the_input() {
    let manifest = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: worker
spec:
  selector:
    matchLabels: {app: worker}
  template:
    metadata:
      labels: {app: worker}
    spec:
      containers:
        - name: app
          image: worker:1
          env:
            - name: REDIS_ADDRESS
              value: redis:6379
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: worker
spec:
  scaleTargetRef:
    name: worker
  triggers:
    - type: redis
      metadata:
        addressFromEnv: REDIS_ADDRESS
        listName: jobs
    - type: redis
      metadata:
        addressFromEnv: NOT_SET
        listName: jobs
";
    let out = ringscale(&["validate", "-f", "-", "-o", "json"], Some(manifest));
    let parsed: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let so = &parsed[0];
    assert_eq!(so["triggers"][0]["metricNames"][0], "s0-redis-jobs");
    assert_eq!(so["problems"].as_array().unwrap().len(), 1, "{so:#}");
    assert_eq!(
        so["problems"][0]["path"],
        "spec.triggers[1].metadata.address"
    );
    assert!(so["warnings"].as_array().unwrap().is_empty(), "{so:#}");
    assert_eq!(out.status.code(), Some(1));
}
