//! One poll of one ScaledObject: gather (annotations, target, triggers, readings), plan
//! ([`ringscale_semantics::plan`]), execute the plan's writes. The triggers are built here too,
//! for ScaledObjects and ScaledJobs alike.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) async fn run_cycle(
    ctx: &Ctx,
    id: &ObjectId,
    so: &ScaledObject,
    state: &mut PollState,
    generation: u64,
) -> Result<(), CycleError> {
    let (ns, name) = (id.namespace.as_str(), id.name.as_str());
    if fence_of(&so.metadata) > generation {
        return Err(CycleError::Fenced("a newer owner stamped the object"));
    }
    if so.metadata.deletion_timestamp.is_some() {
        return finalize(ctx, id, so, generation).await;
    }
    // Stamp ownership and the finalizer in one write, when needed.
    let so = ensure_meta(ctx, id, so, generation).await?;
    let so = &so;

    // Gather: the annotations, the target, the triggers (rebuilt when the object changed) and
    // this poll's readings.
    let pause = pause::from_annotations(so.annotations());
    if let Ok(p) = &pause {
        ctx.metrics.paused(ns, name, p.is_paused());
    }
    // The planner puts the reason in the status: it takes it as text.
    let target = read_target(ctx, so)
        .await
        .map(|(current, ready, gvkr)| (plan::Target { current, ready }, gvkr))
        .map_err(|e| e.to_string());
    let polls = match &pause {
        Ok(p) if !p.is_full() => {
            let print = fingerprint(&so.metadata);
            if state.fingerprint.as_ref() != Some(&print) {
                build(ctx, so, state).await;
                state.fingerprint = Some(print);
            }
            if state.problems.is_empty() {
                poll_metrics(ctx, id, &so.spec.triggers, state).await
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    };
    let external: Vec<String> = state
        .specs
        .iter()
        .filter_map(MetricSpec::external_name)
        .map(str::to_owned)
        .collect();
    let resource: Vec<String> = state
        .specs
        .iter()
        .filter_map(|s| match s {
            MetricSpec::Resource(r) => Some(r.resource.as_str().to_owned()),
            MetricSpec::External(_) => None,
        })
        .collect();
    let now = Timestamp::now();
    let plan = plan::plan(&plan::Input {
        so,
        pause: pause.clone(),
        target,
        problems: &state.problems,
        external_metrics: &external,
        resource_metrics: &resource,
        polls: &polls,
        formula: state.formula.as_ref(),
        health: &state.health,
        last_active: state.last_active,
        health_written: state.health_written,
        now,
        keda_write_pattern: ctx.settings.keda_write_pattern,
    });
    execute(
        ctx,
        id,
        so,
        state,
        plan,
        pause.unwrap_or_default(),
        generation,
    )
    .await
}

/// Performs a plan: records, old HPAs, the scale write (and its event), the HPA, the other
/// events and the status — each write fenced by the ring generation.
pub(super) async fn execute(
    ctx: &Ctx,
    id: &ObjectId,
    so: &ScaledObject,
    state: &mut PollState,
    mut plan: plan::Plan,
    pause: pause::Pause,
    generation: u64,
) -> Result<(), CycleError> {
    let (ns, name) = (id.namespace.as_str(), id.name.as_str());
    let mut claim = Claim::new(ctx, so, generation);
    let interval = so.spec.polling_interval();
    let polled_at = ringscale_replication::now();
    for r in &plan.records {
        let record_key = RecordKey::new(id.clone(), r.metric.as_str());
        record_planned(&ctx.records, record_key, r, polled_at, interval, generation);
    }
    if let Some(health) = plan.health.take() {
        state.health = health;
    }
    state.last_active = plan.last_active;
    for old in &plan.delete_hpas {
        info!(namespace = ns, name, hpa = %old, "deleting the HPA of the old name");
        delete_hpa_named(ctx, so, &mut claim, old, generation).await?;
    }
    if plan.hpa == plan::HpaAction::Delete {
        delete_hpa(ctx, so, &mut claim, generation).await?;
    }
    let kind = plan
        .status
        .scale_target_kind
        .clone()
        .unwrap_or_else(|| plan::scale_target_kind(so));
    if let Some(step) = &plan.scale {
        info!(namespace = ns, name, from = step.from, to = step.to, reason = ?step.reason, "scaling the target");
        let result = scale(ctx, id, so, &mut claim, step.to, generation).await;
        if let Some(e) = step.event(&kind, so, result.is_ok()) {
            emit_planned(ctx, so, e);
        }
        result?;
    }
    if plan.hpa == plan::HpaAction::Ensure {
        let composite = so.spec.scaling_modifiers().and_then(|m| {
            let target = m
                .target
                .as_deref()
                .and_then(|t| t.trim().parse::<f64>().ok())
                .filter(|t| *t > 0.0)?;
            let quantity = ringscale_scalers::MetricValue {
                name: Arc::from(""),
                value: target,
            }
            .quantity();
            Some((
                ringscale_api::names::COMPOSITE_METRIC_NAME,
                m.metric_type.clone().unwrap_or(MetricType::AverageValue),
                quantity,
            ))
        });
        let desired = hpa::desired(so, hpa::metrics(so, &state.specs, composite), &pause);
        // An HPA the API server refuses (e.g. a behavior it does not accept) is the user's to
        // fix: say so in the status, as KEDA does, rather than only in the log.
        match ensure_hpa(
            ctx,
            so,
            &mut claim,
            desired,
            generation,
            &mut state.hpa_matched,
        )
        .await
        {
            Ok(()) => {}
            Err(CycleError::Api(what, kube::Error::Api(s)))
                if ringscale_coordinator::ApiErrorKind::of_status(&s).is_refusal() =>
            {
                warn!(namespace = ns, name, what, error = %s.message, "the API server refused the HPA");
                plan::set_condition(
                    &mut plan.status.conditions,
                    ConditionType::Ready,
                    ConditionStatus::False,
                    "ScaledObjectCheckFailed",
                    &format!(
                        "Failed to ensure HPA is correctly created for ScaledObject: {}",
                        s.message
                    ),
                    Timestamp::now(),
                );
            }
            Err(e) => return Err(e),
        }
    }
    let before = so.status.clone().unwrap_or_default();
    // A failure's first event only reports: it is spent from the budget, or dropped.
    let (reports, events): (Vec<_>, Vec<_>) = plan.events.into_iter().partition(|e| e.failed_read);
    for e in reports {
        if take_report(ctx) {
            emit_planned(ctx, so, e);
        } else {
            ctx.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    if plan.status == before {
        for e in events {
            emit_planned(ctx, so, e);
        }
        return Ok(());
    }
    // Reports: a status that only tells of failures (health and Fallback alone, or any change
    // while a read is failing) when nothing is scaled. Scaling writes, and what follows them,
    // never wait.
    let report = plan.scale.is_none() && (plan.failing || only_reports(&before, &plan.status));
    if report && !take_report(ctx) {
        // Planned again next poll, against the same status: written when budget is back.
        ctx.stats.reports_deferred.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    claim.fence(ctx, id, so, generation).await?;
    for e in events {
        // The events of a report (ScaledObjectFallbackActivated, ...) cost a write each too.
        if !report || take_report(ctx) {
            emit_planned(ctx, so, e);
        } else {
            ctx.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    let mut updated = claim.current(so).clone();
    updated.status = Some(plan.status);
    let written = put_status(ctx, id, &updated).await?;
    // Until the watch brings it, the next poll works on the object as written, not on the
    // cached one it replaced (which would plan the same write again, and be refused).
    if let Some(replaced) = so.metadata.resource_version.clone() {
        state.written = Some((replaced, Arc::new(written)));
    }
    if plan.health_written {
        state.health_written = Some(Timestamp::now());
    }
    debug!(namespace = %id.namespace, name = %id.name, kind = KIND_SCALED_OBJECT, "status written");
    Ok(())
}

pub(super) fn emit_planned(ctx: &Ctx, so: &ScaledObject, e: plan::PlannedEvent) {
    let type_ = if e.warning {
        EventType::Warning
    } else {
        EventType::Normal
    };
    emit(ctx, so, type_, e.reason, e.message);
}

/// Reads every external metric of every trigger at once, updating the scaler metrics, and
/// returns the readings — one step for ScaledObjects and ScaledJobs alike.
pub(super) async fn poll_metrics(
    ctx: &Ctx,
    id: &ObjectId,
    triggers: &[ringscale_api::ScaleTrigger],
    state: &PollState,
) -> Vec<plan::MetricPoll> {
    read_metrics(state, None)
        .await
        .into_iter()
        .map(|(poll, took)| {
            let trigger = triggers.get(poll.index);
            let labels = Metrics::scaler_labels(
                id,
                &poll.metric,
                trigger.map_or("", |t| t.type_.as_str()),
                poll.index,
            );
            // A trigger is logged when it starts failing and when it recovers, not on every
            // poll (the failure count before this poll tells which).
            let failing_before = state
                .health
                .get(&poll.metric)
                .is_some_and(|h| h.failures > 0);
            match &poll.outcome {
                Ok(r) => {
                    ctx.metrics.polled(id.kind, &labels, r.value, r.active, took);
                    if failing_before {
                        info!(namespace = %id.namespace, name = %id.name, metric = %poll.metric, "trigger recovered: its source answers again");
                    }
                }
                Err(e) => {
                    ctx.metrics.failed(id.kind, &labels, took);
                    if !failing_before {
                        warn!(namespace = %id.namespace, name = %id.name, metric = %poll.metric, error = %e, "trigger began failing: its source could not be read (logged again when it recovers)");
                    }
                }
            }
            poll
        })
        .collect()
}

/// Reads the external metrics of every trigger at once — all of them, or only the one named
/// `only` (any case) — with how long each read took.
pub(super) async fn read_metrics(
    state: &PollState,
    only: Option<&str>,
) -> Vec<(plan::MetricPoll, Duration)> {
    let reads = state.specs.iter().filter_map(|spec| {
        let MetricSpec::External(m) = spec else {
            return None;
        };
        if only.is_some_and(|q| !q.eq_ignore_ascii_case(&m.name)) {
            return None;
        }
        let (index, _) = ringscale_scalers::split_metric_name(&m.name)?;
        let scaler = state.scalers.iter().find(|s| s.index() == index)?;
        let span = tracing::info_span!("trigger", index, metric = %m.name);
        Some(
            async move {
                let started = ringscale_replication::now();
                let outcome = match scaler.poll(&m.name).await {
                    Ok(poll) => Ok(plan::Reading {
                        value: poll
                            .values
                            .iter()
                            .find(|v| *v.name == m.name)
                            .map_or(0.0, |v| v.value),
                        active: poll.active,
                    }),
                    Err(e) => Err(e.to_string()),
                };
                let poll = plan::MetricPoll {
                    index,
                    metric: m.name.clone(),
                    target: Some((m.metric_type.clone(), m.target())),
                    outcome,
                };
                (poll, started.elapsed())
            }
            .instrument(span),
        )
    });
    join_all(reads).await
}

/// Records a planned value (a failed read keeps the last good value, with the error and the
/// failure count) and replicates it.
pub(super) fn record_planned(
    records: &RecordStore,
    key: RecordKey,
    r: &plan::PlannedRecord,
    polled_at: std::time::Instant,
    interval: Duration,
    generation: u64,
) {
    let value = r
        .value
        .unwrap_or_else(|| records.get(&key).map_or(0.0, |old| old.value));
    records.record(
        key,
        ringscale_replication::Reading {
            value,
            active: r.active,
            error: r.error.as_deref(),
            failures: r.failures,
            generation,
        },
        polled_at,
        interval,
    );
}

pub(super) fn prepare_settings(ctx: &Ctx) -> prepare::Settings<'_> {
    prepare::Settings {
        cluster_object_namespace: &ctx.settings.cluster_object_namespace,
        ..prepare::Settings::default()
    }
}

/// Builds the scalers and their metric specs from prepared triggers, collecting every problem,
/// and listens to the push triggers among them.
pub(super) async fn build_scalers(
    ctx: &Ctx,
    id: ObjectId,
    prepared: Vec<prepare::PreparedTrigger>,
    state: &mut PollState,
) {
    state.push = PushListeners::default();
    state.scalers.clear();
    state.specs.clear();
    state.problems.clear();
    state.formula = None;
    for prepared in prepared {
        for p in &prepared.problems {
            state.problems.push(format!("{}: {}", p.path, p.message));
        }
        if !prepared.problems.is_empty() {
            continue;
        }
        match Scaler::build(&prepared.input, &ctx.sources) {
            Ok(scaler) => state.scalers.push(scaler),
            Err(errors) => state
                .problems
                .extend(errors.iter().map(ToString::to_string)),
        }
    }
    for scaler in &state.scalers {
        match scaler.metric_specs().await {
            Ok(specs) => state.specs.extend(specs),
            Err(e) => state.problems.push(e.to_string()),
        }
        if let Some(mut pushed) = scaler.push_activity() {
            // KEDA runs the scale step as soon as a push scaler reports; ringscale polls the
            // object at once, which reads the same activity and goes through the same step.
            let (inbox, id, index) = (ctx.inbox.clone(), id.clone(), scaler.index());
            state.push.0.push(tokio::spawn(async move {
                while let Some(update) = pushed.recv().await {
                    match update {
                        Ok(active) => {
                            debug!(object = %id, trigger = index, active, "push trigger reported");
                            inbox.pushed(id.clone());
                        }
                        Err(e) => {
                            debug!(object = %id, trigger = index, error = %e, "push stream interrupted");
                        }
                    }
                }
            }));
        }
    }
}

pub(super) async fn build(ctx: &Ctx, so: &ScaledObject, state: &mut PollState) {
    let prepared = prepare::scaled_object(so, &ctx.lookup, &prepare_settings(ctx));
    let id = ObjectId::scaled_object(so.namespace().unwrap_or_default(), so.name_any());
    build_scalers(ctx, id, prepared, state).await;
    if let Some(formula) = so
        .spec
        .scaling_modifiers()
        .and_then(|m| m.formula.as_deref())
    {
        match Formula::compile(formula) {
            Ok(f) => state.formula = Some(f),
            Err(e) => state
                .problems
                .push(format!("spec.advanced.scalingModifiers.formula: {e}")),
        }
    }
    // Health of metrics that no longer exist goes.
    let specs = &state.specs;
    state
        .health
        .retain(|m, _| specs.iter().any(|s| s.external_name() == Some(m.as_str())));
}

/// Why a scale target cannot be read. The kube error is printed in the message (these go into
/// the object's status as one line), so it is not also exposed as a source.
#[derive(Debug, thiserror::Error)]
pub(super) enum TargetError {
    /// No such Deployment or StatefulSet in the watches (the name).
    #[error("{0} not found")]
    NotFound(String),
    /// Discovery does not know the target's kind.
    #[error("the API server does not serve {api_version}/{kind}: {error}")]
    NotServed {
        api_version: String,
        kind: String,
        error: kube::Error,
    },
    /// Reading the target's `/scale` failed.
    #[error("reading its /scale: {0}")]
    Scale(kube::Error),
}

/// The target's replicas and ready replicas, and what kind it is: Deployments and
/// StatefulSets from the shared watches; any other kind with a `/scale` subresource (an Argo
/// Rollout, a custom resource) through discovery and one read of its `/scale` per poll.
pub(super) async fn read_target(
    ctx: &Ctx,
    so: &ScaledObject,
) -> Result<(i32, i32, GroupVersionKindResource), TargetError> {
    let t = &so.spec.scale_target_ref;
    let ns = so.namespace().unwrap_or_default();
    let gvkr = |resource: &str| {
        let (group, version) = split_api_version(t.effective_api_version());
        GroupVersionKindResource {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: t.effective_kind().to_owned(),
            resource: resource.to_owned(),
        }
    };
    let missing = || TargetError::NotFound(t.name.clone());
    match (t.effective_api_version(), t.effective_kind()) {
        ("apps/v1", kind @ ("Deployment" | "StatefulSet")) => {
            let (replicas, ready) = ctx
                .lookup
                .replicas_of(&ns, "apps/v1", kind, &t.name)
                .ok_or_else(missing)?;
            let resource = if kind == "Deployment" {
                "deployments"
            } else {
                "statefulsets"
            };
            Ok((replicas, ready, gvkr(resource)))
        }
        _ => {
            let resource = target_kind(ctx, so).await?;
            let scale = Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &ns, &resource)
                .get_scale(&t.name)
                .await
                .map_err(TargetError::Scale)?;
            Ok((
                scale.spec.and_then(|s| s.replicas).unwrap_or(0),
                scale.status.map_or(0, |s| s.replicas),
                gvkr(&resource.plural),
            ))
        }
    }
}

pub(super) fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

/// The API resource of a scale target kind, found by discovery once and then remembered.
pub(super) async fn target_kind(ctx: &Ctx, so: &ScaledObject) -> Result<ApiResource, TargetError> {
    let t = &so.spec.scale_target_ref;
    let id = (
        t.effective_api_version().to_owned(),
        t.effective_kind().to_owned(),
    );
    if let Some(found) = ctx
        .target_kinds
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&id)
    {
        return Ok(found.clone());
    }
    let (group, version) = split_api_version(&id.0);
    let gvk = GroupVersionKind::gvk(group, version, &id.1);
    let (resource, _) = kube::discovery::pinned_kind(&ctx.client, &gvk)
        .await
        .map_err(|e| TargetError::NotServed {
            api_version: id.0.clone(),
            kind: id.1.clone(),
            error: e,
        })?;
    ctx.target_kinds
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(id, resource.clone());
    Ok(resource)
}
