//! Secrets never appear in errors, logs or `Debug` output, whatever fails.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringscale_scalers::{ScalerError, Sources, TriggerInput};

use crate::common::*;

/// Collects everything written by a tracing subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

const SECRETS: &[&str] = &[
    "pw-meta-5k2j9",
    "pw-auth-8d7f1",
    "pw-env-3n6q2",
    "conn-pg-4r8t1",
    "conn-my-9w2e5",
    "amqp-pass-7y3u6",
    "http-pass-1i5o8",
    "api-key-6p4a2",
    "bearer-tok-2s9d7",
    "custom-val-5f1g3",
    "sentinel-pw-8h6j4",
    "tls-key-0k7l5",
];

#[tokio::test(flavor = "current_thread")]
async fn secrets_stay_out_of_errors_logs_and_debug_output() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let refused = refused_address();
    let (rhost, rport) = refused.rsplit_once(':').unwrap();
    let bad_pem = "-----BEGIN PRIVATE KEY-----\ntls-key-0k7l5\n-----END PRIVATE KEY-----\n";
    let inputs: Vec<TriggerInput> = vec![
        input(
            "redis",
            &[
                ("address", &refused),
                ("listName", "q"),
                ("password", "pw-meta-5k2j9"),
            ],
        ),
        input("redis", &[("address", &refused), ("listName", "q")])
            .with_auth([("password", "pw-auth-8d7f1")]),
        input(
            "redis",
            &[
                ("address", &refused),
                ("listName", "q"),
                ("passwordFromEnv", "PW"),
            ],
        )
        .with_env([("PW", "pw-env-3n6q2")]),
        input(
            "redis-sentinel",
            &[
                ("addresses", &refused),
                ("listName", "q"),
                ("sentinelMaster", "m"),
            ],
        )
        .with_auth([("sentinelPassword", "sentinel-pw-8h6j4")]),
        input(
            "redis",
            &[
                ("address", &refused),
                ("listName", "q"),
                ("enableTLS", "true"),
            ],
        )
        .with_auth([("cert", "garbage"), ("key", bad_pem)]),
        input(
            "postgresql",
            &[("query", "SELECT 1"), ("targetQueryValue", "1")],
        )
        .with_auth([(
            "connection",
            format!(
                "host={rhost} port={rport} user=u password=conn-pg-4r8t1 dbname=d sslmode=disable"
            ),
        )]),
        input(
            "postgresql",
            &[("query", "SELECT 1"), ("targetQueryValue", "1")],
        )
        .with_auth([("connection", "postgresql://u:conn-pg-4r8t1@db:notaport/d")]),
        input(
            "postgresql",
            &[
                ("host", rhost),
                ("port", rport),
                ("userName", "u"),
                ("dbName", "d"),
                ("sslmode", "disable"),
                ("query", "SELECT 1"),
                ("targetQueryValue", "1"),
            ],
        )
        .with_auth([("password", "pw-auth-8d7f1")]),
        input("mysql", &[("query", "SELECT 1"), ("queryValue", "1")]).with_auth([(
            "connectionString",
            format!("root:conn-my-9w2e5@tcp({refused})/test"),
        )]),
        input("mysql", &[("query", "SELECT 1"), ("queryValue", "1")])
            .with_auth([("connectionString", "root:conn-my-9w2e5@tcp(db:port)/test")]),
        input(
            "rabbitmq",
            &[
                ("host", &format!("amqp://user:amqp-pass-7y3u6@{refused}/")),
                ("queueName", "q"),
            ],
        ),
        input("rabbitmq", &[("queueName", "q"), ("hostFromEnv", "HOST")])
            .with_env([("HOST", format!("http://user:http-pass-1i5o8@{refused}/"))]),
        input(
            "rabbitmq",
            &[
                ("host", "weird://user:amqp-pass-7y3u6@x/"),
                ("queueName", "q"),
            ],
        ),
        input(
            "metrics-api",
            &[
                ("url", &format!("http://{refused}/m")),
                ("valueLocation", "v"),
                ("targetValue", "1"),
                ("authMode", "apiKey"),
                ("method", "query"),
            ],
        )
        .with_auth([("apiKey", "api-key-6p4a2")]),
        input(
            "metrics-api",
            &[
                ("url", &format!("http://{refused}/m")),
                ("valueLocation", "v"),
                ("targetValue", "1"),
                ("authMode", "custom"),
            ],
        )
        .with_auth([
            ("customAuthHeader", "X-Key"),
            ("customAuthValue", "custom-val-5f1g3"),
        ]),
        input(
            "prometheus",
            &[
                ("serverAddress", &format!("http://{refused}")),
                ("query", "up"),
                ("threshold", "1"),
                ("authModes", "bearer"),
            ],
        )
        .with_auth([("bearerToken", "bearer-tok-2s9d7")]),
        input("external", &[("scalerAddress", &refused)])
            .with_auth([("tlsClientCert", "x"), ("tlsClientKey", bad_pem)]),
    ];

    let sources = Sources::default();
    let mut shown: Vec<String> = Vec::new();
    for mut input in inputs {
        input.default_timeout = Duration::from_millis(500);
        shown.push(format!("{input:?}"));
        match ringscale_scalers::parse(&input) {
            Err(errors) => shown.extend(render(&errors)),
            Ok(parsed) => {
                shown.push(format!("{parsed:?}"));
                let scaler = ringscale_scalers::Scaler::new(parsed, &sources);
                shown.push(format!("{scaler:?}"));
                match scaler.metric_specs().await {
                    Err(e) => shown.extend(render(&[e])),
                    Ok(specs) => {
                        let name = specs
                            .first()
                            .and_then(|s| s.external_name())
                            .unwrap_or("s0-x")
                            .to_owned();
                        match scaler.poll(&name).await {
                            Err(e) => shown.extend(render(&[e])),
                            Ok(p) => panic!("{input:?} should fail, polled {p:?}"),
                        }
                    }
                }
            }
        }
    }
    // A real server refusing a wrong password.
    if let Some(server) = crate::redis::own_redis(&["--requirepass", "the-right-one-1234"]).await {
        let wrong = build(
            &input(
                "redis",
                &[
                    ("address", &format!("127.0.0.1:{}", server.port)),
                    ("listName", "q"),
                ],
            )
            .with_auth([("password", "pw-auth-8d7f1")]),
            &sources,
        );
        shown.extend(render(&[poll(&wrong).await.unwrap_err()]));
    }
    shown.push(format!("{sources:?}"));
    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("trigger poll failed"),
        "poll failures are logged:\n{logs}"
    );
    shown.push(logs);
    let everything = shown.join("\n");
    for secret in SECRETS {
        assert!(
            !everything.contains(secret),
            "{secret} leaked:\n{everything}"
        );
    }
    assert!(shown.iter().filter(|s| s.contains("[redacted]")).count() > 0);
}

fn render(errors: &[ScalerError]) -> Vec<String> {
    errors
        .iter()
        .flat_map(|e| [e.to_string(), format!("{e:?}"), e.field_path()])
        .collect()
}
