//! `nats-jetstream`: consumer lag (pending plus ack-pending messages) from a NATS server's
//! monitoring endpoint (`/jsz`). In a cluster the consumer's leader node is found through
//! `/varz` and queried directly, as KEDA does.

use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::error::{ErrorKind, ParamSource};
use crate::metric::{ExternalMetric, MetricSpec, Poll, metric_name, normalize};
use crate::params::{META, Params};
use crate::scalers::http::{self, HttpSource, excerpt, fetch};
use crate::sources::Sources;
use crate::tls::TlsOptions;
use crate::trigger::Common;

use ParamSource::{Auth, Metadata};

/// A `nats-jetstream` trigger.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    endpoint: String,
    scheme: &'static str,
    account: String,
    account_id: String,
    stream: String,
    consumer: String,
    lag_threshold: i64,
    activation: i64,
}

pub(crate) fn parse(p: &mut Params<'_>) -> Config {
    let account = p.opt_str(&["account"], &[Auth, Metadata]);
    let account_id = p.opt_str(&["accountID"], &[Auth, Metadata]);
    let stream = p.req_str(&["stream"], META);
    let consumer = p.req_str(&["consumer"], META);
    let lag_threshold = p.i64_or("lagThreshold", META, 10);
    let activation = p.i64_or("activationLagThreshold", META, 0);
    let https = p.bool_or("useHttps", META, false);
    let endpoint = p.req_str(&["natsServerMonitoringEndpoint"], &[Auth, Metadata]);
    if endpoint.contains("://") || endpoint.contains('/') {
        p.fail_param(
            ErrorKind::Config,
            "natsServerMonitoringEndpoint",
            META,
            "must be host:port of the monitoring endpoint, without scheme or path (use useHttps for HTTPS)",
        );
    }
    // KEDA's parser requires one of the two (`parseNATSJetStreamMetadata`).
    if account.is_none() && account_id.is_none() {
        p.fail(
            ErrorKind::Config,
            "no account name or id given: set account (\"$G\" is the global account) or accountID",
        );
    }
    let account = account.unwrap_or_default();
    let account_id = account_id.unwrap_or_else(|| account.clone());
    Config {
        endpoint,
        scheme: if https { "https" } else { "http" },
        account,
        account_id,
        stream,
        consumer,
        lag_threshold,
        activation,
    }
}

impl Config {
    pub fn metric_specs(&self, common: &Common) -> Vec<MetricSpec> {
        vec![MetricSpec::External(ExternalMetric::new(
            metric_name(
                common.index,
                &normalize(&format!("nats-jetstream-{}", self.stream)),
            ),
            common.metric_type.clone(),
            self.lag_threshold as f64,
        ))]
    }

    fn jsz_url(&self, host: &str) -> String {
        let acc: String =
            url::form_urlencoded::byte_serialize(self.account_id.as_bytes()).collect();
        format!(
            "{}://{host}/jsz?acc={acc}&config=true&consumers=true",
            self.scheme
        )
    }

    fn varz_url(&self, host: &str) -> String {
        format!("{}://{host}/varz", self.scheme)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Jsz {
    account_details: Vec<Account>,
    meta_cluster: MetaCluster,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MetaCluster {
    cluster_size: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Account {
    id: String,
    name: String,
    stream_detail: Vec<Stream>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Stream {
    name: String,
    state: StreamState,
    consumer_detail: Vec<Consumer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StreamState {
    last_seq: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Consumer {
    name: String,
    num_ack_pending: i64,
    num_pending: i64,
    cluster: ConsumerCluster,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ConsumerCluster {
    leader: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Varz {
    server_name: String,
    connect_urls: Vec<String>,
    cluster: VarzCluster,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct VarzCluster {
    urls: Vec<String>,
}

/// What a `/jsz` answer says about the trigger's stream and consumer.
enum Found {
    /// The consumer's lag and its cluster leader (empty outside clusters).
    Consumer {
        lag: i64,
        leader: String,
    },
    /// The stream exists but the consumer does not: the stream's last sequence stands in.
    StreamOnly {
        last_seq: i64,
    },
    NoStream,
}

/// A built `nats-jetstream` trigger.
pub(crate) struct NatsScaler {
    config: Config,
    source: Arc<HttpSource>,
    /// The bound of calls to the monitoring endpoint's host.
    limit: Arc<crate::sources::Limit>,
    /// The consumer leader's monitoring host, once found in a cluster.
    leader_host: Mutex<Option<(String, String)>>,
}

impl NatsScaler {
    pub fn new(config: Config, sources: &Sources) -> Self {
        let source = http::client(sources, TlsOptions::default());
        let limit = source.limit_for(&config.jsz_url(&config.endpoint));
        NatsScaler {
            config,
            source,
            limit,
            leader_host: Mutex::new(None),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub async fn poll(&self, common: &Common, metric: &str) -> Result<Poll, crate::ScalerError> {
        let _permit = self.limit.acquire().await;
        let lag = self.lag(common).await?;
        Ok(Poll::one(
            common.name(metric),
            lag as f64,
            lag > self.config.activation,
        ))
    }

    async fn lag(&self, common: &Common) -> Result<i64, crate::ScalerError> {
        let cfg = &self.config;
        let cached = self.leader_host.lock().await.clone();
        if let Some((host, leader)) = &cached {
            let jsz = self.get::<Jsz>(common, &cfg.jsz_url(host)).await?;
            if let Found::Consumer { lag, leader: now } = self.find(&jsz)
                && &now == leader
            {
                return Ok(lag);
            }
            *self.leader_host.lock().await = None;
        }
        let jsz = self.get::<Jsz>(common, &cfg.jsz_url(&cfg.endpoint)).await?;
        let found = self.find(&jsz);
        if jsz.meta_cluster.cluster_size <= 1 {
            return self.answer(common, found);
        }
        // In a cluster only the consumer's leader has its current state: find that node.
        let Found::Consumer { leader, .. } = &found else {
            return self.answer(common, found);
        };
        let varz = self
            .get::<Varz>(common, &cfg.varz_url(&cfg.endpoint))
            .await?;
        if varz.server_name == *leader {
            return self.answer(common, found);
        }
        let port = cfg.endpoint.rsplit_once(':').map(|(_, p)| p.to_owned());
        let nodes: Vec<String> = if varz.connect_urls.is_empty() {
            varz.cluster.urls.clone()
        } else {
            varz.connect_urls.clone()
        };
        for node in nodes {
            let host = node.rsplit_once(':').map_or(node.as_str(), |(h, _)| h);
            let host = match &port {
                Some(p) => format!("{host}:{p}"),
                None => host.to_owned(),
            };
            let Ok(node_varz) = self.get::<Varz>(common, &cfg.varz_url(&host)).await else {
                continue;
            };
            if node_varz.server_name != *leader {
                continue;
            }
            let node_jsz = self.get::<Jsz>(common, &cfg.jsz_url(&host)).await?;
            let found = self.find(&node_jsz);
            if let Found::Consumer { leader, .. } = &found {
                *self.leader_host.lock().await = Some((host, leader.clone()));
            }
            return self.answer(common, found);
        }
        Err(common.source_error(format!(
            "leader node not found for consumer {}",
            cfg.consumer
        )))
    }

    fn find(&self, jsz: &Jsz) -> Found {
        let cfg = &self.config;
        for account in &jsz.account_details {
            if account.id != cfg.account_id && account.name != cfg.account {
                continue;
            }
            for stream in &account.stream_detail {
                if stream.name != cfg.stream {
                    continue;
                }
                for consumer in &stream.consumer_detail {
                    if consumer.name == cfg.consumer {
                        return Found::Consumer {
                            lag: consumer.num_pending + consumer.num_ack_pending,
                            leader: consumer.cluster.leader.clone(),
                        };
                    }
                }
                return Found::StreamOnly {
                    last_seq: stream.state.last_seq,
                };
            }
        }
        Found::NoStream
    }

    fn answer(&self, common: &Common, found: Found) -> Result<i64, crate::ScalerError> {
        match found {
            Found::Consumer { lag, .. } => Ok(lag),
            Found::StreamOnly { last_seq } => Ok(last_seq),
            Found::NoStream => Err(common.source_error(format!(
                "stream {:?} not found in account {:?}",
                self.config.stream, self.config.account
            ))),
        }
    }

    async fn get<T: for<'de> Deserialize<'de>>(
        &self,
        common: &Common,
        url: &str,
    ) -> Result<T, crate::ScalerError> {
        let client = self
            .source
            .client()
            .map_err(|e| common.error(ErrorKind::Config, e.to_string()))?;
        let answer = fetch(client.get(url)).await.map_err(|e| {
            common.source_error(format!(
                "unable to access the NATS monitoring endpoint: {e}"
            ))
        })?;
        if !answer.status.is_success() {
            return Err(common.source_error(format!(
                "the NATS monitoring endpoint returned {}: {}",
                answer.status,
                excerpt(&answer.body)
            )));
        }
        serde_json::from_slice(&answer.body).map_err(|e| {
            common.source_error(format!(
                "the NATS monitoring endpoint answered unreadable JSON: {e}"
            ))
        })
    }
}
