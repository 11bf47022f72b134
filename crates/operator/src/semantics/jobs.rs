//! ScaledJob: how many Jobs to create, by scaling strategy (KEDA's `scale_jobs.go` and
//! `scaledjob-spec`).

use ringscale_api::scaled_job::{MultipleScalersCalculation, ScalingStrategy, ScalingStrategyKind};

/// One trigger's reading: its queue length and its target average value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    /// The metric value (queue length).
    pub queue: f64,
    /// The trigger's target per Job.
    pub target: f64,
}

impl Reading {
    /// Jobs this reading alone asks for: ceil(queue / target), capped at `max`.
    fn scale(&self, max: i64) -> i64 {
        if self.target <= 0.0 || !self.queue.is_finite() {
            return 0;
        }
        #[allow(clippy::cast_possible_truncation)]
        let wanted = (self.queue / self.target).ceil().clamp(0.0, 1e15) as i64;
        wanted.min(max)
    }
}

/// `maxScale`: the readings combined by `multipleScalersCalculation` (max by default), at most
/// `max_replicas`.
pub fn max_scale(
    readings: &[Reading],
    calculation: &MultipleScalersCalculation,
    max_replicas: i64,
) -> i64 {
    if readings.is_empty() {
        return 0;
    }
    let scales: Vec<i64> = readings.iter().map(|r| r.scale(max_replicas)).collect();
    let combined = match calculation {
        MultipleScalersCalculation::Min => scales.iter().copied().min().unwrap_or(0),
        MultipleScalersCalculation::Sum => {
            // Sum the queues and targets, as KEDA does, then divide.
            let queue: f64 = readings.iter().map(|r| r.queue).sum();
            let target: f64 = readings.iter().map(|r| r.target).sum();
            Reading { queue, target }.scale(max_replicas)
        }
        MultipleScalersCalculation::Avg => {
            #[allow(clippy::cast_precision_loss)]
            let n = readings.len() as f64;
            let queue = readings.iter().map(|r| r.queue).sum::<f64>() / n;
            let target = readings.iter().map(|r| r.target).sum::<f64>() / n;
            Reading { queue, target }.scale(max_replicas)
        }
        _ => scales.iter().copied().max().unwrap_or(0),
    };
    combined.clamp(0, max_replicas)
}

/// Jobs to create now.
pub fn jobs_to_create(
    strategy: Option<&ScalingStrategy>,
    max_scale: i64,
    running: i64,
    pending: i64,
    max_replicas: i64,
) -> i64 {
    let kind = strategy
        .and_then(|s| s.strategy.clone())
        .unwrap_or(ScalingStrategyKind::Default);
    let effective = match kind {
        ScalingStrategyKind::Custom => {
            let deduction = strategy
                .and_then(|s| s.custom_scaling_queue_length_deduction)
                .map_or(0, i64::from);
            let percentage = strategy
                .and_then(|s| s.custom_scaling_running_job_percentage.as_deref())
                .and_then(|p| p.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
            let running_share = (running as f64 * percentage) as i64;
            (max_scale - deduction - running_share).min(max_replicas)
        }
        ScalingStrategyKind::Accurate => {
            if max_scale + running > max_replicas {
                max_replicas - running
            } else {
                max_scale - pending
            }
        }
        ScalingStrategyKind::Eager => (max_replicas - running - pending).min(max_scale),
        _ => max_scale - running,
    };
    // Never below zero, never beyond the free slots.
    effective.clamp(0, (max_replicas - running).max(0))
}

/// What the strategy asks for, raised so that at least `min` Jobs run (`minReplicaCount`:
/// Jobs kept running even without events).
pub fn with_minimum(to_create: i64, min: i64, running: i64) -> i64 {
    to_create.max(min - running).max(0)
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

    #[test]
    fn max_scale_combines_triggers() {
        let r = [
            Reading {
                queue: 10.0,
                target: 2.0,
            },
            Reading {
                queue: 3.0,
                target: 1.0,
            },
        ];
        assert_eq!(max_scale(&r, &MultipleScalersCalculation::Max, 100), 5);
        assert_eq!(max_scale(&r, &MultipleScalersCalculation::Min, 100), 3);
        assert_eq!(max_scale(&r, &MultipleScalersCalculation::Sum, 100), 5); // 13 / 3
        assert_eq!(max_scale(&r, &MultipleScalersCalculation::Avg, 100), 5); // 6.5 / 1.5
        assert_eq!(max_scale(&r, &MultipleScalersCalculation::Max, 4), 4);
        assert_eq!(max_scale(&[], &MultipleScalersCalculation::Max, 4), 0);
        assert_eq!(
            max_scale(
                &[Reading {
                    queue: 1.0,
                    target: 0.0
                }],
                &MultipleScalersCalculation::Max,
                4
            ),
            0
        );
    }

    #[test]
    fn default_subtracts_running_jobs() {
        assert_eq!(jobs_to_create(None, 10, 3, 0, 100), 7);
        assert_eq!(jobs_to_create(None, 2, 5, 0, 100), 0);
        // maxScale counts the running Jobs too.
        assert_eq!(jobs_to_create(None, 10, 93, 0, 100), 0);
        // Never beyond the free slots.
        let eager = strategy(ScalingStrategyKind::Eager);
        assert_eq!(jobs_to_create(Some(&eager), 10, 98, 0, 100), 2);
    }

    #[test]
    fn custom_deducts_queue_and_a_share_of_running() {
        let s = ScalingStrategy {
            strategy: Some(ScalingStrategyKind::Custom),
            custom_scaling_queue_length_deduction: Some(1),
            custom_scaling_running_job_percentage: Some("0.5".into()),
            ..ScalingStrategy::default()
        };
        // 10 − 1 − 4 × 0.5 = 7.
        assert_eq!(jobs_to_create(Some(&s), 10, 4, 0, 100), 7);
    }

    #[test]
    fn accurate_counts_pending_jobs() {
        let s = strategy(ScalingStrategyKind::Accurate);
        // Room: maxScale − pending.
        assert_eq!(jobs_to_create(Some(&s), 5, 2, 1, 10), 4);
        // Over the maximum: max − running.
        assert_eq!(jobs_to_create(Some(&s), 9, 4, 0, 10), 6);
    }

    #[test]
    fn eager_fills_free_slots() {
        let s = strategy(ScalingStrategyKind::Eager);
        // 3 messages, 1 running, max 10: all three (default would make 2).
        assert_eq!(jobs_to_create(Some(&s), 3, 1, 0, 10), 3);
        assert_eq!(jobs_to_create(None, 3, 1, 0, 10), 2);
        // Bounded by free slots minus pending.
        assert_eq!(jobs_to_create(Some(&s), 10, 6, 2, 10), 2);
    }

    #[test]
    fn the_minimum_tops_up_running_jobs() {
        assert_eq!(with_minimum(0, 2, 0), 2);
        assert_eq!(with_minimum(0, 2, 1), 1);
        assert_eq!(with_minimum(3, 2, 1), 3);
        assert_eq!(with_minimum(0, 2, 5), 0);
    }
}
