//! `metadata.managedFields` and server-side apply, modelled on Kubernetes' structured merge:
//! every write records which manager owns which fields (FieldsV1); an apply sets the fields of
//! its configuration, conflicts with other managers that own a field with a different value
//! (unless forced), and removes the fields it applied before but no longer does.
//!
//! List semantics come from the schema for custom resources (`x-kubernetes-list-type`,
//! `x-kubernetes-list-map-keys`; atomic by default) and from the merge keys of the built-in
//! kinds.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::{Map, Value, json};

use crate::Sim;
use crate::api::{self, Subresource, Target, WriteOptions, Written};
use crate::error::{ApiError, Subject};
use crate::resources::{ResourceInfo, Semantics};

/// The operation a managedFields entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Server-side apply.
    Apply,
    /// Create, update or a non-apply patch.
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Apply => "Apply",
            Self::Update => "Update",
        }
    }
}

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    /// A field of a struct or a map key: `f:name`.
    Field(String),
    /// An item of an associative list, by its keys: `k:{"name":"c"}`.
    Key(String),
    /// An item of a set: `v:"value"`.
    Value(String),
}

impl Step {
    fn encode(&self) -> String {
        match self {
            Self::Field(f) => format!("f:{f}"),
            Self::Key(k) => format!("k:{k}"),
            Self::Value(v) => format!("v:{v}"),
        }
    }

    fn decode(text: &str) -> Option<Self> {
        let (tag, rest) = text.split_at(text.find(':')?);
        let rest = &rest[1..];
        match tag {
            "f" => Some(Self::Field(rest.to_owned())),
            "k" => Some(Self::Key(rest.to_owned())),
            "v" => Some(Self::Value(rest.to_owned())),
            _ => None,
        }
    }
}

/// A set of field paths, as a tree; `member` marks that the node itself is in the set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<Step, FieldSet>,
}

impl FieldSet {
    fn is_empty(&self) -> bool {
        !self.member && self.children.iter().all(|(_, c)| c.is_empty())
    }

    /// FieldsV1 JSON.
    fn to_json(&self) -> Value {
        let mut map = Map::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".to_owned(), json!({}));
        }
        for (step, child) in &self.children {
            if !child.is_empty() {
                map.insert(step.encode(), child.to_json());
            }
        }
        Value::Object(map)
    }

    /// Parses FieldsV1 JSON.
    fn from_json(value: &Value) -> Self {
        let mut set = FieldSet::default();
        let Some(map) = value.as_object() else {
            return set;
        };
        if map.is_empty() {
            set.member = true;
        }
        for (key, child) in map {
            if key == "." {
                set.member = true;
            } else if let Some(step) = Step::decode(key) {
                set.children.insert(step, FieldSet::from_json(child));
            }
        }
        set
    }

    fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (step, child) in &other.children {
            self.children.entry(step.clone()).or_default().union(child);
        }
    }

    fn subtract(&mut self, other: &FieldSet) {
        if other.member {
            self.member = false;
        }
        for (step, child) in &other.children {
            if let Some(mine) = self.children.get_mut(step) {
                mine.subtract(child);
            }
        }
        self.children.retain(|_, c| !c.is_empty());
    }

    fn intersect(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (step, child) in &self.children {
            if let Some(theirs) = other.children.get(step) {
                let both = child.intersect(theirs);
                if !both.is_empty() {
                    out.children.insert(step.clone(), both);
                }
            }
        }
        out
    }

    /// Every member path, outermost first.
    fn paths(&self) -> Vec<Vec<Step>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (step, child) in &self.children {
            prefix.push(step.clone());
            child.collect(prefix, out);
            prefix.pop();
        }
    }

    fn insert(&mut self, path: &[Step]) {
        match path.split_first() {
            None => self.member = true,
            Some((first, rest)) => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }
}

/// How a list is merged.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ListKind {
    Atomic,
    Set,
    Map(Vec<String>),
}

/// Where in the type a value sits: a schema node for custom resources, or the built-in
/// conventions.
#[derive(Clone, Copy, Debug)]
enum Shape<'a> {
    Schema(&'a JSONSchemaProps),
    Builtin,
    /// Below an atomic value or outside the schema: treated as an opaque leaf.
    Opaque,
}

impl<'a> Shape<'a> {
    fn field(self, name: &str) -> Shape<'a> {
        match self {
            Shape::Schema(s) => {
                if s.x_kubernetes_map_type.as_deref() == Some("atomic") {
                    return Shape::Opaque;
                }
                if let Some(child) = s.properties.as_ref().and_then(|p| p.get(name)) {
                    return Shape::Schema(child);
                }
                match &s.additional_properties {
                    Some(JSONSchemaPropsOrBool::Schema(v)) => Shape::Schema(v),
                    _ if s.x_kubernetes_preserve_unknown_fields == Some(true) => Shape::Builtin,
                    _ => Shape::Opaque,
                }
            }
            Shape::Builtin => Shape::Builtin,
            Shape::Opaque => Shape::Opaque,
        }
    }

    fn items(self) -> Shape<'a> {
        match self {
            Shape::Schema(s) => match &s.items {
                Some(JSONSchemaPropsOrArray::Schema(i)) => Shape::Schema(i),
                _ => Shape::Opaque,
            },
            other => other,
        }
    }

    fn list_kind(self, field: &str, items: &[Value]) -> ListKind {
        match self {
            Shape::Schema(s) => match s.x_kubernetes_list_type.as_deref() {
                Some("set") => ListKind::Set,
                Some("map") => {
                    ListKind::Map(s.x_kubernetes_list_map_keys.clone().unwrap_or_default())
                }
                _ => ListKind::Atomic,
            },
            Shape::Builtin => {
                if field == "finalizers" {
                    return ListKind::Set;
                }
                match builtin_merge_key(field, items) {
                    Some(key) => ListKind::Map(vec![key.to_owned()]),
                    None => ListKind::Atomic,
                }
            }
            Shape::Opaque => ListKind::Atomic,
        }
    }

    fn is_opaque(self) -> bool {
        matches!(self, Shape::Opaque)
    }
}

fn builtin_merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "ownerReferences" => Some("uid"),
        "conditions" => Some("type"),
        "ports" => Some(if items.iter().any(|i| i.get("containerPort").is_some()) {
            "containerPort"
        } else {
            "port"
        }),
        _ => None,
    }
}

fn root_shape(info: &ResourceInfo) -> Shape<'_> {
    match &info.semantics {
        Semantics::Custom(c) => Shape::Schema(&c.schema),
        Semantics::Builtin(_) => Shape::Builtin,
    }
}

/// The key step of an associative-list item, or None when a key field is missing.
fn key_step(item: &Value, keys: &[String]) -> Option<Step> {
    let mut key = BTreeMap::new();
    for k in keys {
        key.insert(k.clone(), item.get(k)?.clone());
    }
    Some(Step::Key(serde_json::to_string(&key).ok()?))
}

fn value_step(item: &Value) -> Step {
    Step::Value(item.to_string())
}

/// Fields of the metadata that managers own (the rest is server-managed).
const OWNED_METADATA: &[&str] = &["labels", "annotations", "finalizers", "ownerReferences"];

/// The set of leaf fields set in `value`.
fn fields_of(
    value: &Value,
    shape: Shape<'_>,
    field_name: &str,
    out: &mut FieldSet,
    prefix: &mut Vec<Step>,
    depth: usize,
) {
    if depth > 64 {
        out.insert(prefix);
        return;
    }
    match value {
        Value::Object(map) if !shape.is_opaque() && !map.is_empty() => {
            for (k, v) in map {
                prefix.push(Step::Field(k.clone()));
                fields_of(v, shape.field(k), k, out, prefix, depth + 1);
                prefix.pop();
            }
        }
        Value::Array(items) if !shape.is_opaque() => match shape.list_kind(field_name, items) {
            ListKind::Atomic => out.insert(prefix),
            ListKind::Set => {
                for item in items {
                    prefix.push(value_step(item));
                    out.insert(prefix);
                    prefix.pop();
                }
            }
            ListKind::Map(keys) => {
                for item in items {
                    match key_step(item, &keys) {
                        Some(step) => {
                            prefix.push(step);
                            out.insert(prefix);
                            fields_of(item, shape.items(), "", out, prefix, depth + 1);
                            prefix.pop();
                        }
                        None => out.insert(prefix),
                    }
                }
            }
        },
        _ => out.insert(prefix),
    }
}

/// The owned fields of an object for a subresource: metadata's owned parts, and either the
/// spec side (main resource) or the status (status subresource).
fn owned_fields(object: &Value, info: &ResourceInfo, subresource: Option<&str>) -> FieldSet {
    let mut out = FieldSet::default();
    let Some(map) = object.as_object() else {
        return out;
    };
    let shape = root_shape(info);
    for (k, v) in map {
        let include = match (subresource, k.as_str()) {
            (_, "apiVersion" | "kind") => false,
            (Some("status"), key) => key == "status",
            (_, "status") => !info.status,
            _ => true,
        };
        if !include {
            continue;
        }
        if k == "metadata" {
            if subresource == Some("status") {
                continue;
            }
            for m in OWNED_METADATA {
                if let Some(mv) = v.get(*m) {
                    let mut prefix = vec![
                        Step::Field("metadata".to_owned()),
                        Step::Field((*m).to_owned()),
                    ];
                    fields_of(mv, Shape::Builtin, m, &mut out, &mut prefix, 2);
                }
            }
            continue;
        }
        let mut prefix = vec![Step::Field(k.clone())];
        fields_of(v, shape.field(k), k, &mut out, &mut prefix, 1);
    }
    out
}

/// The fields whose values differ between `old` and `new` (present in `new`).
fn changed_fields(
    old: Option<&Value>,
    new: &Value,
    info: &ResourceInfo,
    subresource: Option<&str>,
) -> FieldSet {
    let new_fields = owned_fields(new, info, subresource);
    let Some(old) = old else { return new_fields };
    let mut changed = FieldSet::default();
    for path in new_fields.paths() {
        if lookup(new, &path) != lookup(old, &path) {
            changed.insert(&path);
        }
    }
    changed
}

/// The value at a field path.
fn lookup<'a>(value: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let mut current = value;
    for step in path {
        current = match step {
            Step::Field(f) => current.get(f)?,
            Step::Key(k) => {
                let key: BTreeMap<String, Value> = serde_json::from_str(k).ok()?;
                current
                    .as_array()?
                    .iter()
                    .find(|item| key.iter().all(|(kk, kv)| item.get(kk) == Some(kv)))?
            }
            Step::Value(v) => {
                let wanted: Value = serde_json::from_str(v).ok()?;
                current.as_array()?.iter().find(|item| **item == wanted)?
            }
        };
    }
    Some(current)
}

/// Removes the value at a field path (and an emptied parent map).
fn remove_path(value: &mut Value, path: &[Step]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = value;
    for step in parents {
        let next = match step {
            Step::Field(f) => current.get_mut(f),
            Step::Key(k) => {
                let key: Option<BTreeMap<String, Value>> = serde_json::from_str(k).ok();
                match (key, current.as_array_mut()) {
                    (Some(key), Some(items)) => items
                        .iter_mut()
                        .find(|item| key.iter().all(|(kk, kv)| item.get(kk) == Some(kv))),
                    _ => None,
                }
            }
            Step::Value(_) => None,
        };
        match next {
            Some(n) => current = n,
            None => return,
        }
    }
    match last {
        Step::Field(f) => {
            if let Some(map) = current.as_object_mut() {
                map.remove(f);
            }
        }
        Step::Key(k) => {
            if let (Ok(key), Some(items)) = (
                serde_json::from_str::<BTreeMap<String, Value>>(k),
                current.as_array_mut(),
            ) {
                items.retain(|item| !key.iter().all(|(kk, kv)| item.get(kk) == Some(kv)));
            }
        }
        Step::Value(v) => {
            if let (Ok(wanted), Some(items)) =
                (serde_json::from_str::<Value>(v), current.as_array_mut())
            {
                items.retain(|item| *item != wanted);
            }
        }
    }
}

/// Dotted rendering of a field path for conflict messages: `.spec.replicas`.
fn render(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Field(f) => {
                out.push('.');
                out.push_str(f);
            }
            Step::Key(k) | Step::Value(k) => {
                out.push('[');
                out.push_str(k);
                out.push(']');
            }
        }
    }
    out
}

#[derive(Clone, Debug)]
struct Entry {
    manager: String,
    operation: Operation,
    subresource: Option<String>,
    api_version: String,
    time: String,
    fields: FieldSet,
}

fn entries_of(object: &Value) -> Vec<Entry> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some(Entry {
                manager: e.get("manager")?.as_str()?.to_owned(),
                operation: match e.get("operation")?.as_str()? {
                    "Apply" => Operation::Apply,
                    _ => Operation::Update,
                },
                subresource: e
                    .get("subresource")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                api_version: e
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                time: e
                    .get("time")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                fields: FieldSet::from_json(e.get("fieldsV1").unwrap_or(&Value::Null)),
            })
        })
        .collect()
}

fn write_entries(object: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager, "operation": e.operation.as_str(), "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": e.fields.to_json(),
            });
            if let Some(sub) = &e.subresource {
                v["subresource"] = json!(sub);
            }
            v
        })
        .collect();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".to_owned(), Value::Array(list));
        }
    }
}

/// Records a non-apply write: `manager` takes ownership of the fields it changed.
pub fn record(
    object: &mut Value,
    old: Option<&Value>,
    manager: &str,
    operation: Operation,
    subresource: Option<&str>,
    info: &ResourceInfo,
) {
    if operation == Operation::Apply {
        // `server_side_apply` wrote the entries itself.
        return;
    }
    let mut entries = match (object.pointer("/metadata/managedFields"), old) {
        // A client may rewrite managedFields itself (kubectl does so when it moves ownership from
        // client-side to server-side apply); `[{}]` clears them, an empty list changes nothing.
        (Some(Value::Array(list)), Some(old))
            if Some(&Value::Array(list.clone())) != old.pointer("/metadata/managedFields") =>
        {
            if list.is_empty() {
                entries_of(old)
            } else {
                entries_of(object)
            }
        }
        (_, Some(old)) => entries_of(old),
        (_, None) => Vec::new(),
    };
    {
        let changed = changed_fields(old, object, info, subresource);
        if !changed.is_empty() {
            for entry in &mut entries {
                entry.fields.subtract(&changed);
            }
            let sub = subresource.map(str::to_owned);
            let existing = entries.iter_mut().find(|e| {
                e.manager == manager && e.operation == Operation::Update && e.subresource == sub
            });
            match existing {
                Some(entry) => {
                    entry.fields.union(&changed);
                    entry.time = api::now();
                    entry.api_version = info.api_version();
                }
                None => entries.push(Entry {
                    manager: manager.to_owned(),
                    operation,
                    subresource: sub,
                    api_version: info.api_version(),
                    time: api::now(),
                    fields: changed,
                }),
            }
        }
    }
    write_entries(object, &entries);
}

/// Merges an applied configuration into the live object.
fn merge_applied(
    live: &mut Value,
    config: &Value,
    shape: Shape<'_>,
    field_name: &str,
    depth: usize,
) {
    if depth > 64 {
        *live = config.clone();
        return;
    }
    match (live, config) {
        (Value::Object(live_map), Value::Object(config_map)) if !shape.is_opaque() => {
            for (k, v) in config_map {
                if v.is_null() {
                    continue;
                }
                let entry = live_map.entry(k.clone()).or_insert(Value::Null);
                if entry.is_null() {
                    *entry = v.clone();
                } else {
                    merge_applied(entry, v, shape.field(k), k, depth + 1);
                }
            }
        }
        (Value::Array(live_items), Value::Array(config_items)) if !shape.is_opaque() => match shape
            .list_kind(field_name, config_items)
        {
            ListKind::Atomic => *live_items = config_items.clone(),
            ListKind::Set => {
                for item in config_items {
                    if !live_items.contains(item) {
                        live_items.push(item.clone());
                    }
                }
            }
            ListKind::Map(keys) => {
                for item in config_items {
                    let step = key_step(item, &keys);
                    let position = step.as_ref().and_then(|s| {
                        live_items
                            .iter()
                            .position(|existing| key_step(existing, &keys).as_ref() == Some(s))
                    });
                    match position {
                        Some(i) => {
                            merge_applied(&mut live_items[i], item, shape.items(), "", depth + 1)
                        }
                        None => live_items.push(item.clone()),
                    }
                }
            }
        },
        (live, config) => *live = config.clone(),
    }
}

/// PATCH with `application/apply-patch+yaml`.
pub fn server_side_apply(
    sim: &Sim,
    target: &Target,
    body: &[u8],
    options: &WriteOptions,
) -> Result<Written, ApiError> {
    if options.field_manager.is_empty() {
        return Err(ApiError::bad_request("PATCH /apply requires fieldManager"));
    }
    let config = api::parse_object(body)?;
    let name = target.name.clone().unwrap_or_default();
    let config_name = config
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if config_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({config_name}) does not match the name on the URL ({name})"
        )));
    }
    for field in ["apiVersion", "kind"] {
        if config
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(ApiError::bad_request(format!(
                "invalid object: {field} must be set in an apply configuration"
            )));
        }
    }
    if config
        .pointer("/metadata/managedFields")
        .is_some_and(|m| !m.is_null())
    {
        return Err(ApiError::bad_request(
            "metadata.managedFields must be nil in an apply configuration",
        ));
    }
    let subresource = match target.subresource {
        Some(Subresource::Status) => Some("status"),
        _ => None,
    };
    let applied = owned_fields(&config, &target.info, subresource);
    let manager = options.field_manager.clone();
    let force = options.force;
    let info = target.info.clone();
    let subject_name = name.clone();
    api::write_applied(sim, target, options, move |live| {
        let mut entries = live.map(entries_of).unwrap_or_default();
        let sub = subresource.map(str::to_owned);
        let mut object = live.cloned().unwrap_or_else(|| json!({}));
        // Conflicts: fields another manager owns with a different value.
        let mut conflicts = Vec::new();
        let mut forced = FieldSet::default();
        for entry in entries.iter().filter(|e| {
            !(e.manager == manager && e.operation == Operation::Apply) && e.subresource == sub
        }) {
            for path in entry.fields.intersect(&applied).paths() {
                if lookup(&object, &path) != lookup(&config, &path) {
                    conflicts.push((entry.manager.clone(), render(&path)));
                    forced.insert(&path);
                }
            }
        }
        if !conflicts.is_empty() && !force {
            let subject = Subject {
                group: &info.gvr.group,
                resource: &info.gvr.resource,
                name: &subject_name,
            };
            return Err(ApiError::apply_conflict(subject, &conflicts));
        }
        let previous = entries
            .iter()
            .find(|e| {
                e.manager == manager && e.operation == Operation::Apply && e.subresource == sub
            })
            .map(|e| e.fields.clone())
            .unwrap_or_default();
        let mut config_body = config.clone();
        if let Some(meta) = config_body
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
        {
            meta.retain(|k, _| {
                OWNED_METADATA.contains(&k.as_str())
                    || k == "name"
                    || k == "namespace"
                    || k == "generateName"
            });
        }
        if subresource == Some("status") {
            if let Some(status) = config.get("status") {
                let mut into = object.get("status").cloned().unwrap_or(Value::Null);
                if into.is_null() {
                    into = status.clone();
                } else {
                    merge_applied(
                        &mut into,
                        status,
                        root_shape(&info).field("status"),
                        "status",
                        1,
                    );
                }
                object["status"] = into;
            }
        } else {
            merge_applied(&mut object, &config_body, root_shape(&info), "", 0);
        }
        // Fields this manager applied before but not now, and nobody else owns, go away.
        let mut dropped = previous.clone();
        dropped.subtract(&applied);
        for entry in entries
            .iter()
            .filter(|e| !(e.manager == manager && e.operation == Operation::Apply))
        {
            dropped.subtract(&entry.fields);
        }
        let mut dropped_paths = dropped.paths();
        dropped_paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for path in dropped_paths {
            remove_path(&mut object, &path);
        }
        for entry in &mut entries {
            entry.fields.subtract(&forced);
        }
        entries.retain(|e| {
            !(e.manager == manager && e.operation == Operation::Apply && e.subresource == sub)
        });
        entries.push(Entry {
            manager: manager.clone(),
            operation: Operation::Apply,
            subresource: sub.clone(),
            api_version: info.api_version(),
            time: api::now(),
            fields: applied.clone(),
        });
        if let Some(map) = object.as_object_mut() {
            map.insert("apiVersion".to_owned(), Value::String(info.api_version()));
            map.insert("kind".to_owned(), Value::String(info.kind.clone()));
        }
        write_entries(&mut object, &entries);
        if live.is_none()
            && let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.remove("resourceVersion");
        }
        Ok(object)
    })
}

/// The default field manager for a request without `fieldManager`: the user agent up to the
/// first '/', as the API server derives it.
pub fn default_manager(user_agent: Option<&str>) -> String {
    let agent = user_agent.unwrap_or("unknown");
    let prefix = agent.split('/').next().unwrap_or(agent);
    prefix.chars().take(128).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info() -> ResourceInfo {
        crate::resources::builtins()
            .into_iter()
            .find(|r| r.kind == "Deployment")
            .unwrap()
    }

    #[test]
    fn field_sets_encode_as_fields_v1() {
        let object = json!({"metadata": {"labels": {"app": "web"}, "finalizers": ["a"]},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let fields = owned_fields(&object, &info(), None);
        assert_eq!(
            fields.to_json(),
            json!({
                "f:metadata": {"f:finalizers": {"v:\"a\"": {}}, "f:labels": {"f:app": {}}},
                "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}
            })
        );
        assert_eq!(FieldSet::from_json(&fields.to_json()), fields);
    }

    #[test]
    fn an_update_takes_ownership_of_what_it_changed() {
        let info = info();
        let old = json!({"metadata": {}, "spec": {"replicas": 1, "paused": false}});
        let mut new = json!({"metadata": {}, "spec": {"replicas": 3, "paused": false}});
        record(
            &mut new,
            Some(&old),
            "scaler",
            Operation::Update,
            None,
            &info,
        );
        let entries = entries_of(&new);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].manager, "scaler");
        assert_eq!(
            entries[0].fields.to_json(),
            json!({"f:spec": {"f:replicas": {}}})
        );
    }

    #[test]
    fn removing_a_path_finds_list_items_by_key() {
        let mut object =
            json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b"}]}});
        remove_path(
            &mut object,
            &[
                Step::Field("spec".into()),
                Step::Field("containers".into()),
                Step::Key("{\"name\":\"a\"}".into()),
                Step::Field("image".into()),
            ],
        );
        assert_eq!(
            object,
            json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}})
        );
        remove_path(
            &mut object,
            &[
                Step::Field("spec".into()),
                Step::Field("containers".into()),
                Step::Key("{\"name\":\"b\"}".into()),
            ],
        );
        assert_eq!(object, json!({"spec": {"containers": [{"name": "a"}]}}));
    }

    #[test]
    fn the_default_manager_comes_from_the_user_agent() {
        assert_eq!(
            default_manager(Some("kubectl/v1.32.4 (linux/amd64)")),
            "kubectl"
        );
        assert_eq!(default_manager(None), "unknown");
    }
}
