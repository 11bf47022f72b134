//! Request accounting: counts by verb, resource and status code, open watches, and a bounded
//! log of recent requests (who did what), exposed to tests and as Prometheus metrics.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

/// Requests kept in the log.
const LOG_CAPACITY: usize = 200_000;

/// What a request did, as counted.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestKey {
    /// get, list, watch, create, update, patch, delete, deletecollection, or `proxy`, `discovery`,
    /// `admin`, `other` for non-resource requests.
    pub verb: String,
    /// API group ("" for core).
    pub group: String,
    /// Resource (with `/subresource`), empty for non-resource requests.
    pub resource: String,
    /// HTTP status.
    pub code: u16,
}

/// One logged request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// Authenticated user ("system:anonymous" when none).
    pub user: String,
    /// Verb (as in [`RequestKey`]).
    pub verb: String,
    /// API group.
    pub group: String,
    /// Resource, without subresource.
    pub resource: String,
    /// Subresource, if any.
    pub subresource: Option<String>,
    /// Namespace, if any.
    pub namespace: Option<String>,
    /// Name, if any.
    pub name: Option<String>,
    /// HTTP status.
    pub code: u16,
    /// When the request was answered.
    pub at: std::time::Instant,
    /// The `User-Agent` header, if any.
    pub user_agent: Option<String>,
    /// The `fieldManager` query parameter, if any.
    pub field_manager: Option<String>,
}

/// The counters.
#[derive(Debug, Default)]
pub struct Stats {
    counts: Mutex<BTreeMap<RequestKey, u64>>,
    log: Mutex<VecDeque<RequestRecord>>,
    open_watches: AtomicI64,
}

impl Stats {
    /// Records a finished request.
    pub fn record(&self, record: RequestRecord) {
        let resource = match &record.subresource {
            Some(sub) => format!("{}/{sub}", record.resource),
            None => record.resource.clone(),
        };
        let key = RequestKey {
            verb: record.verb.clone(),
            group: record.group.clone(),
            resource,
            code: record.code,
        };
        *self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_default() += 1;
        let mut log = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if log.len() == LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(record);
    }

    /// Counts so far.
    pub fn counts(&self) -> BTreeMap<RequestKey, u64> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Total requests with a given verb (any resource, any code).
    pub fn total(&self, verb: &str) -> u64 {
        self.counts()
            .iter()
            .filter(|(k, _)| k.verb == verb)
            .map(|(_, n)| n)
            .sum()
    }

    /// The most recent requests, oldest first.
    pub fn log(&self) -> Vec<RequestRecord> {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Forgets counts and log (the open-watch gauge is kept).
    pub fn reset(&self) {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Watches currently open.
    pub fn open_watches(&self) -> i64 {
        self.open_watches.load(Ordering::Relaxed)
    }

    /// A guard that counts one open watch while it lives.
    pub fn watch_opened(&self) -> WatchGuard<'_> {
        self.open_watches.fetch_add(1, Ordering::Relaxed);
        WatchGuard(&self.open_watches)
    }

    /// Prometheus text exposition.
    pub fn prometheus(&self, objects: &[(String, usize)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP kubesim_requests_total API requests by verb, group, resource and code.\n# TYPE kubesim_requests_total counter\n");
        for (k, n) in self.counts() {
            let _ = writeln!(
                out,
                "kubesim_requests_total{{verb=\"{}\",group=\"{}\",resource=\"{}\",code=\"{}\"}} {n}",
                k.verb, k.group, k.resource, k.code
            );
        }
        out.push_str("# HELP kubesim_open_watches Watches currently open.\n# TYPE kubesim_open_watches gauge\n");
        let _ = writeln!(out, "kubesim_open_watches {}", self.open_watches());
        out.push_str(
            "# HELP kubesim_objects Stored objects by resource.\n# TYPE kubesim_objects gauge\n",
        );
        for (resource, n) in objects {
            let _ = writeln!(out, "kubesim_objects{{resource=\"{resource}\"}} {n}");
        }
        out
    }
}

/// Decrements the open-watch gauge when dropped.
#[derive(Debug)]
pub struct WatchGuard<'a>(&'a AtomicI64);

impl Drop for WatchGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
