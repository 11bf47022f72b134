//! What the `azure-queue` and `azure-blob` triggers share: the storage connection string read
//! as Azure's Go SDK reads it (KEDA builds its clients with `NewQueueClientFromConnectionString`
//! and `NewClientFromConnectionString`), requests signed with the account key (Shared Key) or
//! carrying the connection string's shared access signature, KEDA's `cloud`/`endpointSuffix`
//! checks, and one client per storage account endpoint and credential.
//!
//! Connection string: `Key=Value` pairs separated by `;`; the service URL is `QueueEndpoint` /
//! `BlobEndpoint`, else `<DefaultEndpointsProtocol (https)>://<AccountName>.<queue|blob>.
//! <EndpointSuffix (core.windows.net)>`; credentials are `AccountName` + `AccountKey`, else
//! `SharedAccessSignature`. `UseDevelopmentStorage=true` is not read (the Go SDK does not read
//! it either); Azurite is reached with its endpoint and account key.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;

use super::http::{self as shared_http, HttpSource};
use crate::error::{ErrorKind, ParamSource};
use crate::params::{META, Params};
use crate::redact::Secret;
use crate::sources::{Limit, Sources};
use crate::tls::TlsOptions;

/// The storage API version sent with every request (the one azqueue and azblob use).
const API_VERSION: &str = "2023-11-03";

/// Which storage service a trigger reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Service {
    Queue,
    Blob,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Queue => "queue",
            Service::Blob => "blob",
        }
    }

    fn endpoint_key(self) -> &'static str {
        match self {
            Service::Queue => "QueueEndpoint",
            Service::Blob => "BlobEndpoint",
        }
    }
}

/// How requests prove who they are.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Credential {
    /// Shared Key: an HMAC-SHA256 of the request with the account key.
    SharedKey { account: String, key: Secret },
    /// A shared access signature, appended to every request's query.
    Sas(Secret),
}

/// A storage account endpoint and its credential, from a connection string.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Account {
    /// The service URL, ending in `/`, without the signature.
    pub service_url: String,
    pub credential: Credential,
}

/// Why a storage connection string cannot be used (the Go SDK's messages where it has them).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ConnectionStringError {
    /// A part without `=`.
    #[error(
        "connection string is either blank or malformed; the expected form is \"Key=Value;Key=Value;...\""
    )]
    Malformed,
    /// Neither `AccountName` nor the service's endpoint key (named).
    #[error("connection string needs either AccountName or {0}")]
    NoEndpoint(&'static str),
    /// The service URL is not http(s) (the service, the URL).
    #[error("the {0} service URL {1:?} is not an http(s) URL")]
    NotHttp(&'static str, String),
    /// `AccountKey` is not base64.
    #[error("the connection string's AccountKey is not base64")]
    KeyNotBase64,
    /// Neither `AccountKey` nor `SharedAccessSignature`.
    #[error("connection string needs either AccountKey or SharedAccessSignature")]
    NoCredential,
}

/// Azure's Go SDK ParseConnectionString for `service`.
pub(crate) fn parse_connection_string(
    text: &str,
    service: Service,
) -> Result<Account, ConnectionStringError> {
    let text = text.trim_end_matches(';');
    let mut map = BTreeMap::new();
    for part in text.split(';') {
        let Some((k, v)) = part.split_once('=') else {
            return Err(ConnectionStringError::Malformed);
        };
        map.insert(k, v);
    }
    let protocol = map
        .get("DefaultEndpointsProtocol")
        .copied()
        .unwrap_or("https");
    let suffix = map
        .get("EndpointSuffix")
        .copied()
        .unwrap_or("core.windows.net");
    let account = map.get("AccountName").copied();
    let mut service_url = match (map.get(service.endpoint_key()), account) {
        (Some(endpoint), _) => (*endpoint).to_owned(),
        (None, Some(a)) => format!("{protocol}://{a}.{}.{suffix}", service.name()),
        (None, None) => {
            return Err(ConnectionStringError::NoEndpoint(service.endpoint_key()));
        }
    };
    if !service_url.ends_with('/') {
        service_url.push('/');
    }
    if url::Url::parse(&service_url).map_or(true, |u| !matches!(u.scheme(), "http" | "https")) {
        return Err(ConnectionStringError::NotHttp(service.name(), service_url));
    }
    let credential = match (
        account,
        map.get("AccountKey"),
        map.get("SharedAccessSignature"),
    ) {
        (Some(account), Some(key), _) => {
            if base64::engine::general_purpose::STANDARD
                .decode(key)
                .is_err()
            {
                return Err(ConnectionStringError::KeyNotBase64);
            }
            Credential::SharedKey {
                account: account.to_owned(),
                key: Secret::new((*key).to_owned()),
            }
        }
        (_, _, Some(sas)) => Credential::Sas(Secret::new(sas.trim_start_matches('?').to_owned())),
        _ => return Err(ConnectionStringError::NoCredential),
    };
    Ok(Account {
        service_url,
        credential,
    })
}

/// KEDA's ParseAzureStorageEndpointSuffix: checks `cloud` (and `endpointSuffix` for a private
/// cloud). The suffix only matters to workload identity, which ringscale does not implement;
/// the checks are KEDA's all the same.
pub(crate) fn check_cloud(p: &mut Params<'_>, service: Service) -> String {
    let cloud = p.opt_str(&["cloud"], META);
    let Some(cloud) = cloud else {
        return format!("{}.core.windows.net", service.name());
    };
    if cloud.eq_ignore_ascii_case("Private") {
        return match p.opt_str(&["endpointSuffix"], META) {
            Some(s) => s,
            None => {
                p.fail_param(
                    ErrorKind::Config,
                    "endpointSuffix",
                    META,
                    "endpointSuffix must be provided for Private cloud type",
                );
                String::new()
            }
        };
    }
    let suffix = match cloud.to_ascii_uppercase().as_str() {
        "AZUREPUBLICCLOUD" => "core.windows.net",
        "AZUREUSGOVERNMENTCLOUD" => "core.usgovcloudapi.net",
        "AZURECHINACLOUD" => "core.chinacloudapi.cn",
        "AZUREGERMANCLOUD" => "core.cloudapi.de",
        _ => {
            p.fail_param(
                ErrorKind::Config,
                "cloud",
                META,
                format!("invalid cloud environment {cloud}"),
            );
            ""
        }
    };
    format!("{}.{suffix}", service.name())
}

/// The connection (`connection` from the authentication, the metadata or the environment)
/// parsed, when no pod identity is asked for; `None` after recording the problem.
pub(crate) fn parse_account(
    p: &mut Params<'_>,
    service: Service,
    order: &[ParamSource],
) -> Option<Account> {
    let found = p.lookup(&["connection"], order);
    let account_name = p.opt_str(&["accountName"], META);
    match p.input.identity_provider().map(str::to_owned) {
        None => {}
        Some(provider) if provider == "azure-workload" => {
            if account_name.is_none() {
                p.fail_param(
                    ErrorKind::Config,
                    "accountName",
                    META,
                    match service {
                        Service::Queue => "no accountName given",
                        Service::Blob => {
                            "accountName is required when using Azure Workload Identity"
                        }
                    },
                );
            }
            p.fail(
                ErrorKind::Unsupported,
                "pod identity azure-workload is not supported by ringscale; use a connection string",
            );
            return None;
        }
        Some(provider) => {
            p.fail(
                ErrorKind::Config,
                format!(
                    "pod identity {provider} not supported for azure storage {}s",
                    service.name()
                ),
            );
            return None;
        }
    }
    let Some(found) = found else {
        p.fail_param(
            ErrorKind::Config,
            "connection",
            order,
            match service {
                Service::Queue => "no connection setting given",
                Service::Blob => "connection string is required when not using pod identity",
            },
        );
        return None;
    };
    if found.unknown {
        // Offline, from a Secret that is not at hand: nothing to check.
        return None;
    }
    match parse_connection_string(found.text, service) {
        Ok(a) => Some(a),
        Err(e) => {
            p.invalid(&found, e.to_string());
            None
        }
    }
}

/// One storage account endpoint and credential: the shared HTTP client, the decoded key and a
/// bound on calls at once.
pub(crate) struct StorageSource {
    account: Account,
    http: Arc<HttpSource>,
    key: Option<ring::hmac::Key>,
    limit: Limit,
}

/// A queue or a container of a storage account, as a trigger reads it.
pub(crate) struct Resource {
    /// `None` when the trigger's connection could not be read (it does not parse then).
    source: Option<Arc<StorageSource>>,
    /// The resource's name, percent-encoded for the URL path.
    path: String,
}

impl Resource {
    pub fn new(sources: &Sources, account: Option<&Account>, name: &str) -> Resource {
        Resource {
            source: account.map(|a| StorageSource::get(sources, a)),
            path: percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
        }
    }

    /// GET the resource (`sub` appended to its path: `""`, `/messages`) with `query`.
    pub async fn get(
        &self,
        sub: &str,
        query: &[(&str, &str)],
    ) -> Result<StorageAnswer, (ErrorKind, String)> {
        let Some(source) = &self.source else {
            return Err((
                ErrorKind::Config,
                "the trigger has no usable connection".to_owned(),
            ));
        };
        source.get_path(&format!("{}{sub}", self.path), query).await
    }
}

/// A storage answer.
pub(crate) struct StorageAnswer {
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl StorageSource {
    pub fn get(sources: &Sources, account: &Account) -> Arc<StorageSource> {
        let http = shared_http::client(sources, TlsOptions::default());
        sources.inner.azure.get_or_insert(account, || {
            let key = match &account.credential {
                Credential::SharedKey { key, .. } => base64::engine::general_purpose::STANDARD
                    .decode(key.expose())
                    .ok()
                    .map(|k| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &k)),
                Credential::Sas(_) => None,
            };
            StorageSource {
                account: account.clone(),
                http,
                key,
                limit: sources.limit(),
            }
        })
    }

    /// GET `path` (below the service URL, already percent-encoded) with `query` (decoded
    /// pairs), signed; a non-success answer is an error naming Azure's error code.
    pub async fn get_path(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<StorageAnswer, (ErrorKind, String)> {
        let _permit = self.limit.acquire().await;
        let client = self
            .http
            .client()
            .map_err(|e| (ErrorKind::Source, e.to_string()))?;
        let mut url = url::Url::parse(&self.account.service_url)
            .and_then(|u| u.join(path))
            .map_err(|e| (ErrorKind::Config, format!("storage URL: {e}")))?;
        // Values percent-encoded (a space as %20, never `+`), empty ones left out.
        let mut q: Vec<String> = query
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    percent_encoding::utf8_percent_encode(v, QUERY_VALUE)
                )
            })
            .collect();
        if let Credential::Sas(sas) = &self.account.credential {
            q.push(sas.expose().to_owned());
        }
        url.set_query((!q.is_empty()).then(|| q.join("&")).as_deref());
        let date = jiff::Timestamp::now()
            .strftime("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let mut request = client
            .get(url.as_str())
            .header("x-ms-date", &date)
            .header("x-ms-version", API_VERSION);
        if let (Credential::SharedKey { account, .. }, Some(key)) =
            (&self.account.credential, &self.key)
        {
            let to_sign = string_to_sign(
                "GET",
                &[("x-ms-date", &date), ("x-ms-version", API_VERSION)],
                account,
                &url,
            );
            let signature = base64::engine::general_purpose::STANDARD
                .encode(ring::hmac::sign(key, to_sign.as_bytes()).as_ref());
            request = request.header("authorization", format!("SharedKey {account}:{signature}"));
        }
        let answer = shared_http::fetch(request)
            .await
            .map_err(|e| (ErrorKind::Source, e.to_string()))?;
        if answer.status.is_success() {
            return Ok(StorageAnswer {
                headers: answer.headers,
                body: answer.body,
            });
        }
        let code = answer
            .headers
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| xml_text(&answer.body, "Code"))
            .unwrap_or_default();
        let message = xml_text(&answer.body, "Message")
            .map(|m| m.lines().next().unwrap_or_default().to_owned())
            .unwrap_or_else(|| shared_http::excerpt(&answer.body));
        let kind = if answer.status.as_u16() == 403 || AUTH_ERRORS.contains(&code.as_str()) {
            ErrorKind::Config
        } else {
            ErrorKind::Source
        };
        Err((kind, format!("{} {code}: {message}", answer.status)))
    }
}

/// RFC 3986's unreserved characters stay as they are.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Storage error codes that mean the credential is wrong.
const AUTH_ERRORS: &[&str] = &[
    "AuthenticationFailed",
    "AuthorizationFailure",
    "AuthorizationPermissionMismatch",
    "InvalidAuthenticationInfo",
];

/// The Shared Key string to sign for a request without a body: the verb, eleven standard
/// headers (all empty here; `x-ms-date` stands for Date), the `x-ms-` headers sorted, and the
/// canonicalized resource — `/<account><escaped path>` and each query parameter, lowercased,
/// sorted, with its decoded values sorted and joined by `,`.
fn string_to_sign(
    verb: &str,
    ms_headers: &[(&str, &str)],
    account: &str,
    url: &url::Url,
) -> String {
    let mut out = String::from(verb);
    out.push_str(&"\n".repeat(12));
    let mut headers: Vec<(String, &str)> = ms_headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), *v))
        .collect();
    headers.sort();
    for (k, v) in headers {
        out.push_str(&format!("{k}:{v}\n"));
    }
    out.push('/');
    out.push_str(account);
    out.push_str(if url.path().is_empty() {
        "/"
    } else {
        url.path()
    });
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in url.query_pairs() {
        params
            .entry(k.to_ascii_lowercase())
            .or_default()
            .push(v.into_owned());
    }
    for (k, mut values) in params {
        values.sort();
        out.push_str(&format!("\n{k}:{}", values.join(",")));
    }
    out
}

/// The unescaped text of the first `<name>` element of an XML body.
pub(crate) fn xml_text(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&format!("</{name}>"))? + start;
    quick_xml::escape::unescape(&text[start..end])
        .ok()
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    #[test]
    fn connection_strings_are_read_as_the_go_sdk_reads_them() {
        let a = parse_connection_string(
            &format!("DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={KEY};EndpointSuffix=core.chinacloudapi.cn;"),
            Service::Queue,
        )
        .unwrap();
        assert_eq!(a.service_url, "https://acme.queue.core.chinacloudapi.cn/");
        assert!(
            matches!(a.credential, Credential::SharedKey { ref account, .. } if account == "acme")
        );
        let a = parse_connection_string(
            &format!("AccountName=acme;AccountKey={KEY};BlobEndpoint=http://127.0.0.1:10000/acme"),
            Service::Blob,
        )
        .unwrap();
        assert_eq!(a.service_url, "http://127.0.0.1:10000/acme/");
        let a = parse_connection_string(
            "QueueEndpoint=https://acme.queue.core.windows.net;SharedAccessSignature=sv=2023&sig=abc%3D",
            Service::Queue,
        )
        .unwrap();
        assert_eq!(
            a.credential,
            Credential::Sas(Secret::new("sv=2023&sig=abc%3D"))
        );
        assert!(
            parse_connection_string("AccountName=acme", Service::Queue).unwrap_err()
                == ConnectionStringError::NoCredential
        );
        assert!(
            parse_connection_string("AccountKey=x", Service::Blob)
                .unwrap_err()
                .to_string()
                .contains("AccountName or BlobEndpoint")
        );
        assert!(parse_connection_string("UseDevelopmentStorage=true", Service::Queue).is_err());
        assert!(parse_connection_string("garbage", Service::Queue).is_err());
        assert!(parse_connection_string("AccountName=a;;AccountKey=b", Service::Queue).is_err());
        assert!(
            parse_connection_string("AccountName=a;AccountKey=not base64!", Service::Queue)
                .is_err()
        );
    }

    #[test]
    fn the_string_to_sign_follows_the_shared_key_rules() {
        let url = url::Url::parse(
            "http://127.0.0.1:10000/acme/logs?restype=container&comp=list&prefix=a%2Fb%20c&marker=",
        )
        .unwrap();
        let s = string_to_sign(
            "GET",
            &[
                ("x-ms-version", "2023-11-03"),
                ("x-ms-date", "Mon, 07 Dec 2026 13:00:00 GMT"),
            ],
            "acme",
            &url,
        );
        assert_eq!(
            s,
            "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Mon, 07 Dec 2026 13:00:00 GMT\nx-ms-version:2023-11-03\n/acme/acme/logs\ncomp:list\nmarker:\nprefix:a/b c\nrestype:container"
        );
    }
}
