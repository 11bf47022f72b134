//! Server-side printing (`Accept: ...;as=Table`), which kubectl uses for `kubectl get`: a name
//! column, a CRD's printer columns (a JSONPath subset), and a few columns of built-in kinds.

use serde_json::{Value, json};

use crate::resources::{Builtin, ResourceInfo, Semantics};

struct Column {
    name: String,
    type_: String,
    format: String,
    priority: i32,
    cell: Box<dyn Fn(&Value) -> Value>,
}

fn column(
    name: &str,
    type_: &str,
    format: &str,
    cell: impl Fn(&Value) -> Value + 'static,
) -> Column {
    Column {
        name: name.to_owned(),
        type_: type_.to_owned(),
        format: format.to_owned(),
        priority: 0,
        cell: Box::new(cell),
    }
}

fn age_column() -> Column {
    column("Age", "string", "", |o| {
        Value::String(age(o
            .pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)))
    })
}

fn ptr(o: &Value, p: &str) -> Value {
    o.pointer(p).cloned().unwrap_or(Value::Null)
}

fn int(o: &Value, p: &str) -> i64 {
    o.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn columns(info: &ResourceInfo) -> Vec<Column> {
    let mut out = vec![column("Name", "string", "name", |o| {
        ptr(o, "/metadata/name")
    })];
    match &info.semantics {
        Semantics::Custom(kind) if !kind.columns.is_empty() => {
            for c in &kind.columns {
                let path = c.json_path.clone();
                let is_date = c.type_ == "date";
                let mut col = column(
                    &c.name,
                    &c.type_,
                    c.format.as_deref().unwrap_or_default(),
                    move |o| {
                        let values = jsonpath(o, &path);
                        if is_date {
                            return Value::String(age(values.first().and_then(|v| v.as_str())));
                        }
                        match values.as_slice() {
                            [] => Value::Null,
                            [one] => (*one).clone(),
                            many => Value::String(
                                many.iter().map(|v| scalar(v)).collect::<Vec<_>>().join(","),
                            ),
                        }
                    },
                );
                col.priority = c.priority.unwrap_or(0);
                out.push(col);
            }
            return out;
        }
        Semantics::Builtin(Builtin::Deployment) => {
            out.push(column("Ready", "string", "", |o| {
                json!(format!(
                    "{}/{}",
                    int(o, "/status/readyReplicas"),
                    int(o, "/spec/replicas")
                ))
            }));
            out.push(column("Up-to-date", "integer", "", |o| {
                json!(int(o, "/status/updatedReplicas"))
            }));
            out.push(column("Available", "integer", "", |o| {
                json!(int(o, "/status/availableReplicas"))
            }));
        }
        Semantics::Builtin(Builtin::StatefulSet) => {
            out.push(column("Ready", "string", "", |o| {
                json!(format!(
                    "{}/{}",
                    int(o, "/status/readyReplicas"),
                    int(o, "/spec/replicas")
                ))
            }));
        }
        Semantics::Builtin(Builtin::HorizontalPodAutoscaler) => {
            out.push(column("Reference", "string", "", |o| {
                json!(format!(
                    "{}/{}",
                    scalar(&ptr(o, "/spec/scaleTargetRef/kind")),
                    scalar(&ptr(o, "/spec/scaleTargetRef/name"))
                ))
            }));
            out.push(column("MinPods", "integer", "", |o| {
                ptr(o, "/spec/minReplicas")
            }));
            out.push(column("MaxPods", "integer", "", |o| {
                ptr(o, "/spec/maxReplicas")
            }));
            out.push(column("Replicas", "integer", "", |o| {
                json!(int(o, "/status/currentReplicas"))
            }));
        }
        Semantics::Builtin(Builtin::Namespace) => {
            out.push(column("Status", "string", "", |o| ptr(o, "/status/phase")))
        }
        Semantics::Builtin(Builtin::Lease) => out.push(column("Holder", "string", "", |o| {
            ptr(o, "/spec/holderIdentity")
        })),
        Semantics::Builtin(Builtin::Pod) => {
            out.push(column("Status", "string", "", |o| ptr(o, "/status/phase")))
        }
        Semantics::Builtin(Builtin::Job) => {
            out.push(column("Completions", "string", "", |o| {
                json!(format!(
                    "{}/{}",
                    int(o, "/status/succeeded"),
                    int(o, "/spec/completions")
                ))
            }));
        }
        _ => {}
    }
    out.push(age_column());
    out
}

/// A Table of objects.
pub fn render(info: &ResourceInfo, objects: &[Value], resource_version: Option<&str>) -> Value {
    let columns = columns(info);
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| json!({"name": c.name, "type": c.type_, "format": c.format, "description": "", "priority": c.priority}))
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let cells: Vec<Value> = columns.iter().map(|c| (c.cell)(o)).collect();
            json!({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or_default()}})
        })
        .collect();
    let mut metadata = json!({});
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": definitions, "rows": rows})
}

/// A Table of a list response.
pub fn render_list(info: &ResourceInfo, list: &Value) -> Value {
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let mut table = render(
        info,
        &items,
        list.pointer("/metadata/resourceVersion")
            .and_then(Value::as_str),
    );
    if let Some(c) = list.pointer("/metadata/continue") {
        table["metadata"]["continue"] = c.clone();
    }
    table
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// How long ago an RFC 3339 timestamp was, as kubectl shows it (`45s`, `12m`, `3h`, `5d`).
pub fn age(timestamp: Option<&str>) -> String {
    let Some(then) = timestamp.and_then(|t| t.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".to_owned();
    };
    let seconds = (jiff::Timestamp::now().as_second() - then.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[derive(Debug, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    Filter {
        path: Vec<String>,
        equal: bool,
        literal: String,
    },
}

fn parse_jsonpath(path: &str) -> Option<Vec<Step>> {
    let path = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    let mut steps = Vec::new();
    let chars: Vec<char> = path.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                if !name.is_empty() {
                    steps.push(Step::Field(name));
                }
            }
            '[' => {
                let close = chars[i..].iter().position(|c| *c == ']')? + i;
                let inner: String = chars[i + 1..close].iter().collect();
                let inner = inner.trim();
                if inner == "*" {
                    steps.push(Step::All);
                } else if let Some(filter) =
                    inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')'))
                {
                    let (lhs, rhs, equal) = if let Some((l, r)) = filter.split_once("==") {
                        (l, r, true)
                    } else {
                        let (l, r) = filter.split_once("!=")?;
                        (l, r, false)
                    };
                    let path = lhs
                        .trim()
                        .trim_start_matches('@')
                        .split('.')
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned)
                        .collect();
                    let literal = rhs
                        .trim()
                        .trim_matches(|c| c == '"' || c == '\'')
                        .to_owned();
                    steps.push(Step::Filter {
                        path,
                        equal,
                        literal,
                    });
                } else {
                    steps.push(Step::Index(inner.parse().ok()?));
                }
                i = close + 1;
            }
            _ => {
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                steps.push(Step::Field(chars[start..i].iter().collect()));
            }
        }
    }
    Some(steps)
}

/// Evaluates the JSONPath subset printer columns use: fields, `[n]`, `[*]` and
/// `[?(@.a.b=="x")]` (or `!=`).
pub fn jsonpath<'a>(object: &'a Value, path: &str) -> Vec<&'a Value> {
    let Some(steps) = parse_jsonpath(path) else {
        return Vec::new();
    };
    let mut current = vec![object];
    for step in &steps {
        let mut next = Vec::new();
        for value in current {
            match step {
                Step::Field(f) => next.extend(value.get(f)),
                Step::Index(i) => next.extend(value.get(*i)),
                Step::All => match value {
                    Value::Array(items) => next.extend(items.iter()),
                    Value::Object(map) => next.extend(map.values()),
                    _ => {}
                },
                Step::Filter {
                    path,
                    equal,
                    literal,
                } => {
                    for item in value.as_array().into_iter().flatten() {
                        let mut field = Some(item);
                        for p in path {
                            field = field.and_then(|f| f.get(p));
                        }
                        let actual = field.map(scalar).unwrap_or_default();
                        if (actual == *literal) == *equal {
                            next.push(item);
                        }
                    }
                }
            }
        }
        current = next;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printer_column_paths_evaluate_like_kubectl() {
        let so = json!({"spec": {"triggers": [{"type": "redis"}, {"type": "cpu"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Active", "status": "False"}]}});
        assert_eq!(
            jsonpath(&so, ".status.conditions[?(@.type==\"Ready\")].status"),
            vec![&json!("True")]
        );
        assert_eq!(
            jsonpath(&so, ".spec.triggers[*].type"),
            vec![&json!("redis"), &json!("cpu")]
        );
        assert_eq!(jsonpath(&so, ".spec.triggers[1].type"), vec![&json!("cpu")]);
        assert!(jsonpath(&so, ".status.missing").is_empty());
    }

    #[test]
    fn ages_are_humanized() {
        assert_eq!(age(None), "<unknown>");
        let recent = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        assert!(age(Some(&recent)).ends_with('s'));
    }
}
