//! One module per trigger type, plus the shared HTTP, AMQP and authentication helpers.

pub(crate) mod amqp;
pub(crate) mod aws;
pub(crate) mod aws_cloudwatch;
pub(crate) mod aws_dynamodb;
pub(crate) mod aws_kinesis;
pub(crate) mod aws_sqs;
pub(crate) mod azure;
pub(crate) mod azure_blob;
pub(crate) mod azure_queue;
pub(crate) mod cron;
pub(crate) mod etcd;
pub(crate) mod external;
pub(crate) mod http;
pub(crate) mod httpauth;
pub(crate) mod kafka;
pub(crate) mod kubernetes_workload;
pub(crate) mod metrics_api;
pub(crate) mod mysql;
pub(crate) mod nats;
pub(crate) mod postgres;
pub(crate) mod prometheus;
pub(crate) mod rabbitmq;
pub(crate) mod redis;
pub(crate) mod resource;
