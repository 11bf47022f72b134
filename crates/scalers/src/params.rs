//! Reading trigger parameters the way KEDA's typed scaler configuration does.
//!
//! A parameter is looked up in an ordered list of places: the trigger's `metadata`, the
//! parameters of its authentication, and the scale target's environment (through a
//! `<name>FromEnv` metadata entry naming the variable). The first non-empty value wins and is
//! trimmed. Numbers and booleans use JSON's grammar, as KEDA decodes them with Go's JSON decoder:
//! `5` is an integer, `5.0` is not; `1e3` is a float; booleans are `true` or `false`.
//!
//! Every problem is collected, so a trigger reports all of them at once.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{ErrorKind, ParamSource, ScalerError};
use crate::input::TriggerInput;
use crate::redact::Redactor;

/// Look in metadata only.
pub(crate) const META: &[ParamSource] = &[ParamSource::Metadata];
/// Look in the authentication only.
pub(crate) const AUTH: &[ParamSource] = &[ParamSource::Auth];

/// A value found for a parameter.
#[derive(Clone, Debug)]
pub(crate) struct Found<'a> {
    /// The trimmed value.
    pub text: &'a str,
    /// The parameter name that matched.
    pub name: &'a str,
    /// Where it was found.
    pub source: ParamSource,
    /// The metadata key it came from (`name`, or `nameFromEnv`), if it came from metadata or the
    /// environment.
    pub key: Option<String>,
    /// The value exists but cannot be read here (offline): `text` is empty and checks of the
    /// value are skipped.
    pub unknown: bool,
}

/// Collects parameters and problems for one trigger.
pub(crate) struct Params<'a> {
    pub input: &'a TriggerInput,
    pub redactor: &'a Redactor,
    errors: Vec<ScalerError>,
}

impl<'a> Params<'a> {
    pub fn new(input: &'a TriggerInput, redactor: &'a Redactor) -> Self {
        Params {
            input,
            redactor,
            errors: Vec::new(),
        }
    }

    /// The first non-empty value of any of `names` in the places of `order`.
    pub fn lookup(&self, names: &[&'a str], order: &[ParamSource]) -> Option<Found<'a>> {
        for source in order {
            for &name in names {
                let found = match source {
                    ParamSource::Metadata => self
                        .input
                        .metadata
                        .get(name)
                        .map(|v| (v.as_str(), Some(name.to_owned()))),
                    ParamSource::Auth => {
                        self.input.auth_params.get(name).map(|v| (v.as_str(), None))
                    }
                    ParamSource::Env => {
                        let key = format!("{name}FromEnv");
                        self.input
                            .metadata
                            .get(&key)
                            .and_then(|var| self.input.resolved_env.get(var.trim()))
                            .map(|v| (v.as_str(), Some(key)))
                    }
                };
                if let Some((value, key)) = found {
                    let text = value.trim();
                    if !text.is_empty() {
                        return Some(Found {
                            text,
                            name,
                            source: *source,
                            key,
                            unknown: false,
                        });
                    }
                }
                if let Some(key) = self.unresolved(name, *source) {
                    return Some(Found {
                        text: "",
                        name,
                        source: *source,
                        key,
                        unknown: true,
                    });
                }
            }
        }
        None
    }

    /// Whether `name` from `source` exists but cannot be read here; the metadata key it would
    /// come from, if any.
    fn unresolved(&self, name: &str, source: ParamSource) -> Option<Option<String>> {
        let u = &self.input.unresolved;
        match source {
            ParamSource::Metadata => None,
            ParamSource::Auth => (!self.input.auth_params.contains_key(name)
                && (u.all_auth || u.auth.contains(name)))
            .then_some(None),
            ParamSource::Env => {
                let key = format!("{name}FromEnv");
                let var = self.input.metadata.get(&key)?.trim();
                (!self.input.resolved_env.contains_key(var) && (u.all_env || u.env.contains(var)))
                    .then_some(Some(key))
            }
        }
    }

    /// Whether the first value found for `names` exists but cannot be read here.
    pub fn is_unknown(&self, names: &[&'a str], order: &[ParamSource]) -> bool {
        self.lookup(names, order).is_some_and(|f| f.unknown)
    }

    /// A found value that can be read.
    fn known(&self, names: &[&'a str], order: &[ParamSource]) -> Option<Found<'a>> {
        self.lookup(names, order).filter(|f| !f.unknown)
    }

    /// Records a problem with a value that was found.
    pub fn invalid(&mut self, found: &Found<'_>, message: impl AsRef<str>) {
        let err = self.input.error(
            self.redactor,
            ErrorKind::Config,
            Some((found.name, Some(found.source), found.key.clone())),
            message,
        );
        self.errors.push(err);
    }

    /// Records a problem about a parameter (found or not).
    pub fn fail_param(
        &mut self,
        kind: ErrorKind,
        name: &str,
        order: &[ParamSource],
        message: impl AsRef<str>,
    ) {
        let source = order.first().copied();
        let key = match source {
            Some(ParamSource::Metadata) => Some(name.to_owned()),
            _ => None,
        };
        let err = self
            .input
            .error(self.redactor, kind, Some((name, source, key)), message);
        self.errors.push(err);
    }

    /// Records a problem about the trigger as a whole.
    pub fn fail(&mut self, kind: ErrorKind, message: impl AsRef<str>) {
        let err = self.input.error(self.redactor, kind, None, message);
        self.errors.push(err);
    }

    fn missing(&mut self, names: &[&str], order: &[ParamSource]) {
        let name = names.first().copied().unwrap_or_default();
        let mut places = Vec::new();
        for source in order {
            places.push(match source {
                ParamSource::Metadata => "metadata".to_owned(),
                ParamSource::Auth => "the trigger's authentication".to_owned(),
                ParamSource::Env => format!("the scale target's environment ({name}FromEnv)"),
            });
        }
        let alternatives = if names.len() > 1 {
            format!(" (or {})", names[1..].join(", "))
        } else {
            String::new()
        };
        // Point at the metadata key when metadata is one of the places: that is where users
        // look first.
        let location = if order.contains(&ParamSource::Metadata) {
            META
        } else {
            order
        };
        self.fail_param(
            ErrorKind::Config,
            name,
            location,
            format!(
                "missing required parameter{alternatives}; set it in {}",
                places.join(" or ")
            ),
        );
    }

    /// An optional string.
    pub fn opt_str(&mut self, names: &[&'a str], order: &[ParamSource]) -> Option<String> {
        self.known(names, order).map(|f| f.text.to_owned())
    }

    /// A required string; records a problem and returns an empty string when missing.
    pub fn req_str(&mut self, names: &[&'a str], order: &[ParamSource]) -> String {
        match self.lookup(names, order) {
            Some(f) => f.text.to_owned(),
            None => {
                self.missing(names, order);
                String::new()
            }
        }
    }

    /// An optional float.
    pub fn opt_f64(&mut self, name: &'a str, order: &[ParamSource]) -> Option<f64> {
        let found = self.known(&[name], order)?;
        match parse_json_float(found.text) {
            Some(v) => Some(v),
            None => {
                self.invalid(&found, format!("{:?} is not a number", found.text));
                None
            }
        }
    }

    /// A float with a default.
    pub fn f64_or(&mut self, name: &'a str, order: &[ParamSource], default: f64) -> f64 {
        self.opt_f64(name, order).unwrap_or(default)
    }

    /// A required float.
    pub fn req_f64(&mut self, name: &'a str, order: &[ParamSource]) -> f64 {
        if self.lookup(&[name], order).is_none() {
            self.missing(&[name], order);
            return 0.0;
        }
        self.opt_f64(name, order).unwrap_or(0.0)
    }

    /// A target value KEDA requires (and requires non-zero) unless the trigger only feeds a
    /// scaling-modifiers formula.
    pub fn target_f64(&mut self, name: &'a str) -> f64 {
        let found = self.lookup(&[name], META).is_some();
        let parsed = self.opt_f64(name, META);
        if !self.input.as_metric_source {
            match (found, parsed) {
                (false, _) => self.missing(&[name], META),
                (true, Some(0.0)) => {
                    self.fail_param(ErrorKind::Config, name, META, "must not be 0")
                }
                _ => {}
            }
        }
        parsed.unwrap_or(0.0)
    }

    /// An optional integer.
    pub fn opt_i64(&mut self, name: &'a str, order: &[ParamSource]) -> Option<i64> {
        let found = self.known(&[name], order)?;
        match parse_json_int(found.text) {
            Some(v) => Some(v),
            None => {
                self.invalid(&found, format!("{:?} is not an integer", found.text));
                None
            }
        }
    }

    /// An integer with a default.
    pub fn i64_or(&mut self, name: &'a str, order: &[ParamSource], default: i64) -> i64 {
        self.opt_i64(name, order).unwrap_or(default)
    }

    /// A required integer.
    pub fn req_i64(&mut self, name: &'a str, order: &[ParamSource]) -> i64 {
        if self.lookup(&[name], order).is_none() {
            self.missing(&[name], order);
            return 0;
        }
        self.opt_i64(name, order).unwrap_or(0)
    }

    /// A boolean as KEDA's typed config reads one (Go's `strconv.ParseBool`: `1 t T TRUE true
    /// True 0 f F FALSE false False`), with a default.
    pub fn bool_or(&mut self, name: &'a str, order: &[ParamSource], default: bool) -> bool {
        let Some(found) = self.known(&[name], order) else {
            return default;
        };
        match parse_go_bool(found.text) {
            Some(b) => b,
            None => {
                let text = found.text;
                self.invalid(
                    &found,
                    format!("{text:?} is not a boolean (true or false, as Go's strconv.ParseBool reads it)"),
                );
                default
            }
        }
    }

    /// A comma-separated list (elements trimmed; an absent parameter is an empty list).
    pub fn list(&mut self, names: &[&'a str], order: &[ParamSource]) -> Vec<String> {
        self.list_by(names, order, ',')
    }

    /// A list split on `separator` (elements trimmed; an absent parameter is an empty list).
    pub fn list_by(
        &mut self,
        names: &[&'a str],
        order: &[ParamSource],
        separator: char,
    ) -> Vec<String> {
        self.known(names, order)
            .map(|f| {
                f.text
                    .split(separator)
                    .map(|s| s.trim().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A `key=value,key=value` map.
    pub fn map(&mut self, name: &'a str, order: &[ParamSource]) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(found) = self.known(&[name], order) else {
            return out;
        };
        for item in found.text.split(',') {
            let item = item.trim();
            match item.split_once('=') {
                Some((k, v)) if !v.contains('=') => {
                    out.insert(k.trim().to_owned(), v.trim().to_owned());
                }
                _ => {
                    self.invalid(
                        &found,
                        format!("expected comma-separated key=value pairs, got {item:?}"),
                    );
                    return BTreeMap::new();
                }
            }
        }
        out
    }

    /// One of `allowed` (exact spelling), or `default` when absent.
    pub fn choice(
        &mut self,
        name: &'a str,
        order: &[ParamSource],
        allowed: &[&str],
        default: &str,
    ) -> String {
        let Some(found) = self.known(&[name], order) else {
            return default.to_owned();
        };
        if allowed.contains(&found.text) {
            found.text.to_owned()
        } else {
            self.invalid(
                &found,
                format!("{:?} must be one of {}", found.text, allowed.join(", ")),
            );
            default.to_owned()
        }
    }

    /// A timeout: a number of milliseconds or a Go duration (`500ms`, `30s`, `1m30s`); 0 (or
    /// `0s`) is no custom timeout.
    pub fn duration(&mut self, name: &'a str, order: &[ParamSource]) -> Option<Duration> {
        let found = self.known(&[name], order)?;
        let parsed = match found.text.parse::<u64>() {
            Ok(ms) => Some(Duration::from_millis(ms)),
            Err(_) => parse_go_duration(found.text),
        };
        match parsed {
            // 0 is "no custom timeout": KEDA's scalers keep the global one (`Timeout > 0` /
            // `Timeout != 0` in rabbitmq, prometheus and metrics-api), and so does AMQP.
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => {
                self.invalid(
                    &found,
                    format!(
                        "{:?} is not a duration (milliseconds, or e.g. 500ms, 30s, 1m)",
                        found.text
                    ),
                );
                None
            }
        }
    }

    /// Ends parsing: every problem recorded, or nothing.
    pub fn finish(self) -> Result<(), Vec<ScalerError>> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }
}

/// Parses a JSON number (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`).
pub(crate) fn parse_json_float(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let mut i = 0;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(c) if c.is_ascii_digit() => {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Parses a JSON integer that fits in an `i64`.
pub(crate) fn parse_json_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty()
        || !digits.bytes().all(|c| c.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    s.parse::<i64>().ok()
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `time.ParseDuration` for non-negative durations (`300ms`, `1.5h`, `2h45m`).
pub(crate) fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * nanos;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return None;
    }
    Some(Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_json() {
        for (s, v) in [
            ("5", Some(5.0)),
            ("-1.5", Some(-1.5)),
            ("1e3", Some(1000.0)),
            ("0.25", Some(0.25)),
        ] {
            assert_eq!(parse_json_float(s), v, "{s}");
        }
        for s in [
            "", "abc", ".5", "5.", "05", "+5", "1e", "NaN", "Infinity", "5 ", "0x10", "1_000",
        ] {
            assert_eq!(parse_json_float(s), None, "{s}");
        }
        assert_eq!(parse_json_int("42"), Some(42));
        assert_eq!(parse_json_int("-7"), Some(-7));
        for s in ["5.0", "1e3", "007", "", "-", "99999999999999999999"] {
            assert_eq!(parse_json_int(s), None, "{s}");
        }
    }

    #[test]
    fn durations_accept_milliseconds_and_go_syntax() {
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("-1s"), None);
        assert_eq!(parse_go_duration("3x"), None);
    }

    #[test]
    fn lookups_follow_the_order_and_skip_empty_values() {
        let input = TriggerInput::new(
            0,
            "t",
            [("a", " "), ("bFromEnv", "VAR"), ("c", " 7 ")],
            "ns",
            "n",
        )
        .with_auth([("a", "from-auth")])
        .with_env([("VAR", "from-env")]);
        let redactor = Redactor::default();
        let mut p = Params::new(&input, &redactor);
        assert_eq!(
            p.opt_str(&["a"], &[ParamSource::Metadata, ParamSource::Auth])
                .as_deref(),
            Some("from-auth")
        );
        assert_eq!(
            p.opt_str(&["b"], &[ParamSource::Metadata, ParamSource::Env])
                .as_deref(),
            Some("from-env")
        );
        assert_eq!(p.i64_or("c", META, 1), 7);
        assert_eq!(p.req_str(&["d"], META), "");
        let errors = p.finish().unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field_path(), "spec.triggers[0].metadata.d");
        assert!(
            errors[0].to_string().contains("missing required parameter"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn booleans_take_every_spelling_of_go_parse_bool() {
        let spellings = [
            "1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False",
        ];
        let pairs: Vec<(String, &str)> = spellings
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("b{i}"), *s))
            .chain([("bad".to_owned(), "yes")])
            .collect();
        let input = TriggerInput::new(
            0,
            "t",
            pairs.iter().map(|(k, v)| (k.as_str(), *v)),
            "ns",
            "n",
        );
        let redactor = Redactor::default();
        let mut p = Params::new(&input, &redactor);
        for (i, s) in spellings.iter().enumerate() {
            let name = format!("b{i}");
            let name: &str = pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(k, _)| k.as_str())
                .unwrap();
            assert_eq!(p.bool_or(name, META, i >= 6), i < 6, "{s:?}");
        }
        assert!(p.bool_or("absent", META, true));
        assert!(!p.bool_or("bad", META, false));
        let errors = p.finish().unwrap_err();
        assert_eq!(errors.len(), 1, "only \"yes\" is refused: {errors:?}");
        assert!(
            errors[0].to_string().contains("is not a boolean"),
            "{}",
            errors[0]
        );
    }
}
