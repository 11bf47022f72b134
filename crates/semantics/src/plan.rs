//! One poll of a ScaledObject as a pure function: from what the cycle read (the object, its
//! pause annotations, the target's replicas, each metric's reading, the failure counts, the
//! clock) to a [`Plan`] — the replica count to set, what to do with the HPA, the status, the
//! events and the records. The controller gathers the inputs and performs the plan's writes;
//! every KEDA rule lives here, where a plain `#[test]` can check it.
//!
//! The reference is KEDA v2.20: `pkg/scaling/scale_handler.go` (`getScaledObjectState`,
//! `getScalerState`, `checkScalers`), `pkg/scaling/executor/scale_scaledobjects.go`
//! (`RequestScale`), `pkg/fallback/fallback.go`, `pkg/scaling/modifiers/formula.go`,
//! `pkg/scaling/executor/scale_executor.go` (`getTriggersActivity`) and
//! `controllers/keda/scaledobject_controller.go` (pause).

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use ringscale_api::common::{
    GroupVersionKindResource, HealthStatus, HealthStatusType, TriggerActivityStatus,
};
use ringscale_api::names::COMPOSITE_METRIC_NAME;
use ringscale_api::scaled_object::{Fallback, FallbackBehavior};
use ringscale_api::{
    Condition, ConditionStatus, ConditionType, MetricType, ScaledObject, ScaledObjectStatus,
};

use super::cooldown::Cooldown;
use super::fallback::{Health, fallback_replicas, fallback_value};
use super::modifiers::{Formula, composite_active};
use super::pause::{Pause, PauseError};

/// How often at most `status.health` is refreshed while only failure counts change (the
/// threshold being crossed, or a recovery, is written at once).
pub const HEALTH_REFRESH: Duration = Duration::from_secs(60);

/// KEDA's Ready message when all is well.
pub const READY_MESSAGE: &str = "ScaledObject is defined correctly and is ready for scaling";

/// The target's replica counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// `/scale` `spec.replicas`.
    pub current: i32,
    /// Ready replicas.
    pub ready: i32,
}

/// One external metric's reading this poll.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricPoll {
    /// The trigger's index in `spec.triggers`.
    pub index: usize,
    /// The metric name (`s<index>-...`).
    pub metric: String,
    /// The metric's HPA target: its type and value (for fallback values).
    pub target: Option<(MetricType, f64)>,
    /// The value and activity, or why the read failed.
    pub outcome: Result<Reading, String>,
}

/// A successful read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    /// The value.
    pub value: f64,
    /// Above the trigger's activation threshold.
    pub active: bool,
}

/// Everything one poll's plan depends on.
#[derive(Debug)]
pub struct Input<'a> {
    /// The object as read (its status is the "before").
    pub so: &'a ScaledObject,
    /// The pause annotations, or why they are invalid.
    pub pause: Result<Pause, PauseError>,
    /// The target's replicas and what kind it is, or why they could not be read.
    pub target: Result<(Target, GroupVersionKindResource), String>,
    /// Problems building the triggers (an invalid trigger, a missing secret, a bad formula).
    pub problems: &'a [String],
    /// The external metric names of every trigger, in trigger order.
    pub external_metrics: &'a [String],
    /// The resource metric names (cpu, memory) of the HPA.
    pub resource_metrics: &'a [String],
    /// This poll's readings of every external metric.
    pub polls: &'a [MetricPoll],
    /// The compiled `scalingModifiers` formula, when there is one.
    pub formula: Option<&'a Formula>,
    /// Failure counts as this replica knows them (a new owner continues from the status).
    pub health: &'a BTreeMap<String, Health>,
    /// When this replica last saw the object active (more precise than the status).
    pub last_active: Option<Timestamp>,
    /// When this replica last wrote `status.health`.
    pub health_written: Option<Timestamp>,
    /// Now.
    pub now: Timestamp,
    /// Load tests only: KEDA's pattern of writing `lastActiveTime` on every active poll.
    pub keda_write_pattern: bool,
}

/// What to do with the HPA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HpaAction {
    /// Create or update it as the object describes it.
    Ensure,
    /// Delete it (the object is paused).
    Delete,
    /// Leave it (the object cannot be scaled yet: invalid triggers or annotations).
    Keep,
}

/// Why the target is scaled, which names the event the executor publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScaleReason {
    /// 0 (or idle) → active: `KEDAScaleTargetActivated`, naming the active metrics.
    Activate {
        /// Active because of `force-activation`.
        forced: bool,
        /// The active metrics.
        triggers: Vec<String>,
    },
    /// Inactive past the cooldown → 0 or idle: `KEDAScaleTargetDeactivated`.
    Deactivate,
    /// Inactive below `minReplicaCount`: up to it.
    Minimum,
    /// `paused-replicas`.
    Paused,
}

/// A replica count to set on the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleStep {
    /// The count before.
    pub from: i32,
    /// The count to set.
    pub to: i32,
    /// Why.
    pub reason: ScaleReason,
}

impl ScaleStep {
    /// The event after the write: reason, whether it is a warning, message (KEDA's texts).
    pub fn event(&self, kind: &str, so: &ScaledObject, ok: bool) -> Option<PlannedEvent> {
        let ns = so.metadata.namespace.as_deref().unwrap_or_default();
        let target = &so.spec.scale_target_ref.name;
        let (from, to) = (self.from, self.to);
        match (&self.reason, ok) {
            (ScaleReason::Activate { forced, triggers }, true) => Some(PlannedEvent::normal(
                "KEDAScaleTargetActivated",
                if *forced {
                    format!(
                        "Scaled {kind} {ns}/{target} from {from} to {to}, caused by forced activation annotation"
                    )
                } else {
                    format!(
                        "Scaled {kind} {ns}/{target} from {from} to {to}, triggered by {}",
                        triggers.join(";")
                    )
                },
            )),
            (ScaleReason::Activate { .. }, false) => Some(PlannedEvent::warning(
                "KEDAScaleTargetActivationFailed",
                format!("Failed to scale {kind} {ns}/{target} from {from} to {to}"),
            )),
            (ScaleReason::Deactivate, true) => Some(PlannedEvent::normal(
                "KEDAScaleTargetDeactivated",
                format!("Deactivated {kind} {ns}/{target} from {from} to {to}"),
            )),
            (ScaleReason::Deactivate, false) => Some(PlannedEvent::warning(
                "KEDAScaleTargetDeactivationFailed",
                format!("Failed to deactivate {kind} {ns}/{target} from {from} to {to}"),
            )),
            (ScaleReason::Minimum | ScaleReason::Paused, _) => None,
        }
    }
}

/// An event to publish on the ScaledObject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEvent {
    /// Warning (true) or Normal.
    pub warning: bool,
    /// KEDA's reason (`pkg/eventreason`).
    pub reason: &'static str,
    /// The note.
    pub message: String,
    /// It only reports a failed read (`KEDAScalerFailed`, `KEDAMetricSourceFailed`): it spends
    /// the report budget whether or not the status is written.
    pub failed_read: bool,
}

impl PlannedEvent {
    fn normal(reason: &'static str, message: impl Into<String>) -> Self {
        PlannedEvent {
            warning: false,
            reason,
            message: message.into(),
            failed_read: false,
        }
    }

    fn warning(reason: &'static str, message: impl Into<String>) -> Self {
        PlannedEvent {
            warning: true,
            ..PlannedEvent::normal(reason, message)
        }
    }

    fn failed_read(reason: &'static str, message: impl Into<String>) -> Self {
        PlannedEvent {
            failed_read: true,
            ..PlannedEvent::warning(reason, message)
        }
    }
}

/// A value to record (and replicate) for a metric.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedRecord {
    /// The metric name (`composite-metric` for the formula's result).
    pub metric: String,
    /// The value (for a failed read: `None`, the executor keeps the last one).
    pub value: Option<f64>,
    /// Active, or counted active (fallback).
    pub active: bool,
    /// Why the read failed.
    pub error: Option<String>,
    /// Consecutive failed reads (replicated, so any replica applies fallback from it).
    pub failures: u32,
    /// A failed read past the fallback threshold: the value that lands the HPA on the
    /// fallback replicas, answered in its place.
    pub fallback: Option<f64>,
}

/// What one poll does.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The status to write (written only if it differs from the object's).
    pub status: ScaledObjectStatus,
    /// The replica count to set, if any.
    pub scale: Option<ScaleStep>,
    /// The HPA.
    pub hpa: HpaAction,
    /// HPAs this object managed under another name (`horizontalPodAutoscalerConfig.name`
    /// changed): delete them.
    pub delete_hpas: Vec<String>,
    /// Events to publish.
    pub events: Vec<PlannedEvent>,
    /// Failure counts after this poll (`None`: nothing was read, the counts stay).
    pub health: Option<BTreeMap<String, Health>>,
    /// When the object was last seen active, after this poll.
    pub last_active: Option<Timestamp>,
    /// The status carries refreshed health counts.
    pub health_written: bool,
    /// Values to record.
    pub records: Vec<PlannedRecord>,
    /// The object is active (or counted active through fallback).
    pub active: bool,
    /// Some metric is past its failure threshold.
    pub falling_back: bool,
    /// Some read failed this poll (with or without fallback): the status changes are reports
    /// of that failure.
    pub failing: bool,
}

/// Whether KEDA would apply this fallback (`HasValidFallback`): non-negative counts and, with
/// scalingModifiers, an integer target above 0.
pub fn valid_fallback(so: &ScaledObject) -> Option<&Fallback> {
    let fallback = so.spec.fallback.as_ref()?;
    let modifiers_ok = so.spec.scaling_modifiers().is_none_or(|m| {
        m.target
            .as_deref()
            .and_then(|t| t.parse::<i64>().ok())
            .is_some_and(|t| t > 0)
    });
    (fallback.failure_threshold >= 0 && fallback.replicas >= 0 && modifiers_ok).then_some(fallback)
}

/// Sets a condition, keeping its transition time when its status did not change.
pub fn set_condition(
    conditions: &mut Option<Vec<Condition>>,
    type_: ConditionType,
    value: ConditionStatus,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let conditions = conditions.get_or_insert_with(Vec::new);
    let message: String = message.chars().take(1024).collect();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != value {
                c.last_transition_time = Some(Time(now));
            }
            c.status = value;
            c.reason = Some(reason.to_owned());
            c.message = Some(message);
        }
        None => conditions.push(Condition {
            type_,
            status: value,
            reason: Some(reason.to_owned()),
            message: Some(message),
            last_transition_time: Some(Time(now)),
        }),
    }
}

/// The status of a condition type, if set.
pub fn condition_status(
    status: &ScaledObjectStatus,
    type_: ConditionType,
) -> Option<ConditionStatus> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

fn condition_reason(status: &ScaledObjectStatus, type_: ConditionType) -> Option<String> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .and_then(|c| c.reason.clone())
}

/// `status.triggersTypes`: the trigger types, comma-joined.
pub fn triggers_types(triggers: &[ringscale_api::ScaleTrigger]) -> String {
    triggers
        .iter()
        .map(|t| t.type_.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The `scaleTargetKind` KEDA writes: `<apiVersion>.<Kind>`.
pub fn scale_target_kind(so: &ScaledObject) -> String {
    let t = &so.spec.scale_target_ref;
    format!("{}.{}", t.effective_api_version(), t.effective_kind())
}

/// Plans one poll.
pub fn plan(input: &Input<'_>) -> Plan {
    let so = input.so;
    let now = input.now;
    let before = so.status.clone().unwrap_or_default();
    let mut status = before.clone();
    let mut events = Vec::new();
    status.hpa_name = Some(so.hpa_name());
    status.scale_target_kind = Some(scale_target_kind(so));
    status.triggers_types = Some(triggers_types(&so.spec.triggers));
    let target = match &input.target {
        Ok((target, gvkr)) => {
            status.scale_target_gvkr = Some(gvkr.clone());
            if status.original_replica_count.is_none() {
                status.original_replica_count = Some(target.current);
            }
            Ok(*target)
        }
        Err(e) => Err(e.clone()),
    };
    // An HPA this object created under another name is deleted (KEDA finds it through
    // status.hpaName).
    let delete_hpas: Vec<String> = before
        .hpa_name
        .iter()
        .filter(|old| !old.is_empty() && **old != so.hpa_name())
        .cloned()
        .collect();
    let mut plan = Plan {
        status: ScaledObjectStatus::default(),
        scale: None,
        hpa: HpaAction::Keep,
        delete_hpas,
        events: Vec::new(),
        health: None,
        last_active: input.last_active,
        health_written: false,
        records: Vec::new(),
        active: false,
        falling_back: false,
        failing: false,
    };

    let pause = match &input.pause {
        Ok(p) => *p,
        Err(e) => {
            set_condition(
                &mut status.conditions,
                ConditionType::Ready,
                ConditionStatus::False,
                "ScaledObjectCheckFailed",
                &e.to_string(),
                now,
            );
            ready_events(&before, &status, &mut events);
            plan.status = status;
            plan.events = events;
            return plan;
        }
    };
    let was_paused =
        condition_status(&before, ConditionType::Paused) == Some(ConditionStatus::True);

    // Paused (`paused`, `paused-replicas`): no scale loop, no HPA; the target held at the
    // paused count when one is given.
    if pause.is_full() {
        plan.hpa = HpaAction::Delete;
        if let (Some(n), Ok(t)) = (pause.replicas, target)
            && t.current != n
        {
            plan.scale = Some(ScaleStep {
                from: t.current,
                to: n,
                reason: ScaleReason::Paused,
            });
        }
        status.paused_replica_count = pause.replicas;
        mark_paused(&mut status, was_paused, &mut events, now);
        plan.status = status;
        plan.events = events;
        return plan;
    }
    status.paused_replica_count = None;
    if pause.scale_in || pause.scale_out {
        mark_paused(&mut status, was_paused, &mut events, now);
    } else if was_paused {
        let message = "pause annotation removed for ScaledObject";
        set_condition(
            &mut status.conditions,
            ConditionType::Paused,
            ConditionStatus::False,
            "ScaledObjectUnpaused",
            message,
            now,
        );
        events.push(PlannedEvent::normal("ScaledObjectUnpaused", message));
    } else if condition_status(&before, ConditionType::Paused).is_none() {
        // KEDA initializes Paused to False.
        set_condition(
            &mut status.conditions,
            ConditionType::Paused,
            ConditionStatus::False,
            "ScaledObjectUnpaused",
            "ScaledObject is not paused",
            now,
        );
    }

    if !input.problems.is_empty() {
        let message = input.problems.join("; ");
        set_condition(
            &mut status.conditions,
            ConditionType::Ready,
            ConditionStatus::False,
            "ScaledObjectCheckFailed",
            &message,
            now,
        );
        set_condition(
            &mut status.conditions,
            ConditionType::Active,
            ConditionStatus::Unknown,
            "ScaledObjectCheckFailed",
            "the triggers could not be built",
            now,
        );
        ready_events(&before, &status, &mut events);
        plan.status = status;
        plan.events = events;
        return plan;
    }
    plan.hpa = HpaAction::Ensure;

    let readings = assess(
        so,
        input.polls,
        input.health,
        &before,
        input.formula,
        target.as_ref().ok().copied(),
    );
    let health = readings.health;
    plan.records = readings.records;
    events.extend(readings.events);
    let (any_active, any_error) = (readings.active, readings.error);
    let (active_metrics, errors, falling_back) = (
        readings.active_metrics,
        readings.errors,
        readings.falling_back,
    );
    let modifiers = so.spec.scaling_modifiers();
    let fallback = valid_fallback(so);
    let active = any_active || pause.force_activation;
    plan.active = active;
    plan.falling_back = falling_back;
    plan.failing = any_error || falling_back;

    // A new owner of an object whose status says Active counts the cooldown from its own first
    // poll: lastActiveTime is written on transitions only, so the status may be old.
    let status_says_active =
        condition_status(&before, ConditionType::Active) == Some(ConditionStatus::True);
    if plan.last_active.is_none() && status_says_active {
        plan.last_active = Some(now);
    }

    // RequestScale.
    match &target {
        Err(e) => set_condition(
            &mut status.conditions,
            ConditionType::Ready,
            ConditionStatus::False,
            "ErrorGettingCurrentReplicas",
            &format!("Error getting current replicas count for ScaleTarget: {e}"),
            now,
        ),
        Ok(t) => {
            set_condition(
                &mut status.conditions,
                ConditionType::Ready,
                ConditionStatus::True,
                "ScaledObjectReady",
                READY_MESSAGE,
                now,
            );
            let touched = request_scale(
                input,
                &pause,
                *t,
                active,
                any_error,
                &active_metrics,
                &mut plan,
                &mut status,
            );
            if touched {
                plan.last_active = Some(now);
                // Written when the object turns active (the Active condition changes in the same
                // write); KEDA's pattern writes it on every active poll.
                if input.keda_write_pattern
                    || !status_says_active
                    || status.last_active_time.is_none()
                {
                    status.last_active_time = Some(Time(now));
                }
            } else if !active
                && let Some(last) = plan.last_active
                // The API keeps whole seconds: compare at that precision, or every inactive poll
                // would write the same time again.
                && status
                    .last_active_time
                    .as_ref()
                    .is_none_or(|t| t.0.as_second() < last.as_second())
            {
                // The first inactive poll writes the last active time, so the cooldown runs from
                // it here and at any new owner.
                status.last_active_time = Some(Time(last));
            }
        }
    }
    if let Some(c) = status
        .conditions
        .as_mut()
        .and_then(|cs| cs.iter_mut().find(|c| c.type_ == ConditionType::Ready))
        && c.status != ConditionStatus::True
        && c.reason.as_deref() != Some("ErrorGettingCurrentReplicas")
        && !errors.is_empty()
    {
        // KEDA's message is generic; the errors themselves help more.
        c.message = Some(
            format!(
                "{}: {}",
                c.message.as_deref().unwrap_or_default(),
                errors.join("; ")
            )
            .chars()
            .take(1024)
            .collect(),
        );
    }

    // Names and activity as KEDA writes them: the triggers' external metric names (also with
    // scalingModifiers, which add compositeScalerName), activity keyed by those names.
    status.external_metric_names = Some(input.external_metrics.to_vec());
    status.resource_metric_names =
        (!input.resource_metrics.is_empty()).then(|| input.resource_metrics.to_vec());
    status.composite_scaler_name = modifiers
        .filter(|m| parse_f64(m.target.as_deref()).is_some_and(|t| t > 0.0))
        .map(|_| COMPOSITE_METRIC_NAME.to_owned());
    status.triggers_activity = Some(
        input
            .external_metrics
            .iter()
            .map(|m| {
                (
                    m.clone(),
                    TriggerActivityStatus {
                        is_active: active_metrics.contains(m),
                    },
                )
            })
            .collect(),
    );

    // Fallback: health kept only when a valid fallback is configured.
    if fallback.is_some() {
        apply_health(input, &before, &health, &mut plan, &mut status);
        if falling_back {
            // KEDA's message, with the replica count the HPA is led to.
            let message = match (fallback, &target) {
                (Some(f), Ok(t))
                    if f.effective_behavior() != FallbackBehavior::ScalingModifiers =>
                {
                    format!(
                        "At least one trigger is falling back on this scaled object (to {} replicas)",
                        fallback_replicas(f, t.current)
                    )
                }
                _ => "At least one trigger is falling back on this scaled object".to_owned(),
            };
            set_condition(
                &mut status.conditions,
                ConditionType::Fallback,
                ConditionStatus::True,
                "FallbackExists",
                &message,
                now,
            );
        } else {
            set_condition(
                &mut status.conditions,
                ConditionType::Fallback,
                ConditionStatus::False,
                "NoFallbackFound",
                "No fallbacks are active on this scaled object",
                now,
            );
        }
        let was = condition_status(&before, ConditionType::Fallback) == Some(ConditionStatus::True);
        if falling_back && !was {
            events.push(PlannedEvent::normal(
                "ScaledObjectFallbackActivated",
                "ScaledObject fallback is active",
            ));
        } else if !falling_back && was {
            events.push(PlannedEvent::normal(
                "ScaledObjectFallbackDeactivated",
                "ScaledObject fallback is no longer active",
            ));
        }
    }
    ready_events(&before, &status, &mut events);
    plan.health = Some(health);
    plan.status = status;
    plan.events = events;
    plan
}

/// One poll's readings weighed as KEDA's `getScaledObjectState` does: failure counts, fallback
/// (a trigger past its threshold counts as active, not as an error), the composite metric of
/// `scalingModifiers`, and whether the object is active (before `force-activation`).
#[derive(Clone, Debug, PartialEq)]
pub struct Readings {
    /// Failure counts after these readings.
    pub health: BTreeMap<String, Health>,
    /// Some trigger (or the composite metric) is active, or only cpu/memory triggers exist.
    pub active: bool,
    /// Some read failed without a fallback to take its place.
    pub error: bool,
    /// The active metrics (`composite-metric` with scalingModifiers).
    pub active_metrics: Vec<String>,
    /// The failures' messages.
    pub errors: Vec<String>,
    /// Some metric is past its failure threshold.
    pub falling_back: bool,
    /// Values to record, the composite one included.
    pub records: Vec<PlannedRecord>,
    /// `KEDAScalerFailed` / `KEDAMetricSourceFailed` for a metric's first failure.
    pub events: Vec<PlannedEvent>,
}

/// Weighs one poll's (or one live read's) readings; `health` is what this replica counted so
/// far, `before` the status (a count this replica lacks continues from there).
pub fn assess(
    so: &ScaledObject,
    polls: &[MetricPoll],
    health: &BTreeMap<String, Health>,
    before: &ScaledObjectStatus,
    formula: Option<&Formula>,
    target: Option<Target>,
) -> Readings {
    // Each metric: success resets its count; a failure counts, and past the threshold the
    // trigger falls back — it counts as active and not as an error (`getScalerState`:
    // `isActiveOrFallback`), its value the one that lands the HPA on the fallback replicas.
    let modifiers = so.spec.scaling_modifiers();
    let fallback = valid_fallback(so);
    let current = target.map_or(0, |t| t.current);
    let ready = target.map_or(0, |t| t.ready);
    let mut health_after = health.clone();
    let mut records = Vec::new();
    let mut events = Vec::new();
    let mut any_active = false;
    let mut any_error = false;
    let mut active_metrics: Vec<String> = Vec::new();
    // The first fallback value, which replaces the composite metric (`HandleScalingModifiers`).
    let mut first_fallback: Option<f64> = None;
    let mut errors: Vec<String> = Vec::new();
    let mut formula_values: BTreeMap<String, Option<f64>> = BTreeMap::new();
    let mut falling_back = false;
    let failed_reason = if modifiers.is_some() {
        "KEDAMetricSourceFailed"
    } else {
        "KEDAScalerFailed"
    };
    for poll in polls {
        let trigger_name = so
            .spec
            .triggers
            .get(poll.index)
            .and_then(|t| t.name.clone());
        let previous = health_after
            .get(&poll.metric)
            .copied()
            .or_else(|| status_health(before, &poll.metric))
            .unwrap_or_default();
        match &poll.outcome {
            Ok(reading) => {
                health_after.insert(poll.metric.clone(), previous.success());
                if reading.active {
                    any_active = true;
                    active_metrics.push(poll.metric.clone());
                }
                records.push(PlannedRecord {
                    metric: poll.metric.clone(),
                    value: Some(reading.value),
                    active: reading.active,
                    error: None,
                    failures: 0,
                    fallback: None,
                });
                if let Some(n) = trigger_name {
                    formula_values.insert(n, Some(reading.value));
                }
            }
            Err(message) => {
                let mut served = None;
                let health = previous.failure();
                health_after.insert(poll.metric.clone(), health);
                if previous.failures == 0 {
                    events.push(PlannedEvent::failed_read(failed_reason, message.clone()));
                }
                let past = fallback.filter(|f| health.falls_back(f));
                match past {
                    Some(f) if f.effective_behavior() == FallbackBehavior::ScalingModifiers => {
                        // The formula sees nil for this trigger (`??`); not an error.
                        falling_back = true;
                        if let Some(n) = trigger_name {
                            formula_values.insert(n, None);
                        }
                    }
                    Some(f) => {
                        falling_back = true;
                        any_active = true;
                        active_metrics.push(poll.metric.clone());
                        served = poll.target.as_ref().map(|(metric_type, t)| {
                            fallback_value(*t, metric_type, fallback_replicas(f, current), ready)
                        });
                        if first_fallback.is_none() {
                            first_fallback = served;
                        }
                    }
                    None => {
                        any_error = true;
                        errors.push(message.clone());
                        if let Some(n) = trigger_name {
                            formula_values.insert(n, None);
                        }
                    }
                }
                records.push(PlannedRecord {
                    metric: poll.metric.clone(),
                    value: None,
                    active: past.is_some(),
                    error: Some(message.clone()),
                    failures: u32::try_from(health.failures).unwrap_or(0),
                    fallback: served,
                });
            }
        }
    }

    // scalingModifiers: the composite metric decides activity, and only without errors.
    if let Some(m) = modifiers {
        any_active = false;
        active_metrics.clear();
        if !any_error {
            let composite = if let Some(v) = first_fallback {
                // A static-like fallback replaces the formula's result (`HandleScalingModifiers`).
                Ok(Some(v))
            } else {
                match formula {
                    Some(f) => f.evaluate(&formula_values).map_err(|e| e.to_string()),
                    None => Err("the formula is not compiled".to_owned()),
                }
            };
            let composite = match composite {
                Ok(Some(v)) => Ok(v),
                // nil: fallback.replicas × target (`scalingModifiersFallbackTarget`).
                Ok(None) => match (so.spec.fallback.as_ref(), parse_f64(m.target.as_deref())) {
                    (Some(f), Some(t)) => Ok(f64::from(f.replicas) * t),
                    (None, _) => Err(
                        "scalingModifiers formula evaluated to nil but no fallback is configured"
                            .to_owned(),
                    ),
                    (_, None) => Err("scalingModifiers target is not a number".to_owned()),
                },
                Err(e) => Err(e),
            };
            match composite {
                Ok(v) => {
                    let activation = parse_f64(m.activation_target.as_deref()).unwrap_or(0.0);
                    any_active = composite_active(v, activation);
                    if any_active {
                        active_metrics.push(COMPOSITE_METRIC_NAME.to_owned());
                    }
                    records.push(PlannedRecord {
                        metric: COMPOSITE_METRIC_NAME.to_owned(),
                        value: Some(v),
                        active: any_active,
                        error: None,
                        failures: 0,
                        fallback: None,
                    });
                }
                Err(e) => {
                    any_error = true;
                    errors.push(e.clone());
                    records.push(PlannedRecord {
                        metric: COMPOSITE_METRIC_NAME.to_owned(),
                        value: None,
                        active: false,
                        error: Some(e),
                        failures: 0,
                        fallback: None,
                    });
                }
            }
        }
    }
    // Only cpu/memory triggers: always active, so never scaled to 0 (unless a trigger failed).
    if so.spec.only_resource_triggers() && !any_error {
        any_active = true;
    }
    Readings {
        health: health_after,
        active: any_active,
        error: any_error,
        active_metrics,
        errors,
        falling_back,
        records,
        events,
    }
}

/// Paused=True `ScaledObjectPaused`, and the event when it was not paused before.
fn mark_paused(
    status: &mut ScaledObjectStatus,
    was_paused: bool,
    events: &mut Vec<PlannedEvent>,
    now: Timestamp,
) {
    set_condition(
        &mut status.conditions,
        ConditionType::Paused,
        ConditionStatus::True,
        "ScaledObjectPaused",
        "ScaledObject is paused",
        now,
    );
    if !was_paused {
        events.push(PlannedEvent::normal(
            "ScaledObjectPaused",
            "ScaledObject is paused",
        ));
    }
}

/// KEDA's `RequestScale` once the replicas are known. Returns whether `lastActiveTime` is
/// refreshed (an active poll that scaled from zero, or found replicas running without errors).
#[allow(clippy::too_many_arguments)]
fn request_scale(
    input: &Input<'_>,
    pause: &Pause,
    t: Target,
    active: bool,
    error: bool,
    active_metrics: &[String],
    plan: &mut Plan,
    status: &mut ScaledObjectStatus,
) -> bool {
    let so = input.so;
    let now = input.now;
    let min = so.spec.min_replicas();
    let idle = so.spec.idle_replica_count;
    if active {
        let message = if pause.force_activation {
            "Scaling is performed because activation is being forced by annotation"
        } else {
            "Scaling is performed because triggers are active"
        };
        set_condition(
            &mut status.conditions,
            ConditionType::Active,
            ConditionStatus::True,
            "ScalerActive",
            message,
            now,
        );
        if (idle.is_some() && t.current < min) || t.current == 0 {
            if pause.scale_out {
                return false;
            }
            plan.scale = Some(ScaleStep {
                from: t.current,
                to: if min > 0 { min } else { 1 },
                reason: ScaleReason::Activate {
                    forced: pause.force_activation,
                    triggers: active_metrics.to_vec(),
                },
            });
            return true;
        }
        if error {
            set_condition(
                &mut status.conditions,
                ConditionType::Ready,
                ConditionStatus::Unknown,
                "PartialTriggerError",
                "Some triggers defined in ScaledObject are not working correctly",
                now,
            );
            return false;
        }
        return true;
    }
    set_condition(
        &mut status.conditions,
        ConditionType::Active,
        ConditionStatus::False,
        "ScalerNotActive",
        "Scaling is not performed because triggers are not active",
        now,
    );
    let fallback = so.spec.fallback.as_ref();
    if error && fallback.is_some_and(|f| f.replicas != 0) {
        // Scaling to zero now would keep the HPA from applying the fallback later.
        return false;
    }
    if error && fallback.is_none() {
        set_condition(
            &mut status.conditions,
            ConditionType::Ready,
            ConditionStatus::False,
            "TriggerError",
            "Triggers defined in ScaledObject are not working correctly",
            now,
        );
        return false;
    }
    let above_idle = idle.is_some_and(|i| t.current > i);
    if above_idle || (t.current > 0 && min == 0) {
        if pause.scale_in {
            return false;
        }
        let cooldown = Cooldown {
            period: so.spec.cooldown_period(),
            initial: so.spec.initial_cooldown_period(),
            last_active: status
                .last_active_time
                .as_ref()
                .map(|t| t.0)
                .max(plan.last_active),
            created: so.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0),
        };
        if cooldown.over(now) {
            plan.scale = Some(ScaleStep {
                from: t.current,
                to: idle.unwrap_or(min),
                reason: ScaleReason::Deactivate,
            });
        } else {
            set_condition(
                &mut status.conditions,
                ConditionType::Active,
                ConditionStatus::False,
                "ScalerCooldown",
                "Scaler cooling down because triggers are not active",
                now,
            );
        }
        return false;
    }
    if idle.is_none() && t.current < min {
        plan.scale = Some(ScaleStep {
            from: t.current,
            to: min,
            reason: ScaleReason::Minimum,
        });
    }
    false
}

/// `status.health`: KEDA writes it on every read; here it is written when a metric crosses its
/// threshold (either way), recovers, appears or goes — and otherwise at most once per
/// [`HEALTH_REFRESH`], so a shared source that fails does not cost a write per object per poll.
fn apply_health(
    input: &Input<'_>,
    before: &ScaledObjectStatus,
    health: &BTreeMap<String, Health>,
    plan: &mut Plan,
    status: &mut ScaledObjectStatus,
) {
    let Some(fallback) = valid_fallback(input.so) else {
        return;
    };
    let wanted: BTreeMap<String, HealthStatus> = health
        .iter()
        .map(|(m, h)| (m.clone(), health_status(*h)))
        .collect();
    let empty = BTreeMap::new();
    let old = before.health.as_ref().unwrap_or(&empty);
    if *old == wanted {
        return;
    }
    let state = |h: Option<&HealthStatus>| {
        let failures = h.and_then(|h| h.number_of_failures).unwrap_or(0);
        (failures == 0, failures > fallback.failure_threshold)
    };
    let significant = old.len() != wanted.len()
        || wanted.iter().any(|(m, h)| {
            let (was_happy, was_past) = state(old.get(m));
            let (happy, past) = state(Some(h));
            !old.contains_key(m) || was_past != past || (happy && !was_happy)
        });
    let due = input.health_written.is_none_or(|t| {
        input
            .now
            .duration_since(t)
            .try_into()
            .is_ok_and(|d: Duration| d >= HEALTH_REFRESH)
    });
    if significant || due {
        status.health = Some(wanted);
        plan.health_written = true;
    }
}

fn health_status(h: Health) -> HealthStatus {
    HealthStatus {
        number_of_failures: Some(h.failures),
        status: Some(if h.failures == 0 {
            HealthStatusType::Happy
        } else {
            HealthStatusType::Failing
        }),
    }
}

/// A metric's failure count as the status has it (a new owner continues from there).
fn status_health(status: &ScaledObjectStatus, metric: &str) -> Option<Health> {
    let failures = status.health.as_ref()?.get(metric)?.number_of_failures?;
    Some(Health {
        failures: failures.max(0),
    })
}

fn parse_f64(text: Option<&str>) -> Option<f64> {
    text.and_then(|t| t.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
}

/// Events for Ready transitions: `ScaledObjectReady` when it turns True,
/// `ScaledObjectCheckFailed` when the object's check fails.
fn ready_events(
    before: &ScaledObjectStatus,
    after: &ScaledObjectStatus,
    out: &mut Vec<PlannedEvent>,
) {
    let Some(now) = condition_status(after, ConditionType::Ready) else {
        return;
    };
    let reason = condition_reason(after, ConditionType::Ready);
    let changed = condition_status(before, ConditionType::Ready) != Some(now.clone())
        || condition_reason(before, ConditionType::Ready) != reason;
    if !changed {
        return;
    }
    match (now, reason.as_deref()) {
        (ConditionStatus::True, _) => out.push(PlannedEvent::normal(
            "ScaledObjectReady",
            "ScaledObject is ready for scaling",
        )),
        (ConditionStatus::False, Some("ScaledObjectCheckFailed")) => {
            let message = after
                .conditions
                .as_ref()
                .and_then(|cs| cs.iter().find(|c| c.type_ == ConditionType::Ready))
                .and_then(|c| c.message.clone())
                .unwrap_or_default();
            out.push(PlannedEvent::warning("ScaledObjectCheckFailed", message));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringscale_api::names::{
        ANNOTATION_FORCE_ACTIVATION, ANNOTATION_PAUSED, ANNOTATION_PAUSED_SCALE_OUT,
    };
    use serde_json::json;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn so(extra: serde_json::Value) -> ScaledObject {
        let mut base = json!({
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {"name": "orders", "namespace": "shop",
                         "creationTimestamp": "2027-01-15T08:00:00Z"},
            "spec": {
                "scaleTargetRef": {"name": "worker"},
                "triggers": [{"type": "redis", "metadata": {"listName": "q", "address": "r:6379"}}]
            }
        });
        merge(&mut base, extra);
        serde_json::from_value(base).unwrap()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn gvkr() -> GroupVersionKindResource {
        GroupVersionKindResource {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            resource: "deployments".into(),
        }
    }

    const METRIC: &str = "s0-redis-q";

    fn ok(value: f64, active: bool) -> MetricPoll {
        MetricPoll {
            index: 0,
            metric: METRIC.into(),
            target: Some((MetricType::AverageValue, 5.0)),
            outcome: Ok(Reading { value, active }),
        }
    }

    fn failed() -> MetricPoll {
        MetricPoll {
            outcome: Err("connection refused".into()),
            ..ok(0.0, false)
        }
    }

    struct Case {
        so: ScaledObject,
        current: i32,
        polls: Vec<MetricPoll>,
        health: BTreeMap<String, Health>,
        last_active: Option<Timestamp>,
        health_written: Option<Timestamp>,
        now: Timestamp,
    }

    impl Case {
        fn new(so: ScaledObject, current: i32, polls: Vec<MetricPoll>) -> Self {
            Case {
                so,
                current,
                polls,
                health: BTreeMap::new(),
                last_active: None,
                health_written: None,
                now: t(100_000),
            }
        }

        fn failures(mut self, n: i32) -> Self {
            self.health.insert(METRIC.into(), Health { failures: n });
            self
        }

        fn plan(&self) -> Plan {
            let external = vec![METRIC.to_owned()];
            plan(&Input {
                so: &self.so,
                pause: super::super::pause::from_annotations(
                    self.so
                        .metadata
                        .annotations
                        .as_ref()
                        .unwrap_or(&BTreeMap::new()),
                ),
                target: Ok((
                    Target {
                        current: self.current,
                        ready: self.current,
                    },
                    gvkr(),
                )),
                problems: &[],
                external_metrics: &external,
                resource_metrics: &[],
                polls: &self.polls,
                formula: None,
                health: &self.health,
                last_active: self.last_active,
                health_written: self.health_written,
                now: self.now,
                keda_write_pattern: false,
            })
        }
    }

    /// Plans a poll of an object with a `scalingModifiers` formula and one trigger metric.
    fn with_formula(
        so: &ScaledObject,
        formula: &Formula,
        polls: &[MetricPoll],
        current: i32,
    ) -> Plan {
        plan(&Input {
            so,
            pause: Ok(Pause::default()),
            target: Ok((
                Target {
                    current,
                    ready: current,
                },
                gvkr(),
            )),
            problems: &[],
            external_metrics: &[METRIC.to_owned()],
            resource_metrics: &[],
            polls,
            formula: Some(formula),
            health: &BTreeMap::new(),
            last_active: None,
            health_written: None,
            now: t(0),
            keda_write_pattern: false,
        })
    }

    fn condition(plan: &Plan, type_: ConditionType) -> (ConditionStatus, String) {
        let c = plan
            .status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_:?} condition"));
        (c.status.clone(), c.reason.clone().unwrap_or_default())
    }

    fn reasons(plan: &Plan) -> Vec<&'static str> {
        plan.events.iter().map(|e| e.reason).collect()
    }

    fn with_fallback(replicas: i32) -> ScaledObject {
        so(json!({"spec": {"fallback": {"failureThreshold": 3, "replicas": replicas}}}))
    }

    #[test]
    fn an_active_trigger_scales_zero_to_one_and_names_the_metric_in_the_event() {
        let plan = Case::new(so(json!({})), 0, vec![ok(7.0, true)]).plan();
        let step = plan.scale.clone().unwrap();
        assert_eq!((step.from, step.to), (0, 1));
        let event = step
            .event("apps/v1.Deployment", &so(json!({})), true)
            .unwrap();
        assert_eq!(event.reason, "KEDAScaleTargetActivated");
        assert_eq!(
            event.message,
            "Scaled apps/v1.Deployment shop/worker from 0 to 1, triggered by s0-redis-q"
        );
        assert_eq!(
            condition(&plan, ConditionType::Active),
            (ConditionStatus::True, "ScalerActive".into())
        );
        assert!(plan.status.last_active_time.is_some());
        assert_eq!(
            plan.status.triggers_activity.unwrap()[METRIC],
            TriggerActivityStatus { is_active: true }
        );
        // A failed scale write is a warning event instead.
        let failed = plan
            .scale
            .unwrap()
            .event("apps/v1.Deployment", &so(json!({})), false)
            .unwrap();
        assert!(failed.warning);
        assert_eq!(failed.reason, "KEDAScaleTargetActivationFailed");
    }

    #[test]
    fn activation_goes_to_min_replicas_when_it_is_above_zero() {
        let plan = Case::new(
            so(json!({"spec": {"minReplicaCount": 3}})),
            0,
            vec![ok(7.0, true)],
        )
        .plan();
        assert_eq!(plan.scale.map(|s| s.to), Some(3));
    }

    #[test]
    fn a_failing_trigger_below_the_threshold_is_an_error_and_does_not_scale_in() {
        // Two failures before, threshold 3: the third failure is not past it.
        let plan = Case::new(with_fallback(6), 4, vec![failed()])
            .failures(2)
            .plan();
        assert_eq!(
            plan.scale, None,
            "the HPA keeps the replicas while the count grows"
        );
        assert!(!plan.falling_back);
        assert_eq!(
            plan.health.as_ref().unwrap()[METRIC],
            Health { failures: 3 }
        );
        assert_eq!(
            condition(&plan, ConditionType::Fallback),
            (ConditionStatus::False, "NoFallbackFound".into())
        );
        assert_eq!(
            condition(&plan, ConditionType::Active),
            (ConditionStatus::False, "ScalerNotActive".into())
        );
    }

    #[test]
    fn fallback_past_the_threshold_counts_as_active_and_scales_a_target_at_zero() {
        let plan = Case::new(with_fallback(6), 0, vec![failed()])
            .failures(3)
            .plan();
        assert!(plan.falling_back && plan.active);
        assert_eq!(plan.scale.as_ref().map(|s| (s.from, s.to)), Some((0, 1)));
        assert_eq!(
            condition(&plan, ConditionType::Active),
            (ConditionStatus::True, "ScalerActive".into())
        );
        assert_eq!(
            condition(&plan, ConditionType::Ready),
            (ConditionStatus::True, "ScaledObjectReady".into())
        );
        assert_eq!(
            condition(&plan, ConditionType::Fallback),
            (ConditionStatus::True, "FallbackExists".into())
        );
        assert!(plan.status.last_active_time.is_some());
        assert!(reasons(&plan).contains(&"ScaledObjectFallbackActivated"));
        let health = &plan.status.health.as_ref().unwrap()[METRIC];
        assert_eq!(health.number_of_failures, Some(4));
        assert_eq!(health.status, Some(HealthStatusType::Failing));
        // The record says active (fallback) and keeps the error for the metrics API.
        let record = &plan.records[0];
        assert!(record.active && record.error.is_some());
    }

    #[test]
    fn fallback_with_zero_replicas_is_valid_and_still_counts_as_active() {
        let plan = Case::new(with_fallback(0), 0, vec![failed()])
            .failures(3)
            .plan();
        assert!(plan.falling_back);
        assert_eq!(plan.scale.map(|s| s.to), Some(1));
        assert!(valid_fallback(&with_fallback(0)).is_some());
    }

    #[test]
    fn fallback_ends_with_the_first_good_read_and_says_so() {
        let mut so = with_fallback(6);
        so.status = Some(ScaledObjectStatus {
            conditions: Some(vec![Condition {
                type_: ConditionType::Fallback,
                status: ConditionStatus::True,
                reason: Some("FallbackExists".into()),
                message: None,
                last_transition_time: None,
            }]),
            health: Some(BTreeMap::from([(
                METRIC.to_owned(),
                health_status(Health { failures: 9 }),
            )])),
            ..ScaledObjectStatus::default()
        });
        let plan = Case::new(so, 6, vec![ok(1.0, true)]).failures(9).plan();
        assert!(!plan.falling_back);
        assert!(reasons(&plan).contains(&"ScaledObjectFallbackDeactivated"));
        let health = &plan.status.health.as_ref().unwrap()[METRIC];
        assert_eq!(health.number_of_failures, Some(0));
        assert_eq!(health.status, Some(HealthStatusType::Happy));
    }

    #[test]
    fn a_new_owner_continues_the_failure_count_from_the_status() {
        let mut so = with_fallback(6);
        so.status = Some(ScaledObjectStatus {
            health: Some(BTreeMap::from([(
                METRIC.to_owned(),
                health_status(Health { failures: 3 }),
            )])),
            ..ScaledObjectStatus::default()
        });
        // No count in this replica's memory: the status's 3, plus this failure, is past 3.
        let plan = Case::new(so, 0, vec![failed()]).plan();
        assert!(plan.falling_back);
        assert_eq!(
            plan.health.as_ref().unwrap()[METRIC],
            Health { failures: 4 }
        );
    }

    #[test]
    fn failure_counts_below_the_threshold_are_written_at_most_once_a_minute() {
        let mut so = with_fallback(6);
        so.status = Some(ScaledObjectStatus {
            health: Some(BTreeMap::from([(
                METRIC.to_owned(),
                health_status(Health { failures: 1 }),
            )])),
            ..ScaledObjectStatus::default()
        });
        let mut case = Case::new(so, 2, vec![failed()]).failures(1);
        case.health_written = Some(
            case.now
                .checked_sub(jiff::SignedDuration::from_secs(30))
                .unwrap(),
        );
        let plan = case.plan();
        assert_eq!(
            plan.health.as_ref().unwrap()[METRIC],
            Health { failures: 2 },
            "counted"
        );
        assert!(
            !plan.health_written,
            "but not written 30 s after the last write"
        );
        assert_eq!(
            plan.status.health.as_ref().unwrap()[METRIC].number_of_failures,
            Some(1)
        );
        case.health_written = Some(
            case.now
                .checked_sub(jiff::SignedDuration::from_secs(61))
                .unwrap(),
        );
        let plan = case.plan();
        assert!(plan.health_written);
        assert_eq!(
            plan.status.health.as_ref().unwrap()[METRIC].number_of_failures,
            Some(2)
        );
    }

    #[test]
    fn crossing_the_threshold_is_written_at_once() {
        let mut so = with_fallback(6);
        so.status = Some(ScaledObjectStatus {
            health: Some(BTreeMap::from([(
                METRIC.to_owned(),
                health_status(Health { failures: 1 }),
            )])),
            ..ScaledObjectStatus::default()
        });
        let mut case = Case::new(so, 2, vec![failed()]).failures(3);
        case.health_written = Some(case.now);
        let plan = case.plan();
        assert!(plan.health_written);
        assert_eq!(
            plan.status.health.as_ref().unwrap()[METRIC].number_of_failures,
            Some(4)
        );
    }

    #[test]
    fn without_fallback_a_failing_inactive_object_is_not_ready_and_no_health_is_kept() {
        let plan = Case::new(so(json!({})), 0, vec![failed()]).plan();
        assert_eq!(
            condition(&plan, ConditionType::Ready),
            (ConditionStatus::False, "TriggerError".into())
        );
        assert_eq!(plan.status.health, None);
        assert!(reasons(&plan).contains(&"KEDAScalerFailed"));
        // Only the first failure of a run publishes the event.
        let plan = Case::new(so(json!({})), 0, vec![failed()])
            .failures(1)
            .plan();
        assert!(!reasons(&plan).contains(&"KEDAScalerFailed"));
    }

    #[test]
    fn an_active_object_with_a_failing_trigger_is_partially_ready_and_keeps_its_last_active_time() {
        let mut so = so(json!({"spec": {"triggers": [
            {"type": "redis", "metadata": {"listName": "q", "address": "r:6379"}},
            {"type": "redis", "metadata": {"listName": "p", "address": "r:6379"}}
        ]}}));
        so.status = Some(ScaledObjectStatus {
            last_active_time: Some(Time(t(5))),
            ..ScaledObjectStatus::default()
        });
        let polls = vec![
            ok(9.0, true),
            MetricPoll {
                index: 1,
                metric: "s1-redis-p".into(),
                ..failed()
            },
        ];
        let plan = Case::new(so, 2, polls).plan();
        assert_eq!(
            condition(&plan, ConditionType::Ready).1,
            "PartialTriggerError"
        );
        assert_eq!(plan.status.last_active_time, Some(Time(t(5))));
    }

    #[test]
    fn inactive_objects_scale_in_only_after_the_cooldown() {
        let mut so = so(json!({}));
        so.status = Some(ScaledObjectStatus {
            last_active_time: Some(Time(t(100_000 - 299))),
            ..ScaledObjectStatus::default()
        });
        let plan = Case::new(so.clone(), 3, vec![ok(0.0, false)]).plan();
        assert_eq!(plan.scale, None);
        assert_eq!(condition(&plan, ConditionType::Active).1, "ScalerCooldown");
        so.status = Some(ScaledObjectStatus {
            last_active_time: Some(Time(t(100_000 - 301))),
            ..ScaledObjectStatus::default()
        });
        let plan = Case::new(so.clone(), 3, vec![ok(0.0, false)]).plan();
        let step = plan.scale.unwrap();
        assert_eq!((step.to, step.reason.clone()), (0, ScaleReason::Deactivate));
        assert_eq!(
            step.event("apps/v1.Deployment", &so, true).unwrap().reason,
            "KEDAScaleTargetDeactivated"
        );
    }

    #[test]
    fn idle_replicas_jump_to_the_minimum_and_fall_back_to_idle() {
        let idle = || so(json!({"spec": {"idleReplicaCount": 0, "minReplicaCount": 2}}));
        // Active at idle, or below the minimum in idle mode: to the minimum.
        for current in [0, 1] {
            let plan = Case::new(idle(), current, vec![ok(5.0, true)]).plan();
            assert_eq!(plan.scale.map(|s| s.to), Some(2), "from {current}");
        }
        // Inactive above idle after the cooldown: to idle.
        let mut cooled = idle();
        cooled.status = Some(ScaledObjectStatus {
            last_active_time: Some(Time(t(0))),
            ..ScaledObjectStatus::default()
        });
        let plan = Case::new(cooled, 2, vec![ok(0.0, false)]).plan();
        assert_eq!(plan.scale.map(|s| s.to), Some(0));
        // Inactive at idle: stays (idle mode never raises to the minimum while inactive).
        let plan = Case::new(idle(), 0, vec![ok(0.0, false)]).plan();
        assert_eq!(plan.scale, None);
    }

    #[test]
    fn an_inactive_object_below_its_minimum_is_raised_and_never_scaled_to_zero() {
        let min2 = so(json!({"spec": {"minReplicaCount": 2}}));
        for current in [0, 1] {
            let plan = Case::new(min2.clone(), current, vec![ok(0.0, false)]).plan();
            let step = plan.scale.unwrap();
            assert_eq!((step.to, step.reason), (2, ScaleReason::Minimum));
        }
        let mut min1 = so(json!({"spec": {"minReplicaCount": 1}}));
        min1.status = Some(ScaledObjectStatus {
            last_active_time: Some(Time(t(0))),
            ..ScaledObjectStatus::default()
        });
        assert_eq!(Case::new(min1, 3, vec![ok(0.0, false)]).plan().scale, None);
    }

    #[test]
    fn a_failing_inactive_object_is_not_scaled_in_with_or_without_fallback() {
        // No fallback: TriggerError, and RequestScale stops there (no scale-in).
        let plan = Case::new(so(json!({})), 1, vec![failed()]).plan();
        assert_eq!(condition(&plan, ConditionType::Ready).1, "TriggerError");
        assert_eq!(plan.scale, None);
        // A fallback with replicas: left to the HPA, Ready stays True.
        let plan = Case::new(with_fallback(6), 1, vec![failed()]).plan();
        assert_eq!(
            condition(&plan, ConditionType::Ready).1,
            "ScaledObjectReady"
        );
        assert_eq!(plan.scale, None);
        // fallback.replicas 0 below the threshold: KEDA goes on to scale in.
        let plan = Case::new(with_fallback(0), 1, vec![failed()]).plan();
        assert_eq!(plan.scale.map(|s| s.to), Some(0));
    }

    #[test]
    fn the_initial_cooldown_holds_a_new_object_that_was_never_active() {
        let fresh = so(json!({"spec": {"initialCooldownPeriod": 120}}));
        let created = fresh.metadata.creation_timestamp.as_ref().unwrap().0;
        let mut case = Case::new(fresh, 1, vec![ok(0.0, false)]);
        case.now = created
            .checked_add(jiff::SignedDuration::from_secs(60))
            .unwrap();
        let plan = case.plan();
        assert_eq!(plan.scale, None);
        assert_eq!(condition(&plan, ConditionType::Active).1, "ScalerCooldown");
        case.now = created
            .checked_add(jiff::SignedDuration::from_secs(121))
            .unwrap();
        assert_eq!(case.plan().scale.map(|s| s.to), Some(0));
    }

    #[test]
    fn force_activation_is_active_with_its_own_message() {
        let so = so(json!({"metadata": {"annotations": {ANNOTATION_FORCE_ACTIVATION: "True"}}}));
        let plan = Case::new(so.clone(), 0, vec![ok(0.0, false)]).plan();
        let step = plan.scale.clone().unwrap();
        assert_eq!(step.to, 1);
        assert!(
            step.event("apps/v1.Deployment", &so, true)
                .unwrap()
                .message
                .ends_with("caused by forced activation annotation")
        );
    }

    #[test]
    fn paused_false_in_any_go_spelling_does_not_pause() {
        for no in ["False", "0", "f"] {
            let so = so(json!({"metadata": {"annotations": {ANNOTATION_PAUSED: no}}}));
            let plan = Case::new(so, 0, vec![ok(3.0, true)]).plan();
            assert_eq!(plan.hpa, HpaAction::Ensure, "{no}");
            assert_eq!(plan.scale.map(|s| s.to), Some(1), "{no}");
        }
    }

    #[test]
    fn pausing_deletes_the_hpa_and_says_so_once() {
        let so = so(json!({"metadata": {"annotations": {ANNOTATION_PAUSED: "true"}}}));
        let plan = Case::new(so.clone(), 4, vec![]).plan();
        assert_eq!(plan.hpa, HpaAction::Delete);
        assert_eq!(plan.scale, None);
        assert_eq!(reasons(&plan), vec!["ScaledObjectPaused"]);
        // Already paused: no event again. Unpaused: ScaledObjectUnpaused.
        let mut paused = so.clone();
        paused.status = Some(plan.status.clone());
        let again = Case::new(paused.clone(), 4, vec![]).plan();
        assert!(again.events.is_empty());
        let mut resumed = self::so(json!({}));
        resumed.status = paused.status.clone();
        let plan = Case::new(resumed, 4, vec![ok(1.0, true)]).plan();
        assert!(reasons(&plan).contains(&"ScaledObjectUnpaused"));
        assert_eq!(
            condition(&plan, ConditionType::Paused),
            (ConditionStatus::False, "ScaledObjectUnpaused".into())
        );
    }

    #[test]
    fn paused_scale_out_blocks_activation_and_keeps_the_last_active_time() {
        let so = so(json!({"metadata": {"annotations": {ANNOTATION_PAUSED_SCALE_OUT: "true"}}}));
        let plan = Case::new(so, 0, vec![ok(3.0, true)]).plan();
        assert_eq!(plan.scale, None);
        assert_eq!(plan.status.last_active_time, None);
        assert_eq!(
            condition(&plan, ConditionType::Paused),
            (ConditionStatus::True, "ScaledObjectPaused".into())
        );
    }

    #[test]
    fn renaming_the_hpa_deletes_the_one_of_the_old_name() {
        let mut so = so(
            json!({"spec": {"advanced": {"horizontalPodAutoscalerConfig": {"name": "orders-hpa"}}}}),
        );
        so.status = Some(ScaledObjectStatus {
            hpa_name: Some("keda-hpa-orders".into()),
            ..ScaledObjectStatus::default()
        });
        let plan = Case::new(so, 1, vec![ok(1.0, true)]).plan();
        assert_eq!(plan.delete_hpas, vec!["keda-hpa-orders".to_owned()]);
        assert_eq!(plan.status.hpa_name.as_deref(), Some("orders-hpa"));
    }

    #[test]
    fn scaling_modifiers_keep_trigger_names_and_add_the_composite_name() {
        let so = so(json!({"spec": {
            "triggers": [{"type": "redis", "name": "q", "metadata": {"listName": "q", "address": "r:6379"}}],
            "advanced": {"scalingModifiers": {"formula": "q * 2", "target": "4"}}
        }}));
        let formula = Formula::compile("q * 2").unwrap();
        let polls = vec![ok(3.0, false)];
        let plan = with_formula(&so, &formula, &polls, 0);
        assert_eq!(
            plan.status.external_metric_names,
            Some(vec![METRIC.to_owned()])
        );
        assert_eq!(
            plan.status.composite_scaler_name.as_deref(),
            Some(COMPOSITE_METRIC_NAME)
        );
        // 3 × 2 = 6 > 0: active through the composite metric; triggersActivity keeps KEDA's keys.
        assert!(plan.active);
        assert_eq!(plan.scale.map(|s| s.to), Some(1));
        let composite = plan
            .records
            .iter()
            .find(|r| r.metric == COMPOSITE_METRIC_NAME)
            .unwrap();
        assert_eq!(composite.value, Some(6.0));
        assert_eq!(
            plan.status.triggers_activity.unwrap()[METRIC],
            TriggerActivityStatus { is_active: false }
        );
    }

    #[test]
    fn a_scaling_modifiers_object_whose_trigger_errors_is_not_active() {
        let so = so(json!({"spec": {
            "triggers": [{"type": "redis", "name": "q", "metadata": {"listName": "q", "address": "r:6379"}}],
            "advanced": {"scalingModifiers": {"formula": "q * 2", "target": "4"}}
        }}));
        let formula = Formula::compile("q * 2").unwrap();
        let polls = vec![failed()];
        let plan = with_formula(&so, &formula, &polls, 0);
        assert!(!plan.active);
        assert_eq!(plan.scale, None);
        assert!(reasons(&plan).contains(&"KEDAMetricSourceFailed"));
        assert_eq!(condition(&plan, ConditionType::Ready).1, "TriggerError");
    }

    #[test]
    fn a_static_fallback_replaces_the_composite_metric() {
        let mut so = so(json!({"spec": {
            "triggers": [{"type": "redis", "name": "q", "metadata": {"listName": "q", "address": "r:6379"}}],
            "fallback": {"failureThreshold": 0, "replicas": 4},
            "advanced": {"scalingModifiers": {"formula": "q * 2", "target": "4"}}
        }}));
        so.status = None;
        let formula = Formula::compile("q * 2").unwrap();
        let polls = vec![failed()];
        let plan = with_formula(&so, &formula, &polls, 2);
        // The trigger's own target (5) × 4 fallback replicas, as HandleScalingModifiers serves.
        let composite = plan
            .records
            .iter()
            .find(|r| r.metric == COMPOSITE_METRIC_NAME)
            .unwrap();
        assert_eq!(composite.value, Some(20.0));
        assert!(plan.active && plan.falling_back);
    }

    #[test]
    fn a_scaling_modifiers_fallback_feeds_nil_to_the_formula() {
        let so = so(json!({"spec": {
            "triggers": [{"type": "redis", "name": "q", "metadata": {"listName": "q", "address": "r:6379"}}],
            "fallback": {"failureThreshold": 0, "replicas": 3, "behavior": "scalingModifiers"},
            "advanced": {"scalingModifiers": {"formula": "q ?? 1", "target": "2"}}
        }}));
        let formula = Formula::compile("q ?? 1").unwrap();
        let polls = vec![failed()];
        let plan = with_formula(&so, &formula, &polls, 0);
        let composite = plan
            .records
            .iter()
            .find(|r| r.metric == COMPOSITE_METRIC_NAME)
            .unwrap();
        assert_eq!(composite.value, Some(1.0), "nil ?? 1");
        assert!(plan.active);
    }

    #[test]
    fn the_target_that_cannot_be_read_makes_the_object_not_ready() {
        let so = so(json!({}));
        let external = vec![METRIC.to_owned()];
        let polls = vec![ok(1.0, true)];
        let health = BTreeMap::new();
        let plan = plan(&Input {
            so: &so,
            pause: Ok(Pause::default()),
            target: Err("worker not found".into()),
            problems: &[],
            external_metrics: &external,
            resource_metrics: &[],
            polls: &polls,
            formula: None,
            health: &health,
            last_active: None,
            health_written: None,
            now: t(0),
            keda_write_pattern: false,
        });
        assert_eq!(plan.scale, None);
        assert_eq!(
            condition(&plan, ConditionType::Ready),
            (ConditionStatus::False, "ErrorGettingCurrentReplicas".into())
        );
    }
}
