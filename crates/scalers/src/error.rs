//! Errors of triggers: what went wrong, for which trigger and parameter, and whether retrying can
//! help. Messages never carry secrets: they are built through a [`Redactor`](crate::Redactor).

use std::fmt;

/// What kind of failure an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The trigger is misconfigured (missing or malformed parameter, bad combination). Retrying
    /// without changing the object does not help.
    Config,
    /// The trigger asks for something ringscale does not implement (a trigger type, a cloud
    /// identity provider, a secret store).
    Unsupported,
    /// The event source failed or answered something unusable (connection refused, query error,
    /// missing queue). A later poll may succeed.
    Source,
    /// The event source did not answer within the trigger's timeout.
    Timeout,
}

impl ErrorKind {
    /// Whether a later attempt may succeed without a change to the trigger.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::Source | ErrorKind::Timeout)
    }

    /// A short lowercase label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Source => "source",
            ErrorKind::Timeout => "timeout",
        }
    }
}

/// Where a parameter's value came from, or would have come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamSource {
    /// The trigger's `metadata`.
    Metadata,
    /// The trigger's TriggerAuthentication or ClusterTriggerAuthentication.
    Auth,
    /// The scale target's environment, named by a `<parameter>FromEnv` metadata entry.
    Env,
}

/// An error of one trigger.
#[derive(Clone, PartialEq, Eq)]
pub struct ScalerError {
    /// What kind of failure this is.
    pub kind: ErrorKind,
    /// Index of the trigger in `spec.triggers`.
    pub trigger_index: usize,
    /// The trigger's type.
    pub trigger_type: String,
    /// The parameter the error is about, if any.
    pub parameter: Option<String>,
    /// Where that parameter came from (or was looked for first).
    pub source: Option<ParamSource>,
    /// The metadata key the parameter was read from (`address`, or `addressFromEnv` for values
    /// read from the environment).
    pub key: Option<String>,
    /// What went wrong, already redacted.
    pub message: String,
}

impl ScalerError {
    /// Whether a later attempt may succeed without a change to the trigger.
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }

    /// The path of the offending field inside a ScaledObject or ScaledJob, for reports such as
    /// `ringscale validate`: `spec.triggers[2].metadata.listLength`, or the trigger's
    /// `authenticationRef` for parameters that come from a TriggerAuthentication.
    pub fn field_path(&self) -> String {
        let trigger = format!("spec.triggers[{}]", self.trigger_index);
        match (self.source, &self.key, &self.parameter) {
            (Some(ParamSource::Auth), _, _) => format!("{trigger}.authenticationRef"),
            (_, Some(key), _) => format!("{trigger}.metadata.{key}"),
            (Some(ParamSource::Metadata), None, Some(p)) => format!("{trigger}.metadata.{p}"),
            (Some(ParamSource::Env), None, Some(p)) => format!("{trigger}.metadata.{p}FromEnv"),
            _ => format!("{trigger}.metadata"),
        }
    }
}

impl fmt::Display for ScalerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "trigger {} ({})", self.trigger_index, self.trigger_type)?;
        if let Some(p) = &self.parameter {
            write!(f, ", parameter {p:?}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl fmt::Debug for ScalerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScalerError({}: {self})", self.kind.label())
    }
}

impl std::error::Error for ScalerError {}

/// An error's message followed by its causes (each once).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
