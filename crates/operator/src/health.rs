//! How the operator's cycles are faring, for `/readyz`, `/metrics` and the log: errors counted
//! by category, each category logged when it starts and when it stops (not on every poll), and
//! readiness that turns false while the replica cannot act and true again by itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tracing::{info, warn};

/// What went wrong in a cycle, by what a user or operator would do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    /// Another replica owns the object now (a ring change): expected, not a failure.
    Fenced,
    /// A write was refused because the object changed since it was read (409).
    Conflict,
    /// The API server refused this replica's credentials (401/403: RBAC, or an API server
    /// still warming up after a restart).
    Forbidden,
    /// The API server asked this replica to slow down (429).
    Throttled,
    /// The API server answered with a server error (5xx).
    ServerError,
    /// The API server could not be reached, or did not answer in time.
    Unreachable,
    /// An object a write needed is gone (404).
    NotFound,
    /// The API server rejected a request as invalid (400, 422).
    Rejected,
}

impl Category {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Category::Fenced => "fenced",
            Category::Conflict => "conflict",
            Category::Forbidden => "forbidden",
            Category::Throttled => "throttled",
            Category::ServerError => "server_error",
            Category::Unreachable => "unreachable",
            Category::NotFound => "not_found",
            Category::Rejected => "rejected",
        }
    }

    /// Sorts a kube error; the one place that does (conflicts, throttling, outages).
    pub fn of(e: &kube::Error) -> Category {
        use ringscale_coordinator::ApiErrorKind as K;
        match K::of(e) {
            K::Conflict => Category::Conflict,
            K::Forbidden => Category::Forbidden,
            K::Throttled => Category::Throttled,
            K::NotFound => Category::NotFound,
            K::Invalid => Category::Rejected,
            K::ServerError => Category::ServerError,
            K::Unreachable => Category::Unreachable,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabels {
    category: &'static str,
}

struct Streak {
    since: Instant,
    last: Instant,
    count: u64,
}

#[derive(Default)]
struct State {
    streaks: HashMap<Category, Streak>,
    /// Since when every cycle that ended failed (none succeeded since).
    failing_since: Option<Instant>,
}

/// A category counts as stopped once it has not occurred for this long.
const QUIET: Duration = Duration::from_secs(10);
/// Cycles failing without a success for this long make the replica not ready.
const NOT_READY_AFTER: Duration = Duration::from_secs(10);

/// The operator's cycle health.
#[derive(Default)]
pub struct CycleHealth {
    errors: Family<CategoryLabels, Counter>,
    synced: AtomicBool,
    /// Whether `state` holds anything to clear: a successful cycle (the common case, on the
    /// poll path) then costs one load instead of a lock.
    troubled: AtomicBool,
    state: Mutex<State>,
}

impl std::fmt::Debug for CycleHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CycleHealth").finish_non_exhaustive()
    }
}

impl CycleHealth {
    /// Registers `ringscale_cycle_errors` in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ringscale_cycle_errors",
            "Poll cycles that ended in an error, by category (fenced: the object moved to another replica)",
            self.errors.clone(),
        );
    }

    /// The caches the controller acts on are (or are no longer) in sync with the API server.
    pub fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::Relaxed);
    }

    /// A cycle failed. Logged when its category starts (then counted quietly).
    pub fn failed(&self, category: Category, object: &str, detail: &dyn std::fmt::Display) {
        self.errors
            .get_or_create(&CategoryLabels {
                category: category.label(),
            })
            .inc();
        if category == Category::Fenced {
            return;
        }
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.troubled.store(true, Ordering::Relaxed);
        state.failing_since.get_or_insert(now);
        match state.streaks.get_mut(&category) {
            Some(streak) => {
                streak.last = now;
                streak.count += 1;
            }
            None => {
                warn!(
                    category = category.label(),
                    first = object,
                    error = %detail,
                    "poll cycles began failing; logged again when they stop"
                );
                state.streaks.insert(
                    category,
                    Streak {
                        since: now,
                        last: now,
                        count: 1,
                    },
                );
            }
        }
    }

    /// A cycle ended well. Categories quiet for a while are logged as stopped.
    pub fn succeeded(&self) {
        if !self.troubled.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.failing_since = None;
        state.streaks.retain(|category, streak| {
            let quiet = now.saturating_duration_since(streak.last) >= QUIET;
            if quiet {
                info!(
                    category = category.label(),
                    errors = streak.count,
                    lasted_s = streak
                        .last
                        .saturating_duration_since(streak.since)
                        .as_secs(),
                    "poll cycles stopped failing"
                );
            }
            !quiet
        });
        if state.streaks.is_empty() {
            self.troubled.store(false, Ordering::Relaxed);
        }
    }

    /// Why the replica cannot act, if it cannot: caches not synced, or cycles failing without
    /// a success for a while.
    pub fn not_ready(&self) -> Option<String> {
        if !self.synced.load(Ordering::Relaxed) {
            return Some("the operator's caches are not synced".into());
        }
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let since = state.failing_since?;
        let failing = Instant::now().saturating_duration_since(since);
        if failing < NOT_READY_AFTER {
            return None;
        }
        let mut categories: Vec<&str> = state.streaks.keys().map(|c| c.label()).collect();
        categories.sort_unstable();
        Some(format!(
            "every poll cycle failed for {} s ({})",
            failing.as_secs(),
            categories.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn readiness_goes_while_cycles_keep_failing_and_comes_back_with_a_success() {
        let health = CycleHealth::default();
        assert!(health.not_ready().is_some(), "not synced yet");
        health.set_synced(true);
        assert_eq!(health.not_ready(), None);
        health.failed(Category::Conflict, "ns/a", &"409");
        tokio::time::advance(Duration::from_secs(5)).await;
        health.failed(Category::Conflict, "ns/a", &"409");
        assert_eq!(health.not_ready(), None, "a short streak is tolerated");
        tokio::time::advance(Duration::from_secs(6)).await;
        health.failed(Category::Unreachable, "ns/b", &"refused");
        let why = health.not_ready().unwrap_or_default();
        assert!(why.contains("conflict, unreachable"), "{why}");
        health.succeeded();
        assert_eq!(health.not_ready(), None);
        // Fenced cycles are a ring change, not a failure.
        health.failed(Category::Fenced, "ns/c", &"moved");
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(health.not_ready(), None);
    }

    #[test]
    fn kube_errors_are_sorted_in_one_place() {
        let api = |code| {
            kube::Error::Api(
                kube::core::Status::failure("x", "y")
                    .with_code(code)
                    .boxed(),
            )
        };
        assert_eq!(Category::of(&api(409)), Category::Conflict);
        assert_eq!(Category::of(&api(403)), Category::Forbidden);
        assert_eq!(Category::of(&api(429)), Category::Throttled);
        assert_eq!(Category::of(&api(503)), Category::ServerError);
        assert_eq!(Category::of(&api(422)), Category::Rejected);
    }
}
