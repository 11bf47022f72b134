//! Fallback: per-metric failure counts and the value that makes the HPA land on the fallback
//! replica count (KEDA's `pkg/fallback`).

use ringscale_api::MetricType;
use ringscale_api::scaled_object::{Fallback, FallbackBehavior};

/// A metric's health as kept in `status.health`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// Consecutive failures.
    pub failures: i32,
}

impl Health {
    /// After a successful read.
    pub fn success(self) -> Health {
        Health { failures: 0 }
    }

    /// After a failed read.
    pub fn failure(self) -> Health {
        Health {
            failures: self.failures.saturating_add(1),
        }
    }

    /// `Happy` or `Failing`, as KEDA writes it.
    pub fn status(self) -> &'static str {
        if self.failures == 0 {
            "Happy"
        } else {
            "Failing"
        }
    }

    /// Whether fallback applies: strictly more failures than the threshold.
    pub fn falls_back(self, fallback: &Fallback) -> bool {
        self.failures > fallback.failure_threshold
    }
}

/// The replica count the HPA should land on while falling back.
pub fn fallback_replicas(fallback: &Fallback, current: i32) -> i32 {
    match fallback.effective_behavior() {
        FallbackBehavior::CurrentReplicas => current,
        FallbackBehavior::CurrentReplicasIfHigher => current.max(fallback.replicas),
        FallbackBehavior::CurrentReplicasIfLower => current.min(fallback.replicas),
        // static, scalingModifiers (its nil result) and anything unknown: the configured count.
        _ => fallback.replicas,
    }
}

/// The metric value to serve so that the HPA computes `replicas`: for AverageValue the HPA
/// divides by the current replica count itself, so `target × replicas`; for Value it compares the
/// value with the target, so `target × replicas / ready` (with at least one ready replica).
pub fn fallback_value(target: f64, metric_type: &MetricType, replicas: i32, ready: i32) -> f64 {
    let replicas = f64::from(replicas);
    match metric_type {
        MetricType::Value => target * replicas / f64::from(ready.max(1)),
        _ => target * replicas,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fb(behavior: Option<FallbackBehavior>) -> Fallback {
        Fallback {
            failure_threshold: 3,
            replicas: 6,
            behavior,
        }
    }

    #[test]
    fn failures_count_and_fallback_starts_above_the_threshold() {
        let mut h = Health::default();
        assert_eq!(h.status(), "Happy");
        for _ in 0..3 {
            h = h.failure();
        }
        assert_eq!(h.status(), "Failing");
        assert!(
            !h.falls_back(&fb(None)),
            "3 failures with threshold 3: not yet"
        );
        h = h.failure();
        assert!(h.falls_back(&fb(None)));
        assert_eq!(h.success(), Health::default());
    }

    #[test]
    fn each_behaviour_picks_its_replicas() {
        assert_eq!(fallback_replicas(&fb(None), 2), 6);
        assert_eq!(fallback_replicas(&fb(Some(FallbackBehavior::Static)), 9), 6);
        assert_eq!(
            fallback_replicas(&fb(Some(FallbackBehavior::CurrentReplicas)), 2),
            2
        );
        assert_eq!(
            fallback_replicas(&fb(Some(FallbackBehavior::CurrentReplicasIfHigher)), 2),
            6
        );
        assert_eq!(
            fallback_replicas(&fb(Some(FallbackBehavior::CurrentReplicasIfHigher)), 9),
            9
        );
        assert_eq!(
            fallback_replicas(&fb(Some(FallbackBehavior::CurrentReplicasIfLower)), 2),
            2
        );
        assert_eq!(
            fallback_replicas(&fb(Some(FallbackBehavior::CurrentReplicasIfLower)), 9),
            6
        );
    }

    #[test]
    fn the_value_lands_the_hpa_on_the_fallback_count() {
        // AverageValue target 5, 6 replicas wanted: 30 in total; the HPA divides by current.
        assert_eq!(fallback_value(5.0, &MetricType::AverageValue, 6, 3), 30.0);
        // Value target 5: the HPA scales by value/target × current = 10/5 × 3 = 6.
        assert_eq!(fallback_value(5.0, &MetricType::Value, 6, 3), 10.0);
        assert_eq!(fallback_value(5.0, &MetricType::Value, 6, 0), 30.0);
    }
}
