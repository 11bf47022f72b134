//! The replicated metrics cache: one record per (object, metric name), and the
//! merge rule that lets every replica converge whatever the order in which records reach it.
//!
//! A record carries the ring generation and the owner's sequence number at which it was polled.
//! [`Cache::merge`] keeps the record with the highest [`Version`] (generation, then seq); between
//! two records with the same version it keeps the greater under a fixed total order of their
//! contents, so merging is commutative, associative and idempotent: any permutation, duplication,
//! or loss followed by a resend of the same updates ends in the same state
//! (`tests/convergence.rs`).
//!
//! Time is passed in explicitly (`now: Instant`), so callers decide the clock (tokio's paused
//! clock in tests) and the crate does no I/O. Ages travel between replicas as durations ("polled
//! N ms ago"), never as wall-clock timestamps, so replica clocks need not agree.

pub use ringscale_ring::{Kind, ObjectId};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The floor of the staleness limit: a record younger than this is never stale.
pub const MIN_STALE_AFTER: Duration = Duration::from_secs(60);

/// The staleness limit in polling intervals.
pub const STALE_INTERVALS: u32 = 3;

/// Longest error message a record keeps (longer ones are cut at a character boundary), so one
/// broken source cannot make replication messages large.
pub const MAX_ERROR_LEN: usize = 1024;

/// What a record is about: one metric of one ScaledObject or ScaledJob.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey {
    /// The object polled.
    pub object: ObjectId,
    /// KEDA's metric name (`s0-redis-mylist`, ...).
    pub metric_name: String,
}

impl RecordKey {
    /// A key.
    pub fn new(object: ObjectId, metric_name: impl Into<String>) -> Self {
        RecordKey {
            object,
            metric_name: metric_name.into(),
        }
    }

    /// The key of a ScaledObject's metric.
    pub fn scaled_object(
        namespace: impl Into<String>,
        name: impl Into<String>,
        metric_name: impl Into<String>,
    ) -> Self {
        RecordKey::new(ObjectId::scaled_object(namespace, name), metric_name)
    }
}

/// `ScaledObject default/orders/s0-redis-orders`.
impl fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.object, self.metric_name)
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// When a record was written: the ring generation its owner held, then the owner's sequence
/// number. Ordered by generation first, so a new owner's records (written at the generation that
/// gave it the object) always win over the previous owner's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Ring generation held by the writer.
    pub generation: u64,
    /// The writer's sequence number ([`SeqSource`]).
    pub seq: u64,
}

/// A metric value as one poll saw it.
#[derive(Clone, Debug)]
pub struct Record {
    /// The metric value (KEDA's float64).
    pub value: f64,
    /// Whether the trigger is active (value above its activation threshold).
    pub active: bool,
    /// Why the poll failed, if it did (then `value` is the last good value or 0).
    pub error: Option<Arc<str>>,
    /// Generation and sequence number of the write.
    pub version: Version,
    /// When the source was read, on this replica's monotonic clock.
    pub polled_at: Instant,
    /// The ScaledObject's `pollingInterval`, which sets when the record goes stale.
    pub polling_interval: Duration,
    /// The replica that polled it.
    pub origin: Arc<str>,
    /// Consecutive failed reads of the metric, as its owner counts them (KEDA's
    /// `status.health[].numberOfFailures`): any replica applies fallback from it.
    pub failures: u32,
}

/// How usable a record is at a given moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Younger than one polling interval: as good as a live read (KEDA's `useCachedMetrics`).
    Current,
    /// Older than an interval but within the staleness limit: servable, though a live read from
    /// the owner is preferable.
    Usable,
    /// Older than max(3 × pollingInterval, 60 s): never served as fresh.
    Stale,
}

impl Record {
    /// A record polled at `polled_at`; an over-long error message is cut to [`MAX_ERROR_LEN`].
    pub fn new(
        value: f64,
        active: bool,
        error: Option<&str>,
        version: Version,
        polled_at: Instant,
        polling_interval: Duration,
        origin: Arc<str>,
    ) -> Self {
        Record {
            value,
            active,
            error: error.map(|e| Arc::from(truncate(e, MAX_ERROR_LEN))),
            version,
            polled_at,
            polling_interval,
            origin,
            failures: 0,
        }
    }

    /// The same record with the owner's count of consecutive failures.
    #[must_use]
    pub fn with_failures(mut self, failures: u32) -> Self {
        self.failures = failures;
        self
    }

    /// How long ago the source was read.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.polled_at)
    }

    /// The age past which the record is stale: max(3 × pollingInterval, 60 s).
    pub fn stale_after(&self) -> Duration {
        stale_after(self.polling_interval)
    }

    /// How usable the record is at `now`.
    pub fn freshness(&self, now: Instant) -> Freshness {
        let age = self.age(now);
        if age <= self.polling_interval {
            Freshness::Current
        } else if age <= self.stale_after() {
            Freshness::Usable
        } else {
            Freshness::Stale
        }
    }

    /// Whether the record may be served as fresh at `now` (not older than the staleness limit).
    pub fn is_fresh(&self, now: Instant) -> bool {
        self.freshness(now) != Freshness::Stale
    }

    /// The instant a record received as "polled `age` ago" was polled, on the local clock; `None`
    /// when the age reaches back before the local clock's range (such a record is ancient).
    pub fn polled_at_from_age(now: Instant, age: Duration) -> Option<Instant> {
        now.checked_sub(age)
    }

    /// Whether `self` says what `other` said: the same owner, at the same ring generation, read
    /// the same value, activity and error with the same polling interval. Only the sequence
    /// number and the time of the read may differ. A re-poll that is the same reading changes
    /// nothing a peer serves except the record's age, so replication may send it late, together
    /// with others (see `ringscale-replication`'s confirmation interval).
    pub fn same_reading(&self, other: &Record) -> bool {
        self.version.generation == other.version.generation
            && self.value.to_bits() == other.value.to_bits()
            && self.active == other.active
            && self.error == other.error
            && self.polling_interval == other.polling_interval
            && self.origin == other.origin
            && self.failures == other.failures
    }

    /// The total order on records used by [`Cache::merge`]: version first, then the contents, so
    /// two different records with one version still merge the same way everywhere.
    pub fn merge_order(&self, other: &Record) -> Ordering {
        self.version
            .cmp(&other.version)
            .then_with(|| self.value.total_cmp(&other.value))
            .then_with(|| self.active.cmp(&other.active))
            .then_with(|| self.error.cmp(&other.error))
            .then_with(|| self.origin.cmp(&other.origin))
            .then_with(|| self.polling_interval.cmp(&other.polling_interval))
            .then_with(|| self.failures.cmp(&other.failures))
            .then_with(|| self.polled_at.cmp(&other.polled_at))
    }
}

/// max(3 × `polling_interval`, 60 s).
pub fn stale_after(polling_interval: Duration) -> Duration {
    polling_interval
        .saturating_mul(STALE_INTERVALS)
        .max(MIN_STALE_AFTER)
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// What [`Cache::merge`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// The key was new.
    Inserted,
    /// The record replaced an older one.
    Replaced,
    /// The cache already held this record or a newer one.
    Ignored,
}

impl Merge {
    /// Whether the cache changed.
    pub fn changed(self) -> bool {
        self != Merge::Ignored
    }
}

/// The records a replica knows.
#[derive(Clone, Debug, Default)]
pub struct Cache {
    records: HashMap<RecordKey, Record>,
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Self {
        Cache::default()
    }

    /// Merges a record: it replaces the held one only if it is greater in
    /// [`Record::merge_order`] (a higher version, in practice).
    pub fn merge(&mut self, key: RecordKey, record: Record) -> Merge {
        match self.records.entry(key) {
            Entry::Vacant(slot) => {
                slot.insert(record);
                Merge::Inserted
            }
            Entry::Occupied(mut slot) => {
                if record.merge_order(slot.get()) == Ordering::Greater {
                    slot.insert(record);
                    Merge::Replaced
                } else {
                    Merge::Ignored
                }
            }
        }
    }

    /// [`Cache::merge`] for a borrowed key, which is cloned only when it is new (replication
    /// merges every record of a peer through here: most keys are held already), together with
    /// whether the record is news here ([`Cache::is_news`], judged before the merge).
    pub fn merge_news(&mut self, key: &RecordKey, record: Record) -> (Merge, bool) {
        match self.records.get_mut(key) {
            None => {
                self.records.insert(key.clone(), record);
                (Merge::Inserted, true)
            }
            Some(held) => {
                let news = !record.same_reading(held);
                if record.merge_order(held) == Ordering::Greater {
                    *held = record;
                    (Merge::Replaced, news)
                } else {
                    (Merge::Ignored, news)
                }
            }
        }
    }

    /// The record for a key, whatever its age.
    pub fn get(&self, key: &RecordKey) -> Option<&Record> {
        self.records.get(key)
    }

    /// Whether `record` would be news here: the key is new, or the held record is not the
    /// same reading ([`Record::same_reading`]).
    pub fn is_news(&self, key: &RecordKey, record: &Record) -> bool {
        self.records
            .get(key)
            .is_none_or(|held| !record.same_reading(held))
    }

    /// The record for a key if it may be served as fresh at `now`.
    pub fn get_fresh(&self, key: &RecordKey, now: Instant) -> Option<&Record> {
        self.records.get(key).filter(|r| r.is_fresh(now))
    }

    /// Every record of one object.
    pub fn object<'a>(
        &'a self,
        object: &'a ObjectId,
    ) -> impl Iterator<Item = (&'a RecordKey, &'a Record)> + 'a {
        self.records
            .iter()
            .filter(move |(k, _)| k.object == *object)
    }

    /// Forgets an object (it was deleted, or is no longer owned); returns how many records went.
    pub fn remove_object(&mut self, object: &ObjectId) -> usize {
        let before = self.records.len();
        self.records.retain(|k, _| k.object != *object);
        before - self.records.len()
    }

    /// Drops records older than twice their staleness limit (never served, no longer worth
    /// showing); returns how many went.
    pub fn prune(&mut self, now: Instant) -> usize {
        let before = self.records.len();
        self.records
            .retain(|_, r| r.age(now) <= r.stale_after().saturating_mul(2));
        before - self.records.len()
    }

    /// Every record.
    pub fn iter(&self) -> impl Iterator<Item = (&RecordKey, &Record)> {
        self.records.iter()
    }

    /// Records polled by `origin`.
    pub fn from_origin<'a>(
        &'a self,
        origin: &'a str,
    ) -> impl Iterator<Item = (&'a RecordKey, &'a Record)> + 'a {
        self.records
            .iter()
            .filter(move |(_, r)| &*r.origin == origin)
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// An owner's sequence numbers: strictly increasing within a process, and starting from the wall
/// clock in microseconds so that a restarted replica continues above its previous run (as long as
/// the clock did not step back by more than the previous run lasted).
#[derive(Debug)]
pub struct SeqSource {
    last: AtomicU64,
}

impl Default for SeqSource {
    fn default() -> Self {
        SeqSource::new()
    }
}

impl SeqSource {
    /// A source starting at the current wall-clock time in microseconds.
    pub fn new() -> Self {
        SeqSource::starting_at(unix_micros())
    }

    /// A source whose first number is `start + 1` (tests).
    pub fn starting_at(start: u64) -> Self {
        SeqSource {
            last: AtomicU64::new(start),
        }
    }

    /// The next number: above every number handed out before, and not below the wall clock.
    pub fn next(&self) -> u64 {
        let now = unix_micros();
        let mut last = self.last.load(AtomicOrdering::Relaxed);
        loop {
            let next = now.max(last.saturating_add(1));
            match self.last.compare_exchange_weak(
                last,
                next,
                AtomicOrdering::Relaxed,
                AtomicOrdering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(current) => last = current,
            }
        }
    }
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(generation: u64, seq: u64, value: f64, polled_at: Instant) -> Record {
        Record::new(
            value,
            value > 0.0,
            None,
            Version { generation, seq },
            polled_at,
            Duration::from_secs(30),
            Arc::from("ringscale-0"),
        )
    }

    fn key() -> RecordKey {
        RecordKey::scaled_object("default", "orders", "s0-redis-orders")
    }

    #[test]
    fn a_higher_generation_wins_over_a_higher_seq() {
        let now = Instant::now();
        let mut cache = Cache::new();
        assert_eq!(
            cache.merge(key(), record(5, 900, 1.0, now)),
            Merge::Inserted
        );
        // The new owner at generation 6 has a lower seq (its own counter) but wins.
        assert_eq!(cache.merge(key(), record(6, 10, 2.0, now)), Merge::Replaced);
        // A late write from the old owner at generation 5 does not bring its value back.
        assert_eq!(
            cache.merge(key(), record(5, 1000, 3.0, now)),
            Merge::Ignored
        );
        assert_eq!(cache.get(&key()).map(|r| r.value), Some(2.0));
        // Same version, same contents: nothing changes.
        assert_eq!(cache.merge(key(), record(6, 10, 2.0, now)), Merge::Ignored);
    }

    #[test]
    fn staleness_is_max_of_three_intervals_and_a_minute() {
        let t0 = Instant::now();
        let mut r = record(1, 1, 4.0, t0);
        r.polling_interval = Duration::from_secs(30);
        assert_eq!(r.stale_after(), Duration::from_secs(90));
        assert_eq!(
            r.freshness(t0 + Duration::from_secs(30)),
            Freshness::Current
        );
        assert_eq!(r.freshness(t0 + Duration::from_secs(31)), Freshness::Usable);
        assert!(r.is_fresh(t0 + Duration::from_secs(90)));
        assert!(!r.is_fresh(t0 + Duration::from_secs(90) + Duration::from_millis(1)));

        r.polling_interval = Duration::from_secs(5);
        assert_eq!(r.stale_after(), Duration::from_secs(60));
        assert!(r.is_fresh(t0 + Duration::from_secs(60)));
        assert!(!r.is_fresh(t0 + Duration::from_millis(60_001)));

        let mut cache = Cache::new();
        cache.merge(key(), r);
        assert!(
            cache
                .get_fresh(&key(), t0 + Duration::from_secs(59))
                .is_some()
        );
        assert!(
            cache
                .get_fresh(&key(), t0 + Duration::from_secs(61))
                .is_none()
        );
        assert!(cache.get(&key()).is_some());
        assert_eq!(cache.prune(t0 + Duration::from_secs(119)), 0);
        assert_eq!(cache.prune(t0 + Duration::from_secs(121)), 1);
        assert!(cache.is_empty());
    }

    #[test]
    fn long_errors_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_ERROR_LEN);
        let r = Record::new(
            0.0,
            false,
            Some(&long),
            Version::default(),
            Instant::now(),
            Duration::from_secs(30),
            Arc::from("a"),
        );
        let kept = r.error.as_deref().map(str::len).unwrap_or_default();
        assert!(
            (MAX_ERROR_LEN - 1..=MAX_ERROR_LEN).contains(&kept),
            "{kept}"
        );
    }

    #[test]
    fn a_re_poll_is_the_same_reading_only_if_nothing_but_seq_and_time_differ() {
        let now = Instant::now();
        let first = record(3, 10, 4.0, now);
        let later = now + Duration::from_secs(30);
        assert!(record(3, 11, 4.0, later).same_reading(&first));
        // A new value, a new generation (a takeover), an error or another interval is news.
        assert!(!record(3, 11, 5.0, later).same_reading(&first));
        assert!(!record(4, 11, 4.0, later).same_reading(&first));
        let mut failed = record(3, 11, 4.0, later);
        failed.error = Some(Arc::from("connection refused"));
        assert!(!failed.same_reading(&first));
        let mut slower = record(3, 11, 4.0, later);
        slower.polling_interval = Duration::from_secs(60);
        assert!(!slower.same_reading(&first));
        let mut elsewhere = record(3, 11, 4.0, later);
        elsewhere.origin = Arc::from("ringscale-1");
        assert!(!elsewhere.same_reading(&first));
        // -0.0 and 0.0 compare equal as numbers but are different readings on the wire.
        assert!(!record(3, 11, -0.0, later).same_reading(&record(3, 10, 0.0, now)));
    }

    #[test]
    fn removing_an_object_leaves_the_others() {
        let now = Instant::now();
        let mut cache = Cache::new();
        cache.merge(key(), record(1, 1, 1.0, now));
        cache.merge(
            RecordKey::scaled_object("default", "orders", "s1-cron"),
            record(1, 2, 1.0, now),
        );
        cache.merge(
            RecordKey::scaled_object("default", "payments", "s0-redis-p"),
            record(1, 3, 1.0, now),
        );
        let orders = ObjectId::scaled_object("default", "orders");
        // A ScaledJob of the same name is another object.
        cache.merge(
            RecordKey::new(ObjectId::scaled_job("default", "orders"), "s0-redis-orders"),
            record(1, 1, 1.0, now),
        );
        assert_eq!(cache.object(&orders).count(), 2);
        assert_eq!(cache.remove_object(&orders), 2);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn sequence_numbers_increase_and_follow_the_clock() {
        let seq = SeqSource::new();
        let a = seq.next();
        let b = seq.next();
        assert!(b > a);
        assert!(a >= unix_micros() - 10_000_000);
        // A source "from the future" (clock stepped back) still increases.
        let ahead = SeqSource::starting_at(u64::MAX - 2);
        assert!(ahead.next() > u64::MAX - 2);
    }
}
