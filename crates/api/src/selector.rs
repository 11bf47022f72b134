//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!`exists), parsed as the API
//! server parses `labelSelector` and KEDA's `labels.Parse` reads `podSelector`. kube-sim serves
//! lists with them; the `kubernetes-workload` trigger checks its selector with them.

use serde_json::Value;

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

/// A requirement of a label selector that could not be read (the API server's message).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {why}: {requirement:?}")]
pub struct SelectorError {
    /// The requirement as written.
    pub requirement: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// A parsed label selector; empty selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

impl LabelSelector {
    /// Parses a selector as the API server parses `labelSelector` (and KEDA's `labels.Parse`);
    /// the error names the requirement that could not be read.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for term in split_terms(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(term).map_err(|why| SelectorError {
                requirement: term.to_owned(),
                why,
            })?);
        }
        Ok(Self(requirements))
    }

    /// Whether labels (as JSON, `metadata.labels`) satisfy every requirement.
    pub fn matches(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        self.matches_with(|k| labels.and_then(|l| l.get(k)).and_then(Value::as_str))
    }

    /// Whether the labels `get` reads satisfy every requirement.
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
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
    match crate::validate::meta::qualified_name_error(key) {
        None => Ok(key.to_owned()),
        Some(_) => Err("invalid label key"),
    }
}

fn valid_value(value: &str) -> Result<String, &'static str> {
    match crate::validate::meta::label_value_error(value) {
        None => Ok(value.to_owned()),
        Some(_) => Err("invalid label value"),
    }
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
    fn malformed_selectors_name_the_requirement() {
        let err = LabelSelector::parse("app in web").unwrap_err();
        assert_eq!(err.requirement, "app in web");
        assert!(err.to_string().contains("\"app in web\""), "{err}");
        assert!(LabelSelector::parse("bad key=x").is_err());
        assert!(LabelSelector::parse("app=has space").is_err());
    }
}
