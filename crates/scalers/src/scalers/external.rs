//! `external` and `external-push`: a client of KEDA's external scaler gRPC protocol.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pb::external_scaler_client::ExternalScalerClient;
use ringscale_proto::externalscaler as pb;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use crate::error::{ErrorKind, ParamSource};
use crate::metric::{
    ExternalMetric, MetricSpec, MetricValue, Poll, metric_name, split_metric_name, to_milli,
};
use crate::params::{AUTH, META, Params};
use crate::redact::Secret;
use crate::sources::{Limit, Sources};
use crate::tls::TlsOptions;
use crate::trigger::Common;

/// An `external` or `external-push` trigger.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    address: String,
    tls: Option<TlsOptions>,
    /// The trigger metadata with `*FromEnv` entries resolved, sent as `scalerMetadata`.
    metadata: HashMap<String, String>,
    pub push: bool,
}

pub(crate) fn parse(p: &mut Params<'_>, push: bool) -> Config {
    let address = p.req_str(&["scalerAddress"], META);
    let enable_tls = p.bool_or("enableTLS", META, false);
    let insecure = p.bool_or("unsafeSsl", META, false);
    let ca = p.opt_str(&["caCert"], AUTH);
    let cert = p.opt_str(&["tlsClientCert"], AUTH);
    let key = p.opt_str(&["tlsClientKey"], AUTH).map(Secret::new);
    if !address.is_empty() && (address.contains("://") || !address.contains(':')) {
        p.fail_param(
            ErrorKind::Config,
            "scalerAddress",
            META,
            "must be host:port, without a scheme",
        );
    }
    let use_tls = enable_tls || cert.is_some() || ca.is_some();
    let tls = use_tls.then_some(TlsOptions {
        ca,
        cert,
        key,
        insecure,
    });
    if let Some(t) = &tls
        && let Err(e) = t.client_config()
    {
        p.fail_param(
            ErrorKind::Config,
            "caCert",
            &[ParamSource::Auth],
            e.to_string(),
        );
    }
    let mut metadata = HashMap::new();
    for (key, value) in &p.input.metadata {
        if key.ends_with("FromEnv") {
            if let Some(v) = p.input.resolved_env.get(value).filter(|v| !v.is_empty()) {
                metadata.insert(key.clone(), v.clone());
            }
        } else {
            metadata.insert(key.clone(), value.clone());
        }
    }
    Config {
        address,
        tls,
        metadata,
        push,
    }
}

/// Identity of a shared gRPC endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct GrpcKey {
    address: String,
    tls: Option<TlsOptions>,
}

/// One shared gRPC channel (HTTP/2, multiplexing every trigger's calls).
pub(crate) struct GrpcSource {
    /// The channel, or why it could not be made (reported on every call).
    channel: Result<Channel, ChannelError>,
    limit: Limit,
}

/// Why no gRPC channel could be made for a trigger.
#[derive(Debug, thiserror::Error)]
enum ChannelError {
    /// `scalerAddress` is not a URI authority (the reason).
    #[error("invalid scalerAddress: {0}")]
    Address(String),
    /// The TLS settings are unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

impl GrpcSource {
    fn new(key: &GrpcKey, limit: Limit) -> Self {
        let channel = (|| {
            // TLS is done by the connector (`tls::grpc_channel`): the URI stays `http`.
            let endpoint = Endpoint::from_shared(format!("http://{}", key.address))
                .map_err(|e| ChannelError::Address(e.to_string()))?
                .connect_timeout(Duration::from_secs(5))
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_while_idle(true);
            match &key.tls {
                None => Ok(endpoint.connect_lazy()),
                Some(tls) => Ok(crate::tls::grpc_channel(endpoint, tls)?),
            }
        })();
        GrpcSource { channel, limit }
    }
}

/// A built `external` or `external-push` trigger.
pub(crate) struct ExternalScaler {
    config: Config,
    source: Arc<GrpcSource>,
    reference: pb::ScaledObjectRef,
}

impl ExternalScaler {
    pub fn new(config: Config, common: &Common, sources: &Sources) -> Self {
        let key = GrpcKey {
            address: config.address.clone(),
            tls: config.tls.clone(),
        };
        let source = sources
            .inner
            .grpc
            .get_or_insert(&key, || GrpcSource::new(&key, sources.limit()));
        let reference = pb::ScaledObjectRef {
            name: common.owner.name.clone(),
            namespace: common.owner.namespace.clone(),
            scaler_metadata: config.metadata.clone(),
        };
        ExternalScaler {
            config,
            source,
            reference,
        }
    }

    pub fn is_push(&self) -> bool {
        self.config.push
    }

    fn client(&self, common: &Common) -> Result<ExternalScalerClient<Channel>, crate::ScalerError> {
        match &self.source.channel {
            Ok(ch) => Ok(ExternalScalerClient::new(ch.clone())),
            Err(e) => Err(common.error(ErrorKind::Config, e.to_string())),
        }
    }

    pub async fn metric_specs(
        &self,
        common: &Common,
    ) -> Result<Vec<MetricSpec>, crate::ScalerError> {
        let _permit = self.source.limit.acquire().await;
        let mut client = self.client(common)?;
        let response = client
            .get_metric_spec(self.reference.clone())
            .await
            .map_err(|s| status_error(common, "GetMetricSpec", &s))?
            .into_inner();
        Ok(response
            .metric_specs
            .into_iter()
            .map(|spec| {
                #[allow(deprecated)]
                let target = if spec.target_size_float > 0.0 {
                    spec.target_size_float
                } else {
                    spec.target_size as f64
                };
                MetricSpec::External(ExternalMetric {
                    name: metric_name(common.index, &spec.metric_name),
                    metric_type: common.metric_type.clone(),
                    target_milli: to_milli(target),
                })
            })
            .collect())
    }

    pub async fn poll(&self, common: &Common, metric: &str) -> Result<Poll, crate::ScalerError> {
        let _permit = self.source.limit.acquire().await;
        let unprefixed = match split_metric_name(metric) {
            Some((index, rest)) if index == common.index => rest.to_owned(),
            _ => {
                return Err(common.error(
                    ErrorKind::Config,
                    format!(
                        "metric name {metric:?} does not carry this trigger's prefix s{}-",
                        common.index
                    ),
                ));
            }
        };
        let mut client = self.client(common)?;
        let response = client
            .get_metrics(pb::GetMetricsRequest {
                scaled_object_ref: Some(self.reference.clone()),
                metric_name: unprefixed,
            })
            .await
            .map_err(|s| status_error(common, "GetMetrics", &s))?
            .into_inner();
        let name = common.name(metric);
        let values = response
            .metric_values
            .into_iter()
            .map(|v| {
                #[allow(deprecated)]
                let value = if v.metric_value_float > 0.0 {
                    v.metric_value_float
                } else {
                    v.metric_value as f64
                };
                MetricValue {
                    name: name.clone(),
                    value,
                }
            })
            .collect();
        let active = client
            .is_active(self.reference.clone())
            .await
            .map_err(|s| status_error(common, "IsActive", &s))?
            .into_inner()
            .result;
        Ok(Poll { values, active })
    }

    /// Subscribes to `StreamIsActive`, reconnecting with backoff (2 s doubling to 1 min, reset
    /// after the server ends a stream cleanly) until the receiver is dropped.
    pub fn stream_is_active(
        &self,
        common: &Common,
    ) -> mpsc::Receiver<Result<bool, crate::ScalerError>> {
        let (tx, rx) = mpsc::channel(16);
        let client = self.client(common);
        let reference = self.reference.clone();
        let common = common.clone();
        tokio::spawn(async move {
            let mut client = match client {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let mut backoff = Duration::from_secs(2);
            loop {
                let clean = match client.stream_is_active(reference.clone()).await {
                    Ok(response) => {
                        let mut stream = response.into_inner();
                        loop {
                            tokio::select! {
                                () = tx.closed() => return,
                                message = stream.message() => match message {
                                    Ok(Some(m)) => {
                                        backoff = Duration::from_secs(2);
                                        if tx.send(Ok(m.result)).await.is_err() {
                                            return;
                                        }
                                    }
                                    Ok(None) => break true,
                                    Err(s) => {
                                        let err = status_error(&common, "StreamIsActive", &s);
                                        if tx.send(Err(err)).await.is_err() {
                                            return;
                                        }
                                        break false;
                                    }
                                },
                            }
                        }
                    }
                    Err(s) => {
                        let err = status_error(&common, "StreamIsActive", &s);
                        if tx.send(Err(err)).await.is_err() {
                            return;
                        }
                        false
                    }
                };
                if clean {
                    backoff = Duration::from_secs(2);
                }
                tokio::select! {
                    () = tx.closed() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                if !clean {
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        });
        rx
    }
}

fn status_error(common: &Common, call: &str, status: &tonic::Status) -> crate::ScalerError {
    let kind = match status.code() {
        tonic::Code::InvalidArgument | tonic::Code::Unimplemented => ErrorKind::Source,
        tonic::Code::DeadlineExceeded => ErrorKind::Timeout,
        _ => ErrorKind::Source,
    };
    let detail = if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {}", status.code(), status.message())
    };
    common.error(kind, format!("external scaler {call} failed: {detail}"))
}
