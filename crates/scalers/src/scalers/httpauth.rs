//! KEDA's shared HTTP authentication settings (`authModes`: apiKey, basic, tls, bearer, custom)
//! used by the `metrics-api` and `prometheus` triggers.

use crate::error::{ErrorKind, ParamSource};
use crate::params::{AUTH, Params};
use crate::redact::Secret;
use crate::tls::TlsOptions;

use ParamSource::{Auth, Metadata};

/// An authentication mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    ApiKey,
    Basic,
    Tls,
    Bearer,
    Custom,
}

/// Authentication of HTTP requests to a metrics endpoint.
#[derive(Clone, Debug, Default)]
pub(crate) struct HttpAuth {
    modes: Vec<Mode>,
    bearer: Option<Secret>,
    username: Option<String>,
    password: Option<Secret>,
    pub ca: Option<String>,
    cert: Option<String>,
    key: Option<Secret>,
    api_key: Option<Secret>,
    api_key_in_query: bool,
    key_param_name: Option<String>,
    custom: Option<(String, Secret)>,
}

pub(crate) fn parse(p: &mut Params<'_>) -> HttpAuth {
    let mut auth = HttpAuth::default();
    let order = [Metadata, Auth];
    if let Some(found) = p.lookup(&["authModes", "authMode"], &order) {
        let mut exclusive = 0;
        for mode in found.text.split(',').map(str::trim) {
            let m = match mode {
                "apiKey" => Mode::ApiKey,
                "basic" => Mode::Basic,
                "tls" => Mode::Tls,
                "bearer" => Mode::Bearer,
                "custom" => Mode::Custom,
                "oauth" => {
                    p.invalid(&found, "the oauth auth mode is not supported by ringscale");
                    continue;
                }
                other => {
                    p.invalid(
                        &found,
                        format!("{other:?} must be one of apiKey, basic, tls, bearer, custom"),
                    );
                    continue;
                }
            };
            if matches!(m, Mode::Basic | Mode::Bearer) {
                exclusive += 1;
            }
            auth.modes.push(m);
        }
        if exclusive > 1 {
            p.invalid(&found, "must contain only one of bearer, basic");
        }
    }
    auth.bearer = p.opt_str(&["bearerToken", "token"], AUTH).map(Secret::new);
    auth.username = p.opt_str(&["username"], AUTH);
    auth.password = p.opt_str(&["password"], AUTH).map(Secret::new);
    auth.cert = p.opt_str(&["cert"], AUTH);
    auth.key = p.opt_str(&["key"], AUTH).map(Secret::new);
    auth.ca = p.opt_str(&["ca"], AUTH);
    auth.custom = match (
        p.opt_str(&["customAuthHeader"], AUTH),
        p.opt_str(&["customAuthValue"], AUTH),
    ) {
        (Some(h), Some(v)) => Some((h, Secret::new(v))),
        _ => None,
    };
    auth.api_key = p.opt_str(&["apiKey"], &order).map(Secret::new);
    auth.api_key_in_query = p.choice("method", &order, &["header", "query"], "header") == "query";
    auth.key_param_name = p.opt_str(&["keyParamName"], &order);

    let missing = |p: &mut Params<'_>, name: &str, msg: &str| {
        // Offline, values from unseen Secrets may be there.
        if !p.input.unresolved.all_auth && !p.input.unresolved.auth.contains(name) {
            p.fail_param(ErrorKind::Config, name, AUTH, msg);
        }
    };
    if auth.enabled(Mode::Bearer) && auth.bearer.is_none() {
        missing(
            p,
            "bearerToken",
            "a bearer token is required when bearer auth is enabled",
        );
    }
    if auth.enabled(Mode::Basic) && auth.username.is_none() {
        missing(
            p,
            "username",
            "username is required when basic auth is enabled",
        );
    }
    if auth.enabled(Mode::Tls) && (auth.cert.is_none() || auth.key.is_none() || auth.ca.is_none()) {
        missing(
            p,
            "cert",
            "ca, cert and key are required when tls auth is enabled",
        );
    }
    if auth.enabled(Mode::Custom) && auth.custom.is_none() {
        missing(
            p,
            "customAuthHeader",
            "customAuthHeader and customAuthValue are required when custom auth is enabled",
        );
    }
    if auth.enabled(Mode::ApiKey) && auth.api_key.is_none() {
        missing(
            p,
            "apiKey",
            "apiKey is required when apiKey auth is enabled",
        );
    }
    auth
}

impl HttpAuth {
    pub fn enabled(&self, mode: Mode) -> bool {
        self.modes.contains(&mode)
    }

    /// TLS settings: the client certificate when tls auth is on, the CA when `with_ca` (the
    /// prometheus trigger trusts a given CA whatever the auth modes).
    pub fn tls(&self, insecure: bool, with_ca: bool) -> TlsOptions {
        let tls_on = self.enabled(Mode::Tls);
        TlsOptions {
            ca: if tls_on || with_ca {
                self.ca.clone()
            } else {
                None
            },
            cert: if tls_on { self.cert.clone() } else { None },
            key: if tls_on { self.key.clone() } else { None },
            insecure,
        }
    }

    /// The API key query parameter to add to the URL, if the key goes in the query.
    pub fn query_param(&self) -> Option<(String, &str)> {
        if self.enabled(Mode::ApiKey) && self.api_key_in_query {
            let name = self
                .key_param_name
                .clone()
                .unwrap_or_else(|| "api_key".to_owned());
            return self.api_key.as_ref().map(|k| (name, k.expose()));
        }
        None
    }

    /// Adds headers of every enabled mode (the metrics-api trigger).
    pub fn apply_all(&self, mut req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if self.enabled(Mode::ApiKey)
            && !self.api_key_in_query
            && let Some(k) = &self.api_key
        {
            let name = self.key_param_name.as_deref().unwrap_or("X-API-KEY");
            req = req.header(name, k.expose());
        }
        if self.enabled(Mode::Basic)
            && let Some(u) = &self.username
        {
            req = req.basic_auth(u, self.password.as_ref().map(Secret::expose));
        }
        if self.enabled(Mode::Bearer)
            && let Some(t) = &self.bearer
        {
            req = req.bearer_auth(t.expose());
        }
        if self.enabled(Mode::Custom)
            && let Some((h, v)) = &self.custom
        {
            req = req.header(h, v.expose());
        }
        req
    }

    /// Adds the one authorization header KEDA's prometheus trigger sends: bearer, else basic,
    /// else custom.
    pub fn apply_first(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if self.enabled(Mode::Bearer)
            && let Some(t) = &self.bearer
        {
            return req.bearer_auth(t.expose());
        }
        if self.enabled(Mode::Basic)
            && let Some(u) = &self.username
        {
            return req.basic_auth(u, self.password.as_ref().map(Secret::expose));
        }
        if self.enabled(Mode::Custom)
            && let Some((h, v)) = &self.custom
        {
            return req.header(h, v.expose());
        }
        req
    }
}
