//! What a trigger is built from: its spec, the parameters its authentication supplied and the
//! environment of the scale target.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use ringscale_api::MetricType;

use crate::error::{ErrorKind, ParamSource, ScalerError};
use crate::redact::{Redactor, is_secret_name};

/// The kind of object a trigger belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OwnerKind {
    /// A ScaledObject.
    ScaledObject,
    /// A ScaledJob.
    ScaledJob,
}

impl OwnerKind {
    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerKind::ScaledObject => "ScaledObject",
            OwnerKind::ScaledJob => "ScaledJob",
        }
    }
}

/// The object a trigger belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    /// ScaledObject or ScaledJob.
    pub kind: OwnerKind,
    /// Namespace of the object.
    pub namespace: String,
    /// Name of the object.
    pub name: String,
}

/// Parameters and environment variables whose values exist but cannot be read here (offline
/// validation without the Secrets they come from). Checks that need them are skipped instead of
/// reporting them missing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unresolved {
    /// Authentication parameters that cannot be read.
    pub auth: BTreeSet<String>,
    /// Whether no authentication parameter can be read (the authentication object is unseen).
    pub all_auth: bool,
    /// Environment variables that cannot be read.
    pub env: BTreeSet<String>,
    /// Whether no environment variable can be read (the scale target is unseen).
    pub all_env: bool,
}

impl Unresolved {
    /// Whether nothing is unresolved.
    pub fn is_empty(&self) -> bool {
        self.auth.is_empty() && !self.all_auth && self.env.is_empty() && !self.all_env
    }
}

/// Everything a trigger is built from.
#[derive(Clone)]
pub struct TriggerInput {
    /// Index of the trigger in `spec.triggers`; metric names start with `s<index>-`.
    pub index: usize,
    /// The trigger's `type`.
    pub trigger_type: String,
    /// The trigger's optional `name`.
    pub name: Option<String>,
    /// The trigger's `metadata`.
    pub metadata: BTreeMap<String, String>,
    /// The trigger's `metricType`, if given.
    pub metric_type: Option<MetricType>,
    /// The trigger's `useCachedMetrics`.
    pub use_cached_metrics: bool,
    /// Whether the trigger only feeds a scaling-modifiers formula (KEDA then does not require
    /// some target values).
    pub as_metric_source: bool,
    /// Parameters resolved from the trigger's TriggerAuthentication or
    /// ClusterTriggerAuthentication.
    pub auth_params: BTreeMap<String, String>,
    /// Environment of the scale target's container, for `<parameter>FromEnv` metadata.
    pub resolved_env: BTreeMap<String, String>,
    /// The pod identity provider of the trigger's authentication, if any (`none` counts as none).
    pub pod_identity: Option<String>,
    /// The object the trigger belongs to.
    pub owner: Owner,
    /// Timeout for calls to the event source when the trigger sets none (KEDA's
    /// `KEDA_HTTP_DEFAULT_TIMEOUT`, 3 s).
    pub default_timeout: Duration,
    /// Values that exist but cannot be read here (offline validation).
    pub unresolved: Unresolved,
}

/// Default timeout of calls to event sources.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

impl TriggerInput {
    /// A trigger of `trigger_type` with the given metadata, owned by a ScaledObject `name` in
    /// `namespace`, with no authentication and no environment.
    pub fn new(
        index: usize,
        trigger_type: impl Into<String>,
        metadata: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        TriggerInput {
            index,
            trigger_type: trigger_type.into(),
            name: None,
            metadata: metadata
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            metric_type: None,
            use_cached_metrics: false,
            as_metric_source: false,
            auth_params: BTreeMap::new(),
            resolved_env: BTreeMap::new(),
            pod_identity: None,
            owner: Owner {
                kind: OwnerKind::ScaledObject,
                namespace: namespace.into(),
                name: name.into(),
            },
            default_timeout: DEFAULT_TIMEOUT,
            unresolved: Unresolved::default(),
        }
    }

    /// Sets authentication parameters.
    pub fn with_auth(
        mut self,
        params: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
    ) -> Self {
        self.auth_params
            .extend(params.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Sets environment variables of the scale target.
    pub fn with_env(
        mut self,
        env: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
    ) -> Self {
        self.resolved_env
            .extend(env.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Sets the metric type.
    pub fn with_metric_type(mut self, metric_type: MetricType) -> Self {
        self.metric_type = Some(metric_type);
        self
    }

    /// A redactor that knows every secret this trigger was given: all values from its
    /// authentication, values of secret-looking metadata, and environment values referenced by
    /// secret-looking `*FromEnv` entries.
    pub fn redactor(&self) -> Redactor {
        let mut secrets: Vec<String> = Vec::new();
        for (k, v) in &self.auth_params {
            if is_secret_name(k) {
                secrets.push(v.clone());
            }
        }
        for (k, v) in &self.metadata {
            if let Some(param) = k.strip_suffix("FromEnv") {
                if is_secret_name(param)
                    && let Some(value) = self.resolved_env.get(v)
                {
                    secrets.push(value.clone());
                }
            } else if is_secret_name(k) {
                secrets.push(v.clone());
            }
        }
        // User info embedded in URL-valued parameters wherever they came from.
        for v in self
            .auth_params
            .values()
            .chain(self.metadata.values())
            .chain(self.resolved_env.values())
        {
            if let Some(userinfo) = url_password(v) {
                secrets.push(userinfo);
            }
        }
        Redactor::new(secrets)
    }

    /// An error of this trigger, redacted.
    pub(crate) fn error(
        &self,
        redactor: &Redactor,
        kind: ErrorKind,
        parameter: Option<(&str, Option<ParamSource>, Option<String>)>,
        message: impl AsRef<str>,
    ) -> ScalerError {
        let (parameter, source, key) = match parameter {
            Some((p, s, k)) => (Some(p.to_owned()), s, k),
            None => (None, None, None),
        };
        ScalerError {
            kind,
            trigger_index: self.index,
            trigger_type: self.trigger_type.clone(),
            parameter,
            source,
            key,
            message: redactor.clean(message.as_ref()),
        }
    }

    /// The pod identity provider if one other than `none` is set.
    pub fn identity_provider(&self) -> Option<&str> {
        self.pod_identity
            .as_deref()
            .filter(|p| !p.is_empty() && *p != "none")
    }
}

/// The password in a URL's user info, if any.
fn url_password(value: &str) -> Option<String> {
    let rest = value.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    let password = userinfo.split_once(':')?.1;
    (!password.is_empty()).then(|| password.to_owned())
}

impl fmt::Debug for TriggerInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redactor = self.redactor();
        let metadata: BTreeMap<&str, String> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), redactor.clean(v)))
            .collect();
        f.debug_struct("TriggerInput")
            .field("index", &self.index)
            .field("trigger_type", &self.trigger_type)
            .field("name", &self.name)
            .field("metadata", &metadata)
            .field("metric_type", &self.metric_type)
            .field("use_cached_metrics", &self.use_cached_metrics)
            .field("as_metric_source", &self.as_metric_source)
            .field("auth_params", &self.auth_params.keys().collect::<Vec<_>>())
            .field(
                "resolved_env",
                &self.resolved_env.keys().collect::<Vec<_>>(),
            )
            .field("pod_identity", &self.pod_identity)
            .field("owner", &self.owner)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_secret_values() {
        let input = TriggerInput::new(
            0,
            "redis",
            [
                ("address", "redis:6379"),
                ("password", "meta-secret-1"),
                ("passwordFromEnv", "PW"),
                ("host", "amqp://user:url-secret-2@rabbit/"),
            ],
            "ns",
            "so",
        )
        .with_auth([
            ("password", "auth-secret-3"),
            ("connection", "conn-secret-4"),
        ])
        .with_env([("PW", "env-secret-5")]);
        let shown = format!("{input:?}");
        for secret in [
            "meta-secret-1",
            "url-secret-2",
            "auth-secret-3",
            "conn-secret-4",
            "env-secret-5",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(shown.contains("redis:6379"));
        let cleaned = input
            .redactor()
            .clean("env-secret-5 conn-secret-4 url-secret-2");
        assert_eq!(cleaned, "[redacted] [redacted] [redacted]");
    }
}
