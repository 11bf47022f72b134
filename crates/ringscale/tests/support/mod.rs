//! Helpers the integration tests share: rendering the Helm chart with Helm's SDK and checking
//! RBAC rules against the calls kube-sim logged.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cluster;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

/// Polls `check` every 100 ms (these ask the API server) until it gives a value; fails the
/// test after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    ringscale_testkit::eventually_every(limit, Duration::from_millis(100), what, check).await
}

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/ringscale")
}

/// Whether missing tools fail the test instead of skipping it.
pub fn required() -> bool {
    std::env::var("RINGSCALE_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Runs `charts/ringscale/tests/chart.py` with `args`; `None` (after a skip line) when Python or
/// helm-python-sdk is missing and they are not required.
pub fn chart_py(args: &[&str]) -> Option<(bool, String, String)> {
    let script = chart_dir().join("tests/chart.py");
    let out = match Command::new("python3").arg(&script).args(args).output() {
        Ok(out) => out,
        Err(e) => {
            assert!(!required(), "python3 is required to render the chart: {e}");
            eprintln!("SKIP: python3 not found ({e}); the chart is not checked");
            return None;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.code() == Some(3) {
        assert!(
            !required(),
            "helm-python-sdk is required (RINGSCALE_REQUIRE_SERVICES=1): {stderr}"
        );
        eprintln!("SKIP: {}", stderr.trim());
        return None;
    }
    Some((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    ))
}

/// The chart rendered with these values files (relative to the chart), CRDs first, as JSON.
pub fn render(values: &[&str]) -> Option<Vec<Value>> {
    let mut args = vec!["render"];
    let files: Vec<String> = values
        .iter()
        .map(|v| chart_dir().join(v).display().to_string())
        .collect();
    for f in &files {
        args.extend(["--values", f.as_str()]);
    }
    let (ok, stdout, stderr) = chart_py(&args)?;
    assert!(ok, "the chart does not render with {values:?}:\n{stderr}");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&stdout)
        .unwrap_or_else(|e| panic!("the rendered chart is not YAML: {e}\n{stdout}"));
    Some(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// One request a client made, as RBAC sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Call {
    pub verb: String,
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Call {
    /// A logged request as RBAC sees it; `None` for non-resource requests (discovery), which
    /// every authenticated user may make.
    pub fn of(r: ringscale_kube_sim::RequestRecord) -> Option<Call> {
        if r.resource.is_empty() {
            return None;
        }
        Some(Call {
            verb: r.verb,
            group: r.group,
            resource: match r.subresource {
                Some(sub) => format!("{}/{sub}", r.resource),
                None => r.resource,
            },
            namespace: r.namespace,
            name: r.name,
        })
    }
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}/{}",
            self.verb,
            if self.group.is_empty() {
                "core"
            } else {
                &self.group
            },
            self.resource
        )?;
        if let Some(ns) = &self.namespace {
            write!(f, " in {ns}")?;
        }
        if let Some(name) = &self.name {
            write!(f, " ({name})")?;
        }
        Ok(())
    }
}

/// One rule granted to a subject: where it applies (`None`: cluster-wide) and what it allows.
#[derive(Clone, Debug)]
pub struct Grant {
    pub namespace: Option<String>,
    pub role: String,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    pub resource_names: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// Every rule that the rendered documents grant to ServiceAccount `namespace/name` through
/// ClusterRoleBindings and RoleBindings to roles in the same documents.
pub fn grants(docs: &[Value], namespace: &str, name: &str) -> Vec<Grant> {
    let kind = |d: &Value| d["kind"].as_str().unwrap_or_default().to_owned();
    let find_role = |role_kind: &str, role: &str, ns: Option<&str>| {
        docs.iter().find(|d| {
            kind(d) == role_kind
                && d["metadata"]["name"].as_str() == Some(role)
                && (ns.is_none() || d["metadata"]["namespace"].as_str() == ns)
        })
    };
    let mut out = Vec::new();
    for binding in docs {
        let binding_kind = kind(binding);
        if binding_kind != "ClusterRoleBinding" && binding_kind != "RoleBinding" {
            continue;
        }
        let bound = binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| {
                s["kind"] == "ServiceAccount" && s["name"] == name && s["namespace"] == namespace
            });
        if !bound {
            continue;
        }
        let binding_ns = binding["metadata"]["namespace"].as_str();
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap_or_default();
        let role_name = binding["roleRef"]["name"].as_str().unwrap_or_default();
        let role = match role_kind {
            "ClusterRole" => find_role("ClusterRole", role_name, None),
            _ => find_role("Role", role_name, binding_ns),
        };
        let role = role.unwrap_or_else(|| {
            panic!("{binding_kind} binds {role_kind} {role_name}, which the chart does not define")
        });
        let scope = if binding_kind == "RoleBinding" {
            Some(binding_ns.unwrap_or_default().to_owned())
        } else {
            None
        };
        for rule in role["rules"].as_array().into_iter().flatten() {
            out.push(Grant {
                namespace: scope.clone(),
                role: format!("{role_kind} {role_name}"),
                api_groups: strings(&rule["apiGroups"]),
                resources: strings(&rule["resources"]),
                verbs: strings(&rule["verbs"]),
                resource_names: strings(&rule["resourceNames"]),
            });
        }
    }
    out
}

/// RBAC's resource matching: `*`, an exact `resource[/sub]`, `*/sub` or `resource/*`.
fn resource_matches(rule: &str, resource: &str) -> bool {
    if rule == "*" || rule == resource {
        return true;
    }
    match (rule.split_once('/'), resource.split_once('/')) {
        (Some(("*", sub)), Some((_, s))) => sub == s,
        (Some((r, "*")), Some((res, _))) => r == res,
        _ => false,
    }
}

impl Grant {
    /// Whether this rule allows `call`, as the RBAC authorizer decides.
    pub fn allows(&self, call: &Call) -> bool {
        let in_scope = match &self.namespace {
            None => true,
            Some(ns) => call.namespace.as_deref() == Some(ns),
        };
        let named = self.resource_names.is_empty()
            || call
                .name
                .as_ref()
                .is_some_and(|n| self.resource_names.contains(n));
        in_scope
            && named
            && self.api_groups.iter().any(|g| g == "*" || *g == call.group)
            && self
                .resources
                .iter()
                .any(|r| resource_matches(r, &call.resource))
            && self.verbs.iter().any(|v| v == "*" || *v == call.verb)
    }
}

/// What the check found: calls no rule allows, and (rule, verb, group, resource) grants that no
/// call used, other than the `unexercised` ones (verb, group, resource, why).
pub fn check_rbac(
    calls: &[Call],
    grants: &[Grant],
    unexercised: &[(&str, &str, &str, &str)],
) -> Vec<String> {
    let mut problems = Vec::new();
    for call in calls {
        if !grants.iter().any(|g| g.allows(call)) {
            problems.push(format!("not granted by the chart: {call}"));
        }
    }
    for g in grants {
        for verb in &g.verbs {
            for group in &g.api_groups {
                for resource in &g.resources {
                    let used = calls.iter().any(|c| {
                        (g.namespace.is_none() || c.namespace == g.namespace)
                            && (group == "*" || *group == c.group)
                            && resource_matches(resource, &c.resource)
                            && (verb == "*" || *verb == c.verb)
                            && (g.resource_names.is_empty()
                                || c.name
                                    .as_ref()
                                    .is_some_and(|n| g.resource_names.contains(n)))
                    });
                    let excused = unexercised
                        .iter()
                        .any(|(v, gr, r, _)| v == verb && gr == group && r == resource);
                    if !used && !excused {
                        problems.push(format!(
                            "granted but never used: {verb} {group}/{resource} ({}{})",
                            g.role,
                            g.namespace
                                .as_ref()
                                .map(|n| format!(" in {n}"))
                                .unwrap_or_default()
                        ));
                    }
                }
            }
        }
    }
    problems
}
