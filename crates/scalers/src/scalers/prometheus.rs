//! `prometheus`: the value of an instant PromQL query.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::error::ErrorKind;
use crate::metric::{ExternalMetric, MetricSpec, Poll, metric_name, normalize};
use crate::params::{META, Params};
use crate::scalers::http::{self, HttpSource, excerpt, fetch};
use crate::scalers::httpauth::{self, HttpAuth};
use crate::sources::Sources;
use crate::trigger::Common;

/// A `prometheus` trigger.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    server: String,
    query: String,
    query_parameters: BTreeMap<String, String>,
    threshold: f64,
    activation: f64,
    namespace: Option<String>,
    custom_headers: BTreeMap<String, String>,
    ignore_null_values: bool,
    insecure: bool,
    auth: HttpAuth,
    pub timeout: Option<Duration>,
}

pub(crate) fn parse(p: &mut Params<'_>) -> Config {
    let server = p.req_str(&["serverAddress"], META);
    let query = p.req_str(&["query"], META);
    let query_parameters = p.map("queryParameters", META);
    let threshold = p.req_f64("threshold", META);
    let activation = p.f64_or("activationThreshold", META, 0.0);
    let namespace = p.opt_str(&["namespace"], META);
    let custom_headers = p.map("customHeaders", META);
    let ignore_null_values = p.bool_or("ignoreNullValues", META, true);
    let insecure = p.bool_or("unsafeSsl", META, false);
    let timeout = p.duration("timeout", META);
    let auth = httpauth::parse(p);
    if !server.is_empty() {
        match url::Url::parse(&server) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            Ok(u) => p.fail_param(
                ErrorKind::Config,
                "serverAddress",
                META,
                format!("the URL scheme must be http or https, not {:?}", u.scheme()),
            ),
            Err(e) => p.fail_param(
                ErrorKind::Config,
                "serverAddress",
                META,
                format!("not a valid URL: {e}"),
            ),
        }
    }
    for name in custom_headers.keys() {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            p.fail_param(
                ErrorKind::Config,
                "customHeaders",
                META,
                format!("{name:?} is not a valid header name"),
            );
        }
    }
    if p.lookup(
        &["awsRegion"],
        &[crate::ParamSource::Metadata, crate::ParamSource::Auth],
    )
    .is_some()
    {
        p.fail_param(
            ErrorKind::Unsupported,
            "awsRegion",
            META,
            "Amazon Managed Prometheus (SigV4 signing) is not supported by ringscale",
        );
    }
    if let Err(e) = auth.tls(insecure, true).client_config() {
        p.fail_param(ErrorKind::Config, "ca", crate::params::AUTH, e.to_string());
    }
    Config {
        server,
        query,
        query_parameters,
        threshold,
        activation,
        namespace,
        custom_headers,
        ignore_null_values,
        insecure,
        auth,
        timeout,
    }
}

impl Config {
    pub fn metric_specs(&self, common: &Common) -> Vec<MetricSpec> {
        vec![MetricSpec::External(ExternalMetric::new(
            metric_name(common.index, &normalize("prometheus")),
            common.metric_type.clone(),
            self.threshold,
        ))]
    }
}

#[derive(Debug, Deserialize)]
struct QueryResult {
    #[serde(default)]
    status: String,
    #[serde(default)]
    data: Data,
}

#[derive(Debug, Default, Deserialize)]
struct Data {
    #[serde(default, rename = "resultType")]
    result_type: String,
    #[serde(default)]
    result: Value,
}

/// A built `prometheus` trigger.
pub(crate) struct PrometheusScaler {
    config: Config,
    source: Arc<HttpSource>,
    /// The bound of calls to the server's host.
    limit: Arc<crate::sources::Limit>,
}

impl PrometheusScaler {
    pub fn new(config: Config, sources: &Sources) -> Self {
        let source = http::client(sources, config.auth.tls(config.insecure, true));
        let limit = source.limit_for(&config.server);
        PrometheusScaler {
            config,
            source,
            limit,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub async fn poll(&self, common: &Common, metric: &str) -> Result<Poll, crate::ScalerError> {
        let _permit = self.limit.acquire().await;
        let value = self.query(common).await?;
        Ok(Poll::one(
            common.name(metric),
            value,
            value > self.config.activation,
        ))
    }

    async fn query(&self, common: &Common) -> Result<f64, crate::ScalerError> {
        let c = &self.config;
        let client = self
            .source
            .client()
            .map_err(|e| common.error(ErrorKind::Config, e.to_string()))?;
        let mut url = url::Url::parse(&format!("{}/api/v1/query", c.server.trim_end_matches('/')))
            .map_err(|e| common.error(ErrorKind::Config, format!("invalid serverAddress: {e}")))?;
        {
            let now = jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            let mut q = url.query_pairs_mut();
            q.append_pair("query", &c.query).append_pair("time", &now);
            if let Some(ns) = &c.namespace {
                q.append_pair("namespace", ns);
            }
            for (k, v) in &c.query_parameters {
                q.append_pair(k, v);
            }
        }
        let mut request = client.get(url);
        for (k, v) in &c.custom_headers {
            request = request.header(k, v);
        }
        let request = c.auth.apply_first(request);
        let answer = fetch(request)
            .await
            .map_err(|e| common.source_error(format!("prometheus query failed: {e}")))?;
        if !answer.status.is_success() {
            return Err(common.source_error(format!(
                "prometheus query api returned error. status: {} response: {}",
                answer.status.as_u16(),
                excerpt(&answer.body)
            )));
        }
        let result: QueryResult = serde_json::from_slice(&answer.body).map_err(|e| {
            common.source_error(format!("prometheus answered unreadable JSON: {e}"))
        })?;
        if !result.status.is_empty() && result.status != "success" {
            return Err(
                common.source_error(format!("prometheus query status is {:?}", result.status))
            );
        }
        let null = |why: &str| {
            if c.ignore_null_values {
                Ok(0.0)
            } else {
                Err(common.source_error(format!(
                    "prometheus metrics 'prometheus' target may be lost, {why}"
                )))
            }
        };
        // An instant vector of samples, or a scalar `[time, "value"]`.
        let sample = match (result.data.result_type.as_str(), &result.data.result) {
            ("scalar" | "string", Value::Array(pair)) => pair.clone(),
            (_, Value::Array(series)) => {
                if series.is_empty() {
                    return null("the result is empty");
                }
                if series.len() > 1 {
                    return Err(common.source_error(format!(
                        "prometheus query {} returned multiple elements",
                        c.query
                    )));
                }
                match series[0].get("value") {
                    Some(Value::Array(pair)) => pair.clone(),
                    _ => Vec::new(),
                }
            }
            (_, Value::Null) => return null("the result is empty"),
            _ => {
                return Err(common.source_error("prometheus answered an unexpected result shape"));
            }
        };
        if sample.is_empty() {
            return null("the value list is empty");
        }
        if sample.len() < 2 {
            return Err(common.source_error(format!(
                "prometheus query {} didn't return enough values",
                c.query
            )));
        }
        let value = match &sample[1] {
            Value::String(s) => match s.as_str() {
                "+Inf" | "Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                "NaN" => f64::NAN,
                other => other.parse::<f64>().map_err(|_| {
                    common.source_error(format!(
                        "prometheus returned a value that is not a number: {other:?}"
                    ))
                })?,
            },
            Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
            _ => {
                return Err(common.source_error("prometheus returned a value that is not a number"));
            }
        };
        if !value.is_finite() {
            return if c.ignore_null_values {
                Ok(0.0)
            } else {
                Err(common.source_error(format!("prometheus query returns {value}")))
            };
        }
        Ok(value)
    }
}
