//! `postgresql`: the value of a query returning one number.

use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::StreamExt;
use regex::Regex;
use tokio_postgres::types::{FromSql, Type};

use crate::error::{ErrorKind, ParamSource};
use crate::metric::{ExternalMetric, MetricSpec, Poll, metric_name, normalize};
use crate::params::{META, Params};
use crate::redact::Secret;
use crate::sources::{Limit, Sources};
use crate::tls::TlsOptions;
use crate::trigger::Common;

use ParamSource::{Auth, Env, Metadata};

/// Identity of a shared PostgreSQL source: the connection string and TLS verification.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PgKey {
    connection: Secret,
    verify_tls: bool,
}

/// A `postgresql` trigger.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    key: PgKey,
    query: String,
    target: f64,
    activation: f64,
}

static SSLMODE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"sslmode\s*=\s*'?([A-Za-z-]*)'?").ok());

pub(crate) fn parse(p: &mut Params<'_>) -> Config {
    let target = p.target_f64("targetQueryValue");
    let activation = p.f64_or("activationTargetQueryValue", META, 0.0);
    let connection = p.opt_str(&["connection"], &[Auth, Env]);
    let query = p.req_str(&["query"], META);
    let connection_unknown = p.is_unknown(&["connection"], &[Auth, Env]);
    let dsn = match connection {
        Some(c) => c,
        None if connection_unknown => String::new(),
        None => {
            let mut parts = Vec::new();
            for (name, key) in [
                ("host", "host"),
                ("port", "port"),
                ("userName", "user"),
                ("dbName", "dbname"),
                ("sslmode", "sslmode"),
            ] {
                match p.opt_str(&[name], &[Auth, Metadata]) {
                    Some(v) => parts.push(format!("{key}={}", escape(&v))),
                    None if p.is_unknown(&[name], &[Auth, Metadata]) => {}
                    None => p.fail_param(
                        ErrorKind::Config,
                        name,
                        META,
                        "missing: give either a connection string (connection / connectionFromEnv) or host, port, userName, dbName and sslmode",
                    ),
                }
            }
            if let Some(password) = p.opt_str(&["password"], &[Auth, Env]) {
                parts.push(format!("password={}", escape(&password)));
            }
            parts.join(" ")
        }
    };
    // tokio-postgres knows sslmode disable/prefer/require; libpq's allow and verify-* are mapped
    // onto them (verify-* keeps certificate verification on).
    let mut verify_tls = false;
    let dsn = match SSLMODE.as_ref().and_then(|re| re.captures(&dsn)) {
        Some(caps) => {
            let mode = caps
                .get(1)
                .map(|m| m.as_str())
                .unwrap_or_default()
                .to_owned();
            let replacement = match mode.as_str() {
                "disable" | "prefer" | "require" => None,
                "allow" => Some("prefer"),
                "verify-ca" | "verify-full" => {
                    verify_tls = true;
                    Some("require")
                }
                other => {
                    p.fail_param(
                        ErrorKind::Config,
                        "sslmode",
                        META,
                        format!("{other:?} must be one of disable, allow, prefer, require, verify-ca, verify-full"),
                    );
                    None
                }
            };
            match (replacement, caps.get(1)) {
                (Some(r), Some(m)) => format!("{}{r}{}", &dsn[..m.start()], &dsn[m.end()..]),
                _ => dsn,
            }
        }
        None => dsn,
    };
    if !dsn.is_empty()
        && let Err(e) = tokio_postgres::Config::from_str(&dsn)
    {
        p.fail_param(
            ErrorKind::Config,
            "connection",
            &[Auth],
            format!(
                "the connection string is invalid: {}",
                crate::error::chain(&e)
            ),
        );
    }
    Config {
        key: PgKey {
            connection: Secret::new(dsn),
            verify_tls,
        },
        query,
        target,
        activation,
    }
}

/// Quotes a connection-string value containing spaces, as KEDA does.
fn escape(value: &str) -> String {
    if value.contains(' ') || value.is_empty() {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
    } else {
        value.to_owned()
    }
}

impl Config {
    pub fn metric_specs(&self, common: &Common) -> Vec<MetricSpec> {
        vec![MetricSpec::External(ExternalMetric::new(
            metric_name(common.index, &normalize("postgresql")),
            common.metric_type.clone(),
            self.target,
        ))]
    }
}

/// One shared PostgreSQL database.
pub(crate) struct PgSource {
    /// The pool, or why it could not be made (reported on every poll).
    pool: Result<Pool, PoolError>,
    limit: Limit,
}

/// Why no connection pool could be made for a trigger.
#[derive(Debug, thiserror::Error)]
enum PoolError {
    /// `connection` is not a libpq connection string or URI (the driver's reason).
    #[error("the connection string is invalid: {0}")]
    Connection(String),
    /// The TLS configuration could not be made.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The pool refused its settings (its reason).
    #[error("cannot create the connection pool: {0}")]
    Build(String),
}

impl PgSource {
    fn new(key: &PgKey, pool_size: usize, limit: Limit) -> Self {
        let pool = (|| {
            let config = tokio_postgres::Config::from_str(key.connection.expose())
                .map_err(|e| PoolError::Connection(e.to_string()))?;
            let tls = TlsOptions {
                insecure: !key.verify_tls,
                ..TlsOptions::default()
            }
            .client_config()?;
            let manager = Manager::from_config(
                config,
                tokio_postgres_rustls::MakeRustlsConnect::new(tls),
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Pool::builder(manager)
                .max_size(pool_size.max(1))
                .build()
                .map_err(|e| PoolError::Build(e.to_string()))
        })();
        PgSource { pool, limit }
    }
}

/// A built `postgresql` trigger.
pub(crate) struct PgScaler {
    config: Config,
    source: Arc<PgSource>,
}

impl PgScaler {
    pub fn new(config: Config, sources: &Sources) -> Self {
        let size = sources.inner.config.sql_pool_size;
        let source = sources.inner.postgres.get_or_insert(&config.key, || {
            PgSource::new(&config.key, size, sources.limit())
        });
        PgScaler { config, source }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub async fn poll(&self, common: &Common, metric: &str) -> Result<Poll, crate::ScalerError> {
        let _permit = self.source.limit.acquire().await;
        let pool = self
            .source
            .pool
            .as_ref()
            .map_err(|e| common.error(ErrorKind::Config, e.to_string()))?;
        let client = pool.get().await.map_err(|e| {
            common.source_error(format!(
                "cannot connect to PostgreSQL: {}",
                describe_pool_error(&e)
            ))
        })?;
        let rows = client
            .query_raw(
                self.config.query.as_str(),
                std::iter::empty::<&(dyn tokio_postgres::types::ToSql + Sync)>(),
            )
            .await
            .map_err(|e| {
                common.source_error(format!("could not query PostgreSQL: {}", describe(&e)))
            })?;
        let mut rows = std::pin::pin!(rows);
        let row = match rows.next().await {
            Some(Ok(row)) => row,
            Some(Err(e)) => {
                return Err(
                    common.source_error(format!("could not query PostgreSQL: {}", describe(&e)))
                );
            }
            None => return Err(common.source_error("the query returned no rows")),
        };
        if row.len() != 1 {
            return Err(common.error(
                ErrorKind::Config,
                format!(
                    "the query must return exactly one column, it returned {}",
                    row.len()
                ),
            ));
        }
        let value = match row.try_get::<_, Option<AnyNumber>>(0) {
            Ok(Some(AnyNumber(v))) => v,
            Ok(None) => {
                return Err(common.source_error(
                    "the query returned NULL; use COALESCE(..., 0) to return a number",
                ));
            }
            Err(e) => {
                return Err(common.error(
                    ErrorKind::Config,
                    format!("the query must return a number: {}", describe(&e)),
                ));
            }
        };
        Ok(Poll::one(
            common.name(metric),
            value,
            value > self.config.activation,
        ))
    }
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => crate::error::chain(e),
    }
}

fn describe_pool_error(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => describe(e),
        other => other.to_string(),
    }
}

/// Any numeric column, as a float (integers, floats, numeric, OIDs).
struct AnyNumber(f64);

impl<'a> FromSql<'a> for AnyNumber {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let v = match *ty {
            Type::INT2 => f64::from(i16::from_sql(ty, raw)?),
            Type::INT4 => f64::from(i32::from_sql(ty, raw)?),
            Type::INT8 => i64::from_sql(ty, raw)? as f64,
            Type::OID => f64::from(u32::from_sql(ty, raw)?),
            Type::FLOAT4 => f64::from(f32::from_sql(ty, raw)?),
            Type::FLOAT8 => f64::from_sql(ty, raw)?,
            Type::NUMERIC => numeric(raw)?,
            _ => return Err(format!("column type {ty} is not numeric").into()),
        };
        Ok(AnyNumber(v))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::INT2
                | Type::INT4
                | Type::INT8
                | Type::OID
                | Type::FLOAT4
                | Type::FLOAT8
                | Type::NUMERIC
        )
    }
}

/// Decodes PostgreSQL's binary NUMERIC: digit count, weight, sign, scale, then base-10000 digits.
fn numeric(raw: &[u8]) -> Result<f64, Box<dyn std::error::Error + Sync + Send>> {
    let word = |i: usize| -> Result<u16, Box<dyn std::error::Error + Sync + Send>> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric value".into())
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i16;
    let sign = word(2)?;
    match sign {
        0xC000 => return Err("the value is NaN".into()),
        0xD000 => return Ok(f64::INFINITY),
        0xF000 => return Ok(f64::NEG_INFINITY),
        _ => {}
    }
    let mut value = 0f64;
    for i in 0..ndigits {
        let digit = f64::from(word(4 + i)?);
        value += digit * 10000f64.powi(i32::from(weight) - i as i32);
    }
    Ok(if sign == 0x4000 { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_numerics_decode() {
        // 12.5 = weight 0: [12, 5000], dscale 1
        let raw = [0, 2, 0, 0, 0, 0, 0, 1, 0, 12, 0x13, 0x88];
        assert_eq!(numeric(&raw).unwrap(), 12.5);
        // -20000 = weight 1: [2]
        let raw = [0, 1, 0, 1, 0x40, 0, 0, 0, 0, 2];
        assert_eq!(numeric(&raw).unwrap(), -20000.0);
        assert!(numeric(&[0, 0, 0, 0, 0xC0, 0, 0, 0]).is_err());
        assert!(numeric(&[0, 1]).is_err());
    }

    #[test]
    fn values_with_spaces_are_quoted() {
        assert_eq!(escape("a b"), "'a b'");
        assert_eq!(escape("it's x"), "'it\\'s x'");
        assert_eq!(escape("plain"), "plain");
    }
}
