//! The replica's record store: the merged cache, the records this replica polled, and the
//! outboxes that carry them to subscribers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ringscale_cache::{Cache, Merge, ObjectId, Record, RecordKey, SeqSource, Version};
use tokio::sync::Notify;

/// Called for every record that changed the cache (local polls and records from peers), with
/// whether it is news: a new key or a different reading, not a re-poll that read the same
/// ([`Record::same_reading`]) and only makes the held record younger.
pub type Observer = Box<dyn Fn(&RecordKey, &Record, bool) + Send + Sync>;

/// Counters for `/metrics` and benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    /// Batches sent to subscribers.
    pub batches_sent: AtomicU64,
    /// Records sent to subscribers.
    pub records_sent: AtomicU64,
    /// Encoded protobuf bytes sent to subscribers (before HTTP/2 and TLS framing).
    pub bytes_sent: AtomicU64,
    /// Snapshots sent.
    pub snapshots_sent: AtomicU64,
    /// Subscribers cut off because they did not read within the send timeout.
    pub slow_subscribers_dropped: AtomicU64,
    /// Records received from peers.
    pub records_received: AtomicU64,
    /// Received records that changed the cache.
    pub records_applied: AtomicU64,
    /// Received records refused as malformed.
    pub records_rejected: AtomicU64,
    /// Subscriptions refused (too many subscribers).
    pub subscriptions_refused: AtomicU64,
    /// Forwarded queries served, and of those answered by joining a query already running.
    pub queries_served: AtomicU64,
    /// See `queries_served`.
    pub queries_coalesced: AtomicU64,
    /// Re-polls that read the same and were not sent: every peer's copy was young enough
    /// ([`confirmation_due`]).
    pub confirmations_held: AtomicU64,
}

/// Whether a re-poll that read the same as the record it replaces must go to the peers: when
/// their copy (polled at `sent`, the last record of the key that went to them) would otherwise
/// be older than half its staleness limit before the next poll could refresh it. Peers serve a
/// record while it is younger than the limit (max(3 × pollingInterval, 60 s)); for the 60 s floor
/// with short intervals a peer's copy therefore ages at most 30 s instead of one interval, and a
/// 10 s interval sends one confirmation in three polls. Intervals of 20 s and more confirm every
/// poll, as before. News (a different value, activity, error or failure count) always goes.
pub(crate) fn confirmation_due(sent: Option<Instant>, record: &Record) -> bool {
    sent.is_none_or(|sent| {
        record.polled_at.saturating_duration_since(sent) + record.polling_interval
            > record.stale_after() / 2
    })
}

/// The records waiting to go to one subscriber: only the latest per key, so a slow subscriber
/// costs at most one record per key this replica polls, however many polls happen meanwhile.
///
/// News (a new key or a different reading) wakes the sender at once. A re-poll that read the
/// same only confirms that the peer's copy is still current: it is queued only when that copy
/// would otherwise grow too old ([`confirmation_due`]), then waits for the next news or the
/// confirmation interval, whichever comes first, and goes in the same batch as the rest, so an
/// unchanged source costs the ring one batch per interval instead of one per poll.
#[derive(Default)]
pub(crate) struct Outbox {
    /// Per key: the latest record and whether it (or one it replaced here) is news.
    pending: Mutex<HashMap<RecordKey, (Record, bool)>>,
    pub(crate) notify: Notify,
}

impl Outbox {
    fn push(&self, key: &RecordKey, record: &Record, news: bool) {
        {
            let mut pending = lock(&self.pending);
            let was_news = pending.get(key).is_some_and(|(_, n)| *n);
            pending.insert(key.clone(), (record.clone(), news || was_news));
        }
        if news {
            self.notify.notify_one();
        }
    }

    /// Everything pending, news and confirmations, leaving the outbox empty.
    pub(crate) fn take(&self) -> Vec<(RecordKey, Record)> {
        std::mem::take(&mut *lock(&self.pending))
            .into_iter()
            .map(|(k, (r, _))| (k, r))
            .collect()
    }

    /// Whether news is waiting (a test hook: confirmations alone do not wake the sender).
    #[cfg(test)]
    fn has_news(&self) -> bool {
        lock(&self.pending).values().any(|(_, n)| *n)
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.pending).len()
    }
}

struct Inner {
    cache: Cache,
    outboxes: HashMap<u64, Arc<Outbox>>,
    next_outbox: u64,
    /// Per key this replica polled: when the last record of it that went to the subscribers
    /// was polled. Every subscriber's copy is at least that young (a later subscriber's
    /// snapshot holds the latest record).
    sent: HashMap<RecordKey, Instant>,
}

/// One replica's view of every metric record.
pub struct Store {
    name: Arc<str>,
    generation: AtomicU64,
    seq: SeqSource,
    inner: Mutex<Inner>,
    observer: Mutex<Option<Arc<Observer>>>,
    max_outbox: AtomicUsize,
    /// Counters.
    pub stats: Stats,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("name", &self.name)
            .field("generation", &self.generation())
            .field("records", &self.len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code holding these locks can panic halfway through an update; recover the data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A new subscriber's outbox, the guard that closes it, and its snapshot.
pub(crate) type Subscription = (Arc<Outbox>, OutboxGuard, Vec<(RecordKey, Record)>);

/// Removes an outbox when its subscription ends.
pub(crate) struct OutboxGuard {
    store: Arc<Store>,
    id: u64,
}

impl Drop for OutboxGuard {
    fn drop(&mut self) {
        lock(&self.store.inner).outboxes.remove(&self.id);
    }
}

/// What one read of a metric found, as recorded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading<'a> {
    /// The value (for a failed read, the last good one).
    pub value: f64,
    /// Active, or counted active (fallback).
    pub active: bool,
    /// Why the read failed.
    pub error: Option<&'a str>,
    /// Consecutive failed reads so far.
    pub failures: u32,
    /// The ring generation of the cycle that read it: the one its writes were fenced by, so
    /// a record never carries a generation its owner did not hold when it polled.
    pub generation: u64,
}

impl Store {
    /// A store for the replica called `name` (its member name).
    pub fn new(name: &str) -> Arc<Self> {
        Arc::new(Store {
            name: Arc::from(name),
            generation: AtomicU64::new(0),
            seq: SeqSource::new(),
            inner: Mutex::new(Inner {
                cache: Cache::new(),
                outboxes: HashMap::new(),
                next_outbox: 0,
                sent: HashMap::new(),
            }),
            observer: Mutex::new(None),
            max_outbox: AtomicUsize::new(0),
            stats: Stats::default(),
        })
    }

    /// This replica's member name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ring generation this replica holds, as its follow task last set it: sent to peers
    /// when subscribing. Records carry their polling cycle's generation instead.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Sets the ring generation (from the coordinator's watch channel).
    pub fn set_generation(&self, generation: u64) {
        self.generation.store(generation, Ordering::Release);
    }

    /// Registers the observer (one; a second call replaces the first).
    pub fn set_observer(&self, observer: Observer) {
        *lock(&self.observer) = Some(Arc::new(observer));
    }

    fn observe(&self, key: &RecordKey, record: &Record, news: bool) {
        let observer = lock(&self.observer).clone();
        if let Some(observer) = observer {
            observer(key, record, news);
        }
    }

    /// Records a value this replica polled: stamps it with the generation set by
    /// [`Store::set_generation`] (tests and benchmarks; the operator passes its cycle's through
    /// [`Store::record`]) and the next sequence number, merges it, and queues it for every subscriber: at once when it is news,
    /// with the next batch (at most the confirmation interval later) when it read the same as
    /// the record it replaces. Returns its version.
    pub fn record_poll(
        &self,
        key: RecordKey,
        value: f64,
        active: bool,
        error: Option<&str>,
        polled_at: Instant,
        polling_interval: Duration,
    ) -> Version {
        self.record(
            key,
            Reading {
                value,
                active,
                error,
                failures: 0,
                generation: self.generation(),
            },
            polled_at,
            polling_interval,
        )
    }

    /// Records a reading stamped with its own generation (the polling cycle's) and the next
    /// sequence number, with the owner's count of consecutive failures, which every peer
    /// receives and applies fallback from.
    pub fn record(
        &self,
        key: RecordKey,
        reading: Reading<'_>,
        polled_at: Instant,
        polling_interval: Duration,
    ) -> Version {
        let version = Version {
            generation: reading.generation,
            seq: self.seq.next(),
        };
        let record = Record::new(
            reading.value,
            reading.active,
            reading.error,
            version,
            polled_at,
            polling_interval,
            Arc::clone(&self.name),
        )
        .with_failures(reading.failures);
        let (changed, news) = {
            let mut inner = lock(&self.inner);
            let (outcome, news) = inner.cache.merge_news(&key, record.clone());
            if outcome.changed() && !inner.outboxes.is_empty() {
                if news || confirmation_due(inner.sent.get(&key).copied(), &record) {
                    match inner.sent.get_mut(&key) {
                        Some(sent) => *sent = record.polled_at,
                        None => {
                            inner.sent.insert(key.clone(), record.polled_at);
                        }
                    }
                    let mut largest = 0;
                    for outbox in inner.outboxes.values() {
                        outbox.push(&key, &record, news);
                        largest = largest.max(outbox.len());
                    }
                    self.max_outbox.fetch_max(largest, Ordering::Relaxed);
                } else {
                    self.stats
                        .confirmations_held
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            (outcome.changed(), news)
        };
        if changed {
            self.observe(&key, &record, news);
        }
        version
    }

    /// Merges a record received from a peer (it is not sent on: every replica subscribes to every
    /// other, and each sends only what it polled).
    pub fn merge_remote(&self, key: RecordKey, record: Record) -> Merge {
        let (outcome, news) = {
            let mut inner = lock(&self.inner);
            let (outcome, news) = inner.cache.merge_news(&key, record.clone());
            if outcome.changed() && !inner.sent.is_empty() {
                // Another replica polls it now: a later poll of ours starts afresh.
                inner.sent.remove(&key);
            }
            (outcome, news)
        };
        if outcome.changed() {
            self.stats.records_applied.fetch_add(1, Ordering::Relaxed);
            self.observe(&key, &record, news);
        }
        outcome
    }

    /// The record for a key, whatever its age.
    pub fn get(&self, key: &RecordKey) -> Option<Record> {
        lock(&self.inner).cache.get(key).cloned()
    }

    /// The record for a key if it may be served as fresh at `now`.
    pub fn get_fresh(&self, key: &RecordKey, now: Instant) -> Option<Record> {
        lock(&self.inner).cache.get_fresh(key, now).cloned()
    }

    /// Every record of one object.
    pub fn object(&self, object: &ObjectId) -> Vec<(RecordKey, Record)> {
        lock(&self.inner)
            .cache
            .object(object)
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect()
    }

    /// Forgets an object (deleted, or no longer owned).
    pub fn remove_object(&self, object: &ObjectId) -> usize {
        let mut inner = lock(&self.inner);
        inner.sent.retain(|k, _| k.object != *object);
        inner.cache.remove_object(object)
    }

    /// Drops records far past their staleness limit.
    pub fn prune(&self, now: Instant) -> usize {
        let inner = &mut *lock(&self.inner);
        let pruned = inner.cache.prune(now);
        let cache = &inner.cache;
        inner.sent.retain(|k, _| cache.get(k).is_some());
        pruned
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        lock(&self.inner).cache.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `f` over the cache (hold it briefly: replication waits meanwhile).
    pub fn with_cache<R>(&self, f: impl FnOnce(&Cache) -> R) -> R {
        f(&lock(&self.inner).cache)
    }

    /// Current subscribers.
    pub fn subscribers(&self) -> usize {
        lock(&self.inner).outboxes.len()
    }

    /// The most records ever waiting in one subscriber's outbox (bounded by the keys this
    /// replica polls, however slow the subscriber).
    pub fn max_outbox_len(&self) -> usize {
        self.max_outbox.load(Ordering::Relaxed)
    }

    /// Opens an outbox and, atomically with it, takes the snapshot of this replica's own
    /// records: every later poll lands in the outbox, none falls between the two.
    pub(crate) fn open_outbox(self: &Arc<Self>, max_subscribers: usize) -> Option<Subscription> {
        let mut inner = lock(&self.inner);
        if inner.outboxes.len() >= max_subscribers {
            return None;
        }
        let id = inner.next_outbox;
        inner.next_outbox += 1;
        let outbox = Arc::new(Outbox::default());
        inner.outboxes.insert(id, Arc::clone(&outbox));
        let snapshot = inner
            .cache
            .from_origin(&self.name)
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        drop(inner);
        let guard = OutboxGuard {
            store: Arc::clone(self),
            id,
        };
        Some((outbox, guard, snapshot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A poll of one key at `at`, pollingInterval 10 s (stale after 60 s).
    fn poll(store: &Store, value: f64, error: Option<&str>, at: Instant) {
        store.record_poll(
            RecordKey::scaled_object("default", "orders", "s0-redis-orders"),
            value,
            value > 0.0,
            error,
            at,
            Duration::from_secs(10),
        );
    }

    fn seconds(t0: Instant) -> impl Fn(u64) -> Instant {
        move |s| t0 + Duration::from_secs(s)
    }

    #[test]
    fn news_wakes_the_sender_and_a_same_reading_waits_for_the_batch() {
        let store = Store::new("ringscale-0");
        let Some((outbox, _guard, snapshot)) = store.open_outbox(4) else {
            panic!("the outbox should open");
        };
        assert!(snapshot.is_empty());
        let at = seconds(crate::now());
        poll(&store, 3.0, None, at(0));
        assert!(outbox.has_news(), "a new key is news");
        assert_eq!(outbox.take().len(), 1);

        // The peers' copy is 30 s old and would be 40 s at the next poll: past half of 60 s.
        poll(&store, 3.0, None, at(30));
        assert!(!outbox.has_news(), "the same reading only confirms");
        let confirmed = outbox.take();
        assert_eq!(
            confirmed.len(),
            1,
            "but it is still sent with the next batch"
        );

        poll(&store, 4.0, None, at(40));
        poll(&store, 4.0, None, at(50));
        assert!(
            outbox.has_news(),
            "a confirmation does not hide the news it follows"
        );
        assert_eq!(outbox.take()[0].1.value, 4.0);

        poll(&store, 4.0, Some("connection refused"), at(60));
        assert!(outbox.has_news(), "a failure is news");
        outbox.take();
        poll(&store, 4.0, Some("connection refused"), at(90));
        assert!(!outbox.has_news(), "the same failure again is not");
    }

    #[test]
    fn a_same_reading_goes_to_the_peers_only_before_their_copy_grows_too_old() {
        let store = Store::new("ringscale-0");
        let Some((outbox, _guard, _)) = store.open_outbox(4) else {
            panic!("the outbox should open");
        };
        let t0 = crate::now();
        let at = seconds(t0);
        // pollingInterval 10 s: a peer serves a copy for 60 s; it gets one at most 30 s old.
        let mut sent = Vec::new();
        for s in (0..=100).step_by(10) {
            poll(&store, 3.0, None, at(s));
            for (_, r) in outbox.take() {
                sent.push(r.polled_at.duration_since(t0).as_secs());
            }
        }
        assert_eq!(sent, vec![0, 30, 60, 90]);
        assert_eq!(store.stats.confirmations_held.load(Ordering::Relaxed), 7);
        // The owner's own cache has every poll.
        let key = RecordKey::scaled_object("default", "orders", "s0-redis-orders");
        assert_eq!(store.get(&key).map(|r| r.polled_at), Some(at(100)));

        // News goes whatever the last confirmation: a new value, and a failure count that grows.
        poll(&store, 5.0, None, at(105));
        assert_eq!(outbox.take().len(), 1);
        let failing = |failures| Reading {
            value: 5.0,
            active: true,
            error: Some("timeout"),
            failures,
            generation: 0,
        };
        store.record(key.clone(), failing(1), at(106), Duration::from_secs(10));
        store.record(key.clone(), failing(2), at(107), Duration::from_secs(10));
        assert_eq!(outbox.take()[0].1.failures, 2);
        store.record(key.clone(), failing(2), at(108), Duration::from_secs(10));
        assert!(outbox.take().is_empty(), "the same count again waits");

        // With pollingInterval 30 s (stale after 90 s) every re-poll confirms, as before.
        let slow = RecordKey::scaled_object("default", "slow", "s0-redis-slow");
        for s in [0, 30, 60] {
            store.record_poll(
                slow.clone(),
                1.0,
                true,
                None,
                at(200 + s),
                Duration::from_secs(30),
            );
            assert_eq!(outbox.take().len(), 1, "the poll at {s} s");
        }
    }

    #[test]
    fn without_subscribers_nothing_is_tracked_and_a_new_one_gets_the_latest_in_its_snapshot() {
        let store = Store::new("ringscale-0");
        let at = seconds(crate::now());
        for s in (0..=40).step_by(10) {
            poll(&store, 3.0, None, at(s));
        }
        assert!(lock(&store.inner).sent.is_empty());
        assert_eq!(store.stats.confirmations_held.load(Ordering::Relaxed), 0);
        let Some((outbox, _guard, snapshot)) = store.open_outbox(4) else {
            panic!("the outbox should open");
        };
        assert_eq!(snapshot.len(), 1);
        assert_eq!(snapshot[0].1.polled_at, at(40));
        // Nothing was sent through an outbox yet: the first re-poll goes.
        poll(&store, 3.0, None, at(50));
        assert_eq!(outbox.take().len(), 1);
        // Forgetting the object forgets what was sent.
        store.remove_object(&ObjectId::scaled_object("default", "orders"));
        assert!(lock(&store.inner).sent.is_empty());
    }

    #[test]
    fn a_record_carries_its_cycles_generation_not_the_stores() {
        let store = Store::new("ringscale-0");
        // The follow task has not caught up with the ring the cycle was fenced by.
        store.set_generation(3);
        let key = RecordKey::scaled_object("default", "orders", "s0-redis-orders");
        let reading = |generation| Reading {
            value: 1.0,
            active: true,
            error: None,
            failures: 0,
            generation,
        };
        let version = store.record(
            key.clone(),
            reading(7),
            crate::now(),
            Duration::from_secs(10),
        );
        assert_eq!(version.generation, 7);
        assert_eq!(store.get(&key).map(|r| r.version.generation), Some(7));
        // The store's own generation is only what it tells peers.
        assert_eq!(store.generation(), 3);
    }

    #[test]
    fn the_observer_hears_whether_a_remote_record_is_news() {
        let store = Store::new("ringscale-1");
        let heard: Arc<Mutex<Vec<bool>>> = Arc::default();
        {
            let heard = Arc::clone(&heard);
            store.set_observer(Box::new(move |_, _, news| lock(&heard).push(news)));
        }
        let key = RecordKey::scaled_object("default", "orders", "s0-redis-orders");
        let at = |seq: u64, value: f64| {
            Record::new(
                value,
                true,
                None,
                Version { generation: 2, seq },
                crate::now(),
                Duration::from_secs(10),
                Arc::from("ringscale-0"),
            )
        };
        store.merge_remote(key.clone(), at(1, 3.0));
        store.merge_remote(key.clone(), at(2, 3.0));
        store.merge_remote(key.clone(), at(3, 5.0));
        // An older record changes nothing and is not heard at all.
        store.merge_remote(key, at(2, 3.0));
        assert_eq!(*lock(&heard), vec![true, false, true]);
    }
}
