//! Patch types: JSON Patch (RFC 6902), JSON merge patch (RFC 7386), and strategic merge patch
//! for built-in kinds (lists merged by their Kubernetes merge keys).

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::resources::Builtin;

/// The `Content-Type` of a PATCH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`.
    Json,
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json` (built-in kinds only).
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// The patch type of a Content-Type header.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        match content_type.split(';').next().map(str::trim) {
            Some("application/json-patch+json") => Some(Self::Json),
            Some("application/merge-patch+json") => Some(Self::Merge),
            Some("application/strategic-merge-patch+json") => Some(Self::Strategic),
            Some("application/apply-patch+yaml" | "application/apply-patch+json") => {
                Some(Self::Apply)
            }
            _ => None,
        }
    }
}

/// A decoded patch body.
#[derive(Clone, Debug)]
pub enum Parsed {
    /// Operations of a JSON Patch.
    Json(json_patch::Patch),
    /// A merge or strategic merge patch document.
    Document(Value),
}

/// Decodes a patch body.
pub fn parse_patch(patch_type: PatchType, body: &[u8]) -> Result<Parsed, ApiError> {
    match patch_type {
        PatchType::Json => serde_json::from_slice::<json_patch::Patch>(body)
            .map(Parsed::Json)
            .map_err(|e| {
                ApiError::bad_request(format!("the JSON patch could not be decoded: {e}"))
            }),
        PatchType::Merge | PatchType::Strategic | PatchType::Apply => {
            let doc: Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("the patch could not be decoded as JSON: {e}"))
            })?;
            if !doc.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            Ok(Parsed::Document(doc))
        }
    }
}

/// The resourceVersion a merge patch pins (`metadata.resourceVersion`), as a precondition.
pub fn precondition_rv(parsed: &Parsed) -> Option<u64> {
    match parsed {
        Parsed::Document(doc) => doc
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|rv| rv.parse().ok()),
        Parsed::Json(_) => None,
    }
}

/// Applies a decoded patch to `current`.
pub fn apply_parsed(
    patch_type: PatchType,
    current: &Value,
    parsed: &Parsed,
    builtin: Option<Builtin>,
) -> Result<Value, ApiError> {
    let mut doc = current.clone();
    match (parsed, patch_type) {
        (Parsed::Json(ops), _) => {
            json_patch::patch(&mut doc, &ops.0).map_err(|e| ApiError {
                code: http::StatusCode::UNPROCESSABLE_ENTITY,
                reason: "Invalid",
                message: format!(
                    "the server rejected our request due to an error in our request: {e}"
                ),
                details: None,
                retry_after: None,
            })?;
        }
        (Parsed::Document(patch), PatchType::Strategic) if builtin.is_some() => {
            strategic_merge(&mut doc, patch)
        }
        (Parsed::Document(patch), _) => json_patch::merge(&mut doc, patch),
    }
    Ok(doc)
}

/// Decodes and applies a patch in one step.
pub fn apply_patch(
    patch_type: PatchType,
    current: &Value,
    body: &[u8],
    builtin: Option<Builtin>,
) -> Result<Value, ApiError> {
    let parsed = parse_patch(patch_type, body)?;
    apply_parsed(patch_type, current, &parsed, builtin)
}

/// The merge key of a list field of the built-in kinds, decided by the field name and, for
/// `ports`, by the shape of the items (container ports vs service ports).
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "ownerReferences" => Some("uid"),
        "conditions" => Some("type"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        "ports" => Some(if items.iter().any(|i| i.get("containerPort").is_some()) {
            "containerPort"
        } else {
            "port"
        }),
        _ => None,
    }
}

/// Primitive lists whose patch strategy is `merge` (union) rather than replace.
fn merges_primitives(field: &str) -> bool {
    matches!(field, "finalizers")
}

/// Strategic merge of `patch` into `target`.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(patch_map) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    match patch_map.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replacement = patch_map.clone();
            replacement.remove("$patch");
            *target = Value::Object(replacement);
            return;
        }
        Some("delete") => {
            *target = Value::Null;
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(target_map) = target.as_object_mut() else {
        return;
    };
    if let Some(retain) = patch_map.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        target_map.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, value) in patch_map {
        if key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(remove)) =
                (target_map.get_mut(field), value.as_array())
            {
                list.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if value.is_null() {
            target_map.remove(key);
            continue;
        }
        match value {
            Value::Array(items) => {
                let current = target_map.remove(key);
                let merged = merge_list(key, current, items);
                target_map.insert(key.clone(), merged);
            }
            Value::Object(_) => {
                let entry = target_map.entry(key.clone()).or_insert(Value::Null);
                strategic_merge(entry, value);
                if entry.is_null() {
                    target_map.remove(key);
                }
            }
            other => {
                target_map.insert(key.clone(), other.clone());
            }
        }
    }
}

fn merge_list(field: &str, current: Option<Value>, patch_items: &[Value]) -> Value {
    let current: Vec<Value> = match current {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    if patch_items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Value::Array(
            patch_items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .cloned()
                .collect(),
        );
    }
    if merges_primitives(field) {
        let mut out = current;
        for item in patch_items {
            if !out.contains(item) {
                out.push(item.clone());
            }
        }
        return Value::Array(out);
    }
    let key = merge_key(field, patch_items).or_else(|| merge_key(field, &current));
    let Some(key) = key else {
        return Value::Array(patch_items.to_vec());
    };
    let mut out = current;
    for item in patch_items {
        let id = item.get(key);
        let position = id.and_then(|id| {
            out.iter()
                .position(|existing| existing.get(key) == Some(id))
        });
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(i), true) => {
                out.remove(i);
            }
            (Some(i), false) => strategic_merge(&mut out[i], item),
            (None, true) => {}
            (None, false) => {
                let mut fresh = Value::Null;
                strategic_merge(&mut fresh, item);
                out.push(fresh);
            }
        }
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_patches_merge_containers_by_name_and_env_by_name() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}
        ]}});
        strategic_merge(
            &mut pod,
            &json!({"spec": {"containers": [{"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]}]}}),
        );
        assert_eq!(pod["spec"]["containers"][0]["image"], "a:2");
        assert_eq!(
            pod["spec"]["containers"][0]["env"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            pod["spec"]["containers"][1]["name"], "b",
            "the other container is kept"
        );
    }

    #[test]
    fn strategic_directives_delete_and_replace() {
        let mut pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}, "metadata": {"finalizers": ["x"]}});
        strategic_merge(
            &mut pod,
            &json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}, "metadata": {"finalizers": ["y"]}}),
        );
        assert_eq!(pod["spec"]["containers"], json!([{"name": "b"}]));
        assert_eq!(
            pod["metadata"]["finalizers"],
            json!(["x", "y"]),
            "finalizers merge as a set"
        );
        strategic_merge(
            &mut pod,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}),
        );
        assert_eq!(pod["metadata"]["finalizers"], json!(["y"]));
        strategic_merge(
            &mut pod,
            &json!({"spec": {"$patch": "replace", "hostname": "h"}}),
        );
        assert_eq!(pod["spec"], json!({"hostname": "h"}));
    }

    #[test]
    fn merge_patches_replace_lists_and_null_deletes() {
        let current = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        let patched = apply_patch(
            PatchType::Merge,
            &current,
            br#"{"a": {"c": null}, "l": [3]}"#,
            None,
        )
        .unwrap();
        assert_eq!(patched, json!({"a": {"b": 1}, "l": [3]}));
    }

    #[test]
    fn json_patch_failures_are_unprocessable() {
        let err = apply_patch(
            PatchType::Json,
            &json!({}),
            br#"[{"op": "replace", "path": "/missing", "value": 1}]"#,
            None,
        )
        .unwrap_err();
        assert_eq!(err.code, http::StatusCode::UNPROCESSABLE_ENTITY);
        assert!(apply_patch(PatchType::Json, &json!({}), b"not json", None).is_err());
    }
}
