//! The autoscaling/v2 replica calculation, as Kubernetes documents and implements it, without
//! I/O: per-metric recommendations with a tolerance, then stabilization windows and scaling
//! policies (`behavior`), then min/max.

use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};
use tokio::time::Instant;

/// Default tolerance: changes within 10% of the target do not scale.
pub const DEFAULT_TOLERANCE: f64 = 0.1;

/// Replicas for an `AverageValue` target of an external (or pods) metric:
/// `ceil(usage / target)`, unless `usage / (target × current)` is within the tolerance.
pub fn for_average_value(current: i32, usage: f64, target: f64, tolerance: f64) -> i32 {
    if target <= 0.0 {
        return current;
    }
    let ratio = usage / (target * f64::from(current.max(1)));
    if current > 0 && (1.0 - ratio).abs() <= tolerance {
        return current;
    }
    saturate((usage / target).ceil())
}

/// Replicas for a `Value` target (or `Utilization`): `ceil(ratio × ready)` with
/// `ratio = usage / target`, unless the ratio is within the tolerance; with no replicas yet,
/// `ceil(ratio)`.
pub fn for_ratio(current: i32, ready: i32, usage: f64, target: f64, tolerance: f64) -> i32 {
    if target <= 0.0 {
        return current;
    }
    let ratio = usage / target;
    if current == 0 {
        return saturate(ratio.ceil());
    }
    if (1.0 - ratio).abs() <= tolerance {
        return current;
    }
    saturate((ratio * f64::from(ready.max(1))).ceil())
}

fn saturate(v: f64) -> i32 {
    if v.is_nan() || v <= 0.0 {
        0
    } else if v >= f64::from(i32::MAX) {
        i32::MAX
    } else {
        v as i32
    }
}

/// One direction's scaling rules with defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    /// Stabilization window.
    pub window: Duration,
    /// `Max`, `Min` or `Disabled`.
    pub select: String,
    /// `(type, value, period)`: type `Pods` or `Percent`.
    pub policies: Vec<(String, i32, Duration)>,
    /// Tolerance of this direction.
    pub tolerance: f64,
}

/// Both directions.
#[derive(Clone, Debug, PartialEq)]
pub struct Behavior {
    /// Scaling up.
    pub up: Rules,
    /// Scaling down.
    pub down: Rules,
}

impl Default for Behavior {
    fn default() -> Self {
        Self::from_spec(None)
    }
}

fn rules(spec: Option<&HPAScalingRules>, up: bool) -> Rules {
    let default_window = if up { 0 } else { 300 };
    let default_policies = if up {
        vec![
            ("Pods".to_owned(), 4, Duration::from_secs(15)),
            ("Percent".to_owned(), 100, Duration::from_secs(15)),
        ]
    } else {
        vec![("Percent".to_owned(), 100, Duration::from_secs(15))]
    };
    let window = spec
        .and_then(|s| s.stabilization_window_seconds)
        .unwrap_or(default_window);
    let policies = spec
        .and_then(|s| s.policies.as_ref())
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.iter()
                .map(|p| {
                    (
                        p.type_.clone(),
                        p.value,
                        Duration::from_secs(u64::try_from(p.period_seconds).unwrap_or(0)),
                    )
                })
                .collect()
        })
        .unwrap_or(default_policies);
    let tolerance = spec
        .and_then(|s| s.tolerance.as_ref())
        .and_then(|q| ringscale_api::quantity::parse(&q.0).ok())
        .unwrap_or(DEFAULT_TOLERANCE);
    Rules {
        window: Duration::from_secs(u64::try_from(window.max(0)).unwrap_or(0)),
        select: spec
            .and_then(|s| s.select_policy.clone())
            .unwrap_or_else(|| "Max".to_owned()),
        policies,
        tolerance,
    }
}

impl Behavior {
    /// The behavior of an HPA spec, with Kubernetes' defaults for what is missing.
    pub fn from_spec(spec: Option<&HorizontalPodAutoscalerBehavior>) -> Self {
        Self {
            up: rules(spec.and_then(|b| b.scale_up.as_ref()), true),
            down: rules(spec.and_then(|b| b.scale_down.as_ref()), false),
        }
    }
}

/// What an HPA remembers between syncs.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Unstabilized recommendations.
    pub recommendations: Vec<(Instant, i32)>,
    /// Scale changes: `(when, delta)` (positive up, negative down).
    pub events: Vec<(Instant, i32)>,
}

/// Why the result differs from the metrics' recommendation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Not limited.
    None,
    /// Capped by `maxReplicas`.
    TooMany,
    /// Raised to `minReplicas`.
    TooFew,
    /// Held by a scale-up policy.
    ScaleUpLimit,
    /// Held by a scale-down policy.
    ScaleDownLimit,
}

/// Applies stabilization, policies and bounds to a recommendation; records it in `history`.
pub fn normalize(
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
    behavior: &Behavior,
    history: &mut History,
    now: Instant,
) -> (i32, Limit) {
    // Stabilization: the lowest recommendation of the up window and the highest of the down
    // window bound how far from `current` the result may move.
    let mut up_rec = desired;
    let mut down_rec = desired;
    for (t, rec) in &history.recommendations {
        if now.duration_since(*t) < behavior.up.window {
            up_rec = up_rec.min(*rec);
        }
        if now.duration_since(*t) < behavior.down.window {
            down_rec = down_rec.max(*rec);
        }
    }
    let keep = behavior.up.window.max(behavior.down.window);
    history
        .recommendations
        .retain(|(t, _)| now.duration_since(*t) < keep);
    history.recommendations.push((now, desired));
    let mut stabilized = current;
    if stabilized < up_rec {
        stabilized = up_rec;
    }
    if stabilized > down_rec {
        stabilized = down_rec;
    }

    let longest_period = behavior
        .up
        .policies
        .iter()
        .chain(&behavior.down.policies)
        .map(|p| p.2)
        .max()
        .unwrap_or(Duration::ZERO);
    history
        .events
        .retain(|(t, _)| now.duration_since(*t) <= longest_period);

    let mut limit = Limit::None;
    let mut result = stabilized;
    if stabilized > current {
        let cap = scale_up_limit(current, &behavior.up, history, now);
        if stabilized > cap {
            result = cap;
            limit = Limit::ScaleUpLimit;
        }
    } else if stabilized < current {
        let floor = scale_down_limit(current, &behavior.down, history, now);
        if stabilized < floor {
            result = floor;
            limit = Limit::ScaleDownLimit;
        }
    }
    if result > max {
        result = max;
        limit = Limit::TooMany;
    } else if result < min {
        result = min;
        limit = Limit::TooFew;
    }
    (result, limit)
}

fn changes_in(history: &History, now: Instant, period: Duration) -> (i32, i32) {
    let mut added = 0;
    let mut removed = 0;
    for (t, delta) in &history.events {
        if now.duration_since(*t) <= period {
            if *delta > 0 {
                added += delta;
            } else {
                removed -= delta;
            }
        }
    }
    (added, removed)
}

fn scale_up_limit(current: i32, rules: &Rules, history: &History, now: Instant) -> i32 {
    if rules.select == "Disabled" {
        return current;
    }
    let proposals = rules.policies.iter().map(|(kind, value, period)| {
        let (added, removed) = changes_in(history, now, *period);
        let start = current - added + removed;
        match kind.as_str() {
            "Percent" => saturate((f64::from(start) * (1.0 + f64::from(*value) / 100.0)).ceil()),
            _ => start.saturating_add(*value),
        }
    });
    let chosen = if rules.select == "Min" {
        proposals.min()
    } else {
        proposals.max()
    };
    chosen.unwrap_or(current).max(current)
}

fn scale_down_limit(current: i32, rules: &Rules, history: &History, now: Instant) -> i32 {
    if rules.select == "Disabled" {
        return current;
    }
    let proposals = rules.policies.iter().map(|(kind, value, period)| {
        let (added, removed) = changes_in(history, now, *period);
        let start = current - added + removed;
        match kind.as_str() {
            "Percent" => saturate((f64::from(start) * (1.0 - f64::from(*value) / 100.0)).floor()),
            _ => start.saturating_sub(*value).max(0),
        }
    });
    // For scale-down, "Max" selects the policy allowing the biggest change: the lowest count.
    let chosen = if rules.select == "Min" {
        proposals.max()
    } else {
        proposals.min()
    };
    chosen.unwrap_or(current).min(current)
}

/// Records a scale change for the policies' periods.
pub fn record_scale(history: &mut History, now: Instant, from: i32, to: i32) {
    if from != to {
        history.events.push((now, to - from));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::autoscaling::v2::HPAScalingPolicy;

    // Worked examples from the Kubernetes HPA documentation: desired = ceil(current × ratio).

    #[test]
    fn a_metric_twice_the_target_doubles_the_replicas() {
        // 1 replica, external metric 200 against an AverageValue target of 100 → 2.
        assert_eq!(for_average_value(1, 200.0, 100.0, DEFAULT_TOLERANCE), 2);
        // 2 replicas, total usage 0.4 against 0.1 per pod → 4.
        assert_eq!(for_average_value(2, 0.4, 0.1, DEFAULT_TOLERANCE), 4);
    }

    #[test]
    fn half_the_target_halves_the_replicas_and_small_changes_are_tolerated() {
        // Documentation: current 50m, desired 100m → ratio 0.5 → half.
        assert_eq!(for_ratio(4, 4, 50.0, 100.0, DEFAULT_TOLERANCE), 2);
        // Within 10%: no change.
        assert_eq!(for_ratio(4, 4, 105.0, 100.0, DEFAULT_TOLERANCE), 4);
        assert_eq!(for_average_value(4, 4.2, 1.0, DEFAULT_TOLERANCE), 4);
        // A Value target starting from zero: ceil(ratio).
        assert_eq!(for_ratio(0, 0, 250.0, 100.0, DEFAULT_TOLERANCE), 3);
    }

    #[test]
    fn default_scale_up_doubles_or_adds_four_per_fifteen_seconds() {
        let now = Instant::now();
        let mut history = History::default();
        let (n, limit) = normalize(1, 100, 1, 100, &Behavior::default(), &mut history, now);
        assert_eq!(
            (n, limit),
            (5, Limit::ScaleUpLimit),
            "max(1 + 4 pods, 1 × 200%)"
        );
        let (n, _) = normalize(
            10,
            100,
            1,
            100,
            &Behavior::default(),
            &mut History::default(),
            now,
        );
        assert_eq!(n, 20, "max(10 + 4, 10 × 200%)");
    }

    #[test]
    fn scale_down_waits_out_the_stabilization_window() {
        let start = Instant::now();
        let mut history = History::default();
        let behavior = Behavior::default();
        assert_eq!(
            normalize(10, 10, 1, 100, &behavior, &mut history, start).0,
            10
        );
        let later = start + Duration::from_secs(60);
        assert_eq!(
            normalize(10, 2, 1, 100, &behavior, &mut history, later).0,
            10,
            "the 10 of a minute ago is still in the 300 s window"
        );
        let much_later = start + Duration::from_secs(301);
        assert_eq!(
            normalize(10, 2, 1, 100, &behavior, &mut history, much_later).0,
            2
        );
    }

    #[test]
    fn policies_and_select_policy_limit_the_rate() {
        let spec = HorizontalPodAutoscalerBehavior {
            scale_down: Some(HPAScalingRules {
                stabilization_window_seconds: Some(0),
                select_policy: Some("Min".into()),
                policies: Some(vec![
                    HPAScalingPolicy {
                        type_: "Pods".into(),
                        value: 2,
                        period_seconds: 60,
                    },
                    HPAScalingPolicy {
                        type_: "Percent".into(),
                        value: 50,
                        period_seconds: 60,
                    },
                ]),
                tolerance: None,
            }),
            scale_up: Some(HPAScalingRules {
                select_policy: Some("Disabled".into()),
                ..HPAScalingRules::default()
            }),
        };
        let behavior = Behavior::from_spec(Some(&spec));
        let now = Instant::now();
        // Down from 10: Pods allows 8, Percent allows 5; Min picks the smaller change, 8.
        assert_eq!(
            normalize(10, 1, 1, 100, &behavior, &mut History::default(), now),
            (8, Limit::ScaleDownLimit)
        );
        // Scale-up is disabled.
        assert_eq!(
            normalize(3, 9, 1, 100, &behavior, &mut History::default(), now),
            (3, Limit::ScaleUpLimit)
        );
    }

    #[test]
    fn bounds_apply_last() {
        let now = Instant::now();
        assert_eq!(
            normalize(
                5,
                5,
                6,
                10,
                &Behavior::default(),
                &mut History::default(),
                now
            ),
            (6, Limit::TooFew)
        );
        assert_eq!(
            normalize(
                5,
                5,
                1,
                4,
                &Behavior::default(),
                &mut History::default(),
                now
            ),
            (4, Limit::TooMany)
        );
    }
}
