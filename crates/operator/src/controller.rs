//! The controller of one replica: it watches every ScaledObject and ScaledJob, keeps one poll
//! schedule of the ones this replica owns, and on each poll reads the triggers and records the
//! values (replicated to every peer). For a ScaledObject it scales 0 ↔ 1 through `/scale` and
//! keeps the HPA as it should be; for a ScaledJob it creates Jobs ([`scaled_job`]). Either way it
//! writes the status only when something changed.
//!
//! Every write is guarded twice: by the object's resourceVersion (optimistic concurrency), and by
//! the ring generation. An owner stamps its generation on the object once
//! (`ringscale.io/owner-generation`) and never writes to an object stamped with a higher one, so
//! a replica that lost ownership cannot overwrite the new owner even if it has not yet seen the
//! new ring.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::join_all;
use jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use ringscale_api::common::GroupVersionKindResource;
use ringscale_api::names::{
    FINALIZER, KIND_SCALED_OBJECT, LABEL_SCALED_JOB_NAME, LABEL_SCALED_OBJECT_NAME,
};
use ringscale_api::{
    ConditionStatus, ConditionType, MetricType, ScaledJob, ScaledObject, ScaledObjectStatus,
};
use ringscale_cache::RecordKey;
use ringscale_coordinator::Ownership;
use ringscale_replication::Store as RecordStore;
use ringscale_ring::{Kind, ObjectKey};
use ringscale_scalers::{MetricSpec, Scaler, Sources, prepare};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::{Mutex, Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{Instrument as _, debug, info, warn};

use crate::hpa::{self, HpaView};
use crate::lookup::{ClusterLookup, reflect_with};
use crate::metrics::Metrics;
use crate::schedule::Schedule;
use crate::semantics::fallback::Health;
use crate::semantics::modifiers::Formula;
pub(crate) use crate::semantics::plan::set_condition;
use crate::semantics::{pause, plan};

mod live;
mod scaled_job;

/// The annotation with the ring generation of the replica that owns the object.
pub const FENCE_ANNOTATION: &str = "ringscale.io/owner-generation";

/// How often a ScaledJob's `lastActiveTime` is refreshed while it stays active (ScaledObjects
/// write it only on their active/inactive transitions).
pub const LAST_ACTIVE_REFRESH: Duration = Duration::from_secs(60);

/// Operator settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespace ClusterTriggerAuthentications read Secrets from.
    pub cluster_object_namespace: String,
    /// First polls after start are spread over this window.
    pub first_poll_window: Duration,
    /// Poll cycles running at once.
    pub max_concurrent_cycles: usize,
    /// Due polls are started on a grid of this step, every poll due within one step at once:
    /// one wake-up of the loop (and of the source connections, which pipeline the reads) per
    /// step instead of one per poll. A poll starts at most this late (`Duration::ZERO`: each
    /// poll exactly when due).
    pub poll_grain: Duration,
    /// KEDA's write pattern, for comparison in load tests only: the status (lastActiveTime)
    /// is written on every active poll instead of once a minute.
    pub keda_write_pattern: bool,
    /// Writes that only report (a status change of `health` and the Fallback condition alone,
    /// or any status change of a poll whose reads failed and that scales nothing;
    /// `KEDAScalerFailed` events) are spent from a bucket of this many per second (and five
    /// seconds' worth at once); past it they wait for a later poll (status) or are dropped
    /// (events). A poll that scales writes its status at once. When one shared source
    /// fails behind thousands of objects, this is what keeps the API server's load flat;
    /// fallback itself needs no write (the failure counts are replicated).
    pub report_writes_per_second: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cluster_object_namespace: "keda".into(),
            first_poll_window: Duration::from_secs(10),
            max_concurrent_cycles: 256,
            poll_grain: Duration::from_millis(20),
            keda_write_pattern: false,
            report_writes_per_second: 10.0,
        }
    }
}

/// Counters of what the controller did (for `/metrics` and the API-load benchmark).
#[derive(Debug, Default)]
pub struct Stats {
    /// Poll cycles run.
    pub cycles: AtomicU64,
    /// Planned polls skipped because the previous cycle of that object was still running.
    pub skipped: AtomicU64,
    /// Status writes.
    pub status_writes: AtomicU64,
    /// `/scale` writes.
    pub scale_writes: AtomicU64,
    /// HPA creates, replaces and deletes.
    pub hpa_writes: AtomicU64,
    /// Metadata writes (finalizer, owner generation).
    pub meta_writes: AtomicU64,
    /// Events published (only on transitions).
    pub events: AtomicU64,
    /// Events dropped because the publishing queue was full or the report budget was spent.
    pub events_dropped: AtomicU64,
    /// Status writes that only reported (health, Fallback) put off for lack of budget.
    pub reports_deferred: AtomicU64,
    /// Jobs created for ScaledJobs.
    pub jobs_created: AtomicU64,
    /// Jobs deleted (history limits, rollouts).
    pub jobs_deleted: AtomicU64,
    /// Writes refused because the object changed (409) or a newer owner stamped it.
    pub fenced: AtomicU64,
    /// Sum of poll-schedule lag in microseconds, and the number of samples.
    pub lag_us_sum: AtomicU64,
    /// See `lag_us_sum`.
    pub lag_samples: AtomicU64,
    /// The largest lag seen, in microseconds.
    pub lag_us_max: AtomicU64,
}

impl Stats {
    /// Total API writes.
    pub fn writes(&self) -> u64 {
        self.status_writes.load(Ordering::Relaxed)
            + self.scale_writes.load(Ordering::Relaxed)
            + self.hpa_writes.load(Ordering::Relaxed)
            + self.meta_writes.load(Ordering::Relaxed)
            + self.events.load(Ordering::Relaxed)
            + self.jobs_created.load(Ordering::Relaxed)
            + self.jobs_deleted.load(Ordering::Relaxed)
    }

    fn lag(&self, lag: Duration) {
        let us = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        self.lag_us_sum.fetch_add(us, Ordering::Relaxed);
        self.lag_samples.fetch_add(1, Ordering::Relaxed);
        self.lag_us_max.fetch_max(us, Ordering::Relaxed);
    }
}

/// Namespace and name.
type Key = (String, String);
/// What the schedule holds: the kind and the object.
type Slot = (Kind, Key);

struct Ctx {
    client: Client,
    sos: Store<ScaledObject>,
    sjs: Store<ScaledJob>,
    /// Jobs created for ScaledJobs (labelled with the ScaledJob's name).
    jobs: Store<Job>,
    /// Their Pods (the label is on the Jobs' pod templates), for pending-Job detection.
    pods: Store<Pod>,
    hpas: Store<HpaView>,
    lookup: ClusterLookup,
    records: Arc<RecordStore>,
    sources: Sources,
    settings: Settings,
    ownership: watch::Receiver<Ownership>,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    events: crate::events::Events,
    /// The loop's inbox (push triggers ask for a poll through it).
    inbox: mpsc::UnboundedSender<Msg>,
    /// Scale target kinds resolved by discovery, by (apiVersion, kind).
    target_kinds: std::sync::Mutex<HashMap<(String, String), ApiResource>>,
    /// The budget of writes that only report (see [`Settings::report_writes_per_second`]).
    reports: std::sync::Mutex<Bucket>,
}

/// A token bucket.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64) -> Self {
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
    fn take(&mut self, now: Instant) -> bool {
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

/// What a cycle keeps between polls of one object.
#[derive(Default)]
struct Runtime {
    fingerprint: Option<Fingerprint>,
    scalers: Vec<Scaler>,
    specs: Vec<MetricSpec>,
    problems: Vec<String>,
    formula: Option<Formula>,
    health: BTreeMap<String, Health>,
    /// ScaledJob: Jobs created but not yet seen in the watch, and when.
    expected_jobs: Vec<(String, Instant)>,
    /// Listeners of `external-push` triggers.
    push: PushListeners,
    /// When this replica last saw the object active (the status keeps it to the minute).
    last_active: Option<Timestamp>,
    /// When this replica last wrote `status.health` (refreshed at most once a minute unless a
    /// threshold is crossed).
    health_written: Option<Timestamp>,
    /// The HPA's resourceVersion and a hash of the desired HPA when the two last matched: while
    /// neither changes, a poll skips the comparison (decoding both specs took a third of a
    /// cycle's CPU).
    hpa_matched: Option<(String, u64)>,
}

/// Tasks listening to `external-push` streams; they stop with the runtime (a rebuild, or the
/// object no longer owned).
#[derive(Default)]
struct PushListeners(Vec<tokio::task::JoinHandle<()>>);

impl Drop for PushListeners {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

struct Obj {
    runtime: Arc<Mutex<Runtime>>,
    /// A cycle is queued or running.
    in_flight: bool,
    /// A cycle is queued (waiting for a permit); cleared when it starts.
    queued: bool,
    /// The object as the loop last saw it; a different one means poll now.
    seen: Fingerprint,
    interval: Duration,
    /// The object changed while a cycle ran: poll again as soon as it ends.
    again: bool,
}

enum Msg {
    Changed(Slot),
    Resync,
    /// A push trigger reported a change of activity: poll now.
    Pushed(Slot),
    /// A live query wants an owned object's runtime, polling interval, the object and its
    /// target's replicas (current, ready; for fallback values).
    Runtime(Slot, oneshot::Sender<Option<live::Owned>>),
}

/// A running controller.
pub struct Controller {
    /// Its counters.
    pub stats: Arc<Stats>,
    /// Its Prometheus metrics (register them with [`Metrics::register`]).
    pub metrics: Arc<Metrics>,
    inbox: mpsc::UnboundedSender<Msg>,
    ownership: watch::Receiver<Ownership>,
    records: Arc<RecordStore>,
    scaled_objects: Store<ScaledObject>,
    cluster: ClusterLookup,
    hpas: Store<HpaView>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// Starts the controller; it runs until `shutdown` resolves.
    pub fn start(
        client: Client,
        ownership: watch::Receiver<Ownership>,
        records: Arc<RecordStore>,
        sources: Sources,
        settings: Settings,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Controller {
        let stats = Arc::new(Stats::default());
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = mpsc::unbounded_channel::<Msg>();
        let sos = watch_objects::<ScaledObject>(&client, Kind::ScaledObject, tx.clone());
        let lookup = ClusterLookup::start(&client);
        let hpas = crate::lookup::reflect_modified(
            Api::<HpaView>::all(client.clone()),
            watcher::Config::default(),
            HpaView::slim,
        );
        let (scaled_objects, cluster, autoscalers) =
            (sos.0.clone(), lookup.0.clone(), hpas.0.clone());
        let parts = Parts {
            sos,
            hpas,
            lookup,
            client,
            ownership: ownership.clone(),
            records: Arc::clone(&records),
            sources,
            settings,
            stats: Arc::clone(&stats),
            metrics: Arc::clone(&metrics),
        };
        let task = tokio::spawn(run(parts, (tx.clone(), rx), shutdown));
        Controller {
            stats,
            metrics,
            inbox: tx,
            ownership,
            records,
            scaled_objects,
            cluster,
            hpas: autoscalers,
            task: Some(task),
        }
    }

    /// Every ScaledObject, from the controller's watch (for the metrics API).
    pub fn scaled_objects(&self) -> &Store<ScaledObject> {
        &self.scaled_objects
    }

    /// Every HPA, from the controller's watch (the metrics API reads the targets for fallback).
    pub fn hpas(&self) -> &Store<HpaView> {
        &self.hpas
    }

    /// The controller's watches of the objects triggers and targets refer to.
    pub fn cluster(&self) -> &ClusterLookup {
        &self.cluster
    }

    /// What answers metrics queries forwarded to this replica as the owner: it reads the
    /// sources of an owned ScaledObject now (and records the values, so peers get them too).
    pub fn live_query(&self) -> Arc<dyn ringscale_replication::LiveQuery> {
        Arc::new(live::Live {
            inbox: self.inbox.clone(),
            ownership: self.ownership.clone(),
            records: Arc::clone(&self.records),
        })
    }

    /// Waits for the controller to stop.
    pub async fn join(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Stops it at once (tests: a killed replica).
    pub fn abort(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.abort();
    }
}

/// What the loop is started with.
struct Parts {
    client: Client,
    ownership: watch::Receiver<Ownership>,
    records: Arc<RecordStore>,
    sources: Sources,
    settings: Settings,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    sos: (Store<ScaledObject>, tokio::task::JoinHandle<()>),
    hpas: (Store<HpaView>, tokio::task::JoinHandle<()>),
    lookup: (ClusterLookup, Vec<tokio::task::JoinHandle<()>>),
}

async fn run(
    parts: Parts,
    (tx, mut rx): (mpsc::UnboundedSender<Msg>, mpsc::UnboundedReceiver<Msg>),
    shutdown: impl Future<Output = ()> + Send,
) {
    let Parts {
        client,
        mut ownership,
        records,
        sources,
        settings,
        stats,
        metrics,
        sos: (sos, so_watch),
        hpas: (hpas, hpa_watch),
        lookup: (lookup, lookup_watches),
    } = parts;
    let (sjs, sj_watch) = watch_objects::<ScaledJob>(&client, Kind::ScaledJob, tx.clone());
    let labelled = watcher::Config::default().labels(LABEL_SCALED_JOB_NAME);
    let (jobs, job_watch) = reflect_with(Api::<Job>::all(client.clone()), labelled.clone());
    let (pods, pod_watch) = reflect_with(Api::<Pod>::all(client.clone()), labelled);
    let _ = sos.wait_until_ready().await;
    let _ = sjs.wait_until_ready().await;
    let _ = jobs.wait_until_ready().await;
    let _ = pods.wait_until_ready().await;
    let _ = hpas.wait_until_ready().await;
    lookup.ready().await;
    info!("operator caches synced");

    let instance = ownership.borrow().member.to_string();
    let settings_report_rate = settings.report_writes_per_second;
    let (events, events_task) = crate::events::Events::start(
        client.clone(),
        "ringscale-operator",
        &instance,
        Arc::clone(&stats),
    );
    let ctx = Arc::new(Ctx {
        events,
        client,
        sos,
        sjs,
        jobs,
        pods,
        hpas,
        lookup,
        records,
        sources,
        settings,
        ownership: ownership.clone(),
        stats,
        metrics,
        inbox: tx.clone(),
        target_kinds: std::sync::Mutex::default(),
        reports: std::sync::Mutex::new(Bucket::new(settings_report_rate)),
    });
    let limit = Arc::new(Semaphore::new(ctx.settings.max_concurrent_cycles.max(1)));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Slot>();
    let mut objects: HashMap<Slot, Obj> = HashMap::new();
    let mut schedule: Schedule<Slot> = Schedule::new();
    let mut ready: std::collections::VecDeque<Slot> = std::collections::VecDeque::new();
    let mut initial = true;
    let mut shutdown = std::pin::pin!(shutdown);
    let grid = Grid::new(ctx.settings.poll_grain, Instant::now());

    loop {
        let next_due = schedule.next_due().map(|due| grid.at_or_after(due));
        tokio::select! {
            () = &mut shutdown => break,
            Some(msg) = rx.recv() => match msg {
                Msg::Changed(slot) => reconcile(&ctx, &mut objects, &mut schedule, slot, initial),
                Msg::Resync => {
                    for slot in all_slots(&ctx, &objects) {
                        reconcile(&ctx, &mut objects, &mut schedule, slot, initial);
                    }
                    initial = false;
                }
                Msg::Runtime(slot, reply) => {
                    let so = ctx.sos.get(&ObjectRef::new(&slot.1.1).within(&slot.1.0));
                    let owned = objects.get(&slot).zip(so).map(|(o, so)| {
                        let t = &so.spec.scale_target_ref;
                        let replicas = ctx
                            .lookup
                            .replicas_of(
                                &slot.1.0,
                                t.effective_api_version(),
                                t.effective_kind(),
                                &t.name,
                            )
                            .unwrap_or((0, 0));
                        live::Owned {
                            runtime: Arc::clone(&o.runtime),
                            interval: o.interval,
                            so,
                            replicas,
                        }
                    });
                    let _ = reply.send(owned);
                }
                Msg::Pushed(slot) => {
                    if let Some(obj) = objects.get_mut(&slot) {
                        if obj.in_flight {
                            obj.again = true;
                        } else {
                            schedule.poll_now(&slot, obj.interval, Instant::now());
                        }
                    }
                }
            },
            changed = ownership.changed() => {
                if changed.is_err() {
                    break;
                }
                ownership.borrow_and_update();
                for slot in all_slots(&ctx, &objects) {
                    reconcile(&ctx, &mut objects, &mut schedule, slot, initial);
                }
            }
            Some(slot) = done_rx.recv() => {
                if let Some(obj) = objects.get_mut(&slot) {
                    obj.in_flight = false;
                    if std::mem::take(&mut obj.again) {
                        schedule.poll_now(&slot, obj.interval, Instant::now());
                    }
                }
            }
            () = sleep_until(next_due) => {
                let now = Instant::now();
                while let Some((slot, planned)) = schedule.pop_due(now) {
                    let lag = now.saturating_duration_since(planned);
                    ctx.stats.lag(lag);
                    ctx.metrics.loop_latency(slot.0, &slot.1.0, &slot.1.1, lag);
                    let Some(obj) = objects.get_mut(&slot) else { continue };
                    if obj.in_flight {
                        ctx.stats.skipped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    obj.in_flight = true;
                    obj.queued = true;
                    ready.push_back(slot);
                }
            }
        }
        // Start what is due, as far as permits allow: a cycle's task exists only while it runs,
        // so 10,000 objects due at once are 10,000 queue entries, not 10,000 parked futures.
        while !ready.is_empty() {
            let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                break;
            };
            let Some(slot) = ready.pop_front() else { break };
            // Gone, or re-created since it was queued (its new entry is the live one).
            let Some(obj) = objects.get_mut(&slot).filter(|o| o.queued) else {
                continue;
            };
            obj.queued = false;
            let (ctx, runtime, done) =
                (Arc::clone(&ctx), Arc::clone(&obj.runtime), done_tx.clone());
            // Every log line of a cycle names the object.
            let span = tracing::info_span!(
                "poll",
                kind = ?slot.0,
                namespace = %slot.1.0,
                name = %slot.1.1
            );
            tokio::spawn(
                async move {
                    cycle(&ctx, &slot, &runtime).await;
                    // The permit goes back before the loop hears of the end, so the loop
                    // can start the next queued cycle when it does.
                    drop(permit);
                    let _ = done.send(slot);
                }
                .instrument(span),
            );
        }
    }
    for w in [
        so_watch,
        sj_watch,
        job_watch,
        pod_watch,
        hpa_watch,
        events_task,
    ] {
        w.abort();
    }
    for w in lookup_watches {
        w.abort();
    }
}

/// A hash of a value's JSON, streamed into the hasher (a poll allocates no text for it).
fn json_hash(value: &impl serde::Serialize) -> Option<u64> {
    struct Hashing(std::collections::hash_map::DefaultHasher);
    impl std::io::Write for Hashing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            std::hash::Hasher::write(&mut self.0, buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hashing = Hashing(std::collections::hash_map::DefaultHasher::new());
    serde_json::to_writer(&mut hashing, value).ok()?;
    Some(std::hash::Hasher::finish(&hashing.0))
}

/// Instants on a grid of one step from an origin: the loop wakes only on these.
struct Grid {
    step: Duration,
    origin: Instant,
}

impl Grid {
    fn new(step: Duration, origin: Instant) -> Self {
        Grid { step, origin }
    }

    /// The first grid instant at or after `t` (`t` itself without a step, or before the origin).
    fn at_or_after(&self, t: Instant) -> Instant {
        let step = self.step.as_nanos();
        let since = t.saturating_duration_since(self.origin).as_nanos();
        if step == 0 || since == 0 {
            return t;
        }
        let steps = since.div_ceil(step);
        let offset = steps.saturating_mul(step);
        // Offsets past u64 nanoseconds (585 years) are not a schedule worth rounding.
        match u64::try_from(offset) {
            Ok(nanos) => self.origin + Duration::from_nanos(nanos),
            Err(_) => t,
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Watches every object of kind `K`, keeping a store and telling the loop what changed.
fn watch_objects<K>(
    client: &Client,
    kind: Kind,
    tx: mpsc::UnboundedSender<Msg>,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let stream = watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(crate::lookup::slim)
        .reflect(writer);
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let msg = match event {
                Ok(
                    watcher::Event::Apply(o)
                    | watcher::Event::Delete(o)
                    | watcher::Event::InitApply(o),
                ) => Msg::Changed((kind, (o.namespace().unwrap_or_default(), o.name_any()))),
                Ok(watcher::Event::InitDone) => Msg::Resync,
                Ok(watcher::Event::Init) => continue,
                Err(e) => {
                    debug!(kind = %K::kind(&()), error = %e, "watch interrupted");
                    continue;
                }
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
    });
    (store, task)
}

fn all_slots(ctx: &Ctx, objects: &HashMap<Slot, Obj>) -> Vec<Slot> {
    let name = |o: &dyn ResourceName| (o.ns(), o.name());
    let mut slots: Vec<Slot> = ctx
        .sos
        .state()
        .iter()
        .map(|o| (Kind::ScaledObject, name(o.as_ref())))
        .chain(
            ctx.sjs
                .state()
                .iter()
                .map(|o| (Kind::ScaledJob, name(o.as_ref()))),
        )
        .collect();
    slots.extend(objects.keys().cloned());
    slots.sort();
    slots.dedup();
    slots
}

/// Namespace and name of an object, whatever its kind.
trait ResourceName {
    fn ns(&self) -> String;
    fn name(&self) -> String;
}

impl<K: ResourceExt> ResourceName for K {
    fn ns(&self) -> String {
        self.namespace().unwrap_or_default()
    }
    fn name(&self) -> String {
        self.name_any()
    }
}

fn object_key(kind: Kind, key: &Key) -> ObjectKey {
    ObjectKey::new(kind, &key.0, &key.1)
}

/// What a cycle's triggers were built from: the spec (its `metadata.generation`, which the API
/// server bumps on every spec change), the annotations other than the ownership stamp, and
/// whether the object is being deleted. Compared on every poll, so kept cheap (no serializing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Fingerprint {
    generation: Option<i64>,
    annotations: Vec<(String, String)>,
    deleting: bool,
}

fn fingerprint(meta: &ObjectMeta) -> Fingerprint {
    Fingerprint {
        generation: meta.generation,
        annotations: meta
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| k.as_str() != FENCE_ANNOTATION)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        deleting: meta.deletion_timestamp.is_some(),
    }
}

fn reconcile(
    ctx: &Ctx,
    objects: &mut HashMap<Slot, Obj>,
    schedule: &mut Schedule<Slot>,
    slot: Slot,
    initial: bool,
) {
    let (kind, key) = (slot.0, &slot.1);
    let found = match kind {
        Kind::ScaledObject => ctx
            .sos
            .get(&ObjectRef::new(&key.1).within(&key.0))
            .map(|o| (o.spec.polling_interval(), fingerprint(&o.metadata))),
        Kind::ScaledJob => ctx
            .sjs
            .get(&ObjectRef::new(&key.1).within(&key.0))
            .map(|o| (o.spec.polling_interval(), fingerprint(&o.metadata))),
    };
    let owned = ctx.ownership.borrow().owns(&object_key(kind, key));
    let key = slot.clone();
    let Some((interval, print)) = found else {
        // Gone: forget it everywhere.
        if objects.remove(&key).is_some() {
            ctx.metrics.owning(kind, false);
        }
        schedule.remove(&key);
        let (ns, name) = &key.1;
        ctx.metrics.forget(kind, ns, name);
        let record = match kind {
            Kind::ScaledObject => name.clone(),
            Kind::ScaledJob => scaled_job::record_name(name),
        };
        ctx.records.remove_object(ns, &record);
        return;
    };
    if !owned {
        if objects.remove(&key).is_some() {
            debug!(?kind, namespace = %key.1.0, name = %key.1.1, "no longer owned");
            ctx.metrics.owning(kind, false);
            ctx.metrics.forget(kind, &key.1.0, &key.1.1);
        }
        schedule.remove(&key);
        return;
    }
    let interval = interval.max(Duration::from_secs(1));
    match objects.get_mut(&key) {
        Some(obj) => {
            // Changed spec or annotations: poll now (the cycle rebuilds what changed), or
            // right after the cycle that is running.
            obj.interval = interval;
            if obj.seen != print {
                obj.seen = print;
                if obj.in_flight {
                    obj.again = true;
                } else {
                    schedule.poll_now(&key, interval, Instant::now());
                }
            } else if !schedule.contains(&key) {
                schedule.poll_now(&key, interval, Instant::now());
            }
        }
        None => {
            ctx.metrics.owning(kind, true);
            objects.insert(
                key.clone(),
                Obj {
                    runtime: Arc::new(Mutex::new(Runtime::default())),
                    in_flight: false,
                    queued: false,
                    seen: print,
                    interval,
                    again: false,
                },
            );
            let now = Instant::now();
            if initial {
                schedule.insert_spread(
                    key,
                    interval,
                    now,
                    ctx.settings.first_poll_window,
                    rand::random::<f64>(),
                );
            } else {
                // Newly owned (a handover or a new object): poll now.
                schedule.insert(key, interval, now);
            }
        }
    }
}

fn owns_at(ctx: &Ctx, key: &Key, generation: u64) -> bool {
    owns_kind_at(ctx, Kind::ScaledObject, key, generation)
}

fn owns_kind_at(ctx: &Ctx, kind: Kind, key: &Key, generation: u64) -> bool {
    let o = ctx.ownership.borrow();
    o.generation() == generation && o.may_act(&object_key(kind, key))
}

fn fence_of(meta: &ObjectMeta) -> u64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(FENCE_ANNOTATION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// One poll of one object, start to end.
async fn cycle(ctx: &Ctx, slot: &Slot, runtime: &Mutex<Runtime>) {
    ctx.stats.cycles.fetch_add(1, Ordering::Relaxed);
    let (kind, key) = (slot.0, &slot.1);
    let generation = ctx.ownership.borrow().generation();
    if !owns_kind_at(ctx, kind, key, generation) {
        return;
    }
    let mut runtime = runtime.lock().await;
    let result = match kind {
        Kind::ScaledObject => match ctx.sos.get(&ObjectRef::new(&key.1).within(&key.0)) {
            Some(so) => run_cycle(ctx, key, &so, &mut runtime, generation).await,
            None => return,
        },
        Kind::ScaledJob => match ctx.sjs.get(&ObjectRef::new(&key.1).within(&key.0)) {
            Some(sj) => scaled_job::run_cycle(ctx, key, &sj, &mut runtime, generation).await,
            None => return,
        },
    };
    if let Err(e) = result {
        match e {
            CycleError::Fenced(why) => {
                ctx.stats.fenced.fetch_add(1, Ordering::Relaxed);
                debug!(?kind, namespace = %key.0, name = %key.1, why, "write fenced");
            }
            CycleError::Api(what, e) => {
                warn!(?kind, namespace = %key.0, name = %key.1, what, error = %e, "API call failed; retrying next poll");
            }
        }
    }
}

enum CycleError {
    Fenced(&'static str),
    Api(&'static str, kube::Error),
}

fn api(what: &'static str) -> impl Fn(kube::Error) -> CycleError {
    move |e| {
        if is_conflict(&e) {
            CycleError::Fenced("the object changed since it was read")
        } else {
            CycleError::Api(what, e)
        }
    }
}

async fn run_cycle(
    ctx: &Ctx,
    key: &Key,
    so: &ScaledObject,
    runtime: &mut Runtime,
    generation: u64,
) -> Result<(), CycleError> {
    let (ns, name) = (key.0.as_str(), key.1.as_str());
    if fence_of(&so.metadata) > generation {
        return Err(CycleError::Fenced("a newer owner stamped the object"));
    }
    if so.metadata.deletion_timestamp.is_some() {
        return finalize(ctx, key, so, generation).await;
    }
    // Stamp ownership and the finalizer in one write, when needed.
    let so = ensure_meta(ctx, Kind::ScaledObject, key, so, generation).await?;
    let so = &so;

    // Gather: the annotations, the target, the triggers (rebuilt when the object changed) and
    // this poll's readings.
    let pause = pause::from_annotations(so.annotations());
    if let Ok(p) = &pause {
        ctx.metrics.paused(ns, name, p.is_paused());
    }
    let target = read_target(ctx, so)
        .await
        .map(|(current, ready, gvkr)| (plan::Target { current, ready }, gvkr));
    let polls = match &pause {
        Ok(p) if !p.is_full() => {
            let print = fingerprint(&so.metadata);
            if runtime.fingerprint.as_ref() != Some(&print) {
                build(ctx, so, runtime).await;
                runtime.fingerprint = Some(print);
            }
            if runtime.problems.is_empty() {
                poll_metrics(
                    ctx,
                    Kind::ScaledObject,
                    (&key.0, &key.1),
                    &so.spec.triggers,
                    runtime,
                )
                .await
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    };
    let external: Vec<String> = runtime
        .specs
        .iter()
        .filter_map(MetricSpec::external_name)
        .map(str::to_owned)
        .collect();
    let resource: Vec<String> = runtime
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
        problems: &runtime.problems,
        external_metrics: &external,
        resource_metrics: &resource,
        polls: &polls,
        formula: runtime.formula.as_ref(),
        health: &runtime.health,
        last_active: runtime.last_active,
        health_written: runtime.health_written,
        now,
        keda_write_pattern: ctx.settings.keda_write_pattern,
    });
    execute(
        ctx,
        key,
        so,
        runtime,
        plan,
        pause.unwrap_or_default(),
        generation,
    )
    .await
}

/// Performs a plan: records, old HPAs, the scale write (and its event), the HPA, the other
/// events and the status — each write fenced by the ring generation.
async fn execute(
    ctx: &Ctx,
    key: &Key,
    so: &ScaledObject,
    runtime: &mut Runtime,
    mut plan: plan::Plan,
    pause: pause::Pause,
    generation: u64,
) -> Result<(), CycleError> {
    let (ns, name) = (key.0.as_str(), key.1.as_str());
    let interval = so.spec.polling_interval();
    let polled_at = ringscale_replication::now();
    for r in &plan.records {
        let record_key = RecordKey::new(ns, name, r.metric.as_str());
        let value = r
            .value
            .unwrap_or_else(|| ctx.records.get(&record_key).map_or(0.0, |old| old.value));
        ctx.records.record(
            record_key,
            ringscale_replication::Reading {
                value,
                active: r.active,
                error: r.error.as_deref(),
                failures: r.failures,
            },
            polled_at,
            interval,
        );
    }
    runtime.health = std::mem::take(&mut plan.health);
    runtime.last_active = plan.last_active;
    for old in &plan.delete_hpas {
        info!(namespace = ns, name, hpa = %old, "deleting the HPA of the old name");
        delete_hpa_named(ctx, so, old, generation).await?;
    }
    if plan.hpa == plan::HpaAction::Delete {
        delete_hpa(ctx, so, generation).await?;
    }
    let kind = plan
        .status
        .scale_target_kind
        .clone()
        .unwrap_or_else(|| plan::scale_target_kind(so));
    if let Some(step) = &plan.scale {
        info!(namespace = ns, name, from = step.from, to = step.to, reason = ?step.reason, "scaling the target");
        let result = scale(ctx, key, so, step.to, generation).await;
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
        let desired = hpa::desired(so, hpa::metrics(so, &runtime.specs, composite), &pause);
        // An HPA the API server refuses (e.g. a behavior it does not accept) is the user's to
        // fix: say so in the status, as KEDA does, rather than only in the log.
        match ensure_hpa(ctx, so, desired, generation, &mut runtime.hpa_matched).await {
            Ok(()) => {}
            Err(CycleError::Api(what, kube::Error::Api(s)))
                if (400..500).contains(&s.code) && !matches!(s.code, 409 | 429) =>
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
    let (reports, events): (Vec<_>, Vec<_>) = plan
        .events
        .into_iter()
        .partition(|e| matches!(e.reason, "KEDAScalerFailed" | "KEDAMetricSourceFailed"));
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
    if !owns_at(ctx, key, generation) {
        return Err(CycleError::Fenced("ownership changed"));
    }
    for e in events {
        // The events of a report (ScaledObjectFallbackActivated, ...) cost a write each too.
        if !report || take_report(ctx) {
            emit_planned(ctx, so, e);
        } else {
            ctx.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    let mut updated = so.clone();
    updated.status = Some(plan.status);
    put_status(ctx, key, &updated).await?;
    if plan.health_written {
        runtime.health_written = Some(Timestamp::now());
    }
    debug!(namespace = %key.0, name = %key.1, kind = KIND_SCALED_OBJECT, "status written");
    Ok(())
}

fn take_report(ctx: &Ctx) -> bool {
    ctx.reports
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take(Instant::now())
}

/// Whether `after` differs from `before` only in what reports failures: `health` and the
/// Fallback condition.
fn only_reports(before: &ScaledObjectStatus, after: &ScaledObjectStatus) -> bool {
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

fn emit_planned(ctx: &Ctx, so: &ScaledObject, e: plan::PlannedEvent) {
    let type_ = if e.warning {
        EventType::Warning
    } else {
        EventType::Normal
    };
    emit(ctx, so, type_, e.reason, e.message);
}

/// Reads every external metric of every trigger at once, updating the scaler metrics, and
/// returns the readings — one step for ScaledObjects and ScaledJobs alike.
async fn poll_metrics(
    ctx: &Ctx,
    kind: Kind,
    (ns, name): (&str, &str),
    triggers: &[ringscale_api::ScaleTrigger],
    runtime: &Runtime,
) -> Vec<plan::MetricPoll> {
    let results = poll_all(runtime).await;
    results
        .into_iter()
        .map(|(index, metric, polled_at, result)| {
            let trigger = triggers.get(index);
            let labels = Metrics::scaler_labels(
                kind,
                ns,
                name,
                &metric,
                trigger.map_or("", |t| t.type_.as_str()),
                index,
            );
            let took = polled_at.elapsed();
            let outcome = match result {
                Ok(poll) => {
                    let value = poll
                        .values
                        .iter()
                        .find(|v| *v.name == *metric)
                        .map_or(0.0, |v| v.value);
                    ctx.metrics.polled(kind, &labels, value, poll.active, took);
                    Ok(plan::Reading {
                        value,
                        active: poll.active,
                    })
                }
                Err(e) => {
                    ctx.metrics.failed(kind, &labels, took);
                    Err(e.to_string())
                }
            };
            let target = runtime.specs.iter().find_map(|s| match s {
                MetricSpec::External(m) if m.name == metric => {
                    #[allow(clippy::cast_precision_loss)]
                    let t = m.target_milli as f64 / 1000.0;
                    Some((m.metric_type.clone(), t))
                }
                _ => None,
            });
            plan::MetricPoll {
                index,
                metric,
                target,
                outcome,
            }
        })
        .collect()
}

/// One poll's result for one metric: trigger index, metric name, when it started, outcome.
type Polled = (
    usize,
    String,
    std::time::Instant,
    Result<ringscale_scalers::Poll, ringscale_scalers::ScalerError>,
);

/// Polls every external metric of every trigger at once.
async fn poll_all(runtime: &Runtime) -> Vec<Polled> {
    let polls = runtime.scalers.iter().flat_map(|s| {
        let names: Vec<String> = runtime
            .specs
            .iter()
            .filter_map(MetricSpec::external_name)
            .filter(|n| {
                ringscale_scalers::split_metric_name(n).is_some_and(|(i, _)| i == s.index())
            })
            .map(str::to_owned)
            .collect();
        names.into_iter().map(move |n| {
            let span = tracing::info_span!("trigger", index = s.index(), metric = %n);
            async move {
                let started = ringscale_replication::now();
                let result = s.poll(&n).await;
                (s.index(), n, started, result)
            }
            .instrument(span)
        })
    });
    join_all(polls).await
}

fn prepare_settings(ctx: &Ctx) -> prepare::Settings<'_> {
    prepare::Settings {
        cluster_object_namespace: &ctx.settings.cluster_object_namespace,
        ..prepare::Settings::default()
    }
}

/// Builds the scalers and their metric specs from prepared triggers, collecting every problem,
/// and listens to the push triggers among them.
async fn build_scalers(
    ctx: &Ctx,
    slot: Slot,
    prepared: Vec<prepare::PreparedTrigger>,
    runtime: &mut Runtime,
) {
    runtime.push = PushListeners::default();
    runtime.scalers.clear();
    runtime.specs.clear();
    runtime.problems.clear();
    runtime.formula = None;
    for prepared in prepared {
        for p in &prepared.problems {
            runtime.problems.push(format!("{}: {}", p.path, p.message));
        }
        if !prepared.problems.is_empty() {
            continue;
        }
        match Scaler::build(&prepared.input, &ctx.sources) {
            Ok(scaler) => runtime.scalers.push(scaler),
            Err(errors) => runtime
                .problems
                .extend(errors.iter().map(ToString::to_string)),
        }
    }
    for scaler in &runtime.scalers {
        match scaler.metric_specs().await {
            Ok(specs) => runtime.specs.extend(specs),
            Err(e) => runtime.problems.push(e.to_string()),
        }
        if let Some(mut pushed) = scaler.push_activity() {
            // KEDA runs the scale step as soon as a push scaler reports; ringscale polls the
            // object at once, which reads the same activity and goes through the same step.
            let (inbox, slot, index) = (ctx.inbox.clone(), slot.clone(), scaler.index());
            runtime.push.0.push(tokio::spawn(async move {
                while let Some(update) = pushed.recv().await {
                    match update {
                        Ok(active) => {
                            debug!(namespace = %slot.1.0, name = %slot.1.1, trigger = index, active, "push trigger reported");
                            if inbox.send(Msg::Pushed(slot.clone())).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            debug!(namespace = %slot.1.0, name = %slot.1.1, trigger = index, error = %e, "push stream interrupted");
                        }
                    }
                }
            }));
        }
    }
}

async fn build(ctx: &Ctx, so: &ScaledObject, runtime: &mut Runtime) {
    let prepared = prepare::scaled_object(so, &ctx.lookup, &prepare_settings(ctx));
    let slot = (
        Kind::ScaledObject,
        (so.namespace().unwrap_or_default(), so.name_any()),
    );
    build_scalers(ctx, slot, prepared, runtime).await;
    if let Some(formula) = so
        .spec
        .scaling_modifiers()
        .and_then(|m| m.formula.as_deref())
    {
        match Formula::compile(formula) {
            Ok(f) => runtime.formula = Some(f),
            Err(e) => runtime
                .problems
                .push(format!("spec.advanced.scalingModifiers.formula: {e}")),
        }
    }
    // Health of metrics that no longer exist goes.
    let names: Vec<String> = runtime
        .specs
        .iter()
        .filter_map(MetricSpec::external_name)
        .map(str::to_owned)
        .collect();
    runtime.health.retain(|m, _| names.contains(m));
}

/// The target's replicas and ready replicas, and what kind it is: Deployments and
/// StatefulSets from the shared watches; any other kind with a `/scale` subresource (an Argo
/// Rollout, a custom resource) through discovery and one read of its `/scale` per poll.
async fn read_target(
    ctx: &Ctx,
    so: &ScaledObject,
) -> Result<(i32, i32, GroupVersionKindResource), String> {
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
    let missing = || format!("{} not found", t.name);
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
                .map_err(|e| format!("reading its /scale: {e}"))?;
            Ok((
                scale.spec.and_then(|s| s.replicas).unwrap_or(0),
                scale.status.map_or(0, |s| s.replicas),
                gvkr(&resource.plural),
            ))
        }
    }
}

fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

/// The API resource of a scale target kind, found by discovery once and then remembered.
async fn target_kind(ctx: &Ctx, so: &ScaledObject) -> Result<ApiResource, String> {
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
        .map_err(|e| format!("the API server does not serve {}/{}: {e}", id.0, id.1))?;
    ctx.target_kinds
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(id, resource.clone());
    Ok(resource)
}

async fn scale(
    ctx: &Ctx,
    key: &Key,
    so: &ScaledObject,
    replicas: i32,
    generation: u64,
) -> Result<(), CycleError> {
    if !owns_at(ctx, key, generation) {
        return Err(CycleError::Fenced("ownership changed"));
    }
    let t = &so.spec.scale_target_ref;
    let body = Patch::Merge(json!({"spec": {"replicas": replicas}}));
    let params = PatchParams::default();
    match t.effective_kind() {
        "Deployment" if t.effective_api_version() == "apps/v1" => {
            Api::<Deployment>::namespaced(ctx.client.clone(), &key.0)
                .patch_scale(&t.name, &params, &body)
                .await
                .map_err(api("scale the target"))?;
        }
        "StatefulSet" if t.effective_api_version() == "apps/v1" => {
            Api::<StatefulSet>::namespaced(ctx.client.clone(), &key.0)
                .patch_scale(&t.name, &params, &body)
                .await
                .map_err(api("scale the target"))?;
        }
        _ => {
            let resource = match target_kind(ctx, so).await {
                Ok(r) => r,
                Err(e) => {
                    warn!(namespace = %key.0, name = %key.1, error = %e, "cannot scale the target");
                    return Ok(());
                }
            };
            Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &key.0, &resource)
                .patch_scale(&t.name, &params, &body)
                .await
                .map_err(api("scale the target"))?;
        }
    }
    ctx.stats.scale_writes.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Adds the finalizer and stamps this replica's generation, in one write, when either is
/// missing or stale.
async fn ensure_meta<K>(
    ctx: &Ctx,
    kind: Kind,
    key: &Key,
    obj: &K,
    generation: u64,
) -> Result<K, CycleError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let has_finalizer = obj.finalizers().iter().any(|f| f == FINALIZER);
    // KEDA labels each ScaledObject with its own name (`scaledobject.keda.sh/name`).
    let name_label = (kind == Kind::ScaledObject
        && obj.labels().get(LABEL_SCALED_OBJECT_NAME) != Some(&key.1))
    .then(|| json!({ LABEL_SCALED_OBJECT_NAME: key.1 }));
    if has_finalizer && fence_of(obj.meta()) == generation && name_label.is_none() {
        return Ok(obj.clone());
    }
    if !owns_kind_at(ctx, kind, key, generation) {
        return Err(CycleError::Fenced("ownership changed"));
    }
    let mut finalizers = obj.finalizers().to_vec();
    if !has_finalizer {
        finalizers.push(FINALIZER.to_owned());
    }
    let mut patch = json!({
        "metadata": {
            "resourceVersion": obj.resource_version(),
            "finalizers": finalizers,
            "annotations": { FENCE_ANNOTATION: generation.to_string() },
        }
    });
    if let Some(labels) = name_label {
        patch["metadata"]["labels"] = labels;
    }
    let updated = Api::<K>::namespaced(ctx.client.clone(), &key.0)
        .patch(&key.1, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(api("stamp ownership"))?;
    ctx.stats.meta_writes.fetch_add(1, Ordering::Relaxed);
    Ok(updated)
}

/// Removes our finalizer (at the object's resourceVersion).
async fn remove_finalizer<K>(ctx: &Ctx, key: &Key, obj: &K) -> Result<(), CycleError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let finalizers: Vec<&String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .collect();
    let patch =
        json!({"metadata": {"resourceVersion": obj.resource_version(), "finalizers": finalizers}});
    Api::<K>::namespaced(ctx.client.clone(), &key.0)
        .patch(&key.1, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(api("remove the finalizer"))?;
    ctx.stats.meta_writes.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Replaces the status subresource with `obj`'s status, at `obj`'s resourceVersion.
async fn put_status<K>(ctx: &Ctx, key: &Key, obj: &K) -> Result<(), CycleError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(ctx.client.clone(), &key.0)
        .replace_status(&key.1, &PostParams::default(), obj)
        .await
        .map_err(api("write the status"))?;
    ctx.stats.status_writes.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

async fn finalize(
    ctx: &Ctx,
    key: &Key,
    so: &ScaledObject,
    generation: u64,
) -> Result<(), CycleError> {
    if !so.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    delete_hpa(ctx, so, generation).await?;
    if so.spec.restore_to_original_replica_count()
        && let Some(original) = so.status.as_ref().and_then(|s| s.original_replica_count)
        && read_target(ctx, so)
            .await
            .is_ok_and(|(current, _, _)| current != original)
    {
        info!(namespace = %key.0, name = %key.1, replicas = original, "restoring the original replica count");
        scale(ctx, key, so, original, generation).await?;
    }
    remove_finalizer(ctx, key, so).await?;
    ctx.records.remove_object(&key.0, &key.1);
    Ok(())
}

async fn delete_hpa(ctx: &Ctx, so: &ScaledObject, generation: u64) -> Result<(), CycleError> {
    delete_hpa_named(ctx, so, &so.hpa_name(), generation).await
}

/// Deletes the object's HPA of this name, when the watch shows one.
async fn delete_hpa_named(
    ctx: &Ctx,
    so: &ScaledObject,
    name: &str,
    generation: u64,
) -> Result<(), CycleError> {
    let ns = so.namespace().unwrap_or_default();
    if ctx.hpas.get(&ObjectRef::new(name).within(&ns)).is_none() {
        return Ok(());
    }
    let key = (ns.clone(), so.name_any());
    if !owns_at(ctx, &key, generation) {
        return Err(CycleError::Fenced("ownership changed"));
    }
    match Api::<HorizontalPodAutoscaler>::namespaced(ctx.client.clone(), &ns)
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => {
            ctx.stats.hpa_writes.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(CycleError::Api("delete the HPA", e)),
    }
}

async fn ensure_hpa(
    ctx: &Ctx,
    so: &ScaledObject,
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
    let key = (ns.clone(), so.name_any());
    if !owns_at(ctx, &key, generation) {
        return Err(CycleError::Fenced("ownership changed"));
    }
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(ctx.client.clone(), &ns);
    match existing {
        None => match hpas.create(&PostParams::default(), &desired).await {
            Ok(_) => {}
            // Created meanwhile (the watch is behind): the next poll compares again.
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
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
fn emit<K: Resource<DynamicType = ()>>(
    ctx: &Ctx,
    obj: &K,
    type_: EventType,
    reason: &str,
    note: String,
) {
    ctx.events
        .emit(obj.object_ref(&()), type_, reason, "Scaling", &note);
}

#[cfg(test)]
mod grid_tests {
    use super::*;

    #[test]
    fn polls_wake_on_the_grid_and_never_early() {
        let origin = Instant::now();
        let grid = Grid::new(Duration::from_millis(20), origin);
        let ms = |n: u64| origin + Duration::from_millis(n);
        assert_eq!(grid.at_or_after(ms(0)), ms(0));
        assert_eq!(grid.at_or_after(ms(1)), ms(20));
        assert_eq!(grid.at_or_after(ms(20)), ms(20));
        assert_eq!(grid.at_or_after(ms(21)), ms(40));
        assert_eq!(grid.at_or_after(ms(10_007)), ms(10_020));
        // Before the origin (a poll planned earlier): at once.
        let before = origin
            .checked_sub(Duration::from_millis(5))
            .unwrap_or(origin);
        assert_eq!(grid.at_or_after(before), before);
        // No step: exactly when due.
        let exact = Grid::new(Duration::ZERO, origin);
        assert_eq!(exact.at_or_after(ms(7)), ms(7));
    }

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

    #[test]
    fn the_hpa_memo_hash_follows_the_desired_hpa() {
        let hpa = |max: i32| {
            serde_json::from_value::<HorizontalPodAutoscaler>(serde_json::json!({
                "metadata": {"name": "keda-hpa-orders"},
                "spec": {
                    "maxReplicas": max,
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "w"}
                }
            }))
            .unwrap_or_default()
        };
        assert!(json_hash(&hpa(7)).is_some());
        assert_eq!(json_hash(&hpa(7)), json_hash(&hpa(7)));
        assert_ne!(json_hash(&hpa(7)), json_hash(&hpa(8)));
    }
}
