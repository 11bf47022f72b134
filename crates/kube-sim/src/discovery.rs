//! Discovery: `/version`, `/api`, `/apis`, `/apis/<group>`, `/api/v1` and `/apis/<g>/<v>`,
//! and a minimal OpenAPI v3 index that tells kubectl which endpoints accept `fieldValidation`
//! (so kubectl validates on the server, as against a real cluster).

use std::collections::BTreeMap;

use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::resources::ResourceInfo;
use crate::server::{Body, error_response, json_response};
use crate::{Sim, aggregator};

/// The Kubernetes version the simulator reports.
pub const KUBERNETES_VERSION: (&str, &str) = ("1", "33");

/// A discovery path.
#[derive(Debug)]
pub enum Path {
    /// `/`.
    Root,
    /// `/version`.
    Version,
    /// `/api`.
    LegacyApi,
    /// `/apis`.
    Groups,
    /// `/apis/<group>`.
    Group(String),
    /// `/api/v1` or `/apis/<group>/<version>`.
    GroupVersion(String, String),
    /// `/openapi/...`.
    OpenApi(String),
}

/// Answers a discovery request.
pub fn respond(sim: &Sim, path: &Path, _headers: &HeaderMap) -> http::Response<Body> {
    match path {
        Path::Root => json_response(StatusCode::OK, &json!({"paths": root_paths(sim)})),
        Path::Version => json_response(
            StatusCode::OK,
            &json!({
                "major": KUBERNETES_VERSION.0, "minor": KUBERNETES_VERSION.1,
                "gitVersion": format!("v{}.{}.0", KUBERNETES_VERSION.0, KUBERNETES_VERSION.1),
                "gitCommit": "ringscale-kube-sim", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.24.0", "compiler": "gc", "platform": "linux/amd64",
            }),
        ),
        Path::LegacyApi => json_response(
            StatusCode::OK,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": sim.address}]}),
        ),
        Path::Groups => json_response(
            StatusCode::OK,
            &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups(sim)}),
        ),
        Path::Group(name) => match groups(sim).into_iter().find(|g| g["name"] == json!(name)) {
            Some(mut group) => {
                group["kind"] = json!("APIGroup");
                group["apiVersion"] = json!("v1");
                json_response(StatusCode::OK, &group)
            }
            None => error_response(&ApiError::no_route(&format!("/apis/{name}"))),
        },
        Path::GroupVersion(group, version) => {
            let resources = resource_list(sim, group, version);
            if resources.is_empty() {
                return error_response(&ApiError::no_route(&format!("/apis/{group}/{version}")));
            }
            let group_version = if group.is_empty() {
                version.clone()
            } else {
                format!("{group}/{version}")
            };
            json_response(
                StatusCode::OK,
                &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
            )
        }
        Path::OpenApi(rest) => openapi(sim, rest),
    }
}

/// Group versions served, in a stable order.
fn group_versions(sim: &Sim) -> BTreeMap<String, Vec<(String, bool)>> {
    let mut map: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
    for info in sim.registry.all() {
        let versions = map.entry(info.gvr.group.clone()).or_default();
        if !versions.iter().any(|(v, _)| *v == info.gvr.version) {
            versions.push((info.gvr.version.clone(), info.storage));
        }
    }
    for (group, version) in aggregator::registered(sim) {
        let versions = map.entry(group).or_default();
        if !versions.iter().any(|(v, _)| *v == version) {
            versions.push((version, true));
        }
    }
    map
}

fn groups(sim: &Sim) -> Vec<Value> {
    group_versions(sim)
        .into_iter()
        .filter(|(group, _)| !group.is_empty())
        .map(|(group, versions)| {
            let preferred = versions.iter().find(|(_, storage)| *storage).or(versions.first()).map(|(v, _)| v.clone()).unwrap_or_default();
            let list: Vec<Value> = versions.iter().map(|(v, _)| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect();
            json!({"name": group, "versions": list, "preferredVersion": {"groupVersion": format!("{group}/{preferred}"), "version": preferred}})
        })
        .collect()
}

fn root_paths(sim: &Sim) -> Vec<String> {
    let mut paths = vec!["/api".to_owned(), "/api/v1".to_owned(), "/apis".to_owned()];
    for (group, versions) in group_versions(sim) {
        if group.is_empty() {
            continue;
        }
        paths.push(format!("/apis/{group}"));
        for (v, _) in versions {
            paths.push(format!("/apis/{group}/{v}"));
        }
    }
    paths.extend(["/healthz", "/livez", "/openapi/v3", "/readyz", "/version"].map(String::from));
    paths
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn resource_list(sim: &Sim, group: &str, version: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut infos: Vec<_> = sim
        .registry
        .all()
        .into_iter()
        .filter(|r| r.gvr.group == group && r.gvr.version == version)
        .collect();
    infos.sort_by(|a, b| a.gvr.resource.cmp(&b.gvr.resource));
    for info in infos {
        out.push(resource_entry(&info));
        if info.status {
            out.push(json!({"name": format!("{}/status", info.gvr.resource), "singularName": "", "namespaced": info.namespaced, "kind": info.kind, "verbs": ["get", "patch", "update"]}));
        }
        if info.scale.is_some() {
            out.push(json!({"name": format!("{}/scale", info.gvr.resource), "singularName": "", "namespaced": info.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
    }
    out
}

fn resource_entry(info: &ResourceInfo) -> Value {
    let mut entry = json!({
        "name": info.gvr.resource, "singularName": info.singular, "namespaced": info.namespaced,
        "kind": info.kind, "verbs": VERBS,
    });
    if !info.short_names.is_empty() {
        entry["shortNames"] = json!(info.short_names);
    }
    if !info.categories.is_empty() {
        entry["categories"] = json!(info.categories);
    }
    entry
}

/// `/openapi/v3`: an index of group versions; `/openapi/v3/<gv>`: paths with the parameters
/// kubectl checks (fieldValidation on PATCH), without schemas.
fn openapi(sim: &Sim, rest: &str) -> http::Response<Body> {
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        ["v3"] => {
            let mut paths = serde_json::Map::new();
            for (group, versions) in group_versions(sim) {
                for (v, _) in versions {
                    let key = if group.is_empty() {
                        format!("api/{v}")
                    } else {
                        format!("apis/{group}/{v}")
                    };
                    paths.insert(
                        key.clone(),
                        json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash=0")}),
                    );
                }
            }
            json_response(StatusCode::OK, &json!({"paths": paths}))
        }
        ["v3", "api", version] => openapi_group_version(sim, "", version),
        ["v3", "apis", group, version] => openapi_group_version(sim, group, version),
        _ => error_response(&ApiError::no_route(&format!("/openapi/{rest}"))),
    }
}

fn openapi_group_version(sim: &Sim, group: &str, version: &str) -> http::Response<Body> {
    let mut paths = serde_json::Map::new();
    let field_validation =
        json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string"}});
    for info in sim
        .registry
        .all()
        .into_iter()
        .filter(|r| r.gvr.group == group && r.gvr.version == version)
    {
        let prefix = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let scope = if info.namespaced {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        let gvk = json!([{"group": group, "version": version, "kind": info.kind}]);
        let op = |action: &str| json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk[0], "parameters": [field_validation]});
        paths.insert(
            format!("{prefix}{scope}/{}", info.gvr.resource),
            json!({"post": op("post"), "get": op("list")}),
        );
        paths.insert(format!("{prefix}{scope}/{}/{{name}}", info.gvr.resource), json!({"put": op("put"), "patch": op("patch"), "get": op("get"), "delete": op("delete")}));
    }
    if paths.is_empty() {
        return error_response(&ApiError::no_route(&format!(
            "/openapi/v3/{group}/{version}"
        )));
    }
    json_response(
        StatusCode::OK,
        &json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "unversioned"}, "paths": paths, "components": {"schemas": {}}}),
    )
}
