//! Shared connections to event sources.
//!
//! Every distinct source (trigger type, address, credentials, TLS settings) gets one client or
//! pool, shared by all triggers that point at it and dropped when the last of them is dropped.
//! Each source bounds how many calls run against it at once.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::scalers::{
    amqp, aws, azure, etcd, external, http, kafka, kubernetes_workload, mysql, postgres, redis,
};

/// Limits of shared sources.
#[derive(Clone, Debug)]
pub struct SourcesConfig {
    /// Calls allowed to run at once against one source; more wait for a slot (within their
    /// timeout).
    pub per_source_concurrency: usize,
    /// Connections kept per SQL database source.
    pub sql_pool_size: usize,
    /// The replica's own AWS credentials and STS endpoint (`identityOwner: operator`, and the
    /// base for assuming `awsRoleArn`), read from the environment by default.
    pub aws: aws::AwsEnv,
    /// Lists pods for `kubernetes-workload` triggers (the operator's Kubernetes client); none
    /// outside the operator.
    pub pods: Option<kubernetes_workload::PodLister>,
}

impl Default for SourcesConfig {
    fn default() -> Self {
        SourcesConfig {
            per_source_concurrency: 64,
            sql_pool_size: 4,
            aws: aws::AwsEnv::from_env(),
            pods: None,
        }
    }
}

/// How many sources of each kind are alive, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceCounts {
    /// Redis servers, clusters and sentinel groups.
    pub redis: usize,
    /// PostgreSQL databases.
    pub postgres: usize,
    /// MySQL/MariaDB databases.
    pub mysql: usize,
    /// AMQP brokers.
    pub amqp: usize,
    /// HTTP clients (one per TLS configuration).
    pub http: usize,
    /// gRPC external scaler endpoints.
    pub grpc: usize,
    /// etcd clusters.
    pub etcd: usize,
    /// Kafka clusters (one per bootstrap list, TLS settings and credentials).
    pub kafka: usize,
    /// AWS credential caches (one per region and identity).
    pub aws: usize,
    /// Azure storage accounts (one per service endpoint and credential).
    pub azure: usize,
}

/// The registry of shared sources. Cheap to clone; clones share the registry.
#[derive(Clone)]
pub struct Sources {
    pub(crate) inner: Arc<SourcesInner>,
}

pub(crate) struct SourcesInner {
    pub config: SourcesConfig,
    pub redis: Shared<redis::RedisKey, redis::RedisSource>,
    pub postgres: Shared<postgres::PgKey, postgres::PgSource>,
    pub mysql: Shared<mysql::MySqlKey, mysql::MySqlSource>,
    pub amqp: Shared<amqp::AmqpKey, amqp::AmqpSource>,
    pub http: Shared<http::HttpKey, http::HttpSource>,
    pub grpc: Shared<external::GrpcKey, external::GrpcSource>,
    pub etcd: Shared<etcd::EtcdKey, etcd::EtcdSource>,
    pub kafka: Shared<kafka::KafkaKey, kafka::KafkaSource>,
    pub aws: Shared<aws::AwsKey, aws::AwsSource>,
    pub azure: Shared<azure::Account, azure::StorageSource>,
}

impl Sources {
    /// A registry with the given limits.
    pub fn new(config: SourcesConfig) -> Self {
        crate::tls::install_crypto_provider();
        Sources {
            inner: Arc::new(SourcesInner {
                config,
                redis: Shared::default(),
                postgres: Shared::default(),
                mysql: Shared::default(),
                amqp: Shared::default(),
                http: Shared::default(),
                grpc: Shared::default(),
                etcd: Shared::default(),
                kafka: Shared::default(),
                aws: Shared::default(),
                azure: Shared::default(),
            }),
        }
    }

    /// How many sources of each kind are alive.
    pub fn counts(&self) -> SourceCounts {
        let i = &self.inner;
        SourceCounts {
            redis: i.redis.live(),
            postgres: i.postgres.live(),
            mysql: i.mysql.live(),
            amqp: i.amqp.live(),
            http: i.http.live(),
            grpc: i.grpc.live(),
            etcd: i.etcd.live(),
            kafka: i.kafka.live(),
            aws: i.aws.live(),
            azure: i.azure.live(),
        }
    }

    /// Connections open to Kafka brokers, over every Kafka cluster: one per broker when the
    /// brokers advertise the addresses the triggers bootstrap from.
    pub fn kafka_connections(&self) -> usize {
        self.inner
            .kafka
            .values()
            .iter()
            .map(|s| s.open_connections())
            .sum()
    }

    pub(crate) fn limit(&self) -> Limit {
        Limit::new(self.inner.config.per_source_concurrency)
    }
}

impl Default for Sources {
    fn default() -> Self {
        Sources::new(SourcesConfig::default())
    }
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources")
            .field("config", &self.inner.config)
            .field("counts", &self.counts())
            .finish()
    }
}

/// A map of shared values that keeps only weak references: a value lives as long as some
/// trigger holds it.
pub(crate) struct Shared<K, V> {
    map: Mutex<HashMap<K, Weak<V>>>,
}

impl<K, V> Default for Shared<K, V> {
    fn default() -> Self {
        Shared {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone, V> Shared<K, V> {
    /// The live value for `key`, or a new one made by `make`.
    pub fn get_or_insert(&self, key: &K, make: impl FnOnce() -> V) -> Arc<V> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(value) = map.get(key).and_then(Weak::upgrade) {
            return value;
        }
        if map.len() >= 32 && map.len().is_power_of_two() {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let value = Arc::new(make());
        map.insert(key.clone(), Arc::downgrade(&value));
        value
    }

    /// The values alive now.
    pub fn values(&self) -> Vec<Arc<V>> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.values().filter_map(Weak::upgrade).collect()
    }

    /// How many values are alive.
    pub fn live(&self) -> usize {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.values().filter(|w| w.strong_count() > 0).count()
    }
}

/// One shared source's bound of concurrent calls, as an identity: what a poll's calls went
/// through ([`sources_used`]), so that a scheduler can keep the polls of one slow source from
/// holding every slot it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(u64);

static NEXT_SOURCE: AtomicU64 = AtomicU64::new(1);

tokio::task_local! {
    /// The sources the calls of the current [`sources_used`] scope went through.
    static USED: RefCell<Vec<SourceId>>;
}

/// Runs `fut` and returns, with its output, the sources whose bounds its calls entered (each
/// once, in order) — also those still waiting for a slot when it ended. Calls made from tasks
/// `fut` spawns are not seen.
pub async fn sources_used<F: Future>(fut: F) -> (F::Output, Vec<SourceId>) {
    USED.scope(RefCell::new(Vec::new()), async move {
        let output = fut.await;
        let used = USED.with(RefCell::take);
        (output, used)
    })
    .await
}

/// Bounds concurrent calls against one source.
#[derive(Debug)]
pub(crate) struct Limit {
    permits: Semaphore,
    id: SourceId,
}

impl Limit {
    pub fn new(permits: usize) -> Self {
        Limit {
            permits: Semaphore::new(permits.max(1)),
            id: SourceId(NEXT_SOURCE.fetch_add(1, Ordering::Relaxed)),
        }
    }

    /// Notes this source in the current [`sources_used`] scope, if any.
    fn note(&self) {
        let _ = USED.try_with(|used| {
            let mut used = used.borrow_mut();
            if !used.contains(&self.id) {
                used.push(self.id);
            }
        });
    }

    /// Waits for a slot. The semaphore is never closed, so this only fails if it were.
    pub async fn acquire(&self) -> Option<SemaphorePermit<'_>> {
        self.note();
        self.permits.acquire().await.ok()
    }

    /// A slot at once if one is free, else within `timeout` (no timer when a slot is free).
    pub async fn acquire_within(&self, timeout: Duration) -> Option<SemaphorePermit<'_>> {
        self.note();
        match self.permits.try_acquire() {
            Ok(permit) => Some(permit),
            Err(_) => within(timeout, self.permits.acquire()).await?.ok(),
        }
    }
}

/// Runs `fut` with a deadline, turning an elapsed deadline into `None`.
pub(crate) async fn within<T>(timeout: Duration, fut: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(timeout, fut).await.ok()
}
