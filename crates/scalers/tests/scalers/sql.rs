//! `postgresql` against PostgreSQL and `mysql` against MariaDB.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use ringscale_api::MetricType;
use ringscale_scalers::{ErrorKind, MetricSpec, Sources};

use crate::common::*;

async fn postgres() -> Option<(String, tokio_postgres::Client)> {
    let addr = service("PostgreSQL", "POSTGRES_ADDR", "127.0.0.1:5432").await?;
    let (host, port) = addr.rsplit_once(':').unwrap();
    let dsn = format!("host={host} port={port} user=postgres dbname=test sslmode=disable");
    let (client, connection) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    Some((addr, client))
}

#[tokio::test]
async fn postgresql_reads_the_number_a_query_returns() {
    let Some((addr, db)) = postgres().await else {
        return;
    };
    let (host, port) = addr.rsplit_once(':').unwrap();
    let table = unique("tasks").replace('-', "_");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (state text); INSERT INTO {table} SELECT 'queued' FROM generate_series(1, 40);"
    ))
    .await
    .unwrap();
    let sources = Sources::default();
    // Individual connection parameters, the password from the environment.
    let query = format!("SELECT COUNT(*) FROM {table} WHERE state = 'queued'");
    let scaler = build(
        &input(
            "postgresql",
            &[
                ("host", host),
                ("port", port),
                ("userName", "postgres"),
                ("dbName", "test"),
                ("sslmode", "disable"),
                ("passwordFromEnv", "PG_PASSWORD"),
                ("query", &query),
                ("targetQueryValue", "2.5"),
                ("activationTargetQueryValue", "40"),
            ],
        )
        .with_env([("PG_PASSWORD", "unused-with-trust")]),
        &sources,
    );
    let specs = scaler.metric_specs().await.unwrap();
    let MetricSpec::External(m) = &specs[0] else {
        panic!()
    };
    assert_eq!(
        (m.name.as_str(), m.target_quantity().as_str()),
        ("s0-postgresql", "2500m")
    );
    assert_eq!(value(&scaler).await, (40.0, false), "40 is not above 40");
    db.execute(&format!("INSERT INTO {table} VALUES ('queued')"), &[])
        .await
        .unwrap();
    assert_eq!(value(&scaler).await, (41.0, true));

    // A connection string from the authentication; numeric and float results; Value targets.
    let conn = format!("postgresql://postgres@{addr}/test?sslmode=disable");
    let mut alive = Vec::new();
    for (q, expected) in [
        (
            format!("SELECT ceil(COUNT(*)::decimal / 16) FROM {table}"),
            3.0,
        ),
        (format!("SELECT COUNT(*)::float / 4 FROM {table}"), 10.25),
        ("SELECT 12.5::numeric(10,3)".to_owned(), 12.5),
        ("SELECT -7::int2".to_owned(), -7.0),
    ] {
        let scaler = build(
            &input("postgresql", &[("query", &q), ("targetQueryValue", "1")])
                .with_auth([("connection", conn.as_str())])
                .with_metric_type(MetricType::Value),
            &sources,
        );
        assert_eq!(value(&scaler).await.0, expected, "{q}");
        alive.push(scaler);
    }
    assert_eq!(
        sources.counts().postgres,
        2,
        "one pool per distinct connection string"
    );
    drop(alive);

    // Results that are not one number.
    for (q, text, kind) in [
        (
            "SELECT NULL::int".to_owned(),
            "returned NULL",
            ErrorKind::Source,
        ),
        (
            "SELECT 'x'::text".to_owned(),
            "must return a number",
            ErrorKind::Config,
        ),
        (
            "SELECT 1, 2".to_owned(),
            "exactly one column",
            ErrorKind::Config,
        ),
        (
            format!("SELECT 1 FROM {table} WHERE false"),
            "no rows",
            ErrorKind::Source,
        ),
        (
            "SELECT * FROM no_such_table_here".to_owned(),
            "42P01",
            ErrorKind::Source,
        ),
    ] {
        let scaler = build(
            &input("postgresql", &[("query", &q), ("targetQueryValue", "1")])
                .with_auth([("connection", conn.as_str())]),
            &sources,
        );
        let err = poll(&scaler).await.unwrap_err();
        assert_eq!(err.kind, kind, "{q}: {err}");
        assert!(err.to_string().contains(text), "{q}: {err}");
    }
    db.batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn postgresql_parameters_and_outages() {
    let errors = problems(&input("postgresql", &[("query", "SELECT 1")]));
    assert_problem(&errors, "targetQueryValue", "missing required parameter");
    assert_problem(&errors, "host", "give either a connection string");
    let errors = problems(
        &input("postgresql", &[("targetQueryValue", "x")]).with_auth([("connection", "host=db")]),
    );
    assert_problem(&errors, "query", "missing required parameter");
    assert_problem(&errors, "targetQueryValue", "\"x\" is not a number");
    let errors = problems(
        &input("postgresql", &[("targetQueryValue", "0"), ("query", "q")])
            .with_auth([("connection", "host=db")]),
    );
    assert_problem(&errors, "targetQueryValue", "must not be 0");
    let mut as_source =
        input("postgresql", &[("query", "SELECT 1")]).with_auth([("connection", "host=db")]);
    as_source.as_metric_source = true;
    assert!(
        ringscale_scalers::parse(&as_source).is_ok(),
        "no target needed when feeding a formula"
    );
    let errors = problems(
        &input("postgresql", &[("targetQueryValue", "1"), ("query", "q")])
            .with_auth([("connection", "host=db sslmode=sometimes")]),
    );
    assert!(
        errors.iter().any(|e| e.to_string().contains("sslmode")),
        "{errors:#?}"
    );

    let sources = Sources::default();
    let refused = refused_address();
    let (host, port) = refused.rsplit_once(':').unwrap();
    let down = build(
        &input(
            "postgresql",
            &[
                ("host", host),
                ("port", port),
                ("userName", "u"),
                ("dbName", "d"),
                ("sslmode", "disable"),
                ("query", "SELECT 1"),
                ("targetQueryValue", "1"),
            ],
        ),
        &sources,
    );
    assert_down(&down, ErrorKind::Source, "cannot connect to PostgreSQL").await;
    let hole = Blackhole::start().await;
    let mut slow = input(
        "postgresql",
        &[("query", "SELECT 1"), ("targetQueryValue", "1")],
    )
    .with_auth([(
        "connection",
        format!(
            "host=127.0.0.1 port={} user=u dbname=d sslmode=disable",
            hole.addr.port()
        ),
    )]);
    slow.default_timeout = Duration::from_millis(300);
    assert_down(&build(&slow, &sources), ErrorKind::Timeout, "within 300ms").await;
}

#[tokio::test]
async fn mysql_reads_the_number_a_query_returns() {
    let Some(addr) = service("MariaDB", "MYSQL_ADDR", "127.0.0.1:3306").await else {
        return;
    };
    let (host, port) = addr.rsplit_once(':').unwrap();
    let pool = mysql_async::Pool::new(format!("mysql://root@{addr}/test").as_str());
    let mut db = pool.get_conn().await.unwrap();
    let table = unique("jobs").replace('-', "_");
    db.query_drop(format!("CREATE TABLE {table} (state VARCHAR(10))"))
        .await
        .unwrap();
    for _ in 0..12 {
        db.query_drop(format!("INSERT INTO {table} VALUES ('queued')"))
            .await
            .unwrap();
    }
    let sources = Sources::default();
    let query = format!("SELECT COUNT(*) FROM {table}");
    let scaler = build(
        &input(
            "mysql",
            &[
                ("host", host),
                ("port", port),
                ("username", "root"),
                ("dbName", "test"),
                ("query", &query),
                ("queryValue", "4.4"),
                ("activationQueryValue", "12"),
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
        ("s0-mysql-test", "4400m")
    );
    assert_eq!(value(&scaler).await, (12.0, false));
    db.query_drop(format!("INSERT INTO {table} VALUES ('queued')"))
        .await
        .unwrap();
    assert_eq!(value(&scaler).await, (13.0, true));

    // A Go-style connection string from the environment, and decimal results.
    let dsn = format!("root@tcp({addr})/test");
    let scaler = build(
        &input(
            "mysql",
            &[
                ("connectionStringFromEnv", "MYSQL_CONN"),
                ("query", &format!("SELECT CEIL(COUNT(*) / 6) FROM {table}")),
                ("queryValue", "1"),
            ],
        )
        .with_env([("MYSQL_CONN", dsn.as_str())]),
        &sources,
    );
    assert_eq!(
        scaler.metric_specs().await.unwrap()[0].external_name(),
        Some("s0-mysql-test")
    );
    assert_eq!(value(&scaler).await.0, 3.0);
    let scaler = build(
        &input("mysql", &[("query", "SELECT 2.75"), ("queryValue", "1")])
            .with_auth([("connectionString", dsn.as_str())]),
        &sources,
    );
    assert_eq!(value(&scaler).await.0, 2.75);
    for (q, text) in [
        ("SELECT NULL", "returned NULL"),
        ("SELECT 'abc'", "must return a number"),
        ("SELECT 1, 2", "exactly one column"),
        ("SELECT * FROM no_such_table_here", "no_such_table_here"),
    ] {
        let scaler = build(
            &input("mysql", &[("query", q), ("queryValue", "1")])
                .with_auth([("connectionString", dsn.as_str())]),
            &sources,
        );
        let err = poll(&scaler).await.unwrap_err();
        assert!(err.to_string().contains(text), "{q}: {err}");
    }
    db.query_drop(format!("DROP TABLE {table}")).await.unwrap();
    drop(db);
    pool.disconnect().await.unwrap();
}

#[tokio::test]
async fn mysql_parameters_and_outages() {
    let errors = problems(&input("mysql", &[("queryValue", "ten")]));
    assert_problem(&errors, "query", "missing required parameter");
    assert_problem(&errors, "queryValue", "is not a number");
    assert_problem(&errors, "host", "give either connectionString");
    let errors = problems(
        &input("mysql", &[("query", "q")]).with_auth([("connectionString", "user:pw@tcp(db:x)/d")]),
    );
    assert_problem(&errors, "queryValue", "missing required parameter");
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("connection string is invalid")),
        "{errors:#?}"
    );

    let sources = Sources::default();
    let down = build(
        &input("mysql", &[("query", "SELECT 1"), ("queryValue", "1")]).with_auth([(
            "connectionString",
            format!("root@tcp({})/test", refused_address()),
        )]),
        &sources,
    );
    assert_down(&down, ErrorKind::Source, "cannot connect to MySQL").await;
    let hole = Blackhole::start().await;
    let mut slow = input("mysql", &[("query", "SELECT 1"), ("queryValue", "1")])
        .with_auth([("connectionString", format!("root@tcp({})/test", hole.addr))]);
    slow.default_timeout = Duration::from_millis(300);
    assert_down(&build(&slow, &sources), ErrorKind::Timeout, "within 300ms").await;
}
