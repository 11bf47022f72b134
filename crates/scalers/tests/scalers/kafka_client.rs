//! A minimal Kafka client for setting up tests and benchmarks — create topics, produce, commit
//! offsets — one request at a time, with the protocol crate's message types and none of the
//! code under test; and where the Kafka-compatible brokers installed from PyPI live.
//!
//! Shared by `tests/scalers/kafka.rs` and `benches/kafka_triggers.rs` (through `#[path]`).

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, GroupId, OffsetCommitRequest,
    OffsetCommitResponse, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader,
    TopicName,
    create_topics_request::CreatableTopic,
    offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic},
    produce_request::{PartitionProduceData, TopicProduceData},
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The broker program `var` names, or the one a Python package ships at `module`/`rel`: the
/// binary itself, not a wrapper script (a wrapper killed at the end of a test would leave the
/// broker running).
pub fn broker_program(var: &str, module: &str, rel: &str) -> String {
    if let Ok(p) = std::env::var(var) {
        return p;
    }
    let script = format!(
        "import os, {module}; print(os.path.join(os.path.dirname({module}.__file__), '{rel}'))"
    );
    std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| rel.rsplit('/').next().unwrap_or(rel).to_owned())
}

pub fn noida_program() -> String {
    broker_program("RINGSCALE_NOIDA_DB", "noida_db", "noida-db")
}

/// A minimal Kafka client for setting up the tests: one request at a time.
pub struct Client {
    stream: TcpStream,
    next: i32,
}

impl Client {
    pub async fn connect(addr: &str) -> Result<Client, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        Ok(Client { stream, next: 0 })
    }

    pub async fn call<Req: Encodable + HeaderVersion, Resp: Decodable + HeaderVersion>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> Result<Resp, String> {
        self.next += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.next)
            .with_client_id(Some(StrBytes::from_static_str("ringscale-test")));
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, Req::header_version(version))
            .map_err(|e| e.to_string())?;
        req.encode(&mut buf, version).map_err(|e| e.to_string())?;
        let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&buf);
        self.stream
            .write_all(&frame)
            .await
            .map_err(|e| e.to_string())?;
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .await
            .map_err(|e| e.to_string())?;
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream
            .read_exact(&mut body)
            .await
            .map_err(|e| e.to_string())?;
        let mut body = Bytes::from(body);
        ResponseHeader::decode(&mut body, Resp::header_version(version))
            .map_err(|e| e.to_string())?;
        Resp::decode(&mut body, version).map_err(|e| e.to_string())
    }

    /// Creates `topic` (an existing one is fine).
    pub async fn create_topic(&mut self, topic: &str, partitions: i32) -> Result<(), String> {
        let req = CreateTopicsRequest::default()
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_num_partitions(partitions)
                    .with_replication_factor(1),
            ])
            .with_timeout_ms(5000);
        let resp: CreateTopicsResponse = self.call(ApiKey::CreateTopics, 2, &req).await?;
        match resp.topics.first().map(|t| t.error_code) {
            Some(0 | 36) => Ok(()), // 36: TOPIC_ALREADY_EXISTS
            other => Err(format!("creating {topic}: error {other:?}")),
        }
    }

    /// Produces `n` records to one partition, one record per request (Tansu's latest offset is
    /// wrong after a batch of several).
    pub async fn produce(&mut self, topic: &str, partition: i32, n: usize) {
        for i in 0..n {
            let record = Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: 0,
                sequence: -1,
                timestamp: 0,
                key: None,
                value: Some(Bytes::from(format!("record {i}"))),
                headers: Default::default(),
            };
            let mut records = BytesMut::new();
            RecordBatchEncoder::encode(
                &mut records,
                [&record],
                &RecordEncodeOptions {
                    version: 2,
                    compression: Compression::None,
                },
            )
            .unwrap();
            let req = ProduceRequest::default()
                .with_acks(1)
                .with_timeout_ms(5000)
                .with_topic_data(vec![
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                        .with_partition_data(vec![
                            PartitionProduceData::default()
                                .with_index(partition)
                                .with_records(Some(records.freeze())),
                        ]),
                ]);
            let resp: ProduceResponse = self.call(ApiKey::Produce, 3, &req).await.unwrap();
            let code = resp.responses[0].partition_responses[0].error_code;
            assert_eq!(code, 0, "producing to {topic}/{partition}");
        }
    }

    /// Commits offsets for `group` as a consumer outside any generation would.
    pub async fn commit(&mut self, group: &str, topic: &str, offsets: &[(i32, i64)]) {
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::from_static_str(""))
            .with_retention_time_ms(-1)
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partitions(
                        offsets
                            .iter()
                            .map(|(p, o)| {
                                OffsetCommitRequestPartition::default()
                                    .with_partition_index(*p)
                                    .with_committed_offset(*o)
                            })
                            .collect(),
                    ),
            ]);
        let resp: OffsetCommitResponse = self.call(ApiKey::OffsetCommit, 2, &req).await.unwrap();
        for t in &resp.topics {
            for p in &t.partitions {
                assert_eq!(
                    p.error_code, 0,
                    "committing {group} {topic}/{}",
                    p.partition_index
                );
            }
        }
    }
}
