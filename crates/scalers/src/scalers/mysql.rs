//! `mysql` (MySQL and MariaDB): the value of a query returning one number.

use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::{OptsBuilder, Pool, PoolConstraints, PoolOpts, Row, SslOpts, Value};

use crate::error::{ErrorKind, ParamSource};
use crate::metric::{ExternalMetric, MetricSpec, Poll, metric_name, normalize};
use crate::params::{META, Params};
use crate::redact::Secret;
use crate::sources::{Limit, Sources};
use crate::trigger::Common;

use ParamSource::{Auth, Env, Metadata};

/// TLS mode of a MySQL connection, from the DSN's `tls` parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Tls {
    Off,
    Verify,
    SkipVerify,
}

/// Identity of a shared MySQL source.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct MySqlKey {
    host: String,
    port: u16,
    socket: Option<String>,
    user: Option<String>,
    password: Option<Secret>,
    db: Option<String>,
    tls: Tls,
}

/// A `mysql` trigger.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    key: MySqlKey,
    db_name: String,
    query: String,
    target: f64,
    activation: f64,
}

pub(crate) fn parse(p: &mut Params<'_>) -> Config {
    let connection_string = p.opt_str(&["connectionString"], &[Auth, Env]);
    let username = p.opt_str(&["username"], &[Metadata, Auth, Env]);
    let password = p.opt_str(&["password"], &[Auth, Env]);
    let host = p.opt_str(&["host"], &[Metadata, Auth]);
    let port = p.opt_str(&["port"], &[Metadata, Auth]);
    let db_name = p.opt_str(&["dbName"], &[Metadata, Auth]);
    let query = p.req_str(&["query"], META);
    let target = p.req_f64("queryValue", META);
    let activation = p.f64_or("activationQueryValue", META, 0.0);

    let (key, metric_db) = match connection_string {
        Some(dsn) => {
            // KEDA names the metric after everything behind the DSN's last slash.
            let metric_db = dsn.rsplit('/').next().unwrap_or("dbname").to_owned();
            match parse_dsn(&dsn) {
                Ok(key) => (key, metric_db),
                Err(e) => {
                    p.fail_param(
                        ErrorKind::Config,
                        "connectionString",
                        &[Auth],
                        format!("the connection string is invalid: {e} (expected [user[:password]@]tcp(host:port)/dbname)"),
                    );
                    (empty_key(), metric_db)
                }
            }
        }
        None => {
            let unknown = p.is_unknown(&["connectionString"], &[Auth, Env])
                || p.is_unknown(&["host"], &[Metadata, Auth]);
            let host = match host {
                Some(h) => h,
                None if unknown => String::new(),
                None => {
                    p.fail_param(
                        ErrorKind::Config,
                        "host",
                        META,
                        "missing: give either connectionString (connectionStringFromEnv) or host, port, dbName and username",
                    );
                    String::new()
                }
            };
            let port = match port.as_deref().map(str::parse::<u16>) {
                None => 3306,
                Some(Ok(p)) => p,
                Some(Err(_)) => {
                    p.fail_param(ErrorKind::Config, "port", META, "is not a port number");
                    3306
                }
            };
            (
                MySqlKey {
                    host,
                    port,
                    socket: None,
                    user: username,
                    password: password.map(Secret::new),
                    db: db_name.clone(),
                    tls: Tls::Off,
                },
                db_name.unwrap_or_default(),
            )
        }
    };
    Config {
        key,
        db_name: metric_db,
        query,
        target,
        activation,
    }
}

fn empty_key() -> MySqlKey {
    MySqlKey {
        host: String::new(),
        port: 3306,
        socket: None,
        user: None,
        password: None,
        db: None,
        tls: Tls::Off,
    }
}

/// Parses a Go MySQL driver DSN: `[user[:password]@][net[(addr)]]/dbname[?params]`.
/// Why a MySQL DSN cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
enum DsnError {
    #[error("no /dbname part")]
    NoDatabase,
    #[error("unclosed address parenthesis")]
    Unclosed,
    #[error("invalid port {0:?}")]
    Port(String),
    #[error("unsupported network {0:?}")]
    Network(String),
    #[error("unsupported tls value {0:?}")]
    Tls(String),
}

fn parse_dsn(dsn: &str) -> Result<MySqlKey, DsnError> {
    let slash = dsn.rfind('/').ok_or(DsnError::NoDatabase)?;
    let (head, tail) = (&dsn[..slash], &dsn[slash + 1..]);
    let (db, params) = match tail.split_once('?') {
        Some((db, params)) => (db, params),
        None => (tail, ""),
    };
    let (credentials, address) = match head.rfind('@') {
        Some(at) => (Some(&head[..at]), &head[at + 1..]),
        None => (None, head),
    };
    let (user, password) = match credentials {
        Some(c) => match c.split_once(':') {
            Some((u, p)) => (Some(u.to_owned()), Some(Secret::new(p))),
            None => (Some(c.to_owned()), None),
        },
        None => (None, None),
    };
    let (net, addr) = match address.split_once('(') {
        Some((net, rest)) => (net, rest.strip_suffix(')').ok_or(DsnError::Unclosed)?),
        None => (address, ""),
    };
    let mut key = MySqlKey {
        host: "127.0.0.1".to_owned(),
        port: 3306,
        socket: None,
        user: user.filter(|u| !u.is_empty()),
        password,
        db: (!db.is_empty()).then(|| db.to_owned()),
        tls: Tls::Off,
    };
    match net {
        "" | "tcp" | "tcp6" => {
            if !addr.is_empty() {
                match addr.rsplit_once(':') {
                    Some((h, p)) if !h.contains(']') || h.ends_with(']') => {
                        key.host = h.trim_start_matches('[').trim_end_matches(']').to_owned();
                        key.port = p.parse().map_err(|_| DsnError::Port(p.to_owned()))?;
                    }
                    _ => key.host = addr.to_owned(),
                }
            }
        }
        "unix" => key.socket = Some(addr.to_owned()),
        other => return Err(DsnError::Network(other.to_owned())),
    }
    for pair in params.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "tls" {
            key.tls = match v {
                "true" => Tls::Verify,
                "skip-verify" | "preferred" => Tls::SkipVerify,
                "false" => Tls::Off,
                other => return Err(DsnError::Tls(other.to_owned())),
            };
        }
    }
    Ok(key)
}

impl Config {
    pub fn metric_specs(&self, common: &Common) -> Vec<MetricSpec> {
        vec![MetricSpec::External(ExternalMetric::new(
            metric_name(common.index, &normalize(&format!("mysql-{}", self.db_name))),
            common.metric_type.clone(),
            self.target,
        ))]
    }
}

/// One shared MySQL database.
pub(crate) struct MySqlSource {
    pool: Pool,
    limit: Limit,
}

impl MySqlSource {
    fn new(key: &MySqlKey, pool_size: usize, limit: Limit) -> Self {
        let constraints = PoolConstraints::new(0, pool_size.max(1)).unwrap_or_default();
        let mut opts = OptsBuilder::default()
            .ip_or_hostname(key.host.clone())
            .tcp_port(key.port)
            .user(key.user.clone())
            .pass(key.password.as_ref().map(|p| p.expose().to_owned()))
            .db_name(key.db.clone())
            .pool_opts(PoolOpts::default().with_constraints(constraints));
        if let Some(socket) = &key.socket {
            opts = opts.socket(Some(socket.clone()));
        }
        match key.tls {
            Tls::Off => {}
            Tls::Verify => opts = opts.ssl_opts(SslOpts::default()),
            Tls::SkipVerify => {
                opts = opts.ssl_opts(
                    SslOpts::default()
                        .with_danger_accept_invalid_certs(true)
                        .with_danger_skip_domain_validation(true),
                )
            }
        }
        MySqlSource {
            pool: Pool::new(opts),
            limit,
        }
    }
}

impl Drop for MySqlSource {
    fn drop(&mut self) {
        let pool = self.pool.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = pool.disconnect().await;
            });
        }
    }
}

/// A built `mysql` trigger.
pub(crate) struct MySqlScaler {
    config: Config,
    source: Arc<MySqlSource>,
}

impl MySqlScaler {
    pub fn new(config: Config, sources: &Sources) -> Self {
        let size = sources.inner.config.sql_pool_size;
        let source = sources.inner.mysql.get_or_insert(&config.key, || {
            MySqlSource::new(&config.key, size, sources.limit())
        });
        MySqlScaler { config, source }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub async fn poll(&self, common: &Common, metric: &str) -> Result<Poll, crate::ScalerError> {
        let _permit = self.source.limit.acquire().await;
        let mut conn = self
            .source
            .pool
            .get_conn()
            .await
            .map_err(|e| common.source_error(format!("cannot connect to MySQL: {e}")))?;
        let row: Option<Row> = conn
            .query_first(self.config.query.as_str())
            .await
            .map_err(|e| common.source_error(format!("could not query MySQL: {e}")))?;
        let row = row.ok_or_else(|| common.source_error("the query returned no rows"))?;
        if row.len() != 1 {
            return Err(common.error(
                ErrorKind::Config,
                format!(
                    "the query must return exactly one column, it returned {}",
                    row.len()
                ),
            ));
        }
        let value = match row.as_ref(0) {
            Some(Value::Int(i)) => *i as f64,
            Some(Value::UInt(u)) => *u as f64,
            Some(Value::Float(f)) => f64::from(*f),
            Some(Value::Double(d)) => *d,
            Some(Value::Bytes(b)) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.trim().parse::<f64>().ok())
                .ok_or_else(|| common.error(ErrorKind::Config, "the query must return a number"))?,
            Some(Value::NULL) | None => {
                return Err(common.source_error(
                    "the query returned NULL; use COALESCE(..., 0) to return a number",
                ));
            }
            Some(_) => {
                return Err(common.error(ErrorKind::Config, "the query must return a number"));
            }
        };
        Ok(Poll::one(
            common.name(metric),
            value,
            value > self.config.activation,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_dsns_parse() {
        let k =
            parse_dsn("user:pw@tcp(db.example:3307)/stats?tls=skip-verify&parseTime=true").unwrap();
        assert_eq!((k.host.as_str(), k.port), ("db.example", 3307));
        assert_eq!(k.user.as_deref(), Some("user"));
        assert_eq!(k.password.as_ref().map(Secret::expose), Some("pw"));
        assert_eq!(k.db.as_deref(), Some("stats"));
        assert_eq!(k.tls, Tls::SkipVerify);
        let k = parse_dsn("root@/test").unwrap();
        assert_eq!(
            (k.host.as_str(), k.port, k.password.is_none()),
            ("127.0.0.1", 3306, true)
        );
        let k = parse_dsn("u:p@w@rd@tcp([::1]:3306)/x").unwrap();
        assert_eq!(k.password.as_ref().map(Secret::expose), Some("p@w@rd"));
        assert_eq!(k.host, "::1");
        assert!(parse_dsn("no-slash").is_err());
        assert!(parse_dsn("u@tcp(h:xx)/d").is_err());
    }
}
