//! When each owned object is polled next: a binary heap of due times with lazy deletion, so that
//! inserting, rescheduling and removing are O(log n) and 50,000 entries cost a few MiB.
//!
//! Polls keep their cadence: the next poll is planned one interval after the *planned* time of
//! the previous one, not after it finished, and a poll that fell more than an interval behind
//! skips the missed rounds rather than bursting. The lag between the planned and the actual time
//! is what `keda_internal_scale_loop_latency_seconds` reports.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// One key's next planned poll.
struct Planned {
    due: Instant,
    interval: Duration,
    token: u64,
}

/// The poll schedule of a set of keys.
pub struct Schedule<K> {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    tokens: HashMap<u64, K>,
    planned: HashMap<K, Planned>,
    next_token: u64,
}

impl<K> std::fmt::Debug for Schedule<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedule")
            .field("entries", &self.planned.len())
            .field("heap", &self.heap.len())
            .finish()
    }
}

impl<K: Clone + Eq + Hash> Default for Schedule<K> {
    fn default() -> Self {
        Schedule {
            heap: BinaryHeap::new(),
            tokens: HashMap::new(),
            planned: HashMap::new(),
            next_token: 0,
        }
    }
}

impl<K: Clone + Eq + Hash> Schedule<K> {
    /// An empty schedule.
    pub fn new() -> Self {
        Schedule::default()
    }

    /// Plans `key` at `due`, then every `interval` (replacing any earlier plan for it).
    pub fn insert(&mut self, key: K, interval: Duration, due: Instant) {
        let token = self.next_token;
        self.next_token += 1;
        let old = self.planned.insert(
            key.clone(),
            Planned {
                due,
                interval: interval.max(Duration::from_millis(1)),
                token,
            },
        );
        if let Some(old) = old {
            self.tokens.remove(&old.token);
        }
        self.tokens.insert(token, key);
        self.heap.push(Reverse((due, token)));
        self.compact();
    }

    /// Plans `key` with its first poll spread over `[now, now + window)` by `fraction` (in
    /// [0, 1), from the caller's jitter), so that many objects starting together do not poll in
    /// one burst.
    pub fn insert_spread(
        &mut self,
        key: K,
        interval: Duration,
        now: Instant,
        window: Duration,
        fraction: f64,
    ) {
        let offset = window.min(interval).mul_f64(fraction.clamp(0.0, 0.999_999));
        self.insert(key, interval, now + offset);
    }

    /// Changes the interval of a planned key (a spec change); the next poll is due now.
    pub fn poll_now(&mut self, key: &K, interval: Duration, now: Instant) {
        self.insert(key.clone(), interval, now);
    }

    /// Stops polling `key`. Returns whether it was planned.
    pub fn remove(&mut self, key: &K) -> bool {
        match self.planned.remove(key) {
            Some(entry) => {
                self.tokens.remove(&entry.token);
                self.compact();
                true
            }
            None => false,
        }
    }

    /// Whether `key` is planned.
    pub fn contains(&self, key: &K) -> bool {
        self.planned.contains_key(key)
    }

    /// Planned keys.
    pub fn len(&self) -> usize {
        self.planned.len()
    }

    /// Whether nothing is planned.
    pub fn is_empty(&self) -> bool {
        self.planned.is_empty()
    }

    /// When the earliest poll is due.
    pub fn next_due(&mut self) -> Option<Instant> {
        self.skip_stale();
        self.heap.peek().map(|Reverse((due, _))| *due)
    }

    /// The next key due at or before `now`, with its planned time; it is replanned one interval
    /// later (skipping rounds that are already past).
    pub fn pop_due(&mut self, now: Instant) -> Option<(K, Instant)> {
        self.skip_stale();
        let Reverse((due, token)) = *self.heap.peek()?;
        if due > now {
            return None;
        }
        self.heap.pop();
        let key = self.tokens.remove(&token)?;
        let next_token = self.next_token;
        self.next_token += 1;
        let Entry::Occupied(mut entry) = self.planned.entry(key.clone()) else {
            return None;
        };
        let entry = entry.get_mut();
        let mut next = entry.due + entry.interval;
        if next <= now {
            // Fell behind by more than an interval: skip the missed rounds.
            let behind = now.saturating_duration_since(entry.due);
            let rounds = behind.as_nanos() / entry.interval.as_nanos().max(1);
            let skip = u32::try_from(rounds).unwrap_or(u32::MAX);
            next = entry.due + entry.interval.saturating_mul(skip.saturating_add(1));
        }
        entry.due = next;
        entry.token = next_token;
        self.tokens.insert(next_token, key.clone());
        self.heap.push(Reverse((next, next_token)));
        Some((key, due))
    }

    fn skip_stale(&mut self) {
        while let Some(Reverse((_, token))) = self.heap.peek() {
            if self.tokens.contains_key(token) {
                return;
            }
            self.heap.pop();
        }
    }

    /// Rebuilds the heap when stale entries outnumber live ones, so churn cannot grow it.
    fn compact(&mut self) {
        if self.heap.len() > 64 && self.heap.len() > 2 * self.planned.len() {
            self.heap = self
                .planned
                .values()
                .map(|s| Reverse((s.due, s.token)))
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[tokio::test(start_paused = true)]
    async fn polls_keep_their_cadence_and_skip_missed_rounds() {
        let t0 = Instant::now();
        let mut s = Schedule::new();
        s.insert("a", secs(10), t0);
        s.insert("b", secs(30), t0 + secs(5));
        assert_eq!(s.pop_due(t0), Some(("a", t0)));
        assert_eq!(s.pop_due(t0), None);
        assert_eq!(s.next_due(), Some(t0 + secs(5)));
        assert_eq!(s.pop_due(t0 + secs(5)), Some(("b", t0 + secs(5))));
        // a polled late (at 12 s): its next is still planned at 20 s.
        assert_eq!(s.pop_due(t0 + secs(12)), Some(("a", t0 + secs(10))));
        assert_eq!(s.next_due(), Some(t0 + secs(20)));
        // Far behind (at 55 s): one poll, then back on the 10 s grid at 60 s.
        assert_eq!(s.pop_due(t0 + secs(55)), Some(("a", t0 + secs(20))));
        assert_eq!(s.pop_due(t0 + secs(55)), Some(("b", t0 + secs(35))));
        assert_eq!(s.pop_due(t0 + secs(55)), None);
        assert_eq!(s.next_due(), Some(t0 + secs(60)));
    }

    #[tokio::test(start_paused = true)]
    async fn removal_and_replanning_take_effect_at_once() {
        let t0 = Instant::now();
        let mut s = Schedule::new();
        s.insert("a", secs(10), t0 + secs(10));
        s.insert("b", secs(10), t0 + secs(3));
        assert!(s.remove(&"b"));
        assert!(!s.remove(&"b"));
        assert_eq!(s.next_due(), Some(t0 + secs(10)));
        // A spec change: poll now, then on the new interval.
        s.poll_now(&"a", secs(5), t0 + secs(1));
        assert_eq!(s.pop_due(t0 + secs(1)), Some(("a", t0 + secs(1))));
        assert_eq!(s.next_due(), Some(t0 + secs(6)));
        assert_eq!(s.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn first_polls_spread_over_the_window() {
        let t0 = Instant::now();
        let mut s = Schedule::new();
        for i in 0..10u32 {
            s.insert_spread(i, secs(30), t0, secs(10), f64::from(i) / 10.0);
        }
        let mut dues = Vec::new();
        while let Some(due) = s.next_due() {
            if due > t0 + secs(10) {
                break;
            }
            let (_, planned) = s.pop_due(due).unwrap();
            dues.push(planned - t0);
        }
        assert_eq!(dues.len(), 10);
        assert_eq!(dues[0], Duration::ZERO);
        assert_eq!(dues[9], secs(9));
    }

    #[tokio::test(start_paused = true)]
    async fn churn_does_not_grow_the_heap() {
        let t0 = Instant::now();
        let mut s = Schedule::new();
        for round in 0..100u64 {
            for i in 0..100u64 {
                s.insert(i, secs(10), t0 + Duration::from_millis(round * 7 + i));
            }
        }
        assert_eq!(s.len(), 100);
        assert!(s.heap.len() <= 300, "{}", s.heap.len());
    }
}
