//! Shared HTTP clients: one per TLS configuration, pooling connections per host, with a bound on
//! the calls running at once per host.

use std::sync::Arc;
use std::time::Duration;

use crate::sources::{Limit, Shared, Sources};
use crate::tls::TlsOptions;

/// Identity of a shared HTTP client.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct HttpKey(TlsOptions);

/// The most a response body may hold; larger answers are an error, not an allocation.
pub(crate) const MAX_BODY: usize = 16 * 1024 * 1024;

/// A shared HTTP client.
pub(crate) struct HttpSource {
    client: Result<reqwest::Client, ClientError>,
    /// Calls allowed at once against one host.
    per_host: usize,
    /// The bound of each host (scheme, host, port) some trigger calls.
    hosts: Shared<String, Limit>,
}

/// Why no HTTP client could be built for a trigger.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// The TLS settings are unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// reqwest refused the settings (its reason).
    #[error("cannot create the HTTP client: {0}")]
    Build(String),
}

impl HttpSource {
    fn new(tls: &TlsOptions, per_host: usize) -> Self {
        let client = tls
            .client_config()
            .map_err(ClientError::from)
            .and_then(|config| {
                reqwest::Client::builder()
                    .tls_backend_preconfigured(config)
                    .pool_idle_timeout(Duration::from_secs(90))
                    .pool_max_idle_per_host(64)
                    .no_proxy()
                    .user_agent(concat!("ringscale/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| ClientError::Build(e.to_string()))
            });
        HttpSource {
            client,
            per_host,
            hosts: Shared::default(),
        }
    }

    /// The bound of calls to `url`'s host (its scheme, host and port): each host is a source of
    /// its own, so one that hangs holds its own slots and never another host's. Held by the
    /// triggers that call the host; gone with the last of them.
    pub fn limit_for(&self, url: &str) -> Arc<Limit> {
        let host = url::Url::parse(url).map_or_else(
            |_| String::new(),
            |u| {
                format!(
                    "{}://{}:{}",
                    u.scheme(),
                    u.host_str().unwrap_or_default(),
                    u.port_or_known_default().unwrap_or(0)
                )
            },
        );
        self.hosts
            .get_or_insert(&host, || Limit::new(self.per_host))
    }

    /// The client, or why it could not be built.
    pub fn client(&self) -> Result<&reqwest::Client, &ClientError> {
        self.client.as_ref()
    }
}

/// The shared client for `tls`.
pub(crate) fn client(sources: &Sources, tls: TlsOptions) -> Arc<HttpSource> {
    let key = HttpKey(tls);
    sources.inner.http.get_or_insert(&key, || {
        HttpSource::new(&key.0, sources.inner.config.per_source_concurrency)
    })
}

/// An answer: status and body (capped at [`MAX_BODY`]).
pub(crate) struct Answer {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

/// Why a request got no whole answer. The texts carry no URL credentials.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FetchError {
    /// No connection (the cause: refused, DNS, TLS).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// No answer in time.
    #[error("the request timed out")]
    Timeout,
    /// The answer is over [`MAX_BODY`].
    #[error("the response is larger than {} MiB", MAX_BODY / (1024 * 1024))]
    TooLarge,
    /// Sending or reading failed otherwise (reqwest's error and its causes).
    #[error("{0}")]
    Transport(String),
}

/// Sends `request` and reads the whole answer.
pub(crate) async fn fetch(request: reqwest::RequestBuilder) -> Result<Answer, FetchError> {
    let mut response = request.send().await.map_err(|e| describe(&e))?;
    let status = response.status();
    let headers = std::mem::take(response.headers_mut());
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// A reqwest error with its causes. URLs are built without user info; secrets in query
/// parameters are removed by the trigger's redactor.
fn describe(e: &reqwest::Error) -> FetchError {
    let text = crate::error::chain(e);
    if e.is_connect() {
        // reqwest says "error sending request for url (...)"; the cause is what matters.
        match std::error::Error::source(e) {
            Some(cause) => FetchError::Connect(crate::error::chain(cause)),
            None => FetchError::Transport(text),
        }
    } else if e.is_timeout() {
        FetchError::Timeout
    } else {
        FetchError::Transport(text)
    }
}

/// A short excerpt of a body for error messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}
