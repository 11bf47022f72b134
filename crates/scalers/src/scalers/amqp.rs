//! Shared AMQP 0-9-1 connections (RabbitMQ's `amqp` protocol).

use std::sync::Arc;

use amqprs::channel::{Channel, QueueDeclareArguments};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::tls::TlsAdaptor;
use tokio::sync::Mutex;

use crate::redact::Secret;
use crate::sources::Limit;
use crate::tls::TlsOptions;

/// Identity of a shared AMQP broker connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct AmqpKey {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: Secret,
    pub vhost: String,
    pub tls: Option<TlsOptions>,
    /// The connection name shown by the broker; shared by every trigger on the connection.
    pub connection_name: String,
}

/// One broker connection with one channel for passive queue declarations. A failed declaration
/// (for example of a missing queue) closes the channel on the broker's side; the next call opens a
/// new one.
pub(crate) struct AmqpSource {
    key: AmqpKey,
    state: Mutex<Option<(Connection, Channel)>>,
    pub limit: Limit,
}

impl AmqpSource {
    pub fn new(key: AmqpKey, limit: Limit) -> Self {
        AmqpSource {
            key,
            state: Mutex::new(None),
            limit,
        }
    }

    /// The number of messages in `queue` (ready ones; AMQP does not report unacknowledged
    /// messages).
    pub async fn message_count(&self, queue: &str) -> Result<u32, AmqpError> {
        let mut state = self.state.lock().await;
        if !state
            .as_ref()
            .is_some_and(|(conn, ch)| conn.is_open() && ch.is_open())
        {
            let conn = match state.take() {
                Some((conn, _)) if conn.is_open() => conn,
                _ => self.connect().await?,
            };
            let channel = conn
                .open_channel(None)
                .await
                .map_err(|e| AmqpError::Channel(e.to_string()))?;
            *state = Some((conn, channel));
        }
        let Some((_, channel)) = state.as_ref() else {
            return Err(AmqpError::NoChannel);
        };
        let mut args = QueueDeclareArguments::new(queue);
        args.passive(true);
        match channel.queue_declare(args).await {
            Ok(Some((_, messages, _))) => Ok(messages),
            Ok(None) => Err(AmqpError::NoDeclareAnswer),
            Err(e) => {
                // The broker closes the channel after a failed declaration.
                if let Some((conn, _)) = state.take()
                    && conn.is_open()
                    && let Ok(ch) = conn.open_channel(None).await
                {
                    *state = Some((conn, ch));
                }
                Err(AmqpError::Queue(queue.to_owned(), e.to_string()))
            }
        }
    }

    async fn connect(&self) -> Result<Connection, AmqpError> {
        let k = &self.key;
        let mut args =
            OpenConnectionArguments::new(&k.host, k.port, &k.username, k.password.expose());
        args.virtual_host(&k.vhost)
            .connection_name(&k.connection_name);
        if let Some(tls) = &k.tls {
            let config = tls.client_config()?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            args.tls_adaptor(TlsAdaptor::new(connector, k.host.clone()));
        }
        Connection::open(&args.finish())
            .await
            .map_err(|e| AmqpError::Connect(e.to_string()))
    }
}

/// Why an AMQP queue could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AmqpError {
    /// The TLS settings are unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The broker refused or did not take the connection.
    #[error("cannot connect to the broker: {0}")]
    Connect(String),
    /// No channel could be opened on the connection.
    #[error("cannot open a channel: {0}")]
    Channel(String),
    /// The channel went before it could be used.
    #[error("no channel")]
    NoChannel,
    /// The broker did not answer the passive declaration.
    #[error("the broker did not answer the queue declaration")]
    NoDeclareAnswer,
    /// The declaration failed (the queue, the broker's reason): a missing queue, no access.
    #[error("queue {0:?}: {1}")]
    Queue(String, String),
}

impl Drop for AmqpSource {
    fn drop(&mut self) {
        if let Some((conn, channel)) = self.state.get_mut().take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move {
                let _ = channel.close().await;
                let _ = conn.close().await;
            });
        }
    }
}
