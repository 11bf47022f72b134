//! Keeping secrets out of errors, logs and `Debug` output.
//!
//! Every error message of a trigger passes through the trigger's [`Redactor`], which knows the
//! secret values the trigger was given (passwords, tokens, connection strings, keys) and removes
//! them wherever they appear, plus anything that looks like credentials in a URL or a connection
//! string even when the value is not known to be secret.

use std::fmt;
use std::sync::{Arc, LazyLock};

use regex::Regex;

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// Parameter names whose values are secrets. Compared case-insensitively against the end of a
/// name, so `sentinelPassword` and `tlsClientKey` match too.
const SECRET_SUFFIXES: &[&str] = &[
    "password",
    "secret",
    "token",
    "apikey",
    "key",
    "connection",
    "connectionstring",
    "cert",
    "ca",
    "cacert",
    "customauthvalue",
    "sas",
    "credentials",
];

/// Whether a parameter named `name` holds a secret.
pub fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let lower = lower.strip_suffix("fromenv").unwrap_or(&lower);
    if lower == "keyparamname" {
        return false;
    }
    SECRET_SUFFIXES.iter().any(|s| lower.ends_with(s))
}

static URL_USERINFO: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@").ok());
static KEY_VALUE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(password|passwd|pwd|sslpassword|token|secret)(\s*[=:]\s*)('[^']*'|[^\s&;,]+)",
    )
    .ok()
});
static GO_DSN: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"([A-Za-z0-9_.-]+):[^@\s/]+@(tcp|unix)\(").ok());

/// Removes known secret values and credential-looking text from strings.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Arc<Vec<String>>,
}

impl Redactor {
    /// A redactor for the given secret values. Values shorter than four characters are ignored:
    /// replacing them would mangle messages without hiding anything meaningful.
    pub fn new<I, S>(values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut secrets: Vec<String> = values
            .into_iter()
            .map(Into::into)
            .map(|s| s.trim().to_owned())
            .filter(|s| s.len() >= 4)
            .collect();
        // Longest first, so a secret containing another is removed whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor {
            secrets: Arc::new(secrets),
        }
    }

    /// `text` with every known secret and every credential-looking fragment replaced.
    pub fn clean(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in self.secrets.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        scrub_patterns(&out)
    }
}

/// Replaces credential-looking fragments (URL user info, `password=...`, Go MySQL DSN
/// credentials) in `text`.
pub fn scrub_patterns(text: &str) -> String {
    let mut out = text.to_owned();
    if let Some(re) = URL_USERINFO.as_ref() {
        out = re
            .replace_all(&out, format!("${{1}}{REDACTED}@"))
            .into_owned();
    }
    if let Some(re) = KEY_VALUE.as_ref() {
        out = re
            .replace_all(&out, format!("${{1}}${{2}}{REDACTED}"))
            .into_owned();
    }
    if let Some(re) = GO_DSN.as_ref() {
        out = re
            .replace_all(&out, format!("${{1}}:{REDACTED}@${{2}}("))
            .into_owned();
    }
    out
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

/// A string that must not be shown: `Debug` and `Display` print [`REDACTED`].
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value. Call only where it is handed to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str(REDACTED)
        }
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_secrets_and_credential_patterns_are_removed() {
        let r = Redactor::new(["hunter2-long", "ab"]);
        assert_eq!(
            r.clean("auth failed for hunter2-long at redis://u:pw@host:6379 (ab)"),
            "auth failed for [redacted] at redis://[redacted]@host:6379 (ab)"
        );
        assert_eq!(
            scrub_patterns("host=db password='a b' user=x"),
            "host=db password=[redacted] user=x"
        );
        assert_eq!(
            scrub_patterns("dial root:s3cret@tcp(db:3306)/x"),
            "dial root:[redacted]@tcp(db:3306)/x"
        );
    }

    #[test]
    fn secret_names_are_recognised() {
        for name in [
            "password",
            "passwordFromEnv",
            "sentinelPassword",
            "connection",
            "connectionStringFromEnv",
            "apiKey",
            "bearerToken",
            "tlsClientKey",
            "key",
            "customAuthValue",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["host", "listName", "keyParamName", "queueName", "address"] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("topsecret");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "topsecret");
    }
}
