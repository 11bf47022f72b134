//! Generated protobuf and gRPC code for the protocols in `proto/`, compiled at build time by
//! protox (no system `protoc`).

/// KEDA's external scaler protocol (`externalscaler.proto`): a client for the `external` and
/// `external-push` triggers, and a server for tests and for anyone writing a scaler in Rust.
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
pub mod externalscaler {
    tonic::include_proto!("externalscaler");
}

/// Replication between ringscale replicas (`replication.proto`): the record stream from owner to
/// subscriber and forwarded metrics queries.
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
pub mod replication {
    tonic::include_proto!("ringscale.replication.v1");
}

/// The part of etcd's v3 API the `etcd` trigger uses (`etcd.proto`): reading and watching a
/// key, authenticating; wire-compatible with etcd 3.x.
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}
