//! The controller of one replica: it watches every ScaledObject and ScaledJob, keeps one poll
//! schedule of the ones this replica owns, and on each poll reads the triggers and records the
//! values (replicated to every peer). For a ScaledObject it scales 0 ↔ 1 through `/scale` and
//! keeps the HPA as it should be; for a ScaledJob it creates Jobs ([`scaled_job`]). Either way it
//! writes the status only when something changed.
//!
//! Every write is guarded twice: by the object's resourceVersion (optimistic concurrency), and by
//! the ring generation — the replica must own the object at the generation its cycle started at.
//! An owner stamps its generation on the object (`ringscale.io/owner-generation`) right before
//! its first write to it, not before its first poll (a takeover costs no write per object; an
//! object whose polls change nothing is never stamped), and never writes to an object stamped
//! with a higher one, so a replica that lost ownership cannot overwrite the new owner's writes
//! even if it has not yet seen the new ring ([`writes::Claim`]).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
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
use ringscale_ring::{Kind, ObjectId};
use ringscale_scalers::{MetricSpec, Scaler, SourceId, Sources, prepare};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::{Mutex, Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{Instrument as _, debug, info, warn};

use crate::dispatch::{self, Caps, Dispatch};
use crate::hpa::{self, HpaView};
use crate::lookup::ClusterLookup;
use crate::metrics::Metrics;
use crate::schedule::Schedule;
use crate::scope::{Scope, Scoped, watch_scoped};
use ringscale_semantics::fallback::Health;
use ringscale_semantics::modifiers::Formula;
pub(crate) use ringscale_semantics::plan::set_condition;
use ringscale_semantics::{pause, plan};

mod cycle;
mod live;
mod scaled_job;
mod writes;

use cycle::*;
use writes::*;

/// The annotation with the ring generation at which the replica that owns the object took it
/// over (a newer owner's stamp fences an older owner's writes).
pub const FENCE_ANNOTATION: &str = "ringscale.io/owner-generation";
/// The annotation with the member that stamped [`FENCE_ANNOTATION`]: while it stays the owner,
/// a ring change costs the object no write.
pub const OWNER_ANNOTATION: &str = "ringscale.io/owner";

/// Whether an annotation is ringscale's ownership stamp (not copied to HPAs or Jobs, and not a
/// change of the object's spec).
pub fn is_stamp(annotation: &str) -> bool {
    annotation == FENCE_ANNOTATION || annotation == OWNER_ANNOTATION
}

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
    /// The namespaces watched and the ScaledObjects' and ScaledJobs' label selector.
    pub scope: Scope,
    /// Poll cycles running at once.
    pub max_concurrent_cycles: usize,
    /// Poll cycles of one namespace running at once: a tenant whose sources hang holds at most
    /// this many of the cycle slots ([`crate::dispatch`]); above `max_cycles_per_source`, so
    /// the namespace's other sources keep room beside a hung one.
    pub max_cycles_per_namespace: usize,
    /// Poll cycles calling one source running at once: half the slots, so a source that hangs
    /// leaves the other half to everyone else while its further polls wait unstarted. Above the
    /// sources' own bound of concurrent calls (`SourcesConfig::per_source_concurrency`, 64),
    /// since a cycle lasts longer than its call: at the same bound, one busy source serving
    /// thousands of objects would queue on the cap with its calls far from their limit.
    pub max_cycles_per_source: usize,
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
            scope: Scope::default(),
            max_concurrent_cycles: 256,
            max_cycles_per_namespace: 192,
            max_cycles_per_source: 128,
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
    /// Metadata writes adding the finalizer or the name label (with the ownership stamp).
    pub meta_writes: AtomicU64,
    /// Ownership stamps written on their own, right before a cycle's first write to an object
    /// taken over; a takeover writes none before its first poll.
    pub stamps: AtomicU64,
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
            + self.stamps.load(Ordering::Relaxed)
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

struct Ctx {
    client: Client,
    sos: Scoped<ScaledObject>,
    sjs: Scoped<ScaledJob>,
    /// Jobs created for ScaledJobs (labelled with the ScaledJob's name).
    jobs: Scoped<Job>,
    /// Their Pods (the label is on the Jobs' pod templates), for pending-Job detection.
    pods: Scoped<Pod>,
    hpas: Scoped<HpaView>,
    lookup: ClusterLookup,
    records: Arc<RecordStore>,
    sources: Sources,
    settings: Settings,
    ownership: watch::Receiver<Ownership>,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    health: Arc<crate::health::CycleHealth>,
    events: crate::events::Events,
    /// The loop's inbox (push triggers ask for a poll through it).
    inbox: Inbox,
    /// Scale target kinds resolved by discovery, by (apiVersion, kind).
    target_kinds: std::sync::Mutex<HashMap<(String, String), ApiResource>>,
    /// The budget of writes that only report (see [`Settings::report_writes_per_second`]).
    reports: std::sync::Mutex<Bucket>,
}

/// What a cycle keeps between polls of one object: its built triggers, their health, push
/// listeners, and what it last wrote.
#[derive(Default)]
struct PollState {
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
    /// The resourceVersion of the cached object a write was refused for (409): while the cache
    /// still holds it, the next cycle reads the object from the API server instead.
    stale_version: Option<String>,
    /// The object as this replica last wrote it, and the resourceVersion it replaced: while the
    /// cache still holds that version, cycles work on the written object.
    written: Option<(String, Arc<dyn std::any::Any + Send + Sync>)>,
    /// The ring generation at which a cycle last found that this replica owns the object. The
    /// ring of one generation never changes, so later cycles at that generation check only the
    /// generation and the member Lease, not the ring (eight hashed probes into every member's
    /// virtual nodes: ~10 µs a poll with 5 members).
    owned_at: Option<u64>,
}

/// Tasks listening to `external-push` streams; they stop with the poll state (a rebuild, or
/// the object no longer owned).
#[derive(Default)]
struct PushListeners(Vec<tokio::task::JoinHandle<()>>);

impl Drop for PushListeners {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// The loop's view of one owned object: when it is polled, and whether a cycle is running.
struct Tracked {
    state: Arc<Mutex<PollState>>,
    /// A cycle is queued or running.
    in_flight: bool,
    /// A cycle is queued (waiting for a permit); cleared when it starts.
    queued: bool,
    /// The object as the loop last saw it; a different one means poll now.
    seen: Fingerprint,
    interval: Duration,
    /// The object changed while a cycle ran: poll again as soon as it ends.
    again: bool,
    /// Where its due polls wait: its namespace and the sources its last poll called.
    group: Group,
}

type Group = dispatch::Group<SourceId>;

/// Live queries waiting for the loop's answer before a new one waits to be queued.
const QUERY_QUEUE: usize = 64;

/// A live query for an owned ScaledObject's poll state, polling interval, the object and its
/// target's replicas (current, ready; for fallback values).
type OwnedQuery = (ObjectId, oneshot::Sender<Option<live::Owned>>);

/// The controller loop's inbox. Watch events and push reports only say "look at this object
/// again", so they are kept as sets: an object reported twice before the loop looks is looked
/// at once, the sets never hold more entries than there are objects, and a sender never waits.
/// (A queue of messages would either grow without bound or, bounded, stall the watches before
/// the caches sync — the loop waits for that sync before it reads — which a 10,000-object load
/// test showed.) Live queries, which wait for an answer, go through a bounded queue.
#[derive(Clone)]
struct Inbox(Arc<InboxState>);

struct InboxState {
    pending: std::sync::Mutex<Pending>,
    wake: tokio::sync::Notify,
    queries: mpsc::Sender<OwnedQuery>,
}

/// What the watches and push listeners reported since the loop last looked.
#[derive(Default)]
struct Pending {
    /// Objects a watch saw change (or appear, or go).
    changed: std::collections::HashSet<ObjectId>,
    /// A watch listed everything again: look at every object.
    resync: bool,
    /// Objects a push trigger reported a change of activity for: poll now.
    pushed: std::collections::HashSet<ObjectId>,
}

impl Inbox {
    fn new() -> (Inbox, mpsc::Receiver<OwnedQuery>) {
        let (queries, rx) = mpsc::channel(QUERY_QUEUE);
        let state = InboxState {
            pending: std::sync::Mutex::default(),
            wake: tokio::sync::Notify::new(),
            queries,
        };
        (Inbox(Arc::new(state)), rx)
    }

    fn report(&self, add: impl FnOnce(&mut Pending)) {
        add(&mut self
            .0
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
        self.0.wake.notify_one();
    }

    fn changed(&self, id: ObjectId) {
        self.report(|p| {
            p.changed.insert(id);
        });
    }

    fn resync(&self) {
        self.report(|p| p.resync = true);
    }

    fn pushed(&self, id: ObjectId) {
        self.report(|p| {
            p.pushed.insert(id);
        });
    }

    /// Everything reported so far, leaving the inbox empty.
    fn take(&self) -> Pending {
        std::mem::take(
            &mut *self
                .0
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Asks the loop about an owned object; `None` when the loop has stopped.
    async fn owned(&self, id: ObjectId) -> Option<Option<live::Owned>> {
        let (reply, answer) = oneshot::channel();
        self.0.queries.send((id, reply)).await.ok()?;
        answer.await.ok()
    }
}

/// A running controller.
pub struct Controller {
    /// Its counters.
    pub stats: Arc<Stats>,
    /// Its Prometheus metrics (register them with [`Metrics::register`]).
    pub metrics: Arc<Metrics>,
    /// How its cycles fare (readiness, error categories).
    pub health: Arc<crate::health::CycleHealth>,
    inbox: Inbox,
    ownership: watch::Receiver<Ownership>,
    records: Arc<RecordStore>,
    scaled_objects: Scoped<ScaledObject>,
    cluster: ClusterLookup,
    hpas: Scoped<HpaView>,
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
        let health = Arc::new(crate::health::CycleHealth::default());
        let (tx, rx) = Inbox::new();
        let scope = &settings.scope;
        let sos = watch_objects::<ScaledObject>(&client, scope, Kind::ScaledObject, tx.clone());
        let lookup = ClusterLookup::start(&client, scope, &settings.cluster_object_namespace);
        let hpas = watch_scoped(
            &client,
            scope.namespaces(),
            &watcher::Config::default(),
            HpaView::slim,
            |_| {},
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
            health: Arc::clone(&health),
        };
        let task = tokio::spawn(run(parts, (tx.clone(), rx), shutdown));
        Controller {
            stats,
            metrics,
            health,
            inbox: tx,
            ownership,
            records,
            scaled_objects,
            cluster,
            hpas: autoscalers,
            task: Some(task),
        }
    }

    /// Every ScaledObject in scope, from the controller's watch (for the status page).
    pub fn scaled_objects(&self) -> &Scoped<ScaledObject> {
        &self.scaled_objects
    }

    /// The controller's watches of the objects triggers and targets refer to.
    pub fn cluster(&self) -> &ClusterLookup {
        &self.cluster
    }

    /// The objects, HPAs and scale targets of the controller's watches, as the metrics API
    /// reads them.
    pub fn object_view(&self) -> Arc<dyn ringscale_semantics::ObjectView> {
        Arc::new(crate::view::Watched {
            scaled_objects: self.scaled_objects.clone(),
            hpas: self.hpas.clone(),
            cluster: self.cluster.clone(),
        })
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

    /// Resolves when the controller's loop ends by itself (it runs until the shutdown future
    /// resolves): the replica polls nothing without it.
    pub async fn stopped(&mut self) -> String {
        let Some(task) = self.task.as_mut() else {
            return std::future::pending().await;
        };
        let result = task.await;
        self.task = None;
        match result {
            Ok(()) => "the controller's loop ended".to_owned(),
            Err(e) => format!("the controller's loop failed: {e}"),
        }
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
    health: Arc<crate::health::CycleHealth>,
    sos: (Scoped<ScaledObject>, Vec<tokio::task::JoinHandle<()>>),
    hpas: (Scoped<HpaView>, Vec<tokio::task::JoinHandle<()>>),
    lookup: (ClusterLookup, Vec<tokio::task::JoinHandle<()>>),
}

async fn run(
    parts: Parts,
    (tx, mut rx): (Inbox, mpsc::Receiver<OwnedQuery>),
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
        health,
        sos: (sos, so_watch),
        hpas: (hpas, hpa_watch),
        lookup: (lookup, lookup_watches),
    } = parts;
    let scope = &settings.scope;
    let (sjs, sj_watch) = watch_objects::<ScaledJob>(&client, scope, Kind::ScaledJob, tx.clone());
    let labelled = watcher::Config::default().labels(LABEL_SCALED_JOB_NAME);
    let (jobs, job_watch) = watch_scoped(
        &client,
        scope.namespaces(),
        &labelled,
        crate::lookup::slim,
        |_| {},
    );
    let (pods, pod_watch) = watch_scoped(
        &client,
        scope.namespaces(),
        &labelled,
        crate::lookup::slim,
        |_| {},
    );
    sos.wait_until_ready().await;
    sjs.wait_until_ready().await;
    jobs.wait_until_ready().await;
    pods.wait_until_ready().await;
    hpas.wait_until_ready().await;
    lookup.ready().await;
    info!("operator caches synced");
    health.set_synced(true);

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
        health,
        inbox: tx.clone(),
        target_kinds: std::sync::Mutex::default(),
        reports: std::sync::Mutex::new(Bucket::new(settings_report_rate)),
    });
    let limit = Arc::new(Semaphore::new(ctx.settings.max_concurrent_cycles.max(1)));
    // Cycles that ended, so the loop can poll their object again: at most one message per
    // running cycle, and cycles are bounded by the permits.
    let (done_tx, mut done_rx) = mpsc::channel::<(ObjectId, Group, Vec<SourceId>)>(
        ctx.settings.max_concurrent_cycles.max(1),
    );
    let mut objects: HashMap<ObjectId, Tracked> = HashMap::new();
    let mut schedule: Schedule<ObjectId> = Schedule::new();
    // Due polls, with when each was planned.
    let mut ready: Dispatch<(ObjectId, Instant), SourceId> = Dispatch::new(Caps {
        namespace: ctx.settings.max_cycles_per_namespace,
        source: ctx.settings.max_cycles_per_source,
    });
    let mut initial = true;
    let mut shutdown = std::pin::pin!(shutdown);
    let grid = Grid::new(ctx.settings.poll_grain, Instant::now());

    loop {
        let next_due = schedule.next_due().map(|due| grid.at_or_after(due));
        tokio::select! {
            () = &mut shutdown => break,
            () = tx.0.wake.notified() => {
                let Pending { changed, resync, pushed } = tx.take();
                for id in changed {
                    reconcile(&ctx, &mut objects, &mut schedule, id, initial);
                }
                if resync {
                    for id in all_objects(&ctx, &objects) {
                        reconcile(&ctx, &mut objects, &mut schedule, id, initial);
                    }
                    initial = false;
                }
                for id in pushed {
                    if let Some(obj) = objects.get_mut(&id) {
                        if obj.in_flight {
                            obj.again = true;
                        } else {
                            schedule.poll_now(&id, obj.interval, Instant::now());
                        }
                    }
                }
            }
            Some((id, reply)) = rx.recv() => {
                    let so = (id.kind == Kind::ScaledObject)
                        .then(|| ctx.sos.get(&ObjectRef::new(&id.name).within(&id.namespace)))
                        .flatten();
                    let owned = objects.get(&id).zip(so).map(|(o, so)| {
                        let replicas = ctx.lookup.target_replicas(&so).unwrap_or((0, 0));
                        live::Owned {
                            state: Arc::clone(&o.state),
                            interval: o.interval,
                            so,
                            replicas,
                        }
                    });
                let _ = reply.send(owned);
            }
            changed = ownership.changed() => {
                if changed.is_err() {
                    break;
                }
                ownership.borrow_and_update();
                for id in all_objects(&ctx, &objects) {
                    reconcile(&ctx, &mut objects, &mut schedule, id, initial);
                }
            }
            Some((id, group, sources)) = done_rx.recv() => {
                ready.finished(&group);
                if let Some(obj) = objects.get_mut(&id) {
                    obj.group = obj.group.with_sources(sources);
                    obj.in_flight = false;
                    if std::mem::take(&mut obj.again) {
                        schedule.poll_now(&id, obj.interval, Instant::now());
                    }
                }
            }
            () = sleep_until(next_due) => {
                let now = Instant::now();
                while let Some((id, planned)) = schedule.pop_due(now) {
                    let Some(obj) = objects.get_mut(&id) else { continue };
                    if obj.in_flight {
                        ctx.stats.skipped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    obj.in_flight = true;
                    obj.queued = true;
                    ready.push(obj.group.clone(), (id, planned));
                }
            }
        }
        // Start what is due, as far as permits and the namespace and source caps allow: a
        // cycle's task exists only while it runs, so 10,000 objects due at once are 10,000
        // queue entries, not 10,000 parked futures.
        while !ready.is_empty() {
            let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                break;
            };
            let Some(((id, planned), group)) = ready.pop() else {
                break;
            };
            // Gone, or re-created since it was queued (its new entry is the live one).
            let Some(obj) = objects.get_mut(&id).filter(|o| o.queued) else {
                continue;
            };
            obj.queued = false;
            ready.started(&group);
            // The lag runs to the start, so a poll that waited for its namespace's or its
            // source's turn shows the wait as its own.
            let lag = Instant::now().saturating_duration_since(planned);
            ctx.stats.lag(lag);
            ctx.metrics.loop_latency(&id, lag);
            let (ctx, state, done) = (Arc::clone(&ctx), Arc::clone(&obj.state), done_tx.clone());
            // Every log line of a cycle names the object.
            let span = tracing::info_span!(
                "poll",
                kind = %id.kind,
                namespace = %id.namespace,
                name = %id.name
            );
            tokio::spawn(
                async move {
                    // The sources the poll called decide where its next one waits.
                    let ((), sources) =
                        ringscale_scalers::sources_used(cycle(&ctx, &id, &state)).await;
                    // The permit goes back before the loop hears of the end, so the loop
                    // can start the next queued cycle when it does.
                    drop(permit);
                    let _ = done.send((id, group, sources)).await;
                }
                .instrument(span),
            );
        }
    }
    for w in [so_watch, sj_watch, job_watch, pod_watch, hpa_watch]
        .into_iter()
        .flatten()
        .chain([events_task])
    {
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

/// Watches the objects of kind `K` in scope, keeping stores and telling the loop what changed.
fn watch_objects<K>(
    client: &Client,
    scope: &Scope,
    kind: Kind,
    tx: Inbox,
) -> (Scoped<K>, Vec<tokio::task::JoinHandle<()>>)
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    watch_scoped(
        client,
        scope.namespaces(),
        &scope.objects(),
        crate::lookup::slim,
        move |event: &watcher::Event<K>| match event {
            watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o) => {
                tx.changed(ObjectId::new(
                    kind,
                    o.namespace().unwrap_or_default(),
                    o.name_any(),
                ));
            }
            watcher::Event::InitDone => tx.resync(),
            watcher::Event::Init => {}
        },
    )
}

/// Every object the watches hold or the loop tracks.
fn all_objects(ctx: &Ctx, objects: &HashMap<ObjectId, Tracked>) -> Vec<ObjectId> {
    let id = |kind, o: &dyn ResourceName| ObjectId::new(kind, o.ns(), o.name());
    let mut ids: Vec<ObjectId> = ctx
        .sos
        .state()
        .iter()
        .map(|o| id(Kind::ScaledObject, o.as_ref()))
        .chain(
            ctx.sjs
                .state()
                .iter()
                .map(|o| id(Kind::ScaledJob, o.as_ref())),
        )
        .collect();
    ids.extend(objects.keys().cloned());
    ids.sort();
    ids.dedup();
    ids
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
            .filter(|(k, _)| !is_stamp(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        deleting: meta.deletion_timestamp.is_some(),
    }
}

fn reconcile(
    ctx: &Ctx,
    objects: &mut HashMap<ObjectId, Tracked>,
    schedule: &mut Schedule<ObjectId>,
    id: ObjectId,
    initial: bool,
) {
    let kind = id.kind;
    let found = match kind {
        Kind::ScaledObject => ctx
            .sos
            .get(&ObjectRef::new(&id.name).within(&id.namespace))
            .map(|o| (o.spec.polling_interval(), fingerprint(&o.metadata))),
        Kind::ScaledJob => ctx
            .sjs
            .get(&ObjectRef::new(&id.name).within(&id.namespace))
            .map(|o| (o.spec.polling_interval(), fingerprint(&o.metadata))),
    };
    let owned = ctx.ownership.borrow().owns(&id.ring_key());
    let Some((interval, print)) = found else {
        // Gone: forget it everywhere.
        if objects.remove(&id).is_some() {
            ctx.metrics.owning(kind, false);
        }
        schedule.remove(&id);
        ctx.metrics.forget(&id);
        ctx.records.remove_object(&id);
        return;
    };
    if !owned {
        if objects.remove(&id).is_some() {
            debug!(object = %id, "no longer owned");
            ctx.metrics.owning(kind, false);
            ctx.metrics.forget(&id);
        }
        schedule.remove(&id);
        return;
    }
    let interval = interval.max(Duration::from_secs(1));
    match objects.get_mut(&id) {
        Some(obj) => {
            // Changed spec or annotations: poll now (the cycle rebuilds what changed), or
            // right after the cycle that is running.
            obj.interval = interval;
            if obj.seen != print {
                obj.seen = print;
                if obj.in_flight {
                    obj.again = true;
                } else {
                    schedule.poll_now(&id, interval, Instant::now());
                }
            } else if !schedule.contains(&id) {
                schedule.poll_now(&id, interval, Instant::now());
            }
        }
        None => {
            ctx.metrics.owning(kind, true);
            objects.insert(
                id.clone(),
                Tracked {
                    state: Arc::new(Mutex::new(PollState::default())),
                    in_flight: false,
                    queued: false,
                    seen: print,
                    interval,
                    again: false,
                    group: Group::new(Arc::from(id.namespace.as_str()), Vec::new()),
                },
            );
            let now = Instant::now();
            if initial {
                schedule.insert_spread(
                    id,
                    interval,
                    now,
                    ctx.settings.first_poll_window,
                    rand::random::<f64>(),
                );
            } else {
                // Newly owned (a handover or a new object): poll now.
                schedule.insert(id, interval, now);
            }
        }
    }
}

/// Whether this replica may still act on the object at the cycle's ring generation.
fn owns_at(ctx: &Ctx, id: &ObjectId, generation: u64) -> bool {
    let o = ctx.ownership.borrow();
    o.generation() == generation && o.may_act(&id.ring_key())
}

/// [`owns_at`], with the ring's answer at `generation` remembered in `owned_at`.
fn owns_at_remembered(
    ctx: &Ctx,
    id: &ObjectId,
    generation: u64,
    owned_at: &mut Option<u64>,
) -> bool {
    if *owned_at == Some(generation) {
        // What `may_act` checks besides the ring: the member Lease held and not past its
        // renew deadline.
        let o = ctx.ownership.borrow();
        return o.generation() == generation && o.active && o.lease_valid();
    }
    let owned = owns_at(ctx, id, generation);
    if owned {
        *owned_at = Some(generation);
    }
    owned
}

fn fence_of(meta: &ObjectMeta) -> u64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(FENCE_ANNOTATION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The member named by an object's ownership stamp.
fn owner_of(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(OWNER_ANNOTATION))
        .map(String::as_str)
}

use ringscale_coordinator::{is_conflict, is_not_found};

/// One poll of one object, start to end.
async fn cycle(ctx: &Ctx, id: &ObjectId, state: &Mutex<PollState>) {
    ctx.stats.cycles.fetch_add(1, Ordering::Relaxed);
    let generation = ctx.ownership.borrow().generation();
    let mut state = state.lock().await;
    if !owns_at_remembered(ctx, id, generation, &mut state.owned_at) {
        return;
    }
    // The resourceVersion the cycle worked on, kept only when a write for it was refused.
    let refused = |result: &Result<(), CycleError>, meta: &ObjectMeta| {
        matches!(result, Err(CycleError::Conflict(_)))
            .then(|| meta.resource_version.clone())
            .flatten()
    };
    let (result, version) = match id.kind {
        Kind::ScaledObject => match ctx.sos.get(&ObjectRef::new(&id.name).within(&id.namespace)) {
            Some(so) => match fresh(ctx, id, &so, &mut state).await {
                Ok(so) => {
                    let result = run_cycle(ctx, id, &so, &mut state, generation).await;
                    let version = refused(&result, &so.metadata);
                    (result, version)
                }
                Err(e) => (Err(e), None),
            },
            None => return,
        },
        Kind::ScaledJob => match ctx.sjs.get(&ObjectRef::new(&id.name).within(&id.namespace)) {
            Some(sj) => match fresh(ctx, id, &sj, &mut state).await {
                Ok(sj) => {
                    let result = scaled_job::run_cycle(ctx, id, &sj, &mut state, generation).await;
                    let version = refused(&result, &sj.metadata);
                    (result, version)
                }
                Err(e) => (Err(e), None),
            },
            None => return,
        },
    };
    let object = || format!("{}/{}", id.namespace, id.name);
    match result {
        Ok(()) => ctx.health.succeeded(),
        Err(CycleError::Fenced(why)) => {
            ctx.stats.fenced.fetch_add(1, Ordering::Relaxed);
            ctx.health
                .failed(crate::health::Category::Fenced, &object(), &why);
            debug!(object = %id, why, "write fenced");
        }
        Err(CycleError::Conflict(what)) => {
            // Not repeated with the same resourceVersion: the next cycle reads the object again
            // unless the watch has brought a newer one by then.
            state.stale_version = version;
            ctx.stats.fenced.fetch_add(1, Ordering::Relaxed);
            ctx.health
                .failed(crate::health::Category::Conflict, &object(), &what);
            debug!(object = %id, what, "write refused: the object changed since it was read");
        }
        Err(CycleError::Api(what, e)) => {
            let category = crate::health::Category::of(&e);
            ctx.health
                .failed(category, &object(), &format_args!("{what}: {e}"));
            debug!(object = %id, what, error = %e, "API call failed; retrying next poll");
        }
    }
}

/// The object a cycle works on: the cached one — or the one this replica wrote while the cache
/// still holds the version that write replaced — unless a write for that very version was
/// refused (409): then the API server's current one.
async fn fresh<K>(
    ctx: &Ctx,
    id: &ObjectId,
    cached: &Arc<K>,
    state: &mut PollState,
) -> Result<Arc<K>, CycleError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let mut current = Arc::clone(cached);
    match state.written.take() {
        Some((replaced, written))
            if cached.meta().resource_version.as_deref() == Some(replaced.as_str()) =>
        {
            if let Ok(object) = Arc::clone(&written).downcast::<K>() {
                current = object;
            }
            state.written = Some((replaced, written));
        }
        _ => {}
    }
    let Some(stale) = state.stale_version.take() else {
        return Ok(current);
    };
    if current.meta().resource_version.as_deref() != Some(stale.as_str()) {
        return Ok(current);
    }
    state.written = None;
    match Api::<K>::namespaced(ctx.client.clone(), &id.namespace)
        .get(&id.name)
        .await
    {
        Ok(read) => Ok(Arc::new(read)),
        Err(e) => {
            state.stale_version = Some(stale);
            Err(CycleError::Api("read the object again after a conflict", e))
        }
    }
}

enum CycleError {
    /// Another replica owns the object (or stamped it at a newer generation).
    Fenced(&'static str),
    /// A write was refused because the object changed since it was read (409).
    Conflict(&'static str),
    Api(&'static str, kube::Error),
}

fn api(what: &'static str) -> impl Fn(kube::Error) -> CycleError {
    move |e| {
        if is_conflict(&e) {
            CycleError::Conflict(what)
        } else {
            CycleError::Api(what, e)
        }
    }
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

#[cfg(test)]
mod inbox_tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn reports_never_wait_and_coalesce_per_object() {
        let (inbox, _queries) = Inbox::new();
        // A watch's initial list of 20,000 objects (each seen twice) while nobody reads: every
        // report returns at once (this test would hang on a bounded queue), and the loop finds
        // each object once.
        let reporter = tokio::spawn({
            let inbox = inbox.clone();
            async move {
                for round in 0..2 {
                    for i in 0..20_000 {
                        inbox.changed(ObjectId::scaled_object("ns", format!("so-{i}")));
                    }
                    if round == 0 {
                        inbox.resync();
                    }
                }
                inbox.pushed(ObjectId::scaled_job("ns", "job"));
            }
        });
        tokio::time::timeout(Duration::from_secs(1), reporter)
            .await
            .expect("reporting never waits for the reader")
            .expect("the reporter does not panic");
        // The loop is woken once for all of it.
        tokio::time::timeout(Duration::from_secs(1), inbox.0.wake.notified())
            .await
            .expect("the reader is woken");
        let pending = inbox.take();
        assert_eq!(pending.changed.len(), 20_000);
        assert!(pending.resync);
        assert_eq!(
            pending.pushed.into_iter().collect::<Vec<_>>(),
            vec![ObjectId::scaled_job("ns", "job")]
        );
        let empty = inbox.take();
        assert!(empty.changed.is_empty() && !empty.resync && empty.pushed.is_empty());
    }

    #[tokio::test]
    async fn a_live_query_gets_none_once_the_loop_is_gone() {
        let (inbox, queries) = Inbox::new();
        drop(queries);
        assert!(
            inbox
                .owned(ObjectId::scaled_object("ns", "so"))
                .await
                .is_none()
        );
    }
}
