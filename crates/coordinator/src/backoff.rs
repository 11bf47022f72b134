//! The backoff every watch of a replica uses between failed attempts.
//!
//! kube's default grows to 30 s, so after an API-server outage of a minute a watch could stay
//! down half a minute after the server returned, with the caches (and so the replica's view of
//! its objects) stale all that time. This one doubles from 200 ms to at most 2 s with equal
//! jitter, and starts over once a watch has run for 10 s. A watch that the server answers
//! 410 Gone (its resourceVersion compacted, as after a restart) is listed again by kube's
//! watcher itself.

use std::time::Duration;

use kube::runtime::utils::Backoff;
use tokio::time::Instant;

const FIRST: Duration = Duration::from_millis(200);
const MAX: Duration = Duration::from_secs(2);
const RESET_AFTER: Duration = Duration::from_secs(10);

/// Bounded exponential backoff with equal jitter for watches.
#[derive(Debug, Default)]
pub struct WatchBackoff {
    attempt: u32,
    last: Option<Instant>,
}

impl WatchBackoff {
    /// A fresh backoff.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) >= RESET_AFTER)
        {
            self.attempt = 0;
        }
        self.last = Some(now);
        let full = FIRST.saturating_mul(1 << self.attempt.min(8)).min(MAX);
        self.attempt = self.attempt.saturating_add(1);
        let half = full / 2;
        Some(half + half.mul_f64(rand::random::<f64>()))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.attempt = 0;
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn delays_stay_within_two_seconds_and_start_over_after_a_quiet_spell() {
        let mut b = WatchBackoff::new();
        let delays: Vec<Duration> = (0..20).map(|_| b.next().unwrap_or_default()).collect();
        assert!(delays[0] >= Duration::from_millis(100) && delays[0] <= FIRST);
        assert!(delays.iter().all(|d| *d <= MAX), "{delays:?}");
        assert!(delays[19] >= MAX / 2, "grows to the bound: {delays:?}");
        tokio::time::advance(RESET_AFTER).await;
        assert!(b.next().is_some_and(|d| d <= FIRST), "starts over");
        b.reset();
        assert!(b.next().is_some_and(|d| d <= FIRST));
    }
}
