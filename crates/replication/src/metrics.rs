//! Replication's own series on a replica's `/metrics`: peers, records, traffic and lag.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::{Peers, Store};

/// Registers replication's series in `registry`: `ringscale_peers_synced`,
/// `ringscale_cache_records`, the `ringscale_replication_*` counters,
/// `ringscale_forwarded_queries_served`, and `ringscale_replication_lag_seconds` — the age of
/// each peer's news (a new value, activity or error) when it is merged here, which includes the
/// owner's source read. Re-polls that read the same wait up to the confirmation interval on
/// purpose and are not counted. It takes the store's observer.
pub fn register(registry: &mut Registry, store: &Arc<Store>, peers: &Arc<Peers>) {
    let lag = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
    {
        let (lag, me) = (lag.clone(), Arc::<str>::from(store.name()));
        store.set_observer(Box::new(move |_, record, news| {
            if news && *record.origin != *me {
                let age = crate::now().saturating_duration_since(record.polled_at);
                lag.observe(age.as_secs_f64());
            }
        }));
    }
    registry.register(
        "ringscale_replication_lag_seconds",
        "Age of a peer's record when it was merged here (poll start to arrival)",
        lag,
    );
    registry.register_collector(Box::new(ReplicationCollector {
        store: Arc::clone(store),
        peers: Arc::clone(peers),
    }));
}

#[derive(Debug)]
struct ReplicationCollector {
    store: Arc<Store>,
    peers: Arc<Peers>,
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: usize,
) -> std::fmt::Result {
    let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    let metric = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(metric)
}

impl Collector for ReplicationCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let synced = self.peers.status().iter().filter(|p| p.synced).count();
        gauge(
            &mut encoder,
            "ringscale_peers_synced",
            "Peers whose first snapshot arrived",
            synced,
        )?;
        gauge(
            &mut encoder,
            "ringscale_cache_records",
            "Metric records held",
            self.store.len(),
        )?;
        let stats = &self.store.stats;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (name, help, value) in [
            (
                "ringscale_replication_records_sent",
                "Records sent to peers",
                load(&stats.records_sent),
            ),
            (
                "ringscale_replication_confirmations_held",
                "Re-polls that read the same and were not sent, every peer's copy being young enough",
                load(&stats.confirmations_held),
            ),
            (
                "ringscale_replication_bytes_sent",
                "Bytes sent to peers",
                load(&stats.bytes_sent),
            ),
            (
                "ringscale_replication_records_received",
                "Records received from peers",
                load(&stats.records_received),
            ),
            (
                "ringscale_replication_records_rejected",
                "Malformed records refused",
                load(&stats.records_rejected),
            ),
            (
                "ringscale_forwarded_queries_served",
                "Forwarded queries answered as the owner",
                load(&stats.queries_served),
            ),
        ] {
            let c = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, c.metric_type())?;
            c.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_series_are_registered_and_read_at_scrape() {
        let store = Store::new("r0");
        let peers = Peers::new(Arc::clone(&store), crate::Limits::default(), None);
        let mut registry = Registry::default();
        register(&mut registry, &store, &peers);
        store.stats.records_sent.fetch_add(3, Ordering::Relaxed);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "ringscale_peers_synced 0",
            "ringscale_cache_records 0",
            "ringscale_replication_records_sent_total 3",
            "ringscale_forwarded_queries_served_total 0",
            "ringscale_replication_lag_seconds_count 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
