//! `rabbitmq`: queue length over AMQP (a passive queue declaration) or the management HTTP API
//! (queue length, publish and deliver rates, regex-selected queues).

use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::Deserialize;

use crate::error::{ErrorKind, ParamSource};
use crate::metric::{ExternalMetric, MetricSpec, Poll, metric_name, normalize};
use crate::params::{AUTH, META, Params};
use crate::redact::Secret;
use crate::scalers::amqp::{AmqpKey, AmqpSource};
use crate::scalers::http::{self, HttpSource, excerpt, fetch};
use crate::sources::Sources;
use crate::tls::TlsOptions;
use crate::trigger::Common;

use ParamSource::{Auth, Env, Metadata};

/// What the trigger measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    QueueLength,
    MessageRate,
    DeliverGetRate,
    PublishedToDeliveredRatio,
    ExpectedQueueConsumptionTime,
}

const MODES: &[&str] = &[
    "QueueLength",
    "MessageRate",
    "DeliverGetRate",
    "PublishedToDeliveredRatio",
    "ExpectedQueueConsumptionTime",
];

/// How several regex-matched queues combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Sum,
    Max,
    Avg,
}

/// Where the queue is read.
#[derive(Clone, Debug)]
enum Protocol {
    Amqp(AmqpKey),
    Http(HttpTarget),
}

/// The management API endpoint and credentials.
#[derive(Clone, Debug)]
struct HttpTarget {
    /// `scheme://host:port/subpath` without user info.
    base: String,
    /// The vhost as a path segment (`%2F` for the default vhost).
    vhost: String,
    username: Option<String>,
    password: Option<Secret>,
    tls: TlsOptions,
}

/// A `rabbitmq` trigger.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    queue: String,
    mode: Mode,
    value: f64,
    activation: f64,
    protocol: Protocol,
    use_regex: bool,
    exclude_unacknowledged: bool,
    page_size: i64,
    operation: Operation,
    pub timeout: Option<Duration>,
}

pub(crate) fn parse(p: &mut Params<'_>) -> Config {
    let queue = p.req_str(&["queueName"], META);
    let mode_text = p.choice("mode", META, MODES, "Unknown");
    let queue_length = p.f64_or("queueLength", META, 0.0);
    let mut value = p.f64_or("value", META, 0.0);
    let activation = p.f64_or("activationValue", META, 0.0);
    let host = p.req_str(&["host"], &[Metadata, Auth, Env]);
    let protocol_text = p.choice(
        "protocol",
        &[Metadata, Auth],
        &["auto", "http", "amqp"],
        "auto",
    );
    let vhost_name = p.opt_str(&["vhostName", "vHostName"], &[Metadata, Auth]);
    let use_regex = p.bool_or("useRegex", META, false);
    let exclude_unacknowledged = p.bool_or("excludeUnacknowledged", META, false);
    let page_size = p.i64_or("pageSize", META, 100);
    let operation = match p
        .choice("operation", META, &["sum", "max", "avg"], "sum")
        .as_str()
    {
        "max" => Operation::Max,
        "avg" => Operation::Avg,
        _ => Operation::Sum,
    };
    let timeout = p.duration("timeout", META);
    let username = p.opt_str(&["username"], &[Auth, Env]);
    let password = p.opt_str(&["password"], &[Auth, Env]);
    let tls_mode = p.choice("tls", AUTH, &["enable", "disable"], "disable");
    let ca = p.opt_str(&["ca"], AUTH);
    let cert = p.opt_str(&["cert"], AUTH);
    let key = p.opt_str(&["key"], AUTH).map(Secret::new);
    let insecure = p.bool_or("unsafeSsl", META, false);
    if p.lookup(&["keyPassword"], AUTH).is_some() {
        p.fail_param(
            ErrorKind::Unsupported,
            "keyPassword",
            AUTH,
            "encrypted private keys are not supported; provide an unencrypted key",
        );
    }
    for unsupported in [
        "oauthTokenURI",
        "clientID",
        "clientSecret",
        "workloadIdentityResource",
    ] {
        if p.lookup(&[unsupported], AUTH).is_some() {
            p.fail_param(
                ErrorKind::Unsupported,
                unsupported,
                AUTH,
                "OAuth2 and Azure workload identity authentication to RabbitMQ are not supported by ringscale; use username and password",
            );
        }
    }
    if cert.is_some() != key.is_some() {
        p.fail_param(
            ErrorKind::Config,
            "cert",
            AUTH,
            "both key and certificate must be provided",
        );
    }
    if page_size < 1 {
        p.fail_param(ErrorKind::Config, "pageSize", META, "must be 1 or greater");
    }
    let credentials_unknown =
        p.is_unknown(&["username"], &[Auth, Env]) || p.is_unknown(&["password"], &[Auth, Env]);
    if username.is_some() != password.is_some() && !credentials_unknown {
        p.fail_param(
            ErrorKind::Config,
            "username",
            &[Auth],
            "username and password must be given together",
        );
    }

    // The protocol, from `protocol` or the host's scheme.
    let url = url::Url::parse(&host);
    let scheme = url
        .as_ref()
        .map(|u| u.scheme().to_owned())
        .unwrap_or_default();
    // Offline, a host from an unseen Secret leaves the protocol unknown: skip checks that
    // depend on it.
    let host_unknown = p.is_unknown(&["host"], &[Metadata, Auth, Env]);
    let protocol_unknown = host_unknown && protocol_text == "auto";
    let protocol_name = match protocol_text.as_str() {
        "auto" if host.is_empty() => "amqp",
        "auto" => match scheme.as_str() {
            "amqp" | "amqps" => "amqp",
            "http" | "https" => "http",
            other => {
                p.fail_param(
                    ErrorKind::Config,
                    "host",
                    &[Metadata, Auth, Env],
                    format!("unknown host URL scheme {other:?}: use amqp://, amqps://, http:// or https://"),
                );
                "amqp"
            }
        },
        "http" => "http",
        _ => "amqp",
    };
    if use_regex && protocol_name != "http" && !protocol_unknown {
        p.fail_param(
            ErrorKind::Config,
            "useRegex",
            META,
            "configure useRegex=true only with the HTTP protocol",
        );
    }
    if exclude_unacknowledged && protocol_name != "http" && !protocol_unknown {
        p.fail_param(
            ErrorKind::Config,
            "excludeUnacknowledged",
            META,
            "configure excludeUnacknowledged=true only with the HTTP protocol",
        );
    }

    // The trigger mode and its value, with the deprecated `queueLength`.
    let mode = if queue_length == 0.0 && mode_text == "Unknown" && value == 0.0 {
        value = 20.0;
        Mode::QueueLength
    } else if queue_length != 0.0 && (mode_text != "Unknown" || value != 0.0) {
        p.fail_param(
            ErrorKind::Config,
            "queueLength",
            META,
            "queueLength is deprecated; use mode and value",
        );
        Mode::QueueLength
    } else if queue_length != 0.0 {
        value = queue_length;
        Mode::QueueLength
    } else if mode_text == "Unknown" {
        p.fail_param(
            ErrorKind::Config,
            "mode",
            META,
            "mode must be specified when value is",
        );
        Mode::QueueLength
    } else {
        if value == 0.0 {
            p.fail_param(
                ErrorKind::Config,
                "value",
                META,
                "value must be specified (and not 0) when mode is",
            );
        }
        match mode_text.as_str() {
            "MessageRate" => Mode::MessageRate,
            "DeliverGetRate" => Mode::DeliverGetRate,
            "PublishedToDeliveredRatio" => Mode::PublishedToDeliveredRatio,
            "ExpectedQueueConsumptionTime" => Mode::ExpectedQueueConsumptionTime,
            _ => Mode::QueueLength,
        }
    };
    if mode != Mode::QueueLength && protocol_name != "http" && !protocol_unknown {
        p.fail_param(
            ErrorKind::Config,
            "mode",
            META,
            format!("protocol amqp not supported; must be HTTP to use trigger mode {mode_text}"),
        );
    }
    if protocol_name == "amqp" && timeout.is_some() && !protocol_unknown {
        p.fail_param(
            ErrorKind::Config,
            "timeout",
            META,
            "the AMQP protocol does not support custom timeouts",
        );
    }

    let tls = TlsOptions {
        ca,
        cert,
        key,
        insecure,
    };
    let protocol = match (protocol_name, url) {
        (_, Err(e)) => {
            if !host.is_empty() {
                p.fail_param(
                    ErrorKind::Config,
                    "host",
                    &[Metadata, Auth, Env],
                    format!("the host is not a valid URL: {e}"),
                );
            }
            Protocol::Http(HttpTarget {
                base: String::new(),
                vhost: String::new(),
                username: None,
                password: None,
                tls,
            })
        }
        ("amqp", Ok(url)) => {
            let secure = url.scheme() == "amqps";
            let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
            let mut vhost = url.path().strip_prefix('/').map(decode).unwrap_or_default();
            if vhost.is_empty() {
                vhost = "/".to_owned();
            }
            if let Some(v) = &vhost_name {
                vhost.clone_from(v);
            }
            let (user, pass) = match (&username, &password) {
                (Some(u), Some(pw)) => (u.clone(), pw.clone()),
                _ => (
                    if url.username().is_empty() {
                        "guest".to_owned()
                    } else {
                        decode(url.username())
                    },
                    url.password()
                        .map(decode)
                        .unwrap_or_else(|| "guest".to_owned()),
                ),
            };
            let use_tls = secure || tls_mode == "enable";
            Protocol::Amqp(AmqpKey {
                host: url
                    .host_str()
                    .unwrap_or_default()
                    .trim_matches(['[', ']'])
                    .to_owned(),
                port: url.port().unwrap_or(if secure { 5671 } else { 5672 }),
                username: user,
                password: Secret::new(pass),
                vhost,
                tls: use_tls.then(|| tls.clone()),
                connection_name: "ringscale".to_owned(),
            })
        }
        (_, Ok(url)) => {
            let raw_path = url.path().to_owned();
            let mut segments: Vec<&str> = raw_path.split('/').collect();
            let last = segments.pop().unwrap_or_default().to_owned();
            let subpath = segments
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("/");
            let mut vhost = last;
            if let Some(v) = &vhost_name {
                vhost = go_query_escape(v);
            }
            if vhost.is_empty() || vhost == "/" {
                vhost = "%2F".to_owned();
            }
            let mut base = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
            if let Some(port) = url.port() {
                base.push_str(&format!(":{port}"));
            }
            if !subpath.is_empty() {
                base.push('/');
                base.push_str(&subpath);
            }
            let (user, pass) = match (&username, &password) {
                (Some(u), Some(pw)) => (Some(u.clone()), Some(Secret::new(pw))),
                _ if !url.username().is_empty() => (
                    Some(
                        percent_decode_str(url.username())
                            .decode_utf8_lossy()
                            .into_owned(),
                    ),
                    url.password()
                        .map(|pw| Secret::new(percent_decode_str(pw).decode_utf8_lossy())),
                ),
                _ => (None, None),
            };
            Protocol::Http(HttpTarget {
                base,
                vhost,
                username: user,
                password: pass,
                tls: if tls_mode == "enable" || url.scheme() == "https" {
                    tls
                } else {
                    TlsOptions::default()
                },
            })
        }
    };
    if let Protocol::Http(t) = &protocol
        && let Err(e) = t.tls.client_config()
    {
        p.fail_param(ErrorKind::Config, "tls", AUTH, e.to_string());
    }
    Config {
        queue,
        mode,
        value,
        activation,
        protocol,
        use_regex,
        exclude_unacknowledged,
        page_size,
        operation,
        timeout,
    }
}

/// Go's `url.QueryEscape`, which KEDA uses in the metric name.
pub(crate) fn go_query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Characters escaped in a URL path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

impl Config {
    pub fn metric_specs(&self, common: &Common) -> Vec<MetricSpec> {
        vec![MetricSpec::External(ExternalMetric::new(
            metric_name(
                common.index,
                &normalize(&format!("rabbitmq-{}", go_query_escape(&self.queue))),
            ),
            common.metric_type.clone(),
            self.value,
        ))]
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct QueueInfo {
    messages: i64,
    messages_ready: i64,
    message_stats: MessageStats,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MessageStats {
    publish_details: Rate,
    deliver_get_details: Rate,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Rate {
    rate: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct QueuePage {
    items: Vec<QueueInfo>,
    page_count: i64,
}

enum Backend {
    Amqp(Arc<AmqpSource>),
    /// The client, the bound of calls to the management API's host, and where it is.
    Http(Arc<HttpSource>, Arc<crate::sources::Limit>, HttpTarget),
}

/// A built `rabbitmq` trigger.
pub(crate) struct RabbitScaler {
    config: Config,
    backend: Backend,
}

impl RabbitScaler {
    pub fn new(config: Config, sources: &Sources) -> Self {
        let backend = match &config.protocol {
            Protocol::Amqp(key) => Backend::Amqp(
                sources
                    .inner
                    .amqp
                    .get_or_insert(key, || AmqpSource::new(key.clone(), sources.limit())),
            ),
            Protocol::Http(target) => {
                let client = http::client(sources, target.tls.clone());
                let limit = client.limit_for(&target.base);
                Backend::Http(client, limit, target.clone())
            }
        };
        RabbitScaler { config, backend }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub async fn poll(&self, common: &Common, metric: &str) -> Result<Poll, crate::ScalerError> {
        let (messages, publish, deliver) = match &self.backend {
            Backend::Amqp(source) => {
                let _permit = source.limit.acquire().await;
                let n = source
                    .message_count(&self.config.queue)
                    .await
                    .map_err(|e| common.source_error(format!("error inspecting RabbitMQ: {e}")))?;
                (f64::from(n), 0.0, 0.0)
            }
            Backend::Http(source, limit, target) => {
                let _permit = limit.acquire().await;
                let info = self.queue_info(common, source, target).await?;
                let messages = if self.config.exclude_unacknowledged {
                    info.messages_ready
                } else {
                    info.messages
                };
                (
                    messages as f64,
                    info.message_stats.publish_details.rate,
                    info.message_stats.deliver_get_details.rate,
                )
            }
        };
        let activation = self.config.activation;
        let (value, active) = match self.config.mode {
            Mode::QueueLength => (messages, messages > activation),
            Mode::MessageRate => (publish, publish > activation || messages > activation),
            Mode::DeliverGetRate => (deliver, deliver > activation),
            Mode::PublishedToDeliveredRatio => {
                let ratio = if publish > 0.0 && deliver == 0.0 {
                    activation
                } else if publish > 0.0 && deliver > 0.0 {
                    publish / deliver
                } else {
                    0.0
                };
                (
                    ratio,
                    ratio > activation || (publish > 0.0 && deliver == 0.0),
                )
            }
            Mode::ExpectedQueueConsumptionTime => {
                let eta = if deliver == 0.0 {
                    activation
                } else {
                    (publish - deliver) / deliver + messages / deliver
                };
                (eta, eta > activation || deliver == 0.0)
            }
        };
        Ok(Poll::one(common.name(metric), value, active))
    }

    async fn queue_info(
        &self,
        common: &Common,
        source: &HttpSource,
        target: &HttpTarget,
    ) -> Result<QueueInfo, crate::ScalerError> {
        let client = source
            .client()
            .map_err(|e| common.error(ErrorKind::Config, e.to_string()))?;
        let url = if self.config.use_regex {
            format!(
                "{}/api/queues/{}?page=1&use_regex=true&pagination=false&name={}&page_size={}",
                target.base,
                target.vhost,
                go_query_escape(&self.config.queue),
                self.config.page_size
            )
        } else {
            format!(
                "{}/api/queues/{}/{}",
                target.base,
                target.vhost,
                utf8_percent_encode(&self.config.queue, SEGMENT)
            )
        };
        let mut request = client.get(&url);
        if let Some(user) = &target.username {
            request = request.basic_auth(user, target.password.as_ref().map(Secret::expose));
        }
        let answer = fetch(request)
            .await
            .map_err(|e| common.source_error(format!("error inspecting RabbitMQ: {e}")))?;
        if answer.status != reqwest::StatusCode::OK {
            return Err(common.source_error(format!(
                "error requesting RabbitMQ API status: {}, response: {}, from: {url}",
                answer.status,
                excerpt(&answer.body)
            )));
        }
        let bad = |e: serde_json::Error| {
            common.source_error(format!(
                "the RabbitMQ management API answered unreadable JSON: {e}"
            ))
        };
        if self.config.use_regex {
            let page: QueuePage = serde_json::from_slice(&answer.body).map_err(bad)?;
            if page.page_count > 1 {
                return Err(common.source_error(
                    "regex matches more queues than can be recovered at once; raise pageSize",
                ));
            }
            Ok(combine(&page.items, self.config.operation))
        } else {
            serde_json::from_slice(&answer.body).map_err(bad)
        }
    }
}

fn combine(queues: &[QueueInfo], operation: Operation) -> QueueInfo {
    let mut out = QueueInfo::default();
    if queues.is_empty() {
        return out;
    }
    match operation {
        Operation::Sum | Operation::Avg => {
            for q in queues {
                out.messages += q.messages;
                out.messages_ready += q.messages_ready;
                out.message_stats.publish_details.rate += q.message_stats.publish_details.rate;
                out.message_stats.deliver_get_details.rate +=
                    q.message_stats.deliver_get_details.rate;
            }
            if operation == Operation::Avg {
                let n = queues.len() as i64;
                out.messages /= n;
                out.messages_ready /= n;
                out.message_stats.publish_details.rate /= n as f64;
                out.message_stats.deliver_get_details.rate /= n as f64;
            }
        }
        Operation::Max => {
            for q in queues {
                out.messages = out.messages.max(q.messages);
                out.messages_ready = out.messages_ready.max(q.messages_ready);
                let p = &mut out.message_stats.publish_details.rate;
                *p = p.max(q.message_stats.publish_details.rate);
                let d = &mut out.message_stats.deliver_get_details.rate;
                *d = d.max(q.message_stats.deliver_get_details.rate);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_escape_matches_go() {
        assert_eq!(go_query_escape("orders.high"), "orders.high");
        assert_eq!(go_query_escape("a b/c"), "a+b%2Fc");
        assert_eq!(
            normalize(&format!("rabbitmq-{}", go_query_escape("a/b.c"))),
            "rabbitmq-a-2Fb-c"
        );
    }

    #[test]
    fn regex_matches_combine() {
        let q = |m, r| QueueInfo {
            messages: m,
            messages_ready: r,
            ..Default::default()
        };
        let qs = [q(4, 1), q(10, 3)];
        assert_eq!(combine(&qs, Operation::Sum).messages, 14);
        assert_eq!(combine(&qs, Operation::Avg).messages, 7);
        assert_eq!(combine(&qs, Operation::Max).messages_ready, 3);
        assert_eq!(combine(&[], Operation::Max).messages, 0);
    }
}
