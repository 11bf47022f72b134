//! `aws-cloudwatch`: one CloudWatch metric through GetMetricData, as KEDA's
//! `aws_cloudwatch_scaler.go` asks for it — a metric (`namespace`, `metricName`,
//! `dimensionName`/`dimensionValue` lists separated by `;`, `metricStat` (Average),
//! `metricUnit`, `metricStatPeriod` (300 s)) or a metric-math `expression`, over the window that
//! ends `metricEndTimeOffset` seconds ago truncated to the period and spans
//! `metricCollectionTime` (300 s), newest first. The value is the first (newest) point;
//! no point gives `minMetricValue`, or an error with `ignoreNullValues: false`. Target
//! `targetMetricValue`, active above `activationTargetMetricValue` (0). Metric `s<i>-aws-cloudwatch`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::aws::{self, Json, Service, Target};
use crate::error::ErrorKind;
use crate::metric::{ExternalMetric, MetricSpec, Poll, metric_name};
use crate::params::{META, Params};
use crate::sources::Sources;
use crate::trigger::Common;

/// CloudWatch's standard units (`metricUnit` must be one of them).
const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// What is asked for.
#[derive(Clone, Debug)]
enum Query {
    Metric {
        namespace: String,
        metric_name: String,
        dimensions: Vec<(String, String)>,
        stat: String,
        unit: Option<String>,
    },
    Expression(String),
}

/// An `aws-cloudwatch` trigger.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    query: Query,
    account_id: Option<String>,
    target_value: f64,
    activation_target_value: f64,
    min_value: f64,
    ignore_null_values: bool,
    collection_time: i64,
    period: i64,
    end_time_offset: i64,
    target: Target,
}

pub(crate) fn parse(p: &mut Params<'_>) -> Config {
    let namespace = p.opt_str(&["namespace"], META);
    let metric_name = p.opt_str(&["metricName"], META);
    let dimension_names = p
        .lookup(&["dimensionName"], META)
        .map(|_| p.list_by(&["dimensionName"], META, ';'));
    let dimension_values = p
        .lookup(&["dimensionValue"], META)
        .map(|_| p.list_by(&["dimensionValue"], META, ';'));
    let expression = p.opt_str(&["expression"], META);
    let target_value = p.req_f64("targetMetricValue", META);
    let activation_target_value = p.f64_or("activationTargetMetricValue", META, 0.0);
    let min_value = p.req_f64("minMetricValue", META);
    let ignore_null_values = p.bool_or("ignoreNullValues", META, true);
    let collection_time = p.i64_or("metricCollectionTime", META, 300);
    let stat = p
        .opt_str(&["metricStat"], META)
        .unwrap_or_else(|| "Average".to_owned());
    let unit = p.opt_str(&["metricUnit"], META);
    let period = p.i64_or("metricStatPeriod", META, 300);
    let end_time_offset = p.i64_or("metricEndTimeOffset", META, 0);
    let account_id = p.opt_str(&["awsAccountId"], META);
    let target = aws::parse_target(p);

    // KEDA's Validate, in its order.
    let query = match expression {
        Some(e) => Query::Expression(e),
        None => {
            let mut fail = |message: &str| p.fail(ErrorKind::Config, message);
            match (
                &namespace,
                &metric_name,
                &dimension_names,
                &dimension_values,
            ) {
                (None, ..) => fail("namespace not given"),
                (_, None, ..) => fail("metric name not given"),
                (_, _, None, _) => fail("dimension name not given"),
                (_, _, _, None) => fail("dimension value not given"),
                (_, _, Some(n), Some(v)) if n.len() != v.len() => {
                    fail("dimensionName and dimensionValue are not matching in size")
                }
                _ => {}
            }
            if let Some(u) = &unit
                && !UNITS.contains(&u.as_str())
            {
                p.fail_param(
                    ErrorKind::Config,
                    "metricUnit",
                    META,
                    format!("metricUnit '{u}' is not one of {}", UNITS.join(" ")),
                );
            }
            Query::Metric {
                namespace: namespace.unwrap_or_default(),
                metric_name: metric_name.unwrap_or_default(),
                dimensions: dimension_names
                    .unwrap_or_default()
                    .into_iter()
                    .zip(dimension_values.unwrap_or_default())
                    .collect(),
                stat,
                unit,
            }
        }
    };
    if let Err(e) = check_period(period) {
        p.fail_param(ErrorKind::Config, "metricStatPeriod", META, e.to_string());
    } else if collection_time < 0 || collection_time % period != 0 {
        p.fail_param(
            ErrorKind::Config,
            "metricCollectionTime",
            META,
            format!(
                "metricCollectionTime must be greater than 0 and a multiple of metricStatPeriod({period}), {collection_time} is given"
            ),
        );
    }
    Config {
        query,
        account_id,
        target_value,
        activation_target_value,
        min_value,
        ignore_null_values,
        collection_time,
        period,
        end_time_offset,
        target,
    }
}

/// KEDA's checkMetricStatPeriod: 1, 5, 10, 30, 60 or a multiple of 60.
fn check_period(period: i64) -> Result<(), CloudWatchError> {
    if period < 1 {
        return Err(CloudWatchError::PeriodBelowOne(period));
    }
    if period <= 60 {
        return match period {
            1 | 5 | 10 | 30 | 60 => Ok(()),
            _ => Err(CloudWatchError::ShortPeriod(period)),
        };
    }
    if period % 60 != 0 {
        return Err(CloudWatchError::LongPeriod(period));
    }
    Ok(())
}

/// What the CloudWatch trigger refuses or could not read (KEDA's messages).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
enum CloudWatchError {
    #[error("metricStatPeriod can not be smaller than 1, however, {0} is provided")]
    PeriodBelowOne(i64),
    #[error("metricStatPeriod < 60 has to be one of [1, 5, 10, 30], however, {0} is provided")]
    ShortPeriod(i64),
    #[error("metricStatPeriod >= 60 has to be a multiple of 60, however, {0} is provided")]
    LongPeriod(i64),
    /// A value in the answer that is not a number (as answered).
    #[error("CloudWatch answered a value that is not a number: {0}")]
    NotANumber(String),
    /// No data points in the window while `ignoreNullValues` is false.
    #[error("empty metric data received, ignoreNullValues is false, returning error")]
    Empty,
}

/// KEDA's computeQueryWindow, in Unix seconds: the end is `now - offset` truncated to the
/// period, the start `collection` seconds before it.
fn query_window(now: i64, period: i64, offset: i64, collection: i64) -> (i64, i64) {
    let end = now.saturating_sub(offset);
    let end = end - end.rem_euclid(period.max(1));
    (end.saturating_sub(collection), end)
}

impl Config {
    pub fn metric_specs(&self, common: &Common) -> Vec<MetricSpec> {
        vec![MetricSpec::External(ExternalMetric::new(
            metric_name(common.index, "aws-cloudwatch"),
            common.metric_type.clone(),
            self.target_value,
        ))]
    }

    /// GetMetricData's body for a window ending before `now` (Unix seconds).
    fn request(&self, now: i64) -> Value {
        let (start, end) =
            query_window(now, self.period, self.end_time_offset, self.collection_time);
        let mut query = match &self.query {
            Query::Expression(e) => json!({
                "Id": "q1",
                "Expression": e,
                "Period": self.period,
            }),
            Query::Metric {
                namespace,
                metric_name,
                dimensions,
                stat,
                unit,
            } => {
                let mut stat = json!({
                    "Metric": {
                        "Namespace": namespace,
                        "MetricName": metric_name,
                        "Dimensions": dimensions
                            .iter()
                            .map(|(n, v)| json!({"Name": n, "Value": v}))
                            .collect::<Vec<_>>(),
                    },
                    "Period": self.period,
                    "Stat": stat,
                });
                if let Some(u) = unit {
                    stat["Unit"] = json!(u);
                }
                json!({"Id": "c1", "MetricStat": stat, "ReturnData": true})
            }
        };
        if let Some(a) = &self.account_id {
            query["AccountId"] = json!(a);
        }
        json!({
            "StartTime": start,
            "EndTime": end,
            "ScanBy": "TimestampDescending",
            "MetricDataQueries": [query],
        })
    }

    /// KEDA's GetCloudwatchMetrics on an answer: the first result's first value, else
    /// `minMetricValue` (or an error with `ignoreNullValues: false`).
    fn value(&self, answer: &Value) -> Result<f64, CloudWatchError> {
        let first = answer
            .get("MetricDataResults")
            .and_then(Value::as_array)
            .and_then(|r| r.first());
        let values = first
            .and_then(|r| r.get("Values"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        match values.first() {
            Some(v) => v
                .as_f64()
                .ok_or_else(|| CloudWatchError::NotANumber(v.to_string())),
            None if first.is_some() && !self.ignore_null_values => Err(CloudWatchError::Empty),
            None => Ok(self.min_value),
        }
    }
}

/// A built `aws-cloudwatch` trigger.
pub(crate) struct CloudWatchScaler {
    config: Config,
    cloudwatch: Service,
}

impl CloudWatchScaler {
    pub fn new(config: Config, sources: &Sources) -> Self {
        let cloudwatch = Service::new(sources, &config.target, "monitoring", Json::V1_0);
        CloudWatchScaler { config, cloudwatch }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub async fn poll(&self, common: &Common, metric: &str) -> Result<Poll, crate::ScalerError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let answer = self
            .cloudwatch
            .call(
                "GraniteServiceVersion20100801.GetMetricData",
                &self.config.request(now),
            )
            .await
            .map_err(|e| common.error(e.kind, e.message))?;
        let value = self
            .config
            .value(&answer)
            .map_err(|e| common.source_error(e.to_string()))?;
        Ok(Poll::one(
            common.name(metric),
            value,
            value > self.config.activation_target_value,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_follow_keda() {
        for ok in [1, 5, 10, 30, 60, 120, 300, 3600] {
            assert!(check_period(ok).is_ok(), "{ok}");
        }
        for bad in [0, -60, 2, 45, 90, 301] {
            assert!(check_period(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_window_ends_at_a_period_boundary_before_the_offset() {
        // 10:07:30 with a 60 s period and a 120 s offset ends at 10:05:00.
        let now = 36_450;
        assert_eq!(query_window(now, 60, 120, 300), (36_000, 36_300));
        assert_eq!(query_window(now, 300, 0, 600), (35_700, 36_300));
    }
}
