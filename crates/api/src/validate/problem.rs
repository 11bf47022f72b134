//! Field paths and the problems found at them.

use std::fmt;

use serde::Serialize;

/// A field path in Kubernetes notation: `spec.triggers[2].metadata.listLength`,
/// `metadata.annotations[autoscaling.keda.sh/paused]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(String);

impl FieldPath {
    /// The empty path (the object itself).
    pub fn root() -> Self {
        Self(String::new())
    }

    /// Parses a path written in dotted notation, e.g. `spec.triggers`.
    pub fn new(path: impl Into<String>) -> Self {
        Self(path.into())
    }

    /// The path of a named field below this one.
    pub fn field(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self(name.to_owned())
        } else {
            Self(format!("{}.{name}", self.0))
        }
    }

    /// The path of a list element below this one.
    pub fn index(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }

    /// The path of a map entry below this one: `.key` for plain keys, `[key]` for keys with
    /// dots, slashes or other characters.
    pub fn key(&self, key: &str) -> Self {
        let plain = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if plain {
            self.field(key)
        } else {
            Self(format!("{}[{key}]", self.0))
        }
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `other` is this path or lies below it.
    pub fn contains(&self, other: &FieldPath) -> bool {
        other.0 == self.0
            || (other.0.starts_with(&self.0)
                && matches!(other.0.as_bytes().get(self.0.len()), Some(b'.' | b'[')))
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for FieldPath {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// The class of a problem, as Kubernetes names field errors (`metav1.CauseType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// A required field is missing (`FieldValueRequired`).
    Required,
    /// A value is malformed or out of range (`FieldValueInvalid`).
    Invalid,
    /// A value is not one of the supported ones (`FieldValueNotSupported`).
    NotSupported,
    /// A value has the wrong JSON type (`FieldValueTypeInvalid`).
    TypeInvalid,
    /// A value occurs twice where it must be unique (`FieldValueDuplicate`).
    Duplicate,
    /// A field the schema does not declare (`FieldValueNotFound`, "unknown field").
    UnknownField,
    /// A combination of fields that is not allowed (`FieldValueForbidden`).
    Forbidden,
    /// A string or list is too long (`FieldValueTooLong` / `FieldValueTooMany`).
    TooLong,
}

impl ProblemKind {
    /// The Kubernetes `CauseType` string.
    pub fn cause_type(self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::TypeInvalid => "FieldValueTypeInvalid",
            Self::Duplicate => "FieldValueDuplicate",
            Self::UnknownField => "FieldValueNotFound",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
        }
    }
}

/// One thing wrong with an object: where, and which rule it breaks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Where the problem is.
    pub path: FieldPath,
    /// The rule that is broken, with the offending value where it helps.
    pub message: String,
    /// The class of the problem.
    #[serde(skip)]
    pub kind: ProblemKind,
}

impl Problem {
    /// A problem of the given kind.
    pub fn new(kind: ProblemKind, path: FieldPath, message: impl Into<String>) -> Self {
        Self {
            path,
            message: message.into(),
            kind,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A message that already names its field (a rule over two fields) is shown as is.
        if self.path.as_str().is_empty() || self.message.starts_with(self.path.as_str()) {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Everything found wrong with one object: problems make it invalid, warnings do not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Findings {
    /// Rule violations: KEDA (or the API server) would reject or fail on these.
    pub problems: Vec<Problem>,
    /// Things that work but are probably not what was meant.
    pub warnings: Vec<Problem>,
}

impl Findings {
    /// Whether there is no problem (warnings allowed).
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }

    /// Records a problem.
    pub fn problem(&mut self, kind: ProblemKind, path: FieldPath, message: impl Into<String>) {
        self.problems.push(Problem::new(kind, path, message));
    }

    /// Records an invalid value.
    pub fn invalid(&mut self, path: FieldPath, message: impl Into<String>) {
        self.problem(ProblemKind::Invalid, path, message);
    }

    /// Records a missing required value.
    pub fn required(&mut self, path: FieldPath, message: impl Into<String>) {
        self.problem(ProblemKind::Required, path, message);
    }

    /// Records a warning.
    pub fn warn(&mut self, path: FieldPath, message: impl Into<String>) {
        self.warnings
            .push(Problem::new(ProblemKind::Invalid, path, message));
    }

    /// Adds the findings of `other`.
    pub fn extend(&mut self, other: Findings) {
        self.problems.extend(other.problems);
        self.warnings.extend(other.warnings);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_use_kubernetes_notation() {
        let triggers = FieldPath::root().field("spec").field("triggers");
        assert_eq!(
            triggers
                .index(2)
                .field("metadata")
                .key("listLength")
                .as_str(),
            "spec.triggers[2].metadata.listLength"
        );
        assert_eq!(
            FieldPath::new("metadata.annotations")
                .key("autoscaling.keda.sh/paused")
                .as_str(),
            "metadata.annotations[autoscaling.keda.sh/paused]"
        );
    }

    #[test]
    fn a_path_contains_itself_and_its_children_only() {
        let triggers = FieldPath::new("spec.triggers");
        assert!(triggers.contains(&FieldPath::new("spec.triggers")));
        assert!(triggers.contains(&FieldPath::new("spec.triggers[0].type")));
        assert!(!triggers.contains(&FieldPath::new("spec.triggersExtra")));
    }
}
