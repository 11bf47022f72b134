//! `rabbitmq` over AMQP and the management HTTP API against the local RabbitMQ.

use amqprs::BasicProperties;
use amqprs::channel::{
    BasicPublishArguments, Channel, QueueDeclareArguments, QueueDeleteArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use ringscale_scalers::{ErrorKind, MetricSpec, Sources};

use crate::common::*;

struct Broker {
    amqp: String,
    _conn: Connection,
    channel: Channel,
}

async fn broker() -> Option<Broker> {
    let addr = service("RabbitMQ", "RABBITMQ_ADDR", "127.0.0.1:5672").await?;
    let (host, port) = addr.rsplit_once(':').unwrap();
    let conn = Connection::open(&OpenConnectionArguments::new(
        host,
        port.parse().unwrap(),
        "guest",
        "guest",
    ))
    .await
    .unwrap();
    let channel = conn.open_channel(None).await.unwrap();
    Some(Broker {
        amqp: format!("amqp://guest:guest@{addr}/"),
        _conn: conn,
        channel,
    })
}

impl Broker {
    async fn queue(&self, name: &str, messages: usize) {
        self.channel
            .queue_declare(QueueDeclareArguments::new(name))
            .await
            .unwrap();
        for i in 0..messages {
            self.channel
                .basic_publish(
                    BasicProperties::default(),
                    format!("m{i}").into_bytes(),
                    BasicPublishArguments::new("", name),
                )
                .await
                .unwrap();
        }
    }

    async fn delete(&self, name: &str) {
        let _ = self
            .channel
            .queue_delete(QueueDeleteArguments::new(name))
            .await;
    }
}

#[tokio::test]
async fn amqp_queue_length_and_activation() {
    let Some(broker) = broker().await else {
        return;
    };
    let queue = unique("orders.high");
    broker.queue(&queue, 5).await;
    let sources = Sources::default();
    let scaler = build(
        &input(
            "rabbitmq",
            &[
                ("host", &broker.amqp),
                ("queueName", &queue),
                ("mode", "QueueLength"),
                ("value", "2"),
                ("activationValue", "5"),
            ],
        ),
        &sources,
    );
    let specs = scaler.metric_specs().await.unwrap();
    let MetricSpec::External(m) = &specs[0] else {
        panic!()
    };
    assert_eq!(m.name, format!("s0-rabbitmq-{}", queue.replace('.', "-")));
    assert_eq!(m.target_quantity(), "2");
    eventually(10, || async {
        match value(&scaler).await {
            (5.0, false) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    broker.queue(&queue, 1).await;
    eventually(10, || async {
        match value(&scaler).await {
            (6.0, true) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Credentials from the authentication override the URL's; the deprecated queueLength.
    let (_, rest) = broker.amqp.split_once('@').unwrap();
    let scaler = build(
        &input(
            "rabbitmq",
            &[
                ("hostFromEnv", "RABBIT_URL"),
                ("queueName", &queue),
                ("queueLength", "3"),
            ],
        )
        .with_env([("RABBIT_URL", format!("amqp://nobody:nothing@{rest}"))])
        .with_auth([("username", "guest"), ("password", "guest")]),
        &sources,
    );
    assert_eq!(value(&scaler).await.0, 6.0);
    assert_eq!(
        sources.counts().amqp,
        1,
        "the same broker and credentials share one connection"
    );

    // A missing queue is a source error; the shared channel recovers for the next poll.
    let missing = build(
        &input(
            "rabbitmq",
            &[
                ("host", &broker.amqp),
                ("queueName", "ringscale-no-such-queue"),
            ],
        ),
        &sources,
    );
    let err = poll(&missing).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Source);
    assert!(err.to_string().contains("ringscale-no-such-queue"), "{err}");
    let again = build(
        &input("rabbitmq", &[("host", &broker.amqp), ("queueName", &queue)]),
        &sources,
    );
    assert_eq!(value(&again).await.0, 6.0);
    broker.delete(&queue).await;
}

#[tokio::test]
async fn management_api_queue_length_rates_and_regex() {
    let Some(broker) = broker().await else {
        return;
    };
    let Some(mgmt) = service(
        "RabbitMQ management API",
        "RABBITMQ_MANAGEMENT_ADDR",
        "127.0.0.1:15672",
    )
    .await
    else {
        return;
    };
    let prefix = unique("ingest");
    let (a, b) = (format!("{prefix}-a"), format!("{prefix}-b"));
    broker.queue(&a, 3).await;
    broker.queue(&b, 7).await;
    let sources = Sources::default();
    let http = format!("http://guest:guest@{mgmt}/");
    let one = build(
        &input(
            "rabbitmq",
            &[
                ("host", &http),
                ("queueName", &a),
                ("mode", "QueueLength"),
                ("value", "1"),
            ],
        ),
        &sources,
    );
    // The management API refreshes its statistics every few seconds.
    eventually(30, || async {
        match value(&one).await {
            (3.0, true) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let sum = build(
        &input(
            "rabbitmq",
            &[
                ("host", &http),
                ("protocol", "http"),
                ("queueName", &format!("^{prefix}-.*$")),
                ("useRegex", "true"),
                ("value", "1"),
                ("mode", "QueueLength"),
            ],
        ),
        &sources,
    );
    let max = build(
        &input(
            "rabbitmq",
            &[
                ("host", &http),
                ("queueName", &format!("^{prefix}-.*$")),
                ("useRegex", "true"),
                ("operation", "max"),
                ("value", "1"),
                ("mode", "QueueLength"),
            ],
        ),
        &sources,
    );
    eventually(30, || async {
        match (value(&sum).await.0, value(&max).await.0) {
            (10.0, 7.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Ready messages only, and a rate mode (no traffic: rate 0, inactive).
    let ready = build(
        &input(
            "rabbitmq",
            &[
                ("host", &http),
                ("queueName", &b),
                ("excludeUnacknowledged", "true"),
                ("mode", "QueueLength"),
                ("value", "5"),
            ],
        ),
        &sources,
    );
    assert_eq!(value(&ready).await.0, 7.0);
    let rate = build(
        &input(
            "rabbitmq",
            &[
                ("host", &http),
                ("queueName", &b),
                ("mode", "DeliverGetRate"),
                ("value", "5"),
            ],
        ),
        &sources,
    );
    assert_eq!(value(&rate).await, (0.0, false));
    // The vhost from vhostName; a wrong vhost is a 404 from the API.
    let wrong = build(
        &input(
            "rabbitmq",
            &[
                ("host", &http),
                ("queueName", &b),
                ("vhostName", "nope"),
                ("mode", "QueueLength"),
                ("value", "5"),
            ],
        ),
        &sources,
    );
    let err = poll(&wrong).await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    assert!(
        !err.to_string().contains("guest:guest"),
        "credentials are not shown: {err}"
    );
    broker.delete(&a).await;
    broker.delete(&b).await;
}

#[tokio::test]
async fn rabbitmq_parameters_and_outages() {
    let errors = problems(&input(
        "rabbitmq",
        &[
            ("mode", "MessageRate"),
            ("value", "3"),
            ("host", "amqp://r/"),
        ],
    ));
    assert_problem(&errors, "queueName", "missing required parameter");
    assert_problem(
        &errors,
        "mode",
        "must be HTTP to use trigger mode MessageRate",
    );
    let errors = problems(&input(
        "rabbitmq",
        &[
            ("queueName", "q"),
            ("host", "amqp://r/"),
            ("useRegex", "true"),
            ("value", "5"),
        ],
    ));
    assert_problem(&errors, "useRegex", "only with the HTTP protocol");
    assert_problem(&errors, "mode", "mode must be specified");
    let errors = problems(&input(
        "rabbitmq",
        &[("queueName", "q"), ("host", "ftp://r/")],
    ));
    assert_problem(&errors, "host", "unknown host URL scheme");
    let errors = problems(&input(
        "rabbitmq",
        &[
            ("queueName", "q"),
            ("host", "http://r/"),
            ("queueLength", "5"),
            ("mode", "QueueLength"),
        ],
    ));
    assert_problem(&errors, "queueLength", "deprecated");
    let errors = problems(&input(
        "rabbitmq",
        &[
            ("queueName", "q"),
            ("host", "http://r/"),
            ("pageSize", "0"),
            ("mode", "Sideways"),
            ("value", "1"),
        ],
    ));
    assert_problem(&errors, "pageSize", "1 or greater");
    assert_problem(&errors, "mode", "must be one of QueueLength");
    let errors = problems(&input(
        "rabbitmq",
        &[
            ("queueName", "q"),
            ("host", "amqp://r/"),
            ("timeout", "100"),
        ],
    ));
    assert_problem(&errors, "timeout", "does not support custom timeouts");
    // "0" is no custom timeout (KEDA checks `Timeout != 0`), so AMQP takes it.
    for zero in ["0", "0s"] {
        let parsed = ringscale_scalers::parse(&input(
            "rabbitmq",
            &[("queueName", "q"), ("host", "amqp://r/"), ("timeout", zero)],
        ));
        assert!(parsed.is_ok(), "timeout {zero:?}: {:?}", parsed.err());
    }
    let errors = problems(&input("rabbitmq", &[("queueName", "q")]));
    assert_problem(&errors, "host", "missing required parameter");

    let sources = Sources::default();
    let down = build(
        &input(
            "rabbitmq",
            &[
                (
                    "host",
                    &format!("amqp://guest:guest@{}/", refused_address()),
                ),
                ("queueName", "q"),
            ],
        ),
        &sources,
    );
    assert_down(&down, ErrorKind::Source, "cannot connect to the broker").await;
    let hole = Blackhole::start().await;
    let slow = build(
        &input(
            "rabbitmq",
            &[
                ("host", &format!("http://guest:guest@{}/", hole.addr)),
                ("queueName", "q"),
                ("timeout", "300"),
            ],
        ),
        &sources,
    );
    assert_eq!(slow.timeout(), std::time::Duration::from_millis(300));
    assert_down(&slow, ErrorKind::Timeout, "within 300ms").await;
}
