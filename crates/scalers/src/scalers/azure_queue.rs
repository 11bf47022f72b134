//! `azure-queue`: the approximate message count of an Azure Storage queue, as KEDA's
//! `azure_queue_scaler.go` reads it — Get Queue Metadata's `x-ms-approximate-messages-count`;
//! with `queueLengthStrategy: visibleonly`, the number of visible messages from Peek Messages
//! (at most 32), falling back to the approximate count when 32 are visible. Target
//! `queueLength` (5), active above `activationQueueLength` (0).

use super::azure::{self, Account, Resource, Service};
use crate::error::ParamSource;
use crate::metric::{ExternalMetric, MetricSpec, Poll, metric_name, normalize};
use crate::params::{META, Params};
use crate::sources::Sources;
use crate::trigger::Common;

/// KEDA peeks at most this many messages.
const MAX_PEEK: usize = 32;

/// An `azure-queue` trigger.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    queue_name: String,
    queue_length: i64,
    activation_queue_length: i64,
    visible_only: bool,
    /// `None` when the connection could not be read (the trigger does not parse then).
    account: Option<Account>,
}

pub(crate) fn parse(p: &mut Params<'_>) -> Config {
    let activation_queue_length = p.i64_or("activationQueueLength", META, 0);
    let queue_name = p.req_str(&["queueName"], META);
    let queue_length = p.i64_or("queueLength", META, 5);
    let strategy = p.choice("queueLengthStrategy", META, &["all", "visibleonly"], "all");
    azure::check_cloud(p, Service::Queue);
    let account = azure::parse_account(
        p,
        Service::Queue,
        &[ParamSource::Auth, ParamSource::Metadata, ParamSource::Env],
    );
    Config {
        queue_name,
        queue_length,
        activation_queue_length,
        visible_only: strategy == "visibleonly",
        account,
    }
}

impl Config {
    pub fn metric_specs(&self, common: &Common) -> Vec<MetricSpec> {
        vec![MetricSpec::External(ExternalMetric::new(
            metric_name(
                common.index,
                &normalize(&format!("azure-queue-{}", self.queue_name)),
            ),
            common.metric_type.clone(),
            self.queue_length as f64,
        ))]
    }
}

/// A built `azure-queue` trigger.
pub(crate) struct QueueScaler {
    config: Config,
    queue: Resource,
}

impl QueueScaler {
    pub fn new(config: Config, sources: &Sources) -> Self {
        let queue = Resource::new(sources, config.account.as_ref(), &config.queue_name);
        QueueScaler { config, queue }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub async fn poll(&self, common: &Common, metric: &str) -> Result<Poll, crate::ScalerError> {
        let count = self
            .count()
            .await
            .map_err(|(kind, message)| common.error(kind, message))?;
        Ok(Poll::one(
            common.name(metric),
            count as f64,
            count > self.config.activation_queue_length,
        ))
    }

    async fn count(&self) -> Result<i64, (crate::ErrorKind, String)> {
        if self.config.visible_only {
            let peek = self
                .queue
                .get(
                    "/messages",
                    &[("peekonly", "true"), ("numofmessages", "32")],
                )
                .await?;
            let visible = count_elements(&peek.body, "QueueMessage");
            if visible < MAX_PEEK {
                return Ok(visible as i64);
            }
        }
        let properties = self.queue.get("", &[("comp", "metadata")]).await?;
        properties
            .headers
            .get("x-ms-approximate-messages-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())
            .ok_or_else(|| {
                (
                    crate::ErrorKind::Source,
                    "the queue's properties carry no x-ms-approximate-messages-count".to_owned(),
                )
            })
    }
}

/// How many `<name>` elements an XML body holds.
fn count_elements(body: &[u8], name: &str) -> usize {
    let open = format!("<{name}>");
    String::from_utf8_lossy(body).matches(&open).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peeked_messages_are_counted() {
        let body = b"<?xml version=\"1.0\"?><QueueMessagesList><QueueMessage><MessageId>a</MessageId></QueueMessage><QueueMessage><MessageId>b</MessageId></QueueMessage></QueueMessagesList>";
        assert_eq!(count_elements(body, "QueueMessage"), 2);
        assert_eq!(count_elements(b"<QueueMessagesList />", "QueueMessage"), 0);
    }
}
