//! `metrics-api`: a number read from any HTTP API, in JSON (GJSON paths), YAML, XML or the
//! Prometheus text format.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::error::ErrorKind;
use crate::metric::{ExternalMetric, MetricSpec, Poll, metric_name, normalize};
use crate::params::{META, Params};
use crate::scalers::http::{self, HttpSource, excerpt, fetch};
use crate::scalers::httpauth::{self, HttpAuth};
use crate::sources::Sources;
use crate::trigger::Common;

/// The response format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Yaml,
    Xml,
    Prometheus,
}

/// A `metrics-api` trigger.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    url: String,
    format: Format,
    value_location: String,
    target: f64,
    activation: f64,
    insecure: bool,
    auth: HttpAuth,
    pub timeout: Option<Duration>,
}

pub(crate) fn parse(p: &mut Params<'_>) -> Config {
    let target = p.target_f64("targetValue");
    let activation = p.f64_or("activationTargetValue", META, 0.0);
    let url = p.req_str(&["url"], META);
    let format = match p
        .choice(
            "format",
            META,
            &["json", "yaml", "xml", "prometheus"],
            "json",
        )
        .as_str()
    {
        "yaml" => Format::Yaml,
        "xml" => Format::Xml,
        "prometheus" => Format::Prometheus,
        _ => Format::Json,
    };
    let value_location = p.req_str(&["valueLocation"], META);
    let insecure = p.bool_or("unsafeSsl", META, false);
    if p.bool_or("aggregateFromKubeServiceEndpoints", META, false) {
        p.fail_param(
            ErrorKind::Unsupported,
            "aggregateFromKubeServiceEndpoints",
            META,
            "aggregating a metric over a Service's endpoints is not supported by ringscale yet",
        );
    }
    let _ = p.choice(
        "aggregationType",
        META,
        &["average", "sum", "max", "min"],
        "average",
    );
    let timeout = p.duration("timeout", META);
    let auth = httpauth::parse(p);
    if !url.is_empty() {
        match url::Url::parse(&url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            Ok(u) => p.fail_param(
                ErrorKind::Config,
                "url",
                META,
                format!("the URL scheme must be http or https, not {:?}", u.scheme()),
            ),
            Err(e) => p.fail_param(
                ErrorKind::Config,
                "url",
                META,
                format!("not a valid URL: {e}"),
            ),
        }
    }
    if format == Format::Prometheus
        && !value_location.is_empty()
        && let Err(e) = Selector::parse(&value_location)
    {
        p.fail_param(ErrorKind::Config, "valueLocation", META, e.to_string());
    }
    if let Err(e) = auth.tls(insecure, false).client_config() {
        p.fail_param(ErrorKind::Config, "ca", crate::params::AUTH, e.to_string());
    }
    Config {
        url,
        format,
        value_location,
        target,
        activation,
        insecure,
        auth,
        timeout,
    }
}

impl Config {
    pub fn metric_specs(&self, common: &Common) -> Vec<MetricSpec> {
        vec![MetricSpec::External(ExternalMetric::new(
            metric_name(
                common.index,
                &normalize(&format!("metric-api-{}", self.value_location)),
            ),
            common.metric_type.clone(),
            self.target,
        ))]
    }
}

/// A built `metrics-api` trigger.
pub(crate) struct MetricsApiScaler {
    config: Config,
    source: Arc<HttpSource>,
    /// The bound of calls to the URL's host.
    limit: Arc<crate::sources::Limit>,
}

impl MetricsApiScaler {
    pub fn new(config: Config, sources: &Sources) -> Self {
        let source = http::client(sources, config.auth.tls(config.insecure, false));
        let limit = source.limit_for(&config.url);
        MetricsApiScaler {
            config,
            source,
            limit,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub async fn poll(&self, common: &Common, metric: &str) -> Result<Poll, crate::ScalerError> {
        let _permit = self.limit.acquire().await;
        let client = self
            .source
            .client()
            .map_err(|e| common.error(ErrorKind::Config, e.to_string()))?;
        let mut url = url::Url::parse(&self.config.url)
            .map_err(|e| common.error(ErrorKind::Config, format!("invalid url: {e}")))?;
        if let Some((name, key)) = self.config.auth.query_param() {
            url.query_pairs_mut().append_pair(&name, key);
        }
        let request = self.config.auth.apply_all(client.get(url));
        let answer = fetch(request)
            .await
            .map_err(|e| common.source_error(format!("error requesting metrics endpoint: {e}")))?;
        if answer.status != reqwest::StatusCode::OK {
            return Err(common.source_error(format!(
                "error requesting metrics endpoint: the API returned {}: {}",
                answer.status,
                excerpt(&answer.body)
            )));
        }
        let value = value_from_response(
            &answer.body,
            &self.config.value_location,
            self.config.format,
        )
        .map_err(|e| common.source_error(e.to_string()))?;
        Ok(Poll::one(
            common.name(metric),
            value,
            value > self.config.activation,
        ))
    }
}

/// Why no number could be read from a response (the messages KEDA's metrics-api scaler gives,
/// where it has them).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ValueError {
    /// The body is not UTF-8 text.
    #[error("the response is not UTF-8")]
    NotUtf8,
    /// The body is not YAML.
    #[error("the response is not valid YAML: {0}")]
    Yaml(String),
    /// The body is not XML (why).
    #[error("the response is not valid XML: {0}")]
    Xml(String),
    /// The XML nests deeper than we follow.
    #[error("the XML document is nested too deeply")]
    XmlTooDeep,
    /// The value found is not a number or a quantity (what was found).
    #[error(
        "valueLocation must point to value of type number or a string representing a Quantity got: '{0}'"
    )]
    WrongType(String),
    /// A step of the path is missing.
    #[error("key '{key}' not found in path '{location}'")]
    KeyNotFound { key: String, location: String },
    /// The path ends at a map or a list.
    #[error("path '{0}' does not lead to a value")]
    NotAValue(String),
    /// `valueLocation` is not a Prometheus metric selector.
    #[error("{selector:?} is not a metric selector: {why}")]
    Selector { selector: String, why: &'static str },
    /// The Prometheus exposition is malformed at a line.
    #[error("prometheus format parsing error: line {line}: {why}")]
    Exposition { line: usize, why: &'static str },
    /// The metric family exists but no sample matches the selector.
    #[error("value {0} not found")]
    NoSample(String),
    /// No such metric family.
    #[error("metric '{0}' not found")]
    NoMetric(String),
}

/// Reads the number at `location` in `body`.
pub(crate) fn value_from_response(
    body: &[u8],
    location: &str,
    format: Format,
) -> Result<f64, ValueError> {
    match format {
        Format::Json => {
            let text = std::str::from_utf8(body).map_err(|_| ValueError::NotUtf8)?;
            let v = gjson::get(text, location);
            match v.kind() {
                gjson::Kind::Number => Ok(v.f64()),
                gjson::Kind::String => quantity(v.str()),
                kind => Err(wrong_type(kind_name(kind))),
            }
        }
        Format::Yaml => {
            let text = std::str::from_utf8(body).map_err(|_| ValueError::NotUtf8)?;
            let doc: Value =
                serde_saphyr::from_str(text).map_err(|e| ValueError::Yaml(e.to_string()))?;
            number_at(&doc, location)
        }
        Format::Xml => {
            let doc = xml_to_value(body)?;
            number_at(&doc, location)
        }
        Format::Prometheus => {
            let text = std::str::from_utf8(body).map_err(|_| ValueError::NotUtf8)?;
            let selector = Selector::parse(location)?;
            prometheus_value(text, &selector)
        }
    }
}

fn kind_name(kind: gjson::Kind) -> &'static str {
    match kind {
        gjson::Kind::Null => "Null",
        gjson::Kind::False | gjson::Kind::True => "Boolean",
        gjson::Kind::Number => "Number",
        gjson::Kind::String => "String",
        gjson::Kind::Array | gjson::Kind::Object => "JSON",
    }
}

fn wrong_type(got: &str) -> ValueError {
    ValueError::WrongType(got.to_owned())
}

fn quantity(s: &str) -> Result<f64, ValueError> {
    ringscale_api::quantity::parse(s).map_err(|_| wrong_type(s))
}

/// Walks a dot-separated path (`foo.0.bar`) through maps and lists.
fn number_at(doc: &Value, location: &str) -> Result<f64, ValueError> {
    let mut current = doc;
    for key in location.split('.') {
        current = match current {
            Value::Object(map) => map.get(key),
            Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        }
        .ok_or_else(|| ValueError::KeyNotFound {
            key: key.to_owned(),
            location: location.to_owned(),
        })?;
    }
    match current {
        Value::Number(n) => n.as_f64().ok_or_else(|| wrong_type("Number")),
        Value::String(s) => quantity(s),
        Value::Null => Err(wrong_type("Null")),
        Value::Bool(_) => Err(wrong_type("Boolean")),
        Value::Array(_) | Value::Object(_) => Err(ValueError::NotAValue(location.to_owned())),
    }
}

/// Converts an XML document into nested maps: an element holding only text becomes a string,
/// one with child elements a map of them (repeated names become lists). Paths start below the
/// document element; a path naming the document element first also works.
fn xml_to_value(body: &[u8]) -> Result<Value, ValueError> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(body);
    reader.config_mut().trim_text(true);
    // Stack of (name, children, text).
    let mut stack: Vec<(String, serde_json::Map<String, Value>, String)> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    let mut buf = Vec::new();
    let mut depth = 0usize;
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| ValueError::Xml(e.to_string()))?;
        match event {
            Event::Start(e) => {
                depth += 1;
                if depth > 64 {
                    return Err(ValueError::XmlTooDeep);
                }
                let name = e.local_name().as_ref().to_owned();
                stack.push((name, serde_json::Map::new(), String::new()));
            }
            Event::Empty(e) => {
                let name = e.local_name().as_ref().to_owned();
                match stack.last_mut() {
                    Some(parent) => insert_child(&mut parent.1, name, Value::String(String::new())),
                    None => root = Some((name, Value::String(String::new()))),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.2.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.2.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                if let Some(top) = stack.last_mut() {
                    let resolved = match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => quick_xml::escape::resolve_xml_entity(&r.xml10_content())
                            .ok_or_else(|| ValueError::Xml("unknown entity".to_owned()))?
                            .to_owned(),
                    };
                    top.2.push_str(&resolved);
                }
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                let Some((name, children, text)) = stack.pop() else {
                    return Err(ValueError::Xml("unbalanced end tag".to_owned()));
                };
                let value = if children.is_empty() {
                    Value::String(text.trim().to_owned())
                } else {
                    Value::Object(children)
                };
                match stack.last_mut() {
                    Some(parent) => insert_child(&mut parent.1, name, value),
                    None => root = Some((name, value)),
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    let (name, value) =
        root.ok_or_else(|| ValueError::Xml("it has no document element".to_owned()))?;
    // Allow both `child.value` and `root.child.value`.
    let mut doc = match value {
        Value::Object(map) => map,
        other => {
            let mut m = serde_json::Map::new();
            m.insert(name.clone(), other);
            return Ok(Value::Object(m));
        }
    };
    if !doc.contains_key(&name) {
        doc.insert(name, Value::Object(doc.clone()));
    }
    Ok(Value::Object(doc))
}

fn insert_child(map: &mut serde_json::Map<String, Value>, name: String, value: Value) {
    match map.get_mut(&name) {
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
        None => {
            map.insert(name, value);
        }
    }
}

/// A Prometheus metric selector: `name`, `name{label="v"}`, `{__name__="name", ...}`.
#[derive(Clone, Debug)]
pub(crate) struct Selector {
    name: String,
    matchers: Vec<(String, Op, String)>,
}

#[derive(Clone, Debug)]
enum Op {
    Eq,
    Ne,
    Re(regex::Regex),
    NotRe(regex::Regex),
}

impl Selector {
    pub fn parse(text: &str) -> Result<Selector, ValueError> {
        let err = |why: &'static str| ValueError::Selector {
            selector: text.to_owned(),
            why,
        };
        let text = text.trim();
        let (name, rest) = match text.find('{') {
            Some(i) => (text[..i].trim(), Some(&text[i..])),
            None => (text, None),
        };
        let mut sel = Selector {
            name: name.to_owned(),
            matchers: Vec::new(),
        };
        if let Some(rest) = rest {
            let inner = rest
                .strip_prefix('{')
                .and_then(|r| r.strip_suffix('}'))
                .ok_or_else(|| err("unbalanced braces"))?;
            let mut chars = inner.trim();
            while !chars.is_empty() {
                let end = chars
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .ok_or_else(|| err("a label matcher has no operator"))?;
                let label = &chars[..end];
                if label.is_empty() {
                    return Err(err("empty label name"));
                }
                chars = chars[end..].trim_start();
                let (op, len) = if chars.starts_with("=~") {
                    ("=~", 2)
                } else if chars.starts_with("!~") {
                    ("!~", 2)
                } else if chars.starts_with("!=") {
                    ("!=", 2)
                } else if chars.starts_with('=') {
                    ("=", 1)
                } else {
                    return Err(err("expected =, !=, =~ or !~"));
                };
                chars = chars[len..].trim_start();
                let (value, consumed) =
                    quoted(chars).ok_or_else(|| err("label values must be quoted"))?;
                chars = chars[consumed..].trim_start();
                chars = chars.strip_prefix(',').unwrap_or(chars).trim_start();
                let anchored = |v: &str| {
                    regex::Regex::new(&format!("^(?:{v})$"))
                        .map_err(|_| err("invalid regular expression"))
                };
                let op = match op {
                    "=" => Op::Eq,
                    "!=" => Op::Ne,
                    "=~" => Op::Re(anchored(&value)?),
                    _ => Op::NotRe(anchored(&value)?),
                };
                if label == "__name__"
                    && let Op::Eq = op
                {
                    sel.name = value;
                    continue;
                }
                sel.matchers.push((label.to_owned(), op, value));
            }
        }
        if sel.name.is_empty()
            || !sel
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return Err(err("a metric name is required"));
        }
        Ok(sel)
    }

    fn matches(&self, labels: &[(String, String)]) -> bool {
        self.matchers.iter().all(|(label, op, value)| {
            let actual = labels
                .iter()
                .find(|(k, _)| k == label)
                .map(|(_, v)| v.as_str())
                .unwrap_or("");
            match op {
                Op::Eq => actual == value,
                Op::Ne => actual != value,
                Op::Re(re) => re.is_match(actual),
                Op::NotRe(re) => !re.is_match(actual),
            }
        })
    }
}

/// A double-quoted string with escapes at the start of `s`: its value and length in `s`.
fn quoted(s: &str) -> Option<(String, usize)> {
    let mut chars = s.char_indices();
    if chars.next()?.1 != '"' {
        return None;
    }
    let mut out = String::new();
    let mut escaped = false;
    for (i, c) in chars {
        if escaped {
            out.push(match c {
                'n' => '\n',
                other => other,
            });
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            return Some((out, i + 1));
        } else {
            out.push(c);
        }
    }
    None
}

/// The value of the first sample of `selector`'s metric whose labels match, from a text
/// exposition. Only counters, gauges and untyped metrics carry values, as in KEDA.
fn prometheus_value(text: &str, selector: &Selector) -> Result<f64, ValueError> {
    let mut types: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    let mut seen_family = false;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if words.next() == Some("TYPE")
                && let (Some(name), Some(kind)) = (words.next(), words.next())
            {
                types.insert(name, kind);
            }
            continue;
        }
        let bad = |why: &'static str| ValueError::Exposition { line: n + 1, why };
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(line.len());
        let name = &line[..name_end];
        if name.is_empty() {
            return Err(bad("expected a metric name"));
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(after) = rest.strip_prefix('{') {
            let mut inner = after;
            loop {
                inner = inner.trim_start();
                if let Some(r) = inner.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let eq = inner
                    .find('=')
                    .ok_or_else(|| bad("expected label=\"value\""))?;
                let label = inner[..eq].trim().to_owned();
                let (value, len) = quoted(inner[eq + 1..].trim_start())
                    .ok_or_else(|| bad("label values must be quoted"))?;
                let skipped = inner[eq + 1..].len() - inner[eq + 1..].trim_start().len();
                inner = &inner[eq + 1 + skipped + len..];
                inner = inner.trim_start();
                inner = inner.strip_prefix(',').unwrap_or(inner);
                labels.push((label, value));
            }
        }
        let value_text = rest
            .split_whitespace()
            .next()
            .ok_or_else(|| bad("missing value"))?;
        let value =
            parse_sample_value(value_text).ok_or_else(|| bad("the value is not a number"))?;
        if name != selector.name {
            continue;
        }
        seen_family = true;
        let kind = types.get(name).copied().unwrap_or("untyped");
        if !matches!(kind, "counter" | "gauge" | "untyped") {
            continue;
        }
        if selector.matches(&labels) {
            return Ok(value);
        }
    }
    if seen_family {
        Err(ValueError::NoSample(selector_text(selector)))
    } else {
        Err(ValueError::NoMetric(selector.name.clone()))
    }
}

fn selector_text(s: &Selector) -> String {
    if s.matchers.is_empty() {
        s.name.clone()
    } else {
        let parts: Vec<String> = s
            .matchers
            .iter()
            .map(|(l, _, v)| format!("{l}~{v:?}"))
            .collect();
        format!("{}{{{}}}", s.name, parts.join(","))
    }
}

fn parse_sample_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        other => other.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_use_gjson_paths_and_quantities() {
        let body =
            br#"{"components":{"worker":{"tasks":12,"mem":"1.5k","list":[{"v":3}],"ok":true}}}"#;
        assert_eq!(
            value_from_response(body, "components.worker.tasks", Format::Json),
            Ok(12.0)
        );
        assert_eq!(
            value_from_response(body, "components.worker.mem", Format::Json),
            Ok(1500.0)
        );
        assert_eq!(
            value_from_response(body, "components.worker.list.0.v", Format::Json),
            Ok(3.0)
        );
        assert!(
            value_from_response(body, "components.worker.ok", Format::Json)
                .unwrap_err()
                .to_string()
                .contains("got: 'Boolean'")
        );
        assert!(
            value_from_response(body, "nope", Format::Json)
                .unwrap_err()
                .to_string()
                .contains("got: 'Null'")
        );
    }

    #[test]
    fn yaml_and_xml_use_dot_paths() {
        let yaml = b"foo:\n  bar: 42\n  list:\n    - v: 7\n";
        assert_eq!(value_from_response(yaml, "foo.bar", Format::Yaml), Ok(42.0));
        assert_eq!(
            value_from_response(yaml, "foo.list.0.v", Format::Yaml),
            Ok(7.0)
        );
        assert!(value_from_response(yaml, "foo.baz", Format::Yaml).is_err());
        let xml = b"<stats><worker><tasks>12</tasks><q>5</q><q>6</q></worker></stats>";
        assert_eq!(
            value_from_response(xml, "worker.tasks", Format::Xml),
            Ok(12.0)
        );
        assert_eq!(
            value_from_response(xml, "stats.worker.tasks", Format::Xml),
            Ok(12.0)
        );
        assert_eq!(value_from_response(xml, "worker.q.1", Format::Xml), Ok(6.0));
        assert!(value_from_response(b"<a><b>", "a.b", Format::Xml).is_err());
    }

    #[test]
    fn prometheus_text_is_read_with_selectors() {
        let text = "# TYPE jobs gauge\njobs{queue=\"a\"} 3\njobs{queue=\"b\",x=\"1\"} 5 1700000000\n# TYPE lat histogram\nlat_bucket{le=\"1\"} 4\nlat_count 4\nplain 9\n";
        let v = |loc: &str| value_from_response(text.as_bytes(), loc, Format::Prometheus);
        assert_eq!(v("jobs"), Ok(3.0));
        assert_eq!(v("jobs{queue=\"b\"}"), Ok(5.0));
        assert_eq!(v("{__name__=\"jobs\",queue=~\"b|c\"}"), Ok(5.0));
        assert_eq!(v("plain"), Ok(9.0));
        assert_eq!(v("lat"), Err(ValueError::NoMetric("lat".into())));
        assert!(matches!(
            v("jobs{queue=\"z\"}"),
            Err(ValueError::NoSample(_))
        ));
        assert!(value_from_response(b"jobs{queue=\"a} 1\n", "jobs", Format::Prometheus).is_err());
        assert!(Selector::parse("jobs{queue}").is_err());
    }
}
