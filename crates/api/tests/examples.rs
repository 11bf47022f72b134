//! The shipped examples are valid, round-trip without loss, and together use every field of the
//! four kinds.

// Test helpers, like tests, fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use ringscale_api::manifest::{self, Document};
use ringscale_api::{ClusterTriggerAuthentication, ScaledJob, ScaledObject, TriggerAuthentication};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn example_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples found in {}", dir.display());
    files
}

fn keda_documents() -> Vec<(String, Document)> {
    let mut out = Vec::new();
    for file in example_files() {
        let text = std::fs::read_to_string(&file).expect("readable example");
        let docs = manifest::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for doc in docs.into_iter().filter(manifest::is_judged) {
            out.push((file.display().to_string(), doc));
        }
    }
    out
}

#[test]
fn every_example_object_is_valid() {
    let mut failures = Vec::new();
    for (file, doc) in keda_documents() {
        let verdict = manifest::judge(&doc);
        if !verdict.valid {
            failures.push(format!(
                "{file}:{} {:?}: {:#?}",
                verdict.line, verdict.name, verdict.problems
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "invalid examples:\n{}",
        failures.join("\n")
    );
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    original: &Value,
    what: &str,
) {
    let typed: T =
        serde_json::from_value(original.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let written = serde_json::to_value(&typed).expect("serializes");
    assert_eq!(
        &written, original,
        "{what}: serializing lost or changed fields"
    );
    let yaml = serde_saphyr::to_string(&typed).expect("renders as YAML");
    let reparsed = manifest::parse(&yaml).expect("rendered YAML parses");
    let again: T = serde_json::from_value(reparsed[0].value.clone()).expect("decodes again");
    assert_eq!(
        again, typed,
        "{what}: parse -> serialize -> parse changed the object"
    );
}

#[test]
fn every_example_object_round_trips_unchanged() {
    for (file, doc) in keda_documents() {
        let what = format!("{file}:{}", doc.line);
        match doc.kind() {
            Some("ScaledObject") => round_trip::<ScaledObject>(&doc.value, &what),
            Some("ScaledJob") => round_trip::<ScaledJob>(&doc.value, &what),
            Some("TriggerAuthentication") => round_trip::<TriggerAuthentication>(&doc.value, &what),
            Some("ClusterTriggerAuthentication") => {
                round_trip::<ClusterTriggerAuthentication>(&doc.value, &what)
            }
            other => panic!("{what}: unexpected kind {other:?}"),
        }
    }
}

/// A field of a sub-schema: the same type used in several places (a pod identity block, AWS
/// credentials) is one entry, covered when any of its uses is.
type FieldKey = (u64, String);

fn schema_key(parent: &JSONSchemaProps, segment: &str) -> FieldKey {
    fn strip_descriptions(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.remove("description");
                map.values_mut().for_each(strip_descriptions);
            }
            Value::Array(items) => items.iter_mut().for_each(strip_descriptions),
            _ => {}
        }
    }
    let mut shape = serde_json::to_value(parent).expect("schema serializes");
    strip_descriptions(&mut shape);
    let mut hasher = DefaultHasher::new();
    shape.to_string().hash(&mut hasher);
    (hasher.finish(), segment.to_owned())
}

/// Fields a schema declares, with a representative path of each. List items are `[]`, map
/// values `{}`. The Kubernetes types passed through verbatim are covered as a whole.
fn declared_fields(schema: &JSONSchemaProps, path: &str, out: &mut BTreeMap<FieldKey, String>) {
    if path.ends_with("jobTargetRef") || path.ends_with("horizontalPodAutoscalerConfig.behavior") {
        return;
    }
    for (name, child) in schema.properties.iter().flatten() {
        let child_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        out.entry(schema_key(schema, name))
            .or_insert_with(|| child_path.clone());
        declared_fields(child, &child_path, out);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = &schema.items {
        out.entry(schema_key(schema, "[]"))
            .or_insert_with(|| format!("{path}[]"));
        declared_fields(items, &format!("{path}[]"), out);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = &schema.additional_properties {
        out.entry(schema_key(schema, "{}"))
            .or_insert_with(|| format!("{path}{{}}"));
        declared_fields(values, &format!("{path}{{}}"), out);
    }
}

/// Fields present in a value, keyed as in [`declared_fields`].
fn used_fields(schema: &JSONSchemaProps, value: &Value, out: &mut BTreeSet<FieldKey>) {
    match value {
        Value::Object(map) => {
            for (name, child) in map {
                if let Some(child_schema) = schema.properties.as_ref().and_then(|p| p.get(name)) {
                    out.insert(schema_key(schema, name));
                    used_fields(child_schema, child, out);
                } else if let Some(JSONSchemaPropsOrBool::Schema(values)) =
                    &schema.additional_properties
                {
                    out.insert(schema_key(schema, "{}"));
                    used_fields(values, child, out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(item_schema)) = &schema.items {
                for item in items {
                    out.insert(schema_key(schema, "[]"));
                    used_fields(item_schema, item, out);
                }
            }
        }
        _ => {}
    }
}

#[test]
fn examples_use_every_field_of_every_kind() {
    let docs = keda_documents();
    for crd in ringscale_api::crds::all() {
        let kind = crd.spec.names.kind.clone();
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap();
        let mut declared = BTreeMap::new();
        declared_fields(schema, "", &mut declared);
        // The two authentication kinds share one spec; together they must cover it.
        let single = [kind.as_str()];
        let family: &[&str] = if kind.ends_with("TriggerAuthentication") {
            &["TriggerAuthentication", "ClusterTriggerAuthentication"]
        } else {
            &single
        };
        let mut used = BTreeSet::new();
        for (_, doc) in docs
            .iter()
            .filter(|(_, d)| d.kind().is_some_and(|k| family.contains(&k)))
        {
            used_fields(schema, &doc.value, &mut used);
        }
        let missing: Vec<&String> = declared
            .iter()
            .filter(|(key, _)| !used.contains(*key))
            .map(|(_, path)| path)
            .collect();
        assert!(missing.is_empty(), "no example of {kind} uses {missing:#?}");
    }
}
