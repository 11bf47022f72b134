//! `redis`, `redis-streams` and their cluster and sentinel variants against real Redis servers.

use std::time::Duration;

use redis::AsyncCommands;
use ringscale_scalers::{ErrorKind, MetricSpec, Sources};

use crate::common::*;

async fn connect(addr: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://{addr}")).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// A redis-server of our own on a free port, ready to answer.
pub struct OwnRedis {
    pub port: u16,
    _proc: Proc,
    _dir: TempDir,
}

pub async fn own_redis(extra: &[&str]) -> Option<OwnRedis> {
    if !program(
        "redis-server",
        "Redis server for cluster, sentinel and auth tests",
    ) {
        return None;
    }
    let port = free_port();
    let dir = TempDir::new("redis");
    let port_s = port.to_string();
    let dir_s = dir.0.display().to_string();
    let mut args = vec![
        "--port",
        &port_s,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir_s,
    ];
    args.extend_from_slice(extra);
    let proc = Proc::spawn("redis-server", &args);
    let addr = format!("127.0.0.1:{port}");
    let password = extra
        .windows(2)
        .find(|w| w[0] == "--requirepass")
        .map(|w| w[1].to_owned());
    eventually(10, || {
        let addr = addr.clone();
        let password = password.clone();
        async move {
            let url = match password {
                Some(pw) => format!("redis://:{pw}@{addr}"),
                None => format!("redis://{addr}"),
            };
            let client = redis::Client::open(url).map_err(|e| e.to_string())?;
            let mut c = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    Some(OwnRedis {
        port,
        _proc: proc,
        _dir: dir,
    })
}

#[tokio::test]
async fn list_length_follows_the_key_type_and_activation_is_strict() {
    let Some(addr) = service("Redis", "REDIS_ADDR", "127.0.0.1:6379").await else {
        return;
    };
    let mut conn = connect(&addr).await;
    let key = unique("ringscale:orders");
    let _: () = conn.rpush(&key, &["a", "b", "c", "d"]).await.unwrap();
    let sources = Sources::default();
    let scaler = build(
        &input(
            "redis",
            &[
                ("address", &addr),
                ("listName", &key),
                ("listLength", "2"),
                ("activationListLength", "4"),
            ],
        ),
        &sources,
    );
    let specs = scaler.metric_specs().await.unwrap();
    let MetricSpec::External(m) = &specs[0] else {
        panic!("external metric expected")
    };
    assert_eq!(m.name, format!("s0-redis-{}", key.replace(':', "-")));
    assert_eq!(m.target_quantity(), "2");
    assert_eq!(
        value(&scaler).await,
        (4.0, false),
        "4 is not above the activation length 4"
    );
    let _: () = conn.rpush(&key, "e").await.unwrap();
    assert_eq!(value(&scaler).await, (5.0, true));

    // The same key as a sorted set, a set and a hash: ZCARD, SCARD, HLEN as in KEDA's script.
    let _: () = conn.del(&key).await.unwrap();
    let _: () = conn
        .zadd_multiple(&key, &[(1, "a"), (2, "b"), (3, "c")])
        .await
        .unwrap();
    assert_eq!(value(&scaler).await.0, 3.0);
    let _: () = conn.del(&key).await.unwrap();
    let _: () = conn.sadd(&key, &["x", "y"]).await.unwrap();
    assert_eq!(value(&scaler).await.0, 2.0);
    let _: () = conn.del(&key).await.unwrap();
    let _: () = conn
        .hset_multiple(
            &key,
            &[
                ("f1", "1"),
                ("f2", "2"),
                ("f3", "3"),
                ("f4", "4"),
                ("f5", "5"),
                ("f6", "6"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(value(&scaler).await, (6.0, true));
    // A missing key is an empty list.
    let _: () = conn.del(&key).await.unwrap();
    assert_eq!(value(&scaler).await, (0.0, false));
    // A string is not a list.
    let _: () = conn.set(&key, "text").await.unwrap();
    let err = poll(&scaler).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Source);
    assert!(
        err.to_string()
            .contains("not a list, set, sorted set or hash"),
        "{err}"
    );
    let _: () = conn.del(&key).await.unwrap();

    // Host and port from the environment of the scale target, database index.
    let (host, port) = addr.rsplit_once(':').unwrap();
    let _: () = redis::cmd("SELECT")
        .arg(3)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = conn.rpush(&key, &["1", "2"]).await.unwrap();
    let scaler = build(
        &input(
            "redis",
            &[
                ("hostFromEnv", "REDIS_HOST"),
                ("portFromEnv", "REDIS_PORT"),
                ("listName", &key),
                ("databaseIndex", "3"),
            ],
        )
        .with_env([("REDIS_HOST", host), ("REDIS_PORT", port)]),
        &sources,
    );
    assert_eq!(value(&scaler).await, (2.0, true));
    let _: () = conn.del(&key).await.unwrap();
}

#[tokio::test]
async fn missing_and_malformed_parameters_are_reported_together() {
    let errors = problems(&input(
        "redis",
        &[("listLength", "abc"), ("activationListLength", "1.5")],
    ));
    assert_problem(&errors, "listName", "missing required parameter");
    assert_problem(&errors, "listLength", "\"abc\" is not an integer");
    assert_problem(&errors, "activationListLength", "is not an integer");
    assert_problem(&errors, "address", "no addresses or hosts given");

    let errors = problems(
        &input(
            "redis",
            &[
                ("listName", "q"),
                ("address", "r:6379"),
                ("enableTLS", "true"),
            ],
        )
        .with_auth([("tls", "enable")]),
    );
    assert!(
        errors.iter().any(|e| e.to_string().contains("both")),
        "{errors:#?}"
    );
    let errors = problems(&input(
        "redis-cluster",
        &[("listName", "q"), ("hosts", "a,b"), ("ports", "1")],
    ));
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("number of hosts must equal")),
        "{errors:#?}"
    );
    let errors = problems(&input(
        "redis-sentinel",
        &[("listName", "q"), ("addresses", "s:26379")],
    ));
    assert_problem(&errors, "sentinelMaster", "missing required parameter");
    let errors = problems(&input("redis-streams", &[("address", "r:6379")]));
    assert_problem(&errors, "stream", "missing required parameter");
    let errors = problems(&input(
        "redis",
        &[("listName", "q"), ("address", "no-port")],
    ));
    assert_problem(&errors, "address", "is not host:port");
    let errors = problems(&input(
        "redis-streams",
        &[
            ("address", "r:6379"),
            ("stream", "s"),
            ("consumerGroup", "g"),
            ("lagCount", "ten"),
            ("activationLagCount", "-"),
        ],
    ));
    assert_problem(&errors, "lagCount", "is not an integer");
    assert_problem(&errors, "activationLagCount", "is not an integer");
}

#[tokio::test]
async fn an_unreachable_stream_is_a_transient_error() {
    let sources = Sources::default();
    let refused = build(
        &input(
            "redis-streams",
            &[("address", &refused_address()), ("stream", "s")],
        ),
        &sources,
    );
    assert_down(&refused, ErrorKind::Source, "stream \"s\"").await;
    let hole = Blackhole::start().await;
    let mut slow = input(
        "redis-streams",
        &[
            ("address", &hole.addr.to_string()),
            ("stream", "s"),
            ("consumerGroup", "g"),
        ],
    );
    slow.default_timeout = Duration::from_millis(300);
    assert_down(&build(&slow, &sources), ErrorKind::Timeout, "within 300ms").await;
}

#[tokio::test]
async fn an_unreachable_server_is_a_transient_error_within_the_timeout() {
    let sources = Sources::default();
    let refused = build(
        &input(
            "redis",
            &[("address", &refused_address()), ("listName", "q")],
        ),
        &sources,
    );
    assert_down(&refused, ErrorKind::Source, "list length").await;

    let hole = Blackhole::start().await;
    let mut slow = input(
        "redis",
        &[("address", &hole.addr.to_string()), ("listName", "q")],
    );
    slow.default_timeout = Duration::from_millis(300);
    let slow = build(&slow, &sources);
    assert_down(&slow, ErrorKind::Timeout, "did not answer within 300ms").await;
}

#[tokio::test]
async fn passwords_come_from_authentication_or_environment() {
    let Some(server) = own_redis(&["--requirepass", "s3cret-redis-pw"]).await else {
        return;
    };
    let addr = format!("127.0.0.1:{}", server.port);
    let client = redis::Client::open(format!("redis://:s3cret-redis-pw@{addr}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = conn.rpush("jobs", &["1", "2", "3"]).await.unwrap();
    let sources = Sources::default();
    let from_auth = build(
        &input("redis", &[("address", &addr), ("listName", "jobs")])
            .with_auth([("password", "s3cret-redis-pw")]),
        &sources,
    );
    assert_eq!(value(&from_auth).await, (3.0, true));
    let from_env = build(
        &input(
            "redis",
            &[
                ("address", &addr),
                ("listName", "jobs"),
                ("passwordFromEnv", "REDIS_PASSWORD"),
            ],
        )
        .with_env([("REDIS_PASSWORD", "s3cret-redis-pw")]),
        &sources,
    );
    assert_eq!(value(&from_env).await, (3.0, true));
    let wrong = build(
        &input("redis", &[("address", &addr), ("listName", "jobs")])
            .with_auth([("password", "wrong-password-123")]),
        &sources,
    );
    let err = poll(&wrong).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Source);
    assert!(!err.to_string().contains("wrong-password-123"), "{err}");
}

#[tokio::test]
async fn streams_measure_length_pending_entries_and_lag() {
    let Some(addr) = service("Redis", "REDIS_ADDR", "127.0.0.1:6379").await else {
        return;
    };
    let mut conn = connect(&addr).await;
    let stream = unique("ringscale-stream");
    for i in 0..6 {
        let _: String = conn.xadd(&stream, "*", &[("n", i)]).await.unwrap();
    }
    let sources = Sources::default();
    let length = build(
        &input(
            "redis-streams",
            &[
                ("address", &addr),
                ("stream", &stream),
                ("streamLength", "3"),
            ],
        ),
        &sources,
    );
    let specs = length.metric_specs().await.unwrap();
    assert_eq!(
        specs[0].external_name(),
        Some(format!("s0-redis-streams-{stream}").as_str())
    );
    assert_eq!(value(&length).await, (6.0, true));

    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("workers")
        .arg("0")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Read (but do not acknowledge) two entries: they are pending; four are lag.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("workers")
        .arg("c1")
        .arg("COUNT")
        .arg(2)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    let pending = build(
        &input(
            "redis-streams",
            &[
                ("address", &addr),
                ("stream", &stream),
                ("consumerGroup", "workers"),
                ("activationLagCount", "2"),
            ],
        ),
        &sources,
    );
    assert_eq!(
        value(&pending).await,
        (2.0, false),
        "2 pending is not above 2"
    );
    let lag = build(
        &input(
            "redis-streams",
            &[
                ("address", &addr),
                ("stream", &stream),
                ("consumerGroup", "workers"),
                ("lagCount", "2"),
            ],
        ),
        &sources,
    );
    assert_eq!(value(&lag).await, (4.0, true));
    // A group that does not exist yet lags by the whole stream; a missing stream by nothing.
    let no_group = build(
        &input(
            "redis-streams",
            &[
                ("address", &addr),
                ("stream", &stream),
                ("consumerGroup", "later"),
                ("lagCount", "2"),
            ],
        ),
        &sources,
    );
    assert_eq!(value(&no_group).await.0, 6.0);
    let no_stream = build(
        &input(
            "redis-streams",
            &[
                ("address", &addr),
                ("stream", "ringscale-none"),
                ("consumerGroup", "g"),
                ("lagCount", "2"),
            ],
        ),
        &sources,
    );
    assert_eq!(value(&no_stream).await.0, 0.0);
    // XPENDING of a missing group is an error.
    let bad_group = build(
        &input(
            "redis-streams",
            &[
                ("address", &addr),
                ("stream", &stream),
                ("consumerGroup", "nope"),
            ],
        ),
        &sources,
    );
    let err = poll(&bad_group).await.unwrap_err();
    assert!(err.to_string().contains("NOGROUP"), "{err}");
    let _: () = conn.del(&stream).await.unwrap();
}

#[tokio::test]
async fn redis_cluster_lists_and_streams() {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let Some(node) = own_redis(&[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ])
        .await
        else {
            return;
        };
        nodes.push(node);
    }
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let mut args = vec!["--cluster", "create"];
    args.extend(addrs.iter().map(String::as_str));
    args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    let status = tokio::process::Command::new("redis-cli")
        .args(&args)
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.success(), "redis-cli --cluster create failed");
    let cluster = redis::cluster::ClusterClient::new(
        addrs
            .iter()
            .map(|a| format!("redis://{a}"))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let mut conn = eventually(20, || {
        let cluster = cluster.clone();
        async move {
            let mut c = cluster
                .get_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            let _: () = c.set("probe", "1").await.map_err(|e| e.to_string())?;
            Ok(c)
        }
    })
    .await;
    // Keys on different slots (and so different nodes).
    for (key, n) in [("alpha", 3usize), ("beta", 5), ("gamma", 1)] {
        for i in 0..n {
            let _: () = conn.rpush(key, i).await.unwrap();
        }
    }
    let sources = Sources::default();
    let list = addrs.join(",");
    for (key, n) in [("alpha", 3.0), ("beta", 5.0), ("gamma", 1.0)] {
        let scaler = build(
            &input("redis-cluster", &[("addresses", &list), ("listName", key)]),
            &sources,
        );
        assert_eq!(value(&scaler).await.0, n, "{key}");
    }
    let hosts = ["127.0.0.1"; 3].join(",");
    let ports: Vec<String> = nodes.iter().map(|n| n.port.to_string()).collect();
    let by_parts = build(
        &input(
            "redis-cluster",
            &[
                ("hosts", &hosts),
                ("ports", &ports.join(",")),
                ("listName", "beta"),
            ],
        ),
        &sources,
    );
    assert_eq!(value(&by_parts).await.0, 5.0);
    let _: String = conn.xadd("events", "*", &[("k", "v")]).await.unwrap();
    let stream = build(
        &input(
            "redis-cluster-streams",
            &[("addresses", &list), ("stream", "events")],
        ),
        &sources,
    );
    assert_eq!(value(&stream).await.0, 1.0);
    assert_eq!(sources.counts().redis, 1, "one shared cluster connection");
}

#[tokio::test]
async fn redis_sentinel_finds_the_primary() {
    let Some(primary) = own_redis(&[]).await else {
        return;
    };
    let dir = TempDir::new("sentinel");
    let sentinel_port = free_port();
    let conf = dir.0.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {sentinel_port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {} 1\nsentinel down-after-milliseconds mymaster 5000\n",
            dir.0.display(),
            primary.port
        ),
    )
    .unwrap();
    let _sentinel = Proc::spawn("redis-server", &[conf.to_str().unwrap(), "--sentinel"]);
    let sentinel_addr = format!("127.0.0.1:{sentinel_port}");
    eventually(15, || {
        let sentinel_addr = sentinel_addr.clone();
        async move {
            let mut c = redis::Client::open(format!("redis://{sentinel_addr}"))
                .map_err(|e| e.to_string())?
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg("mymaster")
                .query_async::<Vec<String>>(&mut c)
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let mut conn = connect(&format!("127.0.0.1:{}", primary.port)).await;
    let _: () = conn
        .rpush("work", &["1", "2", "3", "4", "5", "6", "7"])
        .await
        .unwrap();
    let sources = Sources::default();
    let scaler = build(
        &input(
            "redis-sentinel",
            &[
                ("addresses", &sentinel_addr),
                ("sentinelMaster", "mymaster"),
                ("listName", "work"),
            ],
        ),
        &sources,
    );
    assert_eq!(value(&scaler).await, (7.0, true));
    let _: String = conn.xadd("evts", "*", &[("k", "v")]).await.unwrap();
    let streams = build(
        &input(
            "redis-sentinel-streams",
            &[
                ("addresses", &sentinel_addr),
                ("sentinelMaster", "mymaster"),
                ("stream", "evts"),
            ],
        ),
        &sources,
    );
    assert_eq!(value(&streams).await.0, 1.0);
    let wrong = build(
        &input(
            "redis-sentinel",
            &[
                ("addresses", &sentinel_addr),
                ("sentinelMaster", "other"),
                ("listName", "work"),
            ],
        ),
        &sources,
    );
    assert!(poll(&wrong).await.is_err());
}

#[tokio::test]
async fn triggers_on_one_server_share_one_connection() {
    let Some(server) = own_redis(&[]).await else {
        return;
    };
    let addr = format!("127.0.0.1:{}", server.port);
    let mut conn = connect(&addr).await;
    for i in 0..50 {
        let _: () = conn.rpush(format!("q{i}"), i).await.unwrap();
    }
    let sources = Sources::default();
    let scalers: Vec<_> = (0..200)
        .map(|i| {
            build(
                &input(
                    "redis",
                    &[("address", &addr), ("listName", &format!("q{}", i % 50))],
                ),
                &sources,
            )
        })
        .collect();
    let results = futures_util::future::join_all(scalers.iter().map(poll)).await;
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_ok_and(|p| p.values[0].value == 1.0))
    );
    assert_eq!(sources.counts().redis, 1);
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        clients.lines().count(),
        2,
        "the test's own connection and one shared by 200 triggers:\n{clients}"
    );
    drop(scalers);
    assert_eq!(
        sources.counts().redis,
        0,
        "the source goes with its last trigger"
    );
}
