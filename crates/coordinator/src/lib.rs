//! Ring membership on the Kubernetes API: member Leases, coordinator election, and the published
//! ring.
//!
//! Every replica holds a member Lease (`<ring>-member-<name>`, labelled with the ring, annotated
//! with its replication address), renewed every retry period. A replica that has not renewed
//! within the renew deadline stops owned work ([`Ownership::active`] goes false) — before any
//! other replica can consider its Lease expired, which takes a full lease duration without
//! change as seen on the observer's own clock.
//!
//! One replica is the coordinator (the `<ring>-coordinator` Lease, same timings). It publishes
//! the ring — a generation and the members — in the `<ring>-ring` ConfigMap with optimistic
//! concurrency, so two coordinators can never publish different rings with one generation. It
//! bumps the generation when a member joins, leaves gracefully (deletes its Lease), or is found
//! dead; it declares a member dead only after taking over its expired Lease with a
//! compare-and-swap (which fails if the member renewed meanwhile), and then deletes that Lease.
//!
//! Leader election is a short in-house loop on kube's Lease API rather than the
//! `kube-leader-election` crate: that crate's current release is built on kube 4 while ringscale
//! uses kube 5, and it judges expiry from the holder's `renewTime` against the local wall clock,
//! where these invariants need expiry judged by the observer's monotonic clock (as client-go does)
//! so that clock skew between nodes cannot make a live member look dead.
//!
//! The rest of the process sees the outcome as a `watch` channel of [`Ownership`].

pub mod api_errors;
mod backoff;
mod objects;

pub use api_errors::{ApiErrorKind, is_conflict, is_not_found};
pub use backoff::WatchBackoff;

pub use objects::{
    ADDRESS_ANNOTATION, LEAVING_ANNOTATION, MEMBER_LABEL, Published, RING_LABEL, ROLE_LABEL,
    TAKEN_OVER_ANNOTATION, coordinator_lease_name, decode_ring, is_leaving, member_lease_name,
    publish_ring, ring_configmap_name,
};

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use ringscale_ring::{Member, ObjectKey, Ring, RingState};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use objects::{
    delete_lease, holder, member_of, new_lease, renewed, replace_lease, resource_version, taken,
};

/// The longest leave grace: a stopped member's objects go unpolled that long at most.
const MAX_LEAVE_GRACE: Duration = Duration::from_secs(300);

/// How a replica takes part in a ring.
#[derive(Clone, Debug)]
pub struct Config {
    /// The ring's name (one namespace may hold several rings).
    pub ring: String,
    /// Namespace of the Leases and the ring ConfigMap.
    pub namespace: String,
    /// This replica's member name (its pod name in a StatefulSet).
    pub member: String,
    /// This replica's replication address, published to peers.
    pub address: String,
    /// How long a Lease lasts without renewal before others may take it over.
    pub lease_duration: Duration,
    /// How long a holder may go without a successful renewal before it stops acting.
    pub renew_deadline: Duration,
    /// How often Leases are renewed (and the coordinator checks members).
    pub retry_period: Duration,
    /// Bound on each API call.
    pub request_timeout: Duration,
    /// Whether this replica stands for coordinator.
    pub candidate: bool,
    /// How long the ring keeps a gracefully stopped member's objects for it (its Lease marked
    /// leaving) before moving them to the others; zero moves them at once (the Lease is deleted).
    pub leave_grace: Duration,
}

impl Config {
    /// Defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(ring: &str, namespace: &str, member: &str, address: &str) -> Self {
        Config {
            ring: ring.to_owned(),
            namespace: namespace.to_owned(),
            member: member.to_owned(),
            address: address.to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            candidate: true,
            leave_grace: Duration::from_secs(10),
        }
    }

    /// Checks the timings: retry < renew deadline < lease duration, as client-go requires, so a
    /// holder stops acting before anyone may take its Lease over.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.retry_period.is_zero() {
            return Err(ConfigError::ZeroRetryPeriod);
        }
        if self.renew_deadline <= self.retry_period {
            return Err(ConfigError::RenewDeadlineNotAboveRetry(
                self.renew_deadline,
                self.retry_period,
            ));
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(ConfigError::LeaseNotAboveRenewDeadline(
                self.lease_duration,
                self.renew_deadline,
            ));
        }
        if self.leave_grace > MAX_LEAVE_GRACE {
            return Err(ConfigError::LeaveGraceTooLong(self.leave_grace));
        }
        if self.lease_duration.as_secs() == 0 {
            return Err(ConfigError::LeaseUnderOneSecond);
        }
        Ok(())
    }
}

/// Why a coordinator [`Config`] cannot keep its promise (a holder stops acting before anyone
/// may take its Lease over).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A zero retry period would renew in a busy loop.
    #[error("the retry period must be above zero")]
    ZeroRetryPeriod,
    /// The renew deadline must exceed the retry period.
    #[error("the renew deadline ({0:?}) must exceed the retry period ({1:?})")]
    RenewDeadlineNotAboveRetry(Duration, Duration),
    /// The lease duration must exceed the renew deadline.
    #[error("the lease duration ({0:?}) must exceed the renew deadline ({1:?})")]
    LeaseNotAboveRenewDeadline(Duration, Duration),
    /// The leave grace is over [`MAX_LEAVE_GRACE`].
    #[error("the leave grace ({0:?}) must be at most 5 minutes: objects go unpolled meanwhile")]
    LeaveGraceTooLong(Duration),
    /// Leases count whole seconds.
    #[error("the lease duration must be at least 1 s (Leases count whole seconds)")]
    LeaseUnderOneSecond,
}

/// What this replica may do, as of the latest ring.
#[derive(Clone, Debug)]
pub struct Ownership {
    /// This replica's member name.
    pub member: Arc<str>,
    /// The published ring.
    pub ring: Arc<Ring>,
    /// Whether this replica holds a valid member Lease; when false it must not poll or write.
    pub active: bool,
    /// Whether this replica is the coordinator.
    pub coordinator: bool,
    /// Until when the member Lease lets this replica act (its renew deadline), on the monotonic
    /// clock; `None` when unknown (then `active` alone decides). Checked on every ownership test,
    /// so a process that was frozen past its deadline refuses to act the moment it resumes,
    /// before its watchdog has run.
    pub valid_until: watch::Receiver<Option<Instant>>,
}

impl Ownership {
    /// The ring generation.
    pub fn generation(&self) -> u64 {
        self.ring.generation()
    }

    /// Whether `key` is this replica's work: the member Lease is held and the ring assigns it
    /// here. Decides what a replica schedules; a write also needs [`Ownership::may_act`].
    pub fn owns(&self, key: &ObjectKey) -> bool {
        self.active && self.ring.owns(&self.member, key)
    }

    /// Whether this replica may write for `key` at this instant: it owns it and its member
    /// Lease's renew deadline has not passed. Checked right before every write, so a process
    /// frozen past its deadline (SIGSTOP, a long pause) refuses to act the moment it resumes,
    /// before its watchdog task has run.
    pub fn may_act(&self, key: &ObjectKey) -> bool {
        self.owns(key) && self.lease_valid()
    }

    /// Whether the member Lease's renew deadline has not passed (true when unknown).
    pub fn lease_valid(&self) -> bool {
        self.valid_until
            .borrow()
            .is_none_or(|until| Instant::now() < until)
    }

    /// The member that owns `key`.
    pub fn owner(&self, key: &ObjectKey) -> Option<&Member> {
        self.ring.owner(key)
    }
}

struct Observed {
    lease: Lease,
    /// When this replica saw the Lease's current resourceVersion first (its own clock).
    since: Instant,
}

#[derive(Default)]
struct State {
    leases: HashMap<String, Observed>,
    leases_synced: bool,
    published: Option<Published>,
    member_active: bool,
    coordinator_until: Option<Instant>,
    /// Whether this replica's last call on its own Leases failed (API server unreachable, or
    /// refusing it). The first success after restarts every Lease's clock.
    unreachable: bool,
}

impl State {
    /// Notes a Lease as read from the API at `now`: its clock restarts when its
    /// resourceVersion changed.
    fn observe(&mut self, lease: Lease, now: Instant) {
        let name = lease.name_any();
        let same = self
            .leases
            .get(&name)
            .is_some_and(|seen| resource_version(&seen.lease) == resource_version(&lease));
        if !same {
            self.leases.insert(name, Observed { lease, since: now });
        }
    }
}

struct Shared {
    config: Config,
    leases: Api<Lease>,
    configmaps: Api<ConfigMap>,
    state: Mutex<State>,
    ownership: watch::Sender<Ownership>,
    member_valid_until: watch::Sender<Option<Instant>>,
    reconcile: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Exports the ring as this replica follows it.
struct RingCollector(watch::Receiver<Ownership>);

impl std::fmt::Debug for RingCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RingCollector")
    }
}

impl prometheus_client::collector::Collector for RingCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> std::fmt::Result {
        use prometheus_client::encoding::EncodeMetric as _;
        use prometheus_client::metrics::gauge::ConstGauge;
        let (generation, members) = {
            let o = self.0.borrow();
            (o.generation(), o.ring.members().len())
        };
        for (name, help, value) in [
            (
                "ringscale_ring_generation",
                "Generation of the ring this replica follows",
                i64::try_from(generation).unwrap_or(i64::MAX),
            ),
            (
                "ringscale_ring_members",
                "Members of the ring",
                i64::try_from(members).unwrap_or(i64::MAX),
            ),
        ] {
            let g = ConstGauge::new(value);
            let metric = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(metric)?;
        }
        Ok(())
    }
}

/// A replica's membership, running.
pub struct Coordinator {
    shared: Arc<Shared>,
    /// The running loops, each with its name (for [`Coordinator::stopped`]).
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("member", &self.shared.config.member)
            .field("ring", &self.shared.config.ring)
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// Starts taking part in the ring: the member Lease, the watches, and (if a candidate) the
    /// coordinator election.
    pub fn start(client: Client, config: Config) -> Result<Coordinator, ConfigError> {
        config.validate()?;
        let leases = Api::namespaced(client.clone(), &config.namespace);
        let configmaps = Api::namespaced(client, &config.namespace);
        let member_valid_until = watch::channel(None).0;
        let initial = Ownership {
            member: Arc::from(config.member.as_str()),
            ring: Arc::new(Ring::new(RingState::default())),
            active: false,
            coordinator: false,
            valid_until: member_valid_until.subscribe(),
        };
        let shared = Arc::new(Shared {
            config,
            leases,
            configmaps,
            state: Mutex::new(State::default()),
            ownership: watch::channel(initial).0,
            member_valid_until,
            reconcile: Notify::new(),
        });
        let mut tasks = vec![
            (
                "Lease watch",
                tokio::spawn(Arc::clone(&shared).watch_leases()),
            ),
            ("ring watch", tokio::spawn(Arc::clone(&shared).watch_ring())),
            (
                "member Lease loop",
                tokio::spawn(Arc::clone(&shared).member_loop()),
            ),
            (
                "lease watchdog",
                tokio::spawn(Arc::clone(&shared).watchdog()),
            ),
        ];
        if shared.config.candidate {
            tasks.push((
                "coordinator election loop",
                tokio::spawn(Arc::clone(&shared).coordinator_loop()),
            ));
        }
        Ok(Coordinator { shared, tasks })
    }

    /// The ownership channel.
    pub fn ownership(&self) -> watch::Receiver<Ownership> {
        self.shared.ownership.subscribe()
    }

    /// Registers the ring's series in `registry`: `ringscale_ring_generation` and
    /// `ringscale_ring_members`, as this replica follows the ring (read at scrape).
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register_collector(Box::new(RingCollector(self.ownership())));
    }

    /// Resolves when one of the coordinator's loops ends (they run until shutdown), naming it
    /// and how it ended: the replica cannot keep its membership without them.
    pub async fn stopped(&mut self) -> String {
        if self.tasks.is_empty() {
            return std::future::pending().await;
        }
        let (result, index, _) =
            futures_util::future::select_all(self.tasks.iter_mut().map(|(_, task)| task)).await;
        // Ended: nothing is left to abort or poll.
        let (name, _) = self.tasks.remove(index);
        match result {
            Ok(()) => format!("the {name} ended"),
            Err(e) => format!("the {name} failed: {e}"),
        }
    }

    /// Leaves the ring gracefully: stops acting, removes itself from the ring if it is the
    /// coordinator, deletes its member Lease and releases the coordinator Lease. Each API call is
    /// bounded by the request timeout.
    pub async fn shutdown(mut self) {
        for (_, task) in self.tasks.drain(..) {
            task.abort();
        }
        let shared = &self.shared;
        let was_coordinator = {
            let mut state = lock(&shared.state);
            state.member_active = false;
            let valid = state.coordinator_until.is_some_and(|t| Instant::now() < t);
            state.coordinator_until = None;
            valid
        };
        shared.update_ownership();
        let timeout = shared.config.request_timeout;
        let member_lease = member_lease_name(&shared.config.ring, &shared.config.member);
        let coordinator_lease = coordinator_lease_name(&shared.config.ring);
        if shared.config.leave_grace.is_zero() {
            if was_coordinator {
                // Publish the ring without this replica now, rather than leave it to the next
                // coordinator after an election.
                let _ = tokio::time::timeout(timeout, shared.publish_without_self()).await;
            }
            let _ = tokio::time::timeout(timeout, shared.release(&member_lease)).await;
            let _ = tokio::time::timeout(timeout, shared.release(&coordinator_lease)).await;
            info!(member = %shared.config.member, "left the ring");
            return;
        }
        // Leave the ring as it is for the grace: a replica restarting under the same name takes
        // its Lease, and its objects, back without a ring change. The coordinator Lease goes at
        // once so that another candidate coordinates meanwhile.
        let marked = tokio::time::timeout(timeout, shared.mark_leaving(&member_lease)).await;
        let _ = tokio::time::timeout(timeout, shared.release(&coordinator_lease)).await;
        match marked {
            Ok(true) => info!(
                member = %shared.config.member,
                grace_s = shared.config.leave_grace.as_secs_f64(),
                "stopped; the ring keeps this member's objects for the leave grace"
            ),
            _ => {
                info!(member = %shared.config.member, "stopped; the member lease could not be marked leaving, so it expires")
            }
        }
    }

    /// Stops every task without releasing anything, as a killed process would (tests).
    pub fn abort(mut self) {
        for (_, task) in self.tasks.drain(..) {
            task.abort();
        }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        for (_, task) in &self.tasks {
            task.abort();
        }
    }
}

impl Shared {
    fn member_lease(&self) -> String {
        member_lease_name(&self.config.ring, &self.config.member)
    }

    fn coordinator_lease(&self) -> String {
        coordinator_lease_name(&self.config.ring)
    }

    /// Recomputes the ownership value and sends it when it changed.
    fn update_ownership(&self) {
        let (state, active, coordinator) = {
            let state = lock(&self.state);
            let coordinator = state.coordinator_until.is_some_and(|t| Instant::now() < t);
            (
                state.published.as_ref().map(|p| p.state.clone()),
                state.member_active,
                coordinator,
            )
        };
        self.ownership.send_if_modified(|o| {
            let mut changed = false;
            if let Some(state) = state
                && *o.ring.state() != state
            {
                o.ring = Arc::new(Ring::new(state));
                changed = true;
            }
            if o.active != active {
                o.active = active;
                changed = true;
            }
            if o.coordinator != coordinator {
                o.coordinator = coordinator;
                changed = true;
            }
            changed
        });
    }

    /// A call on this replica's own Leases failed for a reason other than losing them.
    fn api_failed(&self) {
        lock(&self.state).unreachable = true;
    }

    /// A call on this replica's own Leases was answered. After a failure this restarts every
    /// Lease's clock: while this replica could not reach the API server, nobody could be seen
    /// renewing, and time that passed unseen must not expire anyone's Lease — every member gets
    /// a full lease duration from now to renew.
    fn api_reached(&self) {
        let mut state = lock(&self.state);
        if !state.unreachable {
            return;
        }
        state.unreachable = false;
        let now = Instant::now();
        for seen in state.leases.values_mut() {
            seen.since = now;
        }
        info!("the API server answers again; lease clocks restarted");
    }

    /// Whether `lease` has sat unchanged for a full lease duration, as seen from here.
    fn expired(&self, lease: &Lease) -> bool {
        let name = lease.name_any();
        let mut state = lock(&self.state);
        let rv = resource_version(lease).map(str::to_owned);
        let now = Instant::now();
        match state.leases.get(&name) {
            Some(seen) if resource_version(&seen.lease).map(str::to_owned) == rv => {
                now.saturating_duration_since(seen.since) >= lease_duration_of(lease, &self.config)
            }
            _ => {
                state.leases.insert(
                    name,
                    Observed {
                        lease: lease.clone(),
                        since: now,
                    },
                );
                false
            }
        }
    }

    // ---- watches ----

    async fn watch_leases(self: Arc<Self>) {
        let selector = format!("{RING_LABEL}={}", self.config.ring);
        let config = watcher::Config::default().labels(&selector);
        let mut stream = watcher(self.leases.clone(), config)
            .backoff(WatchBackoff::new())
            .boxed();
        let mut relisting: Option<HashSet<String>> = None;
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    debug!(error = %e, "lease watch interrupted");
                    continue;
                }
            };
            {
                let mut state = lock(&self.state);
                let now = Instant::now();
                match event {
                    watcher::Event::Init => relisting = Some(HashSet::new()),
                    watcher::Event::InitApply(lease) => {
                        if let Some(seen) = relisting.as_mut() {
                            seen.insert(lease.name_any());
                        }
                        state.observe(lease, now);
                    }
                    watcher::Event::InitDone => {
                        if let Some(seen) = relisting.take() {
                            state.leases.retain(|name, _| seen.contains(name));
                        }
                        state.leases_synced = true;
                    }
                    watcher::Event::Apply(lease) => state.observe(lease, now),
                    watcher::Event::Delete(lease) => {
                        state.leases.remove(&lease.name_any());
                    }
                }
            }
            self.reconcile.notify_one();
        }
    }

    async fn watch_ring(self: Arc<Self>) {
        let fields = format!("metadata.name={}", ring_configmap_name(&self.config.ring));
        let config = watcher::Config::default().fields(&fields);
        let mut stream = watcher(self.configmaps.clone(), config)
            .backoff(WatchBackoff::new())
            .boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => {
                    self.adopt_ring(&cm);
                }
                Ok(watcher::Event::Delete(_)) => {
                    // Keep the generation: the next coordinator recreates the ConfigMap above it.
                    if let Some(p) = lock(&self.state).published.as_mut() {
                        p.resource_version = None;
                    }
                    self.reconcile.notify_one();
                }
                Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                Err(e) => debug!(error = %e, "ring watch interrupted"),
            }
        }
    }

    /// Reads the ring ConfigMap from the API server and adopts it; false when it could not be
    /// read (a missing ConfigMap is fine: no ring published yet).
    async fn read_ring(&self) -> bool {
        let name = ring_configmap_name(&self.config.ring);
        match tokio::time::timeout(self.config.request_timeout, self.configmaps.get_opt(&name))
            .await
        {
            Ok(Ok(Some(cm))) => {
                self.adopt_ring(&cm);
                true
            }
            Ok(Ok(None)) => true,
            Ok(Err(e)) => {
                warn!(error = %e, "could not read the ring before acting");
                false
            }
            Err(_) => {
                warn!("reading the ring before acting timed out");
                false
            }
        }
    }

    /// Takes a ring read from the API if it is not older than the one held.
    fn adopt_ring(&self, cm: &ConfigMap) {
        match decode_ring(cm) {
            Ok(p) => {
                {
                    let mut state = lock(&self.state);
                    let newer = state.published.as_ref().is_none_or(|held| {
                        p.state.generation > held.state.generation
                            || (p.state.generation == held.state.generation
                                && held.resource_version != p.resource_version)
                    });
                    if newer {
                        debug!(
                            generation = p.state.generation,
                            members = p.state.members.len(),
                            "ring"
                        );
                        state.published = Some(p);
                    }
                }
                self.update_ownership();
            }
            Err(e) => warn!(error = %e, "ignoring an unreadable ring"),
        }
    }

    // ---- the member Lease ----

    async fn member_loop(self: Arc<Self>) {
        let mut own: Option<Lease> = None;
        let mut tick = tokio::time::interval(self.config.retry_period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let started = Instant::now();
            let outcome =
                tokio::time::timeout(self.config.request_timeout, self.renew_member(&mut own))
                    .await;
            if matches!(outcome, Ok(Ok(_))) {
                self.api_reached();
            } else {
                self.api_failed();
            }
            match outcome {
                Ok(Ok(true)) => {
                    let valid_until = started + self.config.renew_deadline;
                    // Only a renewal that completed within the deadline counts.
                    if Instant::now() < valid_until {
                        // Inactive until now (start, or a lapse: the process may have been
                        // frozen while the ring moved on): take the ring as the API server has
                        // it now before acting, never the one held from before the lapse.
                        let lapsed = self
                            .member_valid_until
                            .borrow()
                            .is_none_or(|until| started >= until);
                        if lapsed {
                            // The watchdog may not have run yet after a freeze.
                            self.set_inactive("no renewal within the renew deadline");
                        }
                        let was_active = lock(&self.state).member_active;
                        if !was_active && !self.read_ring().await {
                            continue;
                        }
                        if Instant::now() >= valid_until {
                            continue;
                        }
                        self.member_valid_until.send_replace(Some(valid_until));
                        let changed = {
                            let mut state = lock(&self.state);
                            let was = state.member_active;
                            state.member_active = true;
                            !was
                        };
                        if changed {
                            info!(member = %self.config.member, "holding the member lease");
                            self.update_ownership();
                        }
                    }
                }
                Ok(Ok(false)) => {
                    self.member_valid_until.send_replace(None);
                    self.set_inactive("the member lease is held by another (taken over)");
                }
                Ok(Err(e)) => warn!(error = %e, "could not renew the member lease"),
                Err(_) => warn!(
                    timeout_ms = self.config.request_timeout.as_millis(),
                    "renewing the member lease timed out"
                ),
            }
        }
    }

    fn set_inactive(&self, why: &str) {
        let changed = {
            let mut state = lock(&self.state);
            let was = state.member_active;
            state.member_active = false;
            was
        };
        if changed {
            warn!(member = %self.config.member, reason = why, "stopping owned work");
            self.update_ownership();
        }
    }

    /// Stops owned work the moment the renew deadline passes without a renewal, even while a
    /// renewal call hangs.
    async fn watchdog(self: Arc<Self>) {
        let mut valid_until = self.member_valid_until.subscribe();
        loop {
            let deadline = *valid_until.borrow_and_update();
            match deadline {
                Some(deadline) => {
                    tokio::select! {
                        changed = valid_until.changed() => if changed.is_err() { return },
                        () = tokio::time::sleep_until(deadline) => {
                            self.set_inactive("no renewal within the renew deadline");
                            if valid_until.changed().await.is_err() {
                                return;
                            }
                        }
                    }
                }
                None => {
                    if valid_until.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Renews the Lease this replica last wrote, at that write's resourceVersion. `Ok(true)`:
    /// renewed; `Ok(false)`: it changed or went (read it again); other errors keep it for the
    /// next attempt.
    async fn renew_held(&self, own: &mut Option<Lease>) -> Result<bool, kube::Error> {
        let Some(lease) = own.take() else {
            return Ok(false);
        };
        match replace_lease(
            &self.leases,
            &renewed(lease.clone(), self.config.lease_duration),
        )
        .await
        {
            Ok(l) => {
                *own = Some(l);
                Ok(true)
            }
            Err(e) if is_conflict(&e) || is_not_found(&e) => Ok(false),
            Err(e) => {
                *own = Some(lease);
                Err(e)
            }
        }
    }

    /// One renewal. `Ok(true)`: this replica holds its member Lease; `Ok(false)`: someone else
    /// holds it (the coordinator took it over: this replica was declared dead).
    async fn renew_member(&self, own: &mut Option<Lease>) -> Result<bool, kube::Error> {
        let duration = self.config.lease_duration;
        if self.renew_held(own).await? {
            return Ok(true);
        }
        let name = self.member_lease();
        let me = self.config.member.as_str();
        match self.leases.get_opt(&name).await? {
            None => {
                let lease = new_lease(
                    &name,
                    &self.config.ring,
                    "member",
                    me,
                    duration,
                    Some(&self.config.address),
                );
                match self.leases.create(&PostParams::default(), &lease).await {
                    Ok(l) => {
                        info!(member = me, address = %self.config.address, "joined the ring");
                        *own = Some(l);
                        Ok(true)
                    }
                    Err(e) if is_conflict(&e) => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Some(lease) if holder(&lease) == Some(me) => {
                // Ours (a restart with the same name, maybe within the leave grace): renew it,
                // with the current address, no longer leaving.
                let mut lease = renewed(lease, duration);
                let came_back = lease.annotations_mut().remove(LEAVING_ANNOTATION).is_some();
                lease
                    .annotations_mut()
                    .insert(ADDRESS_ANNOTATION.to_owned(), self.config.address.clone());
                if came_back {
                    info!(
                        member = me,
                        "back within the leave grace: the ring kept this member's objects"
                    );
                }
                let l = replace_lease(&self.leases, &lease).await?;
                *own = Some(l);
                Ok(true)
            }
            Some(lease) => {
                // Taken over. The coordinator deletes it; if nobody does, take it back once it
                // has sat unchanged for a lease duration.
                if self.expired(&lease) {
                    let mut lease = taken(lease, me, duration);
                    lease.annotations_mut().remove(TAKEN_OVER_ANNOTATION);
                    lease
                        .annotations_mut()
                        .insert(ADDRESS_ANNOTATION.to_owned(), self.config.address.clone());
                    match replace_lease(&self.leases, &lease).await {
                        Ok(l) => {
                            *own = Some(l);
                            Ok(true)
                        }
                        Err(e) if is_conflict(&e) => Ok(false),
                        Err(e) => Err(e),
                    }
                } else {
                    Ok(false)
                }
            }
        }
    }

    /// Marks this replica's member Lease as leaving (`true` when done).
    /// A renewal the aborted renew task had already sent may land between the read and the
    /// write here: a write refused with 409 is tried once more on the Lease read again.
    async fn mark_leaving(&self, name: &str) -> bool {
        let me = self.config.member.as_str();
        for attempt in 0..2 {
            let mut lease = match self.leases.get_opt(name).await {
                Ok(Some(lease)) if holder(&lease) == Some(me) => lease,
                Ok(_) => return false,
                Err(e) => {
                    warn!(lease = name, error = %e, "could not mark the member lease leaving");
                    return false;
                }
            };
            lease.annotations_mut().insert(
                LEAVING_ANNOTATION.to_owned(),
                self.config.leave_grace.as_secs().max(1).to_string(),
            );
            match replace_lease(&self.leases, &lease).await {
                Ok(_) => return true,
                Err(e) if is_conflict(&e) && attempt == 0 => {}
                Err(e) => {
                    warn!(lease = name, error = %e, "could not mark the member lease leaving");
                    return false;
                }
            }
        }
        false
    }

    /// Deletes a Lease this replica holds.
    async fn release(&self, name: &str) {
        match self.leases.get_opt(name).await {
            Ok(Some(lease)) if holder(&lease) == Some(self.config.member.as_str()) => {
                if let Err(e) = delete_lease(&self.leases, &lease).await {
                    warn!(lease = name, error = %e, "could not release a lease");
                }
            }
            Ok(_) => {}
            Err(e) => warn!(lease = name, error = %e, "could not release a lease"),
        }
    }

    // ---- the coordinator ----

    /// Runs only on candidates (see [`Coordinator::start`]).
    async fn coordinator_loop(self: Arc<Self>) {
        let mut own: Option<Lease> = None;
        let mut tick = tokio::time::interval(self.config.retry_period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_attempt: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.reconcile.notified() => {}
            }
            // Renew at most once per retry period; events in between only reconcile.
            let due = last_attempt.is_none_or(|t| t.elapsed() >= self.config.retry_period);
            if due {
                last_attempt = Some(Instant::now());
                let started = Instant::now();
                let outcome = tokio::time::timeout(
                    self.config.request_timeout,
                    self.renew_coordinator(&mut own),
                )
                .await;
                if matches!(outcome, Ok(Ok(_))) {
                    self.api_reached();
                } else {
                    self.api_failed();
                }
                let became = match outcome {
                    Ok(Ok(true)) => {
                        let until = started + self.config.renew_deadline;
                        let mut state = lock(&self.state);
                        let was = state.coordinator_until.is_some_and(|t| Instant::now() < t);
                        state.coordinator_until = Some(until);
                        (!was).then_some(true)
                    }
                    Ok(Ok(false)) => {
                        let mut state = lock(&self.state);
                        let was = state.coordinator_until.take().is_some();
                        was.then_some(false)
                    }
                    Ok(Err(e)) => {
                        warn!(error = %e, "could not renew the coordinator lease");
                        None
                    }
                    Err(_) => {
                        warn!("renewing the coordinator lease timed out");
                        None
                    }
                };
                match became {
                    Some(true) => info!(member = %self.config.member, "became the coordinator"),
                    Some(false) => info!(member = %self.config.member, "no longer the coordinator"),
                    None => {}
                }
                self.update_ownership();
            }
            let coordinating = lock(&self.state)
                .coordinator_until
                .is_some_and(|t| Instant::now() < t);
            if coordinating
                && tokio::time::timeout(self.config.request_timeout, self.reconcile_ring())
                    .await
                    .is_err()
            {
                warn!("publishing the ring timed out");
            }
        }
    }

    /// One attempt at the coordinator Lease. `Ok(true)`: this replica holds it.
    async fn renew_coordinator(&self, own: &mut Option<Lease>) -> Result<bool, kube::Error> {
        let duration = self.config.lease_duration;
        if self.renew_held(own).await? {
            return Ok(true);
        }
        let name = self.coordinator_lease();
        let me = self.config.member.as_str();
        let result = match self.leases.get_opt(&name).await? {
            None => {
                let lease = new_lease(&name, &self.config.ring, "coordinator", me, duration, None);
                self.leases.create(&PostParams::default(), &lease).await
            }
            Some(lease) if holder(&lease) == Some(me) => {
                replace_lease(&self.leases, &renewed(lease, duration)).await
            }
            Some(lease) if holder(&lease).is_none() || self.expired(&lease) => {
                replace_lease(&self.leases, &taken(lease, me, duration)).await
            }
            Some(_) => return Ok(false),
        };
        match result {
            Ok(l) => {
                *own = Some(l);
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The coordinator's round: declare expired members dead, let go of members whose leave
    /// grace ran out, then publish the ring if its members differ from the live members.
    ///
    /// Only while this replica itself holds its member Lease and its last call on its Leases was
    /// answered: it is then one of the live members, so the ring it publishes is never empty,
    /// and its clocks have restarted after any outage it saw (see [`Shared::api_reached`]).
    async fn reconcile_ring(&self) {
        let (alive, expired, departed, leftovers) = {
            let state = lock(&self.state);
            if !state.leases_synced || !state.member_active || state.unreachable {
                return;
            }
            let now = Instant::now();
            let mut alive = Vec::new();
            let mut expired = Vec::new();
            let mut departed = Vec::new();
            let mut leftovers = Vec::new();
            for seen in state.leases.values() {
                let lease = &seen.lease;
                let is_member_lease = lease
                    .labels()
                    .get(ROLE_LABEL)
                    .is_some_and(|r| r == "member");
                if !is_member_lease {
                    continue;
                }
                match member_of(lease) {
                    // This replica holds its own Lease (checked above): alive.
                    Some(member) if member.name == self.config.member => alive.push(member),
                    Some(member) => {
                        let age = now.saturating_duration_since(seen.since);
                        // A leaving member is not renewing: its grace, not the lease
                        // duration, says when it is gone.
                        if is_leaving(lease) {
                            if age >= self.grace_of(lease) {
                                departed.push((member, lease.clone()));
                            } else {
                                alive.push(member);
                            }
                        } else if age >= lease_duration_of(lease, &self.config) {
                            expired.push((member, lease.clone()));
                        } else {
                            alive.push(member);
                        }
                    }
                    // Taken over earlier but not deleted (the deletion failed): delete it now.
                    None if lease.annotations().contains_key(TAKEN_OVER_ANNOTATION) => {
                        leftovers.push(lease.clone());
                    }
                    None => {}
                }
            }
            (alive, expired, departed, leftovers)
        };
        let mut alive = alive;
        for (member, lease) in expired {
            match self.take_over(lease).await {
                Ok(true) => {
                    warn!(member = %member.name, "declared dead: its lease expired and was taken over");
                }
                // It renewed meanwhile: alive after all.
                Ok(false) => alive.push(member),
                Err(e) => {
                    // Unknown: keep it for now, retry next round.
                    warn!(member = %member.name, error = %e, "could not take over an expired lease");
                    alive.push(member);
                }
            }
        }
        for (member, lease) in departed {
            // A precondition on the resourceVersion: if the member came back meanwhile (it
            // renewed), the delete fails and it stays.
            match delete_lease(&self.leases, &lease).await {
                Ok(()) => {
                    info!(member = %member.name, "left the ring: its leave grace ran out");
                    lock(&self.state).leases.remove(&lease.name_any());
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    if is_conflict(&e) {
                        self.reread_lease(&lease.name_any()).await;
                    } else {
                        warn!(member = %member.name, error = %e, "could not remove a departed member's lease");
                    }
                    alive.push(member);
                }
            }
        }
        for lease in leftovers {
            let _ = delete_lease(&self.leases, &lease).await;
        }
        self.publish_members(alive).await;
    }

    /// How long a leaving member's objects are kept for it: the grace its Lease names (bounded
    /// by 5 minutes), else this replica's own.
    fn grace_of(&self, lease: &Lease) -> Duration {
        lease
            .annotations()
            .get(LEAVING_ANNOTATION)
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(self.config.leave_grace, |s| {
                Duration::from_secs(s).min(MAX_LEAVE_GRACE)
            })
    }

    /// Reads a Lease again after a write on it was refused (409), so that the next attempt does
    /// not repeat the stale resourceVersion; a changed Lease restarts its clock.
    async fn reread_lease(&self, name: &str) {
        match self.leases.get_opt(name).await {
            Ok(Some(lease)) => lock(&self.state).observe(lease, Instant::now()),
            Ok(None) => {
                lock(&self.state).leases.remove(name);
            }
            Err(e) => debug!(lease = name, error = %e, "could not read a lease again"),
        }
    }

    /// Takes over a member's expired Lease (CAS; `Ok(false)` if the member renewed first), then
    /// deletes it.
    async fn take_over(&self, lease: Lease) -> Result<bool, kube::Error> {
        let name = lease.name_any();
        let mut lease = taken(lease, &self.config.member, self.config.lease_duration);
        lease
            .annotations_mut()
            .insert(TAKEN_OVER_ANNOTATION.to_owned(), self.config.member.clone());
        let taken = match replace_lease(&self.leases, &lease).await {
            Ok(l) => l,
            Err(e) if is_conflict(&e) || is_not_found(&e) => {
                self.reread_lease(&name).await;
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        if let Err(e) = delete_lease(&self.leases, &taken).await
            && !is_not_found(&e)
        {
            debug!(error = %e, "could not delete a taken-over lease; will retry");
        }
        Ok(true)
    }

    async fn publish_members(&self, mut members: Vec<Member>) {
        members.sort();
        members.dedup_by(|a, b| a.name == b.name);
        let current = lock(&self.state).published.clone().unwrap_or_default();
        if current.resource_version.is_some() && current.state.members == members {
            return;
        }
        match publish_ring(
            &self.configmaps,
            &self.config.ring,
            &current,
            members,
            &self.config.member,
        )
        .await
        {
            Ok(p) => {
                info!(
                    generation = p.state.generation,
                    members = ?p.state.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
                    "published the ring"
                );
                {
                    let mut state = lock(&self.state);
                    let newer = state
                        .published
                        .as_ref()
                        .is_none_or(|held| p.state.generation >= held.state.generation);
                    if newer {
                        state.published = Some(p);
                    }
                }
                self.update_ownership();
            }
            Err(e) if is_conflict(&e) => {
                // Someone published first: read what they published, try again next round.
                debug!("lost a ring publication race; re-reading");
                if let Ok(Some(cm)) = self
                    .configmaps
                    .get_opt(&ring_configmap_name(&self.config.ring))
                    .await
                {
                    self.adopt_ring(&cm);
                }
            }
            Err(e) => warn!(error = %e, "could not publish the ring"),
        }
    }

    async fn publish_without_self(&self) {
        let members: Vec<Member> = lock(&self.state)
            .published
            .as_ref()
            .map(|p| {
                p.state
                    .members
                    .iter()
                    .filter(|m| m.name != self.config.member)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        self.publish_members(members).await;
    }
}

fn lease_duration_of(lease: &Lease, config: &Config) -> Duration {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map_or(config.lease_duration, Duration::from_secs)
        // Never shorter than our own setting: a peer with a shorter configured lease must not
        // make us declare it dead sooner than we would ourselves stop.
        .max(config.lease_duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_that_break_the_lease_promise_are_named() {
        let config = |lease: u64, renew: u64, retry: u64| {
            let mut c = Config::new("ring", "ns", "r0", "127.0.0.1:1");
            c.lease_duration = Duration::from_millis(lease);
            c.renew_deadline = Duration::from_millis(renew);
            c.retry_period = Duration::from_millis(retry);
            c
        };
        assert_eq!(config(15_000, 10_000, 2_000).validate(), Ok(()));
        assert_eq!(
            config(15_000, 10_000, 0).validate(),
            Err(ConfigError::ZeroRetryPeriod)
        );
        let err = config(15_000, 2_000, 2_000).validate().unwrap_err();
        assert!(matches!(err, ConfigError::RenewDeadlineNotAboveRetry(..)));
        assert_eq!(
            err.to_string(),
            "the renew deadline (2s) must exceed the retry period (2s)"
        );
        assert!(matches!(
            config(10_000, 10_000, 2_000).validate(),
            Err(ConfigError::LeaseNotAboveRenewDeadline(..))
        ));
        assert_eq!(
            config(900, 500, 100).validate(),
            Err(ConfigError::LeaseUnderOneSecond)
        );
        let mut long = config(15_000, 10_000, 2_000);
        long.leave_grace = Duration::from_secs(301);
        assert!(matches!(
            long.validate(),
            Err(ConfigError::LeaveGraceTooLong(_))
        ));
    }

    fn owner_of_everything(
        valid_until: Option<Instant>,
    ) -> (watch::Sender<Option<Instant>>, Ownership) {
        let (tx, rx) = watch::channel(valid_until);
        let ring = RingState::new(
            1,
            vec![Member {
                name: "r0".into(),
                address: String::new(),
            }],
        );
        let o = Ownership {
            member: Arc::from("r0"),
            ring: Arc::new(Ring::new(ring)),
            active: true,
            coordinator: false,
            valid_until: rx,
        };
        (tx, o)
    }

    #[test]
    fn a_passed_renew_deadline_stops_ownership_before_the_watchdog_runs() {
        let key = ObjectKey::new(ringscale_ring::Kind::ScaledObject, "ns", "so");
        let now = Instant::now();
        // Unknown deadline: `active` decides.
        let (_tx, o) = owner_of_everything(None);
        assert!(o.may_act(&key));
        // A deadline ahead: owns.
        let (tx, o) = owner_of_everything(Some(now + Duration::from_secs(5)));
        assert!(o.owns(&key));
        assert!(o.may_act(&key));
        // The deadline passed (a process frozen past it, still marked active): it keeps the
        // object scheduled but may not write for it.
        tx.send_replace(now.checked_sub(Duration::from_millis(1)));
        assert!(o.active);
        assert!(!o.lease_valid());
        assert!(o.owns(&key));
        assert!(!o.may_act(&key));
    }
}
