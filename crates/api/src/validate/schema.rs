//! Validation of a JSON value against a CRD's structural OpenAPI v3 schema, as the API server
//! does before it stores a custom resource.
//!
//! Checked: `type` (with `nullable` and `x-kubernetes-int-or-string`), `required`, unknown
//! fields (unless `x-kubernetes-preserve-unknown-fields`), `additionalProperties`, `enum`,
//! `minimum`/`maximum` (and exclusive forms), `multipleOf`, `minLength`/`maxLength`, `pattern`,
//! `minItems`/`maxItems`, `uniqueItems`, `x-kubernetes-list-type` set/map uniqueness,
//! `minProperties`/`maxProperties`, `allOf`/`anyOf`/`oneOf`/`not`, and the formats `int32`,
//! `int64`, `date-time` and `byte`. CEL rules (`x-kubernetes-validations`) are not evaluated
//! here; each kind's semantic validation covers its rules.
//!
//! As the API server does, a `null` for a non-nullable field counts as absent.

use std::collections::HashMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Map, Number, Value};

use super::problem::{FieldPath, Problem, ProblemKind};

/// Deepest nesting of values checked; deeper values are reported instead of recursed into.
const MAX_DEPTH: usize = 128;

/// Checks values against schemas, caching compiled `pattern`s.
#[derive(Debug, Default)]
pub struct SchemaChecker {
    patterns: HashMap<String, Option<regex::Regex>>,
}

impl SchemaChecker {
    /// A checker with an empty pattern cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks a whole object against the root schema of its CRD version. `apiVersion`, `kind`
    /// and `metadata` are accepted at the root (the API server validates them separately).
    pub fn check_object(&mut self, schema: &JSONSchemaProps, object: &Value) -> Vec<Problem> {
        let mut problems = Vec::new();
        self.check(schema, object, &FieldPath::root(), true, 0, &mut problems);
        problems
    }

    /// Checks `value` found at `path` against `schema`.
    pub fn check_value(
        &mut self,
        schema: &JSONSchemaProps,
        value: &Value,
        path: &FieldPath,
    ) -> Vec<Problem> {
        let mut problems = Vec::new();
        self.check(schema, value, path, false, 0, &mut problems);
        problems
    }

    fn check(
        &mut self,
        schema: &JSONSchemaProps,
        value: &Value,
        path: &FieldPath,
        root: bool,
        depth: usize,
        out: &mut Vec<Problem>,
    ) {
        if depth > MAX_DEPTH {
            out.push(Problem::new(
                ProblemKind::Invalid,
                path.clone(),
                format!("nested deeper than {MAX_DEPTH} levels"),
            ));
            return;
        }
        if value.is_null() {
            // Absent or pruned; `required` is judged by the parent.
            return;
        }
        if !self.check_type(schema, value, path, out) {
            return;
        }
        self.check_enum(schema, value, path, out);
        match value {
            Value::Number(n) => check_number(schema, n, path, out),
            Value::String(s) => self.check_string(schema, s, path, out),
            Value::Array(items) => self.check_array(schema, items, path, depth, out),
            Value::Object(map) => self.check_object_fields(schema, map, path, root, depth, out),
            Value::Bool(_) | Value::Null => {}
        }
        self.check_combinators(schema, value, path, depth, out);
    }

    /// Returns false when the type is wrong (nothing below is checked then).
    fn check_type(
        &self,
        schema: &JSONSchemaProps,
        value: &Value,
        path: &FieldPath,
        out: &mut Vec<Problem>,
    ) -> bool {
        let ok = type_matches(schema, value);
        if !ok {
            let expected = if schema.x_kubernetes_int_or_string == Some(true) {
                "integer or string"
            } else {
                schema.type_.as_deref().unwrap_or("any")
            };
            out.push(type_problem(path, expected, value));
        }
        ok
    }

    fn check_enum(
        &self,
        schema: &JSONSchemaProps,
        value: &Value,
        path: &FieldPath,
        out: &mut Vec<Problem>,
    ) {
        let Some(allowed) = &schema.enum_ else { return };
        let allowed: Vec<&Value> = allowed
            .iter()
            .map(|j| &j.0)
            .filter(|v| !v.is_null())
            .collect();
        if allowed.is_empty() || allowed.iter().any(|a| json_equal(a, value)) {
            return;
        }
        let list = allowed
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        out.push(Problem::new(
            ProblemKind::NotSupported,
            path.clone(),
            format!(
                "unsupported value {}: supported values: {list}",
                short(value)
            ),
        ));
    }

    fn check_string(
        &mut self,
        schema: &JSONSchemaProps,
        s: &str,
        path: &FieldPath,
        out: &mut Vec<Problem>,
    ) {
        let len = i64::try_from(s.chars().count()).unwrap_or(i64::MAX);
        if let Some(min) = schema.min_length.filter(|min| len < *min) {
            out.push(Problem::new(
                ProblemKind::Invalid,
                path.clone(),
                format!("must be at least {min} character(s) long, got {len}"),
            ));
        }
        if let Some(max) = schema.max_length.filter(|max| len > *max) {
            out.push(Problem::new(
                ProblemKind::TooLong,
                path.clone(),
                format!("may not be longer than {max} character(s), got {len}"),
            ));
        }
        if let Some(pattern) = &schema.pattern {
            let compiled = self
                .patterns
                .entry(pattern.clone())
                .or_insert_with(|| regex::Regex::new(pattern).ok());
            match compiled {
                Some(re) if !re.is_match(s) => out.push(Problem::new(
                    ProblemKind::Invalid,
                    path.clone(),
                    format!(
                        "{} does not match the pattern {pattern:?}",
                        short(&Value::String(s.to_owned()))
                    ),
                )),
                Some(_) => {}
                None => out.push(Problem::new(
                    ProblemKind::Invalid,
                    path.clone(),
                    format!("the schema's pattern {pattern:?} is not a valid regular expression"),
                )),
            }
        }
        let bad_format = match schema.format.as_deref() {
            Some("date-time") => serde_json::from_value::<Time>(Value::String(s.to_owned()))
                .is_err()
                .then_some("is not an RFC 3339 date-time"),
            Some("byte") => (!is_base64(s)).then_some("is not valid base64"),
            _ => None,
        };
        if let Some(why) = bad_format {
            out.push(Problem::new(
                ProblemKind::Invalid,
                path.clone(),
                format!("{} {why}", short(&Value::String(s.to_owned()))),
            ));
        }
    }

    fn check_array(
        &mut self,
        schema: &JSONSchemaProps,
        items: &[Value],
        path: &FieldPath,
        depth: usize,
        out: &mut Vec<Problem>,
    ) {
        let len = i64::try_from(items.len()).unwrap_or(i64::MAX);
        if let Some(min) = schema.min_items.filter(|min| len < *min) {
            out.push(Problem::new(
                ProblemKind::Invalid,
                path.clone(),
                format!("must have at least {min} item(s), got {len}"),
            ));
        }
        if let Some(max) = schema.max_items.filter(|max| len > *max) {
            out.push(Problem::new(
                ProblemKind::TooLong,
                path.clone(),
                format!("must have at most {max} item(s), got {len}"),
            ));
        }
        if let Some(JSONSchemaPropsOrArray::Schema(item_schema)) = &schema.items {
            for (i, item) in items.iter().enumerate() {
                self.check(item_schema, item, &path.index(i), false, depth + 1, out);
            }
        }
        let set_semantics = schema.unique_items == Some(true)
            || schema.x_kubernetes_list_type.as_deref() == Some("set");
        if set_semantics {
            for (i, item) in items.iter().enumerate() {
                if items[..i].iter().any(|earlier| json_equal(earlier, item)) {
                    out.push(Problem::new(
                        ProblemKind::Duplicate,
                        path.index(i),
                        format!("duplicate value {}", short(item)),
                    ));
                }
            }
        }
        if schema.x_kubernetes_list_type.as_deref() == Some("map") {
            let keys = schema
                .x_kubernetes_list_map_keys
                .as_deref()
                .unwrap_or_default();
            let mut seen: Vec<Vec<&Value>> = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let key: Vec<&Value> = keys
                    .iter()
                    .map(|k| item.get(k).unwrap_or(&Value::Null))
                    .collect();
                if seen.contains(&key) {
                    let shown = keys
                        .iter()
                        .zip(&key)
                        .map(|(k, v)| format!("{k}={}", short(v)))
                        .collect::<Vec<_>>()
                        .join(", ");
                    out.push(Problem::new(
                        ProblemKind::Duplicate,
                        path.index(i),
                        format!("duplicate entry with {shown}"),
                    ));
                } else {
                    seen.push(key);
                }
            }
        }
    }

    fn check_object_fields(
        &mut self,
        schema: &JSONSchemaProps,
        map: &Map<String, Value>,
        path: &FieldPath,
        root: bool,
        depth: usize,
        out: &mut Vec<Problem>,
    ) {
        for name in schema.required.iter().flatten() {
            if map.get(name).is_none_or(Value::is_null) {
                out.push(Problem::new(
                    ProblemKind::Required,
                    path.field(name),
                    "required value is missing",
                ));
            }
        }
        let count = i64::try_from(map.len()).unwrap_or(i64::MAX);
        if let Some(min) = schema.min_properties.filter(|min| count < *min) {
            out.push(Problem::new(
                ProblemKind::Invalid,
                path.clone(),
                format!("must have at least {min} entries"),
            ));
        }
        if let Some(max) = schema.max_properties.filter(|max| count > *max) {
            out.push(Problem::new(
                ProblemKind::TooLong,
                path.clone(),
                format!("must have at most {max} entries"),
            ));
        }
        let preserve = schema.x_kubernetes_preserve_unknown_fields == Some(true);
        let embedded = schema.x_kubernetes_embedded_resource == Some(true);
        let properties = schema.properties.as_ref();
        for (name, child) in map {
            if let Some(child_schema) = properties.and_then(|p| p.get(name)) {
                self.check(
                    child_schema,
                    child,
                    &path.field(name),
                    false,
                    depth + 1,
                    out,
                );
                continue;
            }
            match &schema.additional_properties {
                Some(JSONSchemaPropsOrBool::Schema(value_schema)) => {
                    self.check(value_schema, child, &path.key(name), false, depth + 1, out);
                }
                Some(JSONSchemaPropsOrBool::Bool(true)) => {}
                _ => {
                    let implicit = (root || embedded)
                        && matches!(name.as_str(), "apiVersion" | "kind" | "metadata");
                    let declares_fields =
                        properties.is_some() || schema.additional_properties.is_some();
                    if !preserve
                        && !implicit
                        && (declares_fields || schema.type_.as_deref() == Some("object"))
                    {
                        out.push(Problem::new(
                            ProblemKind::UnknownField,
                            path.field(name),
                            format!("unknown field {name:?}"),
                        ));
                    }
                }
            }
        }
    }

    fn check_combinators(
        &mut self,
        schema: &JSONSchemaProps,
        value: &Value,
        path: &FieldPath,
        depth: usize,
        out: &mut Vec<Problem>,
    ) {
        for sub in schema.all_of.iter().flatten() {
            self.check_value_only(sub, value, path, depth, out);
        }
        if let Some(any_of) = schema.any_of.as_ref().filter(|a| !a.is_empty()) {
            let passing = any_of
                .iter()
                .filter(|sub| self.passes(sub, value, path, depth))
                .count();
            if passing == 0 {
                out.push(Problem::new(
                    ProblemKind::Invalid,
                    path.clone(),
                    "must match at least one of the allowed schemas (anyOf)",
                ));
            }
        }
        if let Some(one_of) = schema.one_of.as_ref().filter(|a| !a.is_empty()) {
            let passing = one_of
                .iter()
                .filter(|sub| self.passes(sub, value, path, depth))
                .count();
            if passing != 1 {
                out.push(Problem::new(
                    ProblemKind::Invalid,
                    path.clone(),
                    format!(
                        "must match exactly one of the allowed schemas (oneOf), matches {passing}"
                    ),
                ));
            }
        }
        if let Some(not) = &schema.not
            && self.passes(not, value, path, depth)
        {
            out.push(Problem::new(
                ProblemKind::Invalid,
                path.clone(),
                "must not match the forbidden schema (not)",
            ));
        }
    }

    /// Checks a value-validation sub-schema (inside allOf/anyOf/oneOf/not): in structural
    /// schemas these may not declare fields, so unknown fields are not judged there.
    fn check_value_only(
        &mut self,
        schema: &JSONSchemaProps,
        value: &Value,
        path: &FieldPath,
        depth: usize,
        out: &mut Vec<Problem>,
    ) {
        let mut found = Vec::new();
        self.check(schema, value, path, false, depth + 1, &mut found);
        out.extend(
            found
                .into_iter()
                .filter(|p| p.kind != ProblemKind::UnknownField),
        );
    }

    fn passes(
        &mut self,
        schema: &JSONSchemaProps,
        value: &Value,
        path: &FieldPath,
        depth: usize,
    ) -> bool {
        let mut found = Vec::new();
        self.check_value_only(schema, value, path, depth, &mut found);
        found.is_empty()
    }
}

/// Removes the object fields whose JSON type the schema rejects (recursively), so that the
/// rest of a flawed object can still be decoded and judged. List elements are left alone:
/// removing one would shift the indices of the others.
pub fn strip_mistyped(schema: &JSONSchemaProps, value: &mut Value) {
    strip(schema, value, 0);
}

fn strip(schema: &JSONSchemaProps, value: &mut Value, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match value {
        Value::Object(map) => {
            let props = schema.properties.as_ref();
            let additional = match &schema.additional_properties {
                Some(JSONSchemaPropsOrBool::Schema(s)) => Some(s.as_ref()),
                _ => None,
            };
            map.retain(|name, child| {
                let child_schema = props.and_then(|p| p.get(name)).or(additional);
                child_schema.is_none_or(|s| child.is_null() || type_matches(s, child))
            });
            for (name, child) in map.iter_mut() {
                if let Some(child_schema) = props.and_then(|p| p.get(name)).or(additional) {
                    strip(child_schema, child, depth + 1);
                }
            }
        }
        Value::Array(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(item_schema)) = &schema.items {
                for item in items {
                    strip(item_schema, item, depth + 1);
                }
            }
        }
        _ => {}
    }
}

fn type_matches(schema: &JSONSchemaProps, value: &Value) -> bool {
    if schema.x_kubernetes_int_or_string == Some(true) {
        return value.is_string() || value.as_number().is_some_and(is_integral);
    }
    match schema.type_.as_deref() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("boolean") => value.is_boolean(),
        Some("number") => value.is_number(),
        Some("integer") => value.as_number().is_some_and(is_integral),
        _ => true,
    }
}

fn check_number(schema: &JSONSchemaProps, n: &Number, path: &FieldPath, out: &mut Vec<Problem>) {
    let Some(v) = n.as_f64() else { return };
    if let Some(min) = schema.minimum {
        let exclusive = schema.exclusive_minimum == Some(true);
        if v < min || (exclusive && v == min) {
            let rel = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            out.push(Problem::new(
                ProblemKind::Invalid,
                path.clone(),
                format!("must be {rel} {}, got {n}", fmt_num(min)),
            ));
        }
    }
    if let Some(max) = schema.maximum {
        let exclusive = schema.exclusive_maximum == Some(true);
        if v > max || (exclusive && v == max) {
            let rel = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            out.push(Problem::new(
                ProblemKind::Invalid,
                path.clone(),
                format!("must be {rel} {}, got {n}", fmt_num(max)),
            ));
        }
    }
    if let Some(step) = schema.multiple_of.filter(|s| *s > 0.0) {
        let ratio = v / step;
        if (ratio - ratio.round()).abs() > 1e-9 {
            out.push(Problem::new(
                ProblemKind::Invalid,
                path.clone(),
                format!("must be a multiple of {}, got {n}", fmt_num(step)),
            ));
        }
    }
    let range = match schema.format.as_deref() {
        Some("int32") => Some((f64::from(i32::MIN), f64::from(i32::MAX), "int32")),
        Some("int64") => Some((-9.223_372_036_854_776e18, 9.223_372_036_854_776e18, "int64")),
        _ => None,
    };
    if let Some((lo, hi, name)) = range
        && (v < lo || v > hi)
    {
        out.push(Problem::new(
            ProblemKind::Invalid,
            path.clone(),
            format!("{n} does not fit in {name}"),
        ));
    }
}

fn is_integral(n: &Number) -> bool {
    n.is_i64()
        || n.is_u64()
        || n.as_f64()
            .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
}

/// JSON equality that treats `1` and `1.0` as equal, as Go's decoding does.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

fn type_problem(path: &FieldPath, expected: &str, value: &Value) -> Problem {
    Problem::new(
        ProblemKind::TypeInvalid,
        path.clone(),
        format!(
            "must be of type {expected}, got {} {}",
            json_type(value),
            short(value)
        ),
    )
}

/// The JSON type name of a value.
pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if is_integral(n) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A short rendering of a value for messages.
pub(crate) fn short(value: &Value) -> String {
    const LIMIT: usize = 64;
    let text = match value {
        Value::Array(a) => format!("[{} item(s)]", a.len()),
        Value::Object(o) => format!("{{{} field(s)}}", o.len()),
        other => other.to_string(),
    };
    if text.chars().count() > LIMIT {
        let cut: String = text.chars().take(LIMIT).collect();
        format!("{cut}...")
    } else {
        text
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        v.to_string()
    }
}

fn is_base64(s: &str) -> bool {
    let bytes: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !bytes.len().is_multiple_of(4) {
        return false;
    }
    let padding = bytes.iter().rev().take_while(|b| **b == b'=').count();
    padding <= 2
        && bytes[..bytes.len() - padding]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(v: Value) -> JSONSchemaProps {
        serde_json::from_value(v).unwrap()
    }

    fn messages(schema_json: Value, value: Value) -> Vec<String> {
        SchemaChecker::new()
            .check_value(&schema(schema_json), &value, &FieldPath::new("spec"))
            .into_iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let s = json!({
            "type": "object",
            "required": ["name", "count"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "count": {"type": "integer", "format": "int32", "minimum": 1},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "tags": {"type": "object", "additionalProperties": {"type": "string"}}
            }
        });
        let got = messages(
            s,
            json!({"name": "", "mode": "c", "tags": {"x": 5}, "typo": true}),
        );
        assert_eq!(
            got,
            vec![
                "spec.count: required value is missing",
                "spec.mode: unsupported value \"c\": supported values: \"a\", \"b\"",
                "spec.name: must be at least 1 character(s) long, got 0",
                "spec.tags.x: must be of type string, got integer 5",
                "spec.typo: unknown field \"typo\"",
            ]
        );
    }

    #[test]
    fn int32_range_and_minimum_are_enforced() {
        let s = json!({"type": "integer", "format": "int32", "minimum": 0});
        assert_eq!(
            messages(s.clone(), json!(-1)),
            vec!["spec: must be greater than or equal to 0, got -1"]
        );
        assert_eq!(
            messages(s.clone(), json!(3_000_000_000_u64)),
            vec!["spec: 3000000000 does not fit in int32"]
        );
        assert!(
            messages(s, json!(2.0)).is_empty(),
            "an integral float is an integer"
        );
    }

    #[test]
    fn null_counts_as_absent() {
        let s = json!({"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}, "b": {"type": "string"}}});
        assert_eq!(
            messages(s, json!({"a": null, "b": null})),
            vec!["spec.a: required value is missing"]
        );
    }

    #[test]
    fn preserved_and_embedded_objects_accept_undeclared_fields() {
        let s = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        assert!(messages(s, json!({"anything": {"at": "all"}})).is_empty());
    }

    #[test]
    fn int_or_string_accepts_both_and_nothing_else() {
        let s = json!({"x-kubernetes-int-or-string": true});
        assert!(messages(s.clone(), json!(5)).is_empty());
        assert!(messages(s.clone(), json!("10%")).is_empty());
        assert_eq!(
            messages(s, json!(true)),
            vec!["spec: must be of type integer or string, got boolean true"]
        );
    }

    #[test]
    fn list_map_keys_must_be_unique() {
        let s = json!({
            "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
            "items": {"type": "object", "properties": {"name": {"type": "string"}}}
        });
        assert_eq!(
            messages(s, json!([{"name": "a"}, {"name": "b"}, {"name": "a"}])),
            vec!["spec[2]: duplicate entry with name=\"a\""]
        );
    }

    #[test]
    fn patterns_and_formats_are_checked() {
        assert_eq!(
            messages(
                json!({"type": "string", "pattern": "^[a-z]+$"}),
                json!("ABC")
            ),
            vec!["spec: \"ABC\" does not match the pattern \"^[a-z]+$\""]
        );
        assert!(
            messages(
                json!({"type": "string", "format": "date-time"}),
                json!("2026-11-28T01:02:03Z")
            )
            .is_empty()
        );
        assert_eq!(
            messages(
                json!({"type": "string", "format": "date-time"}),
                json!("yesterday")
            ),
            vec!["spec: \"yesterday\" is not an RFC 3339 date-time"]
        );
    }

    #[test]
    fn mistyped_fields_are_stripped_so_the_rest_can_be_judged() {
        let s = schema(json!({
            "type": "object",
            "properties": {
                "n": {"type": "integer"},
                "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                "list": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "string"}}}}
            }
        }));
        let mut v =
            json!({"n": "five", "tags": {"a": "ok", "b": 5}, "list": [{"x": 1}, 7], "other": true});
        strip_mistyped(&s, &mut v);
        assert_eq!(
            v,
            json!({"tags": {"a": "ok"}, "list": [{}, 7], "other": true})
        );
    }

    #[test]
    fn combinators_are_honoured() {
        let s = json!({"type": "integer", "anyOf": [{"minimum": 10}, {"maximum": 0}]});
        assert!(messages(s.clone(), json!(11)).is_empty());
        assert_eq!(
            messages(s, json!(5)),
            vec!["spec: must match at least one of the allowed schemas (anyOf)"]
        );
    }

    #[test]
    fn absurd_nesting_is_reported_not_recursed() {
        let mut value = json!(1);
        for _ in 0..200 {
            value = json!([value]);
        }
        let s = json!({"type": "array"});
        assert!(
            messages(s, value).is_empty(),
            "items without a schema are not descended into"
        );
        let mut nested_schema = json!({"type": "integer"});
        let mut nested_value = json!(1);
        for _ in 0..(MAX_DEPTH + 5) {
            nested_schema = json!({"type": "array", "items": nested_schema});
            nested_value = json!([nested_value]);
        }
        let got = messages(nested_schema, nested_value);
        assert_eq!(got.len(), 1);
        assert!(got[0].ends_with("nested deeper than 128 levels"), "{got:?}");
    }
}
