//! Reading multi-document YAML manifests and judging the keda.sh objects in them, offline.
//!
//! Each document is parsed into JSON (YAML 1.1 booleans such as `yes` become booleans, as
//! kubectl reads them) together with the line of every field, so that each problem can point
//! at its line. Objects of the four keda.sh kinds are checked against their CRD schema and then
//! against KEDA's semantic rules; objects of other kinds are kept for reference.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use serde::de::{DeserializeOwned, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use serde_saphyr::Spanned;

use crate::names::{
    API_VERSION, GROUP, KIND_CLUSTER_TRIGGER_AUTHENTICATION, KIND_SCALED_JOB, KIND_SCALED_OBJECT,
    KIND_TRIGGER_AUTHENTICATION,
};
use crate::validate::schema::{SchemaChecker, json_type, strip_mistyped};
use crate::validate::{self, FieldPath, Findings, Problem, ProblemKind};
use crate::{ClusterTriggerAuthentication, ScaledJob, ScaledObject, TriggerAuthentication};

/// Most documents read from one text.
pub const MAX_DOCUMENTS: usize = 20_000;
/// Most YAML nodes read from one text (a 64 MiB manifest has fewer).
pub const MAX_NODES: usize = 4_000_000;
/// Deepest YAML nesting accepted.
pub const MAX_DEPTH: usize = 200;
/// Most events replayed through aliases; manifests rarely use aliases, alias bombs do.
pub const MAX_ALIAS_EVENTS: usize = 100_000;

/// A YAML document that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct YamlError {
    /// 1-based line, when known.
    pub line: Option<u64>,
    /// 1-based column, when known.
    pub column: Option<u64>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => {
                write!(f, "line {line} column {column}: {}", self.message)
            }
            (Some(line), None) => write!(f, "line {line}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for YamlError {}

/// One object read from a manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// The object as JSON.
    pub value: Value,
    /// Line where the object starts.
    pub line: u64,
    /// Line of each field, keyed by field path (`spec.triggers[0].type`).
    lines: HashMap<String, u64>,
}

impl Document {
    /// `apiVersion` of the object.
    pub fn api_version(&self) -> Option<&str> {
        self.value.get("apiVersion").and_then(Value::as_str)
    }

    /// `kind` of the object.
    pub fn kind(&self) -> Option<&str> {
        self.value.get("kind").and_then(Value::as_str)
    }

    /// `metadata.name` of the object.
    pub fn name(&self) -> Option<&str> {
        self.value.pointer("/metadata/name").and_then(Value::as_str)
    }

    /// `metadata.namespace` of the object.
    pub fn namespace(&self) -> Option<&str> {
        self.value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
    }

    /// The line of `path`, or of its nearest ancestor that appears in the document.
    pub fn line_of(&self, path: &FieldPath) -> u64 {
        let mut current = path.as_str();
        loop {
            if let Some(line) = self.lines.get(current) {
                return *line;
            }
            match current.rfind(['.', '[']) {
                Some(cut) => current = &current[..cut],
                None => return self.line,
            }
        }
    }
}

/// Parses every document of a YAML (or JSON) text. Empty documents are skipped and `List`
/// objects are expanded into their items.
pub fn parse(text: &str) -> Result<Vec<Document>, YamlError> {
    let options = serde_saphyr::options! {
        with_snippet: false,
        budget: serde_saphyr::budget! {
            max_documents: MAX_DOCUMENTS,
            max_nodes: MAX_NODES,
            max_depth: MAX_DEPTH,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_ALIAS_EVENTS,
        },
    };
    let docs: Vec<Spanned<Node>> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|err| {
            let location = err.location();
            YamlError {
                line: location.map(|l| l.line()),
                column: location.map(|l| l.column()),
                message: first_line(&err.to_string()),
            }
        })?;
    let mut out = Vec::new();
    for doc in docs {
        let line = doc.referenced.line();
        let mut lines = HashMap::new();
        let value = doc.value.into_json(&FieldPath::root(), &mut lines);
        if value.is_null() {
            continue;
        }
        expand(Document { value, line, lines }, &mut out);
    }
    Ok(out)
}

/// Expands `kind: List` (and `*List`) documents into their items.
fn expand(doc: Document, out: &mut Vec<Document>) {
    let is_list = doc
        .kind()
        .is_some_and(|k| k == "List" || k.ends_with("List"))
        && doc.value.get("items").is_some_and(Value::is_array);
    if !is_list {
        out.push(doc);
        return;
    }
    let Document { value, line, lines } = doc;
    let Value::Object(mut map) = value else {
        return;
    };
    let Some(Value::Array(items)) = map.remove("items") else {
        return;
    };
    for (i, item) in items.into_iter().enumerate() {
        let prefix = format!("items[{i}]");
        let item_line = lines.get(&prefix).copied().unwrap_or(line);
        let item_lines = lines
            .iter()
            .filter_map(|(path, l)| {
                let rest = path.strip_prefix(&prefix)?;
                let rest = rest.strip_prefix('.').unwrap_or(rest);
                (rest.is_empty() || !rest.starts_with('[')).then(|| (rest.to_owned(), *l))
            })
            .collect();
        out.push(Document {
            value: item,
            line: item_line,
            lines: item_lines,
        });
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or(text);
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// A YAML node with the location of each child, as read by serde-saphyr.
enum Node {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl Node {
    fn into_json(self, path: &FieldPath, lines: &mut HashMap<String, u64>) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(b),
            Node::Number(n) => Value::Number(n),
            Node::String(s) => Value::String(s),
            Node::Seq(items) => Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let child = path.index(i);
                        lines.insert(child.as_str().to_owned(), item.referenced.line());
                        item.value.into_json(&child, lines)
                    })
                    .collect(),
            ),
            Node::Map(entries) => {
                let mut map = Map::new();
                for (key, value) in entries {
                    let child = path.key(&key.value);
                    lines.insert(child.as_str().to_owned(), key.referenced.line());
                    let json = value.value.into_json(&child, lines);
                    map.insert(key.value, json);
                }
                Value::Object(map)
            }
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Node, E> {
        serde_json::Number::from_f64(v)
            .map(Node::Number)
            .ok_or_else(|| E::custom(format!("{v} cannot be represented in JSON")))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Node, E> {
        String::from_utf8(v.to_vec())
            .map(Node::String)
            .map_err(|_| E::custom("binary data is not UTF-8"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<Spanned<String>, Spanned<Node>>()? {
            entries.push(entry);
        }
        if entries.iter().any(|(k, _)| k.value.is_empty()) {
            return Err(A::Error::custom("empty mapping keys are not allowed"));
        }
        Ok(Node::Map(entries))
    }
}

/// A problem with the line it is on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LocatedProblem {
    /// Where the problem is.
    pub path: FieldPath,
    /// The rule that is broken.
    pub message: String,
    /// Line of the field (or of its nearest ancestor present in the manifest).
    pub line: u64,
}

impl fmt::Display for LocatedProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let problem = Problem::new(
            ProblemKind::Invalid,
            self.path.clone(),
            self.message.clone(),
        );
        problem.fmt(f)
    }
}

/// The verdict on one keda.sh object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Judgement {
    /// Kind of the object, when the document names one.
    pub kind: Option<String>,
    /// Namespace of the object, as written.
    pub namespace: Option<String>,
    /// Name of the object.
    pub name: Option<String>,
    /// Whether the object has no problem (warnings allowed).
    pub valid: bool,
    /// Everything that makes the object invalid.
    pub problems: Vec<LocatedProblem>,
    /// Things that work but are probably not what was meant.
    pub warnings: Vec<LocatedProblem>,
    /// Line where the object starts.
    pub line: u64,
}

/// Whether a document is one of the four keda.sh kinds (or claims the keda.sh group), i.e.
/// whether [`judge`] judges it. Other objects are only read for reference.
pub fn is_judged(doc: &Document) -> bool {
    let group = doc
        .api_version()
        .and_then(|v| v.split_once('/'))
        .map(|(g, _)| g);
    group == Some(GROUP)
        || doc.api_version().is_none()
        || doc.kind().is_none()
        || !doc.value.is_object()
}

/// Judges one document; see [`is_judged`] for which documents are judged.
pub fn judge(doc: &Document) -> Judgement {
    let findings = findings(doc);
    let locate = |problems: Vec<Problem>| {
        let mut located: Vec<LocatedProblem> = problems
            .into_iter()
            .map(|p| LocatedProblem {
                line: doc.line_of(&p.path),
                path: p.path,
                message: p.message,
            })
            .collect();
        located.sort_by(|a, b| (a.line, &a.path).cmp(&(b.line, &b.path)));
        located
    };
    Judgement {
        kind: doc.kind().map(str::to_owned),
        namespace: doc.namespace().map(str::to_owned),
        name: doc.name().map(str::to_owned),
        valid: findings.is_valid(),
        problems: locate(findings.problems),
        warnings: locate(findings.warnings),
        line: doc.line,
    }
}

fn findings(doc: &Document) -> Findings {
    let mut out = Findings::default();
    if !doc.value.is_object() {
        out.invalid(
            FieldPath::root(),
            format!(
                "a manifest document must be a mapping, got {}",
                json_type(&doc.value)
            ),
        );
        return out;
    }
    let (Some(api_version), Some(kind)) = (doc.api_version(), doc.kind()) else {
        for field in ["apiVersion", "kind"] {
            if doc.value.get(field).and_then(Value::as_str).is_none() {
                out.required(FieldPath::new(field), format!("{field} is required"));
            }
        }
        return out;
    };
    if api_version != API_VERSION {
        out.problem(
            ProblemKind::NotSupported,
            FieldPath::new("apiVersion"),
            format!(
                "{api_version:?} is not served; the keda.sh kinds are served as {API_VERSION:?}"
            ),
        );
        return out;
    }
    match kind {
        KIND_SCALED_OBJECT => check_kind::<ScaledObject>(doc, kind, validate::scaled_object::check),
        KIND_SCALED_JOB => check_kind::<ScaledJob>(doc, kind, validate::scaled_job::check),
        KIND_TRIGGER_AUTHENTICATION => {
            check_kind::<TriggerAuthentication>(doc, kind, validate::trigger_auth::check)
        }
        KIND_CLUSTER_TRIGGER_AUTHENTICATION => check_kind::<ClusterTriggerAuthentication>(
            doc,
            kind,
            validate::trigger_auth::check_cluster,
        ),
        other => {
            out.problem(
                ProblemKind::NotSupported,
                FieldPath::new("kind"),
                format!(
                    "{API_VERSION} has no kind {other:?}; its kinds are ScaledObject, ScaledJob, \
                     TriggerAuthentication and ClusterTriggerAuthentication"
                ),
            );
            out
        }
    }
}

/// Schema problems first; then, if the object decodes, the semantic problems not already
/// reported at the same path.
fn check_kind<T: DeserializeOwned>(
    doc: &Document,
    kind: &str,
    semantic: fn(&T) -> Findings,
) -> Findings {
    let mut out = Findings::default();
    let mut decodable = doc.value.clone();
    if let Some(schema) = crd_schema(kind) {
        out.problems = SchemaChecker::new().check_object(schema, &doc.value);
        strip_mistyped(schema, &mut decodable);
    }
    match serde_json::from_value::<T>(decodable) {
        Ok(object) => {
            let more = semantic(&object);
            for problem in more.problems {
                if !out.problems.iter().any(|p| p.path == problem.path) {
                    out.problems.push(problem);
                }
            }
            out.warnings = more.warnings;
        }
        Err(err) if out.problems.is_empty() => {
            out.invalid(
                FieldPath::root(),
                format!("cannot be read as a {kind}: {err}"),
            );
        }
        Err(_) => {}
    }
    out
}

/// The root schema of a kind's CRD, generated once.
fn crd_schema(kind: &str) -> Option<&'static JSONSchemaProps> {
    static SCHEMAS: OnceLock<Vec<(String, JSONSchemaProps)>> = OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| {
        crate::crds::all()
            .into_iter()
            .filter_map(|crd: CustomResourceDefinition| {
                let kind = crd.spec.names.kind.clone();
                let schema = crd
                    .spec
                    .versions
                    .into_iter()
                    .next()?
                    .schema?
                    .open_api_v3_schema?;
                Some((kind, schema))
            })
            .collect()
    });
    schemas.iter().find(|(k, _)| k == kind).map(|(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_document_is_read_with_its_line() {
        let docs = parse("# comment\napiVersion: v1\nkind: Secret\n---\n---\napiVersion: apps/v1\nkind: Deployment\n")
            .unwrap();
        assert_eq!(docs.len(), 2, "the empty document is skipped");
        assert_eq!(docs[0].line, 2);
        assert_eq!(docs[1].kind(), Some("Deployment"));
        assert_eq!(docs[1].line, 6);
    }

    #[test]
    fn field_lines_are_known_down_to_list_elements() {
        let docs = parse(
            "a: 1\nspec:\n  triggers:\n  - type: redis\n    metadata:\n      listName: jobs\n",
        )
        .unwrap();
        let doc = &docs[0];
        assert_eq!(doc.line_of(&FieldPath::new("spec.triggers[0].type")), 4);
        assert_eq!(
            doc.line_of(&FieldPath::new("spec.triggers[0].metadata.listName")),
            6
        );
        assert_eq!(
            doc.line_of(&FieldPath::new("spec.triggers[0].metadata.missing")),
            5,
            "falls back to the parent"
        );
        assert_eq!(doc.line_of(&FieldPath::new("nowhere")), 1);
    }

    #[test]
    fn malformed_yaml_reports_line_and_column() {
        let err = parse("apiVersion: v1\nkind: [Secret\nmetadata: {}\n").unwrap_err();
        assert_eq!(err.line, Some(3));
        assert!(err.column.is_some());
        assert!(!err.message.contains('\n'));
    }

    #[test]
    fn yaml_1_1_booleans_are_booleans_as_in_kubectl() {
        let docs = parse("enabled: yes\nquoted: \"yes\"\n").unwrap();
        assert_eq!(docs[0].value["enabled"], Value::Bool(true));
        assert_eq!(docs[0].value["quoted"], Value::String("yes".into()));
    }

    #[test]
    fn lists_are_expanded_into_their_items() {
        let docs = parse(
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Secret\n- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: cm\n",
        )
        .unwrap();
        assert_eq!(
            docs.iter().map(|d| d.kind().unwrap()).collect::<Vec<_>>(),
            ["Secret", "ConfigMap"]
        );
        assert_eq!(docs[1].line, 6);
        assert_eq!(docs[1].line_of(&FieldPath::new("metadata.name")), 9);
    }

    #[test]
    fn alias_bombs_fail_instead_of_exhausting_memory() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
        }
        assert!(parse(&text).is_err());
    }
}
