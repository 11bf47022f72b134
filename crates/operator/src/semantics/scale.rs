//! What a poll of a ScaledObject decides about its target's replica count: KEDA's
//! `RequestScale`. The HPA owns 1 ↔ N; the operator owns 0 ↔ 1 (or idle ↔ min) and the minimum.

use std::time::Duration;

use jiff::Timestamp;

/// Everything the decision depends on.
#[derive(Clone, Debug)]
pub struct ScaleInput {
    /// The target's current replica count (its `/scale` `spec.replicas`).
    pub current: i32,
    /// `minReplicaCount`.
    pub min: i32,
    /// `maxReplicaCount`.
    pub max: i32,
    /// `idleReplicaCount`.
    pub idle: Option<i32>,
    /// Any trigger active (or `force-activation`).
    pub active: bool,
    /// Any trigger failed this poll.
    pub error: bool,
    /// `fallback` is configured with non-zero replicas (then failures leave scaling to the HPA's
    /// fallback instead of scaling in).
    pub fallback_configured: bool,
    /// `cooldownPeriod`.
    pub cooldown: Duration,
    /// `initialCooldownPeriod`.
    pub initial_cooldown: Duration,
    /// `status.lastActiveTime`.
    pub last_active: Option<Timestamp>,
    /// The object's `creationTimestamp`.
    pub created: Timestamp,
    /// Now.
    pub now: Timestamp,
    /// `paused-scale-in`: no scaling in (1 → 0, min → idle).
    pub scale_in_paused: bool,
    /// `paused-scale-out`: no scaling out (0 → 1, idle → min).
    pub scale_out_paused: bool,
}

/// The Active condition's state after the poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    /// A trigger is active: `ScalerActive`.
    Active,
    /// Inactive, still within the cooldown: `ScalerCooldown` (False).
    Cooldown,
    /// Inactive: `ScalerNotActive` (False).
    NotActive,
}

/// The Ready condition's state after the poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// `ScaledObjectReady`.
    Ready,
    /// Active, but some trigger failed: Unknown `PartialTriggerError`.
    PartialError,
    /// Inactive with a failing trigger and no fallback: False `TriggerError`.
    TriggerError,
}

/// What to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Set the target's replicas to this, if anything.
    pub scale_to: Option<i32>,
    /// Refresh `status.lastActiveTime` to now.
    pub touch_last_active: bool,
    /// The Active condition.
    pub activity: Activity,
    /// The Ready condition.
    pub readiness: Readiness,
}

/// The instant the cooldown ends: `lastActiveTime + cooldownPeriod`, or, before the object was
/// ever active, `creationTimestamp + initialCooldownPeriod`.
pub fn cooldown_ends(input: &ScaleInput) -> Timestamp {
    let (from, period) = match input.last_active {
        Some(t) => (t, input.cooldown),
        None => (input.created, input.initial_cooldown),
    };
    let period = jiff::SignedDuration::try_from(period).unwrap_or(jiff::SignedDuration::MAX);
    from.checked_add(period).unwrap_or(Timestamp::MAX)
}

/// Decides one poll.
pub fn decide(input: &ScaleInput) -> Decision {
    if input.active {
        let mut scale_to = None;
        let below_min_in_idle_mode = input.idle.is_some() && input.current < input.min;
        if (input.current == 0 || below_min_in_idle_mode) && !input.scale_out_paused {
            scale_to = Some(input.min.max(1).min(input.max.max(1)));
        }
        return Decision {
            scale_to,
            touch_last_active: true,
            activity: Activity::Active,
            readiness: if input.error {
                Readiness::PartialError
            } else {
                Readiness::Ready
            },
        };
    }

    let readiness = if input.error && !input.fallback_configured {
        Readiness::TriggerError
    } else {
        Readiness::Ready
    };
    let mut decision = Decision {
        scale_to: None,
        touch_last_active: false,
        activity: Activity::NotActive,
        readiness,
    };
    if input.error && input.fallback_configured {
        // Leave it to the HPA: scaling to zero would stop it from applying the fallback.
        return decision;
    }
    let above_idle = input.idle.is_some_and(|idle| input.current > idle);
    let scale_in_to_zero = input.idle.is_none() && input.current > 0 && input.min == 0;
    if above_idle || scale_in_to_zero {
        // KEDA scales in once the end is strictly in the past.
        if input.now <= cooldown_ends(input) {
            decision.activity = Activity::Cooldown;
        } else if !input.scale_in_paused {
            decision.scale_to = Some(input.idle.unwrap_or(0));
        }
    } else if input.current < input.min && input.idle.is_none() && !input.scale_out_paused {
        decision.scale_to = Some(input.min);
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn base() -> ScaleInput {
        ScaleInput {
            current: 0,
            min: 0,
            max: 10,
            idle: None,
            active: false,
            error: false,
            fallback_configured: false,
            cooldown: Duration::from_secs(300),
            initial_cooldown: Duration::ZERO,
            last_active: None,
            created: t(0),
            now: t(1000),
            scale_in_paused: false,
            scale_out_paused: false,
        }
    }

    #[test]
    fn activation_scales_zero_to_max_of_min_and_one() {
        let d = decide(&ScaleInput {
            active: true,
            ..base()
        });
        assert_eq!(d.scale_to, Some(1));
        assert!(d.touch_last_active);
        assert_eq!(d.activity, Activity::Active);
        let d = decide(&ScaleInput {
            active: true,
            min: 3,
            ..base()
        });
        assert_eq!(d.scale_to, Some(3));
        // Already running: the HPA's job; still touch lastActiveTime.
        let d = decide(&ScaleInput {
            active: true,
            current: 4,
            ..base()
        });
        assert_eq!(d.scale_to, None);
        assert!(d.touch_last_active);
        // Paused scale-out blocks 0 → 1.
        let d = decide(&ScaleInput {
            active: true,
            scale_out_paused: true,
            ..base()
        });
        assert_eq!(d.scale_to, None);
    }

    #[test]
    fn deactivation_waits_for_the_cooldown() {
        let active_until = t(900);
        let inactive = ScaleInput {
            current: 2,
            last_active: Some(active_until),
            ..base()
        };
        // 100 s after the last activity: cooling down.
        let d = decide(&ScaleInput {
            now: t(1000),
            ..inactive.clone()
        });
        assert_eq!(d.scale_to, None);
        assert_eq!(d.activity, Activity::Cooldown);
        // Exactly 300 s after: not yet (strictly after the end).
        let d = decide(&ScaleInput {
            now: t(1200),
            ..inactive.clone()
        });
        assert_eq!(d.scale_to, None);
        let d = decide(&ScaleInput {
            now: t(1201),
            ..inactive.clone()
        });
        assert_eq!(d.scale_to, Some(0));
        assert_eq!(d.activity, Activity::NotActive);
        // Paused scale-in blocks 1 → 0.
        let d = decide(&ScaleInput {
            now: t(1300),
            scale_in_paused: true,
            ..inactive
        });
        assert_eq!(d.scale_to, None);
    }

    #[test]
    fn initial_cooldown_counts_from_creation_until_first_active() {
        let fresh = ScaleInput {
            current: 1,
            initial_cooldown: Duration::from_secs(120),
            created: t(0),
            ..base()
        };
        assert_eq!(
            decide(&ScaleInput {
                now: t(60),
                ..fresh.clone()
            })
            .scale_to,
            None
        );
        assert_eq!(
            decide(&ScaleInput {
                now: t(60),
                ..fresh.clone()
            })
            .activity,
            Activity::Cooldown
        );
        assert_eq!(
            decide(&ScaleInput {
                now: t(121),
                ..fresh.clone()
            })
            .scale_to,
            Some(0)
        );
        // Without an initial cooldown, a never-active object scales in at once.
        assert_eq!(
            decide(&ScaleInput {
                now: t(1),
                initial_cooldown: Duration::ZERO,
                ..fresh
            })
            .scale_to,
            Some(0)
        );
    }

    #[test]
    fn idle_replicas() {
        let idle = ScaleInput {
            idle: Some(0),
            min: 2,
            ..base()
        };
        // Active at idle: jump to min.
        assert_eq!(
            decide(&ScaleInput {
                active: true,
                current: 0,
                ..idle.clone()
            })
            .scale_to,
            Some(2)
        );
        // Active below min in idle mode: to min.
        assert_eq!(
            decide(&ScaleInput {
                active: true,
                current: 1,
                ..idle.clone()
            })
            .scale_to,
            Some(2)
        );
        // Inactive above idle after cooldown: to idle.
        let d = decide(&ScaleInput {
            current: 2,
            last_active: Some(t(0)),
            now: t(301),
            ..idle.clone()
        });
        assert_eq!(d.scale_to, Some(0));
        // Inactive at idle: stays (idle mode never raises to min while inactive).
        assert_eq!(decide(&ScaleInput { current: 0, ..idle }).scale_to, None);
    }

    #[test]
    fn below_min_is_raised_to_min() {
        let d = decide(&ScaleInput {
            min: 2,
            current: 1,
            ..base()
        });
        assert_eq!(d.scale_to, Some(2));
        let d = decide(&ScaleInput {
            min: 2,
            current: 0,
            ..base()
        });
        assert_eq!(d.scale_to, Some(2));
        // With min ≥ 1 an inactive object never goes to zero.
        let d = decide(&ScaleInput {
            min: 1,
            current: 3,
            last_active: Some(t(0)),
            ..base()
        });
        assert_eq!(d.scale_to, None);
    }

    #[test]
    fn errors_and_fallback() {
        // Inactive with an error and no fallback: TriggerError, and it still scales in.
        let d = decide(&ScaleInput {
            error: true,
            current: 1,
            ..base()
        });
        assert_eq!(d.readiness, Readiness::TriggerError);
        assert_eq!(d.scale_to, Some(0));
        // With fallback: leave the target alone for the HPA's fallback.
        let d = decide(&ScaleInput {
            error: true,
            fallback_configured: true,
            current: 1,
            ..base()
        });
        assert_eq!(d.readiness, Readiness::Ready);
        assert_eq!(d.scale_to, None);
        // Active with a failing trigger: PartialTriggerError.
        let d = decide(&ScaleInput {
            error: true,
            active: true,
            current: 1,
            ..base()
        });
        assert_eq!(d.readiness, Readiness::PartialError);
    }
}
