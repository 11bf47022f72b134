//! CustomResourceDefinitions: checking a CRD, turning it into served resources, and treating
//! custom objects as the API server does (prune unknown fields, apply schema defaults, validate
//! the structural schema and its CEL rules).

use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use ringscale_api::validate::schema::SchemaChecker;
use ringscale_api::validate::{FieldPath, Findings, Problem, ProblemKind, meta};
use serde_json::{Value, json};

use crate::resources::{CustomKind, Gvr, ResourceInfo, ScalePaths, Semantics};

/// Checks a CRD the way the API server checks one before accepting it.
pub fn validate_crd(crd: &CustomResourceDefinition) -> Vec<Problem> {
    let mut out = Findings::default();
    let spec = &crd.spec;
    let names = &spec.names;
    let expected = format!("{}.{}", names.plural, spec.group);
    let name = crd.metadata.name.as_deref().unwrap_or_default();
    if name != expected {
        out.invalid(
            FieldPath::new("metadata.name"),
            format!("must be spec.names.plural+\".\"+spec.group ({expected:?}), got {name:?}"),
        );
    }
    if !spec.group.contains('.') {
        out.invalid(
            FieldPath::new("spec.group"),
            "should be a domain with at least one dot",
        );
    }
    if let Some(why) = meta::dns1123_subdomain_error(&spec.group) {
        out.invalid(FieldPath::new("spec.group"), why);
    }
    for (field, value) in [
        ("plural", Some(names.plural.as_str())),
        ("singular", names.singular.as_deref()),
    ] {
        if let Some(v) = value
            && let Some(why) = meta::dns1123_label_error(v)
        {
            out.invalid(FieldPath::new("spec.names").field(field), why);
        }
    }
    if names.kind.is_empty() {
        out.required(FieldPath::new("spec.names.kind"), "kind is required");
    }
    if !matches!(spec.scope.as_str(), "Namespaced" | "Cluster") {
        out.problem(
            ProblemKind::NotSupported,
            FieldPath::new("spec.scope"),
            format!(
                "unsupported value {:?}: supported values: \"Cluster\", \"Namespaced\"",
                spec.scope
            ),
        );
    }
    if spec.versions.is_empty() {
        out.required(
            FieldPath::new("spec.versions"),
            "must have at least one version",
        );
    }
    let storage = spec.versions.iter().filter(|v| v.storage).count();
    if storage != 1 {
        out.invalid(
            FieldPath::new("spec.versions"),
            format!("must have exactly one version marked as storage version, got {storage}"),
        );
    }
    for (i, version) in spec.versions.iter().enumerate() {
        let at = FieldPath::new("spec.versions").index(i);
        if spec.versions[..i].iter().any(|v| v.name == version.name) {
            out.problem(
                ProblemKind::Duplicate,
                at.field("name"),
                format!("duplicate version {:?}", version.name),
            );
        }
        match version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
        {
            None => out.required(
                at.field("schema").field("openAPIV3Schema"),
                "schemas are required",
            ),
            Some(schema) => {
                let path = at.field("schema").field("openAPIV3Schema");
                if schema.type_.as_deref() != Some("object") {
                    out.invalid(path.field("type"), "must be object at the root");
                }
                check_structural(schema, &path, 0, &mut out);
                let compiled =
                    kube_cel::compile_schema(&serde_json::to_value(schema).unwrap_or_default());
                for err in compiled.compilation_errors() {
                    out.invalid(
                        path.clone(),
                        format!("invalid x-kubernetes-validations rule: {err}"),
                    );
                }
            }
        }
    }
    out.problems
}

/// The structural-schema rules that matter for serving: every node has a type unless it is
/// int-or-string or preserves unknown fields, and `items` is a single schema.
fn check_structural(schema: &JSONSchemaProps, path: &FieldPath, depth: usize, out: &mut Findings) {
    if depth > 64 {
        out.invalid(path.clone(), "schema nested too deeply");
        return;
    }
    let untyped_ok = schema.x_kubernetes_int_or_string == Some(true)
        || schema.x_kubernetes_preserve_unknown_fields == Some(true);
    if schema.type_.is_none() && !untyped_ok {
        out.required(
            path.field("type"),
            "must not be empty for specified object fields",
        );
    }
    for (name, child) in schema.properties.iter().flatten() {
        check_structural(child, &path.field("properties").key(name), depth + 1, out);
    }
    match &schema.items {
        Some(JSONSchemaPropsOrArray::Schema(items)) => {
            check_structural(items, &path.field("items"), depth + 1, out)
        }
        Some(JSONSchemaPropsOrArray::Schemas(_)) => {
            out.problem(
                ProblemKind::Forbidden,
                path.field("items"),
                "items must be a schema object and not an array",
            );
        }
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = &schema.additional_properties {
        check_structural(values, &path.field("additionalProperties"), depth + 1, out);
    }
}

/// The served resources of a CRD, one per served version.
pub fn resources_of(crd: &CustomResourceDefinition) -> Vec<ResourceInfo> {
    let spec = &crd.spec;
    let names = &spec.names;
    let crd_name = crd.metadata.name.clone().unwrap_or_default();
    spec.versions
        .iter()
        .filter(|v| v.served)
        .filter_map(|version| {
            let schema = version.schema.as_ref()?.open_api_v3_schema.clone()?;
            let schema_json = serde_json::to_value(&schema).ok()?;
            let cel = Arc::new(kube_cel::compile_schema(&schema_json));
            let subresources = version.subresources.as_ref();
            let scale = subresources
                .and_then(|s| s.scale.as_ref())
                .map(|s| ScalePaths {
                    spec_replicas: s.spec_replicas_path.clone(),
                    status_replicas: s.status_replicas_path.clone(),
                    label_selector: s.label_selector_path.clone(),
                });
            let kind = CustomKind {
                crd_name: crd_name.clone(),
                preserve_unknown_fields: schema.x_kubernetes_preserve_unknown_fields == Some(true),
                schema,
                schema_json,
                cel,
                columns: version
                    .additional_printer_columns
                    .clone()
                    .unwrap_or_default(),
                selectable_fields: version
                    .selectable_fields
                    .iter()
                    .flatten()
                    .map(|f| f.json_path.trim_start_matches('.').to_owned())
                    .collect(),
            };
            Some(ResourceInfo {
                gvr: Gvr::new(&spec.group, &version.name, &names.plural),
                kind: names.kind.clone(),
                list_kind: names
                    .list_kind
                    .clone()
                    .unwrap_or_else(|| format!("{}List", names.kind)),
                singular: names
                    .singular
                    .clone()
                    .unwrap_or_else(|| names.kind.to_ascii_lowercase()),
                namespaced: spec.scope == "Namespaced",
                short_names: names.short_names.clone().unwrap_or_default(),
                categories: names.categories.clone().unwrap_or_default(),
                status: subresources.and_then(|s| s.status.as_ref()).is_some(),
                scale,
                storage: version.storage,
                semantics: Semantics::Custom(Arc::new(kind)),
            })
        })
        .collect()
}

/// The status the API server gives an accepted CRD.
pub fn established_status(crd: &CustomResourceDefinition, now: &str) -> Value {
    let stored: Vec<&str> = crd
        .spec
        .versions
        .iter()
        .filter(|v| v.storage)
        .map(|v| v.name.as_str())
        .collect();
    let names = serde_json::to_value(&crd.spec.names).unwrap_or_else(|_| json!({}));
    let mut accepted = names;
    if let Some(map) = accepted.as_object_mut() {
        map.entry("singular")
            .or_insert_with(|| json!(crd.spec.names.kind.to_ascii_lowercase()));
        map.entry("listKind")
            .or_insert_with(|| json!(format!("{}List", crd.spec.names.kind)));
    }
    json!({
        "acceptedNames": accepted,
        "storedVersions": stored,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
        ]
    })
}

/// Removes fields the schema does not declare (as the API server prunes them) and returns
/// their paths (`.spec.foo`).
pub fn prune(schema: &JSONSchemaProps, value: &mut Value) -> Vec<String> {
    let mut pruned = Vec::new();
    prune_node(schema, value, "", true, &mut pruned, 0);
    pruned
}

fn prune_node(
    schema: &JSONSchemaProps,
    value: &mut Value,
    path: &str,
    root: bool,
    out: &mut Vec<String>,
    depth: usize,
) {
    if depth > 128 || schema.x_kubernetes_preserve_unknown_fields == Some(true) {
        return;
    }
    match value {
        Value::Object(map) => {
            let embedded = root || schema.x_kubernetes_embedded_resource == Some(true);
            let props = schema.properties.as_ref();
            let additional = match &schema.additional_properties {
                Some(JSONSchemaPropsOrBool::Schema(s)) => Some(s.as_ref()),
                _ => None,
            };
            let allow_any = matches!(
                schema.additional_properties,
                Some(JSONSchemaPropsOrBool::Bool(true))
            );
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let implicit =
                    embedded && matches!(key.as_str(), "apiVersion" | "kind" | "metadata");
                let child_schema = props.and_then(|p| p.get(&key)).or(additional);
                match child_schema {
                    Some(s) => {
                        if let Some(child) = map.get_mut(&key) {
                            prune_node(s, child, &format!("{path}.{key}"), false, out, depth + 1);
                        }
                    }
                    None if implicit || allow_any => {}
                    None => {
                        map.remove(&key);
                        out.push(format!("{path}.{key}"));
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(item_schema)) = &schema.items {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_node(
                        item_schema,
                        item,
                        &format!("{path}[{i}]"),
                        false,
                        out,
                        depth + 1,
                    );
                }
            }
        }
        _ => {}
    }
}

/// Applies defaults, then validates a custom object (and, on update, its transition rules).
/// Returns the defaulted object or every problem found.
pub fn admit(kind: &CustomKind, object: Value, old: Option<&Value>) -> Result<Value, Vec<Problem>> {
    let defaulted = kube_cel::apply_defaults(&kind.schema_json, &object);
    let mut problems = SchemaChecker::new().check_object(&kind.schema, &defaulted);
    if let Err(errors) = kube_cel::validate_compiled(&kind.cel, &defaulted, old) {
        for err in errors.into_vec() {
            let field = err.field_path.trim_start_matches('.');
            problems.push(Problem::new(
                ProblemKind::Invalid,
                FieldPath::new(field),
                err.message.clone(),
            ));
        }
    }
    if problems.is_empty() {
        Ok(defaulted)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keda_crd() -> CustomResourceDefinition {
        ringscale_api::crds::all().remove(0)
    }

    #[test]
    fn the_keda_crds_are_accepted() {
        for crd in ringscale_api::crds::all() {
            assert!(validate_crd(&crd).is_empty(), "{:?}", validate_crd(&crd));
            assert_eq!(resources_of(&crd).len(), 1);
        }
    }

    #[test]
    fn a_crd_named_against_its_group_is_rejected() {
        let mut crd = keda_crd();
        crd.metadata.name = Some("wrong.keda.sh".into());
        assert_eq!(validate_crd(&crd)[0].path.as_str(), "metadata.name");
    }

    #[test]
    fn unknown_fields_are_pruned_and_reported() {
        let info = resources_of(&keda_crd()).remove(0);
        let kind = info.custom().unwrap();
        let mut object = json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "a"},
            "spec": {"scaleTargetRef": {"name": "w", "extra": 1}, "triggers": [{"type": "cpu", "metadata": {}}], "typo": true}});
        let pruned = prune(&kind.schema, &mut object);
        assert_eq!(pruned, vec![".spec.scaleTargetRef.extra", ".spec.typo"]);
        assert!(object["spec"].get("typo").is_none());
    }

    #[test]
    fn cel_rules_and_schema_problems_are_reported_and_defaults_applied() {
        let info = resources_of(&keda_crd()).remove(0);
        let kind = info.custom().unwrap();
        let object = json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "a"},
            "spec": {"scaleTargetRef": {"name": "w"}, "minReplicaCount": 5, "maxReplicaCount": 3,
                     "fallback": {"failureThreshold": 1, "replicas": 2},
                     "triggers": [{"type": "cpu", "metadata": {}}]}});
        let problems = admit(kind, object.clone(), None).unwrap_err();
        assert!(
            problems.iter().any(|p| p
                .message
                .contains("minReplicaCount must be less than or equal to maxReplicaCount")),
            "{problems:?}"
        );
        let mut ok = object;
        ok["spec"]["maxReplicaCount"] = json!(10);
        let admitted = admit(kind, ok, None).unwrap();
        assert_eq!(
            admitted["spec"]["fallback"]["behavior"], "static",
            "schema default applied"
        );
    }
}
