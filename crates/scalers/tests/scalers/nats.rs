//! `nats-jetstream` against nats-server processes started by the tests (monitoring enabled),
//! single and clustered.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use ringscale_scalers::{ErrorKind, MetricSpec, Sources};

use crate::common::*;

struct Nats {
    client_url: String,
    monitor: String,
    _proc: Proc,
    _dir: TempDir,
}

/// A port free on every given loopback address.
fn port_free_on(hosts: &[&str]) -> u16 {
    for _ in 0..50 {
        let candidate = free_port();
        if hosts
            .iter()
            .all(|h| std::net::TcpListener::bind((*h, candidate)).is_ok())
        {
            return candidate;
        }
    }
    panic!("no common free port on {hosts:?}");
}

async fn start(host: &str, client: u16, monitor: u16, extra: &[String]) -> Option<Nats> {
    if !program("nats-server", "NATS server for the nats-jetstream tests") {
        return None;
    }
    let dir = TempDir::new("nats");
    let mut args: Vec<String> = vec![
        "-a".into(),
        host.into(),
        "-p".into(),
        client.to_string(),
        "-m".into(),
        monitor.to_string(),
        "-js".into(),
        "-sd".into(),
        dir.0.display().to_string(),
    ];
    args.extend_from_slice(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proc = Proc::spawn("nats-server", &args);
    let monitor_addr = format!("{host}:{monitor}");
    eventually(10, || {
        let monitor_addr = monitor_addr.clone();
        async move {
            tokio::net::TcpStream::connect(&monitor_addr)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await;
    Some(Nats {
        client_url: format!("nats://{host}:{client}"),
        monitor: monitor_addr,
        _proc: proc,
        _dir: dir,
    })
}

/// Creates stream ORDERS (subjects orders.>) with `messages` messages, a durable pull consumer
/// `workers`, and leaves `unacked` messages delivered but unacknowledged.
async fn fill(url: &str, replicas: usize, messages: usize, unacked: usize) -> jetstream::Context {
    let client = eventually(20, || async {
        async_nats::connect(url).await.map_err(|e| e.to_string())
    })
    .await;
    let js = jetstream::new(client);
    let stream = eventually(30, || {
        let js = js.clone();
        async move {
            js.get_or_create_stream(stream::Config {
                name: "ORDERS".into(),
                subjects: vec!["orders.>".into()],
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())
        }
    })
    .await;
    for i in 0..messages {
        js.publish("orders.new", format!("order {i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let consumer = stream
        .get_or_create_consumer(
            "workers",
            consumer::pull::Config {
                durable_name: Some("workers".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut batch = consumer
        .fetch()
        .max_messages(unacked)
        .messages()
        .await
        .unwrap();
    let mut got = 0;
    while got < unacked {
        let Some(m) = batch.next().await else { break };
        m.unwrap();
        got += 1;
    }
    js
}

#[tokio::test]
async fn consumer_lag_is_pending_plus_ack_pending() {
    let host = "127.0.0.1";
    let Some(nats) = start(host, free_port(), free_port(), &[]).await else {
        return;
    };
    let js = fill(&nats.client_url, 1, 8, 3).await;
    let sources = Sources::default();
    let scaler = build(
        &input(
            "nats-jetstream",
            &[
                ("natsServerMonitoringEndpoint", &nats.monitor),
                ("account", "$G"),
                ("stream", "ORDERS"),
                ("consumer", "workers"),
                ("lagThreshold", "4"),
                ("activationLagThreshold", "8"),
            ],
        ),
        &sources,
    );
    let specs = scaler.metric_specs().await.unwrap();
    let MetricSpec::External(m) = &specs[0] else {
        panic!()
    };
    assert_eq!(
        (m.name.as_str(), m.target_quantity().as_str()),
        ("s0-nats-jetstream-ORDERS", "4")
    );
    assert_eq!(
        value(&scaler).await,
        (8.0, false),
        "5 pending + 3 unacknowledged; not above 8"
    );
    js.publish("orders.new", "one more".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(value(&scaler).await, (9.0, true));

    // Account "$G" named explicitly; a consumer that does not exist stands in the stream's last
    // sequence; a missing stream or a wrong account is an error.
    let explicit = build(
        &input(
            "nats-jetstream",
            &[
                ("natsServerMonitoringEndpoint", &nats.monitor),
                ("account", "$G"),
                ("stream", "ORDERS"),
                ("consumer", "workers"),
            ],
        ),
        &sources,
    );
    assert_eq!(value(&explicit).await.0, 9.0);
    let no_consumer = build(
        &input(
            "nats-jetstream",
            &[
                ("natsServerMonitoringEndpoint", &nats.monitor),
                ("account", "$G"),
                ("stream", "ORDERS"),
                ("consumer", "later"),
            ],
        ),
        &sources,
    );
    assert_eq!(value(&no_consumer).await.0, 9.0);
    for (stream, account) in [("NOPE", "$G"), ("ORDERS", "other")] {
        let scaler = build(
            &input(
                "nats-jetstream",
                &[
                    ("natsServerMonitoringEndpoint", &nats.monitor),
                    ("stream", stream),
                    ("consumer", "workers"),
                    ("account", account),
                ],
            ),
            &sources,
        );
        let err = poll(&scaler).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Source);
        assert!(err.to_string().contains("not found"), "{err}");
    }
}

#[tokio::test]
async fn nats_parameters_and_outages() {
    let errors = problems(&input("nats-jetstream", &[("lagThreshold", "ten")]));
    assert_problem(&errors, "stream", "missing required parameter");
    assert_problem(&errors, "consumer", "missing required parameter");
    assert_problem(
        &errors,
        "natsServerMonitoringEndpoint",
        "missing required parameter",
    );
    assert_problem(&errors, "lagThreshold", "is not an integer");
    // KEDA's parser: an account name or id is required ("$G" is the global account).
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("no account name or id given")),
        "{errors:?}"
    );
    let errors = problems(&input(
        "nats-jetstream",
        &[
            ("natsServerMonitoringEndpoint", "http://nats:8222"),
            ("stream", "s"),
            ("consumer", "c"),
        ],
    ));
    assert_problem(&errors, "natsServerMonitoringEndpoint", "without scheme");

    let sources = Sources::default();
    let down = build(
        &input(
            "nats-jetstream",
            &[
                ("natsServerMonitoringEndpoint", &refused_address()),
                ("account", "$G"),
                ("stream", "s"),
                ("consumer", "c"),
            ],
        ),
        &sources,
    );
    assert_down(
        &down,
        ErrorKind::Source,
        "unable to access the NATS monitoring endpoint",
    )
    .await;
    let hole = Blackhole::start().await;
    let mut slow = input(
        "nats-jetstream",
        &[
            ("natsServerMonitoringEndpoint", &hole.addr.to_string()),
            ("account", "$G"),
            ("stream", "s"),
            ("consumer", "c"),
        ],
    );
    slow.default_timeout = Duration::from_millis(300);
    assert_down(&build(&slow, &sources), ErrorKind::Timeout, "within 300ms").await;
}

#[tokio::test]
async fn in_a_cluster_the_consumer_leader_is_asked() {
    // Three servers on three loopback addresses sharing ports, as pods share ports in a cluster.
    let hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
    if std::net::TcpListener::bind((hosts[2], 0)).is_err() {
        eprintln!("SKIP: loopback addresses 127.0.0.2-4 are not usable here");
        return;
    }
    let client = port_free_on(&hosts);
    let monitor = port_free_on(&hosts);
    let route = port_free_on(&hosts);
    let routes = hosts
        .iter()
        .map(|h| format!("nats://{h}:{route}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut servers = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let extra = vec![
            "--server_name".to_owned(),
            format!("node{i}"),
            "--cluster_name".to_owned(),
            "ringscale".to_owned(),
            "--cluster".to_owned(),
            format!("nats://{host}:{route}"),
            "--routes".to_owned(),
            routes.clone(),
        ];
        let Some(server) = start(host, client, monitor, &extra).await else {
            return;
        };
        servers.push(server);
    }
    let _js = fill(&servers[0].client_url, 3, 6, 2).await;
    let sources = Sources::default();
    // Whichever node is asked, the answer is the leader's view: 4 pending + 2 unacknowledged.
    for server in &servers {
        let scaler = build(
            &input(
                "nats-jetstream",
                &[
                    ("natsServerMonitoringEndpoint", &server.monitor),
                    ("account", "$G"),
                    ("stream", "ORDERS"),
                    ("consumer", "workers"),
                ],
            ),
            &sources,
        );
        let lag = eventually(20, || async {
            match poll(&scaler).await {
                Ok(p) if p.values[0].value == 6.0 => Ok(p.values[0].value),
                Ok(p) => Err(format!("lag {}", p.values[0].value)),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        assert_eq!(lag, 6.0);
        // A second poll uses the remembered leader.
        assert_eq!(value(&scaler).await.0, 6.0);
    }
}
