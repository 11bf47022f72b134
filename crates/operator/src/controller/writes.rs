//! The writes a cycle makes, each fenced by the ring generation: the scale subresource, the
//! ownership stamp and finalizer, the status, the HPA, events; and the budget of writes that
//! only report failures.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) async fn scale(
    ctx: &Ctx,
    id: &ObjectId,
    so: &ScaledObject,
    claim: &mut Claim<ScaledObject>,
    replicas: i32,
    generation: u64,
) -> Result<(), CycleError> {
    claim.fence(ctx, id, so, generation).await?;
    let t = &so.spec.scale_target_ref;
    let body = Patch::Merge(json!({"spec": {"replicas": replicas}}));
    let params = PatchParams::default();
    match t.effective_kind() {
        "Deployment" if t.effective_api_version() == "apps/v1" => {
            Api::<Deployment>::namespaced(ctx.client.clone(), &id.namespace)
                .patch_scale(&t.name, &params, &body)
                .await
                .map_err(api("scale the target"))?;
        }
        "StatefulSet" if t.effective_api_version() == "apps/v1" => {
            Api::<StatefulSet>::namespaced(ctx.client.clone(), &id.namespace)
                .patch_scale(&t.name, &params, &body)
                .await
                .map_err(api("scale the target"))?;
        }
        _ => {
            let resource = match target_kind(ctx, so).await {
                Ok(r) => r,
                Err(e) => {
                    warn!(namespace = %id.namespace, name = %id.name, error = %e, "cannot scale the target");
                    return Ok(());
                }
            };
            Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &id.namespace, &resource)
                .patch_scale(&t.name, &params, &body)
                .await
                .map_err(api("scale the target"))?;
        }
    }
    ctx.stats.scale_writes.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Adds the finalizer (and, on a ScaledObject, KEDA's name label) when either is missing — once
/// in an object's life, as KEDA does on its first reconcile. Since that write is made anyway, it
/// carries this replica's ownership stamp too; it never writes for the stamp alone (that is
/// [`Claim`]'s, before the first write a cycle has to make). A write refused with 409 is tried
/// once more on the object read again from the API server, never with the same stale
/// resourceVersion.
pub(super) async fn ensure_meta<K>(
    ctx: &Ctx,
    id: &ObjectId,
    obj: &K,
    generation: u64,
) -> Result<K, CycleError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let me = ctx.ownership.borrow().member.clone();
    let objects = Api::<K>::namespaced(ctx.client.clone(), &id.namespace);
    let mut current = std::borrow::Cow::Borrowed(obj);
    for attempt in 0..2 {
        let meta = current.meta();
        let has_finalizer = current.finalizers().iter().any(|f| f == FINALIZER);
        // KEDA labels each ScaledObject with its own name (`scaledobject.keda.sh/name`).
        let name_label = (id.kind == Kind::ScaledObject
            && current.labels().get(LABEL_SCALED_OBJECT_NAME) != Some(&id.name))
        .then(|| json!({ LABEL_SCALED_OBJECT_NAME: id.name }));
        if has_finalizer && name_label.is_none() {
            return Ok(current.into_owned());
        }
        if fence_of(meta) > generation {
            return Err(CycleError::Fenced("a newer owner stamped the object"));
        }
        if !owns_at(ctx, id, generation) {
            return Err(CycleError::Fenced("ownership changed"));
        }
        let mut finalizers = current.finalizers().to_vec();
        if !has_finalizer {
            finalizers.push(FINALIZER.to_owned());
        }
        let mut patch = json!({
            "metadata": {
                "resourceVersion": current.resource_version(),
                "finalizers": finalizers,
            }
        });
        if !is_stamped(meta, &me, generation) {
            patch["metadata"]["annotations"] = stamp(&me, generation);
        }
        if let Some(labels) = name_label {
            patch["metadata"]["labels"] = labels;
        }
        match objects
            .patch(&id.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(updated) => {
                ctx.stats.meta_writes.fetch_add(1, Ordering::Relaxed);
                return Ok(updated);
            }
            Err(e) if is_conflict(&e) && attempt == 0 => {
                let read = objects
                    .get(&id.name)
                    .await
                    .map_err(api("read the object again after a conflict"))?;
                current = std::borrow::Cow::Owned(read);
            }
            Err(e) => return Err(api("add the finalizer")(e)),
        }
    }
    Err(CycleError::Conflict("add the finalizer"))
}

/// Whether `meta` carries `me`'s ownership stamp at `generation` or earlier (a stamp this
/// replica left at an earlier generation still holds while it stays the owner: a ring change
/// costs the objects that did not move no write).
fn is_stamped(meta: &ObjectMeta, me: &str, generation: u64) -> bool {
    owner_of(meta) == Some(me) && fence_of(meta) <= generation
}

fn stamp(me: &str, generation: u64) -> serde_json::Value {
    json!({ FENCE_ANNOTATION: generation.to_string(), OWNER_ANNOTATION: me })
}

/// The fence in front of every write a cycle makes for one object.
///
/// A takeover costs no write before the first poll: the new owner polls at once and writes its
/// ownership stamp (`ringscale.io/owner` and `ringscale.io/owner-generation`) only right before
/// the first write the cycle has to make anyway — a scale, an HPA, a status, a Job. An object
/// whose polls change nothing is never stamped, so a failover costs the objects of the dead
/// replica nothing but their polls.
///
/// Each write still requires that this replica owns the object at the cycle's ring generation
/// (published by compare-and-swap: one owner per generation) and that its Lease is valid. The
/// stamp is a compare-and-swap on the object's resourceVersion; once it is on the object, a
/// replica that lost the object but has not seen the new ring yet stops at the first cycle that
/// reads it (a higher generation than its own), and its status writes at the version it read
/// are refused.
pub(super) struct Claim<K> {
    /// Whether this replica's stamp is on the object (at this generation or an earlier one).
    stamped: bool,
    /// The object as this cycle's stamp left it (the status is written on its resourceVersion).
    updated: Option<K>,
}

impl<K> Claim<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    pub(super) fn new(ctx: &Ctx, obj: &K, generation: u64) -> Self {
        let me = ctx.ownership.borrow().member.clone();
        Claim {
            stamped: is_stamped(obj.meta(), &me, generation),
            updated: None,
        }
    }

    /// The object to write on: `obj` (the one the cycle planned from), or the same object as
    /// this cycle's stamp left it.
    pub(super) fn current<'a>(&'a self, obj: &'a K) -> &'a K {
        self.updated.as_ref().unwrap_or(obj)
    }

    /// Lets one write through: this replica owns the object at `generation` and its Lease is
    /// valid, no newer owner stamped it, and this replica's stamp is on it (written now, at
    /// `obj`'s resourceVersion, when missing). A stamp refused with 409 fails the cycle with a
    /// conflict: the object changed since the cycle planned from it, so the next poll reads it
    /// again and plans anew rather than writing what it planned from a stale object.
    pub(super) async fn fence(
        &mut self,
        ctx: &Ctx,
        id: &ObjectId,
        obj: &K,
        generation: u64,
    ) -> Result<(), CycleError> {
        if !owns_at(ctx, id, generation) {
            return Err(CycleError::Fenced("ownership changed"));
        }
        if self.stamped {
            return Ok(());
        }
        let current = self.current(obj);
        if fence_of(current.meta()) > generation {
            return Err(CycleError::Fenced("a newer owner stamped the object"));
        }
        let me = ctx.ownership.borrow().member.clone();
        let patch = json!({
            "metadata": {
                "resourceVersion": current.resource_version(),
                "annotations": stamp(&me, generation),
            }
        });
        let updated = Api::<K>::namespaced(ctx.client.clone(), &id.namespace)
            .patch(&id.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(api("stamp ownership"))?;
        ctx.stats.stamps.fetch_add(1, Ordering::Relaxed);
        self.updated = Some(updated);
        self.stamped = true;
        Ok(())
    }
}

/// Removes our finalizer (at the object's resourceVersion, as this cycle's stamp left it).
pub(super) async fn remove_finalizer<K>(
    ctx: &Ctx,
    id: &ObjectId,
    obj: &K,
    claim: &mut Claim<K>,
    generation: u64,
) -> Result<(), CycleError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    claim.fence(ctx, id, obj, generation).await?;
    let obj = claim.current(obj);
    let finalizers: Vec<&String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .collect();
    let patch =
        json!({"metadata": {"resourceVersion": obj.resource_version(), "finalizers": finalizers}});
    Api::<K>::namespaced(ctx.client.clone(), &id.namespace)
        .patch(&id.name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(api("remove the finalizer"))?;
    ctx.stats.meta_writes.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Replaces the status subresource with `obj`'s status, at `obj`'s resourceVersion; the object
/// as the API server has it now.
pub(super) async fn put_status<K>(ctx: &Ctx, id: &ObjectId, obj: &K) -> Result<K, CycleError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let written = Api::<K>::namespaced(ctx.client.clone(), &id.namespace)
        .replace_status(&id.name, &PostParams::default(), obj)
        .await
        .map_err(api("write the status"))?;
    ctx.stats.status_writes.fetch_add(1, Ordering::Relaxed);
    Ok(written)
}

pub(super) async fn finalize(
    ctx: &Ctx,
    id: &ObjectId,
    so: &ScaledObject,
    generation: u64,
) -> Result<(), CycleError> {
    if !so.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let mut claim = Claim::new(ctx, so, generation);
    delete_hpa(ctx, so, &mut claim, generation).await?;
    if so.spec.restore_to_original_replica_count()
        && let Some(original) = so.status.as_ref().and_then(|s| s.original_replica_count)
        && read_target(ctx, so)
            .await
            .is_ok_and(|(current, _, _)| current != original)
    {
        info!(namespace = %id.namespace, name = %id.name, replicas = original, "restoring the original replica count");
        scale(ctx, id, so, &mut claim, original, generation).await?;
    }
    remove_finalizer(ctx, id, so, &mut claim, generation).await?;
    ctx.records.remove_object(id);
    Ok(())
}

pub(super) async fn delete_hpa(
    ctx: &Ctx,
    so: &ScaledObject,
    claim: &mut Claim<ScaledObject>,
    generation: u64,
) -> Result<(), CycleError> {
    delete_hpa_named(ctx, so, claim, &so.hpa_name(), generation).await
}

/// Deletes the object's HPA of this name, when the watch shows one.
pub(super) async fn delete_hpa_named(
    ctx: &Ctx,
    so: &ScaledObject,
    claim: &mut Claim<ScaledObject>,
    name: &str,
    generation: u64,
) -> Result<(), CycleError> {
    let ns = so.namespace().unwrap_or_default();
    if ctx.hpas.get(&ObjectRef::new(name).within(&ns)).is_none() {
        return Ok(());
    }
    let id = ObjectId::scaled_object(ns.as_str(), so.name_any());
    claim.fence(ctx, &id, so, generation).await?;
    match Api::<HorizontalPodAutoscaler>::namespaced(ctx.client.clone(), &ns)
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => {
            ctx.stats.hpa_writes.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(CycleError::Api("delete the HPA", e)),
    }
}

pub(super) async fn ensure_hpa(
    ctx: &Ctx,
    so: &ScaledObject,
    claim: &mut Claim<ScaledObject>,
    desired: HorizontalPodAutoscaler,
    generation: u64,
    matched: &mut Option<(String, u64)>,
) -> Result<(), CycleError> {
    let ns = so.namespace().unwrap_or_default();
    let name = so.hpa_name();
    let existing = ctx.hpas.get(&ObjectRef::new(&name).within(&ns));
    if let (Some(e), Some(hash)) = (existing.as_ref(), json_hash(&desired)) {
        let version = e.metadata.resource_version.as_deref().unwrap_or_default();
        if !version.is_empty()
            && matched
                .as_ref()
                .is_some_and(|(v, h)| v == version && *h == hash)
        {
            return Ok(());
        }
        if hpa::matches(e, &desired) {
            *matched = Some((version.to_owned(), hash));
            return Ok(());
        }
    }
    *matched = None;
    let id = ObjectId::scaled_object(ns.as_str(), so.name_any());
    claim.fence(ctx, &id, so, generation).await?;
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(ctx.client.clone(), &ns);
    match existing {
        None => match hpas.create(&PostParams::default(), &desired).await {
            Ok(_) => {}
            // Created meanwhile (the watch is behind): the next poll compares again.
            Err(e) if is_conflict(&e) => return Ok(()),
            Err(e) => return Err(CycleError::Api("create the HPA", e)),
        },
        Some(existing) => {
            let mut replacement = desired;
            replacement.metadata.resource_version = existing.metadata.resource_version.clone();
            hpas.replace(&name, &PostParams::default(), &replacement)
                .await
                .map_err(api("update the HPA"))?;
        }
    }
    ctx.stats.hpa_writes.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Publishes an event without holding up the cycle; failures are logged.
pub(super) fn emit<K: Resource<DynamicType = ()>>(
    ctx: &Ctx,
    obj: &K,
    type_: EventType,
    reason: &str,
    note: String,
) {
    ctx.events
        .emit(obj.object_ref(&()), type_, reason, "Scaling", &note);
}

/// A token bucket.
#[derive(Debug)]
pub(super) struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub(super) fn new(rate: f64) -> Self {
        let rate = if rate.is_finite() { rate.max(0.0) } else { 0.0 };
        let burst = (rate * 5.0).max(1.0);
        Bucket {
            rate,
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    /// Takes a token if one is there.
    pub(super) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub(super) fn take_report(ctx: &Ctx) -> bool {
    ctx.reports
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take(Instant::now())
}

/// Whether `after` differs from `before` only in what reports failures: `health` and the
/// Fallback condition.
pub(super) fn only_reports(before: &ScaledObjectStatus, after: &ScaledObjectStatus) -> bool {
    let strip = |s: &ScaledObjectStatus| {
        let mut s = s.clone();
        s.health = None;
        if let Some(cs) = s.conditions.as_mut() {
            cs.retain(|c| c.type_ != ConditionType::Fallback);
        }
        s
    };
    strip(before) == strip(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_budget_refills_at_its_rate_up_to_five_seconds_worth() {
        let mut b = Bucket::new(2.0);
        let t = b.at;
        // Starts full: 10 at once, then none.
        assert_eq!((0..20).filter(|_| b.take(t)).count(), 10);
        // 1.5 s later: 3 more.
        let later = t + Duration::from_millis(1500);
        assert_eq!((0..20).filter(|_| b.take(later)).count(), 3);
        // A long pause refills only to the burst.
        let much_later = later + Duration::from_secs(3600);
        assert_eq!((0..50).filter(|_| b.take(much_later)).count(), 10);
        // A nonsense rate allows one write, then nothing.
        let mut nan = Bucket::new(f64::NAN);
        assert!(nan.take(t));
        assert!(!nan.take(t + Duration::from_secs(60)));
    }

    #[test]
    fn only_health_and_the_fallback_condition_are_mere_reports() {
        use ringscale_api::Condition;
        let cond = |type_, status| Condition {
            type_,
            status,
            reason: None,
            message: None,
            last_transition_time: None,
        };
        let before = ScaledObjectStatus {
            conditions: Some(vec![
                cond(ConditionType::Active, ConditionStatus::True),
                cond(ConditionType::Fallback, ConditionStatus::False),
            ]),
            ..ScaledObjectStatus::default()
        };
        let mut after = before.clone();
        after.health = Some(BTreeMap::new());
        if let Some(cs) = after.conditions.as_mut() {
            cs[1].status = ConditionStatus::True;
        }
        assert!(only_reports(&before, &after));
        if let Some(cs) = after.conditions.as_mut() {
            cs[0].status = ConditionStatus::False;
        }
        assert!(
            !only_reports(&before, &after),
            "activity is never held back"
        );
    }
}
