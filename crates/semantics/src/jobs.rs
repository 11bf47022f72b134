//! ScaledJob: how many Jobs to create, by scaling strategy (KEDA's `scale_jobs.go` and
//! `scaledjob-spec`).

use ringscale_api::scaled_job::{MultipleScalersCalculation, ScalingStrategy, ScalingStrategyKind};

/// One trigger metric's reading: its queue length, its target average value, and whether it
/// is active (above its activation threshold).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    /// The metric value (queue length).
    pub queue: f64,
    /// The trigger's target per Job.
    pub target: f64,
    /// Active.
    pub active: bool,
}

impl Reading {
    /// Jobs this reading alone asks for, before rounding: queue / target, at most `max` (0 for
    /// a target of 0), as KEDA's `CalculateQueueLengthAndMaxValue`.
    fn max_value(&self, max: i64) -> f64 {
        if self.target == 0.0 || !self.queue.is_finite() || !self.target.is_finite() {
            return 0.0;
        }
        #[allow(clippy::cast_precision_loss)]
        (self.queue / self.target).min(max as f64)
    }
}

/// The readings combined by `multipleScalersCalculation` (KEDA's `IsScaledJobActive`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Combined {
    /// Some counted reading is active, or `minReplicaCount` > 0.
    pub active: bool,
    /// The combined queue length, rounded up (KEDA's `scaleTo`).
    pub queue_length: i64,
    /// `maxScale`: the combined queue / target, at most `maxReplicaCount`, rounded up.
    pub max_scale: i64,
}

/// Combines the readings as KEDA does: only active readings count; `max` and `min` choose the
/// reading with the longest or shortest queue (and take its queue / target); `sum` and `avg`
/// add or average the queues and the per-reading queue / target.
pub fn combine(
    readings: &[Reading],
    calculation: &MultipleScalersCalculation,
    min_replicas: i64,
    max_replicas: i64,
) -> Combined {
    let (mut queue, mut value, mut active) = (0.0f64, 0.0f64, false);
    let counted = readings.iter().filter(|r| r.active);
    match calculation {
        MultipleScalersCalculation::Min => {
            for r in counted {
                if queue == 0.0 || r.queue < queue {
                    (queue, value, active) = (r.queue, r.max_value(max_replicas), true);
                }
            }
        }
        MultipleScalersCalculation::Sum | MultipleScalersCalculation::Avg => {
            let mut n = 0u32;
            for r in counted {
                queue += r.queue;
                value += r.max_value(max_replicas);
                active = true;
                n += 1;
            }
            if *calculation == MultipleScalersCalculation::Avg && n > 0 {
                queue /= f64::from(n);
                value /= f64::from(n);
            }
        }
        // max, and anything unknown (validation reports it)
        _ => {
            for r in counted {
                if r.queue > queue {
                    (queue, value, active) = (r.queue, r.max_value(max_replicas), true);
                }
            }
        }
    }
    #[allow(clippy::cast_precision_loss)]
    let value = value.min(max_replicas as f64);
    Combined {
        active: active || min_replicas > 0,
        queue_length: ceil(queue),
        max_scale: ceil(value),
    }
}

#[allow(clippy::cast_possible_truncation)]
fn ceil(v: f64) -> i64 {
    if v.is_finite() {
        v.ceil().clamp(-1e15, 1e15) as i64
    } else {
        0
    }
}

/// Jobs to create now (KEDA's `RequestJobScale` → `getScalingDecision` → `createJobs`): none
/// while inactive; fewer running than `minReplicaCount` → the difference; otherwise the
/// strategy's effective maximum on the Jobs running beyond the minimum, and at most the
/// combined queue length (for `eager`, at most `maxReplicaCount`).
pub fn jobs_to_create(
    strategy: Option<&ScalingStrategy>,
    combined: &Combined,
    running: i64,
    pending: i64,
    min_replicas: i64,
    max_replicas: i64,
) -> i64 {
    if !combined.active {
        return 0;
    }
    let (effective, scale_to) = if running < min_replicas {
        (min_replicas - running, min_replicas - running)
    } else {
        effective_max_scale(
            strategy,
            combined.max_scale,
            running - min_replicas,
            pending,
            max_replicas,
            combined.queue_length,
        )
    };
    if effective <= 0 {
        return 0;
    }
    scale_to.min(effective).max(0)
}

/// Each strategy's `GetEffectiveMaxScale`: (effective maximum, scale-to).
fn effective_max_scale(
    strategy: Option<&ScalingStrategy>,
    max_scale: i64,
    running: i64,
    pending: i64,
    max_replicas: i64,
    scale_to: i64,
) -> (i64, i64) {
    let kind = strategy
        .and_then(|s| s.strategy.clone())
        .unwrap_or(ScalingStrategyKind::Default);
    match kind {
        ScalingStrategyKind::Custom => {
            // KEDA falls back to the default strategy when the percentage is not a number
            // (also when it is not set).
            let Some(percentage) = strategy
                .and_then(|s| s.custom_scaling_running_job_percentage.as_deref())
                .and_then(|p| p.parse::<f64>().ok())
            else {
                return (max_scale - running, scale_to);
            };
            let deduction = strategy
                .and_then(|s| s.custom_scaling_queue_length_deduction)
                .map_or(0, i64::from);
            #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
            let running_share = (running as f64 * percentage) as i64;
            (
                (max_scale - deduction - running_share).min(max_replicas),
                scale_to,
            )
        }
        ScalingStrategyKind::Accurate => {
            if max_scale + running - pending > max_replicas {
                (max_replicas - running, scale_to)
            } else {
                (max_scale - pending, scale_to)
            }
        }
        ScalingStrategyKind::Eager => (
            (max_replicas - running - pending).min(max_scale),
            max_replicas,
        ),
        _ => (max_scale - running, scale_to),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strategy(kind: ScalingStrategyKind) -> ScalingStrategy {
        ScalingStrategy {
            strategy: Some(kind),
            ..ScalingStrategy::default()
        }
    }

    fn r(queue: f64, target: f64) -> Reading {
        Reading {
            queue,
            target,
            active: queue > 0.0,
        }
    }

    fn combined(queue_length: i64, max_scale: i64) -> Combined {
        Combined {
            active: true,
            queue_length,
            max_scale,
        }
    }

    #[test]
    fn max_and_min_choose_a_trigger_by_its_queue_length() {
        // Queue 10 at target 5 (2 Jobs) and queue 3 at target 1 (3 Jobs).
        let readings = [r(10.0, 5.0), r(3.0, 1.0)];
        let max = combine(&readings, &MultipleScalersCalculation::Max, 0, 100);
        assert_eq!(
            (max.queue_length, max.max_scale),
            (10, 2),
            "the longest queue's 2"
        );
        let min = combine(&readings, &MultipleScalersCalculation::Min, 0, 100);
        assert_eq!(
            (min.queue_length, min.max_scale),
            (3, 3),
            "the shortest queue's 3"
        );
    }

    #[test]
    fn sum_and_avg_combine_per_trigger_values() {
        let readings = [r(10.0, 2.0), r(3.0, 1.0)];
        let sum = combine(&readings, &MultipleScalersCalculation::Sum, 0, 100);
        assert_eq!((sum.queue_length, sum.max_scale), (13, 8), "5 + 3");
        let avg = combine(&readings, &MultipleScalersCalculation::Avg, 0, 100);
        assert_eq!(
            (avg.queue_length, avg.max_scale),
            (7, 4),
            "6.5 → 7; (5 + 3) / 2"
        );
    }

    #[test]
    fn only_active_triggers_count() {
        let readings = [
            r(10.0, 2.0),
            Reading {
                queue: 50.0,
                target: 1.0,
                active: false,
            },
        ];
        let sum = combine(&readings, &MultipleScalersCalculation::Sum, 0, 100);
        assert_eq!(sum.max_scale, 5);
        let max = combine(&readings, &MultipleScalersCalculation::Max, 0, 100);
        assert_eq!(max.max_scale, 5);
        // Nothing active: inactive, unless a minimum is set.
        let idle = [r(0.0, 2.0)];
        assert!(!combine(&idle, &MultipleScalersCalculation::Max, 0, 100).active);
        assert!(combine(&idle, &MultipleScalersCalculation::Max, 1, 100).active);
    }

    #[test]
    fn max_scale_is_capped_and_rounded_up_after_combining() {
        let c = combine(&[r(9.0, 2.0)], &MultipleScalersCalculation::Max, 0, 4);
        assert_eq!(c.max_scale, 4);
        let c = combine(&[r(9.0, 2.0)], &MultipleScalersCalculation::Max, 0, 100);
        assert_eq!(c.max_scale, 5, "4.5 rounds up");
        let c = combine(&[r(1.0, 0.0)], &MultipleScalersCalculation::Max, 0, 100);
        assert_eq!(c.max_scale, 0, "a zero target asks for nothing");
    }

    #[test]
    fn default_subtracts_running_jobs_and_creates_at_most_the_queue_length() {
        assert_eq!(jobs_to_create(None, &combined(10, 10), 3, 0, 0, 100), 7);
        assert_eq!(jobs_to_create(None, &combined(2, 2), 5, 0, 0, 100), 0);
        // Queue 10 at target 2: maxScale 5, and 5 − 1 running = 4 (not 9).
        assert_eq!(jobs_to_create(None, &combined(10, 5), 1, 0, 0, 100), 4);
        // Inactive: nothing.
        let idle = Combined {
            active: false,
            ..combined(10, 10)
        };
        assert_eq!(jobs_to_create(None, &idle, 0, 0, 0, 100), 0);
    }

    #[test]
    fn the_minimum_is_topped_up_and_the_strategy_runs_on_jobs_beyond_it() {
        // 1 running of a minimum of 3: create 2, whatever the queue says.
        assert_eq!(jobs_to_create(None, &combined(0, 0), 1, 0, 3, 100), 2);
        // 4 running, minimum 2: the strategy sees 2 running; maxScale 5 → 3.
        assert_eq!(jobs_to_create(None, &combined(5, 5), 4, 0, 2, 100), 3);
    }

    #[test]
    fn custom_deducts_queue_and_a_share_of_running_and_needs_a_number() {
        let s = ScalingStrategy {
            strategy: Some(ScalingStrategyKind::Custom),
            custom_scaling_queue_length_deduction: Some(1),
            custom_scaling_running_job_percentage: Some("0.5".into()),
            ..ScalingStrategy::default()
        };
        // 10 − 1 − 4 × 0.5 = 7.
        assert_eq!(jobs_to_create(Some(&s), &combined(10, 10), 4, 0, 0, 100), 7);
        // Capped at maxReplicaCount (not at the free slots).
        assert_eq!(jobs_to_create(Some(&s), &combined(50, 50), 0, 0, 0, 20), 20);
        // Without a percentage KEDA uses the default strategy: 10 − 4.
        let no_percentage = ScalingStrategy {
            custom_scaling_running_job_percentage: None,
            ..s
        };
        assert_eq!(
            jobs_to_create(Some(&no_percentage), &combined(10, 10), 4, 0, 0, 100),
            6
        );
    }

    #[test]
    fn accurate_counts_pending_jobs_on_both_sides() {
        let s = strategy(ScalingStrategyKind::Accurate);
        // Room: maxScale − pending.
        assert_eq!(jobs_to_create(Some(&s), &combined(5, 5), 2, 1, 0, 10), 4);
        // Over the maximum: max − running.
        assert_eq!(jobs_to_create(Some(&s), &combined(9, 9), 4, 0, 0, 10), 6);
        // 8 + 4 − 3 = 9 is not over 10: maxScale − pending = 5.
        assert_eq!(jobs_to_create(Some(&s), &combined(8, 8), 4, 3, 0, 10), 5);
    }

    #[test]
    fn eager_fills_free_slots() {
        let s = strategy(ScalingStrategyKind::Eager);
        // 3 messages, 1 running, max 10: all three (default would make 2).
        assert_eq!(jobs_to_create(Some(&s), &combined(3, 3), 1, 0, 0, 10), 3);
        assert_eq!(jobs_to_create(None, &combined(3, 3), 1, 0, 0, 10), 2);
        // Bounded by free slots minus pending.
        assert_eq!(jobs_to_create(Some(&s), &combined(10, 10), 6, 2, 0, 10), 2);
    }
}
