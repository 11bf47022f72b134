//! Limits, timeouts and TLS for replication.

use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Bounds on what a replica accepts and how long it waits. The defaults suit a ring on one
/// cluster network; every one is a flag of `ringscale run`.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request a replica decodes (subscriptions and forwarded queries are tiny).
    pub max_request_bytes: usize,
    /// Largest batch or response a replica decodes or sends.
    pub max_message_bytes: usize,
    /// Records per batch (snapshots are sent in chunks of this size).
    pub max_batch_records: usize,
    /// Subscribers one replica serves at a time (a ring has N − 1; the rest are refused).
    pub max_subscribers: usize,
    /// How long a batch may wait for a subscriber to take it; a subscriber that reads slower
    /// than this is cut off (it reconnects and receives a snapshot).
    pub send_timeout: Duration,
    /// TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// Bound on a unary call (forwarded queries), client and server side.
    pub request_timeout: Duration,
    /// HTTP/2 keepalive ping interval; a peer that does not answer within `keepalive_timeout` is
    /// considered gone (a partition that drops packets without resetting connections).
    pub keepalive_interval: Duration,
    /// See `keepalive_interval`.
    pub keepalive_timeout: Duration,
    /// First reconnect delay; doubles per failure up to `backoff_max`, with jitter.
    pub backoff_base: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Longest time a re-poll that read the same as before waits to go to subscribers. News (a
    /// new value, activity or error) goes at once; a confirmation only keeps the peers' copy
    /// current, so confirmations wait to share one batch instead of costing one each.
    pub confirm_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 64 * 1024,
            max_message_bytes: 4 * 1024 * 1024,
            max_batch_records: 256,
            max_subscribers: 64,
            send_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(5),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            confirm_interval: Duration::from_secs(1),
        }
    }
}

impl Limits {
    /// The reconnect delay before attempt `attempt` (0-based): exponential, capped, with "equal
    /// jitter" (half fixed, half random) so that replicas restarted together spread out without
    /// ever retrying at once.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .backoff_base
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.backoff_max);
        let half = ceiling / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

/// Mutual TLS between replicas: every replica presents a certificate signed by `ca` with both
/// server and client usage, and accepts only peers whose certificate `ca` signed.
#[derive(Clone)]
pub struct PeerTls {
    /// CA certificate(s), PEM.
    pub ca_pem: String,
    /// This replica's certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM.
    pub key_pem: String,
    /// Name to verify in peers' certificates instead of the host of their address (for
    /// example a wildcard like `ringscale.ringscale-system.svc` when addresses are pod IPs).
    pub server_name: Option<String>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("server_name", &self.server_name)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl PeerTls {
    /// Reads the three PEM files.
    pub fn from_files(
        ca: &std::path::Path,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> std::io::Result<Self> {
        Ok(PeerTls {
            ca_pem: std::fs::read_to_string(ca)?,
            cert_pem: std::fs::read_to_string(cert)?,
            key_pem: std::fs::read_to_string(key)?,
            server_name: None,
        })
    }

    pub(crate) fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(false)
    }

    pub(crate) fn client(&self) -> ClientTlsConfig {
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        match &self.server_name {
            Some(name) => config.domain_name(name.clone()),
            None => config,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_never_reaches_zero() {
        let limits = Limits::default();
        for attempt in 0..40 {
            let d = limits.backoff(attempt);
            let ceiling = (limits.backoff_base * 2u32.pow(attempt.min(20))).min(limits.backoff_max);
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d:?}");
        }
        assert!(limits.backoff(0) >= Duration::from_millis(50));
    }
}
