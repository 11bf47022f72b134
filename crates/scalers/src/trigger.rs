//! Parsing a trigger into its configuration, and the built trigger that polls its source.

use std::fmt;
use std::time::Duration;

use ringscale_api::MetricType;
use ringscale_api::names::KEDA_TRIGGER_TYPES;

use crate::error::{ErrorKind, ScalerError};
use crate::input::{Owner, TriggerInput};
use crate::metric::{MetricSpec, Poll};
use crate::params::Params;
use crate::redact::Redactor;
use crate::scalers::{
    aws_cloudwatch, aws_dynamodb, aws_kinesis, aws_sqs, azure_blob, azure_queue, cron, etcd,
    external, kafka, kubernetes_workload, metrics_api, mysql, nats, postgres, prometheus, rabbitmq,
    redis, resource,
};
use crate::sources::{Sources, within};

/// Trigger types this crate implements.
pub const SUPPORTED_TRIGGER_TYPES: &[&str] = &[
    "aws-cloudwatch",
    "aws-dynamodb",
    "aws-kinesis-stream",
    "aws-sqs-queue",
    "azure-blob",
    "azure-queue",
    "cpu",
    "cron",
    "etcd",
    "external",
    "external-push",
    "kafka",
    "kubernetes-workload",
    "memory",
    "metrics-api",
    "mysql",
    "nats-jetstream",
    "postgresql",
    "prometheus",
    "rabbitmq",
    "redis",
    "redis-cluster",
    "redis-cluster-streams",
    "redis-sentinel",
    "redis-sentinel-streams",
    "redis-streams",
];

/// What every trigger carries besides its scaler-specific configuration.
#[derive(Clone)]
pub(crate) struct Common {
    pub index: usize,
    pub trigger_type: String,
    /// The metric type for external metrics (`AverageValue` unless the trigger says `Value`).
    pub metric_type: MetricType,
    pub owner: Owner,
    pub redactor: Redactor,
    pub timeout: Duration,
    /// The trigger's external metric names, when known offline.
    pub metric_names: Vec<std::sync::Arc<str>>,
}

impl Common {
    /// The shared name for `requested`: the trigger's own when it is one of them.
    pub fn name(&self, requested: &str) -> std::sync::Arc<str> {
        self.metric_names
            .iter()
            .find(|n| &***n == requested)
            .cloned()
            .unwrap_or_else(|| requested.into())
    }

    /// An error of this trigger, redacted.
    pub fn error(&self, kind: ErrorKind, message: impl AsRef<str>) -> ScalerError {
        ScalerError {
            kind,
            trigger_index: self.index,
            trigger_type: self.trigger_type.clone(),
            parameter: None,
            source: None,
            key: None,
            message: self.redactor.clean(message.as_ref()),
        }
    }

    /// A transient error of the event source.
    pub fn source_error(&self, message: impl AsRef<str>) -> ScalerError {
        self.error(ErrorKind::Source, message)
    }

    /// The error of a call that ran out of time.
    pub fn timed_out(&self) -> ScalerError {
        self.error(
            ErrorKind::Timeout,
            format!(
                "the source did not answer within {}",
                humanize(self.timeout)
            ),
        )
    }
}

/// The scaler-specific configuration of a parsed trigger.
#[derive(Clone)]
pub(crate) enum Config {
    RedisList(redis::ListConfig),
    RedisStreams(redis::StreamsConfig),
    Postgres(postgres::Config),
    MySql(mysql::Config),
    RabbitMq(rabbitmq::Config),
    Nats(nats::Config),
    MetricsApi(metrics_api::Config),
    Prometheus(prometheus::Config),
    Cron(cron::Config),
    Etcd(etcd::Config),
    Kafka(kafka::Config),
    AwsSqs(aws_sqs::Config),
    AwsKinesis(aws_kinesis::Config),
    AwsDynamoDb(aws_dynamodb::Config),
    AwsCloudWatch(aws_cloudwatch::Config),
    AzureQueue(azure_queue::Config),
    AzureBlob(azure_blob::Config),
    Workload(kubernetes_workload::Config),
    Resource(resource::Config),
    External(external::Config),
}

/// A trigger whose parameters were checked, offline: no connection was made.
#[derive(Clone)]
pub struct ParsedTrigger {
    pub(crate) common: Common,
    pub(crate) config: Config,
}

impl ParsedTrigger {
    /// Index of the trigger in `spec.triggers`.
    pub fn index(&self) -> usize {
        self.common.index
    }

    /// The trigger type.
    pub fn trigger_type(&self) -> &str {
        &self.common.trigger_type
    }

    /// The metric specs, when they are known without asking the source. `None` for `external`
    /// and `external-push` triggers, whose metrics the external scaler names.
    pub fn offline_metric_specs(&self) -> Option<Vec<MetricSpec>> {
        let c = &self.common;
        Some(match &self.config {
            Config::RedisList(cfg) => cfg.metric_specs(c),
            Config::RedisStreams(cfg) => cfg.metric_specs(c),
            Config::Postgres(cfg) => cfg.metric_specs(c),
            Config::MySql(cfg) => cfg.metric_specs(c),
            Config::RabbitMq(cfg) => cfg.metric_specs(c),
            Config::Nats(cfg) => cfg.metric_specs(c),
            Config::MetricsApi(cfg) => cfg.metric_specs(c),
            Config::Prometheus(cfg) => cfg.metric_specs(c),
            Config::Cron(cfg) => cfg.metric_specs(c),
            Config::Etcd(cfg) => cfg.metric_specs(c),
            Config::Kafka(cfg) => cfg.metric_specs(c),
            Config::AwsSqs(cfg) => cfg.metric_specs(c),
            Config::AwsKinesis(cfg) => cfg.metric_specs(c),
            Config::AwsDynamoDb(cfg) => cfg.metric_specs(c),
            Config::AwsCloudWatch(cfg) => cfg.metric_specs(c),
            Config::AzureQueue(cfg) => cfg.metric_specs(c),
            Config::AzureBlob(cfg) => cfg.metric_specs(c),
            Config::Workload(cfg) => cfg.metric_specs(c),
            Config::Resource(cfg) => cfg.metric_specs(),
            Config::External(_) => return None,
        })
    }

    /// External metric names as the HPA will see them, when known offline.
    pub fn offline_metric_names(&self) -> Option<Vec<String>> {
        self.offline_metric_specs().map(|specs| {
            specs
                .iter()
                .filter_map(|s| s.external_name().map(str::to_owned))
                .collect()
        })
    }

    /// Whether the trigger pushes activity changes (`external-push`, and `etcd`, which
    /// watches its key).
    pub fn is_push(&self) -> bool {
        matches!(&self.config, Config::External(e) if e.push)
            || matches!(self.config, Config::Etcd(_))
    }
}

impl fmt::Debug for ParsedTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedTrigger")
            .field("index", &self.common.index)
            .field("type", &self.common.trigger_type)
            .field("owner", &self.common.owner)
            .finish_non_exhaustive()
    }
}

/// Checks a trigger's parameters offline and returns its configuration, or every problem found.
pub fn parse(input: &TriggerInput) -> Result<ParsedTrigger, Vec<ScalerError>> {
    let redactor = input.redactor();
    let mut p = Params::new(input, &redactor);
    let ty = input.trigger_type.as_str();
    let resource = matches!(ty, "cpu" | "memory");

    if !SUPPORTED_TRIGGER_TYPES.contains(&ty) {
        let (kind, message) = if KEDA_TRIGGER_TYPES.contains(&ty) {
            (
                ErrorKind::Unsupported,
                format!(
                    "trigger type {ty:?} is not supported by ringscale yet; supported types: {}",
                    SUPPORTED_TRIGGER_TYPES.join(", ")
                ),
            )
        } else {
            (ErrorKind::Config, format!("unknown trigger type {ty:?}"))
        };
        p.fail(kind, message);
        return Err(p.finish().err().unwrap_or_default());
    }

    let metric_type = match (&input.metric_type, resource) {
        (Some(MetricType::Utilization), false) => {
            p.fail(
                ErrorKind::Config,
                "'Utilization' metric type is unsupported for external metrics, allowed values are 'Value' or 'AverageValue'",
            );
            MetricType::AverageValue
        }
        (Some(MetricType::Other(other)), _) => {
            p.fail(
                ErrorKind::Config,
                format!("metricType {other:?} must be AverageValue, Value or Utilization"),
            );
            MetricType::AverageValue
        }
        (Some(t), _) => t.clone(),
        (None, _) => MetricType::AverageValue,
    };

    if let Some(provider) = input.identity_provider() {
        // Pod identities authenticate to cloud services; none of the supported scalers can use
        // one, so a trigger that asks for it would silently run without it.
        p.fail(
            ErrorKind::Unsupported,
            format!("podIdentity provider {provider:?} is not supported by ringscale"),
        );
    }

    let config = match ty {
        "redis" => Config::RedisList(redis::parse_list(&mut p, redis::Topology::Standalone)),
        "redis-cluster" => Config::RedisList(redis::parse_list(&mut p, redis::Topology::Cluster)),
        "redis-sentinel" => Config::RedisList(redis::parse_list(&mut p, redis::Topology::Sentinel)),
        "redis-streams" => {
            Config::RedisStreams(redis::parse_streams(&mut p, redis::Topology::Standalone))
        }
        "redis-cluster-streams" => {
            Config::RedisStreams(redis::parse_streams(&mut p, redis::Topology::Cluster))
        }
        "redis-sentinel-streams" => {
            Config::RedisStreams(redis::parse_streams(&mut p, redis::Topology::Sentinel))
        }
        "postgresql" => Config::Postgres(postgres::parse(&mut p)),
        "mysql" => Config::MySql(mysql::parse(&mut p)),
        "rabbitmq" => Config::RabbitMq(rabbitmq::parse(&mut p)),
        "nats-jetstream" => Config::Nats(nats::parse(&mut p)),
        "metrics-api" => Config::MetricsApi(metrics_api::parse(&mut p)),
        "prometheus" => Config::Prometheus(prometheus::parse(&mut p)),
        "cron" => Config::Cron(cron::parse(&mut p)),
        "etcd" => Config::Etcd(etcd::parse(&mut p)),
        "kafka" => Config::Kafka(kafka::parse(&mut p)),
        "aws-sqs-queue" => Config::AwsSqs(aws_sqs::parse(&mut p)),
        "aws-kinesis-stream" => Config::AwsKinesis(aws_kinesis::parse(&mut p)),
        "aws-dynamodb" => Config::AwsDynamoDb(aws_dynamodb::parse(&mut p)),
        "aws-cloudwatch" => Config::AwsCloudWatch(aws_cloudwatch::parse(&mut p)),
        "azure-queue" => Config::AzureQueue(azure_queue::parse(&mut p)),
        "azure-blob" => Config::AzureBlob(azure_blob::parse(&mut p)),
        "kubernetes-workload" => Config::Workload(kubernetes_workload::parse(&mut p)),
        "cpu" => Config::Resource(resource::parse(&mut p, crate::metric::Resource::Cpu)),
        "memory" => Config::Resource(resource::parse(&mut p, crate::metric::Resource::Memory)),
        "external" => Config::External(external::parse(&mut p, false)),
        _ => Config::External(external::parse(&mut p, true)),
    };
    let timeout = match &config {
        Config::RabbitMq(c) => c.timeout,
        Config::MetricsApi(c) => c.timeout,
        Config::Prometheus(c) => c.timeout,
        _ => None,
    }
    .unwrap_or(input.default_timeout);
    p.finish()?;
    let mut parsed = ParsedTrigger {
        common: Common {
            index: input.index,
            trigger_type: input.trigger_type.clone(),
            metric_type,
            owner: input.owner.clone(),
            redactor,
            timeout,
            metric_names: Vec::new(),
        },
        config,
    };
    parsed.common.metric_names = parsed
        .offline_metric_names()
        .unwrap_or_default()
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(parsed)
}

/// The per-type part of a built trigger.
enum Kind {
    RedisList(redis::ListScaler),
    RedisStreams(redis::StreamsScaler),
    Postgres(postgres::PgScaler),
    MySql(mysql::MySqlScaler),
    RabbitMq(rabbitmq::RabbitScaler),
    Nats(nats::NatsScaler),
    MetricsApi(metrics_api::MetricsApiScaler),
    Prometheus(prometheus::PrometheusScaler),
    Cron(cron::CronScaler),
    Etcd(etcd::EtcdScaler),
    Kafka(kafka::KafkaScaler),
    AwsSqs(aws_sqs::SqsScaler),
    AwsKinesis(aws_kinesis::KinesisScaler),
    AwsDynamoDb(aws_dynamodb::DynamoDbScaler),
    AwsCloudWatch(aws_cloudwatch::CloudWatchScaler),
    AzureQueue(azure_queue::QueueScaler),
    AzureBlob(azure_blob::BlobScaler),
    Workload(kubernetes_workload::WorkloadScaler),
    Resource(resource::Config),
    External(external::ExternalScaler),
}

/// A trigger ready to poll its source. Building one makes no connection; the first poll does.
pub struct Scaler {
    common: Common,
    kind: Box<Kind>,
}

impl fmt::Debug for Scaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scaler")
            .field("index", &self.common.index)
            .field("type", &self.common.trigger_type)
            .field("owner", &self.common.owner)
            .field("timeout", &self.common.timeout)
            .finish_non_exhaustive()
    }
}

impl Scaler {
    /// Builds a parsed trigger, attaching it to the shared source it reads from.
    pub fn new(parsed: ParsedTrigger, sources: &Sources) -> Scaler {
        let ParsedTrigger { common, config } = parsed;
        let kind = match config {
            Config::RedisList(c) => Kind::RedisList(redis::ListScaler::new(c, sources)),
            Config::RedisStreams(c) => Kind::RedisStreams(redis::StreamsScaler::new(c, sources)),
            Config::Postgres(c) => Kind::Postgres(postgres::PgScaler::new(c, sources)),
            Config::MySql(c) => Kind::MySql(mysql::MySqlScaler::new(c, sources)),
            Config::RabbitMq(c) => Kind::RabbitMq(rabbitmq::RabbitScaler::new(c, sources)),
            Config::Nats(c) => Kind::Nats(nats::NatsScaler::new(c, sources)),
            Config::MetricsApi(c) => {
                Kind::MetricsApi(metrics_api::MetricsApiScaler::new(c, sources))
            }
            Config::Prometheus(c) => {
                Kind::Prometheus(prometheus::PrometheusScaler::new(c, sources))
            }
            Config::Cron(c) => Kind::Cron(cron::CronScaler::new(c)),
            Config::Etcd(c) => Kind::Etcd(etcd::EtcdScaler::new(c, sources)),
            Config::Kafka(c) => Kind::Kafka(kafka::KafkaScaler::new(c, sources)),
            Config::AwsSqs(c) => Kind::AwsSqs(aws_sqs::SqsScaler::new(c, sources)),
            Config::AwsKinesis(c) => Kind::AwsKinesis(aws_kinesis::KinesisScaler::new(c, sources)),
            Config::AwsDynamoDb(c) => {
                Kind::AwsDynamoDb(aws_dynamodb::DynamoDbScaler::new(c, sources))
            }
            Config::AwsCloudWatch(c) => {
                Kind::AwsCloudWatch(aws_cloudwatch::CloudWatchScaler::new(c, sources))
            }
            Config::AzureQueue(c) => Kind::AzureQueue(azure_queue::QueueScaler::new(c, sources)),
            Config::AzureBlob(c) => Kind::AzureBlob(azure_blob::BlobScaler::new(c, sources)),
            Config::Workload(c) => {
                Kind::Workload(kubernetes_workload::WorkloadScaler::new(c, sources))
            }
            Config::Resource(c) => Kind::Resource(c),
            Config::External(c) => {
                Kind::External(external::ExternalScaler::new(c, &common, sources))
            }
        };
        Scaler {
            common,
            kind: Box::new(kind),
        }
    }

    /// Parses and builds in one step.
    pub fn build(input: &TriggerInput, sources: &Sources) -> Result<Scaler, Vec<ScalerError>> {
        Ok(Scaler::new(parse(input)?, sources))
    }

    /// Index of the trigger in `spec.triggers`.
    pub fn index(&self) -> usize {
        self.common.index
    }

    /// The trigger type.
    pub fn trigger_type(&self) -> &str {
        &self.common.trigger_type
    }

    /// The timeout of one poll.
    pub fn timeout(&self) -> Duration {
        self.common.timeout
    }

    /// Whether this is a cpu or memory trigger (an HPA Resource metric; nothing to poll).
    pub fn is_resource(&self) -> bool {
        matches!(*self.kind, Kind::Resource(_))
    }

    /// Whether the trigger pushes activity changes (`external-push`, and `etcd`, which
    /// watches its key).
    pub fn is_push(&self) -> bool {
        matches!(&*self.kind, Kind::External(e) if e.is_push())
            || matches!(*self.kind, Kind::Etcd(_))
    }

    /// For cpu and memory triggers: the activation value (`activationValue`), which the
    /// operator compares with the metrics server's readings.
    pub fn resource_activation(&self) -> Option<&crate::metric::ResourceTarget> {
        match &*self.kind {
            Kind::Resource(cfg) => Some(&cfg.activation),
            _ => None,
        }
    }

    /// The metrics the HPA scales on. Only `external` triggers ask their source.
    pub async fn metric_specs(&self) -> Result<Vec<MetricSpec>, ScalerError> {
        let c = &self.common;
        Ok(match &*self.kind {
            Kind::RedisList(s) => s.config().metric_specs(c),
            Kind::RedisStreams(s) => s.config().metric_specs(c),
            Kind::Postgres(s) => s.config().metric_specs(c),
            Kind::MySql(s) => s.config().metric_specs(c),
            Kind::RabbitMq(s) => s.config().metric_specs(c),
            Kind::Nats(s) => s.config().metric_specs(c),
            Kind::MetricsApi(s) => s.config().metric_specs(c),
            Kind::Prometheus(s) => s.config().metric_specs(c),
            Kind::Cron(s) => s.config().metric_specs(c),
            Kind::Etcd(s) => s.config().metric_specs(c),
            Kind::Kafka(s) => s.config().metric_specs(c),
            Kind::AwsSqs(s) => s.config().metric_specs(c),
            Kind::AwsKinesis(s) => s.config().metric_specs(c),
            Kind::AwsDynamoDb(s) => s.config().metric_specs(c),
            Kind::AwsCloudWatch(s) => s.config().metric_specs(c),
            Kind::AzureQueue(s) => s.config().metric_specs(c),
            Kind::AzureBlob(s) => s.config().metric_specs(c),
            Kind::Workload(s) => s.config().metric_specs(c),
            Kind::Resource(cfg) => cfg.metric_specs(),
            Kind::External(s) => {
                return match within(c.timeout, s.metric_specs(c)).await {
                    Some(r) => r,
                    None => Err(c.timed_out()),
                };
            }
        })
    }

    /// Reads the metric `metric_name` and whether the trigger is active. Every call is bounded by
    /// the trigger's timeout and waits for a slot of its source.
    pub async fn poll(&self, metric_name: &str) -> Result<Poll, ScalerError> {
        let c = &self.common;
        // The list trigger, the one there are thousands of, polls inline; the others' larger
        // futures are boxed so that every poll future stays small.
        let fut = async {
            match &*self.kind {
                Kind::RedisList(s) => s.poll(c, metric_name).await,
                Kind::RedisStreams(s) => Box::pin(s.poll(c, metric_name)).await,
                Kind::Postgres(s) => Box::pin(s.poll(c, metric_name)).await,
                Kind::MySql(s) => Box::pin(s.poll(c, metric_name)).await,
                Kind::RabbitMq(s) => Box::pin(s.poll(c, metric_name)).await,
                Kind::Nats(s) => Box::pin(s.poll(c, metric_name)).await,
                Kind::MetricsApi(s) => Box::pin(s.poll(c, metric_name)).await,
                Kind::Prometheus(s) => Box::pin(s.poll(c, metric_name)).await,
                Kind::Cron(s) => s.poll(c, metric_name),
                Kind::Etcd(s) => Box::pin(s.poll(c, metric_name)).await,
                Kind::Kafka(s) => Box::pin(s.poll(c, metric_name)).await,
                Kind::AwsSqs(s) => Box::pin(s.poll(c, metric_name)).await,
                Kind::AwsKinesis(s) => Box::pin(s.poll(c, metric_name)).await,
                Kind::AwsDynamoDb(s) => Box::pin(s.poll(c, metric_name)).await,
                Kind::AwsCloudWatch(s) => Box::pin(s.poll(c, metric_name)).await,
                Kind::AzureQueue(s) => Box::pin(s.poll(c, metric_name)).await,
                Kind::AzureBlob(s) => Box::pin(s.poll(c, metric_name)).await,
                Kind::Workload(s) => Box::pin(s.poll(c, metric_name)).await,
                Kind::Resource(_) => Ok(Poll {
                    values: Vec::new(),
                    active: false,
                }),
                Kind::External(s) => Box::pin(s.poll(c, metric_name)).await,
            }
        };
        // Redis triggers are bounded by their client (connect and response timeouts) and skip
        // the timer every other poll needs.
        let self_bounded = matches!(*self.kind, Kind::RedisList(_) | Kind::RedisStreams(_));
        let result = if self_bounded {
            fut.await
        } else {
            match within(c.timeout, fut).await {
                Some(r) => r,
                None => Err(c.timed_out()),
            }
        };
        if let Err(e) = &result {
            tracing::debug!(
                namespace = %c.owner.namespace,
                name = %c.owner.name,
                error = %e,
                "trigger poll failed"
            );
        }
        result
    }

    /// For `external-push` triggers: a stream of activity changes pushed by the external
    /// scaler; for `etcd` triggers: the activity of each change of the watched key. Both
    /// reconnect with backoff (2 s doubling to 1 min) until the receiver is dropped.
    pub fn push_activity(&self) -> Option<tokio::sync::mpsc::Receiver<Result<bool, ScalerError>>> {
        match &*self.kind {
            Kind::External(s) if s.is_push() => Some(s.stream_is_active(&self.common)),
            Kind::Etcd(s) => Some(s.watch_activity(&self.common)),
            _ => None,
        }
    }
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
