//! `aws-sqs-queue`: the approximate number of messages in an SQS queue, as KEDA's
//! `aws_sqs_queue_scaler.go` reads it — GetQueueAttributes of ApproximateNumberOfMessages, plus
//! ApproximateNumberOfMessagesNotVisible (in flight) unless `scaleOnInFlight: false`, plus
//! ApproximateNumberOfMessagesDelayed with `scaleOnDelayed: true`, summed; active above
//! `activationQueueLength`.
//!
//! SQS is called through its JSON protocol at `awsEndpoint` or
//! `https://sqs.<awsRegion>.amazonaws.com`, signed with SigV4; credentials as in `aws`.

use super::aws::{self, Json, Service, Target};
use crate::error::{ErrorKind, ParamSource};
use crate::metric::{ExternalMetric, MetricSpec, Poll, metric_name, normalize};
use crate::params::{META, Params};
use crate::sources::Sources;
use crate::trigger::Common;

const META_OR_ENV: &[ParamSource] = &[ParamSource::Metadata, ParamSource::Env];

/// An `aws-sqs-queue` trigger.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    queue_url: String,
    queue_name: String,
    queue_length: i64,
    activation_queue_length: i64,
    attributes: Vec<&'static str>,
    target: Target,
}

pub(crate) fn parse(p: &mut Params<'_>) -> Config {
    let queue_length = p.i64_or("queueLength", META, 5);
    let activation_queue_length = p.i64_or("activationQueueLength", META, 0);
    let queue_url = p.req_str(&["queueURL"], META_OR_ENV);
    let in_flight = p.bool_or("scaleOnInFlight", META, true);
    let delayed = p.bool_or("scaleOnDelayed", META, false);
    let mut attributes = vec!["ApproximateNumberOfMessages"];
    if in_flight {
        attributes.push("ApproximateNumberOfMessagesNotVisible");
    }
    if delayed {
        attributes.push("ApproximateNumberOfMessagesDelayed");
    }
    let queue_name = match queue_name(&queue_url) {
        Ok(n) => n,
        Err(e) => {
            if !queue_url.is_empty() {
                p.fail_param(ErrorKind::Config, "queueURL", META_OR_ENV, e.to_string());
            }
            String::new()
        }
    };
    let target = aws::parse_target(p);
    Config {
        queue_url,
        queue_name,
        queue_length,
        activation_queue_length,
        attributes,
        target,
    }
}

/// What the SQS trigger could not read (KEDA's messages).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
enum SqsError {
    /// `queueURL` is a URL whose path is not `/<account>/<name>`.
    #[error("cannot get queueName from queueURL")]
    QueueName,
    /// An attribute asked for is missing from the answer.
    #[error("metric {0} not found in SQS queue attributes")]
    MissingAttribute(&'static str),
    /// An attribute is not an integer.
    #[error("{name} is {text:?}, not an integer")]
    NotAnInteger { name: &'static str, text: String },
}

/// KEDA's queue name: the URL's path `/<account>/<name>`, or the whole value when it is not a
/// URL (Go's ParseRequestURI: an absolute URL or an absolute path).
fn queue_name(queue_url: &str) -> Result<String, SqsError> {
    let path = if queue_url.starts_with('/') {
        Some(
            queue_url
                .split(['?', '#'])
                .next()
                .unwrap_or(queue_url)
                .to_owned(),
        )
    } else {
        match url::Url::parse(queue_url) {
            Ok(u) if !u.cannot_be_a_base() => Some(u.path().to_owned()),
            _ => None,
        }
    };
    let Some(path) = path else {
        return Ok(queue_url.to_owned());
    };
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() != 3 || parts[2].is_empty() {
        return Err(SqsError::QueueName);
    }
    Ok(parts[2].to_owned())
}

impl Config {
    pub fn metric_specs(&self, common: &Common) -> Vec<MetricSpec> {
        vec![MetricSpec::External(ExternalMetric::new(
            metric_name(
                common.index,
                &normalize(&format!("aws-sqs-{}", self.queue_name)),
            ),
            common.metric_type.clone(),
            self.queue_length as f64,
        ))]
    }
}

/// A built `aws-sqs-queue` trigger.
pub(crate) struct SqsScaler {
    config: Config,
    sqs: Service,
}

impl SqsScaler {
    pub fn new(config: Config, sources: &Sources) -> Self {
        let sqs = Service::new(sources, &config.target, "sqs", Json::V1_0);
        SqsScaler { config, sqs }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub async fn poll(&self, common: &Common, metric: &str) -> Result<Poll, crate::ScalerError> {
        let body = serde_json::json!({
            "QueueUrl": self.config.queue_url,
            "AttributeNames": self.config.attributes,
        });
        let answer = self
            .sqs
            .call("AmazonSQS.GetQueueAttributes", &body)
            .await
            .map_err(|e| common.error(e.kind, e.message))?;
        let length = sum_attributes(&answer, &self.config.attributes)
            .map_err(|e| common.source_error(e.to_string()))?;
        Ok(Poll::one(
            common.name(metric),
            length as f64,
            length > self.config.activation_queue_length,
        ))
    }
}

/// KEDA's processQueueLengthFromSqsQueueAttributesOutput: every attribute asked for must be
/// there and be an integer.
fn sum_attributes(answer: &serde_json::Value, names: &[&'static str]) -> Result<i64, SqsError> {
    let mut total: i64 = 0;
    for name in names {
        let Some(text) = answer
            .get("Attributes")
            .and_then(|a| a.get(*name))
            .and_then(|v| v.as_str())
        else {
            return Err(SqsError::MissingAttribute(name));
        };
        let v: i64 = text.parse().map_err(|_| SqsError::NotAnInteger {
            name,
            text: text.to_owned(),
        })?;
        total = total.saturating_add(v);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_follow_keda() {
        assert_eq!(
            queue_name("https://sqs.eu-west-1.amazonaws.com/123456789012/orders").as_deref(),
            Ok("orders")
        );
        assert_eq!(queue_name("orders").as_deref(), Ok("orders"));
        assert!(queue_name("https://sqs.eu-west-1.amazonaws.com/orders").is_err());
        assert!(queue_name("https://sqs.eu-west-1.amazonaws.com/1/2/3").is_err());
        assert!(queue_name("https://sqs.eu-west-1.amazonaws.com/123/").is_err());
    }

    #[test]
    fn attributes_are_summed_and_must_all_be_there() {
        let a = serde_json::json!({"Attributes": {
            "ApproximateNumberOfMessages": "3",
            "ApproximateNumberOfMessagesNotVisible": "2"}});
        assert_eq!(
            sum_attributes(
                &a,
                &[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible"
                ]
            ),
            Ok(5)
        );
        assert!(sum_attributes(&a, &["ApproximateNumberOfMessagesDelayed"]).is_err());
    }
}
