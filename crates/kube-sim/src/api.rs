//! The API verbs, independent of HTTP: get, list, create, update, patch, delete and
//! deletecollection, for the main resource and its `status` and `scale` subresources.

use std::sync::Arc;

use base64::Engine as _;
use http::StatusCode;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rand::Rng as _;
use ringscale_api::validate::{FieldPath, Findings, Problem, ProblemKind, meta};
use serde_json::{Map, Value, json};

use crate::error::{ApiError, Subject, success_status};
use crate::managed::{self, Operation};
use crate::patch::{self, PatchType};
use crate::resources::{Builtin, ResourceInfo, Semantics};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{GroupResource, ObjKey, StoreError};
use crate::{Sim, custom, strategy};

/// Which part of an object a request addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    /// `/status`.
    Status,
    /// `/scale`.
    Scale,
}

/// The object (or collection) a request addresses.
#[derive(Clone, Debug)]
pub struct Target {
    /// The resource.
    pub info: Arc<ResourceInfo>,
    /// The namespace from the URL.
    pub namespace: Option<String>,
    /// The name from the URL.
    pub name: Option<String>,
    /// The subresource from the URL.
    pub subresource: Option<Subresource>,
}

impl Target {
    fn resource(&self) -> GroupResource {
        GroupResource::new(&self.info.gvr.group, &self.info.gvr.resource)
    }

    fn key(&self, name: &str) -> ObjKey {
        ObjKey::new(self.namespace.as_deref().unwrap_or_default(), name)
    }

    fn subject<'a>(&'a self, name: &'a str) -> Subject<'a> {
        Subject {
            group: &self.info.gvr.group,
            resource: &self.info.gvr.resource,
            name,
        }
    }
}

/// How unknown fields in a request body are treated (`fieldValidation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and return a warning (the API server's default).
    #[default]
    Warn,
    /// Reject the request.
    Strict,
}

/// Options of a write.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: validate and return the result without storing it.
    pub dry_run: bool,
    /// `fieldManager`, else derived from the user agent.
    pub field_manager: String,
    /// `fieldValidation`.
    pub field_validation: FieldValidation,
    /// `force` (server-side apply).
    pub force: bool,
}

/// The result of a write.
#[derive(Debug)]
pub struct Written {
    /// The object as stored (or as it would be, for a dry run).
    pub object: Value,
    /// `Warning` headers for the response.
    pub warnings: Vec<String>,
    /// Whether the write created the object (201 rather than 200).
    pub created: bool,
}

/// Parameters of a list.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// `labelSelector`.
    pub label_selector: LabelSelector,
    /// `fieldSelector`.
    pub field_selector: FieldSelector,
    /// `limit` (0 = no limit).
    pub limit: usize,
    /// `continue`.
    pub continue_token: Option<String>,
}

/// Options of a delete (from the DeleteOptions body and query).
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// `propagationPolicy`: Orphan, Background or Foreground.
    pub propagation: Option<String>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

/// Current time as the API server writes timestamps (RFC 3339, seconds).
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A random UUID (version 4) in canonical form.
pub fn new_uid() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    format!("{prefix}{suffix}")
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

/// The `metadata` map of an object, created if missing (None only for non-objects).
fn meta_map(object: &mut Value) -> Option<&mut Map<String, Value>> {
    let map = object.as_object_mut()?;
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut()
}

fn not_an_object() -> ApiError {
    ApiError::bad_request("the body of the request must be a JSON object")
}

/// The body of a request as a JSON object, or 400.
pub fn parse_object(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value = if body
        .first()
        .is_some_and(|b| *b == b'{' || b.is_ascii_whitespace())
    {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body of the request could not be decoded as JSON: {e}"
            ))
        })?
    } else {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("the body of the request is not UTF-8"))?;
        serde_saphyr::from_str(text).map_err(|e| {
            ApiError::bad_request(format!(
                "the body of the request could not be decoded as YAML: {e}"
            ))
        })?
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    Ok(value)
}

/// GET of one object (or its scale).
pub fn get(sim: &Sim, target: &Target) -> Result<Value, ApiError> {
    let name = target.name.as_deref().unwrap_or_default();
    let (object, _) = sim
        .store
        .get(&target.resource(), &target.key(name))
        .ok_or_else(|| ApiError::not_found(target.subject(name)))?;
    match target.subresource {
        Some(Subresource::Scale) => scale_of(&target.info, &object),
        _ => Ok(served_as(&target.info, &object)),
    }
}

/// The object as a given version serves it (apiVersion rewritten; versions share a schema).
fn served_as(info: &ResourceInfo, object: &Value) -> Value {
    let mut out = object.clone();
    if let Some(map) = out.as_object_mut() {
        map.insert("apiVersion".to_owned(), Value::String(info.api_version()));
        map.insert("kind".to_owned(), Value::String(info.kind.clone()));
    }
    out
}

/// The field selectors a resource supports.
pub fn selectable_fields(info: &ResourceInfo) -> Vec<String> {
    let mut fields = vec!["metadata.name".to_owned(), "metadata.namespace".to_owned()];
    match &info.semantics {
        Semantics::Custom(c) => fields.extend(c.selectable_fields.iter().cloned()),
        Semantics::Builtin(Builtin::Pod) => fields.extend(
            [
                "status.phase",
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.serviceAccountName",
                "status.podIP",
            ]
            .map(String::from),
        ),
        Semantics::Builtin(Builtin::Event) => fields.extend(
            [
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ]
            .map(String::from),
        ),
        Semantics::Builtin(Builtin::Secret) => fields.push("type".to_owned()),
        Semantics::Builtin(Builtin::Namespace) => fields.push("status.phase".to_owned()),
        Semantics::Builtin(Builtin::Job) => fields.push("status.successful".to_owned()),
        _ => {}
    }
    fields
}

/// Whether an object passes a list's selectors.
pub fn selected(object: &Value, labels: &LabelSelector, fields: &FieldSelector) -> bool {
    let object_labels = object
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object);
    labels.matches(object_labels) && fields.matches(object)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    ns: String,
    name: String,
}

/// A page of a list: the objects as stored and the list's metadata.
#[derive(Debug)]
pub struct ListPage {
    /// The objects, in key order.
    pub items: Vec<crate::store::Obj>,
    /// The list's `metadata` (resourceVersion, continue, remainingItemCount).
    pub metadata: Value,
}

/// LIST: a page of matching objects with the list's resourceVersion.
pub fn list_page(sim: &Sim, target: &Target, options: &ListOptions) -> Result<ListPage, ApiError> {
    let after = match &options.continue_token {
        Some(token) => {
            let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token)
                .ok()
                .and_then(|b| serde_json::from_slice::<ContinueToken>(&b).ok())
                .ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
            if decoded.rv < sim.store.floor() {
                return Err(ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ));
            }
            Some(ObjKey::new(&decoded.ns, &decoded.name))
        }
        None => None,
    };
    let namespace = target.namespace.as_deref().or_else(|| {
        options
            .field_selector
            .pinned("metadata.namespace")
            .filter(|_| target.info.namespaced)
    });
    let filter = |o: &Value| selected(o, &options.label_selector, &options.field_selector);
    let page = sim.store.list(
        &target.resource(),
        namespace,
        after.as_ref(),
        options.limit,
        &filter,
    );
    let mut metadata = json!({"resourceVersion": page.rv.to_string()});
    if let Some(next) = &page.next {
        let token = serde_json::to_vec(&ContinueToken {
            rv: page.rv,
            ns: next.namespace.clone(),
            name: next.name.clone(),
        })
        .unwrap_or_default();
        metadata["continue"] =
            Value::String(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token));
        metadata["remainingItemCount"] = json!(page.remaining);
    }
    Ok(ListPage {
        items: page.items,
        metadata,
    })
}

/// LIST as a JSON value.
pub fn list(sim: &Sim, target: &Target, options: &ListOptions) -> Result<Value, ApiError> {
    let page = list_page(sim, target, options)?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|o| served_as(&target.info, o))
        .collect();
    Ok(
        json!({"kind": target.info.list_kind, "apiVersion": target.info.api_version(), "metadata": page.metadata, "items": items}),
    )
}

/// A list response serialized without copying the objects: the stored JSON of each item is
/// concatenated (items stored under another version are rewritten).
pub fn list_json(info: &ResourceInfo, page: &ListPage) -> bytes::Bytes {
    let served = info.api_version();
    let size: usize = page.items.iter().map(|o| o.json().len() + 1).sum();
    let mut out = Vec::with_capacity(size + 256);
    out.extend_from_slice(b"{\"kind\":");
    out.extend_from_slice(&serde_json::to_vec(&info.list_kind).unwrap_or_default());
    out.extend_from_slice(b",\"apiVersion\":");
    out.extend_from_slice(&serde_json::to_vec(&served).unwrap_or_default());
    out.extend_from_slice(b",\"metadata\":");
    out.extend_from_slice(&serde_json::to_vec(&page.metadata).unwrap_or_default());
    out.extend_from_slice(b",\"items\":[");
    for (i, item) in page.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let as_stored = item.get("apiVersion").and_then(Value::as_str) == Some(served.as_str())
            && item.get("kind").and_then(Value::as_str) == Some(info.kind.as_str());
        if as_stored {
            out.extend_from_slice(item.json());
        } else {
            out.extend_from_slice(&serde_json::to_vec(&served_as(info, item)).unwrap_or_default());
        }
    }
    out.extend_from_slice(b"]}");
    bytes::Bytes::from(out)
}

/// Checks that a namespaced create lands in an existing, live namespace.
fn check_namespace(sim: &Sim, target: &Target, name: &str) -> Result<(), ApiError> {
    if !target.info.namespaced {
        return Ok(());
    }
    let ns = target.namespace.as_deref().unwrap_or_default();
    let namespaces = GroupResource::new("", "namespaces");
    match sim.store.get(&namespaces, &ObjKey::new("", ns)) {
        None => Err(ApiError::not_found(Subject {
            group: "",
            resource: "namespaces",
            name: ns,
        })),
        Some((object, _)) if meta_str(&object, "deletionTimestamp").is_some() => {
            Err(ApiError::forbidden(
                target.subject(name),
                &format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            ))
        }
        Some(_) => Ok(()),
    }
}

/// CREATE.
pub fn create(
    sim: &Sim,
    target: &Target,
    body: Value,
    options: &WriteOptions,
) -> Result<Written, ApiError> {
    create_as(sim, target, body, options, Operation::Update)
}

/// CREATE recorded as `operation` (server-side apply of a missing object creates it as Apply,
/// with the managed fields the apply computed).
fn create_as(
    sim: &Sim,
    target: &Target,
    mut body: Value,
    options: &WriteOptions,
    operation: Operation,
) -> Result<Written, ApiError> {
    if target.subresource.is_some() {
        return Err(ApiError::method_not_allowed(
            "create is not supported on subresources",
        ));
    }
    check_type(&target.info, &body)?;
    if target.info.namespaced && target.namespace.is_none() {
        return Err(ApiError::bad_request(
            "the namespace of the object is required for a namespaced resource",
        ));
    }
    let url_ns = target.namespace.clone();
    {
        let meta = meta_map(&mut body).ok_or_else(not_an_object)?;
        match (meta.get("namespace").and_then(Value::as_str), &url_ns) {
            (Some(body_ns), Some(url_ns)) if !body_ns.is_empty() && body_ns != url_ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {}
        }
        match &url_ns {
            Some(ns) => {
                meta.insert("namespace".to_owned(), Value::String(ns.clone()));
            }
            None => {
                meta.remove("namespace");
            }
        }
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|rv| !rv.is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if name.is_empty() {
            let prefix = meta
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if prefix.is_empty() {
                let problem = Problem::new(
                    ProblemKind::Required,
                    FieldPath::new("metadata.name"),
                    "name or generateName is required",
                );
                return Err(ApiError::invalid(
                    &target.info.kind,
                    &target.info.gvr.group,
                    "",
                    &[problem],
                ));
            }
            meta.insert("name".to_owned(), Value::String(generate_name(&prefix)));
        }
        let uid = new_uid();
        meta.insert("uid".to_owned(), Value::String(uid));
        meta.insert("creationTimestamp".to_owned(), Value::String(now()));
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        if operation != Operation::Apply {
            meta.remove("managedFields");
        }
        if target.info.tracks_generation() {
            meta.insert("generation".to_owned(), json!(1));
        } else {
            meta.remove("generation");
        }
    }
    let name = meta_str(&body, "name").unwrap_or_default().to_owned();
    check_namespace(sim, target, &name)?;
    if target.info.status
        && target.info.builtin() != Some(Builtin::Namespace)
        && let Some(map) = body.as_object_mut()
    {
        map.remove("status");
    }
    let mut warnings = Vec::new();
    let mut object = admit(&target.info, body, None, options, &mut warnings)?;
    managed::record(
        &mut object,
        None,
        &options.field_manager,
        operation,
        None,
        &target.info,
    );
    crate::lifecycle::on_create(sim, &target.info, &mut object)?;
    if options.dry_run {
        return Ok(Written {
            object,
            warnings,
            created: true,
        });
    }
    let stored = sim
        .store
        .create(&target.resource(), &target.key(&name), object)
        .map_err(|e| match e {
            StoreError::Exists => ApiError::already_exists(target.subject(&name)),
            other => ApiError::internal(format!("create failed: {other:?}")),
        })?;
    crate::lifecycle::after_write(sim, &target.info, None, &stored);
    Ok(Written {
        object: served_as(&target.info, &stored),
        warnings,
        created: true,
    })
}

fn check_type(info: &ResourceInfo, body: &Value) -> Result<(), ApiError> {
    let api_version = body
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or_default();
    if !kind.is_empty() && kind != info.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            info.kind
        )));
    }
    if !api_version.is_empty() && api_version != info.api_version() {
        let same_group = api_version.split_once('/').map_or("", |(g, _)| g) == info.gvr.group;
        if !same_group {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({api_version}) does not match the expected API version ({})",
                info.api_version()
            )));
        }
    }
    Ok(())
}

/// Decoding, defaulting and validation of an object about to be stored.
fn admit(
    info: &ResourceInfo,
    mut object: Value,
    old: Option<&Value>,
    options: &WriteOptions,
    warnings: &mut Vec<String>,
) -> Result<Value, ApiError> {
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".to_owned(), Value::String(info.api_version()));
        map.insert("kind".to_owned(), Value::String(info.kind.clone()));
    }
    let name = meta_str(&object, "name").unwrap_or_default().to_owned();
    let mut unknown = Vec::new();
    normalize_metadata(&mut object, &mut unknown)
        .map_err(|problem| ApiError::invalid(&info.kind, &info.gvr.group, &name, &[problem]))?;
    let mut findings = Findings::default();
    meta::check(
        &serde_json::from_value::<ObjectMeta>(object["metadata"].clone()).unwrap_or_default(),
        info.namespaced,
        &mut findings,
    );
    let mut problems = findings.problems;
    let object = match &info.semantics {
        Semantics::Builtin(kind) => {
            let decoded = strategy::decode_builtin(*kind, &object).map_err(|e| {
                ApiError::bad_request(format!(
                    "{} in version {:?} cannot be handled as a {}: {e}",
                    info.kind, info.gvr.version, info.kind
                ))
            })?;
            unknown.extend(decoded.unknown);
            let mut object = decoded.object;
            let uid = meta_str(&object, "uid").unwrap_or_default().to_owned();
            strategy::default_builtin(*kind, &mut object, &uid);
            problems.extend(strategy::validate_builtin(*kind, &object, old));
            object
        }
        Semantics::Custom(kind) => {
            if !kind.preserve_unknown_fields {
                unknown.extend(custom::prune(&kind.schema, &mut object));
            }
            match custom::admit(kind, object.clone(), old) {
                Ok(defaulted) => defaulted,
                Err(more) => {
                    problems.extend(more);
                    object
                }
            }
        }
    };
    if !unknown.is_empty() {
        match options.field_validation {
            FieldValidation::Strict => {
                let list = unknown
                    .iter()
                    .map(|u| format!("unknown field {:?}", u.trim_start_matches('.')))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(ApiError::bad_request(format!(
                    "strict decoding error: {list}"
                )));
            }
            FieldValidation::Warn => warnings.extend(
                unknown
                    .iter()
                    .map(|u| format!("unknown field {:?}", u.trim_start_matches('.'))),
            ),
            FieldValidation::Ignore => {}
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid(
            &info.kind,
            &info.gvr.group,
            &name,
            &problems,
        ));
    }
    Ok(object)
}

/// Decodes `metadata` as ObjectMeta (dropping unknown fields) and checks server-owned fields.
fn normalize_metadata(object: &mut Value, unknown: &mut Vec<String>) -> Result<(), Problem> {
    let raw = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let typed: ObjectMeta = serde_json::from_value(raw.clone()).map_err(|e| {
        Problem::new(
            ProblemKind::TypeInvalid,
            FieldPath::new("metadata"),
            e.to_string(),
        )
    })?;
    let normalized = serde_json::to_value(&typed).map_err(|e| {
        Problem::new(
            ProblemKind::Invalid,
            FieldPath::new("metadata"),
            e.to_string(),
        )
    })?;
    if let (Some(raw), Some(norm)) = (raw.as_object(), normalized.as_object()) {
        for key in raw
            .keys()
            .filter(|k| !norm.contains_key(*k) && !raw[*k].is_null())
        {
            unknown.push(format!(".metadata.{key}"));
        }
    }
    if let Some(map) = object.as_object_mut() {
        map.insert("metadata".to_owned(), normalized);
    }
    Ok(())
}

/// The part of an object whose changes bump `metadata.generation`: everything except
/// metadata and status.
fn spec_part(object: &Value) -> Value {
    let mut out = object.clone();
    if let Some(map) = out.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
        map.remove("apiVersion");
        map.remove("kind");
    }
    out
}

/// UPDATE (PUT) of the object, its status, or its scale.
pub fn update(
    sim: &Sim,
    target: &Target,
    body: Value,
    options: &WriteOptions,
) -> Result<Written, ApiError> {
    let name = target.name.clone().unwrap_or_default();
    if target.subresource == Some(Subresource::Scale) {
        return update_scale(sim, target, body, options);
    }
    check_type(&target.info, &body)?;
    let body_name = meta_str(&body, "name").unwrap_or_default();
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let precondition = meta_str(&body, "resourceVersion")
        .filter(|rv| !rv.is_empty())
        .map(str::to_owned);
    if precondition.is_none() && target.info.custom().is_some() {
        let problem = Problem::new(
            ProblemKind::Invalid,
            FieldPath::new("metadata.resourceVersion"),
            "must be specified for an update",
        );
        return Err(ApiError::invalid(
            &target.info.kind,
            &target.info.gvr.group,
            &name,
            &[problem],
        ));
    }
    let precondition = match precondition {
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
        None => None,
    };
    let manager = options.field_manager.clone();
    write_existing(
        sim,
        target,
        &name,
        precondition,
        options,
        |_| Ok(body.clone()),
        Operation::Update,
        &manager,
    )
}

/// The read-modify-write at the core of update and patch: reads the current object, builds
/// the new one with `build`, applies the subresource rules, admission and generation, and
/// stores it with compare-and-swap, retrying when a concurrent write got in between (unless
/// the client gave a resourceVersion precondition).
#[allow(clippy::too_many_arguments)]
fn write_existing(
    sim: &Sim,
    target: &Target,
    name: &str,
    precondition: Option<u64>,
    options: &WriteOptions,
    build: impl Fn(&Value) -> Result<Value, ApiError>,
    operation: Operation,
    manager: &str,
) -> Result<Written, ApiError> {
    let resource = target.resource();
    let key = target.key(name);
    for _ in 0..16 {
        let (current, current_rv) = sim
            .store
            .get(&resource, &key)
            .ok_or_else(|| ApiError::not_found(target.subject(name)))?;
        if let Some(expected) = precondition
            && expected != current_rv
        {
            return Err(ApiError::conflict(
                target.subject(name),
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        let mut new = build(&current)?;
        carry_server_fields(&mut new, &current, target)?;
        match target.subresource {
            Some(Subresource::Status) => {
                let status = new.get("status").cloned();
                new = (*current).clone();
                if let Some(map) = new.as_object_mut() {
                    match status {
                        Some(s) => map.insert("status".to_owned(), s),
                        None => map.remove("status"),
                    };
                }
            }
            _ if target.info.status => {
                if let Some(map) = new.as_object_mut() {
                    match current.get("status") {
                        Some(s) => map.insert("status".to_owned(), s.clone()),
                        None => map.remove("status"),
                    };
                }
            }
            _ => {}
        }
        let mut warnings = Vec::new();
        let mut object = admit(&target.info, new, Some(&current), options, &mut warnings)?;
        if target.info.tracks_generation() {
            let generation = current
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let bumped = if spec_part(&object) != spec_part(&current) {
                generation + 1
            } else {
                generation
            };
            if let Some(meta) = meta_map(&mut object) {
                meta.insert("generation".to_owned(), json!(bumped));
            }
        }
        let subresource = match target.subresource {
            Some(Subresource::Status) => Some("status"),
            Some(Subresource::Scale) => Some("scale"),
            None => None,
        };
        managed::record(
            &mut object,
            Some(&current),
            manager,
            operation,
            subresource,
            &target.info,
        );
        crate::lifecycle::on_update(sim, &target.info, &mut object, &current)?;
        if same_object(&object, &current) {
            return Ok(Written {
                object: served_as(&target.info, &current),
                warnings,
                created: false,
            });
        }
        if options.dry_run {
            return Ok(Written {
                object,
                warnings,
                created: false,
            });
        }
        let finished = meta_str(&object, "deletionTimestamp").is_some()
            && finalizers(&object).is_empty()
            && !crate::lifecycle::deletion_blocked(&target.info, &object);
        let result = if finished {
            sim.store.remove(&resource, &key, Some(current_rv))
        } else {
            sim.store.replace(&resource, &key, current_rv, object)
        };
        match result {
            Ok(stored) => {
                if finished {
                    crate::lifecycle::after_delete(sim, &target.info, &stored, None);
                } else {
                    crate::lifecycle::after_write(sim, &target.info, Some(&current), &stored);
                }
                return Ok(Written {
                    object: served_as(&target.info, &stored),
                    warnings,
                    created: false,
                });
            }
            Err(StoreError::Conflict(_)) if precondition.is_none() => continue,
            Err(StoreError::Conflict(_)) => {
                return Err(ApiError::conflict(
                    target.subject(name),
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
            Err(StoreError::NotFound) => return Err(ApiError::not_found(target.subject(name))),
            Err(StoreError::Exists) => return Err(ApiError::internal("unexpected store state")),
        }
    }
    Err(ApiError::conflict(
        target.subject(name),
        "too many concurrent writes; please retry",
    ))
}

/// Keeps the fields only the server may set, and refuses changes to name and namespace.
fn carry_server_fields(new: &mut Value, current: &Value, target: &Target) -> Result<(), ApiError> {
    let name = meta_str(current, "name").unwrap_or_default().to_owned();
    let current_meta = current
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let meta = meta_map(new).ok_or_else(not_an_object)?;
    if meta
        .get("namespace")
        .and_then(Value::as_str)
        .is_some_and(|ns| {
            Some(ns) != current_meta.get("namespace").and_then(Value::as_str) && !ns.is_empty()
        })
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if let Some(uid) = meta.get("uid").and_then(Value::as_str)
        && !uid.is_empty()
        && Some(uid) != current_meta.get("uid").and_then(Value::as_str)
    {
        let problem = Problem::new(
            ProblemKind::Invalid,
            FieldPath::new("metadata.uid"),
            "field is immutable",
        );
        return Err(ApiError::invalid(
            &target.info.kind,
            &target.info.gvr.group,
            &name,
            &[problem],
        ));
    }
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "resourceVersion",
    ] {
        match current_meta.get(field) {
            Some(v) => meta.insert(field.to_owned(), v.clone()),
            None => meta.remove(field),
        };
    }
    if meta_str(current, "deletionTimestamp").is_some() {
        let old: Vec<String> = finalizers(current);
        let new_finalizers: Vec<String> = meta
            .get("finalizers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str().map(str::to_owned))
            .collect();
        if let Some(added) = new_finalizers.iter().find(|f| !old.contains(f)) {
            let problem = Problem::new(
                ProblemKind::Forbidden,
                FieldPath::new("metadata.finalizers"),
                format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers [{added:?}]"
                ),
            );
            return Err(ApiError::invalid(
                &target.info.kind,
                &target.info.gvr.group,
                &name,
                &[problem],
            ));
        }
    }
    Ok(())
}

/// Finalizers of an object.
pub fn finalizers(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_owned))
        .collect()
}

/// Whether two versions of an object are the same apart from bookkeeping (a no-op write is
/// not stored and keeps the resourceVersion, as the API server does).
fn same_object(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
            if let Some(Value::Array(entries)) = meta.get_mut("managedFields") {
                for entry in entries {
                    if let Some(e) = entry.as_object_mut() {
                        e.remove("time");
                    }
                }
            }
        }
        v
    };
    strip(a) == strip(b)
}

/// PATCH of the object, its status, or its scale.
pub fn patch(
    sim: &Sim,
    target: &Target,
    patch_type: PatchType,
    body: &[u8],
    options: &WriteOptions,
) -> Result<Written, ApiError> {
    let name = target.name.clone().unwrap_or_default();
    if patch_type == PatchType::Strategic && target.info.custom().is_some() {
        return Err(ApiError::unsupported_media_type(
            "application/strategic-merge-patch+json",
        ));
    }
    if target.subresource == Some(Subresource::Scale) {
        let current = get(sim, target)?;
        let patched = patch::apply_patch(patch_type, &current, body, None)?;
        return update_scale(sim, target, patched, options);
    }
    if patch_type == PatchType::Apply {
        return crate::managed::server_side_apply(sim, target, body, options);
    }
    let parsed = patch::parse_patch(patch_type, body)?;
    let precondition = patch::precondition_rv(&parsed);
    let builtin = target.info.builtin();
    write_existing(
        sim,
        target,
        &name,
        precondition,
        options,
        |current| patch::apply_parsed(patch_type, current, &parsed, builtin),
        Operation::Update,
        &options.field_manager,
    )
}

/// Writes a server-side-applied object (used by `managed`).
pub(crate) fn write_applied(
    sim: &Sim,
    target: &Target,
    options: &WriteOptions,
    build: impl Fn(Option<&Value>) -> Result<Value, ApiError>,
) -> Result<Written, ApiError> {
    let name = target.name.clone().unwrap_or_default();
    if sim
        .store
        .get(&target.resource(), &target.key(&name))
        .is_none()
    {
        let object = build(None)?;
        match create_as(sim, target, object, options, Operation::Apply) {
            Err(e) if e.reason == "AlreadyExists" => {}
            other => return other,
        }
    }
    write_existing(
        sim,
        target,
        &name,
        None,
        options,
        |current| build(Some(current)),
        Operation::Apply,
        &options.field_manager,
    )
}

fn scale_of(info: &ResourceInfo, object: &Value) -> Result<Value, ApiError> {
    let paths = info
        .scale
        .as_ref()
        .ok_or_else(|| ApiError::no_route("scale"))?;
    let spec_replicas = read_path(object, &paths.spec_replicas)
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let status_replicas = read_path(object, &paths.status_replicas)
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let selector = paths
        .label_selector
        .as_deref()
        .and_then(|p| read_path(object, p))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| selector_string(object));
    let meta = object.get("metadata").cloned().unwrap_or_default();
    let mut status = json!({"replicas": status_replicas});
    if let Some(selector) = selector {
        status["selector"] = Value::String(selector);
    }
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"), "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": spec_replicas},
        "status": status,
    }))
}

/// `spec.selector.matchLabels` as a selector string, for built-in workloads.
fn selector_string(object: &Value) -> Option<String> {
    let labels = object.pointer("/spec/selector/matchLabels")?.as_object()?;
    Some(
        labels
            .iter()
            .filter_map(|(k, v)| Some(format!("{k}={}", v.as_str()?)))
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn read_path<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = object;
    for part in path.trim_start_matches('.').split('.') {
        current = current.get(part)?;
    }
    Some(current)
}

fn write_path(object: &mut Value, path: &str, value: Value) {
    let parts: Vec<&str> = path.trim_start_matches('.').split('.').collect();
    let mut current = object;
    for part in &parts[..parts.len().saturating_sub(1)] {
        if !current.get(*part).is_some_and(Value::is_object)
            && let Some(map) = current.as_object_mut()
        {
            map.insert((*part).to_owned(), json!({}));
        }
        match current.get_mut(*part) {
            Some(next) => current = next,
            None => return,
        }
    }
    if let (Some(last), Some(map)) = (parts.last(), current.as_object_mut()) {
        map.insert((*last).to_owned(), value);
    }
}

fn update_scale(
    sim: &Sim,
    target: &Target,
    body: Value,
    options: &WriteOptions,
) -> Result<Written, ApiError> {
    let name = target.name.clone().unwrap_or_default();
    let paths = target
        .info
        .scale
        .clone()
        .ok_or_else(|| ApiError::no_route("scale"))?;
    let replicas = body
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if replicas < 0 {
        let problem = Problem::new(
            ProblemKind::Invalid,
            FieldPath::new("spec.replicas"),
            format!("must be greater than or equal to 0, got {replicas}"),
        );
        return Err(ApiError::invalid("Scale", "autoscaling", &name, &[problem]));
    }
    let precondition = meta_str(&body, "resourceVersion")
        .filter(|rv| !rv.is_empty())
        .and_then(|rv| rv.parse::<u64>().ok());
    let main = Target {
        subresource: None,
        ..target.clone()
    };
    let written = write_existing(
        sim,
        &main,
        &name,
        precondition,
        options,
        |current| {
            let mut next = current.clone();
            write_path(&mut next, &paths.spec_replicas, json!(replicas));
            Ok(next)
        },
        Operation::Update,
        &options.field_manager,
    )?;
    Ok(Written {
        object: scale_of(&target.info, &written.object)?,
        warnings: written.warnings,
        created: false,
    })
}

/// DELETE of one object. Returns the HTTP status and body.
pub fn delete(
    sim: &Sim,
    target: &Target,
    options: &DeleteOptions,
) -> Result<(StatusCode, Value), ApiError> {
    let name = target.name.clone().unwrap_or_default();
    if target.subresource.is_some() {
        return Err(ApiError::method_not_allowed(
            "delete is not supported on subresources",
        ));
    }
    let resource = target.resource();
    let key = target.key(&name);
    let (current, current_rv) = sim
        .store
        .get(&resource, &key)
        .ok_or_else(|| ApiError::not_found(target.subject(&name)))?;
    if let Some(uid) = &options.uid
        && meta_str(&current, "uid") != Some(uid.as_str())
    {
        return Err(ApiError::conflict(
            target.subject(&name),
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta_str(&current, "uid").unwrap_or_default()
            ),
        ));
    }
    if let Some(rv) = &options.resource_version
        && rv != &current_rv.to_string()
    {
        return Err(ApiError::conflict(
            target.subject(&name),
            &format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {current_rv}"
            ),
        ));
    }
    let mut finalizers = finalizers(&current);
    match options.propagation.as_deref() {
        Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
            finalizers.push("foregroundDeletion".to_owned())
        }
        Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => {
            finalizers.push("orphan".to_owned())
        }
        Some("Foreground" | "Orphan" | "Background") | None => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unsupported propagationPolicy {other:?}: supported values: \"Orphan\", \"Background\", \"Foreground\""
            )));
        }
    }
    let deferred = crate::lifecycle::before_delete(&target.info, &current, &mut finalizers);
    if options.dry_run {
        return Ok((StatusCode::OK, served_as(&target.info, &current)));
    }
    if finalizers.is_empty() && !deferred {
        let removed = sim
            .store
            .remove(&resource, &key, Some(current_rv))
            .map_err(|_| {
                ApiError::conflict(
                    target.subject(&name),
                    "the object was modified while being deleted",
                )
            })?;
        crate::lifecycle::after_delete(sim, &target.info, &removed, options.propagation.as_deref());
        let body = if target.info.custom().is_some() || target.info.builtin() == Some(Builtin::Pod)
        {
            served_as(&target.info, &removed)
        } else {
            success_status(Some(
                json!({"name": name, "group": target.info.gvr.group, "kind": target.info.gvr.resource, "uid": meta_str(&removed, "uid")}),
            ))
        };
        return Ok((StatusCode::OK, body));
    }
    if meta_str(&current, "deletionTimestamp").is_some() {
        return Ok((StatusCode::ACCEPTED, served_as(&target.info, &current)));
    }
    let mut marked = (*current).clone();
    if let Some(meta) = meta_map(&mut marked) {
        meta.insert("deletionTimestamp".to_owned(), Value::String(now()));
        meta.insert("deletionGracePeriodSeconds".to_owned(), json!(0));
        meta.insert("finalizers".to_owned(), json!(finalizers));
    }
    if let Some(Builtin::Namespace) = target.info.builtin() {
        marked["status"] = json!({"phase": "Terminating"});
    }
    let stored = sim
        .store
        .replace(&resource, &key, current_rv, marked)
        .map_err(|_| {
            ApiError::conflict(
                target.subject(&name),
                "the object was modified while being deleted",
            )
        })?;
    crate::lifecycle::after_write(sim, &target.info, Some(&current), &stored);
    Ok((StatusCode::OK, served_as(&target.info, &stored)))
}

/// DELETE of a collection: deletes every matching object.
pub fn delete_collection(
    sim: &Sim,
    target: &Target,
    list_options: &ListOptions,
    options: &DeleteOptions,
) -> Result<Value, ApiError> {
    let listed = list(
        sim,
        target,
        &ListOptions {
            limit: 0,
            continue_token: None,
            ..list_options.clone()
        },
    )?;
    let mut deleted = Vec::new();
    for item in listed["items"].as_array().into_iter().flatten() {
        let name = meta_str(item, "name").unwrap_or_default().to_owned();
        let ns = meta_str(item, "namespace").map(str::to_owned);
        let one = Target {
            namespace: ns.or_else(|| target.namespace.clone()),
            name: Some(name),
            subresource: None,
            info: target.info.clone(),
        };
        // Like the real registry, the response lists the objects as they were found, not the
        // per-object delete results.
        match delete(sim, &one, options) {
            Ok(_) => deleted.push(item.clone()),
            Err(e) if e.reason == "NotFound" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(
        json!({"kind": target.info.list_kind, "apiVersion": target.info.api_version(), "metadata": {"resourceVersion": sim.store.rv().to_string()}, "items": deleted}),
    )
}
