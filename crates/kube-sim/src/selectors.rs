//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!`exists) and field selectors
//! (`=`, `==`, `!=`), parsed as the API server parses them.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::ApiError;

/// A parsed label selector; empty selects everything. The parser is the api crate's; a
/// malformed selector is a 400 here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(pub ringscale_api::selector::LabelSelector);

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        ringscale_api::selector::LabelSelector::parse(text)
            .map(Self)
            .map_err(|e| ApiError::bad_request(e.to_string()))
    }

    /// Whether labels satisfy every requirement.
    pub fn matches(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        self.0.matches(labels)
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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
    fn label_selectors_match_through_the_api_crates_parser() {
        let labels = json!({"app": "web", "tier": "front"});
        assert!(sel("app=web,tier in (front)").matches(labels.as_object()));
        assert!(!sel("app notin (web)").matches(labels.as_object()));
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
