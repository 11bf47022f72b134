//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!`exists) and field selectors
//! (`=`, `==`, `!=`), parsed as the API server parses them.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::ApiError;

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value`, `key==value`, `key in (a,b)`.
    In(String, Vec<String>),
    /// `key!=value`, `key notin (a,b)`: true when the key is absent too.
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
}

/// A parsed label selector; empty selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for term in split_terms(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(term).map_err(|why| {
                ApiError::bad_request(format!("unable to parse requirement: {why}: {term:?}"))
            })?);
        }
        Ok(Self(requirements))
    }

    /// Whether labels satisfy every requirement.
    pub fn matches(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::In(k, values) => get(k).is_some_and(|v| values.iter().any(|x| x == v)),
            Requirement::NotIn(k, values) => get(k).is_none_or(|v| !values.iter().any(|x| x == v)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        })
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Splits on commas outside parentheses.
fn split_terms(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

fn parse_requirement(term: &str) -> Result<Requirement, &'static str> {
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(valid_key(key.trim())?));
    }
    for (op, negate) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((k, v)) = term.split_once(op) {
            let key = valid_key(k.trim())?;
            let value = valid_value(v.trim())?;
            return Ok(if negate {
                Requirement::NotIn(key, vec![value])
            } else {
                Requirement::In(key, vec![value])
            });
        }
    }
    let words: Vec<&str> = term.splitn(2, char::is_whitespace).collect();
    if let [key, rest] = words.as_slice() {
        let rest = rest.trim();
        let (negate, list) = if let Some(list) = rest.strip_prefix("notin") {
            (true, list)
        } else if let Some(list) = rest.strip_prefix("in") {
            (false, list)
        } else {
            return Err("found unexpected token");
        };
        let list = list.trim();
        let inner = list
            .strip_prefix('(')
            .and_then(|l| l.strip_suffix(')'))
            .ok_or("expected a list in parentheses")?;
        let values = inner
            .split(',')
            .map(|v| valid_value(v.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        let key = valid_key(key)?;
        return Ok(if negate {
            Requirement::NotIn(key, values)
        } else {
            Requirement::In(key, values)
        });
    }
    Ok(Requirement::Exists(valid_key(term)?))
}

fn valid_key(key: &str) -> Result<String, &'static str> {
    match ringscale_api::validate::meta::qualified_name_error(key) {
        None => Ok(key.to_owned()),
        Some(_) => Err("invalid label key"),
    }
}

fn valid_value(value: &str) -> Result<String, &'static str> {
    match ringscale_api::validate::meta::label_value_error(value) {
        None => Ok(value.to_owned()),
        Some(_) => Err("invalid label value"),
    }
}

/// One term of a field selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldTerm {
    /// Field path, e.g. `metadata.name`.
    pub field: String,
    /// Compared value.
    pub value: String,
    /// `!=` rather than `=`.
    pub negate: bool,
}

/// A parsed field selector; empty selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldTerm>);

impl FieldSelector {
    /// Parses the `fieldSelector` query parameter, accepting only `supported` fields.
    pub fn parse(text: &str, supported: &[String]) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, value, negate) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, false)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: {term:?}; can't understand it"
                )));
            };
            let field = field.trim().to_owned();
            if !supported.contains(&field) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            terms.push(FieldTerm {
                field,
                value: value.trim().to_owned(),
                negate,
            });
        }
        Ok(Self(terms))
    }

    /// Whether an object's fields satisfy every term.
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|t| {
            let actual = field_value(object, &t.field);
            (actual == t.value) != t.negate
        })
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value a term requires for `field`, when the selector pins it with `=`.
    pub fn pinned(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|t| t.field == field && !t.negate)
            .map(|t| t.value.as_str())
    }
}

/// The string value of a dotted field path (missing → empty string, as the API server
/// compares it).
pub fn field_value(object: &Value, path: &str) -> String {
    let mut current = object;
    for part in path.split('.') {
        match current.get(part) {
            Some(v) => current = v,
            None => return String::new(),
        }
    }
    match current {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Labels of an object as a sorted map (for tests and messages).
pub fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(text: &str) -> LabelSelector {
        LabelSelector::parse(text).unwrap()
    }

    #[test]
    fn every_operator_of_label_selectors_matches_like_kubernetes() {
        let labels = json!({"app": "web", "tier": "front"});
        let labels = labels.as_object();
        assert!(sel("app=web").matches(labels));
        assert!(sel("app==web,tier").matches(labels));
        assert!(sel("app!=db").matches(labels));
        assert!(
            sel("missing!=x").matches(labels),
            "!= matches an absent key"
        );
        assert!(sel("app in (db, web)").matches(labels));
        assert!(!sel("app notin (web)").matches(labels));
        assert!(sel("!missing").matches(labels));
        assert!(!sel("!app").matches(labels));
        assert!(sel("").matches(labels));
        assert!(!sel("tier in (back),app=web").matches(labels));
    }

    #[test]
    fn malformed_selectors_are_bad_requests() {
        assert_eq!(
            LabelSelector::parse("app in web").unwrap_err().code,
            http::StatusCode::BAD_REQUEST
        );
        assert!(LabelSelector::parse("bad key=x").is_err());
        let supported = vec!["metadata.name".to_owned()];
        assert!(FieldSelector::parse("spec.foo=1", &supported).is_err());
    }

    #[test]
    fn field_selectors_compare_strings() {
        let supported = vec!["metadata.name".to_owned(), "metadata.namespace".to_owned()];
        let object = json!({"metadata": {"name": "a", "namespace": "ns"}});
        assert!(
            FieldSelector::parse("metadata.name=a", &supported)
                .unwrap()
                .matches(&object)
        );
        assert!(
            FieldSelector::parse("metadata.namespace!=other", &supported)
                .unwrap()
                .matches(&object)
        );
        assert!(
            !FieldSelector::parse("metadata.name=b", &supported)
                .unwrap()
                .matches(&object)
        );
    }
}
