//! `redis`, `redis-cluster`, `redis-sentinel` (list length) and the `*-streams` variants
//! (stream length, pending entries, consumer-group lag).
//!
//! The list length follows KEDA's script: the key's type picks ZCARD, SCARD, HLEN or LLEN (LLEN
//! for a missing key). Instead of running that script on every poll, each trigger remembers the
//! key's type and sends the one matching command; a `WRONGTYPE` answer makes it look the type up
//! again. The result is the same, at one round trip and no server-side script per poll.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisError, Value};
use tokio::sync::Mutex;

use crate::error::{ErrorKind, ParamSource};
use crate::metric::{ExternalMetric, MetricSpec, Poll, metric_name, normalize};
use crate::params::{AUTH, META, Params};
use crate::redact::Secret;
use crate::sources::{Limit, Sources};
use crate::tls::TlsOptions;
use crate::trigger::Common;

use ParamSource::{Auth, Env, Metadata};

/// Topology of the Redis deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Topology {
    Standalone,
    Cluster,
    Sentinel,
}

/// Identity of a shared Redis source.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RedisKey {
    topology: Topology,
    addresses: Vec<String>,
    username: Option<String>,
    password: Option<Secret>,
    sentinel_username: Option<String>,
    sentinel_password: Option<Secret>,
    sentinel_master: Option<String>,
    database: i64,
    tls: Option<TlsOptions>,
    /// Connect and response timeout of every call (the trigger's timeout).
    timeout: std::time::Duration,
}

/// Connection settings shared by the list and stream triggers.
#[derive(Clone, Debug)]
pub(crate) struct Connection {
    key: RedisKey,
}

fn parse_connection(p: &mut Params<'_>, topology: Topology) -> Connection {
    // Addresses: `address`/`addresses`, or `host(s)` with `port(s)`.
    let mut addresses = p.list(&["address", "addresses"], &[Metadata, Auth, Env]);
    addresses.retain(|a| !a.is_empty());
    let hosts = p.list(&["host", "hosts"], &[Metadata, Env, Auth]);
    let ports = p.list(&["port", "ports"], &[Metadata, Env, Auth]);
    if !hosts.is_empty() && !ports.is_empty() {
        if hosts.len() != ports.len() {
            p.fail_param(
                ErrorKind::Config,
                "hosts",
                META,
                "not enough hosts or ports given: the number of hosts must equal the number of ports",
            );
        } else {
            for (h, port) in hosts.iter().zip(&ports) {
                addresses.push(join_host_port(h, port));
            }
        }
    }
    let unknown = p.is_unknown(&["address", "addresses"], &[Metadata, Auth, Env])
        || p.is_unknown(&["host", "hosts"], &[Metadata, Env, Auth])
        || p.is_unknown(&["port", "ports"], &[Metadata, Env, Auth]);
    if !unknown && (addresses.is_empty() || addresses[0].is_empty()) {
        p.fail_param(
            ErrorKind::Config,
            if topology == Topology::Standalone { "address" } else { "addresses" },
            META,
            "no addresses or hosts given: set address (host:port), addresses (comma-separated host:port), or host and port",
        );
    }
    for a in &addresses {
        if split_host_port(a).is_none() {
            p.fail_param(
                ErrorKind::Config,
                if topology == Topology::Standalone {
                    "address"
                } else {
                    "addresses"
                },
                META,
                format!("{a:?} is not host:port"),
            );
        }
    }
    let username = p.opt_str(&["username"], &[Metadata, Env, Auth]);
    let password = p
        .opt_str(&["password"], &[Metadata, Env, Auth])
        .map(Secret::new);
    let sentinel_username = p.opt_str(&["sentinelUsername"], &[Metadata, Auth, Env]);
    let sentinel_password = p
        .opt_str(&["sentinelPassword"], &[Metadata, Auth, Env])
        .map(Secret::new);
    let sentinel_master = p.opt_str(&["sentinelMaster"], &[Metadata, Auth, Env]);
    if topology == Topology::Sentinel
        && sentinel_master.is_none()
        && !p.is_unknown(&["sentinelMaster"], &[Metadata, Auth, Env])
    {
        p.fail_param(
            ErrorKind::Config,
            "sentinelMaster",
            META,
            "missing required parameter: the name of the primary the sentinels monitor",
        );
    }
    let database = p.opt_i64("databaseIndex", META).unwrap_or(0);
    if database < 0 {
        p.fail_param(
            ErrorKind::Config,
            "databaseIndex",
            META,
            "must not be negative",
        );
    }

    // TLS: `enableTLS` in metadata or `tls: enable|disable` in the authentication, not both.
    let meta_tls = p.lookup(&["enableTLS"], META);
    let auth_tls = p.lookup(&["tls"], AUTH);
    let mut enable_tls = false;
    match (&meta_tls, &auth_tls) {
        (Some(_), Some(_)) => p.fail_param(
            ErrorKind::Config,
            "tls",
            AUTH,
            "unable to set tls in both the trigger metadata (enableTLS) and the authentication (tls)",
        ),
        (Some(found), None) => match crate::params::parse_go_bool(found.text) {
            Some(v) => enable_tls = v,
            None => p.invalid(found, format!("{:?} is not a boolean (true or false)", found.text)),
        },
        (None, Some(found)) => match found.text {
            "enable" => enable_tls = true,
            "disable" => enable_tls = false,
            other => p.invalid(found, format!("{other:?} must be enable or disable")),
        },
        (None, None) => {}
    }
    let insecure = p.bool_or("unsafeSsl", META, false);
    let ca = p.opt_str(&["ca"], AUTH);
    let cert = p.opt_str(&["Cert", "cert"], AUTH);
    let key = p.opt_str(&["key"], AUTH).map(Secret::new);
    if p.lookup(&["keyPassword"], AUTH).is_some() {
        p.fail_param(
            ErrorKind::Unsupported,
            "keyPassword",
            AUTH,
            "encrypted private keys are not supported; provide an unencrypted key",
        );
    }
    let tls = enable_tls.then_some(TlsOptions {
        ca,
        cert,
        key,
        insecure,
    });
    if let Some(t) = &tls
        && let Err(e) = t.client_config()
    {
        p.fail_param(ErrorKind::Config, "tls", AUTH, e.to_string());
    }
    Connection {
        key: RedisKey {
            topology,
            addresses,
            username,
            password,
            sentinel_username,
            sentinel_password,
            sentinel_master,
            database,
            tls,
            timeout: p.input.default_timeout,
        },
    }
}

fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn split_host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_owned(), port.parse().ok()?))
}

/// A `redis`, `redis-cluster` or `redis-sentinel` trigger.
#[derive(Clone, Debug)]
pub(crate) struct ListConfig {
    connection: Connection,
    list_name: String,
    list_length: i64,
    activation_list_length: i64,
}

pub(crate) fn parse_list(p: &mut Params<'_>, topology: Topology) -> ListConfig {
    let list_length = p.i64_or("listLength", META, 5);
    let activation_list_length = p.i64_or("activationListLength", META, 0);
    let list_name = p.req_str(&["listName"], META);
    let connection = parse_connection(p, topology);
    ListConfig {
        connection,
        list_name,
        list_length,
        activation_list_length,
    }
}

impl ListConfig {
    pub fn metric_specs(&self, common: &Common) -> Vec<MetricSpec> {
        vec![MetricSpec::External(ExternalMetric::new(
            metric_name(
                common.index,
                &normalize(&format!("redis-{}", self.list_name)),
            ),
            common.metric_type.clone(),
            self.list_length as f64,
        ))]
    }
}

/// How a streams trigger measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamMode {
    /// XPENDING count of a consumer group.
    Pending,
    /// XLEN.
    Length,
    /// Consumer-group lag from XINFO GROUPS (Redis 7+).
    Lag,
}

/// A `redis-streams` (or cluster/sentinel) trigger.
#[derive(Clone, Debug)]
pub(crate) struct StreamsConfig {
    connection: Connection,
    stream: String,
    group: Option<String>,
    mode: StreamMode,
    target: i64,
    activation_lag_count: i64,
}

pub(crate) fn parse_streams(p: &mut Params<'_>, topology: Topology) -> StreamsConfig {
    let pending = p.i64_or("pendingEntriesCount", META, 5);
    let length = p.i64_or("streamLength", META, 5);
    let lag = p.i64_or("lagCount", META, 0);
    let stream = p.req_str(&["stream"], META);
    let group = p.opt_str(&["consumerGroup"], META);
    let activation_lag_count = p.i64_or("activationLagCount", META, 0);
    let connection = parse_connection(p, topology);
    let (mode, target) = match &group {
        Some(_) if lag != 0 => (StreamMode::Lag, lag),
        Some(_) => (StreamMode::Pending, pending),
        None => (StreamMode::Length, length),
    };
    StreamsConfig {
        connection,
        stream,
        group,
        mode,
        target,
        activation_lag_count,
    }
}

impl StreamsConfig {
    pub fn metric_specs(&self, common: &Common) -> Vec<MetricSpec> {
        vec![MetricSpec::External(ExternalMetric::new(
            metric_name(
                common.index,
                &normalize(&format!("redis-streams-{}", self.stream)),
            ),
            common.metric_type.clone(),
            self.target as f64,
        ))]
    }
}

/// A live connection to Redis: one multiplexed connection (standalone, or the sentinels'
/// current primary) or a cluster connection routing by key.
#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn query<T: redis::FromRedisValue>(&mut self, cmd: &Cmd) -> Result<T, RedisError> {
        let value = match self {
            Conn::Single(c) => c.req_packed_command(cmd).await?,
            Conn::Cluster(c) => c.req_packed_command(cmd).await?,
        };
        redis::from_redis_value(value.extract_error()?).map_err(RedisError::from)
    }
}

/// One shared Redis deployment.
pub(crate) struct RedisSource {
    key: RedisKey,
    /// The live connection; read on every poll, so a plain lock held only to clone it.
    conn: std::sync::RwLock<Option<Conn>>,
    /// Serialises (re)connecting.
    connecting: Mutex<()>,
    limit: Limit,
    /// Major version of the server, once known (0 = unknown).
    major_version: AtomicU8,
}

impl RedisSource {
    fn new(key: RedisKey, limit: Limit) -> Self {
        RedisSource {
            key,
            conn: std::sync::RwLock::new(None),
            connecting: Mutex::new(()),
            limit,
            major_version: AtomicU8::new(0),
        }
    }

    fn current(&self) -> Option<Conn> {
        self.conn
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, conn: Option<Conn>) {
        *self
            .conn
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = conn;
    }

    async fn connection(&self) -> Result<Conn, RedisError> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        // Connecting is rare and its future large: boxed, it does not bloat every poll.
        let conn = Box::pin(self.connect()).await?;
        self.set(Some(conn.clone()));
        Ok(conn)
    }

    /// Forgets the connection after a connection-level failure, so the next call reconnects
    /// (and, behind sentinels, finds the current primary).
    async fn reset_if_broken(&self, err: &RedisError) {
        if err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_timeout()
            || matches!(
                err.kind(),
                redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
            )
        {
            self.set(None);
        }
    }

    async fn connect(&self) -> Result<Conn, RedisError> {
        let k = &self.key;
        // The client bounds connecting and every request by the trigger's timeout, so polls need
        // no timer of their own.
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(k.timeout))
            .set_response_timeout(Some(k.timeout));
        let tls_mode = k.tls.as_ref().map(|t| {
            if t.insecure {
                redis::TlsMode::Insecure
            } else {
                redis::TlsMode::Secure
            }
        });
        let certs = k.tls.as_ref().map(tls_certificates);
        match k.topology {
            Topology::Standalone => {
                let address = k.addresses.first().map(String::as_str).unwrap_or_default();
                let info = connection_info(address, k, tls_mode)?;
                let client = match certs {
                    Some(certs) => redis::Client::build_with_tls(info, certs)?,
                    None => redis::Client::open(info)?,
                };
                Ok(Conn::Single(
                    client.get_multiplexed_async_connection().await?,
                ))
            }
            Topology::Cluster => {
                let nodes = k
                    .addresses
                    .iter()
                    .map(|a| connection_info(a, k, tls_mode))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut builder = redis::cluster::ClusterClientBuilder::new(nodes)
                    .connection_timeout(k.timeout)
                    .response_timeout(k.timeout);
                if let Some(u) = &k.username {
                    builder = builder.username(u);
                }
                if let Some(p) = &k.password {
                    builder = builder.password(p.expose());
                }
                if let Some(mode) = tls_mode {
                    builder = builder.tls(mode);
                }
                if let Some(certs) = certs {
                    builder = builder.certs(certs);
                }
                let client = builder.build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
            Topology::Sentinel => {
                let sentinels = k
                    .addresses
                    .iter()
                    .map(|a| connection_info(a, k, tls_mode).map(|i| i.addr().clone()))
                    .collect::<Result<Vec<_>, _>>()?;
                let master = k.sentinel_master.clone().unwrap_or_default();
                let mut builder = redis::sentinel::SentinelClientBuilder::new(
                    sentinels,
                    master,
                    redis::sentinel::SentinelServerType::Master,
                )?
                .set_client_to_redis_db(k.database);
                if let Some(u) = &k.username {
                    builder = builder.set_client_to_redis_username(u);
                }
                if let Some(p) = &k.password {
                    builder = builder.set_client_to_redis_password(p.expose());
                }
                if let Some(u) = &k.sentinel_username {
                    builder = builder.set_client_to_sentinel_username(u);
                }
                if let Some(p) = &k.sentinel_password {
                    builder = builder.set_client_to_sentinel_password(p.expose());
                }
                if let Some(mode) = tls_mode {
                    builder = builder
                        .set_client_to_redis_tls_mode(mode)
                        .set_client_to_sentinel_tls_mode(mode);
                }
                if let Some(certs) = certs {
                    builder = builder
                        .set_client_to_redis_certificates(certs.clone())
                        .set_client_to_sentinel_certificates(certs);
                }
                let mut client = builder.build()?;
                Ok(Conn::Single(
                    client.get_async_connection_with_config(&config).await?,
                ))
            }
        }
    }
}

fn tls_certificates(t: &TlsOptions) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: match (&t.cert, &t.key) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: cert.as_bytes().to_vec(),
                client_key: key.expose().as_bytes().to_vec(),
            }),
            _ => None,
        },
        root_cert: t.ca.as_ref().map(|ca| ca.as_bytes().to_vec()),
    }
}

fn connection_info(
    address: &str,
    k: &RedisKey,
    tls: Option<redis::TlsMode>,
) -> Result<redis::ConnectionInfo, RedisError> {
    let (host, port) = split_host_port(address).ok_or_else(|| {
        RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "address is not host:port",
        ))
    })?;
    let addr = match tls {
        None => redis::ConnectionAddr::Tcp(host, port),
        Some(mode) => redis::ConnectionAddr::TcpTls {
            host,
            port,
            insecure: mode == redis::TlsMode::Insecure,
            tls_params: None,
        },
    };
    let mut settings = redis::RedisConnectionInfo::default().set_db(k.database);
    if let Some(u) = &k.username {
        settings = settings.set_username(u);
    }
    if let Some(p) = &k.password {
        settings = settings.set_password(p.expose());
    }
    Ok(addr.into_connection_info()?.set_redis_settings(settings))
}

use redis::IntoConnectionInfo as _;

/// Remembered type of a list key.
const TYPE_UNKNOWN: u8 = 0;
const TYPE_LIST: u8 = 1;
const TYPE_SET: u8 = 2;
const TYPE_ZSET: u8 = 3;
const TYPE_HASH: u8 = 4;

/// A built `redis` list trigger.
pub(crate) struct ListScaler {
    config: ListConfig,
    source: Arc<RedisSource>,
    key_type: AtomicU8,
}

impl ListScaler {
    pub fn new(config: ListConfig, sources: &Sources) -> Self {
        let source = sources
            .inner
            .redis
            .get_or_insert(&config.connection.key, || {
                RedisSource::new(config.connection.key.clone(), sources.limit())
            });
        ListScaler {
            config,
            source,
            key_type: AtomicU8::new(TYPE_UNKNOWN),
        }
    }

    pub fn config(&self) -> &ListConfig {
        &self.config
    }

    pub async fn poll(&self, common: &Common, metric: &str) -> Result<Poll, crate::ScalerError> {
        let Some(_permit) = self.source.limit.acquire_within(common.timeout).await else {
            return Err(common.timed_out());
        };
        let length = match self.length().await {
            Ok(n) => n,
            Err(e) if e.is_timeout() => {
                self.source.reset_if_broken(&e).await;
                return Err(common.timed_out());
            }
            Err(e) => {
                self.source.reset_if_broken(&e).await;
                return Err(
                    common.source_error(format!("list length of {:?}: {e}", self.config.list_name))
                );
            }
        };
        Ok(Poll::one(
            common.name(metric),
            length as f64,
            length > self.config.activation_list_length,
        ))
    }

    async fn length(&self) -> Result<i64, RedisError> {
        let mut conn = self.source.connection().await?;
        let name = &self.config.list_name;
        for _ in 0..3 {
            let known = self.key_type.load(Ordering::Relaxed);
            let known = if known == TYPE_UNKNOWN {
                let t: String = conn.query(redis::cmd("TYPE").arg(name)).await?;
                let code = match t.as_str() {
                    "list" | "none" => TYPE_LIST,
                    "set" => TYPE_SET,
                    "zset" => TYPE_ZSET,
                    "hash" => TYPE_HASH,
                    other => {
                        return Err(RedisError::from((
                            redis::ErrorKind::UnexpectedReturnType,
                            "the key holds a value that is not a list, set, sorted set or hash",
                            format!("type {other}"),
                        )));
                    }
                };
                self.key_type.store(code, Ordering::Relaxed);
                code
            } else {
                known
            };
            let command = match known {
                TYPE_SET => "SCARD",
                TYPE_ZSET => "ZCARD",
                TYPE_HASH => "HLEN",
                _ => "LLEN",
            };
            match conn.query::<i64>(redis::cmd(command).arg(name)).await {
                Ok(n) => return Ok(n),
                Err(e) if is_wrong_type(&e) => {
                    self.key_type.store(TYPE_UNKNOWN, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        Err(RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "the key kept changing type while being measured",
        )))
    }
}

fn is_wrong_type(e: &RedisError) -> bool {
    e.code() == Some("WRONGTYPE")
}

/// A built streams trigger.
pub(crate) struct StreamsScaler {
    config: StreamsConfig,
    source: Arc<RedisSource>,
}

impl StreamsScaler {
    pub fn new(config: StreamsConfig, sources: &Sources) -> Self {
        let source = sources
            .inner
            .redis
            .get_or_insert(&config.connection.key, || {
                RedisSource::new(config.connection.key.clone(), sources.limit())
            });
        StreamsScaler { config, source }
    }

    pub fn config(&self) -> &StreamsConfig {
        &self.config
    }

    pub async fn poll(&self, common: &Common, metric: &str) -> Result<Poll, crate::ScalerError> {
        let Some(_permit) = self.source.limit.acquire_within(common.timeout).await else {
            return Err(common.timed_out());
        };
        match self.count(common).await {
            Ok(n) => Ok(Poll::one(
                common.name(metric),
                n as f64,
                n > self.config.activation_lag_count,
            )),
            Err(Failure::Redis(e)) => {
                self.source.reset_if_broken(&e).await;
                if e.is_timeout() {
                    return Err(common.timed_out());
                }
                Err(common.source_error(format!("stream {:?}: {e}", self.config.stream)))
            }
            Err(Failure::Other(e)) => Err(e),
        }
    }

    async fn count(&self, common: &Common) -> Result<i64, Failure> {
        let mut conn = self.source.connection().await?;
        let stream = &self.config.stream;
        let group = self.config.group.as_deref().unwrap_or_default();
        match self.config.mode {
            StreamMode::Length => Ok(conn.query(redis::cmd("XLEN").arg(stream)).await?),
            StreamMode::Pending => {
                let summary: Value = conn
                    .query(redis::cmd("XPENDING").arg(stream).arg(group))
                    .await?;
                match summary {
                    Value::Array(items) => match items.first() {
                        Some(Value::Int(n)) => Ok(*n),
                        _ => Err(Failure::Other(
                            common.source_error("XPENDING returned no count"),
                        )),
                    },
                    other => Err(Failure::Other(common.source_error(format!(
                        "XPENDING returned an unexpected reply: {other:?}"
                    )))),
                }
            }
            StreamMode::Lag => {
                self.require_redis_7(&mut conn, common).await?;
                let groups: Result<Vec<Value>, RedisError> = conn
                    .query(redis::cmd("XINFO").arg("GROUPS").arg(stream))
                    .await;
                let groups = match groups {
                    Ok(g) => g,
                    Err(e) if e.to_string().contains("no such key") => return Ok(0),
                    Err(e) => return Err(e.into()),
                };
                for g in groups {
                    let fields = map_fields(&g);
                    if fields.get("name").and_then(|v| value_string(v)).as_deref() == Some(group) {
                        return match fields.get("lag") {
                            Some(Value::Int(n)) => Ok(*n),
                            _ => Err(Failure::Other(common.source_error(format!(
                                "Redis cannot compute the lag of consumer group {group:?} (entries were deleted or trimmed)"
                            )))),
                        };
                    }
                }
                // The group does not exist yet (consumers scaled to zero never registered): the
                // lag it would have is the stream length.
                Ok(conn.query(redis::cmd("XLEN").arg(stream)).await?)
            }
        }
    }

    async fn require_redis_7(&self, conn: &mut Conn, common: &Common) -> Result<(), Failure> {
        let mut major = self.source.major_version.load(Ordering::Relaxed);
        if major == 0 {
            let info: String = conn.query(redis::cmd("INFO").arg("server")).await?;
            let version = info
                .lines()
                .find_map(|l| l.strip_prefix("redis_version:"))
                .ok_or_else(|| {
                    Failure::Other(common.source_error("could not find the Redis version"))
                })?;
            major = version
                .split('.')
                .next()
                .and_then(|m| m.trim().parse::<u8>().ok())
                .ok_or_else(|| {
                    Failure::Other(common.source_error("the Redis version could not be read"))
                })?;
            self.source.major_version.store(major, Ordering::Relaxed);
        }
        if major < 7 {
            return Err(Failure::Other(common.error(
                ErrorKind::Config,
                "lagCount needs Redis 7 or later (XINFO GROUPS lag)",
            )));
        }
        Ok(())
    }
}

enum Failure {
    Redis(RedisError),
    Other(crate::ScalerError),
}

impl From<RedisError> for Failure {
    fn from(e: RedisError) -> Self {
        Failure::Redis(e)
    }
}

fn map_fields(v: &Value) -> std::collections::HashMap<String, &Value> {
    let mut out = std::collections::HashMap::new();
    match v {
        Value::Array(items) => {
            for pair in items.chunks(2) {
                if let [k, v] = pair
                    && let Some(k) = value_string(k)
                {
                    out.insert(k, v);
                }
            }
        }
        Value::Map(pairs) => {
            for (k, v) in pairs {
                if let Some(k) = value_string(k) {
                    out.insert(k, v);
                }
            }
        }
        _ => {}
    }
    out
}

fn value_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_pairs_join_and_split() {
        assert_eq!(join_host_port("::1", "6379"), "[::1]:6379");
        assert_eq!(split_host_port("[::1]:6379"), Some(("::1".into(), 6379)));
        assert_eq!(split_host_port("redis:6379"), Some(("redis".into(), 6379)));
        assert_eq!(split_host_port("redis"), None);
        assert_eq!(split_host_port(":6379"), None);
    }
}
