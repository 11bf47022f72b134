//! Scalers against the real services on this machine (Redis, PostgreSQL, MariaDB, RabbitMQ,
//! NATS, Prometheus, etcd, Kafka (noida-db, Tansu), AWS SQS (moto), external scalers in Rust and Python), plus offline checks.
//!
//! A test whose service is absent prints a `SKIP:` line and passes, unless
//! `RINGSCALE_REQUIRE_SERVICES=1`, where absence fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod aws;
mod azure;
mod common;
mod cron_resource;
mod etcd;
mod external;
mod http;
mod kafka;
mod kafka_auth;
mod kafka_client;
mod nats;
mod rabbitmq;
mod redis;
mod secrets;
mod sql;
