//! A Kafka cluster as the `kafka` triggers share it: one connection per broker address (the
//! bootstrap servers and the brokers the metadata names), the group coordinators found so far,
//! and the three reads a poll makes — topic metadata, the group's committed offsets (from its
//! coordinator) and the partitions' latest offsets (from their leaders).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, GroupId, ListOffsetsRequest, MetadataRequest,
    MetadataResponse, OffsetFetchRequest, TopicName,
    list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
    metadata_request::MetadataRequestTopic,
    offset_fetch_request::OffsetFetchRequestTopic,
};
use kafka_protocol::protocol::StrBytes;

use super::wire::{BrokerError, Conn, Sasl, WireError, error_name};
use crate::sources::Limit;
use crate::tls::TlsOptions;

/// Versions of each API ringscale speaks, chosen for the fields it reads: Metadata up to v9 (v10
/// adds topic ids), ListOffsets up to v7, OffsetFetch v2..v7 (v2 reads all of a group's topics;
/// v8 batches groups), FindCoordinator up to v3 (v4 batches keys).
const METADATA: (i16, i16) = (1, 9);
const LIST_OFFSETS: (i16, i16) = (1, 7);
const OFFSET_FETCH: (i16, i16) = (2, 7);
const FIND_COORDINATOR: (i16, i16) = (0, 3);

/// Kafka's "latest offset" timestamp in ListOffsets.
const LATEST: i64 = -1;

/// Error codes after which the group's coordinator is looked up again.
const COORDINATOR_MOVED: [i16; 2] = [15, 16]; // COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR

/// Identity of a shared Kafka cluster client.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct KafkaKey {
    pub bootstrap: Vec<String>,
    pub tls: Option<TlsOptions>,
    pub sasl: Option<Sasl>,
}

/// A failed read, with what it was reading.
#[derive(Debug)]
pub(crate) struct ReadError {
    pub action: String,
    pub error: WireError,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.action, self.error)
    }
}

fn failed(action: impl Into<String>) -> impl FnOnce(WireError) -> ReadError {
    let action = action.into();
    move |error| ReadError { action, error }
}

/// One slot per broker address; connecting holds the slot's lock so that concurrent polls wait
/// for one connection instead of opening several.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Conn>>>>;

/// The client shared by every trigger reading one cluster with the same TLS and credentials.
pub(crate) struct KafkaSource {
    key: KafkaKey,
    /// The TLS configuration, or why it could not be made (reported on every connection).
    tls: Result<Option<Arc<rustls::ClientConfig>>, crate::tls::TlsError>,
    slots: Mutex<HashMap<String, Slot>>,
    /// Group → coordinator address.
    coordinators: Mutex<HashMap<String, String>>,
    /// The bootstrap server that answered last.
    current: AtomicUsize,
    pub limit: Limit,
}

/// A topic's partitions and their leaders' addresses.
#[derive(Debug, Default)]
pub(crate) struct TopicLayout {
    pub partitions: Vec<(i32, Option<String>)>,
}

impl KafkaSource {
    pub fn new(key: &KafkaKey, limit: Limit) -> Self {
        let tls = match &key.tls {
            None => Ok(None),
            Some(t) => t.client_config().map(|c| Some(Arc::new(c))),
        };
        KafkaSource {
            key: key.clone(),
            tls,
            slots: Mutex::default(),
            coordinators: Mutex::default(),
            current: AtomicUsize::new(0),
            limit,
        }
    }

    /// Connections currently open, for tests and benchmarks.
    pub fn open_connections(&self) -> usize {
        let slots: Vec<Slot> = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        slots
            .iter()
            .filter(|s| {
                s.try_lock()
                    .map(|c| c.as_ref().is_some_and(|c| !c.is_closed()))
                    .unwrap_or(true)
            })
            .count()
    }

    /// The open connection to `addr`, opening it if needed.
    async fn conn(&self, addr: &str, timeout: Duration) -> Result<Arc<Conn>, WireError> {
        let tls = match &self.tls {
            Ok(t) => t.as_ref(),
            Err(e) => return Err(WireError::Io(format!("TLS configuration: {e}"))),
        };
        let slot = Arc::clone(
            self.slots
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(addr.to_owned())
                .or_default(),
        );
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref()
            && !c.is_closed()
        {
            return Ok(Arc::clone(c));
        }
        *slot = None;
        let conn = Arc::new(Conn::open(addr, tls, self.key.sasl.as_ref(), timeout).await?);
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }

    /// A connection to any bootstrap server, starting with the one that answered last and
    /// passing over the ones that cannot be reached.
    async fn any_conn(&self, timeout: Duration) -> Result<Arc<Conn>, WireError> {
        let n = self.key.bootstrap.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut errors = Vec::new();
        let mut all_timed_out = n > 0;
        for k in 0..n {
            let i = (start + k) % n;
            match self.conn(&self.key.bootstrap[i], timeout).await {
                Ok(c) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(c);
                }
                // Wrong credentials are wrong on every server.
                Err(e @ WireError::Auth(_)) => return Err(e),
                Err(e) => {
                    all_timed_out &= e == WireError::TimedOut;
                    errors.push(e.to_string());
                }
            }
        }
        if all_timed_out {
            return Err(WireError::TimedOut);
        }
        Err(WireError::Io(if errors.is_empty() {
            "no bootstrap server".to_owned()
        } else {
            errors.join("; ")
        }))
    }

    /// Metadata of `topics` (all topics when empty, as KEDA's client asks for them), with each
    /// partition's leader address. Topics are never created by this request.
    pub async fn metadata(
        &self,
        topics: &[String],
        timeout: Duration,
    ) -> Result<HashMap<String, Result<TopicLayout, BrokerError>>, ReadError> {
        let conn = self
            .any_conn(timeout)
            .await
            .map_err(failed("connecting to the bootstrap servers"))?;
        let req = MetadataRequest::default()
            .with_topics((!topics.is_empty()).then(|| {
                topics
                    .iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        let resp: MetadataResponse = conn
            .call(&req, METADATA, timeout)
            .await
            .map_err(failed("describing topics"))?;
        let brokers: HashMap<i32, String> = resp
            .brokers
            .iter()
            .map(|b| (b.node_id.0, join_host_port(b.host.as_str(), b.port)))
            .collect();
        let mut out = HashMap::with_capacity(resp.topics.len());
        for t in resp.topics {
            let Some(name) = t.name else { continue };
            let layout = if t.error_code != 0 {
                Err(BrokerError(t.error_code))
            } else {
                Ok(TopicLayout {
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| {
                            let leader = (p.leader_id.0 >= 0)
                                .then(|| brokers.get(&p.leader_id.0).cloned())
                                .flatten();
                            (p.partition_index, leader)
                        })
                        .collect(),
                })
            };
            out.insert(name.0.as_str().to_owned(), layout);
        }
        Ok(out)
    }

    /// The connection to `group`'s coordinator, found with FindCoordinator the first time.
    async fn coordinator(&self, group: &str, timeout: Duration) -> Result<Arc<Conn>, ReadError> {
        let known = self
            .coordinators
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(group)
            .cloned();
        let addr = match known {
            Some(a) => a,
            None => {
                let conn = self
                    .any_conn(timeout)
                    .await
                    .map_err(failed("connecting to the bootstrap servers"))?;
                let resp = conn
                    .call(
                        &FindCoordinatorRequest::default()
                            .with_key(StrBytes::from_string(group.to_owned()))
                            .with_key_type(0),
                        FIND_COORDINATOR,
                        timeout,
                    )
                    .await
                    .map_err(failed(format!(
                        "finding the coordinator of group {group:?}"
                    )))?;
                if resp.error_code != 0 {
                    return Err(ReadError {
                        action: format!("finding the coordinator of group {group:?}"),
                        error: WireError::Io(error_name(resp.error_code)),
                    });
                }
                let addr = join_host_port(resp.host.as_str(), resp.port);
                self.coordinators
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(group.to_owned(), addr.clone());
                addr
            }
        };
        match self.conn(&addr, timeout).await {
            Ok(c) => Ok(c),
            Err(e) => {
                self.forget_coordinator(group);
                Err(ReadError {
                    action: format!("connecting to the coordinator of group {group:?}"),
                    error: e,
                })
            }
        }
    }

    fn forget_coordinator(&self, group: &str) {
        self.coordinators
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(group);
    }

    /// The group's committed offsets: of the given partitions, or of every partition the group
    /// committed to when `partitions` is `None`. A partition with nothing committed is -1.
    /// The coordinator is looked up again (once) when it moved.
    pub async fn committed(
        &self,
        group: &str,
        partitions: Option<&HashMap<String, Vec<i32>>>,
        timeout: Duration,
    ) -> Result<Committed, ReadError> {
        let req = OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
            .with_topics(partitions.map(|p| {
                p.iter()
                    .map(|(t, parts)| {
                        OffsetFetchRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.clone())))
                            .with_partition_indexes(parts.clone())
                    })
                    .collect()
            }));
        let action = || format!("listing the committed offsets of group {group:?}");
        let mut retried = false;
        loop {
            let conn = self.coordinator(group, timeout).await?;
            let resp = match conn.call(&req, OFFSET_FETCH, timeout).await {
                Ok(r) => r,
                Err(e) => {
                    self.forget_coordinator(group);
                    return Err(ReadError {
                        action: action(),
                        error: e,
                    });
                }
            };
            if resp.error_code != 0 {
                if COORDINATOR_MOVED.contains(&resp.error_code) {
                    self.forget_coordinator(group);
                    if !retried {
                        retried = true;
                        continue;
                    }
                }
                return Err(ReadError {
                    action: action(),
                    error: WireError::Io(error_name(resp.error_code)),
                });
            }
            let mut out = Committed::default();
            for t in resp.topics {
                let entry = out.0.entry(t.name.0.as_str().to_owned()).or_default();
                for p in t.partitions {
                    let v = if p.error_code != 0 {
                        Err(BrokerError(p.error_code))
                    } else {
                        Ok(p.committed_offset)
                    };
                    entry.insert(p.partition_index, v);
                }
            }
            return Ok(out);
        }
    }

    /// The latest offset of each partition, asked of each partition's leader (one request per
    /// leader, all at once).
    pub async fn latest(
        &self,
        leaders: HashMap<String, HashMap<String, Vec<i32>>>,
        timeout: Duration,
    ) -> Result<HashMap<String, HashMap<i32, i64>>, ReadError> {
        let calls = leaders.into_iter().map(|(addr, topics)| async move {
            let action = || format!("listing the latest offsets at {addr}");
            let conn = self.conn(&addr, timeout).await.map_err(failed(action()))?;
            let req = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(t, parts)| {
                            ListOffsetsTopic::default()
                                .with_name(TopicName(StrBytes::from_string(t)))
                                .with_partitions(
                                    parts
                                        .into_iter()
                                        .map(|p| {
                                            ListOffsetsPartition::default()
                                                .with_partition_index(p)
                                                .with_timestamp(LATEST)
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                );
            conn.call(&req, LIST_OFFSETS, timeout)
                .await
                .map_err(failed(action()))
        });
        let answers = futures_util::future::join_all(calls).await;
        let mut out: HashMap<String, HashMap<i32, i64>> = HashMap::new();
        for answer in answers {
            for t in answer?.topics {
                let topic = t.name.0.as_str().to_owned();
                for p in t.partitions {
                    if p.error_code != 0 {
                        return Err(ReadError {
                            action: format!(
                                "listing the latest offset of {topic}/{}",
                                p.partition_index
                            ),
                            error: WireError::Io(error_name(p.error_code)),
                        });
                    }
                    out.entry(topic.clone())
                        .or_default()
                        .insert(p.partition_index, p.offset);
                }
            }
        }
        Ok(out)
    }
}

/// Committed offsets by topic and partition (an error code's name where the partition has one).
#[derive(Debug, Default)]
pub(crate) struct Committed(pub HashMap<String, HashMap<i32, Result<i64, BrokerError>>>);

fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
