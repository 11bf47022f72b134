//! `aws-kinesis-stream`: the number of open shards of a Kinesis stream, as KEDA's
//! `aws_kinesis_stream_scaler.go` reads it (DescribeStreamSummary's `OpenShardCount`); target
//! `shardCount` (2), active above `activationShardCount` (0).

use super::aws::{self, Json, Service, Target};
use crate::metric::{ExternalMetric, MetricSpec, Poll, metric_name, normalize};
use crate::params::{META, Params};
use crate::sources::Sources;
use crate::trigger::Common;

/// An `aws-kinesis-stream` trigger.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    stream_name: String,
    shard_count: i64,
    activation_shard_count: i64,
    target: Target,
}

pub(crate) fn parse(p: &mut Params<'_>) -> Config {
    let shard_count = p.i64_or("shardCount", META, 2);
    let activation_shard_count = p.i64_or("activationShardCount", META, 0);
    let stream_name = p.req_str(&["streamName"], META);
    let target = aws::parse_target(p);
    Config {
        stream_name,
        shard_count,
        activation_shard_count,
        target,
    }
}

impl Config {
    pub fn metric_specs(&self, common: &Common) -> Vec<MetricSpec> {
        vec![MetricSpec::External(ExternalMetric::new(
            metric_name(
                common.index,
                &normalize(&format!("aws-kinesis-{}", self.stream_name)),
            ),
            common.metric_type.clone(),
            self.shard_count as f64,
        ))]
    }
}

/// A built `aws-kinesis-stream` trigger.
pub(crate) struct KinesisScaler {
    config: Config,
    kinesis: Service,
}

impl KinesisScaler {
    pub fn new(config: Config, sources: &Sources) -> Self {
        let kinesis = Service::new(sources, &config.target, "kinesis", Json::V1_1);
        KinesisScaler { config, kinesis }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub async fn poll(&self, common: &Common, metric: &str) -> Result<Poll, crate::ScalerError> {
        let body = serde_json::json!({ "StreamName": self.config.stream_name });
        let answer = self
            .kinesis
            .call("Kinesis_20131202.DescribeStreamSummary", &body)
            .await
            .map_err(|e| common.error(e.kind, e.message))?;
        let shards = open_shards(&answer).map_err(|e| common.source_error(e.to_string()))?;
        Ok(Poll::one(
            common.name(metric),
            shards as f64,
            shards > self.config.activation_shard_count,
        ))
    }
}

/// Kinesis answered without `StreamDescriptionSummary.OpenShardCount`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no StreamDescriptionSummary.OpenShardCount in Kinesis's answer")]
struct NoShardCount;

fn open_shards(answer: &serde_json::Value) -> Result<i64, NoShardCount> {
    answer
        .get("StreamDescriptionSummary")
        .and_then(|s| s.get("OpenShardCount"))
        .and_then(serde_json::Value::as_i64)
        .ok_or(NoShardCount)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_shards_are_read_from_the_summary() {
        let a = serde_json::json!({"StreamDescriptionSummary": {"OpenShardCount": 4}});
        assert_eq!(open_shards(&a), Ok(4));
        assert!(open_shards(&serde_json::json!({})).is_err());
    }
}
