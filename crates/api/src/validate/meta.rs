//! Object metadata rules the API server enforces on every object: names, namespaces, label and
//! annotation keys and values.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::problem::{FieldPath, Findings, ProblemKind};

/// Largest total size of all annotations of one object.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// Why `value` is not a lowercase RFC 1123 subdomain (object names), if it is not one.
pub fn dns1123_subdomain_error(value: &str) -> Option<String> {
    if value.len() > 253 {
        return Some(format!(
            "must be no more than 253 characters, got {}",
            value.len()
        ));
    }
    let ok = !value.is_empty()
        && value.split('.').all(is_dns_label_body)
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    (!ok).then(|| {
        format!(
            "{value:?} is not a lowercase RFC 1123 subdomain: use lowercase letters, digits, '-' and '.', \
             starting and ending with a letter or digit"
        )
    })
}

/// Why `value` is not a lowercase RFC 1123 label (namespaces), if it is not one.
pub fn dns1123_label_error(value: &str) -> Option<String> {
    if value.len() > 63 {
        return Some(format!(
            "must be no more than 63 characters, got {}",
            value.len()
        ));
    }
    (!is_dns_label_body(value)).then(|| {
        format!(
            "{value:?} is not a lowercase RFC 1123 label: use lowercase letters, digits and '-', \
             starting and ending with a letter or digit"
        )
    })
}

fn is_dns_label_body(part: &str) -> bool {
    let bytes = part.as_bytes();
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// The name part of a qualified name and of label values: alphanumerics, '-', '_', '.', starting
/// and ending alphanumeric.
fn is_qualified_name_part(part: &str) -> bool {
    let bytes = part.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// Why `key` is not a valid label or annotation key (`[prefix/]name`), if it is not one.
pub fn qualified_name_error(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && let Some(why) = dns1123_subdomain_error(prefix)
    {
        return Some(format!("prefix of {key:?}: {why}"));
    }
    (!is_qualified_name_part(name)).then(|| {
        format!(
            "{key:?} is not a qualified name: the name part must be 1-63 characters of letters, digits, \
             '-', '_' or '.', starting and ending with a letter or digit, with an optional DNS subdomain \
             prefix and '/'"
        )
    })
}

/// Why `value` is not a valid label value, if it is not one.
pub fn label_value_error(value: &str) -> Option<String> {
    (!value.is_empty() && !is_qualified_name_part(value)).then(|| {
        format!(
            "{value:?} is not a valid label value: at most 63 characters of letters, digits, '-', '_' or \
             '.', starting and ending with a letter or digit"
        )
    })
}

/// Checks the metadata of an object of a namespaced or cluster-scoped kind.
pub fn check(meta: &ObjectMeta, namespaced: bool, out: &mut Findings) {
    let path = FieldPath::new("metadata");
    match (&meta.name, &meta.generate_name) {
        (Some(name), _) if !name.is_empty() => {
            if let Some(why) = dns1123_subdomain_error(name) {
                out.invalid(path.field("name"), why);
            }
        }
        (_, Some(prefix)) if !prefix.is_empty() => {}
        _ => out.required(path.field("name"), "name or generateName is required"),
    }
    match &meta.namespace {
        Some(ns) if !namespaced => {
            out.warn(
                path.field("namespace"),
                format!("namespace {ns:?} is ignored: this kind is cluster-scoped"),
            );
        }
        Some(ns) => {
            if let Some(why) = dns1123_label_error(ns) {
                out.invalid(path.field("namespace"), why);
            }
        }
        None => {}
    }
    check_labels(meta.labels.as_ref(), &path.field("labels"), out);
    check_annotations(meta.annotations.as_ref(), &path.field("annotations"), out);
}

fn check_labels(labels: Option<&BTreeMap<String, String>>, path: &FieldPath, out: &mut Findings) {
    for (key, value) in labels.into_iter().flatten() {
        if let Some(why) = qualified_name_error(key) {
            out.invalid(path.key(key), why);
        }
        if let Some(why) = label_value_error(value) {
            out.invalid(path.key(key), why);
        }
    }
}

fn check_annotations(
    annotations: Option<&BTreeMap<String, String>>,
    path: &FieldPath,
    out: &mut Findings,
) {
    let mut total = 0usize;
    for (key, value) in annotations.into_iter().flatten() {
        total += key.len() + value.len();
        if let Some(why) = qualified_name_error(key) {
            out.invalid(path.key(key), why);
        }
    }
    if total > MAX_ANNOTATIONS_BYTES {
        out.problem(
            ProblemKind::TooLong,
            path.clone(),
            format!(
                "annotations may not exceed {MAX_ANNOTATIONS_BYTES} bytes in total, got {total}"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rfc_1123() {
        assert_eq!(dns1123_subdomain_error("redis-worker.v2"), None);
        assert!(dns1123_subdomain_error("Redis_Worker").is_some());
        assert!(dns1123_subdomain_error("-worker").is_some());
        assert!(dns1123_subdomain_error(&"a".repeat(254)).is_some());
        assert_eq!(dns1123_label_error("team-a"), None);
        assert!(dns1123_label_error("team.a").is_some());
    }

    #[test]
    fn label_keys_and_values_follow_the_qualified_name_rules() {
        assert_eq!(qualified_name_error("app.kubernetes.io/name"), None);
        assert_eq!(qualified_name_error("tier"), None);
        assert!(qualified_name_error("Bad Prefix/name").is_some());
        assert!(qualified_name_error("a/").is_some());
        assert_eq!(label_value_error(""), None);
        assert!(label_value_error("has space").is_some());
    }
}
