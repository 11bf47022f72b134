//! `kafka`: a consumer group's lag, as KEDA's `kafka_scaler.go` computes it — per partition the
//! latest offset minus the group's committed offset, summed over the topic's partitions (or over
//! every topic the group committed to), capped at one consumer per partition unless
//! `allowIdleConsumers`, with KEDA's rules for partitions without a committed offset,
//! `excludePersistentLag`, `limitToPartitionsWithLag`, `ensureEvenDistributionOfPartitions` and
//! `partitionLimitation`.
//!
//! Every trigger reading one cluster with the same TLS and credentials shares one client, and
//! the client keeps one connection per broker (`cluster`, `wire`). The Kafka protocol is spoken
//! with the `kafka-protocol` crate's message types; versions are agreed with each broker
//! through ApiVersions, so KEDA's `version` parameter is checked but not needed.
//!
//! Not supported (reported on the trigger): SASL `oauthbearer` and `gssapi`, encrypted private
//! keys (`keyPassword`).

mod cluster;
mod scram;
mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use cluster::{Committed, ReadError, TopicLayout};
pub(crate) use cluster::{KafkaKey, KafkaSource};
use scram::Mechanism;
use wire::{BrokerError, Sasl, WireError};

use crate::error::{ErrorKind, ParamSource};
use crate::metric::{ExternalMetric, MetricSpec, Poll, metric_name, normalize};
use crate::params::{AUTH, META, Params};
use crate::redact::Secret;
use crate::sources::Sources;
use crate::tls::TlsOptions;
use crate::trigger::Common;

const META_OR_ENV: &[ParamSource] = &[ParamSource::Metadata, ParamSource::Env];
const META_OR_AUTH: &[ParamSource] = &[ParamSource::Metadata, ParamSource::Auth];

/// Which lag a partition without a committed offset has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResetPolicy {
    Latest,
    Earliest,
}

/// A `kafka` trigger.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    bootstrap: Vec<String>,
    group: String,
    topic: Option<String>,
    partitions: Option<Vec<i32>>,
    lag_threshold: i64,
    activation_lag_threshold: i64,
    reset: ResetPolicy,
    allow_idle_consumers: bool,
    exclude_persistent_lag: bool,
    scale_to_zero_on_invalid_offset: bool,
    limit_to_partitions_with_lag: bool,
    ensure_even_distribution: bool,
    tls: Option<TlsOptions>,
    sasl: Option<Sasl>,
}

pub(crate) fn parse(p: &mut Params<'_>) -> Config {
    let bootstrap: Vec<String> = p
        .list(&["bootstrapServers"], META_OR_ENV)
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    if bootstrap.is_empty() {
        if p.lookup(&["bootstrapServers"], META_OR_ENV).is_none() {
            p.req_str(&["bootstrapServers"], META_OR_ENV);
        } else {
            p.fail_param(
                ErrorKind::Config,
                "bootstrapServers",
                META,
                "lists no server",
            );
        }
    }
    for server in &bootstrap {
        if !is_host_port(server) {
            p.fail_param(
                ErrorKind::Config,
                "bootstrapServers",
                META,
                format!("{server:?} is not host:port"),
            );
        }
    }
    let group = p.req_str(&["consumerGroup"], META_OR_ENV);
    let topic = p.opt_str(&["topic"], META_OR_ENV);

    let limitation = p.opt_str(&["partitionLimitation"], META);
    let mut partitions = match limitation {
        Some(text) => match parse_partition_limitation(&text) {
            Ok(list) => Some(list),
            Err(e) => {
                p.fail_param(
                    ErrorKind::Config,
                    "partitionLimitation",
                    META,
                    e.to_string(),
                );
                None
            }
        },
        None => None,
    };
    if topic.is_none() {
        partitions = None;
    }

    let lag_threshold = p.i64_or("lagThreshold", META, 10);
    if lag_threshold <= 0 {
        p.fail_param(
            ErrorKind::Config,
            "lagThreshold",
            META,
            "must be a positive number",
        );
    }
    let activation_lag_threshold = p.i64_or("activationLagThreshold", META, 0);
    if activation_lag_threshold < 0 {
        p.fail_param(
            ErrorKind::Config,
            "activationLagThreshold",
            META,
            "must be a non-negative number",
        );
    }
    let reset = match p
        .choice("offsetResetPolicy", META, &["latest", "earliest"], "latest")
        .as_str()
    {
        "earliest" => ResetPolicy::Earliest,
        _ => ResetPolicy::Latest,
    };
    let allow_idle_consumers = p.bool_or("allowIdleConsumers", META, false);
    let exclude_persistent_lag = p.bool_or("excludePersistentLag", META, false);
    let scale_to_zero_on_invalid_offset = p.bool_or("scaleToZeroOnInvalidOffset", META, false);
    let limit_to_partitions_with_lag = p.bool_or("limitToPartitionsWithLag", META, false);
    let ensure_even_distribution = p.bool_or("ensureEvenDistributionOfPartitions", META, false);
    let full_metadata = p.bool_or("fullMetadata", META, true);
    if allow_idle_consumers && limit_to_partitions_with_lag {
        p.fail(
            ErrorKind::Config,
            "allowIdleConsumers and limitToPartitionsWithLag cannot be set simultaneously",
        );
    }
    if topic.is_none() && limit_to_partitions_with_lag {
        p.fail(
            ErrorKind::Config,
            "topic must be specified when using limitToPartitionsWithLag",
        );
    }
    if limit_to_partitions_with_lag && ensure_even_distribution {
        p.fail(
            ErrorKind::Config,
            "limitToPartitionsWithLag and ensureEvenDistributionOfPartitions cannot be set simultaneously",
        );
    }
    if topic.is_none() && ensure_even_distribution {
        p.fail(
            ErrorKind::Config,
            "topic must be specified when using ensureEvenDistributionOfPartitions",
        );
    }
    if !full_metadata && topic.is_none() {
        p.fail(
            ErrorKind::Config,
            "topic must be specified when fullMetadata is false",
        );
    }
    if let Some(v) = p.opt_str(&["version"], META)
        && !is_kafka_version(&v)
    {
        p.fail_param(
            ErrorKind::Config,
            "version",
            META,
            format!("invalid version `{v}` (like 2.8.1, or 0.10.2.0 before 1.0)"),
        );
    }

    let tls = parse_tls(p);
    let sasl = parse_sasl(p, tls.is_some());
    Config {
        bootstrap,
        group,
        topic,
        partitions,
        lag_threshold: lag_threshold.max(1),
        activation_lag_threshold,
        reset,
        allow_idle_consumers,
        exclude_persistent_lag,
        scale_to_zero_on_invalid_offset,
        limit_to_partitions_with_lag,
        ensure_even_distribution,
        tls,
        sasl,
    }
}

fn parse_tls(p: &mut Params<'_>) -> Option<TlsOptions> {
    let enable = p.choice("tls", META_OR_AUTH, &["enable", "disable"], "disable");
    let insecure = p.bool_or("unsafeSsl", META, false);
    (enable == "enable").then(|| crate::tls::from_auth(p, insecure))
}

fn parse_sasl(p: &mut Params<'_>, tls: bool) -> Option<Sasl> {
    let mode = p.choice(
        "sasl",
        META_OR_AUTH,
        &[
            "none",
            "plaintext",
            "scram_sha256",
            "scram_sha512",
            "oauthbearer",
            "gssapi",
        ],
        "none",
    );
    let username = p.opt_str(&["username"], AUTH);
    let password = p.opt_str(&["password"], AUTH);
    let mechanism = match mode.as_str() {
        "plaintext" => Mechanism::Plain,
        "scram_sha256" => Mechanism::ScramSha256,
        "scram_sha512" => Mechanism::ScramSha512,
        "oauthbearer" => {
            // KEDA's checks first, so that a broken object is reported as broken.
            let provider = p.choice(
                "saslTokenProvider",
                META_OR_AUTH,
                &["bearer", "aws_msk_iam"],
                "bearer",
            );
            if provider == "bearer" {
                if username.is_none() {
                    p.fail(ErrorKind::Config, "no username given");
                }
                if password.is_none() {
                    p.fail(ErrorKind::Config, "no password given");
                }
                if p.opt_str(&["oauthTokenEndpointUri"], AUTH).is_none() {
                    p.fail(ErrorKind::Config, "no oauth token endpoint uri given");
                }
            } else {
                if !tls {
                    p.fail(
                        ErrorKind::Config,
                        "TLS is required for AWS MSK authentication",
                    );
                }
                if p.opt_str(&["awsRegion"], META).is_none() {
                    p.fail(ErrorKind::Config, "no awsRegion given");
                }
            }
            p.fail_param(
                ErrorKind::Unsupported,
                "sasl",
                META_OR_AUTH,
                "SASL oauthbearer is not supported by ringscale yet",
            );
            return None;
        }
        "gssapi" => {
            if username.is_none() {
                p.fail(ErrorKind::Config, "no username given");
            }
            let keytab = p.opt_str(&["keytab"], AUTH);
            if password.is_some() == keytab.is_some() {
                p.fail(
                    ErrorKind::Config,
                    "exactly one of 'password' or 'keytab' must be provided for GSSAPI authentication",
                );
            }
            if p.opt_str(&["realm"], AUTH).is_none() {
                p.fail(ErrorKind::Config, "no realm given");
            }
            if p.opt_str(&["kerberosConfig"], AUTH).is_none() {
                p.fail(
                    ErrorKind::Config,
                    "no Kerberos configuration file (kerberosConfig) given",
                );
            }
            p.fail_param(
                ErrorKind::Unsupported,
                "sasl",
                META_OR_AUTH,
                "SASL gssapi (Kerberos) is not supported by ringscale yet",
            );
            return None;
        }
        _ => return None,
    };
    match (username, password) {
        (Some(username), Some(password)) => Some(Sasl {
            mechanism,
            username,
            password: Secret::new(password),
        }),
        (None, _) => {
            p.fail(ErrorKind::Config, "no username given");
            None
        }
        (Some(_), None) => {
            p.fail(ErrorKind::Config, "no password given");
            None
        }
    }
}

/// `0,2,4-6` → [0, 2, 4, 5, 6], as KEDA's parsePartitionLimitation reads it.
fn parse_partition_limitation(text: &str) -> Result<Vec<i32>, PartitionLimitationError> {
    use PartitionLimitationError as E;
    let mut out = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        if part.contains('-') {
            let bounds: Vec<&str> = part.split('-').collect();
            let [start, end] = bounds[..] else {
                return Err(E::Range(part.to_owned()));
            };
            let parse = |s: &str| {
                s.trim()
                    .parse::<i32>()
                    .map_err(|_| E::NotANumber(part.to_owned()))
            };
            let (start, end) = (parse(start)?, parse(end)?);
            if end.saturating_sub(start) > 100_000 {
                return Err(E::TooWide(part.to_owned()));
            }
            out.extend(start..=end);
        } else {
            out.push(
                part.parse::<i32>()
                    .map_err(|_| E::NotANumber(part.to_owned()))?,
            );
        }
    }
    Ok(out)
}

/// Why `partitionLimitation` cannot be read (the part at fault; KEDA's messages).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
enum PartitionLimitationError {
    /// A range that is not `start-end`.
    #[error("invalid partition limitation range: {0}")]
    Range(String),
    /// A partition that is not a number.
    #[error("invalid partition limitation: {0}")]
    NotANumber(String),
    /// A range wider than ringscale expands.
    #[error("invalid partition limitation: {0} spans more than 100000 partitions")]
    TooWide(String),
}

/// Sarama's ParseKafkaVersion: `major.minor.patch`, or `0.x.y.z` before 1.0.
fn is_kafka_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    let digits = |s: &&str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    v.len() >= 5
        && parts.iter().all(digits)
        && if v.starts_with('0') {
            parts.len() == 4
        } else {
            parts.len() == 3
        }
}

fn is_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

impl Config {
    fn metric_name(&self) -> String {
        match &self.topic {
            Some(t) => format!("kafka-{t}"),
            None => format!("kafka-{}-topics", self.group),
        }
    }

    pub fn metric_specs(&self, common: &Common) -> Vec<MetricSpec> {
        vec![MetricSpec::External(ExternalMetric::new(
            metric_name(common.index, &normalize(&self.metric_name())),
            common.metric_type.clone(),
            self.lag_threshold as f64,
        ))]
    }
}

/// A built `kafka` trigger.
pub(crate) struct KafkaScaler {
    config: Config,
    source: Arc<KafkaSource>,
    /// `excludePersistentLag`: the committed offset each partition had at the last poll.
    previous: Mutex<HashMap<(String, i32), i64>>,
}

impl KafkaScaler {
    pub fn new(config: Config, sources: &Sources) -> Self {
        let key = KafkaKey {
            bootstrap: config.bootstrap.clone(),
            tls: config.tls.clone(),
            sasl: config.sasl.clone(),
        };
        let source = sources
            .inner
            .kafka
            .get_or_insert(&key, || KafkaSource::new(&key, sources.limit()));
        KafkaScaler {
            config,
            source,
            previous: Mutex::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub async fn poll(&self, common: &Common, metric: &str) -> Result<Poll, crate::ScalerError> {
        let _permit = self.source.limit.acquire().await;
        let (lag, lag_with_persistent) = self.read(common).await?;
        Ok(Poll::one(
            common.name(metric),
            lag as f64,
            lag_with_persistent > self.config.activation_lag_threshold,
        ))
    }

    async fn read(&self, common: &Common) -> Result<(i64, i64), crate::ScalerError> {
        let cfg = &self.config;
        let timeout = common.timeout;
        let fail = |e: ReadError| {
            let kind = match e.error {
                WireError::Auth(_) => ErrorKind::Config,
                WireError::TimedOut => ErrorKind::Timeout,
                WireError::Io(_) | WireError::Protocol(_) => ErrorKind::Source,
            };
            common.error(kind, e.to_string())
        };
        let topics: Vec<String> = match &cfg.topic {
            Some(t) => vec![t.clone()],
            None => {
                let all = self
                    .source
                    .committed(&cfg.group, None, timeout)
                    .await
                    .map_err(fail)?;
                all.0.into_keys().collect()
            }
        };
        let layouts = self.source.metadata(&topics, timeout).await.map_err(fail)?;
        let partitions =
            select_partitions(cfg, layouts).map_err(|e| common.source_error(e.to_string()))?;
        let mut leaders: HashMap<String, HashMap<String, Vec<i32>>> = HashMap::new();
        let mut wanted: HashMap<String, Vec<i32>> = HashMap::new();
        for (topic, layout) in &partitions {
            for (p, leader) in &layout.partitions {
                let Some(leader) = leader else {
                    return Err(common
                        .source_error(format!("partition {p} of topic {topic:?} has no leader")));
                };
                leaders
                    .entry(leader.clone())
                    .or_default()
                    .entry(topic.clone())
                    .or_default()
                    .push(*p);
                wanted.entry(topic.clone()).or_default().push(*p);
            }
        }
        let (committed, latest) = tokio::join!(
            self.source.committed(&cfg.group, Some(&wanted), timeout),
            self.source.latest(leaders, timeout)
        );
        let (committed, latest) = (committed.map_err(fail)?, latest.map_err(fail)?);
        let mut previous = self.previous.lock().unwrap_or_else(PoisonError::into_inner);
        total_lag(cfg, &committed, &latest, &mut previous)
            .map_err(|e| common.source_error(e.to_string()))
    }
}

/// Why the lag could not be computed (KEDA's messages). The broker's per-topic and
/// per-partition errors arrive as its error names (`UnknownTopicOrPartition (error 3)`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
enum LagError {
    /// A `topic` was given but the metadata named another number of topics.
    #[error("expected only 1 topic metadata, got {0}")]
    TopicCount(usize),
    /// The broker reported an error for the topic.
    #[error("error describing topic {topic:?}: {error}")]
    Describe { topic: String, error: BrokerError },
    /// No partition left after `partitionLimitation`.
    #[error("expected at least one active partition within the topic '{0}'")]
    NoPartition(String),
    /// No committed offset for a partition (with the broker's error, when it gave one).
    #[error(
        "error finding offset block for topic {topic} and partition {partition}{}",
        error.map(|e| format!(": {e}")).unwrap_or_default()
    )]
    NoOffsetBlock {
        topic: String,
        partition: i32,
        error: Option<BrokerError>,
    },
}

/// The partitions to read per topic (with their leaders), after `partitionLimitation`; KEDA's
/// errors for a topic the cluster reports an error for and for a topic left with no partition.
fn select_partitions(
    cfg: &Config,
    layouts: HashMap<String, Result<TopicLayout, BrokerError>>,
) -> Result<HashMap<String, TopicLayout>, LagError> {
    if cfg.topic.is_some() && layouts.len() != 1 {
        return Err(LagError::TopicCount(layouts.len()));
    }
    let mut out = HashMap::with_capacity(layouts.len());
    for (topic, layout) in layouts {
        let layout = match layout {
            Ok(l) => l,
            Err(error) => return Err(LagError::Describe { topic, error }),
        };
        let partitions: Vec<(i32, Option<String>)> = layout
            .partitions
            .into_iter()
            .filter(|(p, _)| cfg.partitions.as_ref().is_none_or(|l| l.contains(p)))
            .collect();
        if partitions.is_empty() {
            return Err(LagError::NoPartition(topic));
        }
        out.insert(topic, TopicLayout { partitions });
    }
    Ok(out)
}

/// KEDA's getTotalLag: (the lag reported, the lag that decides activity).
fn total_lag(
    cfg: &Config,
    committed: &Committed,
    latest: &HashMap<String, HashMap<i32, i64>>,
    previous: &mut HashMap<(String, i32), i64>,
) -> Result<(i64, i64), LagError> {
    let mut total: i64 = 0;
    let mut total_with_persistent: i64 = 0;
    let mut partitions: i64 = 0;
    let mut with_lag: i64 = 0;
    for (topic, offsets) in latest {
        for (&partition, &latest_offset) in offsets {
            let (lag, with_persistent) =
                partition_lag(cfg, topic, partition, latest_offset, committed, previous)?;
            total = total.saturating_add(lag);
            total_with_persistent = total_with_persistent.saturating_add(with_persistent);
            if lag > 0 {
                with_lag += 1;
            }
        }
        partitions += offsets.len() as i64;
    }
    if !cfg.allow_idle_consumers || cfg.limit_to_partitions_with_lag || cfg.ensure_even_distribution
    {
        let threshold = cfg.lag_threshold.max(1);
        let mut upper = partitions;
        if cfg.ensure_even_distribution {
            total = next_balancing_factor(total, partitions, threshold).saturating_mul(threshold);
        }
        if cfg.limit_to_partitions_with_lag {
            upper = with_lag;
        }
        if total / threshold > upper {
            total = upper.saturating_mul(threshold);
        }
    }
    Ok((total, total_with_persistent))
}

/// KEDA's getLagForPartition.
fn partition_lag(
    cfg: &Config,
    topic: &str,
    partition: i32,
    latest: i64,
    committed: &Committed,
    previous: &mut HashMap<(String, i32), i64>,
) -> Result<(i64, i64), LagError> {
    let Some(block) = committed.0.get(topic).and_then(|t| t.get(&partition)) else {
        return Err(LagError::NoOffsetBlock {
            topic: topic.to_owned(),
            partition,
            error: None,
        });
    };
    let consumer = match block {
        Ok(o) => *o,
        Err(e) => {
            return Err(LagError::NoOffsetBlock {
                topic: topic.to_owned(),
                partition,
                error: Some(*e),
            });
        }
    };
    if consumer == -1 {
        match cfg.reset {
            ResetPolicy::Latest => {
                let lag = i64::from(!cfg.scale_to_zero_on_invalid_offset);
                return Ok((lag, lag));
            }
            ResetPolicy::Earliest if cfg.scale_to_zero_on_invalid_offset => return Ok((0, 0)),
            ResetPolicy::Earliest => return Ok((latest, latest)),
        }
    }
    let lag = latest.saturating_sub(consumer);
    if cfg.exclude_persistent_lag {
        match previous.insert((topic.to_owned(), partition), consumer) {
            Some(before) if before == consumer => return Ok((0, lag)),
            _ => {}
        }
    }
    Ok((lag, lag))
}

/// The smallest factor of `partitions` whose share of `threshold` covers `lag` (KEDA's
/// getNextFactorThatBalancesConsumersToTopicPartitions).
fn next_balancing_factor(lag: i64, partitions: i64, threshold: i64) -> i64 {
    let mut factors: Vec<i64> = Vec::new();
    let mut i: i64 = 1;
    while i.saturating_mul(i) <= partitions {
        if partitions % i == 0 {
            factors.push(i);
            if i != partitions / i {
                factors.push(partitions / i);
            }
        }
        i += 1;
    }
    factors.sort_unstable();
    factors
        .into_iter()
        .find(|f| f.saturating_mul(threshold) >= lag)
        .unwrap_or(partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            bootstrap: vec!["127.0.0.1:9092".into()],
            group: "g".into(),
            topic: Some("t".into()),
            partitions: None,
            lag_threshold: 10,
            activation_lag_threshold: 0,
            reset: ResetPolicy::Latest,
            allow_idle_consumers: false,
            exclude_persistent_lag: false,
            scale_to_zero_on_invalid_offset: false,
            limit_to_partitions_with_lag: false,
            ensure_even_distribution: false,
            tls: None,
            sasl: None,
        }
    }

    fn offsets(
        latest: &[i64],
        committed: &[i64],
    ) -> (Committed, HashMap<String, HashMap<i32, i64>>) {
        let mut c = Committed::default();
        let mut l = HashMap::new();
        for (i, (lo, co)) in latest.iter().zip(committed).enumerate() {
            l.entry("t".to_owned())
                .or_insert_with(HashMap::new)
                .insert(i as i32, *lo);
            c.0.entry("t".to_owned())
                .or_default()
                .insert(i as i32, Ok(*co));
        }
        (c, l)
    }

    fn lag(cfg: &Config, latest: &[i64], committed: &[i64]) -> (i64, i64) {
        let (c, l) = offsets(latest, committed);
        total_lag(cfg, &c, &l, &mut HashMap::new()).unwrap()
    }

    #[test]
    fn lag_is_capped_at_one_consumer_per_partition_unless_idle_consumers_are_allowed() {
        let cfg = config();
        // 3 partitions, lag 100+50+0 = 150 > 3 × 10 → capped at 30.
        assert_eq!(lag(&cfg, &[100, 60, 5], &[0, 10, 5]), (30, 150));
        let idle = Config {
            allow_idle_consumers: true,
            ..config()
        };
        assert_eq!(lag(&idle, &[100, 60, 5], &[0, 10, 5]), (150, 150));
        // Under the cap nothing changes.
        assert_eq!(lag(&cfg, &[7, 8, 5], &[0, 0, 5]), (15, 15));
    }

    #[test]
    fn partitions_without_a_committed_offset_follow_the_reset_policy() {
        // latest: lag 1 (0 with scaleToZeroOnInvalidOffset), whatever the latest offset.
        assert_eq!(lag(&config(), &[40, 2], &[-1, 2]), (1, 1));
        let zero = Config {
            scale_to_zero_on_invalid_offset: true,
            ..config()
        };
        assert_eq!(lag(&zero, &[40, 2], &[-1, 2]), (0, 0));
        // earliest: the whole partition (0 with scaleToZeroOnInvalidOffset).
        let earliest = Config {
            reset: ResetPolicy::Earliest,
            allow_idle_consumers: true,
            ..config()
        };
        assert_eq!(lag(&earliest, &[40, 2], &[-1, 2]), (40, 40));
        let earliest_zero = Config {
            scale_to_zero_on_invalid_offset: true,
            ..earliest
        };
        assert_eq!(lag(&earliest_zero, &[40, 2], &[-1, 2]), (0, 0));
    }

    #[test]
    fn persistent_lag_is_excluded_from_the_metric_but_not_from_activity() {
        let cfg = Config {
            exclude_persistent_lag: true,
            allow_idle_consumers: true,
            ..config()
        };
        let mut previous = HashMap::new();
        let (c, l) = offsets(&[10, 20], &[4, 5]);
        // First sight: counted.
        assert_eq!(total_lag(&cfg, &c, &l, &mut previous), Ok((21, 21)));
        // The consumer has not moved: its lag is persistent.
        assert_eq!(total_lag(&cfg, &c, &l, &mut previous), Ok((0, 21)));
        // Partition 1's consumer moved: counted again.
        let (c, l) = offsets(&[10, 20], &[4, 6]);
        assert_eq!(total_lag(&cfg, &c, &l, &mut previous), Ok((14, 20)));
    }

    #[test]
    fn limit_to_partitions_with_lag_caps_at_the_partitions_that_lag() {
        let cfg = Config {
            limit_to_partitions_with_lag: true,
            ..config()
        };
        // 4 partitions, 1 lagging by 100: one consumer's worth.
        assert_eq!(lag(&cfg, &[100, 5, 5, 5], &[0, 5, 5, 5]), (10, 100));
    }

    #[test]
    fn even_distribution_rounds_up_to_a_factor_of_the_partitions() {
        let cfg = Config {
            ensure_even_distribution: true,
            ..config()
        };
        // 6 partitions (factors 1, 2, 3, 6), lag 25 → 3 consumers → 30.
        assert_eq!(
            lag(&cfg, &[25, 0, 0, 0, 0, 0], &[0, 0, 0, 0, 0, 0]),
            (30, 25)
        );
        assert_eq!(next_balancing_factor(0, 6, 10), 1);
        assert_eq!(next_balancing_factor(61, 6, 10), 6);
        assert_eq!(next_balancing_factor(5, 0, 10), 0);
    }

    #[test]
    fn a_partition_missing_from_the_committed_offsets_is_an_error() {
        let (mut c, l) = offsets(&[10, 20], &[4, 5]);
        c.0.entry("t".to_owned()).or_default().remove(&1);
        let e = total_lag(&config(), &c, &l, &mut HashMap::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "error finding offset block for topic t and partition 1"
        );
        c.0.entry("t".to_owned())
            .or_default()
            .insert(1, Err(BrokerError(3)));
        let e = total_lag(&config(), &c, &l, &mut HashMap::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "error finding offset block for topic t and partition 1: UnknownTopicOrPartition (error 3)"
        );
    }

    #[test]
    fn hostile_offsets_saturate_instead_of_overflowing() {
        let cfg = Config {
            allow_idle_consumers: true,
            ..config()
        };
        assert_eq!(lag(&cfg, &[i64::MAX, i64::MAX], &[i64::MIN, 0]).0, i64::MAX);
    }

    #[test]
    fn partition_limitation_reads_lists_and_ranges() {
        assert_eq!(
            parse_partition_limitation("0, 2,4-6"),
            Ok(vec![0, 2, 4, 5, 6])
        );
        assert!(parse_partition_limitation("1-2-3").is_err());
        assert!(parse_partition_limitation("a").is_err());
        assert!(parse_partition_limitation("0-2000000000").is_err());
    }

    #[test]
    fn versions_follow_sarama() {
        for ok in ["2.8.1", "1.0.0", "0.10.2.0", "3.9.0"] {
            assert!(is_kafka_version(ok), "{ok}");
        }
        for bad in ["2.8", "0.10.2", "2.8.1.0", "x.y.z", "", "1.0.a"] {
            assert!(!is_kafka_version(bad), "{bad}");
        }
    }
}
