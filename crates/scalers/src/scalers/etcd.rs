//! `etcd`: the numeric value of one etcd key, as KEDA's `etcd_scaler.go` reads it (a v3 Range
//! of `watchKey`, parsed as a float; active above `activationValue`).
//!
//! One gRPC channel per endpoint is shared by every trigger with the same endpoints, TLS and
//! credentials; a call goes to the endpoint that answered last and moves on to the next one when
//! it cannot be reached, as etcd's Go client fails over. With `username` and `password` the
//! source authenticates once and sends the token with each call, authenticating again when etcd
//! says the token is no longer valid.
//!
//! Between polls the trigger watches the key, as KEDA's etcd scaler does (`Run`): each put or
//! delete pushes the new activity (a value that is not a number counts as 0), which makes the
//! operator poll the object at once. The watch asks for progress notifications and is opened
//! again (on the next endpoint) when none came for twice `watchProgressNotifyInterval`, when the
//! stream fails or when etcd cancels it, after 2 s doubling to 1 min.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pb::auth_client::AuthClient;
use pb::kv_client::KvClient;
use pb::watch_client::WatchClient;
use ringscale_proto::etcd as pb;
use tonic::transport::{Channel, Endpoint};

use crate::error::{ErrorKind, ParamSource};
use crate::metric::{ExternalMetric, MetricSpec, Poll, metric_name, normalize};
use crate::params::{AUTH, META, Params};
use crate::redact::Secret;
use crate::sources::{Limit, Sources};
use crate::tls::TlsOptions;
use crate::trigger::Common;
use futures_util::StreamExt as _;
use tokio::sync::mpsc;

/// Where KEDA reads `username` and `password`: the authentication, then the environment.
const AUTH_OR_ENV: &[ParamSource] = &[ParamSource::Auth, ParamSource::Env];

/// An `etcd` trigger.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    endpoints: Vec<String>,
    watch_key: String,
    value: f64,
    activation: f64,
    /// `watchProgressNotifyInterval`, seconds.
    progress_interval: u64,
    tls: Option<TlsOptions>,
    credentials: Option<(String, Secret)>,
}

pub(crate) fn parse(p: &mut Params<'_>) -> Config {
    let endpoints: Vec<String> = p
        .list(&["endpoints"], META)
        .into_iter()
        .filter(|e| !e.is_empty())
        .collect();
    if endpoints.is_empty() && p.lookup(&["endpoints"], META).is_none() {
        p.req_str(&["endpoints"], META);
    } else if endpoints.is_empty() {
        p.fail_param(ErrorKind::Config, "endpoints", META, "lists no endpoint");
    }
    let watch_key = p.req_str(&["watchKey"], META);
    let value = p.req_f64("value", META);
    let activation = p.f64_or("activationValue", META, 0.0);
    let progress_interval = p.i64_or("watchProgressNotifyInterval", META, 600);
    if progress_interval <= 0 {
        p.fail_param(
            ErrorKind::Config,
            "watchProgressNotifyInterval",
            META,
            "must be greater than 0",
        );
    }
    let username = p.opt_str(&["username"], AUTH_OR_ENV);
    let password = p.opt_str(&["password"], AUTH_OR_ENV).map(Secret::new);
    let credentials = match (username, password) {
        (Some(u), Some(pw)) => Some((u, pw)),
        (None, None) => None,
        (None, Some(_)) => {
            p.fail(ErrorKind::Config, "username must be provided with password");
            None
        }
        (Some(_), None) => {
            p.fail(ErrorKind::Config, "password must be provided with username");
            None
        }
    };
    let enable = p.choice("tls", AUTH, &["enable", "disable"], "disable");
    let tls = (enable == "enable").then(|| crate::tls::from_auth(p, false));
    for endpoint in &endpoints {
        if let Err(e) = endpoint_url(endpoint, tls.is_some()) {
            p.fail_param(ErrorKind::Config, "endpoints", META, e.to_string());
        }
    }
    Config {
        endpoints,
        watch_key,
        value,
        activation,
        progress_interval: u64::try_from(progress_interval).unwrap_or(600),
        tls,
        credentials,
    }
}

/// An endpoint as a URL: `host:port` gets the scheme the TLS setting implies; `http://` and
/// `https://` are kept (etcd's Go client accepts all three).
/// An endpoint that is not `host:port`, `http://host:port` or `https://host:port`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an etcd endpoint (host:port, http://host:port or https://host:port)")]
struct BadEndpoint(String);

fn endpoint_url(endpoint: &str, tls: bool) -> Result<String, BadEndpoint> {
    let url = if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("{}://{endpoint}", if tls { "https" } else { "http" })
    };
    match url.parse::<tonic::transport::Uri>() {
        Ok(uri) if uri.host().is_some() && matches!(uri.scheme_str(), Some("http" | "https")) => {
            Ok(url)
        }
        _ => Err(BadEndpoint(endpoint.to_owned())),
    }
}

impl Config {
    pub fn metric_specs(&self, common: &Common) -> Vec<MetricSpec> {
        vec![MetricSpec::External(ExternalMetric::new(
            metric_name(
                common.index,
                &normalize(&format!("etcd-{}", self.watch_key)),
            ),
            common.metric_type.clone(),
            self.value,
        ))]
    }
}

/// Identity of a shared etcd cluster connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct EtcdKey {
    endpoints: Vec<String>,
    tls: Option<TlsOptions>,
    credentials: Option<(String, Secret)>,
}

/// Channels to the endpoints of one etcd cluster, and the auth token they share.
pub(crate) struct EtcdSource {
    /// One channel per endpoint, or why they could not be made (reported on every poll).
    channels: Result<Vec<Channel>, ChannelError>,
    /// The endpoint that answered last.
    current: AtomicUsize,
    credentials: Option<(String, Secret)>,
    token: tokio::sync::Mutex<Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>>,
    limit: Limit,
}

/// Why no gRPC channel could be made for an endpoint.
#[derive(Debug, thiserror::Error)]
enum ChannelError {
    /// Not an etcd endpoint.
    #[error(transparent)]
    Endpoint(#[from] BadEndpoint),
    /// tonic refused the URI (its reason).
    #[error("invalid endpoint: {0}")]
    Invalid(String),
    /// The TLS settings are unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

impl EtcdSource {
    fn new(key: &EtcdKey, limit: Limit) -> Self {
        let channels = key
            .endpoints
            .iter()
            .map(|e| {
                let url = endpoint_url(e, key.tls.is_some())?;
                // With TLS the connector secures the connection (`tls::grpc_channel`); tonic
                // is given the `http` form of the URL.
                let url = match url.strip_prefix("https://") {
                    Some(rest) if key.tls.is_some() => format!("http://{rest}"),
                    _ => url,
                };
                let endpoint = Endpoint::from_shared(url)
                    .map_err(|e| ChannelError::Invalid(e.to_string()))?
                    .connect_timeout(Duration::from_secs(5))
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .keep_alive_while_idle(true);
                match &key.tls {
                    None => Ok(endpoint.connect_lazy()),
                    Some(tls) => Ok(crate::tls::grpc_channel(endpoint, tls)?),
                }
            })
            .collect();
        EtcdSource {
            channels,
            current: AtomicUsize::new(0),
            credentials: key.credentials.clone(),
            token: tokio::sync::Mutex::new(None),
            limit,
        }
    }
}

impl EtcdSource {
    /// The auth token to send, when the trigger has credentials: the shared one, or a new one
    /// when `renew` or none was issued yet.
    async fn token(
        &self,
        channel: &Channel,
        renew: bool,
    ) -> Result<Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>, tonic::Status> {
        let Some((user, password)) = &self.credentials else {
            return Ok(None);
        };
        let mut token = self.token.lock().await;
        if renew || token.is_none() {
            let issued = AuthClient::new(channel.clone())
                .authenticate(pb::AuthenticateRequest {
                    name: user.clone(),
                    password: password.expose().to_owned(),
                })
                .await?
                .into_inner()
                .token;
            *token = Some(issued.parse().map_err(|_| {
                tonic::Status::internal("etcd issued an auth token that is not ASCII")
            })?);
        }
        Ok(token.clone())
    }
}

/// A built `etcd` trigger.
pub(crate) struct EtcdScaler {
    config: Config,
    source: Arc<EtcdSource>,
}

impl EtcdScaler {
    pub fn new(config: Config, sources: &Sources) -> Self {
        let key = EtcdKey {
            endpoints: config.endpoints.clone(),
            tls: config.tls.clone(),
            credentials: config.credentials.clone(),
        };
        let source = sources
            .inner
            .etcd
            .get_or_insert(&key, || EtcdSource::new(&key, sources.limit()));
        EtcdScaler { config, source }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub async fn poll(&self, common: &Common, metric: &str) -> Result<Poll, crate::ScalerError> {
        let _permit = self.source.limit.acquire().await;
        let value = self.read(common).await?;
        Ok(Poll::one(
            common.name(metric),
            value,
            value > self.config.activation,
        ))
    }

    /// The key's value, from the first endpoint that answers, starting with the last one that
    /// did.
    async fn read(&self, common: &Common) -> Result<f64, crate::ScalerError> {
        let channels = match &self.source.channels {
            Ok(c) if !c.is_empty() => c,
            Ok(_) => return Err(common.error(ErrorKind::Config, "no etcd endpoint")),
            Err(e) => return Err(common.error(ErrorKind::Config, e.to_string())),
        };
        let start = self.source.current.load(Ordering::Relaxed);
        let mut unreachable = Vec::new();
        for k in 0..channels.len() {
            let i = (start + k) % channels.len();
            match self.range(common, &channels[i]).await {
                Ok(response) => {
                    self.source.current.store(i, Ordering::Relaxed);
                    return self.value_of(common, &response);
                }
                // Only a server that could not be reached is skipped; an answer is final.
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    unreachable.push(format!(
                        "{}: {}",
                        self.config.endpoints[i],
                        describe(&status)
                    ));
                }
                Err(status) => return Err(status_error(common, &status)),
            }
        }
        Err(common.source_error(format!(
            "no etcd endpoint could be reached: {}",
            unreachable.join("; ")
        )))
    }

    /// One Range of the key on `channel`, authenticated when the trigger has credentials (once
    /// more with a new token when etcd refuses the one it had).
    async fn range(
        &self,
        common: &Common,
        channel: &Channel,
    ) -> Result<pb::RangeResponse, tonic::Status> {
        for attempt in 0..2 {
            let token = self.source.token(channel, attempt > 0).await?;
            let mut request = tonic::Request::new(pb::RangeRequest {
                key: self.config.watch_key.as_bytes().to_vec(),
                range_end: Vec::new(),
                limit: 1,
            });
            request.set_timeout(common.timeout);
            if let Some(token) = token {
                request.metadata_mut().insert("token", token);
            }
            match KvClient::new(channel.clone()).range(request).await {
                Err(status) if attempt == 0 && token_refused(&status) => {}
                other => return other.map(tonic::Response::into_inner),
            }
        }
        Err(tonic::Status::unauthenticated(
            "etcd refused a freshly issued auth token",
        ))
    }

    fn value_of(
        &self,
        common: &Common,
        response: &pb::RangeResponse,
    ) -> Result<f64, crate::ScalerError> {
        let Some(kv) = response.kvs.first() else {
            return Err(
                common.source_error(format!("watchKey {} doesn't exist", self.config.watch_key))
            );
        };
        let text = String::from_utf8_lossy(&kv.value);
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(common.source_error(format!(
                "the value of watchKey {} is not a number: {:?}",
                self.config.watch_key,
                text.chars().take(64).collect::<String>()
            ))),
        }
    }
}

impl EtcdScaler {
    /// KEDA's `Run`: the activity each change of the key implies, until the receiver is
    /// dropped. Errors are sent too (the stream is then opened again after a backoff).
    pub fn watch_activity(
        &self,
        common: &Common,
    ) -> mpsc::Receiver<Result<bool, crate::ScalerError>> {
        let (tx, rx) = mpsc::channel(16);
        let source = Arc::clone(&self.source);
        let config = self.config.clone();
        let common = common.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(2);
            loop {
                let created = match watch_once(&source, &config, &common, &tx).await {
                    WatchEnd::Closed => return,
                    WatchEnd::Failed { created, error } => {
                        if tx.send(Err(error)).await.is_err() {
                            return;
                        }
                        created
                    }
                };
                if created {
                    backoff = Duration::from_secs(2);
                }
                tokio::select! {
                    () = tx.closed() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        });
        rx
    }
}

/// How one watch ended.
enum WatchEnd {
    /// The receiver is gone.
    Closed,
    /// The watch failed or went quiet; `created` when etcd had accepted it first.
    Failed {
        created: bool,
        error: crate::ScalerError,
    },
}

/// One watch of the key on the endpoint that answered last (the next one when it cannot be
/// reached), sending the activity of every event.
async fn watch_once(
    source: &EtcdSource,
    config: &Config,
    common: &Common,
    tx: &mpsc::Sender<Result<bool, crate::ScalerError>>,
) -> WatchEnd {
    let fail = |created: bool, error: crate::ScalerError| WatchEnd::Failed { created, error };
    let channels = match &source.channels {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => return fail(false, common.error(ErrorKind::Config, "no etcd endpoint")),
        Err(e) => return fail(false, common.error(ErrorKind::Config, e.to_string())),
    };
    let i = source.current.load(Ordering::Relaxed) % channels.len();
    let channel = &channels[i];
    let move_on = || {
        source
            .current
            .store((i + 1) % channels.len(), Ordering::Relaxed)
    };
    let token = match source.token(channel, false).await {
        Ok(t) => t,
        Err(status) => {
            if status.code() == tonic::Code::Unavailable {
                move_on();
            }
            return fail(false, status_error(common, &status));
        }
    };
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: config.watch_key.as_bytes().to_vec(),
                range_end: Vec::new(),
                start_revision: 0,
                progress_notify: true,
            },
        )),
    };
    // The request stream stays open (a closed one ends the watch on etcd's side).
    let requests = futures_util::stream::iter([create]).chain(futures_util::stream::pending());
    let mut request = tonic::Request::new(requests);
    // clientv3.WithRequireLeader: etcd ends the watch when its member loses the leader.
    request.metadata_mut().insert(
        "hasleader",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    if let Some(token) = token {
        request.metadata_mut().insert("token", token);
    }
    let mut stream = match WatchClient::new(channel.clone()).watch(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            if status.code() == tonic::Code::Unavailable {
                move_on();
            } else if token_refused(&status) {
                let _ = source.token(channel, true).await;
            }
            return fail(false, status_error(common, &status));
        }
    };
    let quiet = Duration::from_secs(config.progress_interval.saturating_mul(2));
    let mut created = false;
    loop {
        let message = tokio::select! {
            () = tx.closed() => return WatchEnd::Closed,
            m = tokio::time::timeout(quiet, stream.message()) => m,
        };
        let response = match message {
            Err(_) => {
                move_on();
                return fail(
                    created,
                    common.source_error(format!(
                        "no watch progress notification from {} in {}s; watching again",
                        config.endpoints[i],
                        quiet.as_secs()
                    )),
                );
            }
            Ok(Err(status)) => {
                if status.code() == tonic::Code::Unavailable {
                    move_on();
                }
                return fail(created, status_error(common, &status));
            }
            Ok(Ok(None)) => {
                return fail(
                    created,
                    common.source_error("etcd ended the watch stream; watching again"),
                );
            }
            Ok(Ok(Some(r))) => r,
        };
        created |= response.created;
        if response.canceled {
            return fail(
                created,
                common.source_error(format!(
                    "etcd canceled the watch: {}",
                    response.cancel_reason
                )),
            );
        }
        for event in response.events {
            let text = event
                .kv
                .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
                .unwrap_or_default();
            // KEDA: a value that is not a number is treated as 0 (so is a deleted key's).
            let value = text
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .unwrap_or(0.0);
            if tx.send(Ok(value > config.activation)).await.is_err() {
                return WatchEnd::Closed;
            }
        }
    }
}

/// Whether etcd refused the auth token (expired, or the server restarted): worth one new token.
fn token_refused(status: &tonic::Status) -> bool {
    status.message().contains("invalid auth token")
}

fn status_error(common: &Common, status: &tonic::Status) -> crate::ScalerError {
    // Refused credentials are the trigger's configuration, not a passing fault of the source.
    let kind = match status.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => ErrorKind::Config,
        // etcd's ErrAuthFailed and ErrUserEmpty (authentication is on, no user given).
        tonic::Code::InvalidArgument
            if status.message().contains("authentication failed")
                || status.message().contains("user name is empty") =>
        {
            ErrorKind::Config
        }
        tonic::Code::DeadlineExceeded => return common.timed_out(),
        _ => ErrorKind::Source,
    };
    common.error(
        kind,
        format!("etcd answered {:?}: {}", status.code(), describe(status)),
    )
}

/// The status message with its causes (a transport error says only "transport error"; the
/// TLS alert or refused connection behind it is in its sources).
fn describe(status: &tonic::Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let line = e.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = e.source();
    }
    text
}
