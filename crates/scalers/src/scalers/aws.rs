//! What the `aws-*` triggers share: credentials resolved as KEDA's `aws_common.go`
//! (`GetAwsAuthorization`, `GetAwsConfig`) resolves them, requests signed with AWS's own SigV4
//! signer (`aws-sigv4`), and one credentials cache per region and identity — so 10,000 triggers
//! on one account share one cache (one STS session for a role) and one HTTP client.
//!
//! Credentials, by `identityOwner` (trigger metadata):
//! - `pod` (the default): the authentication's `awsRoleArn` (assumed through STS with the
//!   operator's own credentials), else its `awsAccessKeyID` (or `awsAccessKeyId`),
//!   `awsSecretAccessKey` and optional `awsSessionToken`, else the metadata's `awsAccessKeyID` or
//!   `awsAccessKeyIDFromEnv` with `awsSecretAccessKeyFromEnv`;
//! - `operator` (or any other value, as in KEDA): the replica's own credentials.
//!
//! The replica's own credentials come from its environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) or the shared credentials file
//! (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`, profile `AWS_PROFILE` or
//! `default`), read once at start; STS is reached at `AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL` or
//! `https://sts.<region>.amazonaws.com`. Instance metadata (IMDS), ECS task roles, web identity
//! and SSO are not read.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

use super::http::{self as shared_http, HttpSource};
use crate::error::{ErrorKind, ParamSource};
use crate::params::{AUTH, META, Params};
use crate::redact::Secret;
use crate::sources::Sources;
use crate::tls::TlsOptions;

/// The replica's own AWS settings, captured from its environment once.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct AwsEnv {
    /// Static credentials (environment or shared credentials file).
    pub access_key_id: Option<String>,
    /// Their secret.
    pub secret_access_key: Option<Secret>,
    /// Their session token, for temporary credentials.
    pub session_token: Option<Secret>,
    /// `AWS_ENDPOINT_URL_STS` or `AWS_ENDPOINT_URL`: where STS is asked.
    pub sts_endpoint: Option<String>,
}

impl fmt::Debug for AwsEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsEnv")
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "[redacted]"),
            )
            .field("sts_endpoint", &self.sts_endpoint)
            .finish_non_exhaustive()
    }
}

impl AwsEnv {
    /// Reads the process environment and the shared credentials file.
    pub fn from_env() -> AwsEnv {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
        let mut env = AwsEnv {
            sts_endpoint: var("AWS_ENDPOINT_URL_STS").or_else(|| var("AWS_ENDPOINT_URL")),
            ..AwsEnv::default()
        };
        if let (Some(id), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            env.access_key_id = Some(id);
            env.secret_access_key = Some(Secret::new(secret));
            env.session_token = var("AWS_SESSION_TOKEN").map(Secret::new);
            return env;
        }
        let file = var("AWS_SHARED_CREDENTIALS_FILE")
            .or_else(|| var("HOME").map(|h| format!("{h}/.aws/credentials")));
        let profile = var("AWS_PROFILE").unwrap_or_else(|| "default".to_owned());
        if let Some(text) = file.and_then(|f| std::fs::read_to_string(f).ok()) {
            let section = credentials_profile(&text, &profile);
            if let (Some(id), Some(secret)) = (
                section.get("aws_access_key_id"),
                section.get("aws_secret_access_key"),
            ) {
                env.access_key_id = Some(id.clone());
                env.secret_access_key = Some(Secret::new(secret.clone()));
                env.session_token = section.get("aws_session_token").cloned().map(Secret::new);
            }
        }
        env
    }
}

/// The keys of `[profile]` in an AWS shared credentials file.
fn credentials_profile(text: &str, profile: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == profile;
            continue;
        }
        if inside && let Some((k, v)) = line.split_once('=') {
            out.insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
    out
}

/// Where a trigger's credentials come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Identity {
    /// Keys given to the trigger.
    Static {
        access_key_id: String,
        secret_access_key: Secret,
        session_token: Option<Secret>,
    },
    /// A role assumed through STS with the replica's own credentials.
    AssumeRole { role_arn: String },
    /// The replica's own credentials.
    Operator,
}

/// KEDA's GetAwsAuthorization, for a trigger that is not on a pod identity.
pub(crate) fn parse_identity(p: &mut Params<'_>) -> Identity {
    let owner = p.opt_str(&["identityOwner"], META).unwrap_or_default();
    if !(owner.is_empty() || owner == "pod") {
        return Identity::Operator;
    }
    if let Some(role_arn) = p.opt_str(&["awsRoleArn"], AUTH) {
        return Identity::AssumeRole { role_arn };
    }
    if let Some(access_key_id) = p.opt_str(&["awsAccessKeyID", "awsAccessKeyId"], AUTH) {
        let session_token = p.opt_str(&["awsSessionToken"], AUTH).map(Secret::new);
        return match p.opt_str(&["awsSecretAccessKey"], AUTH) {
            Some(secret) => Identity::Static {
                access_key_id,
                secret_access_key: Secret::new(secret),
                session_token,
            },
            None => {
                p.fail(ErrorKind::Config, "awsSecretAccessKey not found");
                Identity::Operator
            }
        };
    }
    let id = p.opt_str(
        &["awsAccessKeyID"],
        &[ParamSource::Metadata, ParamSource::Env],
    );
    let secret = p.opt_str(&["awsSecretAccessKey"], &[ParamSource::Env]);
    match (id, secret) {
        (Some(access_key_id), Some(secret)) => Identity::Static {
            access_key_id,
            secret_access_key: Secret::new(secret),
            session_token: None,
        },
        (None, _) => {
            p.fail(ErrorKind::Config, "awsAccessKeyID not found");
            Identity::Operator
        }
        (Some(_), None) => {
            p.fail(ErrorKind::Config, "awsSecretAccessKey not found");
            Identity::Operator
        }
    }
}

/// The endpoint of `service` in `region`, or the trigger's `awsEndpoint`.
pub(crate) fn endpoint(service: &str, region: &str, custom: Option<&str>) -> String {
    match custom {
        Some(e) => e.trim_end_matches('/').to_owned(),
        None => format!("https://{service}.{region}.amazonaws.com"),
    }
}

/// Where an `aws-*` trigger's calls go, and as whom: `awsRegion` (metadata or authentication),
/// `awsEndpoint` and the credentials.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub region: String,
    pub endpoint: Option<String>,
    pub identity: Identity,
}

pub(crate) fn parse_target(p: &mut Params<'_>) -> Target {
    let region = p.req_str(&["awsRegion"], &[ParamSource::Metadata, ParamSource::Auth]);
    let endpoint = p.opt_str(&["awsEndpoint"], META);
    if let Some(e) = &endpoint
        && url::Url::parse(e).map_or(true, |u| !matches!(u.scheme(), "http" | "https"))
    {
        p.fail_param(
            ErrorKind::Config,
            "awsEndpoint",
            META,
            format!("{e:?} is not an http(s) URL"),
        );
    }
    let identity = parse_identity(p);
    Target {
        region,
        endpoint,
        identity,
    }
}

/// The JSON flavour an AWS API speaks (its `Content-Type`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Json {
    /// `application/x-amz-json-1.0` (SQS, DynamoDB, CloudWatch).
    V1_0,
    /// `application/x-amz-json-1.1` (Kinesis).
    V1_1,
}

impl Json {
    fn content_type(self) -> &'static str {
        match self {
            Json::V1_0 => "application/x-amz-json-1.0",
            Json::V1_1 => "application/x-amz-json-1.1",
        }
    }
}

/// One AWS service as a trigger calls it: the shared credentials and client of its region and
/// identity, the service's URL and its JSON protocol.
pub(crate) struct Service {
    source: Arc<AwsSource>,
    /// The SigV4 signing name (`sqs`, `kinesis`, `dynamodb`, `monitoring`).
    name: &'static str,
    url: String,
    json: Json,
}

impl Service {
    /// `name` is both the endpoint prefix and the signing name.
    pub fn new(sources: &Sources, target: &Target, name: &'static str, json: Json) -> Service {
        let source = AwsSource::get(
            sources,
            AwsKey {
                region: target.region.clone(),
                identity: target.identity.clone(),
            },
        );
        let url = format!(
            "{}/",
            endpoint(name, &target.region, target.endpoint.as_deref())
        );
        Service {
            source,
            name,
            url,
            json,
        }
    }

    /// Calls `operation` (the `X-Amz-Target` value) after waiting for a slot of the source.
    pub async fn call(
        &self,
        operation: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, AwsError> {
        let _permit = self.source.limit().acquire().await;
        self.source
            .call_json(self.name, &self.url, self.json, operation, body)
            .await
    }
}

/// A failed AWS call.
#[derive(Debug)]
pub(crate) struct AwsError {
    pub kind: ErrorKind,
    pub message: String,
}

impl AwsError {
    fn source(message: impl Into<String>) -> Self {
        AwsError {
            kind: ErrorKind::Source,
            message: message.into(),
        }
    }
}

/// Identity of a shared credentials cache.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct AwsKey {
    pub region: String,
    pub identity: Identity,
}

#[derive(Clone)]
struct Keys {
    id: String,
    secret: Secret,
    token: Option<Secret>,
    /// When temporary credentials stop being used (5 minutes before they expire).
    renew_at: Option<SystemTime>,
}

/// Credentials for one region and identity, and the HTTP client the calls go through.
pub(crate) struct AwsSource {
    key: AwsKey,
    env: AwsEnv,
    http: Arc<HttpSource>,
    cached: tokio::sync::Mutex<Option<Keys>>,
    limit: crate::sources::Limit,
}

impl AwsSource {
    pub fn get(sources: &Sources, key: AwsKey) -> Arc<AwsSource> {
        let http = shared_http::client(sources, TlsOptions::default());
        let env = sources.inner.config.aws.clone();
        sources.inner.aws.get_or_insert(&key, || AwsSource {
            key: key.clone(),
            env,
            http,
            cached: tokio::sync::Mutex::new(None),
            limit: sources.limit(),
        })
    }

    fn limit(&self) -> &crate::sources::Limit {
        &self.limit
    }

    async fn keys(&self) -> Result<Keys, AwsError> {
        match &self.key.identity {
            Identity::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => Ok(Keys {
                id: access_key_id.clone(),
                secret: secret_access_key.clone(),
                token: session_token.clone(),
                renew_at: None,
            }),
            Identity::Operator => self.operator_keys(),
            Identity::AssumeRole { role_arn } => {
                let mut cached = self.cached.lock().await;
                if let Some(k) = cached.as_ref()
                    && k.renew_at.is_none_or(|t| SystemTime::now() < t)
                {
                    return Ok(k.clone());
                }
                let keys = self.assume_role(role_arn).await?;
                *cached = Some(keys.clone());
                Ok(keys)
            }
        }
    }

    fn operator_keys(&self) -> Result<Keys, AwsError> {
        match (&self.env.access_key_id, &self.env.secret_access_key) {
            (Some(id), Some(secret)) => Ok(Keys {
                id: id.clone(),
                secret: secret.clone(),
                token: self.env.session_token.clone(),
                renew_at: None,
            }),
            _ => Err(AwsError {
                kind: ErrorKind::Config,
                message: "the replica has no AWS credentials of its own (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a shared credentials file); instance metadata and web identity are not read by ringscale".to_owned(),
            }),
        }
    }

    /// STS AssumeRole (session name KEDA, as KEDA names it) with the replica's credentials.
    async fn assume_role(&self, role_arn: &str) -> Result<Keys, AwsError> {
        let base = self.operator_keys()?;
        let url = format!(
            "{}/",
            endpoint("sts", &self.key.region, self.env.sts_endpoint.as_deref())
        );
        let body = form_urlencoded(&[
            ("Action", "AssumeRole"),
            ("Version", "2011-06-15"),
            ("RoleArn", role_arn),
            ("RoleSessionName", "KEDA"),
        ]);
        let headers = [(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )];
        let (status, answer) = self
            .send(&base, "sts", &url, &headers, body.into_bytes())
            .await?;
        let text = String::from_utf8_lossy(&answer);
        if !status.is_success() {
            let code = xml_value(&text, "Code").unwrap_or_default();
            let message = xml_value(&text, "Message").unwrap_or_default();
            return Err(AwsError {
                kind: ErrorKind::Config,
                message: format!(
                    "assuming role {role_arn}: STS answered {status}: {code} {message}"
                ),
            });
        }
        let field = |name: &str| {
            xml_value(&text, name).ok_or_else(|| {
                AwsError::source(format!(
                    "assuming role {role_arn}: no {name} in STS's answer"
                ))
            })
        };
        let expires = field("Expiration")
            .ok()
            .and_then(|e| e.parse::<jiff::Timestamp>().ok())
            .map(|t| {
                let secs = u64::try_from(t.as_second()).unwrap_or(0);
                SystemTime::UNIX_EPOCH + Duration::from_secs(secs.saturating_sub(300))
            });
        Ok(Keys {
            id: field("AccessKeyId")?,
            secret: Secret::new(field("SecretAccessKey")?),
            token: Some(Secret::new(field("SessionToken")?)),
            renew_at: Some(expires.unwrap_or_else(|| SystemTime::now() + Duration::from_secs(600))),
        })
    }

    /// A call (bounded by the poll's deadline) to an AWS JSON-protocol API (`X-Amz-Target: <target>`): the answer's JSON, or AWS's
    /// error code and message.
    async fn call_json(
        &self,
        service: &str,
        url: &str,
        json: Json,
        target: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, AwsError> {
        let keys = self.keys().await?;
        let headers = [
            ("content-type", json.content_type()),
            ("x-amz-target", target),
        ];
        let (status, answer) = self
            .send(&keys, service, url, &headers, body.to_string().into_bytes())
            .await?;
        let json: Option<serde_json::Value> = serde_json::from_slice(&answer).ok();
        if status.is_success() {
            return json.ok_or_else(|| {
                AwsError::source(format!(
                    "{target}: the answer is not JSON: {}",
                    shared_http::excerpt(&answer)
                ))
            });
        }
        // JSON errors carry `__type` and `message`; signature errors come back as XML.
        let text = String::from_utf8_lossy(&answer);
        let code = json
            .as_ref()
            .and_then(|j| j.get("__type").or_else(|| j.get("code")))
            .and_then(|v| v.as_str())
            .map(|t| t.rsplit('#').next().unwrap_or(t).to_owned())
            .or_else(|| xml_value(&text, "Code"))
            .unwrap_or_default();
        let message = json
            .as_ref()
            .and_then(|j| j.get("message").or_else(|| j.get("Message")))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .or_else(|| xml_value(&text, "Message"))
            .unwrap_or_else(|| shared_http::excerpt(&answer));
        let kind = if AUTH_ERRORS.contains(&code.as_str()) || status.as_u16() == 403 {
            ErrorKind::Config
        } else {
            ErrorKind::Source
        };
        Err(AwsError {
            kind,
            message: format!("{target}: {status} {code}: {message}"),
        })
    }

    async fn send(
        &self,
        keys: &Keys,
        service: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), AwsError> {
        let client = self
            .http
            .client()
            .map_err(|e| AwsError::source(e.to_string()))?;
        let identity = Credentials::new(
            keys.id.clone(),
            keys.secret.expose().to_owned(),
            keys.token.as_ref().map(|t| t.expose().to_owned()),
            None,
            "ringscale",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.key.region)
            .name(service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| AwsError::source(format!("signing: {e}")))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            url,
            headers.iter().copied(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| AwsError::source(format!("signing: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| AwsError::source(format!("signing: {e}")))?
            .into_parts();
        // The poll's own deadline bounds the call (`Scaler::poll`).
        let mut request = client.post(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        for (name, value) in instructions.headers() {
            request = request.header(name, value);
        }
        let answer = shared_http::fetch(request.body(body))
            .await
            .map_err(|e| AwsError::source(e.to_string()))?;
        Ok((answer.status, answer.body))
    }
}

/// AWS error codes that mean the credentials or their rights are wrong.
const AUTH_ERRORS: &[&str] = &[
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "AccessDenied",
    "AccessDeniedException",
    "ExpiredToken",
    "IncompleteSignature",
    "MissingAuthenticationToken",
];

/// RFC 3986's unreserved characters stay as they are, as AWS's SDKs encode form values (a
/// server that re-encodes the parsed form before checking the signature gets the same bytes).
const FORM_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn form_urlencoded(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                k,
                percent_encoding::utf8_percent_encode(v, FORM_VALUE)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The text of the first `<name>` element.
fn xml_value(text: &str, name: &str) -> Option<String> {
    let start = text.find(&format!("<{name}>"))? + name.len() + 2;
    let end = text[start..].find(&format!("</{name}>"))? + start;
    Some(
        text[start..end]
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_credentials_file_is_read_by_profile() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key=B\n\n# c\n[ci]\naws_access_key_id=C\naws_secret_access_key = D\naws_session_token = E\n";
        let d = credentials_profile(text, "default");
        assert_eq!(d.get("aws_access_key_id").map(String::as_str), Some("A"));
        assert_eq!(d.get("aws_session_token"), None);
        let ci = credentials_profile(text, "ci");
        assert_eq!(
            ci.get("aws_secret_access_key").map(String::as_str),
            Some("D")
        );
        assert_eq!(ci.get("aws_session_token").map(String::as_str), Some("E"));
        assert!(credentials_profile(text, "none").is_empty());
    }

    #[test]
    fn xml_values_are_unescaped() {
        let x = "<a><Code>X&amp;Y</Code><Message>m</Message></a>";
        assert_eq!(xml_value(x, "Code").as_deref(), Some("X&Y"));
        assert_eq!(xml_value(x, "Missing"), None);
    }
}
