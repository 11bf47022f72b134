//! Fault injection, at run time from Rust or over the admin endpoint: latency, error rates by
//! verb (429 with Retry-After, or 500), a full outage (503, or connections refused), dropping
//! every open watch, pausing the simulated controllers, and an authorizer warming up (403).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::ApiError;

/// What an error rule answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum InjectedError {
    /// 429 TooManyRequests with `Retry-After`.
    Throttle {
        /// Seconds in `Retry-After`.
        retry_after_seconds: u32,
    },
    /// 500 InternalError.
    Internal,
}

/// Fails a share of the requests with the given verbs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorRule {
    /// Verbs affected (get, list, watch, create, update, patch, delete, deletecollection); empty
    /// means all.
    #[serde(default)]
    pub verbs: Vec<String>,
    /// Resources (plural names, e.g. `leases`) left alone, as API Priority and Fairness can give
    /// leader election its own priority level.
    #[serde(default)]
    pub except_resources: Vec<String>,
    /// Share of matching requests that fail, 0.0 to 1.0.
    pub rate: f64,
    /// The error returned.
    pub error: InjectedError,
}

/// How an outage shows itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OutageMode {
    /// Every request gets 503 ServiceUnavailable.
    Unavailable,
    /// The listener closes: connections are refused and open ones are cut.
    Refuse,
}

/// The faults in force.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultSpec {
    /// Added to every API request, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Error rules, checked in order.
    #[serde(default)]
    pub errors: Vec<ErrorRule>,
    /// A full outage, if any.
    #[serde(default)]
    pub outage: Option<OutageMode>,
    /// Whether the simulated controllers are paused.
    #[serde(default)]
    pub controllers_paused: bool,
    /// The authorizer is warming up (an API server just started): every request of a user not in
    /// `system:masters` gets 403 Forbidden.
    #[serde(default)]
    pub authorization_warming: bool,
}

/// The fault switchboard.
#[derive(Debug)]
pub struct Faults {
    spec: Mutex<FaultSpec>,
    outage_tx: watch::Sender<Option<OutageMode>>,
    drop_tx: watch::Sender<u64>,
    paused: AtomicBool,
    warming: AtomicBool,
}

impl Default for Faults {
    fn default() -> Self {
        Self::new()
    }
}

impl Faults {
    /// No faults.
    pub fn new() -> Self {
        Self {
            spec: Mutex::new(FaultSpec::default()),
            outage_tx: watch::channel(None).0,
            drop_tx: watch::channel(0).0,
            paused: AtomicBool::new(false),
            warming: AtomicBool::new(false),
        }
    }

    /// The faults in force.
    pub fn spec(&self) -> FaultSpec {
        self.spec
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces every fault with `spec`.
    pub fn set(&self, spec: FaultSpec) {
        self.paused.store(spec.controllers_paused, Ordering::SeqCst);
        self.warming
            .store(spec.authorization_warming, Ordering::SeqCst);
        let outage = spec.outage;
        *self
            .spec
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = spec;
        self.outage_tx.send_replace(outage);
    }

    /// Removes every fault.
    pub fn clear(&self) {
        self.set(FaultSpec::default());
    }

    fn update(&self, f: impl FnOnce(&mut FaultSpec)) {
        let mut spec = self.spec();
        f(&mut spec);
        self.set(spec);
    }

    /// Adds latency to every request.
    pub fn set_latency(&self, latency: Duration) {
        self.update(|s| s.latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX));
    }

    /// Adds an error rule.
    pub fn add_error(&self, rule: ErrorRule) {
        self.update(|s| s.errors.push(rule));
    }

    /// Starts or ends an outage.
    pub fn set_outage(&self, outage: Option<OutageMode>) {
        self.update(|s| s.outage = outage);
    }

    /// Pauses or resumes the simulated controllers.
    pub fn pause_controllers(&self, paused: bool) {
        self.update(|s| s.controllers_paused = paused);
    }

    /// Starts or ends the authorizer's warm-up (403 for everyone but `system:masters`).
    pub fn set_authorization_warming(&self, warming: bool) {
        self.update(|s| s.authorization_warming = warming);
    }

    /// Whether the authorizer is warming up (checked on every request, without copying the spec).
    pub fn authorization_warming(&self) -> bool {
        self.warming.load(Ordering::SeqCst)
    }

    /// Whether the controllers are paused.
    pub fn controllers_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Closes every open watch (clients see the stream end and re-watch).
    pub fn drop_watches(&self) {
        self.drop_tx.send_modify(|n| *n += 1);
    }

    /// A receiver that changes whenever watches are dropped.
    pub fn watch_drops(&self) -> watch::Receiver<u64> {
        self.drop_tx.subscribe()
    }

    /// A receiver of the outage state.
    pub fn outages(&self) -> watch::Receiver<Option<OutageMode>> {
        self.outage_tx.subscribe()
    }

    /// Applies latency and decides whether a request with `verb` on `resource` (empty for
    /// non-resource requests) fails.
    pub async fn before_request(&self, verb: &str, resource: &str) -> Result<(), ApiError> {
        let spec = self.spec();
        if spec.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(spec.latency_ms)).await;
        }
        if spec.outage.is_some() {
            return Err(ApiError::unavailable(
                "the API server is unavailable (injected outage)",
            ));
        }
        for rule in &spec.errors {
            let applies = (rule.verbs.is_empty() || rule.verbs.iter().any(|v| v == verb))
                && !rule.except_resources.iter().any(|r| r == resource);
            if applies && rand::rng().random_bool(rule.rate.clamp(0.0, 1.0)) {
                return Err(match rule.error {
                    InjectedError::Throttle {
                        retry_after_seconds,
                    } => ApiError::too_many_requests(retry_after_seconds),
                    InjectedError::Internal => ApiError::internal("injected internal error"),
                });
            }
        }
        Ok(())
    }
}
