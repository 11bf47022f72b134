//! When an inactive ScaledObject may scale in (KEDA's `scaleToZeroOrIdle`): once
//! `lastActiveTime + cooldownPeriod` is strictly past, or — before the object was ever active —
//! `creationTimestamp + initialCooldownPeriod`.

use std::time::Duration;

use jiff::Timestamp;

/// What the end of the cooldown depends on.
#[derive(Clone, Copy, Debug)]
pub struct Cooldown {
    /// `cooldownPeriod`.
    pub period: Duration,
    /// `initialCooldownPeriod`.
    pub initial: Duration,
    /// When the object was last active, if ever.
    pub last_active: Option<Timestamp>,
    /// The object's `creationTimestamp`.
    pub created: Timestamp,
}

impl Cooldown {
    /// The instant the cooldown ends.
    pub fn ends(&self) -> Timestamp {
        let (from, period) = match self.last_active {
            Some(t) => (t, self.period),
            None => (self.created, self.initial),
        };
        let period = jiff::SignedDuration::try_from(period).unwrap_or(jiff::SignedDuration::MAX);
        from.checked_add(period).unwrap_or(Timestamp::MAX)
    }

    /// Whether scaling in is allowed at `now` (KEDA compares with `Before(now)`: strictly past).
    pub fn over(&self, now: Timestamp) -> bool {
        now > self.ends()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn the_cooldown_runs_from_the_last_activity_and_ends_strictly_after() {
        let c = Cooldown {
            period: Duration::from_secs(300),
            initial: Duration::from_secs(120),
            last_active: Some(t(900)),
            created: t(0),
        };
        assert!(!c.over(t(1000)));
        assert!(!c.over(t(1200)), "exactly 300 s after: not yet");
        assert!(c.over(t(1201)));
    }

    #[test]
    fn before_the_first_activity_the_initial_cooldown_counts_from_creation() {
        let fresh = Cooldown {
            period: Duration::from_secs(300),
            initial: Duration::from_secs(120),
            last_active: None,
            created: t(0),
        };
        assert!(!fresh.over(t(60)));
        assert!(fresh.over(t(121)));
        // Without an initial cooldown, a never-active object may scale in at once.
        let none = Cooldown {
            initial: Duration::ZERO,
            ..fresh
        };
        assert!(none.over(t(1)));
        // Periods too long to add saturate instead of overflowing.
        let forever = Cooldown {
            period: Duration::MAX,
            last_active: Some(t(0)),
            ..fresh
        };
        assert!(!forever.over(t(1_000_000)));
    }
}
