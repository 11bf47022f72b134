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
